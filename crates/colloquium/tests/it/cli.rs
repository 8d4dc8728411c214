//! The command line: run with no config, validate, replay, shutdown, the directory lock.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Node, Ready, run_cli, sigterm, spawn_ready, wait_with_deadline};

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["validate", "--help"],
        vec!["replay", "--help"],
        vec!["computo", "--help"],
        vec!["test", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "http", "--help"],
    ] {
        let (code, stdout, _) = run_cli(&args, None);
        assert_eq!(code, 0, "{args:?}");
        assert!(stdout.contains("Usage:"), "{args:?}: {stdout}");
    }
}

#[test]
fn validate_accepts_good_configs_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "server:\n  listen: 127.0.0.1:9000\nstorage:\n  retention: 3d\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["validate", "-c", good.to_str().unwrap()], None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok"));

    let json = dir.path().join("good.json");
    std::fs::write(&json, r#"{"storage": {"sync": false}}"#).unwrap();
    assert_eq!(
        run_cli(&["validate", "-c", json.to_str().unwrap()], None).0,
        0
    );

    let cases = [
        (
            "server:\n  listen: 127.0.0.1:9000\n  colour: blue\n",
            "server.colour: unknown field `colour`",
        ),
        ("storage:\n  retention: soon\n", "storage.retention:"),
        (
            "storage:\n  data_dir: ${COLLOQUIUM_TEST_UNSET_VAR}\n",
            "storage.data_dir: environment variable `COLLOQUIUM_TEST_UNSET_VAR` is not set",
        ),
        ("server: [\n", "syntax error"),
    ];
    for (text, expected) in cases {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, text).unwrap();
        let (code, _, stderr) = run_cli(&["validate", "-c", bad.to_str().unwrap()], None);
        assert_eq!(code, 1, "{text}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        // `run` refuses the same config with the same message.
        let (code, _, run_stderr) =
            run_cli(&["run", "-c", bad.to_str().unwrap()], Some(dir.path()));
        assert_eq!(code, 1);
        assert!(run_stderr.contains(expected), "{run_stderr}");
    }
    let (code, _, stderr) = run_cli(&["validate", "-c", "/nonexistent/colloquium.yaml"], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/colloquium.yaml"), "{stderr}");
}

#[tokio::test]
async fn run_without_config_starts_a_working_node_and_stops_cleanly_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    // Only the port is overridden, so parallel tests do not collide on 8080.
    let (mut child, Ready { addr, .. }) = spawn_ready(
        &["run", "--listen", "127.0.0.1:0"],
        cwd.path(),
        "warn",
        Stdio::inherit(),
    );
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{addr}/events"))
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert!(
        cwd.path().join("data").join("CURRENT").exists(),
        "default data dir is ./data"
    );

    sigterm(&child);
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exit: {status:?}");
}

#[tokio::test]
async fn replay_prints_a_stopped_nodes_events_and_the_lock_keeps_others_out() {
    let node = Node::start("");
    let mut ids = Vec::new();
    for batch in 0..5 {
        let body: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"batch":{batch},"i":{i}}}"#))
            .collect();
        let (status, reply) = node.post(&body.join("\n"), "application/x-ndjson").await;
        assert_eq!(status, 202);
        ids.extend(
            reply["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
    }
    let data_dir = node.data_dir();
    let data = data_dir.to_str().unwrap();

    // While the node runs, its directory is locked: a second node and replay both refuse.
    let (code, _, stderr) = run_cli(
        &["run", "--data-dir", data, "--listen", "127.0.0.1:0"],
        None,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    let (code, _, stderr) = run_cli(&["replay", "--since", "0", "--data-dir", data], None);
    assert_eq!(code, 1);
    assert!(stderr.contains("GET /api/events/stream"), "{stderr}");

    let (status, stopped) = node.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");

    let (code, stdout, stderr) = run_cli(&["replay", "--since", "0", "--data-dir", data], None);
    assert_eq!(code, 0, "{stderr}");
    let replayed: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        replayed, ids,
        "replay returns every event once, oldest first"
    );

    // Time bounds: nothing before the epoch's first second, nothing after a past `until`.
    let (_, stdout, _) = run_cli(
        &[
            "replay",
            "--since",
            "0",
            "--until",
            "1000",
            "--data-dir",
            data,
        ],
        None,
    );
    assert!(stdout.is_empty());
    let (_, stdout, _) = run_cli(
        &[
            "replay",
            "--since",
            "2000-01-01T00:00:00Z",
            "--source",
            "kafka",
            "--data-dir",
            data,
        ],
        None,
    );
    assert!(stdout.is_empty());
    let (code, _, stderr) = run_cli(
        &["replay", "--since", "last tuesday", "--data-dir", data],
        None,
    );
    assert_eq!(code, 2, "clap usage error");
    assert!(stderr.contains("invalid time"), "{stderr}");

    // Restarting on the same directory serves the same events.
    let node = stopped.restart();
    assert_eq!(node.all_events().await.len(), ids.len());
}

#[test]
fn a_request_in_flight_at_sigterm_is_finished_and_stored() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (mut child, Ready { addr, .. }) = spawn_ready(&args, dir.path(), "info", Stdio::piped());
    let (log_tx, log_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });

    // Headers and half the body: the request is in flight.
    let body = br#"{"in_flight":true}"#;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..5]).unwrap();
    stream.flush().unwrap();
    // Signal only once the server is inside the request: before that, the connection is idle
    // and closing it is right. The probe itself is one request in flight.
    loop {
        let mut probe = TcpStream::connect(addr).unwrap();
        write!(
            probe,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut metrics = String::new();
        probe.read_to_string(&mut metrics).unwrap();
        if metrics
            .lines()
            .any(|l| l == "colloquium_http_requests_in_flight 2")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    sigterm(&child);
    // Wait until the node says it is draining, then finish the request.
    loop {
        let line = log_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("shutdown log line");
        if line.contains("shutting down") {
            break;
        }
    }
    stream.write_all(&body[5..]).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let id = response
        .split("\"ids\":[\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();

    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM exit: {status:?}");
    let (code, stdout, stderr) = run_cli(
        &[
            "replay",
            "--since",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&id),
        "in-flight event {id} not stored: {stdout}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = [
        "--log-format",
        "json",
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (mut child, _) = spawn_ready(&args, dir.path(), "info", Stdio::piped());
    let stderr = child.stderr.take().unwrap();
    sigterm(&child);
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(wait_with_deadline(&mut child, Duration::from_secs(60)).success());
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["level"].is_string() && entry["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("shutting down")));
}

/// ARCHITECTURE.md's crate list is in dependency order: every crate's `colloquium-*`
/// dependencies (not dev-dependencies) are listed above it, and every crate is listed.
#[test]
fn the_architecture_lists_every_crate_below_its_dependencies() {
    let root = crate::harness::manifest_dir().join("../..");
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let listed: Vec<String> = doc
        .lines()
        .skip_while(|l| *l != "crates/")
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter_map(|l| l.strip_prefix("  ")?.split('/').next().map(str::to_owned))
        .filter(|name| !name.is_empty() && !name.starts_with(' '))
        .collect();
    let mut crates: Vec<String> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    crates.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, crates, "ARCHITECTURE.md lists every crate once");
    for (at, name) in listed.iter().enumerate() {
        let manifest =
            std::fs::read_to_string(root.join(format!("crates/{name}/Cargo.toml"))).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        for dep in deps.lines().filter_map(|l| {
            l.trim()
                .strip_prefix("colloquium-")?
                .split(['.', ' ', '='])
                .next()
        }) {
            let above = listed[..at].iter().any(|l| l == dep);
            assert!(
                above,
                "{name} depends on {dep}, listed below it in ARCHITECTURE.md"
            );
        }
    }
}
