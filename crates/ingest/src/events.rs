//! Everything the ingest layer reports, registered once at startup.

use colloquium_telemetry::{HistogramFamily, MetricsRegistry, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Labels naming the source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// Source kind (`http`).
    pub source: &'static str,
}

/// Labels for rejected events.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// Source kind.
    pub source: &'static str,
    /// A short code from a fixed set (`invalid_json`, `too_large`, `overloaded`, ...).
    pub reason: &'static str,
}

/// Ingest metrics (`colloquium_ingest_*`).
#[derive(Clone)]
pub struct IngestMetrics {
    received: Family<SourceLabels, Counter>,
    accepted: Family<SourceLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    rejected_requests: Family<RejectLabels, Counter>,
    durable_latency: HistogramFamily<SourceLabels>,
    paused: Family<SourceLabels, Counter>,
}

impl IngestMetrics {
    /// Registers the ingest metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        registry.register("ingest", |r| {
            let m = Self {
                received: Family::default(),
                accepted: Family::default(),
                rejected: Family::default(),
                rejected_requests: Family::default(),
                durable_latency: HistogramFamily::new_with_constructor(latency_histogram),
                paused: Family::default(),
            };
            r.register(
                "events_received",
                "Events parsed from requests",
                m.received.clone(),
            );
            r.register(
                "events_accepted",
                "Events durably stored and acknowledged",
                m.accepted.clone(),
            );
            r.register(
                "events_rejected",
                "Events rejected, by reason (counted where the count is known)",
                m.rejected.clone(),
            );
            r.register(
                "requests_rejected",
                "Requests rejected, by reason",
                m.rejected_requests.clone(),
            );
            r.register(
                "durable_latency_seconds",
                "From request received to its events durable (the ack latency)",
                m.durable_latency.clone(),
            );
            r.register(
                "paused",
                "Times a connection stopped reading because a lane was full (backpressure)",
                m.paused.clone(),
            );
            m
        })
    }

    /// Records a connection of `source` pausing its reads for a full lane.
    pub fn paused(&self, source: &'static str) {
        self.paused.get_or_create(&SourceLabels { source }).inc();
    }

    /// Records `count` events parsed from a request.
    pub fn received(&self, source: &'static str, count: usize) {
        self.received
            .get_or_create(&SourceLabels { source })
            .inc_by(count as u64);
    }

    /// Records `count` events acknowledged after `seconds`.
    pub fn accepted(&self, source: &'static str, count: usize, seconds: f64) {
        let labels = SourceLabels { source };
        self.accepted.get_or_create(&labels).inc_by(count as u64);
        self.durable_latency.get_or_create(&labels).observe(seconds);
    }

    /// Records a rejected request carrying `events` events (0 when they could not be counted).
    pub fn rejected(&self, source: &'static str, reason: &'static str, events: usize) {
        let labels = RejectLabels { source, reason };
        self.rejected_requests.get_or_create(&labels).inc();
        self.rejected.get_or_create(&labels).inc_by(events as u64);
        tracing::debug!(source, reason, events, "request rejected");
    }
}
