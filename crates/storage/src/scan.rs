//! Time-range scans over a column family keyed by ULIDs.
//!
//! A [`ScanRange`] becomes a half-open key interval `[lower, upper)` over the 128-bit ids:
//! `since` is inclusive, `until` is inclusive to the millisecond, and a cursor (the last id the
//! caller saw) is exclusive. RocksDB enforces the bounds, so a scan never reads past them.

use std::sync::Arc;

use colloquium_event::{EventId, Timestamp};
use rocksdb::{DB, DBRawIterator, ReadOptions};

use crate::{ColumnFamily, StorageError};

/// Scan direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// Which ids to visit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanRange {
    /// Earliest ingest time, inclusive.
    pub since: Option<Timestamp>,
    /// Latest ingest time, inclusive (to the millisecond).
    pub until: Option<Timestamp>,
    /// Resume after this id (in scan order), exclusive.
    pub after: Option<EventId>,
    /// Direction.
    pub order: Order,
}

impl ScanRange {
    /// Returns the half-open interval `[lower, upper)` of 128-bit keys; `None` when empty.
    fn bounds(&self) -> Option<(u128, Option<u128>)> {
        let key = |id: EventId| u128::from_be_bytes(id.to_bytes());
        let mut lower = self.since.map_or(0, |t| key(EventId::min_at(t)));
        let mut upper = self
            .until
            .and_then(|t| t.as_millis().checked_add(1))
            .map(|ms| key(EventId::min_at(Timestamp::from_millis(ms))));
        match (self.after, self.order) {
            (Some(after), Order::Asc) => lower = lower.max(key(after).checked_add(1)?),
            (Some(after), Order::Desc) => {
                upper = Some(upper.map_or(key(after), |u| u.min(key(after))))
            }
            (None, _) => {}
        }
        match upper {
            Some(upper) if upper <= lower => None,
            _ => Some((lower, upper)),
        }
    }
}

self_cell::self_cell!(
    /// A RocksDB iterator with the database it reads, held for as long as the scan is (a
    /// reopen of the store waits for it).
    struct Cursor {
        owner: Arc<DB>,
        #[covariant]
        dependent: MaybeIter,
    }
);

type MaybeIter<'a> = Option<DBRawIterator<'a>>;

/// An iterator over `(id, stored bytes)` in a range.
pub struct Scan {
    cursor: Result<Cursor, Option<StorageError>>,
    order: Order,
    cf: ColumnFamily,
    started: bool,
    failed: bool,
}

impl Scan {
    /// A scan of `range` in `cf`; `db` is the store's database, or why it could not be had
    /// (the scan then yields that error once).
    pub(crate) fn new(
        db: Result<Arc<DB>, StorageError>,
        cf: ColumnFamily,
        range: ScanRange,
        fill_cache: bool,
    ) -> Self {
        let cursor = db.map_err(Some).map(|db| {
            Cursor::new(db, |db| {
                range.bounds().and_then(|(lower, upper)| {
                    let handle = db.cf_handle(cf.name())?;
                    let mut options = ReadOptions::default();
                    // Long scans (replay) would evict the hot set from the block cache.
                    options.fill_cache(fill_cache);
                    options.set_iterate_lower_bound(lower.to_be_bytes().to_vec());
                    if let Some(upper) = upper {
                        options.set_iterate_upper_bound(upper.to_be_bytes().to_vec());
                    }
                    Some(db.raw_iterator_cf_opt(&handle, options))
                })
            })
        });
        Self {
            cursor,
            order: range.order,
            cf,
            started: false,
            failed: false,
        }
    }
}

/// One scanned record: its id and stored bytes.
type Item = Result<(EventId, Box<[u8]>), StorageError>;

impl Iterator for Scan {
    type Item = Item;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (order, started, cf) = (self.order, self.started, self.cf);
        let cursor = match &mut self.cursor {
            Ok(cursor) => cursor,
            Err(error) => return error.take().map(Err),
        };
        let item = cursor.with_dependent_mut(|_, iter| {
            let iter = iter.as_mut()?;
            step(iter, order, started, cf)
        });
        self.started = true;
        if matches!(item, Some(Err(_))) {
            self.failed = true;
        }
        item
    }
}

/// Moves `iter` one step in `order` and reads where it lands.
fn step(
    iter: &mut DBRawIterator<'_>,
    order: Order,
    started: bool,
    cf: ColumnFamily,
) -> Option<Item> {
    match (started, order) {
        (false, Order::Asc) => iter.seek_to_first(),
        (false, Order::Desc) => iter.seek_to_last(),
        (true, Order::Asc) => iter.next(),
        (true, Order::Desc) => iter.prev(),
    }
    if !iter.valid() {
        return iter.status().err().map(|e| Err(e.into()));
    }
    let (key, value) = (iter.key()?, iter.value()?);
    let Some(id) = EventId::from_slice(key) else {
        return Some(Err(StorageError::Corrupt {
            cf: cf.name(),
            key: crate::log::hex(key),
            message: "key is not a 16-byte id".into(),
        }));
    };
    Some(Ok((id, value.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Option<Timestamp> {
        Some(Timestamp::from_millis(ms))
    }

    #[test]
    fn until_is_inclusive_to_the_millisecond() {
        let range = ScanRange {
            since: t(10),
            until: t(10),
            ..Default::default()
        };
        let (lower, upper) = range.bounds().unwrap();
        assert_eq!(lower >> 80, 10);
        assert_eq!(upper.unwrap() >> 80, 11);
    }

    #[test]
    fn inverted_range_is_empty() {
        let range = ScanRange {
            since: t(10),
            until: t(9),
            ..Default::default()
        };
        assert!(range.bounds().is_none());
    }
}
