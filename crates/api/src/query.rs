//! Event lookups: by id, and by ingest-time range with cursor paging.
//!
//! Responses splice the stored JSON bytes in as they are: no decode and re-encode per event.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use colloquium_event::{EventId, Timestamp};
use colloquium_storage::{Order, ScanRange, Store};
use serde::Deserialize;

use crate::error::blocking;
use crate::{ApiError, ApiState};

/// Default page size.
const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
const MAX_LIMIT: usize = 10_000;

/// Reads a time parameter (RFC 3339 or epoch ms); a bad one is a 400 naming it.
pub(crate) fn time_param(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            Timestamp::parse_bound(v).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
        })
        .transpose()
}

/// Reads an event id from a path (`id: …` when it is not one).
pub(crate) fn event_id_param(id: &str) -> Result<EventId, ApiError> {
    id.parse::<EventId>()
        .map_err(|e| ApiError::BadRequest(format!("id: {e}")))
}

/// Reads a page size: [`DEFAULT_LIMIT`] when absent, 1 to [`MAX_LIMIT`].
pub(crate) fn limit_param(limit: Option<&str>) -> Result<usize, ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => text.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "limit: expected a whole number from 1 to {MAX_LIMIT}, got `{}`",
                text.chars().take(40).collect::<String>()
            ))
        })?,
    };
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// Takes a query string's parameters; a bad one is a 400 in our words, naming it. Every
/// parameter type is a string (parsed and checked by the handler, which names it), so the
/// only errors left here are unknown and repeated parameters.
pub(crate) fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    let rejection = match query {
        Ok(Query(params)) => return Ok(params),
        Err(rejection) => rejection,
    };
    let message = colloquium_telemetry::http::query_rejection_message(&rejection);
    Err(ApiError::BadRequest(message))
}

/// Reads a JSON body that must be an object: serde alone would also build a struct from an
/// array of its fields (`[null, null]`).
pub(crate) fn object_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    let axum::Json(value) = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(e.body_text()),
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType(e.body_text())
        }
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

/// `GET /api/events/{id}`.
#[utoipa::path(get, path = "/api/events/{id}", tag = "events",
    params(("id" = String, Path, description = "The event's id (a ULID)")),
    responses((status = 200, description = "The event", body = crate::openapi::Event),
        (status = 400, description = "Not an event id", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such event", body = crate::openapi::ErrorBody)))]
pub async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: EventId = id
        .parse()
        .map_err(|e: colloquium_event::IdParseError| ApiError::BadRequest(e.to_string()))?;
    let store = state.store.clone();
    let raw = blocking(move || store.get_raw(id)).await?;
    let raw = raw.ok_or_else(|| ApiError::NotFound(id.to_string()))?;
    Ok(json_response(raw))
}

/// Query parameters shared by the list and stream endpoints.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Earliest ingest time (RFC 3339 or epoch ms), inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub since: Option<String>,
    /// Latest ingest time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub until: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(schema_with = crate::openapi::param::order)]
    pub order: Option<String>,
    /// Only events from this source.
    pub source: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = crate::openapi::param::event_id)]
    pub cursor: Option<String>,
}

impl RangeParams {
    /// Reads the parameters, turning a malformed query string into a 400.
    pub fn from_query(query: Result<Query<RangeParams>, QueryRejection>) -> Result<Self, ApiError> {
        query_params(query)
    }

    /// Returns the scan range these parameters describe.
    pub fn range(&self) -> Result<ScanRange, ApiError> {
        let order = match self.order.as_deref() {
            None | Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "order: expected `asc` or `desc`, got `{other}`"
                )));
            }
        };
        let after = self
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<EventId>()
                    .map_err(|e| ApiError::BadRequest(format!("cursor: {e}")))
            })
            .transpose()?;
        Ok(ScanRange {
            since: time_param("since", self.since.as_deref())?,
            until: time_param("until", self.until.as_deref())?,
            after,
            order,
        })
    }
}

/// `GET /api/events`: `{"events": [...], "next_cursor": "<id>" | null}`.
#[utoipa::path(get, path = "/api/events", tag = "events", params(RangeParams),
    responses((status = 200, description = "A page of events, oldest first unless `order=desc`", body = crate::openapi::EventPage),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = RangeParams::from_query(query)?;
    let range = params.range()?;
    let limit = limit_param(params.limit.as_deref())?;
    let store = state.store.clone();
    let body = blocking(move || page(&store, range, limit, params.source.as_deref())).await?;
    Ok(json_response(body))
}

/// Builds one page by splicing stored JSON into the response.
fn page(
    store: &Store,
    range: ScanRange,
    limit: usize,
    source: Option<&str>,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(256 * limit.min(1000));
    body.extend_from_slice(b"{\"events\":[");
    let mut count = 0;
    let mut last = None;
    let mut more = false;
    for item in store.scan(range, true) {
        let (id, raw) = item?;
        if !matches_source(&raw, source) {
            continue;
        }
        if count == limit {
            more = true;
            break;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&raw);
        count += 1;
        last = Some(id);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    match last.filter(|_| more) {
        Some(id) => body.extend_from_slice(format!("\"{id}\"").as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    Ok(body)
}

/// Returns whether the stored event came from `source` (always, when no filter is given).
pub fn matches_source(raw: &[u8], source: Option<&str>) -> bool {
    #[derive(Deserialize)]
    struct Only<'a> {
        #[serde(borrow)]
        metadata: Meta<'a>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        source: std::borrow::Cow<'a, str>,
    }
    let Some(wanted) = source else { return true };
    serde_json::from_slice::<Only<'_>>(raw).is_ok_and(|e| e.metadata.source == wanted)
}

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
