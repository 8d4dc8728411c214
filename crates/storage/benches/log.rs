//! Event log: record encoding, and batch appends through the group-commit writer into RocksDB
//! (fsync on and off). `cargo bench -p colloquium-storage --bench log`
// A benchmark that cannot set up should stop loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use colloquium_event::{Event, IdGenerator, Metadata, Timestamp};
use colloquium_storage::{StorageMetrics, Store, StoreOptions, log};
use colloquium_telemetry::MetricsRegistry;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn events(ids: &IdGenerator, n: usize) -> Vec<Event> {
    let now = Timestamp::now();
    ids.next_ids(now, n)
        .into_iter()
        .enumerate()
        .map(|(i, id)| Event {
            id,
            timestamp: now,
            ingest_time: now,
            data: json!({"user": format!("user-{}", i % 1000), "action": "checkout",
                         "amount": 12.5, "items": ["sku-1", "sku-2"], "region": "eu-west", "seq": i})
            .as_object()
            .cloned()
            .unwrap_or_default(),
            metadata: Metadata::new("http", "default"),
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let batch = events(&IdGenerator::default(), 1000);
    let mut group = c.benchmark_group("log::encode");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_events", |b| {
        b.iter(|| {
            for event in black_box(&batch) {
                let _ = black_box(log::encode(event));
            }
        })
    });
    group.finish();
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("Store::append");
    for sync in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = StoreOptions {
            sync,
            ..StoreOptions::new(dir.path())
        };
        let store = Store::open(
            options,
            StorageMetrics::register(&MetricsRegistry::default()),
        )
        .expect("open store");
        let ids = IdGenerator::default();
        for size in [1usize, 1000] {
            group.throughput(Throughput::Elements(size as u64));
            let name = format!("batch_{size}_sync_{sync}");
            group.bench_function(name, |b| {
                b.iter_batched(
                    || events(&ids, size),
                    |batch| runtime.block_on(store.append(&batch)),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        store.close().expect("close");
    }
    group.finish();
}

criterion_group!(benches, encode, append);
criterion_main!(benches);
