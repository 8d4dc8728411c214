//! The `window` stage alone on one core, on issue 15's workload: 10,000 keys chosen
//! uniformly, values uniform in [0, 1000), event time = the event's index in ms minus up to
//! 500 ms of disorder, watermark = max − 1 s; (1) tumbling 1 s with count + avg + p95, (2) sliding
//! 10 s / 1 s with count + avg. JSON events in memory; per 1,000 events (a step) one tick, and
//! the state rows and kept results taken, as the node's worker does.
//!
//! Before the timings it prints each configuration's heap bytes per open key after the run.
//!
//! `cargo bench -p colloquium-pipeline --bench windows`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use colloquium_event::{Event, Metadata, Timestamp};
use colloquium_pipeline::stages::window::WindowConfig;
use colloquium_pipeline::{Pipeline, Registry};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

mod counting;

// The node's allocator (results are allocated per window, so the allocator shows), counting
// the bytes live to report the memory per open key.
#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Runs `input` through a fresh pipeline and prints the bytes its open windows hold per open
/// key (heap bytes live after the run, less those before it).
fn memory_per_key(name: &str, window: &str, aggregates: &str, input: &[Event]) {
    let before = counting::live();
    let mut p = pipeline(window, aggregates);
    for chunk in input.chunks(1_000) {
        for event in chunk {
            drop(p.process(event));
        }
        drop(futures::executor::block_on(p.tick(Timestamp::now())));
        drop((p.state_changes(), p.results(), p.stage_timings()));
    }
    let live = counting::live() - before;
    let metrics: std::collections::BTreeMap<&str, u64> = p
        .stage_metrics()
        .into_iter()
        .map(|(_, m)| (m.name, m.value))
        .collect();
    let keys = metrics["open_keys"].max(1);
    println!(
        "{name}: {} open keys, {} open windows, {live} bytes live: {} bytes per open key",
        keys,
        metrics["open_windows"],
        live / keys as isize
    );
}

const EVENTS: u64 = 200_000;

fn events() -> Vec<Event> {
    let mut rng = fastrand::Rng::with_seed(15);
    (0..EVENTS)
        .map(|i| {
            let t = i as i64 - rng.i64(0..=500);
            let data =
                json!({"k": format!("k{}", rng.u32(0..10_000)), "v": rng.f64() * 1000.0, "t": t});
            Event::at(
                Timestamp::from_millis(1_767_225_600_000 + i),
                data.as_object().cloned().unwrap(),
                Metadata::new("http", "default"),
            )
        })
        .collect()
}

fn pipeline(window: &str, aggregates: &str) -> Pipeline {
    let yaml = format!(
        "pipelines:\n  - name: w\n    stages:\n      - {{type: window, {window}, key: /k, time: /t, max_out_of_orderness: 1s, aggregates: {aggregates}, max_keys: 1000000}}\n"
    );
    let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
    let scripts = colloquium_config::ScriptLibrary::compile_all(&config);
    let registry = Registry::default().stage::<WindowConfig>();
    Pipeline::build(&config.pipelines[0], "pipelines[0]", &registry, &scripts).unwrap()
}

/// (name, window, aggregates) of the two measured configurations.
const WORKLOADS: [(&str, &str, &str); 2] = [
    (
        "tumbling_1s_count_avg_p95",
        "window: tumbling, size: 1s",
        "{n: count, mean: {avg: /v}, p95: {p95: /v}}",
    ),
    (
        "sliding_10s_1s_count_avg",
        "window: sliding, size: 10s, slide: 1s",
        "{n: count, mean: {avg: /v}}",
    ),
];

fn bench(c: &mut Criterion) {
    let input = events();
    for (name, window, aggregates) in WORKLOADS {
        memory_per_key(name, window, aggregates, &input);
    }
    let mut group = c.benchmark_group("window");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for (name, window, aggregates) in WORKLOADS {
        group.bench_function(name, |b| {
            // The events are copied before the timing and moved in, as the worker moves each
            // event into the last pipeline that takes it.
            b.iter_batched(
                || (pipeline(window, aggregates), input.clone()),
                |(mut p, events)| {
                    let mut results = 0;
                    let mut events = events.into_iter();
                    for _ in 0..EVENTS / 1_000 {
                        for event in events.by_ref().take(1_000) {
                            results += p.process_owned(event).outputs.len();
                        }
                        let ticked = futures::executor::block_on(p.tick(Timestamp::now()));
                        results += ticked.iter().map(|o| o.outputs.len()).sum::<usize>();
                        // What the worker takes after each step: state rows and kept results.
                        results += p.state_changes().len() + p.results().len();
                        results += p.stage_timings().len();
                    }
                    results
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
