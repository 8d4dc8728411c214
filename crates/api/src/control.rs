//! `GET /api/control` (the control plane's level, why, and every lane's depth and shed
//! counts) and `POST /api/control` (a manual level with an expiry, or ending it).

use std::time::Duration;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use colloquium_router::Level;
use serde::Deserialize;

use crate::{ApiError, ApiState};

/// Longest a manual level may be held.
const MAX_OVERRIDE: Duration = Duration::from_secs(24 * 60 * 60);

/// `POST /api/control` body: `{"level": "DEGRADED", "duration": "5m"}` holds a level;
/// `{"level": null}` (or `{}`) ends the override.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// The level to hold (`HEALTHY` … `EMERGENCY`); absent or null ends the override.
    #[schema(value_type = Option<String>, example = "DEGRADED")]
    pub level: Option<Level>,
    /// For how long (`30s`, `5m`, up to `24h`); required with a level.
    pub duration: Option<String>,
}

/// `GET /api/control`.
#[utoipa::path(get, path = "/api/control", tag = "control",
    responses((status = 200, description = "The level, why, and every lane's depth and shed counts", body = crate::openapi::Record)))]
pub async fn get(State(state): State<ApiState>) -> Response {
    axum::Json(state.lanes.state()).into_response()
}

/// `POST /api/control`.
#[utoipa::path(post, path = "/api/control", tag = "control", request_body = OverrideBody,
    responses((status = 200, description = "The control plane with the override", body = crate::openapi::Record),
        (status = 400, description = "The body is malformed", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = String),
        (status = 415, description = "Not `application/json`", body = String)))]
pub async fn set(
    State(state): State<ApiState>,
    body: Result<axum::Json<OverrideBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let axum::Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let held = match body.level {
        None => None,
        Some(level) => {
            let text = body.duration.ok_or_else(|| {
                ApiError::BadRequest("duration: required with a level (e.g. \"5m\")".into())
            })?;
            let duration = humantime::parse_duration(&text)
                .map_err(|e| ApiError::BadRequest(format!("duration: {e}")))?;
            if duration.is_zero() || duration > MAX_OVERRIDE {
                return Err(ApiError::BadRequest(
                    "duration: must be more than 0 and at most 24h".into(),
                ));
            }
            Some((level, duration))
        }
    };
    state.lanes.set_override(held);
    Ok(axum::Json(state.lanes.state()).into_response())
}
