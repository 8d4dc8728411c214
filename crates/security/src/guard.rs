//! The route guard: one middleware on both listeners that looks up each request's route in
//! the route table, checks its bearer token for the route's scope, slows addresses that keep
//! failing, and writes the audit log.
//!
//! A route missing from the table is refused (`403`, `unscoped_route`): a route added without
//! a scope fails closed, and the API's route-table test fails.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colloquium_config::security::{AuthConfig, FailureLimit, Scope};
use colloquium_telemetry::MetricsRegistry;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::audit::{Audit, AuditRecord};
use crate::tokens::{Scopes, Tokens, bearer};

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (`/health`: liveness; its detail needs `read`).
    Open,
    /// A token with this scope.
    Needs(Scope),
}

/// Each route (method and axum path pattern) and what it needs.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// By path, then by [`METHODS`] index: looked up per request without allocating.
    routes: HashMap<String, [Option<Access>; METHODS.len()]>,
}

/// The methods routes are mounted with (`HEAD` is looked up as `GET`).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

fn method_index(method: &Method) -> Option<usize> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    METHODS.iter().position(|m| m == method)
}

impl RouteTable {
    /// A table of `routes`.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a (Method, &'static str, Access)>) -> Self {
        let mut table = RouteTable::default();
        for (method, path, access) in routes {
            table.insert(method.clone(), path, *access);
        }
        table
    }

    /// Adds (or replaces) a route; a method other than GET, POST, PUT, PATCH or DELETE is
    /// never mounted, and ignored.
    pub fn insert(&mut self, method: Method, path: &str, access: Access) {
        if let Some(i) = method_index(&method) {
            self.routes.entry(path.to_owned()).or_default()[i] = Some(access);
        }
    }

    /// What `method` on `route` needs; `HEAD` as `GET`.
    pub fn access(&self, method: &Method, route: &str) -> Option<Access> {
        self.routes.get(route)?[method_index(method)?]
    }

    /// The methods `route` has in the table (`None`: the path is not in it).
    pub fn methods(&self, route: &str) -> Option<Vec<Method>> {
        let accesses = self.routes.get(route)?;
        Some(
            accesses
                .iter()
                .zip(&METHODS)
                .filter(|(access, _)| access.is_some())
                .map(|(_, method)| method.clone())
                .collect(),
        )
    }
}

/// Who is calling, put in each request's extensions for handlers (`/health` shows its detail
/// only to `read`).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name; `None` without a token.
    pub token: Option<Arc<str>>,
    /// What it may do: every scope when authentication is off.
    pub scopes: Scopes,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `colloquium_auth_refused_total{reason}` and `colloquium_auth_audit_errors_total`.
#[derive(Clone, Default)]
pub struct AuthMetrics {
    refused: Family<ReasonLabels, Counter>,
    audit_errors: Counter,
}

impl AuthMetrics {
    /// Registers the guard's metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = AuthMetrics::default();
        registry.register("auth", |r| {
            r.register(
                "refused",
                "Requests refused by reason (missing_token, bad_token, missing_scope, throttled, unscoped_route)",
                m.refused.clone(),
            );
            r.register(
                "audit_errors",
                "Audit log lines that could not be written",
                m.audit_errors.clone(),
            );
        });
        m
    }
}

/// What a reload replaces at once.
struct Current {
    tokens: Tokens,
    failures: DefaultKeyedRateLimiter<IpAddr>,
}

/// Addresses refused for a while after too many failures.
#[derive(Default)]
struct Penalties {
    until: Mutex<HashMap<IpAddr, Instant>>,
    /// Entries in `until`, so requests skip the lock when nobody is penalized.
    count: AtomicUsize,
}

/// Entries kept before expired penalties are swept.
const MAX_PENALTIES: usize = 10_000;

impl Penalties {
    fn remaining(&self, ip: IpAddr) -> Option<Duration> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match until.get(&ip) {
            Some(&end) if end > now => Some(end - now),
            Some(_) => {
                until.remove(&ip);
                self.count.store(until.len(), Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    fn penalize(&self, ip: IpAddr, wait: Duration) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if until.len() >= MAX_PENALTIES {
            until.retain(|_, end| *end > now);
        }
        until.insert(ip, now + wait);
        self.count.store(until.len(), Ordering::Relaxed);
    }
}

/// Failures between two sweeps of the failure limiter's idle addresses.
const FORGET_EVERY: usize = 4096;

/// The guard both listeners share.
pub struct Guard {
    /// Failures so far, to sweep the limiter every [`FORGET_EVERY`].
    failures_seen: AtomicUsize,
    current: RwLock<Arc<Current>>,
    routes: RouteTable,
    audit: Audit,
    penalties: Penalties,
    metrics: AuthMetrics,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("audit", &self.audit.path())
            .finish_non_exhaustive()
    }
}

fn failure_limiter(auth: Option<&AuthConfig>) -> DefaultKeyedRateLimiter<IpAddr> {
    let limit = match auth {
        Some(AuthConfig::Tokens(config)) => config.failures,
        _ => FailureLimit::default(),
    };
    RateLimiter::keyed(Quota::per_minute(limit.per_minute).allow_burst(limit.burst))
}

impl Guard {
    /// A guard over `routes` accepting `tokens`, auditing to `audit`.
    pub fn new(
        routes: RouteTable,
        tokens: Tokens,
        auth: Option<&AuthConfig>,
        audit: Audit,
        metrics: AuthMetrics,
    ) -> Self {
        Guard {
            current: RwLock::new(Arc::new(Current {
                tokens,
                failures: failure_limiter(auth),
            })),
            routes,
            audit,
            penalties: Penalties::default(),
            metrics,
            failures_seen: AtomicUsize::new(1),
        }
    }

    /// Replaces the accepted tokens (a reload): requests from now on are checked against
    /// `tokens` only. Past failures are forgotten only if the limit changed.
    pub fn rotate(&self, tokens: Tokens, auth: Option<&AuthConfig>) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let failures = failure_limiter(auth);
        *current = Arc::new(Current { tokens, failures });
    }

    fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn audit(&self, request: &Seen, token: Option<&str>, status: StatusCode, reason: Option<&str>) {
        let record = AuditRecord {
            time: crate::audit::now(),
            token,
            method: request.method.as_str(),
            route: &request.route,
            path: &request.path,
            address: request.address,
            outcome: if reason.is_some() {
                "refused"
            } else {
                "allowed"
            },
            status: status.as_u16(),
            reason,
        };
        if self.audit.write(&record).is_err() {
            self.metrics.audit_errors.inc();
        }
    }

    fn refuse(&self, request: &Seen, token: Option<&str>, refusal: Refusal) -> Response {
        let (status, reason) = (refusal.status(), refusal.reason());
        self.metrics
            .refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        self.audit(request, token, status, Some(reason));
        refusal.into_response()
    }
}

/// What the guard saw of a request, for the audit log.
struct Seen {
    method: Method,
    route: String,
    path: String,
    address: Option<SocketAddr>,
}

/// Why a request was refused.
enum Refusal {
    Missing,
    Malformed(crate::tokens::BearerError),
    BadToken,
    MissingScope(Scope),
    Throttled(Duration),
    Unscoped,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Missing | Refusal::Malformed(_) | Refusal::BadToken => {
                StatusCode::UNAUTHORIZED
            }
            Refusal::MissingScope(_) | Refusal::Unscoped => StatusCode::FORBIDDEN,
            Refusal::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing_token",
            Refusal::Malformed(_) | Refusal::BadToken => "bad_token",
            Refusal::MissingScope(_) => "missing_scope",
            Refusal::Throttled(_) => "throttled",
            Refusal::Unscoped => "unscoped_route",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.reason();
        let mut body = serde_json::json!({ "reason": reason });
        let error = match &self {
            Refusal::Missing => {
                "this route needs a bearer token (Authorization: Bearer <token>)".to_owned()
            }
            Refusal::Malformed(e) => e.to_string(),
            Refusal::BadToken => "the bearer token is not valid".to_owned(),
            Refusal::MissingScope(scope) => {
                body["scope"] = scope.as_str().into();
                format!(
                    "this route needs a token with the `{}` scope",
                    scope.as_str()
                )
            }
            Refusal::Throttled(wait) => format!(
                "too many failed authentications from this address; retry in {} s",
                wait.as_secs().max(1)
            ),
            Refusal::Unscoped => "this route has no scope in the route table".to_owned(),
        };
        body["error"] = error.into();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Refusal::Missing => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"colloquium\""),
                );
            }
            Refusal::Malformed(_) | Refusal::BadToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"colloquium\", error=\"invalid_token\"",
                    ),
                );
            }
            Refusal::MissingScope(scope) => {
                let value = format!(
                    "Bearer realm=\"colloquium\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.as_str()
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Refusal::Throttled(wait) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                );
            }
            Refusal::Unscoped => {}
        }
        response
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(guard, check)` on each listener's
/// router (as a layer over every route, so [`MatchedPath`] is known).
pub async fn check(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>().cloned() else {
        // No route matched: the router answers 404 / 405 itself.
        return next.run(request).await;
    };
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let seen = |request: &Request| Seen {
        method: request.method().clone(),
        route: route.as_str().to_owned(),
        path: request.uri().path().to_owned(),
        address,
    };
    let Some(access) = guard.routes.access(request.method(), route.as_str()) else {
        if let Some(methods) = guard.routes.methods(route.as_str()) {
            // A known route asked with another method (`TRACE /health`): what the router says.
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let error = format!("{} takes {allow}, not {}", route.as_str(), request.method());
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, allow)],
                axum::Json(serde_json::json!({ "error": error, "reason": "method_not_allowed" })),
            )
                .into_response();
        }
        tracing::error!(route = route.as_str(), method = %request.method(), "a mounted route is missing from the route table; refused");
        return guard.refuse(&seen(&request), None, Refusal::Unscoped);
    };
    let current = guard.current();
    let needs = match access {
        Access::Open => None,
        Access::Needs(scope) => Some(scope),
    };
    let caller = if current.tokens.required() {
        let mut headers = request.headers().get_all(header::AUTHORIZATION).iter();
        let presented = match (headers.next(), headers.next()) {
            (None, _) => None,
            (Some(value), None) => Some(bearer(value.as_bytes())),
            // A proxy that adds its own header must not let the client's first one decide.
            (Some(_), Some(_)) => Some(Err(crate::tokens::BearerError::Repeated)),
        };
        if let Some(scope) = needs {
            let ip = address.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
            // A penalized address is refused before its token is even looked at, so guessing
            // gains nothing from going on.
            if let Some(wait) = guard.penalties.remaining(ip) {
                return guard.refuse(&seen(&request), None, Refusal::Throttled(wait));
            }
            let verified = match presented {
                Some(Ok(token)) => current.tokens.verify(token),
                _ => None,
            };
            let Some((name, scopes)) = verified else {
                let refusal = match presented {
                    None => Refusal::Missing,
                    Some(Err(e)) => Refusal::Malformed(e),
                    Some(Ok(_)) => Refusal::BadToken,
                };
                if let Err(not_until) = current.failures.check_key(&ip) {
                    let wait = not_until.wait_time_from(current.failures.clock().now());
                    guard
                        .penalties
                        .penalize(ip, wait.max(Duration::from_secs(1)));
                }
                // The limiter keeps a cell per address that ever failed: forget the full ones
                // now and then, so failures from many addresses do not grow it for good.
                if guard.failures_seen.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == 0 {
                    current.failures.retain_recent();
                    current.failures.shrink_to_fit();
                }
                return guard.refuse(&seen(&request), None, refusal);
            };
            if !scopes.contains(scope) {
                let refusal = Refusal::MissingScope(scope);
                return guard.refuse(&seen(&request), Some(&name), refusal);
            }
            Caller {
                token: Some(name),
                scopes,
            }
        } else {
            // An open route: a good token shows more (`/health`), a bad one is no failure.
            let verified = match presented {
                Some(Ok(token)) => current.tokens.verify(token),
                _ => None,
            };
            Caller {
                token: verified.as_ref().map(|(name, _)| name.clone()),
                scopes: verified.map_or(Scopes::NONE, |(_, scopes)| scopes),
            }
        }
    } else {
        Caller {
            token: None,
            scopes: Scopes::ALL,
        }
    };
    if needs != Some(Scope::Admin) {
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    // Admin actions are audited with their outcome.
    let (seen, token) = (seen(&request), caller.token.clone());
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    guard.audit(&seen, token.as_deref(), response.status(), None);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use colloquium_config::security::{TokenConfig, TokensConfig};
    use tower::ServiceExt;

    const GOOD: &str = "a-good-token-0123456789";

    fn app(dir: &std::path::Path) -> Router {
        let auth = AuthConfig::Tokens(TokensConfig {
            tokens: vec![TokenConfig {
                name: "reader".into(),
                scopes: vec![Scope::Read],
                token: Some(GOOD.into()),
                token_file: None,
                sha256: None,
            }],
            failures: FailureLimit {
                burst: std::num::NonZeroU32::new(2).unwrap(),
                per_minute: std::num::NonZeroU32::new(1).unwrap(),
            },
        });
        let tokens = Tokens::from_config(Some(&auth), dir).unwrap();
        let routes = RouteTable::new(&[(Method::GET, "/x", Access::Needs(Scope::Read))]);
        let audit = Audit::open(&dir.join("audit.log")).unwrap();
        let guard = Arc::new(Guard::new(
            routes,
            tokens,
            Some(&auth),
            audit,
            AuthMetrics::default(),
        ));
        Router::new()
            .route("/x", get(|| async { "ok" }))
            .route("/unscoped", get(|| async { "oops" }))
            .layer(axum::middleware::from_fn_with_state(guard, check))
    }

    async fn status(app: &Router, path: &str, from: &str, token: &str) -> u16 {
        let mut request = Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = from.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone()
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// One address past its failure burst is refused, even with a good token; another
    /// address is not slowed at all.
    #[tokio::test]
    async fn failures_are_limited_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        let (a, b) = ("127.0.0.1:1000", "[::1]:2000");
        assert_eq!(status(&app, "/x", a, "bad-token-000000000").await, 401);
        assert_eq!(status(&app, "/x", a, "bad-token-000000000").await, 401);
        assert_eq!(status(&app, "/x", a, "bad-token-000000000").await, 401);
        assert_eq!(status(&app, "/x", a, GOOD).await, 429);
        assert_eq!(status(&app, "/x", b, "bad-token-000000000").await, 401);
        assert_eq!(status(&app, "/x", b, GOOD).await, 200);
        assert_eq!(status(&app, "/x", a, GOOD).await, 429);
        // Two Authorization headers, the first good: refused, whichever is first.
        let mut request = Request::builder()
            .uri("/x")
            .header(header::AUTHORIZATION, format!("Bearer {GOOD}"))
            .header(header::AUTHORIZATION, "Bearer another-token-000000")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = "[::1]:3000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 401);
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(
            audit
                .lines()
                .filter(|l| l.contains("\"throttled\""))
                .count(),
            2
        );
        assert!(!audit.contains(GOOD));
    }

    /// A mounted route missing from the table is refused, whatever the token.
    #[tokio::test]
    async fn a_route_without_a_scope_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path());
        assert_eq!(status(&app, "/unscoped", "127.0.0.1:1", GOOD).await, 403);
        // A method the route does not have is the router's 405, not a refusal.
        let request = Request::builder()
            .method("TRACE")
            .uri("/x")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status().as_u16(), 405);
        assert_eq!(response.headers()["allow"], "GET");
        assert_eq!(status(&app, "/x", "127.0.0.1:1", GOOD).await, 200);
    }
}
