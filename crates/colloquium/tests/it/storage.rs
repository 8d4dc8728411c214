//! Retention and replay through the real binary.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::harness::{Node, eventually};

#[tokio::test]
async fn retention_removes_old_events_in_the_background() {
    let node = Node::start(
        "storage:\n  retention: 1s\n  retention_interval: 100ms\nsinks: {archive: {type: store}}\npipelines:\n  - {name: copy, start_from: earliest, sinks: [archive]}\n",
    );
    let (status, body) = node
        .post(r#"[{"a":1},{"a":2},{"a":3}]"#, "application/json")
        .await;
    assert_eq!(status, 202);
    let id = body["ids"][0].as_str().unwrap().to_owned();
    assert_eq!(node.get(&format!("/api/events/{id}")).await.0, 200);
    eventually(
        Duration::from_secs(30),
        "the pipeline's outputs",
        || async { (node.outputs("copy").await.len() == 3).then_some(()) },
    )
    .await;

    // Events and the outputs made from them expire together.
    eventually(
        Duration::from_secs(30),
        "retention to delete expired events and outputs",
        || async {
            (node.all_events().await.is_empty() && node.outputs("copy").await.is_empty())
                .then_some(())
        },
    )
    .await;
    assert_eq!(node.get(&format!("/api/events/{id}")).await.0, 404);
    // The pass counts itself after compacting the deleted range, a moment later.
    eventually(
        Duration::from_secs(30),
        "the retention pass to be counted",
        || async {
            let (_, metrics) = node.get_text("/metrics").await;
            (!metrics.contains("colloquium_storage_retention_runs_total 0")).then_some(())
        },
    )
    .await;
}

/// Streams ~90 MB of events and checks the node's memory grows far less than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_streams_a_large_range_in_bounded_memory() {
    const BATCHES: usize = 60;
    const PER_BATCH: usize = 1_000;
    const MAX_GROWTH: u64 = 32 << 20;
    let node = Node::start("storage:\n  sync: false\n");
    let padding = "x".repeat(1_300);
    for batch in 0..BATCHES {
        let body: Vec<String> = (0..PER_BATCH)
            .map(|i| format!(r#"{{"batch":{batch},"i":{i},"padding":"{padding}"}}"#))
            .collect();
        let (status, reply) = node.post(&body.join("\n"), "application/x-ndjson").await;
        assert_eq!(status, 202, "{reply}");
    }

    // Paging is the list's: the stream refuses it, naming the parameter.
    let (status, refused) = node.get("/api/events/stream?limit=5").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("limit"),
        "{refused}"
    );

    let (before, _) = node.rss();
    let response = node
        .client
        .get(node.url("/api/events/stream?since=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut stream = response.bytes_stream();
    let (mut bytes, mut lines, mut peak) = (0u64, 0usize, before);
    let mut last_sampled = 0u64;
    // The last complete line, and what came after the last newline so far: a line may be
    // split across chunks (taking the piece before a chunk's last newline alone read half a
    // line when one was, and failed now and then).
    let (mut last_line, mut pending) = (Vec::new(), Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("stream chunk");
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        match chunk.iter().rposition(|b| *b == b'\n') {
            Some(end) => {
                let start = chunk[..end].iter().rposition(|b| *b == b'\n');
                last_line = match start {
                    Some(start) => chunk[start + 1..end].to_vec(),
                    None => [pending.as_slice(), &chunk[..end]].concat(),
                };
                pending = chunk[end + 1..].to_vec();
            }
            None => pending.extend_from_slice(&chunk),
        }
        if bytes - last_sampled > (1 << 20) {
            peak = peak.max(node.rss().0);
            last_sampled = bytes;
        }
    }
    assert_eq!(lines, BATCHES * PER_BATCH);
    assert!(bytes > 2 * MAX_GROWTH, "streamed only {bytes} bytes");
    let growth = peak.saturating_sub(before);
    eprintln!("replay: streamed {bytes} bytes, node RSS {before} before, {peak} at peak");
    assert!(
        growth < MAX_GROWTH,
        "RSS grew {growth} bytes while streaming {bytes} bytes"
    );
    let last: Value = serde_json::from_slice(&last_line).unwrap();
    assert_eq!(last["data"]["batch"], BATCHES - 1);
    assert_eq!(last["data"]["i"], PER_BATCH - 1);
}
