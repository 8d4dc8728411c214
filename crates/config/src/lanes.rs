//! `lanes:` (the three priority lanes: which priorities, how big, what happens when full) and
//! `control:` (the backpressure control plane's judgement).

use std::time::Duration;

use colloquium_event::{Lane, LaneMap, Priority};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Largest lane capacity (events): far above what a node holds, small enough for any sum.
pub const MAX_CAPACITY: usize = 1_000_000_000;

/// What a full lane does with more events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Shed the oldest waiting events to make room (they stay in the log, dead-lettered by
    /// reference with reason `overflow`, replayable).
    DropOldest,
    /// Push back on the sources: HTTP answers 503 with `Retry-After`, TCP stops reading.
    Block,
    /// Dead-letter new arrivals (reason `overflow`, replayable) until there is room.
    DropNewest,
}

impl Overflow {
    /// Its name in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::Block => "block",
            Overflow::DropNewest => "drop_newest",
        }
    }
}

/// One lane, as resolved from its section and the lane's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct LaneConfig {
    /// The priorities it takes.
    pub priorities: Vec<Priority>,
    /// Most events accepted but not yet processed by every pipeline.
    pub capacity: usize,
    /// What happens beyond `capacity`.
    pub overflow: Overflow,
    /// Its share of each pipeline step when every lane has events waiting.
    pub weight: u32,
}

/// One lane's section: every key is optional and defaults per lane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneSection {
    /// The priorities it takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priorities: Option<Vec<Priority>>,
    /// Most events accepted but not yet processed by every pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// What happens beyond `capacity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
    /// Its share of each pipeline step when every lane has events waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `lanes:` — the three lanes. Each priority must be in exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LanesConfig {
    /// Critical and high by default; capacity 5,000, `drop_oldest`, weight 6.
    pub realtime: LaneSection,
    /// Medium and low by default; capacity 20,000, `block`, weight 3.
    pub transactional: LaneSection,
    /// Batch by default; capacity 20,000, `drop_newest`, weight 1.
    pub batch: LaneSection,
}

impl LanesConfig {
    /// The lane's settings: its section over the lane's defaults.
    pub fn get(&self, lane: Lane) -> LaneConfig {
        let (section, priorities, capacity, overflow, weight) = match lane {
            Lane::Realtime => (
                &self.realtime,
                &[Priority::Critical, Priority::High][..],
                5_000,
                Overflow::DropOldest,
                6,
            ),
            Lane::Transactional => (
                &self.transactional,
                &[Priority::Medium, Priority::Low][..],
                20_000,
                Overflow::Block,
                3,
            ),
            Lane::Batch => (
                &self.batch,
                &[Priority::Batch][..],
                20_000,
                Overflow::DropNewest,
                1,
            ),
        };
        LaneConfig {
            priorities: (section.priorities.clone()).unwrap_or_else(|| priorities.to_vec()),
            capacity: section.capacity.unwrap_or(capacity),
            overflow: section.overflow.unwrap_or(overflow),
            weight: section.weight.unwrap_or(weight),
        }
    }

    /// Which lane each priority goes to (valid once [`LanesConfig::validate`] passed).
    pub fn map(&self) -> LaneMap {
        LaneMap::new(Lane::ALL.into_iter().flat_map(|lane| {
            let priorities = self.get(lane).priorities;
            priorities.into_iter().map(move |p| (p, lane))
        }))
    }

    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        for priority in Priority::ALL {
            let lanes: Vec<Lane> = Lane::ALL
                .into_iter()
                .filter(|l| self.get(*l).priorities.contains(&priority))
                .collect();
            if lanes.len() != 1 {
                let found = if lanes.is_empty() {
                    "none".to_owned()
                } else {
                    lanes
                        .iter()
                        .map(|l| l.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                errors.push(ConfigError::new(
                    "lanes",
                    format!(
                        "priority `{priority}` must be in exactly one lane (found in: {found})"
                    ),
                ));
            }
        }
        for lane in Lane::ALL {
            let section = self.get(lane);
            if section.capacity == 0 || section.capacity > MAX_CAPACITY {
                errors.push(ConfigError::new(
                    format!("lanes.{lane}.capacity"),
                    format!("must be from 1 to {MAX_CAPACITY}"),
                ));
            }
            if section.weight == 0 {
                errors.push(ConfigError::new(
                    format!("lanes.{lane}.weight"),
                    "must be at least 1 (a lane with weight 0 could starve)",
                ));
            }
        }
    }
}

/// The entry threshold of each level above HEALTHY: ELEVATED, DEGRADED, CRITICAL, EMERGENCY.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Lane depth as a fraction of capacity (the fullest lane counts).
    pub depth: [f64; 4],
    /// Dropped / offered over the window.
    pub drop_rate: [f64; 4],
}

impl Default for Thresholds {
    fn default() -> Self {
        // The design document's state machine.
        Thresholds {
            depth: [0.50, 0.75, 1.00, 1.50],
            drop_rate: [0.01, 0.02, 0.04, 0.10],
        }
    }
}

/// `control:` — how the control plane judges the node's load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// How often the level is judged.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The sliding window the drop rate is measured over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Fewest events offered in the window before the drop rate counts.
    pub min_events: u64,
    /// A level is left downwards only below this fraction of its entry threshold.
    pub hysteresis: f64,
    /// Entry thresholds per level.
    pub thresholds: Thresholds,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            interval: Duration::from_millis(100),
            window: Duration::from_secs(10),
            min_events: 1_000,
            hysteresis: 0.8,
            thresholds: Thresholds::default(),
        }
    }
}

impl ControlConfig {
    pub(crate) fn validate(&self, errors: &mut Vec<ConfigError>) {
        let mut check = |ok: bool, path: &str, message: &str| {
            if !ok {
                errors.push(ConfigError::new(path, message));
            }
        };
        check(
            !self.interval.is_zero(),
            "control.interval",
            "must be greater than 0",
        );
        check(
            self.window >= self.interval,
            "control.window",
            "must be at least control.interval",
        );
        check(
            self.hysteresis > 0.0 && self.hysteresis <= 1.0,
            "control.hysteresis",
            "must be in (0, 1]",
        );
        for (name, values) in [
            ("depth", &self.thresholds.depth),
            ("drop_rate", &self.thresholds.drop_rate),
        ] {
            let rising = values.windows(2).all(|w| w[0] < w[1]);
            let positive = values.iter().all(|v| v.is_finite() && *v > 0.0);
            check(
                rising && positive,
                &format!("control.thresholds.{name}"),
                "must be four positive, strictly rising values (ELEVATED, DEGRADED, CRITICAL, EMERGENCY)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_map_the_design_documents_lanes() {
        let lanes = LanesConfig::default();
        let mut errors = Vec::new();
        lanes.validate(&mut errors);
        ControlConfig::default().validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(lanes.map(), LaneMap::default());
    }

    #[test]
    fn a_priority_in_no_lane_or_two_is_refused() {
        let mut lanes = LanesConfig::default();
        lanes.batch.priorities = Some(vec![Priority::Batch, Priority::Low]);
        lanes.realtime.priorities = Some(vec![Priority::Critical]);
        let mut errors = Vec::new();
        lanes.validate(&mut errors);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("`high`") && text[0].contains("none"),
            "{text:?}"
        );
        assert!(text[1].contains("`low`") && text[1].contains("transactional, batch"));
    }

    #[test]
    fn bad_lanes_and_control_settings_name_their_key() {
        let config = crate::from_str(
            "lanes: {realtime: {capacity: 0}, transactional: {capacity: 18446744073709551615}, batch: {weight: 0}}\ncontrol: {interval: 0s, hysteresis: 1.5, thresholds: {depth: [0.5, 0.4, 1.0, 1.5], drop_rate: [0.01, 0.02, 0.04, 0.1]}}\n",
            &|_| None,
        );
        let Err(crate::LoadError::Invalid(errors)) = config else {
            panic!("{config:?}");
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "lanes.realtime.capacity",
                "lanes.transactional.capacity",
                "lanes.batch.weight",
                "control.interval",
                "control.hysteresis",
                "control.thresholds.depth"
            ]
        );
        let unknown = crate::from_str("lanes: {fast: {capacity: 1}}\n", &|_| None);
        assert!(format!("{unknown:?}").contains("fast"), "{unknown:?}");
    }
}
