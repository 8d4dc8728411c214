//! [`Event`]: what every source produces, storage keeps and stages transform.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{EventId, Timestamp};

/// One event: a JSON object plus the facts the node records about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unique and time-ordered by ingest time.
    pub id: EventId,
    /// Event time: from the payload's timestamp field when present and valid, else ingest time.
    pub timestamp: Timestamp,
    /// When the node received the event.
    pub ingest_time: Timestamp,
    /// The payload, always a JSON object.
    pub data: Map<String, Value>,
    /// Where the event came from and how to treat it.
    pub metadata: Metadata,
}

impl Event {
    /// An event ingested (and timestamped) at `at`, with the smallest id of that millisecond:
    /// deterministic, for config tests (`colloquium test`) and for tests and benchmarks.
    pub fn at(at: Timestamp, data: Map<String, Value>, metadata: Metadata) -> Self {
        Event {
            id: EventId::min_at(at),
            timestamp: at,
            ingest_time: at,
            data,
            metadata,
        }
    }

    /// The value at an RFC 6901 JSON pointer into the data (`/customer/id`); `None` when there
    /// is none (the empty pointer, the whole data, is not a single value here).
    pub fn data_pointer(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // Unescaping allocates: only for the rare key that needs it.
        let value = if first.contains('~') {
            self.data
                .get(&first.replace("~1", "/").replace("~0", "~"))?
        } else {
            self.data.get(first)?
        };
        if tail.is_empty() {
            Some(value)
        } else {
            value.pointer(tail)
        }
    }

    /// The stream metadata a Computo script reads as input 1 (`["get", ["$inputs"],
    /// "/1/event_id"]`), as seen by `pipeline`: `event_id`, `timestamp` and `ingest_time` (epoch
    /// ms), `source`, `pipeline`, `priority`, `retry_count`, and `routing_key` and `topic`
    /// (`null` when unset); for an event consumed from Kafka also `kafka` (`{topic, partition,
    /// offset, key, timestamp, headers}`: `"/1/kafka/partition"`).
    pub fn script_metadata(&self, pipeline: &str) -> Value {
        let m = &self.metadata;
        let mut meta = serde_json::json!({
            "event_id": self.id.to_string(),
            "timestamp": self.timestamp.as_millis(),
            "ingest_time": self.ingest_time.as_millis(),
            "source": m.source,
            "pipeline": pipeline,
            "priority": m.priority.as_str(),
            "retry_count": m.retry_count,
            "routing_key": m.routing_key,
            "topic": m.topic,
        });
        if let (Some(kafka), Value::Object(map)) = (&m.kafka, &mut meta) {
            map.insert(
                "kafka".into(),
                serde_json::to_value(kafka).unwrap_or(Value::Null),
            );
        }
        meta
    }
}

/// Facts about an event that are not part of its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The source kind that received it, such as `http`.
    pub source: String,
    /// The pipeline it belongs to.
    pub pipeline: String,
    /// A key that routes related events together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// How many times processing was retried.
    #[serde(default)]
    pub retry_count: u32,
    /// Its lane.
    #[serde(default)]
    pub priority: Priority,
    /// A topic the producer gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Where a Kafka source read it (boxed: most events have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<Box<KafkaOrigin>>,
}

/// Where a Kafka source read an event: `metadata.kafka`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaOrigin {
    /// The message's topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key, when it has one (base64 when not UTF-8: see `binary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The message's timestamp in Unix milliseconds, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    /// Its headers, by name (values base64 when not UTF-8: see `binary`; a header without a
    /// value is an empty string; of repeated names the last wins).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Which of `key` and the headers (by name) hold base64 because the bytes were not UTF-8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binary: Vec<String>,
}

impl Metadata {
    /// Returns metadata for an event just received by `source` for `pipeline`: priority
    /// `medium`, no retries, no routing key or topic.
    pub fn new(source: impl Into<String>, pipeline: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            pipeline: pipeline.into(),
            routing_key: None,
            retry_count: 0,
            priority: Priority::default(),
            topic: None,
            kafka: None,
        }
    }
}

/// Priority lanes, most urgent first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Never dropped, served first.
    Critical,
    /// Served before medium.
    High,
    /// The default.
    #[default]
    Medium,
    /// Served after medium.
    Low,
    /// Bulk loads; served last.
    Batch,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Medium,
        Priority::Low,
        Priority::Batch,
    ];

    /// Its position in [`Priority::ALL`], for per-priority arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Returns the lowercase name used in JSON, YAML and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
            Priority::Batch => "batch",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a priority.
#[derive(Debug, thiserror::Error)]
#[error("invalid priority `{input}`: expected one of critical, high, medium, low, batch")]
pub struct PriorityParseError {
    input: String,
}

impl FromStr for Priority {
    type Err = PriorityParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| PriorityParseError {
                input: s.chars().take(64).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdGenerator;
    use serde_json::json;

    #[test]
    fn event_json_round_trips() {
        let id = IdGenerator::default().next_ids(Timestamp::from_millis(7), 1)[0];
        let event = Event {
            id,
            timestamp: Timestamp::from_millis(5),
            ingest_time: Timestamp::from_millis(7),
            data: json!({"a": [1, 2]}).as_object().cloned().unwrap(),
            metadata: Metadata {
                priority: Priority::High,
                topic: Some("orders".into()),
                ..Metadata::new("http", "default")
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.contains(r#""priority":"high""#));
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }

    #[test]
    fn priority_parses_its_names_only() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        assert!("urgent".parse::<Priority>().is_err());
    }
}
