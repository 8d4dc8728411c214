//! Time-range scans over a column family keyed by ULIDs.
//!
//! A [`ScanRange`] becomes a half-open key interval `[lower, upper)` over the 128-bit ids:
//! `since` is inclusive, `until` is inclusive to the millisecond, and a cursor (the last id the
//! caller saw) is exclusive. RocksDB enforces the bounds, so a scan never reads past them.

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

/// An iterator over `(id, stored bytes)` in a range.
pub struct Scan<'a> {
    iter: Option<DBRawIterator<'a>>,
    order: Order,
    cf: ColumnFamily,
    started: bool,
    failed: bool,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(db: &'a DB, cf: ColumnFamily, range: ScanRange, fill_cache: bool) -> Self {
        let iter = range.bounds().and_then(|(lower, upper)| {
            let handle = db.cf_handle(cf.name())?;
            let mut options = ReadOptions::default();
            // Long scans (replay) would evict the hot set from the block cache.
            options.fill_cache(fill_cache);
            options.set_iterate_lower_bound(lower.to_be_bytes().to_vec());
            if let Some(upper) = upper {
                options.set_iterate_upper_bound(upper.to_be_bytes().to_vec());
            }
            Some(db.raw_iterator_cf_opt(&handle, options))
        });
        Self {
            iter,
            order: range.order,
            cf,
            started: false,
            failed: false,
        }
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<(EventId, Box<[u8]>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let iter = self.iter.as_mut()?;
        match (self.started, self.order) {
            (false, Order::Asc) => iter.seek_to_first(),
            (false, Order::Desc) => iter.seek_to_last(),
            (true, Order::Asc) => iter.next(),
            (true, Order::Desc) => iter.prev(),
        }
        self.started = true;
        if !iter.valid() {
            return match iter.status() {
                Ok(()) => None,
                Err(e) => {
                    self.failed = true;
                    Some(Err(e.into()))
                }
            };
        }
        let (key, value) = (iter.key()?, iter.value()?);
        let Some(id) = EventId::from_slice(key) else {
            self.failed = true;
            return Some(Err(StorageError::Corrupt {
                cf: self.cf.name(),
                key: crate::log::hex(key),
                message: "key is not a 16-byte id".into(),
            }));
        };
        Some(Ok((id, value.into())))
    }
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
