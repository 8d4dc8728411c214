//! The hand-off from a source to whatever makes events durable.

use std::future::Future;
use std::pin::Pin;

use colloquium_event::{Event, Lane, Position, PositionedBatch, Priority, Reason, Reservation};

/// A queued batch on its way to being durable: `Ok` once it is (see
/// [`Accept::accept_positioned`]).
pub type Durable = Pin<Box<dyn Future<Output = Result<(), AcceptError>> + Send>>;

/// Takes batches from sources. `accept` resolves `Ok` only once the whole batch is durable;
/// on `Err` none of it was stored.
///
/// Before taking ids for a batch, a source asks [`Accept::full`]: a lane that must push back
/// (`overflow: block`, or the control plane pausing it) makes HTTP answer 503 and TCP stop
/// reading until there is room; UDP, which cannot push back, drops the datagrams and says so
/// with [`Accept::dropped`].
pub trait Accept: Clone + Send + Sync + 'static {
    /// The first lane among `priorities` that cannot take events now, if any. The default
    /// has no lanes.
    fn full(&self, priorities: &mut dyn Iterator<Item = Priority>) -> Option<Lane> {
        let _ = priorities;
        None
    }

    /// Counts events of `priorities` that a source could not keep (received, never stored).
    fn dropped(&self, priorities: &mut dyn Iterator<Item = Priority>) {
        let _ = priorities;
    }

    /// Makes `events` durable, atomically. `ids` is dropped once the batch is written or can no
    /// longer be, even if the caller stops waiting, so readers below the id watermark never
    /// miss an event that is still on its way.
    fn accept(
        &self,
        events: Vec<Event>,
        ids: Reservation,
    ) -> impl Future<Output = Result<(), AcceptError>> + Send;

    /// Hands `events` to the pipelines in memory without making them durable (a
    /// `persist: false` source). The default stores them, for hand-offs without pipelines.
    fn publish(
        &self,
        events: Vec<Event>,
        ids: Reservation,
    ) -> impl Future<Output = Result<(), AcceptError>> + Send {
        self.accept(events, ids)
    }

    /// Makes `event` durable in the dead-letter queue with `reason` and `error` (what a source
    /// received but cannot turn into an event: a malformed frame, with its raw bytes). The
    /// default refuses, for hand-offs that keep no dead letters.
    fn dead_letter(
        &self,
        event: Event,
        reason: Reason,
        error: String,
    ) -> impl Future<Output = Result<(), AcceptError>> + Send {
        let _ = (event, reason, error);
        async { Err(AcceptError::Unavailable("no dead-letter queue".to_owned())) }
    }

    /// Queues `batch` to be made durable in one atomic write: its events (through the lanes,
    /// as [`Accept::accept`]), its dead letters, and `source`'s positions, so that a source
    /// that resumes from [`Accept::positions`] never stores a record twice or skips one.
    /// Returns once the batch is queued, without waiting for the write; what it returns
    /// resolves `Ok` once the batch is durable. Batches queued one after another are written in
    /// that order, and once one fails, every later one of its [`BatchChain`] fails unwritten,
    /// so a source may keep several in flight. The default refuses, for hand-offs that keep no
    /// positions.
    ///
    /// [`BatchChain`]: colloquium_event::BatchChain
    fn accept_positioned(
        &self,
        source: &'static str,
        batch: PositionedBatch,
        ids: Reservation,
    ) -> Result<Durable, AcceptError> {
        let _ = (source, batch, ids);
        Err(AcceptError::Unavailable("no source positions".to_owned()))
    }

    /// `source`'s positions as last made durable by [`Accept::accept_positioned`].
    fn positions(&self, source: &str) -> Result<Vec<Position>, AcceptError> {
        let _ = source;
        Ok(Vec::new())
    }
}

/// Why a batch was not accepted. Every variant means nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Too much is in flight; retry later.
    #[error("node is overloaded")]
    Overloaded,
    /// The store failed to write (disk full, I/O error): a short message for the client.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A lane is full and its policy (or the control plane) pushes back: retry later.
    #[error("lane {0} is full; retry shortly")]
    Full(Lane),
}
