//! Observability shared by every layer.
//!
//! - [`metrics`]: the Prometheus registry each crate registers its metrics in, and its encoding.
//! - [`http`]: the middleware that counts HTTP requests by route and status.
//! - [`health`]: component health reports shared with `/health`.
//! - [`process`]: process gauges (resident memory) read at scrape time.
//! - [`samples`]: the node's metrics read back as values (for `GET /api/overview`).
//! - [`logging`]: `tracing` setup (human or JSON).
#![warn(missing_docs)]

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod samples;

pub use metrics::{
    HistogramFamily, MetricsRegistry, latency_buckets, latency_histogram, to_prometheus_text,
};
