//! Window results: what window stages fired, kept per pipeline, stage, grouping key and window
//! start, and written in the step that produced them (atomically with the checkpoint, so a
//! restart that redoes a step writes the same rows again instead of new ones).
//!
//! Key: `pipeline 0x00 stage 0x00 key_len(u32 BE) key start(i64 BE, sign bit flipped)`. A
//! window's later firings (updates, its final one) overwrite its row. Per key the rows are in
//! window order, so a query seeks each key to `since`; pipeline and stage names hold no 0x00
//! (the config forbids it), and the length prefix lets keys hold any byte.

use rocksdb::ReadOptions;

use crate::pipelines::prefix_end;
use crate::{ColumnFamily, StorageError, Store, StoredOutput};

/// One change to the results of a window stage.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowWrite {
    /// The window of `key` starting at `start` fired: its result, as JSON.
    Put {
        /// The grouping key.
        key: String,
        /// The window's start (epoch ms).
        start: i64,
        /// The result's JSON.
        json: Vec<u8>,
    },
    /// The window of `key` at `start` is no more (a session merged into a larger one).
    Delete {
        /// The grouping key.
        key: String,
        /// The window's start.
        start: i64,
    },
}

/// A [`WindowWrite`] of one stage of one pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowChange {
    /// The pipeline.
    pub pipeline: String,
    /// The stage id.
    pub stage: String,
    /// What to write.
    pub write: WindowWrite,
}

/// What `GET /api/windows` asks for.
#[derive(Clone, Debug, Default)]
pub struct WindowQuery {
    /// The pipeline.
    pub pipeline: String,
    /// Only this stage (all of the pipeline's window stages when absent).
    pub stage: Option<String>,
    /// Only this grouping key.
    pub key: Option<String>,
    /// Windows starting at or after this (epoch ms).
    pub since: Option<i64>,
    /// Windows starting before this.
    pub until: Option<i64>,
    /// The cursor of the previous page.
    pub cursor: Option<String>,
}

fn flip(start: i64) -> [u8; 8] {
    // Sign bit flipped: negative starts (before the epoch) sort first.
    ((start as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

fn stage_prefix(pipeline: &str, stage: &str) -> Vec<u8> {
    [pipeline.as_bytes(), &[0], stage.as_bytes(), &[0]].concat()
}

fn key_prefix(stage_prefix: &[u8], key: &str) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes();
    [stage_prefix, &len, key.as_bytes()].concat()
}

/// The row key of `key`'s window at `start`.
pub(crate) fn row_key(pipeline: &str, stage: &str, key: &str, start: i64) -> Vec<u8> {
    [
        key_prefix(&stage_prefix(pipeline, stage), key).as_slice(),
        &flip(start),
    ]
    .concat()
}

/// A row key split: (its stage prefix's length, the key prefix up to the start, the start).
fn split_row(row: &[u8]) -> Option<(usize, &[u8], i64)> {
    // The stage's prefix ends at the second 0x00.
    let stage_end = row
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == 0)
        .nth(1)
        .map(|(i, _)| i + 1)?;
    let len_bytes: [u8; 4] = row.get(stage_end..stage_end + 4)?.try_into().ok()?;
    let end = stage_end + 4 + usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    Some((stage_end, row.get(..end)?, unflip(row.get(end..)?)?))
}

impl Store {
    /// Up to `limit` window results matching `query`, by stage, key and window start, after
    /// its cursor. Each key is sought to `since`, so keys with nothing in range cost one seek.
    pub fn window_results(
        &self,
        query: &WindowQuery,
        limit: usize,
    ) -> Result<Vec<StoredOutput>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Windows)?;
        let pipeline_prefix = [query.pipeline.as_bytes(), &[0]].concat();
        let scope = match (&query.stage, &query.key) {
            (Some(stage), Some(key)) => key_prefix(&stage_prefix(&query.pipeline, stage), key),
            (Some(stage), None) => stage_prefix(&query.pipeline, stage),
            (None, _) => pipeline_prefix.clone(),
        };
        let mut position = match query.cursor.as_deref().map(crate::pipelines::unhex) {
            Some(Some(mut key)) if key.starts_with(&scope) => {
                key.push(0); // strictly after the cursor
                key
            }
            Some(_) => return Err(StorageError::BadCursor),
            None => scope.clone(),
        };
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(prefix_end(&scope));
        let mut iter = db.raw_iterator_cf_opt(&handle, read);
        iter.seek(&position);
        let mut page = Vec::new();
        while page.len() < limit {
            let Some(row) = iter.key() else { break };
            let Some((stage_end, prefix, start)) = split_row(row) else {
                break; // not a row of ours: nothing of ours past it
            };
            let key_matches = query
                .key
                .as_ref()
                .is_none_or(|k| prefix[stage_end + 4..] == *k.as_bytes());
            if !key_matches {
                // Another key: the next one.
                position = prefix_end(prefix);
                iter.seek(&position);
                continue;
            }
            if let Some(since) = query.since
                && start < since
            {
                let wanted = [prefix, &flip(since)].concat();
                if wanted.as_slice() > row {
                    iter.seek(&wanted);
                    continue;
                }
            }
            if query.until.is_some_and(|until| start >= until) {
                position = prefix_end(prefix);
                iter.seek(&position);
                continue;
            }
            if let Some(value) = iter.value() {
                page.push(StoredOutput {
                    cursor: crate::pipelines::hex(row),
                    json: value.to_vec(),
                });
            }
            iter.next();
        }
        iter.status()?;
        Ok(page)
    }
}

/// Deletes each window stage's results that start more than `max_age` ms before its newest
/// one, one range per key; returns whether any existed. Event time, not the wall clock: a
/// backfill of last year's events keeps its results as long as live ones.
pub(crate) fn delete_windows_older_than(
    db: &rocksdb::DB,
    max_age: i64,
) -> Result<bool, StorageError> {
    let Some(handle) = db.cf_handle(ColumnFamily::Windows.name()) else {
        return Ok(false);
    };
    // Each key's prefix, its stage's prefix length and its oldest start; each stage's newest.
    let mut keys: Vec<(Vec<u8>, usize, i64)> = Vec::new();
    let mut newest: std::collections::HashMap<Vec<u8>, i64> = std::collections::HashMap::new();
    let mut iter = db.raw_iterator_cf(&handle);
    iter.seek_to_first();
    while let Some(row) = iter.key() {
        let Some((stage_end, prefix, oldest)) = split_row(row) else {
            break;
        };
        let prefix = prefix.to_vec();
        let after = prefix_end(&prefix);
        // The key's last row is its newest window.
        iter.seek_for_prev(&after);
        let latest = iter.key().and_then(split_row).map(|(_, _, s)| s);
        let stage = newest
            .entry(prefix[..stage_end].to_vec())
            .or_insert(i64::MIN);
        *stage = (*stage).max(latest.unwrap_or(oldest));
        keys.push((prefix, stage_end, oldest));
        iter.seek(&after);
    }
    iter.status()?;
    let mut deleted = false;
    for (prefix, stage_end, oldest) in keys {
        let Some(newest) = newest.get(&prefix[..stage_end]) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::PipelineCommit;

    fn put(stage: &str, key: &str, start: i64) -> WindowChange {
        WindowChange {
            pipeline: "p".into(),
            stage: stage.into(),
            write: WindowWrite::Put {
                key: key.into(),
                start,
                json: format!("{{\"key\":\"{key}\",\"window_start\":{start}}}").into_bytes(),
            },
        }
    }

    fn starts(store: &Store, query: &WindowQuery, limit: usize) -> Vec<String> {
        store
            .window_results(query, limit)
            .unwrap()
            .into_iter()
            .map(|o| String::from_utf8(o.json).unwrap())
            .collect()
    }

    #[test]
    fn results_are_found_by_key_and_time_page_by_cursor_and_expire() {
        let (_dir, store) = crate::test_store();
        let mut commit = PipelineCommit::default();
        for key in ["a", "b", "a\u{0}b"] {
            for start in [-1_000, 0, 1_000, 2_000] {
                commit.windows.push(put("w", key, start));
            }
        }
        commit.windows.push(put("other", "a", 0));
        // A later firing overwrites; a merged-away session is deleted.
        commit.windows.push(WindowChange {
            pipeline: "p".into(),
            stage: "w".into(),
            write: WindowWrite::Delete {
                key: "b".into(),
                start: 1_000,
            },
        });
        store.commit_pipelines(commit).unwrap();
        let of_a = WindowQuery {
            pipeline: "p".into(),
            stage: Some("w".into()),
            key: Some("a".into()),
            since: Some(0),
            until: Some(2_000),
            cursor: None,
        };
        assert_eq!(
            starts(&store, &of_a, 10),
            [
                r#"{"key":"a","window_start":0}"#,
                r#"{"key":"a","window_start":1000}"#
            ]
        );
        // Every key of the pipeline from 1000 on, in pages of two.
        let mut all = WindowQuery {
            pipeline: "p".into(),
            since: Some(1_000),
            ..WindowQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.window_results(&all, 2).unwrap();
            let Some(last) = page.last() else { break };
            all.cursor = Some(last.cursor.clone());
            seen.extend(page.into_iter().map(|o| String::from_utf8(o.json).unwrap()));
        }
        assert_eq!(seen.len(), 5, "{seen:?}"); // a: 2, b: 1 (1000 deleted), a\0b: 2
        assert!(seen.iter().all(|s| !s.contains("\"window_start\":0")));
        let bad = WindowQuery {
            cursor: Some("zz".into()),
            ..of_a.clone()
        };
        assert!(matches!(
            store.window_results(&bad, 1),
            Err(StorageError::BadCursor)
        ));
        // Newest start 2000: with 1000 ms kept, what starts before 1000 goes.
        assert!(delete_windows_older_than(&store.db().unwrap(), 1_000).unwrap());
        let of_w = WindowQuery {
            pipeline: "p".into(),
            stage: Some("w".into()),
            ..WindowQuery::default()
        };
        let left = starts(&store, &of_w, 100);
        assert_eq!(left.len(), 5, "{left:?}");
        assert!(
            left.iter()
                .all(|s| s.contains("1000") || s.contains("2000"))
        );
        // Each stage by its own newest: `other` keeps its one row.
        let of_other = WindowQuery {
            stage: Some("other".into()),
            ..of_w
        };
        assert_eq!(starts(&store, &of_other, 100).len(), 1);
    }
}
