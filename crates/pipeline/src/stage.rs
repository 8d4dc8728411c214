//! The Stage trait: one step of a pipeline, built from its typed YAML config.
//!
//! A stage takes events one at a time and pushes zero or more events out. When it fails it hands
//! the event back with the error, so the pipeline can apply `on_error` (retry it, dead-letter it,
//! skip it, or stop) without having copied it first.

use std::sync::Arc;

use colloquium_config::{ConfigError, ScriptLibrary};
use colloquium_event::Event;
use colloquium_storage::StateWrite;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A stage kind as written in YAML (`type: filter`): typed options that build a [`Stage`].
pub trait StageConfig: DeserializeOwned + 'static {
    /// The `type:` name.
    const KIND: &'static str;
    /// Builds the stage; errors name their key path (`cx.at`).
    fn build(self, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>, ConfigError>;
}

/// What a stage may use while it is built.
pub struct BuildContext<'a> {
    /// The config's named scripts, compiled.
    pub scripts: &'a ScriptLibrary,
    /// The pipeline the stage belongs to.
    pub pipeline: Arc<str>,
    /// The stage's key path, e.g. `pipelines[0].stages[1]`.
    pub at: String,
}

impl BuildContext<'_> {
    /// The key path of one of the stage's options.
    pub fn key(&self, option: &str) -> String {
        format!("{}.{option}", self.at)
    }
}

/// One step of a pipeline.
pub trait Stage: Send {
    /// Processes one event, pushing what it emits to `out`. On failure the event comes back in
    /// the error, unchanged, for `on_error`.
    fn process(&mut self, event: Event, out: &mut Vec<Event>) -> Result<(), Box<Failed>>;

    /// Hands over the writes to the stage's state since the last call, in order. They are
    /// committed with the pipeline's checkpoint, so a restart resumes with exactly the state of
    /// that position.
    fn state_changes(&mut self, _changes: &mut Vec<StateWrite>) {}

    /// Loads the stage's state from its stored entries (in key order), at start.
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
}

impl StageError {
    /// The dead-letter reason: a short, bounded code.
    pub fn reason(&self) -> &'static str {
        match self {
            StageError::Script(_) => "script_error",
            StageError::BadOutput(_) => "bad_output",
            StageError::BadValue(_) => "bad_value",
        }
    }
}

/// Runs `f` on the event's data as a JSON value (moved, not copied) and a builder of its
/// script metadata (input 1), called only if a script needs it; then puts the data back.
pub(crate) fn with_data<T>(
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
