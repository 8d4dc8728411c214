//! The event model shared by every layer. Plain data, no I/O.
//!
//! - [`id`]: [`EventId`], a ULID whose byte order is time order, and its generator.
//! - [`event`]: [`Event`], [`Metadata`] and [`Priority`].
//! - [`lane`]: [`Lane`], the three priority lanes, and [`LaneMap`] from priority to lane.
//! - [`time`]: [`Timestamp`] in milliseconds and the accepted textual forms.
//! - [`position`]: [`Position`]s of sources that read a replayable log (Kafka offsets), and
//!   the [`PositionedBatch`] that carries them with its events.
//! - [`reason`]: [`Reason`], why an event was dead-lettered, and its [`Fault`].
#![warn(missing_docs)]

pub mod event;
pub mod id;
pub mod lane;
pub mod position;
pub mod reason;
pub mod time;

pub use event::{Event, KafkaOrigin, Metadata, Priority, PriorityParseError};
pub use id::{EventId, IdGenerator, IdParseError, Reservation};
pub use lane::{Lane, LaneMap};
pub use position::{BatchChain, Position, PositionedBatch};
pub use reason::{Fault, Reason, UnknownReason};
pub use time::{Timestamp, TimestampParseError};

/// Names a JSON value's kind with its article ("a number", "an object", "null"), for messages.
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
