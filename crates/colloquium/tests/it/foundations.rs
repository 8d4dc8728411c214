//! The seams the next features build on, through the real binary: named sources on their own
//! paths, a held-open sink that delays no other pipeline, and stage state that follows its
//! stage id across a reload.

use std::collections::BTreeSet;
use std::time::Duration;

use colloquium_storage::{Store, StoreOptions};
use serde_json::Value;

use crate::harness::{Node, Receiver, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

/// `n` of every `data` in `values` (outputs or received events).
fn ns(values: &[Value], data: impl Fn(&Value) -> &Value) -> BTreeSet<u64> {
    values
        .iter()
        .filter_map(|v| data(v)["n"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_http_sources_have_their_own_paths_and_pipelines_take_from_them() {
    let node = Node::start(
        "sources:\n  mobile: {type: http, path: /events/mobile}\n  web: {type: http}\nsinks: {db: {type: store}}\npipelines:\n  - {name: from_mobile, from: [mobile], sinks: [db]}\n  - {name: from_web, from: [web], sinks: [db]}\n  - {name: from_both, sinks: [db]}\n",
    );
    let ndjson = |range: std::ops::Range<u64>| -> String {
        range.map(|n| format!("{{\"n\":{n}}}\n")).collect()
    };
    let (status, body) = node
        .post_to("/events/mobile", &ndjson(0..3), "application/x-ndjson")
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = node
        .post_to("/events", &ndjson(10..12), "application/x-ndjson")
        .await;
    assert_eq!(status, 202, "{body}");
    // A path no source has is not an ingest endpoint.
    let (status, _) = node
        .post_to("/events/other", &ndjson(0..1), "application/x-ndjson")
        .await;
    assert_eq!(status, 404);

    eventually(DEADLINE, "every pipeline", || async {
        (node.outputs("from_both").await.len() == 5).then_some(())
    })
    .await;
    let output_ns = |outputs: Vec<Value>| ns(&outputs, |o| &o["data"]);
    assert_eq!(
        output_ns(node.outputs("from_mobile").await),
        BTreeSet::from([0, 1, 2])
    );
    assert_eq!(
        output_ns(node.outputs("from_web").await),
        BTreeSet::from([10, 11])
    );
    for output in node.outputs("from_mobile").await {
        assert_eq!(output["metadata"]["source"], "mobile", "{output}");
    }
    // The query API filters by the source's name.
    let (status, page) = node.get("/api/events?source=mobile").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        ns(page["events"].as_array().unwrap(), |e| &e["data"]),
        BTreeSet::from([0, 1, 2])
    );
    let (_, page) = node.get("/api/events?source=web").await;
    assert_eq!(
        ns(page["events"].as_array().unwrap(), |e| &e["data"]),
        BTreeSet::from([10, 11])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_held_open_delays_no_other_pipeline_and_then_delivers_everything() {
    let receiver = Receiver::start().await;
    receiver.hold();
    let node = Node::start(&format!(
        "sinks:\n  db: {{type: store}}\n  hook: {{type: http, url: '{}', timeout: 120s, batch_size: 1000}}\npipelines:\n  - {{name: held, sinks: [hook]}}\n  - {{name: free, sinks: [db]}}\n  - {{name: also_free, stages: [{{type: filter, when: [true]}}], sinks: [db]}}\n",
        receiver.url
    ));
    // Posted while the endpoint holds the held pipeline's first request open.
    for batch in 0..10_u64 {
        let body: String = (batch * 100..(batch + 1) * 100)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect();
        let (status, answer) = node.post(&body, "application/x-ndjson").await;
        assert_eq!(status, 202, "{answer}");
    }
    for pipeline in ["free", "also_free"] {
        eventually(DEADLINE, pipeline, || async {
            (node.outputs(pipeline).await.len() == 1_000).then_some(())
        })
        .await;
    }
    // All of that happened while the endpoint still held its request, answered nothing.
    assert!(receiver.held() >= 1, "the held pipeline's request is open");
    assert!(receiver.received().is_empty());

    receiver.release();
    // At-least-once: every event arrives (a retried request could repeat some).
    let all: BTreeSet<u64> = (0..1_000).collect();
    eventually(DEADLINE, "the held pipeline", || async {
        (ns(&receiver.received(), |e| &e["data"]) == all).then_some(())
    })
    .await;
    eventually(DEADLINE, "the held pipeline caught up", || async {
        let (_, health) = node.get("/health").await;
        (health["components"]["pipelines"]["held"]["lag_events"] == 0).then_some(())
    })
    .await;
    assert!(node.dead_letters("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_inserts_a_stage_before_a_dedup_keeps_what_it_has_seen() {
    let v1 = "sinks: {db: {type: store}}\npipelines:\n  - name: orders\n    stages:\n      - {type: dedup, id: seen, key: /order, ttl: 1h}\n    sinks: [db]\n  - name: doomed\n    stages: [{type: dedup, key: /order, ttl: 1h}]\n    sinks: [db]\n";
    let node = Node::start(v1);
    let (status, _) = node
        .post(r#"{"order": "A", "n": 1}"#, "application/json")
        .await;
    assert_eq!(status, 202);
    eventually(DEADLINE, "the first order", || async {
        (node.outputs("orders").await.len() == 1).then_some(())
    })
    .await;

    // A transform inserted before the dedup, which keeps its id; `doomed` goes.
    let v2 = "sinks: {db: {type: store}}\npipelines:\n  - name: orders\n    stages:\n      - {type: transform, script: [obj, [order, [get, [$input], /order]], [n, [get, [$input], /n]], [v, 2]]}\n      - {type: dedup, id: seen, key: /order, ttl: 1h}\n    sinks: [db]\n";
    std::fs::write(node.config_path(), v2).unwrap();
    let (status, report) = node.admin(reqwest::Method::POST, "/admin/reload").await;
    assert_eq!(status, 200, "{report}");
    for (order, n) in [("A", 2), ("B", 3)] {
        let body = format!(r#"{{"order": "{order}", "n": {n}}}"#);
        let (status, _) = node.post(&body, "application/json").await;
        assert_eq!(status, 202);
    }
    let outputs = eventually(DEADLINE, "order B", || async {
        let outputs = node.outputs("orders").await;
        (outputs.len() >= 2).then_some(outputs)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outputs = if outputs.len() == 2 {
        node.outputs("orders").await
    } else {
        outputs
    };
    assert_eq!(
        ns(&outputs, |o| &o["data"]),
        BTreeSet::from([1, 3]),
        "the duplicate order A (n=2) is still caught after the reload"
    );

    // Stopped, the store holds no row of the removed pipeline or of a stage id not in v2.
    let (status, stopped) = node.terminate();
    assert!(status.success());
    let store = Store::open(
        StoreOptions {
            create_if_missing: false,
            ..StoreOptions::new(stopped.dir.path().join("data"))
        },
        colloquium_storage::StorageMetrics::register(&Default::default()),
    )
    .unwrap();
    assert_eq!(
        store.state_owners().unwrap(),
        [("orders".to_owned(), "seen".to_owned())]
    );
    assert!(store.checkpoint("doomed").unwrap().is_none());
    assert!(store.checkpointed().unwrap().iter().all(|n| n != "doomed"));
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_reasons_are_one_typed_set() {
    // The API and `colloquium test` know the reasons by their stable names.
    let node = Node::start("pipelines:\n  - {name: p, when: {equals: [/type, order]}}\n");
    let (status, body) = node.get("/api/dlq?reason=no_rout").await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown dead-letter reason `no_rout`"),
        "{body}"
    );
    assert!(
        message.contains("no_route, route_error, script_error"),
        "{body}"
    );
    let (status, _) = node.post(r#"{"type": "refund"}"#, "application/json").await;
    assert_eq!(status, 202);
    let letters = eventually(DEADLINE, "the no_route letter", || async {
        let letters = node.dead_letters("reason=no_route").await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters[0]["reason"], "no_route");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("typo.yaml");
    std::fs::write(
        &config,
        "pipelines:\n  - {name: p, when: {equals: [/type, order]}}\ntests:\n  - {name: t, input: [{data: {type: refund}}], expect: {dlq: [no-route]}}\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        crate::harness::run_cli(&["test", "-c", config.to_str().unwrap()], None);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stderr.contains("tests[0].expect.dlq[0]: unknown dead-letter reason `no-route`"),
        "{stdout}{stderr}"
    );
}
