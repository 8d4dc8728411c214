//! Anomalies: what `anomaly` stages flagged, one row per (input event, pipeline), written in the
//! step that scored the event (with its checkpoint: a redone step rewrites the same row).
//! Keyed `event id (16 bytes, time-ordered) · pipeline`, so time ranges are key ranges and
//! retention is one range delete.

use colloquium_event::{EventId, Timestamp};
use rocksdb::{Direction, IteratorMode, ReadOptions};

use crate::{ColumnFamily, StorageError, Store};

/// One anomaly to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAnomaly {
    /// The scored event's id.
    pub id: EventId,
    /// The pipeline.
    pub pipeline: String,
    /// The record, as JSON.
    pub json: Vec<u8>,
}

pub(crate) fn anomaly_key(id: EventId, pipeline: &str) -> Vec<u8> {
    [&id.to_bytes()[..], pipeline.as_bytes()].concat()
}

impl Store {
    /// The anomaly records of event `id` (one per pipeline that flagged it).
    pub fn anomaly(&self, id: EventId) -> Result<Vec<Vec<u8>>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Anomalies)?;
        let prefix = id.to_bytes();
        let mut found = Vec::new();
        let iter = db.iterator_cf(&handle, IteratorMode::From(&prefix, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            found.push(value.to_vec());
        }
        Ok(found)
    }

    /// Walks anomaly records newest first, of events ingested in `[since, until]` and, with
    /// `before`, older than that event; `visit(id, json)` returns whether to go on.
    pub fn anomalies_newest(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        before: Option<EventId>,
        mut visit: impl FnMut(EventId, &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Anomalies)?;
        let mut read = ReadOptions::default();
        if let Some(since) = since {
            read.set_iterate_lower_bound(EventId::min_at(since).to_bytes().to_vec());
        }
        // Exclusive upper bound: the first id past `until`, or the cursor's own id.
        let upper = match (before, until) {
            (Some(id), _) => Some(id.to_bytes().to_vec()),
            (None, Some(until)) => {
                let after = Timestamp::from_millis(until.as_millis().saturating_add(1));
                Some(EventId::min_at(after).to_bytes().to_vec())
            }
            (None, None) => None,
        };
        let mut iter = db.raw_iterator_cf_opt(&handle, read);
        match &upper {
            Some(upper) => iter.seek_for_prev(upper),
            None => iter.seek_to_last(),
        }
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let id = key.get(..EventId::LEN).and_then(EventId::from_slice);
            if let Some(id) = id
                && upper.as_deref().is_none_or(|u| key < u)
                && !visit(id, value)
            {
                break;
            }
            iter.prev();
        }
        iter.status()?;
        Ok(())
    }
}

/// Deletes every anomaly of an event ingested before `cutoff`; returns whether any existed.
pub(crate) fn delete_anomalies_before(
    db: &rocksdb::DB,
    cutoff: Timestamp,
) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Anomalies.name()) else {
        return Ok(false);
    };
    let end = EventId::min_at(cutoff).to_bytes();
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    let any = iter.key().is_some_and(|k| k < &end[..]);
    if any {
        db.delete_range_cf(&handle, &[][..], &end[..])?;
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::PipelineCommit;

    #[test]
    fn anomalies_come_newest_first_within_bounds_and_expire_by_range() {
        let (_dir, store) = crate::test_store();
        let at = |ms: u64| EventId::min_at(Timestamp::from_millis(ms));
        let mut commit = PipelineCommit::default();
        for ms in [1_000, 2_000, 3_000] {
            for pipeline in ["p", "q"] {
                commit.anomalies.push(NewAnomaly {
                    id: at(ms),
                    pipeline: pipeline.into(),
                    json: format!("{ms}{pipeline}").into_bytes(),
                });
            }
        }
        store.commit_pipelines(commit).unwrap();
        let walk = |since, until, before| {
            let mut seen = Vec::new();
            store
                .anomalies_newest(since, until, before, |_, json| {
                    seen.push(String::from_utf8(json.to_vec()).unwrap());
                    true
                })
                .unwrap();
            seen
        };
        assert_eq!(
            walk(None, None, None),
            ["3000q", "3000p", "2000q", "2000p", "1000q", "1000p"]
        );
        let (since, until) = (
            Some(Timestamp::from_millis(2_000)),
            Some(Timestamp::from_millis(2_000)),
        );
        assert_eq!(walk(since, until, None), ["2000q", "2000p"]);
        assert_eq!(
            walk(None, None, Some(at(3_000))),
            ["2000q", "2000p", "1000q", "1000p"]
        );
        assert_eq!(store.anomaly(at(1_000)).unwrap().len(), 2);
        assert!(
            delete_anomalies_before(&store.db().unwrap(), Timestamp::from_millis(2_500)).unwrap()
        );
        assert_eq!(walk(None, None, None), ["3000q", "3000p"]);
    }
}
