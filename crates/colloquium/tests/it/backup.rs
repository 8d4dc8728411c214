//! Backups from the outside: `colloquium backup` against a running node under load,
//! `colloquium restore`, a node on the restored directory, and a backup to a full disk.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, Tmpfs, eventually, run_cli};

const CONFIG: &str = "sinks: {db: {type: store}}\npipelines:\n  - {name: all, sinks: [db]}\n";
const DEADLINE: Duration = Duration::from_secs(60);

async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, None)
    })
    .await
    .unwrap()
}

fn backup_args(node: &Node, to: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "backup".to_owned(),
        "--to".to_owned(),
        to.display().to_string(),
        "--admin".to_owned(),
        format!("http://{}", node.admin),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Posts batches of numbered events until `stop`; counts the acknowledged ones.
fn load(
    node: &Arc<Node>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let (node, stop, acked) = (node.clone(), stop.clone(), acked.clone());
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let body: String = (0..200)
                .map(|i| format!("{{\"seq\":{},\"pad\":\"{}\"}}\n", n + i, "x".repeat(200)))
                .collect();
            let (status, reply) = node.post(&body, "application/x-ndjson").await;
            assert_eq!(status, 202, "{reply}");
            n += 200;
            acked.store(n, Ordering::Relaxed);
        }
    })
}

/// A backup taken while events stream in is consistent: restored into a new data directory, a
/// node answers with exactly a prefix of the original's events (nothing torn, nothing out of
/// order), byte for byte, and its pipeline resumes from the snapshot's checkpoint, ending with
/// one output per restored event (none lost, none repeated). Backups into one directory are
/// listed and pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_the_same_answers_and_the_pipeline_resumes() {
    let node = Arc::new(Node::start(CONFIG));
    let backups = tempfile::tempdir().unwrap();
    let to = backups.path().join("node");
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let loading = load(&node, &stop, &acked);
    eventually(DEADLINE, "events before the backup", || async {
        (acked.load(Ordering::Relaxed) >= 10_000).then_some(())
    })
    .await;

    let (code, out, err) = cli(backup_args(&node, &to, &["--keep", "2"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("backup 1 in "), "{out}");
    let during = acked.load(Ordering::Relaxed);
    let (code, out, err) = cli(backup_args(&node, &to, &["--keep", "1"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 kept, 1 pruned"), "{out}");
    let after = acked.load(Ordering::Relaxed);
    assert!(after > during, "ingest went on during the backups");
    stop.store(true, Ordering::Relaxed);
    loading.await.unwrap();
    let (code, out, err) = cli(vec![
        "backup".into(),
        "--to".into(),
        to.display().to_string(),
        "--list".into(),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let listed: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert!(listed[0].trim_start().starts_with("2 "), "{out}");

    // The node's own record of it.
    let (status, record) = node.admin(reqwest::Method::GET, "/admin/backup").await;
    assert_eq!(status, 200);
    assert!(record["running"].is_null(), "{record}");
    assert_eq!(record["last"]["outcome"]["backup"]["id"], 2, "{record}");

    let original = node.all_events().await;
    let Ok(node) = Arc::try_unwrap(node) else {
        panic!("the load task still holds the node")
    };
    node.terminate();

    let restored_dir = Arc::new(tempfile::tempdir().unwrap());
    let data = restored_dir.path().join("data");
    let restore = || {
        cli(vec![
            "restore".into(),
            "--from".into(),
            to.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ])
    };
    let (code, out, err) = restore().await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("restored backup 2 "), "{out}");
    // Never over a directory that holds something.
    let (code, _, err) = restore().await;
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");

    let restored = Node::start_in(restored_dir, CONFIG);
    let events = restored.all_events().await;
    assert!(
        events.len() as u64 > during.min(10_000) && events.len() < original.len(),
        "the snapshot is from between the first backup and the end of the load: {} of {}",
        events.len(),
        original.len()
    );
    assert_eq!(
        events[..],
        original[..events.len()],
        "a prefix of the original, byte for byte"
    );
    let (status, newest) = restored.get("/api/events?limit=50&order=desc").await;
    assert_eq!(status, 200);
    let newest_ids: Vec<&Value> = newest["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    let expected: Vec<&Value> = events.iter().rev().take(50).map(|e| &e["id"]).collect();
    assert_eq!(newest_ids, expected);

    // The pipeline resumes from the snapshot's checkpoint: one output per event, no more.
    let outputs = eventually(DEADLINE, "the restored pipeline to catch up", || async {
        let outputs = restored.outputs("all").await;
        (outputs.len() >= events.len()).then_some(outputs)
    })
    .await;
    let ids: HashSet<&Value> = outputs.iter().map(|o| &o["id"]).collect();
    assert_eq!(outputs.len(), events.len(), "no output repeated");
    assert_eq!(ids, events.iter().map(|e| &e["id"]).collect::<HashSet<_>>());
}

/// A backup into a directory on a full disk fails with `507` and a clear reason; the node
/// serves on (ingest, queries, a later backup elsewhere), and the failure is on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_a_full_disk_fails_cleanly_and_the_node_serves_on() {
    let Some(small) = Tmpfs::mount("2m") else {
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return;
    };
    let node = Node::start(CONFIG);
    let body: String = (0..5_000)
        .map(|i| format!("{{\"seq\":{i},\"pad\":\"{}\"}}\n", fastrand_text(i)))
        .collect();
    assert_eq!(node.post(&body, "application/x-ndjson").await.0, 202);

    let to = small.dir.path().join("node");
    let (code, out, err) = cli(backup_args(&node, &to, &[])).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("507") && err.contains("No space left"),
        "{err}"
    );
    let (status, record) = node.admin(reqwest::Method::GET, "/admin/backup").await;
    assert_eq!(status, 200);
    assert!(
        record["last"]["error"]
            .as_str()
            .unwrap()
            .contains("No space left"),
        "{record}"
    );

    assert_eq!(
        node.post(r#"{"after": true}"#, "application/json").await.0,
        202
    );
    let (status, health) = node.get("/health").await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("healthy")),
        "{health}"
    );
    assert_eq!(node.all_events().await.len(), 5_001);
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, err) = cli(backup_args(&node, &elsewhere.path().join("node"), &[])).await;
    assert_eq!(code, 0, "{out}{err}");
}

/// Text that does not compress: a full disk needs real bytes.
fn fastrand_text(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..400)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A client that goes away mid-backup leaves the backup to finish on its own; the next backup
/// is taken, not refused as "running" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_backup_does_not_wedge_the_next_one() {
    let node = Node::start(CONFIG);
    for batch in 0..10u64 {
        let body: String = (0..5_000)
            .map(|i| {
                format!(
                    "{{\"seq\":{i},\"pad\":\"{}\"}}\n",
                    fastrand_text(batch * 5_000 + i)
                )
            })
            .collect();
        assert_eq!(node.post(&body, "application/x-ndjson").await.0, 202);
    }
    let backups = tempfile::tempdir().unwrap();
    let url = format!("http://{}/admin/backup", node.admin);
    let body = |to: &str| format!("{{\"to\": \"{}\"}}", backups.path().join(to).display());
    // Gone after 20 ms: the backup of ~20 MiB is still copying (or done: either way the
    // node's record must end up not running).
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let _ = impatient
        .post(&url)
        .header("content-type", "application/json")
        .body(body("first"))
        .send()
        .await;
    let record = eventually(DEADLINE, "the first backup to end", || async {
        let (_, record) = node.admin(reqwest::Method::GET, "/admin/backup").await;
        record["running"].is_null().then_some(record)
    })
    .await;
    assert!(record["last"]["outcome"]["backup"]["id"] == 1, "{record}");
    let (code, out, err) = cli(backup_args(&node, &backups.path().join("second"), &[])).await;
    assert_eq!(code, 0, "{out}{err}");
}
