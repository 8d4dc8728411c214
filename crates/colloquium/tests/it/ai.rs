//! The `ai` stage through the real binary, against a local model server on 127.0.0.1 (test
//! code only, never a provider of the product) that speaks the OpenAI Chat Completions wire
//! format, records each request and answers as told: a valid threat analysis, one that breaks
//! the schema, an error status, or held open until released.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Node, eventually};

const MINUTE: Duration = Duration::from_secs(60);
/// Tokens the server says each answered call used (prompt, answer): below the worst case a
/// call reserves (its counted prompt + `max_tokens`), so reservations and spend differ.
const USAGE: (u64, u64) = (100, 50);
/// Prices in the configs below (USD per million tokens) and what a call costs at [`USAGE`].
const PRICE: &str = "price: {input: 1, output: 4}";
const REAL_COST: u64 = 100 * 1_000 + 50 * 4_000;
const MAX_TOKENS: u64 = 500;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A valid threat analysis.
    Valid,
    /// Breaks the schema unless the prompt says the previous answer was not valid.
    InvalidOnce,
    /// Always breaks the schema.
    Invalid,
}

#[derive(Default)]
struct Seen {
    requests: Vec<(Option<String>, Value)>,
}

/// The local model server.
struct ModelServer {
    base_url: String,
    mode: Arc<Mutex<Mode>>,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Seen>>,
    hold: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    async fn start() -> ModelServer {
        let mode = Arc::new(Mutex::new(Mode::Valid));
        let status = Arc::new(AtomicU16::new(200));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let hold = Arc::new(tokio::sync::watch::Sender::new(false));
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post({
                let (mode, status, seen, hold) =
                    (mode.clone(), status.clone(), seen.clone(), hold.clone());
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.lock().unwrap().requests.push((auth, body.clone()));
                    let mut open = hold.subscribe();
                    let _ = open.wait_for(|held| !*held).await;
                    let code = status.load(Ordering::Relaxed);
                    if code != 200 {
                        let status = axum::http::StatusCode::from_u16(code).unwrap();
                        return (status, axum::Json(json!({"error": {"message": "down"}})));
                    }
                    let prompt = body["messages"][1]["content"].as_str().unwrap_or("");
                    let valid = match *mode.lock().unwrap() {
                        Mode::Valid => true,
                        Mode::InvalidOnce => prompt.contains("was not valid"),
                        Mode::Invalid => false,
                    };
                    let content = if valid {
                        json!({"severity": "HIGH", "confidence": 0.9,
                            "indicators": ["new country", "odd hour"],
                            "summary": prompt.chars().take(60).collect::<String>(),
                            "recommendation": "lock the account"})
                    } else {
                        json!({"severity": "APOCALYPTIC", "confidence": 7})
                    };
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({
                            "id": "chatcmpl-1", "object": "chat.completion",
                            "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content.to_string()}}],
                            "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
                                "total_tokens": USAGE.0 + USAGE.1},
                        })),
                    )
                }
            }),
        );
        let app = app.route(
            "/v1/embeddings",
            axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
                let text = body["input"][0].as_str().unwrap_or("").to_owned();
                axum::Json(json!({
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": bag_of_words(&text)}],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 10, "total_tokens": 10},
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelServer {
            base_url,
            mode,
            status,
            seen,
            hold,
            task,
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.seen.lock().unwrap().requests.clone()
    }

    /// The worst case the node reserved for a request it sent: its prompt counted as the
    /// gateway counts it for a model it has no tokenizer for (a token per byte, plus 8 per
    /// message) and
    /// `max_tokens`, at [`PRICE`].
    fn worst_case(request: &Value) -> u64 {
        let text = |v: &Value| v.as_str().unwrap_or("").len();
        let messages = request["messages"].as_array().unwrap();
        let schema = request["response_format"]["json_schema"]["schema"].to_string();
        let bytes: usize =
            messages.iter().map(|m| text(&m["content"])).sum::<usize>() + schema.len();
        let input = bytes as u64 + 8 * messages.len() as u64;
        input * 1_000 + MAX_TOKENS * 4_000
    }
}

/// The server's embedding: words hashed into 64 dimensions, so texts sharing words are near.
fn bag_of_words(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 64];
    for word in text.split_whitespace() {
        let h = word
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        v[(h % 64) as usize] += 1.0;
    }
    v
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A node config: an http source, pipeline `p` running `stages` into the store, and the
/// providers `providers` (YAML lines under `ai.providers`) with `budget`.
fn config(providers: &str, budget: &str, stages: &str) -> String {
    format!(
        "ai:\n  providers:\n{providers}  budget: {budget}\n  cache: {{ttl: 0s}}\n\
         sinks: {{db: {{type: store}}}}\npipelines:\n  - name: p\n    stages:\n{stages}    sinks: [db]\n"
    )
}

fn provider(name: &str, url: &str, extra: &str) -> String {
    format!(
        "    {name}: {{api: openai, base_url: \"{url}\", model: gpt-test, max_tokens: {MAX_TOKENS}, \
         api_key_file: key.txt, {PRICE}, retry: {{max_attempts: 1}}{extra}}}\n"
    )
}

async fn post(node: &Node, events: &[Value]) {
    let (status, body) = node
        .post(
            &Value::Array(events.to_vec()).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Pipeline `p`'s outputs once there are `n`.
async fn outputs_of(node: &Node, p: &str, n: usize) -> Vec<Value> {
    eventually(MINUTE, &format!("{n} outputs of {p}"), || async {
        let outputs = node.outputs(p).await;
        (outputs.len() == n).then_some(outputs)
    })
    .await
}

async fn costs(node: &Node, by: &str) -> Value {
    let (status, body) = node.get(&format!("/api/ai/costs?by={by}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The threat-analysis example's shape end to end: http → anomaly → ai → store. Only the
/// anomalies are sent; each analysis is attached to its event, kept, served by
/// `GET /api/analyses/{event_id}` and paid for in `/api/ai/costs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_get_a_threat_analysis_kept_and_served_by_event_id() {
    let server = ModelServer::start().await;
    let stages = "      - {type: anomaly, min_events: 20}\n\
                  \x20     - type: ai\n\
                  \x20       when: {equals: [\"/anomaly/is_anomaly\", true]}\n\
                  \x20       prompt: \"User {{ event.user }} from {{ event.source_ip }}: score {{ event.anomaly.score }}, {{ event.anomaly.reasons | join('; ') }}\"\n";
    let node = Node::start_with_files(
        &config(
            &provider("local", &server.base_url, ""),
            "{daily: 5}",
            stages,
        ),
        &[("key.txt", "sk-test-not-a-real-key\n")],
    );
    let mut events = crate::anomaly::events("ada", 0, 30, false);
    events.extend(crate::anomaly::events("ada", 30, 33, true));
    post(&node, &events).await;
    let outputs = outputs_of(&node, "p", 33).await;
    let analysed: Vec<&Value> = outputs
        .iter()
        .filter(|o| o["data"].get("analysis").is_some())
        .collect();
    let anomalies = outputs
        .iter()
        .filter(|o| o["data"]["anomaly"]["is_anomaly"] == true)
        .count();
    assert!(anomalies >= 1, "the odd events are anomalies");
    assert_eq!(analysed.len(), anomalies, "only anomalies are sent");
    let requests = server.requests();
    assert_eq!(requests.len(), anomalies);
    // The wire format: the key as a bearer token, the schema in `response_format`.
    let (auth, body) = &requests[0];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test-not-a-real-key"));
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["max_tokens"], MAX_TOKENS);
    assert_eq!(body["response_format"]["type"], "json_schema");
    assert_eq!(
        body["response_format"]["json_schema"]["name"],
        "threat_analysis"
    );
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        prompt.starts_with("User ada from 203.0.113.9: score 0."),
        "{prompt}"
    );

    let first = analysed[0];
    assert_eq!(first["data"]["analysis"]["severity"], "HIGH");
    let id = first["id"].as_str().unwrap();
    let (status, kept) = node.get(&format!("/api/analyses/{id}")).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["event_id"], id);
    assert_eq!(kept["pipeline"], "p");
    assert_eq!(kept["provider"], "local");
    assert_eq!(kept["model"], "gpt-test");
    assert_eq!(kept["analysis"], first["data"]["analysis"]);
    assert_eq!(kept["input_tokens"], USAGE.0);
    let (status, _) = node
        .get(&format!(
            "/api/analyses/{}",
            outputs[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404, "a normal event has no analysis");
    let (status, body) = node.get("/api/analyses/not-an-id").await;
    assert_eq!(status, 400, "{body}");

    let by_provider = costs(&node, "provider").await;
    assert_eq!(by_provider["groups"][0]["provider"], "local");
    assert_eq!(
        by_provider["total_nanodollars"],
        REAL_COST * anomalies as u64,
        "settled at the usage's cost, not the reservation: {by_provider}"
    );
    assert_eq!(costs(&node, "pipeline").await["groups"][0]["pipeline"], "p");
    assert_eq!(
        costs(&node, "model").await["groups"][0]["model"],
        "gpt-test"
    );
    let (status, _) = node.get("/api/ai/costs?by=colour").await;
    assert_eq!(status, 400);
    // The key is read from its file and shown nowhere.
    let (_, shown) = node.admin(reqwest::Method::GET, "/admin/config").await;
    assert!(!shown.to_string().contains("sk-test"), "{shown}");
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "colloquium_ai_calls_total{{provider=\"local\",outcome=\"answered\"}} {anomalies}"
        )),
        "{metrics}"
    );
}

/// Fifty calls in flight at once against a budget that affords about half of them, at
/// prices where a call's worst case is ~8× its real cost: the day's spend never passes the
/// budget, and every call it could afford was made (what is left is less than one more
/// call's worst case). Then the spend survives a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_spend_at_most_the_budget_and_every_affordable_call_is_made() {
    let server = ModelServer::start().await;
    let budget: u64 = 10_000_000; // $0.01
    let stages = "      - {type: ai, concurrency: 50, prompt: \"Assess event {{ id }}\"}\n";
    let node = Node::start_with_files(
        &config(
            &provider("local", &server.base_url, ""),
            "{daily: 0.01}",
            stages,
        ),
        &[("key.txt", "k")],
    );
    let events: Vec<Value> = (0..80).map(|i| json!({"n": i})).collect();
    post(&node, &events).await;
    let outputs = outputs_of(&node, "p", 80).await;
    let analysed = outputs
        .iter()
        .filter(|o| o["data"].get("analysis").is_some())
        .count();
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        analysed,
        "each call made was answered and kept"
    );
    let worst = requests
        .iter()
        .map(|(_, body)| ModelServer::worst_case(body))
        .max()
        .unwrap();
    let spent = costs(&node, "pipeline").await["total_nanodollars"]
        .as_u64()
        .unwrap();
    assert_eq!(spent, REAL_COST * analysed as u64);
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(
        budget - spent < worst,
        "another call would have fit: {} left, a call reserves {worst}; {analysed} made",
        budget - spent
    );
    assert!(analysed > 20 && analysed < 80, "{analysed}");
    let today = &costs(&node, "pipeline").await["today"];
    assert_eq!(today["reserved_usd"], 0.0, "no reservation leaked: {today}");
    // The rest went on without an analysis (on_unavailable: pass), counted.
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!("name=\"unavailable\"}} {}", 80 - analysed)),
        "{metrics}"
    );

    let node = node.kill9().restart();
    let after = costs(&node, "pipeline").await;
    assert_eq!(
        after["total_nanodollars"], spent,
        "the day's spend survives SIGKILL"
    );
    post(&node, &[json!({"n": "one more"})]).await;
    eventually(MINUTE, "the 81st output", || async {
        (node.outputs("p").await.len() == 81).then_some(())
    })
    .await;
    assert_eq!(
        server.requests().len(),
        analysed,
        "the budget is still spent after the restart"
    );
}

/// Calls in flight when the node is killed are counted at their reservation after the
/// restart, and made again exactly once each (their events were not committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_at_a_sigkill_are_counted_and_made_again_once() {
    let server = ModelServer::start().await;
    let stages = "      - {type: ai, concurrency: 8, prompt: \"Assess event {{ id }}\"}\n";
    let node = Node::start_with_files(
        &config(
            &provider("local", &server.base_url, ""),
            "{daily: 5}",
            stages,
        ),
        &[("key.txt", "k")],
    );
    server.hold.send_replace(true);
    let events: Vec<Value> = (0..5).map(|i| json!({"n": i})).collect();
    post(&node, &events).await;
    eventually(MINUTE, "5 calls in flight", || async {
        (server.requests().len() == 5).then_some(())
    })
    .await;
    let reserved: u64 = server
        .requests()
        .iter()
        .map(|(_, body)| ModelServer::worst_case(body))
        .sum();
    let stopped = node.kill9();
    server.hold.send_replace(false);
    let node = stopped.restart();
    let outputs = outputs_of(&node, "p", 5).await;
    assert!(
        outputs
            .iter()
            .all(|o| o["data"]["analysis"]["severity"] == "HIGH")
    );
    assert_eq!(
        server.requests().len(),
        10,
        "each call in flight made again once"
    );
    let spent = costs(&node, "pipeline").await["total_nanodollars"]
        .as_u64()
        .unwrap();
    assert_eq!(
        spent,
        reserved + 5 * REAL_COST,
        "lost calls count at their reservation"
    );
}

/// The first provider fails (500s): its breaker opens and the second answers. With every
/// provider down, `on_unavailable: pass` lets events through without an analysis and
/// `on_unavailable: dlq` dead-letters them as `provider_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_second_provider_and_degrading_both_ways_when_all_are_down() {
    let down = ModelServer::start().await;
    down.status.store(500, Ordering::Relaxed);
    let up = ModelServer::start().await;
    let breaker = ", breaker: {failure_threshold: 2, cool_down: 1h}";
    let providers =
        provider("first", &down.base_url, breaker) + &provider("second", &up.base_url, breaker);
    let stages =
        "      - {type: ai, provider: first, concurrency: 1, prompt: \"Assess {{ id }}\"}\n";
    let node = Node::start_with_files(
        &config(&providers, "{daily: 5}", stages),
        &[("key.txt", "k")],
    );
    let events: Vec<Value> = (0..6).map(|i| json!({"n": i})).collect();
    post(&node, &events).await;
    let outputs = outputs_of(&node, "p", 6).await;
    assert!(
        outputs
            .iter()
            .all(|o| o["data"]["analysis"]["severity"] == "HIGH")
    );
    assert_eq!(
        down.requests().len(),
        2,
        "the breaker opened after two failures"
    );
    assert_eq!(up.requests().len(), 6);
    let by_provider = costs(&node, "provider").await;
    assert_eq!(
        by_provider["groups"].as_array().unwrap().len(),
        1,
        "{by_provider}"
    );
    let (_, health) = node.get("/health").await;
    assert_eq!(
        health["components"]["ai"]["providers"]["first"], "open",
        "{health}"
    );
    assert_eq!(health["components"]["ai"]["status"], "degraded", "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains("colloquium_ai_breaker_state{provider=\"first\"} 2"),
        "{metrics}"
    );
    drop(node);

    // Both down: pass, then dlq.
    up.status.store(503, Ordering::Relaxed);
    for (policy, stored, dead_lettered) in [("pass", 3, 0), ("dlq", 0, 3)] {
        let stages = format!(
            "      - {{type: ai, on_unavailable: {policy}, prompt: \"Assess {{{{ id }}}}\"}}\n"
        );
        let node = Node::start_with_files(
            &config(&providers, "{daily: 5}", &stages),
            &[("key.txt", "k")],
        );
        let events: Vec<Value> = (0..3).map(|i| json!({"n": i})).collect();
        post(&node, &events).await;
        eventually(MINUTE, "every event handled", || async {
            let done = node.outputs("p").await.len() + node.dead_letters("limit=100").await.len();
            (done == 3).then_some(())
        })
        .await;
        let outputs = node.outputs("p").await;
        assert_eq!(outputs.len(), stored, "{policy}");
        assert!(outputs.iter().all(|o| o["data"].get("analysis").is_none()));
        let dead = node.dead_letters("limit=100").await;
        assert_eq!(dead.len(), dead_lettered, "{policy}");
        assert!(
            dead.iter().all(|d| d["reason"] == "provider_unavailable"),
            "{dead:?}"
        );
    }
}

/// An answer that breaks the schema is asked again once with the validation error in the
/// prompt; one that breaks it twice is dead-lettered as `ai_invalid`. Identical prompts in a
/// burst cost once through the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_answers_are_asked_again_once_and_identical_prompts_cost_once() {
    let server = ModelServer::start().await;
    server.set_mode(Mode::InvalidOnce);
    let stages = "      - {type: ai, prompt: \"Assess {{ event.kind }}\", concurrency: 8}\n";
    let cached = config(
        &provider("local", &server.base_url, ""),
        "{daily: 5}",
        stages,
    )
    .replace("cache: {ttl: 0s}", "cache: {ttl: 10m, max_size: 1MiB}");
    let node = Node::start_with_files(&cached, &[("key.txt", "k")]);
    post(&node, &[json!({"kind": "a"})]).await;
    let outputs = outputs_of(&node, "p", 1).await;
    assert_eq!(outputs[0]["data"]["analysis"]["severity"], "HIGH");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "asked again once");
    let again = requests[1].1["messages"][1]["content"].as_str().unwrap();
    assert!(
        again.contains("was not valid") && again.contains("severity"),
        "{again}"
    );

    // Twenty identical prompts at once: one call (the cache's single flight).
    server.set_mode(Mode::Valid);
    let events: Vec<Value> = (0..20).map(|_| json!({"kind": "b"})).collect();
    post(&node, &events).await;
    let outputs = outputs_of(&node, "p", 21).await;
    assert!(
        outputs
            .iter()
            .all(|o| o["data"]["analysis"]["severity"] == "HIGH")
    );
    assert_eq!(server.requests().len(), 3, "identical prompts cost once");
    let spent = costs(&node, "pipeline").await["total_nanodollars"]
        .as_u64()
        .unwrap();
    assert_eq!(spent, 3 * REAL_COST);
    let (_, metrics) = node.get_text("/metrics").await;
    assert!(
        metrics.contains("colloquium_ai_cache_total{result=\"hit\"} 19"),
        "{metrics}"
    );

    server.set_mode(Mode::Invalid);
    post(&node, &[json!({"kind": "c"})]).await;
    let dead = eventually(MINUTE, "a dead letter", || async {
        let dead = node.dead_letters("limit=10").await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0]["reason"], "ai_invalid", "{dead:?}");
    assert_eq!(server.requests().len(), 5);
}

/// A config that names a provider that does not exist, or a key file that is not there, is
/// refused with the key path; a template that does not parse too.
#[test]
fn bad_ai_configs_are_refused_at_their_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "ai:\n  providers:\n    x: {api: openai, model: m, api_key_file: missing.txt}\n",
            "ai.providers.x.api_key_file",
        ),
        (
            "ai:\n  providers:\n    x: {api: openai, model: m}\npipelines:\n  - name: p\n    stages:\n      - {type: ai, provider: y, prompt: hi}\n",
            "pipelines[0].stages[0].provider",
        ),
        (
            "ai:\n  providers:\n    x: {api: openai, model: m}\npipelines:\n  - name: p\n    stages:\n      - {type: ai, prompt: \"{{ unclosed\"}\n",
            "pipelines[0].stages[0].prompt",
        ),
        (
            "pipelines:\n  - name: p\n    stages:\n      - {type: ai, prompt: hi}\n",
            "needs a provider",
        ),
        (
            "ai:\n  providers:\n    x: {api: openai, model: m, price: {input: -1}}\n",
            "not an amount in USD",
        ),
        (
            "ai:\n  providers:\n    x: {api: openai, model: m}\n  budget: {per_pipeline: {nope: 1}}\n",
            "ai.budget.per_pipeline.nope",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let (code, out, err) =
            crate::harness::run_cli(&["validate", "-c", path.to_str().unwrap()], None);
        assert_ne!(code, 0, "{yaml}");
        assert!(
            format!("{out}{err}").contains(expected),
            "{yaml}\nexpected {expected}:\n{out}{err}"
        );
    }
}

/// `embed` keeps a vector per event and the node finds similar events by id and by text,
/// through an embedding model on the local server; the index comes back after a SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn similar_events_are_found_by_id_and_by_text_and_survive_a_restart() {
    let server = ModelServer::start().await;
    let stages =
        "      - {type: embed, id: vectors, provider: local, text: \"{{ event.text }}\"}\n";
    let node = Node::start_with_files(
        &config(
            &provider("local", &server.base_url, ""),
            "{daily: 5}",
            stages,
        ),
        &[("key.txt", "k")],
    );
    let topics = [
        "failed login for admin from unknown country",
        "disk full on database host volume",
        "payment card declined at checkout",
    ];
    let events: Vec<Value> = (0..15)
        .map(|i| json!({"topic": i % 3, "text": format!("{} case{}", topics[i % 3], i)}))
        .collect();
    post(&node, &events).await;
    let outputs = outputs_of(&node, "p", 15).await;
    let login = outputs.iter().find(|o| o["data"]["topic"] == 0).unwrap();
    let id = login["id"].as_str().unwrap();
    let check = |body: &Value, n: usize| {
        let similar = body["similar"].as_array().unwrap();
        assert_eq!(similar.len(), n, "{body}");
        assert!(
            similar.iter().all(|s| s["event"]["data"]["topic"] == 0),
            "only the login events are near: {body}"
        );
        assert_eq!(body["method"], "exact");
    };
    let (status, body) = node.get(&format!("/api/events/{id}/similar?k=4")).await;
    assert_eq!(status, 200, "{body}");
    check(&body, 4);
    assert!(
        body["similar"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["id"] != id)
    );
    let by_text = |node: &Node| {
        let request = node
            .client
            .post(node.url("/api/events/similar"))
            .header("content-type", "application/json")
            .body(json!({"text": "failed login for admin", "k": 5}).to_string())
            .send();
        async move {
            let response = request.await.unwrap();
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let (status, body) = by_text(&node).await;
    assert_eq!(status, 200, "{body}");
    check(&body, 5);
    let (status, kept) = node
        .get("/api/results/p/vectors/embeddings?limit=100")
        .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["results"].as_array().map(Vec::len), Some(15), "{kept}");
    for bad in [
        "/api/events/{id}/similar?k=0",
        "/api/events/{id}/similar?k=abc",
    ] {
        let (status, _) = node.get(&bad.replace("{id}", id)).await;
        assert_eq!(status, 400, "{bad}");
    }

    let node = node.kill9().restart();
    let (status, body) = node.get(&format!("/api/events/{id}/similar?k=4")).await;
    assert_eq!(status, 200, "{body}");
    check(&body, 4);
}

/// `requests_per_minute` paces the calls (a burst of 60, then one a second: the last 20 take
/// 20 s), and the wait is the AI pipeline's alone: a second pipeline on the same events has stored them all while
/// the first still waits for permits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_pace_the_ai_stage_and_no_other_pipeline_waits() {
    let server = ModelServer::start().await;
    let yaml = format!(
        "ai:\n  providers:\n{}  cache: {{ttl: 0s}}\n\
         sinks: {{db: {{type: store}}}}\n\
         pipelines:\n  - name: slow\n    stages:\n      - {{type: ai, concurrency: 64, prompt: \"Assess {{{{ id }}}}\"}}\n    sinks: [db]\n\
         \x20 - name: fast\n    sinks: [db]\n",
        provider("local", &server.base_url, ", requests_per_minute: 60")
    );
    let node = Node::start_with_files(&yaml, &[("key.txt", "k")]);
    let events: Vec<Value> = (0..80).map(|i| json!({"n": i})).collect();
    post(&node, &events).await;
    eventually(MINUTE, "the other pipeline's 80 outputs", || async {
        (node.outputs("fast").await.len() == 80).then_some(())
    })
    .await;
    let waiting = node.outputs("slow").await.len();
    assert!(
        waiting < 80,
        "the AI pipeline was still pacing: {waiting} done"
    );
    let made = server.requests().len();
    assert!(
        made < 80,
        "paced: a burst of 60, then one a second: {made} made"
    );
    eventually(MINUTE, "the AI pipeline's 80 outputs", || async {
        (node.outputs("slow").await.len() == 80).then_some(())
    })
    .await;
    assert_eq!(server.requests().len(), 80);
}
