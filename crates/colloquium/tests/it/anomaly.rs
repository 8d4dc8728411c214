//! The StreamGuard anomaly detector through the real binary: `colloquium anomaly` passes the
//! conformance suite's own checker (`shared/conformance/streamguard/check.py`), which runs it
//! once per scenario in a time zone with daylight saving.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::harness::{binary, shared_dir};

#[test]
fn the_streamguard_suite_passes_through_the_cli_and_its_checker() {
    let suite = shared_dir().join("conformance/streamguard");
    let output = Command::new("python3")
        .arg(suite.join("check.py"))
        .args(["--cmd", &format!("{} anomaly", binary())])
        .arg(suite.join("anomaly.jsonl"))
        .output()
        .expect("python3 runs the suite's checker");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert_eq!(summary, "56 passed, 0 failed");
}

#[test]
fn refused_lines_are_reported_and_scoring_goes_on() {
    let input = concat!(
        "{\"event_id\":\"e1\",\"timestamp\":0,\"event_type\":\"auth_attempt\",\"source_ip\":\"1.1.1.1\",\"user\":\"u\",\"threat_score\":0}\n",
        "not json\n",
        "{\"event_id\":\"e2\",\"timestamp\":0,\"event_type\":\"login\",\"source_ip\":\"1.1.1.1\",\"user\":\"u\",\"threat_score\":0}\n",
        "{\"event_id\":\"e3\",\"timestamp\":0,\"event_type\":\"auth_attempt\",\"source_ip\":\"1.1.1.1\",\"user\":\"u\",\"threat_score\":0}\n",
    );
    let lines = cli(&["--min-events", "1", "--threshold", "0.5"], input);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["scored"], false);
    assert_eq!(lines[1]["accepted"], false);
    assert!(lines[2]["error"].as_str().unwrap().contains("login"));
    assert_eq!(
        (
            lines[3]["scored"].as_bool(),
            lines[3]["baseline_events"].as_u64()
        ),
        (Some(true), Some(2))
    );
}

#[test]
fn the_robust_model_scores_from_the_cli_with_its_signals() {
    let input: Vec<serde_json::Value> = events("u", 0, 3, false)
        .into_iter()
        .chain(events("u", 3, 4, true))
        .collect();
    let lines = cli(&["--model", "robust", "--min-events", "2"], &ndjson(&input));
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["scored"], true);
    assert_eq!(lines[2]["is_anomaly"], false, "{}", lines[2]);
    // A new IP from a new country at 3 AM: every signal of a takeover.
    assert_eq!(lines[3]["is_anomaly"], true, "{}", lines[3]);
    assert_eq!(lines[3]["components"]["new_since_baseline"], 0.9);
    let codes = lines[3]["reason_codes"].to_string();
    assert!(
        codes.contains("new_since_baseline") && codes.contains("critical"),
        "{codes}"
    );
}

/// StreamGuard events `from..to` of `user`: office hours, two IPs, one place; `odd` ones come
/// from a new IP and country at 3 AM.
pub(crate) fn events(user: &str, from: u64, to: u64, odd: bool) -> Vec<serde_json::Value> {
    (from..to)
        .map(|i| {
            let (hour, ip, place) = if odd {
                (3, "203.0.113.9", "RU-MOW")
            } else {
                (
                    9 + i % 6,
                    ["10.0.0.1", "10.0.0.2"][(i % 2) as usize],
                    "US-CA",
                )
            };
            serde_json::json!({"event_id": format!("evt_{user}_{i}"),
                "timestamp": 1_767_225_600_000 + (i / 6) * 86_400_000 + hour * 3_600_000,
                "event_type": "auth_attempt", "source_ip": ip, "user": user,
                "status": if i % 7 == 0 { "failed" } else { "success" }, "threat_score": 0.1,
                "metadata": {"geo_location": place}})
        })
        .collect()
}

/// `colloquium anomaly ARGS` on `input`: its result lines.
fn cli(args: &[&str], input: &str) -> Vec<serde_json::Value> {
    let mut child = Command::new(binary())
        .arg("anomaly")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub(crate) fn ndjson(events: &[serde_json::Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Each output's anomaly result, by event id.
async fn results(
    node: &crate::harness::Node,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    node.outputs("a")
        .await
        .into_iter()
        .map(|o| {
            let data = &o["data"];
            (
                data["event_id"].as_str().unwrap().to_owned(),
                data["anomaly"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamguard_baselines_survive_a_sigkill_and_score_as_without_it() {
    sigkill_scores_as_without_it("streamguard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robust_profiles_survive_a_sigkill_and_score_as_without_it() {
    sigkill_scores_as_without_it("robust").await;
}

/// Learning events, SIGKILL, restart, more events and anomalies: every result equals the CLI's
/// on the same stream uninterrupted (the same detector, `model`).
async fn sigkill_scores_as_without_it(model: &str) {
    use crate::harness::{Node, eventually};
    let config = format!(
        "sinks: {{db: {{type: store}}}}\npipelines:\n  - name: a\n    stages:\n      - {{type: anomaly, model: {model}, min_events: 20, threshold: 0.5}}\n    sinks: [db]\n"
    );
    let deadline = std::time::Duration::from_secs(60);
    let (learn, more, odd) = (
        events("u", 0, 30, false),
        events("u", 30, 40, false),
        events("u", 40, 43, true),
    );
    // The same stream, uninterrupted, through the CLI (the same detector).
    let all: Vec<serde_json::Value> = learn.iter().chain(&more).chain(&odd).cloned().collect();
    let want = cli(
        &["--model", model, "--min-events", "20", "--threshold", "0.5"],
        &ndjson(&all),
    );

    let node = Node::start(&config);
    let (status, _) = node.post(&ndjson(&learn), "application/x-ndjson").await;
    assert_eq!(status, 202);
    eventually(deadline, "the learning events processed", || async {
        (results(&node).await.len() == learn.len()).then_some(())
    })
    .await;
    let node = node.kill9().restart();
    let rest: Vec<serde_json::Value> = more.iter().chain(&odd).cloned().collect();
    let (status, _) = node.post(&ndjson(&rest), "application/x-ndjson").await;
    assert_eq!(status, 202);
    let got = eventually(deadline, "every event scored", || async {
        let got = results(&node).await;
        (got.len() == all.len()).then_some(got)
    })
    .await;
    for (event, expected) in all.iter().zip(&want) {
        let id = event["event_id"].as_str().unwrap();
        let result = &got[id];
        for field in [
            "scored",
            "score",
            "components",
            "reason_codes",
            "is_anomaly",
            "baseline_updated",
        ] {
            assert_eq!(result[field], expected[field], "{model} {id}: {field}");
        }
    }
    assert_eq!(
        got[odd[0]["event_id"].as_str().unwrap()]["is_anomaly"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_are_kept_and_every_query_route_answers_and_refuses_bad_parameters() {
    use crate::harness::{Node, eventually};
    const CONFIG: &str = "sinks: {db: {type: store}}\npipelines:\n  - name: a\n    stages:\n      - {type: anomaly, min_events: 20, threshold: 0.5}\n    sinks: [db]\n";
    let node = Node::start(CONFIG);
    let mut input = events("a", 0, 30, false);
    input.extend(events("b", 0, 30, false));
    input.extend(events("a", 30, 32, true));
    input.extend(events("b", 30, 31, true));
    let (status, _) = node.post(&ndjson(&input), "application/x-ndjson").await;
    assert_eq!(status, 202);
    let deadline = std::time::Duration::from_secs(60);
    let flagged: Vec<String> = eventually(deadline, "every event scored", || async {
        let outputs = node.outputs("a").await;
        (outputs.len() == input.len()).then(|| {
            outputs
                .iter()
                .filter(|o| o["data"]["anomaly"]["is_anomaly"] == true)
                .map(|o| o["id"].as_str().unwrap().to_owned())
                .collect()
        })
    })
    .await;
    assert_eq!(flagged.len(), 3);
    let get = |path: String| {
        let node = &node;
        async move { node.get(&path).await }
    };
    // Newest first: b's, then a's two.
    let (status, all) = get("/api/anomalies".into()).await;
    assert_eq!(status, 200, "{all}");
    let users: Vec<&str> = all["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["b", "a", "a"]);
    let record = &all["anomalies"][0];
    assert_eq!(record["id"], flagged[2].as_str());
    assert!(record["score"].as_f64().unwrap() >= 0.5);
    assert_eq!(record["pipeline"], "a");
    assert_eq!(record["data"]["event_id"], "evt_b_30");
    let (_, of_a) = get("/api/anomalies?user=a".into()).await;
    assert_eq!(of_a["anomalies"].as_array().unwrap().len(), 2);
    let (_, none) = get("/api/anomalies?min_score=0.99".into()).await;
    assert_eq!(none["anomalies"].as_array().unwrap().len(), 0);
    // Pages of one, by cursor, end with a null cursor.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = get(format!("/api/anomalies?limit=1{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["anomalies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    let (status, one) = get(format!("/api/anomalies/{}", flagged[0])).await;
    assert_eq!(
        (status, one["id"].as_str()),
        (200, Some(flagged[0].as_str()))
    );
    let (_, high) = get("/api/anomalies/high-score?threshold=0.5&limit=2".into()).await;
    assert_eq!(high["anomalies"].as_array().unwrap().len(), 2);
    let (_, count) = get("/api/anomalies/count".into()).await;
    assert_eq!(count["count"], 3);
    let (_, later) = get("/api/anomalies/count?since=2100-01-01T00:00:00Z".into()).await;
    assert_eq!(later["count"], 0);
    let (status, _) = get("/api/anomalies/01KDVDNA000000000000000000".into()).await;
    assert_eq!(status, 404);
    // The learned profile: a's 30 events in the baseline (the anomalies were not learned).
    let (status, baseline) = get("/api/users/a/baseline?pipeline=a".into()).await;
    assert_eq!(status, 200, "{baseline}");
    assert_eq!(
        (baseline["events"].as_u64(), baseline["ready"].as_bool()),
        (Some(30), Some(true))
    );
    assert_eq!(baseline["ips"]["10.0.0.1"]["count"], 15);
    assert_eq!(baseline["hours"].as_array().unwrap().len(), 24);
    let (status, _) = get("/api/users/nobody/baseline?pipeline=a".into()).await;
    assert_eq!(status, 404);
    let (status, body) = get("/api/users/a/baseline".into()).await;
    assert!(
        status == 400 && body["error"].as_str().unwrap().contains("pipeline"),
        "{body}"
    );
    for (path, parameter) in [
        ("/api/anomalies/nope", "id"),
        ("/api/anomalies?min_score=2", "min_score"),
        ("/api/anomalies?since=abc", "since"),
        ("/api/anomalies?limit=0", "limit"),
        ("/api/anomalies?cursor=zz", "cursor"),
        ("/api/anomalies?colour=red", "colour"),
        ("/api/anomalies/high-score?threshold=x", "threshold"),
        ("/api/anomalies/count?since=x", "since"),
    ] {
        let (status, body) = get(path.into()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(parameter),
            "{path}: {body}"
        );
    }
}
