//! Source positions: where a source that reads a replayable log (a Kafka partition) reads
//! next, handed to storage with the batch they cover so both land in one write.

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
}
