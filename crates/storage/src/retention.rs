//! Retention: deletes events, dead letters and pipeline outputs older than the configured age,
//! in a background thread.
//!
//! Event and dead-letter keys are time-ordered, so "older than the cutoff" is the key range
//! `[0, cutoff)`: one range tombstone removes it whatever its size, files wholly inside it are
//! dropped, and a compaction of just that range reclaims the rest. Outputs are keyed by
//! pipeline, then input event id: one range per pipeline, left to universal compaction to
//! reclaim (a manual compaction there would rewrite everything). Ingest never waits on any of it.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use colloquium_event::{EventId, Timestamp};
use rocksdb::DB;

use crate::{ColumnFamily, StorageError, StorageMetrics};

/// Deletes every record of `cf` whose id is older than `cutoff`; returns whether any existed.
pub(crate) fn delete_before(
    db: &DB,
    cf: ColumnFamily,
    cutoff: Timestamp,
) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(cf.name()) else {
        return Ok(false);
    };
    let start = [0u8; EventId::LEN];
    let end = EventId::min_at(cutoff).to_bytes();
    // A tombstone per pass would slow reads for nothing; only write one when there is data.
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    let oldest_is_expired = iter.valid() && iter.key().is_some_and(|k| k < end.as_slice());
    iter.status()?;
    drop(iter);
    if !oldest_is_expired {
        return Ok(false);
    }
    db.delete_range_cf(&handle, start, end)?;
    db.delete_file_in_range_cf(&handle, start, end)?;
    db.compact_range_cf(&handle, Some(start), Some(end));
    Ok(true)
}

/// Deletes every output whose input event is older than `cutoff`, in every pipeline's key range
/// (removed pipelines' too); returns whether any existed.
pub(crate) fn delete_outputs_before(db: &DB, cutoff: Timestamp) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Outputs.name()) else {
        return Ok(false);
    };
    let cutoff = EventId::min_at(cutoff).to_bytes();
    let mut deleted = false;
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    // Visit each pipeline's first key: `name 0x00 id index`.
    while let Some(key) = iter.key() {
        let Some(end_of_name) = key.iter().position(|b| *b == 0) else {
            break; // not an output key: nothing of ours past it
        };
        let prefix = key[..=end_of_name].to_vec();
        let mut end = prefix.clone();
        end.extend_from_slice(&cutoff);
        if key < end.as_slice() {
            db.delete_range_cf(&handle, &prefix, &end)?;
            db.delete_file_in_range_cf(&handle, &prefix, &end)?;
            deleted = true;
        }
        // The next pipeline: every key of this one sorts below `name 0x01`.
        let mut next = key[..end_of_name].to_vec();
        next.push(1);
        iter.seek(&next);
    }
    iter.status()?;
    Ok(deleted)
}

/// The background retention thread; stops when dropped or [`RetentionTask::stop`]ped.
pub(crate) struct RetentionTask {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionTask {
    /// Starts a thread that every `interval` deletes what is older than `max_age`.
    pub(crate) fn start(
        db: Arc<DB>,
        max_age: Duration,
        interval: Duration,
        metrics: StorageMetrics,
    ) -> Result<Self, StorageError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        let thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                loop {
                    let cutoff = Timestamp::now().saturating_sub_millis(max_age_ms);
                    let passes = [ColumnFamily::Events, ColumnFamily::Dlq, ColumnFamily::Outputs];
                    for cf in passes {
                        let pass = match cf {
                            ColumnFamily::Outputs => delete_outputs_before(&db, cutoff),
                            _ => delete_before(&db, cf, cutoff),
                        };
                        match pass {
                            Ok(true) => {
                                metrics.retention_runs.inc();
                                tracing::info!(cf = cf.name(), cutoff = %cutoff, "retention deleted expired records");
                            }
                            Ok(false) => {}
                            Err(error) => tracing::warn!(cf = cf.name(), %error, "retention pass failed"),
                        }
                    }
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        _ => break,
                    }
                }
            })
            .map_err(|e| StorageError::Db(format!("starting retention thread: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for a running pass to finish.
    pub(crate) fn stop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.stop();
    }
}
