//! `deploy/grafana/colloquium.json` from the outside: Grafana's own dashboard model (its
//! Foundation SDK, which `scripts/bootstrap.sh --test` installs) loads it and keeps every key,
//! its layout is sound, every query parses (`promtool check rules`), and every metric it names
//! is one a live node exports.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::{names, promtool};
use crate::anomaly::{events, ndjson};
use crate::harness::{Node, manifest_dir, tools_dir};

const READ: &str = "grafana-read-token-aaaaaaaaaaaaaaaa";
const INGEST: &str = "grafana-ingest-token-bbbbbbbbbbbbbb";

fn dashboard_path() -> std::path::PathBuf {
    manifest_dir().join("../../deploy/grafana/colloquium.json")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// Each query with Grafana's variables given values Prometheus takes.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut all: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("every target has an expr")
                .to_owned()
        })
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // `label_values(metric, label)` is Grafana's; the metric is a query of its own.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .unwrap_or(query);
            all.push(inner.to_owned());
        }
    }
    all.iter()
        .map(|q| q.replace("$__rate_interval", "5m").replace("$job", ".*"))
        .collect()
}

#[test]
fn the_grafana_dashboard_is_laid_out_and_loads_in_grafanas_model() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_path()).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "colloquium-node");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    // Unique ids; known panel types; inside the 24-column grid; no two panels overlap.
    let all = panels(&dashboard);
    let ids: BTreeSet<u64> = all.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");
    let mut cells = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().unwrap();
        let kind = panel["type"].as_str().unwrap();
        assert!(
            ["row", "timeseries", "stat"].contains(&kind),
            "{title}: {kind}"
        );
        let at = |k: &str| panel["gridPos"][k].as_u64().unwrap();
        let (x, y, w, h) = (at("x"), at("y"), at("w"), at("h"));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {x}+{w} columns");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{title} overlaps another panel at {cx},{cy}"
                );
            }
        }
        if kind != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "{title}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title} has a query");
            for target in targets {
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
                assert!(
                    target["refId"].is_string() && target["expr"].is_string(),
                    "{title}"
                );
            }
        }
    }

    // Grafana's own dashboard model keeps every key and value (a misspelt or unknown key is
    // one Grafana would drop).
    let python = tools_dir().join("venv/bin/python");
    let check = manifest_dir().join("tests/grafana_model.py");
    let output = std::process::Command::new(&python)
        .arg(&check)
        .arg(dashboard_path())
        .output()
        .expect("the tools' python: run scripts/bootstrap.sh --test");
    assert!(
        output.status.success(),
        "Grafana's dashboard model:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Every query is PromQL Prometheus parses: each as a recording rule.
    let queries = queries(&dashboard);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(query).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, text) = promtool(&["check", "rules", file.to_str().unwrap()], None);
    assert!(
        ok && text.contains(&format!("{} rules found", queries.len())),
        "{text}"
    );
}

/// A node with tokens, an anomaly stage and a window stage, fed until it has flagged anomalies and
/// refused a request, exports every metric the dashboard's queries name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let config = format!(
        "server:
  auth:
    tokens:
      - {{name: r, token: {READ}, scopes: [read]}}
      - {{name: i, token: {INGEST}, scopes: [ingest]}}
sinks: {{db: {{type: store}}}}
pipelines:
  - name: a
    stages:
      - {{type: anomaly, min_events: 20, threshold: 0.5}}
    sinks: [db]
  - name: w
    stages:
      - {{type: window, window: tumbling, size: 1s, key: /user, aggregates: {{n: count}}}}
    sinks: [db]
"
    );
    let node = Node::start(&config);
    let mut input = events("a", 0, 30, false);
    input.extend(events("a", 30, 32, true));
    // No user: a dead letter, for the dead-letter counter.
    input.push(serde_json::json!({"event_type": "auth_attempt"}));
    let response = node
        .client
        .post(node.url("/events"))
        .bearer_auth(INGEST)
        .header("content-type", "application/x-ndjson")
        .body(ndjson(&input))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // One refusal, for the refusal counter.
    let refused = node
        .client
        .get(node.url("/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let dashboard = std::fs::read_to_string(dashboard_path()).unwrap();
    let named = names(&dashboard);
    assert!(named.len() >= 15, "{named:?}");
    // Gauges such as the lag are set by the pipelines' periodic reports: wait for them.
    let mut missing = named.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !missing.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(response) = node
            .client
            .get(node.url("/metrics"))
            .bearer_auth(READ)
            .send()
            .await
        else {
            continue;
        };
        let exported = names(&response.text().await.unwrap_or_default());
        missing = named.difference(&exported).cloned().collect();
    }
    assert!(
        missing.is_empty(),
        "not exported by a live node: {missing:?}"
    );
}
