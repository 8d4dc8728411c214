//! What pipelines produced: `GET /api/outputs` (a pipeline's `store` sink) and `GET /api/dlq`
//! (dead letters, filtered by reason and pipeline; both page with `limit` and `cursor`), and
//! `POST /api/dlq/{id}/replay`, `POST /api/dlq/replay` (every match of a filter) and
//! `DELETE /api/dlq/{id}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquium_event::{EventId, Reason};
use colloquium_storage::{ScanRange, StorageError, StoredOutput};
use serde::Deserialize;

use crate::error::blocking;
use crate::query::{json_response, limit_param, query_params, time_param};
use crate::{ApiError, ApiState};

/// `GET /api/outputs` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutputParams {
    /// The pipeline.
    #[param(required = true)]
    pub pipeline: Option<String>,
    /// Earliest ingest time of the input event (RFC 3339 or epoch ms), inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub since: Option<String>,
    /// Latest ingest time of the input event, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub until: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = crate::openapi::param::cursor)]
    pub cursor: Option<String>,
}

/// `GET /api/dlq` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DlqParams {
    /// Only this reason (`no_route`, `route_error`, `script_error`, …).
    #[param(schema_with = crate::openapi::param::dlq_reason)]
    pub reason: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Earliest failure time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub since: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = crate::openapi::param::event_id)]
    pub cursor: Option<String>,
}

/// `GET /api/outputs`: `{"outputs": [...], "next_cursor": "<cursor>" | null}`.
#[utoipa::path(get, path = "/api/outputs", tag = "pipelines", params(OutputParams),
    responses((status = 200, description = "A page of a pipeline's `store` outputs", body = crate::openapi::OutputPage),
        (status = 400, description = "A parameter is malformed or missing", body = crate::openapi::ErrorBody)))]
pub async fn outputs(
    State(state): State<ApiState>,
    query: Result<Query<OutputParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let pipeline = p
        .pipeline
        .clone()
        .ok_or_else(|| ApiError::BadRequest("pipeline: required".into()))?;
    let (since, until) = (
        time_param("since", p.since.as_deref())?,
        time_param("until", p.until.as_deref())?,
    );
    let limit = limit_param(p.limit.as_deref())?;
    let store = state.store.clone();
    let page =
        blocking(move || store.outputs(&pipeline, since, until, p.cursor.as_deref(), limit + 1))
            .await?;
    Ok(json_response(page_body("outputs", &page, limit)))
}

/// `{"<name>": [<json>, …], "next_cursor": …}` of the first `limit` of `page` (one more
/// than `limit` means there is a next page).
pub(crate) fn page_body(name: &str, page: &[StoredOutput], limit: usize) -> Vec<u8> {
    let more = page.len() > limit;
    let mut body = format!("{{\"{name}\":[").into_bytes();
    for (i, output) in page.iter().take(limit).enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&output.json);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    match page.get(limit.saturating_sub(1)).filter(|_| more) {
        Some(last) => body.extend_from_slice(format!("\"{}\"", last.cursor).as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    body
}

/// `GET /api/dlq`: `{"dead_letters": [...], "next_cursor": "<id>" | null}`, oldest first.
#[utoipa::path(get, path = "/api/dlq", tag = "dlq", params(DlqParams),
    responses((status = 200, description = "A page of dead letters, oldest first", body = crate::openapi::DeadLetterPage),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn dead_letters(
    State(state): State<ApiState>,
    query: Result<Query<DlqParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<EventId>()
                .map_err(|e| ApiError::BadRequest(format!("cursor: {e}")))
        })
        .transpose()?;
    let range = ScanRange {
        since: time_param("since", p.since.as_deref())?,
        after,
        ..ScanRange::default()
    };
    let limit = limit_param(p.limit.as_deref())?;
    let reason = reason_param(p.reason.as_deref())?;
    let store = state.store.clone();
    let letters = blocking(move || -> Result<_, StorageError> {
        let mut page = Vec::new();
        for letter in store.dead_letters(range) {
            let letter = letter?;
            let wanted = reason.is_none_or(|r| r == letter.reason)
                && p.pipeline
                    .as_ref()
                    .is_none_or(|w| letter.pipeline.as_ref() == Some(w));
            if wanted {
                page.push(letter);
                if page.len() > limit {
                    break;
                }
            }
        }
        Ok(page)
    })
    .await?;
    let more = letters.len() > limit;
    let shown = &letters[..letters.len().min(limit)];
    let next = shown.last().filter(|_| more).map(|l| l.id.to_string());
    let body = serde_json::json!({ "dead_letters": shown, "next_cursor": next });
    Ok(json_response(
        serde_json::to_vec(&body).map_err(|e| StorageError::Db(e.to_string()))?,
    ))
}

fn dead_letter_id(id: &str) -> Result<EventId, ApiError> {
    id.parse()
        .map_err(|e: colloquium_event::IdParseError| ApiError::BadRequest(e.to_string()))
}

/// `POST /api/dlq/{id}/replay`: `202 {"replaying": id}`. The pipelines run the event again
/// (through its pipeline, or through routing for `no_route`; a sink failure goes to the sinks
/// again) and remove the dead letter in the same commit, so asking twice replays once. `404`
/// once it is gone.
#[utoipa::path(post, path = "/api/dlq/{id}/replay", tag = "dlq",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 202, description = "Being replayed", body = crate::openapi::ReplayingOne),
        (status = 400, description = "Not a dead-letter id", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such dead letter", body = crate::openapi::ErrorBody)))]
pub async fn replay(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = dead_letter_id(&id)?;
    let store = state.store.clone();
    let letter = blocking(move || {
        let letter = store.dead_letter(id)?;
        match letter {
            // A `dlq` sink's results are that pipeline's output: there is nothing to redo.
            Some(l) if l.reason == Reason::DlqSink => Ok(Some(l)),
            Some(_) => store.request_replay(id),
            None => Ok(None),
        }
    })
    .await?;
    match letter {
        None => Err(ApiError::NotFound(id.to_string())),
        Some(l) if l.reason == Reason::DlqSink => Err(ApiError::BadRequest(
            "a `dlq` sink's results are its pipeline's output: there is nothing to replay".into(),
        )),
        Some(_) => {
            let body = serde_json::json!({ "replaying": id.to_string() });
            let body = serde_json::to_vec(&body).map_err(|e| StorageError::Db(e.to_string()))?;
            let mut response = json_response(body);
            *response.status_mut() = StatusCode::ACCEPTED;
            Ok(response)
        }
    }
}

/// `DELETE /api/dlq/{id}`: `204`, or `404` when there is no such dead letter.
#[utoipa::path(delete, path = "/api/dlq/{id}", tag = "dlq",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 204, description = "Deleted"),
        (status = 400, description = "Not a dead-letter id", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such dead letter", body = crate::openapi::ErrorBody)))]
pub async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = dead_letter_id(&id)?;
    let store = state.store.clone();
    let deleted = blocking(move || store.delete_dead_letter(id)).await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(id.to_string()))
    }
}

/// `POST /api/dlq/replay` parameters: which dead letters to replay.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {
    /// Only this reason (e.g. `overflow`).
    #[param(schema_with = crate::openapi::param::dlq_reason)]
    pub reason: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// At most this many (default and most: 100,000), oldest first.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    pub limit: Option<String>,
}

/// Most dead letters one `POST /api/dlq/replay` asks for.
const MAX_REPLAY: usize = 100_000;

/// `POST /api/dlq/replay?reason=&pipeline=&limit=`: asks the pipelines to replay every
/// matching dead letter (oldest first, up to `limit`); answers `{"replaying": n}`. `dlq`
/// sink results are never replayed (they are that pipeline's output).
#[utoipa::path(post, path = "/api/dlq/replay", tag = "dlq", params(ReplayParams),
    responses((status = 202, description = "How many dead letters are being replayed", body = crate::openapi::ReplayingMany),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn replay_many(
    State(state): State<ApiState>,
    query: Result<Query<ReplayParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let reason = reason_param(p.reason.as_deref())?;
    let limit = match p.limit.as_deref() {
        None => MAX_REPLAY,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_REPLAY).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: must be 1 to {MAX_REPLAY}")))?,
    };
    let store = state.store.clone();
    let count = blocking(move || -> Result<usize, StorageError> {
        let mut ids = Vec::new();
        for letter in store.dead_letters(ScanRange::default()) {
            let letter = letter?;
            let wanted = letter.reason != Reason::DlqSink
                && reason.is_none_or(|r| r == letter.reason)
                && p.pipeline
                    .as_ref()
                    .is_none_or(|w| letter.pipeline.as_ref() == Some(w));
            if wanted {
                ids.push(letter.id);
                if ids.len() >= limit {
                    break;
                }
            }
        }
        store.request_replays(&ids)?;
        Ok(ids.len())
    })
    .await?;
    let body = serde_json::json!({ "replaying": count });
    let body = serde_json::to_vec(&body).map_err(|e| StorageError::Db(e.to_string()))?;
    let mut response = json_response(body);
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

/// A `reason` parameter: a known reason, or 400 naming them all.
fn reason_param(reason: Option<&str>) -> Result<Option<Reason>, ApiError> {
    reason
        .map(|r| {
            r.parse::<Reason>().map_err(|e| {
                let known: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
                ApiError::BadRequest(format!("reason: {e} (known: {})", known.join(", ")))
            })
        })
        .transpose()
}
