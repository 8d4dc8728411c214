//! `GET /api/overview`: the whole node at a glance — sources, lanes and the control plane, the
//! pipeline graph (sources → pipelines → stages → sinks) with each stage's counts, dead letters
//! by reason, storage against its limits, AI spend — for the dashboard and `colloquium top`.
//!
//! Counts are totals since the node started, read back from the node's own metrics (so they
//! are exactly what `/metrics` exports); a client takes two overviews and divides the
//! differences by the difference of `at` for rates.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use colloquium_telemetry::samples::{Sample, parse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::ApiState;

/// The storage limits the node runs with (from `storage:` at start).
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageLimits {
    /// `storage.max_disk_usage`.
    pub max_disk_usage: Option<u64>,
    /// `storage.retention`.
    pub retention: Option<Duration>,
}

/// `GET /api/overview`.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Overview {
    /// When it was taken (epoch ms).
    pub at: u64,
    /// The config version running (1 at start, one more per reload).
    pub config_version: u64,
    /// The control plane and the lanes, as `GET /api/control` shows them.
    #[schema(value_type = Object)]
    pub control: Value,
    /// Each source with its event counts.
    pub sources: Vec<SourceView>,
    /// Each pipeline, its stages and sinks.
    pub pipelines: Vec<PipelineView>,
    /// Each sink.
    pub sinks: Vec<SinkView>,
    /// Events dead-lettered since start, by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Events that reached no pipeline, since start.
    pub no_route: u64,
    /// The store.
    pub storage: StorageView,
    /// AI spend today, when the node has providers.
    pub ai: Option<AiView>,
    /// Taps attached now.
    pub taps: usize,
}

/// A source.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct SourceView {
    /// Its name.
    pub name: String,
    /// Its type (`http`, `tcp`, `udp`, `kafka`).
    pub kind: String,
    /// Events received.
    pub received: u64,
    /// Events accepted (stored).
    pub accepted: u64,
    /// Events refused (bad input, full lanes).
    pub rejected: u64,
}

/// A pipeline.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct PipelineView {
    /// Its name.
    pub name: String,
    /// The sources it reads (empty: all).
    pub from: Vec<String>,
    /// Events routed to it.
    pub routed: u64,
    /// Whether it stopped (`on_error: stop_pipeline`).
    pub stopped: bool,
    /// Events in the log it has not processed (counted up to 100000).
    pub lag_events: u64,
    /// Age of the oldest of them.
    pub lag_seconds: f64,
    /// From ingest to the commit of the step that processed an event: sum and count (their
    /// differences give the mean over an interval).
    pub latency_seconds_sum: f64,
    /// See `latency_seconds_sum`.
    pub latency_count: u64,
    /// Its stages, in order.
    pub stages: Vec<StageView>,
    /// The sinks its outputs go to.
    pub sinks: Vec<String>,
}

/// A stage.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct StageView {
    /// Its id (metric label, tap point).
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Events given to it.
    pub events_in: u64,
    /// Events it emitted.
    pub events_out: u64,
    /// Events it failed on.
    pub failed: u64,
}

/// A sink.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct SinkView {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: String,
    /// Results it delivered.
    pub sent: u64,
}

/// The store against its limits.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct StorageView {
    /// Bytes on disk per column family.
    pub column_families: BTreeMap<String, u64>,
    /// Their sum.
    pub bytes: u64,
    /// `storage.max_disk_usage`, if set.
    pub max_disk_usage: Option<u64>,
    /// `storage.retention` in seconds, if set.
    pub retention_seconds: Option<u64>,
    /// Free and total bytes of the data directory's file system.
    pub disk_available: Option<u64>,
    /// See `disk_available`.
    pub disk_total: Option<u64>,
    /// Events stored since start.
    pub events_stored: u64,
}

/// AI spend today (UTC), in dollars.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct AiView {
    /// Settled spend.
    pub spent_today: f64,
    /// Open reservations (calls in flight, at their worst case).
    pub reserved_today: f64,
}

/// `GET /api/overview`.
#[utoipa::path(get, path = "/api/overview", tag = "operations",
    responses((status = 200, description = "The node at a glance: totals since start (take two for rates)", body = Overview)))]
pub async fn overview(State(state): State<ApiState>) -> Response {
    axum::Json(build(&state)).into_response()
}

/// Takes an overview now.
pub fn build(state: &ApiState) -> Overview {
    state.store.refresh_metrics();
    let samples = Samples(parse(&colloquium_telemetry::to_prometheus_text(
        &state.registry.encode(),
    )));
    let config = state.config.as_ref().map(|c| c.status());
    let config_json = config.as_ref().map(|c| &c.config);
    let section = |name: &str| config_json.and_then(|c| c.get(name)).cloned();
    let kind_of = |section: &Option<Value>, name: &str| {
        section
            .as_ref()
            .and_then(|s| s.get(name)?.get("type")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    };

    let (sources_config, sinks_config) = (section("sources"), section("sinks"));
    let mut source_names: Vec<String> = sources_config
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in samples.label_values("colloquium_ingest_events_received_total", "source") {
        if !source_names.contains(&name) {
            source_names.push(name);
        }
    }
    let sources = (source_names.into_iter())
        .map(|name| {
            let by = [("source", name.as_str())];
            SourceView {
                kind: kind_of(&sources_config, &name),
                received: samples.count("colloquium_ingest_events_received_total", &by),
                accepted: samples.count("colloquium_ingest_events_accepted_total", &by),
                rejected: samples.count("colloquium_ingest_events_rejected_total", &by),
                name,
            }
        })
        .collect();

    let pipelines = section("pipelines")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|p| pipeline_view(state, &samples, p))
        .collect();

    let sink_names: Vec<String> = sinks_config
        .as_ref()
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let sinks = (sink_names.into_iter())
        .map(|name| {
            let by = [("sink", name.as_str())];
            SinkView {
                kind: kind_of(&sinks_config, &name),
                sent: samples.count("colloquium_sink_events_total", &by),
                name,
            }
        })
        .collect();

    let mut dead_lettered = BTreeMap::new();
    for sample in samples.named("colloquium_dlq_events_total") {
        if let Some(reason) = sample.label("reason") {
            *dead_lettered.entry(reason.to_owned()).or_insert(0) += as_count(sample.value);
        }
    }

    let mut column_families = BTreeMap::new();
    for sample in samples.named("colloquium_storage_bytes") {
        if let Some(cf) = sample.label("cf") {
            column_families.insert(cf.to_owned(), as_count(sample.value));
        }
    }
    let dir = state.store.data_dir();
    let storage = StorageView {
        bytes: column_families.values().sum(),
        column_families,
        max_disk_usage: state.storage_limits.max_disk_usage,
        retention_seconds: state.storage_limits.retention.map(|r| r.as_secs()),
        disk_available: fs4::available_space(dir).ok(),
        disk_total: fs4::total_space(dir).ok(),
        events_stored: samples.count("colloquium_storage_events_stored_total", &[]),
    };
    let ai = state.ai.as_ref().map(|_| AiView {
        spent_today: samples.sum("colloquium_ai_spent_today_nanodollars") / 1e9,
        reserved_today: samples.sum("colloquium_ai_reserved_today_nanodollars") / 1e9,
    });

    Overview {
        at: colloquium_event::Timestamp::now().as_millis(),
        config_version: config.as_ref().map_or(1, |c| c.version),
        control: serde_json::to_value(state.lanes.state()).unwrap_or_default(),
        sources,
        pipelines,
        sinks,
        dead_lettered,
        no_route: samples.count("colloquium_router_no_route_total", &[]),
        storage,
        ai,
        taps: state.taps.opened(),
    }
}

fn pipeline_view(state: &ApiState, samples: &Samples, pipeline: &Value) -> PipelineView {
    let name = pipeline["name"].as_str().unwrap_or_default().to_owned();
    let strings = |v: &Value| -> Vec<String> {
        (v.as_array().into_iter().flatten())
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    // The ids the pipeline was built with (its metric labels); the config gives the types.
    let ids = state.taps.stages_of(&name).unwrap_or_default();
    let kinds: Vec<String> = (pipeline["stages"].as_array().into_iter().flatten())
        .map(|s| s["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    let stages = (ids.iter().enumerate())
        .map(|(i, id)| {
            let count = |outcome| {
                samples.count(
                    "colloquium_pipeline_events_total",
                    &[("pipeline", &name), ("stage", id), ("outcome", outcome)],
                )
            };
            StageView {
                id: id.to_string(),
                kind: kinds.get(i).cloned().unwrap_or_default(),
                events_in: count("in"),
                events_out: count("out"),
                failed: count("failed"),
            }
        })
        .collect();
    let by = [("pipeline", name.as_str())];
    PipelineView {
        from: strings(&pipeline["from"]),
        routed: samples.count(
            "colloquium_router_events_total",
            &[("pipeline", &name), ("result", "matched")],
        ),
        stopped: samples.count("colloquium_pipeline_stopped", &by) > 0,
        lag_events: samples.count("colloquium_pipeline_lag_events", &by),
        lag_seconds: samples.value("colloquium_pipeline_lag_seconds", &by),
        latency_seconds_sum: samples.value("colloquium_pipeline_latency_seconds_sum", &by),
        latency_count: samples.count("colloquium_pipeline_latency_seconds_count", &by),
        stages,
        sinks: strings(&pipeline["sinks"]),
        name,
    }
}

fn as_count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

/// The samples, looked up by name and labels.
struct Samples(Vec<Sample>);

impl Samples {
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// The sum of the samples of `name` with every label of `by` (0 when none).
    fn value(&self, name: &str, by: &[(&str, &str)]) -> f64 {
        self.named(name)
            .filter(|s| by.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }

    fn count(&self, name: &str, by: &[(&str, &str)]) -> u64 {
        as_count(self.value(name, by))
    }

    fn sum(&self, name: &str) -> f64 {
        self.value(name, &[])
    }

    /// The distinct values of `label` among the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .named(name)
            .filter_map(|s| s.label(label).map(str::to_owned))
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    }
}
