//! The three priority lanes events wait in between ingest and the pipelines.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Priority;

/// A priority lane. Which priorities go to which lane is configurable (`lanes:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Served first (by default: critical and high).
    Realtime,
    /// The common case (by default: medium and low).
    Transactional,
    /// Bulk; served last but never starved (by default: batch).
    Batch,
}

impl Lane {
    /// Every lane, most urgent first; `Lane::ALL[lane.index()] == lane`.
    pub const ALL: [Lane; 3] = [Lane::Realtime, Lane::Transactional, Lane::Batch];

    /// Its position in [`Lane::ALL`], for per-lane arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Returns the lowercase name used in config, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Realtime => "realtime",
            Lane::Transactional => "transactional",
            Lane::Batch => "batch",
        }
    }

    /// The lane of `priority` in the default mapping.
    pub fn default_for(priority: Priority) -> Lane {
        match priority {
            Priority::Critical | Priority::High => Lane::Realtime,
            Priority::Medium | Priority::Low => Lane::Transactional,
            Priority::Batch => Lane::Batch,
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which lane each priority goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneMap([Lane; 5]);

impl Default for LaneMap {
    fn default() -> Self {
        LaneMap(Priority::ALL.map(Lane::default_for))
    }
}

impl LaneMap {
    /// A mapping from `(priority, lane)` pairs; priorities not named keep their default lane.
    pub fn new(pairs: impl IntoIterator<Item = (Priority, Lane)>) -> Self {
        let mut map = LaneMap::default();
        for (priority, lane) in pairs {
            map.0[priority.index()] = lane;
        }
        map
    }

    /// The lane of `priority`.
    pub fn lane(&self, priority: Priority) -> Lane {
        self.0[priority.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_mapping_is_the_design_documents() {
        let map = LaneMap::default();
        assert_eq!(map.lane(Priority::Critical), Lane::Realtime);
        assert_eq!(map.lane(Priority::High), Lane::Realtime);
        assert_eq!(map.lane(Priority::Medium), Lane::Transactional);
        assert_eq!(map.lane(Priority::Low), Lane::Transactional);
        assert_eq!(map.lane(Priority::Batch), Lane::Batch);
        let moved = LaneMap::new([(Priority::Low, Lane::Batch)]);
        assert_eq!(moved.lane(Priority::Low), Lane::Batch);
        for lane in Lane::ALL {
            assert_eq!(Lane::ALL[lane.index()], lane);
        }
    }
}
