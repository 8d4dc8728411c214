//! CPU cost of ingest per event: body parsing and stamping (no I/O).
//! `cargo bench -p colloquium-ingest --bench ingest`
// A benchmark that cannot set up should stop loudly.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use colloquium_event::Timestamp;
use colloquium_ingest::Stamper;
use colloquium_ingest::body::{BodyFormat, parse};
use colloquium_ingest::stamp::Envelope;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// The payload `colloquium bench http` sends (~130 bytes).
fn event(i: usize) -> String {
    format!(
        r#"{{"user":"user-{}","action":"checkout","amount":{}.{:02},"items":["sku-1","sku-2"],"region":"eu-west","seq":{i}}}"#,
        i % 1000,
        i % 500,
        i % 100
    )
}

fn body_parse(c: &mut Criterion) {
    let single = event(0);
    let ndjson: String = (0..1000).map(|i| event(i) + "\n").collect();
    let mut group = c.benchmark_group("body::parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("json_object", |b| {
        b.iter(|| parse(black_box(single.as_bytes()), BodyFormat::Json))
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("ndjson_1000", |b| {
        b.iter(|| parse(black_box(ndjson.as_bytes()), BodyFormat::Ndjson))
    });
    group.finish();
}

fn stamper(c: &mut Criterion) {
    let ndjson: String = (0..1000).map(|i| event(i) + "\n").collect();
    let payloads = parse(ndjson.as_bytes(), BodyFormat::Ndjson).expect("valid");
    let stamper = Stamper::new(Arc::default(), "http", "timestamp", "default");
    let envelope = Envelope::default();
    let mut group = c.benchmark_group("Stamper");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("stamp_1000", |b| {
        b.iter_batched(
            || payloads.clone(),
            |p| stamper.stamp(p, &envelope, Timestamp::now()),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, body_parse, stamper);
criterion_main!(benches);
