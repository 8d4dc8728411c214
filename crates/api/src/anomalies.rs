//! What `anomaly` stages flagged (each one's `anomalies` results table), newest first:
//! `GET /api/anomalies?user=&since=&until=&min_score=&limit=&cursor=`,
//! `GET /api/anomalies/{id}`, `GET /api/anomalies/high-score?threshold=0.7&limit=100` and
//! `GET /api/anomalies/count?since=`; and the learned profile an anomaly is judged against:
//! `GET /api/users/{user}/baseline?pipeline=&stage=anomaly`. Times are the scored events' ingest times (RFC 3339 or
//! epoch ms); a record is `{id, pipeline, stage, user, ingest_time, score, components,
//! reason_codes, reasons, model, data}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use colloquium_event::EventId;
use serde::Deserialize;
use serde_json::Value;

use crate::error::blocking;

/// The results table `anomaly` stages keep their anomalies in (one key, by ingest time).
const ANOMALIES: &str = "anomalies";
use crate::query::{json_response, limit_param, query_params, time_param};
use crate::{ApiError, ApiState};

/// `GET /api/anomalies` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnomalyParams {
    /// Only this user (entity).
    pub user: Option<String>,
    /// Earliest ingest time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub since: Option<String>,
    /// Latest ingest time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub until: Option<String>,
    /// Only scores at or above this.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    pub min_score: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page (an event id).
    #[param(schema_with = crate::openapi::param::event_id)]
    pub cursor: Option<String>,
}

/// `GET /api/anomalies/high-score` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HighScoreParams {
    /// Scores at or above this (default 0.7).
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    pub threshold: Option<String>,
    /// How many (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
}

/// `GET /api/users/{user}/baseline` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BaselineParams {
    /// The pipeline of the `anomaly` stage.
    #[param(required = true)]
    pub pipeline: Option<String>,
    /// The stage's id (default `anomaly`).
    pub stage: Option<String>,
}

/// `GET /api/users/{user}/baseline`: the user's learned profile as last committed, in its
/// model's fields with `model` naming it (`Profile::to_json`; the README has both shapes). 404
/// when the stage has none for that user.
#[utoipa::path(get, path = "/api/users/{user}/baseline", tag = "anomalies",
    params(("user" = String, Path, description = "The user (entity)"), BaselineParams),
    responses((status = 200, description = "The user's learned profile", body = crate::openapi::Record),
        (status = 400, description = "A parameter is malformed or missing", body = crate::openapi::ErrorBody),
        (status = 404, description = "No profile for that user", body = crate::openapi::ErrorBody)))]
pub async fn baseline(
    State(state): State<ApiState>,
    Path(user): Path<String>,
    query: Result<Query<BaselineParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let pipeline = p
        .pipeline
        .ok_or_else(|| ApiError::BadRequest("pipeline: required".into()))?;
    let stage = p.stage.unwrap_or_else(|| "anomaly".to_owned());
    let store = state.store.clone();
    let key = user.clone();
    let row = blocking(move || store.stage_state_entry(&pipeline, &stage, key.as_bytes())).await?;
    let Some(row) = row else {
        return Err(ApiError::NoSuch(format!("the baseline of user `{user}`")));
    };
    let baseline = colloquium_pipeline::stages::anomaly::stored_baseline(&row)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let body =
        serde_json::to_vec(&baseline.to_json()).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_response(body))
}

/// `GET /api/anomalies/count` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CountParams {
    /// Earliest ingest time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    pub since: Option<String>,
}

fn score_param(name: &str, value: Option<&str>) -> Result<Option<f64>, ApiError> {
    value
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("{name}: expected a number from 0 to 1"))
                })
        })
        .transpose()
}

/// A record's score and user, for filtering.
fn score_and_user(json: &[u8]) -> (f64, Option<String>) {
    let record: Value = serde_json::from_slice(json).unwrap_or(Value::Null);
    let score = record["score"].as_f64().unwrap_or(0.0);
    (score, record["user"].as_str().map(str::to_owned))
}

/// `{"anomalies": [...], "next_cursor": ...}` of raw JSON records.
fn page(records: &[(EventId, Vec<u8>)], next: Option<EventId>) -> Vec<u8> {
    let mut body = b"{\"anomalies\":[".to_vec();
    for (i, (_, json)) in records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(json);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    match next {
        Some(id) => body.extend_from_slice(format!("\"{id}\"").as_bytes()),
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    body
}

/// `GET /api/anomalies`: newest first, filtered, paged by cursor.
#[utoipa::path(get, path = "/api/anomalies", tag = "anomalies", params(AnomalyParams),
    responses((status = 200, description = "A page of anomalies, newest first", body = crate::openapi::AnomalyPage),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<AnomalyParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let since = time_param("since", p.since.as_deref())?;
    let until = time_param("until", p.until.as_deref())?;
    let min_score = score_param("min_score", p.min_score.as_deref())?.unwrap_or(0.0);
    let limit = limit_param(p.limit.as_deref())?;
    let before = p
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<EventId>()
                .map_err(|e| ApiError::BadRequest(format!("cursor: {e}")))
        })
        .transpose()?;
    let store = state.store.clone();
    let (records, more) = blocking(move || {
        let mut records = Vec::new();
        let mut more = false;
        store.results_newest(ANOMALIES, since, until, before, |entry, json| {
            let (score, user) = score_and_user(json);
            let wanted =
                score >= min_score && p.user.as_ref().is_none_or(|u| user.as_ref() == Some(u));
            if !wanted {
                return true;
            }
            if records.len() == limit {
                more = true;
                return false;
            }
            if let Some(id) = entry.id {
                records.push((id, json.to_vec()));
            }
            true
        })?;
        Ok::<_, colloquium_storage::StorageError>((records, more))
    })
    .await?;
    let next = more.then(|| records.last().map(|(id, _)| *id)).flatten();
    Ok(json_response(page(&records, next)))
}

/// `GET /api/anomalies/high-score`: the newest `limit` with a score at or above `threshold`.
#[utoipa::path(get, path = "/api/anomalies/high-score", tag = "anomalies", params(HighScoreParams),
    responses((status = 200, description = "The newest anomalies at or above the threshold", body = crate::openapi::AnomalyPage),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn high_score(
    State(state): State<ApiState>,
    query: Result<Query<HighScoreParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let threshold = score_param("threshold", p.threshold.as_deref())?.unwrap_or(0.7);
    let limit = limit_param(p.limit.as_deref())?;
    let store = state.store.clone();
    let records = blocking(move || {
        let mut records = Vec::new();
        store.results_newest(ANOMALIES, None, None, None, |entry, json| {
            if let Some(id) = entry.id.filter(|_| score_and_user(json).0 >= threshold) {
                records.push((id, json.to_vec()));
            }
            records.len() < limit
        })?;
        Ok::<_, colloquium_storage::StorageError>(records)
    })
    .await?;
    Ok(json_response(page(&records, None)))
}

/// `GET /api/anomalies/count`: `{"count": N}` since `since`.
#[utoipa::path(get, path = "/api/anomalies/count", tag = "anomalies", params(CountParams),
    responses((status = 200, description = "How many anomalies since `since`", body = crate::openapi::Count),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn count(
    State(state): State<ApiState>,
    query: Result<Query<CountParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let since = time_param("since", p.since.as_deref())?;
    let store = state.store.clone();
    let count = blocking(move || {
        let mut count = 0u64;
        store.results_newest(ANOMALIES, since, None, None, |_, _| {
            count += 1;
            true
        })?;
        Ok::<_, colloquium_storage::StorageError>(count)
    })
    .await?;
    Ok(json_response(format!("{{\"count\":{count}}}").into_bytes()))
}

/// `GET /api/anomalies/{id}`: the record (the first pipeline's, when several flagged it).
#[utoipa::path(get, path = "/api/anomalies/{id}", tag = "anomalies",
    params(("id" = String, Path, description = "The scored event's id")),
    responses((status = 200, description = "The anomaly record", body = crate::openapi::Record),
        (status = 400, description = "Not an event id", body = crate::openapi::ErrorBody),
        (status = 404, description = "No anomaly for that event", body = crate::openapi::ErrorBody)))]
pub async fn one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, json) = crate::results::of_event(&state, ANOMALIES, &id, "an anomaly").await?;
    Ok(json_response(json))
}
