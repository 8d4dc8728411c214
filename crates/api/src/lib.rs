//! The REST API served beside ingest on the node's listener.
//!
//! - [`query`]: `GET /api/events/{id}` and `GET /api/events` (time range, cursor paging).
//! - [`stream`]: `GET /api/events/stream`, an NDJSON replay in constant memory.
//! - [`tap`]: `GET /api/tap`, the events passing a stage or the log, live (after an optional replay).
//! - [`anomalies`]: `GET /api/anomalies`, `/{id}`, `/high-score`, `/count`.
//! - [`pipelines`]: `GET /api/outputs`, and the dead-letter queue: list, replay, delete.
//! - [`results`]: what stages keep: `GET /api/results/{pipeline}/{stage}/{table}`, and
//!   `GET /api/windows` on top of it.
//! - [`ai`]: `GET /api/ai/costs` (AI spend, grouped), `GET /api/analyses/{event_id}`, and
//!   similar-event search (`GET /api/events/{id}/similar`, `POST /api/events/similar`).
//! - [`control`]: `GET /api/control` and `POST /api/control`, the control plane.
//! - [`health`]: `GET /health`, component status.
//! - [`overview`]: `GET /api/overview`, the node at a glance (the dashboard's and `top`'s).
//! - [`metrics`]: `GET /metrics`, Prometheus text format.
//! - [`admin`]: `GET /admin/config` and `POST /admin/reload`, on the admin listener.
//! - [`backup`]: `POST /admin/backup` and `GET /admin/backup`, online backups.
//! - [`ui`]: `GET /` and `GET /ui/{file}`, the web dashboard (assets embedded in the binary).
//! - [`openapi`]: `GET /api/openapi.json`, the OpenAPI 3.1 description generated from the handlers.
//! - [`routes`]: the route table (each route's scope) and the router builder that records it.
//! - [`error`]: [`ApiError`] and its one mapping to HTTP statuses.
#![warn(missing_docs)]

pub mod admin;
pub mod ai;
pub mod anomalies;
pub mod backup;
pub mod control;
pub mod error;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod overview;
pub mod pipelines;
pub mod query;
pub mod results;
pub mod routes;
pub mod stream;
pub mod tap;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use colloquium_storage::Store;
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::process::ProcessMetrics;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// Every stage's tap point.
    pub taps: Arc<colloquium_pipeline::Taps>,
    /// The node's event ids (a log tap's seam between history and live).
    pub ids: Arc<colloquium_event::IdGenerator>,
    /// The node's config (the pipeline graph of `/api/overview`); `None` outside a node.
    pub config: Option<Arc<dyn admin::ConfigControl>>,
    /// The storage limits `/api/overview` shows.
    pub storage_limits: overview::StorageLimits,
    /// `GET /api/openapi.json`'s body ([`description`], serialized once).
    pub openapi: Arc<str>,
}

/// The API's routes with their OpenAPI description, before their state is given (see
/// [`routes::ROUTES`] for their scopes).
pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(query::list))
        .routes(routes!(stream::replay))
        .routes(routes!(tap::tap))
        .routes(routes!(query::get_one))
        .routes(routes!(ai::similar_to_event))
        .routes(routes!(ai::similar_to_text))
        .routes(routes!(pipelines::outputs))
        .routes(routes!(results::windows))
        .routes(routes!(results::results))
        .routes(routes!(anomalies::list))
        .routes(routes!(anomalies::high_score))
        .routes(routes!(anomalies::count))
        .routes(routes!(anomalies::one))
        .routes(routes!(anomalies::baseline))
        .routes(routes!(pipelines::dead_letters))
        .routes(routes!(pipelines::replay_many))
        .routes(routes!(pipelines::delete))
        .routes(routes!(pipelines::replay))
        .routes(routes!(ai::costs))
        .routes(routes!(ai::analysis))
        .routes(routes!(control::get))
        .routes(routes!(control::set))
        .routes(routes!(health::health))
        .routes(routes!(overview::overview))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(ui::index))
        .routes(routes!(ui::file))
}

/// The OpenAPI description of both listeners' routes, with the HTTP sources at
/// `ingest_paths` and the admin routes at `admin_url`, as `GET /api/openapi.json` serves it.
pub fn description(ingest_paths: &[&str], admin_url: &str) -> utoipa::openapi::OpenApi {
    let mut api = routes().into_openapi();
    let mut admin = admin::routes().into_openapi();
    // The admin routes are served by their own listener.
    for item in admin.paths.paths.values_mut() {
        item.servers = Some(vec![utoipa::openapi::Server::new(admin_url)]);
    }
    api.merge(admin);
    let table = routes::table(ingest_paths.iter().copied());
    openapi::complete(api, &table, ingest_paths.iter().copied())
}

/// `GET /api/openapi.json`: this description.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of every route", body = openapi::Record)))]
async fn openapi_json(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        state.openapi.as_bytes().to_vec(),
    )
        .into_response()
}

/// Returns the API routes.
pub fn router(state: ApiState) -> Router {
    Router::from(routes()).with_state(state)
}
