//! Streaming statistics over a recent horizon, and the z-score test the `zscore` stage runs.
//!
//! - [`Rate`]: events per second over the last `horizon`, in buckets (memory is the bucket
//!   count, whatever the rate).
//! - [`SlidingStats`]: count, mean, standard deviation and exact percentiles of the values of
//!   the last `horizon` (it keeps those values: bound the horizon to bound memory).
//! - [`zscore`]: how far a value is from a baseline, judged *before* the value joins it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Welford;

/// Events per second over a horizon, counted in `buckets` equal slices of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    horizon: i64,
    bucket: i64,
    /// `(slice start, count)`, oldest first; slices with nothing are absent.
    counts: VecDeque<(i64, u64)>,
}

impl Rate {
    /// A rate over `horizon` ms (at least 1), in `buckets` slices (at least 1).
    pub fn new(horizon: i64, buckets: u32) -> Self {
        let horizon = horizon.max(1);
        let bucket = (horizon / i64::from(buckets.max(1))).max(1);
        Rate {
            horizon,
            bucket,
            counts: VecDeque::new(),
        }
    }

    /// Counts `n` events at time `ts` (ms). Times older than the newest slice count in it.
    pub fn add(&mut self, ts: i64, n: u64) {
        let slice = ts.div_euclid(self.bucket) * self.bucket;
        match self.counts.back_mut() {
            Some((newest, count)) if *newest >= slice => *count += n,
            _ => self.counts.push_back((slice, n)),
        }
        self.expire(ts);
    }

    /// Events per second over the horizon ending at `now` (ms).
    pub fn per_second(&mut self, now: i64) -> f64 {
        self.expire(now);
        let total: u64 = self.counts.iter().map(|(_, n)| n).sum();
        total as f64 * 1000.0 / self.horizon as f64
    }

    fn expire(&mut self, now: i64) {
        let oldest = now.saturating_sub(self.horizon);
        while self
            .counts
            .front()
            .is_some_and(|(slice, _)| slice + self.bucket <= oldest)
        {
            self.counts.pop_front();
        }
    }
}

/// The values of the last `horizon` ms, for their count, mean, standard deviation and exact
/// percentiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlidingStats {
    horizon: i64,
    /// `(time, value)` in arrival order; times are expected to rise (older ones expire late).
    values: VecDeque<(i64, f64)>,
}

impl SlidingStats {
    /// Statistics over the last `horizon` ms.
    pub fn new(horizon: i64) -> Self {
        SlidingStats {
            horizon: horizon.max(1),
            values: VecDeque::new(),
        }
    }

    /// Adds `x` at time `ts`, dropping values older than the horizon.
    pub fn push(&mut self, ts: i64, x: f64) {
        self.values.push_back((ts, x));
        let oldest = ts.saturating_sub(self.horizon);
        while self.values.front().is_some_and(|(t, _)| *t <= oldest) {
            self.values.pop_front();
        }
    }

    /// The moments of the values held (recomputed: exact, no drift from removals).
    pub fn moments(&self) -> Welford {
        let mut w = Welford::default();
        for (_, x) in &self.values {
            w.push(*x);
        }
        w
    }

    /// The `q`-quantile of the values held (the lower of the two middle ranks for an even
    /// count, as [`crate::Quantiles`]); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.values.is_empty() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let mut sorted: Vec<f64> = self.values.iter().map(|(_, x)| *x).collect();
        let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
        let (_, value, _) = sorted.select_nth_unstable_by(rank, f64::total_cmp);
        Some(*value)
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A value judged against a baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// `(x − mean) / σ`.
    pub z: f64,
    /// The baseline's mean.
    pub mean: f64,
    /// The baseline's sample standard deviation.
    pub stddev: f64,
    /// Values in the baseline.
    pub samples: u64,
}

impl Score {
    /// Whether `|z|` is above `threshold` (strictly).
    pub fn exceeds(&self, threshold: f64) -> bool {
        self.z.abs() > threshold
    }
}

/// The z-score of `x` against `baseline`, which `x` has not joined yet: `None` below
/// `min_samples` (at least 2) or when σ is 0.
pub fn zscore(baseline: &Welford, x: f64, min_samples: u64) -> Option<Score> {
    if baseline.count < min_samples.max(2) {
        return None;
    }
    let stddev = baseline.stddev()?;
    if stddev <= 0.0 || !stddev.is_finite() {
        return None;
    }
    Some(Score {
        z: (x - baseline.mean) / stddev,
        mean: baseline.mean,
        stddev,
        samples: baseline.count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_counts_the_horizon_only() {
        let mut rate = Rate::new(10_000, 10);
        for t in (0..10_000).step_by(100) {
            rate.add(t, 1); // 10 per second
        }
        assert!((rate.per_second(9_999) - 10.0).abs() < 1e-9);
        // At 15 s the slices [0, 5 s) have left the horizon (a slice goes whole, when its
        // end leaves: the rate is exact to one slice).
        assert!((rate.per_second(15_000) - 5.0).abs() < 1e-9);
        assert_eq!(rate.per_second(30_000), 0.0);
    }

    #[test]
    fn sliding_statistics_forget_what_left_the_horizon() {
        let mut s = SlidingStats::new(1_000);
        for (t, x) in [
            (0, 100.0),
            (500, 10.0),
            (600, 20.0),
            (700, 30.0),
            (800, 40.0),
        ] {
            s.push(t, x);
        }
        assert_eq!(s.len(), 5);
        s.push(1_100, 50.0); // 0 and 100.0 leave
        assert_eq!(s.len(), 5);
        let m = s.moments();
        assert_eq!(m.mean, 30.0);
        assert!((m.stddev().unwrap() - 15.811_388).abs() < 1e-6);
        assert_eq!(s.quantile(0.5), Some(30.0));
        assert_eq!(s.quantile(1.0), Some(50.0));
        assert_eq!(SlidingStats::new(1).quantile(0.5), None);
    }

    #[test]
    fn the_zscore_is_judged_before_the_value_joins_and_flags_strictly() {
        let mut baseline = Welford::default();
        assert_eq!(zscore(&baseline, 1.0, 2), None);
        baseline.push(5.0);
        assert_eq!(zscore(&baseline, 1.0, 1), None, "two samples at least");
        baseline.push(5.0);
        assert_eq!(zscore(&baseline, 9.0, 2), None, "σ = 0");
        let mut baseline = Welford::default();
        for x in [10.0, 20.0, 30.0, 40.0, 50.0] {
            baseline.push(x);
        }
        let sigma = 15.811_388_300_841_896;
        let score = zscore(&baseline, 30.0 + 3.0 * sigma, 2).unwrap();
        assert!((score.z - 3.0).abs() < 1e-12);
        assert!(!score.exceeds(3.0 + 1e-9), "strictly above the threshold");
        assert!(score.exceeds(2.999));
        assert_eq!((score.mean, score.samples), (30.0, 5));
        assert_eq!(zscore(&baseline, 80.0, 6), None, "min_samples");
        assert!(zscore(&baseline, 80.0, 5).unwrap().exceeds(3.0));
    }
}
