//! Issue 26: tokens and scopes on every route of both listeners, the audit log, the failure
//! limit, the safe default, token rotation, TLS.

use std::time::Duration;

use colloquium_security::Access;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Node, eventually, run_cli};

const INGEST: &str = "ingest-token-aaaaaaaaaaaaaaaa";
const READ: &str = "read-token-bbbbbbbbbbbbbbbbbbbb";
const ADMIN: &str = "admin-token-cccccccccccccccccc";
const WRONG: &str = "wrong-token-dddddddddddddddddd";

fn tokens_config(failures: &str) -> String {
    format!(
        "server:
  auth:
    tokens:
      - {{name: collector, token: {INGEST}, scopes: [ingest]}}
      - {{name: analyst, token: {READ}, scopes: [read]}}
      - {{name: ops, token_file: ops.token, scopes: [admin]}}
    failures: {failures}
sources:
  http: {{type: http}}
  hooks: {{type: http, path: /hooks}}
sinks: {{db: {{type: store}}}}
pipelines:
  - {{name: all, sinks: [db]}}
"
    )
}

/// A path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "01KC0000000000000000000000")
        .replace("{pipeline}", "all")
        .replace("{stage}", "x")
        .replace("{table}", "x")
        .replace("{user}", "u")
}

async fn call(
    node: &Node,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value, String) {
    let host = if path.starts_with("/admin/") {
        node.admin
    } else {
        node.addr
    };
    let mut request = node
        .client
        .request(method.clone(), format!("http://{host}{}", concrete(path)));
    if *method == Method::POST {
        request = request
            .header("content-type", "application/json")
            .body(r#"{"a":1}"#);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        challenge,
    )
}

fn token_for(scope: colloquium_config::Scope) -> &'static str {
    match scope {
        colloquium_config::Scope::Ingest => INGEST,
        colloquium_config::Scope::Read => READ,
        colloquium_config::Scope::Admin => ADMIN,
    }
}

/// A token that has every scope but `scope`'s: here each token has one scope.
fn token_without(scope: colloquium_config::Scope) -> &'static str {
    match scope {
        colloquium_config::Scope::Read => INGEST,
        _ => READ,
    }
}

fn audit_lines(node: &Node) -> Vec<Value> {
    std::fs::read_to_string(node.data_dir().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

/// Every route × {no token, wrong token, token without the scope, token with it}, from the
/// route table, on the listener each is served on; then the audit log has one line per
/// refusal and per admin action, and no token text is in the audit log, the node's log or
/// `/admin/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_scope_on_both_listeners_and_each_refusal_is_audited() {
    let node = Node::start_logged(
        &tokens_config("{burst: 10000, per_minute: 10000}"),
        &[("ops.token", &format!("{ADMIN}\n"))],
        "debug",
    );
    let mut routes: Vec<(Method, String, Access)> = colloquium_api::routes::ROUTES
        .iter()
        .map(|(m, p, a)| (m.clone(), (*p).to_owned(), *a))
        .collect();
    for path in ["/events", "/hooks"] {
        routes.push((
            Method::POST,
            path.into(),
            Access::Needs(colloquium_config::Scope::Ingest),
        ));
    }
    let (mut refusals, mut admin_actions) = (0, 0);
    for (method, path, access) in &routes {
        let what = format!("{method} {path}");
        let Access::Needs(scope) = *access else {
            // `/health`: open; its detail only with `read`.
            for token in [None, Some(WRONG), Some(INGEST), Some(ADMIN)] {
                let (status, body, _) = call(&node, method, path, token).await;
                assert_eq!(status, 200, "{what} with {token:?}");
                assert!(
                    body.get("components").is_none(),
                    "{what} detail without read"
                );
            }
            let (status, body, _) = call(&node, method, path, Some(READ)).await;
            assert_eq!(status, 200);
            assert!(body.get("components").is_some(), "{what} detail with read");
            continue;
        };
        let (status, body, challenge) = call(&node, method, path, None).await;
        assert_eq!(status, 401, "{what} without a token: {body}");
        assert_eq!(body["reason"], "missing_token", "{what}");
        assert!(body["error"].is_string(), "{what}");
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
        let (status, body, challenge) = call(&node, method, path, Some(WRONG)).await;
        assert_eq!(status, 401, "{what} with a wrong token: {body}");
        assert_eq!(body["reason"], "bad_token", "{what}");
        assert!(challenge.contains("invalid_token"), "{what}: {challenge:?}");
        let (status, body, _) = call(&node, method, path, Some(token_without(scope))).await;
        assert_eq!(status, 403, "{what} without its scope: {body}");
        assert_eq!(body["reason"], "missing_scope", "{what}");
        assert_eq!(body["scope"], scope.as_str(), "{what}");
        assert!(body["error"].as_str().unwrap().contains(scope.as_str()));
        refusals += 3;
        let (status, body, _) = call(&node, method, path, Some(token_for(scope))).await;
        assert!(
            ![401, 403, 429].contains(&status),
            "{what} with its scope: {status} {body}"
        );
        if scope == colloquium_config::Scope::Admin {
            admin_actions += 1;
        }
    }
    // The admin routes are not on the main listener at all.
    let response = node
        .client
        .get(node.url("/admin/config"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    let lines = eventually(Duration::from_secs(10), "audit lines", || async {
        let lines = audit_lines(&node);
        (lines.len() >= refusals + admin_actions).then_some(lines)
    })
    .await;
    let refused: Vec<_> = lines.iter().filter(|l| l["outcome"] == "refused").collect();
    let allowed: Vec<_> = lines.iter().filter(|l| l["outcome"] == "allowed").collect();
    assert_eq!(refused.len(), refusals, "one audit line per refusal");
    assert_eq!(
        allowed.len(),
        admin_actions,
        "one audit line per admin action"
    );
    for line in &lines {
        for field in ["time", "method", "route", "path", "address", "status"] {
            assert!(!line[field].is_null(), "audit line without {field}: {line}");
        }
    }
    assert!(allowed.iter().all(|l| l["token"] == "ops"));
    assert!(
        refused
            .iter()
            .any(|l| l["reason"] == "missing_scope" && l["token"] == "collector")
    );
    let (status, config) = {
        let response = node
            .client
            .get(format!("http://{}/admin/config", node.admin))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(status, 200);
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    let log = node.log();
    assert!(log.contains("DEBUG"), "the node logged at debug level");
    for token in [INGEST, READ, ADMIN, WRONG] {
        assert!(!audit.contains(token), "a token in the audit log");
        assert!(!log.contains(token), "a token in the node's log");
        assert!(!config.contains(token), "a token in /admin/config");
    }
    // Refusals are counted by reason.
    let (_, metrics) = {
        let response = node
            .client
            .get(node.url("/metrics"))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert!(
        metrics.contains("colloquium_auth_refused_total{reason=\"missing_scope\"}"),
        "{metrics}"
    );
}

/// More failures than the burst from one address: the rest are refused with `429` and
/// `Retry-After` before their token is looked at (a right guess gains nothing), counted and
/// audited. The per-address separation is shown by the guard's unit test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failures_is_throttled() {
    let node = Node::start_with_files(
        &tokens_config("{burst: 5, per_minute: 1}"),
        &[("ops.token", ADMIN)],
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            call(&node, &Method::GET, "/api/events", Some(WRONG))
                .await
                .0,
        );
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert_eq!(statuses[6..], [429; 2], "{statuses:?}");
    let response = node
        .client
        .get(node.url("/api/events"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        429,
        "penalized: even a good token waits"
    );
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Open routes are not throttled.
    assert_eq!(call(&node, &Method::GET, "/health", None).await.0, 200);
    let throttled = audit_lines(&node)
        .iter()
        .filter(|l| l["reason"] == "throttled")
        .count();
    assert!(throttled >= 3, "throttled requests audited: {throttled}");
}

/// Without tokens a node refuses to listen beyond loopback unless `server.auth: none` is
/// written; `colloquium validate` says the same. (No test binds a non-loopback address.)
#[test]
fn without_tokens_a_non_loopback_listener_is_refused_unless_auth_none_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, stderr) = run_cli(
        &[
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ],
        Some(dir.path()),
    );
    assert_ne!(code, 0);
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains("server.auth: none"), "{stderr}");
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, "server: {admin_listen: 0.0.0.0:8081}\n").unwrap();
    let (code, _, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(stderr.contains("server.admin_listen"), "{stderr}");
    std::fs::write(
        &config,
        "server: {admin_listen: 0.0.0.0:8081, auth: none}\n",
    )
    .unwrap();
    let (code, out, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{stderr}");
    for (bad, key) in [
        ("server: {auth: {tokens: []}}", "server.auth.tokens"),
        (
            "server: {auth: {tokens: [{name: a, token: short, scopes: [read]}]}}",
            "server.auth.tokens[0].token",
        ),
        (
            "server: {auth: {tokens: [{name: a, sha256: abc, scopes: [read]}]}}",
            "server.auth.tokens[0].sha256",
        ),
        (
            "server: {auth: {tokens: [{name: a, scopes: [read]}]}}",
            "server.auth.tokens[0]",
        ),
        ("server: {auth: open}", "server.auth"),
    ] {
        std::fs::write(&config, bad).unwrap();
        let (code, out, stderr) = run_cli(&["validate", "-c", config.to_str().unwrap()], None);
        assert_ne!(code, 0, "{bad}");
        assert!(
            format!("{out}{stderr}").contains(key),
            "{bad}: {out}{stderr}"
        );
    }
}

/// A reload takes new tokens at once: the old ones are refused from the next request on. A
/// changed token file is read again at SIGHUP, though the config is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_on_reload_and_old_ones_stop_at_once() {
    let node = Node::start_with_files(
        &tokens_config("{burst: 100, per_minute: 100}"),
        &[("ops.token", ADMIN)],
    );
    assert_eq!(
        call(&node, &Method::GET, "/api/events", Some(READ)).await.0,
        200
    );
    let rotated = "rotated-read-token-eeeeeeeeeeee";
    let config = tokens_config("{burst: 100, per_minute: 100}").replace(READ, rotated);
    std::fs::write(node.config_path(), config).unwrap();
    let (status, report, _) = call(&node, &Method::POST, "/admin/reload", Some(ADMIN)).await;
    assert_eq!(status, 200, "{report}");
    // The file watcher may have reloaded first; either way the new tokens are version 2.
    assert_eq!(report["version"], 2, "{report}");
    assert!(
        report["restart_required"].as_array().unwrap().is_empty(),
        "tokens need no restart: {report}"
    );
    assert_eq!(
        call(&node, &Method::GET, "/api/events", Some(READ)).await.0,
        401
    );
    assert_eq!(
        call(&node, &Method::GET, "/api/events", Some(rotated))
            .await
            .0,
        200
    );

    // The admin token lives in a file: rewrite it and send SIGHUP.
    let new_admin = "new-admin-token-ffffffffffffff";
    std::fs::write(node.dir.path().join("ops.token"), new_admin).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the old admin token refused",
        || async {
            (call(&node, &Method::GET, "/admin/config", Some(ADMIN))
                .await
                .0
                == 401)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        call(&node, &Method::GET, "/admin/config", Some(new_admin))
            .await
            .0,
        200
    );
    // A token file that disappears rejects the reload; the tokens in use stay.
    std::fs::remove_file(node.dir.path().join("ops.token")).unwrap();
    let (status, report, _) = call(&node, &Method::POST, "/admin/reload", Some(new_admin)).await;
    assert_eq!(status, 422, "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("ops.token"),
        "{report}"
    );
    assert_eq!(
        call(&node, &Method::GET, "/admin/config", Some(new_admin))
            .await
            .0,
        200
    );
}
