//! Wires ingest to storage: a batch is accepted once the store has made it durable.

use colloquium_event::{Event, Reason, Reservation};
use colloquium_ingest::{Accept, AcceptError};
use colloquium_pipeline::RuntimeHandle;
use colloquium_storage::{StorageError, Store};

/// Appends accepted batches to the event log.
///
/// Requests already in flight when shutdown starts still complete here: the server stops
/// reading new requests, and the store closes only after in-flight ones are answered.
#[derive(Clone)]
pub struct StoreAccept {
    pub store: Store,
    /// Woken after each durable batch.
    pub pipelines: RuntimeHandle,
}

impl Accept for StoreAccept {
    async fn accept(&self, events: Vec<Event>, ids: Reservation) -> Result<(), AcceptError> {
        let stored = self.store.append_settling(events.into(), ids).await;
        stored.map_err(|e| match e {
            StorageError::Closed => AcceptError::ShuttingDown,
            // The details (file paths, RocksDB's words) are logged by the writer, not sent.
            other => AcceptError::Unavailable(other.public_message().to_owned()),
        })?;
        self.pipelines.notify();
        Ok(())
    }

    async fn dead_letter(
        &self,
        event: Event,
        reason: Reason,
        error: String,
    ) -> Result<(), AcceptError> {
        let store = self.store.clone();
        let stored =
            tokio::task::spawn_blocking(move || store.put_dead_letter(event, reason, &error))
                .await
                .map_err(|e| AcceptError::Unavailable(e.to_string()))?;
        stored.map(drop).map_err(|e| match e {
            StorageError::Closed => AcceptError::ShuttingDown,
            other => AcceptError::Unavailable(other.public_message().to_owned()),
        })
    }
}
