//! Mergeable quantiles: a DDSketch (Masson, Rim, Lee, VLDB 2019). Values fall in buckets whose
//! bounds grow by `γ = (1 + α) / (1 − α)`, so every quantile it returns is within a relative
//! error `α` of the true value (here α = 1 %: p95 of values near 1,000 is within ±10). Two
//! sketches merge by adding bucket counts, exactly as if one had seen both streams.

use serde::{Deserialize, Serialize};

/// The relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// A DDSketch with relative accuracy [`RELATIVE_ACCURACY`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// (bucket index, count) sorted by index, for positive values: a window usually holds
    /// few values, so a sorted vector (one allocation) beats a tree.
    positive: Vec<(i32, u64)>,
    /// The same for the magnitudes of negative values.
    negative: Vec<(i32, u64)>,
    /// Values equal (or too close) to zero.
    zero: u64,
    count: u64,
}

/// Values this close to zero are counted as zero.
const MIN_MAGNITUDE: f64 = 1e-9;

/// Adds `n` to bucket `index` of a sorted store.
fn bump(store: &mut Vec<(i32, u64)>, index: i32, n: u64) {
    match store.binary_search_by_key(&index, |(i, _)| *i) {
        Ok(at) => store[at].1 += n,
        Err(at) => store.insert(at, (index, n)),
    }
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn index(magnitude: f64) -> i32 {
    let i = (magnitude.ln() / gamma().ln()).ceil();
    // Finite magnitudes give |i| < 40,000.
    i.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

fn value(index: i32) -> f64 {
    2.0 * gamma().powi(index) / (gamma() + 1.0)
}

impl Quantiles {
    /// Adds `x` (non-finite values are ignored).
    pub fn push(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        if x.abs() < MIN_MAGNITUDE {
            self.zero += 1;
        } else if x > 0.0 {
            bump(&mut self.positive, index(x), 1);
        } else {
            bump(&mut self.negative, index(-x), 1);
        }
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &Quantiles) {
        for (mine, theirs) in [
            (&mut self.positive, &other.positive),
            (&mut self.negative, &other.negative),
        ] {
            for (i, n) in theirs {
                bump(mine, *i, *n);
            }
        }
        self.zero += other.zero;
        self.count += other.count;
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0 ≤ q ≤ 1; the lower of the two middle ranks for an even count),
    /// within the relative accuracy; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        let mut seen = 0;
        // Most negative first: the largest magnitudes of the negative side.
        for (i, n) in self.negative.iter().rev() {
            seen += n;
            if seen > rank {
                return Some(-value(*i));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Some(0.0);
        }
        for (i, n) in &self.positive {
            seen += n;
            if seen > rank {
                return Some(value(*i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_of_1_to_1000_are_within_one_percent() {
        let mut s = Quantiles::default();
        for x in 1..=1000 {
            s.push(f64::from(x));
        }
        for (q, want) in [
            (0.5, 500.0),
            (0.95, 950.0),
            (0.99, 990.0),
            (0.0, 1.0),
            (1.0, 1000.0),
        ] {
            let got = s.quantile(q).unwrap();
            assert!(
                (got - want).abs() <= want * RELATIVE_ACCURACY,
                "q {q}: {got} vs {want}"
            );
        }
        assert_eq!(Quantiles::default().quantile(0.5), None);
    }

    proptest! {
        #[test]
        fn every_quantile_is_within_the_relative_accuracy_and_merging_is_exact(
            values in proptest::collection::vec(-1e6f64..1e6, 1..300),
            cut in 0usize..300,
            q in 0.0f64..=1.0,
        ) {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let (mut left, mut right, mut whole) =
                (Quantiles::default(), Quantiles::default(), Quantiles::default());
            for (i, x) in values.iter().enumerate() {
                whole.push(*x);
                if i < cut.min(values.len()) { left.push(*x) } else { right.push(*x) }
            }
            left.merge(&right);
            prop_assert_eq!(&left, &whole);
            let want = exact(&sorted, q);
            let got = whole.quantile(q).unwrap();
            let tolerance = want.abs() * RELATIVE_ACCURACY + MIN_MAGNITUDE;
            prop_assert!((got - want).abs() <= tolerance, "q {}: {} vs {}", q, got, want);
        }
    }
}
