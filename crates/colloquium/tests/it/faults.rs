//! Faults injected from the outside (issue 22): a full disk hit by a WAL append (small synced
//! writes, big NDJSON batches) or by a flush, recovered from without a restart; a store that
//! cannot write still shuts down cleanly; refused uploads are answered, not cut off.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, Tmpfs, eventually};

const MINUTE: Duration = Duration::from_secs(60);

/// The values of `label` in the samples of counter `metric` (e.g. which files failed writes
/// reached: `wal`, `table`; how the store recovered: `resumed`, `reopened`).
async fn label_values(node: &Node, metric: &str, label: &str) -> Vec<String> {
    let (_, metrics) = node.get_text("/metrics").await;
    let (series, label) = (format!("{metric}{{"), format!("{label}=\""));
    metrics
        .lines()
        .filter(|l| l.starts_with(&series))
        .filter_map(|l| Some(l.split(&label).nth(1)?.split('"').next()?.to_owned()))
        .collect()
}

/// A payload of `len` characters that does not compress (so memtables, WAL and SST files are
/// about as large as the data), different for each `seed`.
fn noise(seed: u64, len: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// Posts `body` and returns the status and the ids it acknowledged.
async fn post_ids(node: &Node, body: &str, content_type: &str) -> (u16, Vec<String>, Value) {
    let (status, answer) = node.post(body, content_type).await;
    let ids = answer["ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .map(|id| id.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    (status, ids, answer)
}

/// The store answers writes again and says healthy, without a restart, after `free` runs;
/// `/health` turns healthy before any write is tried.
async fn recovers(node: &Node, free: impl FnOnce()) -> String {
    let (status, health) = node.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["components"]["storage"]["status"], "unhealthy");
    free();
    eventually(MINUTE, "healthy again before any write", || async {
        let (status, health) = node.get("/health").await;
        (status == 200 && health["components"]["storage"]["status"] == "healthy").then_some(())
    })
    .await;
    let how = label_values(node, "colloquium_storage_recoveries_total", "how").await;
    eprintln!("recovered: {how:?}");
    assert!(!how.is_empty(), "no recovery counted");
    let (status, ids, body) = post_ids(node, r#"{"after":1}"#, "application/json").await;
    assert_eq!(status, 202, "the first write after recovery: {body}");
    ids[0].clone()
}

/// Every id in `acked` is stored, by the replay stream.
async fn all_there(node: &Node, acked: &[String]) {
    let stored: std::collections::HashSet<String> = node
        .all_events()
        .await
        .into_iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let missing = acked.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events lost",
        acked.len()
    );
}

/// Writes `write(n)` for n = 0, 1, … until one is refused, calling `between(n)` before each;
/// returns the acknowledged ids (checking the refusal says the disk is full, with no path).
async fn write_until_refused<F, Fut>(mut write: F, mut between: impl FnMut(u64)) -> Vec<String>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = (u16, Vec<String>, Value)>,
{
    let mut acked = Vec::new();
    let deadline = std::time::Instant::now() + 2 * MINUTE;
    for n in 0.. {
        assert!(std::time::Instant::now() < deadline, "no write refused");
        between(n);
        let (status, ids, body) = write(n).await;
        match status {
            202 => acked.extend(ids),
            503 => {
                assert_eq!(body["reason"], "storage_unavailable", "{body}");
                let error = body["error"].as_str().unwrap();
                assert!(error.contains("disk is full"), "{error}");
                assert!(!error.contains('/'), "leaks a path: {error}");
                return acked;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    unreachable!()
}

/// `count` events of ~`size` bytes as NDJSON: `noise` (incompressible) or one repeated letter
/// (which LZ4 shrinks ~100 times, so flushes need next to no space).
fn events(seed: u64, count: u64, size: usize, incompressible: bool) -> String {
    (0..count)
        .map(|i| {
            let pad = if incompressible {
                noise(seed << 20 | i, size)
            } else {
                "x".repeat(size)
            };
            format!("{{\"seed\":{seed},\"i\":{i},\"pad\":\"{pad}\"}}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How a full-disk test writes once the disk is nearly full.
struct Fill {
    /// Events per request.
    batch: u64,
    /// Bytes per event.
    size: usize,
    /// Noise (flushes need as much space as the log) or one letter (they need next to none).
    incompressible: bool,
    /// The file the refused write reached: `wal` or `table` (a flush).
    hits: &'static str,
}

/// A node with 4 MiB write buffers on a 160 MiB tmpfs: its events memtable filled to 3 MiB,
/// then the disk to 1 MiB of free space (less than the 4.4 MiB RocksDB preallocates for a new
/// WAL, so the next WAL grows a page at a time), then `fill`'s writes until one is refused.
/// It must have hit `fill.hits`; the node recovers once the filler is removed, with no restart
/// and with every acknowledged event, and has them all after a restart.
async fn full_disk_is_recovered_from(fill: Fill) {
    let Some(fs) = Tmpfs::mount("160m") else {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    };
    let node = Node::start_in(
        fs.dir.clone(),
        "storage:\n  write_buffer: 4MiB\n  min_free_disk: 1KiB\n",
    );
    let memtable = "colloquium_storage_bytes{cf=\"events\"}";
    let mut acked = Vec::new();
    for n in 0.. {
        let (_, metrics) = node.get_text("/metrics").await;
        if crate::reliability::metric(&metrics, memtable) >= f64::from(3 << 20) {
            break;
        }
        let body = events(n, 64, 1_000, fill.incompressible);
        let (status, ids, answer) = post_ids(&node, &body, "application/x-ndjson").await;
        assert_eq!(status, 202, "{answer}");
        acked.extend(ids);
    }
    fs.fill("filler");
    let filler = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.dir.path().join("filler"))
        .unwrap();
    let len = filler.metadata().unwrap().len();
    filler.set_len(len - (1 << 20)).unwrap();
    drop(filler); // an open file keeps its space after it is removed
    let more = write_until_refused(
        |n| {
            let body = events(1_000 + n, fill.batch, fill.size, fill.incompressible);
            let node = &node;
            async move { post_ids(node, &body, "application/x-ndjson").await }
        },
        |_| {},
    )
    .await;
    acked.extend(more);
    let failed = label_values(&node, "colloquium_storage_write_errors_total", "file").await;
    assert!(
        failed.iter().any(|f| f == fill.hits),
        "the fill hit {failed:?}, not {}",
        fill.hits
    );
    let id = recovers(&node, || {
        std::fs::remove_file(fs.dir.path().join("filler")).unwrap()
    })
    .await;
    acked.push(id);
    all_there(&node, &acked).await;
    let (exit, stopped) = node.terminate();
    assert!(exit.success(), "{exit:?}");
    let node = stopped.restart();
    all_there(&node, &acked).await;
}

/// Single 2 KB events, each fsynced: the log append fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_hit_by_small_synced_wal_appends_is_recovered_from() {
    full_disk_is_recovered_from(Fill {
        batch: 1,
        size: 2_000,
        incompressible: false,
        hits: "wal",
    })
    .await;
}

/// NDJSON batches of 1,000 ~1 KB events: the log append fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_hit_by_big_ndjson_batches_is_recovered_from() {
    full_disk_is_recovered_from(Fill {
        batch: 1_000,
        size: 1_000,
        incompressible: false,
        hits: "wal",
    })
    .await;
}

/// Incompressible events: the memtable's flush needs 4 MiB of the 1 MiB left, while the small
/// writes after it still find pages for the log: the flush fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_hit_by_a_flush_is_recovered_from() {
    full_disk_is_recovered_from(Fill {
        batch: 1,
        size: 2_000,
        incompressible: true,
        hits: "table",
    })
    .await;
}

/// Stops a node whose disk is full (by SIGTERM: it must exit 0, nothing to flush can be
/// written and nothing acknowledged needs it, it is in the WAL; or by SIGKILL); once space is
/// back, the next start has every acknowledged event.
async fn stopped_while_the_disk_is_full(kill: bool) {
    let Some(fs) = Tmpfs::mount("160m") else {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    };
    let node = Node::start_in(fs.dir.clone(), "storage:\n  min_free_disk: 1KiB\n");
    let acked = write_until_refused(
        |n| {
            let body = events(n, 10, 1_000, true);
            let node = &node;
            async move { post_ids(node, &body, "application/x-ndjson").await }
        },
        |n| {
            if n % 16 == 0 {
                fs.fill("filler");
            }
        },
    )
    .await;
    let stopped = if kill {
        node.kill9()
    } else {
        let (exit, stopped) = node.terminate();
        assert!(exit.success(), "a clean shutdown of a full store: {exit:?}");
        stopped
    };
    std::fs::remove_file(fs.dir.path().join("filler")).unwrap();
    let node = stopped.restart();
    all_there(&node, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_still_shuts_down_cleanly() {
    stopped_while_the_disk_is_full(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_while_its_disk_is_full_loses_nothing() {
    stopped_while_the_disk_is_full(true).await;
}

/// Eight clients that send their whole body before they read the answer (Python's
/// `http.client`, under `urllib`) post 8 MB arrays (some over the in-flight byte bound, so
/// refused with 503 mid-body) and 12 MB ones (over `max_body_size`: 413): every request gets
/// its answer, none a reset or broken pipe, and what got 202 is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_are_answered_not_cut_off() {
    let node = Node::start(
        "server:\n  max_body_size: 10MiB\n  max_pending_bytes: 12MiB\nstorage:\n  sync: false\n",
    );
    let script = r#"
import json, sys, threading, urllib.request, urllib.error
url = sys.argv[1]
def array(n):
    return ('[' + ','.join(json.dumps({"i": i, "pad": "x" * 1000}) for i in range(n)) + ']').encode()
bodies = [array(8000), array(12000)]
results = []
def client(c):
    for r in range(4):
        body = bodies[(c + r) % 2]
        request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                results.append([len(body), answer.status, json.load(answer)["accepted"]])
        except urllib.error.HTTPError as e:
            results.append([len(body), e.code, json.load(e)["reason"]])
        except Exception as e:
            results.append([len(body), type(e).__name__, str(e)])
threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(results))
"#;
    let url = node.url("/events");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", script, &url])
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<(usize, Value, Value)> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), 32);
    let mut accepted = 0;
    let mut refused = 0;
    for (len, status, what) in &results {
        match (status.as_u64(), *len > 10 << 20) {
            (Some(202), false) => accepted += what.as_u64().unwrap(),
            (Some(413), true) => assert_eq!(what, "too_large"),
            (Some(503), false) => {
                assert_eq!(what, "overloaded");
                refused += 1;
            }
            _ => panic!("a {len}-byte upload got {status} {what}: {results:?}"),
        }
    }
    assert!(refused > 0, "no upload was refused mid-body: {results:?}");
    assert_eq!(node.all_events().await.len() as u64, accepted);
}

/// curl sends `Expect: 100-continue` for a large body: a declared length over
/// `server.max_body_size` is answered 413 before any of the body is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let node = Node::start("server:\n  max_body_size: 1MiB\n");
    let body = node.dir.path().join("big.json");
    std::fs::write(&body, format!("{{\"pad\":\"{}\"}}", "x".repeat(4 << 20))).unwrap();
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(node.url("/events"))
        .output()
        .expect("curl runs");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(answer, "413 0", "status and bytes uploaded");
}
