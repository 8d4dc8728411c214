//! Mergeable aggregates: what a window keeps per key, combined from partials (sliding and
//! session windows merge them, never rescanning events).

use serde::{Deserialize, Serialize};

/// Welford's online mean and variance; two are merged with Chan et al.'s formula.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Welford {
    /// Values seen.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared differences from the mean.
    pub m2: f64,
}

impl Welford {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: &Welford) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let n = n1 + n2;
        let delta = other.mean - self.mean;
        self.mean += delta * n2 / n;
        self.m2 += other.m2 + delta * delta * n1 * n2 / n;
        self.count += other.count;
    }

    /// The sample variance (n − 1), `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.count >= 2).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// The sample standard deviation, `None` below two values.
    pub fn stddev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
}

/// Count, sum, min, max, first and last (by event time), and the Welford moments of one
/// numeric field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Mean and variance (and the count).
    pub moments: Welford,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: Option<f64>,
    /// Largest value.
    pub max: Option<f64>,
    /// The value with the earliest event time (the first seen among equal times).
    pub first: Option<(i64, f64)>,
    /// The value with the latest event time (the last seen among equal times).
    pub last: Option<(i64, f64)>,
}

impl Stats {
    /// Adds `x`, of event time `ts`.
    pub fn push(&mut self, ts: i64, x: f64) {
        self.moments.push(x);
        self.sum += x;
        self.min = Some(self.min.map_or(x, |m| m.min(x)));
        self.max = Some(self.max.map_or(x, |m| m.max(x)));
        if self.first.is_none_or(|(t, _)| ts < t) {
            self.first = Some((ts, x));
        }
        if self.last.is_none_or(|(t, _)| ts >= t) {
            self.last = Some((ts, x));
        }
    }

    /// Adds everything `other` saw (`other`'s values after this one's among equal times).
    pub fn merge(&mut self, other: &Stats) {
        self.moments.merge(&other.moments);
        self.sum += other.sum;
        for (mine, theirs, keep) in [
            (&mut self.min, other.min, f64::min as fn(f64, f64) -> f64),
            (&mut self.max, other.max, f64::max),
        ] {
            if let Some(t) = theirs {
                *mine = Some(mine.map_or(t, |m| keep(m, t)));
            }
        }
        if let Some((t, x)) = other.first
            && self.first.is_none_or(|(mine, _)| t < mine)
        {
            self.first = Some((t, x));
        }
        if let Some((t, x)) = other.last
            && self.last.is_none_or(|(mine, _)| t >= mine)
        {
            self.last = Some((t, x));
        }
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.moments.count
    }

    /// Their mean, `None` when empty.
    pub fn avg(&self) -> Option<f64> {
        (self.moments.count > 0).then_some(self.moments.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn welford_matches_the_issues_golden_values() {
        let mut w = Welford::default();
        for x in [10.0, 20.0, 30.0, 40.0, 50.0] {
            w.push(x);
        }
        assert_eq!(w.mean, 30.0);
        let sigma = w.stddev().unwrap();
        assert!((sigma - 15.811_388).abs() < 1e-6, "{sigma}");
        assert_eq!(Welford::default().variance(), None);
    }

    #[test]
    fn stats_keep_first_and_last_by_event_time() {
        let mut s = Stats::default();
        for (ts, x) in [(5, 1.0), (2, 7.0), (9, 3.0), (9, 4.0)] {
            s.push(ts, x);
        }
        assert_eq!(
            (s.count(), s.sum, s.min, s.max),
            (4, 15.0, Some(1.0), Some(7.0))
        );
        assert_eq!((s.first, s.last), (Some((2, 7.0)), Some((9, 4.0))));
        assert_eq!(s.avg(), Some(3.75));
        assert_eq!(Stats::default().avg(), None);
    }

    proptest! {
        #[test]
        fn merging_partials_equals_one_pass(
            values in proptest::collection::vec((-1_000i64..1_000, -1e6f64..1e6), 0..60),
            cut in 0usize..60,
        ) {
            let cut = cut.min(values.len());
            let (mut left, mut right, mut whole) = (Stats::default(), Stats::default(), Stats::default());
            for (i, (ts, x)) in values.iter().enumerate() {
                whole.push(*ts, *x);
                if i < cut { left.push(*ts, *x) } else { right.push(*ts, *x) }
            }
            left.merge(&right);
            prop_assert_eq!(left.count(), whole.count());
            prop_assert_eq!((left.min, left.max, left.first, left.last), (whole.min, whole.max, whole.first, whole.last));
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + a.abs().max(b.abs()));
            prop_assert!(close(left.sum, whole.sum));
            prop_assert!(close(left.moments.mean, whole.moments.mean));
            if let (Some(a), Some(b)) = (left.moments.variance(), whole.moments.variance()) {
                prop_assert!(close(a, b), "{} vs {}", a, b);
            }
        }
    }
}

/// An exponential moving average in event time: each value weighs `2^((t − latest) / half_life)`
/// against the latest, so a value `half_life` older counts half. Order does not matter and two
/// merge exactly (both rescaled to the later reference time), unlike an EMA over arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    /// Σ weight · value, weights relative to `at`.
    num: f64,
    /// Σ weight.
    den: f64,
    /// The reference time: the latest event time seen.
    at: Option<i64>,
    /// Milliseconds for a weight to halve.
    half_life: f64,
}

impl Ema {
    /// An empty average whose weights halve every `half_life` ms (at least 1).
    pub fn new(half_life: f64) -> Self {
        Ema {
            num: 0.0,
            den: 0.0,
            at: None,
            half_life: half_life.max(1.0),
        }
    }

    /// Adds `x` of event time `ts`.
    pub fn push(&mut self, ts: i64, x: f64) {
        self.rebase(ts);
        let reference = self.at.unwrap_or(ts);
        let weight = ((ts - reference) as f64 / self.half_life).exp2();
        self.num += weight * x;
        self.den += weight;
    }

    /// Moves the reference time up to `ts` (never down), rescaling what is held.
    fn rebase(&mut self, ts: i64) {
        match self.at {
            Some(at) if at >= ts => {}
            Some(at) => {
                let factor = ((at - ts) as f64 / self.half_life).exp2();
                self.num *= factor;
                self.den *= factor;
                self.at = Some(ts);
            }
            None => self.at = Some(ts),
        }
    }

    /// Adds everything `other` saw (with this one's half-life).
    pub fn merge(&mut self, other: &Ema) {
        let Some(theirs) = other.at else {
            return;
        };
        self.rebase(theirs);
        let reference = self.at.unwrap_or(theirs);
        let factor = ((theirs - reference) as f64 / self.half_life).exp2();
        self.num += other.num * factor;
        self.den += other.den * factor;
    }

    /// The average, `None` when empty.
    pub fn value(&self) -> Option<f64> {
        (self.den > 0.0).then(|| self.num / self.den)
    }
}

#[cfg(test)]
mod ema_tests {
    use super::*;

    #[test]
    fn older_values_weigh_less_by_half_lives_and_merging_equals_one_pass() {
        let mut e = Ema::new(1_000.0);
        e.push(0, 10.0);
        e.push(1_000, 20.0);
        // 10 weighs ½ against 20: (5 + 20) / 1.5.
        assert!((e.value().unwrap() - 25.0 / 1.5).abs() < 1e-9);
        let (mut a, mut b, mut whole) = (Ema::new(700.0), Ema::new(700.0), Ema::new(700.0));
        for (i, (t, x)) in [(500, 1.0), (0, 4.0), (2_000, 9.0), (1_500, 3.0)]
            .iter()
            .enumerate()
        {
            whole.push(*t, *x);
            if i % 2 == 0 {
                a.push(*t, *x)
            } else {
                b.push(*t, *x)
            }
        }
        a.merge(&b);
        assert!((a.value().unwrap() - whole.value().unwrap()).abs() < 1e-9);
        assert_eq!(Ema::new(1.0).value(), None);
    }
}
