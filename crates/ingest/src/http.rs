//! `POST /events`: the HTTP source. Several named `http` sources may share the node's main
//! listener, each on its own `path`; each stamps its events with its name.
//!
//! Answers `202 {"accepted": N, "ids": [...]}` only after the [`Accept`] handle reports the
//! batch durable. Every rejection is a JSON `{"error", "reason"}` body (plus `line` for NDJSON)
//! and stores nothing: 400 bad JSON or parameters, 413 too large, 415 wrong content type,
//! 503 + `Retry-After` when overloaded (`server.max_pending_events` events or
//! `server.max_pending_bytes` body bytes in flight), shutting down or the store is failing.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use colloquium_event::{EventId, Priority, Timestamp};
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::body::{self, BodyFormat};
use crate::source::{
    IngestSettings, Source, SourceBuildContext, SourceConfig, SourceContext, SourceError,
};
use crate::stamp::{Envelope, Stamper};
use crate::{Accept, AcceptError, IngestMetrics};
use colloquium_config::ConfigError;

/// What a refused request's body may still send, read and thrown away before the answer.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// How long that reading may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Paths the node's own routes use; a source may not take them.
const RESERVED: [&str; 4] = ["/api", "/health", "/metrics", "/admin"];

/// `sources.NAME: {type: http, path: /events/mobile}`: `POST` on this path of the node's main
/// listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The path events are posted to.
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/events".to_owned()
}

impl SourceConfig for HttpConfig {
    const KIND: &'static str = "http";

    fn validate(&self, at: &str) -> Vec<ConfigError> {
        let path = &self.path;
        let plain = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c));
        let reserved = RESERVED
            .iter()
            .any(|r| path == r || path.starts_with(&format!("{r}/")));
        let message = if !plain {
            format!(
                "`{path}` is not a plain path such as `/events/mobile` (letters, digits, `/`, `_`, `-`, `.`)"
            )
        } else if reserved {
            format!(
                "`{path}` is one of the node's own routes ({})",
                RESERVED.join(", ")
            )
        } else {
            return Vec::new();
        };
        vec![ConfigError::new(format!("{at}.path"), message)]
    }

    fn build<A: Accept>(
        self,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, ConfigError> {
        let shared = Arc::new(Shared {
            accept: cx.accept.clone(),
            stamper: cx.stamper(),
            limits: cx.http.limits(cx.settings),
            metrics: cx.metrics.clone(),
            source: cx.name,
            persist: cx.persist,
        });
        let router = Router::new()
            .route(&self.path, post(post_events::<A>))
            .with_state(shared);
        let at = cx.at.clone();
        cx.http.mount(&self.path, &at, router)?;
        Ok(Box::new(HttpSource))
    }
}

/// A running HTTP source: its route is served by the node's main listener, which drains its
/// requests at shutdown; the source itself only waits for it.
struct HttpSource;

#[async_trait::async_trait]
impl Source for HttpSource {
    async fn run(self: Box<Self>, mut cx: SourceContext) -> Result<(), SourceError> {
        let _ = cx.shutdown.wait_for(|stop| *stop).await;
        Ok(())
    }
}

/// What every HTTP source's requests count against together (`server.max_pending_events`,
/// `server.max_pending_bytes`, `server.max_body_size`).
pub(crate) struct Limits {
    pending: Semaphore,
    max_pending: usize,
    pending_bytes: Semaphore,
    max_body_size: usize,
}

impl Limits {
    pub(crate) fn new(settings: &IngestSettings) -> Self {
        let max_pending = settings.max_pending_events.clamp(1, Semaphore::MAX_PERMITS);
        let max_bytes = settings.max_pending_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Limits {
            pending: Semaphore::new(max_pending),
            max_pending,
            pending_bytes: Semaphore::new(max_bytes),
            max_body_size: settings.max_body_size,
        }
    }
}

struct Shared<A> {
    accept: A,
    stamper: Stamper,
    limits: Arc<Limits>,
    metrics: IngestMetrics,
    /// The source's name, for metrics.
    source: &'static str,
    /// Whether its events are written to the log (`persist:`).
    persist: bool,
}

/// Optional query parameters of `POST /events`, applied to every event of the request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostParams {
    priority: Option<String>,
    topic: Option<String>,
    routing_key: Option<String>,
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    ids: Vec<EventId>,
}

/// A rejection: status, bounded reason code, message.
#[derive(Debug)]
struct Rejection {
    status: StatusCode,
    reason: &'static str,
    message: String,
    line: Option<usize>,
    events: usize,
    /// Refused before any of the body was read.
    unread: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

impl Rejection {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
            line: None,
            events: 0,
            unread: false,
        }
    }

    fn before_body(mut self) -> Self {
        self.unread = true;
        self
    }

    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            reason: self.reason,
            line: self.line,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let after = if self.reason == "shutting_down" {
                "5"
            } else {
                "1"
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        response
    }
}

async fn post_events<A: Accept>(
    State(shared): State<Arc<Shared<A>>>,
    params: Result<Query<PostParams>, QueryRejection>,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let started = Instant::now();
    match ingest(&shared, params, &headers, &mut body).await {
        Ok(accepted) => {
            let count = accepted.accepted;
            shared
                .metrics
                .accepted(shared.source, count, started.elapsed().as_secs_f64());
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
        }
        Err(rejection) => {
            shared
                .metrics
                .rejected(shared.source, rejection.reason, rejection.events);
            // A client waiting for `100 Continue` sends no body unless we start reading it.
            let waits = rejection.unread && expects_continue(&headers);
            let drained = waits || drain(&mut body, &headers).await;
            let mut response = rejection.into_response();
            if !drained {
                // The rest of the body is still coming: this connection cannot carry another
                // request, and the client should know before it sends more.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads what is left of a refused request's body and throws it away, so that a client that
/// sends its whole body before it reads the answer (curl, Python's `urllib` and `requests`,
/// Go's `net/http`) gets the answer rather than a connection reset under its upload. Bounded:
/// [`DRAIN_MAX_BYTES`] more bytes (a declared `Content-Length` above it is not waited for) and
/// [`DRAIN_TIME`]. Returns whether the body was read to its end.
async fn drain(body: &mut Body, headers: &HeaderMap) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_MAX_BYTES) {
        return false;
    }
    let read = async {
        let mut left = DRAIN_MAX_BYTES;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let size = frame.data_ref().map_or(0, |d| d.len() as u64);
            match left.checked_sub(size) {
                Some(rest) => left = rest,
                None => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

async fn ingest<A: Accept>(
    shared: &Shared<A>,
    params: Result<Query<PostParams>, QueryRejection>,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<Accepted, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let format = BodyFormat::from_content_type(content_type).ok_or_else(|| {
        Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "unsupported content type `{}`: use application/json or application/x-ndjson",
                content_type.unwrap_or_default()
            ),
        )
        .before_body()
    })?;
    let envelope = envelope(params).map_err(Rejection::before_body)?;
    // Held until the batch is durable or rejected: the body, what is parsed from it and its
    // encoded records all live until then.
    let (bytes, _bytes_permit) = read_body(body, shared).await?;
    // Before the body is parsed (a refused request costs no parsing) and before any id is
    // taken (a refused request holds up nobody's reads); after it is read, so the
    // connection stays open for the retry.
    if let Some(lane) = shared.accept.full(&mut std::iter::once(envelope.priority)) {
        return Err(Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lane_full",
            format!(
                "lane {lane} is full (its overflow policy is block, or the control plane paused it); retry shortly"
            ),
        ));
    }
    let payloads = body::parse(&bytes, format).map_err(|e| {
        let mut rejection = Rejection::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string());
        rejection.line = e.line();
        rejection
    })?;
    drop(bytes);
    let count = payloads.len();
    shared.metrics.received(shared.source, count);

    if count > shared.limits.max_pending {
        let mut rejection = Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!(
                "batch of {count} events exceeds server.max_pending_events ({})",
                shared.limits.max_pending
            ),
        );
        rejection.events = count;
        return Err(rejection);
    }
    // `count <= max_pending <= Semaphore::MAX_PERMITS < u32::MAX`.
    let permits = u32::try_from(count).unwrap_or(u32::MAX);
    let _permit = shared
        .limits
        .pending
        .try_acquire_many(permits)
        .map_err(|_| {
            let mut rejection = Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many events waiting to be stored (server.max_pending_events); retry shortly",
            );
            rejection.events = count;
            rejection
        })?;

    let (events, reservation) = shared.stamper.stamp(payloads, &envelope, Timestamp::now());
    let ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let taken = if shared.persist {
        shared.accept.accept(events, reservation).await
    } else {
        shared.accept.publish(events, reservation).await
    };
    taken.map_err(|e| {
        let reason = match e {
            AcceptError::ShuttingDown => "shutting_down",
            AcceptError::Overloaded => "overloaded",
            AcceptError::Unavailable(_) => "storage_unavailable",
            AcceptError::Full(_) => "lane_full",
        };
        let mut rejection = Rejection::new(StatusCode::SERVICE_UNAVAILABLE, reason, e.to_string());
        rejection.events = count;
        rejection
    })?;
    Ok(Accepted {
        accepted: count,
        ids,
    })
}

fn envelope(params: Result<Query<PostParams>, QueryRejection>) -> Result<Envelope, Rejection> {
    let bad =
        |message: String| Rejection::new(StatusCode::BAD_REQUEST, "invalid_parameter", message);
    let Query(params) =
        params.map_err(|e| bad(colloquium_telemetry::http::query_rejection_message(&e)))?;
    let priority = match params.priority {
        Some(p) => p.parse::<Priority>().map_err(|e| bad(e.to_string()))?,
        None => Priority::default(),
    };
    Ok(Envelope {
        priority,
        routing_key: params.routing_key,
        topic: params.topic,
    })
}

/// Reads the body, taking a permit of `server.max_pending_bytes` for each chunk as it arrives:
/// past the bound the request is refused (503) before more of it is held (the rest is read and
/// thrown away, see [`drain`]).
async fn read_body<'a, A>(
    body: &mut Body,
    shared: &'a Shared<A>,
) -> Result<(bytes::Bytes, Option<SemaphorePermit<'a>>), Rejection> {
    let limit = shared.limits.max_body_size;
    let too_large = || {
        Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds server.max_body_size ({limit} bytes)"),
        )
    };
    // A declared length over the limit is refused before any of it is read (a client that
    // waits for `100 Continue` then sends none of it).
    if axum::body::HttpBody::size_hint(body).lower() > limit as u64 {
        return Err(too_large().before_body());
    }
    let mut body = Limited::new(body, limit);
    let mut permit: Option<SemaphorePermit<'a>> = None;
    let mut chunks: Vec<bytes::Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "body_read",
                    format!("reading request body: {e}"),
                )
            }
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let size = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let more = shared.limits.pending_bytes.try_acquire_many(size).map_err(|_| {
            Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bytes waiting to be stored (server.max_pending_bytes); retry shortly",
            )
        })?;
        match &mut permit {
            Some(held) => held.merge(more),
            None => permit = Some(more),
        }
        chunks.push(chunk);
    }
    // One chunk (the usual case for a small body) is used as it is, without a copy.
    let body = match chunks.len() {
        0 => bytes::Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => bytes::Bytes::from(chunks.concat()),
    };
    Ok((body, permit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use colloquium_event::{Event, Reservation};
    use colloquium_telemetry::MetricsRegistry;
    use serde_json::Value;
    use std::sync::Mutex;
    use tower::ServiceExt;

    type Fail = fn() -> AcceptError;

    /// Collects accepted batches, or fails every batch with a fixed error.
    #[derive(Clone, Default)]
    struct Collect {
        events: Arc<Mutex<Vec<Event>>>,
        fail: Option<Fail>,
    }

    impl Accept for Collect {
        async fn accept(&self, events: Vec<Event>, _ids: Reservation) -> Result<(), AcceptError> {
            if let Some(fail) = self.fail {
                return Err(fail());
            }
            self.events.lock().unwrap().extend(events);
            Ok(())
        }
    }

    fn source(accept: Collect, max_body_size: usize, max_pending_events: usize) -> Router {
        let settings = IngestSettings {
            max_body_size,
            max_pending_events,
            max_pending_bytes: 64 << 20,
            timestamp_field: "ts".into(),
            pipeline: "default".into(),
            certificates: Default::default(),
        };
        mounted(accept, &settings)
    }

    /// The routes of one `http` source named `http` on `/events`, built as a node builds it.
    fn mounted<A: Accept>(accept: A, settings: &IngestSettings) -> Router {
        let mut routes = crate::source::HttpRoutes::default();
        let mut cx = SourceBuildContext {
            name: "http",
            at: "sources.http".into(),
            accept,
            ids: Arc::default(),
            metrics: IngestMetrics::register(&MetricsRegistry::default()),
            settings,
            http: &mut routes,
            persist: true,
            registry: MetricsRegistry::default(),
            health: Default::default(),
        };
        HttpConfig {
            path: "/events".into(),
        }
        .build(&mut cx)
        .unwrap();
        routes.into_router()
    }

    async fn post(
        router: Router,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = Request::post(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let response = router
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    const JSON: Option<&str> = Some("application/json");
    const NDJSON: Option<&str> = Some("application/x-ndjson");

    #[tokio::test]
    async fn accepts_every_body_shape_and_returns_ids() {
        let accept = Collect::default();
        let router = source(accept.clone(), 1 << 20, 1000);
        let (status, _, body) = post(
            router.clone(),
            "/events?priority=high&topic=t",
            JSON,
            r#"{"ts": 5}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["accepted"], 1);
        let (_, _, body) = post(router.clone(), "/events", None, r#"[{"a":1},{"a":2}]"#).await;
        assert_eq!(body["ids"].as_array().unwrap().len(), 2);
        let (_, _, body) = post(
            router,
            "/events",
            NDJSON,
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n",
        )
        .await;
        assert_eq!(body["accepted"], 3);

        let events = accept.events.lock().unwrap();
        assert_eq!(events.len(), 6);
        assert_eq!(events[0].timestamp.as_millis(), 5);
        assert_eq!(events[0].metadata.priority, Priority::High);
        assert_eq!(events[0].metadata.topic.as_deref(), Some("t"));
        assert_eq!(body["ids"][2], events[5].id.to_string());
    }

    #[tokio::test]
    async fn every_bad_input_gets_its_status_and_stores_nothing() {
        let accept = Collect::default();
        let router = source(accept.clone(), 64, 3);
        let cases: [(&str, Option<&str>, &str, StatusCode, &str); 9] = [
            (
                "/events",
                JSON,
                "{\"a\":",
                StatusCode::BAD_REQUEST,
                "invalid_body",
            ),
            ("/events", JSON, "", StatusCode::BAD_REQUEST, "invalid_body"),
            (
                "/events",
                JSON,
                "[{}, 1]",
                StatusCode::BAD_REQUEST,
                "invalid_body",
            ),
            (
                "/events",
                NDJSON,
                "{}\n{bad\n",
                StatusCode::BAD_REQUEST,
                "invalid_body",
            ),
            (
                "/events?priority=urgent",
                JSON,
                "{}",
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
            ),
            (
                "/events?nope=1",
                JSON,
                "{}",
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
            ),
            (
                "/events",
                Some("text/plain"),
                "{}",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "/events",
                JSON,
                &"[{}]".repeat(40),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
            (
                "/events",
                JSON,
                "[{},{},{},{}]",
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
            ),
        ];
        for (uri, content_type, body, want_status, want_reason) in cases {
            let (status, _, json) = post(router.clone(), uri, content_type, body).await;
            assert_eq!(status, want_status, "{body}: {json}");
            assert_eq!(json["reason"], want_reason, "{body}: {json}");
            assert!(json["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let (_, _, json) = post(router, "/events", NDJSON, "{}\n{bad\n").await;
        assert_eq!(json["line"], 2);
        assert!(accept.events.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn unavailable_store_answers_503_with_retry_after() {
        let cases: [(Fail, &str); 3] = [
            (|| AcceptError::ShuttingDown, "shutting_down"),
            (|| AcceptError::Overloaded, "overloaded"),
            (
                || AcceptError::Unavailable("disk full".into()),
                "storage_unavailable",
            ),
        ];
        for (fail, reason) in cases {
            let accept = Collect {
                fail: Some(fail),
                ..Default::default()
            };
            let (status, headers, json) =
                post(source(accept, 1024, 10), "/events", JSON, "{}").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(json["reason"], reason);
            assert!(headers.contains_key(header::RETRY_AFTER));
        }
    }

    #[tokio::test]
    async fn pending_limit_turns_into_503_overloaded() {
        /// Never finishes batches of two or more (holds their permits, as a slow store
        /// would); single events go through.
        #[derive(Clone)]
        struct Stuck;
        impl Accept for Stuck {
            async fn accept(
                &self,
                events: Vec<Event>,
                _ids: Reservation,
            ) -> Result<(), AcceptError> {
                if events.len() > 1 {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
        // Events in flight, then bytes in flight, bound what the stuck batch leaves room for.
        for (max_pending_events, max_pending_bytes, bound) in [
            (2, 1024, "server.max_pending_events"),
            (100, 10, "server.max_pending_bytes"),
        ] {
            let settings = IngestSettings {
                max_body_size: 10,
                max_pending_events,
                max_pending_bytes,
                timestamp_field: "ts".into(),
                pipeline: "default".into(),
                certificates: Default::default(),
            };
            let router = mounted(Stuck, &settings);
            let held = tokio::spawn(
                router.clone().oneshot(
                    Request::post("/events")
                        .body(Body::from("[{},{}]"))
                        .unwrap(),
                ),
            );
            // Wait until the first request holds its permits.
            loop {
                let response = router
                    .clone()
                    .oneshot(Request::post("/events").body(Body::from("[{}]")).unwrap())
                    .await
                    .unwrap();
                if response.status() == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    let json: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(json["reason"], "overloaded");
                    assert!(json["error"].as_str().unwrap().contains(bound), "{json}");
                    break;
                }
                tokio::task::yield_now().await;
            }
            held.abort();
            let _ = held.await;
            // Its permits are back: the same request goes through.
            let (status, _, _) = post(router, "/events", None, "[{}]").await;
            assert_eq!(status, StatusCode::ACCEPTED, "{bound}");
        }
    }
}
