//! The REST API served beside ingest on the node's listener.
//!
//! - [`query`]: `GET /api/events/{id}` and `GET /api/events` (time range, cursor paging).
//! - [`stream`]: `GET /api/events/stream`, an NDJSON replay in constant memory.
//! - [`anomalies`]: `GET /api/anomalies`, `/{id}`, `/high-score`, `/count`.
//! - [`pipelines`]: `GET /api/outputs`, and the dead-letter queue: list, replay, delete.
//! - [`results`]: what stages keep: `GET /api/results/{pipeline}/{stage}/{table}`, and
//!   `GET /api/windows` on top of it.
//! - [`ai`]: `GET /api/ai/costs` (AI spend, grouped), `GET /api/analyses/{event_id}`, and
//!   similar-event search (`GET /api/events/{id}/similar`, `POST /api/events/similar`).
//! - [`control`]: `GET /api/control` and `POST /api/control`, the control plane.
//! - [`health`]: `GET /health`, component status.
//! - [`metrics`]: `GET /metrics`, Prometheus text format.
//! - [`admin`]: `GET /admin/config` and `POST /admin/reload`, on the admin listener.
//! - [`routes`]: the route table (each route's scope) and the router builder that records it.
//! - [`error`]: [`ApiError`] and its one mapping to HTTP statuses.
#![warn(missing_docs)]

pub mod admin;
pub mod ai;
pub mod anomalies;
pub mod control;
pub mod error;
pub mod health;
pub mod metrics;
pub mod pipelines;
pub mod query;
pub mod results;
pub mod routes;
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use colloquium_storage::Store;
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::process::ProcessMetrics;

pub use error::ApiError;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The event store.
    pub store: Store,
    /// The node's metric registry.
    pub registry: MetricsRegistry,
    /// Process gauges, refreshed per scrape.
    pub process: ProcessMetrics,
    /// Free disk space below which `/health` reports `degraded`.
    pub min_free_disk: u64,
    /// Set once the node starts shutting down; `/health` then reports `unhealthy`.
    pub draining: Arc<AtomicBool>,
    /// Components that report their own health (each pipeline).
    pub board: colloquium_telemetry::health::HealthBoard,
    /// Health the sources report (a Kafka source: its assignment and lag).
    pub sources: colloquium_telemetry::health::HealthBoard,
    /// The priority lanes and the control plane.
    pub lanes: colloquium_router::Lanes,
    /// The AI gateway, when `ai:` has providers.
    pub ai: Option<Arc<colloquium_ai::Gateway>>,
    /// The `embed` stages' vectors, for similar-event search.
    pub similar: Arc<colloquium_ai::Indexes>,
}

/// The API's routes, before their state is given (see [`routes::ROUTES`] for their scopes).
pub fn routes() -> routes::Routes<ApiState> {
    routes::Routes::default()
        .get("/api/events", query::list)
        .get("/api/events/stream", stream::replay)
        .get("/api/events/{id}", query::get_one)
        .get("/api/events/{id}/similar", ai::similar_to_event)
        .post("/api/events/similar", ai::similar_to_text)
        .get("/api/outputs", pipelines::outputs)
        .get("/api/windows", results::windows)
        .get("/api/results/{pipeline}/{stage}/{table}", results::results)
        .get("/api/anomalies", anomalies::list)
        .get("/api/anomalies/high-score", anomalies::high_score)
        .get("/api/anomalies/count", anomalies::count)
        .get("/api/anomalies/{id}", anomalies::one)
        .get("/api/users/{user}/baseline", anomalies::baseline)
        .get("/api/dlq", pipelines::dead_letters)
        .post("/api/dlq/replay", pipelines::replay_many)
        .delete("/api/dlq/{id}", pipelines::delete)
        .post("/api/dlq/{id}/replay", pipelines::replay)
        .get("/api/ai/costs", ai::costs)
        .get("/api/analyses/{id}", ai::analysis)
        .get("/api/control", control::get)
        .post("/api/control", control::set)
        .get("/health", health::health)
        .get("/metrics", metrics::metrics)
}

/// Returns the API routes.
pub fn router(state: ApiState) -> Router {
    routes().into_router().with_state(state)
}
