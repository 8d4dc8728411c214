//! The runtime end to end on a real store: retries from the last commit, in-memory intake,
//! ticks on an idle node, async stages beside other pipelines, stage state across reloads.

use super::*;
use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError};
use crate::sinks::store::StoreConfig;
use crate::stage::{
    AsyncStage, BuildContext, BuiltStage, CallResult, Failed, Stage, StageConfig, StageContext,
    StageError,
};
use crate::stages::transform::TransformConfig;
use colloquium_event::Event;
use colloquium_event::{Metadata, Reservation, Timestamp};
use colloquium_storage::StateChange;
use colloquium_storage::{StorageMetrics, StoreOptions};
use colloquium_telemetry::MetricsRegistry;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// Sends this sink must still fail.
static FAILURES_LEFT: AtomicUsize = AtomicUsize::new(2);

/// `{type: flaky}`: fails its first sends, then accepts everything.
#[derive(serde::Deserialize)]
struct FlakyConfig {}

impl SinkConfig for FlakyConfig {
    const KIND: &'static str = "flaky";
    const PLACEMENT: Placement = Placement::Shared;
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(Flaky(cx.name.clone())))
    }
}

struct Flaky(Arc<str>);

#[async_trait::async_trait]
impl Sink for Flaky {
    async fn send(
        &mut self,
        _batch: Vec<Routed>,
        _commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        let failing = FAILURES_LEFT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if failing {
            return Err(SinkError {
                sink: self.0.clone(),
                message: "disk full".into(),
            });
        }
        Ok(())
    }
}

#[test]
fn a_failed_step_is_retried_from_the_last_commit_without_losing_events() {
    let yaml = "sinks: {archive: {type: store}, flaky: {type: flaky}}\npipelines:\n  - name: p\n    start_from: earliest\n    stages:\n      - {type: transform, script: [obj, [n, [get, [$input], /n]]]}\n    sinks: [flaky, archive]\n";
    let registry = Registry::default()
        .stage::<TransformConfig>()
        .sink::<StoreConfig>()
        .sink::<FlakyConfig>();
    let Fixture {
        _dir,
        store,
        runtime,
        ids,
        ..
    } = start(yaml, &registry);

    let (ids, reservation) = ids.reserve(Timestamp::now(), 50);
    let events: Vec<Event> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| Event {
            id: *id,
            timestamp: id.timestamp(),
            ingest_time: id.timestamp(),
            data: serde_json::json!({"n": n}).as_object().cloned().unwrap(),
            metadata: Metadata::new("http", "default"),
        })
        .collect();
    let runtime_store = store.clone();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(runtime_store.append_settling(events.clone().into(), reservation))
                .unwrap();
        });
    });
    runtime.handle().notify();

    // Two failed steps, then the retry from the last commit delivers all 50.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let outputs = store.outputs("p", None, None, None, 100).unwrap();
        if outputs.len() == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 50 outputs",
            outputs.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        FAILURES_LEFT.load(Ordering::Acquire),
        0,
        "the sink did fail twice"
    );
    runtime.stop();
    store.close().unwrap();
}

/// A store in a temporary directory and pipelines on it.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    runtime: Runtime,
    ids: Arc<IdGenerator>,
    metrics: MetricsRegistry,
}

fn open(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        sync: false,
        ..StoreOptions::new(dir)
    };
    Store::open(
        options,
        StorageMetrics::register(&MetricsRegistry::default()),
    )
    .unwrap()
}

fn start(yaml: &str, registry: &Registry) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    start_on(dir, store, yaml, registry)
}

/// Starts pipelines on a store opened (and perhaps written to) by the test.
fn start_on(dir: tempfile::TempDir, store: Store, yaml: &str, registry: &Registry) -> Fixture {
    let config = colloquium_config::from_str(yaml, &|_| None).unwrap();
    let metrics = MetricsRegistry::default();
    let ids = Arc::new(IdGenerator::default());
    let runtime = Runtime::start(
        &config,
        registry,
        store.clone(),
        ids.clone(),
        PipelineMetrics::register(&metrics),
        HealthBoard::default(),
        colloquium_router::Lanes::new(&config.lanes, &config.control),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        store,
        runtime,
        ids,
        metrics,
    }
}

fn batch(ids: &Arc<IdGenerator>, n: usize) -> (Arc<[Event]>, Reservation) {
    let (ids, reservation) = ids.reserve(Timestamp::now(), n);
    let events = ids
        .iter()
        .map(|id| Event {
            id: *id,
            timestamp: id.timestamp(),
            ingest_time: id.timestamp(),
            data: serde_json::Map::new(),
            metadata: Metadata::new("http", "default"),
        })
        .collect();
    (events, reservation)
}

fn outputs(store: &Store) -> Vec<EventId> {
    let stored = store.outputs("p", None, None, None, 1_000).unwrap();
    stored
        .iter()
        .map(|o| serde_json::from_slice::<Event>(&o.json).unwrap().id)
        .collect()
}

/// Once caught up, a worker takes new batches from memory, in id order, and only below the
/// watermark: a batch that becomes durable before an earlier one waits for it.
#[test]
fn caught_up_workers_take_batches_in_memory_in_id_order() {
    let yaml = "sinks: {archive: {type: store}}\npipelines:\n  - {name: p, start_from: earliest, sinks: [archive]}\n";
    let Fixture {
        _dir,
        store,
        runtime,
        ids,
        metrics,
    } = start(yaml, &Registry::default().sink::<StoreConfig>());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while outputs(&store).len() < count {
            assert!(Instant::now() < deadline, "{:?}", outputs(&store).len());
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    // Caught up with an empty log, the worker switches to memory.
    let (first, settle) = batch(&ids, 3);
    tokio
        .block_on(store.append_settling(first.clone(), settle))
        .unwrap();
    runtime.handle().notify();
    wait_for(3);

    // `late` is reserved first but lands last; `early` waits for it below the watermark.
    let (late, late_ids) = batch(&ids, 2);
    let (early, early_ids) = batch(&ids, 2);
    tokio
        .block_on(store.append_settling(early.clone(), early_ids))
        .unwrap();
    runtime.handle().notify();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(outputs(&store).len(), 3, "nothing past an unsettled batch");
    tokio
        .block_on(store.append_settling(late.clone(), late_ids))
        .unwrap();
    runtime.handle().notify();
    wait_for(7);
    let expected: Vec<EventId> = first
        .iter()
        .chain(late.iter())
        .chain(early.iter())
        .map(|e| e.id)
        .collect();
    assert_eq!(outputs(&store), expected);
    let text = metrics.encode();
    let memory = text
        .lines()
        .find(|l| l.starts_with("colloquium_pipeline_read_events_total{source=\"memory\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(memory.is_some_and(|n| n >= 4), "{text}");
    runtime.stop();
    store.close().unwrap();
}

/// Appends one event per data object to the log and wakes the workers; returns their ids.
fn post(fixture: &Fixture, data: Vec<serde_json::Value>) -> Vec<EventId> {
    let (ids, reservation) = fixture.ids.reserve(Timestamp::now(), data.len());
    let events: Vec<Event> = ids
        .iter()
        .zip(data)
        .map(|(id, data)| Event {
            id: *id,
            timestamp: id.timestamp(),
            ingest_time: id.timestamp(),
            data: data.as_object().cloned().unwrap(),
            metadata: Metadata::new("http", "default"),
        })
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fixture.store.append_settling(events.into(), reservation))
        .unwrap();
    fixture.runtime.handle().notify();
    ids
}

/// Waits (30 s at most) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn output_count(store: &Store, pipeline: &str) -> usize {
    store
        .outputs(pipeline, None, None, None, 10_000)
        .unwrap()
        .len()
}

/// `{type: ticker}`: passes events through, and emits `{"tick": n}` at every `on_tick`.
#[derive(serde::Deserialize)]
struct TickerConfig {}

impl StageConfig for TickerConfig {
    const KIND: &'static str = "ticker";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        Ok(BuiltStage::sync(Ticker {
            ticks: 0,
            pipeline: cx.pipeline.to_string(),
        }))
    }
}

struct Ticker {
    ticks: u64,
    pipeline: String,
}

impl Stage for Ticker {
    fn process(&mut self, event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        cx.emit(event);
        Ok(())
    }

    fn on_tick(&mut self, now: Timestamp, cx: &mut StageContext<'_>) -> Result<(), StageError> {
        let data = serde_json::json!({"tick": self.ticks});
        let metadata = Metadata::new("ticker", &self.pipeline);
        cx.emit(Event::at(
            now,
            data.as_object().cloned().unwrap_or_default(),
            metadata,
        ));
        self.ticks += 1;
        Ok(())
    }
}

#[test]
fn on_tick_runs_and_emits_on_an_idle_node() {
    let yaml = "sinks: {archive: {type: store}}\npipelines:\n  - {name: p, tick_interval: 20ms, stages: [{type: ticker}, {type: filter, when: [true]}], sinks: [archive]}\n";
    let registry = Registry::default()
        .stage::<TickerConfig>()
        .stage::<crate::stages::filter::FilterConfig>()
        .sink::<StoreConfig>();
    let fixture = start(yaml, &registry);
    // No event is ever sent: every output is a tick, through the stage after the ticker.
    eventually("three ticks", || output_count(&fixture.store, "p") >= 3);
    let stored = fixture.store.outputs("p", None, None, None, 100).unwrap();
    let ticks: Vec<u64> = stored
        .iter()
        .map(|o| {
            serde_json::from_slice::<Event>(&o.json).unwrap().data["tick"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ticks[..3],
        [0, 1, 2],
        "one row per tick, in order: {ticks:?}"
    );
    fixture.runtime.stop();
}

/// Calls of the `slow` stage in flight now, and the most seen at once.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// `{type: slow, latency: 50ms, concurrency: 16}`: an async stage that waits `latency` per
/// event (as a call to a model provider would) and tags the event with `slow: true`.
#[derive(serde::Deserialize)]
struct SlowConfig {
    #[serde(with = "humantime_serde")]
    latency: Duration,
    concurrency: usize,
}

impl StageConfig for SlowConfig {
    const KIND: &'static str = "slow";
    fn build(self, _cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        Ok(BuiltStage::Async(Box::new(Slow(self))))
    }
}

struct Slow(SlowConfig);

impl AsyncStage for Slow {
    fn concurrency(&self) -> usize {
        self.0.concurrency
    }

    fn call(&mut self, mut event: Event) -> futures::future::BoxFuture<'static, CallResult> {
        let latency = self.0.latency;
        Box::pin(async move {
            let now = IN_FLIGHT.fetch_add(1, Ordering::AcqRel) + 1;
            MOST_IN_FLIGHT.fetch_max(now, Ordering::AcqRel);
            tokio::time::sleep(latency).await;
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            event.data.insert("slow".into(), true.into());
            Ok(vec![event])
        })
    }
}

#[test]
fn an_async_stage_keeps_input_order_and_delays_no_other_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.ndjson");
    let yaml = format!(
        "sinks: {{archive: {{type: store}}, out: {{type: file, path: '{}', sync: false}}}}\npipelines:\n  - {{name: slow, start_from: earliest, stages: [{{type: slow, latency: 50ms, concurrency: 16}}], sinks: [out]}}\n  - {{name: fast, start_from: earliest, stages: [{{type: filter, when: [true]}}], sinks: [archive]}}\n",
        file.display()
    );
    let registry = Registry::default()
        .stage::<SlowConfig>()
        .stage::<crate::stages::filter::FilterConfig>()
        .sink::<StoreConfig>()
        .sink::<crate::sinks::file::FileConfig>();
    let fixture = start(&yaml, &registry);
    let lines = || {
        std::fs::read_to_string(&file)
            .map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let ids = post(
        &fixture,
        (0..1_000).map(|n| serde_json::json!({"n": n})).collect(),
    );

    // 1,000 calls of 50 ms, 16 at a time, take over 3 s; the other pipeline does not wait.
    eventually("the fast pipeline", || {
        output_count(&fixture.store, "fast") == 1_000
    });
    assert!(lines().len() < 1_000, "the slow pipeline was not done yet");
    eventually("the slow pipeline", || lines().len() == 1_000);
    let delivered: Vec<EventId> = lines()
        .iter()
        .map(|line| serde_json::from_str::<Event>(line).unwrap())
        .inspect(|e| assert_eq!(e.data["slow"], true))
        .map(|e| e.id)
        .collect();
    assert_eq!(delivered, ids, "outputs in input order");
    let most = MOST_IN_FLIGHT.load(Ordering::Acquire);
    assert!((2..=16).contains(&most), "{most} calls in flight at once");
    // Committed with the checkpoint: the pipeline is past every event.
    let checkpoint = fixture.store.checkpoint("slow").unwrap().unwrap();
    assert_eq!(checkpoint.position, ids.last().copied());
    fixture.runtime.stop();
}

fn dedup_config(stages: &str) -> String {
    format!(
        "sinks: {{archive: {{type: store}}}}\npipelines:\n  - {{name: p, start_from: earliest, stages: [{stages}], sinks: [archive]}}\n  - {{name: q, start_from: earliest, sinks: [archive]}}\n"
    )
}

fn dedup_registry() -> Registry {
    Registry::default()
        .stage::<TransformConfig>()
        .stage::<crate::stages::dedup::DedupConfig>()
        .stage::<crate::stages::filter::FilterConfig>()
        .sink::<StoreConfig>()
}

#[test]
fn stage_state_follows_the_stage_id_across_reloads_and_goes_with_its_stage() {
    let dedup = "{type: dedup, key: /k, ttl: 1h}";
    let mut fixture = start(&dedup_config(dedup), &dedup_registry());
    post(&fixture, vec![serde_json::json!({"k": 1})]);
    eventually("the first event", || output_count(&fixture.store, "p") == 1);

    // A stage inserted before the dedup: its id (`dedup`) is unchanged, so is its state.
    let inserted = format!("{{type: transform, script: [$input]}}, {dedup}");
    let config = colloquium_config::from_str(&dedup_config(&inserted), &|_| None).unwrap();
    fixture.runtime.reload(&config).unwrap();
    post(
        &fixture,
        vec![serde_json::json!({"k": 1}), serde_json::json!({"k": 2})],
    );
    eventually("the next events", || output_count(&fixture.store, "q") == 3);
    eventually("p's checkpoint", || {
        fixture.store.checkpoint("p").unwrap().unwrap().position
            == fixture.store.checkpoint("q").unwrap().unwrap().position
    });
    assert_eq!(
        output_count(&fixture.store, "p"),
        2,
        "the duplicate of k=1 is still caught"
    );
    assert!(!fixture.store.stage_state("p", "dedup").unwrap().is_empty());

    // The dedup removed: its rows go at the reload.
    let config = colloquium_config::from_str(
        &dedup_config("{type: transform, script: [$input]}"),
        &|_| None,
    )
    .unwrap();
    fixture.runtime.reload(&config).unwrap();
    assert!(fixture.store.stage_state("p", "dedup").unwrap().is_empty());
    // The pipeline removed: its checkpoint and every row of its stages go.
    let config = colloquium_config::from_str(
        "sinks: {archive: {type: store}}\npipelines:\n  - {name: q, sinks: [archive]}\n",
        &|_| None,
    )
    .unwrap();
    fixture.runtime.reload(&config).unwrap();
    assert!(fixture.store.checkpoint("p").unwrap().is_none());
    let owners = fixture.store.state_owners().unwrap();
    assert!(owners.iter().all(|(p, _)| p != "p"), "{owners:?}");
    fixture.runtime.stop();
}

#[test]
fn position_keyed_state_of_earlier_builds_is_renamed_to_stage_ids_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // An earlier build keyed the dedup (second stage) as `dedup#1`, one row per key.
    let seen_at = Timestamp::now().as_millis();
    let rows = [("1", seen_at), ("2", seen_at)].map(|(key, at)| StateChange {
        pipeline: "p".into(),
        stage: "dedup#1".into(),
        write: colloquium_storage::StateWrite::Put(key.into(), at.to_be_bytes().to_vec()),
    });
    let orphan = StateChange {
        pipeline: "gone".into(),
        stage: "dedup#0".into(),
        write: colloquium_storage::StateWrite::Put(b"x".to_vec(), b"y".to_vec()),
    };
    store
        .commit_pipelines(PipelineCommit {
            state: rows.into_iter().chain([orphan]).collect(),
            ..PipelineCommit::default()
        })
        .unwrap();
    let yaml = dedup_config("{type: filter, when: [true]}, {type: dedup, key: /k, ttl: 1h}");
    let fixture = start_on(dir, store, &yaml, &dedup_registry());
    let owners = fixture.store.state_owners().unwrap();
    assert_eq!(
        owners,
        [("p".to_owned(), "dedup".to_owned())],
        "renamed; the orphan deleted"
    );
    post(
        &fixture,
        vec![serde_json::json!({"k": 1}), serde_json::json!({"k": 3})],
    );
    eventually("q", || output_count(&fixture.store, "q") == 2);
    eventually("p", || output_count(&fixture.store, "p") == 1);
    fixture.runtime.stop();
}

#[test]
fn corrupt_stage_state_stops_its_pipeline_without_blaming_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let garbage = StateChange {
        pipeline: "p".into(),
        stage: "dedup".into(),
        write: colloquium_storage::StateWrite::Put(vec![0xFF; 9], vec![1, 2, 3]),
    };
    store
        .commit_pipelines(PipelineCommit {
            state: vec![garbage],
            ..PipelineCommit::default()
        })
        .unwrap();
    let fixture = start_on(
        dir,
        store,
        &dedup_config("{type: dedup, key: /k, ttl: 1h}"),
        &dedup_registry(),
    );
    post(&fixture, vec![serde_json::json!({"k": 1})]);
    eventually("the other pipeline", || {
        output_count(&fixture.store, "q") == 1
    });
    // The pipelines run on their own workers: q finishing says nothing about p.
    eventually("p stopped", || {
        fixture
            .store
            .checkpoint("p")
            .ok()
            .flatten()
            .is_some_and(|c| c.stopped.is_some())
    });
    let checkpoint = fixture.store.checkpoint("p").unwrap().unwrap();
    let why = checkpoint.stopped.unwrap_or_default();
    assert!(why.contains("corrupt stage state"), "{why}");
    assert_eq!(checkpoint.position, None, "the event is left unprocessed");
    let letters: Vec<_> = fixture
        .store
        .dead_letters(colloquium_storage::ScanRange::default())
        .collect();
    assert!(letters.is_empty(), "no event dead-lettered: {letters:?}");
    fixture.runtime.stop();
}

/// A checkpoint whose lanes have moved apart (realtime ahead of a backed-up batch lane, as a
/// crash may leave it): the restarted pipeline processes exactly what each lane had not
/// passed, nothing twice, nothing skipped.
#[test]
fn a_restart_resumes_each_lane_from_its_own_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids = IdGenerator::default();
    // Ten events, alternating high (realtime) and batch, n = 0..10.
    let events: Vec<Event> = ids
        .next_ids(Timestamp::now(), 10)
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            let mut metadata = Metadata::new("http", "default");
            metadata.priority = if n % 2 == 0 {
                colloquium_event::Priority::High
            } else {
                colloquium_event::Priority::Batch
            };
            Event {
                id,
                timestamp: id.timestamp(),
                ingest_time: id.timestamp(),
                data: serde_json::json!({"n": n}).as_object().cloned().unwrap(),
                metadata,
            }
        })
        .collect();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.append(&events))
        .unwrap();
    // Realtime had passed n = 0..=8 (all of its five); batch only n = 1 and 3.
    let mut lanes = [None; 3];
    lanes[colloquium_event::Lane::Realtime.index()] = Some(events[8].id);
    lanes[colloquium_event::Lane::Transactional.index()] = Some(events[9].id);
    lanes[colloquium_event::Lane::Batch.index()] = Some(events[3].id);
    let checkpoint = Checkpoint {
        position: Some(events[3].id),
        lanes: Some(lanes),
        stopped: None,
    };
    store
        .commit_pipelines(PipelineCommit {
            checkpoints: vec![("p".to_owned(), checkpoint)],
            ..PipelineCommit::default()
        })
        .unwrap();
    let yaml = "sinks: {archive: {type: store}}\npipelines:\n  - {name: p, sinks: [archive]}\n";
    let fixture = start_on(dir, store, yaml, &Registry::default().sink::<StoreConfig>());
    eventually("the batch lane's rest", || {
        output_count(&fixture.store, "p") == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    let stored = fixture.store.outputs("p", None, None, None, 100).unwrap();
    let ns: Vec<u64> = stored
        .iter()
        .map(|o| {
            serde_json::from_slice::<Event>(&o.json).unwrap().data["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [5, 7, 9], "only batch events after n = 3");
    let checkpoint = fixture.store.checkpoint("p").unwrap().unwrap();
    assert_eq!(checkpoint.position, Some(events[9].id));
    assert_eq!(checkpoint.lanes, None, "every lane at the last event again");
    fixture.runtime.stop();
}
