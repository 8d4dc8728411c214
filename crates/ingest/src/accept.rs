//! The hand-off from a source to whatever makes events durable.

use std::future::Future;

use colloquium_event::{Event, Reservation};

/// Takes batches from sources. `accept` resolves `Ok` only once the whole batch is durable;
/// on `Err` none of it was stored.
pub trait Accept: Clone + Send + Sync + 'static {
    /// Makes `events` durable, atomically. `ids` is dropped once the batch is written or can no
    /// longer be, even if the caller stops waiting, so readers below the id watermark never
    /// miss an event that is still on its way.
    fn accept(
        &self,
        events: Vec<Event>,
        ids: Reservation,
    ) -> impl Future<Output = Result<(), AcceptError>> + Send;
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
}
