//! Hot reload under live traffic, through the real binary: a valid reload from a config file
//! change, a script file change, an invalid reload (the old config keeps running), SIGHUP and
//! `POST /admin/reload`, with exact counts: nothing lost, nothing processed twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::harness::{Node, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

/// `all` dedups by `/n` (its state must survive every swap), `tagged` runs a script file,
/// `doomed` is removed by the first reload.
const V1: &str = "
scripts:
  tag: {file: tag.json}
sinks:
  archive: {type: store}
pipelines:
  - name: all
    start_from: earliest
    stages:
      - {type: dedup, key: /n, ttl: 1h}
    sinks: [archive]
  - name: tagged
    start_from: earliest
    stages:
      - {type: transform, script: tag}
    sinks: [archive]
  - name: doomed
    start_from: earliest
    sinks: [archive]
";

/// `doomed` removed, `late` added (from the start of the log), `all` and `tagged` unchanged.
fn v2() -> String {
    V1.replace("name: doomed", "name: late")
}

fn tag_script(version: u64) -> String {
    format!(r#"["obj", ["n", ["get", ["$input"], "/n"]], ["v", {version}]]"#)
}

/// Posts NDJSON batches of 20 sequential `n` until `stop`; returns how many were acked
/// (all of them: a failed request fails the test).
async fn traffic(node: Arc<Node>, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    while !stop.load(Ordering::Acquire) {
        let first = sent.load(Ordering::Acquire);
        let body: String = (first..first + 20)
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect();
        let (status, answer) = node.post(&body, "application/x-ndjson").await;
        assert_eq!(status, 202, "{answer}");
        sent.store(first + 20, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn version(node: &Node) -> u64 {
    let (status, config) = node.admin(Method::GET, "/admin/config").await;
    assert_eq!(status, 200, "{config}");
    config["version"].as_u64().unwrap()
}

/// Waits until `/admin/config` shows `version`, and returns the status.
async fn until_version(node: &Node, version: u64) -> Value {
    eventually(DEADLINE, &format!("config version {version}"), || async {
        let (_, config) = node.admin(Method::GET, "/admin/config").await;
        (config["version"].as_u64() == Some(version)).then_some(config)
    })
    .await
}

/// The value of the first `/metrics` sample whose line starts with `series`.
async fn metric(node: &Node, series: &str) -> Option<f64> {
    let (_, text) = node.get_text("/metrics").await;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `n` of each output of `pipeline`, with how often it appears.
async fn counts(node: &Node, pipeline: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for output in node.outputs(pipeline).await {
        *counts
            .entry(output["data"]["n"].as_u64().unwrap())
            .or_default() += 1;
    }
    counts
}

/// Each `n` below `total` appears once, except those below `again` (posted twice), twice.
fn exactly(counts: &BTreeMap<u64, usize>, total: u64, again: u64, pipeline: &str) {
    let wrong: Vec<_> = (0..total)
        .map(|n| (n, counts.get(&n).copied().unwrap_or(0)))
        .filter(|(n, c)| *c != if *n < again { 2 } else { 1 })
        .collect();
    assert!(
        wrong.is_empty(),
        "{pipeline}: (n, outputs) wrong: {wrong:?}"
    );
    assert_eq!(counts.len() as u64, total, "{pipeline}: unexpected outputs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_live_traffic_lose_and_duplicate_nothing() {
    let node = Arc::new(Node::start_with_files(V1, &[("tag.json", &tag_script(1))]));
    assert_eq!(version(&node).await, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = tokio::spawn(traffic(node.clone(), stop.clone(), sent.clone()));
    let progress = |at_least: u64| {
        let sent = sent.clone();
        async move {
            eventually(DEADLINE, "traffic", || async {
                (sent.load(Ordering::Acquire) >= at_least).then_some(())
            })
            .await
        }
    };
    progress(500).await;

    // 1. A valid reload, from a change to the config file: `doomed` goes, `late` comes.
    std::fs::write(node.config_path(), v2()).unwrap();
    let config = until_version(&node, 2).await;
    let report = &config["last_reload"];
    assert_eq!(report["result"], "ok", "{config}");
    assert_eq!(report["cause"], "file", "{config}");
    assert_eq!(report["added"], serde_json::json!(["late"]), "{config}");
    assert_eq!(report["removed"], serde_json::json!(["doomed"]), "{config}");
    assert_eq!(
        config["pipelines"],
        serde_json::json!(["all", "tagged", "late"])
    );
    progress(sent.load(Ordering::Acquire) + 500).await;

    // 2. A script file change: `tagged` runs version 2 of its script from now on.
    std::fs::write(node.dir.path().join("tag.json"), tag_script(2)).unwrap();
    let config = until_version(&node, 3).await;
    assert_eq!(
        config["last_reload"]["changed"],
        serde_json::json!(["scripts.tag"]),
        "{config}"
    );
    progress(sent.load(Ordering::Acquire) + 500).await;

    // 3. An invalid config is rejected with its reason; the old one keeps running.
    let broken = v2().replace("script: tag", "script: [nosuchop, 1]");
    std::fs::write(node.config_path(), &broken).unwrap();
    let (status, report) = node.admin(Method::POST, "/admin/reload").await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["result"], "error");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("pipelines[1].stages[0]"), "{error}");
    assert!(error.contains("nosuchop"), "{error}");
    let (_, config) = node.admin(Method::GET, "/admin/config").await;
    assert_eq!(config["version"], 3, "{config}");
    assert_eq!(config["last_error"]["result"], "error", "{config}");
    assert!(
        metric(&node, "colloquium_config_reload_total{result=\"error\"}")
            .await
            .is_some_and(|n| n >= 1.0)
    );
    progress(sent.load(Ordering::Acquire) + 500).await;

    // 4. Back to the valid config: equal to the active one, so nothing restarts; SIGHUP
    // reloads too.
    std::fs::write(node.config_path(), v2()).unwrap();
    let (status, report) = node.admin(Method::POST, "/admin/reload").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["result"], "unchanged", "{report}");
    // The file watcher's reload of that write may land after any one SIGHUP's (under load it
    // did): SIGHUP until a reload caused by one is the last.
    eventually(DEADLINE, "the SIGHUP reload", || async {
        node.sighup();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, config) = node.admin(Method::GET, "/admin/config").await;
        (config["last_reload"]["cause"] == "sighup").then_some(())
    })
    .await;
    assert_eq!(version(&node).await, 3);
    assert_eq!(metric(&node, "colloquium_config_version").await, Some(3.0));

    stop.store(true, Ordering::Release);
    client.await.unwrap();
    let total = sent.load(Ordering::Acquire);
    // Events seen before: `all`'s dedup state came through every swap and drops them.
    let again: String = (0..100).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let (status, _) = node.post(&again, "application/x-ndjson").await;
    assert_eq!(status, 202);

    let in_series =
        "colloquium_pipeline_events_total{pipeline=\"all\",stage=\"dedup\",outcome=\"in\"}";
    eventually(DEADLINE, "`all` to process everything", || async {
        let processed = metric(&node, in_series).await.unwrap_or(0.0);
        (processed >= (total + 100) as f64).then_some(())
    })
    .await;
    let caught_up =
        |counts: &BTreeMap<u64, usize>| counts.values().sum::<usize>() as u64 == total + 100;
    eventually(DEADLINE, "`late` and `tagged` to catch up", || async {
        (caught_up(&counts(&node, "late").await) && caught_up(&counts(&node, "tagged").await))
            .then_some(())
    })
    .await;

    // Exact: `all` (dedup) has every event once and dropped the 100 posted again; `late` and
    // `tagged` (no dedup) have those twice and every other once; and `all` processed each
    // posted event once (no step ran twice across a swap).
    exactly(&counts(&node, "all").await, total, 0, "all");
    exactly(&counts(&node, "late").await, total, 100, "late");
    exactly(&counts(&node, "tagged").await, total, 100, "tagged");
    let tagged = node.outputs("tagged").await;
    assert_eq!(
        metric(&node, in_series).await,
        Some((total + 100) as f64),
        "`all` processed some event twice"
    );
    let out_series = in_series.replace("\"in\"", "\"out\"");
    assert_eq!(metric(&node, &out_series).await, Some(total as f64));
    // `tagged` switched scripts once, in log order: version 1, then version 2.
    let versions: Vec<u64> = tagged
        .iter()
        .map(|o| o["data"]["v"].as_u64().unwrap())
        .collect();
    let switch = versions
        .iter()
        .position(|v| *v == 2)
        .expect("version 2 ran");
    assert!(switch > 0, "version 1 ran first");
    assert!(versions[switch..].iter().all(|v| *v == 2), "{versions:?}");

    // Once caught up, the workers took new events in memory rather than from the log.
    let memory = "colloquium_pipeline_read_events_total{source=\"memory\"}";
    assert!(
        metric(&node, memory).await.is_some_and(|n| n > 0.0),
        "no event was handed over in memory"
    );

    // `doomed` stopped cleanly: its outputs stay, each once, and it is gone from /health.
    let doomed = counts(&node, "doomed").await;
    assert!(doomed.values().all(|c| *c == 1));
    assert!(doomed.keys().all(|n| *n < total));
    let (_, health) = node.get("/health").await;
    assert!(health.to_string().contains("\"late\""), "{health}");
    assert!(!health.to_string().contains("doomed"), "{health}");
}

#[tokio::test]
async fn a_node_without_a_config_file_has_nothing_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "run",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let (mut child, ready) =
        crate::harness::spawn_ready(&args, dir.path(), "warn", std::process::Stdio::inherit());
    let client = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", ready.admin);
    let response = client.post(url("/admin/reload")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body = client.get(url("/admin/config")).send().await.unwrap();
    let config: Value = serde_json::from_slice(&body.bytes().await.unwrap()).unwrap();
    assert_eq!(config["file"], Value::Null, "{config}");
    assert_eq!(config["version"], 1, "{config}");
    // The admin routes are not on the main listener.
    let main = format!("http://{}/admin/config", ready.addr);
    assert_eq!(
        client.get(main).send().await.unwrap().status().as_u16(),
        404
    );
    crate::harness::sigterm(&child);
    let exit = crate::harness::wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(exit.success());
}

/// A `no_route` dead letter replayed after a reload added two pipelines that match it: each
/// runs it once, whichever worker thread it is on (the routing worker hands it to the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_event_replays_into_pipelines_added_by_a_reload() {
    let only_a = "
sinks: {archive: {type: store}}
pipelines:
  - {name: a, when: {exists: /a}, sinks: [archive]}
";
    let node = Node::start(only_a);
    let (status, accepted) = node.post(r#"{"b": 1}"#, "application/json").await;
    assert_eq!(status, 202, "{accepted}");
    let letter = eventually(DEADLINE, "the no_route dead letter", || async {
        node.dead_letters("reason=no_route")
            .await
            .into_iter()
            .next()
    })
    .await;

    let with_b = format!(
        "{only_a}  - {{name: b1, when: {{exists: /b}}, sinks: [archive]}}\n  - {{name: b2, when: {{exists: /b}}, sinks: [archive]}}\n"
    );
    std::fs::write(node.config_path(), with_b).unwrap();
    let (status, report) = node.admin(Method::POST, "/admin/reload").await;
    assert_eq!(status, 200, "{report}");
    let url = node.url(&format!(
        "/api/dlq/{}/replay",
        letter["id"].as_str().unwrap()
    ));
    let replayed = node.client.post(url).send().await.unwrap();
    assert_eq!(replayed.status().as_u16(), 202);

    for pipeline in ["b1", "b2"] {
        let outputs = eventually(DEADLINE, pipeline, || async {
            let outputs = node.outputs(pipeline).await;
            (!outputs.is_empty()).then_some(outputs)
        })
        .await;
        assert_eq!(outputs.len(), 1, "{pipeline}: {outputs:?}");
        assert_eq!(outputs[0]["data"], serde_json::json!({"b": 1}));
    }
    eventually(DEADLINE, "an empty dead-letter queue", || async {
        node.dead_letters("").await.is_empty().then_some(())
    })
    .await;
    assert!(node.outputs("a").await.is_empty());
}
