//! Turns payloads into events: assigns ids, picks the event time, fills metadata.

use std::sync::Arc;

use colloquium_event::{Event, IdGenerator, Metadata, Priority, Reservation, Timestamp};
use serde_json::Value;

use crate::body::Payload;

/// Where the event time lives in a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TimeField {
    /// A top-level key.
    Key(String),
    /// A JSON pointer (`/meta/ts`).
    Pointer(String),
}

/// Per-request facts that go into every event's metadata.
#[derive(Clone, Debug, Default)]
pub struct Envelope {
    /// Lane.
    pub priority: Priority,
    /// Routing key.
    pub routing_key: Option<String>,
    /// Topic.
    pub topic: Option<String>,
}

/// Stamps payloads into events for one source.
#[derive(Clone)]
pub struct Stamper {
    ids: Arc<IdGenerator>,
    time_field: TimeField,
    pipeline: Arc<str>,
    source: &'static str,
}

impl Stamper {
    /// Returns a stamper for `source`, reading event time from `timestamp_field` (a key, or a
    /// JSON pointer when it starts with `/`). `ids` is shared node-wide so ids stay ordered.
    pub fn new(
        ids: Arc<IdGenerator>,
        source: &'static str,
        timestamp_field: &str,
        pipeline: &str,
    ) -> Self {
        let time_field = if timestamp_field.starts_with('/') {
            TimeField::Pointer(timestamp_field.to_owned())
        } else {
            TimeField::Key(timestamp_field.to_owned())
        };
        Self {
            ids,
            time_field,
            pipeline: pipeline.into(),
            source,
        }
    }

    /// Returns the events for `payloads`, all ingested `now`, and the reservation that keeps
    /// their ids unsettled until the batch is stored (or dropped).
    pub fn stamp(
        &self,
        payloads: Vec<Payload>,
        envelope: &Envelope,
        now: Timestamp,
    ) -> (Vec<Event>, Reservation) {
        let (ids, reservation) = self.ids.reserve(now, payloads.len());
        let events = payloads
            .into_iter()
            .zip(ids)
            .map(|(data, id)| Event {
                id,
                timestamp: self.event_time(&data).unwrap_or(now),
                ingest_time: now,
                data,
                metadata: Metadata {
                    routing_key: envelope.routing_key.clone(),
                    priority: envelope.priority,
                    topic: envelope.topic.clone(),
                    ..Metadata::new(self.source, &*self.pipeline)
                },
            })
            .collect();
        (events, reservation)
    }

    fn event_time(&self, data: &Payload) -> Option<Timestamp> {
        let value = match &self.time_field {
            TimeField::Key(key) => data.get(key)?,
            TimeField::Pointer(pointer) => pointer_in(data, pointer)?,
        };
        Timestamp::from_json(value)
    }
}

/// Resolves a JSON pointer against an object without cloning it into a `Value`.
fn pointer_in<'a>(data: &'a Payload, pointer: &str) -> Option<&'a Value> {
    let rest = pointer.strip_prefix('/')?;
    let (first, tail) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let key = first.replace("~1", "/").replace("~0", "~");
    let value = data.get(&key)?;
    if tail.is_empty() {
        Some(value)
    } else {
        value.pointer(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Payload {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn event_time_comes_from_the_payload_when_valid() {
        let now = Timestamp::from_millis(1_000_000);
        let stamper = Stamper::new(Arc::default(), "http", "ts", "default");
        let events = stamper
            .stamp(
                vec![
                    payload(json!({"ts": 5})),
                    payload(json!({"ts": "1970-01-01T00:00:02Z"})),
                    payload(json!({"ts": "garbage"})),
                    payload(json!({})),
                ],
                &Envelope::default(),
                now,
            )
            .0;
        let times: Vec<u64> = events.iter().map(|e| e.timestamp.as_millis()).collect();
        assert_eq!(times, [5, 2000, 1_000_000, 1_000_000]);
        assert!(
            events
                .iter()
                .all(|e| e.ingest_time == now && e.metadata.source == "http")
        );
        assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    }

    #[test]
    fn pointer_fields_reach_nested_values() {
        let stamper = Stamper::new(Arc::default(), "http", "/meta/a~1b", "p");
        let events = stamper
            .stamp(
                vec![payload(json!({"meta": {"a/b": 77}}))],
                &Envelope {
                    priority: Priority::Critical,
                    ..Default::default()
                },
                Timestamp::from_millis(9),
            )
            .0;
        assert_eq!(events[0].timestamp.as_millis(), 77);
        assert_eq!(events[0].metadata.priority, Priority::Critical);
        assert_eq!(events[0].metadata.pipeline, "p");
    }
}
