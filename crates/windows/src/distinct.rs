//! Mergeable distinct counts: exact up to [`EXACT_UP_TO`] values, then a HyperLogLog with
//! 2^11 registers, whose standard error is 1.04 / √2048 ≈ 2.3 % (within 7 % nearly always).
//! Two counts merge exactly as if one had seen both streams (set union, then register-wise
//! maximum). Values are given as 64-bit hashes ([`hash`]).

use serde::{Deserialize, Serialize};

/// Distinct values counted exactly, below the sketch.
pub const EXACT_UP_TO: usize = 64;
const P: u32 = 11;
const M: usize = 1 << P;

/// A distinct count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Distinct {
    /// Sorted distinct hashes, while there are at most [`EXACT_UP_TO`].
    exact: Vec<u64>,
    /// HyperLogLog registers once past it (empty before).
    registers: Vec<u8>,
}

/// A well-mixed 64-bit hash of `bytes` (FNV-1a, then SplitMix64's finalizer): stable across
/// runs and builds, as stored sketches need.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Distinct {
    /// Adds a value by its hash.
    pub fn push(&mut self, hash: u64) {
        if self.registers.is_empty() {
            if let Err(at) = self.exact.binary_search(&hash) {
                self.exact.insert(at, hash);
            }
            if self.exact.len() > EXACT_UP_TO {
                self.switch_to_sketch();
            }
        } else {
            self.register(hash);
        }
    }

    fn register(&mut self, hash: u64) {
        let index = usize::try_from(hash >> (64 - P)).unwrap_or(0);
        // The rank of the first 1 bit after the index bits (a sentinel keeps it ≤ 64 − P + 1).
        let rest = (hash << P) | (1 << (P - 1));
        let rank = u8::try_from(rest.leading_zeros() + 1).unwrap_or(u8::MAX);
        if let Some(r) = self.registers.get_mut(index) {
            *r = (*r).max(rank);
        }
    }

    fn switch_to_sketch(&mut self) {
        self.registers = vec![0; M];
        for hash in std::mem::take(&mut self.exact) {
            self.register(hash);
        }
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &Distinct) {
        if other.registers.is_empty() {
            for hash in &other.exact {
                self.push(*hash);
            }
            return;
        }
        if self.registers.is_empty() {
            self.switch_to_sketch();
        }
        for (mine, theirs) in self.registers.iter_mut().zip(&other.registers) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The number of distinct values: exact up to [`EXACT_UP_TO`], estimated beyond.
    pub fn count(&self) -> u64 {
        if self.registers.is_empty() {
            return self.exact.len() as u64;
        }
        let m = M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|r| 2f64.powi(-i32::from(*r)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Small range: linear counting.
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: impl IntoIterator<Item = u64>) -> Distinct {
        let mut d = Distinct::default();
        for v in values {
            d.push(hash(&v.to_le_bytes()));
        }
        d
    }

    #[test]
    fn exact_up_to_64_then_within_the_error_and_merging_is_a_union() {
        assert_eq!(of([1, 2, 2, 3, 1]).count(), 3);
        assert_eq!(of(0..64).count(), 64);
        for n in [100u64, 1_000, 10_000, 100_000] {
            let got = of(0..n).count() as f64;
            let error = (got - n as f64).abs() / n as f64;
            assert!(error < 0.07, "{n}: {got}");
        }
        let (mut a, b) = (of(0..5_000), of(2_500..7_500));
        a.merge(&b);
        assert_eq!(a, of(0..7_500), "merged registers equal the union's");
        let (mut small, big) = (of(0..10), of(5..20_000));
        small.merge(&big);
        assert_eq!(small, of(0..20_000));
        let mut exact = of(0..30);
        exact.merge(&of(20..50));
        assert_eq!(exact.count(), 50);
    }
}
