//! CPU cost of one event through routing and a transform + filter + dedup pipeline, in memory
//! (no storage, no sinks): the share of issue 6's end-to-end budget that the stages take.
//!
//! `cargo bench -p colloquium-pipeline --bench pipeline`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use colloquium_event::{Event, Metadata, Timestamp};
use colloquium_pipeline::stages::{
    dedup::DedupConfig, filter::FilterConfig, set::SetConfig, transform::TransformConfig,
};
use colloquium_pipeline::{Registry, Topology};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const CONFIG: &str = r#"
pipelines:
  - name: orders
    when: {equals: [/type, order]}
    stages:
      - type: transform
        script: [obj, [id, [get, [$input], /id]], [customer, [get, [$input], /customer]],
                 [total, ["*", [get, [$input], /amount], [get, [$input], /qty]]],
                 [event_id, [get, [$inputs], /1/event_id]]]
      - {type: filter, when: {gt: [/total, 10]}}
      - {type: dedup, key: /id, ttl: 10m, max_keys: 100000}
"#;

fn registry() -> Registry {
    Registry::default()
        .stage::<TransformConfig>()
        .stage::<FilterConfig>()
        .stage::<SetConfig>()
        .stage::<DedupConfig>()
}

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let at = Timestamp::from_millis(1_767_225_600_000 + i);
            let data = json!({"type": "order", "id": format!("o-{i}"), "customer": format!("c-{}", i % 1000),
                              "amount": 20 + i % 50, "qty": 1 + i % 3, "note": "a typical small order event"});
            Event::at(at, data.as_object().cloned().unwrap(), Metadata::new("http", "default"))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("Topology");
    for pipelines in [1, 4] {
        let mut yaml = String::from("pipelines:\n");
        for p in 0..pipelines {
            let one = CONFIG
                .trim_start_matches("\npipelines:\n")
                .replace("name: orders", &format!("name: orders{p}"));
            yaml.push_str(&one);
        }
        let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
        let batch = events(1_000);
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(format!("process_1000/{pipelines}_pipelines"), |b| {
            b.iter_batched(
                || {
                    (
                        Topology::build(&config, &registry()).unwrap(),
                        batch.clone(),
                    )
                },
                |(mut topology, batch)| {
                    for event in batch {
                        let delivery = topology.process(event);
                        assert!(delivery.failures.is_empty());
                    }
                    // What a step commits: the stages' state writes (dedup's segment rows).
                    for pipeline in topology.pipelines_mut() {
                        drop(pipeline.state_changes());
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
