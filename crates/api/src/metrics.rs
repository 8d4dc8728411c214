//! `GET /metrics`: every registered metric in Prometheus (OpenMetrics) text format.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::ApiState;

/// `GET /metrics`.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    state.store.refresh_metrics();
    state.process.refresh();
    let body = state.registry.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
