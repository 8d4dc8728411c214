//! The AI routes: `GET /api/ai/costs` (spend from the ledger, grouped) and
//! `GET /api/analyses/{event_id}` (what an `ai` stage kept about an event).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use colloquium_ai::Nanos;
use colloquium_ai::stage::ANALYSES;
use colloquium_event::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::blocking;
use crate::query::{json_response, query_params, time_param};
use crate::{ApiError, ApiState};

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// Parameters of `GET /api/ai/costs`.
#[derive(Debug, Deserialize)]
pub struct CostParams {
    since: Option<String>,
    until: Option<String>,
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
pub async fn costs(
    State(state): State<ApiState>,
    query: Result<Query<CostParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let day_of = |t: Option<colloquium_event::Timestamp>| {
        t.map(|t| i64::try_from(t.as_millis() / DAY_MS).unwrap_or(i64::MAX))
    };
    let since = day_of(time_param("since", p.since.as_deref())?);
    let until = day_of(time_param("until", p.until.as_deref())?);
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
pub async fn analysis(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = id
        .parse::<EventId>()
        .map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    let store = state.store.clone();
    let found = blocking(move || store.result_of_event(ANALYSES, parsed)).await?;
    let Some((pipeline, bytes)) = found.into_iter().next() else {
        return Err(ApiError::NoSuch(format!("an analysis of event {id}")));
    };
    let mut record: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("a stored analysis is not JSON: {e}")))?;
    if let Some(map) = record.as_object_mut() {
        map.insert("pipeline".into(), pipeline.into());
    }
    Ok(json_response(
        serde_json::to_vec(&record).unwrap_or_default(),
    ))
}
