//! The reliability promises, tried from the outside with faults injected (issue 12): each test
//! is named after the numbered item it shows.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, Receiver, Tmpfs, eventually, run_cli};

const MINUTE: Duration = Duration::from_secs(60);

/// A node whose one pipeline delivers to `url` through an `http` sink; `retries` are its
/// `max_attempts`. Retention is 1 s, so anything it may delete, it deletes at once.
fn delivering_to(url: &str, retries: u32) -> String {
    format!(
        "storage:\n  retention: 1s\n  retention_interval: 100ms\n\
         sinks:\n  hook: {{type: http, url: \"{url}\", max_attempts: {retries}, backoff: 20ms, max_backoff: 100ms, timeout: 2s}}\n\
         pipelines:\n  - {{name: deliver, start_from: earliest, sinks: [hook]}}\n"
    )
}

fn ndjson(n: usize) -> String {
    (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect()
}

fn ns(events: &[Value]) -> Vec<u64> {
    let mut ns: Vec<u64> = events
        .iter()
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    ns.sort_unstable();
    ns.dedup();
    ns
}

/// Item 1: retention never deletes what a pipeline has not delivered, even across SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_retention_keeps_what_a_stalled_sink_has_not_delivered_across_sigkill() {
    let hook = Receiver::start().await;
    hook.answer(503);
    let node = Node::start(&delivering_to(&hook.url, 1_000_000));
    let (status, body) = node.post(&ndjson(100), "application/x-ndjson").await;
    assert_eq!(status, 202, "{body}");
    // Well past the retention, with the sink still failing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.all_events().await.len(),
        100,
        "retention deleted undelivered events"
    );
    let stopped = node.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let node = stopped.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.all_events().await.len(),
        100,
        "deleted after the restart"
    );

    hook.answer(200);
    eventually(MINUTE, "all 100 delivered", || async {
        (ns(&hook.received()) == (0..100).collect::<Vec<u64>>()).then_some(())
    })
    .await;
    // Delivered: now retention may take them.
    eventually(MINUTE, "retention once delivered", || async {
        node.all_events().await.is_empty().then_some(())
    })
    .await;
}

/// Item 1: dead letters (here `sink_error`) stay until replayed or deleted by a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_retention_keeps_dead_letters_until_replayed() {
    let hook = Receiver::start().await;
    hook.answer(503);
    let node = Node::start(&delivering_to(&hook.url, 2));
    let (status, _) = node.post(&ndjson(20), "application/x-ndjson").await;
    assert_eq!(status, 202);
    let letters = eventually(MINUTE, "20 sink_error dead letters", || async {
        let letters = node.dead_letters("reason=sink_error").await;
        (letters.len() == 20).then_some(letters)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        node.dead_letters("").await.len(),
        20,
        "retention deleted dead letters"
    );

    hook.answer(200);
    for letter in &letters {
        let id = letter["id"].as_str().unwrap();
        let path = format!("/api/dlq/{id}/replay");
        assert_eq!(node.post_to(&path, "", "application/json").await.0, 202);
    }
    eventually(MINUTE, "the replayed letters delivered", || async {
        (ns(&hook.received()) == (0..20).collect::<Vec<u64>>()).then_some(())
    })
    .await;
    eventually(MINUTE, "replayed letters removed", || async {
        node.dead_letters("").await.is_empty().then_some(())
    })
    .await;
}

/// Item 2: a stalled pipeline shows in `/health` and the lag metrics from the start, its lag
/// is measured against the log head, and over 30 s behind it is `degraded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item2_a_stalled_pipeline_reports_its_lag_and_degrades() {
    let hook = Receiver::start().await;
    hook.answer(503);
    let node = Node::start(&delivering_to(&hook.url, 1_000_000));
    // Before any event or commit, the pipeline is there, healthy, with zero lag.
    let health = eventually(MINUTE, "the pipeline in /health", || async {
        let (_, health) = node.get("/health").await;
        health["components"]["pipelines"]["deliver"]
            .is_object()
            .then_some(health)
    })
    .await;
    assert_eq!(
        health["components"]["pipelines"]["deliver"]["status"],
        "healthy"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains("colloquium_pipeline_lag_seconds{pipeline=\"deliver\"} 0"),
        "{metrics}"
    );

    let (status, _) = node.post(&ndjson(10), "application/x-ndjson").await;
    assert_eq!(status, 202);
    eventually(MINUTE, "10 events behind, with growing lag", || async {
        let (_, metrics) = node.get_text("/metrics").await;
        let behind = metrics.contains("colloquium_pipeline_lag_events{pipeline=\"deliver\"} 10");
        let lag = metric(
            &metrics,
            "colloquium_pipeline_lag_seconds{pipeline=\"deliver\"}",
        );
        (behind && lag >= 1.0).then_some(())
    })
    .await;
    let health = eventually(MINUTE, "degraded past 30 s behind", || async {
        let (status, health) = node.get("/health").await;
        (status == 200 && health["status"] == "degraded").then_some(health)
    })
    .await;
    let deliver = &health["components"]["pipelines"]["deliver"];
    assert_eq!(deliver["status"], "degraded", "{health}");
    assert_eq!(deliver["lag_events"], 10, "{health}");
    assert!(
        deliver["reasons"][0]
            .as_str()
            .unwrap()
            .contains("behind the log")
    );

    hook.answer(200);
    eventually(MINUTE, "caught up and healthy again", || async {
        let (_, health) = node.get("/health").await;
        let deliver = &health["components"]["pipelines"]["deliver"];
        (deliver["status"] == "healthy" && deliver["lag_events"] == 0).then_some(())
    })
    .await;
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

/// Item 4: eight clients posting batches of eight 1 MB events stay well under 512 MiB peak RSS
/// with the default memory settings (the node before the bytes bound peaked at 508 MB), and
/// memory goes back to the OS after the burst: at least two thirds of what the burst added
/// (issue 22: it stayed at ~90 % of the peak until the node trimmed its allocators when idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item4_memory_is_bounded_in_bytes_and_returned_after_a_burst() {
    let node = Node::start("server:\n  max_pending_events: 100\n");
    let (_, baseline) = node.rss();
    let event = format!("{{\"blob\":\"{}\"}}", "x".repeat(1 << 20));
    let batch = format!("[{}]", [event.as_str(); 8].join(","));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (client, url, batch) = (node.client.clone(), node.url("/events"), batch.clone());
        clients.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (0, 0);
            for _ in 0..6 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(batch.clone())
                    .send()
                    .await;
                // A refusal is answered after the rest of the body is read (issue 22).
                match response.map(|r| r.status().as_u16()) {
                    Ok(202) => accepted += 1,
                    Ok(503) => refused += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (accepted, refused)
        }));
    }
    let mut accepted = 0;
    for client in clients {
        accepted += client.await.unwrap().0;
    }
    assert!(accepted > 0, "nothing was accepted");
    let (_, peak) = node.rss();
    assert!(
        peak < 400 << 20,
        "peak RSS {} MiB (baseline {} MiB)",
        peak >> 20,
        baseline >> 20
    );
    // The accepted events are on disk, not held by the node: once it is idle it trims its
    // allocators (crates/colloquium/src/allocator.rs). Against the high-water mark as it is
    // then: under load the node may still be writing (and growing) after the clients are
    // answered. Two minutes: a loaded machine is slow to go idle.
    let deadline = std::time::Instant::now() + 2 * MINUTE;
    let settled = loop {
        let (rss, high) = node.rss();
        if rss < baseline + (high - baseline) / 3 {
            break rss;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RSS did not fall after the burst: {} MiB now, {} MiB at the peak",
            rss >> 20,
            high >> 20
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    eprintln!(
        "item4: baseline {} MiB, peak {} MiB, after {} MiB",
        baseline >> 20,
        peak >> 20,
        settled >> 20
    );
    assert_eq!(
        node.all_events().await.len(),
        accepted * 8,
        "accepted events are stored"
    );
}

/// Item 5: `GET /admin/config` shows `${VAR}` as written, not the secret it expanded to.
#[tokio::test]
async fn item5_admin_config_does_not_reveal_substituted_secrets() {
    let config = "sinks:\n  hook: {type: http, url: \"http://user:${HOOK_SECRET}@127.0.0.1:9/x\"}\n\
                  pipelines:\n  - {name: p, sinks: [hook]}\n";
    let node = Node::start_with_env(config, &[("HOOK_SECRET", "hunter2-very-secret")]);
    let (status, body) = node.admin(reqwest::Method::GET, "/admin/config").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(
        body["config"]["sinks"]["hook"]["url"], "http://user:${HOOK_SECRET}@127.0.0.1:9/x",
        "{text}"
    );
    // And after a reload too.
    let (status, report) = node.admin(reqwest::Method::POST, "/admin/reload").await;
    assert_eq!(status, 200, "{report}");
    let (_, body) = node.admin(reqwest::Method::GET, "/admin/config").await;
    assert!(!body.to_string().contains("hunter2"));
}

/// Item 6: clients get our words, naming the parameter; no framework wording.
#[tokio::test]
async fn item6_bad_query_parameters_get_our_words() {
    let node = Node::start("");
    for (path, says) in [
        ("/api/events?limit=abc", "limit: expected a whole number"),
        ("/api/events?bogus=1", "unknown query parameter `bogus`"),
        (
            "/api/events?limit=1&limit=2",
            "`limit` is given more than once",
        ),
        (
            "/api/outputs?pipeline=p&limit=-1",
            "limit: expected a whole number",
        ),
        ("/api/dlq?nope=1", "unknown query parameter `nope`"),
    ] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(says), "{path}: {error}");
        assert!(!error.contains("deserialize"), "{path}: {error}");
    }
    let (status, body) = node
        .post_to("/events?priorty=high", r#"{"a":1}"#, "application/json")
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("unknown query parameter `priorty`"),
        "{error}"
    );
    assert!(error.contains("priority"), "{error}");
}

/// Item 7: an id whose first character is above 7 is not a ULID: 400, never another event.
#[tokio::test]
async fn item7_out_of_range_ulids_are_rejected() {
    let node = Node::start("");
    let (_, body) = node.post(r#"{"a":1}"#, "application/json").await;
    let id = body["ids"][0].as_str().unwrap().to_owned();
    assert_eq!(node.get(&format!("/api/events/{id}")).await.0, 200);
    let folded = format!("8{}", &id[1..]);
    let (status, body) = node.get(&format!("/api/events/{folded}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("first character 0-7")
    );
    let (status, _) = node.get(&format!("/api/events?cursor={folded}")).await;
    assert_eq!(status, 400);
    let (status, _) = node
        .post_to(&format!("/api/dlq/{folded}/replay"), "", "application/json")
        .await;
    assert_eq!(status, 400);
}

/// Item 8: `replay` of a directory that does not exist is an error naming it, and creates
/// nothing.
#[test]
fn item8_replay_of_a_missing_data_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let (code, stdout, stderr) = run_cli(
        &[
            "replay",
            "--since",
            "0",
            "--data-dir",
            typo.to_str().unwrap(),
        ],
        Some(dir.path()),
    );
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(stderr.contains(typo.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("no colloquium data directory"), "{stderr}");
    assert!(!typo.exists(), "replay created {}", typo.display());
}

/// Item 9: `validate` prints every problem of a document, each at its key path, once.
#[test]
fn item9_validate_prints_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "server: {colour: red, max_body_size: lots}\nstorage: {retention: 5 parsecs}\n\
         scripts:\n  gone: {file: missing.json}\n\
         sinks:\n  broken: {url: \"http://127.0.0.1:9/\"}\n\
         pipelines:\n  - {name: a, sinks: [nowhere, broken], stages: [{type: transform, script: unknown}]}\n  \
           - {name: b, stages: [{type: frobnicate}]}\n  - {name: c, stages: [{type: transform, script: gone}]}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stdout}{stderr}");
    for problem in [
        "server.colour",
        "server.max_body_size",
        "storage.retention",
        "pipelines[0].sinks[0]: no sink named `nowhere`",
        "no script named `unknown`",
        "pipelines[1].stages[0]",
        "scripts.gone.file",
    ] {
        assert!(
            stderr.contains(problem),
            "missing `{problem}` in:\n{stderr}"
        );
    }
    assert_eq!(stderr.matches("missing.json").count(), 1, "{stderr}");
    // The broken sink's own problem, once: not also "no sink named `broken`".
    assert!(stderr.contains("sinks.broken"), "{stderr}");
    assert!(!stderr.contains("no sink named `broken`"), "{stderr}");
}

/// Item 10: a number that would not be stored as sent is a 400 saying which; no content type
/// means JSON; of a repeated key the last value is kept.
#[tokio::test]
async fn item10_numbers_are_kept_exactly_or_rejected() {
    let node = Node::start("");
    let (status, body) = node
        .post(
            r#"{"big": 123456789012345678901234567890}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reason"], "invalid_body");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("123456789012345678901234567890"), "{error}");
    assert!(error.contains("send it as a string"), "{error}");
    let (status, body) = node
        .post("{\"ok\":1}\n{\"tiny\":1e-400}\n", "application/x-ndjson")
        .await;
    assert_eq!((status, body["line"].as_u64()), (400, Some(2)), "{body}");
    assert!(
        node.all_events().await.is_empty(),
        "a rejected batch stores nothing"
    );

    let exact =
        r#"{"u": 18446744073709551615, "i": -9223372036854775808, "f": 0.1, "a": 1, "a": 2}"#;
    let response = node
        .client
        .post(node.url("/events"))
        .body(exact)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "no content type: JSON");
    let events = node.all_events().await;
    let data = &events[0]["data"];
    assert_eq!(data["u"].as_u64(), Some(u64::MAX));
    assert_eq!(data["i"].as_i64(), Some(i64::MIN));
    assert_eq!(data["a"], 2, "the last of a repeated key");
}

/// Item 11: the bootstrap finds what bindgen loads, not `libclang-cpp`.
#[test]
fn item11_bootstrap_detects_libclang_not_libclang_cpp() {
    let libs = tempfile::tempdir().unwrap();
    let check = |files: &[&str]| {
        let dir = libs.path().join(files.join("+"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        crate::harness::run_bootstrap(&["--check"], &[("BOOTSTRAP_LIB_DIRS", &dir)])
    };
    let (code, out) = check(&["libclang-cpp.so.14", "libLLVM-14.so.1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("missing libclang-dev"), "{out}");
    for found in [
        &["libclang.so"][..],
        &["libclang-14.so.1"],
        &["libclang.so.1"],
        &["libclang-17.so"],
    ] {
        let (code, out) = check(found);
        assert_eq!(code, Some(0), "{found:?}: {out}");
        assert!(out.contains(found[0]), "{out}");
    }
}

/// The test bootstrap (`--test`) wants a promtool that runs, not just its name on PATH; the
/// build bootstrap does not want one at all.
#[test]
fn the_test_bootstrap_detects_a_promtool_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, body: &str| crate::harness::fake_script(dir.path(), name, body);
    let works = fake("promtool-ok", "echo 'promtool, version 2.42.0'");
    let broken = fake(
        "promtool-broken",
        "echo 'error while loading shared libraries' >&2; exit 127",
    );
    let missing = dir.path().join("promtool-missing");
    let check = |promtool: &std::path::Path, args: &[&str]| {
        crate::harness::run_bootstrap(args, &[("BOOTSTRAP_PROMTOOL", promtool)])
    };
    let (code, out) = check(&works, &["--check", "--test"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("promtool-ok"), "{out}");
    for bad in [&broken, &missing] {
        let (code, out) = check(bad, &["--check", "--test"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("missing prometheus"), "{out}");
        let (code, out) = check(bad, &["--check"]);
        assert_eq!(code, Some(0), "the build needs no promtool: {out}");
    }
    let (code, _) = check(&works, &["--frobnicate"]);
    assert_eq!(code, Some(2));
}

/// Items 3 and 6: a full disk is a 503 with a stable reason and no internal path, `/health`
/// says unhealthy, and once space is freed the node takes writes again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item3_a_full_disk_is_recovered_from_without_a_restart() {
    let Some(fs) = Tmpfs::mount("160m") else {
        eprintln!(
            "skipping item3_a_full_disk_is_recovered_from_without_a_restart: cannot mount a tmpfs (needs root)"
        );
        return;
    };
    // Small memtables: RocksDB resumes once as much space as one is free again.
    let config = "storage:\n  write_buffer: 4MiB\n  min_free_disk: 1KiB\n";
    let node = Node::start_in(fs.dir.clone(), config);
    let (status, _) = node.post(r#"{"before":1}"#, "application/json").await;
    assert_eq!(status, 202);

    let event = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 << 10));
    let body = eventually(MINUTE, "a write to fail for lack of space", || async {
        fs.fill("filler");
        let (status, body) = node.post(&event, "application/json").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["reason"], "storage_unavailable", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        !error.contains('/') && !error.contains(".log"),
        "leaks a path: {error}"
    );
    assert!(error.contains("disk is full"), "{error}");
    let (status, health) = node.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["components"]["storage"]["status"], "unhealthy");

    std::fs::remove_file(fs.dir.path().join("filler")).unwrap();
    let id = eventually(MINUTE, "writes to succeed again", || async {
        let (status, body) = node.post(r#"{"after":1}"#, "application/json").await;
        (status == 202).then(|| body["ids"][0].as_str().unwrap().to_owned())
    })
    .await;
    eventually(MINUTE, "healthy again", || async {
        let (status, health) = node.get("/health").await;
        (status == 200 && health["components"]["storage"]["status"] == "healthy").then_some(())
    })
    .await;
    assert_eq!(node.get(&format!("/api/events/{id}")).await.0, 200);
    let (exit, stopped) = node.terminate();
    assert!(exit.success(), "{exit:?}");
    // Everything acknowledged is there after a restart.
    let node = stopped.restart();
    let events = node.all_events().await;
    assert!(events.iter().any(|e| e["data"]["before"] == 1));
    assert!(events.iter().any(|e| e["data"]["after"] == 1));
    drop(node);
}

/// Item 1: the one way past a checkpoint, `storage.max_disk_usage`, counts what it deletes
/// per pipeline, logs it and shows it in `/health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item1_the_disk_ceiling_counts_the_unprocessed_events_it_deletes() {
    let hook = Receiver::start().await;
    hook.answer(503);
    let config = format!(
        "storage:\n  max_disk_usage: 64MiB\n  retention_interval: 200ms\n  write_buffer: 4MiB\n  compression: none\n\
         sinks:\n  hook: {{type: http, url: \"{}\", max_attempts: 1000000, backoff: 50ms, max_backoff: 200ms}}\n\
         pipelines:\n  - {{name: stuck, start_from: earliest, sinks: [hook]}}\n",
        hook.url
    );
    let node = Node::start(&config);
    let event = format!("{{\"pad\":\"{}\"}}", "y".repeat(100_000));
    let batch = [event.as_str(); 10].join("\n");
    let mut posted = 0;
    for _ in 0..100 {
        let (status, body) = node.post(&batch, "application/x-ndjson").await;
        assert_eq!(status, 202, "{body}");
        posted += 10;
    }
    let metric_line =
        "colloquium_storage_forced_deleted_events_total{pipeline=\"stuck\",reason=\"unprocessed\"}";
    let deleted = eventually(MINUTE, "the ceiling to delete and count", || async {
        let (_, metrics) = node.get_text("/metrics").await;
        let n = metric(&metrics, metric_line);
        (n > 0.0).then_some(n)
    })
    .await;
    let (status, health) = node.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let storage = &health["components"]["storage"];
    assert_eq!(storage["status"], "degraded", "{health}");
    assert!(
        storage["reasons"][0]
            .as_str()
            .unwrap()
            .contains("max_disk_usage")
    );
    // Every event is either still there or counted.
    eventually(MINUTE, "stored + counted = posted", || async {
        let (_, metrics) = node.get_text("/metrics").await;
        let counted = metric(&metrics, metric_line) as usize;
        let left = node.all_events().await.len();
        (left + counted == posted && left < posted).then_some(())
    })
    .await;
    assert!(deleted >= 1.0);
}
