//! `colloquium tap` from the outside: the log replayed then followed with nothing missing or
//! repeated at the seam while events stream in; a stage's outputs; a reader that stops
//! reading loses events (counted) while the pipeline goes on.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Node, binary, eventually};

const CONFIG: &str = r#"
scripts:
  double: [obj, [seq, ["get", ["$input"], "/seq"]], [twice, ["*", 2, ["get", ["$input"], "/seq"]]]]
sinks: {db: {type: store}}
pipelines:
  - name: doubled
    stages: [{type: transform, id: twice, script: double}]
    sinks: [db]
  - name: all
    sinks: [db]
"#;
const DEADLINE: Duration = Duration::from_secs(60);

/// A `colloquium tap` child whose stdout lines and stderr lines are collected as they come.
struct Tap {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tap {
    fn start(node: &Node, args: &[&str]) -> Tap {
        let mut child = Command::new(binary())
            .arg("tap")
            .args(args)
            .args(["--url", &node.url("")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start colloquium tap");
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Tap {
            child,
            stdout,
            stderr,
        }
    }

    fn lines(&self) -> Vec<Value> {
        (self.stdout.lock().unwrap().iter())
            .map(|l| serde_json::from_str(l).expect("tap prints JSON lines"))
            .collect()
    }

    async fn said(&self, what: &str) {
        let until = std::time::Instant::now() + DEADLINE;
        while !self.stderr.lock().unwrap().iter().any(|l| l.contains(what)) {
            let stderr = self.stderr.lock().unwrap().join("\n");
            assert!(
                std::time::Instant::now() < until,
                "the tap never said {what}: {stderr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Posts numbered events from `from` on, 50 per request, until `stop`; `acked` is the number
/// past the last acknowledged one.
fn load(
    node: &Arc<Node>,
    from: u64,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (node, stop, acked) = (node.clone(), stop.clone(), acked.clone());
    tokio::spawn(async move {
        let mut n = from;
        while !stop.load(Ordering::Relaxed) {
            let body: String = (n..n + 50).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
            let (status, reply) = node.post_accepted(&body, "application/x-ndjson").await;
            assert_eq!(status, 202, "{reply}");
            n += 50;
            acked.store(n, Ordering::Relaxed);
        }
    })
}

/// Each `seq` the lines hold (at `pointer`), with how many times.
fn seqs(lines: &[Value], pointer: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for line in lines {
        let seq = line
            .pointer(pointer)
            .and_then(Value::as_u64)
            .expect("a seq");
        *seen.entry(seq).or_insert(0) += 1;
    }
    seen
}

/// `tap --since` started while events stream in replays the log, says when it follows live,
/// and ends up with every acknowledged event exactly once; a stage tap started at the same
/// time shows what the stage emits, each once, in the stage's own shape; a tap on a pipeline
/// without stages shows what is routed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_then_follows_with_nothing_missing_or_repeated_at_the_seam() {
    let node = Arc::new(Node::start(CONFIG));
    let body: String = (0..2_000).map(|i| format!("{{\"seq\":{i}}}\n")).collect();
    assert_eq!(
        node.post_accepted(&body, "application/x-ndjson").await.0,
        202
    );
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(2_000)),
    );
    let loader = load(&node, 2_000, &stop, &acked);
    // Started mid-stream: history and live overlap in time.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = Tap::start(&node, &["--since", "0", "--buffer", "10000"]);
    let stage = Tap::start(
        &node,
        &[
            "--pipeline",
            "doubled",
            "--stage",
            "twice",
            "--buffer",
            "10000",
        ],
    );
    // A pipeline without stages: its outputs are the events routed to it.
    let outputs = Tap::start(&node, &["--pipeline", "all", "--buffer", "10000"]);
    log.said("following live").await;
    stage.said("following live").await;
    outputs.said("following live").await;
    let live_from = acked.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    let total = acked.load(Ordering::Relaxed);
    assert!(
        total > live_from,
        "events were posted after the tap went live"
    );

    let seen = eventually(DEADLINE, "every event in the log tap", || {
        let seen = seqs(&log.lines(), "/data/seq");
        async move { (seen.len() as u64 == total).then_some(seen) }
    })
    .await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "repeated at the seam: {repeated:?}");

    // The stage tap has no history: it starts with what the stage emits once attached, each
    // once, doubled.
    let emitted = eventually(DEADLINE, "the stage tap's events", || {
        let lines = stage.lines();
        let last = lines
            .last()
            .and_then(|l| l.pointer("/data/seq"))
            .and_then(Value::as_u64);
        async move { (last == Some(total - 1)).then_some(lines) }
    })
    .await;
    for line in &emitted {
        let seq = line["data"]["seq"].as_u64().unwrap();
        assert_eq!(line["data"]["twice"].as_u64(), Some(seq * 2), "{line}");
    }
    let counted = seqs(&emitted, "/data/seq");
    assert!(
        counted.values().all(|n| *n == 1),
        "a stage output tapped twice"
    );
    let first = *counted.keys().next().unwrap();
    assert_eq!(
        counted.len() as u64,
        total - first,
        "a gap in the stage tap"
    );
}

/// A tap whose reader stops reading does not hold the pipeline: with the reader's socket
/// unread, the pipeline still processes every event; the tap counts the events it dropped
/// and says so once read again. Bad parameters are refused in the one error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tap_reader_drops_and_counts_and_the_pipeline_goes_on() {
    let node = Node::start(CONFIG);
    // A raw connection with a small receive buffer, that reads nothing until told.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(node.addr).await.unwrap();
    let request = format!(
        "GET /api/tap?pipeline=doubled&buffer=16 HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        node.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Wait until the tap is attached (its first bytes: the headers and `event: live`).
    let mut head = [0u8; 512];
    let n = stream.read(&mut head).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));

    // About 8 MB of tapped lines: more than the socket buffers between node and reader hold.
    const EVENTS: u64 = 40_000;
    let pad = "x".repeat(150);
    for chunk in 0..EVENTS / 1_000 {
        let body: String = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|i| format!("{{\"seq\":{i},\"pad\":\"{pad}\"}}\n"))
            .collect();
        assert_eq!(
            node.post_accepted(&body, "application/x-ndjson").await.0,
            202
        );
    }
    // Every event goes through the pipeline while the reader reads nothing.
    eventually(DEADLINE, "the pipeline to process every event", || {
        let node = &node;
        async move {
            let (_, metrics) = node.get_text("/metrics").await;
            let out = metrics
                .lines()
                .find(|l| {
                    l.starts_with("colloquium_pipeline_events_total{")
                        && l.contains("outcome=\"out\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
            (out == Some(EVENTS)).then_some(())
        }
    })
    .await;
    // Read again: a status with drops arrives.
    let until = std::time::Instant::now() + DEADLINE;
    let mut text = Vec::new();
    let dropped = loop {
        let mut buf = vec![0u8; 1 << 16];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
        {
            text.extend_from_slice(&buf[..n]);
        }
        let all = String::from_utf8_lossy(&text).into_owned();
        let status = all
            .split("\n\n")
            .filter(|frame| frame.contains("event: status"))
            .filter_map(|frame| {
                let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
                serde_json::from_str::<Value>(data).ok()
            })
            .find(|status| status["dropped"].as_u64().is_some_and(|d| d > 0));
        if let Some(status) = status {
            break status;
        }
        assert!(std::time::Instant::now() < until, "no status with drops");
    };
    let (seen, lost) = (
        dropped["seen"].as_u64().unwrap(),
        dropped["dropped"].as_u64().unwrap(),
    );
    assert!(seen <= EVENTS && lost <= seen, "{dropped}");

    for (query, status) in [
        ("pipeline=nope", 404),
        ("stage=twice", 400),
        ("pipeline=doubled&since=0", 400),
        ("buffer=0", 400),
        ("buffer=10001", 400),
        ("sample=0", 400),
        ("what=1", 400),
    ] {
        let (got, body) = node.get(&format!("/api/tap?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(
            body["error"].is_string() && body["reason"].is_string(),
            "{body}"
        );
    }
}
