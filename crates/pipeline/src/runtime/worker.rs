//! One worker: its loop, and one step (read, route, process, tick, send, commit).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use colloquium_config::Config;
use colloquium_event::{Event, EventId, IdGenerator, Lane, Reason, Timestamp};
use colloquium_router::{Balancer, Consumer, Lanes, Shed};
use colloquium_storage::{
    NewDeadLetter, PipelineCommit, ResultChange, StateChange, StorageError, Store,
};
use tokio::sync::watch;

use super::intake::{Intake, Taken};
use super::positions::Positions;
use super::{
    IDLE_POLL, MIN_STEP_EVENTS, REALTIME_RECENT, ROUTER, RuntimeError, STEP_EVENTS, STEP_TIME,
    STEP_TIME_IDLE_REALTIME, Shared,
};
use crate::context::{Kept, StateWrite};
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
/// every pipeline's `when`), and runs only the slots it owns.
pub(super) struct Slot {
    pub name: Arc<str>,
    pub own: bool,
    /// Whether it runs a step's events as a batch (it may wait), after the others.
    pub batched: bool,
    /// The last event it has passed in each lane.
    pub positions: Positions,
    /// Its progress through the lanes, for their depth.
    pub consumer: Arc<Consumer>,
    /// Events passed this step per lane (counted by the consumer), added after the commit.
    pub passed: [u64; 3],
    pub sinks: Vec<String>,
    pub balancer: Balancer,
    /// Stage counters already added to the metrics, per stage.
    pub reported: Vec<StageCounts>,
    /// Stages' own counters ([`crate::StageMetric`]) already added, by stage and name.
    pub reported_totals: BTreeMap<(String, &'static str), u64>,
    /// When its stages' `on_tick` is next due without events.
    pub next_tick: Instant,
}

/// Results of a step on their way to the sinks, by sink name.
pub(super) type RoutedBySink = BTreeMap<String, Vec<Routed>>;

/// Runs the pipelines it owns.
pub(super) struct Worker {
    pub store: Store,
    pub ids: Arc<IdGenerator>,
    pub slots: Vec<Slot>,
    /// Whether this worker records routing failures and keeps the router's checkpoint.
    pub routes: bool,
    pub topology: Topology,
    /// Per lane, the last event whose routing failures were recorded.
    pub router: Positions,
    pub plan: Plan,
    pub metrics: PipelineMetrics,
    pub intake: Intake,
    pub lanes: Lanes,
    /// Most events the next step takes: [`STEP_EVENTS`], fewer for a pipeline so slow that a
    /// full step would outlast [`STEP_TIME`] (a realtime event waits at most about one step).
    pub budget: usize,
    /// When this worker last took a realtime event.
    pub realtime_at: Option<Instant>,
    /// Sources with `persist: false`: their events take no lane capacity.
    pub volatile: Arc<std::collections::BTreeSet<String>>,
    /// Ids for what stages emit on a tick (their `store` rows are keyed by them).
    pub tick_ids: IdGenerator,
}

impl Worker {
    pub(super) fn new(plan: Plan, routes: bool, shared: &Shared) -> Result<Self, RuntimeError> {
        let volatile: Arc<std::collections::BTreeSet<String>> = Arc::new(
            (plan.config.sources.iter())
                .filter(|(_, s)| !s.persist)
                .map(|(name, _)| name.clone())
                .collect(),
        );
        let mut worker = Worker {
            store: shared.store.clone(),
            ids: shared.ids.clone(),
            slots: Vec::new(),
            routes,
            topology: Topology::build(&plan.config, &plan.registry)
                .map_err(RuntimeError::Config)?,
            router: Positions::default(),
            plan,
            metrics: shared.metrics.clone(),
            intake: Intake::log(&shared.store, &shared.ids, &shared.lanes, &volatile),
            volatile,
            lanes: shared.lanes.clone(),
            budget: STEP_EVENTS,
            realtime_at: None,
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
        let mut slots = Vec::with_capacity(plan.config.pipelines.len());
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
            let consumer = self.lanes.consumer(&p.name);
            if *own {
                // Only the owner says whether it holds its lanes back.
                consumer.set_active(pipeline.stopped().is_none());
            }
            slots.push(Slot {
                name: pipeline.name().clone(),
                own: *own,
                batched: pipeline.is_batched(),
                positions: Positions::of(&checkpoint),
                consumer,
                passed: [0; 3],
                sinks: p.sinks.clone(),
                balancer: Balancer::new(p.balance, p.balance_key.as_deref()),
                reported: Vec::new(),
                reported_totals: BTreeMap::new(),
                next_tick: Instant::now() + pipeline.tick_interval(),
            });
        }
        self.router = match self.store.checkpoint(ROUTER)? {
            Some(checkpoint) => Positions::of(&checkpoint),
            None => Positions::default(),
        };
        self.topology = topology;
        self.slots = slots;
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
                Ok(true) => continue, // catching up: no wait
                Ok(false) => backoff = Duration::from_millis(100),
                Err(e) => {
                    // The step was not committed, but processing it moved positions and stage
                    // state in memory: go back to the last commit, then retry.
                    tracing::error!(error = %e, "pipeline step failed; retrying from the last commit");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    match self.load() {
                        // What the failed step took from memory is gone: reread the log.
                        Ok(()) => {
                            self.intake =
                                Intake::log(&self.store, &self.ids, &self.lanes, &self.volatile)
                        }
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
        self.slots
            .iter()
            .filter(|l| l.own)
            .map(|l| l.next_tick.saturating_duration_since(now))
            .fold(IDLE_POLL, Duration::min)
    }

    /// Processes up to `budget` events, ticks, delivers and commits; returns whether it took
    /// a full step (more may be waiting).
    async fn step(&mut self) -> Result<bool, StepError> {
        let started = Instant::now();
        let budget = self.budget;
        let watermark = self.ids.watermark();
        let live = (self.topology.pipelines().iter().zip(&self.slots))
            .filter(|(p, slot)| slot.own && p.stopped().is_none())
            .map(|(_, slot)| slot.positions.low());
        let router = self.routes.then_some(self.router.low());
        // `None` (nothing processed) sorts first: read from the start of the log. Nothing
        // live and no routing: nothing to read.
        let from = live.chain(router).min();
        let Taken {
            events,
            shed,
            drained,
        } = match from {
            Some(after) => self
                .intake
                .next_events(&self.metrics, after, watermark, budget)?,
            None => Taken::default(),
        };
        let count = events.len() + shed.len();
        // Per lane, the step's last event: a prefix of each lane is taken.
        let mut lane_last = [None; 3];
        for event in events.iter().chain(shed.iter().map(|(e, _)| e)) {
            let lane = self.lanes.lane(event.metadata.priority).index();
            lane_last[lane] = lane_last[lane].max(Some(event.id));
        }
        if lane_last[Lane::Realtime.index()].is_some() {
            self.realtime_at = Some(started);
        }
        let last = lane_last.into_iter().max().flatten();
        let mut commit = PipelineCommit::default();
        let mut routed = RoutedBySink::new();
        self.replay(&mut commit, &mut routed).await?;
        // Per pipeline: ingest times (ms) and lanes of the events it took, for metrics after
        // the commit.
        let mut taken = vec![Vec::new(); self.slots.len()];
        let mut later: Vec<Vec<Event>> = vec![Vec::new(); self.slots.len()];
        for (event, cause) in shed {
            self.shed(event, cause, &mut commit);
        }
        for event in events {
            self.process(event, &mut commit, &mut routed, &mut taken, &mut later);
        }
        if let Some(last) = last {
            self.process_batched(later, lane_last, &mut commit, &mut routed, &mut taken)
                .await;
            // Lanes with nothing left below `last` move to it, so the log is never read
            // again from an idle lane's old position.
            for (slot, pipeline) in self.slots.iter_mut().zip(self.topology.pipelines()) {
                if slot.own && pipeline.stopped().is_none() {
                    slot.positions.pass_drained(drained, last);
                }
            }
            if self.routes {
                self.router.pass_drained(drained, last);
            }
        }
        self.tick(count > 0, &mut commit, &mut routed).await;
        let produced = !routed.is_empty() || !commit.dead_letters.is_empty();
        for (slot, pipeline) in self.slots.iter().zip(self.topology.pipelines_mut()) {
            if !slot.own {
                continue;
            }
            for (stage, write) in pipeline.state_changes() {
                commit.state.push(StateChange {
                    pipeline: slot.name.to_string(),
                    stage: stage.to_string(),
                    write: stored_write(write),
                });
            }
            let results = pipeline.results().into_iter();
            commit
                .results
                .extend(results.map(|kept| stored_result(&slot.name, kept)));
        }
        if last.is_none()
            && commit.replayed.is_empty()
            && !produced
            && commit.state.is_empty()
            && commit.results.is_empty()
        {
            return Ok(false);
        }
        // The step's time but its wait on sinks sizes the next one.
        let sending = Instant::now();
        self.send(routed, &mut commit).await?;
        let sent_in = sending.elapsed();
        for (slot, pipeline) in self.slots.iter().zip(self.topology.pipelines()) {
            if slot.own {
                let stopped = pipeline.stopped().map(str::to_owned);
                commit
                    .checkpoints
                    .push((slot.name.to_string(), slot.positions.checkpoint(stopped)));
            }
        }
        if self.routes && last.is_some() {
            commit
                .checkpoints
                .push((ROUTER.to_owned(), self.router.checkpoint(None)));
        }
        self.store.commit_pipelines(commit)?;
        for (slot, pipeline) in self.slots.iter_mut().zip(self.topology.pipelines()) {
            if slot.own {
                slot.consumer.passed(std::mem::take(&mut slot.passed));
                slot.consumer.set_active(pipeline.stopped().is_none());
            }
        }
        let elapsed = started.elapsed();
        self.metrics.step.observe(elapsed.as_secs_f64());
        self.report(&taken);
        // Sized to compute, not to waiting: smaller steps would not make a sink's round trips
        // or an async stage's calls shorter, only more of them.
        let waits = self.slots.iter().any(|s| s.own && s.batched);
        if count >= MIN_STEP_EVENTS && !waits {
            // Events that fit in the step time at this step's pace, halfway from the last budget.
            let realtime = self
                .realtime_at
                .is_some_and(|at| at.elapsed() < REALTIME_RECENT);
            let target = if realtime {
                STEP_TIME
            } else {
                STEP_TIME_IDLE_REALTIME
            };
            let per_event = elapsed.saturating_sub(sent_in).as_nanos() / count as u128;
            let fits = target.as_nanos() / per_event.max(1);
            let fits = usize::try_from(fits).unwrap_or(usize::MAX);
            self.budget = ((self.budget + fits) / 2).clamp(MIN_STEP_EVENTS, STEP_EVENTS);
        } else if waits {
            // A whole number of an async stage's rounds: a step of 1,000 at concurrency 64
            // ends with 40 calls in flight, not 64 (measured: 269 calls/s against 320 possible
            // at 200 ms a call).
            let rounds = self
                .slots
                .iter()
                .zip(self.topology.pipelines())
                .filter(|(slot, _)| slot.own)
                .map(|(_, pipeline)| pipeline.concurrency())
                .max()
                .unwrap_or(1);
            self.budget = (STEP_EVENTS / rounds).max(1) * rounds;
        }
        Ok(count >= budget)
    }

    /// Routes one event and runs it through the pipelines of this worker that are before it:
    /// in place, or set aside in `later` for a batched pipeline.
    fn process(
        &mut self,
        event: Event,
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
        taken: &mut [Vec<(u64, Lane)>],
        later: &mut [Vec<Event>],
    ) {
        let ingested = event.ingest_time.as_millis();
        let id = event.id;
        let lane = self.lanes.lane(event.metadata.priority);
        let counted = !self.volatile.contains(&event.metadata.source);
        let slots = &self.slots;
        let take = |i: usize| match slots.get(i) {
            Some(slot) if slot.own && slot.positions.before(lane, id) => {
                if slot.batched {
                    Take::Later
                } else {
                    Take::Now
                }
            }
            _ => Take::No,
        };
        let report_routing = self.routes && self.router.pass(lane, id);
        let Delivery {
            outputs,
            side,
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
            taken[*i].push((ingested, lane));
        }
        for (i, events) in outputs {
            self.to_sinks(i, id, events, routed);
        }
        for (i, side) in side {
            self.to_side_sinks(i, id, side, routed);
        }
        // Every in-place pipeline here that was before this event and is still running is now
        // past it (batched ones move at the end of the step).
        for (slot, pipeline) in self.slots.iter_mut().zip(self.topology.pipelines()) {
            if !slot.own || pipeline.stopped().is_some() {
                continue;
            }
            let moved = if slot.batched {
                slot.positions.before(lane, id)
            } else {
                slot.positions.pass(lane, id)
            };
            if moved && counted && slot.consumer.counts(id) {
                slot.passed[lane.index()] += 1;
            }
        }
    }

    /// Sheds `event` from its lane: each running pipeline here that had not passed it and
    /// that it would have gone to gets a dead letter (reason `overflow`, replayable), and
    /// every running pipeline here moves past it. Counted once per such dead letter.
    fn shed(&mut self, event: Event, cause: Shed, commit: &mut PipelineCommit) {
        let lane = self.lanes.lane(event.metadata.priority);
        let id = event.id;
        let capacity = self.lanes.spec(lane).capacity;
        let counted = !self.volatile.contains(&event.metadata.source);
        let mut letters = 0;
        for i in self.topology.matching(&event) {
            let (Some(slot), Some(pipeline)) =
                (self.slots.get(i), self.topology.pipelines().get(i))
            else {
                continue;
            };
            if slot.own && pipeline.stopped().is_none() && slot.positions.before(lane, id) {
                commit.dead_letters.push(NewDeadLetter {
                    reason: Reason::Overflow,
                    error: cause.error(lane, capacity),
                    pipeline: Some(slot.name.to_string()),
                    stage: None,
                    attempts: 0,
                    event: event.clone(),
                });
                letters += 1;
            }
        }
        self.lanes.shed(lane, cause, letters);
        for (slot, pipeline) in self.slots.iter_mut().zip(self.topology.pipelines()) {
            let running = slot.own && pipeline.stopped().is_none();
            if running && slot.positions.pass(lane, id) && counted && slot.consumer.counts(id) {
                slot.passed[lane.index()] += 1;
            }
        }
        if self.routes {
            self.router.pass(lane, id);
        }
    }

    /// Runs each batched pipeline over the events it was given this step, then moves it past
    /// them (and, in the step, past the rest of the drained lanes). One stopped by corrupt
    /// state keeps its position, and this step's results and state changes of it are
    /// dropped: nothing is blamed on the events.
    async fn process_batched(
        &mut self,
        later: Vec<Vec<Event>>,
        lane_last: [Option<EventId>; 3],
        commit: &mut PipelineCommit,
        routed: &mut RoutedBySink,
        taken: &mut [Vec<(u64, Lane)>],
    ) {
        for (i, events) in later.into_iter().enumerate() {
            let Some(pipeline) = self.topology.pipelines_mut().get_mut(i) else {
                continue;
            };
            let slot = &self.slots[i];
            if !slot.own || !pipeline.is_batched() || pipeline.stopped().is_some() {
                continue;
            }
            let ids: Vec<(EventId, u64, Lane)> = events
                .iter()
                .map(|e| {
                    let lane = self.lanes.lane(e.metadata.priority);
                    (e.id, e.ingest_time.as_millis(), lane)
                })
                .collect();
            let outcomes = if events.is_empty() {
                Vec::new()
            } else {
                pipeline.process_batch(events).await
            };
            if pipeline.corrupt() {
                drop(pipeline.state_changes());
                drop(pipeline.results());
                continue;
            }
            for ((id, ingested, lane), outcome) in ids.into_iter().zip(outcomes) {
                record_failures(outcome.failures, commit);
                taken[i].push((ingested, lane));
                self.to_sinks(i, id, outcome.outputs, routed);
                self.to_side_sinks(i, id, outcome.side, routed);
            }
            for (lane, last) in Lane::ALL.into_iter().zip(lane_last) {
                if let Some(last) = last {
                    self.slots[i].positions.pass(lane, last);
                }
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
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let Some(pipeline) = self.topology.pipelines_mut().get_mut(i) else {
                continue;
            };
            if !slot.own || pipeline.stopped().is_some() || !(stepped || slot.next_tick <= now) {
                continue;
            }
            let interval = pipeline.tick_interval();
            let outcomes = pipeline.tick(Timestamp::now()).await;
            self.slots[i].next_tick = now + interval;
            for outcome in outcomes {
                record_failures(outcome.failures, commit);
                if outcome.outputs.is_empty() && outcome.side.is_empty() {
                    continue;
                }
                let key = self.tick_ids.next_ids(Timestamp::now(), 1);
                if let Some(id) = key.first() {
                    self.to_sinks(i, *id, outcome.outputs, routed);
                    self.to_side_sinks(i, *id, outcome.side, routed);
                }
            }
        }
    }
}

/// A stage's state write as the store takes it.
fn stored_write(write: StateWrite) -> colloquium_storage::StateWrite {
    use colloquium_storage::StateWrite as Stored;
    match write {
        StateWrite::Put(key, value) => Stored::Put(key, value),
        StateWrite::Delete(key) => Stored::Delete(key),
        StateWrite::DeleteBelow(key) => Stored::DeleteBelow(key),
        StateWrite::DeleteRange(from, to) => Stored::DeleteRange(from, to),
    }
}

/// A kept result of pipeline `pipeline` as the store takes it.
fn stored_result(pipeline: &str, kept: Kept) -> ResultChange {
    ResultChange {
        pipeline: pipeline.to_owned(),
        stage: kept.stage.to_string(),
        table: kept.table.to_owned(),
        key: kept.row.key,
        at: kept.row.at,
        id: kept.row.id,
        value: kept.value,
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
