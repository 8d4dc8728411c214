//! One worker: its loop, and one step (read, route, process, tick, send, commit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use colloquium_config::Config;
use colloquium_event::{Event, EventId, IdGenerator, Reason, Timestamp};
use colloquium_router::Balancer;
use colloquium_storage::{
    Checkpoint, NewDeadLetter, PipelineCommit, StateChange, StorageError, Store,
};
use tokio::sync::watch;

use super::intake::Intake;
use super::{IDLE_POLL, ROUTER, RuntimeError, STEP_EVENTS, Shared};
use crate::events::{PipelineMetrics, RouteLabels};
use crate::pipeline::{Failure, StageCounts};
use crate::registry::Registry;
use crate::sink::Routed;
use crate::topology::{Delivery, Take, Topology};

/// Why a step did not commit (it is retried from the same checkpoints).
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

/// What a worker needs to rebuild its pipelines as of the last commit.
pub(super) struct Plan {
    pub config: Config,
    pub registry: Registry,
    /// Per pipeline (config order): whether this worker runs it.
    pub own: Vec<bool>,
}

/// One pipeline as a worker sees it. Every worker builds the whole topology (routing looks at
/// every pipeline's `when`), and runs only the lanes it owns.
pub(super) struct Lane {
    pub name: Arc<str>,
    pub own: bool,
    /// Whether it runs a step's events as a batch (it may wait), after the others.
    pub batched: bool,
    /// The last event it has processed (`None`: none yet).
    pub position: Option<EventId>,
    pub sinks: Vec<String>,
    pub balancer: Balancer,
    /// Stage counters already added to the metrics, per stage.
    pub reported: Vec<StageCounts>,
    /// When its stages' `on_tick` is next due without events.
    pub next_tick: Instant,
}

/// Results of a step on their way to the sinks, by sink name.
pub(super) type RoutedBySink = BTreeMap<String, Vec<Routed>>;

/// Runs the pipelines it owns.
pub(super) struct Worker {
    pub store: Store,
    pub ids: Arc<IdGenerator>,
    pub lanes: Vec<Lane>,
    /// Whether this worker records routing failures and keeps the router's checkpoint.
    pub routes: bool,
    pub topology: Topology,
    /// The last event whose routing failures were recorded.
    pub router: Option<EventId>,
    pub plan: Plan,
    pub metrics: PipelineMetrics,
    pub intake: Intake,
    /// Ids for what stages emit on a tick (their `store` rows are keyed by them).
    pub tick_ids: IdGenerator,
}

impl Worker {
    pub(super) fn new(plan: Plan, routes: bool, shared: &Shared) -> Result<Self, RuntimeError> {
        let mut worker = Worker {
            store: shared.store.clone(),
            ids: shared.ids.clone(),
            lanes: Vec::new(),
            routes,
            topology: Topology::build(&plan.config, &plan.registry)
                .map_err(RuntimeError::Config)?,
            router: None,
            plan,
            metrics: shared.metrics.clone(),
            intake: Intake::log(&shared.store, &shared.ids),
            tick_ids: IdGenerator::default(),
        };
        worker.load()?;
        Ok(worker)
    }

    /// Builds the topology afresh and loads positions and the state of the pipelines it owns
    /// from the store (every pipeline has a checkpoint: `launch` writes the first one). A
    /// pipeline whose stored state is unreadable is stopped with the reason; the others run.
    fn load(&mut self) -> Result<(), RuntimeError> {
        let plan = &self.plan;
        let mut topology =
            Topology::build(&plan.config, &plan.registry).map_err(RuntimeError::Config)?;
        let mut lanes = Vec::with_capacity(plan.config.pipelines.len());
        let pipelines = plan.config.pipelines.iter().zip(topology.pipelines_mut());
        for ((p, pipeline), own) in pipelines.zip(&plan.own) {
            let checkpoint = self.store.checkpoint(&p.name)?.unwrap_or_default();
            if *own {
                let restored =
                    pipeline.restore_state(|stage| self.store.stage_state(&p.name, stage));
                match restored {
                    Ok(()) => {}
                    Err(crate::pipeline::RestoreError::Load(e)) => return Err(e.into()),
                    Err(e) => {
                        tracing::error!(pipeline = %p.name, error = %e, "stopping the pipeline: its stored state is unreadable");
                        pipeline.stop(e.to_string());
                    }
                }
            }
            lanes.push(Lane {
                name: pipeline.name().clone(),
                own: *own,
                batched: pipeline.is_batched(),
                position: checkpoint.position,
                sinks: p.sinks.clone(),
                balancer: Balancer::new(p.balance, p.balance_key.as_deref()),
                reported: Vec::new(),
                next_tick: Instant::now() + pipeline.tick_interval(),
            });
        }
        self.router = self.store.checkpoint(ROUTER)?.and_then(|c| c.position);
        self.topology = topology;
        self.lanes = lanes;
        Ok(())
    }

    pub(super) async fn run(
        mut self,
        mut bell: watch::Receiver<u64>,
        stop: Arc<AtomicBool>,
        n: usize,
    ) {
        tracing::debug!(worker = n, "pipeline worker started");
        let mut backoff = Duration::from_millis(100);
        while !stop.load(Ordering::Acquire) {
            match self.step().await {
                Ok(read) if read >= STEP_EVENTS => continue, // catching up: no wait
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // The step was not committed, but processing it moved positions and stage
                    // state in memory: go back to the last commit, then retry.
                    tracing::error!(error = %e, "pipeline step failed; retrying from the last commit");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match self.load() {
                        // What the failed step took from memory is gone: reread the log.
                        Ok(()) => self.intake = Intake::log(&self.store, &self.ids),
                        Err(e) => tracing::error!(error = %e, "reloading pipelines failed"),
                    }
                    continue;
                }
            }
            let _ = tokio::time::timeout(self.idle_wait(), bell.changed()).await;
        }
    }

    /// How long to wait for new events: [`IDLE_POLL`] at most, less when a tick is due sooner.
    fn idle_wait(&self) -> Duration {
        let now = Instant::now();
        self.lanes
            .iter()
            .filter(|l| l.own)
            .map(|l| l.next_tick.saturating_duration_since(now))
            .fold(IDLE_POLL, Duration::min)
    }

    /// Processes up to [`STEP_EVENTS`] events, ticks, delivers and commits; returns how many
    /// events it read.
    async fn step(&mut self) -> Result<usize, StepError> {
        let started = Instant::now();
        let watermark = self.ids.watermark();
        let live = (self.topology.pipelines().iter().zip(&self.lanes))
            .filter(|(p, lane)| lane.own && p.stopped().is_none())
            .map(|(_, lane)| lane.position);
        let router = self.routes.then_some(self.router);
        // `None` (nothing processed) sorts first: read from the start of the log. Nothing
        // live and no routing: nothing to read.
        let from = live.chain(router).min();
        let events = match from {
            Some(after) => {
                self.intake
                    .next_events(&self.store, &self.ids, &self.metrics, after, watermark)?
            }
            None => Vec::new(),
        };
        let count = events.len();
        let last = events.last().map(|e| e.id);
        let mut commit = PipelineCommit::default();
        let mut routed = RoutedBySink::new();
        self.replay(&mut commit, &mut routed).await?;
        // Per pipeline: ingest times (ms) of the events it took, for metrics after the commit.
        let mut taken = vec![Vec::new(); self.lanes.len()];
        let mut later: Vec<Vec<Event>> = vec![Vec::new(); self.lanes.len()];
        for event in events {
            self.process(event, &mut commit, &mut routed, &mut taken, &mut later);
        }
        if let Some(last) = last {
            self.process_batched(last, later, &mut commit, &mut routed, &mut taken)
                .await;
        }
        self.tick(count > 0, &mut commit, &mut routed).await;
        let produced = !routed.is_empty() || !commit.dead_letters.is_empty();
        for (lane, pipeline) in self.lanes.iter().zip(self.topology.pipelines_mut()) {
            if !lane.own {
                continue;
            }
            for (stage, write) in pipeline.state_changes() {
                commit.state.push(StateChange {
                    pipeline: lane.name.to_string(),
                    stage: stage.to_string(),
                    write,
                });
            }
        }
        if last.is_none() && commit.replayed.is_empty() && !produced && commit.state.is_empty() {
            return Ok(0);
        }
        self.send(routed, &mut commit).await?;
        for (lane, pipeline) in self.lanes.iter().zip(self.topology.pipelines()) {
            if lane.own {
                commit.checkpoints.push((
                    lane.name.to_string(),
                    Checkpoint {
                        position: lane.position,
                        stopped: pipeline.stopped().map(str::to_owned),
                    },
                ));
            }
        }
        if self.routes
            && let Some(last) = last
        {
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

    /// Routes one event and runs it through the pipelines of this worker that are before it:
    /// in place, or set aside in `later` for a batched pipeline.
    fn process(
        &mut self,
        event: Event,
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
        taken: &mut [Vec<u64>],
        later: &mut [Vec<Event>],
    ) {
        let ingested = event.ingest_time.as_millis();
        let id = event.id;
        let lanes = &self.lanes;
        let take =
            |i: usize| match lanes.get(i) {
                Some(lane) if lane.own && lane.position.is_none_or(|at| at < id) => {
                    if lane.batched { Take::Later } else { Take::Now }
                }
                _ => Take::No,
            };
        let report_routing = self.routes && self.router.is_none_or(|r| r < id);
        let Delivery {
            outputs,
            failures,
            deferred,
            event,
            ..
        } = self.topology.process_gated(event, &take, report_routing);
        for failure in &failures {
            match (failure.reason, &failure.pipeline) {
                (Reason::NoRoute, _) => {
                    self.metrics.no_route.inc();
                }
                (Reason::RouteError, Some(p)) => {
                    let labels = RouteLabels {
                        pipeline: p.to_string(),
                        result: "route_error",
                    };
                    self.metrics.routed.get_or_create(&labels).inc();
                }
                _ => {}
            }
        }
        record_failures(failures, commit);
        if let Some(event) = event {
            let (last, others) = deferred.split_last().unwrap_or((&usize::MAX, &[]));
            for i in others {
                later[*i].push(event.clone());
            }
            if let Some(batch) = later.get_mut(*last) {
                batch.push(event);
            }
        }
        for (i, _) in &outputs {
            taken[*i].push(ingested);
        }
        for (i, events) in outputs {
            self.to_sinks(i, id, events, routed);
        }
        // Every in-place pipeline here that was before this event and is still running is now
        // past it (batched ones move at the end of the step).
        for (lane, pipeline) in self.lanes.iter_mut().zip(self.topology.pipelines()) {
            let running = lane.own && pipeline.stopped().is_none() && !lane.batched;
            if running && lane.position.is_none_or(|p| p < id) {
                lane.position = Some(id);
            }
        }
    }

    /// Runs each batched pipeline over the events it was given this step, then moves it past
    /// the step's `last` event. One stopped by corrupt state keeps its position, and this
    /// step's results and state changes of it are dropped: nothing is blamed on the events.
    async fn process_batched(
        &mut self,
        last: EventId,
        later: Vec<Vec<Event>>,
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
        taken: &mut [Vec<u64>],
    ) {
        for (i, events) in later.into_iter().enumerate() {
            let Some(pipeline) = self.topology.pipelines_mut().get_mut(i) else {
                continue;
            };
            let lane = &self.lanes[i];
            if !lane.own || !pipeline.is_batched() || pipeline.stopped().is_some() {
                continue;
            }
            let ids: Vec<(EventId, u64)> = events
                .iter()
                .map(|e| (e.id, e.ingest_time.as_millis()))
                .collect();
            let outcomes = if events.is_empty() {
                Vec::new()
            } else {
                pipeline.process_batch(events).await
            };
            if pipeline.corrupt() {
                drop(pipeline.state_changes());
                continue;
            }
            for ((id, ingested), outcome) in ids.into_iter().zip(outcomes) {
                record_failures(outcome.failures, commit);
                taken[i].push(ingested);
                self.to_sinks(i, id, outcome.outputs, routed);
            }
            let lane = &mut self.lanes[i];
            if lane.position.is_none_or(|p| p < last) {
                lane.position = Some(last);
            }
        }
    }

    /// Calls `on_tick` on the running pipelines it owns: every step with events (`stepped`),
    /// else when their `tick_interval` is due. What ticks emit is keyed by fresh ids.
    async fn tick(
        &mut self,
        stepped: bool,
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
    ) {
        let now = Instant::now();
        for i in 0..self.lanes.len() {
            let lane = &self.lanes[i];
            let Some(pipeline) = self.topology.pipelines_mut().get_mut(i) else {
                continue;
            };
            if !lane.own || pipeline.stopped().is_some() || !(stepped || lane.next_tick <= now) {
                continue;
            }
            let interval = pipeline.tick_interval();
            let outcomes = pipeline.tick(Timestamp::now()).await;
            self.lanes[i].next_tick = now + interval;
            for outcome in outcomes {
                record_failures(outcome.failures, commit);
                if outcome.outputs.is_empty() {
                    continue;
                }
                let key = self.tick_ids.next_ids(Timestamp::now(), 1);
                if let Some(id) = key.first() {
                    self.to_sinks(i, *id, outcome.outputs, routed);
                }
            }
        }
    }
}

/// Adds pipeline and routing failures to the step's dead letters.
pub(super) fn record_failures(failures: Vec<Failure>, commit: &mut PipelineCommit) {
    for failure in failures {
        commit.dead_letters.push(NewDeadLetter {
            reason: failure.reason,
            error: failure.error,
            pipeline: failure.pipeline.map(|p| p.to_string()),
            stage: failure.stage,
            attempts: failure.attempts,
            event: failure.event,
        });
    }
}
