//! Counts HTTP requests by matched route and status, and times them.
//!
//! The route label is the route template (`/api/events/{id}`), never the raw path, so the label
//! set stays bounded; unmatched paths count as `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::MetricsRegistry;
use crate::metrics::{HistogramFamily, latency_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// HTTP request metrics: `colloquium_http_requests_total{method,route,status}`,
/// `colloquium_http_request_duration_seconds{route}` and `colloquium_http_requests_in_flight`.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RouteLabels>,
    in_flight: Gauge,
}

/// Decrements the in-flight gauge however the request ends (also when it is cancelled).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl HttpMetrics {
    /// Registers the HTTP metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        registry.register("http", |r| {
            let requests = Family::<RequestLabels, Counter>::default();
            r.register(
                "requests",
                "HTTP requests by route and status",
                requests.clone(),
            );
            let duration = HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
            r.register(
                "request_duration_seconds",
                "HTTP request duration",
                duration.clone(),
            );
            let in_flight = Gauge::default();
            r.register(
                "requests_in_flight",
                "HTTP requests being handled",
                in_flight.clone(),
            );
            Self {
                requests,
                duration,
                in_flight,
            }
        })
    }

    /// Axum middleware (`axum::middleware::from_fn_with_state`) recording every request.
    pub async fn track(
        axum::extract::State(metrics): axum::extract::State<HttpMetrics>,
        request: Request,
        next: Next,
    ) -> Response {
        let started = Instant::now();
        metrics.in_flight.inc();
        let _in_flight = InFlight(metrics.in_flight.clone());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
            .to_owned();
        let method = request.method().as_str().to_owned();
        let response = next.run(request).await;
        let status = response.status().as_u16();
        metrics
            .duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        metrics
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        response
    }
}

/// Our words for a query string that did not deserialize: an unknown or repeated parameter,
/// named, instead of the framework's "Failed to deserialize query string". Parameter types
/// should be strings, parsed by the handler (which names the parameter), so these are the only
/// errors left.
pub fn query_rejection_message(rejection: &axum::extract::rejection::QueryRejection) -> String {
    // The innermost error is serde's: "unknown field `x`, expected one of `a`, `b`" or
    // "duplicate field `x`".
    let mut cause: &dyn std::error::Error = rejection;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let name = |rest: &str| -> String {
        rest.split('`')
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take(40)
            .collect()
    };
    // serde_path_to_error may put a path before it.
    let find = |needle: &str| text.find(needle).map(|at| &text[at + needle.len()..]);
    if let Some(rest) = find("unknown field ") {
        let known: Vec<&str> = rest.split('`').skip(3).step_by(2).collect();
        let takes = if known.is_empty() {
            "no parameters".to_owned()
        } else {
            known.join(", ")
        };
        format!(
            "unknown query parameter `{}`; this endpoint takes {takes}",
            name(rest)
        )
    } else if let Some(rest) = find("duplicate field ") {
        format!("query parameter `{}` is given more than once", name(rest))
    } else {
        "the query string is not valid URL encoding".to_owned()
    }
}
