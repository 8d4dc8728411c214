//! The Stage trait: one step of a pipeline, built from its typed YAML config.
//!
//! A stage takes events one at a time and pushes zero or more events out. When it fails it hands
//! the event back with the error, so the pipeline can apply `on_error` (retry it, dead-letter it,
//! skip it, or stop) without having copied it first. A stage that waits on I/O implements the
//! async twin, [`AsyncStage`], instead; both may act on time through `on_tick`.

use std::sync::Arc;

use colloquium_config::{ConfigError, ScriptLibrary};
use colloquium_event::{Event, Fault, Reason, Timestamp};
use futures::future::BoxFuture;

pub use crate::context::{StageContext, StageMetric};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A stage kind as written in YAML (`type: filter`): typed options that build a [`Stage`] or an
/// [`AsyncStage`].
pub trait StageConfig: DeserializeOwned + 'static {
    /// The `type:` name.
    const KIND: &'static str;
    /// Builds the stage; errors name their key path (`cx.at`).
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError>;

    /// The sinks the stage sends events to past the rest of the pipeline
    /// ([`StageContext::side`]): checked against `sinks:` and placed with the pipeline's own.
    fn side_sinks(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a [`StageConfig`] builds: a stage that runs in place, or one that waits on I/O.
pub enum BuiltStage {
    /// Runs each event to completion on the worker.
    Sync(Box<dyn Stage>),
    /// Waits on I/O; its pipeline runs on its own task, so the wait holds no other pipeline.
    Async(Box<dyn AsyncStage>),
}

/// A built stage and the sinks it sends to past the pipeline ([`StageConfig::side_sinks`]).
pub struct Built {
    /// The stage.
    pub stage: BuiltStage,
    /// Its own sinks.
    pub side_sinks: Vec<String>,
}

impl BuiltStage {
    /// A stage that runs in place.
    pub fn sync(stage: impl Stage + 'static) -> Self {
        BuiltStage::Sync(Box::new(stage))
    }
}

/// Where a stage reads the processing time.
pub type Clock = fn() -> Timestamp;

/// What a stage may use while it is built.
pub struct BuildContext<'a> {
    /// The config's named scripts, compiled.
    pub scripts: &'a ScriptLibrary,
    /// The pipeline the stage belongs to.
    pub pipeline: Arc<str>,
    /// The stage's identity in its pipeline (its `id`, or the default), which keys its state.
    pub id: Arc<str>,
    /// The stage's key path, e.g. `pipelines[0].stages[1]`.
    pub at: String,
    /// The processing time (`Timestamp::now`, except in `colloquium test`).
    pub clock: Clock,
    /// How the stage waits a backoff (no waiting in `colloquium test`).
    pub sleep: crate::pipeline::Sleeper,
    /// The stage kinds, for a stage that holds stages of its own (`idempotency`).
    pub registry: &'a crate::registry::Registry,
}

impl BuildContext<'_> {
    /// The key path of one of the stage's options.
    pub fn key(&self, option: &str) -> String {
        format!("{}.{option}", self.at)
    }
}

/// One step of a pipeline. Only `process` is required; everything a stage does besides
/// handing events on goes through its [`StageContext`].
pub trait Stage: Send {
    /// Processes one event, emitting what comes of it through `cx`. On failure the event
    /// comes back in the error, unchanged, for `on_error`.
    fn process(&mut self, event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>>;

    /// Called at the pipeline's `tick_interval` even when no event arrives, and once per step
    /// after its events: a stage that acts on time (a window closing) emits here. What it
    /// emits goes through the following stages and is committed with the step.
    fn on_tick(&mut self, _now: Timestamp, _cx: &mut StageContext<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// Called once per step before the pipeline's checkpoint is committed: a stage that keeps
    /// state in memory writes what changed since the last one (`cx.put_state`), and reports
    /// its figures (`cx.gauge`, `cx.total`). Serializing a changed entity here rather than
    /// per event costs one write per step however often it changed. Emitting here is an
    /// error (nothing would run it through the following stages): it is ignored.
    fn checkpoint(&mut self, _cx: &mut StageContext<'_>) {}

    /// Loads the stage's state from its stored entries (in key order), at start. An error here
    /// is ours ([`StageError::State`]): it stops the pipeline, it never blames an event.
    fn restore_state(&mut self, _entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        Ok(())
    }
}

/// An event a stage sends to sinks of its own, past the rest of the pipeline.
#[derive(Clone, Debug)]
pub struct SideOutput {
    /// Where it goes (every one of them).
    pub sinks: Arc<[String]>,
    /// The event.
    pub event: Event,
}

/// The result of one [`AsyncStage::call`]: the events it emits, in order, or the failure.
pub type CallResult = Result<Vec<Event>, Box<Failed>>;

/// The twin of [`Stage`] for stages that wait on I/O (a model provider, a lookup service).
/// Each step the pipeline calls it for every event that reaches it, up to `concurrency` calls
/// in flight, and takes the results in input order, so outputs and the checkpoint commit
/// together as for any stage. Calls run on the worker's (single-threaded) Tokio runtime.
pub trait AsyncStage: Send {
    /// Most calls in flight at once (at least 1).
    fn concurrency(&self) -> usize;

    /// Starts the work for one event. The future owns what it needs (clone handles out of
    /// `self`): calls overlap. What else a call does is handed over at `checkpoint`.
    fn call(&mut self, event: Event) -> BoxFuture<'static, CallResult>;

    /// As [`Stage::on_tick`].
    fn on_tick(&mut self, _now: Timestamp, _cx: &mut StageContext<'_>) -> Result<(), StageError> {
        Ok(())
    }

    /// As [`Stage::checkpoint`].
    fn checkpoint(&mut self, _cx: &mut StageContext<'_>) {}

    /// As [`Stage::restore_state`].
    fn restore_state(&mut self, _entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        Ok(())
    }
}

/// A failed `process`: the error and the event, handed back (boxed: it is the rare path, and
/// an event is a few hundred bytes).
#[derive(Debug)]
pub struct Failed {
    /// What went wrong.
    pub error: StageError,
    /// The event the stage was given.
    pub event: Event,
}

impl Failed {
    /// Boxes a failure of `event` with `error`.
    pub fn new(error: impl Into<StageError>, event: Event) -> Box<Self> {
        Box::new(Failed {
            error: error.into(),
            event,
        })
    }
}

/// Why a stage failed on an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StageError {
    /// A Computo script failed.
    #[error("script failed: {0}")]
    Script(#[from] computo::EvalError),
    /// A transform returned something that is not an object, a list of objects or null.
    #[error("transform must return an object, an array of objects or null, got {0}")]
    BadOutput(&'static str),
    /// A value the stage needed from the event is missing or of the wrong kind.
    #[error("{0}")]
    BadValue(String),
    /// An external system failed (`reason` says which kind); the same event may pass later.
    #[error("{message}")]
    External {
        /// The dead-letter reason, e.g. `provider_unavailable`.
        reason: Reason,
        /// What the system said.
        message: String,
    },
    /// The stage's stored state is unreadable: our fault, not the event's. The pipeline stops
    /// with this message and the event is left unprocessed.
    #[error("corrupt stage state: {0}")]
    State(String),
}

impl StageError {
    /// The dead-letter reason.
    pub fn reason(&self) -> Reason {
        match self {
            StageError::Script(_) => Reason::ScriptError,
            StageError::BadOutput(_) => Reason::BadOutput,
            StageError::BadValue(_) => Reason::BadValue,
            StageError::External { reason, .. } => *reason,
            StageError::State(_) => Reason::InternalError,
        }
    }

    /// Whose fault it is: `Input` and `External` go through `on_error`; `Internal` stops the
    /// pipeline.
    pub fn fault(&self) -> Fault {
        self.reason().fault()
    }
}

/// Runs `f` on the event's data as a JSON value (moved, not copied) and a builder of its
/// script metadata (input 1), called only if a script needs it; then puts the data back.
pub fn with_data<T>(
    event: &mut Event,
    pipeline: &str,
    f: impl FnOnce(&Value, &mut dyn FnMut() -> Value) -> T,
) -> T {
    let data = Value::Object(std::mem::take(&mut event.data));
    let result = f(&data, &mut || event.script_metadata(pipeline));
    if let Value::Object(map) = data {
        event.data = map;
    }
    result
}
