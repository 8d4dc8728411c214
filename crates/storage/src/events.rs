//! Everything the storage layer reports, registered once at open.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use colloquium_telemetry::{MetricsRegistry, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels for per-column-family gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CfLabels {
    /// Column family name.
    pub cf: &'static str,
}

/// Labels for dead letters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A short, bounded reason code.
    pub reason: String,
}

/// Labels for what `storage.max_disk_usage` deleted before anyone was done with it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForcedLabels {
    /// The pipeline (or `@router`) that had not processed it; `-` for a dead letter of none.
    pub pipeline: String,
    /// `unprocessed` for events; the dead letter's reason for dead letters.
    pub reason: String,
}

/// Labels for the store's recoveries from a write error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    /// `resumed` (RocksDB cleared the error itself) or `reopened` (the store reopened it).
    pub how: &'static str,
}

/// Labels for failed writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteErrorLabels {
    /// The file kind the failed write reached: `wal` (a write's log append), `table` (a flush
    /// or compaction), `manifest`, or `other`.
    pub file: &'static str,
    /// `no_space`, or `io` for any other error.
    pub error: &'static str,
}

/// Storage metrics (`colloquium_storage_*`, `colloquium_dlq_*`).
#[derive(Clone)]
pub struct StorageMetrics {
    stored: Counter,
    failed: Counter,
    commit_duration: Histogram,
    commit_events: Histogram,
    bytes_written: Counter,
    pub(crate) bytes: Family<CfLabels, Gauge<u64, AtomicU64>>,
    pub(crate) retention_runs: Counter,
    pub(crate) dead_letters: Family<ReasonLabels, Counter>,
    pub(crate) forced_events: Family<ForcedLabels, Counter>,
    pub(crate) forced_dead_letters: Family<ForcedLabels, Counter>,
    pub(crate) volatile_dropped: Counter,
    recoveries: Family<RecoveryLabels, Counter>,
    write_errors: Family<WriteErrorLabels, Counter>,
}

impl StorageMetrics {
    /// Registers the storage metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let metrics = registry.register("storage", |r| {
            let m = Self {
                stored: Counter::default(),
                failed: Counter::default(),
                commit_duration: latency_histogram(),
                commit_events: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
                bytes_written: Counter::default(),
                bytes: Family::default(),
                retention_runs: Counter::default(),
                dead_letters: Family::default(),
                forced_events: Family::default(),
                forced_dead_letters: Family::default(),
                volatile_dropped: Counter::default(),
                recoveries: Family::default(),
                write_errors: Family::default(),
            };
            r.register(
                "write_errors",
                "Store writes that failed, by the file they reached (wal, table, manifest) and error",
                m.write_errors.clone(),
            );
            r.register(
                "recoveries",
                "Times the store took writes again after a write error, by how",
                m.recoveries.clone(),
            );
            r.register(
                "volatile_dropped",
                "Events of `persist: false` sources dropped before a pipeline took them (not in the log)",
                m.volatile_dropped.clone(),
            );
            r.register("events_stored", "Events durably stored", m.stored.clone());
            r.register(
                "events_failed",
                "Events whose write failed",
                m.failed.clone(),
            );
            r.register(
                "commit_duration_seconds",
                "Duration of one group commit (WAL write and fsync)",
                m.commit_duration.clone(),
            );
            r.register(
                "commit_events",
                "Events per group commit",
                m.commit_events.clone(),
            );
            r.register(
                "written_bytes",
                "Record bytes written",
                m.bytes_written.clone(),
            );
            r.register("bytes", "Bytes on disk and in memtables", m.bytes.clone());
            r.register(
                "retention_runs",
                "Retention passes that deleted a range",
                m.retention_runs.clone(),
            );
            r.register(
                "forced_deleted_events",
                "Events storage.max_disk_usage deleted before this pipeline processed them",
                m.forced_events.clone(),
            );
            r.register(
                "forced_deleted_dead_letters",
                "Dead letters storage.max_disk_usage deleted before they were replayed",
                m.forced_dead_letters.clone(),
            );
            m
        });
        registry.register("dlq", |r| {
            r.register(
                "events",
                "Events sent to the dead-letter queue",
                metrics.dead_letters.clone(),
            );
        });
        metrics
    }

    pub(crate) fn commit(&self, events: u64, bytes: u64, took: Duration) {
        self.stored.inc_by(events);
        self.bytes_written.inc_by(bytes);
        self.commit_events.observe(events as f64);
        self.commit_duration.observe(took.as_secs_f64());
        tracing::trace!(events, bytes, ?took, "group commit");
    }

    /// Record bytes written since open.
    pub fn written_bytes(&self) -> u64 {
        self.bytes_written.get()
    }

    pub(crate) fn commit_failed(&self, events: u64) {
        self.failed.inc_by(events);
    }

    pub(crate) fn write_failed(&self, error: &crate::StorageError) {
        let message = error.to_string();
        // RocksDB names the file: `While appending to file: …/000012.log`.
        let file = if message.contains(".log") {
            "wal"
        } else if message.contains(".sst") {
            "table"
        } else if message.contains("MANIFEST") {
            "manifest"
        } else {
            "other"
        };
        let error = if error.is_no_space() {
            "no_space"
        } else {
            "io"
        };
        self.write_errors
            .get_or_create(&WriteErrorLabels { file, error })
            .inc();
    }

    pub(crate) fn recovered(&self, how: crate::recovery::Recovered) {
        self.recoveries
            .get_or_create(&RecoveryLabels { how: how.as_str() })
            .inc();
    }
}
