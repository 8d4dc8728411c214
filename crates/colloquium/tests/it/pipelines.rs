//! Pipelines as a user meets them before going live: `colloquium validate` and `colloquium test`
//! on the shipped examples and on broken configs.

use std::path::PathBuf;

use crate::harness::{manifest_dir, run_cli};

fn examples() -> Vec<PathBuf> {
    let dir = manifest_dir().join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "examples/ should hold at least three configs"
    );
    files
}

#[test]
fn every_shipped_example_validates_and_passes_its_tests() {
    for example in examples() {
        let path = example.to_str().unwrap();
        let (code, stdout, stderr) = run_cli(&["validate", "-c", path], None);
        assert_eq!(code, 0, "{path}: {stdout}{stderr}");
        let (code, stdout, stderr) = run_cli(&["test", "-c", path], None);
        assert_eq!(code, 0, "{path}: {stdout}{stderr}");
        assert!(stdout.contains(" 0 failed"), "{path}: {stdout}");
        assert!(!stdout.contains("FAILED"), "{path}: {stdout}");
    }
}

#[test]
fn a_failing_config_test_prints_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.yaml");
    std::fs::write(
        &config,
        r#"
pipelines:
  - name: double
    stages:
      - {type: transform, script: [obj, [n, ["*", [get, [$input], /n], 2]]]}
tests:
  - name: doubles
    pipeline: double
    input: [{data: {n: 2}}, {data: {n: 5}}]
    expect:
      outputs: [{n: 4}, {n: 11}]
  - name: expects a dead letter that does not come
    pipeline: double
    input: [{data: {n: 1}}]
    expect:
      dlq: [script_error]
  - name: passes
    pipeline: double
    input: [{data: {n: 1}}]
    expect:
      outputs: [{n: 2}]
"#,
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&["test", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("test doubles ... FAILED"), "{stdout}");
    assert!(
        stdout.contains("outputs differ (- expected, + actual):"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-     \"n\": 11") && stdout.contains("+     \"n\": 10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dead letters differ: expected [\"script_error\"], got []"),
        "{stdout}"
    );
    assert!(stdout.contains("test passes ... ok"), "{stdout}");
    assert!(stdout.contains("3 tests, 1 passed, 2 failed"), "{stdout}");
}

/// Runs `validate` on `yaml` and returns its stderr, asserting it failed.
fn invalid(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (code, _, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 1, "{stderr}");
    stderr
}

#[test]
fn validate_names_every_problem() {
    // References are checked when the document loads.
    let stderr = invalid(
        "sinks: {out: {type: store}}\npipelines:\n  - {name: p, sinks: [out, nowhere], from: [kafka]}\n",
    );
    assert!(
        stderr.contains("pipelines[0].sinks[1]: no sink named `nowhere` (sinks: out)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pipelines[0].from[0]: no source named `kafka` (sources: http)"),
        "{stderr}"
    );

    // A named script that does not compile names itself, the path inside it and the reason.
    let stderr = invalid("scripts:\n  broken: [obj, [a, [frob]]]\n");
    assert!(
        stderr.contains("scripts.broken: does not compile: unknown operator `frob` at /1/1"),
        "{stderr}"
    );

    // Predicates, stages and sinks are checked when the topology is built, all at once.
    let stderr = invalid(
        r#"
sinks:
  out: {type: pigeon}
pipelines:
  - name: p
    when: {regex: [/email, "("]}
    stages:
      - {type: transform, script: missing}
      - {type: explode}
    sinks: [out]
"#,
    );
    for expected in [
        "pipelines[0].when.regex: bad regex",
        "pipelines[0].stages[0].script: no script named `missing`",
        "pipelines[0].stages[1].type: unknown stage type `explode`",
        "sinks.out.type: unknown sink type `pigeon`",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }

    // Sources are built as a node builds them; stage ids are checked with the document.
    let stderr = invalid(
        r#"
sources:
  a: {type: http, path: /events/a}
  b: {type: http, path: /events/a}
  c: {type: http, path: /api/mine}
  d: {type: http, path: "events"}
  e: {type: carrier-pigeon}
  f: {type: http, colour: red}
pipelines:
  - name: p
    stages:
      - {type: dedup, key: /k, ttl: 1m}
      - {type: filter, id: dedup, when: [true]}
      - {type: filter, id: "no spaces", when: [true]}
"#,
    );
    for expected in [
        "sources.b.path: `/events/a` is already the path of sources.a",
        "sources.c.path: `/api/mine` is one of the node's own routes",
        "sources.d.path: `events` is not a plain path",
        "sources.e.type: unknown source type `carrier-pigeon` (known: http, kafka, tcp, udp)",
        "sources.f.colour: unknown field `colour`",
        "pipelines[0].stages[1].id: stage id `dedup` is used twice in this pipeline",
        "pipelines[0].stages[2].id: invalid stage id `no spaces`",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn validate_names_every_kafka_problem_without_connecting() {
    // Nothing listens on port 1: `validate` checks librdkafka's settings without connecting.
    let stderr = invalid(
        r#"
sources:
  a: {type: kafka, brokers: "127.0.0.1:1", topics: [t], group_id: g, options: {no.such.setting: "1"}}
  b: {type: kafka, brokers: "127.0.0.1:1", topics: [t], group_id: g, options: {enable.auto.commit: "true"}}
  c: {type: kafka, brokers: "127.0.0.1:1", topics: [t], group_id: g, persist: false}
  d: {type: kafka, brokers: "127.0.0.1:1", topics: [t]}
sinks:
  e: {type: kafka, brokers: "127.0.0.1:1", topic: t, options: {compression.codec: pigeon}}
  f: {type: kafka, brokers: "127.0.0.1:1", topic: t, key: user}
  g: {type: kafka, brokers: "127.0.0.1:1", topic: t, options: {acks: "1"}}
"#,
    );
    for expected in [
        "sources.a.options.no.such.setting: No such configuration property: \"no.such.setting\"",
        "sources.b.options.enable.auto.commit: set by the source",
        "sources.c.persist: a kafka source stores each message with its offset",
        "sources.d: missing field `group_id`",
        "sinks.e.options.compression.codec: Invalid value \"pigeon\" for configuration property \"compression.codec\"",
        "sinks.f.key: must be a JSON pointer",
        "sinks.g.options.acks: set by the sink",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(!stderr.contains("Connect to"), "it connected: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_and_balanced_sinks_deliver_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = format!(
        r#"
sinks:
  a: {{type: file, path: "{a}", max_size: 300B}}
  b: {{type: file, path: "{b}"}}
pipelines:
  - name: spread
    sinks: [a, b]
    balance: key_hash
    balance_key: /customer
"#,
        a = out.join("a.ndjson").display(),
        b = out.join("b.ndjson").display()
    );
    let node = crate::harness::Node::start(&config);
    // Four requests, each waited for, so the sinks write four batches and `a` must rotate.
    let read_lines = |out: std::path::PathBuf| -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&out).into_iter().flatten() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
            );
        }
        lines
    };
    let mut lines = Vec::new();
    for round in 0..4 {
        let body: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"customer":"c{i}","n":{}}}"#, round * 5 + i))
            .collect();
        let (status, _) = node.post(&body.join("\n"), "application/x-ndjson").await;
        assert_eq!(status, 202);
        let want = (round + 1) * 5;
        lines = crate::harness::eventually(
            std::time::Duration::from_secs(30),
            "the round's lines",
            || {
                let out = out.clone();
                async move {
                    let lines = read_lines(out);
                    (lines.len() >= want).then_some(lines)
                }
            },
        )
        .await;
    }
    assert_eq!(lines.len(), 20);
    let mut customers_per_file =
        std::collections::HashMap::<String, std::collections::HashSet<String>>::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .chars()
            .next()
            .unwrap()
            .to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            customers_per_file
                .entry(name.clone())
                .or_default()
                .insert(event["data"]["customer"].as_str().unwrap().to_owned());
        }
    }
    let a = customers_per_file.get("a").cloned().unwrap_or_default();
    let b = customers_per_file.get("b").cloned().unwrap_or_default();
    assert!(a.is_disjoint(&b), "one customer, one sink: {a:?} {b:?}");
    let rotated = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with("a.ndjson.")
        })
        .count();
    assert!(a.is_empty() || rotated > 0, "a.ndjson rotates past 300 B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_run_on_the_node_with_outputs_and_dead_letters() {
    let node = crate::harness::Node::start(
        r#"
scripts:
  ratio: [obj, [ratio, ["/", [get, [$input], /a], [get, [$input], /b]]], [event_id, [get, [$inputs], /1/event_id]]]
sinks:
  archive: {type: store}
pipelines:
  - name: ratios
    when: {exists: /a}
    stages:
      - {type: transform, script: ratio}
    sinks: [archive]
  - name: fragile
    when: {exists: /b}
    stages:
      - {type: transform, script: ratio}
    on_error: stop_pipeline
"#,
    );
    let body = "{\"a\": 6, \"b\": 3}\n{\"a\": 1, \"b\": 0}\n{\"other\": true}\n";
    let (status, accepted) = node.post(body, "application/x-ndjson").await;
    assert_eq!(status, 202, "{accepted}");
    let ids: Vec<String> = accepted["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();

    let outputs =
        crate::harness::eventually(std::time::Duration::from_secs(30), "the output", || async {
            let outputs = node.outputs("ratios").await;
            (!outputs.is_empty()).then_some(outputs)
        })
        .await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        outputs[0]["data"],
        serde_json::json!({"ratio": 2.0, "event_id": ids[0]})
    );

    let letters = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "three dead letters",
        || async {
            let letters = node.dead_letters("").await;
            (letters.len() >= 3).then_some(letters)
        },
    )
    .await;
    let by_reason = |reason: &str| {
        letters
            .iter()
            .find(|l| l["reason"] == reason)
            .cloned()
            .unwrap()
    };
    let failed = letters
        .iter()
        .find(|l| l["reason"] == "script_error" && l["pipeline"] == "ratios")
        .cloned()
        .unwrap();
    assert_eq!(failed["pipeline"], "ratios");
    assert_eq!(failed["stage"], "transform");
    assert_eq!(failed["event"]["id"], ids[1].as_str());
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{failed}"
    );
    assert_eq!(by_reason("no_route")["event"]["id"], ids[2].as_str());
    assert_eq!(node.dead_letters("reason=no_route").await.len(), 1);
    assert_eq!(
        node.dead_letters("reason=script_error&pipeline=fragile")
            .await
            .len(),
        1
    );
    let (status, _) = node.get("/api/outputs").await;
    assert_eq!(status, 400, "pipeline is required");

    // Metrics per pipeline, stage, router and sink (updated just after each commit).
    let expected = [
        "colloquium_pipeline_events_total{pipeline=\"ratios\",stage=\"transform\",outcome=\"in\"} 2",
        "colloquium_pipeline_events_total{pipeline=\"ratios\",stage=\"transform\",outcome=\"out\"} 1",
        "colloquium_pipeline_events_total{pipeline=\"ratios\",stage=\"transform\",outcome=\"failed\"} 1",
        "colloquium_router_events_total{pipeline=\"ratios\",result=\"matched\"} 2",
        "colloquium_router_no_route_total 1",
        "colloquium_sink_events_total{sink=\"archive\"} 1",
        "colloquium_pipeline_stopped{pipeline=\"fragile\"} 1",
        "colloquium_dlq_events_total{reason=\"script_error\"} 2",
    ];
    let metrics = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "pipeline metrics",
        || async {
            let (_, metrics) = node.get_text("/metrics").await;
            expected
                .iter()
                .all(|line| metrics.contains(line))
                .then_some(metrics)
        },
    )
    .await;
    assert!(
        metrics.contains("colloquium_pipeline_latency_seconds_bucket{"),
        "{metrics}"
    );
    // `fragile` stopped on the division by zero: the node reports it unhealthy, naming why.
    let health = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "fragile unhealthy",
        || async {
            let (status, health) = node.get("/health").await;
            (status == 503 && health["components"]["pipelines"]["fragile"]["status"] == "unhealthy")
                .then_some(health)
        },
    )
    .await;
    assert_eq!(
        health["components"]["pipelines"]["ratios"]["status"],
        "healthy"
    );
    let fragile = &health["components"]["pipelines"]["fragile"];
    assert_eq!(fragile["status"], "unhealthy");
    assert!(
        fragile["reasons"][0]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{fragile}"
    );
    let (status, _) = node.get("/api/outputs?pipeline=ratios&cursor=zz").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_state_survives_a_restart() {
    let node = crate::harness::Node::start(
        "sinks: {archive: {type: store}}\npipelines:\n  - name: once\n    stages:\n      - {type: dedup, key: /id, ttl: 1h}\n    sinks: [archive]\n",
    );
    let (status, _) = node
        .post(
            "{\"id\": 1}\n{\"id\": 1}\n{\"id\": 2}",
            "application/x-ndjson",
        )
        .await;
    assert_eq!(status, 202);
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "two outputs",
        || async { (node.outputs("once").await.len() == 2).then_some(()) },
    )
    .await;

    let node = node.kill9().restart();
    let (status, body) = node
        .post("{\"id\": 1}\n{\"id\": 3}", "application/x-ndjson")
        .await;
    assert_eq!(status, 202);
    let three = body["ids"][1].as_str().unwrap().to_owned();
    let all = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the output of id 3",
        || async {
            let all = node.outputs("once").await;
            all.iter().any(|o| o["id"] == three.as_str()).then_some(all)
        },
    )
    .await;
    // `1` was seen before the crash: still a duplicate after it.
    let ids: Vec<i64> = all
        .iter()
        .map(|o| o["data"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_replays_once_after_a_fix_and_can_be_deleted() {
    let config = |script: &str| {
        format!(
            "sinks: {{archive: {{type: store}}}}\npipelines:\n  - name: ratios\n    when: {{exists: /a}}\n    stages:\n      - {{type: transform, script: {script}}}\n    sinks: [archive]\n"
        )
    };
    let broken = config(r#"[obj, [r, ["/", [get, [$input], /a], [get, [$input], /b]]]]"#);
    let fixed = config(
        r#"[obj, [r, [if, ["==", [get, [$input], /b], 0], 0, ["/", [get, [$input], /a], [get, [$input], /b]]]]]"#,
    );
    let node = crate::harness::Node::start(&broken);
    let (status, body) = node
        .post(
            "{\"a\": 6, \"b\": 0}\n{\"other\": 1}",
            "application/x-ndjson",
        )
        .await;
    assert_eq!(status, 202);
    let event = body["ids"][0].as_str().unwrap().to_owned();
    let letters = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "two dead letters",
        || async {
            let letters = node.dead_letters("").await;
            (letters.len() == 2).then_some(letters)
        },
    )
    .await;
    let id_of = |reason: &str| {
        letters.iter().find(|l| l["reason"] == reason).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (failed, unrouted) = (id_of("script_error"), id_of("no_route"));

    // The fix: restart with a script that handles b = 0, then replay the dead letter.
    let (_, stopped) = node.terminate();
    let node = stopped.restart_with(&fixed);
    let replay = |id: &str| {
        node.client
            .post(node.url(&format!("/api/dlq/{id}/replay")))
            .send()
    };
    assert_eq!(replay(&failed).await.unwrap().status().as_u16(), 202);
    let outputs = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the replayed output",
        || async {
            let outputs = node.outputs("ratios").await;
            (!outputs.is_empty()).then_some(outputs)
        },
    )
    .await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        outputs[0]["id"],
        event.as_str(),
        "the output keeps the original event's id"
    );
    assert_eq!(outputs[0]["data"], serde_json::json!({"r": 0}));
    // Replayed once: the dead letter is gone, asking again finds nothing.
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the dead letter removed",
        || async {
            node.dead_letters("reason=script_error")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(replay(&failed).await.unwrap().status().as_u16(), 404);

    let delete = |id: &str| {
        node.client
            .delete(node.url(&format!("/api/dlq/{id}")))
            .send()
    };
    assert_eq!(delete(&unrouted).await.unwrap().status().as_u16(), 204);
    assert_eq!(delete(&unrouted).await.unwrap().status().as_u16(), 404);
    assert!(node.dead_letters("").await.is_empty());
    assert_eq!(delete("not-an-id").await.unwrap().status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_dlq_sinks_deliver_their_results() {
    let node = crate::harness::Node::start(
        "sinks: {out: {type: stdout}, held: {type: dlq}}\npipelines:\n  - {name: printed, when: {equals: [/to, out]}, sinks: [out]}\n  - {name: held_back, when: {equals: [/to, held]}, sinks: [held]}\n",
    );
    let (status, body) = node
        .post(
            "{\"to\": \"out\", \"n\": 1}\n{\"to\": \"held\", \"n\": 2}",
            "application/x-ndjson",
        )
        .await;
    assert_eq!(status, 202);
    let printed = body["ids"][0].as_str().unwrap().to_owned();
    let lines = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the printed result",
        || async {
            let lines = node.stdout_lines();
            (!lines.is_empty()).then_some(lines)
        },
    )
    .await;
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["id"], printed.as_str());
    assert_eq!(event["data"], serde_json::json!({"to": "out", "n": 1}));

    // `stdout` prints before the step commits; the dead letter is visible once it has.
    let letters = crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "the held result",
        || async {
            let letters = node.dead_letters("reason=dlq_sink").await;
            (!letters.is_empty()).then_some(letters)
        },
    )
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["pipeline"], "held_back");
    assert_eq!(letters[0]["event"]["data"]["n"], 2);
    // A `dlq` sink's results are its pipeline's output: replaying them is refused.
    let id = letters[0]["id"].as_str().unwrap();
    let response = node
        .client
        .post(node.url(&format!("/api/dlq/{id}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}
