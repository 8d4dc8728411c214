//! The event model shared by every layer. Plain data, no I/O.
//!
//! - [`id`]: [`EventId`], a ULID whose byte order is time order, and its generator.
//! - [`event`]: [`Event`], [`Metadata`] and [`Priority`].
//! - [`time`]: [`Timestamp`] in milliseconds and the accepted textual forms.
#![warn(missing_docs)]

pub mod event;
pub mod id;
pub mod time;

pub use event::{Event, Metadata, Priority, PriorityParseError};
pub use id::{EventId, IdGenerator, IdParseError};
pub use time::{Timestamp, TimestampParseError};
