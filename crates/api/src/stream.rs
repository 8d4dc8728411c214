//! `GET /api/events/stream`: every stored event in a range as NDJSON, oldest first.
//!
//! Memory stays constant whatever the range: a blocking task walks a RocksDB iterator (without
//! filling the block cache) and hands 64 KiB chunks through a channel of 4; when the client
//! reads slowly the task waits, and when it disconnects the task stops.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use colloquium_storage::{ScanRange, Store};
use tokio::sync::mpsc;

use crate::query::{RangeParams, matches_source, query_params};
use crate::{ApiError, ApiState};

const CHUNK_BYTES: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;

/// `GET /api/events/stream` parameters: a range's, without paging.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Earliest ingest time (RFC 3339 or epoch ms), inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    since: Option<String>,
    /// Latest ingest time, inclusive.
    #[param(schema_with = crate::openapi::param::time)]
    until: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(schema_with = crate::openapi::param::order)]
    order: Option<String>,
    /// Only events from this source.
    source: Option<String>,
}

/// `GET /api/events/stream?since=&until=&order=&source=`.
#[utoipa::path(get, path = "/api/events/stream", tag = "events", params(StreamParams),
    responses((status = 200, description = "Every event in the range, one JSON object per line", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "A parameter is malformed", body = crate::openapi::ErrorBody)))]
pub async fn replay(
    State(state): State<ApiState>,
    query: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let StreamParams {
        since,
        until,
        order,
        source,
    } = query_params(query)?;
    let params = RangeParams {
        since,
        until,
        order,
        source,
        ..RangeParams::default()
    };
    let range = params.range()?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || pump(&store, range, params.source.as_deref(), &tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Writes the range into `tx` chunk by chunk; an error ends the stream abruptly so the client
/// can tell a cut-off stream from a complete one.
fn pump(
    store: &Store,
    range: ScanRange,
    source: Option<&str>,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    for item in store.scan(range, false) {
        match item {
            Ok((_, raw)) => {
                if !matches_source(&raw, source) {
                    continue;
                }
                chunk.extend_from_slice(&raw);
                chunk.push(b'\n');
                if chunk.len() >= CHUNK_BYTES {
                    let full =
                        std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
                    if tx.blocking_send(Ok(full.into())).is_err() {
                        return; // client went away
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, "replay stream aborted");
                let _ = tx.blocking_send(Err(std::io::Error::other(error.to_string())));
                return;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk.into()));
    }
}
