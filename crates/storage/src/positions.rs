//! Sources' read positions: where a source that reads a replayable log (a Kafka partition)
//! reads next, written **in the same write batch** as the events and dead letters it covers.
//!
//! So the log and the position never disagree: after a crash at any moment, the source resumes
//! exactly after the last batch that is durable, and nothing is stored twice or skipped.
//! Key: source name, `0x00`, the source's own key; value: the next position, 8 bytes
//! big-endian.

use std::sync::Arc;

use colloquium_event::{Event, Position, PositionedBatch, Reservation};

use crate::{ColumnFamily, StorageError, Store};

fn row_key(source: &str, key: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(source.len() + 1 + key.len());
    row.extend_from_slice(source.as_bytes());
    row.push(0);
    row.extend_from_slice(key);
    row
}

impl Store {
    /// Makes `batch` durable in one atomic write: its events in the log (published to the feed,
    /// then `ids` settled, as [`Store::append_settling`]), its dead letters, and `source`'s
    /// positions.
    pub async fn append_positioned(
        &self,
        source: &str,
        batch: PositionedBatch,
        ids: Reservation,
    ) -> Result<(), StorageError> {
        self.queue_positioned(source, batch, ids)?.await
    }

    /// Queues `batch` for [`Store::append_positioned`]'s write and returns without waiting;
    /// what it returns resolves once the batch is durable. Batches queued one after another
    /// are written in that order, and once one of a [`BatchChain`] fails, the later ones of
    /// that chain fail unwritten: a source may keep several in flight and its stored position
    /// still never passes a record that was not stored.
    ///
    /// [`BatchChain`]: colloquium_event::BatchChain
    pub fn queue_positioned(
        &self,
        source: &str,
        batch: PositionedBatch,
        ids: Reservation,
    ) -> Result<impl Future<Output = Result<(), StorageError>> + Send + use<>, StorageError> {
        let PositionedBatch {
            events,
            dead_letters,
            positions,
            chain,
        } = batch;
        let (letters, mut extra) = self.dead_letter_records(dead_letters)?;
        let reasons: Vec<&'static str> = letters.iter().map(|l| l.reason.as_str()).collect();
        extra.extend(positions.iter().map(|p| {
            let key = row_key(source, &p.key);
            (ColumnFamily::Positions, key, p.next.to_be_bytes().to_vec())
        }));
        let events: Arc<[Event]> = events.into();
        let durable =
            (self.writer()).queue(&events, Some(ids), Some(events.clone()), extra, chain)?;
        let store = self.clone();
        Ok(async move {
            durable.await?;
            for reason in reasons {
                store.count_dead_letter(reason);
            }
            Ok(())
        })
    }

    /// `source`'s stored positions.
    pub fn positions(&self, source: &str) -> Result<Vec<Position>, StorageError> {
        let db = self.db()?;
        let handle = db.cf(ColumnFamily::Positions)?;
        let prefix = row_key(source, &[]);
        let mut found = Vec::new();
        let iter = db.iterator_cf(
            handle,
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (key, value) = item?;
            let Some(own) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            let next = <[u8; 8]>::try_from(&*value).map_err(|_| StorageError::Corrupt {
                cf: ColumnFamily::Positions.name(),
                key: crate::log::hex(&key),
                message: format!("a position is 8 bytes, found {}", value.len()),
            })?;
            found.push(Position {
                key: own.to_vec(),
                next: u64::from_be_bytes(next),
            });
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::{IdGenerator, Metadata, Reason, Timestamp};

    fn event(n: u64) -> Event {
        let data = serde_json::json!({"n": n})
            .as_object()
            .cloned()
            .unwrap_or_default();
        Event::at(
            Timestamp::from_millis(n),
            data,
            Metadata::new("k", "default"),
        )
    }

    #[tokio::test]
    async fn events_dead_letters_and_positions_land_together() {
        let (_dir, store) = crate::test_store();
        let ids = Arc::new(IdGenerator::default());
        let (_, reservation) = ids.reserve(Timestamp::now(), 0);
        let batch = PositionedBatch {
            events: vec![event(1), event(2)],
            dead_letters: vec![(event(3), Reason::BadPayload, "not JSON".into())],
            positions: vec![
                Position {
                    key: b"t\0\0\0\0\x01".to_vec(),
                    next: 42,
                },
                Position {
                    key: b"t\0\0\0\0\x00".to_vec(),
                    next: 7,
                },
            ],
            ..PositionedBatch::default()
        };
        store
            .append_positioned("kafka", batch, reservation)
            .await
            .unwrap();
        let (_, reservation) = ids.reserve(Timestamp::now(), 0);
        let later = PositionedBatch {
            positions: vec![Position {
                key: b"t\0\0\0\0\x01".to_vec(),
                next: 43,
            }],
            ..PositionedBatch::default()
        };
        store
            .append_positioned("kafka", later, reservation)
            .await
            .unwrap();
        let positions = store.positions("kafka").unwrap();
        assert_eq!(positions.len(), 2);
        assert_eq!(positions[0].next, 7);
        assert_eq!(positions[1].next, 43);
        assert!(store.positions("kafk").unwrap().is_empty());
        assert!(store.positions("kafka2").unwrap().is_empty());
        let letters = store.dead_letters(crate::ScanRange::default()).count();
        assert_eq!(letters, 1);
    }

    /// Several batches of a chain in flight: written in the order queued (the last position
    /// wins, whichever answer is awaited first); once the chain is broken, a batch queued in it
    /// is refused unwritten (no event, the position stays) and its ids still settle.
    #[tokio::test]
    async fn a_chain_is_written_in_order_and_a_broken_one_writes_nothing_more() {
        let (_dir, store) = crate::test_store();
        let ids = Arc::new(IdGenerator::default());
        let chain = colloquium_event::BatchChain::default();
        let batch = |n: u64, ids: &Arc<IdGenerator>| {
            let (mut taken, reservation) = ids.reserve(Timestamp::now(), 1);
            let mut event = event(n);
            event.id = taken.remove(0);
            let batch = PositionedBatch {
                events: vec![event],
                positions: vec![Position {
                    key: b"t\0\0\0\0\x00".to_vec(),
                    next: n,
                }],
                chain: chain.clone(),
                ..PositionedBatch::default()
            };
            (batch, reservation)
        };
        let mut queued = Vec::new();
        for n in 1..=20 {
            let (batch, reservation) = batch(n, &ids);
            queued.push(store.queue_positioned("kafka", batch, reservation).unwrap());
        }
        for durable in queued.into_iter().rev() {
            durable.await.unwrap();
        }
        assert_eq!(store.positions("kafka").unwrap()[0].next, 20);

        chain.break_off();
        let (batch, reservation) = batch(21, &ids);
        let refused = store
            .queue_positioned("kafka", batch, reservation)
            .unwrap()
            .await;
        assert!(
            matches!(refused, Err(StorageError::ChainBroken)),
            "{refused:?}"
        );
        assert_eq!(store.positions("kafka").unwrap()[0].next, 20);
        let stored: Vec<u64> = store
            .scan(crate::ScanRange::default(), false)
            .map(|r| {
                let (id, bytes) = r.unwrap();
                let event = crate::log::decode(&id.to_bytes(), &bytes).unwrap();
                event.data["n"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(stored, (1..=20).collect::<Vec<_>>());
        assert_eq!(
            ids.watermark(),
            ids.issued(),
            "the refused batch's ids settled"
        );
    }
}
