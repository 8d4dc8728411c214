//! The AI routes: `GET /api/ai/costs` (spend from the ledger, grouped) and
//! `GET /api/analyses/{event_id}` (what an `ai` stage kept about an event).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use colloquium_ai::Nanos;
use colloquium_ai::budget::{DAY_MS, day_of};
use colloquium_ai::similar::StageIndex;
use colloquium_ai::stage::ANALYSES;
use colloquium_event::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::blocking;
use crate::query::{json_response, query_params, time_param};
use crate::{ApiError, ApiState};

/// Parameters of `GET /api/ai/costs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostParams {
    /// The first UTC day (epoch ms or RFC 3339).
    #[param(schema_with = crate::openapi::param::time)]
    since: Option<String>,
    /// The last UTC day.
    #[param(schema_with = crate::openapi::param::time)]
    until: Option<String>,
    /// `pipeline` (default), `provider` or `model`.
    #[param(schema_with = crate::openapi::param::cost_grouping)]
    by: Option<String>,
}

/// A UTC day as `YYYY-MM-DD`.
fn date(day: i64) -> String {
    let ms = u64::try_from(day).unwrap_or(0).saturating_mul(DAY_MS);
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339(time).to_string()[..10].to_owned()
}

/// `GET /api/ai/costs?since=&until=&by=provider|model|pipeline`: settled spend per UTC day
/// in `[since, until]` (whole days; default: all kept), grouped `by` (default `pipeline`),
/// with today's open reservations and budget.
#[utoipa::path(get, path = "/api/ai/costs", tag = "ai", params(CostParams),
    responses((status = 200, description = "Settled AI spend per UTC day, grouped", body = crate::openapi::Costs),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn costs(
    State(state): State<ApiState>,
    query: Result<Query<CostParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let since = time_param("since", p.since.as_deref())?.map(day_of);
    let until = time_param("until", p.until.as_deref())?.map(day_of);
    let by = p.by.as_deref().unwrap_or("pipeline");
    if !matches!(by, "provider" | "model" | "pipeline") {
        return Err(ApiError::BadRequest(format!(
            "by: expected provider, model or pipeline, got `{}`",
            by.chars().take(40).collect::<String>()
        )));
    }
    let Some(gateway) = &state.ai else {
        return Ok(Json(
            json!({"configured": false, "by": by, "groups": [], "days": [], "total_usd": 0.0}),
        )
        .into_response());
    };
    let mut groups: BTreeMap<String, Nanos> = BTreeMap::new();
    let mut days: BTreeMap<i64, Nanos> = BTreeMap::new();
    let mut total = Nanos::ZERO;
    for ((day, account), spent) in gateway.ledger().history() {
        if since.is_some_and(|s| day < s) || until.is_some_and(|u| day > u) {
            continue;
        }
        let group = match by {
            "provider" => account.provider,
            "model" => account.model,
            _ => account.pipeline,
        };
        let sum = groups.entry(group).or_default();
        *sum = sum.plus(spent);
        let sum = days.entry(day).or_default();
        *sum = sum.plus(spent);
        total = total.plus(spent);
    }
    let today = gateway.ledger().today();
    let reserved = today
        .reserved
        .values()
        .fold(Nanos::ZERO, |sum, n| sum.plus(*n));
    let spent_today = today
        .spent
        .values()
        .fold(Nanos::ZERO, |sum, n| sum.plus(*n));
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, n)| json!({by: name, "cost_usd": n.usd(), "nanodollars": n.0}))
        .collect();
    let days: Vec<Value> = days
        .into_iter()
        .map(|(day, n)| json!({"day": date(day), "cost_usd": n.usd(), "nanodollars": n.0}))
        .collect();
    Ok(Json(json!({
        "configured": true,
        "by": by,
        "total_usd": total.usd(),
        "total_nanodollars": total.0,
        "groups": groups,
        "days": days,
        "today": {
            "day": date(today.day),
            "spent_usd": spent_today.usd(),
            "reserved_usd": reserved.usd(),
            "daily_budget_usd": gateway.ledger().limits().daily.map(Nanos::usd),
        },
    }))
    .into_response())
}

/// `GET /api/analyses/{event_id}`: the analysis an `ai` stage kept about the event (the
/// first pipeline's, when several analysed it), with the pipeline's name.
#[utoipa::path(get, path = "/api/analyses/{id}", tag = "ai",
    params(("id" = String, Path, description = "The analysed event's id")),
    responses((status = 200, description = "The analysis an `ai` stage kept", body = crate::openapi::Record),
        (status = 400, description = "Not an event id", body = crate::openapi::ErrorBody),
        (status = 404, description = "No analysis of that event", body = crate::openapi::ErrorBody)))]
pub async fn analysis(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (pipeline, bytes) = crate::results::of_event(&state, ANALYSES, &id, "an analysis").await?;
    let mut record: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("a stored analysis is not JSON: {e}")))?;
    if let Some(map) = record.as_object_mut() {
        map.insert("pipeline".into(), pipeline.into());
    }
    Ok(json_response(
        serde_json::to_vec(&record).unwrap_or_default(),
    ))
}

/// Most neighbours a similar-event query returns.
const MAX_K: usize = 100;

/// Parameters of the similar-event queries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarParams {
    /// How many (default 10).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    k: Option<String>,
    /// The `embed` stage's pipeline (needed with several).
    pipeline: Option<String>,
    /// The `embed` stage's id (needed with several).
    stage: Option<String>,
}

fn k_param(k: Option<&str>) -> Result<usize, ApiError> {
    let k = match k {
        None => 10,
        Some(text) => text.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "k: expected a whole number from 1 to {MAX_K}, got `{}`",
                text.chars().take(40).collect::<String>()
            ))
        })?,
    };
    if k == 0 || k > MAX_K {
        return Err(ApiError::BadRequest(format!(
            "k: must be between 1 and {MAX_K}"
        )));
    }
    Ok(k)
}

/// The indexes a query may use: those of `pipeline`/`stage` when named.
fn indexes(state: &ApiState, pipeline: Option<&str>, stage: Option<&str>) -> Vec<StageIndex> {
    state
        .similar
        .all()
        .into_iter()
        .filter(|s| {
            pipeline.is_none_or(|p| p == s.pipeline) && stage.is_none_or(|st| st == s.stage)
        })
        .collect()
}

/// The answer: the neighbours, each with its stored event.
async fn neighbours(
    state: &ApiState,
    found: &StageIndex,
    query: Vec<f32>,
    k: usize,
    except: Option<EventId>,
) -> Result<Value, ApiError> {
    let index = found.index.clone();
    let (nearest, method) = tokio::task::spawn_blocking(move || index.nearest(&query, k, except))
        .await
        .map_err(|e| ApiError::Internal(format!("a similar-event query failed: {e}")))?;
    let store = state.store.clone();
    let ids: Vec<EventId> = nearest.iter().map(|(id, _)| *id).collect();
    let events = blocking(move || {
        ids.into_iter()
            .map(|id| store.get(id))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let similar: Vec<Value> = nearest
        .iter()
        .zip(events)
        .map(|((id, score), event)| {
            json!({"id": id.to_string(), "similarity": score,
                "event": event.map(|e| serde_json::to_value(&e).unwrap_or(Value::Null))})
        })
        .collect();
    Ok(json!({
        "pipeline": found.pipeline,
        "stage": found.stage,
        "method": method.as_str(),
        "searched": found.index.len(),
        "similar": similar,
    }))
}

/// `GET /api/events/{id}/similar?k=10&pipeline=&stage=`: the `k` stored events nearest to
/// the event by cosine similarity of the vectors an `embed` stage kept (the first stage
/// that embedded it, or the one named).
#[utoipa::path(get, path = "/api/events/{id}/similar", tag = "ai",
    params(("id" = String, Path, description = "The event's id"), SimilarParams),
    responses((status = 200, description = "The nearest stored events", body = crate::openapi::Similar),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody),
        (status = 404, description = "No `embed` stage kept a vector for the event", body = crate::openapi::ErrorBody)))]
pub async fn similar_to_event(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<SimilarParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let k = k_param(p.k.as_deref())?;
    let parsed = crate::query::event_id_param(&id)?;
    let candidates = indexes(&state, p.pipeline.as_deref(), p.stage.as_deref());
    let Some((found, vector)) = candidates
        .iter()
        .find_map(|s| s.index.get(parsed).map(|v| (s, v)))
    else {
        return Err(ApiError::NoSuch(format!("an embedding of event {id}")));
    };
    let query: Vec<f32> = vector.values().to_vec();
    let mut body = neighbours(&state, found, query, k, Some(parsed)).await?;
    body["event_id"] = json!(id);
    Ok(Json(body).into_response())
}

/// The body of `POST /api/events/similar`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextQuery {
    /// What to search for (1 to 8,192 characters), embedded with the stage's provider.
    #[schema(min_length = 1, max_length = 8192)]
    text: String,
    /// How many (default 10).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
    k: Option<serde_json::Number>,
    /// The `embed` stage's pipeline (needed with several).
    #[serde(default)]
    pipeline: Option<String>,
    /// The `embed` stage's id (needed with several).
    #[serde(default)]
    stage: Option<String>,
}

/// Longest text a similar-event query embeds (characters).
const MAX_TEXT: usize = 8192;

/// `POST /api/events/similar` with `{"text", "k", "pipeline", "stage"}`: embeds the text with
/// the stage's provider (governed and paid for like any call, charged to `@api`) and returns
/// the nearest stored events. With several `embed` stages, name one.
#[utoipa::path(post, path = "/api/events/similar", tag = "ai", request_body = TextQuery,
    responses((status = 200, description = "The nearest stored events", body = crate::openapi::Similar),
        (status = 400, description = "The body is malformed", body = crate::openapi::ErrorBody),
        (status = 404, description = "No `embed` stage", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`", body = crate::openapi::ErrorBody)))]
pub async fn similar_to_text(
    State(state): State<ApiState>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let q: TextQuery = crate::query::object_body(body)?;
    // JSON Schema's integers include `5.0`.
    let k = match q.k.map(|k| k.as_f64().filter(|k| k.fract() == 0.0)) {
        None => None,
        Some(Some(k)) => Some(format!("{k:.0}")),
        Some(None) => return Err(ApiError::BadRequest("k: must be a whole number".into())),
    };
    let k = k_param(k.as_deref())?;
    if q.text.is_empty() || q.text.chars().count() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "text: must be 1 to {MAX_TEXT} characters"
        )));
    }
    let candidates = indexes(&state, q.pipeline.as_deref(), q.stage.as_deref());
    let found = match candidates.as_slice() {
        [one] => one,
        [] => return Err(ApiError::NoSuch("an `embed` stage to search".into())),
        _ => {
            return Err(ApiError::BadRequest(
                "several embed stages: name one with `pipeline` and `stage`".into(),
            ));
        }
    };
    let Some(gateway) = &state.ai else {
        return Err(ApiError::NoSuch("an AI provider".into()));
    };
    let (vector, _) = gateway
        .embed("@api", &found.provider, &q.text)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(neighbours(&state, found, vector, k, None).await?).into_response())
}
