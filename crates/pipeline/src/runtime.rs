//! Running pipelines on a node: read the log from each pipeline's checkpoint, process, commit.
//!
//! The pipelines are split over up to one worker thread per core (`worker_groups`: pipelines
//! that share a file, http or stdout sink stay together). Each step a worker reads up to
//! [`STEP_EVENTS`] events from the log, in id order, after the lowest checkpoint of its
//! pipelines and strictly below the id watermark (every id below it is settled: stored or never
//! to be, see `IdGenerator::watermark`), so an event committed late below a newer one is never
//! skipped. Every pipeline of the worker whose checkpoint is before an event runs it; the step's
//! `store` outputs, dead letters, stage-state changes and new checkpoints are then written in
//! one atomic batch (`Store::commit_pipelines`). After a crash, each pipeline resumes from its
//! checkpoint: nothing acknowledged is skipped and no `store` output is written twice. One
//! worker also records routing failures (`no_route`, `route_error`) under its own checkpoint.
//!
//! Results then go to the pipeline's sinks (see `sink.rs` for each one's delivery guarantee):
//! `store` and `dlq` add to the step's commit, `file`, `http` and `stdout` deliver before it.
//!
//! Workers wake when the ingest path reports a commit (`RuntimeHandle::notify`) and at least
//! every [`IDLE_POLL`]. A worker that has caught up with the log takes new events in memory
//! from the store's feed (`Store::feed`: each durable batch, published before its ids settle),
//! so it neither reads nor decodes them again; one that falls more than [`FEED_CAPACITY`]
//! events behind, or whose step fails, reads the log until it has caught up again (`Source`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use colloquium_config::{Config, ConfigError, StartFrom};
use colloquium_event::{Event, EventId, IdGenerator, Timestamp};
use colloquium_router::{Balancer, Pick};
use colloquium_storage::{
    Checkpoint, NewDeadLetter, Order, PipelineCommit, ScanRange, StateChange, StorageError, Store,
    Subscription,
};
use colloquium_telemetry::health::HealthBoard;

use crate::events::{PipelineLabels, PipelineMetrics, RouteLabels, SinkLabels, StageLabels};
use crate::monitor::Monitor;
use crate::pipeline::StageCounts;
use crate::registry::Registry;
use crate::sink::Routed;
use crate::topology::{Delivery, Topology};

/// Most events read and committed in one step.
pub const STEP_EVENTS: usize = 1_000;
/// Longest the worker sleeps without a notification.
pub const IDLE_POLL: Duration = Duration::from_millis(200);
/// Most events a worker's in-memory feed holds; a worker further behind reads the log.
const FEED_CAPACITY: usize = 50 * STEP_EVENTS;
/// `source` label values of `colloquium_pipeline_read_events_total`.
const MEMORY: &str = "memory";
const LOG: &str = "log";
/// Checkpoint key of the router (`@` cannot start a pipeline name).
const ROUTER: &str = "@router";

/// Why pipelines could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The config does not build.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The worker thread could not be started.
    #[error("starting the pipeline worker: {0}")]
    Thread(std::io::Error),
}

/// The running pipelines. Dropping it without [`Runtime::stop`] leaves the workers running
/// until the process ends.
pub struct Runtime {
    /// Outlives workers, so the ingest path's handle keeps working across reloads.
    handle: RuntimeHandle,
    shared: Shared,
    config: Config,
    /// Empty while there are no pipelines: nothing is routed, nothing is dead-lettered.
    workers: Vec<RunningWorker>,
    /// Measures each pipeline's lag and health, whatever its worker is doing.
    monitor: Monitor,
}

/// What every worker gets, whatever its config.
#[derive(Clone)]
struct Shared {
    registry: Registry,
    store: Store,
    ids: Arc<IdGenerator>,
    metrics: PipelineMetrics,
    board: HealthBoard,
}

struct RunningWorker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Wakes the workers after new events are durable. Cheap to clone and to call per request.
#[derive(Clone, Debug, Default)]
pub struct RuntimeHandle {
    bell: Arc<Doorbell>,
}

impl RuntimeHandle {
    /// Tells the workers there is something new in the log.
    pub fn notify(&self) {
        self.bell.ring();
    }
}

/// A counter of rings, and a condition variable every worker waits on.
#[derive(Debug, Default)]
struct Doorbell {
    rung: Mutex<u64>,
    bell: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.bell.notify_all();
    }

    /// Returns once the bell rang after `seen` (updating it), or after `timeout`.
    fn wait(&self, seen: &mut u64, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (rung, _) = self
            .bell
            .wait_timeout_while(rung, timeout, |rung| *rung == *seen)
            .unwrap_or_else(PoisonError::into_inner);
        *seen = *rung;
    }
}

impl Runtime {
    /// Builds the topology and starts the worker on the store's log. Metrics go to `metrics`,
    /// each pipeline's health to `board`. With no pipelines in `config` no worker runs until a
    /// [`Runtime::reload`] adds some.
    pub fn start(
        config: &Config,
        registry: &Registry,
        store: Store,
        ids: Arc<IdGenerator>,
        metrics: PipelineMetrics,
        board: HealthBoard,
    ) -> Result<Self, RuntimeError> {
        let monitor = Monitor::start(store.clone(), metrics.clone(), board.clone())
            .map_err(RuntimeError::Thread)?;
        let mut runtime = Runtime {
            handle: RuntimeHandle::default(),
            shared: Shared {
                registry: registry.clone(),
                store,
                ids,
                metrics,
                board,
            },
            config: config.clone(),
            workers: Vec::new(),
            monitor,
        };
        runtime.forget_removed(config)?;
        runtime.workers = runtime.launch(config)?;
        runtime.monitor.watch(pipeline_names(config));
        Ok(runtime)
    }

    /// A handle that wakes the worker.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Swaps in `config`'s pipelines. The new topology is built first; if it does not build,
    /// the running pipelines are untouched. Otherwise each worker finishes its step (a commit)
    /// and stops, and new ones start from the checkpoints: pipelines that stay keep their
    /// position and stage state, so no event is skipped or processed twice; removed pipelines
    /// are forgotten (checkpoint and state; their outputs stay); added ones start from their
    /// `start_from`. If the new worker cannot start, the old config is started again.
    pub fn reload(&mut self, config: &Config) -> Result<(), RuntimeError> {
        Topology::build(config, &self.shared.registry).map_err(RuntimeError::Config)?;
        self.halt();
        let kept: BTreeSet<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        let removed = self
            .config
            .pipelines
            .iter()
            .filter(|p| !kept.contains(p.name.as_str()));
        // Stop measuring the removed ones before their reports go.
        self.monitor.watch(
            self.config
                .pipelines
                .iter()
                .filter(|p| kept.contains(p.name.as_str()))
                .map(|p| p.name.clone())
                .collect(),
        );
        for pipeline in removed {
            self.shared.store.forget_pipeline(&pipeline.name)?;
            self.shared.board.remove(&pipeline.name);
        }
        if config.pipelines.is_empty() {
            // Pipelines added later start the router at the head then, not here.
            self.shared.store.forget_pipeline(ROUTER)?;
        }
        match self.launch(config) {
            Ok(workers) => {
                self.workers = workers;
                self.config = config.clone();
                self.monitor.watch(pipeline_names(config));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "starting the new pipelines failed; restarting the old ones");
                self.workers = self.launch(&self.config.clone())?;
                self.monitor.watch(pipeline_names(&self.config));
                Err(e)
            }
        }
    }

    /// Forgets the checkpoint and state of every pipeline the store knows that `config` does
    /// not have (removed while the node was down): a stale checkpoint would hold retention
    /// back forever. The router's goes too when there are no pipelines.
    fn forget_removed(&self, config: &Config) -> Result<(), StorageError> {
        let kept: BTreeSet<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        for name in self.shared.store.checkpointed()? {
            let router_kept = name == ROUTER && !kept.is_empty();
            if !router_kept && !kept.contains(name.as_str()) {
                tracing::info!(pipeline = %name, "forgetting a pipeline that is no longer configured");
                self.shared.store.forget_pipeline(&name)?;
            }
        }
        Ok(())
    }

    /// Finishes the current steps and stops the workers. Events not processed yet are processed
    /// after the next start, from the checkpoints.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        stop_workers(&self.handle, std::mem::take(&mut self.workers));
    }

    /// Starts the workers for `config`'s pipelines (none without pipelines).
    fn launch(&self, config: &Config) -> Result<Vec<RunningWorker>, RuntimeError> {
        if config.pipelines.is_empty() {
            return Ok(Vec::new());
        }
        let store = &self.shared.store;
        // Where each new pipeline starts is written down before anything runs, so a crash or
        // a reload before its first step does not move it. The router starts at the head
        // when new: history is not dead-lettered as `no_route`.
        let newest = newest_id(store)?;
        let mut first = PipelineCommit {
            durable: true,
            ..PipelineCommit::default()
        };
        let starts = config.pipelines.iter().map(|p| {
            let position = match p.start_from {
                StartFrom::Earliest => None,
                StartFrom::Latest => newest,
            };
            (p.name.as_str(), position)
        });
        for (name, position) in starts.chain(std::iter::once((ROUTER, newest))) {
            // A stopped pipeline retries from its checkpoint after a reload or restart, so
            // its health must not still say stopped until its next step.
            let position = match store.checkpoint(name)? {
                None => position,
                Some(Checkpoint {
                    position,
                    stopped: Some(_),
                }) => position,
                Some(_) => continue,
            };
            let checkpoint = Checkpoint {
                position,
                stopped: None,
            };
            first.checkpoints.push((name.to_owned(), checkpoint));
        }
        if !first.checkpoints.is_empty() {
            store.commit_pipelines(first)?;
        }
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let groups = worker_groups(config, threads);
        let mut workers = Vec::with_capacity(groups.len());
        for (n, own) in groups.into_iter().enumerate() {
            match self.spawn(config, own, n == 0, n) {
                Ok(worker) => workers.push(worker),
                Err(e) => {
                    stop_workers(&self.handle, workers);
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Starts one worker running the pipelines `own` marks; `routes`: it also records routing
    /// failures (`no_route`, `route_error`), which one worker must do for all.
    fn spawn(
        &self,
        config: &Config,
        own: Vec<bool>,
        routes: bool,
        n: usize,
    ) -> Result<RunningWorker, RuntimeError> {
        let store = &self.shared.store;
        let plan = Plan {
            config: config.clone(),
            registry: self.shared.registry.clone(),
        };
        let committed = plan.load(store)?;
        let sinks = config
            .pipelines
            .iter()
            .map(|p| PipelineSinks {
                names: p.sinks.clone(),
                balancer: Balancer::new(p.balance, p.balance_key.as_deref()),
            })
            .collect();
        let worker = Worker {
            store: store.clone(),
            ids: self.shared.ids.clone(),
            names: config.pipelines.iter().map(|p| p.name.clone()).collect(),
            own,
            routes,
            topology: committed.topology,
            sinks,
            positions: committed.positions,
            router: committed.router,
            plan,
            metrics: self.shared.metrics.clone(),
            reported: Vec::new(),
            source: Source::log(store, &self.shared.ids),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(format!("pipelines-{n}"))
            .spawn({
                let stop = stop.clone();
                let bell = self.handle.bell.clone();
                move || worker.run(&bell, &stop)
            })
            .map_err(RuntimeError::Thread)?;
        Ok(RunningWorker { stop, thread })
    }
}

fn pipeline_names(config: &Config) -> Vec<String> {
    config.pipelines.iter().map(|p| p.name.clone()).collect()
}

/// Lets each worker finish its step, then joins them.
fn stop_workers(handle: &RuntimeHandle, workers: Vec<RunningWorker>) {
    for worker in &workers {
        worker.stop.store(true, Ordering::Release);
    }
    handle.notify();
    for worker in workers {
        if worker.thread.join().is_err() {
            tracing::error!("a pipeline worker panicked");
        }
    }
}

/// Splits the pipelines over at most `threads` workers: `result[w][i]` is whether worker `w`
/// runs pipeline `i`. Pipelines that share a sink other than `store` or `dlq` (a file, an
/// http endpoint, stdout: one instance each) stay on one worker; the rest are spread evenly.
fn worker_groups(config: &Config, threads: usize) -> Vec<Vec<bool>> {
    let count = config.pipelines.len();
    // Union-find over pipelines, joined by the exclusive sinks they share.
    let mut parent: Vec<usize> = (0..count).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut holder: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in config.pipelines.iter().enumerate() {
        for sink in &p.sinks {
            let shared_safely = config
                .sinks
                .get(sink)
                .is_some_and(|s| matches!(s.kind.as_str(), "store" | "dlq"));
            if shared_safely {
                continue;
            }
            if let Some(&other) = holder.get(sink.as_str()) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, other));
                parent[a] = b;
            } else {
                holder.insert(sink, i);
            }
        }
    }
    let mut components: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..count {
        components.entry(root(&mut parent, i)).or_default().push(i);
    }
    // Largest first, each to the least loaded worker.
    let mut components: Vec<Vec<usize>> = components.into_values().collect();
    components.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let workers = threads.clamp(1, components.len().max(1));
    let mut groups = vec![vec![false; count]; workers];
    let mut load = vec![0usize; workers];
    for component in components {
        let w = (0..workers).min_by_key(|w| load[*w]).unwrap_or(0);
        load[w] += component.len();
        for i in component {
            groups[w][i] = true;
        }
    }
    groups
}

/// Why a step did not commit (it is retried from the same checkpoints).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

/// What the worker needs to rebuild its pipelines as of the last commit.
struct Plan {
    config: Config,
    registry: Registry,
}

/// Pipelines as of the last committed step.
struct Committed {
    topology: Topology,
    positions: Vec<Option<EventId>>,
    router: Option<EventId>,
}

impl Plan {
    /// Builds the topology and loads positions and stage state from the store (every
    /// pipeline has a checkpoint: [`Runtime::launch`] writes the first one).
    fn load(&self, store: &Store) -> Result<Committed, RuntimeError> {
        let mut topology =
            Topology::build(&self.config, &self.registry).map_err(RuntimeError::Config)?;
        let mut positions = Vec::new();
        for (p, pipeline) in self.config.pipelines.iter().zip(topology.pipelines_mut()) {
            let checkpoint = store.checkpoint(&p.name)?.unwrap_or_default();
            pipeline
                .restore_state(|stage| store.stage_state(&p.name, stage))
                .map_err(|e| {
                    let at = format!("pipeline {}", p.name);
                    RuntimeError::Config(vec![ConfigError::new(at, e.to_string())])
                })?;
            positions.push(checkpoint.position);
        }
        let router = store.checkpoint(ROUTER)?.and_then(|c| c.position);
        Ok(Committed {
            topology,
            positions,
            router,
        })
    }
}

struct PipelineSinks {
    names: Vec<String>,
    balancer: Balancer,
}

/// Runs some of the pipelines (`own`); every worker builds the whole topology, because
/// routing looks at every pipeline's `when`.
struct Worker {
    store: Store,
    ids: Arc<IdGenerator>,
    names: Vec<String>,
    /// Per pipeline: whether this worker runs it.
    own: Vec<bool>,
    /// Whether this worker records routing failures and keeps the router's checkpoint.
    routes: bool,
    topology: Topology,
    sinks: Vec<PipelineSinks>,
    /// Per pipeline: the last event it has processed (`None`: none yet).
    positions: Vec<Option<EventId>>,
    /// The last event whose routing failures were recorded.
    router: Option<EventId>,
    plan: Plan,
    metrics: PipelineMetrics,
    /// Stage counters already added to the metrics, per pipeline and stage.
    reported: Vec<Vec<StageCounts>>,
    source: Source,
}

/// Where a worker's next events come from.
enum Source {
    /// Catching up: reading the log. `subscription` buffers what is published meanwhile;
    /// every batch reserved before it was taken has an id below `since`.
    Log {
        subscription: Arc<Subscription>,
        since: Option<EventId>,
    },
    /// Caught up: new events arrive in memory. `pending` holds those not yet below the
    /// watermark (an earlier batch may still land), in id order.
    Memory {
        subscription: Arc<Subscription>,
        pending: Vec<Event>,
    },
}

impl Source {
    /// Back to the log, with a fresh subscription for when it has caught up again.
    fn log(store: &Store, ids: &IdGenerator) -> Source {
        // Subscribe first: a batch reserved after `since` is read is published after this.
        let subscription = store.feed().subscribe(FEED_CAPACITY);
        Source::Log {
            subscription,
            since: ids.issued(),
        }
    }
}

impl Worker {
    fn run(mut self, bell: &Doorbell, stop: &AtomicBool) {
        let mut seen = 0;
        let mut backoff = Duration::from_millis(100);
        while !stop.load(Ordering::Acquire) {
            match self.step() {
                Ok(n) if n >= STEP_EVENTS => continue, // catching up: no wait
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // The step was not committed, but processing it moved positions and stage
                    // state in memory: go back to the last commit, then retry.
                    tracing::error!(error = %e, "pipeline step failed; retrying from the last commit");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match self.plan.load(&self.store) {
                        Ok(committed) => {
                            self.topology = committed.topology;
                            self.positions = committed.positions;
                            self.router = committed.router;
                            self.reported.clear();
                            // What the failed step took from memory is gone: reread the log.
                            self.source = Source::log(&self.store, &self.ids);
                        }
                        Err(e) => tracing::error!(error = %e, "reloading pipelines failed"),
                    }
                    continue;
                }
            }
            bell.wait(&mut seen, IDLE_POLL);
        }
    }

    /// Processes up to [`STEP_EVENTS`] events and commits; returns how many it read.
    fn step(&mut self) -> Result<usize, StepError> {
        let started = std::time::Instant::now();
        let watermark = self.ids.watermark();
        let live = (self.topology.pipelines().iter().zip(&self.positions))
            .zip(&self.own)
            .filter(|((p, _), own)| **own && p.stopped().is_none())
            .map(|((_, position), _)| *position);
        let router = self.routes.then_some(self.router);
        // `None` (nothing processed) sorts first: read from the start of the log. Nothing
        // live and no routing: nothing to read.
        let from = live.chain(router).min();

        let events = match from {
            Some(after) => self.next_events(after, watermark)?,
            None => Vec::new(),
        };
        let mut commit = PipelineCommit::default();
        let mut routed: BTreeMap<String, Vec<Routed>> = BTreeMap::new();
        self.replay(&mut commit, &mut routed)?;
        let Some(last) = events.last().map(|e| e.id) else {
            if commit.replayed.is_empty() {
                return Ok(0);
            }
            self.send(routed, &mut commit)?;
            self.store.commit_pipelines(commit)?;
            return Ok(0);
        };
        let count = events.len();
        // Per pipeline: ingest times (ms) of the events it took, for metrics after the commit.
        let mut taken = vec![Vec::new(); self.names.len()];
        for event in events {
            self.process(event, &mut commit, &mut routed, &mut taken);
        }
        self.send(routed, &mut commit)?;
        let pipelines = self.topology.pipelines_mut().iter_mut().enumerate();
        for (i, pipeline) in pipelines.filter(|(i, _)| self.own[*i]) {
            commit.checkpoints.push((
                self.names[i].clone(),
                Checkpoint {
                    position: self.positions[i],
                    stopped: pipeline.stopped().map(str::to_owned),
                },
            ));
            for (stage, write) in pipeline.state_changes() {
                commit.state.push(StateChange {
                    pipeline: self.names[i].clone(),
                    stage,
                    write,
                });
            }
        }
        if self.routes {
            self.router = Some(last);
            commit.checkpoints.push((
                ROUTER.to_owned(),
                Checkpoint {
                    position: Some(last),
                    stopped: None,
                },
            ));
        }
        self.store.commit_pipelines(commit)?;
        self.metrics.step.observe(started.elapsed().as_secs_f64());
        self.report(&taken);
        Ok(count)
    }

    /// Hands each sink its results, counting them.
    fn send(
        &mut self,
        routed: BTreeMap<String, Vec<Routed>>,
        commit: &mut PipelineCommit,
    ) -> Result<(), StepError> {
        for (name, batch) in routed {
            if let Some(sink) = self.topology.sink_mut(&name) {
                let sent = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                sink.send(batch, commit)?;
                let labels = SinkLabels { sink: name };
                self.metrics.sink_events.get_or_create(&labels).inc_by(sent);
                #[allow(clippy::cast_precision_loss)] // a batch size, far below 2^52
                self.metrics
                    .sink_batch
                    .get_or_create(&labels)
                    .observe(sent as f64);
            }
        }
        Ok(())
    }

    /// Up to [`STEP_EVENTS`] events after `after` and below `watermark`, in id order: from
    /// memory once caught up, else from the log.
    fn next_events(
        &mut self,
        after: Option<EventId>,
        watermark: Option<EventId>,
    ) -> Result<Vec<Event>, StorageError> {
        let is_new = |id: EventId| after.is_none_or(|a| id > a);
        // No watermark: no id given out yet, so everything in the log is settled.
        let settled = |id: EventId| watermark.is_none_or(|w| id < w);
        if let Source::Memory {
            subscription,
            pending,
        } = &mut self.source
        {
            // Taken after reading the watermark: whatever settled below it is in here.
            if let Some(batches) = subscription.take() {
                for batch in batches {
                    pending.extend(batch.iter().filter(|e| is_new(e.id)).cloned());
                }
                if pending.len() <= FEED_CAPACITY {
                    pending.sort_unstable_by_key(|e| e.id);
                    let ready = pending.partition_point(|e| settled(e.id)).min(STEP_EVENTS);
                    let events: Vec<Event> = pending.drain(..ready).collect();
                    self.metrics.read(MEMORY, events.len());
                    return Ok(events);
                }
            }
            // Fell too far behind (batches were dropped, or too many wait): the log has them
            // all, and holding them here would cost memory without bound.
            self.source = Source::log(&self.store, &self.ids);
        }
        let range = ScanRange {
            after,
            ..ScanRange::default()
        };
        let mut events = Vec::new();
        for item in self.store.scan(range, true) {
            let (id, bytes) = item?;
            if !settled(id) || events.len() >= STEP_EVENTS {
                break;
            }
            events.push(colloquium_storage::log::decode(&id.to_bytes(), &bytes)?);
        }
        self.metrics.read(LOG, events.len());
        // Caught up with the log below a watermark past every batch reserved before the
        // subscription: from now on, every new event is in the subscription.
        if let Source::Log {
            subscription,
            since,
        } = &self.source
            && events.len() < STEP_EVENTS
            && since.is_none_or(|s| watermark.is_some_and(|w| w >= s))
        {
            self.source = Source::Memory {
                subscription: subscription.clone(),
                pending: Vec::new(),
            };
        }
        Ok(events)
    }

    fn process(
        &mut self,
        event: Event,
        commit: &mut PipelineCommit,
        routed: &mut BTreeMap<String, Vec<Routed>>,
        taken: &mut [Vec<u64>],
    ) {
        let ingested = event.ingest_time.as_millis();
        let id = event.id;
        let (positions, own) = (&self.positions, &self.own);
        let take = |i: usize| {
            own.get(i) == Some(&true) && positions.get(i).is_some_and(|p| p.is_none_or(|p| p < id))
        };
        let report_routing = self.routes && self.router.is_none_or(|r| r < id);
        let Delivery {
            outputs, failures, ..
        } = self.topology.process_gated(event, &take, report_routing);
        for failure in &failures {
            match (failure.reason, &failure.pipeline) {
                ("no_route", _) => {
                    self.metrics.no_route.inc();
                }
                ("route_error", Some(p)) => {
                    let labels = RouteLabels {
                        pipeline: p.to_string(),
                        result: "route_error",
                    };
                    self.metrics.routed.get_or_create(&labels).inc();
                }
                _ => {}
            }
        }
        self.record_failures(failures, commit);
        for (i, _) in &outputs {
            if let Some(times) = taken.get_mut(*i) {
                times.push(ingested);
            }
        }
        for (i, events) in outputs {
            self.to_sinks(i, id, events, routed);
        }
        // Every pipeline here that was before this event and is still running is now past it.
        for (i, pipeline) in self.topology.pipelines().iter().enumerate() {
            let running = self.own[i] && pipeline.stopped().is_none();
            if running && self.positions[i].is_none_or(|p| p < id) {
                self.positions[i] = Some(id);
            }
        }
    }
}

impl Worker {
    /// Routes pipeline `i`'s results for input `source_id` to its sinks (balanced).
    fn to_sinks(
        &self,
        i: usize,
        source_id: EventId,
        events: Vec<Event>,
        routed: &mut BTreeMap<String, Vec<Routed>>,
    ) {
        let (Some(pipeline), Some(sinks)) = (self.topology.pipelines().get(i), self.sinks.get(i))
        else {
            return;
        };
        let count = sinks.names.len();
        for (index, output) in events.into_iter().enumerate() {
            let pick = sinks.balancer.pick_by(|p| output.data_pointer(p), count);
            let chosen = |k: &usize| pick == Pick::All || pick == Pick::One(*k);
            // The last chosen sink takes the result itself; only the others get copies.
            let last = (0..count).rev().find(chosen);
            let mut output = Some(output);
            for (k, name) in sinks.names.iter().enumerate() {
                if !chosen(&k) {
                    continue;
                }
                let event = if Some(k) == last {
                    output.take()
                } else {
                    output.clone()
                };
                let Some(event) = event else { break };
                let routed_event = Routed {
                    pipeline: pipeline.name().clone(),
                    source_id,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    event,
                };
                // Per output event: look the sink up before allocating its name as a key.
                match routed.get_mut(name) {
                    Some(batch) => batch.push(routed_event),
                    None => drop(routed.insert(name.clone(), vec![routed_event])),
                }
            }
        }
    }

    /// Replays the dead letters asked for (`POST /api/dlq/{id}/replay`) into this step: a
    /// stage or routing failure runs again through its pipeline (or through routing), a sink
    /// failure goes to the pipeline's sinks again. The commit removes each replayed dead letter
    /// with its request, so a replay happens once however often it is asked for.
    fn replay(
        &mut self,
        commit: &mut PipelineCommit,
        routed: &mut BTreeMap<String, Vec<Routed>>,
    ) -> Result<(), StorageError> {
        for id in self.store.pending_replays()? {
            let Some(letter) = self.store.dead_letter(id)? else {
                commit.replayed.push(id);
                continue;
            };
            let index = letter
                .pipeline
                .as_ref()
                .and_then(|p| self.names.iter().position(|n| n == p));
            let source_id = letter.event.id;
            match (letter.reason.as_str(), index) {
                // Another worker's, or held back while its pipeline is stopped (replayed after
                // it restarts).
                (_, Some(i)) if !self.own[i] => continue,
                (_, Some(i)) if self.topology.pipelines()[i].stopped().is_some() => continue,
                (_, None) if !self.routes => continue,
                ("sink_error" | "sink_rejected", Some(i)) => {
                    self.to_sinks(i, source_id, vec![letter.event], routed)
                }
                (_, Some(i)) => {
                    let outcome = self.topology.pipelines_mut()[i].process(&letter.event);
                    self.record_failures(outcome.failures, commit);
                    self.to_sinks(i, source_id, outcome.outputs, routed);
                }
                // `no_route`, or a pipeline that no longer exists: route it afresh. Matching
                // pipelines of other workers get it handed over, to run with their state.
                (_, None) => {
                    for i in self.topology.matching(&letter.event) {
                        if !self.own[i] {
                            commit.handoffs.push(NewDeadLetter {
                                reason: letter.reason.clone(),
                                error: letter.error.clone(),
                                pipeline: Some(self.names[i].clone()),
                                stage: None,
                                attempts: letter.attempts,
                                event: letter.event.clone(),
                            });
                        }
                    }
                    let own = &self.own;
                    let Delivery {
                        outputs, failures, ..
                    } = self.topology.process_gated(
                        letter.event,
                        &|i| own.get(i) == Some(&true),
                        true,
                    );
                    self.record_failures(failures, commit);
                    for (i, events) in outputs {
                        self.to_sinks(i, source_id, events, routed);
                    }
                }
            }
            commit.replayed.push(id);
        }
        Ok(())
    }

    fn record_failures(&self, failures: Vec<crate::Failure>, commit: &mut PipelineCommit) {
        for failure in failures {
            commit.dead_letters.push(NewDeadLetter {
                reason: failure.reason.to_owned(),
                error: failure.error,
                pipeline: failure.pipeline.map(|p| p.to_string()),
                stage: failure.stage,
                attempts: failure.attempts,
                event: failure.event,
            });
        }
    }

    /// Updates the stage, routing and latency metrics after a committed step.
    fn report(&mut self, taken: &[Vec<u64>]) {
        let now = Timestamp::now().as_millis();
        // Once per pipeline and step, not per event: labels allocate and families hash.
        for (name, times) in self.names.iter().zip(taken).filter(|(_, t)| !t.is_empty()) {
            let matched = RouteLabels {
                pipeline: name.clone(),
                result: "matched",
            };
            let count = u64::try_from(times.len()).unwrap_or(u64::MAX);
            self.metrics.routed.get_or_create(&matched).inc_by(count);
            let labels = PipelineLabels {
                pipeline: name.clone(),
            };
            let latency = self.metrics.latency.get_or_create(&labels);
            for ingested in times {
                #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
                let seconds = now.saturating_sub(*ingested) as f64 / 1000.0;
                latency.observe(seconds);
            }
        }
        self.reported.resize_with(self.names.len(), Vec::new);
        let pipelines = self.topology.pipelines().iter().enumerate();
        for (i, pipeline) in pipelines.filter(|(i, _)| self.own[*i]) {
            let name = &self.names[i];
            let previous = &mut self.reported[i];
            for (j, (stage, counts)) in pipeline.stage_counts().enumerate() {
                if previous.len() <= j {
                    previous.push(StageCounts::default());
                }
                let before = previous[j];
                for (outcome, now, then) in [
                    ("in", counts.events_in, before.events_in),
                    ("out", counts.events_out, before.events_out),
                    ("failed", counts.failed, before.failed),
                ] {
                    if now > then {
                        let labels = StageLabels {
                            pipeline: name.clone(),
                            stage: stage.to_owned(),
                            outcome,
                        };
                        self.metrics
                            .stage_events
                            .get_or_create(&labels)
                            .inc_by(now - then);
                    }
                }
                previous[j] = counts;
            }
        }
    }
}

fn newest_id(store: &Store) -> Result<Option<EventId>, StorageError> {
    let range = ScanRange {
        order: Order::Desc,
        ..ScanRange::default()
    };
    store
        .scan(range, false)
        .next()
        .transpose()
        .map(|item| item.map(|(id, _)| id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Sink, SinkBuildContext, SinkConfig, SinkError};
    use crate::sinks::store::StoreConfig;
    use crate::stages::transform::TransformConfig;
    use colloquium_event::{Metadata, Reservation};
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
        fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
            Ok(Box::new(Flaky(cx.name.clone())))
        }
    }

    struct Flaky(Arc<str>);

    impl Sink for Flaky {
        fn send(
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
    fn pipelines_sharing_an_exclusive_sink_stay_on_one_worker() {
        let yaml = "sinks: {db: {type: store}, out: {type: file, path: out.ndjson}, web: {type: http, url: 'http://127.0.0.1:9/'}}\npipelines:\n  - {name: a, sinks: [out]}\n  - {name: b, sinks: [db]}\n  - {name: c, sinks: [db, out]}\n  - {name: d, sinks: [db]}\n  - {name: e, sinks: [web]}\n";
        let config = colloquium_config::from_str(yaml, &|_| None).unwrap();
        let on = |groups: &[Vec<bool>], name: &str| {
            let i = config
                .pipelines
                .iter()
                .position(|p| p.name == name)
                .unwrap();
            groups.iter().position(|g| g[i]).unwrap()
        };
        let groups = worker_groups(&config, 2);
        assert_eq!(groups.len(), 2);
        // `a` and `c` share the file sink; `store` is shared freely.
        assert_eq!(on(&groups, "a"), on(&groups, "c"));
        let sizes: Vec<usize> = groups
            .iter()
            .map(|g| g.iter().filter(|o| **o).count())
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 5);
        assert!(sizes.iter().all(|s| *s >= 2), "{sizes:?}");
        // Every pipeline runs on exactly one worker.
        for i in 0..5 {
            assert_eq!(groups.iter().filter(|g| g[i]).count(), 1);
        }
        assert_eq!(worker_groups(&config, 1).len(), 1);
        assert_eq!(
            worker_groups(&config, 16).len(),
            4,
            "one per component at most"
        );
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

    fn start(yaml: &str, registry: &Registry) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            sync: false,
            ..StoreOptions::new(dir.path())
        };
        let store = Store::open(
            options,
            StorageMetrics::register(&MetricsRegistry::default()),
        )
        .unwrap();
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
}
