//! The Sink trait: where a pipeline's results leave, built from its typed YAML config.
//!
//! A pipeline step hands every sink the results routed to it, then commits. A sink either adds
//! to the step's commit (`store` and `dlq`: written atomically with the checkpoint, so
//! effectively exactly-once) or delivers them outside before the commit (`file`, `http`,
//! `stdout`: at-least-once, a crash between delivery and commit re-delivers). A sink returns
//! `Err` only when the whole step must be retried (a disk error); results the outside world
//! refuses go to the dead-letter queue through the commit.
//!
//! Sinks are async: one that waits (a slow endpoint, a retry backoff) holds only its own
//! pipelines, never a thread. Each kind declares its [`Placement`], which decides where its
//! pipelines run.

use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_event::{Event, EventId, Reason};
use colloquium_storage::{NewDeadLetter, PipelineCommit};
use serde::de::DeserializeOwned;

/// A sink kind as written in YAML (`type: http`): typed options that build a [`Sink`].
pub trait SinkConfig: DeserializeOwned + 'static {
    /// The `type:` name.
    const KIND: &'static str;
    /// Whether its pipelines may share a worker with others (see [`Placement`]).
    const PLACEMENT: Placement;
    /// Builds the sink (no I/O yet: `validate` builds every sink); errors name `cx.at`.
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError>;
}

/// What a sink may use while it is built.
pub struct SinkBuildContext {
    /// The sink's name under `sinks:`.
    pub name: Arc<str>,
    /// Its key path, e.g. `sinks.archive`.
    pub at: String,
    /// The node's metrics, for a sink kind's own (register them with
    /// `MetricsRegistry::once`).
    pub metrics: colloquium_telemetry::MetricsRegistry,
}

impl SinkBuildContext {
    /// The key path of one of the sink's options.
    pub fn key(&self, option: &str) -> String {
        format!("{}.{option}", self.at)
    }
}

/// One result on its way out, with where it came from (stable keys for `store`).
#[derive(Debug, Clone)]
pub struct Routed {
    /// The pipeline that produced it.
    pub pipeline: Arc<str>,
    /// The input event's id.
    pub source_id: EventId,
    /// Its index among that input's results.
    pub index: u32,
    /// The result.
    pub event: Event,
}

/// How a sink kind's instances may be placed on pipeline workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Adds to the step's commit and never waits (`store`, `dlq`): every worker has its own
    /// instance, and its pipelines are spread freely.
    Shared,
    /// Delivers outside and may wait (`http`, `file`, `stdout`): one instance per name, so all
    /// the pipelines that use it run on one worker, and that worker runs no other pipeline, so
    /// its waits delay nobody else.
    Exclusive,
}

/// Where results leave.
#[async_trait::async_trait]
pub trait Sink: Send {
    /// Delivers `batch` (non-empty; the sink owns it), or records it in `commit`. Waits (a
    /// request, a retry's backoff) are awaited, never slept.
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError>;
}

/// A failure that must fail the whole step (it is retried from the same checkpoints).
#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}`: {message}")]
pub struct SinkError {
    /// The sink's name.
    pub sink: Arc<str>,
    /// What went wrong.
    pub message: String,
}

/// Records results the outside world refused as dead letters of `reason`.
pub fn dead_letter(commit: &mut PipelineCommit, routed: &Routed, reason: Reason, error: String) {
    commit.dead_letters.push(NewDeadLetter {
        reason,
        error,
        pipeline: Some(routed.pipeline.to_string()),
        stage: None,
        attempts: 1,
        event: routed.event.clone(),
    });
}

/// Runs a sink's future to completion on a fresh runtime, for sink tests.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(future)
}

/// A result carrying `{"n": n}`, for sink tests.
#[cfg(test)]
pub(crate) fn test_routed(n: u64) -> Routed {
    let at = colloquium_event::Timestamp::from_millis(1_000 + n);
    let data = serde_json::json!({"n": n})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let event = Event::at(at, data, colloquium_event::Metadata::new("http", "default"));
    Routed {
        pipeline: Arc::from("p"),
        source_id: event.id,
        index: 0,
        event,
    }
}
