//! The admin routes, served on their own listener (`server.admin_listen`, 127.0.0.1 by
//! default): `GET /admin/config` shows the active config and the last reload; `POST
//! /admin/reload` reloads the config file and answers with the outcome; backups
//! ([`crate::backup`]).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use colloquium_event::Timestamp;
use serde::Serialize;
use tokio::sync::oneshot;

/// The node's config as the admin routes see it: reloaded by whoever implements this.
pub trait ConfigControl: Send + Sync + 'static {
    /// The active config and the outcome of the last reload.
    fn status(&self) -> ConfigStatus;
    /// Asks for a reload; the answer arrives once it is done (or dropped if the node stops).
    fn reload(&self) -> oneshot::Receiver<ReloadReport>;
}

/// `GET /admin/config`.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigStatus {
    /// The config file; `None` when the node runs on the embedded defaults (no reload).
    pub file: Option<PathBuf>,
    /// 1 at start, one more per applied reload.
    pub version: u64,
    /// Hash of the loaded config (scripts from files included): equal means unchanged.
    pub digest: String,
    /// When this version was applied.
    pub loaded_at: Timestamp,
    /// The active pipelines, in config order.
    pub pipelines: Vec<String>,
    /// The active config, as loaded (`${ENV}` substituted, script files read).
    pub config: serde_json::Value,
    /// The last reload attempt, whatever its outcome.
    pub last_reload: Option<ReloadReport>,
    /// The last reload that failed; kept after later successes, for the record.
    pub last_error: Option<ReloadReport>,
}

/// How a reload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadResult {
    /// The new config runs.
    Ok,
    /// The config loaded equal to the active one: nothing was restarted.
    Unchanged,
    /// The new config was rejected; the old one keeps running.
    Error,
}

impl ReloadResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Error => "error",
        }
    }
}

/// One reload attempt.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    /// How it ended.
    pub result: ReloadResult,
    /// What asked for it: `file`, `sighup` or `admin`.
    pub cause: String,
    /// When it ended.
    pub at: Timestamp,
    /// The active version afterwards.
    pub version: u64,
    /// Pipelines added, removed and changed by it.
    pub added: Vec<String>,
    /// See `added`.
    pub removed: Vec<String>,
    /// See `added`.
    pub changed: Vec<String>,
    /// Sections that changed but only take effect after a restart (`server`, `storage`,
    /// `ingest`).
    pub restart_required: Vec<String>,
    /// Why it was rejected, one problem per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The config and its reloads.
    pub control: Arc<dyn ConfigControl>,
    /// The store's backups.
    pub backups: crate::backup::Backups,
}

/// The admin routes with their OpenAPI description, before their state is given.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AdminState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(config))
        .routes(utoipa_axum::routes!(reload))
        .routes(utoipa_axum::routes!(
            crate::backup::create,
            crate::backup::status
        ))
}

/// Returns the admin routes.
pub fn router(state: AdminState) -> Router {
    Router::from(routes()).with_state(state)
}

#[utoipa::path(get, path = "/admin/config", tag = "admin",
    responses((status = 200, description = "The active config and the last reload", body = crate::openapi::Record)))]
async fn config(State(state): State<AdminState>) -> Json<ConfigStatus> {
    Json(state.control.status())
}

#[utoipa::path(post, path = "/admin/reload", tag = "admin",
    responses((status = 200, description = "Reloaded, or unchanged", body = crate::openapi::Record),
        (status = 409, description = "The node runs on the embedded defaults", body = crate::openapi::ErrorBody),
        (status = 422, description = "The new config was rejected", body = crate::openapi::Record),
        (status = 503, description = "The node is shutting down", body = crate::openapi::ErrorBody)))]
async fn reload(State(AdminState { control, .. }): State<AdminState>) -> Response {
    if control.status().file.is_none() {
        let error = "the node runs on the embedded defaults (no -c FILE): nothing to reload";
        return (
            StatusCode::CONFLICT,
            Json(serde_json::json!({ "error": error, "reason": "no_config_file" })),
        )
            .into_response();
    }
    match control.reload().await {
        Ok(report) => {
            let status = match report.result {
                ReloadResult::Ok | ReloadResult::Unchanged => StatusCode::OK,
                ReloadResult::Error => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (status, Json(report)).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": "the node is shutting down", "reason": "shutting_down" })),
        )
            .into_response(),
    }
}
