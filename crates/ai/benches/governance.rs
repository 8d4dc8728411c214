//! The governance path of one AI call on one core, without the network: the breaker's check,
//! the prompt's token estimate, the worst-case price, the budget's reservation (written to the
//! store), its settlement (written), the breaker's success. Twice: the store's WAL synced on
//! every write (`storage.sync: true`, the default) and not (a reservation then survives a
//! SIGKILL but not a power cut).
//!
//! `cargo bench -p colloquium-ai --bench governance`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use colloquium_ai::budget::Limits;
use colloquium_ai::provider::estimate_tokens;
use colloquium_ai::{Breaker, BreakerConfig, ChatRequest, Ledger, Nanos, Price};
use colloquium_event::Timestamp;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let request = ChatRequest {
        system: Some("You analyse security events. Answer as JSON.".into()),
        user: "User ada logged in from 203.0.113.9 at 03:00 UTC, a new country for them; \
               score 0.91 (new IP, new location, odd hour)."
            .into(),
        schema: None,
    };
    let price = Price {
        input_per_million: Nanos::parse_usd("2.5").unwrap(),
        output_per_million: Nanos::parse_usd("10").unwrap(),
    };
    let mut group = c.benchmark_group("governance");
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
        let name = if sync {
            "call_wal_synced"
        } else {
            "call_wal_unsynced"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                assert!(breaker.allow(Instant::now()));
                let worst = price.cost(estimate_tokens(&request), 500);
                let reservation =
                    futures::executor::block_on(ledger.reserve(&account, worst)).unwrap();
                reservation.settle(price.cost(60, 120));
                breaker.success();
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
