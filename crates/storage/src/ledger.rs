//! The AI spend ledger's rows (the `ledger` column family): each UTC day's spend per
//! [`Account`] (pipeline, provider, model), and the reservations of calls in flight, so a restart neither resets the day's spend nor
//! forgets a call that was sent. Written synced: a reservation is durable before its call goes
//! out.
//!
//! Keys: `s` + day (i64 BE, days since 1970-01-01 UTC, sign bit flipped) + pipeline `\0`
//! provider `\0` model → spend (u64 BE, nano-dollars); `o` + reservation id (16 bytes) → [`OpenReservation`] as JSON.

use colloquium_event::EventId;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::{ColumnFamily, StorageError, Store};

const SPEND: u8 = b's';
const OPEN: u8 = b'o';

/// Whose spend it is: the pipeline whose stage made the call, and the provider and model it
/// went to.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Account {
    /// The pipeline.
    pub pipeline: String,
    /// The provider's name in config.
    pub provider: String,
    /// The model.
    pub model: String,
}

/// A call's reservation, as stored until it settles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReservation {
    /// The UTC day it was made (days since the epoch): it is charged to that day.
    pub day: i64,
    /// Who made it, and where it went.
    pub account: Account,
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
    /// `account` has spent `total` (nano-dollars) on `day`.
    Spend {
        /// The UTC day.
        day: i64,
        /// Whose spend.
        account: Account,
        /// Its whole spend that day.
        total: u64,
    },
}

/// What the ledger holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerRows {
    /// `(day, account, spend)`, by day then account.
    pub spend: Vec<(i64, Account, u64)>,
    /// Reservations not settled, by id.
    pub open: Vec<(EventId, OpenReservation)>,
}

fn day_bytes(day: i64) -> [u8; 8] {
    ((day as u64) ^ (1 << 63)).to_be_bytes()
}

fn spend_key(day: i64, account: &Account) -> Vec<u8> {
    [
        &[SPEND][..],
        &day_bytes(day),
        account.pipeline.as_bytes(),
        b"\0",
        account.provider.as_bytes(),
        b"\0",
        account.model.as_bytes(),
    ]
    .concat()
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
                    let names = std::str::from_utf8(&rest[8..])
                        .map_err(|_| corrupt(&key, "an account is not UTF-8"))?;
                    let mut parts = names.splitn(3, '\0').map(str::to_owned);
                    let (Some(pipeline), Some(provider), Some(model)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(corrupt(&key, "an account is not pipeline, provider, model"));
                    };
                    let total: [u8; 8] = value
                        .as_ref()
                        .try_into()
                        .map_err(|_| corrupt(&key, "a spend is not 8 bytes"))?;
                    let account = Account {
                        pipeline,
                        provider,
                        model,
                    };
                    rows.spend.push((day, account, u64::from_be_bytes(total)));
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

    /// Applies `writes` in one batch, synced when `durable` (and the store syncs at all).
    pub fn write_ledger(&self, writes: &[LedgerWrite], durable: bool) -> Result<(), StorageError> {
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
                    account,
                    total,
                } => batch.put_cf(&handle, spend_key(*day, account), total.to_be_bytes()),
            }
        }
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(durable && self.syncs());
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
        let account = |pipeline: &str| Account {
            pipeline: pipeline.into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        };
        let reservation = OpenReservation {
            day: 20_429,
            account: account("p"),
            amount: 1_500,
        };
        store
            .write_ledger(
                &[
                    LedgerWrite::Spend {
                        day: 20_429,
                        account: account("p"),
                        total: 7,
                    },
                    LedgerWrite::Spend {
                        day: -1,
                        account: account("q"),
                        total: 9,
                    },
                    LedgerWrite::Open {
                        id,
                        reservation: reservation.clone(),
                    },
                ],
                true,
            )
            .unwrap();
        let rows = store.ledger().unwrap();
        assert_eq!(
            rows.spend,
            [(-1, account("q"), 9), (20_429, account("p"), 7)]
        );
        assert_eq!(rows.open, [(id, reservation)]);
        store
            .write_ledger(&[LedgerWrite::Close { id }], true)
            .unwrap();
        assert!(store.ledger().unwrap().open.is_empty());
    }
}
