//! The `anomaly` stage alone on one core (`model: streamguard`, then `robust`), with 100,000
//! users: each user
//! first learns 100 events (its baseline: 2 IPs, 2 places, 4 working hours, 2 event types), then
//! 200,000 events of random users are scored (1 % from a new IP at a new hour, which are flagged
//! and not learned). JSON events in memory, through `Pipeline::process` as the worker calls it.
//!
//! Before each timing it prints the heap bytes per user baseline (a counting allocator). Then
//! the `schema` stage on the same events against examples/streamguard/event-schema.json.
//!
//! `cargo bench -p colloquium-pipeline --bench anomaly`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use colloquium_event::{Event, Metadata, Timestamp};
use colloquium_pipeline::stages::anomaly::AnomalyConfig;
use colloquium_pipeline::stages::schema::SchemaConfig;
use colloquium_pipeline::{Pipeline, Registry};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const USERS: u32 = 100_000;
const SCORED: u64 = 200_000;

fn event(rng: &mut fastrand::Rng, user: u32, odd: bool) -> Event {
    let hour = if odd { 3 } else { 9 + rng.u64(0..4) };
    let ip = if odd {
        "203.0.113.9".to_owned()
    } else {
        format!("10.{}.0.{}", user % 250, rng.u8(1..3))
    };
    let data = json!({"event_id": "evt_x", "timestamp": 1_767_225_600_000 + hour * 3_600_000,
        "event_type": if rng.bool() {"auth_attempt"} else {"file_access"}, "source_ip": ip,
        "user": format!("user-{user}"), "status": "success", "threat_score": 0.1,
        "metadata": {"geo_location": if rng.bool() {"US-CA"} else {"US-NY"}}});
    Event::at(
        Timestamp::now(),
        data.as_object().cloned().unwrap(),
        Metadata::new("http", "default"),
    )
}

fn pipeline(model: &str) -> Pipeline {
    let yaml = format!(
        "pipelines:\n  - name: a\n    stages:\n      - {{type: anomaly, model: {model}, max_entities: 1000000}}\n"
    );
    let yaml = yaml.as_str();
    let config = colloquium_config::from_str(yaml, &|_| None).unwrap();
    let scripts = colloquium_config::ScriptLibrary::compile_all(&config);
    let registry = Registry::default().stage::<AnomalyConfig>();
    Pipeline::build(&config.pipelines[0], "pipelines[0]", &registry, &scripts).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("anomaly");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SCORED));
    let mut input = Vec::new();
    for model in ["streamguard", "robust"] {
        let mut rng = fastrand::Rng::with_seed(16);
        let before = counting::live();
        let mut p = pipeline(model);
        for round in 0..100 {
            for user in 0..USERS {
                drop(p.process(&event(&mut rng, user, false)));
            }
            if round % 10 == 9 {
                drop(p.state_changes());
            }
        }
        drop(p.state_changes());
        let live = counting::live() - before;
        println!(
            "anomaly ({model}): {USERS} user baselines of 100 events, {live} bytes live: {} bytes per baseline",
            live / USERS as isize
        );
        input = (0..SCORED)
            .map(|_| {
                let (user, odd) = (rng.u32(0..USERS), rng.u8(0..100) == 0);
                event(&mut rng, user, odd)
            })
            .collect();
        // The events are copied before the timing and moved in, as the worker moves each
        // event into the last pipeline that takes it.
        group.bench_function(format!("{model}_100k_users"), |b| {
            b.iter_batched(
                || input.clone(),
                |events| {
                    let mut anomalies = 0;
                    let mut events = events.into_iter();
                    for _ in 0..SCORED / 1_000 {
                        for event in events.by_ref().take(1_000) {
                            let out = p.process_owned(event).outputs;
                            anomalies += usize::from(out[0].data["anomaly"]["is_anomaly"] == true);
                        }
                        // What the worker takes after each step.
                        drop((p.state_changes(), p.stage_scores()));
                    }
                    anomalies
                },
                BatchSize::PerIteration,
            );
        });
    }
    // The `schema` stage on the same events, against the shipped StreamGuard schema.
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/streamguard/event-schema.json"
    ))
    .unwrap();
    let yaml = format!(
        "pipelines:\n  - name: s\n    stages:\n      - {{type: schema, schema: {schema}}}\n"
    );
    let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
    let scripts = colloquium_config::ScriptLibrary::compile_all(&config);
    let registry = Registry::default().stage::<SchemaConfig>();
    let mut s = Pipeline::build(&config.pipelines[0], "pipelines[0]", &registry, &scripts).unwrap();
    group.bench_function("schema_streamguard_event", |b| {
        b.iter(|| {
            input
                .iter()
                .map(|e| s.process(e).outputs.len())
                .sum::<usize>()
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
