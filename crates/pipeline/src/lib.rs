//! Pipelines: what happens to an event after routing.
//!
//! - [`stage`]: the [`Stage`] and [`StageConfig`] traits, the [`AsyncStage`] twin for stages
//!   that wait on I/O, and stage errors.
//! - [`context`]: the [`StageContext`] a stage does everything through but handing events on
//!   (state, kept results, side outputs, metrics).
//! - [`state`]: the typed, versioned codec stages keep their state with.
//! - [`stages`]: the built-in stages, one file each (`transform`, `filter`, `set`, `dedup`).
//! - [`sink`]: the async [`Sink`] and [`SinkConfig`] traits, their delivery contract and
//!   [`Placement`].
//! - [`sinks`]: the built-in sinks, one file each (`store`, `dlq`, `stdout`, `file`, `http`).
//! - [`registry`]: stage kinds by `type:` name; the binary lists them, one line each.
//! - [`pipeline`]: one pipeline's stages and its `on_error` policies.
//! - [`topology`]: the router and every pipeline of a config, built together.
//! - [`testing`]: `colloquium test`, the config's own unit tests.
//! - [`runtime`]: running the pipelines on a node: placement, workers, intake, sinks, replay,
//!   metrics and health, stage-state layout.
//! - [`events`]: the metrics pipelines, the router and sinks report.
#![warn(missing_docs)]

pub mod context;
pub mod events;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod sink;
pub mod sinks;
pub mod stage;
pub mod stages;
pub mod state;
pub mod tap;
pub mod testing;
pub mod topology;

pub use context::{Effects, Kept, ResultRow, StageContext, StageMetric, StateWrite};
pub use events::PipelineMetrics;
pub use pipeline::{Failure, Outcome, Pipeline, StageCounts};
pub use registry::Registry;
pub use runtime::{Runtime, RuntimeError, RuntimeHandle};
pub use sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError};
pub use stage::{
    AsyncStage, BuildContext, Built, BuiltStage, CallResult, Failed, Stage, StageConfig, StageError,
};
pub use tap::{Filter, Listener, TapCounts, TapPoint, Taps};
pub use testing::{TestResult, run_tests};
pub use topology::{Delivery, Take, Topology};
