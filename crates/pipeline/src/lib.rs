//! Pipelines: what happens to an event after routing.
//!
//! - [`stage`]: the [`Stage`] and [`StageConfig`] traits, and stage errors.
//! - [`stages`]: the built-in stages, one file each (`transform`, `filter`, `set`, `dedup`).
//! - [`sink`]: the [`Sink`] and [`SinkConfig`] traits and their delivery contract.
//! - [`sinks`]: the built-in sinks, one file each (`store`, `dlq`, `stdout`, `file`, `http`).
//! - [`registry`]: stage kinds by `type:` name; the binary lists them, one line each.
//! - [`pipeline`]: one pipeline's stages and its `on_error` policies.
//! - [`topology`]: the router and every pipeline of a config, built together.
//! - [`testing`]: `colloquium test`, the config's own unit tests.
//! - [`runtime`]: running the pipelines on a node: checkpoints, sinks, atomic commits.
//! - [`events`]: the metrics pipelines, the router and sinks report.
#![warn(missing_docs)]

pub mod events;
mod monitor;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod sink;
pub mod sinks;
pub mod stage;
pub mod stages;
pub mod testing;
pub mod topology;

pub use events::PipelineMetrics;
pub use pipeline::{Failure, Outcome, Pipeline, StageCounts};
pub use registry::Registry;
pub use runtime::{Runtime, RuntimeError, RuntimeHandle};
pub use sink::{Routed, Sink, SinkBuildContext, SinkConfig, SinkError};
pub use stage::{BuildContext, Failed, Stage, StageConfig, StageError};
pub use testing::{TestResult, run_tests};
pub use topology::{Delivery, Topology};
