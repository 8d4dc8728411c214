//! Sources: where events enter the node.
//!
//! - [`accept`]: the [`Accept`] handle a source hands batches to; it resolves once they are
//!   durable. The binary wires it to storage, so this crate never links RocksDB.
//! - [`body`]: request bodies (one object, an array, NDJSON) into payloads, with precise errors.
//! - [`stamp`]: payloads into [`Event`](colloquium_event::Event)s: id, event time, metadata.
//! - [`source`]: the [`Source`] and [`SourceConfig`] traits, their registry, and the HTTP
//!   routes sources share.
//! - [`frame`]: EventStream's binary frame: one frame, a TCP stream, a UDP datagram.
//! - [`tcp`]: the `tcp` source: EventStream frames over TCP, with optional acks.
//! - [`udp`]: the `udp` source: one frame per datagram, received in batches.
//! - [`topics`]: a frame source's topic → priority table (exact and MQTT patterns).
//! - [`http`]: the `http` source: `POST` on a path of the main listener.
//! - [`events`]: the metrics this crate reports.
#![warn(missing_docs)]

pub mod accept;
pub mod body;
pub mod events;
pub mod frame;
pub mod http;
pub mod numbers;
pub mod source;
pub mod stamp;
pub mod tcp;
pub mod topics;
pub mod udp;

pub use accept::{Accept, AcceptError, Durable};
pub use events::IngestMetrics;
pub use http::HttpConfig;
pub use source::{
    HttpRoutes, IngestSettings, Source, SourceBuildContext, SourceConfig, SourceContext,
    SourceError, SourceRegistry,
};
pub use stamp::Stamper;
pub use tcp::TcpConfig;
pub use udp::UdpConfig;
