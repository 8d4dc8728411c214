//! The `ai` stage's throughput through a real node, against a local OpenAI-format server
//! (bench code, never a provider of the product) that answers every call after `--latency`
//! (200 ms). The node runs two pipelines on the same events: `ai` (the stage, `concurrency`
//! 64, into the store) and `plain` (straight into the store). Reports the calls/s the AI
//! pipeline reached, and how long `plain` took to store every event while the AI pipeline
//! was waiting on the provider, against a run without the AI pipeline.
//!
//! `cargo bench -p colloquium --bench ai_stage -- [EVENTS] [LATENCY_MS] [CONCURRENCY]`
//! (defaults 3000 200 64).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Starts the node on `config`; its HTTP address.
fn start(dir: &std::path::Path, config: &str) -> (Child, String) {
    let path = dir.join("colloquium.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_colloquium"))
        .args(["run", "-c", path.to_str().unwrap(), "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("the node's ready line").unwrap();
        if let Some(rest) = line.strip_prefix("colloquium ready ") {
            break rest
                .split(' ')
                .find_map(|f| f.strip_prefix("http="))
                .unwrap()
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"))
}

/// Outputs pipeline `p` has stored (up to 10,000).
async fn stored(client: &reqwest::Client, url: &str, p: &str) -> usize {
    let page: Value = serde_json::from_slice(
        &client
            .get(format!("{url}/api/outputs?pipeline={p}&limit=10000"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    page["outputs"].as_array().map_or(0, Vec::len)
}

async fn wait_for(client: &reqwest::Client, url: &str, p: &str, n: usize) -> Duration {
    let started = Instant::now();
    while stored(client, url, p).await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(3000);
    let latency = Duration::from_millis(args.get(1).copied().unwrap_or(200) as u64);
    let concurrency = args.get(2).copied().unwrap_or(64);

    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(_): axum::Json<Value>| async move {
            tokio::time::sleep(latency).await;
            let content = json!({"severity": "LOW", "confidence": 0.5, "indicators": [],
                "summary": "routine", "recommendation": "none"});
            axum::Json(json!({"choices": [{"message": {"role": "assistant",
                "content": content.to_string()}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 50}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let batch: Vec<Value> = (0..events).map(|i| json!({"n": i})).collect();
    let body = Value::Array(batch).to_string();
    let ai = format!(
        "ai:\n  providers:\n    local: {{api: openai, base_url: \"{base}\", model: m, timeout: 30s}}\n  cache: {{ttl: 0s}}\n\
         sinks: {{db: {{type: store}}}}\n\
         pipelines:\n  - name: ai\n    stages:\n      - {{type: ai, concurrency: {concurrency}, prompt: \"Assess {{{{ id }}}}\"}}\n    sinks: [db]\n\
         \x20 - name: plain\n    sinks: [db]\n"
    );
    let plain_only = "sinks: {db: {type: store}}\npipelines:\n  - name: plain\n    sinks: [db]\n";
    for (name, config) in [("plain alone", plain_only.to_owned()), ("with ai", ai)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, url) = start(dir.path(), &config);
        let posted = Instant::now();
        let response = client
            .post(format!("{url}/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
        wait_for(&client, &url, "plain", events).await;
        let plain = posted.elapsed();
        println!(
            "{name}: plain pipeline stored {events} events in {:.3} s",
            plain.as_secs_f64()
        );
        if name == "with ai" {
            let took = wait_for(&client, &url, "ai", events).await;
            let total = posted.elapsed().max(took);
            println!(
                "{name}: ai pipeline {events} calls ({} ms each, concurrency {concurrency}) in {:.2} s: {:.0} calls/s (bound {:.0})",
                latency.as_millis(),
                total.as_secs_f64(),
                events as f64 / total.as_secs_f64(),
                concurrency as f64 / latency.as_secs_f64()
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
