//! What a model reads of one event: the fields StreamGuard's parser accepts, read at JSON
//! pointers into the event's data, shared by both models.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The event types StreamGuard's parser accepts.
pub const EVENT_TYPES: [&str; 5] = [
    "auth_attempt",
    "network_connection",
    "file_access",
    "process_execution",
    "dns_query",
];

/// The statuses it accepts (a missing or null status is `success`).
pub const STATUSES: [&str; 4] = ["success", "failed", "blocked", "pending"];

/// Where each field is read from (JSON pointers into the event's data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// The entity whose baseline it is.
    pub entity: String,
    /// The event's id (required, a string: the reference refuses events without one).
    pub id: String,
    /// Event time, epoch ms (a whole number ≥ 0).
    pub timestamp: String,
    /// The event type.
    pub event_type: String,
    /// The source IP (any string).
    pub source_ip: String,
    /// The status (optional).
    pub status: String,
    /// The place (optional).
    pub place: String,
    /// The threat score (required, a number; not used in the score).
    pub threat_score: String,
    /// Accepted event types (empty: any string).
    pub event_types: Vec<String>,
    /// Accepted statuses besides a missing one (empty: any string).
    pub statuses: Vec<String>,
    /// The status that counts as a failure.
    pub failed: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            entity: "/user".into(),
            id: "/event_id".into(),
            timestamp: "/timestamp".into(),
            event_type: "/event_type".into(),
            source_ip: "/source_ip".into(),
            status: "/status".into(),
            place: "/metadata/geo_location".into(),
            threat_score: "/threat_score".into(),
            event_types: EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            statuses: STATUSES.iter().map(|s| (*s).to_owned()).collect(),
            failed: "failed".into(),
        }
    }
}

/// Why an event cannot be scored (the reference's parser refuses it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What the detector reads of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// The entity.
    pub entity: &'a str,
    /// The event's id.
    pub id: &'a str,
    /// Event time, epoch ms.
    pub time_ms: u64,
    /// The UTC hour of day, 0–23.
    pub hour: usize,
    /// The source IP.
    pub ip: &'a str,
    /// The place (`""`: none).
    pub place: &'a str,
    /// The event type.
    pub kind: &'a str,
    /// Whether its status is the failure status.
    pub failed: bool,
    /// The threat score.
    pub threat: f64,
}

/// `data`'s value at the JSON pointer `pointer`, unescaping (`~1`, `~0`) only the tokens that
/// need it: `Value::pointer` allocates for every token, a fifth of the stage's time.
fn lookup<'a>(data: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut value = data;
    for token in pointer.strip_prefix('/')?.split('/') {
        value = match value {
            Value::Object(map) if token.contains('~') => {
                map.get(&token.replace("~1", "/").replace("~0", "~"))?
            }
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn at<'a>(data: &'a Value, pointer: &str) -> Option<&'a Value> {
    lookup(data, pointer).filter(|v| !v.is_null())
}

impl<'a> Observation<'a> {
    /// Reads `data` as StreamGuard's parser does (`anomaly-scoring.md` §1), through `fields`.
    pub fn parse(data: &'a Value, fields: &'a Fields) -> Result<Self, ParseError> {
        let string = |pointer: &str, name: &str| -> Result<&'a str, ParseError> {
            match lookup(data, pointer) {
                Some(Value::String(s)) => Ok(s.as_str()),
                None => Err(ParseError(format!("{name} ({pointer}) is missing"))),
                Some(other) => Err(ParseError(format!(
                    "{name} ({pointer}) must be a string, not {}",
                    colloquium_event::json_kind(other)
                ))),
            }
        };
        let id = string(&fields.id, "event id")?;
        let timestamp = match lookup(data, &fields.timestamp) {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                ParseError(format!(
                    "timestamp ({}) must be whole milliseconds from 0",
                    fields.timestamp
                ))
            })?,
            None => {
                return Err(ParseError(format!(
                    "timestamp ({}) is missing",
                    fields.timestamp
                )));
            }
            Some(other) => {
                return Err(ParseError(format!(
                    "timestamp ({}) must be a number, not {}",
                    fields.timestamp,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        let kind = string(&fields.event_type, "event type")?;
        if !fields.event_types.is_empty() && !fields.event_types.iter().any(|t| t == kind) {
            return Err(ParseError(format!("unknown event type `{kind}`")));
        }
        let ip = string(&fields.source_ip, "source IP")?;
        let entity = string(&fields.entity, "entity")?;
        let status = match at(data, &fields.status) {
            None => "success",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(ParseError(format!(
                    "status ({}) must be a string, not {}",
                    fields.status,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        if at(data, &fields.status).is_some()
            && !fields.statuses.is_empty()
            && !fields.statuses.iter().any(|s| s == status)
        {
            return Err(ParseError(format!("unknown status `{status}`")));
        }
        let threat = match lookup(data, &fields.threat_score) {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            None => {
                return Err(ParseError(format!(
                    "threat score ({}) is missing",
                    fields.threat_score
                )));
            }
            Some(other) => {
                return Err(ParseError(format!(
                    "threat score ({}) must be a number, not {}",
                    fields.threat_score,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        let place = match at(data, &fields.place) {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(ParseError(format!(
                    "place ({}) must be a string, not {}",
                    fields.place,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        Ok(Observation {
            entity,
            id,
            time_ms: timestamp,
            hour: usize::try_from((timestamp / 3_600_000) % 24).unwrap_or(0),
            ip,
            place,
            kind,
            failed: status == fields.failed,
            threat,
        })
    }
}
