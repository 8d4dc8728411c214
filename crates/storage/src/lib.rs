//! The embedded event store (RocksDB).
//!
//! - [`db`]: opening the database, its column families and tuning; the directory lock.
//! - [`log`]: the event log: key layout and the group-commit writer that makes batches durable.
//! - [`feed`]: newly durable batches handed to readers that keep up, in memory.
//! - [`scan`]: time-range scans over the log, forward or backward, with cursors.
//! - `recovery`: the database handle, and taking writes again after a write error (a full
//!   disk) without a restart: RocksDB's own resume, or a reopen in-process.
//! - [`retention`]: the background pass that deletes old events once every pipeline has
//!   processed them, and enforces the optional disk ceiling.
//! - [`dlq`]: the dead-letter queue: events that failed, with reason and time; storing,
//!   reading and deleting them, and the replay requests the pipelines pick up.
//! - [`pipelines`]: pipelines' outputs and checkpoints, committed atomically with their dead
//!   letters.
//! - [`positions`]: sources' read positions (Kafka offsets), written with the events they cover.
//! - [`results`]: what stages keep to be queried (window firings, anomalies, any table a stage
//!   names), by pipeline, stage, table, key and time.
//! - [`ledger`]: AI spend per day and pipeline, and reservations of calls in flight.
//! - [`backup`]: online backups (RocksDB's `BackupEngine`: consistent, incremental,
//!   verified), listing, pruning and restore.
//! - [`events`]: the metrics this crate reports.
//!
//! [`Store`] ties them together; clone it freely (it is a handle).
#![warn(missing_docs)]

pub mod backup;
pub mod db;
pub mod dlq;
pub mod error;
pub mod events;
pub mod feed;
pub mod ledger;
pub mod log;
pub mod pipelines;
pub mod positions;
mod recovery;
pub mod results;
pub mod retention;
pub mod scan;
mod store;

pub use backup::{BackupInfo, BackupOutcome};
pub use db::{ColumnFamily, Compression, StoreOptions};
pub use dlq::DeadLetter;
pub use error::StorageError;
pub use events::StorageMetrics;
pub use feed::{Feed, Subscription};
pub use ledger::{Account, LedgerRows, LedgerWrite, OpenReservation};
pub use pipelines::{
    Checkpoint, NewDeadLetter, Output, PipelineCommit, StateChange, StateEntry, StateWrite,
    StoredOutput,
};
pub use results::{ResultChange, ResultEntry, ResultQuery};
pub use retention::{ForcedDeletions, RetentionPolicy};
pub use scan::{Order, ScanRange};
pub use store::{Backlog, Store};

/// A store in a fresh temporary directory (kept alive by the returned guard), not syncing, for
/// this crate's tests.
#[cfg(test)]
pub(crate) fn test_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
    let metrics =
        StorageMetrics::register(&colloquium_telemetry::metrics::MetricsRegistry::default());
    let options = StoreOptions {
        sync: false,
        ..StoreOptions::new(dir.path())
    };
    let store = Store::open(options, metrics).unwrap_or_else(|e| panic!("opening the store: {e}"));
    (dir, store)
}
