//! The AI spend ledger's rows (the `ledger` column family): each UTC day's spend per pipeline,
//! and the reservations of calls in flight, so a restart neither resets the day's spend nor
//! forgets a call that was sent. Written synced: a reservation is durable before its call goes
//! out.
//!
//! Keys: `s` + day (i64 BE, days since 1970-01-01 UTC, sign bit flipped) + pipeline → spend
//! (u64 BE, nano-dollars); `o` + reservation id (16 bytes) → [`OpenReservation`] as JSON.

use colloquium_event::EventId;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::{ColumnFamily, StorageError, Store};

const SPEND: u8 = b's';
const OPEN: u8 = b'o';

/// A call's reservation, as stored until it settles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReservation {
    /// The UTC day it was made (days since the epoch): it is charged to that day.
    pub day: i64,
    /// The pipeline whose stage made the call.
    pub pipeline: String,
    /// What it reserved (nano-dollars): the call's worst case.
    pub amount: u64,
}

/// One change to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerWrite {
    /// A call reserved `reservation` under `id`.
    Open {
        /// The reservation's id.
        id: EventId,
        /// What it holds.
        reservation: OpenReservation,
    },
    /// The reservation `id` is settled or released.
    Close {
        /// The reservation's id.
        id: EventId,
    },
    /// `pipeline` has spent `total` (nano-dollars) on `day`.
    Spend {
        /// The UTC day.
        day: i64,
        /// The pipeline.
        pipeline: String,
        /// Its whole spend that day.
        total: u64,
    },
}

/// What the ledger holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerRows {
    /// `(day, pipeline, spend)`, by day then pipeline.
    pub spend: Vec<(i64, String, u64)>,
    /// Reservations not settled, by id.
    pub open: Vec<(EventId, OpenReservation)>,
}

fn day_bytes(day: i64) -> [u8; 8] {
    ((day as u64) ^ (1 << 63)).to_be_bytes()
}

fn spend_key(day: i64, pipeline: &str) -> Vec<u8> {
    [&[SPEND][..], &day_bytes(day), pipeline.as_bytes()].concat()
}

fn open_key(id: EventId) -> Vec<u8> {
    [&[OPEN][..], &id.to_bytes()].concat()
}

fn corrupt(key: &[u8], message: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        cf: ColumnFamily::Ledger.name(),
        key: crate::pipelines::hex(key),
        message: message.into(),
    }
}

impl Store {
    /// Every spend row and open reservation.
    pub fn ledger(&self) -> Result<LedgerRows, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Ledger)?;
        let mut rows = LedgerRows::default();
        for item in db.iterator_cf(&handle, rocksdb::IteratorMode::Start) {
            let (key, value) = item?;
            match key.split_first() {
                Some((&SPEND, rest)) if rest.len() >= 8 => {
                    let day = u64::from_be_bytes(rest[..8].try_into().unwrap_or_default());
                    let day = (day ^ (1 << 63)) as i64;
                    let pipeline = String::from_utf8(rest[8..].to_vec())
                        .map_err(|_| corrupt(&key, "a pipeline name is not UTF-8"))?;
                    let total: [u8; 8] = value
                        .as_ref()
                        .try_into()
                        .map_err(|_| corrupt(&key, "a spend is not 8 bytes"))?;
                    rows.spend.push((day, pipeline, u64::from_be_bytes(total)));
                }
                Some((&OPEN, rest)) => {
                    let id = EventId::from_slice(rest)
                        .ok_or_else(|| corrupt(&key, "a reservation id is not 16 bytes"))?;
                    let open =
                        serde_json::from_slice(&value).map_err(|e| corrupt(&key, e.to_string()))?;
                    rows.open.push((id, open));
                }
                _ => return Err(corrupt(&key, "not a ledger row")),
            }
        }
        Ok(rows)
    }

    /// Applies `writes` in one synced batch.
    pub fn write_ledger(&self, writes: &[LedgerWrite]) -> Result<(), StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Ledger)?;
        let mut batch = WriteBatch::default();
        for write in writes {
            match write {
                LedgerWrite::Open { id, reservation } => {
                    let json = serde_json::to_vec(reservation)
                        .map_err(|e| StorageError::Db(e.to_string()))?;
                    batch.put_cf(&handle, open_key(*id), json);
                }
                LedgerWrite::Close { id } => batch.delete_cf(&handle, open_key(*id)),
                LedgerWrite::Spend {
                    day,
                    pipeline,
                    total,
                } => batch.put_cf(&handle, spend_key(*day, pipeline), total.to_be_bytes()),
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(self.syncs());
        db.write(batch, &options)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::Timestamp;

    #[test]
    fn spend_and_reservations_round_trip() {
        let (_dir, store) = crate::test_store();
        let id = EventId::min_at(Timestamp::from_millis(5));
        let reservation = OpenReservation {
            day: 20_429,
            pipeline: "p".into(),
            amount: 1_500,
        };
        store
            .write_ledger(&[
                LedgerWrite::Spend {
                    day: 20_429,
                    pipeline: "p".into(),
                    total: 7,
                },
                LedgerWrite::Spend {
                    day: -1,
                    pipeline: "q".into(),
                    total: 9,
                },
                LedgerWrite::Open {
                    id,
                    reservation: reservation.clone(),
                },
            ])
            .unwrap();
        let rows = store.ledger().unwrap();
        assert_eq!(
            rows.spend,
            [(-1, "q".to_owned(), 9), (20_429, "p".to_owned(), 7)]
        );
        assert_eq!(rows.open, [(id, reservation)]);
        store.write_ledger(&[LedgerWrite::Close { id }]).unwrap();
        assert!(store.ledger().unwrap().open.is_empty());
    }
}
