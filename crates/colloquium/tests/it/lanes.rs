//! Priority lanes and the control plane through the real binary. A pipeline whose http sink
//! is held open stands still, so its lanes fill exactly as far as the test sends: each
//! overflow policy sheds (or pushes back) exact counts, every shed event is a replayable dead
//! letter, and the control plane climbs through every level and comes back down.

use std::collections::BTreeSet;
use std::time::Duration;

use colloquium_event::Priority;
use colloquium_ingest::frame::encode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Node, Receiver, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

/// A node whose pipeline `held` sends to `receiver` (held open by the test) and to `store`.
fn node(receiver: &Receiver, lanes: &str, sources: &str) -> Node {
    Node::start(&format!(
        "lanes: {lanes}\nsources:\n  http: {{type: http}}\n{sources}sinks:\n  hook: {{type: http, url: '{}', timeout: 120s, batch_size: 1000}}\n  db: {{type: store}}\npipelines:\n  - {{name: held, sinks: [hook, db]}}\n",
        receiver.url
    ))
}

/// `{"n": from} … {"n": to - 1}` as NDJSON.
fn numbered(from: u64, to: u64) -> String {
    (from..to).map(|n| format!("{{\"n\":{n}}}\n")).collect()
}

async fn post(node: &Node, priority: &str, from: u64, to: u64) -> (u16, Value) {
    let path = format!("/events?priority={priority}");
    node.post_to(&path, &numbered(from, to), "application/x-ndjson")
        .await
}

/// Posts event 0 and waits until the held pipeline's step is stuck sending it.
async fn hold_the_pipeline(node: &Node, receiver: &Receiver, priority: &str) {
    receiver.hold();
    let (status, answer) = post(node, priority, 0, 1).await;
    assert_eq!(status, 202, "{answer}");
    eventually(DEADLINE, "the pipeline's request held", || async {
        (receiver.held() >= 1).then_some(())
    })
    .await;
}

/// Every dead letter with reason `overflow` (and `pipeline`, if given).
async fn overflow_letters(node: &Node, pipeline: Option<&str>) -> Vec<Value> {
    let filter = pipeline.map_or(String::new(), |p| format!("&pipeline={p}"));
    node.dead_letters(&format!("reason=overflow&limit=10000{filter}"))
        .await
}

fn ns(values: &[Value], at: impl Fn(&Value) -> &Value) -> BTreeSet<u64> {
    values
        .iter()
        .map(|v| at(v)["n"].as_u64().expect("n"))
        .collect()
}

async fn control(node: &Node) -> Value {
    let (status, state) = node.get("/api/control").await;
    assert_eq!(status, 200, "{state}");
    state
}

fn lane<'a>(state: &'a Value, name: &str) -> &'a Value {
    let lanes = state["lanes"].as_array().expect("lanes");
    lanes
        .iter()
        .find(|l| l["lane"] == name)
        .expect("every lane is reported")
}

/// Asks for every overflow dead letter (of `pipeline`) to be replayed; returns how many.
async fn replay_overflow(node: &Node, pipeline: Option<&str>) -> u64 {
    let filter = pipeline.map_or(String::new(), |p| format!("&pipeline={p}"));
    let (status, answer) = node
        .post_to(
            &format!("/api/dlq/replay?reason=overflow{filter}"),
            "",
            "application/json",
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    answer["replaying"].as_u64().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_dead_letters_what_the_full_batch_lane_refuses_and_replays_all_of_it() {
    let receiver = Receiver::start().await;
    let node = node(&receiver, "{batch: {capacity: 50}}", "");
    hold_the_pipeline(&node, &receiver, "batch").await;
    // One event waits; of the next 199, 49 fill the lane and 150 are refused. Every one of
    // them is durable (in the log or in the dead-letter queue), so the request is accepted.
    let (status, answer) = post(&node, "batch", 1, 200).await;
    assert_eq!(status, 202, "{answer}");
    let shed = overflow_letters(&node, None).await;
    assert_eq!(shed.len(), 150);
    assert_eq!(ns(&shed, |l| &l["event"]["data"]), (50..200).collect());
    assert!(
        shed.iter().all(|l| l["pipeline"].is_null()),
        "never reached one"
    );
    assert!(
        shed[0]["error"].as_str().unwrap().contains("drop_newest"),
        "{}",
        shed[0]
    );
    let state = control(&node).await;
    assert_eq!(lane(&state, "batch")["shed"]["drop_newest"], 150);
    assert_eq!(lane(&state, "batch")["admitted"], 50);
    assert_eq!(lane(&state, "batch")["depth"], 50);
    assert_eq!(
        node.all_events().await.len(),
        50,
        "the log has the 50 taken"
    );

    receiver.release();
    eventually(DEADLINE, "the 50 taken", || async {
        (node.outputs("held").await.len() == 50).then_some(())
    })
    .await;
    for bad in ["reason=nonsense", "limit=0", "limit=100001", "colour=red"] {
        let (status, answer) = node
            .post_to(&format!("/api/dlq/replay?{bad}"), "", "application/json")
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    assert_eq!(replay_overflow(&node, None).await, 150);
    eventually(DEADLINE, "all 200, once each", || async {
        let outputs = node.outputs("held").await;
        (outputs.len() == 200 && ns(&outputs, |o| &o["data"]) == (0..200).collect()).then_some(())
    })
    .await;
    assert!(overflow_letters(&node, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_sheds_the_oldest_waiting_realtime_events_and_replays_them() {
    let receiver = Receiver::start().await;
    let node = node(&receiver, "{realtime: {capacity: 100}}", "");
    hold_the_pipeline(&node, &receiver, "high").await;
    // drop_oldest takes everything at the door; 500 wait behind the held step.
    for chunk in 0..5 {
        let (status, answer) = post(&node, "high", 1 + chunk * 100, 101 + chunk * 100).await;
        assert_eq!(status, 202, "{answer}");
    }
    assert_eq!(lane(&control(&node).await, "realtime")["depth"], 501);
    receiver.release();
    // The next step finds 500 waiting in a lane of 100: the 400 oldest are shed.
    eventually(DEADLINE, "the newest 100 and the first", || async {
        (node.outputs("held").await.len() == 101).then_some(())
    })
    .await;
    let outputs = node.outputs("held").await;
    let mut expected: BTreeSet<u64> = (401..=500).collect();
    expected.insert(0);
    assert_eq!(ns(&outputs, |o| &o["data"]), expected);
    let shed = overflow_letters(&node, Some("held")).await;
    assert_eq!(shed.len(), 400);
    assert_eq!(ns(&shed, |l| &l["event"]["data"]), (1..=400).collect());
    assert!(shed[0]["error"].as_str().unwrap().contains("drop_oldest"));
    let state = control(&node).await;
    assert_eq!(lane(&state, "realtime")["shed"]["drop_oldest"], 400);
    assert_eq!(lane(&state, "realtime")["depth"], 0);
    // Shed events stay in the log.
    assert_eq!(node.all_events().await.len(), 501);

    assert_eq!(replay_overflow(&node, Some("held")).await, 400);
    eventually(DEADLINE, "all 501, once each", || async {
        let outputs = node.outputs("held").await;
        (outputs.len() == 501 && ns(&outputs, |o| &o["data"]) == (0..=500).collect()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_answers_http_503_and_stops_reading_tcp_until_there_is_room_and_loses_nothing() {
    let receiver = Receiver::start().await;
    let node = node(
        &receiver,
        "{transactional: {capacity: 100}}",
        "  frames: {type: tcp, address: '127.0.0.1:0', ack: true}\n",
    );
    hold_the_pipeline(&node, &receiver, "medium").await;
    let (status, _) = post(&node, "medium", 1, 100).await;
    assert_eq!(status, 202, "the lane had room when the batch came");
    // Full: HTTP pushes back, nothing is stored.
    let response = node
        .client
        .post(node.url("/events?priority=low"))
        .header("content-type", "application/json")
        .body(r#"{"n": 100}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["reason"], "lane_full", "{body}");

    // TCP: a client writing 24 MiB of frames flat out is not read while the lane is full,
    // so its writes stall in the kernel's window instead of being dropped.
    const FRAMES: u64 = 24 * 1024;
    let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    let mut bytes = Vec::new();
    for _ in 0..FRAMES {
        encode(Priority::Medium, "orders", payload.as_bytes(), &mut bytes);
    }
    let stream = tokio::net::TcpStream::connect(node.source_addr("frames"))
        .await
        .unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&bytes).await.unwrap();
        write
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writer.is_finished(),
        "the client is slowed while the lane is full"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains("colloquium_ingest_paused_total{source=\"frames\"} 1"),
        "the connection paused once"
    );
    assert_eq!(
        lane(&control(&node).await, "transactional")["admitted"],
        100
    );

    receiver.release();
    let _write = writer.await.unwrap();
    // Every frame is acked durable: none was dropped.
    let mut acked = 0;
    while acked < FRAMES {
        assert_eq!(read.read_u8().await.unwrap(), b'A', "no frame rejected");
        acked = read.read_u64().await.unwrap();
    }
    assert_eq!(acked, FRAMES);
    // The refused request, retried as Retry-After says, is taken once there is room.
    eventually(DEADLINE, "the retried request taken", || async {
        let (status, _) = node
            .post_to(
                "/events?priority=medium",
                r#"{"n": 100}"#,
                "application/json",
            )
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status == 202).then_some(())
    })
    .await;
    eventually(DEADLINE, "every event through the pipeline", || async {
        let state = control(&node).await;
        let lane = lane(&state, "transactional");
        (lane["admitted"] == 100 + FRAMES + 1 && lane["depth"] == 0).then_some(())
    })
    .await;
    assert!(node.dead_letters("").await.is_empty(), "nothing shed");
}

/// Waits until `/api/control` reports `level`.
async fn until_level(node: &Node, level: &str) -> Value {
    eventually(DEADLINE, level, || async {
        let state = control(node).await;
        (state["level"] == level).then_some(state)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_climbs_through_every_level_acts_at_each_and_comes_back_down() {
    let receiver = Receiver::start().await;
    let node = node(&receiver, "{realtime: {capacity: 100}}", "");
    hold_the_pipeline(&node, &receiver, "high").await;
    assert_eq!(control(&node).await["level"], "HEALTHY");
    // Depth of the realtime lane (capacity 100) → level: 50 % ELEVATED, 75 % DEGRADED,
    // 100 % CRITICAL, 150 % EMERGENCY.
    let mut sent = 1;
    for (depth, level) in [
        (50, "ELEVATED"),
        (75, "DEGRADED"),
        (100, "CRITICAL"),
        (150, "EMERGENCY"),
    ] {
        let (status, _) = post(&node, "high", sent, depth).await;
        assert_eq!(status, 202);
        sent = depth;
        let state = until_level(&node, level).await;
        assert_eq!(state["measured"], level);
        let (_, health) = node.get("/health").await;
        let component = &health["components"]["control"];
        assert_eq!(component["level"], level);
        let degraded = if depth >= 75 { "degraded" } else { "healthy" };
        assert_eq!(component["status"], degraded, "{health}");
    }
    // EMERGENCY does everything the levels below it do: transactional intake is paused (503),
    // the batch lane is shed and low-priority events are diverted, both to the DLQ.
    let (status, body) = post(&node, "medium", 1_000, 1_001).await;
    assert_eq!((status, body["reason"].as_str()), (503, Some("lane_full")));
    assert_eq!(post(&node, "batch", 2_000, 2_001).await.0, 202);
    assert_eq!(post(&node, "low", 3_000, 3_001).await.0, 202);
    let letters = overflow_letters(&node, None).await;
    let errors: Vec<&str> = letters
        .iter()
        .map(|l| l["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("EMERGENCY")), "{errors:?}");
    assert_eq!(
        post(&node, "critical", 150, 151).await.0,
        202,
        "realtime flows"
    );

    // Released, the lane drains at once, and the level comes down (to HEALTHY at once, or
    // through the levels the measures still hold on the way).
    receiver.release();
    let mut seen = vec!["EMERGENCY".to_owned()];
    let deadline = std::time::Instant::now() + DEADLINE;
    while seen.last().map(String::as_str) != Some("HEALTHY") {
        assert!(
            std::time::Instant::now() < deadline,
            "HEALTHY again: {seen:?}"
        );
        let level = control(&node).await["level"].as_str().unwrap().to_owned();
        if seen.last() != Some(&level) {
            seen.push(level);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let order = ["HEALTHY", "ELEVATED", "DEGRADED", "CRITICAL", "EMERGENCY"];
    let rank = |l: &String| order.iter().position(|o| o == l).unwrap();
    assert!(
        seen.windows(2).all(|w| rank(&w[0]) > rank(&w[1])),
        "{seen:?}"
    );
    let transitions = control(&node).await["transitions"].as_u64().unwrap();
    assert_eq!(transitions, 4 + seen.len() as u64 - 1, "{seen:?}");
    eventually(DEADLINE, "the metrics to follow", || async {
        let (_, metrics) = node.get_text("/metrics").await;
        let total = format!("colloquium_control_transitions_total {transitions}\n");
        (metrics.contains("colloquium_control_level 0\n") && metrics.contains(&total)).then_some(())
    })
    .await;

    // A manual override holds a level until it expires; bad ones are refused.
    let set = |body: &'static str| {
        let node = &node;
        async move {
            let response = node
                .client
                .post(node.url("/api/control"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        }
    };
    let (status, state) = set(r#"{"level": "DEGRADED", "duration": "1s"}"#).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["level"], "DEGRADED");
    assert_eq!(state["measured"], "HEALTHY");
    assert_eq!(state["manual"]["level"], "DEGRADED");
    assert_eq!(post(&node, "medium", 4_000, 4_001).await.0, 503);
    until_level(&node, "HEALTHY").await;
    assert_eq!(post(&node, "medium", 4_000, 4_001).await.0, 202);
    for bad in [
        r#"{"level": "DEGRADED"}"#,
        r#"{"level": "SIDEWAYS", "duration": "1s"}"#,
        r#"{"level": "CRITICAL", "duration": "2d"}"#,
        r#"{"level": "CRITICAL", "duration": "soon"}"#,
        "not json",
        // serde would read a struct from an array of its fields
        r#"["CRITICAL", "1h"]"#,
        "[null, null]",
    ] {
        let (status, answer) = set(bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, state) = set(r#"{"level": "EMERGENCY", "duration": "1h"}"#).await;
    assert_eq!((status, state["level"].as_str()), (200, Some("EMERGENCY")));
    let (status, state) = set(r#"{"level": null}"#).await;
    assert_eq!((status, state["level"].as_str()), (200, Some("HEALTHY")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_frame_of_a_shedding_lane_survives_a_sigkill_in_the_log_or_the_dlq() {
    let receiver = Receiver::start().await;
    let node = node(
        &receiver,
        "{batch: {capacity: 100}}",
        "  frames: {type: tcp, address: '127.0.0.1:0', ack: true}\n",
    );
    receiver.hold();
    let mut stream = tokio::net::TcpStream::connect(node.source_addr("frames"))
        .await
        .unwrap();
    // Batch frames while the pipeline stands still: the first 100 go to the log, the rest to
    // the dead-letter queue, each acked only once durable.
    let mut acked = 0;
    for chunk in 0..10_u64 {
        let mut bytes = Vec::new();
        for n in chunk * 100..(chunk + 1) * 100 {
            encode(
                Priority::Batch,
                "bulk",
                format!("{{\"n\": {n}}}").as_bytes(),
                &mut bytes,
            );
        }
        stream.write_all(&bytes).await.unwrap();
        while acked < (chunk + 1) * 100 {
            assert_eq!(stream.read_u8().await.unwrap(), b'A');
            acked = stream.read_u64().await.unwrap();
        }
    }
    let restarted = node.kill9().restart();
    let logged: Vec<Value> = restarted.all_events().await;
    let shed = overflow_letters(&restarted, None).await;
    let mut all = ns(&logged, |e| &e["data"]);
    let in_dlq = ns(&shed, |l| &l["event"]["data"]);
    assert_eq!(all.len() + in_dlq.len(), 1_000, "each frame once");
    all.extend(in_dlq);
    assert_eq!(all, (0..1_000).collect(), "every acked frame is kept");
    assert_eq!(logged.len(), 100, "the lane's capacity went to the log");
}

fn volatile_dropped(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("colloquium_storage_volatile_dropped_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persist_false_source_reaches_the_pipelines_without_the_log_and_counts_its_drops() {
    let node = Node::start(
        "sources:\n  http: {type: http}\n  telemetry: {type: http, path: /telemetry, persist: false}\nsinks: {db: {type: store}}\npipelines:\n  - {name: metrics, from: [telemetry], sinks: [db]}\n",
    );
    let (status, _) = node
        .post_to("/telemetry", &numbered(0, 10), "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    let outputs = eventually(DEADLINE, "the telemetry through its pipeline", || async {
        let outputs = node.outputs("metrics").await;
        (outputs.len() == 10).then_some(outputs)
    })
    .await;
    assert_eq!(ns(&outputs, |o| &o["data"]), (0..10).collect());
    assert!(
        node.all_events().await.is_empty(),
        "fire-and-forget: not in the log"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert_eq!(volatile_dropped(&metrics), 0);

    // With no pipeline running, nobody takes them: each is counted as dropped.
    let idle =
        Node::start("sources:\n  telemetry: {type: http, path: /telemetry, persist: false}\n");
    let (status, _) = idle
        .post_to("/telemetry", &numbered(0, 7), "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    let (_, metrics) = idle.get_text("/metrics").await;
    assert_eq!(volatile_dropped(&metrics), 7);
    assert!(idle.all_events().await.is_empty());

    // An ack promises durability: refused with persist: false.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "sources:\n  frames: {type: tcp, persist: false, ack: true}\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        crate::harness::run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(
        format!("{stdout}{stderr}").contains("sources.frames.ack"),
        "{stdout}{stderr}"
    );
}
