//! The governed call path against a local server on 127.0.0.1 that speaks the OpenAI and
//! Anthropic wire formats (test code only, never a provider of the product): it records each
//! request and answers as scripted — slowly, with 429 and `retry-after`, with 500s, with a 400,
//! with malformed JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use colloquium_ai::breaker::BreakerConfig;
use colloquium_ai::budget::Limits;
use colloquium_ai::provider::AnswerSchema;
use colloquium_ai::retry::RetryPolicy;
use colloquium_ai::{
    Api, ChatRequest, Choice, Gateway, GatewayError, Governance, Governed, Ledger, Nanos, Price,
    Provider, ProviderSpec, Secret,
};
use colloquium_event::Timestamp;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Clone)]
enum Answer {
    /// A well-formed answer with this text and usage (input, output).
    Ok(&'static str, u64, u64),
    /// An HTTP status with headers and a body.
    Status(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// A 200 that is not the API's shape.
    Garbage,
    /// A 200 of 9 MiB.
    Huge,
    /// Waits this long first.
    Slow(Duration, Box<Answer>),
}

#[derive(Default)]
struct Mock {
    api: Option<Api>,
    script: VecDeque<Answer>,
    /// Each request: its headers (lowercase name, value) and JSON body.
    seen: Vec<(Vec<(String, String)>, Value)>,
}

type Shared = Arc<Mutex<Mock>>;

async fn answer(State(mock): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (api, next) = {
        let mut m = mock.lock().unwrap();
        let headers = headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        m.seen.push((
            headers,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        ));
        (
            m.api.unwrap(),
            m.script.pop_front().unwrap_or(Answer::Ok("{}", 1, 1)),
        )
    };
    respond(api, next).await
}

fn respond(api: Api, answer: Answer) -> futures::future::BoxFuture<'static, Response> {
    Box::pin(async move {
        match answer {
            Answer::Slow(wait, then) => {
                tokio::time::sleep(wait).await;
                respond(api, *then).await
            }
            Answer::Garbage => (StatusCode::OK, "{\"choices\": 7").into_response(),
            Answer::Huge => (StatusCode::OK, " ".repeat(9 << 20)).into_response(),
            Answer::Status(status, headers, body) => {
                let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
                for (name, value) in headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
            Answer::Ok(text, input, output) => {
                let body = match api {
                    Api::Openai => json!({
                        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
                    }),
                    Api::Anthropic => json!({
                        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                        "content": [{"type": "text", "text": text}],
                        "stop_reason": "end_turn",
                        "usage": {"input_tokens": input, "output_tokens": output},
                    }),
                };
                axum::Json(body).into_response()
            }
        }
    })
}

/// A mock provider of `api` on 127.0.0.1, answering `script` in order.
async fn mock(api: Api, script: Vec<Answer>) -> (SocketAddr, Shared) {
    let shared: Shared = Arc::new(Mutex::new(Mock {
        api: Some(api),
        script: script.into(),
        seen: Vec::new(),
    }));
    let app = Router::new()
        .route("/v1/chat/completions", post(answer))
        .route("/v1/messages", post(answer))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, shared)
}

fn provider(name: &str, api: Api, addr: SocketAddr, timeout: Duration) -> Provider {
    let base_url = match api {
        Api::Openai => format!("http://{addr}/v1"),
        Api::Anthropic => format!("http://{addr}"),
    };
    Provider::new(ProviderSpec {
        name: name.into(),
        api,
        base_url,
        model: "test-model".into(),
        max_tokens: 100,
        temperature: Some(0.0),
        timeout,
        key: Some(Secret::new("sk-test-123")),
    })
    .unwrap()
}

fn governance() -> Governance {
    Governance {
        price: Price {
            input_per_million: Nanos::parse_usd("1").unwrap(),
            output_per_million: Nanos::parse_usd("4").unwrap(),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            max_wait: Duration::from_secs(2),
        },
        breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
            half_open_probes: 1,
        },
        requests_per_minute: None,
        tokens_per_minute: None,
    }
}

fn ledger(daily: &str) -> (tempfile::TempDir, Ledger) {
    ledger_of(Nanos::parse_usd(daily).unwrap())
}

fn ledger_of(daily: Nanos) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = colloquium_storage::StorageMetrics::register(
        &colloquium_telemetry::MetricsRegistry::default(),
    );
    let options = colloquium_storage::StoreOptions {
        sync: false,
        ..colloquium_storage::StoreOptions::new(dir.path())
    };
    let store = colloquium_storage::Store::open(options, metrics).unwrap();
    let limits = Limits {
        daily: Some(daily),
        auto_stop: true,
        ..Limits::default()
    };
    (dir, Ledger::open(store, limits, Timestamp::now).unwrap())
}

/// The providers in the order given (no name matches).
fn in_order() -> Choice {
    Choice::Named(String::new())
}

fn request() -> ChatRequest {
    ChatRequest {
        system: Some("You analyse security events.".into()),
        user: "User ada logged in from 203.0.113.9 at 03:00.".into(),
        schema: Some(Arc::new(AnswerSchema::new(
            "threat_analysis",
            json!({"type": "object", "required": ["severity"]}),
        ))),
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn openai_and_anthropic_requests_are_well_formed_and_usage_is_charged() {
    let (_dir, ledger) = ledger("10");
    for api in [Api::Openai, Api::Anthropic] {
        let (addr, mock) = mock(api, vec![Answer::Ok("{\"severity\": \"HIGH\"}", 1_000, 50)]).await;
        let gateway = Gateway::new(
            vec![Arc::new(Governed::new(
                provider("p", api, addr, Duration::from_secs(5)),
                governance(),
            ))],
            ledger.clone(),
        );
        let answered = gateway.chat("pipe", &in_order(), &request()).await.unwrap();
        assert_eq!(answered.answer.text, "{\"severity\": \"HIGH\"}");
        // 1,000 in at $1/M and 50 out at $4/M: $0.0012.
        assert_eq!(answered.cost, Nanos::parse_usd("0.0012").unwrap());
        let seen = &mock.lock().unwrap().seen;
        let (headers, body) = &seen[0];
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["max_tokens"], 100);
        match api {
            Api::Openai => {
                assert_eq!(header(headers, "authorization"), Some("Bearer sk-test-123"));
                assert_eq!(body["messages"][0]["role"], "system");
                assert_eq!(body["response_format"]["type"], "json_schema");
                assert_eq!(
                    body["response_format"]["json_schema"]["schema"]["required"][0],
                    "severity"
                );
            }
            Api::Anthropic => {
                assert_eq!(header(headers, "x-api-key"), Some("sk-test-123"));
                assert_eq!(header(headers, "anthropic-version"), Some("2023-06-01"));
                assert!(header(headers, "authorization").is_none());
                assert_eq!(body["messages"][0]["role"], "user");
                assert!(body["system"].as_str().unwrap().contains("\"severity\""));
            }
        }
    }
    assert_eq!(
        ledger.today().spent["pipe"],
        Nanos::parse_usd("0.0024").unwrap()
    );
}

#[tokio::test]
async fn retries_honour_retry_after_and_stop_on_a_request_error() {
    let (_dir, ledger) = ledger("10");
    let (addr, mock) = mock(
        Api::Openai,
        vec![
            Answer::Status(429, vec![("retry-after-ms", "300")], "slow down"),
            Answer::Status(503, vec![], "overloaded"),
            Answer::Ok("{}", 10, 10),
            // The next call: a 400 is the request's fault: no retry, no failover.
            Answer::Status(400, vec![], "{\"error\": \"bad schema\"}"),
        ],
    )
    .await;
    let gateway = Gateway::new(
        vec![Arc::new(Governed::new(
            provider("p", Api::Openai, addr, Duration::from_secs(5)),
            governance(),
        ))],
        ledger.clone(),
    );
    let answered = gateway.chat("pipe", &in_order(), &request()).await.unwrap();
    assert_eq!(answered.answer.text, "{}");
    assert_eq!(mock.lock().unwrap().seen.len(), 3);
    let refused = gateway.chat("pipe", &in_order(), &request()).await;
    match refused {
        Err(GatewayError::Refused(error)) => {
            assert!(error.to_string().contains("HTTP 400"), "{error}");
            assert!(!error.to_string().contains("sk-test"), "no key in errors");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(mock.lock().unwrap().seen.len(), 4, "not retried");
    assert!(ledger.today().reserved.is_empty(), "released");
}

#[tokio::test]
async fn a_failing_provider_opens_its_breaker_and_calls_fail_over() {
    let (_dir, ledger) = ledger("10");
    let fail = || Answer::Status(500, vec![], "down");
    let (bad, bad_mock) = mock(
        Api::Openai,
        vec![fail(), fail(), fail(), fail(), fail(), fail()],
    )
    .await;
    let (good, good_mock) = mock(Api::Anthropic, vec![]).await;
    let first = Arc::new(Governed::new(
        provider("flaky", Api::Openai, bad, Duration::from_secs(5)),
        governance(),
    ));
    let gateway = Gateway::new(
        vec![
            first.clone(),
            Arc::new(Governed::new(
                provider("steady", Api::Anthropic, good, Duration::from_secs(5)),
                governance(),
            )),
        ],
        ledger.clone(),
    );
    // Two calls: each fails on `flaky` after its 3 attempts, and is answered by `steady`.
    for _ in 0..2 {
        let answered = gateway.chat("pipe", &in_order(), &request()).await.unwrap();
        assert_eq!(answered.provider, "steady");
    }
    assert_eq!(bad_mock.lock().unwrap().seen.len(), 6);
    assert_eq!(first.breaker_state().as_str(), "open");
    // Open: the third call goes straight to `steady`, `flaky` sees nothing.
    gateway.chat("pipe", &in_order(), &request()).await.unwrap();
    assert_eq!(bad_mock.lock().unwrap().seen.len(), 6);
    assert_eq!(good_mock.lock().unwrap().seen.len(), 3);
    assert!(ledger.today().reserved.is_empty());
}

#[tokio::test]
async fn timeouts_and_malformed_answers_fail_without_charging() {
    let (_dir, ledger) = ledger("10");
    let slow = || Answer::Slow(Duration::from_millis(500), Box::new(Answer::Ok("{}", 1, 1)));
    let (addr, mock) = mock(
        Api::Openai,
        vec![slow(), slow(), slow(), Answer::Garbage, Answer::Huge],
    )
    .await;
    let governed = Governed::new(
        provider("p", Api::Openai, addr, Duration::from_millis(100)),
        Governance {
            breaker: BreakerConfig {
                failure_threshold: 10,
                ..BreakerConfig::default()
            },
            ..governance()
        },
    );
    let gateway = Gateway::new(vec![Arc::new(governed)], ledger.clone());
    let timed_out = gateway.chat("pipe", &in_order(), &request()).await;
    assert!(
        matches!(&timed_out, Err(GatewayError::Unavailable(r)) if r[0].contains("did not answer within")),
        "{timed_out:?}"
    );
    let garbage = gateway.chat("pipe", &in_order(), &request()).await;
    assert!(
        matches!(&garbage, Err(GatewayError::Refused(e)) if e.to_string().contains("not JSON")),
        "{garbage:?}"
    );
    let huge = gateway.chat("pipe", &in_order(), &request()).await;
    assert!(
        matches!(&huge, Err(GatewayError::Refused(e)) if e.to_string().contains("larger than 8 MiB")),
        "{huge:?}"
    );
    assert_eq!(
        mock.lock().unwrap().seen.len(),
        5,
        "3 timed-out attempts, 1 malformed, 1 too large"
    );
    let today = ledger.today();
    assert!(today.spent.is_empty() && today.reserved.is_empty());
}

#[tokio::test]
async fn the_budget_refuses_past_the_day_and_a_cheaper_provider_still_fits() {
    // The budget fits `dear`'s worst case (the estimated prompt and 100 answer tokens at $1/M
    // in, $4/M out) and $0.000004 more; `cheap` costs a thousandth of `dear`.
    let input = colloquium_ai::provider::estimate_tokens(&request());
    let worst = governance().price.cost(input, 100);
    let (_dir, ledger) = ledger_of(worst.plus(Nanos(4_000)));
    let (dear, dear_mock) = mock(Api::Openai, vec![]).await;
    let (cheap, _) = mock(Api::Openai, vec![]).await;
    let thousandth = Price {
        input_per_million: Nanos::parse_usd("0.001").unwrap(),
        output_per_million: Nanos::parse_usd("0.004").unwrap(),
    };
    let gateway = Gateway::new(
        vec![
            Arc::new(Governed::new(
                provider("dear", Api::Openai, dear, Duration::from_secs(5)),
                governance(),
            )),
            Arc::new(Governed::new(
                provider("cheap", Api::Openai, cheap, Duration::from_secs(5)),
                Governance {
                    price: thousandth,
                    ..governance()
                },
            )),
        ],
        ledger.clone(),
    );
    // Answers use (1, 1) tokens: the first call settles at $0.000005 on `dear`, which leaves
    // less than `dear`'s worst case.
    assert_eq!(
        gateway
            .chat("pipe", &in_order(), &request())
            .await
            .unwrap()
            .provider,
        "dear"
    );
    // `dear`'s worst case no longer fits; `cheap`'s does.
    assert_eq!(
        gateway
            .chat("pipe", &in_order(), &request())
            .await
            .unwrap()
            .provider,
        "cheap"
    );
    assert_eq!(dear_mock.lock().unwrap().seen.len(), 1);
    let cheap_only = Gateway::new(
        vec![Arc::new(Governed::new(
            provider("dear", Api::Openai, dear, Duration::from_secs(5)),
            governance(),
        ))],
        ledger.clone(),
    );
    assert!(matches!(
        cheap_only.chat("pipe", &in_order(), &request()).await,
        Err(GatewayError::Budget(_))
    ));
}

/// `best` ranks by price, latency and success: the cheap provider first, and the dear one
/// when the cheap one keeps failing; a named provider goes first whatever its score.
#[tokio::test]
async fn best_prefers_the_cheap_provider_until_it_fails() {
    let (_dir, ledger) = ledger("10");
    let (dear, dear_mock) = mock(Api::Openai, vec![]).await;
    let fail = || Answer::Status(500, vec![], "down");
    let (cheap, cheap_mock) = mock(
        Api::Openai,
        std::iter::once(Answer::Ok("{}", 1, 1))
            .chain(std::iter::repeat_with(fail).take(10))
            .collect(),
    )
    .await;
    let cheap_price = Governance {
        price: Price {
            input_per_million: Nanos::parse_usd("0.01").unwrap(),
            output_per_million: Nanos::parse_usd("0.04").unwrap(),
        },
        retry: RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        },
        breaker: BreakerConfig {
            failure_threshold: 100,
            ..BreakerConfig::default()
        },
        ..governance()
    };
    let gateway = Gateway::new(
        vec![
            Arc::new(Governed::new(
                provider("dear", Api::Openai, dear, Duration::from_secs(5)),
                governance(),
            )),
            Arc::new(Governed::new(
                provider("cheap", Api::Openai, cheap, Duration::from_secs(5)),
                cheap_price,
            )),
        ],
        ledger,
    );
    let answered = gateway
        .chat("pipe", &Choice::Best, &request())
        .await
        .unwrap();
    assert_eq!(answered.provider, "cheap");
    let named = gateway
        .chat("pipe", &Choice::Named("dear".into()), &request())
        .await
        .unwrap();
    assert_eq!(named.provider, "dear");
    // `cheap` fails (each failure fails over to `dear`) until its success rate ranks it after
    // `dear`, which is then asked first (its breaker, set high, stays closed).
    let mut rounds = 0;
    loop {
        let tried = cheap_mock.lock().unwrap().seen.len();
        let answered = gateway
            .chat("pipe", &Choice::Best, &request())
            .await
            .unwrap();
        assert_eq!(answered.provider, "dear");
        if cheap_mock.lock().unwrap().seen.len() == tried {
            break;
        }
        rounds += 1;
        assert!(rounds < 10, "the failing provider never dropped back");
    }
    assert!(
        rounds >= 2,
        "one failure is not enough to drop back: {rounds}"
    );
    assert_eq!(cheap_mock.lock().unwrap().seen.len(), 1 + rounds);
    assert_eq!(dear_mock.lock().unwrap().seen.len(), 2 + rounds);
}

#[tokio::test]
async fn a_call_larger_than_a_minute_of_tokens_is_passed_over() {
    let (_dir, ledger) = ledger("10");
    let (addr, mock) = mock(Api::Openai, vec![]).await;
    let gateway = Gateway::new(
        vec![Arc::new(Governed::new(
            provider("p", Api::Openai, addr, Duration::from_secs(5)),
            Governance {
                // The request's ~40 prompt tokens and 100 answer tokens are more than this.
                tokens_per_minute: NonZeroU32::new(50),
                ..governance()
            },
        ))],
        ledger,
    );
    let result = gateway.chat("pipe", &in_order(), &request()).await;
    assert!(
        matches!(&result, Err(GatewayError::Unavailable(r)) if r[0].contains("over tokens_per_minute")),
        "{result:?}"
    );
    assert!(mock.lock().unwrap().seen.is_empty());
}
