//! Crash durability: every event acknowledged with 202 survives SIGKILL, exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, eventually};

const CLIENTS: usize = 8;
/// Acknowledged events to wait for before killing the node mid-stream.
const ACKED_BEFORE_KILL: usize = 3_000;

/// What a client was told: event id → (client, seq).
type Acked = Arc<Mutex<HashMap<String, (u64, u64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_event() {
    let node = Node::start("");
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS as u64 {
        let url = node.url("/events");
        let http = node.client.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut seq = 0u64;
            // Bounded: stops at the kill, or after this many requests at most.
            for request in 0..100_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Alternate single events and NDJSON batches of 10.
                let batch = if request % 2 == 0 { 1 } else { 10 };
                let first = seq;
                seq += batch;
                let sent = post_ndjson(&http, &url, client, first, batch).await;
                let Ok(response) = sent else { break };
                if response.status().as_u16() != 202 {
                    continue;
                }
                let Ok(bytes) = response.bytes().await else {
                    break;
                };
                let body: Value = serde_json::from_slice(&bytes).expect("202 body is JSON");
                let mut acked = acked.lock().unwrap();
                for (i, id) in body["ids"].as_array().expect("ids").iter().enumerate() {
                    acked.insert(
                        id.as_str().expect("id").to_owned(),
                        (client, first + i as u64),
                    );
                }
            }
        }));
    }

    eventually(
        Duration::from_secs(120),
        "events to be acknowledged",
        || {
            let count = acked.lock().unwrap().len();
            async move { (count >= ACKED_BEFORE_KILL).then_some(()) }
        },
    )
    .await;
    // Clients are still sending: the kill lands mid-stream.
    let stopped = node.kill9();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let node = stopped.restart();
    let stored = node.all_events().await;
    let mut ids = HashSet::new();
    let mut payloads = HashSet::new();
    for event in &stored {
        let id = event["id"].as_str().unwrap().to_owned();
        let payload = (
            event["data"]["client"].as_u64().unwrap(),
            event["data"]["seq"].as_u64().unwrap(),
        );
        assert!(payloads.insert(payload), "payload {payload:?} stored twice");
        assert!(ids.insert(id), "id stored twice");
    }
    for (id, payload) in &acked {
        assert!(ids.contains(id), "acknowledged event {id} {payload:?} lost");
        let (_, event) = node.get(&format!("/api/events/{id}")).await;
        assert_eq!(
            (
                event["data"]["client"].as_u64().unwrap(),
                event["data"]["seq"].as_u64().unwrap()
            ),
            *payload,
            "event {id} has the wrong payload"
        );
    }

    // The restarted node keeps ingesting, with ids after everything stored before the crash.
    let (status, body) = node
        .post(r#"{"after":"restart"}"#, "application/json")
        .await;
    assert_eq!(status, 202);
    let new_id = body["ids"][0].as_str().unwrap();
    assert!(ids.iter().all(|old| old.as_str() < new_id));
}

const PIPELINES: &str = r#"
sinks:
  archive: {type: store}
pipelines:
  - name: double
    stages:
      - {type: transform, script: [obj, [client, [get, [$input], /client]], [double, ["*", [get, [$input], /seq], 2]]]}
    sinks: [archive]
  - name: odd
    stages:
      - {type: filter, when: ["==", ["%", [get, [$input], /seq], 2], 1]}
    sinks: [archive]
  - name: split
    when: {equals: [/client, 0]}
    stages:
      # `map` over `$inputs` (data and metadata) gives a plain array: two events per input.
      - {type: transform, script: [map, [$inputs], [lambda, [x], [obj, [part, 1]]]]}
    sinks: [archive]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_with_pipelines_loses_and_duplicates_no_output() {
    let node = Node::start(PIPELINES);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(0usize));
    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (url, http, stop, acked) = (
            node.url("/events"),
            node.client.clone(),
            stop.clone(),
            acked.clone(),
        );
        clients.push(tokio::spawn(async move {
            for request in 0..20_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let sent = post_ndjson(&http, &url, client, request * 10, 10).await;
                let Ok(response) = sent else { break };
                if response.status().as_u16() == 202 {
                    *acked.lock().unwrap() += 10;
                }
            }
        }));
    }
    eventually(
        Duration::from_secs(120),
        "events to be acknowledged",
        || {
            let count = *acked.lock().unwrap();
            async move { (count >= 2_000).then_some(()) }
        },
    )
    .await;
    let stopped = node.kill9();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let node = stopped.restart();
    let stored = node.all_events().await;
    assert!(stored.len() >= 2_000);
    // What every stored event must have produced, by input event id.
    let mut expected: HashMap<&str, HashMap<String, usize>> = HashMap::new();
    for event in &stored {
        let id = event["id"].as_str().unwrap().to_owned();
        let (client, seq) = (
            event["data"]["client"].as_u64().unwrap(),
            event["data"]["seq"].as_u64().unwrap(),
        );
        expected.entry("double").or_default().insert(id.clone(), 1);
        if seq % 2 == 1 {
            expected.entry("odd").or_default().insert(id.clone(), 1);
        }
        if client == 0 {
            expected.entry("split").or_default().insert(id, 2);
        }
    }
    for (pipeline, want) in &expected {
        let total: usize = want.values().sum();
        // The restarted node catches up from its checkpoints.
        let got = eventually(
            Duration::from_secs(120),
            "pipelines to catch up",
            || async {
                let all = node.outputs(pipeline).await;
                (all.len() >= total).then_some(all)
            },
        )
        .await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for output in &got {
            *counts
                .entry(output["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(
            got.len(),
            total,
            "{pipeline}: {} outputs, expected {total}",
            got.len()
        );
        assert_eq!(
            &counts, want,
            "{pipeline}: outputs differ from the stored events' by id"
        );
    }
    // And the pipelines keep running on new events.
    let (status, body) = node
        .post(r#"{"client":9,"seq":3}"#, "application/json")
        .await;
    assert_eq!(status, 202);
    let id = body["ids"][0].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(30),
        "the new event's output",
        || async {
            node.outputs("odd")
                .await
                .iter()
                .any(|o| o["id"] == id.as_str())
                .then_some(())
        },
    )
    .await;
}

/// POSTs `count` events `{"client": client, "seq": first..}` as NDJSON.
async fn post_ndjson(
    http: &reqwest::Client,
    url: &str,
    client: u64,
    first: u64,
    count: u64,
) -> reqwest::Result<reqwest::Response> {
    let body: Vec<String> = (first..first + count)
        .map(|seq| format!(r#"{{"client":{client},"seq":{seq}}}"#))
        .collect();
    http.post(url)
        .header("content-type", "application/x-ndjson")
        .body(body.join("\n"))
        .send()
        .await
}
