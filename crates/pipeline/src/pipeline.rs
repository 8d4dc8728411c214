//! One pipeline: its stages in order, and what happens when one fails (`on_error`).
//!
//! An event enters, each stage turns every event it gets into zero or more events, and what
//! leaves the last stage are the pipeline's outputs. When a stage fails on an event, the error's
//! fault decides first: our own (corrupt stage state) stops the pipeline and leaves the event
//! unprocessed. Otherwise the stage's `on_error` (or the pipeline's) does: `dlq` records a
//! [`Failure`] holding the event as it entered the pipeline, so a replay after a fix starts from
//! the beginning; `skip` counts and drops it; `retry` runs the stage again with `retry_count`
//! raised (visible to scripts) after a doubling backoff, then dead-letters it; `stop_pipeline`
//! halts this pipeline. One poison event never halts a pipeline unless `stop_pipeline` was
//! chosen.
//!
//! Most pipelines run each event through every stage in place ([`Pipeline::process`]). One that
//! must wait (an async stage, or a retry backoff) runs a whole step's events stage by stage
//! ([`Pipeline::process_batch`]): each stage still sees its events in input order, an async
//! stage has up to its `concurrency` calls in flight, and outputs come back in input order.
//! There `stop_pipeline` takes effect at the end of the step.

use std::sync::Arc;
use std::time::Duration;

use colloquium_config::{ConfigError, OnError, PipelineConfig, ScriptLibrary};
use colloquium_event::{Event, Fault, Reason, Timestamp};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::context::{Effects, Kept, StageContext, StageMetric, StateWrite};
use crate::registry::Registry;
use crate::stage::{BuildContext, BuiltStage, CallResult, Failed, SideOutput, StageError};
use crate::tap::{TapPoint, Taps};

/// How a pipeline waits out a retry backoff (tests and `colloquium test` do not wait).
pub type Sleeper = fn(Duration) -> BoxFuture<'static, ()>;

pub(crate) fn tokio_sleep(wait: Duration) -> BoxFuture<'static, ()> {
    Box::pin(tokio::time::sleep(wait))
}

/// A built pipeline.
pub struct Pipeline {
    name: Arc<str>,
    stages: Vec<Slot>,
    sleep: Sleeper,
    stopped: Option<String>,
    tick_interval: Duration,
    /// Whether it must run a step's events as a batch (see the module docs).
    batched: bool,
    /// Whether it stopped on our own fault (corrupt state) rather than an event's.
    corrupt: bool,
    /// Where its outputs (what goes to its sinks) can be watched.
    outputs_tap: Option<Arc<TapPoint>>,
}

struct Slot {
    /// The stage's identity (`id`, or the default), for state, failures and metrics.
    id: Arc<str>,
    stage: BuiltStage,
    /// The sinks it sends to past the pipeline.
    side_sinks: Vec<String>,
    on_error: OnError,
    /// Events in and out, for metrics and tests.
    counts: StageCounts,
    /// What it did besides emitting, since the pipeline last took it.
    effects: Effects,
    /// Where its outputs can be watched (a node's pipelines; not `validate`'s or `test`'s).
    tap: Option<Arc<TapPoint>>,
}

/// Per-stage counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageCounts {
    /// Events given to the stage.
    pub events_in: u64,
    /// Events it emitted.
    pub events_out: u64,
    /// Events it failed on (after retries).
    pub failed: u64,
}

/// Why a pipeline's state could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError<E> {
    /// Reading the stored entries failed.
    #[error("reading stage state: {0}")]
    Load(E),
    /// A stage rejected its entries.
    #[error("stage `{stage}`: {error}")]
    Stage {
        /// The stage's id.
        stage: Arc<str>,
        /// What it said.
        error: crate::StageError,
    },
}

/// An event a pipeline could not process, for the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// The pipeline (`None` for `no_route`).
    pub pipeline: Option<Arc<str>>,
    /// The stage's id, e.g. `transform` (`None` for routing).
    pub stage: Option<String>,
    /// The full error message.
    pub error: String,
    /// How many times the stage was tried.
    pub attempts: u32,
    /// The event as it entered the pipeline (or the router).
    pub event: Event,
}

/// What one event became.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events out of the last stage, in order.
    pub outputs: Vec<Event>,
    /// Events stages sent to sinks of their own ([`crate::stage::SideOutput`]), in order.
    pub side: Vec<SideOutput>,
    /// Events dead-lettered.
    pub failures: Vec<Failure>,
    /// Events skipped by `on_error: skip`.
    pub skipped: u64,
}

impl Pipeline {
    /// Builds `config` (at key path `at`) with the stage kinds of `registry`.
    pub fn build(
        config: &PipelineConfig,
        at: &str,
        registry: &Registry,
        scripts: &ScriptLibrary,
    ) -> Result<Self, Vec<ConfigError>> {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let mut stages = Vec::new();
        let mut errors = Vec::new();
        let ids = config.stage_ids();
        let taps = registry.service::<Taps>();
        for (i, (component, id)) in config.stages.iter().zip(ids).enumerate() {
            let id: Arc<str> = Arc::from(id);
            let cx = BuildContext {
                scripts,
                pipeline: name.clone(),
                id: id.clone(),
                at: format!("{at}.stages[{i}]"),
                clock: registry.clock(),
                sleep: registry.sleep(),
                registry,
            };
            match registry.build_stage(component, &cx) {
                Ok(built) => stages.push(Slot {
                    tap: taps.as_ref().map(|taps| taps.point(&name, &id)),
                    id,
                    stage: built.stage,
                    side_sinks: built.side_sinks,
                    on_error: component.on_error.unwrap_or(config.on_error),
                    counts: StageCounts::default(),
                    effects: Effects::default(),
                }),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let outputs_tap = taps.as_ref().map(|taps| {
            taps.built(&name, stages.iter().map(|s| s.id.clone()).collect());
            taps.point(&name, &Arc::from(crate::tap::OUTPUTS))
        });
        let batched = stages.iter().any(|s| {
            let waits = matches!(s.on_error, OnError::Retry { max_attempts, backoff } if max_attempts > 1 && !backoff.is_zero());
            waits || matches!(s.stage, BuiltStage::Async(_))
        });
        Ok(Pipeline {
            name,
            stages,
            sleep: tokio_sleep,
            stopped: None,
            tick_interval: config.tick_interval,
            batched,
            corrupt: false,
            outputs_tap,
        })
    }

    /// The sinks each stage sends side outputs to, by stage index (only stages that do).
    pub fn side_sinks(&self) -> impl Iterator<Item = (usize, &[String])> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.side_sinks.is_empty())
            .map(|(i, slot)| (i, slot.side_sinks.as_slice()))
    }

    /// Replaces how retries wait (tests and `colloquium test` don't wait).
    pub fn set_sleep(&mut self, sleep: Sleeper) {
        self.sleep = sleep;
    }

    /// A sleeper that does not wait.
    pub fn no_wait(_: Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The pipeline's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Why the pipeline stopped (`on_error: stop_pipeline`, or corrupt state), if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Stops the pipeline: it takes nothing more until it is started again.
    pub fn stop(&mut self, why: String) {
        self.stopped.get_or_insert(why);
    }

    /// Whether it stopped on our own fault (corrupt state): the caller must not commit what
    /// the failing step produced for it.
    pub fn corrupt(&self) -> bool {
        self.corrupt
    }

    /// Whether a step's events must go through [`Pipeline::process_batch`] (it may wait).
    pub fn is_batched(&self) -> bool {
        self.batched
    }

    /// The most calls one of its async stages keeps in flight (1 without one): a step of a
    /// multiple of it keeps them all busy to its end.
    pub fn concurrency(&self) -> usize {
        self.stages
            .iter()
            .filter_map(|s| match &s.stage {
                BuiltStage::Async(stage) => Some(stage.concurrency().max(1)),
                BuiltStage::Sync(_) => None,
            })
            .max()
            .unwrap_or(1)
    }

    /// How often `on_tick` runs without events.
    pub fn tick_interval(&self) -> Duration {
        self.tick_interval
    }

    /// Counters per stage, by stage id.
    pub fn stage_counts(&self) -> impl Iterator<Item = (&str, StageCounts)> {
        self.stages.iter().map(|s| (&*s.id, s.counts))
    }

    /// Every stage's kept results since the last call, in order (after
    /// [`Pipeline::state_changes`], which may keep some).
    pub fn results(&mut self) -> Vec<Kept> {
        let mut all = Vec::new();
        for slot in &mut self.stages {
            all.extend(std::mem::take(&mut slot.effects.results));
        }
        all
    }

    /// What each stage last reported about itself, by stage id.
    pub fn stage_metrics(&self) -> Vec<(&str, StageMetric)> {
        let slots = self.stages.iter();
        slots
            .flat_map(|slot| slot.effects.metrics.iter().map(|m| (&*slot.id, *m)))
            .collect()
    }

    /// Every stage's timings since the last call, by stage id.
    pub fn stage_timings(&mut self) -> Vec<(&str, &'static str, Duration)> {
        let mut all = Vec::new();
        for slot in &mut self.stages {
            let taken = slot.effects.timings.drain(..);
            all.extend(taken.map(|(name, d)| (&*slot.id, name, d)));
        }
        all
    }

    /// Every stage's scores since the last call, by stage id.
    pub fn stage_scores(&mut self) -> Vec<(&str, &'static str, f64)> {
        let mut all = Vec::new();
        for slot in &mut self.stages {
            let taken = slot.effects.scores.drain(..);
            all.extend(taken.map(|(name, x)| (&*slot.id, name, x)));
        }
        all
    }

    /// Loads each stage's stored state; `load(id)` returns a stage's entries.
    pub fn restore_state<E>(
        &mut self,
        mut load: impl FnMut(&str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, E>,
    ) -> Result<(), RestoreError<E>> {
        for slot in &mut self.stages {
            let entries = load(&slot.id).map_err(RestoreError::Load)?;
            if entries.is_empty() {
                continue;
            }
            let restored = match &mut slot.stage {
                BuiltStage::Sync(stage) => stage.restore_state(entries),
                BuiltStage::Async(stage) => stage.restore_state(entries),
            };
            restored.map_err(|error| RestoreError::Stage {
                stage: slot.id.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Checkpoints every stage ([`crate::Stage::checkpoint`]) and returns their state
    /// writes since the last call, as `(stage id, write)`.
    pub fn state_changes(&mut self) -> Vec<(Arc<str>, StateWrite)> {
        let mut all = Vec::new();
        let mut ignored = Vec::new();
        for slot in &mut self.stages {
            let mut cx = StageContext::new(&mut ignored, &mut slot.effects, &slot.id);
            match &mut slot.stage {
                BuiltStage::Sync(stage) => stage.checkpoint(&mut cx),
                BuiltStage::Async(stage) => stage.checkpoint(&mut cx),
            }
            ignored.clear();
            // Taken, not drained: a burst's capacity is not held on to between steps.
            let writes = std::mem::take(&mut slot.effects.state).into_iter();
            all.extend(writes.map(|w| (slot.id.clone(), w)));
        }
        all
    }

    /// Runs one event through every stage. A stopped pipeline takes nothing (the caller holds
    /// the event back, e.g. by not moving its checkpoint). The event is borrowed: the pipeline
    /// works on one copy, and copies it again only to dead-letter it. A batched pipeline runs
    /// it as a batch of one (retries do not wait unless a Tokio runtime drives the sleeper).
    pub fn process(&mut self, original: &Event) -> Outcome {
        if self.stopped.is_some() {
            return Outcome::default();
        }
        self.process_owned(original.clone())
    }

    /// Like [`Pipeline::process`], taking the event: the last pipeline an event goes to moves
    /// it in. Only a pipeline of several stages keeps a copy, to dead-letter the event as it
    /// entered when a later stage fails; a failing first stage hands it back as it was given.
    pub fn process_owned(&mut self, event: Event) -> Outcome {
        if self.stopped.is_some() {
            return Outcome::default();
        }
        if self.batched {
            let mut outcomes = futures::executor::block_on(self.process_batch(vec![event]));
            return outcomes.pop().unwrap_or_default();
        }
        let original = (self.stages.len() > 1).then(|| event.clone());
        let retries = event.metadata.retry_count;
        let mut outcome = Outcome::default();
        let mut batch = vec![event];
        for index in 0..self.stages.len() {
            let mut next = Vec::with_capacity(batch.len());
            for event in batch {
                let slot = &mut self.stages[index];
                slot.counts.events_in += 1;
                let before = next.len();
                let result = run_sync(slot, event, &mut next);
                let slot = &mut self.stages[index];
                outcome.side.append(&mut slot.effects.side);
                slot.counts.events_out += u64::try_from(next.len() - before).unwrap_or(0);
                if let Err((failed, attempts)) = result {
                    slot.counts.failed += 1;
                    let dead = match &original {
                        Some(original) => original.clone(),
                        None => {
                            // Retries raised its count: as it entered, it had its own.
                            let mut event = failed.event;
                            event.metadata.retry_count = retries;
                            event
                        }
                    };
                    if self.fail(index, failed.error, attempts, dead, &mut outcome) {
                        return outcome;
                    }
                }
            }
            if let Some(tap) = &self.stages[index].tap {
                tap.offer(&next);
            }
            batch = next;
        }
        if let Some(tap) = &self.outputs_tap {
            tap.offer(&batch);
        }
        outcome.outputs = batch;
        outcome
    }

    /// Applies stage `index`'s policy to a failure of `original`; returns whether the pipeline
    /// stopped.
    fn fail(
        &mut self,
        index: usize,
        error: StageError,
        attempts: u32,
        original: Event,
        outcome: &mut Outcome,
    ) -> bool {
        let slot = &self.stages[index];
        if error.fault() == Fault::Internal {
            tracing::error!(pipeline = %self.name, stage = %slot.id, %error, "stopping the pipeline");
            self.stop(format!("{}: {error}", slot.id));
            self.corrupt = true;
            return true;
        }
        let failure = Failure {
            reason: error.reason(),
            pipeline: Some(self.name.clone()),
            stage: Some(slot.id.to_string()),
            error: error.to_string(),
            attempts,
            event: original,
        };
        match slot.on_error {
            OnError::Skip => outcome.skipped += 1,
            OnError::Dlq | OnError::Retry { .. } => outcome.failures.push(failure),
            OnError::StopPipeline => {
                self.stop(format!("{}: {}", slot.id, failure.error));
                outcome.failures.push(failure);
                return true;
            }
        }
        false
    }

    /// Runs a step's events stage by stage, one [`Outcome`] per input in order. Async stages
    /// have up to their concurrency in flight; retries wait with the pipeline's sleeper.
    pub async fn process_batch(&mut self, inputs: Vec<Event>) -> Vec<Outcome> {
        let items = inputs.iter().cloned().enumerate().collect();
        self.run_from(0, &inputs, items).await
    }

    /// Calls every stage's `on_tick`; what a stage emits goes through the stages after it.
    /// A failing `on_tick` stops the pipeline (no event is to blame). Each output is its own
    /// [`Outcome`], its input being itself.
    pub async fn tick(&mut self, now: Timestamp) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        if self.stopped.is_some() {
            return outcomes;
        }
        for index in 0..self.stages.len() {
            let mut emitted = Vec::new();
            let slot = &mut self.stages[index];
            let mut cx = StageContext::new(&mut emitted, &mut slot.effects, &slot.id);
            let ticked = match &mut slot.stage {
                BuiltStage::Sync(stage) => stage.on_tick(now, &mut cx),
                BuiltStage::Async(stage) => stage.on_tick(now, &mut cx),
            };
            // A tick's side outputs are their own outcome (no input to follow).
            let side = std::mem::take(&mut slot.effects.side);
            if !side.is_empty() {
                outcomes.push(Outcome {
                    side,
                    ..Outcome::default()
                });
            }
            slot.counts.events_out += u64::try_from(emitted.len()).unwrap_or(0);
            if let Some(tap) = &slot.tap {
                tap.offer(&emitted);
            }
            if let Err(error) = ticked {
                let id = slot.id.clone();
                tracing::error!(pipeline = %self.name, stage = %id, %error, "on_tick failed; stopping the pipeline");
                self.stop(format!("{id} (on_tick): {error}"));
                return outcomes;
            }
            if emitted.is_empty() {
                continue;
            }
            if index + 1 == self.stages.len() {
                if let Some(tap) = &self.outputs_tap {
                    tap.offer(&emitted);
                }
                // Nothing runs after the last stage: no copy is kept to blame.
                outcomes.extend(emitted.into_iter().map(|e| Outcome {
                    outputs: vec![e],
                    ..Outcome::default()
                }));
                continue;
            }
            let items = emitted.iter().cloned().enumerate().collect();
            outcomes.extend(self.run_from(index + 1, &emitted, items).await);
        }
        outcomes
    }

    /// Runs `items` (input index, event) through the stages from `first` on.
    async fn run_from(
        &mut self,
        first: usize,
        originals: &[Event],
        mut items: Vec<(usize, Event)>,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = originals.iter().map(|_| Outcome::default()).collect();
        for index in first..self.stages.len() {
            let sleep = self.sleep;
            let slot = &mut self.stages[index];
            slot.counts.events_in += u64::try_from(items.len()).unwrap_or(0);
            let mut failed = Vec::new();
            let next = match &mut slot.stage {
                BuiltStage::Sync(_) => {
                    let mut next = Vec::with_capacity(items.len());
                    for (k, event) in items {
                        let mut out = Vec::new();
                        match run_waiting(slot, event, &mut out, sleep).await {
                            Ok(()) => {
                                outcomes[k].side.append(&mut slot.effects.side);
                                next.extend(out.into_iter().map(|e| (k, e)));
                            }
                            Err((f, attempts)) => failed.push((k, f.error, attempts)),
                        }
                    }
                    next
                }
                BuiltStage::Async(_) => run_async(slot, items, sleep, &mut failed).await,
            };
            let slot = &mut self.stages[index];
            slot.counts.events_out += u64::try_from(next.len()).unwrap_or(0);
            slot.counts.failed += u64::try_from(failed.len()).unwrap_or(0);
            if let Some(tap) = &slot.tap {
                tap.offer(next.iter().map(|(_, e)| e));
            }
            for (k, error, attempts) in failed {
                self.fail(
                    index,
                    error,
                    attempts,
                    originals[k].clone(),
                    &mut outcomes[k],
                );
            }
            items = next;
        }
        if let Some(tap) = &self.outputs_tap {
            tap.offer(items.iter().map(|(_, e)| e));
        }
        for (k, event) in items {
            outcomes[k].outputs.push(event);
        }
        outcomes
    }
}

/// The retry policy of a slot: attempts and the first backoff.
fn attempts_of(on_error: OnError) -> (u32, Duration) {
    match on_error {
        OnError::Retry {
            max_attempts,
            backoff,
        } => (max_attempts.max(1), backoff),
        _ => (1, Duration::ZERO),
    }
}

/// A failure after this many attempts.
type Failing = (Box<Failed>, u32);

/// Runs one sync stage on one event, retrying at once (a pipeline whose retries wait is
/// batched, see [`run_waiting`]). Corrupt state is never retried.
fn run_sync(slot: &mut Slot, mut event: Event, out: &mut Vec<Event>) -> Result<(), Failing> {
    let BuiltStage::Sync(stage) = &mut slot.stage else {
        return Ok(());
    };
    let (max_attempts, _) = attempts_of(slot.on_error);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = out.len();
        let result = stage.process(
            event,
            &mut StageContext::new(out, &mut slot.effects, &slot.id),
        );
        match result {
            Ok(()) => return Ok(()),
            Err(failed) if attempts < max_attempts && failed.error.fault() != Fault::Internal => {
                // What a failed attempt emitted is not the event's: its state stays.
                out.truncate(before);
                slot.effects.side.clear();
                event = failed.event;
                event.metadata.retry_count += 1;
            }
            Err(failed) => {
                out.truncate(before);
                slot.effects.side.clear();
                return Err((failed, attempts));
            }
        }
    }
}

/// Like [`run_sync`], waiting a doubling backoff between attempts.
async fn run_waiting(
    slot: &mut Slot,
    mut event: Event,
    out: &mut Vec<Event>,
    sleep: Sleeper,
) -> Result<(), Failing> {
    let BuiltStage::Sync(stage) = &mut slot.stage else {
        return Ok(());
    };
    let (max_attempts, mut backoff) = attempts_of(slot.on_error);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = stage.process(
            event,
            &mut StageContext::new(out, &mut slot.effects, &slot.id),
        );
        match result {
            Ok(()) => return Ok(()),
            Err(failed) if attempts < max_attempts && failed.error.fault() != Fault::Internal => {
                out.clear();
                slot.effects.side.clear();
                sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
                event = failed.event;
                event.metadata.retry_count += 1;
            }
            Err(failed) => {
                out.clear();
                slot.effects.side.clear();
                return Err((failed, attempts));
            }
        }
    }
}

/// Runs an async stage over `items` with up to its concurrency in flight, in rounds: the calls
/// that failed are retried together after the backoff. Returns the outputs in input order;
/// failures after the last attempt go to `failed`.
async fn run_async(
    slot: &mut Slot,
    items: Vec<(usize, Event)>,
    sleep: Sleeper,
    failed: &mut Vec<(usize, StageError, u32)>,
) -> Vec<(usize, Event)> {
    let BuiltStage::Async(stage) = &mut slot.stage else {
        return items;
    };
    let (max_attempts, mut backoff) = attempts_of(slot.on_error);
    let concurrency = stage.concurrency().max(1);
    let mut results: Vec<Option<Vec<Event>>> = items.iter().map(|_| None).collect();
    let keys: Vec<usize> = items.iter().map(|(k, _)| *k).collect();
    let mut round: Vec<(usize, Event)> = items
        .into_iter()
        .enumerate()
        .map(|(slot_index, (_, e))| (slot_index, e))
        .collect();
    let mut attempts = 0;
    while !round.is_empty() {
        attempts += 1;
        let calls: Vec<_> = round
            .into_iter()
            .map(|(i, event)| {
                let call = stage.call(event);
                async move { (i, call.await) }
            })
            .collect();
        let done: Vec<(usize, CallResult)> = futures::stream::iter(calls)
            .buffered(concurrency)
            .collect()
            .await;
        round = Vec::new();
        for (i, result) in done {
            match result {
                Ok(events) => results[i] = Some(events),
                Err(f) if attempts < max_attempts && f.error.fault() != Fault::Internal => {
                    let mut event = f.event;
                    event.metadata.retry_count += 1;
                    round.push((i, event));
                }
                Err(f) => failed.push((keys[i], f.error, attempts)),
            }
        }
        if !round.is_empty() {
            sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }
    let mut next = Vec::new();
    for (i, events) in results.into_iter().enumerate() {
        next.extend(events.into_iter().flatten().map(|e| (keys[i], e)));
    }
    next
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stages::{
        dedup::DedupConfig, filter::FilterConfig, set::SetConfig, transform::TransformConfig,
    };
    use crate::topology::Topology;
    use colloquium_event::{EventId, Metadata, Priority, Timestamp};
    use serde_json::{Value, json};

    pub(crate) fn registry() -> Registry {
        Registry::default()
            .stage::<TransformConfig>()
            .stage::<FilterConfig>()
            .stage::<SetConfig>()
            .stage::<DedupConfig>()
    }

    /// A topology of one pipeline `p` with these stages (YAML list items) and pipeline options.
    fn pipeline(stages: &str, options: &str) -> Topology {
        let yaml = format!("pipelines:\n  - name: p\n{options}    stages:\n{stages}");
        let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
        let mut topology = Topology::build(&config, &registry()).unwrap();
        for p in topology.pipelines_mut() {
            p.set_sleep(Pipeline::no_wait);
        }
        topology
    }

    fn event(ms: u64, data: Value) -> Event {
        let data = data.as_object().cloned().unwrap();
        Event::at(
            Timestamp::from_millis(ms),
            data,
            Metadata::new("http", "default"),
        )
    }

    fn run(topology: &mut Topology, data: Value) -> (Vec<Value>, Vec<Failure>, u64) {
        run_at(topology, 1, data)
    }

    fn run_at(topology: &mut Topology, ms: u64, data: Value) -> (Vec<Value>, Vec<Failure>, u64) {
        let delivery = topology.process(event(ms, data));
        let outputs = delivery
            .outputs
            .into_iter()
            .flat_map(|(_, events)| events)
            .map(|e| Value::Object(e.data))
            .collect();
        (outputs, delivery.failures, delivery.skipped)
    }

    #[test]
    fn transform_replaces_emits_an_array_or_drops_on_null() {
        let mut t = pipeline(
            "      - type: transform\n        script: [\"get\", [\"$input\"], \"/out\"]\n",
            "",
        );
        assert_eq!(run(&mut t, json!({"out": {"a": 1}})).0, [json!({"a": 1})]);
        assert_eq!(
            run(&mut t, json!({"out": [{"a": 1}, {"a": 2}]})).0,
            [json!({"a": 1}), json!({"a": 2})]
        );
        let (outputs, failures, _) = run(&mut t, json!({"out": null}));
        assert!(
            outputs.is_empty() && failures.is_empty(),
            "null drops the event"
        );
        let (_, failures, _) = run(&mut t, json!({"out": 7}));
        assert_eq!(failures[0].reason, Reason::BadOutput);
        assert_eq!(
            failures[0].error,
            "transform must return an object, an array of objects or null, got a number"
        );
        let (_, failures, _) = run(&mut t, json!({"out": [{"a": 1}, 2]}));
        assert_eq!(failures[0].reason, Reason::BadOutput);

        // The metadata object is input 1, with this pipeline's name.
        let mut t = pipeline(
            "      - type: transform\n        script: [\"obj\", [\"id\", [\"get\", [\"$inputs\"], \"/1/event_id\"]], [\"p\", [\"get\", [\"$inputs\"], \"/1/pipeline\"]], [\"retry\", [\"get\", [\"$inputs\"], \"/1/retry_count\"]]]\n",
            "",
        );
        let id = EventId::min_at(Timestamp::from_millis(1)).to_string();
        assert_eq!(
            run(&mut t, json!({})).0,
            [json!({"id": id, "p": "p", "retry": 0})]
        );
    }

    #[test]
    fn filter_set_and_dedup() {
        let mut t = pipeline("      - {type: filter, when: {gt: [\"/n\", 1]}}\n", "");
        assert!(run(&mut t, json!({"n": 1})).0.is_empty());
        assert_eq!(run(&mut t, json!({"n": 2})).0.len(), 1);
        let mut t = pipeline(
            "      - {type: filter, when: [\">\", [\"get\", [\"$input\"], \"/n\"], 1]}\n",
            "",
        );
        assert_eq!(run(&mut t, json!({"n": 2})).0.len(), 1);
        assert_eq!(run(&mut t, json!({})).1[0].reason, Reason::ScriptError);

        let yaml =
            "      - {type: set, priority: high, routing_key: {from: /customer}, topic: t}\n";
        let mut t = pipeline(yaml, "");
        let delivery = t.process(event(1, json!({"customer": "c9"})));
        let out = &delivery.outputs[0].1[0];
        assert_eq!(out.metadata.priority, Priority::High);
        assert_eq!(out.metadata.routing_key.as_deref(), Some("c9"));
        assert_eq!(out.metadata.topic.as_deref(), Some("t"));
        assert_eq!(run(&mut t, json!({})).1[0].reason, Reason::BadValue);

        // The seen keys are the stage's state. Here every event is its own step, committed to
        // `stored` as the store would.
        let dedup = "      - {type: dedup, key: /id, ttl: 10s, max_keys: 2}\n";
        let mut t = pipeline(dedup, "");
        type Stored = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;
        let mut stored = Stored::new();
        fn restarted(stages: &str, stored: &Stored) -> Topology {
            let mut t = pipeline(stages, "");
            let entries = || stored.clone().into_iter().collect();
            t.pipelines_mut()[0]
                .restore_state(|_| Ok::<_, ()>(entries()))
                .unwrap();
            t
        }
        fn step(t: &mut Topology, stored: &mut Stored, ms: u64, id: u64) -> usize {
            let out = run_at(t, ms, json!({"id": id})).0.len();
            for (stage, write) in t.pipelines_mut()[0].state_changes() {
                assert_eq!(&*stage, "dedup");
                match write {
                    StateWrite::Put(k, v) => drop(stored.insert(k, v)),
                    StateWrite::Delete(k) => drop(stored.remove(&k)),
                    StateWrite::DeleteBelow(k) => *stored = stored.split_off(&k),
                    StateWrite::DeleteRange(from, to) => {
                        stored.retain(|k, _| *k < from || *k >= to)
                    }
                }
            }
            assert!(t.pipelines_mut()[0].state_changes().is_empty(), "once");
            out
        }
        assert_eq!(step(&mut t, &mut stored, 1_000, 1), 1);
        assert_eq!(
            step(&mut t, &mut stored, 2_000, 1),
            0,
            "a duplicate within the TTL"
        );
        assert_eq!(step(&mut t, &mut stored, 2_000, 2), 1);
        assert_eq!(step(&mut t, &mut stored, 12_000, 1), 1, "the TTL passed");
        // max_keys: 2 — a third key pushes the oldest out.
        assert_eq!(step(&mut t, &mut stored, 12_001, 3), 1);
        assert_eq!(step(&mut t, &mut stored, 12_002, 4), 1);
        assert_eq!(
            step(&mut t, &mut stored, 12_003, 2),
            1,
            "forgotten: beyond max_keys"
        );
        let hits = t.pipelines()[0].stage_counts().next().unwrap().1;
        assert_eq!((hits.events_in, hits.events_out), (7, 6));
        // One row per step that admitted keys; rows whose keys are all forgotten are deleted.
        assert_eq!(stored.len(), 2, "the rows of keys 4 and 2");

        // A restart resumes with exactly those keys.
        let mut t = restarted(dedup, &stored);
        assert_eq!(step(&mut t, &mut stored, 12_004, 2), 0);
        assert_eq!(step(&mut t, &mut stored, 12_005, 4), 0);
        assert_eq!(step(&mut t, &mut stored, 12_006, 3), 1);
        assert_eq!(step(&mut t, &mut stored, 12_007, 1), 1);
        assert_eq!(stored.len(), 2, "the rows of keys 3 and 1");

        // State in the earlier layout (a row per key: JSON text → time) is read, and rewritten
        // as one segment at the next commit, which deletes the earlier rows.
        let mut stored: Stored = [("4", 12_002_u64), ("2", 12_003)]
            .map(|(k, at)| (k.as_bytes().to_vec(), at.to_be_bytes().to_vec()))
            .into();
        let mut t = restarted(dedup, &stored);
        assert_eq!(step(&mut t, &mut stored, 12_004, 2), 0);
        assert_eq!(stored.len(), 1, "one segment, no earlier rows");
        assert_eq!(stored.keys().next().map(|k| k[0]), Some(0xFF));
        let mut t = restarted(dedup, &stored);
        assert_eq!(step(&mut t, &mut stored, 12_005, 4), 0);
        assert_eq!(step(&mut t, &mut stored, 12_006, 3), 1);

        // Segments hand-encoded by the build before the state codec (`time, length, key` per
        // key) are read too, and the next segment is a codec row.
        let mut row = Vec::new();
        for (key, at) in [("3", 12_002_u64), ("5", 12_003)] {
            row.extend_from_slice(&at.to_be_bytes());
            row.extend_from_slice(&(key.len() as u32).to_be_bytes());
            row.extend_from_slice(key.as_bytes());
        }
        let mut stored: Stored = [([&[0xFF_u8][..], &7_u64.to_be_bytes()].concat(), row)].into();
        let mut t = restarted(dedup, &stored);
        assert_eq!(
            step(&mut t, &mut stored, 12_004, 5),
            0,
            "read from the old segment"
        );
        assert_eq!(step(&mut t, &mut stored, 12_005, 6), 1);
        let newest = stored.values().last().unwrap();
        assert!(crate::state::Codec::<()>::is_codec_row(newest));

        // Stored state that is not dedup's is an error, not a panic.
        for bad in [
            (vec![b'"'], vec![0; 11]),
            (vec![0xFF, 0], vec![]),
            (vec![0xFF; 9], vec![0; 13]),
        ] {
            let mut t = pipeline(dedup, "");
            let loaded = t.pipelines_mut()[0].restore_state(|_| Ok::<_, ()>(vec![bad.clone()]));
            assert!(loaded.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_on_error_policy() {
        let failing = "      - type: transform\n        script: [\"obj\", [\"r\", [\"/\", 1, [\"get\", [\"$inputs\"], \"/1/retry_count\"]]]]\n";
        // dlq (default): the original event with the reason, pipeline, stage and error.
        let mut t = pipeline(failing, "");
        let (outputs, failures, _) = run(&mut t, json!({"x": 1}));
        assert!(outputs.is_empty());
        let f = &failures[0];
        assert_eq!(
            (f.reason, f.stage.as_deref(), f.attempts),
            (Reason::ScriptError, Some("transform"), 1)
        );
        assert_eq!(f.pipeline.as_deref(), Some("p"));
        assert_eq!(Value::Object(f.event.data.clone()), json!({"x": 1}));
        assert!(f.error.contains("division by zero"), "{}", f.error);
        // skip: counted, dropped, nothing dead-lettered.
        let mut t = pipeline(failing, "    on_error: skip\n");
        assert_eq!(run(&mut t, json!({})), (vec![], vec![], 1));
        // retry: the second attempt sees retry_count 1 and succeeds.
        let mut t = pipeline(
            failing,
            "    on_error: {retry: {max_attempts: 3, backoff: 1ms}}\n",
        );
        assert_eq!(run(&mut t, json!({})).0, [json!({"r": 1.0})]);
        // retry that never succeeds ends in the DLQ with the attempt count.
        let always = "      - {type: transform, script: [\"/\", 1, 0]}\n";
        let mut t = pipeline(always, "    on_error: {retry: {max_attempts: 3}}\n");
        assert_eq!(run(&mut t, json!({})).1[0].attempts, 3);
        // A stage's own on_error wins over the pipeline's.
        let own = "      - {type: transform, script: [\"/\", 1, 0], on_error: skip}\n";
        let mut t = pipeline(own, "    on_error: stop_pipeline\n");
        assert_eq!(run(&mut t, json!({})).2, 1);
        // stop_pipeline: halts this pipeline, and it takes nothing more.
        let mut t = pipeline(always, "    on_error: stop_pipeline\n");
        assert_eq!(run(&mut t, json!({})).1.len(), 1);
        assert!(
            t.pipelines()[0]
                .stopped()
                .is_some_and(|why| why.contains("division by zero"))
        );
        assert_eq!(run(&mut t, json!({})), (vec![], vec![], 0));
    }

    #[test]
    fn one_poison_event_does_not_halt_the_pipeline() {
        let mut t = pipeline(
            "      - {type: transform, script: [\"obj\", [\"y\", [\"*\", [\"get\", [\"$input\"], \"/x\"], 2]]]}\n",
            "",
        );
        assert_eq!(run(&mut t, json!({"x": "poison"})).1.len(), 1);
        assert_eq!(run(&mut t, json!({"x": 2})).0, [json!({"y": 4})]);
    }

    #[test]
    fn bad_stage_configs_name_their_key_path() {
        let cases = [
            (
                "      - {type: explode}\n",
                "pipelines[0].stages[0].type: unknown stage type `explode` (known: dedup, filter, set, transform)",
            ),
            (
                "      - {type: transform}\n",
                "pipelines[0].stages[0]: missing field `script`",
            ),
            (
                "      - {type: transform, script: nope}\n",
                "pipelines[0].stages[0].script: no script named `nope`",
            ),
            (
                "      - {type: transform, script: [\"frob\"]}\n",
                "pipelines[0].stages[0].script: script does not compile: unknown operator `frob` at (root)",
            ),
            (
                "      - {type: filter, when: [\"if\", 1]}\n",
                "pipelines[0].stages[0].when: script does not compile",
            ),
            (
                "      - {type: set}\n",
                "pipelines[0].stages[0]: `set` needs at least one of",
            ),
            (
                "      - {type: set, priority: urgent}\n",
                "pipelines[0].stages[0].priority: invalid priority `urgent`",
            ),
            (
                "      - {type: dedup, key: id, ttl: 1m}\n",
                "pipelines[0].stages[0].key: `id` is not a JSON pointer",
            ),
            (
                "      - {type: dedup, key: /id, ttl: 1m, colour: red}\n",
                "pipelines[0].stages[0].colour: unknown field `colour`",
            ),
        ];
        for (stages, expected) in cases {
            let yaml = format!("pipelines:\n  - name: p\n    stages:\n{stages}");
            let config = colloquium_config::from_str(&yaml, &|_| None).unwrap();
            let errors = Topology::build(&config, &registry()).err().unwrap();
            let message = errors[0].to_string();
            assert!(message.starts_with(expected), "{stages}: {message}");
        }
    }
}
