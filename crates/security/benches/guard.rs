//! The guard's cost per request: a trivial route without the guard, with it and no tokens
//! (a node without `server.auth`), and with a bearer token checked among 1 and 20 tokens.
//!
//! `taskset -c 1 cargo bench -p colloquium-security --bench guard`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::routing::post;
use colloquium_config::security::{AuthConfig, Scope, TokenConfig, TokensConfig};
use colloquium_security::{Access, Audit, AuthMetrics, Guard, RouteTable, Tokens};
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

const TOKEN: &str = "5ca4c57b54857d2a032505ae3abdbb3cec6bc252fa401e30de6df904b884fe77";

fn app(tokens: Option<usize>, dir: &std::path::Path) -> Router {
    let route = Router::new().route("/events", post(|| async { "ok" }));
    let Some(count) = tokens else {
        return route;
    };
    let auth = (count > 0).then(|| {
        AuthConfig::Tokens(TokensConfig {
            tokens: (0..count)
                .map(|i| TokenConfig {
                    name: format!("t{i}"),
                    scopes: vec![Scope::Ingest],
                    token: Some(if i + 1 == count {
                        TOKEN.to_owned()
                    } else {
                        format!("{TOKEN}{i}")
                    }),
                    token_file: None,
                    sha256: None,
                })
                .collect(),
            failures: Default::default(),
        })
    });
    let guard = Guard::new(
        RouteTable::new(&[(Method::POST, "/events", Access::Needs(Scope::Ingest))]),
        Tokens::from_config(auth.as_ref(), dir).unwrap(),
        auth.as_ref(),
        Audit::open(&dir.join("audit.log")).unwrap(),
        AuthMetrics::default(),
    );
    route.layer(axum::middleware::from_fn_with_state(
        Arc::new(guard),
        colloquium_security::guard::check,
    ))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let mut group = c.benchmark_group("guard");
    for (name, tokens) in [
        ("no guard", None),
        ("guard, no tokens", Some(0)),
        ("1 token", Some(1)),
        ("20 tokens", Some(20)),
    ] {
        let app = app(tokens, dir.path());
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut request = Request::post("/events")
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .body(Body::empty())
                    .unwrap();
                request.extensions_mut().insert(ConnectInfo(peer));
                let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
                assert!(response.status().is_success());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
