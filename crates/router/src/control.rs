//! The five-level backpressure control plane: judges the node's load from lane depth and the
//! drop rate, with hysteresis, and says which actions are on.
//!
//! - A level is entered when the fuller of the realtime and transactional lanes (depth as a
//!   fraction of capacity; the batch lane is what the control plane sheds, so it is not
//!   judged) or their drop rate over the sliding window reaches the level's entry threshold (the design
//!   document's by default: depth 50/75/100/150 %, drop rate 1/2/4/10 %). The drop rate counts
//!   only once the window has seen `min_events` offered events.
//! - A level is left downwards only when both measures are below `hysteresis` (80 %) of its
//!   entry threshold, so the level does not flap at a boundary; it then goes to the highest
//!   level the measures still hold. Both ways levels may be skipped: a sudden flood goes
//!   straight to where it belongs, and a lane drained at once lets every gate open at once.
//! - Only drops by the lanes' own overflow policies (and UDP datagrams dropped under
//!   backpressure) count towards the drop rate, not what the control plane itself sheds or
//!   diverts: otherwise its own actions would hold it at a level.
//! - A manual override (`POST /api/control`) sets the level until it expires.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use colloquium_config::ControlConfig;
use serde::{Deserialize, Serialize};

/// The node's load level, lowest first. Actions are cumulative: each level does what the
/// levels below it do.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// Normal.
    #[default]
    Healthy,
    /// Watched; the pipelines' steps favour draining.
    Elevated,
    /// Transactional intake is paused (its sources are pushed back).
    Degraded,
    /// The batch lane is shed (to the dead-letter queue, replayable).
    Critical,
    /// New low-priority events (`low`, `batch`) are diverted to the dead-letter queue, so
    /// realtime keeps flowing.
    Emergency,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Healthy,
        Level::Elevated,
        Level::Degraded,
        Level::Critical,
        Level::Emergency,
    ];

    /// Its name, as in `/api/control` and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Healthy => "HEALTHY",
            Level::Elevated => "ELEVATED",
            Level::Degraded => "DEGRADED",
            Level::Critical => "CRITICAL",
            Level::Emergency => "EMERGENCY",
        }
    }

    /// 0 (HEALTHY) … 4 (EMERGENCY), for the metric.
    pub fn number(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_number(n: u8) -> Level {
        Level::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(Level::Emergency)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the control plane is given at each judgement.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    /// The fullest lane's depth / capacity.
    pub depth: f64,
    /// Events offered so far (taken, shed or dropped), a running total.
    pub offered: u64,
    /// Events dropped by overflow policies so far, a running total.
    pub dropped: u64,
}

/// A manual level with its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Override {
    /// The level held.
    pub level: Level,
    /// Until when (time left, at the last judgement).
    #[serde(with = "humantime_serde")]
    pub remaining: Duration,
    #[serde(skip)]
    until: Instant,
}

/// The state machine. Call [`ControlPlane::judge`] every `control.interval`.
#[derive(Debug)]
pub struct ControlPlane {
    config: ControlConfig,
    /// The level the measures give (with hysteresis), whatever an override says.
    measured: Level,
    manual: Option<Override>,
    /// `(when, offered, dropped)` running totals, oldest first, spanning the window.
    samples: VecDeque<(Instant, u64, u64)>,
    /// The drop rate over the window, once it counts.
    drop_rate: Option<f64>,
    last: Load,
    transitions: u64,
}

/// What `GET /api/control` shows.
#[derive(Clone, Debug, Serialize)]
pub struct ControlReport {
    /// The level in force.
    pub level: Level,
    /// What the measures alone give.
    pub measured: Level,
    /// The manual override, while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual: Option<Override>,
    /// The fullest lane's depth / capacity.
    pub depth: f64,
    /// Dropped / offered over the window (`null` below `min_events`).
    pub drop_rate: Option<f64>,
    /// Level changes since start.
    pub transitions: u64,
}

impl ControlPlane {
    /// Starts HEALTHY.
    pub fn new(config: ControlConfig) -> Self {
        ControlPlane {
            config,
            measured: Level::Healthy,
            manual: None,
            samples: VecDeque::new(),
            drop_rate: None,
            last: Load::default(),
            transitions: 0,
        }
    }

    /// The level in force: the override while it lasts, else the measured one.
    pub fn level(&self) -> Level {
        self.manual.map_or(self.measured, |m| m.level)
    }

    /// Holds `level` for `duration` from `now`, whatever the measures say.
    pub fn set_override(&mut self, level: Level, duration: Duration, now: Instant) {
        let before = self.level();
        self.manual = Some(Override {
            level,
            remaining: duration,
            until: now + duration,
        });
        self.count_change(before);
    }

    /// Ends the override now.
    pub fn clear_override(&mut self) {
        let before = self.level();
        self.manual = None;
        self.count_change(before);
    }

    /// Judges `load` at `now`; returns the level in force.
    pub fn judge(&mut self, load: Load, now: Instant) -> Level {
        let before = self.level();
        self.last = load;
        if self.samples.is_empty() {
            // The totals run from start: measure the first window from zero.
            self.samples.push_back((now, 0, 0));
        }
        self.samples.push_back((now, load.offered, load.dropped));
        // Keep one sample at or before the window's start, to measure across the whole window.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(at, _, _)| now.duration_since(*at) >= self.config.window)
        {
            self.samples.pop_front();
        }
        self.drop_rate = self.samples.front().and_then(|(_, offered, dropped)| {
            let offered = load.offered.saturating_sub(*offered);
            let dropped = load.dropped.saturating_sub(*dropped);
            (offered >= self.config.min_events.max(1)).then(|| dropped as f64 / offered as f64)
        });
        let reached = |level: Level, scale: f64| {
            let Some(i) = usize::from(level.number()).checked_sub(1) else {
                return true; // HEALTHY is always reached
            };
            let t = &self.config.thresholds;
            load.depth >= t.depth[i] * scale
                || self.drop_rate.is_some_and(|r| r >= t.drop_rate[i] * scale)
        };
        let target = Level::ALL
            .into_iter()
            .rev()
            .find(|l| reached(*l, 1.0))
            .unwrap_or_default();
        // Down: to the highest level whose entry threshold the measures are still within
        // `hysteresis` of (never below `target`, which that level is at least).
        let held = Level::ALL
            .into_iter()
            .rev()
            .find(|l| reached(*l, self.config.hysteresis))
            .unwrap_or_default();
        self.measured = if target > self.measured {
            target
        } else {
            held.min(self.measured)
        };
        if let Some(manual) = &mut self.manual {
            match manual.until.checked_duration_since(now) {
                Some(left) if !left.is_zero() => manual.remaining = left,
                _ => self.manual = None,
            }
        }
        self.count_change(before);
        self.level()
    }

    fn count_change(&mut self, before: Level) {
        if self.level() != before {
            self.transitions += 1;
            tracing::info!(from = %before, to = %self.level(), depth = self.last.depth, drop_rate = ?self.drop_rate, "control plane level changed");
        }
    }

    /// What `GET /api/control` shows.
    pub fn report(&self) -> ControlReport {
        ControlReport {
            level: self.level(),
            measured: self.measured,
            manual: self.manual,
            depth: self.last.depth,
            drop_rate: self.drop_rate,
            transitions: self.transitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    struct Run {
        plane: ControlPlane,
        now: Instant,
        offered: u64,
        dropped: u64,
    }

    impl Run {
        fn new() -> Self {
            Run {
                plane: ControlPlane::new(ControlConfig::default()),
                now: Instant::now(),
                offered: 0,
                dropped: 0,
            }
        }

        /// One judgement after `offered` more events of which `dropped` were dropped.
        fn step(&mut self, depth: f64, offered: u64, dropped: u64) -> Level {
            self.now += TICK;
            self.offered += offered;
            self.dropped += dropped;
            let load = Load {
                depth,
                offered: self.offered,
                dropped: self.dropped,
            };
            self.plane.judge(load, self.now)
        }
    }

    #[test]
    fn depth_walks_up_through_every_level_and_back_down_with_hysteresis() {
        let mut run = Run::new();
        let up = [
            (0.49, Level::Healthy),
            (0.50, Level::Elevated),
            (0.74, Level::Elevated),
            (0.75, Level::Degraded),
            (0.99, Level::Degraded),
            (1.00, Level::Critical),
            (1.49, Level::Critical),
            (1.50, Level::Emergency),
            (3.00, Level::Emergency),
        ];
        for (depth, level) in up {
            assert_eq!(run.step(depth, 0, 0), level, "rising at depth {depth}");
        }
        let down = [
            // EMERGENCY is held down to 80 % of 150 % = 120 %.
            (1.21, Level::Emergency),
            (1.19, Level::Critical),
            // CRITICAL: held down to 80 %.
            (0.81, Level::Critical),
            (0.79, Level::Degraded),
            // DEGRADED: 60 %.
            (0.61, Level::Degraded),
            (0.59, Level::Elevated),
            // ELEVATED: 40 %.
            (0.41, Level::Elevated),
            (0.39, Level::Healthy),
            (0.0, Level::Healthy),
        ];
        for (depth, level) in down {
            assert_eq!(run.step(depth, 0, 0), level, "falling at depth {depth}");
        }
        assert_eq!(run.plane.report().transitions, 8);
    }

    #[test]
    fn a_flood_skips_levels_up_and_a_drain_skips_them_down() {
        let mut run = Run::new();
        assert_eq!(run.step(2.0, 0, 0), Level::Emergency);
        assert_eq!(
            run.step(0.65, 0, 0),
            Level::Degraded,
            "held within 80 % of 75 %"
        );
        assert_eq!(run.step(0.0, 0, 0), Level::Healthy);
    }

    #[test]
    fn the_drop_rate_counts_only_above_min_events_and_only_over_the_window() {
        let mut run = Run::new();
        // 50 % dropped, but only 400 events in the window: not judged.
        assert_eq!(run.step(0.0, 400, 200), Level::Healthy);
        assert_eq!(run.plane.report().drop_rate, None);
        // 1,000 more at 1.5 %: (200 + 15) / 1,400 = 15 % → EMERGENCY.
        assert_eq!(run.step(0.0, 1_000, 15), Level::Emergency);
        // Every level from the drop rate alone, going down as the window forgets the burst.
        let mut seen = vec![Level::Emergency];
        for _ in 0..200 {
            let level = run.step(0.0, 1_000, 0);
            if seen.last() != Some(&level) {
                seen.push(level);
            }
        }
        assert_eq!(seen, Level::ALL.into_iter().rev().collect::<Vec<_>>());
        // And up by the drop rate: steady 2.5 % → DEGRADED (≥ 2 %, < 4 %).
        for _ in 0..60 {
            run.step(0.0, 1_000, 25);
        }
        assert_eq!(run.plane.level(), Level::Degraded);
        let rate = run.plane.report().drop_rate.unwrap();
        assert!((rate - 0.025).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn an_override_holds_until_it_expires_then_the_measures_rule() {
        let mut run = Run::new();
        let start = run.now;
        run.plane
            .set_override(Level::Critical, Duration::from_secs(1), start);
        assert_eq!(run.plane.level(), Level::Critical);
        assert_eq!(run.step(0.0, 0, 0), Level::Critical);
        assert_eq!(run.plane.report().measured, Level::Healthy);
        for _ in 0..3 {
            run.step(0.0, 0, 0);
        }
        assert_eq!(run.plane.level(), Level::Healthy, "expired after 1 s");
        run.plane
            .set_override(Level::Emergency, Duration::from_secs(60), run.now);
        run.plane.clear_override();
        assert_eq!(run.plane.level(), Level::Healthy);
    }
}
