//! A stage defined here, not shipped, keeps results in a table of its own, and they are
//! queried through the generic route `GET /api/results/{pipeline}/{stage}/{table}` with no
//! change anywhere else: its file (`results/totals.rs`) and one registration line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "results/totals.rs"]
mod totals;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use colloquium_api::ApiState;
use colloquium_event::{Event, IdGenerator, Metadata, Timestamp};
use colloquium_pipeline::{PipelineMetrics, Registry, Runtime};
use colloquium_storage::{StorageMetrics, Store, StoreOptions};
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::health::HealthBoard;
use colloquium_telemetry::process::ProcessMetrics;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const CONFIG: &str = "pipelines:\n  - name: ledger\n    start_from: earliest\n    stages:\n      - {type: totals, id: sums}\n";

async fn get(state: &ApiState, uri: &str) -> (StatusCode, Value) {
    let router = colloquium_api::router(state.clone());
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_defined_in_a_test_is_queryable_through_the_generic_route() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = MetricsRegistry::default();
    let store = Store::open(
        StoreOptions {
            sync: false,
            ..StoreOptions::new(dir.path())
        },
        StorageMetrics::register(&metrics),
    )
    .unwrap();
    // The one registration line.
    let registry = Registry::default().stage::<totals::TotalsConfig>();
    let config = colloquium_config::from_str(CONFIG, &|_| None).unwrap();
    let ids = Arc::new(IdGenerator::default());
    let lanes = colloquium_router::Lanes::new(&config.lanes, &config.control);
    let runtime = Runtime::start(
        &config,
        &registry,
        store.clone(),
        ids.clone(),
        PipelineMetrics::register(&metrics),
        HealthBoard::default(),
        lanes.clone(),
    )
    .unwrap();

    let data = [("alice", 10, 5.0), ("bob", 20, 1.5), ("alice", 30, 2.5)];
    let (reserved, reservation) = ids.reserve(Timestamp::now(), data.len());
    let events: Vec<Event> = reserved
        .iter()
        .zip(data)
        .map(|(id, (account, ms, amount))| Event {
            id: *id,
            timestamp: Timestamp::from_millis(ms),
            ingest_time: id.timestamp(),
            data: json!({"account": account, "amount": amount})
                .as_object()
                .cloned()
                .unwrap(),
            metadata: Metadata::new("http", "default"),
        })
        .collect();
    store
        .append_settling(events.into(), reservation)
        .await
        .unwrap();
    runtime.handle().notify();

    let state = ApiState {
        store: store.clone(),
        registry: metrics.clone(),
        process: ProcessMetrics::register(&metrics),
        min_free_disk: 0,
        draining: Arc::default(),
        board: HealthBoard::default(),
        sources: HealthBoard::default(),
        lanes,
        ai: None,
        similar: Arc::default(),
        taps: Arc::default(),
        ids: Arc::default(),
        config: None,
        storage_limits: Default::default(),
        openapi: "{}".into(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, body) = get(&state, "/api/results/ledger/sums/totals?key=alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["results"].as_array().map(Vec::len) == Some(2) {
            break body;
        }
        assert!(Instant::now() < deadline, "never kept: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        body["results"],
        json!([{"account": "alice", "total": 5.0}, {"account": "alice", "total": 7.5}])
    );
    // By time, and paged by cursor.
    let (_, later) = get(&state, "/api/results/ledger/sums/totals?key=alice&since=20").await;
    assert_eq!(
        later["results"],
        json!([{"account": "alice", "total": 7.5}])
    );
    // Keys are stored length first: `bob` before `alice`.
    let (_, first) = get(&state, "/api/results/ledger/sums/totals?limit=1").await;
    assert_eq!(first["results"], json!([{"account": "bob", "total": 1.5}]));
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = get(
        &state,
        &format!("/api/results/ledger/sums/totals?cursor={cursor}"),
    )
    .await;
    assert_eq!(
        rest["results"],
        json!([{"account": "alice", "total": 5.0}, {"account": "alice", "total": 7.5}])
    );
    // Another table, stage or pipeline has nothing; a bad cursor or parameter is a 400.
    let (_, none) = get(&state, "/api/results/ledger/sums/other").await;
    assert_eq!(none["results"], json!([]));
    let (status, _) = get(&state, "/api/results/ledger/sums/totals?cursor=zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get(&state, "/api/results/ledger/sums/totals?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    runtime.stop();
    store.close().unwrap();
}
