//! Where a worker's next events come from.
//!
//! A worker that has caught up with the log takes new events in memory from the store's feed
//! (`Store::feed`: each durable batch, published before its ids settle), so it neither reads
//! nor decodes them again. One that falls more than [`FEED_CAPACITY`] events behind, or whose
//! step fails, reads the log until it has caught up again.

use std::sync::Arc;

use colloquium_event::{Event, EventId, IdGenerator};
use colloquium_storage::{ScanRange, StorageError, Store, Subscription};

use super::STEP_EVENTS;
use crate::events::PipelineMetrics;

/// Most events a worker's in-memory feed holds; a worker further behind reads the log.
const FEED_CAPACITY: usize = 50 * STEP_EVENTS;
/// `source` label values of `colloquium_pipeline_read_events_total`.
const MEMORY: &str = "memory";
const LOG: &str = "log";

/// Where a worker's next events come from.
pub(super) enum Intake {
    /// Catching up: reading the log. `subscription` buffers what is published meanwhile;
    /// every batch reserved before it was taken has an id below `since`.
    Log {
        subscription: Arc<Subscription>,
        since: Option<EventId>,
    },
    /// Caught up: new events arrive in memory. `pending` holds those not yet below the
    /// watermark (an earlier batch may still land), in id order.
    Memory {
        subscription: Arc<Subscription>,
        pending: Vec<Event>,
    },
}

impl Intake {
    /// Back to the log, with a fresh subscription for when it has caught up again.
    pub(super) fn log(store: &Store, ids: &IdGenerator) -> Intake {
        // Subscribe first: a batch reserved after `since` is read is published after this.
        let subscription = store.feed().subscribe(FEED_CAPACITY);
        Intake::Log {
            subscription,
            since: ids.issued(),
        }
    }

    /// Up to [`STEP_EVENTS`] events after `after` and below `watermark`, in id order: from
    /// memory once caught up, else from the log.
    pub(super) fn next_events(
        &mut self,
        store: &Store,
        ids: &IdGenerator,
        metrics: &PipelineMetrics,
        after: Option<EventId>,
        watermark: Option<EventId>,
    ) -> Result<Vec<Event>, StorageError> {
        let is_new = |id: EventId| after.is_none_or(|a| id > a);
        // No watermark: no id given out yet, so everything in the log is settled.
        let settled = |id: EventId| watermark.is_none_or(|w| id < w);
        if let Intake::Memory {
            subscription,
            pending,
        } = self
        {
            // Taken after reading the watermark: whatever settled below it is in here.
            if let Some(batches) = subscription.take() {
                for batch in batches {
                    pending.extend(batch.iter().filter(|e| is_new(e.id)).cloned());
                }
                if pending.len() <= FEED_CAPACITY {
                    pending.sort_unstable_by_key(|e| e.id);
                    let ready = pending.partition_point(|e| settled(e.id)).min(STEP_EVENTS);
                    let events: Vec<Event> = pending.drain(..ready).collect();
                    metrics.read(MEMORY, events.len());
                    return Ok(events);
                }
            }
            // Fell too far behind (batches were dropped, or too many wait): the log has them
            // all, and holding them here would cost memory without bound.
            *self = Intake::log(store, ids);
        }
        let range = ScanRange {
            after,
            ..ScanRange::default()
        };
        let mut events = Vec::new();
        for item in store.scan(range, true) {
            let (id, bytes) = item?;
            if !settled(id) || events.len() >= STEP_EVENTS {
                break;
            }
            events.push(colloquium_storage::log::decode(&id.to_bytes(), &bytes)?);
        }
        metrics.read(LOG, events.len());
        // Caught up with the log below a watermark past every batch reserved before the
        // subscription: from now on, every new event is in the subscription.
        if let Intake::Log {
            subscription,
            since,
        } = self
            && events.len() < STEP_EVENTS
            && since.is_none_or(|s| watermark.is_some_and(|w| w >= s))
        {
            *self = Intake::Memory {
                subscription: subscription.clone(),
                pending: Vec::new(),
            };
        }
        Ok(events)
    }
}
