//! Sources: where events enter the node.
//!
//! - [`accept`]: the [`Accept`] handle a source hands batches to; it resolves once they are
//!   durable. The binary wires it to storage, so this crate never links RocksDB.
//! - [`body`]: request bodies (one object, an array, NDJSON) into payloads, with precise errors.
//! - [`stamp`]: payloads into [`Event`](colloquium_event::Event)s: id, event time, metadata.
//! - [`http`]: `POST /events`.
//! - [`events`]: the metrics this crate reports.
#![warn(missing_docs)]

pub mod accept;
pub mod body;
pub mod events;
pub mod http;
pub mod numbers;
pub mod stamp;

pub use accept::{Accept, AcceptError};
pub use events::IngestMetrics;
pub use http::{HttpSource, HttpSourceConfig};
pub use stamp::Stamper;
