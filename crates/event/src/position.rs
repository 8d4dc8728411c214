//! Source positions: where a source that reads a replayable log (a Kafka partition) reads
//! next, handed to storage with the batch they cover so both land in one write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Event, Reason};

/// One of a source's positions: its key (a Kafka source: topic, `0x00`, partition) and the
/// next position to read there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The source's own key.
    pub key: Vec<u8>,
    /// The next position to read.
    pub next: u64,
}

/// A source's batch: events, what it dead-letters, and the positions they reach.
#[derive(Debug, Default)]
pub struct PositionedBatch {
    /// Events for the log.
    pub events: Vec<Event>,
    /// What the source received but keeps as dead letters, with reason and error.
    pub dead_letters: Vec<(Event, Reason, String)>,
    /// Where the source reads next once this batch is durable.
    pub positions: Vec<Position>,
    /// The run of batches this one belongs to (see [`BatchChain`]).
    pub chain: BatchChain,
}

/// A source's batches in flight at once, written in the order they were queued: once one
/// fails, every later one in the chain fails unwritten. So a stored position never passes a
/// record that was not stored, although several batches are on their way. After a failure the
/// source reads again from its last durable position, in a new chain.
#[derive(Clone, Debug, Default)]
pub struct BatchChain(Arc<AtomicBool>);

impl BatchChain {
    /// Marks the chain broken: its batches not yet written fail.
    pub fn break_off(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a batch of the chain failed.
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
