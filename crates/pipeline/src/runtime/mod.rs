//! Running pipelines on a node: read the log from each pipeline's checkpoint, process, commit.
//!
//! - [`placement`]: which pipelines share a worker. Pipelines whose sinks or stages may wait
//!   get a worker of their own, so a held endpoint or a slow model delays nobody else.
//! - [`worker`]: one worker's loop and step: read, route, process, tick, send, commit.
//! - [`intake`]: where a worker's next events come from (the log, or memory once caught up).
//! - [`fanout`]: results to their sinks, balanced.
//! - [`replay`]: dead letters asked for again (`POST /api/dlq/{id}/replay`).
//! - [`report`]: stage, routing and latency metrics after each commit.
//! - [`monitor`]: each pipeline's lag and health, measured whatever its worker is doing.
//! - [`layout`]: stage state keyed by stable stage id; removed stages' rows deleted.
//!
//! Each worker runs on a thread of its own, on a single-threaded Tokio runtime. Each step a
//! worker reads up to [`STEP_EVENTS`] events, in id order, after the lowest checkpoint of its
//! pipelines and strictly below the id watermark (every id below it is settled: stored or never
//! to be, see `IdGenerator::watermark`), so an event committed late below a newer one is never
//! skipped. Every pipeline of the worker whose checkpoint is before an event runs it; the step's
//! `store` outputs, dead letters, stage-state changes and new checkpoints are then written in
//! one atomic batch (`Store::commit_pipelines`). After a crash, each pipeline resumes from its
//! checkpoint: nothing acknowledged is skipped and no `store` output is written twice. One
//! worker also records routing failures (`no_route`, `route_error`) under its own checkpoint.
//!
//! Workers wake when the ingest path reports a commit (`RuntimeHandle::notify`), at least every
//! [`IDLE_POLL`], and when a pipeline's `tick_interval` is due.

mod fanout;
mod intake;
mod layout;
mod monitor;
mod placement;
mod positions;
mod replay;
mod report;
mod worker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use colloquium_config::{Config, ConfigError, StartFrom};
use colloquium_event::{EventId, IdGenerator};
use colloquium_router::Lanes;
use colloquium_storage::{Checkpoint, Order, PipelineCommit, ScanRange, StorageError, Store};
use colloquium_telemetry::health::HealthBoard;
use tokio::sync::watch;

use crate::events::PipelineMetrics;
use crate::registry::Registry;
use crate::topology::Topology;
use monitor::Monitor;
use worker::{Plan, Worker};

/// Most events read and committed in one step.
pub const STEP_EVENTS: usize = 1_000;
/// How long a step aims to compute at most while realtime events flow (one was taken in the
/// last [`REALTIME_RECENT`]): a pipeline whose events cost more than 2 µs each then takes fewer
/// per step, so a realtime event waits behind little batch work. Waiting on sinks does not
/// count, and workers of pipelines that wait (async stages, retries) keep full steps.
pub const STEP_TIME: Duration = Duration::from_millis(2);
/// How long a step aims to take at most otherwise (fewer, larger commits).
pub const STEP_TIME_IDLE_REALTIME: Duration = Duration::from_millis(20);
/// How recently a realtime event must have been taken for steps to be sized to [`STEP_TIME`].
pub const REALTIME_RECENT: Duration = Duration::from_secs(1);
/// Fewest events a step is sized to (a step's commit has a cost of its own).
pub const MIN_STEP_EVENTS: usize = 50;
/// Longest a worker sleeps without a notification.
pub const IDLE_POLL: Duration = Duration::from_millis(200);
/// Checkpoint key of the router (`@` cannot start a pipeline name).
const ROUTER: &str = "@router";
/// Longest a stopping worker may take to finish its step.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why pipelines could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The config does not build.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigError>),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The pipelines' threads could not be started.
    #[error("starting the pipeline workers: {0}")]
    Thread(std::io::Error),
}

/// The running pipelines. Dropping it without [`Runtime::stop`] cancels the workers at their
/// next wait; the last commit stands.
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
    lanes: Lanes,
}

/// A worker's thread, which drives it on its own single-threaded Tokio runtime.
struct RunningWorker {
    stop: Arc<AtomicBool>,
    /// Dropped (or sent) to cancel the worker where it waits.
    cancel: tokio::sync::oneshot::Sender<()>,
    /// Closes when the worker's loop has returned.
    done: std::sync::mpsc::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Wakes the workers after new events are durable. Cheap to clone and to call per request.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    bell: Arc<watch::Sender<u64>>,
}

impl Default for RuntimeHandle {
    fn default() -> Self {
        RuntimeHandle {
            bell: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl RuntimeHandle {
    /// Tells the workers there is something new in the log.
    pub fn notify(&self) {
        self.bell.send_modify(|rung| *rung = rung.wrapping_add(1));
    }
}

impl Runtime {
    /// Builds the topology and starts the workers on the store's log. Metrics go to `metrics`,
    /// each pipeline's health to `board`, its progress through the lanes to `lanes`. With no pipelines in `config` no worker runs until a
    /// [`Runtime::reload`] adds some.
    pub fn start(
        config: &Config,
        registry: &Registry,
        store: Store,
        ids: Arc<IdGenerator>,
        metrics: PipelineMetrics,
        board: HealthBoard,
        lanes: Lanes,
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
                lanes,
            },
            config: config.clone(),
            workers: Vec::new(),
            monitor,
        };
        layout::migrate(&runtime.shared.store, config)?;
        runtime.forget_removed(config)?;
        runtime.workers = runtime.launch(config)?;
        runtime.monitor.watch(pipeline_names(config));
        Ok(runtime)
    }

    /// A handle that wakes the workers.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Swaps in `config`'s pipelines. The new topology is built first; if it does not build,
    /// the running pipelines are untouched. Otherwise each worker finishes its step (a commit)
    /// and stops, and new ones start from the checkpoints: pipelines that stay keep their
    /// position, and every stage whose id is unchanged keeps its state, so no event is skipped
    /// or processed twice; removed pipelines and stages are forgotten (checkpoint and state;
    /// outputs stay); added ones start from their `start_from`. If the new workers cannot
    /// start, the old config is started again.
    pub fn reload(&mut self, config: &Config) -> Result<(), RuntimeError> {
        Topology::build(config, &self.shared.registry).map_err(RuntimeError::Config)?;
        self.halt();
        let kept: BTreeSet<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        // Stop measuring the removed ones before their reports go.
        self.monitor.watch(
            self.config
                .pipelines
                .iter()
                .filter(|p| kept.contains(p.name.as_str()))
                .map(|p| p.name.clone())
                .collect(),
        );
        for pipeline in &self.config.pipelines {
            if !kept.contains(pipeline.name.as_str()) {
                self.shared.board.remove(&pipeline.name);
            }
        }
        self.forget_removed(config)?;
        let names: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        self.shared.lanes.retain(&names);
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

    /// Forgets what the store keeps for pipelines and stages `config` does not have (removed
    /// while the node was down, or by a reload): a stale checkpoint would hold retention back
    /// forever, and orphaned state rows would never be read again. The router's checkpoint
    /// goes too when there are no pipelines (pipelines added later start it at the head).
    fn forget_removed(&self, config: &Config) -> Result<(), StorageError> {
        let store = &self.shared.store;
        let kept: BTreeSet<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        for name in store.checkpointed()? {
            let router_kept = name == ROUTER && !kept.is_empty();
            if !router_kept && !kept.contains(name.as_str()) {
                tracing::info!(pipeline = %name, "forgetting a pipeline that is no longer configured");
                store.forget_pipeline(&name)?;
            }
        }
        layout::forget_removed_stages(store, config)
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
        write_first_checkpoints(store, config)?;
        let topology =
            Topology::build(config, &self.shared.registry).map_err(RuntimeError::Config)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let groups = placement::worker_groups(config, &topology, &self.shared.registry, threads);
        let mut workers = Vec::with_capacity(groups.len());
        for (n, group) in groups.into_iter().enumerate() {
            let plan = Plan {
                config: config.clone(),
                registry: self.shared.registry.clone(),
                own: group.own,
            };
            let worker = match Worker::new(plan, group.routes, &self.shared) {
                Ok(worker) => worker,
                Err(e) => {
                    stop_workers(&self.handle, workers);
                    return Err(e);
                }
            };
            match spawn(worker, self.handle.bell.subscribe(), n) {
                Ok(running) => workers.push(running),
                Err(e) => {
                    stop_workers(&self.handle, workers);
                    return Err(RuntimeError::Thread(e));
                }
            }
        }
        Ok(workers)
    }
}

/// Writes down where each new pipeline starts before anything runs, so a crash or a reload
/// before its first step does not move it. The router starts at the head when new: history
/// is not dead-lettered as `no_route`.
fn write_first_checkpoints(store: &Store, config: &Config) -> Result<(), StorageError> {
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
        // A stopped pipeline retries from its checkpoint after a reload or restart, so its
        // health must not still say stopped until its next step.
        let checkpoint = match store.checkpoint(name)? {
            None => Checkpoint {
                position,
                ..Checkpoint::default()
            },
            Some(
                stopped @ Checkpoint {
                    stopped: Some(_), ..
                },
            ) => Checkpoint {
                stopped: None,
                ..stopped
            },
            Some(_) => continue,
        };
        first.checkpoints.push((name.to_owned(), checkpoint));
    }
    if !first.checkpoints.is_empty() {
        store.commit_pipelines(first)?;
    }
    Ok(())
}

fn pipeline_names(config: &Config) -> Vec<String> {
    config.pipelines.iter().map(|p| p.name.clone()).collect()
}

/// Starts a worker on a thread of its own, driving it on a single-threaded Tokio runtime: a
/// worker that computes is scheduled by the kernel like any thread, and one that waits (a
/// sink's request, a backoff, an async stage) parks its own thread only.
fn spawn(worker: Worker, bell: watch::Receiver<u64>, n: usize) -> std::io::Result<RunningWorker> {
    let stop = Arc::new(AtomicBool::new(false));
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let (finished, done) = std::sync::mpsc::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name(format!("pipelines-{n}"))
        .spawn({
            let stop = stop.clone();
            move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = worker.run(bell, stop, n) => {}
                        _ = cancelled => {}
                    }
                });
                drop(finished);
            }
        })?;
    Ok(RunningWorker {
        stop,
        cancel,
        done,
        thread,
    })
}

/// Lets each worker finish its step, then joins them; one still waiting after [`STOP_GRACE`]
/// (a sink held open, a retry backoff) is cancelled where it waits. Nothing of its step was
/// committed, so the step is redone at the next start (at-least-once delivery).
fn stop_workers(handle: &RuntimeHandle, workers: Vec<RunningWorker>) {
    for worker in &workers {
        worker.stop.store(true, Ordering::Release);
    }
    handle.notify();
    let deadline = std::time::Instant::now() + STOP_GRACE;
    for worker in workers {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = worker.done.recv_timeout(left) {
            tracing::warn!(grace = ?STOP_GRACE, "a pipeline worker is still waiting on a sink or stage; cancelling its step");
            let _ = worker.cancel.send(());
        }
        if worker.thread.join().is_err() {
            tracing::error!("a pipeline worker panicked");
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
mod tests;
