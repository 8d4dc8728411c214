//! [`Store`]: the handle the rest of the node uses to write and read events.

use std::path::Path;
use std::sync::{Arc, Mutex};

use colloquium_event::{Event, EventId, IdGenerator, Reservation, Timestamp};

use crate::events::CfLabels;
use crate::feed::Feed;
use crate::log::{self, Writer};
use crate::recovery::{Db, DbSlot, Recovery};
use crate::retention::{self, ForcedDeletions, RetentionPolicy, RetentionTask};
use crate::scan::Scan;
use crate::{ColumnFamily, ScanRange, StorageError, StorageMetrics, StoreOptions};

/// A handle to the open store. Cloning is cheap; the database closes when the last clone drops.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    slot: Arc<DbSlot>,
    writer: Writer,
    recovery: Mutex<Option<Recovery>>,
    feed: Arc<Feed>,
    retention: Mutex<Option<RetentionTask>>,
    forced: Arc<Mutex<ForcedDeletions>>,
    metrics: StorageMetrics,
    dlq_ids: IdGenerator,
    options: StoreOptions,
}

impl Store {
    /// Opens (or creates) the store in `options.data_dir` and starts its writer.
    pub fn open(options: StoreOptions, metrics: StorageMetrics) -> Result<Self, StorageError> {
        let slot = Arc::new(DbSlot::open(options.clone(), metrics.clone())?);
        let feed = Arc::new(Feed::counting(metrics.volatile_dropped.clone()));
        let writer = Writer::start(
            slot.clone(),
            feed.clone(),
            ColumnFamily::Events,
            options.sync,
            metrics.clone(),
        )?;
        let recovery = Recovery::start(slot.clone())?;
        tracing::info!(dir = %options.data_dir.display(), sync = options.sync, "store opened");
        Ok(Self {
            inner: Arc::new(Inner {
                slot,
                writer,
                recovery: Mutex::new(Some(recovery)),
                feed,
                retention: Mutex::new(None),
                forced: Arc::default(),
                metrics,
                dlq_ids: IdGenerator::default(),
                options,
            }),
        })
    }

    /// Starts the background retention pass (see [`crate::retention`]): every
    /// `policy.interval` it deletes events older than `policy.max_age` that every pipeline has
    /// processed, and enforces `policy.max_disk_bytes`.
    pub fn start_retention(&self, policy: RetentionPolicy) -> Result<(), StorageError> {
        let task = RetentionTask::start(
            self.inner.slot.clone(),
            policy,
            self.inner.metrics.clone(),
            self.inner.forced.clone(),
        )?;
        *self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// Appends `events` atomically; returns once they are durable. Concurrent calls share one
    /// WAL write and fsync.
    pub async fn append(&self, events: &[Event]) -> Result<(), StorageError> {
        self.inner
            .writer
            .append(events, None, None, Vec::new())
            .await
    }

    /// Like [`Store::append`], and drops `ids` once the batch is written or can no longer be
    /// (also when the caller stops waiting): see [`colloquium_event::IdGenerator::watermark`].
    /// Once durable, and before `ids` settle, the batch is published to [`Store::feed`].
    pub async fn append_settling(
        &self,
        events: Arc<[Event]>,
        ids: Reservation,
    ) -> Result<(), StorageError> {
        self.inner
            .writer
            .append(&events, Some(ids), Some(events.clone()), Vec::new())
            .await
    }

    /// Hands `events` to the readers in memory without writing them (a `persist: false`
    /// source's fire-and-forget events), then drops `ids`. Readers that do not take them (none
    /// subscribed, or one too far behind) count them as dropped.
    pub fn publish_volatile(&self, events: Arc<[Event]>, ids: Reservation) {
        self.inner.feed.publish_volatile(&events);
        drop(ids);
    }

    /// Where batches written by [`Store::append_settling`] are handed to readers in memory.
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Returns the stored JSON of event `id`.
    pub fn get_raw(&self, id: EventId) -> Result<Option<Vec<u8>>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Events)?;
        Ok(db.get_pinned_cf(handle, id.to_bytes())?.map(|v| v.to_vec()))
    }

    /// Returns event `id`.
    pub fn get(&self, id: EventId) -> Result<Option<Event>, StorageError> {
        let key = id.to_bytes();
        self.get_raw(id)?.map(|v| log::decode(&key, &v)).transpose()
    }

    /// Returns the events in `range` as `(id, stored JSON)`, in its order. `fill_cache: false`
    /// for long scans such as replay, so they do not evict the hot set.
    pub fn scan(&self, range: ScanRange, fill_cache: bool) -> Scan {
        Scan::new(self.shared_db(), ColumnFamily::Events, range, fill_cache)
    }

    /// Up to `max` events of `range`, decoded, stopping before the first that has not settled
    /// (at or past `watermark`: a batch reserved earlier may still land below it; `None`: no id
    /// given out yet, all settled); and whether `max` cut the read short. The one catch-up read
    /// of the pipeline workers and of log taps.
    pub fn settled_events(
        &self,
        range: ScanRange,
        watermark: Option<EventId>,
        max: usize,
        fill_cache: bool,
    ) -> Result<(Vec<colloquium_event::Event>, bool), StorageError> {
        let mut events = Vec::new();
        for item in self.scan(range, fill_cache) {
            let (id, bytes) = item?;
            if watermark.is_some_and(|w| id >= w) {
                break;
            }
            if events.len() >= max {
                return Ok((events, true));
            }
            events.push(crate::log::decode(&id.to_bytes(), &bytes)?);
        }
        Ok((events, false))
    }

    /// The events after `after` (all of them for `None`): the oldest one's id, and how many
    /// there are, counted up to `limit` keys (so a far-behind reader costs a bounded read).
    pub fn backlog(&self, after: Option<EventId>, limit: usize) -> Result<Backlog, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Events)?;
        let mut options = rocksdb::ReadOptions::default();
        options.fill_cache(false);
        let mut iter = db.raw_iterator_cf_opt(handle, options);
        match after {
            Some(id) => iter.seek(retention::key_after(id)),
            None => iter.seek_to_first(),
        }
        let oldest = iter.key().and_then(EventId::from_slice);
        let mut events = 0;
        while iter.valid() && events < limit {
            events += 1;
            iter.next();
        }
        iter.status()?;
        Ok(Backlog {
            oldest,
            events,
            capped: iter.valid(),
        })
    }

    /// Deletes every event ingested before `cutoff` that every pipeline has processed (by
    /// the checkpoints); returns whether any existed.
    pub fn delete_before(&self, cutoff: Timestamp) -> Result<bool, StorageError> {
        retention::delete_before(&*self.db()?, cutoff)
    }

    /// What `storage.max_disk_usage` deleted before anyone was done with it, since open.
    pub fn forced_deletions(&self) -> ForcedDeletions {
        self.inner
            .forced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Deletes every pipeline output whose input event was ingested before `cutoff`; returns
    /// whether any existed.
    pub fn delete_outputs_before(&self, cutoff: Timestamp) -> Result<bool, StorageError> {
        retention::delete_outputs_before(&*self.db()?, cutoff)
    }

    /// Returns `false` from a failed write (disk full, I/O error) until the store takes writes
    /// again (see [`crate::recovery`]), and once it is closed.
    pub fn writable(&self) -> bool {
        self.inner.slot.writable()
    }

    /// Flushes and compactions RocksDB is running now (they allocate and free large buffers
    /// after the writes that caused them have finished).
    pub fn background_jobs(&self) -> u64 {
        let Ok(db) = self.db() else { return 0 };
        [
            "rocksdb.num-running-flushes",
            "rocksdb.num-running-compactions",
        ]
        .iter()
        .filter_map(|name| db.property_int_value(*name).ok().flatten())
        .sum()
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.options.data_dir
    }

    /// Returns the bytes held per column family (SST files plus memtables).
    pub fn sizes(&self) -> Vec<(&'static str, u64)> {
        let db = self.db().ok();
        ColumnFamily::ALL
            .iter()
            .map(|cf| {
                (
                    cf.name(),
                    db.as_ref().map_or(0, |db| retention::cf_bytes(db, *cf)),
                )
            })
            .collect()
    }

    /// Updates the size gauges; call before encoding metrics.
    pub fn refresh_metrics(&self) {
        for (cf, bytes) in self.sizes() {
            self.inner
                .metrics
                .bytes
                .get_or_create(&CfLabels { cf })
                .set(bytes);
        }
    }

    /// Stops retention, finishes queued writes, and flushes the WAL and memtables to disk.
    /// Later appends fail with [`StorageError::Closed`]. A store that cannot write (a full
    /// disk) closes without the flush: what it acknowledged is in the WAL, replayed on the
    /// next open.
    pub fn close(&self) -> Result<(), StorageError> {
        if let Some(mut task) = self
            .inner
            .retention
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.stop();
        }
        self.inner.writer.close();
        if let Some(mut recovery) = self
            .inner
            .recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            recovery.stop();
        }
        let flushed = self.db().and_then(|db| {
            db.flush_wal(true)?;
            for cf in ColumnFamily::ALL {
                db.flush_cf(db.cf(cf)?)?;
            }
            Ok(())
        });
        match flushed {
            Ok(()) => {}
            Err(error) if !self.inner.slot.writable() => tracing::warn!(
                %error,
                "closing a store that cannot write: not flushed; acknowledged events are in its WAL and are replayed on the next start"
            ),
            Err(error) => return Err(error),
        }
        tracing::info!(dir = %self.inner.options.data_dir.display(), "store closed");
        Ok(())
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.inner.writer
    }

    /// The database, for one operation.
    pub(crate) fn db(&self) -> Result<Db<'_>, StorageError> {
        self.inner.slot.get()
    }

    /// The database, for a scan that keeps it.
    pub(crate) fn shared_db(&self) -> Result<Arc<rocksdb::DB>, StorageError> {
        self.db().map(Db::into_shared)
    }

    pub(crate) fn syncs(&self) -> bool {
        self.inner.options.sync
    }

    pub(crate) fn dead_letter_ids(&self, now: Timestamp, count: usize) -> Vec<EventId> {
        self.inner.dlq_ids.next_ids(now, count)
    }

    pub(crate) fn count_dead_letter(&self, reason: &str) {
        let labels = crate::events::ReasonLabels {
            reason: reason.to_owned(),
        };
        self.inner.metrics.dead_letters.get_or_create(&labels).inc();
    }
}

/// What a reader of the log has yet to process (see [`Store::backlog`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// The oldest event not processed yet.
    pub oldest: Option<EventId>,
    /// How many events are behind, up to the limit asked for.
    pub events: usize,
    /// There are more than `events`.
    pub capped: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.options.data_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeadLetter, Order};
    use colloquium_event::Metadata;
    use colloquium_event::Reason;
    use colloquium_telemetry::MetricsRegistry;
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::Duration;

    fn metrics() -> StorageMetrics {
        StorageMetrics::register(&MetricsRegistry::default())
    }

    fn open(dir: &Path) -> Store {
        Store::open(
            StoreOptions {
                sync: false,
                ..StoreOptions::new(dir)
            },
            metrics(),
        )
        .unwrap()
    }

    fn events(ids: &IdGenerator, at: u64, n: usize) -> Vec<Event> {
        ids.next_ids(Timestamp::from_millis(at), n)
            .into_iter()
            .enumerate()
            .map(|(i, id)| Event {
                id,
                timestamp: Timestamp::from_millis(at),
                ingest_time: Timestamp::from_millis(at),
                data: json!({ "n": i }).as_object().cloned().unwrap(),
                metadata: Metadata::new("test", "default"),
            })
            .collect()
    }

    /// Like `open`, counting into `registry`.
    fn open_counted(dir: &Path, registry: &MetricsRegistry) -> Store {
        let options = StoreOptions {
            sync: false,
            ..StoreOptions::new(dir)
        };
        Store::open(options, StorageMetrics::register(registry)).unwrap()
    }

    fn usage(store: &Store) -> u64 {
        store.sizes().iter().map(|(_, b)| b).sum()
    }

    /// Waits (30 s at most) for retention to bring the store down to `bytes`.
    async fn shrink_to(store: &Store, bytes: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while usage(store) > bytes {
            assert!(
                std::time::Instant::now() < deadline,
                "still {} bytes",
                usage(store)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ids_in(store: &Store, range: ScanRange) -> Vec<EventId> {
        store.scan(range, true).map(|r| r.unwrap().0).collect()
    }

    #[tokio::test]
    async fn appended_events_read_back_by_id_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ids = IdGenerator::default();
        let early = events(&ids, 1_000, 3);
        let late = events(&ids, 2_000, 2);
        store.append(&early).await.unwrap();
        store.append(&late).await.unwrap();

        assert_eq!(store.get(early[1].id).unwrap().unwrap(), early[1]);
        assert!(
            store
                .get(IdGenerator::default().next_ids(Timestamp::from_millis(5), 1)[0])
                .unwrap()
                .is_none()
        );

        let all: Vec<EventId> = early.iter().chain(&late).map(|e| e.id).collect();
        assert_eq!(ids_in(&store, ScanRange::default()), all);
        let t = |ms| Some(Timestamp::from_millis(ms));
        assert_eq!(
            ids_in(
                &store,
                ScanRange {
                    since: t(1_500),
                    ..Default::default()
                }
            ),
            all[3..]
        );
        assert_eq!(
            ids_in(
                &store,
                ScanRange {
                    until: t(1_000),
                    ..Default::default()
                }
            ),
            all[..3]
        );
        let desc = ScanRange {
            order: Order::Desc,
            ..Default::default()
        };
        assert_eq!(
            ids_in(&store, desc),
            all.iter().rev().copied().collect::<Vec<_>>()
        );
        // Cursors resume strictly after the last id seen, in either direction.
        let after = ScanRange {
            after: Some(all[1]),
            ..Default::default()
        };
        assert_eq!(ids_in(&store, after), all[2..]);
        let before = ScanRange {
            after: Some(all[3]),
            order: Order::Desc,
            ..Default::default()
        };
        assert_eq!(ids_in(&store, before), vec![all[2], all[1], all[0]]);
    }

    #[tokio::test]
    async fn events_survive_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let batch = events(&IdGenerator::default(), 7, 100);
        {
            let store = open(dir.path());
            store.append(&batch).await.unwrap();
            store.close().unwrap();
            assert!(matches!(
                store.append(&batch).await,
                Err(StorageError::Closed)
            ));
        }
        let store = open(dir.path());
        assert_eq!(ids_in(&store, ScanRange::default()).len(), 100);
    }

    #[tokio::test]
    async fn second_open_of_a_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        let second = Store::open(StoreOptions::new(dir.path()), metrics()).unwrap_err();
        assert!(matches!(second, StorageError::Locked { .. }), "{second}");
        assert!(second.to_string().contains("in use by another process"));
    }

    #[tokio::test]
    async fn retention_deletes_only_what_is_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ids = IdGenerator::default();
        store.append(&events(&ids, 1_000, 50)).await.unwrap();
        let kept = events(&ids, 5_000, 5);
        store.append(&kept).await.unwrap();

        assert!(store.delete_before(Timestamp::from_millis(5_000)).unwrap());
        let left = ids_in(&store, ScanRange::default());
        assert_eq!(left, kept.iter().map(|e| e.id).collect::<Vec<_>>());
        // Nothing older left: no new tombstone is written.
        assert!(!store.delete_before(Timestamp::from_millis(5_000)).unwrap());
    }

    #[tokio::test]
    async fn background_retention_removes_expired_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // Ingested "an hour ago" by id time.
        let old = Timestamp::now()
            .saturating_sub_millis(3_600_000)
            .as_millis();
        store
            .append(&events(&IdGenerator::default(), old, 10))
            .await
            .unwrap();
        store
            .start_retention(RetentionPolicy {
                max_age: Some(Duration::from_secs(60)),
                max_disk_bytes: None,
                interval: Duration::from_millis(20),
            })
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ids_in(&store, ScanRange::default()).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "retention did not run"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close().unwrap();
    }

    #[tokio::test]
    async fn dead_letters_keep_reason_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let event = events(&IdGenerator::default(), 9, 1).remove(0);
        let letter = store
            .put_dead_letters(vec![(
                event.clone(),
                Reason::NoRoute,
                "no rule matched".into(),
            )])
            .unwrap()
            .remove(0);
        let stored: Vec<DeadLetter> = store
            .dead_letters(ScanRange::default())
            .map(Result::unwrap)
            .collect();
        assert_eq!(stored, vec![letter]);
        assert_eq!(stored[0].event, event);
        assert_eq!(stored[0].reason, Reason::NoRoute);
    }

    #[tokio::test]
    async fn retention_keeps_what_a_pipeline_has_not_processed() {
        use crate::{Checkpoint, PipelineCommit};
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let ids = IdGenerator::default();
        let batch = events(&ids, 1_000, 10);
        store.append(&batch).await.unwrap();
        let checkpoint = |name: &str, position: Option<EventId>| PipelineCommit {
            checkpoints: vec![(
                name.into(),
                Checkpoint {
                    position,
                    stopped: None,
                    lanes: None,
                },
            )],
            ..Default::default()
        };
        // `slow` has processed 4 events, `new` none: nothing may go.
        store
            .commit_pipelines(checkpoint("slow", Some(batch[3].id)))
            .unwrap();
        store.commit_pipelines(checkpoint("new", None)).unwrap();
        store.request_replay(batch[0].id).unwrap(); // a replay request is no reader
        let now = Timestamp::now();
        assert!(!store.delete_before(now).unwrap());
        assert_eq!(ids_in(&store, ScanRange::default()).len(), 10);
        // Once `new` is past 6 of them, the 4 both have processed go, and no more.
        store
            .commit_pipelines(checkpoint("new", Some(batch[5].id)))
            .unwrap();
        assert!(store.delete_before(now).unwrap());
        let left: Vec<EventId> = batch[4..].iter().map(|e| e.id).collect();
        assert_eq!(ids_in(&store, ScanRange::default()), left);
        // The age limit still applies below the floor.
        store
            .commit_pipelines(checkpoint("slow", Some(batch[9].id)))
            .unwrap();
        store
            .commit_pipelines(checkpoint("new", Some(batch[9].id)))
            .unwrap();
        assert!(!store.delete_before(Timestamp::from_millis(1_000)).unwrap());
        assert!(store.delete_before(now).unwrap());
        assert!(ids_in(&store, ScanRange::default()).is_empty());
    }

    #[tokio::test]
    async fn the_disk_ceiling_deletes_unprocessed_events_and_dead_letters_and_counts_them() {
        use crate::{Checkpoint, PipelineCommit};
        let dir = tempfile::tempdir().unwrap();
        let registry = MetricsRegistry::default();
        let store = open_counted(dir.path(), &registry);
        let ids = IdGenerator::default();
        let padding = "x".repeat(4_000);
        let mut batch = events(&ids, 1_000, 500);
        for event in &mut batch {
            event.data.insert("pad".into(), json!(padding));
        }
        store.append(&batch).await.unwrap();
        for event in batch.iter().take(20) {
            store
                .put_dead_letters(vec![(event.clone(), Reason::SinkError, "down".into())])
                .unwrap();
        }
        // A pipeline that has processed nothing: age retention alone deletes nothing.
        store
            .commit_pipelines(PipelineCommit {
                checkpoints: vec![("stuck".into(), Checkpoint::default())],
                ..Default::default()
            })
            .unwrap();
        let before = usage(&store);
        assert!(before > 1_000_000, "{before}");
        store
            .start_retention(RetentionPolicy {
                max_age: Some(Duration::from_secs(1)),
                max_disk_bytes: Some(before / 2),
                interval: Duration::from_millis(20),
            })
            .unwrap();
        shrink_to(&store, before / 2).await;
        let left = ids_in(&store, ScanRange::default()).len() as u64;
        assert!(left > 0 && left < 500, "{left} events left");
        let forced = store.forced_deletions();
        assert_eq!(
            forced.unprocessed_events,
            500 - left,
            "every deleted event is counted"
        );
        assert!(forced.last.is_some());
        let text = registry.encode();
        assert!(
            text.contains(&format!(
                "colloquium_storage_forced_deleted_events_total{{pipeline=\"stuck\",reason=\"unprocessed\"}} {}",
                500 - left
            )),
            "{text}"
        );
        store.close().unwrap();
    }

    #[tokio::test]
    async fn the_disk_ceiling_deletes_the_oldest_dead_letters_when_events_are_not_enough() {
        use crate::{NewDeadLetter, PipelineCommit};
        let dir = tempfile::tempdir().unwrap();
        let registry = MetricsRegistry::default();
        let store = open_counted(dir.path(), &registry);
        let mut event = events(&IdGenerator::default(), 1_000, 1).remove(0);
        event.data.insert("pad".into(), json!("x".repeat(4_000)));
        let letter = |_| NewDeadLetter {
            reason: Reason::SinkError,
            error: "down".into(),
            pipeline: Some("p".into()),
            stage: None,
            attempts: 5,
            event: event.clone(),
        };
        store
            .commit_pipelines(PipelineCommit {
                dead_letters: (0..400).map(letter).collect(),
                ..Default::default()
            })
            .unwrap();
        let letters: Vec<EventId> = store
            .dead_letters(ScanRange::default())
            .map(|l| l.unwrap().id)
            .collect();
        store.request_replay(letters[0]).unwrap();
        store.request_replay(letters[399]).unwrap();
        let before = usage(&store);
        store
            .start_retention(RetentionPolicy {
                max_age: None,
                max_disk_bytes: Some(before / 2),
                interval: Duration::from_millis(20),
            })
            .unwrap();
        shrink_to(&store, before / 2).await;
        let left = store.dead_letters(ScanRange::default()).count() as u64;
        assert!(left > 0 && left < 400, "{left} left");
        assert_eq!(store.forced_deletions().dead_letters, 400 - left);
        // The oldest went, with its replay request; the newest and its request stay.
        assert!(store.dead_letter(letters[0]).unwrap().is_none());
        assert_eq!(store.pending_replays().unwrap(), [letters[399]]);
        let text = registry.encode();
        let line = format!(
            "colloquium_storage_forced_deleted_dead_letters_total{{pipeline=\"p\",reason=\"sink_error\"}} {}",
            400 - left
        );
        assert!(text.contains(&line), "{text}");
        store.close().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// The store agrees with a Vec model through appends, close and reopen.
        #[test]
        fn store_matches_a_vec_model(batches in prop::collection::vec((0u64..5_000, 1usize..20), 1..8), reopen_at in 0usize..8) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let ids = IdGenerator::default();
            let mut model: Vec<Event> = Vec::new();
            let mut store = open(dir.path());
            for (i, (at, n)) in batches.into_iter().enumerate() {
                if i == reopen_at {
                    store.close().unwrap();
                    drop(store);
                    store = open(dir.path());
                }
                let batch = events(&ids, at, n);
                runtime.block_on(store.append(&batch)).unwrap();
                model.extend(batch);
            }
            model.sort_by_key(|e| e.id);
            let stored: Vec<Event> = store
                .scan(ScanRange::default(), true)
                .map(|r| { let (id, v) = r.unwrap(); log::decode(&id.to_bytes(), &v).unwrap() })
                .collect();
            prop_assert_eq!(stored, model);
        }
    }
}
