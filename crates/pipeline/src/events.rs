//! Everything the pipelines report, registered once when they start.
//!
//! - `colloquium_pipeline_events_total{pipeline, stage, outcome="in|out|failed"}` per stage;
//! - `colloquium_pipeline_latency_seconds{pipeline, lane}`: from an event's ingest to the commit of
//!   the step that processed it (the ingest-to-sink latency);
//! - `colloquium_pipeline_read_events_total{source="memory|log"}`: where workers got their
//!   events (memory once caught up with the log);
//! - `colloquium_pipeline_step_seconds`: how long each committed step took (read the log,
//!   process, send, commit);
//! - `colloquium_pipeline_lag_seconds{pipeline}` and `colloquium_pipeline_lag_events{pipeline}`:
//!   the age of the oldest event in the log the pipeline has not processed, and how many there
//!   are (up to 100,000), measured every second from the log head whether steps succeed or
//!   not; `colloquium_pipeline_stopped{pipeline}`;
//! - `colloquium_router_events_total{pipeline, result="matched|route_error"}` and
//!   `colloquium_router_no_route_total`;
//! - `colloquium_sink_events_total{sink, result="sent"}` and
//!   `colloquium_sink_batch_events{sink}` (events per send).
//!
//! Dead letters are counted by reason by the store (`colloquium_dlq_events_total`).

use std::sync::atomic::AtomicU64;

use colloquium_telemetry::{HistogramFamily, MetricsRegistry, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// `{pipeline, stage, outcome}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The pipeline.
    pub pipeline: String,
    /// The stage label, e.g. `transform#0`.
    pub stage: String,
    /// `in`, `out` or `failed`.
    pub outcome: &'static str,
}

/// `{pipeline}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    /// The pipeline.
    pub pipeline: String,
}

/// `{pipeline, lane}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The pipeline.
    pub pipeline: String,
    /// The event's priority lane.
    pub lane: &'static str,
}

/// `{pipeline, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The pipeline.
    pub pipeline: String,
    /// `matched` or `route_error`.
    pub result: &'static str,
}

/// `{source}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    /// `memory` or `log`.
    pub source: &'static str,
}

/// `{sink}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name.
    pub sink: String,
}

/// `{pipeline, stage, name}`: a figure a stage reports about itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageMetricLabels {
    /// The pipeline.
    pub pipeline: String,
    /// The stage label.
    pub stage: String,
    /// What it counts, e.g. `open_keys`.
    pub name: &'static str,
}

/// The pipelines' metrics.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub(crate) stage_events: Family<StageLabels, Counter>,
    pub(crate) stage_gauge: Family<StageMetricLabels, Gauge>,
    pub(crate) stage_total: Family<StageMetricLabels, Counter>,
    pub(crate) stage_seconds: HistogramFamily<StageMetricLabels>,
    pub(crate) stage_score: HistogramFamily<StageMetricLabels>,
    pub(crate) latency: HistogramFamily<LatencyLabels>,
    pub(crate) step: Histogram,
    read: Family<ReadLabels, Counter>,
    pub(crate) lag: Family<PipelineLabels, Gauge<f64, AtomicU64>>,
    pub(crate) lag_events: Family<PipelineLabels, Gauge>,
    pub(crate) stopped: Family<PipelineLabels, Gauge>,
    pub(crate) routed: Family<RouteLabels, Counter>,
    pub(crate) no_route: Counter,
    pub(crate) sink_events: Family<SinkLabels, Counter>,
    pub(crate) sink_batch: Family<SinkLabels, Histogram, fn() -> Histogram>,
}

/// Tenths from 0.1 to 1, for scores in [0, 1].
fn score_histogram() -> Histogram {
    Histogram::new([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
}

fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 8))
}

impl PipelineMetrics {
    /// Counts `count` events read from `source` (`memory` or `log`).
    pub(crate) fn read(&self, source: &'static str, count: usize) {
        let labels = ReadLabels { source };
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.read.get_or_create(&labels).inc_by(count);
    }

    /// Registers the pipeline, router and sink metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = PipelineMetrics {
            stage_events: Family::default(),
            stage_gauge: Family::default(),
            stage_total: Family::default(),
            stage_seconds: HistogramFamily::new_with_constructor(latency_histogram),
            stage_score: HistogramFamily::new_with_constructor(score_histogram),
            latency: HistogramFamily::new_with_constructor(latency_histogram),
            step: latency_histogram(),
            read: Family::default(),
            lag: Family::default(),
            lag_events: Family::default(),
            stopped: Family::default(),
            routed: Family::default(),
            no_route: Counter::default(),
            sink_events: Family::default(),
            sink_batch: Family::new_with_constructor(batch_histogram),
        };
        registry.register("pipeline", |r| {
            r.register(
                "events",
                "Events into, out of, and failed in each stage",
                m.stage_events.clone(),
            );
            r.register(
                "stage_value",
                "What a stage reports about itself now (a window stage: open_keys, open_windows, watermark_ms)",
                m.stage_gauge.clone(),
            );
            r.register(
                "stage",
                "What a stage counts about itself (a window stage: late, max_keys_exceeded, max_windows_per_key_exceeded, early_firings)",
                m.stage_total.clone(),
            );
            r.register(
                "stage_seconds",
                "Durations a stage measures (a window stage: emission_delay, from the watermark passing a window's end to its result)",
                m.stage_seconds.clone(),
            );
            r.register(
                "stage_score",
                "Scores a stage gives (an anomaly stage: anomaly_score, every scored event's score)",
                m.stage_score.clone(),
            );
            r.register(
                "latency_seconds",
                "From an event's ingest to the commit of the step that processed it",
                m.latency.clone(),
            );
            r.register(
                "read_events",
                "Events the workers read, from memory (caught up) or from the log",
                m.read.clone(),
            );
            r.register(
                "step_seconds",
                "How long a worker's step takes: read, process, send, commit",
                m.step.clone(),
            );
            r.register(
                "lag_seconds",
                "Age of the oldest event in the log the pipeline has not processed (0: caught up)",
                m.lag.clone(),
            );
            r.register(
                "lag_events",
                "Events in the log the pipeline has not processed (counted up to 100000)",
                m.lag_events.clone(),
            );
            r.register(
                "stopped",
                "1 when the pipeline stopped (on_error: stop_pipeline)",
                m.stopped.clone(),
            );
        });
        registry.register("router", |r| {
            r.register("events", "Routing outcomes per pipeline", m.routed.clone());
            r.register("no_route", "Events no pipeline took", m.no_route.clone());
        });
        registry.register("sink", |r| {
            r.register(
                "events",
                "Results delivered by each sink",
                m.sink_events.clone(),
            );
            r.register(
                "batch_events",
                "Results per sink send",
                m.sink_batch.clone(),
            );
        });
        m
    }
}
