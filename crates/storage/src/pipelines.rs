//! What pipelines keep: their `store` outputs, their checkpoints, and their dead letters, all
//! written in one atomic batch per step.
//!
//! A pipeline step reads events from the log, processes them, then commits in ONE `WriteBatch`:
//! the outputs, the dead letters, and the new checkpoint of every pipeline that moved. After a
//! crash either all of a step is there or none of it is, and the pipeline resumes from its last
//! checkpoint: no output is lost and none is written twice.
//!
//! Steps are not fsynced (unless [`PipelineCommit::durable`]): everything they write is derived
//! from the log, which ingest fsyncs. A process crash loses nothing (the WAL is written before
//! the commit returns); a power loss may lose the last steps, and the pipelines then redo them
//! from the log, writing the same `store` rows again. An fsync per step cost the worker time on
//! every step and sat in the ingest-to-sink latency (BENCHMARKS.md).
//!
//! Layout (`outputs`): pipeline name, `0x00`, the input event's 16-byte id, a 4-byte big-endian
//! index (a transform may emit several events from one). Within a pipeline, keys sort by input
//! event id, i.e. by ingest time. (`checkpoints`): pipeline name → [`Checkpoint`] JSON.

use std::sync::Arc;

use colloquium_event::{Event, EventId, Reason, Timestamp};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::dlq::{DeadLetter, REPLAY_PREFIX, replay_key};
use crate::{ColumnFamily, StorageError, Store};

/// Where a pipeline is in the log. Its stages' state at that position is in the `state`
/// column family, changed in the same commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every event up to and including this id has been processed (`None`: nothing yet).
    /// With lanes, the lowest of [`Checkpoint::lanes`].
    pub position: Option<EventId>,
    /// Per priority lane (realtime, transactional, batch): every event *of that lane* up to
    /// and including this id has been processed. `None` (checkpoints written before lanes):
    /// every lane is at `position`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<[Option<EventId>; 3]>,
    /// Why the pipeline stopped (`on_error: stop_pipeline`), if it did.
    #[serde(default)]
    pub stopped: Option<String>,
}

/// One stored state entry of a stage: its own key and the value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// One write to a stage's state, in the stage's own key space.
#[derive(Clone, Debug, PartialEq)]
pub enum StateWrite {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Delete `key`.
    Delete(Vec<u8>),
    /// Delete every key of the stage below this one: one range tombstone, however many keys
    /// it covers (a stage that keys its state by sequence drops its oldest rows this way).
    DeleteBelow(Vec<u8>),
    /// Delete the stage's keys from the first (inclusive) to the second (exclusive): a
    /// wrapped stage's `DeleteBelow`, within its wrapper's rows.
    DeleteRange(Vec<u8>, Vec<u8>),
}

/// One change to a stage's state.
#[derive(Clone, Debug, PartialEq)]
pub struct StateChange {
    /// The pipeline.
    pub pipeline: String,
    /// The stage id, e.g. `dedup`.
    pub stage: String,
    /// What to write.
    pub write: StateWrite,
}

/// One output of a pipeline's `store` sink.
#[derive(Clone, Debug)]
pub struct Output {
    /// The pipeline (shared: one per output event).
    pub pipeline: Arc<str>,
    /// The id of the event it came from.
    pub source_id: EventId,
    /// Its index among that event's outputs.
    pub index: u32,
    /// The output event.
    pub event: Event,
}

/// A dead letter about to be written (its id and time are given at commit).
#[derive(Clone, Debug)]
pub struct NewDeadLetter {
    /// Why it was dead-lettered.
    pub reason: Reason,
    /// The full error text.
    pub error: String,
    /// The pipeline, if one was involved.
    pub pipeline: Option<String>,
    /// The stage, if one failed.
    pub stage: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// The event as it entered the pipeline.
    pub event: Event,
}

/// Everything one pipeline step writes, committed atomically.
#[derive(Debug, Default)]
pub struct PipelineCommit {
    /// Outputs of `store` sinks.
    pub outputs: Vec<Output>,
    /// Dead letters.
    pub dead_letters: Vec<NewDeadLetter>,
    /// Dead letters handed to another pipeline worker: stored with a replay request, so the
    /// worker that owns their pipeline runs them (not counted as failures).
    pub handoffs: Vec<NewDeadLetter>,
    /// Fsync this commit (when the store syncs at all): for what cannot be redone from the
    /// log, such as where a new pipeline starts.
    pub durable: bool,
    /// New checkpoints, by pipeline name.
    pub checkpoints: Vec<(String, Checkpoint)>,
    /// Stage state changes, applied in order.
    pub state: Vec<StateChange>,
    /// Stages' kept results (windows, anomalies, …), applied in order.
    pub results: Vec<crate::results::ResultChange>,
    /// Dead letters replayed in this step: removed, with their replay requests.
    pub replayed: Vec<EventId>,
}

/// Every checkpoint (each pipeline's and `@router`'s) by name, in key order; replay requests,
/// which share the column family, are skipped.
pub(crate) fn all_checkpoints(db: &rocksdb::DB) -> Result<Vec<(String, Checkpoint)>, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Checkpoints.name()) else {
        return Ok(Vec::new());
    };
    let mut checkpoints = Vec::new();
    for item in db.iterator_cf(&handle, IteratorMode::Start) {
        let (key, value) = item?;
        if key.starts_with(REPLAY_PREFIX) {
            continue;
        }
        let name = String::from_utf8_lossy(&key).into_owned();
        let checkpoint = serde_json::from_slice(&value).map_err(|e| StorageError::Corrupt {
            cf: ColumnFamily::Checkpoints.name(),
            key: name.clone(),
            message: e.to_string(),
        })?;
        checkpoints.push((name, checkpoint));
    }
    Ok(checkpoints)
}

/// One stored output: its cursor (for paging) and its JSON.
#[derive(Clone, Debug)]
pub struct StoredOutput {
    /// Opaque cursor: the key after which the next page starts (hex).
    pub cursor: String,
    /// The output event as stored.
    pub json: Vec<u8>,
}

fn flag_key(name: &str) -> Vec<u8> {
    [&[0][..], name.as_bytes()].concat()
}

fn state_prefix(pipeline: &str, stage: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(pipeline.len() + stage.len() + 2);
    key.extend_from_slice(pipeline.as_bytes());
    key.push(0);
    key.extend_from_slice(stage.as_bytes());
    key.push(0);
    key
}

/// The first key above every key starting with `prefix`: its last byte below 0xFF
/// incremented, the 0xFF bytes after it dropped.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: nothing of this prefix is below a key one byte longer.
    vec![u8::MAX; prefix.len() + 1]
}

fn output_key(pipeline: &str, id: EventId, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(pipeline.len() + 1 + EventId::LEN + 4);
    key.extend_from_slice(pipeline.as_bytes());
    key.push(0);
    key.extend_from_slice(&id.to_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

impl Store {
    /// Writes a pipeline step atomically (fsynced when `sync` is on).
    pub fn commit_pipelines(
        &self,
        commit: PipelineCommit,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        let db = self.db()?;
        let outputs = db.cf(ColumnFamily::Outputs)?;
        let dlq = db.cf(ColumnFamily::Dlq)?;
        let checkpoints = db.cf(ColumnFamily::Checkpoints)?;
        let mut batch = WriteBatch::default();
        for o in &commit.outputs {
            batch.put_cf(
                &outputs,
                output_key(&o.pipeline, o.source_id, o.index),
                json(&o.event)?,
            );
        }
        let now = Timestamp::now();
        let handoffs = commit.handoffs.len();
        let ids = self.dead_letter_ids(now, commit.dead_letters.len() + handoffs);
        let mut letters = Vec::with_capacity(ids.len());
        let all = commit.handoffs.into_iter().chain(commit.dead_letters);
        for (n, (letter, id)) in all.zip(ids).enumerate() {
            if n < handoffs {
                batch.put_cf(&checkpoints, replay_key(id), b"");
            }
            let letter = DeadLetter {
                id,
                reason: letter.reason,
                error: letter.error,
                failed_at: now,
                pipeline: letter.pipeline,
                stage: letter.stage,
                attempts: letter.attempts,
                event: letter.event,
            };
            batch.put_cf(&dlq, id.to_bytes(), json(&letter)?);
            letters.push(letter);
        }
        let state = db.cf(ColumnFamily::State)?;
        for change in &commit.state {
            let prefix = state_prefix(&change.pipeline, &change.stage);
            let key = |own: &[u8]| [prefix.as_slice(), own].concat();
            match &change.write {
                StateWrite::Put(own, value) => batch.put_cf(&state, key(own), value),
                StateWrite::Delete(own) => batch.delete_cf(&state, key(own)),
                StateWrite::DeleteBelow(own) => batch.delete_range_cf(&state, &prefix, &key(own)),
                StateWrite::DeleteRange(from, to) => {
                    batch.delete_range_cf(&state, &key(from), &key(to));
                }
            }
        }
        if !commit.results.is_empty() {
            let results = db.cf(ColumnFamily::Results)?;
            for change in &commit.results {
                crate::results::write(&mut batch, &results, change);
            }
        }
        for id in &commit.replayed {
            batch.delete_cf(&dlq, id.to_bytes());
            batch.delete_cf(&checkpoints, replay_key(*id));
        }
        for (pipeline, checkpoint) in &commit.checkpoints {
            batch.put_cf(&checkpoints, pipeline.as_bytes(), json(checkpoint)?);
        }
        let mut options = WriteOptions::default();
        options.set_sync(commit.durable && self.syncs());
        db.write(batch, &options)?;
        let letters = letters.split_off(handoffs);
        for letter in &letters {
            self.count_dead_letter(letter.reason.as_str());
        }
        Ok(letters)
    }

    /// Deletes a pipeline's checkpoint and every stage's state (its `store` outputs stay), so a
    /// pipeline added again under this name starts afresh from its `start_from`.
    pub fn forget_pipeline(&self, pipeline: &str) -> Result<(), StorageError> {
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(&db.cf(ColumnFamily::Checkpoints)?, pipeline.as_bytes());
        // State keys are `pipeline 0x00 stage 0x00 key`.
        let from = [pipeline.as_bytes(), &[0]].concat();
        batch.delete_range_cf(&db.cf(ColumnFamily::State)?, &from, &prefix_end(&from));
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(())
    }

    /// Every `(key without the prefix, value)` of `cf` whose key starts with `prefix`, in key
    /// order.
    pub(crate) fn with_prefix(
        &self,
        cf: ColumnFamily,
        prefix: &[u8],
    ) -> Result<Vec<StateEntry>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(cf)?;
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix_end(prefix));
        let iter = db.iterator_cf_opt(
            &handle,
            read,
            IteratorMode::From(prefix, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item?;
            if let Some(own) = key.get(prefix.len()..) {
                entries.push((own.to_vec(), value.to_vec()));
            }
        }
        Ok(entries)
    }

    /// The names of every pipeline (and `@router`) with a checkpoint, in key order.
    pub fn checkpointed(&self) -> Result<Vec<String>, StorageError> {
        let db = self.db()?;
        Ok(all_checkpoints(&db)?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Returns a pipeline's checkpoint, if it has one.
    pub fn checkpoint(&self, pipeline: &str) -> Result<Option<Checkpoint>, StorageError> {
        self.get_json(ColumnFamily::Checkpoints, pipeline.as_bytes(), || {
            pipeline.to_owned()
        })
    }

    /// Reads and decodes one JSON record; `shown` names the key in a corruption error.
    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        cf: ColumnFamily,
        key: &[u8],
        shown: impl FnOnce() -> String,
    ) -> Result<Option<T>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(cf)?;
        let Some(value) = db.get_pinned_cf(&handle, key)? else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                cf: cf.name(),
                key: shown(),
                message: e.to_string(),
            })
    }

    /// Every `(pipeline, stage)` that has state rows, in key order. Skips from one stage's rows
    /// to the next with a seek, so it costs a read per stage, not per row.
    pub fn state_owners(&self) -> Result<Vec<(String, String)>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::State)?;
        let mut owners = Vec::new();
        let mut iter = db.raw_iterator_cf(&handle);
        iter.seek_to_first();
        while let Some(key) = iter.key() {
            let mut parts = key.splitn(3, |b| *b == 0);
            let (pipeline, stage) = (parts.next().unwrap_or_default(), parts.next());
            let next = match stage {
                // Rows of the store's own (`\0` + name, no pipeline) and malformed keys: one
                // step at a time.
                Some(stage) if !pipeline.is_empty() => {
                    owners.push((
                        String::from_utf8_lossy(pipeline).into_owned(),
                        String::from_utf8_lossy(stage).into_owned(),
                    ));
                    Some(prefix_end(&[pipeline, &[0], stage, &[0]].concat()))
                }
                _ => None,
            };
            match next {
                Some(next) => iter.seek(&next),
                None => iter.next(),
            }
        }
        iter.status()?;
        Ok(owners)
    }

    /// Deletes every state row of one stage of a pipeline.
    pub fn forget_stage(&self, pipeline: &str, stage: &str) -> Result<(), StorageError> {
        let db = self.db()?;
        let from = state_prefix(pipeline, stage);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&db.cf(ColumnFamily::State)?, &from, &prefix_end(&from));
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(())
    }

    /// Moves a stage's state rows from stage id `from` to `to` in one atomic, synced write
    /// (rows already under `to` are overwritten where keys meet).
    pub fn rename_stage(&self, pipeline: &str, from: &str, to: &str) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::State)?;
        let old = state_prefix(pipeline, from);
        let new = state_prefix(pipeline, to);
        let mut batch = WriteBatch::default();
        for (key, value) in self.with_prefix(ColumnFamily::State, &old)? {
            batch.put_cf(&handle, [&new[..], &key].concat(), value);
        }
        batch.delete_range_cf(&handle, &old, &prefix_end(&old));
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(())
    }

    /// Whether the store's flag `name` is set (markers of one-time migrations, kept in the
    /// `state` column family under `\0` + name, which no pipeline's rows can start with).
    pub fn flag(&self, name: &str) -> Result<bool, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::State)?;
        Ok(db.get_pinned_cf(&handle, flag_key(name))?.is_some())
    }

    /// Sets the store's flag `name` (synced).
    pub fn set_flag(&self, name: &str) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::State)?;
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        let mut batch = WriteBatch::default();
        batch.put_cf(handle, flag_key(name), b"");
        db.write(batch, &options)?;
        Ok(())
    }

    /// Returns every state entry of one stage, as `(key, value)`, in key order.
    pub fn stage_state(
        &self,
        pipeline: &str,
        stage: &str,
    ) -> Result<Vec<StateEntry>, StorageError> {
        self.with_prefix(ColumnFamily::State, &state_prefix(pipeline, stage))
    }

    /// One entry of a stage's state (`key`: the stage's own key), if there is one.
    pub fn stage_state_entry(
        &self,
        pipeline: &str,
        stage: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::State)?;
        let full = [state_prefix(pipeline, stage).as_slice(), key].concat();
        Ok(db.get_cf(&handle, full)?)
    }

    /// Returns up to `limit` outputs of `pipeline` whose input event was ingested in
    /// `[since, until]`, oldest first, starting after `cursor` (from a previous page).
    pub fn outputs(
        &self,
        pipeline: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredOutput>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Outputs)?;
        let prefix_len = pipeline.len() + 1;
        let from = output_key(pipeline, EventId::min_at(since.unwrap_or_default()), 0);
        // A cursor is a position: the page goes on strictly after it, and never before `from`
        // (a cursor of another query lands at this one's start, or past its end).
        let start = match cursor {
            None => from,
            Some(cursor) => {
                let mut key = unhex(cursor).ok_or(StorageError::BadCursor)?;
                key.push(0);
                key.max(from)
            }
        };
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound({
            let mut end = pipeline.as_bytes().to_vec();
            end.push(1); // every key of this pipeline starts with `name 0x00`
            end
        });
        let mut page = Vec::new();
        let iter = db.iterator_cf_opt(
            &handle,
            read,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let id = key
                .get(prefix_len..prefix_len + EventId::LEN)
                .and_then(EventId::from_slice);
            let Some(id) = id else { continue };
            if until.is_some_and(|until| id.timestamp() > until) {
                break;
            }
            page.push(StoredOutput {
                cursor: hex(&key),
                json: value.to_vec(),
            });
            if page.len() >= limit {
                break;
            }
        }
        Ok(page)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    crate::log::hex(bytes)
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            // `from_str_radix` alone would take a sign (`+f`).
            text.get(i..i + 2)
                .filter(|b| b.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(value).map_err(|e| StorageError::Db(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StorageMetrics, StoreOptions};
    use colloquium_event::Metadata;
    use colloquium_telemetry::metrics::MetricsRegistry;

    fn event(ms: u64) -> Event {
        let data = serde_json::json!({"n": ms})
            .as_object()
            .cloned()
            .unwrap_or_default();
        Event::at(
            Timestamp::from_millis(ms),
            data,
            Metadata::new("http", "default"),
        )
    }

    fn output(pipeline: &str, ms: u64, index: u32) -> Output {
        let event = event(ms);
        Output {
            pipeline: pipeline.into(),
            source_id: event.id,
            index,
            event,
        }
    }

    #[test]
    fn a_step_commits_outputs_dead_letters_and_checkpoints_together() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = StorageMetrics::register(&MetricsRegistry::default());
        let store = Store::open(
            StoreOptions {
                sync: false,
                ..StoreOptions::new(dir.path())
            },
            metrics,
        )
        .unwrap();
        assert_eq!(store.checkpoint("a").unwrap(), None);
        let checkpoint = Checkpoint {
            position: Some(event(30).id),
            stopped: None,
            lanes: None,
        };
        let change = |key: &str, value: Option<&str>| StateChange {
            pipeline: "a".into(),
            stage: "dedup#2".into(),
            write: match value {
                Some(v) => StateWrite::Put(key.into(), v.into()),
                None if key.starts_with('<') => StateWrite::DeleteBelow(key[1..].into()),
                None => StateWrite::Delete(key.into()),
            },
        };
        let letters = store
            .commit_pipelines(PipelineCommit {
                outputs: vec![
                    output("a", 10, 0),
                    output("a", 10, 1),
                    output("a", 20, 0),
                    output("ab", 15, 0),
                ],
                dead_letters: vec![NewDeadLetter {
                    reason: Reason::ScriptError,
                    error: "boom".into(),
                    pipeline: Some("a".into()),
                    stage: Some("transform#0".into()),
                    attempts: 3,
                    event: event(30),
                }],
                checkpoints: vec![("a".into(), checkpoint.clone())],
                state: vec![
                    change("k1", Some("1")),
                    change("k2", Some("2")),
                    change("k1", None),
                    change("k3", Some("3")),
                    change("j0", Some("0")),
                    change("k0", Some("0")),
                    change("<k2", None),
                    change("k4", Some("4")),
                ],
                replayed: vec![],
                handoffs: vec![],
                results: vec![],
                durable: true,
            })
            .unwrap();
        let state = store.stage_state("a", "dedup#2").unwrap();
        assert_eq!(
            state,
            [
                (b"k2".to_vec(), b"2".to_vec()),
                (b"k3".to_vec(), b"3".to_vec()),
                (b"k4".to_vec(), b"4".to_vec())
            ],
            "k1 deleted; j0 and k0 below k2"
        );
        assert!(store.stage_state("a", "dedup#1").unwrap().is_empty());
        assert_eq!(store.checkpoint("a").unwrap(), Some(checkpoint));
        let stored: Vec<DeadLetter> = store
            .dead_letters(Default::default())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored, letters);
        assert_eq!(
            (stored[0].attempts, stored[0].stage.as_deref()),
            (3, Some("transform#0"))
        );

        // Outputs of `a` only (not `ab`), in order, paged by cursor and bounded by time.
        let page = store.outputs("a", None, None, None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let rest = store
            .outputs("a", None, None, Some(&page[1].cursor), 10)
            .unwrap();
        assert_eq!(rest.len(), 1);
        let n =
            |o: &StoredOutput| serde_json::from_slice::<Event>(&o.json).unwrap().data["n"].as_u64();
        assert_eq!(n(&rest[0]), Some(20));
        let t = |ms| Some(Timestamp::from_millis(ms));
        assert_eq!(store.outputs("a", t(11), None, None, 10).unwrap().len(), 1);
        assert_eq!(store.outputs("a", None, t(15), None, 10).unwrap().len(), 2);
        assert_eq!(store.outputs("ab", None, None, None, 10).unwrap().len(), 1);
        assert!(matches!(
            store.outputs("a", None, None, Some("zz"), 10),
            Err(StorageError::BadCursor)
        ));
        assert!(matches!(
            store.outputs("a", None, None, Some("+f"), 10),
            Err(StorageError::BadCursor)
        ));
        // A cursor of another pipeline is a position before or after this one's outputs.
        let b = store.outputs("b", None, None, None, 10).unwrap().len();
        let from_a = store
            .outputs("b", None, None, Some(&page[0].cursor), 10)
            .unwrap();
        assert_eq!(from_a.len(), b);
        let past = hex(b"c\0");
        assert!(
            store
                .outputs("b", None, None, Some(&past), 10)
                .unwrap()
                .is_empty()
        );

        // A replay request is pending until a commit marks the dead letter replayed, which
        // removes both; asking twice is one request.
        let id = letters[0].id;
        assert!(store.request_replay(id).unwrap().is_some());
        assert!(store.request_replay(id).unwrap().is_some());
        assert_eq!(store.pending_replays().unwrap(), [id]);
        store
            .commit_pipelines(PipelineCommit {
                replayed: vec![id],
                ..Default::default()
            })
            .unwrap();
        assert!(store.dead_letter(id).unwrap().is_none());
        assert!(store.pending_replays().unwrap().is_empty());
        assert!(store.request_replay(id).unwrap().is_none());
        assert!(!store.delete_dead_letter(id).unwrap());

        // Writing the same outputs again (a replay after a crash) leaves one copy each.
        store
            .commit_pipelines(PipelineCommit {
                outputs: vec![output("a", 10, 0)],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.outputs("a", None, None, None, 10).unwrap().len(), 3);

        // Retention removes outputs of events older than the cutoff, in every pipeline.
        assert!(
            store
                .delete_outputs_before(Timestamp::from_millis(15))
                .unwrap()
        );
        let ns = |p: &str| -> Vec<u64> {
            let outputs = store.outputs(p, None, None, None, 10).unwrap();
            outputs.iter().filter_map(&n).collect()
        };
        assert_eq!(ns("a"), [20]);
        assert_eq!(ns("ab"), [15]);
        assert!(
            !store
                .delete_outputs_before(Timestamp::from_millis(15))
                .unwrap()
        );

        // Forgetting `a` removes its checkpoint and state, not its outputs nor `ab`'s state.
        store
            .commit_pipelines(PipelineCommit {
                state: vec![StateChange {
                    pipeline: "ab".into(),
                    ..change("k9", Some("9"))
                }],
                ..Default::default()
            })
            .unwrap();
        store.forget_pipeline("a").unwrap();
        assert_eq!(store.checkpoint("a").unwrap(), None);
        assert!(store.stage_state("a", "dedup#2").unwrap().is_empty());
        assert_eq!(store.stage_state("ab", "dedup#2").unwrap().len(), 1);
        assert_eq!(store.outputs("a", None, None, None, 10).unwrap().len(), 1);
        store.close().unwrap();
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn a_delete_range_stays_between_its_keys_within_the_stage() {
        let (_dir, store) = crate::test_store();
        let write = |write| StateChange {
            pipeline: "p".into(),
            stage: "idempotency".into(),
            write,
        };
        let put = |key: &str| write(StateWrite::Put(key.into(), b"v".to_vec()));
        let puts = vec![put("a0"), put("b1"), put("b2"), put("b3"), put("c0")];
        store
            .commit_pipelines(PipelineCommit {
                state: puts,
                ..PipelineCommit::default()
            })
            .unwrap();
        let range = StateWrite::DeleteRange(b"b".to_vec(), b"b3".to_vec());
        store
            .commit_pipelines(PipelineCommit {
                state: vec![write(range)],
                ..PipelineCommit::default()
            })
            .unwrap();
        let keys: Vec<Vec<u8>> = store
            .stage_state("p", "idempotency")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [b"a0".to_vec(), b"b3".to_vec(), b"c0".to_vec()]);
    }
}
