//! Retention: deletes old events and pipeline outputs in a background thread, never what a
//! pipeline has yet to read, and never a dead letter (those go only when replayed or deleted).
//!
//! Event keys are time-ordered, so "older than the cutoff" is the key range `[0, cutoff)`: one
//! range tombstone removes it whatever its size, files wholly inside it are dropped, and a
//! compaction of just that range reclaims the rest. The cutoff is the lower of the age limit
//! and the *reader floor*: the first event some reader (a pipeline, or the router) has not
//! processed, from the checkpoints column family. A pipeline whose sink is down therefore
//! keeps its events until it has delivered them, however long that takes.
//!
//! Outputs are keyed by pipeline, then input event id: one range per pipeline, left to
//! universal compaction to reclaim (a manual compaction there would rewrite everything).
//! Window results go the same way, one range per grouping key, by window start: in event
//! time, `max_age` behind each window stage's newest result.
//!
//! `storage.max_disk_usage` is the one thing that may delete past the floor: when the store
//! holds more, the oldest events go (and, when they are not enough, the oldest dead letters),
//! down to 90% of the ceiling. Every event a reader had not processed and every dead letter
//! removed that way is counted per pipeline (and reason), logged, and shows in `/health`.
//! Ingest never waits on any of it.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use colloquium_event::{EventId, Timestamp};
use rocksdb::DB;

use crate::dlq::DeadLetter;
use crate::dlq::REPLAY_PREFIX;
use crate::events::{ForcedLabels, StorageMetrics};
use crate::pipelines::all_checkpoints;
use crate::recovery::DbSlot;
use crate::{ColumnFamily, StorageError};

/// What retention keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetentionPolicy {
    /// Events (and outputs) older than this by ingest time go, once every reader is past them.
    pub max_age: Option<Duration>,
    /// Above this many bytes on disk, the oldest events and dead letters go, read or not.
    pub max_disk_bytes: Option<u64>,
    /// How often a pass runs.
    pub interval: Duration,
}

/// What `max_disk_usage` deleted that someone still needed, since the store opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForcedDeletions {
    /// Events some pipeline (or the router) had not processed.
    pub unprocessed_events: u64,
    /// Dead letters that were neither replayed nor deleted by a user.
    pub dead_letters: u64,
    /// When the last such deletion happened.
    pub last: Option<Timestamp>,
}

/// A reader of the log: a pipeline or the router, and the last event it processed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reader {
    name: String,
    position: Option<EventId>,
}

/// The key just above `id`: event keys are exactly 16 bytes, so `id ++ 0x00` sorts after `id`
/// and before every later id.
pub(crate) fn key_after(id: EventId) -> Vec<u8> {
    let mut key = id.to_bytes().to_vec();
    key.push(0);
    key
}

/// Every reader of the log, from the checkpoints column family.
fn readers(db: &DB) -> Result<Vec<Reader>, StorageError> {
    Ok(all_checkpoints(db)?
        .into_iter()
        .map(|(name, checkpoint)| Reader {
            name,
            position: checkpoint.position,
        })
        .collect())
}

/// The exclusive end of what every reader has processed (`None`: there are no readers).
fn reader_floor(readers: &[Reader]) -> Option<Vec<u8>> {
    readers
        .iter()
        .map(|r| r.position.map_or_else(Vec::new, key_after))
        .min()
}

/// Deletes every event whose key is below `end`; returns whether any existed.
fn delete_events_below(db: &DB, end: &[u8]) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Events.name()) else {
        return Ok(false);
    };
    let start: &[u8] = &[0u8; EventId::LEN];
    // A tombstone per pass would slow reads for nothing; only write one when there is data.
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    let oldest_is_expired = iter.valid() && iter.key().is_some_and(|k| k < end);
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

/// Deletes every event ingested before `cutoff` and processed by every reader; returns
/// whether any existed.
pub(crate) fn delete_before(db: &DB, cutoff: Timestamp) -> Result<bool, StorageError> {
    let age_end = EventId::min_at(cutoff).to_bytes().to_vec();
    let end = match reader_floor(&readers(db)?) {
        Some(floor) if floor < age_end => floor,
        _ => age_end,
    };
    delete_events_below(db, &end)
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

/// Integer property `name` of `cf` (0 when RocksDB reports none).
pub(crate) fn cf_property(db: &DB, cf: ColumnFamily, name: &str) -> u64 {
    db.cf_handle(cf.name())
        .and_then(|h| db.property_int_value_cf(&h, name).ok().flatten())
        .unwrap_or(0)
}

/// Bytes held by `cf`: SST files plus memtables.
pub(crate) fn cf_bytes(db: &DB, cf: ColumnFamily) -> u64 {
    cf_property(db, cf, "rocksdb.live-sst-files-size")
        + cf_property(db, cf, "rocksdb.cur-size-all-mem-tables")
}

fn estimated_keys(db: &DB, cf: ColumnFamily) -> u64 {
    cf_property(db, cf, "rocksdb.estimate-num-keys")
}

/// Walks the first `count` keys of `cf` in order, calling `visit` with each key and value;
/// returns the exclusive end of what it walked (`None`: `cf` is empty).
fn walk_first(
    db: &DB,
    cf: ColumnFamily,
    count: u64,
    mut visit: impl FnMut(&[u8], &[u8]),
) -> Result<Option<Vec<u8>>, StorageError> {
    let Some(handle) = db.cf_handle(cf.name()) else {
        return Ok(None);
    };
    let mut options = rocksdb::ReadOptions::default();
    options.fill_cache(false);
    let mut iter = db.raw_iterator_cf_opt(&handle, options);
    iter.seek_to_first();
    let (mut walked, mut last) = (0, None);
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        if walked >= count {
            break;
        }
        visit(key, value);
        last = Some(key.to_vec());
        walked += 1;
        iter.next();
    }
    iter.status()?;
    Ok(last.map(|key| [key.as_slice(), &[0]].concat()))
}

/// The background retention pass and what it reports.
struct Retention {
    slot: Arc<DbSlot>,
    policy: RetentionPolicy,
    metrics: StorageMetrics,
    forced: Arc<Mutex<ForcedDeletions>>,
}

impl Retention {
    fn pass(&self) {
        // While the store is being reopened there is nothing to do; the next pass does it.
        let Ok(db) = self.slot.get() else { return };
        if let Some(max_age) = self.policy.max_age {
            let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
            let cutoff = Timestamp::now().saturating_sub_millis(max_age_ms);
            for (cf, pass) in [
                (ColumnFamily::Events, delete_before(&db, cutoff)),
                (ColumnFamily::Outputs, delete_outputs_before(&db, cutoff)),
                (
                    ColumnFamily::Results,
                    crate::results::delete_results_older_than(
                        &db,
                        i64::try_from(max_age_ms).unwrap_or(i64::MAX),
                    ),
                ),
            ] {
                match pass {
                    Ok(true) => {
                        self.metrics.retention_runs.inc();
                        tracing::info!(cf = cf.name(), cutoff = %cutoff, "retention deleted expired records");
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(cf = cf.name(), %error, "retention pass failed"),
                }
            }
        }
        if let Some(max) = self.policy.max_disk_bytes
            && let Err(error) = self.enforce_ceiling(&db, max)
        {
            tracing::warn!(%error, "enforcing storage.max_disk_usage failed");
        }
    }

    /// Deletes the oldest events, then the oldest dead letters, until the store holds at
    /// most 90% of `max` bytes (estimated from key counts; the next pass corrects).
    fn enforce_ceiling(&self, db: &DB, max: u64) -> Result<(), StorageError> {
        let usage: u64 = ColumnFamily::ALL.iter().map(|cf| cf_bytes(db, *cf)).sum();
        if usage <= max {
            return Ok(());
        }
        let mut excess = usage - max / 10 * 9;
        for cf in [ColumnFamily::Events, ColumnFamily::Dlq] {
            let bytes = cf_bytes(db, cf);
            if excess == 0 || bytes == 0 {
                continue;
            }
            let share = (excess as f64 / bytes as f64).min(1.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let count = ((estimated_keys(db, cf) as f64 * share).ceil() as u64).max(1);
            match cf {
                ColumnFamily::Events => self.force_events(db, count)?,
                _ => self.force_dead_letters(db, count)?,
            }
            excess = excess.saturating_sub(bytes);
        }
        Ok(())
    }

    /// Deletes the oldest `count` events, counting per reader those it had not processed.
    fn force_events(&self, db: &DB, count: u64) -> Result<(), StorageError> {
        let readers = readers(db)?;
        let after: Vec<Vec<u8>> = readers
            .iter()
            .map(|r| r.position.map_or_else(Vec::new, key_after))
            .collect();
        let mut behind = vec![0u64; readers.len()];
        let mut deleted = 0u64;
        let end = walk_first(db, ColumnFamily::Events, count, |key, _| {
            deleted += 1;
            for (n, after) in behind.iter_mut().zip(&after) {
                *n += u64::from(key >= after.as_slice());
            }
        })?;
        let Some(end) = end else { return Ok(()) };
        delete_events_below(db, &end)?;
        tracing::info!(
            events = deleted,
            "storage.max_disk_usage reached: deleted the oldest events"
        );
        for (reader, &events) in readers.iter().zip(&behind).filter(|(_, n)| **n > 0) {
            let labels = ForcedLabels {
                pipeline: reader.name.clone(),
                reason: "unprocessed".into(),
            };
            self.metrics
                .forced_events
                .get_or_create(&labels)
                .inc_by(events);
            tracing::warn!(
                pipeline = %reader.name,
                events,
                "storage.max_disk_usage reached: deleted events this pipeline had not processed"
            );
        }
        self.record(behind.iter().sum(), 0);
        Ok(())
    }

    /// Deletes the oldest `count` dead letters (and their replay requests), counting them per
    /// pipeline and reason.
    fn force_dead_letters(&self, db: &DB, count: u64) -> Result<(), StorageError> {
        let (Some(dlq), Some(checkpoints)) = (
            db.cf_handle(ColumnFamily::Dlq.name()),
            db.cf_handle(ColumnFamily::Checkpoints.name()),
        ) else {
            return Ok(());
        };
        let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
        let end = walk_first(db, ColumnFamily::Dlq, count, |_, value| {
            let label = match serde_json::from_slice::<DeadLetter>(value) {
                Ok(l) => (
                    l.pipeline.unwrap_or_else(|| "-".into()),
                    l.reason.as_str().to_owned(),
                ),
                Err(_) => ("unknown".into(), "unknown".into()),
            };
            *counts.entry(label).or_default() += 1;
        })?;
        let Some(end) = end else { return Ok(()) };
        let start: &[u8] = &[0u8; EventId::LEN];
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(&dlq, start, &end);
        // Replay requests are keyed `@replay/<id>`, in id order too: one range.
        batch.delete_range_cf(
            &checkpoints,
            [REPLAY_PREFIX, start].concat(),
            [REPLAY_PREFIX, end.as_slice()].concat(),
        );
        db.write(batch)?;
        db.compact_range_cf(&dlq, Some(start), Some(end.as_slice()));
        let mut total = 0;
        for ((pipeline, reason), letters) in counts {
            tracing::warn!(%pipeline, %reason, letters, "storage.max_disk_usage reached: deleted dead letters");
            self.metrics
                .forced_dead_letters
                .get_or_create(&ForcedLabels { pipeline, reason })
                .inc_by(letters);
            total += letters;
        }
        self.record(0, total);
        Ok(())
    }

    fn record(&self, events: u64, dead_letters: u64) {
        if events == 0 && dead_letters == 0 {
            return;
        }
        let mut forced = self.forced.lock().unwrap_or_else(|e| e.into_inner());
        forced.unprocessed_events += events;
        forced.dead_letters += dead_letters;
        forced.last = Some(Timestamp::now());
    }
}

/// The background retention thread; stops when dropped or [`RetentionTask::stop`]ped.
pub(crate) struct RetentionTask {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionTask {
    /// Starts a thread that runs a pass every `policy.interval`.
    pub(crate) fn start(
        slot: Arc<DbSlot>,
        policy: RetentionPolicy,
        metrics: StorageMetrics,
        forced: Arc<Mutex<ForcedDeletions>>,
    ) -> Result<Self, StorageError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let retention = Retention {
            slot,
            policy,
            metrics,
            forced,
        };
        let thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                loop {
                    let started = Instant::now();
                    retention.pass();
                    tracing::trace!(took = ?started.elapsed(), "retention pass");
                    match stopped.recv_timeout(policy.interval) {
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
