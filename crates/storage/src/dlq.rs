//! The dead-letter queue: events that could not be processed, kept with why and when so they
//! can be inspected, replayed and deleted. Key: a ULID of the failure time (time-ordered, like
//! the log). A pipeline step's own dead letters are written with its commit
//! (`pipelines.rs`); everything else about them is here: storing them outside a step, reading,
//! deleting, and the replay requests the pipelines pick up.

use colloquium_event::{Event, EventId, Reason, Timestamp};
use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::log;
use crate::scan::Scan;
use crate::{ColumnFamily, ScanRange, StorageError, Store};

/// One dead-lettered event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of this dead letter (not the event's id).
    pub id: EventId,
    /// Why (its stable string form in JSON: `no_route`, `script_error`, …).
    pub reason: Reason,
    /// The full error message.
    pub error: String,
    /// When it failed.
    pub failed_at: Timestamp,
    /// The pipeline it failed in (`None` when no pipeline took it: `no_route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The stage it failed in, e.g. `transform#0` (`None` for routing failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// How many times it was tried.
    #[serde(default = "one")]
    pub attempts: u32,
    /// The event as it was when it failed.
    pub event: Event,
}

fn one() -> u32 {
    1
}

/// Checkpoints-CF prefix of replay requests.
pub(crate) const REPLAY_PREFIX: &[u8] = b"@replay/";

/// Checkpoints-CF key of a replay request (`@` cannot start a pipeline name).
pub(crate) fn replay_key(id: EventId) -> Vec<u8> {
    let mut key = REPLAY_PREFIX.to_vec();
    key.extend_from_slice(&id.to_bytes());
    key
}

impl Store {
    /// Stores each `(event, reason, error)` in the dead-letter queue, in one atomic write
    /// (fsynced when `sync` is on). `reason`s must come from a small fixed set (metric labels).
    pub fn put_dead_letters(
        &self,
        letters: Vec<(Event, Reason, String)>,
    ) -> Result<Vec<DeadLetter>, StorageError> {
        let (stored, records) = self.dead_letter_records(letters)?;
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Dlq)?;
        let mut batch = rocksdb::WriteBatch::default();
        for (_, key, value) in &records {
            batch.put_cf(handle, key, value);
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        // Under overload these are most of what is written: when compaction falls behind,
        // they are the writes RocksDB slows down, not the log's.
        options.set_low_pri(true);
        db.write(batch, &options)?;
        for letter in &stored {
            self.count_dead_letter(letter.reason.as_str());
        }
        Ok(stored)
    }

    /// The dead letters for `letters`, failed now, and their `dlq` records.
    pub(crate) fn dead_letter_records(
        &self,
        letters: Vec<(Event, Reason, String)>,
    ) -> Result<(Vec<DeadLetter>, Vec<log::Extra>), StorageError> {
        let now = Timestamp::now();
        let ids = self.dead_letter_ids(now, letters.len());
        let mut stored = Vec::with_capacity(letters.len());
        let mut records = Vec::with_capacity(letters.len());
        for ((event, reason, error), id) in letters.into_iter().zip(ids) {
            let letter = DeadLetter {
                id,
                reason,
                error,
                failed_at: now,
                pipeline: None,
                stage: None,
                attempts: 1,
                event,
            };
            let value = serde_json::to_vec(&letter).map_err(|e| StorageError::Db(e.to_string()))?;
            records.push((ColumnFamily::Dlq, id.to_bytes().to_vec(), value));
            stored.push(letter);
        }
        Ok((stored, records))
    }

    /// Returns the dead letters in `range` (by failure time).
    pub fn dead_letters(
        &self,
        range: ScanRange,
    ) -> impl Iterator<Item = Result<DeadLetter, StorageError>> + '_ {
        Scan::new(self.shared_db(), ColumnFamily::Dlq, range, true).map(|item| {
            let (id, value) = item?;
            serde_json::from_slice(&value).map_err(|e| StorageError::Corrupt {
                cf: ColumnFamily::Dlq.name(),
                key: id.to_string(),
                message: e.to_string(),
            })
        })
    }

    /// Returns dead letter `id`.
    pub fn dead_letter(&self, id: EventId) -> Result<Option<DeadLetter>, StorageError> {
        self.get_json(ColumnFamily::Dlq, &id.to_bytes(), || id.to_string())
    }

    /// Deletes dead letter `id` (and any pending replay of it); returns whether it existed.
    pub fn delete_dead_letter(&self, id: EventId) -> Result<bool, StorageError> {
        if self.dead_letter(id)?.is_none() {
            return Ok(false);
        }
        let db = self.db()?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(&db.cf(ColumnFamily::Dlq)?, id.to_bytes());
        batch.delete_cf(&db.cf(ColumnFamily::Checkpoints)?, replay_key(id));
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(true)
    }

    /// Asks the pipelines to replay dead letter `id`; returns it, or `None` when there is no
    /// such dead letter (already replayed or deleted). Asking twice replays once.
    pub fn request_replay(&self, id: EventId) -> Result<Option<DeadLetter>, StorageError> {
        let Some(letter) = self.dead_letter(id)? else {
            return Ok(None);
        };
        let db = self.db()?;
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        let handle = db.cf(ColumnFamily::Checkpoints)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(handle, replay_key(id), b"");
        db.write(batch, &options)?;
        Ok(Some(letter))
    }

    /// Asks the pipelines to replay every dead letter in `ids`, in one write.
    pub fn request_replays(&self, ids: &[EventId]) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Checkpoints)?;
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.put_cf(&handle, replay_key(*id), b"");
        }
        let mut options = WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(())
    }

    /// Dead letters waiting to be replayed, oldest first.
    pub fn pending_replays(&self) -> Result<Vec<EventId>, StorageError> {
        let keys = self.with_prefix(ColumnFamily::Checkpoints, REPLAY_PREFIX)?;
        Ok(keys
            .into_iter()
            .filter_map(|(own, _)| EventId::from_slice(&own))
            .collect())
    }
}
