//! HTTP ingest and queries through the real binary.

use serde_json::{Value, json};

use crate::harness::Node;

fn ids(body: &Value) -> Vec<String> {
    body["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn object_array_and_ndjson_read_back_by_id_and_time_range() {
    let node = Node::start("");

    let (status, one) = node
        .post(
            r#"{"kind":"one","timestamp":1700000000000}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, 202, "{one}");
    assert_eq!(one["accepted"], 1);
    let (status, many) = node
        .post(
            r#"[{"kind":"array","n":1},{"kind":"array","n":2}]"#,
            "application/json",
        )
        .await;
    assert_eq!(status, 202, "{many}");
    let (status, lines) = node
        .post("{\"kind\":\"ndjson\",\"n\":1}\n{\"kind\":\"ndjson\",\"n\":2}\n{\"kind\":\"ndjson\",\"n\":3}\n", "application/x-ndjson")
        .await;
    assert_eq!(status, 202, "{lines}");
    assert_eq!(lines["accepted"], 3);

    let all_ids: Vec<String> = [&one, &many, &lines].into_iter().flat_map(ids).collect();
    assert_eq!(all_ids.len(), 6);

    // By id: the payload, the event time from the payload, ingest time and metadata.
    let (status, event) = node.get(&format!("/api/events/{}", all_ids[0])).await;
    assert_eq!(status, 200);
    assert_eq!(
        event["data"],
        json!({"kind": "one", "timestamp": 1700000000000u64})
    );
    assert_eq!(event["timestamp"], 1700000000000u64);
    assert!(event["ingest_time"].as_u64().unwrap() > 1700000000000);
    assert_eq!(event["metadata"]["source"], "http");
    assert_eq!(event["metadata"]["priority"], "medium");
    for id in &all_ids[1..] {
        let (status, event) = node.get(&format!("/api/events/{id}")).await;
        assert_eq!(status, 200);
        assert_eq!(event["id"], id.as_str());
        assert_eq!(event["timestamp"], event["ingest_time"]);
    }

    // By time range: everything since the first ingest time, in id order, paged by cursor.
    let since = event_time(&node, &all_ids[0]).await;
    let until = event_time(&node, &all_ids[5]).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = node
            .get(&format!(
                "/api/events?since={since}&until={until}&limit=4{cursor}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, all_ids);

    // RFC 3339 bounds, descending order, and a range before everything.
    let (_, page) = node
        .get("/api/events?since=2000-01-01T00:00:00Z&order=desc&limit=2")
        .await;
    let newest: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(newest, [all_ids[5].as_str(), all_ids[4].as_str()]);
    let (_, page) = node.get("/api/events?until=2000-01-01T00:00:00Z").await;
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["next_cursor"], Value::Null);
}

async fn event_time(node: &Node, id: &str) -> u64 {
    node.get(&format!("/api/events/{id}")).await.1["ingest_time"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_stores_nothing() {
    let node = Node::start("server:\n  max_body_size: 1KiB\n");
    let big = format!(
        "[{}]",
        vec![r#"{"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#; 40]
            .join(",")
    );
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        (r#"{"a":"#, "application/json", 400, "invalid JSON"),
        ("", "application/json", 400, "empty"),
        ("[]", "application/json", 400, "no events"),
        ("[1,2]", "application/json", 400, "item [0]"),
        (
            r#""just a string""#,
            "application/json",
            400,
            "got a string",
        ),
        (
            "{\"ok\":1}\n{\"ok\":2}\n{broken\n{\"ok\":4}",
            "application/x-ndjson",
            400,
            "line 3",
        ),
        ("{\"ok\":1}\n42\n", "application/x-ndjson", 400, "line 2"),
        ("{\"ok\":1}", "text/plain", 415, "unsupported content type"),
        (&big, "application/json", 413, "max_body_size"),
    ];
    for (body, content_type, want, message) in &cases {
        let (status, error) = node.post(body, content_type).await;
        assert_eq!(status, *want, "{body:.40}: {error}");
        let text = error["error"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{body:.40}: {error}");
    }
    let (_, error) = node
        .post("{\"ok\":1}\n{broken\n", "application/x-ndjson")
        .await;
    assert_eq!(error["line"], 2);

    // A bad query parameter rejects the whole batch too.
    let response = node
        .client
        .post(node.url("/events?priority=asap"))
        .header("content-type", "application/json")
        .body(r#"[{"a":1}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    assert!(
        node.all_events().await.is_empty(),
        "a rejected request stored something"
    );
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains(
            r#"colloquium_ingest_requests_rejected_total{source="http",reason="invalid_body"} 8"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("colloquium_storage_events_stored_total 0"));
}

#[tokio::test]
async fn lookups_answer_404_and_400() {
    let node = Node::start("");
    assert_eq!(
        node.get("/api/events/01ARZ3NDEKTSV4RRFFQ69G5FAV").await.0,
        404
    );
    assert_eq!(node.get("/api/events/not-an-id").await.0, 400);
    assert_eq!(node.get("/api/events?since=yesterday").await.0, 400);
    assert_eq!(node.get("/api/events?order=sideways").await.0, 400);
    assert_eq!(node.get("/api/events?limit=0").await.0, 400);
    assert_eq!(node.get("/api/events?cursor=zzz").await.0, 400);
    assert_eq!(node.get("/api/events?bogus=1").await.0, 400);
}

#[tokio::test]
async fn source_filter_priority_and_topic() {
    let node = Node::start("");
    let (status, _) = node.post(r#"{"a":1}"#, "application/json").await;
    assert_eq!(status, 202);
    let response = node
        .client
        .post(node.url("/events?priority=critical&topic=payments&routing_key=acct-9"))
        .header("content-type", "application/json")
        .body(r#"{"a":2}"#)
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let (_, event) = node
        .get(&format!("/api/events/{}", body["ids"][0].as_str().unwrap()))
        .await;
    assert_eq!(event["metadata"]["priority"], "critical");
    assert_eq!(event["metadata"]["topic"], "payments");
    assert_eq!(event["metadata"]["routing_key"], "acct-9");

    let (_, page) = node.get("/api/events?source=http").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let (_, page) = node.get("/api/events?source=kafka").await;
    assert_eq!(page["events"], json!([]));
}

#[tokio::test]
async fn health_and_metrics_describe_the_node() {
    let node = Node::start("");
    let (status, health) = node.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["components"]["storage"]["writable"], true);
    assert!(
        health["components"]["disk"]["available_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    node.post(r#"[{"a":1},{"a":2}]"#, "application/json").await;
    node.post("nope", "application/json").await;
    let (status, metrics) = node.get_text("/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        r#"colloquium_ingest_events_received_total{source="http"} 2"#,
        r#"colloquium_ingest_events_accepted_total{source="http"} 2"#,
        r#"colloquium_ingest_requests_rejected_total{source="http",reason="invalid_body"} 1"#,
        "colloquium_storage_events_stored_total 2",
        "colloquium_ingest_durable_latency_seconds_bucket",
        r#"colloquium_http_requests_total{method="POST",route="/events",status="202"} 1"#,
        r#"colloquium_http_requests_total{method="POST",route="/events",status="400"} 1"#,
        r#"colloquium_storage_bytes{cf="events"}"#,
        "colloquium_process_resident_memory_bytes",
        "# TYPE colloquium_storage_events_stored_total counter",
    ] {
        assert!(metrics.contains(expected), "missing {expected}:\n{metrics}");
    }
    assert!(
        !metrics.contains("# EOF"),
        "plain scrapes get Prometheus text 0.0.4"
    );

    // Prometheus asks for OpenMetrics and gets it.
    let response = node
        .client
        .get(node.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE colloquium_storage_events_stored counter"));
}

#[tokio::test]
async fn health_is_degraded_when_disk_space_is_low() {
    let node = Node::start("storage:\n  min_free_disk: 1000000TiB\n");
    let (status, health) = node.get("/health").await;
    assert_eq!(status, 200, "degraded still serves");
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["components"]["disk"]["status"], "degraded");
    let reason = health["components"]["disk"]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("storage.min_free_disk"), "{reason}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let node = Node::start("server:\n  header_read_timeout: 200ms\n");
    let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    let mut rest = Vec::new();
    // The server ends the connection (possibly after a 408); a read timeout here means it
    // kept the slot.
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(!String::from_utf8_lossy(&rest).contains("202"));
}

#[test]
fn connections_past_max_connections_wait_for_a_free_slot() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    let node = Node::start("server:\n  max_connections: 1\n");
    let request = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", node.addr);
    let status_line = |stream: &TcpStream| -> std::io::Result<String> {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line)
    };
    // The first connection is served and stays open (keep-alive), holding the only slot.
    let mut first = TcpStream::connect(node.addr).unwrap();
    first.write_all(request.as_bytes()).unwrap();
    assert!(status_line(&first).unwrap().starts_with("HTTP/1.1 200"));

    // The second is not served while the first is open...
    let mut second = TcpStream::connect(node.addr).unwrap();
    second.write_all(request.as_bytes()).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let waiting = status_line(&second);
    assert!(waiting.is_err(), "served past max_connections: {waiting:?}");

    // ...and is served once it closes.
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert!(status_line(&second).unwrap().starts_with("HTTP/1.1 200"));
}

/// Every error either listener answers is one JSON shape, `{"error": <text>, "reason":
/// <code>}`, whatever refused the request: no route, a method the route lacks, a body too
/// large or of the wrong type for a JSON route, bad JSON, a bad parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_body_has_the_one_shape() {
    let node = Node::start("");
    // More than the 2 MiB a JSON route of the API reads.
    let big = "a".repeat(3 << 20);
    // (listener, method, path, (content type, body), status, reason)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: [Case; 11] = [
        ("api", "GET", "/nope", None, 404, "not_found"),
        ("admin", "GET", "/nope", None, 404, "not_found"),
        ("api", "DELETE", "/health", None, 405, "method_not_allowed"),
        (
            "admin",
            "GET",
            "/admin/reload",
            None,
            405,
            "method_not_allowed",
        ),
        ("api", "GET", "/api/events/zzz", None, 400, "bad_request"),
        (
            "api",
            "GET",
            "/api/events?bogus=1",
            None,
            400,
            "bad_request",
        ),
        (
            "api",
            "POST",
            "/api/control",
            Some(("text/plain", "x")),
            415,
            "unsupported_media_type",
        ),
        (
            "api",
            "POST",
            "/api/control",
            Some(("application/json", "{")),
            400,
            "bad_request",
        ),
        (
            "api",
            "POST",
            "/api/control",
            Some(("application/json", &big)),
            413,
            "too_large",
        ),
        (
            "admin",
            "POST",
            "/admin/backup",
            Some(("text/plain", "x")),
            415,
            "unsupported_media_type",
        ),
        (
            "api",
            "POST",
            "/events",
            Some(("text/plain", "x")),
            415,
            "unsupported_media_type",
        ),
    ];
    for (listener, method, path, body, status, reason) in cases {
        let host = if listener == "admin" {
            node.admin
        } else {
            node.addr
        };
        // Each on a connection of its own: the server closes one whose body it refused
        // unread (413), and a pooled client could send the next request down it.
        let mut request = node
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("http://{host}{path}"),
            )
            .header("connection", "close");
        if let Some((content_type, body)) = body {
            request = request
                .header("content-type", content_type)
                .body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert_eq!(answer["reason"], reason, "{method} {path}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
}
