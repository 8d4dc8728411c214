//! The `window` stage through the real binary: open windows and the watermark survive a
//! SIGKILL, so the results equal those of an uninterrupted run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::{Node, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIG: &str = "sinks: {db: {type: store}}\npipelines:\n  - name: w\n    stages:\n      - {type: window, window: tumbling, size: 1s, key: /k, time: /t, aggregates: {n: count, total: {sum: /v}}}\n    sinks: [db]\n";

/// `(t, key, v)` for t = from, from + 10, … below `to`; keys alternate a, b.
fn events(from: i64, to: i64) -> Vec<(i64, &'static str, i64)> {
    (from..to)
        .step_by(10)
        .map(|t| (t, if t % 20 == 0 { "a" } else { "b" }, t / 10))
        .collect()
}

fn ndjson(events: &[(i64, &str, i64)]) -> String {
    events
        .iter()
        .map(|(t, k, v)| format!("{{\"t\": {t}, \"k\": \"{k}\", \"v\": {v}}}\n"))
        .collect()
}

/// Final results by (key, window start): (count, sum).
async fn finals(node: &Node) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut results = BTreeMap::new();
    for output in node.outputs("w").await {
        let data = &output["data"];
        if data["final"] == true {
            let key = (
                data["key"].as_str().unwrap().to_owned(),
                data["window_start"].as_i64().unwrap(),
            );
            let value = (data["n"].as_u64().unwrap(), data["total"].as_f64().unwrap());
            assert!(
                results.insert(key, value).is_none(),
                "one final result per window"
            );
        }
    }
    results
}

/// Every result in `GET /api/windows` for `query`, page by page (pages of 3).
async fn stored(node: &Node, query: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = node
            .get(&format!("/api/windows?{query}&limit=3{cursor}"))
            .await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["windows"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

/// The stored results as `finals` gives them: every one final, once per window.
fn by_window(stored: &[serde_json::Value]) -> BTreeMap<(String, i64), (u64, f64)> {
    let mut results = BTreeMap::new();
    for data in stored {
        assert_eq!(data["final"], true, "{data}");
        let key = (
            data["key"].as_str().unwrap().to_owned(),
            data["window_start"].as_i64().unwrap(),
        );
        let value = (data["n"].as_u64().unwrap(), data["total"].as_f64().unwrap());
        assert!(results.insert(key, value).is_none(), "one row per window");
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_windows_survive_a_sigkill_and_the_results_equal_an_uninterrupted_run() {
    let all = events(0, 5_000);
    let flush = [(7_000, "a", 0), (7_000, "b", 0)];
    let mut expected: BTreeMap<(String, i64), (u64, f64)> = BTreeMap::new();
    for (t, k, v) in &all {
        let entry = expected
            .entry(((*k).to_owned(), t - t % 1_000))
            .or_default();
        entry.0 += 1;
        entry.1 += *v as f64;
    }

    let node = Node::start(CONFIG);
    let (status, _) = node
        .post(&ndjson(&all[..250]), "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    // The watermark is at 2,490: [0, 1000) and [1000, 2000) fired for both keys, [2000,
    // 3000) is open.
    eventually(DEADLINE, "the first results", || async {
        (finals(&node).await.len() == 4).then_some(())
    })
    .await;
    let node = node.kill9().restart();
    let (status, _) = node
        .post(&ndjson(&all[250..]), "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    let (status, _) = node.post(&ndjson(&flush), "application/x-ndjson").await;
    assert_eq!(status, 202);
    let got = eventually(DEADLINE, "every window", || async {
        let got = finals(&node).await;
        (got.len() == expected.len()).then_some(got)
    })
    .await;
    assert_eq!(got, expected, "no window lost, none counted twice");

    // The windows column family holds the same, by key and window start.
    assert_eq!(by_window(&stored(&node, "pipeline=w").await), expected);
    let of_b = stored(&node, "pipeline=w&key=b&since=1000&until=3000").await;
    let starts: Vec<i64> = of_b
        .iter()
        .map(|w| w["window_start"].as_i64().unwrap())
        .collect();
    assert_eq!(starts, [1_000, 2_000]);
    let (status, body) = node.get("/api/windows?pipeline=w&cursor=nothex").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = node.get("/api/windows").await;
    assert_eq!(status, 400, "the pipeline is required");
}
