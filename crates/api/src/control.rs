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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// The level to hold (`HEALTHY` … `EMERGENCY`); absent or null ends the override.
    pub level: Option<Level>,
    /// For how long (`30s`, `5m`, up to `24h`); required with a level.
    pub duration: Option<String>,
}

impl utoipa::ToSchema for OverrideBody {}

/// Either a level with its duration, or no level (ending the override; a duration is then
/// ignored). The duration's pattern is its usual form, up to 24 hours; the handler also takes
/// humantime's others (`1h 30m`).
impl utoipa::PartialSchema for OverrideBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let hold = ObjectBuilder::new()
            .property(
                "level",
                string().enum_values(Some(Level::ALL.map(Level::as_str))),
            )
            .property(
                "duration",
                string().pattern(Some(
                    "^([1-9][0-9]{0,3}s|[1-9][0-9]{0,2}m|([1-9]|1[0-9]|2[0-4])h)$",
                )),
            )
            .required("level")
            .required("duration")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let end = ObjectBuilder::new()
            .property("level", ObjectBuilder::new().schema_type(Type::Null))
            .property(
                "duration",
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new()
            .item(hold)
            .item(end)
            .description(Some(
                "`{\"level\": \"DEGRADED\", \"duration\": \"5m\"}` holds a level; `{}` ends it",
            ))
            .into()
    }
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
        (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`", body = crate::openapi::ErrorBody)))]
pub async fn set(
    State(state): State<ApiState>,
    body: Result<axum::Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let body: OverrideBody = crate::query::object_body(body)?;
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
