//! `GET /api/tap`: the events passing a point of the node, live, as Server-Sent Events — for
//! `colloquium tap` and the dashboard.
//!
//! The point is a pipeline's outputs (`pipeline`: what it sends to its sinks), one of its
//! stages' (`pipeline` and `stage`), or the log (no `pipeline`: every event as it becomes
//! durable).
//! A tap never slows what it watches: its buffer is bounded (`buffer` events) and what does not
//! fit is dropped and counted. A log tap with `since` first replays the log from that time
//! (which waits for the reader: history holds nothing up), then follows the live feed with
//! nothing missing or repeated at the seam: the same hand-over the pipeline workers use (see
//! `pipeline::runtime::intake`), from a subscription taken before the history is read.
//!
//! The stream: one `event: live` when the history (if any) is done, the tapped events as
//! `data:` lines (one event's JSON each; several to a message when they come fast), and
//! `event: status` with `{"seen", "dropped"}` whenever they change (at most twice a second)
//! and every 5 s as a keep-alive.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use colloquium_event::{EventId, IdGenerator, Timestamp};
use colloquium_pipeline::tap::{Filter, Listener, TapCounts};
use colloquium_storage::{ScanRange, Store};
use tokio::sync::mpsc;

use crate::query::{query_params, time_param};
use crate::{ApiError, ApiState};

/// Events a tap buffers by default, and at most (with at most `MAX_TAPS` taps open, what they
/// hold is bounded).
const DEFAULT_BUFFER: usize = 1_000;
const MAX_BUFFER: usize = 10_000;
/// Events a log tap's feed holds between two looks (every [`LOOK`]), and while its history is
/// read.
const FEED_EVENTS: usize = 32_768;
/// History passes whose feed overflowed (ingest faster than the reader) that are read again
/// from the log before the tap goes live anyway, counting what the feed dropped.
const CATCH_UP_PASSES: u32 = 4;
const LOOK: Duration = Duration::from_millis(20);
/// Events read from the log per blocking read.
const HISTORY_CHUNK: usize = 1_024;
/// Most events sent as one SSE message.
const BATCH_EVENTS: usize = 256;
/// The line that marks the end of the history (empty: no event is).
const LIVE: Bytes = Bytes::new();

/// `GET /api/tap` parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TapParams {
    /// Tap this pipeline's outputs (or one of its stages'); without it, the log (every event
    /// stored).
    pipeline: Option<String>,
    /// A stage (by id) of `pipeline`: what it emits; without it, the pipeline's outputs (what
    /// goes to its sinks).
    stage: Option<String>,
    /// Only events from this source.
    source: Option<String>,
    /// Every `sample`th event (default 1: all).
    #[param(minimum = 1)]
    sample: Option<u64>,
    /// Log taps: replay the log from this ingest time first, then follow.
    #[param(schema_with = crate::openapi::param::time)]
    since: Option<String>,
    /// Events the tap buffers for a slow reader before it drops (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    buffer: Option<usize>,
}

/// `GET /api/tap?pipeline=&stage=&source=&sample=&since=&buffer=`.
#[utoipa::path(get, path = "/api/tap", tag = "events", params(TapParams),
    responses((status = 200, description = "The tapped events as Server-Sent Events: `data:` lines of event JSON, `event: live` once the history is done, `event: status` with `seen` and `dropped`", content_type = "text/event-stream", body = String),
        (status = 400, description = "A parameter is malformed, or `since` is given for a stage", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such pipeline or stage on this node", body = crate::openapi::ErrorBody),
        (status = 503, description = "As many taps as a node serves are open", body = crate::openapi::ErrorBody)))]
pub async fn tap(
    State(state): State<ApiState>,
    query: Result<Query<TapParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(query)?;
    let buffer = params.buffer.unwrap_or(DEFAULT_BUFFER);
    if !(1..=MAX_BUFFER).contains(&buffer) {
        return Err(ApiError::BadRequest(format!(
            "`buffer` must be 1 to {MAX_BUFFER}"
        )));
    }
    if params.sample == Some(0) {
        return Err(ApiError::BadRequest("`sample` must be at least 1".into()));
    }
    let since = time_param("since", params.since.as_deref())?;
    let opened = state.taps.open().ok_or_else(|| {
        ApiError::Unavailable(format!(
            "{} taps are open: the most a node serves at once",
            colloquium_pipeline::tap::MAX_TAPS
        ))
    })?;
    let filter = Filter {
        source: params.source.clone(),
        sample: params.sample.unwrap_or(1),
    };
    let (listener, lines) = Listener::new(filter, buffer);
    let keep: Box<dyn Send + Sync> = match &params.pipeline {
        Some(pipeline) => {
            if since.is_some() {
                return Err(ApiError::BadRequest(
                    "`since` replays the log: tap without `pipeline` (a stage's results are at /api/results)".into(),
                ));
            }
            let stages = (state.taps.stages_of(pipeline))
                .ok_or_else(|| ApiError::NoSuch(format!("pipeline `{pipeline}`")))?;
            let point = match &params.stage {
                Some(stage) => stages
                    .iter()
                    .find(|s| ***s == **stage)
                    .cloned()
                    .ok_or_else(|| {
                        ApiError::NoSuch(format!("stage `{stage}` of pipeline `{pipeline}`"))
                    })?,
                None => Arc::from(colloquium_pipeline::tap::OUTPUTS),
            };
            let point = state.taps.point(&Arc::from(pipeline.as_str()), &point);
            // No history: live at once.
            let _ = listener.deliver_raw(LIVE).await;
            Box::new(point.attach(listener.clone()))
        }
        None if params.stage.is_some() => {
            return Err(ApiError::BadRequest("`stage` needs `pipeline`".into()));
        }
        None => {
            let task = tokio::spawn(follow_log(
                state.store.clone(),
                state.ids.clone(),
                listener.clone(),
                since,
            ));
            Box::new(AbortOnDrop(task))
        }
    };
    Ok(Sse::new(stream(lines, listener, Box::new((keep, opened)))).into_response())
}

/// Ends a task when the stream that needs it is dropped (the client left).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The SSE stream of a tap: its lines, and its counts when they change.
fn stream(
    lines: mpsc::Receiver<Bytes>,
    listener: Arc<Listener>,
    keep: Box<dyn Send + Sync>,
) -> impl futures::Stream<Item = Result<SseEvent, Infallible>> {
    struct Streaming {
        lines: mpsc::Receiver<Bytes>,
        listener: Arc<Listener>,
        ticks: tokio::time::Interval,
        last: Option<TapCounts>,
        quiet: u32,
        /// A marker taken while batching, sent next.
        pending: Option<Bytes>,
        _keep: Box<dyn Send + Sync>,
    }
    let state = Streaming {
        lines,
        listener,
        ticks: tokio::time::interval(Duration::from_millis(500)),
        last: None,
        quiet: 0,
        pending: None,
        _keep: keep,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            let first = match s.pending.take() {
                Some(line) => Some(line),
                None => tokio::select! {
                    line = s.lines.recv() => Some(line?),
                    _ = s.ticks.tick() => None,
                },
            };
            let Some(first) = first else {
                let counts = s.listener.counts();
                s.quiet += 1;
                if s.last != Some(counts) || s.quiet >= 10 {
                    s.last = Some(counts);
                    s.quiet = 0;
                    let body = serde_json::to_string(&counts).unwrap_or_default();
                    return Some((Ok(SseEvent::default().event("status").data(body)), s));
                }
                continue;
            };
            if first.is_empty() {
                return Some((Ok(SseEvent::default().event("live").data("{}")), s));
            }
            // What is waiting goes as one message, one event per `data:` line (event JSON
            // holds no raw newline: serde escapes them in strings): framing and flushing
            // once per batch, not per event.
            let mut batch = Vec::with_capacity(first.len() * 4);
            batch.extend_from_slice(&first);
            for _ in 1..BATCH_EVENTS {
                match s.lines.try_recv() {
                    Ok(line) if line.is_empty() => {
                        s.pending = Some(line);
                        break;
                    }
                    Ok(line) => {
                        batch.push(b'\n');
                        batch.extend_from_slice(&line);
                    }
                    Err(_) => break,
                }
            }
            let data = String::from_utf8(batch)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return Some((Ok(SseEvent::default().data(data)), s));
        }
    })
}

/// A log tap: the history from `since` (if any), then the live feed, until the reader leaves.
async fn follow_log(
    store: Store,
    ids: Arc<IdGenerator>,
    listener: Arc<Listener>,
    since: Option<Timestamp>,
) {
    let feed = store.feed();
    // Subscribed before the history is read: a batch reserved after `issued` is read is
    // published after this, so it is in the subscription.
    let mut subscription = feed.subscribe_lossy(FEED_EVENTS);
    let mut issued = ids.issued();
    let mut after: Option<EventId> = None;
    if let Some(since) = since {
        let mut passes = 0;
        loop {
            let watermark = ids.watermark();
            let read = {
                let store = store.clone();
                let range = ScanRange {
                    since: Some(since),
                    after,
                    ..ScanRange::default()
                };
                tokio::task::spawn_blocking(move || {
                    store.settled_events(range, watermark, HISTORY_CHUNK, false)
                })
                .await
            };
            let (events, more) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(error)) => {
                    tracing::error!(%error, "tap: reading the log failed");
                    return;
                }
                Err(_) => return,
            };
            for event in &events {
                if !listener.deliver(event).await {
                    return;
                }
            }
            after = events.last().map(|e| e.id).or(after);
            if more {
                continue;
            }
            if subscription.dropped() > 0 {
                passes += 1;
                if passes == CATCH_UP_PASSES {
                    // The reader is slower than ingest: it cannot catch up without loss. Live
                    // from here, the feed's drops counted as the tap's.
                    break;
                }
                // Nothing from it was used yet, and the log has what it dropped: start over.
                subscription = feed.subscribe_lossy(FEED_EVENTS);
                issued = ids.issued();
                continue;
            }
            // Every batch reserved before the subscription has settled and been read.
            if issued.is_none_or(|i| watermark.is_some_and(|w| w >= i)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if !listener.deliver_raw(LIVE).await {
        return;
    }
    let mut lost = 0;
    let mut looks = tokio::time::interval(LOOK);
    loop {
        looks.tick().await;
        if listener.closed() {
            return;
        }
        let batches = subscription.take().unwrap_or_default();
        for event in batches.iter().flat_map(|b| b.iter()) {
            // Read in the history already.
            if after.is_some_and(|a| event.id <= a) {
                continue;
            }
            listener.offer(event);
        }
        let dropped = subscription.dropped();
        listener.lost(dropped - lost);
        lost = dropped;
    }
}
