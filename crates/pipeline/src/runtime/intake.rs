//! Where a worker's next events come from, and in which lane order.
//!
//! A worker that has caught up with the log takes new events in memory from the store's feed
//! (`Store::feed`: each durable batch, published before its ids settle), so it neither reads
//! nor decodes them again. There they wait in one queue per priority lane (each in id order);
//! each step takes from the lanes by weight (see [`shares`]), and a `drop_oldest` lane over its
//! capacity (or the batch lane at CRITICAL) has its oldest settled events shed. A worker that
//! falls more than its capacity behind (the lanes' capacities plus a margin, at most
//! [`MAX_IN_MEMORY`]), or whose step fails, reads the log in id order until it has caught up
//! again: lane order and shedding apply to what waits in memory.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use colloquium_config::Overflow;
use colloquium_event::{Event, EventId, IdGenerator, Lane};
use colloquium_router::{Lanes, Level, Shed};
use colloquium_storage::{ScanRange, StorageError, Store, Subscription};

use super::STEP_EVENTS;
use crate::events::PipelineMetrics;

/// Events a worker holds in memory beyond the lanes' capacities (what arrives during a step).
const MARGIN: usize = 10 * STEP_EVENTS;
/// Most events a worker holds in memory, whatever the lanes' capacities: with lanes larger
/// than this, a worker that far behind reads the log (in id order, without shedding).
const MAX_IN_MEMORY: usize = 100_000;
/// `source` label values of `colloquium_pipeline_read_events_total`.
const MEMORY: &str = "memory";
const LOG: &str = "log";

/// One step's events.
#[derive(Debug, Default)]
pub(super) struct Taken {
    /// To process, in id order.
    pub events: Vec<Event>,
    /// To shed (dead-letter for the pipelines that had not passed them), with why.
    pub shed: Vec<(Event, Shed)>,
    /// Per lane: whether every settled event of it up to the step's last id is in `events`
    /// or `shed` (so positions in that lane may move to the step's last id).
    pub drained: [bool; 3],
}

/// Where a worker's next events come from.
pub(super) struct Intake {
    store: Store,
    ids: Arc<IdGenerator>,
    lanes: Lanes,
    /// Sources with `persist: false`: their events are in no log, so what this intake lets
    /// go of unprocessed is counted as dropped.
    volatile: Arc<BTreeSet<String>>,
    /// Most events held in memory before going back to the log.
    capacity: usize,
    mode: Mode,
}

enum Mode {
    /// Catching up: reading the log. `subscription` buffers what is published meanwhile;
    /// every batch reserved before it was taken has an id below `since`.
    Log {
        subscription: Arc<Subscription>,
        since: Option<EventId>,
    },
    /// Caught up: new events arrive in memory and wait in their lane, in id order, until
    /// taken (those not yet below the watermark wait: an earlier batch may still land).
    Memory {
        subscription: Arc<Subscription>,
        waiting: [VecDeque<Event>; 3],
    },
}

impl Intake {
    /// Reading the log, with a fresh subscription for when it has caught up.
    pub(super) fn log(
        store: &Store,
        ids: &Arc<IdGenerator>,
        lanes: &Lanes,
        volatile: &Arc<BTreeSet<String>>,
    ) -> Intake {
        let capacity = usize::try_from(lanes.total_capacity())
            .unwrap_or(usize::MAX)
            .saturating_add(MARGIN)
            .min(MAX_IN_MEMORY);
        Intake {
            store: store.clone(),
            ids: ids.clone(),
            lanes: lanes.clone(),
            volatile: volatile.clone(),
            capacity,
            mode: Intake::subscribe(store, ids, capacity),
        }
    }

    fn subscribe(store: &Store, ids: &IdGenerator, capacity: usize) -> Mode {
        // Subscribe first: a batch reserved after `since` is read is published after this.
        let subscription = store.feed().subscribe(capacity);
        Mode::Log {
            subscription,
            since: ids.issued(),
        }
    }

    /// The next step's events after `after` and below `watermark`, up to `budget`: from
    /// memory by lane once caught up, else from the log in id order.
    pub(super) fn next_events(
        &mut self,
        metrics: &PipelineMetrics,
        after: Option<EventId>,
        watermark: Option<EventId>,
        budget: usize,
    ) -> Result<Taken, StorageError> {
        let lanes = &self.lanes;
        let volatile = &self.volatile;
        let is_volatile = |e: &Event| volatile.contains(&e.metadata.source);
        let is_new = |id: EventId| after.is_none_or(|a| id > a);
        // No watermark: no id given out yet, so everything in the log is settled.
        let settled = |id: EventId| watermark.is_none_or(|w| id < w);
        if let Mode::Memory {
            subscription,
            waiting,
        } = &mut self.mode
        {
            // Taken after reading the watermark: whatever settled below it is in here.
            if let Some(batches) = subscription.take() {
                let mut arrived: [Vec<Event>; 3] = Default::default();
                let mut passed = 0;
                for event in batches.iter().flat_map(|b| b.iter()) {
                    if is_new(event.id) {
                        let lane = lanes.lane(event.metadata.priority).index();
                        arrived[lane].push(event.clone());
                    } else if is_volatile(event) {
                        // Read past in the log while it was only in memory.
                        passed += 1;
                    }
                }
                self.store.feed().volatile_dropped(passed);
                for (queue, arrived) in waiting.iter_mut().zip(arrived) {
                    insert_sorted(queue, arrived);
                }
                if waiting.iter().map(VecDeque::len).sum::<usize>() <= self.capacity {
                    let taken = take(waiting, lanes, &settled, budget);
                    metrics.read(MEMORY, taken.events.len() + taken.shed.len());
                    return Ok(taken);
                }
            }
            // Fell too far behind (batches were dropped, or too many wait): the log has them
            // all (but the volatile ones), and holding them here would cost memory without
            // bound.
            self.drop_waiting();
            self.mode = Intake::subscribe(&self.store, &self.ids, self.capacity);
        }
        let range = ScanRange {
            after,
            ..ScanRange::default()
        };
        let (events, full) = self.store.settled_events(range, watermark, budget, true)?;
        metrics.read(LOG, events.len());
        // Caught up with the log below a watermark past every batch reserved before the
        // subscription: from now on, every new event is in the subscription.
        if let Mode::Log {
            subscription,
            since,
        } = &self.mode
            && !full
            && since.is_none_or(|s| watermark.is_some_and(|w| w >= s))
        {
            self.mode = Mode::Memory {
                subscription: subscription.clone(),
                waiting: Default::default(),
            };
        }
        // Read in id order: every lane is covered up to the last event read.
        Ok(Taken {
            events,
            shed: Vec::new(),
            drained: [true; 3],
        })
    }
}

impl Intake {
    /// Lets go of what waits in memory, counting the volatile events among it as dropped.
    fn drop_waiting(&mut self) {
        if let Mode::Memory { waiting, .. } = &mut self.mode {
            let volatile = &self.volatile;
            let lost = (waiting.iter().flatten())
                .filter(|e| volatile.contains(&e.metadata.source))
                .count();
            self.store.feed().volatile_dropped(lost);
            waiting.iter_mut().for_each(VecDeque::clear);
        }
    }
}

impl Drop for Intake {
    /// A worker that stops (a reload, a failed step, shutdown) rereads the log next time:
    /// volatile events still waiting are lost, and counted.
    fn drop(&mut self) {
        self.drop_waiting();
    }
}

/// Adds `arrived` to `queue`, keeping it in id order. Batches are published in the order they
/// became durable, so new events are mostly after the queue's last: only the tail they
/// overlap is merged, never the whole queue re-sorted.
fn insert_sorted(queue: &mut VecDeque<Event>, mut arrived: Vec<Event>) {
    let Some(first) = arrived.iter().map(|e| e.id).min() else {
        return;
    };
    arrived.sort_unstable_by_key(|e| e.id);
    let from = queue.partition_point(|e| e.id < first);
    if from == queue.len() {
        queue.extend(arrived);
        return;
    }
    let mut tail: Vec<Event> = queue.drain(from..).collect();
    tail.extend(arrived);
    // Two sorted runs: a stable sort merges them in linear time.
    tail.sort_by_key(|e| e.id);
    queue.extend(tail);
}

/// Sheds what the lanes' policies say, then takes one step's events by weight from the
/// settled fronts of the lanes.
fn take(
    waiting: &mut [VecDeque<Event>; 3],
    lanes: &Lanes,
    settled: &impl Fn(EventId) -> bool,
    budget: usize,
) -> Taken {
    let level = lanes.level();
    let mut taken = Taken::default();
    let mut ready = [0; 3];
    for lane in Lane::ALL {
        let queue = &mut waiting[lane.index()];
        let spec = lanes.spec(lane);
        let limit = if level >= Level::Critical && lane == Lane::Batch {
            Some((0, Shed::Critical))
        } else if spec.overflow == Overflow::DropOldest {
            Some((
                usize::try_from(spec.capacity).unwrap_or(usize::MAX),
                Shed::DropOldest,
            ))
        } else {
            None
        };
        let settled_count = queue.partition_point(|e| settled(e.id));
        let mut shed = 0;
        if let Some((limit, cause)) = limit {
            shed = queue.len().saturating_sub(limit).min(settled_count);
            taken
                .shed
                .extend(queue.drain(..shed).map(|event| (event, cause)));
        }
        ready[lane.index()] = settled_count - shed;
    }
    let weights = Lane::ALL.map(|l| lanes.spec(l).weight);
    let counts = shares(ready, weights, budget);
    for lane in Lane::ALL {
        let i = lane.index();
        taken.events.extend(waiting[i].drain(..counts[i]));
        taken.drained[i] = counts[i] == ready[i];
    }
    taken.events.sort_unstable_by_key(|e| e.id);
    taken
}

/// How many of `ready` events to take from each lane within `budget`: every lane with events
/// gets its weighted share of what is left, at least one, and what a lane cannot use goes to
/// the others (most urgent first). With the default weights 6:3:1, a busy batch lane gets at
/// least a tenth of every step, so it is never starved; realtime gets six tenths, and all of
/// a step when the others are idle.
pub(super) fn shares(ready: [usize; 3], weights: [u32; 3], budget: usize) -> [usize; 3] {
    let mut counts = [0; 3];
    let mut left = budget;
    loop {
        let open: Vec<usize> = (0..3).filter(|i| ready[*i] > counts[*i]).collect();
        let total: u64 = open.iter().map(|i| u64::from(weights[*i])).sum();
        if left == 0 || open.is_empty() || total == 0 {
            return counts;
        }
        let round = left;
        for i in open {
            let share = (round as u64 * u64::from(weights[i]) / total).max(1);
            let give = usize::try_from(share)
                .unwrap_or(usize::MAX)
                .min(ready[i] - counts[i])
                .min(left);
            counts[i] += give;
            left -= give;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shares;

    #[test]
    fn steps_are_shared_by_weight_and_what_a_lane_cannot_use_goes_to_the_others() {
        let w = [6, 3, 1];
        assert_eq!(shares([5_000, 5_000, 5_000], w, 1_000), [600, 300, 100]);
        assert_eq!(shares([10, 5_000, 5_000], w, 1_000), [10, 743, 247]);
        assert_eq!(shares([0, 0, 5_000], w, 1_000), [0, 0, 1_000]);
        assert_eq!(shares([3, 2, 1], w, 1_000), [3, 2, 1]);
        assert_eq!(shares([5, 5, 5], w, 2), [1, 1, 0]);
        assert_eq!(shares([0, 0, 0], w, 1_000), [0, 0, 0]);
        for ready in [[1, 2, 3], [999, 1, 1], [100_000, 100_000, 1]] {
            let counts = shares(ready, w, 1_000);
            let sum: usize = counts.iter().sum();
            assert_eq!(sum, ready.iter().sum::<usize>().min(1_000), "{ready:?}");
            assert!(counts.iter().zip(ready).all(|(c, r)| *c <= r));
        }
    }
}
