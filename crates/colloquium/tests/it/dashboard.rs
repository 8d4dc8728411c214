//! The web dashboard in a real headless browser (Debian's chromium and chromium-driver through
//! selenium, installed by `scripts/bootstrap.sh --test`; `tests/dashboard.py` drives it): the
//! page shows the API's numbers, window results and anomalies, replays a dead letter, works
//! with tokens of each scope, and fits a phone's width. Screenshots are kept in
//! `$CARGO_TARGET_TMPDIR/artefacts/dashboard/`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Node, Receiver, eventually, fake_script, run_bootstrap, tools_dir};

const READ: &str = "dashboard-read-token-rrrrrrrrrrrrrrrr";
const ADMIN: &str = "dashboard-admin-token-aaaaaaaaaaaaaaa";
const DEADLINE: Duration = Duration::from_secs(60);

fn config(hook: &str) -> String {
    format!(
        r#"
server:
  auth:
    tokens:
      - {{name: viewer, token: {READ}, scopes: [read]}}
      - {{name: ops, token: {ADMIN}, scopes: [read, admin, ingest]}}
sinks:
  db: {{type: store}}
  hook: {{type: http, url: "{hook}", max_attempts: 1, backoff: 20ms, max_backoff: 100ms, timeout: 2s}}
pipelines:
  - name: checkout
    when: {{exists: /amount}}
    stages:
      - {{type: window, id: per_user, window: tumbling, size: 1s, key: /user, aggregates: {{n: count, total: {{sum: /amount}}}}}}
    sinks: [db]
  - name: risk
    when: {{exists: /event_type}}
    stages:
      - {{type: anomaly, min_events: 5}}
    sinks: [db]
  - name: deliver
    when: {{exists: /deliver}}
    sinks: [hook]
"#
    )
}

/// A user's ordinary logins, then one from a new IP and country at an odd hour.
fn logins() -> String {
    let t0: u64 = 1_767_254_400_000;
    let mut lines: Vec<String> = (0..12)
        .map(|i| {
            json!({"event_id": format!("evt_{i}"), "timestamp": t0 + i * 7_200_000, "event_type": "auth_attempt",
                   "source_ip": "10.20.0.11", "user": "alice", "status": "success", "threat_score": 0.05,
                   "metadata": {"geo_location": "US-CA-San Francisco"}})
            .to_string()
        })
        .collect();
    lines.push(
        json!({"event_id": "evt_odd", "timestamp": t0 + 13 * 7_200_000 + 3 * 3_600_000, "event_type": "auth_attempt",
               "source_ip": "203.0.113.9", "user": "alice", "status": "failed", "threat_score": 0.9,
               "metadata": {"geo_location": "RU-MOW-Moscow"}})
        .to_string(),
    );
    lines.join("\n")
}

async fn get(node: &Node, path: &str) -> Value {
    let response = node
        .client
        .get(node.url(path))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn post(node: &Node, body: String) {
    let response = (node.client.post(node.url("/events")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// Runs `tests/dashboard.py <mode> <args>` with the tools' Python; its JSON answer.
pub async fn drive(mode: &str, args: Value) -> Value {
    let python = tools_dir().join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/bootstrap.sh --test",
        python.display()
    );
    let script = crate::harness::manifest_dir().join("tests/dashboard.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(mode)
        .arg(args.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("the browser run ends within 5 minutes")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artefacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says_and_replays_a_dead_letter() {
    let hook = Receiver::start().await;
    hook.answer(503);
    let node = Node::start(&config(&hook.url));
    // Windows close as later events pass them: three rounds a second apart.
    for round in 0..3 {
        let body: String = (0..30)
            .map(|i| {
                format!(
                    "{{\"user\":\"u{}\",\"amount\":{}}}\n",
                    i % 3,
                    round * 30 + i
                )
            })
            .collect();
        post(&node, body).await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    post(&node, logins()).await;
    post(
        &node,
        (0..3).map(|i| format!("{{\"deliver\":{i}}}\n")).collect(),
    )
    .await;

    let letters = eventually(DEADLINE, "three sink_error dead letters", || async {
        let page = get(&node, "/api/dlq?reason=sink_error").await;
        let letters = page["dead_letters"].as_array().cloned().unwrap_or_default();
        (letters.len() == 3).then_some(letters)
    })
    .await;
    eventually(DEADLINE, "an anomaly and window results", || async {
        let anomalies = get(&node, "/api/anomalies").await;
        let windows = get(&node, "/api/windows?pipeline=checkout").await;
        let found = !anomalies["anomalies"].as_array().unwrap().is_empty()
            && !windows["windows"].as_array().unwrap().is_empty();
        found.then_some(())
    })
    .await;
    // The sink is back: a replayed letter is delivered this time.
    hook.answer(200);

    // What the page must show, as the API says it.
    let overview = get(&node, "/api/overview").await;
    let source = &overview["sources"][0];
    let named = |list: &str, name: &str| {
        let list = overview[list].as_array().unwrap();
        list.iter().find(|x| x["name"] == name).cloned().unwrap()
    };
    let stage = &named("pipelines", "checkout")["stages"][0];
    assert_eq!(stage["id"], "per_user");
    let texts = json!({
        format!("tr[data-source=\"{}\"] td.accepted", source["name"].as_str().unwrap()): source["accepted"],
        "[data-stage=\"checkout/per_user\"] .in": stage["events_in"],
        "[data-stage=\"checkout/per_user\"] .out": stage["events_out"],
        "[data-pipeline=\"risk\"] .routed": named("pipelines", "risk")["routed"],
        "[data-sink=\"db\"] .sent": named("sinks", "db")["sent"],
        "tr[data-reason=\"sink_error\"] td.count": overview["dead_lettered"]["sink_error"],
        "#level": overview["control"]["level"],
    });
    assert_eq!(source["accepted"], 106, "{overview}");
    let replay = letters[0]["id"].as_str().unwrap().to_owned();
    let shots = shots_dir();
    let seen = drive(
        "check",
        json!({
            "url": node.url("/"), "read_token": READ, "admin_token": ADMIN,
            "chromium": "/usr/bin/chromium", "chromedriver": "/usr/bin/chromedriver",
            "shots": shots, "expect": {"texts": texts}, "replay": replay,
        }),
    )
    .await;
    assert_eq!(
        seen["narrow_overflow"], 0,
        "the page scrolls sideways on a phone: {seen}"
    );
    assert_eq!(
        seen["session_token"], true,
        "the token is kept in the session: {seen}"
    );
    assert_eq!(seen["local_storage"], 0, "nothing in local storage: {seen}");
    assert_eq!(
        seen["errors"],
        json!([]),
        "errors in the browser console: {seen}"
    );
    for shot in ["dashboard-desktop.png", "dashboard-narrow.png"] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes");
    }

    // The API agrees: the letter left the DLQ, and the sink got its event.
    eventually(
        DEADLINE,
        "the replayed letter gone and delivered",
        || async {
            let page = get(&node, "/api/dlq?reason=sink_error").await;
            let left = page["dead_letters"].as_array().unwrap().len();
            (left == 2 && hook.received().len() == 1).then_some(())
        },
    )
    .await;
}

/// The bootstrap installs the browser, its driver and tmux when they do not run.
#[test]
fn the_bootstrap_detects_a_browser_and_a_terminal_that_run() {
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, body: &str| fake_script(dir.path(), name, body);
    let chromium = fake(
        "chromium-ok",
        "echo 'Chromium 156.0.8078.129 built on Debian'",
    );
    let driver = fake("driver-ok", "echo 'ChromeDriver 156.0.8078.129'");
    let tmux = fake("tmux-ok", "echo 'tmux 3.3a'");
    let broken = fake("broken", "exit 127");
    let silent = fake("silent", "exit 0");
    let check = |tools: [&std::path::Path; 3]| {
        run_bootstrap(
            &["--check", "--test"],
            &[
                ("BOOTSTRAP_CHROMIUM", tools[0]),
                ("BOOTSTRAP_CHROMEDRIVER", tools[1]),
                ("BOOTSTRAP_TMUX", tools[2]),
            ],
        )
    };
    let (code, out) = check([&chromium, &driver, &tmux]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("chromium-ok") && out.contains("driver-ok"),
        "{out}"
    );
    for (tools, missing) in [
        ([&broken, &driver, &tmux], "chromium"),
        ([&chromium, &silent, &tmux], "chromium-driver"),
        ([&chromium, &driver, &broken], "tmux"),
    ] {
        let (code, out) = check(tools.map(|p| p.as_path()));
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(missing), "{missing}: {out}");
    }
}
