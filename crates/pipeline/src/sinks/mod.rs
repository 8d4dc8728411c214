//! Built-in sinks, one file each. Adding one: a file implementing [`SinkConfig`] and
//! [`Sink`](crate::Sink), and one line in the binary's `registry.rs`.
//!
//! [`SinkConfig`]: crate::SinkConfig

pub mod dlq;
pub mod file;
pub mod http;
pub mod stdout;
pub mod store;
