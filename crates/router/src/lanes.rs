//! The priority lanes as the node runs them: which lane an event is in, how deep each lane is,
//! what a source may admit, and what was shed, by lane and cause.
//!
//! A lane's depth is the number of its events that are durable but not yet passed by every
//! running pipeline: each pipeline has a [`Consumer`] whose counts its worker adds after each
//! commit, and the depth is the largest backlog among them. Events stored before the node
//! started (or before a pipeline was added) are not counted: that backlog is read from the log
//! first. Admission ([`Gate`]) applies each lane's overflow policy at the door (`block`,
//! `drop_newest`) and the control plane's actions; `drop_oldest` is applied by the pipeline
//! workers, which hold the waiting events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use colloquium_config::{ControlConfig, LanesConfig, Overflow};
use colloquium_event::{EventId, Lane, LaneMap, Priority, Timestamp};
use serde::Serialize;

use crate::control::{ControlPlane, ControlReport, Level, Load};

/// Why an event did not go through its lane to the pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shed {
    /// A full `drop_oldest` lane made room: the event is in the log and dead-lettered.
    DropOldest,
    /// A full `drop_newest` lane refused it: dead-lettered instead of stored in the log.
    DropNewest,
    /// CRITICAL sheds the batch lane.
    Critical,
    /// EMERGENCY diverts new low-priority events.
    Emergency,
    /// Not stored at all: a UDP datagram the node could not take (UDP cannot push back).
    Dropped,
}

impl Shed {
    /// Every cause, in label order.
    pub const ALL: [Shed; 5] = [
        Shed::DropOldest,
        Shed::DropNewest,
        Shed::Critical,
        Shed::Emergency,
        Shed::Dropped,
    ];

    /// Its metric label and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::DropOldest => "drop_oldest",
            Shed::DropNewest => "drop_newest",
            Shed::Critical => "critical",
            Shed::Emergency => "emergency",
            Shed::Dropped => "dropped",
        }
    }

    /// Whether it counts towards the control plane's drop rate: the policies' drops do, the
    /// control plane's own actions do not (they would hold it at its level).
    pub fn is_drop(self) -> bool {
        matches!(self, Shed::DropOldest | Shed::DropNewest | Shed::Dropped)
    }

    /// The dead letter's error text for an event of `lane` shed for this cause.
    pub fn error(self, lane: Lane, capacity: u64) -> String {
        match self {
            Shed::DropOldest => {
                format!("lane {lane} was over its capacity of {capacity}: drop_oldest shed it")
            }
            Shed::DropNewest => {
                format!("lane {lane} was at its capacity of {capacity}: drop_newest refused it")
            }
            Shed::Critical => format!("the control plane is CRITICAL: lane {lane} is shed"),
            Shed::Emergency => {
                "the control plane is in EMERGENCY: low-priority events are diverted".to_owned()
            }
            Shed::Dropped => format!("lane {lane} could not take it and the source cannot wait"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a source does with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Store it in the log.
    Take,
    /// Do not take it now: push back on the client (HTTP 503, TCP stops reading) and retry.
    Wait(Lane),
    /// Dead-letter it (reason `overflow`) instead of storing it in the log, or drop it when
    /// the source has no dead-letter queue.
    Shed(Shed),
}

/// One lane's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaneSpec {
    /// Most events waiting.
    pub capacity: u64,
    /// What happens beyond it.
    pub overflow: Overflow,
    /// Its share of a pipeline step.
    pub weight: u32,
}

/// One pipeline's progress through the lanes, added to by its worker after each commit.
#[derive(Debug)]
pub struct Consumer {
    /// Only events from this id on are counted (earlier ones were never admitted here).
    origin: EventId,
    /// The lanes' admitted totals when it was created.
    base: [u64; 3],
    consumed: [AtomicU64; 3],
    /// Stopped pipelines hold nothing back.
    active: AtomicBool,
}

impl Consumer {
    /// Whether passing event `id` is counted.
    pub fn counts(&self, id: EventId) -> bool {
        id >= self.origin
    }

    /// Adds `passed[lane]` events (processed or shed) per lane.
    pub fn passed(&self, passed: [u64; 3]) {
        for (total, n) in self.consumed.iter().zip(passed) {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// A stopped pipeline's backlog does not count towards the depth.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
    }

    fn backlog(&self, lane: usize, admitted: u64) -> u64 {
        admitted
            .saturating_sub(self.base[lane])
            .saturating_sub(self.consumed[lane].load(Ordering::Relaxed))
    }
}

/// The node's lanes. Cheap to clone; shared by sources, pipeline workers and the API.
#[derive(Clone, Debug)]
pub struct Lanes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    map: LaneMap,
    priorities: [Vec<Priority>; 3],
    specs: [LaneSpec; 3],
    admitted: [AtomicU64; 3],
    shed: [[AtomicU64; 5]; 3],
    consumers: Mutex<BTreeMap<String, Arc<Consumer>>>,
    level: AtomicU8,
    plane: Mutex<ControlPlane>,
}

/// One lane in `GET /api/control`.
#[derive(Clone, Debug, Serialize)]
pub struct LaneReport {
    /// Its name.
    pub lane: Lane,
    /// The priorities it takes.
    pub priorities: Vec<Priority>,
    /// Most events waiting.
    pub capacity: u64,
    /// Its overflow policy.
    pub overflow: &'static str,
    /// Its step share.
    pub weight: u32,
    /// Events waiting now.
    pub depth: u64,
    /// Events stored in the log for it since start.
    pub admitted: u64,
    /// Events shed since start, by cause.
    pub shed: BTreeMap<&'static str, u64>,
}

/// `GET /api/control`: the control plane and every lane.
#[derive(Clone, Debug, Serialize)]
pub struct ControlState {
    /// The control plane.
    #[serde(flatten)]
    pub control: ControlReport,
    /// Each lane, most urgent first.
    pub lanes: Vec<LaneReport>,
}

impl Lanes {
    /// Lanes as configured, HEALTHY.
    pub fn new(lanes: &LanesConfig, control: &ControlConfig) -> Self {
        let spec = |lane: Lane| {
            let c = lanes.get(lane);
            LaneSpec {
                capacity: c.capacity as u64,
                overflow: c.overflow,
                weight: c.weight,
            }
        };
        Lanes {
            inner: Arc::new(Inner {
                map: lanes.map(),
                priorities: Lane::ALL.map(|l| lanes.get(l).priorities.clone()),
                specs: Lane::ALL.map(spec),
                admitted: Default::default(),
                shed: Default::default(),
                consumers: Mutex::default(),
                level: AtomicU8::new(Level::Healthy.number()),
                plane: Mutex::new(ControlPlane::new(control.clone())),
            }),
        }
    }

    /// The lane of `priority`.
    pub fn lane(&self, priority: Priority) -> Lane {
        self.inner.map.lane(priority)
    }

    /// The lane's settings.
    pub fn spec(&self, lane: Lane) -> LaneSpec {
        self.inner.specs[lane.index()]
    }

    /// The sum of every lane's capacity.
    pub fn total_capacity(&self) -> u64 {
        self.inner
            .specs
            .iter()
            .fold(0, |sum, s| sum.saturating_add(s.capacity))
    }

    /// The control plane's level in force.
    pub fn level(&self) -> Level {
        Level::from_number(self.inner.level.load(Ordering::Relaxed))
    }

    /// Events of `lane` waiting for the slowest running pipeline.
    pub fn depth(&self, lane: Lane) -> u64 {
        let admitted = self.inner.admitted[lane.index()].load(Ordering::Relaxed);
        self.consumers()
            .values()
            .filter(|c| c.active.load(Ordering::Relaxed))
            .map(|c| c.backlog(lane.index(), admitted))
            .max()
            .unwrap_or(0)
    }

    /// Decides, event by event, what a source does with a batch.
    pub fn gate(&self) -> Gate<'_> {
        Gate {
            lanes: self,
            level: self.level(),
            depth: [None; 3],
            added: [0; 3],
        }
    }

    /// The first lane among `priorities` that must push back now, if any. Sources ask before
    /// they take ids for a batch, so a waiting source holds up nobody's reads.
    pub fn full(&self, priorities: impl IntoIterator<Item = Priority>) -> Option<Lane> {
        let mut gate = self.gate();
        priorities.into_iter().find_map(|p| match gate.admit(p) {
            Admission::Wait(lane) => Some(lane),
            _ => None,
        })
    }

    /// Counts `n` events of `lane` durable in the log.
    pub fn admitted(&self, lane: Lane, n: u64) {
        self.inner.admitted[lane.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` events of `lane` shed for `cause`.
    pub fn shed(&self, lane: Lane, cause: Shed, n: u64) {
        self.inner.shed[lane.index()][cause.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The consumer of `pipeline`, created (counting from now, active) if it has none.
    pub fn consumer(&self, pipeline: &str) -> Arc<Consumer> {
        let mut consumers = self.consumers();
        let consumer = consumers.entry(pipeline.to_owned()).or_insert_with(|| {
            Arc::new(Consumer {
                origin: EventId::min_at(Timestamp::now()),
                base: Lane::ALL.map(|l| self.inner.admitted[l.index()].load(Ordering::Relaxed)),
                consumed: Default::default(),
                active: AtomicBool::new(true),
            })
        });
        consumer.clone()
    }

    /// Forgets the consumers of pipelines not in `names` (removed by a reload).
    pub fn retain(&self, names: &[&str]) {
        self.consumers()
            .retain(|name, _| names.contains(&name.as_str()));
    }

    /// What the control plane judges: the fuller of the realtime and transactional lanes, and
    /// their running totals. The batch lane is left out: it is what the control plane sheds,
    /// and its own policy (`drop_newest` by default) already deals with its overload; judging
    /// it would have a busy batch lane pause transactional intake.
    pub fn load(&self) -> Load {
        const JUDGED: [Lane; 2] = [Lane::Realtime, Lane::Transactional];
        let depth = JUDGED
            .into_iter()
            .map(|l| self.depth(l) as f64 / self.spec(l).capacity.max(1) as f64)
            .fold(0.0, f64::max);
        let (mut offered, mut dropped) = (0, 0);
        for lane in JUDGED {
            let i = lane.index();
            offered += self.inner.admitted[i].load(Ordering::Relaxed);
            for cause in Shed::ALL {
                let n = self.inner.shed[i][cause.index()].load(Ordering::Relaxed);
                // drop_oldest sheds what was admitted (already offered).
                if cause != Shed::DropOldest {
                    offered += n;
                }
                if cause.is_drop() {
                    dropped += n;
                }
            }
        }
        Load {
            depth,
            offered,
            dropped,
        }
    }

    /// Judges the load now (every `control.interval`); returns the level in force.
    pub fn judge(&self) -> Level {
        let load = self.load();
        let level = self.plane().judge(load, Instant::now());
        self.inner.level.store(level.number(), Ordering::Relaxed);
        level
    }

    /// Holds `level` for `duration` (`None`: ends an override); returns the level in force.
    pub fn set_override(&self, level: Option<(Level, Duration)>) -> Level {
        let mut plane = self.plane();
        match level {
            Some((level, duration)) => plane.set_override(level, duration, Instant::now()),
            None => plane.clear_override(),
        }
        let level = plane.level();
        self.inner.level.store(level.number(), Ordering::Relaxed);
        level
    }

    /// The control plane and every lane, for `GET /api/control`.
    pub fn state(&self) -> ControlState {
        let lanes = Lane::ALL
            .into_iter()
            .map(|lane| {
                let i = lane.index();
                let spec = self.spec(lane);
                LaneReport {
                    lane,
                    priorities: self.inner.priorities[i].clone(),
                    capacity: spec.capacity,
                    overflow: spec.overflow.as_str(),
                    weight: spec.weight,
                    depth: self.depth(lane),
                    admitted: self.inner.admitted[i].load(Ordering::Relaxed),
                    shed: Shed::ALL
                        .into_iter()
                        .map(|c| {
                            let n = self.inner.shed[i][c.index()].load(Ordering::Relaxed);
                            (c.as_str(), n)
                        })
                        .collect(),
                }
            })
            .collect();
        ControlState {
            control: self.plane().report(),
            lanes,
        }
    }

    fn consumers(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Consumer>>> {
        self.inner
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn plane(&self) -> MutexGuard<'_, ControlPlane> {
        self.inner
            .plane
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Admission of one batch: each event is judged against the depth as it was when the batch
/// arrived plus what this batch already put in the lane.
pub struct Gate<'a> {
    lanes: &'a Lanes,
    level: Level,
    /// Each lane's depth when first asked about.
    depth: [Option<u64>; 3],
    /// Events this batch put in each lane.
    added: [u64; 3],
}

impl Gate<'_> {
    /// What to do with an event of `priority`.
    pub fn admit(&mut self, priority: Priority) -> Admission {
        let lane = self.lanes.lane(priority);
        if self.level >= Level::Emergency && priority >= Priority::Low {
            return Admission::Shed(Shed::Emergency);
        }
        if self.level >= Level::Critical && lane == Lane::Batch {
            return Admission::Shed(Shed::Critical);
        }
        if self.level >= Level::Degraded && lane == Lane::Transactional {
            return Admission::Wait(lane);
        }
        let spec = self.lanes.spec(lane);
        let i = lane.index();
        let depth = *self.depth[i].get_or_insert_with(|| self.lanes.depth(lane));
        match spec.overflow {
            // Judged on the depth before the batch: a batch larger than the capacity still
            // goes in once the lane has room, rather than waiting for ever.
            Overflow::Block if depth >= spec.capacity => return Admission::Wait(lane),
            Overflow::DropNewest if depth + self.added[i] >= spec.capacity => {
                return Admission::Shed(Shed::DropNewest);
            }
            // drop_oldest: the workers shed the oldest waiting events instead.
            _ => {}
        }
        self.added[i] += 1;
        Admission::Take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(capacity: usize) -> Lanes {
        let mut config = LanesConfig::default();
        for lane in [
            &mut config.realtime,
            &mut config.transactional,
            &mut config.batch,
        ] {
            lane.capacity = Some(capacity);
        }
        Lanes::new(&config, &ControlConfig::default())
    }

    fn admit_all(lanes: &Lanes, priority: Priority, n: usize) -> Vec<Admission> {
        let mut gate = lanes.gate();
        (0..n).map(|_| gate.admit(priority)).collect()
    }

    #[test]
    fn each_policy_at_the_door_and_the_depth_comes_from_the_slowest_running_pipeline() {
        let lanes = lanes(3);
        let fast = lanes.consumer("fast");
        let slow = lanes.consumer("slow");
        // Nothing waits yet: three of each lane fit, then each lane's policy applies.
        // Nothing waits yet: a whole batch goes in, however large, while there is room.
        let medium = admit_all(&lanes, Priority::Medium, 4);
        assert_eq!(medium, [Admission::Take; 4]);
        let batch = admit_all(&lanes, Priority::Batch, 4);
        assert_eq!(batch[..3], [Admission::Take; 3]);
        assert_eq!(batch[3], Admission::Shed(Shed::DropNewest));
        // drop_oldest takes everything: the workers make room.
        let high = admit_all(&lanes, Priority::High, 5);
        assert_eq!(high, vec![Admission::Take; 5]);
        lanes.admitted(Lane::Transactional, 3);
        assert_eq!(lanes.depth(Lane::Transactional), 3);
        fast.passed([0, 3, 0]);
        assert_eq!(lanes.depth(Lane::Transactional), 3, "slow still has them");
        slow.passed([0, 2, 0]);
        assert_eq!(lanes.depth(Lane::Transactional), 1);
        assert_eq!(lanes.full([Priority::Low]), None);
        slow.passed([0, 0, 0]);
        lanes.admitted(Lane::Transactional, 2);
        assert_eq!(lanes.depth(Lane::Transactional), 3);
        assert_eq!(
            lanes.full([Priority::High, Priority::Low]),
            Some(Lane::Transactional)
        );
        // A stopped pipeline holds nothing back: only fast's two count.
        slow.set_active(false);
        assert_eq!(lanes.depth(Lane::Transactional), 2);
        lanes.retain(&["fast"]);
        assert_eq!(lanes.consumers().len(), 1);
    }

    #[test]
    fn the_control_planes_actions_are_cumulative() {
        let lanes = lanes(1_000);
        let at = |level: Level| {
            lanes.set_override(Some((level, Duration::from_secs(60))));
            let mut gate = lanes.gate();
            Priority::ALL.map(|p| gate.admit(p))
        };
        let take = Admission::Take;
        let wait = Admission::Wait(Lane::Transactional);
        assert_eq!(at(Level::Elevated), [take; 5]);
        assert_eq!(at(Level::Degraded), [take, take, wait, wait, take]);
        let critical = Admission::Shed(Shed::Critical);
        assert_eq!(at(Level::Critical), [take, take, wait, wait, critical]);
        let diverted = Admission::Shed(Shed::Emergency);
        assert_eq!(at(Level::Emergency), [take, take, wait, diverted, diverted]);
        assert_eq!(lanes.set_override(None), Level::Healthy);
    }

    #[test]
    fn the_load_counts_offered_and_dropped_events_and_not_the_control_planes_own_sheds() {
        let lanes = lanes(10);
        let _c = lanes.consumer("p");
        lanes.admitted(Lane::Transactional, 10);
        lanes.shed(Lane::Transactional, Shed::DropNewest, 5);
        lanes.shed(Lane::Realtime, Shed::DropOldest, 2);
        lanes.shed(Lane::Transactional, Shed::Emergency, 7);
        let load = lanes.load();
        assert_eq!(load.depth, 1.0);
        assert_eq!(load.offered, 10 + 5 + 7);
        assert_eq!(load.dropped, 5 + 2);
        // The batch lane is not judged.
        lanes.admitted(Lane::Batch, 100);
        lanes.shed(Lane::Batch, Shed::DropNewest, 1_000);
        lanes.shed(Lane::Batch, Shed::Critical, 7);
        assert_eq!(lanes.load(), load);
        let state = lanes.state();
        assert_eq!(state.lanes[2].shed["critical"], 7);
        assert_eq!(state.lanes[2].depth, 100);
    }
}
