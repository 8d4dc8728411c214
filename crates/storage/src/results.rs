//! Stage results: what stages keep to be queried (window firings, anomalies, and any table a
//! stage names), one column family for all, written in the step that produced them with the
//! pipeline's checkpoint (a restart that redoes a step writes the same rows again).
//!
//! Row key: `pipeline 0x00 stage 0x00 table 0x00 key_len(u32 BE) key at(i64 BE, sign bit
//! flipped) [event id (16 bytes)]`. Pipeline, stage and table names hold no `0x00` (the config
//! forbids it in names; tables are named in code), and the length prefix lets keys hold any
//! byte. So a table's rows are in key order, then time order: a query seeks each key to
//! `since`, and a table with one key (`anomalies`, keyed `""`) is one time-ordered range.
//!
//! Data directories written before this table had `windows` and `anomalies` column families;
//! `migrate` moves their rows here when the store opens.

use colloquium_event::{EventId, Timestamp};
use rocksdb::{DB, ReadOptions, WriteBatch};

use crate::pipelines::{hex, prefix_end, unhex};
use crate::{ColumnFamily, StorageError, Store, StoredOutput};

/// One change to a stage's results.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultChange {
    /// The pipeline.
    pub pipeline: String,
    /// The stage id.
    pub stage: String,
    /// The table.
    pub table: String,
    /// The grouping key.
    pub key: String,
    /// The row's time (epoch ms).
    pub at: i64,
    /// The event it is about, when rows share a key and time.
    pub id: Option<EventId>,
    /// The bytes, or `None` to delete the row.
    pub value: Option<Vec<u8>>,
}

/// What `GET /api/results/…` (and `/api/windows`) asks for.
#[derive(Clone, Debug, Default)]
pub struct ResultQuery {
    /// The pipeline.
    pub pipeline: String,
    /// Only this stage (every stage of the pipeline with this table when absent).
    pub stage: Option<String>,
    /// The table.
    pub table: String,
    /// Only this grouping key.
    pub key: Option<String>,
    /// Rows at or after this time (epoch ms).
    pub since: Option<i64>,
    /// Rows before this time.
    pub until: Option<i64>,
    /// The cursor of the previous page.
    pub cursor: Option<String>,
}

/// A stored row, split.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultEntry {
    /// The pipeline.
    pub pipeline: String,
    /// The stage id.
    pub stage: String,
    /// The grouping key.
    pub key: String,
    /// The row's time.
    pub at: i64,
    /// The event it is about.
    pub id: Option<EventId>,
}

fn flip(at: i64) -> [u8; 8] {
    // Sign bit flipped: negative times (before the epoch) sort first.
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

/// `pipeline 0 stage 0 table 0`.
pub(crate) fn table_prefix(pipeline: &str, stage: &str, table: &str) -> Vec<u8> {
    [
        pipeline.as_bytes(),
        &[0],
        stage.as_bytes(),
        &[0],
        table.as_bytes(),
        &[0],
    ]
    .concat()
}

fn key_prefix(table_prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes();
    [table_prefix, &len, key].concat()
}

/// The row key of `key` at `at` (and `id`) in a table.
pub(crate) fn row_key(table_prefix: &[u8], key: &[u8], at: i64, id: Option<EventId>) -> Vec<u8> {
    let mut row = key_prefix(table_prefix, key);
    row.extend_from_slice(&flip(at));
    if let Some(id) = id {
        row.extend_from_slice(&id.to_bytes());
    }
    row
}

/// A row key split at its parts.
struct Split<'a> {
    /// `pipeline 0 stage 0 table 0`.
    table_prefix: &'a [u8],
    /// The table's name.
    table: &'a [u8],
    /// The table prefix, the length and the key.
    key_prefix: &'a [u8],
    key: &'a [u8],
    at: i64,
    id: Option<EventId>,
}

fn split_row(row: &[u8]) -> Option<Split<'_>> {
    // The table's name is between the second and the third 0x00.
    let mut zeros = row
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 0)
        .map(|(i, _)| i);
    let table_start = zeros.nth(1)? + 1;
    let table_end = zeros.next()? + 1;
    let len_bytes: [u8; 4] = row.get(table_end..table_end + 4)?.try_into().ok()?;
    let key_end = table_end + 4 + usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    let at = unflip(row.get(key_end..key_end + 8)?)?;
    let id = match row.get(key_end + 8..)? {
        [] => None,
        rest => Some(EventId::from_slice(rest)?),
    };
    Some(Split {
        table_prefix: &row[..table_end],
        table: &row[table_start..table_end - 1],
        key_prefix: &row[..key_end],
        key: &row[table_end + 4..key_end],
        at,
        id,
    })
}

/// `(pipeline, stage, table)` of a table prefix.
fn names(table_prefix: &[u8]) -> Option<(String, String, String)> {
    let mut parts = table_prefix.split(|b| *b == 0);
    let mut next = || {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    };
    Some((next()?, next()?, next()?))
}

/// Adds `change` to `batch`.
pub(crate) fn write(
    batch: &mut WriteBatch,
    handle: &impl rocksdb::AsColumnFamilyRef,
    change: &ResultChange,
) {
    let prefix = table_prefix(&change.pipeline, &change.stage, &change.table);
    let row = row_key(&prefix, change.key.as_bytes(), change.at, change.id);
    match &change.value {
        Some(value) => batch.put_cf(handle, row, value),
        None => batch.delete_cf(handle, row),
    }
}

impl Store {
    /// Up to `limit` rows matching `query`, by stage, key and time, after its cursor. Each
    /// key is sought to `since`, so keys with nothing in range cost one seek.
    pub fn results(
        &self,
        query: &ResultQuery,
        limit: usize,
    ) -> Result<Vec<StoredOutput>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Results)?;
        let scope = match (&query.stage, &query.key) {
            (Some(stage), Some(key)) => key_prefix(
                &table_prefix(&query.pipeline, stage, &query.table),
                key.as_bytes(),
            ),
            (Some(stage), None) => table_prefix(&query.pipeline, stage, &query.table),
            (None, _) => [query.pipeline.as_bytes(), &[0]].concat(),
        };
        // A cursor is a position: the page goes on strictly after it, within the scope (a
        // cursor of another query lands at this one's start, or past its end).
        let mut position = match query.cursor.as_deref() {
            None => scope.clone(),
            Some(cursor) => {
                let mut key = unhex(cursor).ok_or(StorageError::BadCursor)?;
                key.push(0);
                key.max(scope.clone())
            }
        };
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix_end(&scope));
        let mut iter = db.raw_iterator_cf_opt(&handle, read);
        iter.seek(&position);
        let mut page = Vec::new();
        while page.len() < limit {
            let Some(row) = iter.key() else { break };
            let Some(split) = split_row(row) else {
                break; // not a row of ours: nothing of ours past it
            };
            // Another table of a stage (with no stage asked for): the next one.
            if split.table != query.table.as_bytes() {
                position = prefix_end(split.table_prefix);
                iter.seek(&position);
                continue;
            }
            if query
                .key
                .as_ref()
                .is_some_and(|k| split.key != k.as_bytes())
            {
                position = prefix_end(split.key_prefix);
                iter.seek(&position);
                continue;
            }
            if let Some(since) = query.since
                && split.at < since
            {
                let wanted = [split.key_prefix, &flip(since)].concat();
                if wanted.as_slice() > row {
                    iter.seek(&wanted);
                    continue;
                }
            }
            if query.until.is_some_and(|until| split.at >= until) {
                position = prefix_end(split.key_prefix);
                iter.seek(&position);
                continue;
            }
            if let Some(value) = iter.value() {
                page.push(StoredOutput {
                    cursor: hex(row),
                    json: value.to_vec(),
                });
            }
            iter.next();
        }
        iter.status()?;
        Ok(page)
    }

    /// Every `(pipeline, stage)` with rows in `table`.
    pub fn result_stages(&self, table: &str) -> Result<Vec<(String, String)>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Results)?;
        let mut found = Vec::new();
        let mut iter = db.raw_iterator_cf(&handle);
        iter.seek_to_first();
        // One seek per table: skip to the end of each.
        while let Some(row) = iter.key() {
            let Some(split) = split_row(row) else { break };
            let prefix = split.table_prefix.to_vec();
            if let Some((pipeline, stage, t)) = names(&prefix)
                && t == table
            {
                found.push((pipeline, stage));
            }
            iter.seek(prefix_end(&prefix));
        }
        iter.status()?;
        Ok(found)
    }

    /// The row of `id` in the one-key (`""`) table `table` of every stage that has one: an
    /// event's anomalies, say. `(pipeline, value)` pairs.
    pub fn result_of_event(
        &self,
        table: &str,
        id: EventId,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let at = i64::try_from(id.timestamp().as_millis()).unwrap_or(i64::MAX);
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Results)?;
        let mut found = Vec::new();
        for (pipeline, stage) in self.result_stages(table)? {
            let row = row_key(&table_prefix(&pipeline, &stage, table), b"", at, Some(id));
            if let Some(value) = db.get_cf(&handle, row)? {
                found.push((pipeline, value));
            }
        }
        Ok(found)
    }

    /// Walks the rows of the one-key (`""`) table `table` of every stage, newest first (by
    /// time, then event id), at times in `[since, until]` and, with `before`, older than that
    /// event; `visit(entry, value)` returns whether to go on. The stages' ranges are merged.
    pub fn results_newest(
        &self,
        table: &str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        before: Option<EventId>,
        mut visit: impl FnMut(&ResultEntry, &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Results)?;
        let ms = |t: Timestamp| i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
        let mut iters = Vec::new();
        for (pipeline, stage) in self.result_stages(table)? {
            let prefix = key_prefix(&table_prefix(&pipeline, &stage, table), b"");
            let lower = match since {
                Some(since) => [prefix.as_slice(), &flip(ms(since))].concat(),
                None => prefix.clone(),
            };
            // Exclusive: the cursor's own row, or the first time past `until`.
            let upper = match (before, until) {
                (Some(id), _) => row_key(
                    &table_prefix(&pipeline, &stage, table),
                    b"",
                    ms(id.timestamp()),
                    Some(id),
                ),
                (None, Some(until)) => {
                    [prefix.as_slice(), &flip(ms(until).saturating_add(1))].concat()
                }
                (None, None) => prefix_end(&prefix),
            };
            let mut read = ReadOptions::default();
            read.set_iterate_lower_bound(lower);
            read.set_iterate_upper_bound(upper);
            let mut iter = db.raw_iterator_cf_opt(&handle, read);
            iter.seek_to_last();
            iters.push((pipeline, stage, iter));
        }
        loop {
            // The newest row among the stages' iterators, by time, then id, then (on a tie:
            // one event in two stages) the later pipeline and stage.
            let mut best: Option<(i64, Option<EventId>, usize)> = None;
            for (n, (_, _, iter)) in iters.iter().enumerate() {
                let Some(split) = iter.key().and_then(split_row) else {
                    continue;
                };
                let candidate = (split.at, split.id, n);
                if best.is_none_or(|b| candidate > b) {
                    best = Some(candidate);
                }
            }
            let Some((at, id, n)) = best else { break };
            let (pipeline, stage, iter) = &mut iters[n];
            let entry = ResultEntry {
                pipeline: pipeline.clone(),
                stage: stage.clone(),
                key: String::new(),
                at,
                id,
            };
            if let Some(value) = iter.value()
                && !visit(&entry, value)
            {
                break;
            }
            iter.prev();
        }
        for (_, _, iter) in &iters {
            iter.status()?;
        }
        Ok(())
    }
}

/// Deletes each table's rows more than `max_age` ms older than its newest row, one range per
/// key; returns whether any existed. The rows' own time, not the wall clock: a backfill of
/// last year's events keeps its results as long as live ones.
pub(crate) fn delete_results_older_than(db: &DB, max_age: i64) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Results.name()) else {
        return Ok(false);
    };
    // Each key's prefix, its table prefix's length and its oldest time; each table's newest.
    let mut keys: Vec<(Vec<u8>, usize, i64)> = Vec::new();
    let mut newest: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    while let Some(row) = iter.key() {
        let Some(split) = split_row(row) else { break };
        let (table_end, oldest) = (split.table_prefix.len(), split.at);
        let prefix = split.key_prefix.to_vec();
        let after = prefix_end(&prefix);
        // The key's last row is its newest.
        iter.seek_for_prev(&after);
        let latest = iter.key().and_then(split_row).map(|s| s.at);
        let table = newest
            .entry(prefix[..table_end].to_vec())
            .or_insert(i64::MIN);
        *table = (*table).max(latest.unwrap_or(oldest));
        keys.push((prefix, table_end, oldest));
        iter.seek(&after);
    }
    iter.status()?;
    let mut deleted = false;
    for (prefix, table_end, oldest) in keys {
        let Some(newest) = newest.get(&prefix[..table_end]) else {
            continue;
        };
        let cutoff = newest.saturating_sub(max_age);
        if oldest < cutoff {
            let end = [prefix.as_slice(), &flip(cutoff)].concat();
            db.delete_range_cf(&handle, &prefix, &end)?;
            deleted = true;
        }
    }
    Ok(deleted)
}

/// Rows moved per write batch by [`migrate`].
const MIGRATE_BATCH: usize = 10_000;

/// Moves the rows of the column families that came before this one (`windows`: `pipeline 0
/// stage 0 key_len key start`; `anomalies`: `event id · pipeline`, the stage named in the
/// record) into their stages' `windows` and `anomalies` tables. Each batch adds the new rows
/// and deletes the old ones atomically, so a crash mid-way resumes where it stopped. Returns
/// how many rows moved.
pub(crate) fn migrate(db: &DB) -> Result<u64, StorageError> {
    let Some(results) = db.cf_handle(ColumnFamily::Results.name()) else {
        return Ok(0);
    };
    let mut moved = 0;
    for (legacy, convert) in [
        (
            ColumnFamily::Windows,
            legacy_window as fn(&[u8], &[u8]) -> Option<ResultChange>,
        ),
        (ColumnFamily::Anomalies, legacy_anomaly),
    ] {
        let Some(old) = db.cf_handle(legacy.name()) else {
            continue;
        };
        loop {
            let mut batch = WriteBatch::default();
            let mut count = 0;
            let mut iter = db.raw_iterator_cf(&old);
            iter.seek_to_first();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if count == MIGRATE_BATCH {
                    break;
                }
                match convert(key, value) {
                    Some(change) => write(&mut batch, &results, &change),
                    None => tracing::warn!(
                        cf = legacy.name(),
                        key = %hex(key),
                        "an unreadable row of an earlier layout was dropped"
                    ),
                }
                batch.delete_cf(&old, key);
                count += 1;
                iter.next();
            }
            iter.status()?;
            drop(iter);
            if count == 0 {
                break;
            }
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(true);
            db.write_opt(batch, &options)?;
            moved += count as u64;
        }
    }
    if moved > 0 {
        tracing::info!(
            rows = moved,
            "moved window results and anomalies to the results column family"
        );
    }
    Ok(moved)
}

fn legacy_window(key: &[u8], value: &[u8]) -> Option<ResultChange> {
    // `pipeline 0 stage 0 key_len key start`.
    let mut zeros = key
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 0)
        .map(|(i, _)| i);
    let (first, second) = (zeros.next()?, zeros.next()?);
    let len = u32::from_be_bytes(key.get(second + 1..second + 5)?.try_into().ok()?);
    let end = second + 5 + usize::try_from(len).ok()?;
    Some(ResultChange {
        pipeline: String::from_utf8(key[..first].to_vec()).ok()?,
        stage: String::from_utf8(key[first + 1..second].to_vec()).ok()?,
        table: "windows".into(),
        key: String::from_utf8(key.get(second + 5..end)?.to_vec()).ok()?,
        at: unflip(key.get(end..)?)?,
        id: None,
        value: Some(value.to_vec()),
    })
}

fn legacy_anomaly(key: &[u8], value: &[u8]) -> Option<ResultChange> {
    // `event id · pipeline`; the record names its stage.
    let id = EventId::from_slice(key.get(..EventId::LEN)?)?;
    let pipeline = String::from_utf8(key[EventId::LEN..].to_vec()).ok()?;
    let record: serde_json::Value = serde_json::from_slice(value).ok()?;
    let stage = record["stage"].as_str().unwrap_or("anomaly").to_owned();
    Some(ResultChange {
        pipeline,
        stage,
        table: "anomalies".into(),
        key: String::new(),
        at: i64::try_from(id.timestamp().as_millis()).ok()?,
        id: Some(id),
        value: Some(value.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::PipelineCommit;

    fn put(stage: &str, table: &str, key: &str, at: i64, id: Option<EventId>) -> ResultChange {
        ResultChange {
            pipeline: "p".into(),
            stage: stage.into(),
            table: table.into(),
            key: key.into(),
            at,
            id,
            value: Some(format!("{stage}/{table}/{key}@{at}").into_bytes()),
        }
    }

    fn rows(store: &Store, query: &ResultQuery, limit: usize) -> Vec<String> {
        store
            .results(query, limit)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.json).unwrap())
            .collect()
    }

    #[test]
    fn rows_are_found_by_table_key_and_time_page_by_cursor_and_expire() {
        let (_dir, store) = crate::test_store();
        let mut commit = PipelineCommit::default();
        for (stage, table, key, at) in [
            ("w", "windows", "a", -10),
            ("w", "windows", "a", 0),
            ("w", "windows", "a", 10),
            ("w", "windows", "b\0x", 0),
            ("w", "other", "a", 0),
            ("v", "windows", "a", 5),
        ] {
            commit.results.push(put(stage, table, key, at, None));
        }
        store.commit_pipelines(commit).unwrap();
        let query = |stage: Option<&str>, key: Option<&str>, since, until| ResultQuery {
            pipeline: "p".into(),
            stage: stage.map(Into::into),
            table: "windows".into(),
            key: key.map(Into::into),
            since,
            until,
            cursor: None,
        };
        assert_eq!(
            rows(&store, &query(None, None, None, None), 100),
            [
                "v/windows/a@5",
                "w/windows/a@-10",
                "w/windows/a@0",
                "w/windows/a@10",
                "w/windows/b\0x@0"
            ],
            "by stage, key and time; the other table is skipped"
        );
        assert_eq!(
            rows(&store, &query(Some("w"), Some("a"), Some(0), Some(10)), 100),
            ["w/windows/a@0"]
        );
        assert_eq!(
            rows(&store, &query(Some("w"), None, Some(0), None), 100),
            ["w/windows/a@0", "w/windows/a@10", "w/windows/b\0x@0"]
        );
        // Pages of two, by cursor.
        let mut q = query(Some("w"), None, None, None);
        let first = store.results(&q, 2).unwrap();
        q.cursor = Some(first[1].cursor.clone());
        assert_eq!(rows(&store, &q, 2), ["w/windows/a@10", "w/windows/b\0x@0"]);
        q.cursor = Some("zz".into());
        assert!(matches!(store.results(&q, 2), Err(StorageError::BadCursor)));
        // Retention: per table, rows older than its newest minus the age go.
        let db = store.db().unwrap();
        assert!(delete_results_older_than(&db, 5).unwrap());
        assert_eq!(
            rows(&store, &query(Some("w"), None, None, None), 100),
            ["w/windows/a@10"]
        );
        assert_eq!(
            rows(&store, &query(Some("v"), None, None, None), 100),
            ["v/windows/a@5"]
        );
    }

    #[test]
    fn one_key_tables_merge_newest_first_across_stages_and_find_an_event() {
        let (_dir, store) = crate::test_store();
        let id = |ms: u64| EventId::min_at(Timestamp::from_millis(ms));
        let mut commit = PipelineCommit::default();
        for (stage, ms) in [("a", 1_000), ("b", 2_000), ("a", 3_000), ("b", 3_000)] {
            let at = i64::try_from(ms).unwrap();
            commit
                .results
                .push(put(stage, "anomalies", "", at, Some(id(ms))));
        }
        store.commit_pipelines(commit).unwrap();
        let walk = |since: Option<u64>, until: Option<u64>, before| {
            let mut seen = Vec::new();
            store
                .results_newest(
                    "anomalies",
                    since.map(Timestamp::from_millis),
                    until.map(Timestamp::from_millis),
                    before,
                    |entry, _| {
                        seen.push(format!("{}@{}", entry.stage, entry.at));
                        true
                    },
                )
                .unwrap();
            seen
        };
        assert_eq!(
            walk(None, None, None),
            ["b@3000", "a@3000", "b@2000", "a@1000"]
        );
        assert_eq!(walk(Some(1_500), Some(2_500), None), ["b@2000"]);
        assert_eq!(walk(None, None, Some(id(3_000))), ["b@2000", "a@1000"]);
        let found = store.result_of_event("anomalies", id(2_000)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, b"b/anomalies/@2000");
    }
}
