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
pub mod stream;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{delete, get, post};
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

/// Returns the API routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/events", get(query::list))
        .route("/api/events/stream", get(stream::replay))
        .route("/api/events/{id}", get(query::get_one))
        .route("/api/events/{id}/similar", get(ai::similar_to_event))
        .route("/api/events/similar", post(ai::similar_to_text))
        .route("/api/outputs", get(pipelines::outputs))
        .route("/api/windows", get(results::windows))
        .route(
            "/api/results/{pipeline}/{stage}/{table}",
            get(results::results),
        )
        .route("/api/anomalies", get(anomalies::list))
        .route("/api/anomalies/high-score", get(anomalies::high_score))
        .route("/api/anomalies/count", get(anomalies::count))
        .route("/api/anomalies/{id}", get(anomalies::one))
        .route("/api/users/{user}/baseline", get(anomalies::baseline))
        .route("/api/dlq", get(pipelines::dead_letters))
        .route("/api/dlq/replay", post(pipelines::replay_many))
        .route("/api/dlq/{id}", delete(pipelines::delete))
        .route("/api/dlq/{id}/replay", post(pipelines::replay))
        .route("/api/ai/costs", get(ai::costs))
        .route("/api/analyses/{id}", get(ai::analysis))
        .route("/api/control", get(control::get).post(control::set))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}
