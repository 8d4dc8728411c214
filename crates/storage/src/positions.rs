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
        let PositionedBatch {
            events,
            dead_letters,
            positions,
        } = batch;
        let (letters, mut extra) = self.dead_letter_records(dead_letters)?;
        extra.extend(positions.iter().map(|p| {
            let key = row_key(source, &p.key);
            (ColumnFamily::Positions, key, p.next.to_be_bytes().to_vec())
        }));
        let events: Arc<[Event]> = events.into();
        self.writer()
            .append(&events, Some(ids), Some(events.clone()), extra)
            .await?;
        for letter in &letters {
            self.count_dead_letter(letter.reason.as_str());
        }
        Ok(())
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
}
