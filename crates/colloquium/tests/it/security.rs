//! Issue 26: tokens and scopes on every route of both listeners, the audit log, the failure
//! limit, the safe default, token rotation, TLS.

use std::time::Duration;

use colloquium_security::Access;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Node, eventually, run_cli};

const DEADLINE: Duration = Duration::from_secs(30);

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
        .replace("{file}", "app.js")
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
    let streaming = (response.headers().get("content-type"))
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // A tap lasts until its reader leaves: that it was let in is the answer.
        return (status, Value::Null, challenge);
    }
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
            // Open to anyone; `/health` shows its detail only with `read`.
            let health = path == "/health";
            for token in [None, Some(WRONG), Some(INGEST), Some(ADMIN)] {
                let (status, body, _) = call(&node, method, path, token).await;
                assert_eq!(status, 200, "{what} with {token:?}");
                let detail = body.get("components").is_some();
                assert!(!(health && detail), "{what} detail without read");
            }
            let (status, body, _) = call(&node, method, path, Some(READ)).await;
            assert_eq!(status, 200);
            let detail = body.get("components").is_some();
            assert!(!health || detail, "{what} detail with read");
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
    node.sighup();
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

/// A certificate and key (PEM) for `names`; `expired`: valid only in 2020.
fn certificate(names: &[&str], expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A fresh HTTPS client (no pooled connection) trusting only `ca`.
fn https_client(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The whole error chain of a failed request, to tell why a handshake was refused.
async fn https_error(client: &reqwest::Client, url: &str) -> Option<String> {
    match client.get(url).send().await {
        Ok(_) => None,
        Err(e) => {
            let mut text = format!("{e:?}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(" / {s}"));
                source = s.source();
            }
            Some(text)
        }
    }
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// One TLS connection trusting only `ca`.
async fn tls_connect(addr: std::net::SocketAddr, ca: &str) -> TlsStream {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await.unwrap()
}

/// `GET /health` on an open keep-alive connection; returns the status.
async fn get_on(stream: &mut TlsStream) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: node\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection was closed");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// TLS on both HTTP listeners: round trips with a trusted certificate; plain HTTP, an
/// untrusted certificate, a wrong host name and an expired certificate refused. A changed
/// certificate is served after SIGHUP while a connection opened before keeps working; a
/// certificate file that does not load rejects the reload and the one in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trips_refusals_and_rotation_without_dropping_connections() {
    let (cert, key) = certificate(&["127.0.0.1"], false);
    let node = Node::start_with_files(
        "server: {tls: {cert: node.crt, key: node.key}}\nsinks: {db: {type: store}}\npipelines:\n  - {name: all, sinks: [db]}\n",
        &[("node.crt", &cert), ("node.key", &key)],
    );
    let (main, admin) = (
        format!("https://{}", node.addr),
        format!("https://{}", node.admin),
    );
    let client = https_client(&cert);
    let response = client
        .post(format!("{main}/events"))
        .header("content-type", "application/json")
        .body(r#"{"over":"tls"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let response = client
        .get(format!("{admin}/admin/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Plain HTTP to a TLS listener gets no answer.
    assert!(
        node.client
            .get(format!("http://{}/health", node.addr))
            .send()
            .await
            .is_err()
    );
    // A client that does not trust the certificate refuses it.
    let (other, _) = certificate(&["127.0.0.1"], false);
    let error = https_error(&https_client(&other), &format!("{main}/health")).await;
    assert!(error.is_some(), "an untrusted certificate was accepted");

    let mut open = tls_connect(node.addr, &cert).await;
    assert_eq!(get_on(&mut open).await, 200);

    // A certificate for another host name: served after SIGHUP, refused by clients.
    let (wrong, wrong_key) = certificate(&["colloquium.invalid"], false);
    std::fs::write(node.dir.path().join("node.crt"), &wrong).unwrap();
    std::fs::write(node.dir.path().join("node.key"), &wrong_key).unwrap();
    node.sighup();
    eventually(
        DEADLINE,
        "the new certificate refused for its host name",
        || async {
            // Until SIGHUP is handled the old certificate fails this client's check otherwise.
            https_error(&https_client(&wrong), &format!("{main}/health"))
                .await
                .filter(|e| e.contains("NotValidForName"))
        },
    )
    .await;
    // The connection opened before the change still works.
    assert_eq!(get_on(&mut open).await, 200);

    // An expired certificate.
    let (expired, expired_key) = certificate(&["127.0.0.1"], true);
    std::fs::write(node.dir.path().join("node.crt"), &expired).unwrap();
    std::fs::write(node.dir.path().join("node.key"), &expired_key).unwrap();
    node.sighup();
    eventually(DEADLINE, "the expired certificate refused", || async {
        https_error(&https_client(&expired), &format!("{main}/health"))
            .await
            .filter(|e| e.contains("Expired"))
    })
    .await;

    // A good one again, through the admin route.
    let (good, good_key) = certificate(&["127.0.0.1"], false);
    std::fs::write(node.dir.path().join("node.crt"), &good).unwrap();
    std::fs::write(node.dir.path().join("node.key"), &good_key).unwrap();
    let response = https_client(&expired)
        .post(format!("{admin}/admin/reload"))
        .send()
        .await;
    assert!(response.is_err(), "the expired certificate is still served");
    node.sighup();
    eventually(DEADLINE, "the good certificate served", || async {
        https_client(&good)
            .get(format!("{main}/health"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    // A key that does not match its certificate rejects the reload; the good one stays.
    std::fs::write(node.dir.path().join("node.key"), &wrong_key).unwrap();
    let response = https_client(&good)
        .post(format!("{admin}/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let report: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        report["error"].as_str().unwrap().contains("server.tls.key"),
        "{report}"
    );
    let response = https_client(&good)
        .get(format!("{main}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(get_on(&mut open).await, 200);
}

/// The TCP frame source over TLS: frames are stored and acked; a plain TCP client's frames
/// are not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_frame_source_speaks_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cert, key) = certificate(&["127.0.0.1"], false);
    let node = Node::start_with_files(
        "sources:\n  frames: {type: tcp, address: '127.0.0.1:0', ack: true, tls: {cert: f.crt, key: f.key}}\nsinks: {db: {type: store}}\npipelines:\n  - {name: all, from: [frames], sinks: [db]}\n",
        &[("f.crt", &cert), ("f.key", &key)],
    );
    let addr = node.source_addr("frames");
    let mut frames = Vec::new();
    for i in 0..3 {
        colloquium_ingest::frame::encode(
            colloquium_event::Priority::Medium,
            "t",
            format!(r#"{{"n":{i}}}"#).as_bytes(),
            &mut frames,
        );
    }
    let mut tls = tls_connect(addr, &cert).await;
    tls.write_all(&frames).await.unwrap();
    tls.flush().await.unwrap();
    let mut acked = 0;
    while acked < 3 {
        assert_eq!(tls.read_u8().await.unwrap(), b'A');
        acked = tls.read_u64().await.unwrap();
    }
    // Plain frames to the TLS port: the handshake fails and nothing is stored.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = plain.write_all(&frames).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut rest)).await;
    let outputs = eventually(DEADLINE, "three events", || async {
        let outputs = node.outputs("all").await;
        (outputs.len() >= 3).then_some(outputs)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(node.outputs("all").await.len(), 3, "{outputs:?}");
}

/// `colloquium token` makes a token and its SHA-256; a node configured with only the hash
/// accepts the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_by_the_cli_works_by_its_hash_alone() {
    let (code, out, err) = run_cli(&["token"], None);
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap()
    };
    let (token, hash) = (field("token:"), field("sha256:"));
    assert_eq!(token.len(), 64);
    assert_eq!(
        hash,
        colloquium_security::tokens::hex(&colloquium_security::tokens::sha256(token.as_bytes()))
    );
    let node = Node::start(&format!(
        "server: {{auth: {{tokens: [{{name: reader, sha256: {hash}, scopes: [read]}}]}}}}\n"
    ));
    assert_eq!(
        call(&node, &Method::GET, "/api/events", Some(&token))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&node, &Method::GET, "/api/events", Some(&hash))
            .await
            .0,
        401
    );
    let (code, again, _) = run_cli(&["token"], None);
    assert_eq!(code, 0);
    assert_ne!(again, out, "two tokens are never the same");
}

/// `GET /api/openapi.json` (open) describes every route of the route table and each HTTP
/// source, each operation with its scope, the admin routes on their own listener; it passes
/// `openapi-spec-validator` (installed by `scripts/bootstrap.sh --test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_covers_every_route_with_its_scope_and_validates() {
    let node = Node::start_with_files(
        &tokens_config("{burst: 100, per_minute: 100}"),
        &[("ops.token", ADMIN)],
    );
    let (status, spec, _) = call(&node, &Method::GET, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    let mut routes: Vec<(Method, String, Access)> = colloquium_api::routes::ROUTES
        .iter()
        .map(|(m, p, a)| (m.clone(), (*p).to_owned(), *a))
        .collect();
    for path in ["/events", "/hooks"] {
        let ingest = Access::Needs(colloquium_config::Scope::Ingest);
        routes.push((Method::POST, path.into(), ingest));
    }
    let described: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| {
            ["get", "post", "put", "patch", "delete"]
                .iter()
                .filter(|m| item.get(**m).is_some())
                .count()
        })
        .sum();
    assert_eq!(described, routes.len(), "one operation per route");
    for (method, path, access) in &routes {
        let operation = &spec["paths"][path.as_str()][method.as_str().to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
        let security = &operation["security"][0];
        match access {
            Access::Open => assert_eq!(security, &serde_json::json!({}), "{path}"),
            Access::Needs(scope) => {
                assert_eq!(security["bearer"][0], scope.as_str(), "{method} {path}");
                for status in ["401", "403", "429"] {
                    assert!(
                        operation["responses"][status].is_object(),
                        "{method} {path} documents {status}"
                    );
                }
            }
        }
        if path.starts_with("/admin/") {
            let url = spec["paths"][path.as_str()]["servers"][0]["url"]
                .as_str()
                .unwrap();
            assert_eq!(url, format!("http://{}", node.admin));
        }
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());

    let validator = crate::harness::tools_dir().join("venv/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "{} is missing: run scripts/bootstrap.sh --test",
        validator.display()
    );
    let file = node.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let output = std::process::Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// For the tests, the bootstrap wants an `openapi-spec-validator` and a `schemathesis` that run
/// and a Python with Grafana's dashboard model (and the build wants none of them).
#[test]
fn the_bootstrap_detects_api_checkers_that_run() {
    let dir = tempfile::tempdir().unwrap();
    let fake = |name: &str, body: &str| crate::harness::fake_script(dir.path(), name, body);
    let works = fake("checker-ok", "exit 0");
    let broken = fake("checker-broken", "exit 127");
    let absent = dir.path().join("absent");
    let check = |tools: [&std::path::Path; 3], args: &[&str]| {
        crate::harness::run_bootstrap(
            args,
            &[
                ("BOOTSTRAP_OPENAPI_VALIDATOR", tools[0]),
                ("BOOTSTRAP_SCHEMATHESIS", tools[1]),
                ("BOOTSTRAP_VENV_PYTHON", tools[2]),
            ],
        )
    };
    let (code, out) = check([&works, &works, &works], &["--check", "--test"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checker-ok"), "{out}");
    for tools in [
        [&broken, &works, &works],
        [&works, &broken, &works],
        [&works, &absent, &works],
        [&works, &works, &broken],
    ] {
        let (code, out) = check(tools.map(|p| p.as_path()), &["--check", "--test"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("api-checkers"), "{out}");
    }
    let (code, out) = check([&absent, &absent, &absent], &["--check"]);
    assert_eq!(code, Some(0), "the build needs no API checker: {out}");
}

/// schemathesis (installed by `scripts/bootstrap.sh --test`) against the real binary, driven by
/// the binary's own description: with a token of every scope, no `5xx`, every response in a
/// documented status with its documented schema and content type, schema-valid requests
/// accepted and schema-invalid ones refused; without the token or with a wrong one, every
/// scoped route refused (`ignored_auth`). Both listeners (the admin routes name theirs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_real_binary() {
    const ALL: &str = "every-scope-token-eeeeeeeeeeeeeeee";
    let backups = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{backup_root: {}}}
server:
  auth:
    tokens:
      - {{name: all, token: {ALL}, scopes: [ingest, read, admin]}}
    failures: {{burst: 100000, per_minute: 100000}}
sources:
  http: {{type: http}}
sinks: {{db: {{type: store}}}}
pipelines:
  - name: all
    stages:
      - {{type: window, window: tumbling, size: 1s, key: /k, time: /t, aggregates: {{n: count}}}}
      - {{type: anomaly, min_events: 5}}
    sinks: [db]
",
        backups.path().display()
    );
    let node = Node::start(&config);
    // Something for the queries to find.
    let events: String = (0..50)
        .map(|i| {
            format!(
                "{{\"k\":\"k{}\",\"t\":{},\"user\":\"u{}\"}}\n",
                i % 3,
                1_000 * i,
                i % 2
            )
        })
        .collect();
    let response = node
        .client
        .post(node.url("/events"))
        .bearer_auth(ALL)
        .header("content-type", "application/x-ndjson")
        .body(events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let schemathesis = crate::harness::tools_dir().join("venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/bootstrap.sh --test",
        schemathesis.display()
    );
    let settings = crate::harness::manifest_dir().join("tests/schemathesis.toml");
    let run = || {
        let output = tokio::process::Command::new(&schemathesis)
            // Hypothesis keeps its example database in the working directory.
            .current_dir(node.dir.path())
            .arg("--config-file")
            .arg(&settings)
            .args(["--no-color", "run"])
            .arg(node.url("/api/openapi.json"))
            .args(["--header", &format!("Authorization: Bearer {ALL}")])
            .args(["--max-examples", "40", "--workers", "2"])
            // A tap is a stream that lasts until its reader leaves: every schema-valid request
            // would wait out the timeout. Its refusals are tested in `tap::a_stalled_tap_…`.
            .args(["--exclude-path", "/api/tap"])
            .args(["--seed", "20261207", "--request-timeout", "20"])
            .kill_on_drop(true)
            .output();
        async move {
            tokio::time::timeout(Duration::from_secs(600), output)
                .await
                .expect("schemathesis ends within 10 minutes")
                .unwrap()
        }
    };
    let mut output = run().await;
    // CPython before 3.11.8 / 3.12.1 (Debian 12's 3.11.2 among them) sometimes fails its own
    // `ast.parse` with this SystemError (python/cpython#106905), which Hypothesis calls to
    // describe a filter: schemathesis crashed, it found nothing. Run it once more then.
    if !output.status.success()
        && String::from_utf8_lossy(&output.stdout).contains("AST constructor recursion depth")
    {
        eprintln!("schemathesis hit CPython's gh-106905; running it again");
        output = run().await;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Every operation but the tap was exercised, none skipped for want of a server or a schema.
    let selected = (stdout.lines())
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .and_then(|s| s.split_once('/'))
        .and_then(|(n, of)| {
            Some((
                n.trim().parse::<usize>().ok()?,
                of.trim().parse::<usize>().ok()?,
            ))
        });
    let Some((selected, operations)) = selected else {
        panic!("no selection in:\n{stdout}");
    };
    assert_eq!(selected + 1, operations, "{stdout}");
    assert!(
        stdout.contains(&format!("Tested: {selected}\n")),
        "{stdout}"
    );
}
