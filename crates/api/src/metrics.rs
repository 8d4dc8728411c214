//! `GET /metrics`: every registered metric. OpenMetrics text when the `Accept` header asks for
//! it (Prometheus does), else Prometheus text format 0.0.4 (curl, promtool, older agents).

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use colloquium_telemetry::to_prometheus_text;

use crate::ApiState;

const OPENMETRICS: &str = "application/openmetrics-text";

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text (or OpenMetrics when asked for)", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    state.store.refresh_metrics();
    state.process.refresh();
    let body = state.registry.encode();
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains(OPENMETRICS));
    if wants_openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        (
            [(header::CONTENT_TYPE, content_type)],
            to_prometheus_text(&body),
        )
            .into_response()
    }
}
