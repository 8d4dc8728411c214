//! What stages keep to be queried (the results column family): one generic route for every
//! stage's tables, `GET /api/results/{pipeline}/{stage}/{table}?key=&since=&until=&limit=&cursor=`,
//! and `GET /api/windows` (window stages' `windows` tables) on top of it. Both answer
//! `{"<name>": [...], "next_cursor": "<cursor>" | null}`, rows by key (as stored: shorter keys
//! first), then time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use colloquium_storage::{ResultQuery, StoredOutput};
use serde::Deserialize;

use crate::error::blocking;
use crate::pipelines::page_body;
use crate::query::{json_response, limit_param, query_params};
use crate::{ApiError, ApiState};

/// `GET /api/results/{pipeline}/{stage}/{table}` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultParams {
    /// Only this grouping key.
    pub key: Option<String>,
    /// Rows at or after this time (epoch ms, or RFC 3339).
    #[param(schema_with = crate::openapi::param::row_time)]
    pub since: Option<String>,
    /// Rows before this time.
    #[param(schema_with = crate::openapi::param::row_time)]
    pub until: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = crate::openapi::param::cursor)]
    pub cursor: Option<String>,
}

/// `GET /api/windows` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowParams {
    /// The pipeline.
    #[param(required = true)]
    pub pipeline: Option<String>,
    /// Only this window stage (its id).
    pub stage: Option<String>,
    /// Only this grouping key.
    pub key: Option<String>,
    /// Windows starting at or after this (epoch ms, or RFC 3339).
    #[param(schema_with = crate::openapi::param::row_time)]
    pub since: Option<String>,
    /// Windows starting before this.
    #[param(schema_with = crate::openapi::param::row_time)]
    pub until: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(schema_with = crate::openapi::param::cursor)]
    pub cursor: Option<String>,
}

/// A row time bound: epoch ms (negative before 1970) or RFC 3339.
fn row_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            colloquium_event::time::parse_signed_millis(text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{name}: invalid time `{}`: expected epoch milliseconds or RFC 3339",
                    text.chars().take(64).collect::<String>()
                ))
            })
        })
        .transpose()
}

/// Names in the path hold no `0x00` (they are keys' separators), nor do names in a config.
fn path_name(what: &str, name: String) -> Result<String, ApiError> {
    if name.is_empty() || name.contains('\0') {
        return Err(ApiError::BadRequest(format!("{what}: not a name")));
    }
    Ok(name)
}

async fn page(
    state: &ApiState,
    query: ResultQuery,
    limit: usize,
) -> Result<Vec<StoredOutput>, ApiError> {
    let store = state.store.clone();
    let mut page = blocking(move || store.results(&query, limit + 1)).await?;
    // Built-in stages keep JSON; a row that is not is shown as a JSON string, so the page
    // stays one JSON document whatever a stage kept.
    for row in &mut page {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&row.json).is_err() {
            let text = String::from_utf8_lossy(&row.json).into_owned();
            row.json = serde_json::to_vec(&text).unwrap_or_default();
        }
    }
    Ok(page)
}

/// `GET /api/results/{pipeline}/{stage}/{table}`: `{"results": [...], "next_cursor": …}`.
#[utoipa::path(get, path = "/api/results/{pipeline}/{stage}/{table}", tag = "results",
    params(("pipeline" = String, Path, description = "The pipeline"), ("stage" = String, Path, description = "The stage's id"),
        ("table" = String, Path, description = "The stage's results table"), ResultParams),
    responses((status = 200, description = "A page of the table's rows", body = crate::openapi::ResultPage),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn results(
    State(state): State<ApiState>,
    Path((pipeline, stage, table)): Path<(String, String, String)>,
    query: Result<Query<ResultParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let query = ResultQuery {
        pipeline: path_name("pipeline", pipeline)?,
        stage: Some(path_name("stage", stage)?),
        table: path_name("table", table)?,
        key: p.key,
        since: row_time("since", p.since.as_deref())?,
        until: row_time("until", p.until.as_deref())?,
        cursor: p.cursor,
    };
    let limit = limit_param(p.limit.as_deref())?;
    let page = page(&state, query, limit).await?;
    Ok(json_response(page_body("results", &page, limit)))
}

/// `GET /api/windows`: window results as the window stages last fired them (an update or
/// the final firing replaces earlier ones), by stage, key and window start:
/// `{"windows": [...], "next_cursor": "<cursor>" | null}`.
#[utoipa::path(get, path = "/api/windows", tag = "results", params(WindowParams),
    responses((status = 200, description = "A page of window results", body = crate::openapi::WindowPage),
        (status = 400, description = "A parameter is malformed or missing", body = crate::openapi::ErrorBody)))]
pub async fn windows(
    State(state): State<ApiState>,
    query: Result<Query<WindowParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(query)?;
    let query = ResultQuery {
        pipeline: p
            .pipeline
            .clone()
            .ok_or_else(|| ApiError::BadRequest("pipeline: required".into()))?,
        stage: p.stage.clone(),
        table: "windows".into(),
        key: p.key.clone(),
        since: row_time("since", p.since.as_deref())?,
        until: row_time("until", p.until.as_deref())?,
        cursor: p.cursor.clone(),
    };
    let limit = limit_param(p.limit.as_deref())?;
    let page = page(&state, query, limit).await?;
    Ok(json_response(page_body("windows", &page, limit)))
}

/// The row of event `id` in the one-key table `table` of the first stage that kept one, with
/// its pipeline; `what` names the thing for a 404 ("an anomaly").
pub(crate) async fn of_event(
    state: &ApiState,
    table: &'static str,
    id: &str,
    what: &str,
) -> Result<(String, Vec<u8>), ApiError> {
    let parsed = crate::query::event_id_param(id)?;
    let store = state.store.clone();
    let found = crate::error::blocking(move || store.result_of_event(table, parsed)).await?;
    found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::NoSuch(format!("{what} of event {id}")))
}
