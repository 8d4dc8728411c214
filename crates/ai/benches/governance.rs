//! The governance path of one AI call on one core, without the network, as the `ai` stage and
//! the gateway run it: the prompt template rendered from an event, the prompt's tokens counted
//! (OpenAI's tokenizer for `gpt-4o-mini`; the byte ceiling for other models), the cache key
//! built and looked up (a miss, as for a new prompt), the breaker's check, the rate limiters'
//! permits, the budget's reservation (written to the store), its settlement (written), the
//! breaker's success. Twice: the store's WAL synced on every write (`storage.sync: true`, the
//! default) and not (a reservation then survives a SIGKILL but not a power cut). The parts are
//! also timed alone.
//!
//! `taskset -c 1 cargo bench -p colloquium-ai --bench governance`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use colloquium_ai::budget::Limits;
use colloquium_ai::provider::{AnswerSchema, Api, TokenCounter};
use colloquium_ai::{Breaker, BreakerConfig, ChatRequest, Ledger, Nanos, Price};
use colloquium_event::Timestamp;
use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use serde_json::json;

fn bench(c: &mut Criterion) {
    let event = json!({"user": "ada", "source_ip": "203.0.113.9", "event_type": "auth_attempt",
        "status": "failed", "anomaly": {"score": 0.91, "is_anomaly": true,
        "reasons": ["new IP", "new location", "odd hour"]}});
    let mut templates = minijinja::Environment::new();
    templates
        .add_template_owned(
            "prompt",
            "User {{ event.user }} from {{ event.source_ip }}: {{ event.event_type }} \
             ({{ event.status }}), anomaly score {{ event.anomaly.score }} because \
             {{ event.anomaly.reasons | join('; ') }}. Assess the threat."
                .to_owned(),
        )
        .unwrap();
    let render = || {
        let context = minijinja::context! { event => minijinja::Value::from_serialize(&event) };
        templates
            .get_template("prompt")
            .unwrap()
            .render(context)
            .unwrap()
    };
    let system =
        "You are a security analyst. Assess the event you are given and answer with JSON only.";
    let schema = colloquium_ai::stage::threat_analysis_schema();
    let request = ChatRequest {
        system: Some(system.into()),
        user: render(),
        schema: Some(std::sync::Arc::new(AnswerSchema::new(
            "threat_analysis",
            schema,
        ))),
    };
    let price = Price {
        input_per_million: Nanos::parse_usd("0.15").unwrap(),
        output_per_million: Nanos::parse_usd("0.6").unwrap(),
    };
    let tiktoken = TokenCounter::for_model(Api::Openai, "gpt-4o-mini");
    let estimate = TokenCounter::for_model(Api::Openai, "llama-3.1-8b");
    let cache: moka::future::Cache<String, String> = moka::future::Cache::builder()
        .max_capacity(16 << 20)
        .time_to_live(Duration::from_secs(600))
        .build();
    let cache_key = |request: &ChatRequest| {
        format!(
            "openai\u{1}gpt-4o-mini\u{1}500\u{1}None\u{1}{}\u{1}{}\u{1}{}",
            request.system.as_deref().unwrap_or(""),
            request.user,
            request.schema.as_ref().map_or("", |s| s.text())
        )
    };
    let huge = NonZeroU32::new(u32::MAX).unwrap();
    let requests = RateLimiter::direct(Quota::per_minute(huge));
    let tokens = RateLimiter::direct(Quota::per_minute(huge));

    let mut group = c.benchmark_group("governance");
    group.bench_function("template", |b| b.iter(render));
    group.bench_function("tokens_tiktoken", |b| b.iter(|| tiktoken.count(&request)));
    group.bench_function("tokens_estimate", |b| b.iter(|| estimate.count(&request)));
    group.bench_function("cache_lookup", |b| {
        b.iter(|| futures::executor::block_on(cache.get(&cache_key(&request))))
    });
    for sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let metrics = colloquium_storage::StorageMetrics::register(
            &colloquium_telemetry::MetricsRegistry::default(),
        );
        let options = colloquium_storage::StoreOptions {
            sync,
            ..colloquium_storage::StoreOptions::new(dir.path())
        };
        let store = colloquium_storage::Store::open(options, metrics).unwrap();
        let limits = Limits {
            daily: Some(Nanos::parse_usd("1000000").unwrap()),
            auto_stop: true,
            ..Limits::default()
        };
        let ledger = Ledger::open(store, limits, Timestamp::now).unwrap();
        let mut breaker = Breaker::new(BreakerConfig {
            cool_down: Duration::from_secs(30),
            ..BreakerConfig::default()
        });
        let account = colloquium_storage::Account {
            pipeline: "threats".into(),
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
        };
        let synced = if sync { "wal_synced" } else { "wal_unsynced" };
        group.bench_function(format!("reservation_{synced}"), |b| {
            b.iter(|| {
                let reservation =
                    futures::executor::block_on(ledger.reserve(&account, Nanos(1_000))).unwrap();
                reservation.settle(Nanos(500));
            });
        });
        for (counter, name) in [(&tiktoken, "tiktoken"), (&estimate, "estimate")] {
            group.bench_function(format!("call_{name}_{synced}"), |b| {
                b.iter(|| {
                    let request = ChatRequest {
                        system: Some(system.into()),
                        user: render(),
                        schema: request.schema.clone(),
                    };
                    let input = counter.count(&request);
                    assert!(futures::executor::block_on(cache.get(&cache_key(&request))).is_none());
                    assert!(breaker.allow(Instant::now()));
                    assert!(requests.check().is_ok());
                    let n = NonZeroU32::new(u32::try_from(input + 500).unwrap()).unwrap();
                    assert!(matches!(tokens.check_n(n), Ok(Ok(()))));
                    let worst = price.cost(input, 500);
                    let reservation =
                        futures::executor::block_on(ledger.reserve(&account, worst)).unwrap();
                    reservation.settle(price.cost(60, 120));
                    breaker.success();
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
