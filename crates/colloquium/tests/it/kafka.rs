//! Issue 23: Kafka source and sink against a real Kafka-compatible broker (`tansu`, started
//! here on 127.0.0.1 and stopped after; the bootstrap installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::harness::{Node, eventually};

/// The broker binary: `COLLOQUIUM_TANSU`, else where the bootstrap puts it.
fn tansu() -> PathBuf {
    if let Ok(path) = std::env::var("COLLOQUIUM_TANSU") {
        return PathBuf::from(path);
    }
    crate::harness::tools_dir().join("bin/tansu")
}

/// A tansu broker on 127.0.0.1 with in-memory storage.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut broker = Broker { child: None, port };
        broker.restart();
        broker
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port: an empty broker (memory storage).
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (run scripts/bootstrap.sh --test): {e}",
                    tansu().display()
                )
            });
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        // A client of the node may have had it created first (auto-creation on a metadata
        // request, right after a broker restart): then it exists, which is what was asked.
        let exists = || {
            let metadata = self
                .producer()
                .client()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()?;
            let topic = metadata.topics().iter().find(|t| t.name() == name)?;
            (topic.error().is_none() && !topic.partitions().is_empty()).then_some(())
        };
        assert!(
            status.success() || exists().is_some(),
            "creating topic {name}"
        );
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("linger.ms", "5")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("a producer")
    }

    /// Every message of `topic` (partitions `0..partitions`), read from the start until
    /// `count` arrived or `deadline` passed.
    pub fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        count: usize,
        deadline: Duration,
    ) -> Vec<Read> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", "colloquium-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut read = Vec::new();
        let until = Instant::now() + deadline;
        while read.len() < count && Instant::now() < until {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                read.push(Read {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(Value::Null),
                });
            }
        }
        read
    }

    /// The group's committed offsets for `topic`'s partitions (−1: none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", group)
            .create()
            .expect("a consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        (0..partitions)
            .map(
                |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => n,
                    _ => -1,
                },
            )
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message read back from a topic.
#[derive(Debug)]
pub struct Read {
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub value: Value,
}

/// Sends `{"n": i}` for `i` in `range` to `topic`, keyed by `n` (so spread over partitions),
/// and waits for every acknowledgement.
fn produce_numbered(producer: &BaseProducer, topic: &str, range: std::ops::Range<u64>) {
    produce_padded(producer, topic, range, 100);
}

/// [`produce_numbered`] with `pad` bytes of padding in each message.
fn produce_padded(producer: &BaseProducer, topic: &str, range: std::ops::Range<u64>, pad: usize) {
    let pad = "x".repeat(pad);
    for n in range {
        let payload = format!("{{\"n\":{n},\"pad\":\"{pad}\"}}");
        let key = n.to_string();
        let mut record = BaseRecord::to(topic).payload(&payload).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("the broker acknowledged every message");
}

/// [`produce_numbered`] with 1,000 bytes of noise in each message (which no compression
/// shrinks).
fn produce_noise(producer: &BaseProducer, topic: &str, range: std::ops::Range<u64>) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ range.start;
    for n in range {
        let noise: String = (0..125)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                format!("{:08x}", state as u32)
            })
            .collect();
        let payload = format!("{{\"n\":{n},\"pad\":\"{noise}\"}}");
        let key = n.to_string();
        let mut record = BaseRecord::to(topic).payload(&payload).key(&key);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("the broker acknowledged every message");
}

/// A source section for `topic` in group `group` with test-friendly timeouts.
fn source(broker: &Broker, topic: &str, group: &str, extra: &str) -> String {
    format!(
        r#"
  k:
    type: kafka
    brokers: {}
    topics: [{topic}]
    group_id: {group}
    commit_interval: 1s
    options:
      session.timeout.ms: "6000"
      heartbeat.interval.ms: "500"
      max.poll.interval.ms: "10000"
      topic.metadata.refresh.interval.ms: "1000"
{extra}"#,
        broker.addr()
    )
}

/// The `n` of every stored event of source `k`, with how many times each was stored.
async fn stored_numbers(node: &Node) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for event in node.all_events().await {
        if event["metadata"]["source"] == "k"
            && let Some(n) = event["data"]["n"].as_u64()
        {
            *seen.entry(n).or_default() += 1;
        }
    }
    seen
}

/// Messages source `k` has stored, by its metric (which reads nothing from the store).
async fn kafka_stored(node: &Node) -> u64 {
    let (_, metrics) = node.get_text("/metrics").await;
    metrics
        .lines()
        .filter(|l| l.starts_with("colloquium_kafka_stored_messages_total{source=\"k\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every stored event of source `k` as (partition, offset, n).
async fn stored_origins(node: &Node) -> Vec<(i64, i64, u64)> {
    node.all_events()
        .await
        .iter()
        .filter(|e| e["metadata"]["source"] == "k")
        .filter_map(|e| {
            let k = &e["metadata"]["kafka"];
            Some((
                k["partition"].as_i64()?,
                k["offset"].as_i64()?,
                e["data"]["n"].as_u64()?,
            ))
        })
        .collect()
}

async fn wait_for_count(node: &Node, total: usize, deadline: Duration) -> BTreeMap<u64, usize> {
    let until = Instant::now() + deadline;
    loop {
        let seen = stored_numbers(node).await;
        if seen.len() >= total || Instant::now() > until {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_round_trip_keeps_keys_headers_metadata_and_dead_letters_poison() {
    let broker = Broker::start();
    broker.create_topic("raw", 1);
    broker.create_topic("strict", 1);
    let config = format!(
        "server: {{max_body_size: 2KiB}}\nsources:{}{}",
        source(&broker, "raw", "g1", "    priorities: {raw: high}"),
        source(&broker, "strict", "g2", "    bad_payload: dlq").replace("\n  k:", "\n  s:"),
    );
    let node = Node::start(&config);
    let producer = broker.producer();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace",
            value: Some("abc"),
        })
        .insert(Header {
            key: "bin",
            value: Some(&[0xff_u8, 0x00][..]),
        });
    for topic in ["raw", "strict"] {
        producer
            .send(
                BaseRecord::to(topic)
                    .payload(r#"{"user":"ada","n":1}"#)
                    .key("ada")
                    .headers(headers.clone()),
            )
            .expect("send");
        producer
            .send(BaseRecord::<(), _>::to(topic).payload("not json"))
            .expect("send");
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
        producer
            .send(BaseRecord::<(), _>::to(topic).payload(&big))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let events = eventually(
        Duration::from_secs(60),
        "the raw topic's events",
        || async {
            let events: Vec<Value> = node
                .all_events()
                .await
                .into_iter()
                .filter(|e| e["metadata"]["source"] == "k")
                .collect();
            (events.len() >= 2).then_some(events)
        },
    )
    .await;
    let json = events
        .iter()
        .find(|e| e["data"]["user"] == "ada")
        .expect("the JSON message");
    let kafka = &json["metadata"]["kafka"];
    assert_eq!(kafka["topic"], "raw");
    assert_eq!(kafka["partition"], 0);
    assert_eq!(kafka["offset"], 0);
    assert_eq!(kafka["key"], "ada");
    assert_eq!(kafka["headers"]["trace"], "abc");
    assert_eq!(
        kafka["headers"]["bin"], "/wA=",
        "non-UTF-8 header values are base64"
    );
    assert_eq!(kafka["binary"], serde_json::json!(["bin"]));
    assert!(kafka["timestamp"].as_i64().is_some());
    assert_eq!(json["metadata"]["topic"], "raw");
    assert_eq!(json["metadata"]["routing_key"], "ada");
    assert_eq!(
        json["metadata"]["priority"], "high",
        "raised by `priorities`"
    );
    let raw = events
        .iter()
        .find(|e| e["data"]["raw"].is_string())
        .expect("the raw message");
    assert_eq!(raw["data"]["raw"], "bm90IGpzb24=");
    assert_eq!(raw["metadata"]["kafka"]["offset"], 1);

    // Dead letters: the oversized message of each topic, and strict's non-JSON one.
    let letters = eventually(Duration::from_secs(60), "three dead letters", || async {
        let letters = node.dead_letters("").await;
        (letters.len() >= 3).then_some(letters)
    })
    .await;
    let origin = |l: &Value| {
        let k = &l["event"]["metadata"]["kafka"];
        (
            k["topic"].as_str().unwrap_or_default().to_owned(),
            k["offset"].as_i64().unwrap_or(-1),
        )
    };
    let mut found: Vec<(String, i64)> = letters.iter().map(origin).collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("raw".to_owned(), 2),
            ("strict".to_owned(), 1),
            ("strict".to_owned(), 2)
        ]
    );
    for letter in &letters {
        assert_eq!(letter["reason"], "bad_payload", "{letter}");
        assert!(
            letter["event"]["data"]["raw"].is_string(),
            "the raw bytes are kept: {letter}"
        );
    }
    assert!(letters.iter().any(|l| {
        l["error"]
            .as_str()
            .unwrap_or_default()
            .contains("larger than max_body_size")
    }));
    let strict: Vec<Value> = node
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["metadata"]["source"] == "s")
        .collect();
    assert_eq!(
        strict.len(),
        1,
        "strict keeps only the JSON message: {strict:?}"
    );

    // The assignment and lag in /health, the per-partition metrics.
    let health = eventually(
        Duration::from_secs(20),
        "the position in /health",
        || async {
            let (_, health) = node.get("/health").await;
            let k = &health["components"]["sources"]["k"]["assignment"][0];
            (k["position"] == 3 && k["lag"] == 0).then_some(health)
        },
    )
    .await;
    assert_eq!(
        health["components"]["sources"]["k"]["assignment"][0]["topic"],
        "raw"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"colloquium_kafka_stored_messages_total{source="k",topic="raw",partition="0"} 3"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigkill_at_20_random_moments_stores_every_message_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("numbers", 4);
    let total: u64 = 20_000;
    let config = format!("sources:{}", source(&broker, "numbers", "exactly", ""));
    let sent = Arc::new(AtomicU64::new(0));
    let producing = {
        let (producer, sent) = (broker.producer(), sent.clone());
        std::thread::spawn(move || {
            // Paced so the kills land while messages are still arriving.
            for chunk in 0..total / 250 {
                produce_numbered(&producer, "numbers", chunk * 250..(chunk + 1) * 250);
                sent.store((chunk + 1) * 250, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(40));
            }
        })
    };
    let mut node = Node::start(&config);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for kill in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        tokio::time::sleep(Duration::from_millis(100 + rng % 1500)).await;
        let stopped = node.kill9();
        node = stopped.restart();
        let seen = stored_numbers(&node).await;
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            twice.is_empty(),
            "after kill {kill}: stored twice: {twice:?}"
        );
    }
    producing.join().expect("the producer");
    let seen = wait_for_count(&node, total as usize, Duration::from_secs(120)).await;
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let missing: Vec<u64> = (0..total)
        .filter(|n| !seen.contains_key(n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "never stored (of {} sent): {missing:?}",
        sent.load(Ordering::Relaxed)
    );
}

/// A full disk while messages stream to 4 partitions: the source's batches in flight fail
/// together (a failed one fails every later one unwritten), it reads them again once space is
/// back, and every message is stored exactly once, before and after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_full_disk_mid_stream_stores_every_message_exactly_once() {
    let Some(fs) = crate::harness::Tmpfs::mount("160m") else {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    };
    let broker = Broker::start();
    broker.create_topic("numbers", 4);
    let config = format!(
        "storage:\n  write_buffer: 4MiB\n  min_free_disk: 1KiB\nsources:{}",
        source(&broker, "numbers", "full", "")
    );
    let node = Node::start_in(fs.dir.clone(), &config);
    let producer = broker.producer();
    produce_padded(&producer, "numbers", 0..2_000, 1_000);
    let before = wait_for_count(&node, 2_000, Duration::from_secs(60)).await;
    assert_eq!(before.len(), 2_000);

    // Incompressible messages, 1,000 at a time, the disk topped up before each (RocksDB frees
    // obsolete files and preallocates its WAL), until the store refuses a write.
    let mut sent = 2_000;
    'refused: loop {
        assert!(sent < 40_000, "no write refused");
        fs.fill("filler");
        produce_noise(&producer, "numbers", sent..sent + 1_000);
        sent += 1_000;
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, health) = node.get("/health").await;
            if health["components"]["storage"]["status"] == "unhealthy" {
                break 'refused;
            }
            if kafka_stored(&node).await >= sent {
                break;
            }
            assert!(Instant::now() < until, "neither stored nor refused");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    std::fs::remove_file(fs.dir.path().join("filler")).unwrap();

    let check = |seen: &BTreeMap<u64, usize>, when: &str| {
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
        assert!(twice.is_empty(), "{when}: stored twice: {twice:?}");
        let missing: Vec<u64> = (0..sent)
            .filter(|n| !seen.contains_key(n))
            .take(5)
            .collect();
        assert!(missing.is_empty(), "{when}: never stored: {missing:?}");
    };
    // The log is read once the store has recovered (a replay stream open while it reopens is
    // cut off) and the source has stored as many messages as were sent.
    eventually(Duration::from_secs(120), "every message stored", || async {
        let (_, health) = node.get("/health").await;
        let healthy = health["components"]["storage"]["status"] == "healthy";
        (healthy && kafka_stored(&node).await >= sent).then_some(())
    })
    .await;
    check(&stored_numbers(&node).await, "once space is back");
    let (exit, stopped) = node.terminate();
    assert!(exit.success(), "{exit:?}");
    let node = stopped.restart();
    check(&stored_numbers(&node).await, "after a restart");
}

/// Two nodes in one group; `leave` stops the first mid-stream (SIGKILL or SIGTERM) and
/// restarts it. Returns the duplicates across nodes and the ones the kill explains.
async fn two_nodes(kill: bool) -> (usize, usize) {
    let broker = Broker::start();
    broker.create_topic("shared", 4);
    let total: u64 = 20_000;
    let config = format!("sources:{}", source(&broker, "shared", "pair", ""));
    let a = Node::start(&config);
    let b = Node::start(&config);
    // Both members joined before the stream starts.
    eventually(Duration::from_secs(60), "both nodes assigned", || async {
        let assigned = |h: Value| {
            h["components"]["sources"]["k"]["assignment"]
                .as_array()
                .map_or(0, Vec::len)
        };
        let (na, nb) = (
            assigned(a.get("/health").await.1),
            assigned(b.get("/health").await.1),
        );
        (na > 0 && nb > 0 && na + nb == 4).then_some(())
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let producer = broker.producer();
        let stop = stop.clone();
        std::thread::spawn(move || {
            for chunk in 0..total / 500 {
                produce_numbered(&producer, "shared", chunk * 500..(chunk + 1) * 500);
                std::thread::sleep(Duration::from_millis(50));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (committed, stopped) = if kill {
        let stopped = a.kill9();
        // What the group had committed when the node died: it cannot commit any more.
        (broker.committed("pair", "shared", 4), stopped)
    } else {
        let (status, stopped) = a.terminate();
        assert!(status.success(), "a graceful leave exits 0: {status:?}");
        (Vec::new(), stopped)
    };
    let a = stopped.restart();
    producing.join().expect("the producer");
    let until = Instant::now() + Duration::from_secs(180);
    let (sa, sb) = loop {
        let (sa, sb) = (stored_numbers(&a).await, stored_numbers(&b).await);
        let union: BTreeSet<u64> = sa.keys().chain(sb.keys()).copied().collect();
        if union.len() as u64 >= total || Instant::now() > until {
            break (sa, sb);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (name, seen) in [("a", &sa), ("b", &sb)] {
        let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
        assert!(twice.is_empty(), "node {name} stored some twice: {twice:?}");
    }
    let union: BTreeSet<u64> = sa.keys().chain(sb.keys()).copied().collect();
    let missing: Vec<u64> = (0..total).filter(|n| !union.contains(n)).take(5).collect();
    assert!(missing.is_empty(), "stored by neither node: {missing:?}");
    let duplicates: BTreeSet<u64> = sa.keys().filter(|n| sb.contains_key(n)).copied().collect();
    // A duplicate must be one node's message at or after the offset committed at the kill.
    let origins_a = stored_origins(&a).await;
    let origins_b = stored_origins(&b).await;
    let mut explained = 0;
    for (p, o, n) in origins_a.iter().chain(origins_b.iter()) {
        if duplicates.contains(n) {
            let committed_at_kill = committed
                .get(usize::try_from(*p).unwrap_or(0))
                .copied()
                .unwrap_or(-1);
            if *o >= committed_at_kill {
                explained += 1;
            }
        }
    }
    (duplicates.len(), explained / 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_two_nodes_one_killed_store_every_message_and_duplicate_only_the_uncommitted() {
    let (duplicates, explained) = two_nodes(true).await;
    eprintln!("kafka scale-out: {duplicates} messages stored by both nodes after a SIGKILL");
    assert_eq!(
        duplicates, explained,
        "every duplicate was stored past the committed offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_graceful_leave_duplicates_nothing_across_nodes() {
    let (duplicates, _) = two_nodes(false).await;
    assert_eq!(
        duplicates, 0,
        "a SIGTERMed node commits everything it stored before it leaves"
    );
}

/// Backpressure: a lane of 1,000 events that blocks, and a sink held open, so the pipeline
/// stands still while far more than the node may buffer waits in the topic. The source pauses
/// its partitions, the node's memory stays bounded, and after release every message is
/// stored once and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backpressure_pauses_partitions_keeps_memory_bounded_and_loses_nothing() {
    const TOTAL: u64 = 120_000;
    const PAD: usize = 4_000; // 120,000 × ~4 KB: 480 MB waiting in the topic
    let broker = Broker::start();
    broker.create_topic("backlog", 4);
    produce_padded(&broker.producer(), "backlog", 0..TOTAL, PAD);

    let receiver = crate::harness::Receiver::start().await;
    receiver.hold();
    let config = format!(
        r#"lanes: {{transactional: {{capacity: 1000, overflow: block}}}}
sources:{}
sinks:
  hook: {{type: http, url: '{}', timeout: 300s, batch_size: 1000}}
pipelines:
  - name: held
    stages:
      - {{type: transform, script: [obj, [n, [get, [$input], /n]]]}}
    sinks: [hook]
"#,
        source(&broker, "backlog", "pressed", ""),
        receiver.url
    );
    let node = Node::start(&config);
    // The lane fills, the source pauses with most of the topic still waiting.
    let lag = eventually(Duration::from_secs(60), "the partitions paused", || async {
        let (_, health) = node.get("/health").await;
        let k = &health["components"]["sources"]["k"];
        let paused = k["assignment"]
            .as_array()
            .is_some_and(|a| a.len() == 4 && a.iter().all(|p| p["paused"] == true));
        let lag = k["lag"].as_u64().unwrap_or(0);
        (paused && lag > TOTAL / 2).then_some(lag)
    })
    .await;
    // Batches fetched before the pause may still be landing in the lane: the lag settles.
    let mut lag = lag;
    let settle_until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, health) = node.get("/health").await;
        let now = health["components"]["sources"]["k"]["lag"]
            .as_u64()
            .unwrap_or(0);
        if now == lag {
            break;
        }
        assert!(
            std::time::Instant::now() < settle_until,
            "the lag never settled"
        );
        lag = now;
    }
    // It stays paused: sample the node's memory for a while.
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        peak = peak.max(node.rss().1);
    }
    let (_, health) = node.get("/health").await;
    let still = health["components"]["sources"]["k"]["lag"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        still >= lag,
        "nothing is taken while paused: {still} < {lag}"
    );
    let waiting = still * (PAD as u64 + 20);
    eprintln!(
        "kafka backpressure: peak RSS {} MiB while {} MiB wait in the topic",
        peak >> 20,
        waiting >> 20
    );
    assert!(
        peak < waiting / 2,
        "memory grows with the backlog: {} MiB peak RSS, {} MiB waiting",
        peak >> 20,
        waiting >> 20
    );

    receiver.release();
    let received = eventually(
        Duration::from_secs(300),
        "every message delivered",
        || async {
            let received = receiver.received();
            (received.len() as u64 >= TOTAL).then_some(received)
        },
    )
    .await;
    let numbers: BTreeSet<u64> = received
        .iter()
        .filter_map(|r| r["data"]["n"].as_u64())
        .collect();
    assert_eq!(numbers.len() as u64, TOTAL, "each message once");
    assert_eq!(numbers, (0..TOTAL).collect(), "nothing lost");
    let (_, metrics) = node.get_text("/metrics").await;
    let stored: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("colloquium_kafka_stored_messages_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(stored, TOTAL, "stored once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_delivers_keys_and_headers_and_survives_a_broker_restart() {
    let mut broker = Broker::start();
    broker.create_topic("results", 1);
    let config = format!(
        r#"
sinks:
  out:
    type: kafka
    brokers: {}
    topic: results
    key: /data/user
    delivery_timeout: 5s
pipelines:
  - name: forward
    stages: []
    sinks: [out]
"#,
        broker.addr()
    );
    let node = Node::start(&config);
    let batch = |from: u64| -> String {
        (from..from + 100)
            .map(|n| format!("{{\"user\":\"u{}\",\"n\":{n}}}\n", n % 7))
            .collect()
    };
    let (status, _) = node.post(&batch(0), "application/x-ndjson").await;
    assert_eq!(status, 202);
    let read = broker.read_all("results", 1, 100, Duration::from_secs(60));
    assert_eq!(read.len(), 100);
    let first = read
        .iter()
        .find(|r| r.value["data"]["n"] == 3)
        .expect("n=3");
    assert_eq!(first.key.as_deref(), Some("u3"));
    assert_eq!(first.headers["colloquium-source"], "http");
    assert_eq!(first.headers["colloquium-pipeline"], "default");
    assert!(first.headers.contains_key("colloquium-id"));

    // The broker goes away for 10 s; results wait, then arrive (the empty broker's topic is
    // created again as it comes back).
    broker.stop();
    let (status, _) = node.post(&batch(100), "application/x-ndjson").await;
    assert_eq!(status, 202, "ingest does not wait for the sink");
    tokio::time::sleep(Duration::from_secs(10)).await;
    broker.restart();
    broker.create_topic("results", 1);
    let read = broker.read_all("results", 1, 100, Duration::from_secs(90));
    let numbers: BTreeSet<u64> = read
        .iter()
        .filter_map(|r| r.value["data"]["n"].as_u64())
        .collect();
    let missing: Vec<u64> = (100..200).filter(|n| !numbers.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "lost while the broker was down: {missing:?}"
    );
    assert!(
        node.dead_letters("").await.is_empty(),
        "nothing was dead-lettered"
    );
}

/// A result the broker will never take (too large; a topic that does not exist, with
/// auto-create off) is a `sink_rejected` dead letter with the error; the rest are delivered
/// and the pipeline moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_dead_letters_what_the_broker_refuses_for_good() {
    let broker = Broker::start();
    broker.create_topic("good", 1);
    let config = format!(
        r#"
sinks:
  out:
    type: kafka
    brokers: {}
    topic: /data/dest
    options:
      topic.metadata.propagation.max.ms: "2000"
      allow.auto.create.topics: "false"
pipelines:
  - name: forward
    stages: []
    sinks: [out]
"#,
        broker.addr()
    );
    let node = Node::start(&config);
    let big = "x".repeat(1_500_000);
    let body = format!(
        "{{\"dest\":\"good\",\"n\":1}}\n{{\"dest\":\"good\",\"n\":2,\"pad\":\"{big}\"}}\n{{\"dest\":\"nowhere\",\"n\":3}}\n{{\"dest\":\"good\",\"n\":4}}\n"
    );
    let (status, answer) = node.post(&body, "application/x-ndjson").await;
    assert_eq!(status, 202, "{answer}");
    let letters = eventually(Duration::from_secs(60), "two dead letters", || async {
        let letters = node.dead_letters("reason=sink_rejected").await;
        (letters.len() >= 2).then_some(letters)
    })
    .await;
    let mut refused: Vec<(u64, String)> = letters
        .iter()
        .map(|l| {
            (
                l["event"]["data"]["n"].as_u64().unwrap_or(0),
                l["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    refused.sort();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].0, 2);
    assert!(refused[0].1.contains("too large"), "{refused:?}");
    assert_eq!(refused[1].0, 3);
    assert!(
        refused[1].1.contains("Unknown topic or partition"),
        "{refused:?}"
    );
    let read = broker.read_all("good", 1, 2, Duration::from_secs(30));
    let numbers: Vec<u64> = read
        .iter()
        .filter_map(|r| r.value["data"]["n"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 4], "the others are delivered");
}

/// No broker reachable: the node starts, its source says so in `/health` (degraded, with the
/// reason), and once a broker comes up on that address it consumes and is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_without_a_broker_is_degraded_until_one_answers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut broker = Broker { child: None, port };
    let node = Node::start(&format!(
        "sources:{}",
        source(&broker, "late", "waiting", "")
    ));
    let reason = eventually(Duration::from_secs(30), "a degraded source", || async {
        let (_, health) = node.get("/health").await;
        let k = &health["components"]["sources"]["k"];
        (k["status"] == "degraded").then(|| k["reasons"][0].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("no broker is reachable"), "{reason}");
    let (_, health) = node.get("/health").await;
    assert_eq!(health["status"], "degraded", "{health}");

    broker.restart();
    broker.create_topic("late", 1);
    produce_numbered(&broker.producer(), "late", 0..10);
    let seen = wait_for_count(&node, 10, Duration::from_secs(60)).await;
    assert_eq!(seen.len(), 10, "{seen:?}");
    eventually(Duration::from_secs(30), "a healthy source", || async {
        let (_, health) = node.get("/health").await;
        (health["components"]["sources"]["k"]["status"] == "healthy").then_some(())
    })
    .await;
}

/// The bootstrap finds OpenSSL the way librdkafka's build does (pkg-config's `openssl`), and
/// for the tests a tansu that runs.
#[test]
fn the_bootstrap_detects_openssl_via_pkg_config_and_a_tansu_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, body: &str| crate::harness::fake_script(dir.path(), name, body);
    let has_openssl = fake("pkg-config-ok", r#"[ "$1 $2" = "--exists openssl" ]"#);
    let no_openssl = fake("pkg-config-no", "exit 1");
    let tansu_ok = fake("tansu-ok", "echo 'tansu 0.6.0'");
    let tansu_broken = fake("tansu-broken", "exit 127");
    let check = |pkg_config: &std::path::Path, tansu: &std::path::Path, args: &[&str]| {
        crate::harness::run_bootstrap(
            args,
            &[
                ("BOOTSTRAP_PKG_CONFIG", pkg_config),
                ("BOOTSTRAP_TANSU", tansu),
            ],
        )
    };
    let (code, out) = check(&has_openssl, &tansu_ok, &["--check", "--test"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tansu-ok"), "{out}");
    let (code, out) = check(&no_openssl, &tansu_ok, &["--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing libssl-dev"), "{out}");
    assert!(
        !out.contains("pkg-config "),
        "pkg-config itself is there: {out}"
    );
    let (code, out) = check(&dir.path().join("absent"), &tansu_ok, &["--check"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing pkg-config libssl-dev"), "{out}");
    let (code, out) = check(&has_openssl, &tansu_broken, &["--check", "--test"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("tansu"), "{out}");
    let (code, out) = check(&has_openssl, &tansu_broken, &["--check"]);
    assert_eq!(code, Some(0), "the build needs no broker: {out}");
}
