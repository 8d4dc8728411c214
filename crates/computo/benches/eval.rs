//! Compile time and single-core evaluation throughput (issue 5's benchmark).
//!
//! `cargo bench -p colloquium-computo --bench eval`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;

/// (a) The design documents' transform: `{"result": value + 10}`.
fn plus_ten() -> Value {
    json!(["obj", ["result", ["+", ["get", ["$input"], "/value"], 10]]])
}

/// (b) Enrichment: an object of 8 fields from the event (`$input`) and its metadata (input 1).
fn enrichment() -> Value {
    json!([
        "obj",
        ["event_id", ["get", ["$inputs"], "/1/event_id"]],
        ["source", ["get", ["$inputs"], "/1/source"]],
        ["received", ["get", ["$inputs"], "/1/timestamp"]],
        ["user", ["get", ["$input"], "/user/id"]],
        ["country", ["get", ["$input"], "/user/country"]],
        ["amount", ["get", ["$input"], "/order/amount"]],
        [
            "total",
            [
                "*",
                ["get", ["$input"], "/order/amount"],
                ["get", ["$input"], "/order/qty"]
            ]
        ],
        ["large", [">", ["get", ["$input"], "/order/amount"], 100]]
    ])
}

/// (c) `filter` then `map` over a 100-element array of objects.
fn filter_map() -> Value {
    json!([
        "map",
        [
            "filter",
            ["get", ["$input"], "/items"],
            ["lambda", ["it"], [">", ["get", ["$", "/it"], "/price"], 50]]
        ],
        [
            "lambda",
            ["it"],
            [
                "*",
                ["get", ["$", "/it"], "/price"],
                ["get", ["$", "/it"], "/qty"]
            ]
        ]
    ])
}

fn event() -> Value {
    json!({
        "user": {"id": "u-1842", "country": "FI", "plan": "pro"},
        "order": {"id": "o-99121", "amount": 129, "qty": 3, "currency": "EUR"},
        "items": (0..100).map(|i| json!({"sku": format!("sku-{i}"), "price": i, "qty": i % 4 + 1})).collect::<Vec<_>>()
    })
}

fn metadata() -> Value {
    json!({
        "event_id": "01J1ZK8Q3X5V7N9B2C4D6F8H0J", "timestamp": 1751284800123_i64,
        "ingest_time": 1751284800125_i64, "source": "http", "pipeline": "orders",
        "routing_key": null, "retry_count": 0, "priority": "normal", "topic": "orders"
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("Script");
    group.throughput(Throughput::Elements(1));
    let enrichment_source = enrichment();
    group.bench_function("compile/enrichment", |b| {
        b.iter(|| computo::compile(black_box(&enrichment_source)).unwrap())
    });

    let data = json!({"value": 5});
    let meta = metadata();
    let big = event();
    let cases = [
        ("eval/plus_ten", plus_ten(), &data),
        ("eval/enrichment_8_fields", enrichment(), &big),
        ("eval/filter_map_100", filter_map(), &big),
    ];
    for (name, script, input) in cases {
        let script = computo::compile(&script).unwrap();
        let inputs = [input, &meta];
        script.eval(&inputs).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| script.eval(black_box(&inputs)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
