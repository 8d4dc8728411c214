//! The stage and sink kinds a node knows: `type:` name → "deserialize the options as this config
//! (with their key path), then build". The list itself is one line per kind, in the binary.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use colloquium_config::{ComponentConfig, ConfigError};

use crate::pipeline::Sleeper;
use crate::sink::{Placement, Sink, SinkBuildContext, SinkConfig};
use crate::stage::{BuildContext, Built, Clock, StageConfig};

type BuildFn = fn(&ComponentConfig, &BuildContext<'_>) -> Result<Built, ConfigError>;
type BuildSinkFn = fn(&ComponentConfig, &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError>;

/// Stage and sink kinds by `type:` name, and the clock the stages they build read.
#[derive(Clone)]
pub struct Registry {
    stages: BTreeMap<&'static str, BuildFn>,
    sinks: BTreeMap<&'static str, (BuildSinkFn, Placement)>,
    clock: Clock,
    sleep: Sleeper,
    metrics: colloquium_telemetry::MetricsRegistry,
    /// Node-wide services stages may use (the AI gateway), by type.
    services: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            stages: BTreeMap::new(),
            sinks: BTreeMap::new(),
            clock: colloquium_event::Timestamp::now,
            sleep: crate::pipeline::tokio_sleep,
            metrics: colloquium_telemetry::MetricsRegistry::default(),
            services: HashMap::new(),
        }
    }
}

impl Registry {
    /// Components built from now on register their own metrics (a sink kind's) in `metrics`.
    pub fn with_metrics(mut self, metrics: colloquium_telemetry::MetricsRegistry) -> Self {
        self.metrics = metrics;
        self
    }

    /// Stages built from now on may use `service` (one per type): a node-wide handle such
    /// as the AI gateway, which outlives any one topology.
    pub fn with_service<T: Any + Send + Sync>(mut self, service: Arc<T>) -> Self {
        self.services.insert(TypeId::of::<T>(), service);
        self
    }

    /// The service of type `T`, if the node provides one.
    pub fn service<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.services
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|s| s.downcast::<T>().ok())
    }

    /// Where components register their own metrics.
    pub fn metrics(&self) -> &colloquium_telemetry::MetricsRegistry {
        &self.metrics
    }

    /// Stages built from now on read `clock` for processing time (`colloquium test` uses its
    /// inputs' time, so results do not depend on when the tests run).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock stages read.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Stages built from now on wait their backoffs with `sleep` (`colloquium test` does not
    /// wait).
    pub fn with_sleep(mut self, sleep: Sleeper) -> Self {
        self.sleep = sleep;
        self
    }

    /// How stages wait.
    pub fn sleep(&self) -> Sleeper {
        self.sleep
    }

    /// Registers the stage kind `C`.
    pub fn stage<C: StageConfig>(mut self) -> Self {
        self.stages.insert(C::KIND, build::<C>);
        self
    }

    /// Registers the sink kind `C`.
    pub fn sink<C: SinkConfig>(mut self) -> Self {
        self.sinks.insert(C::KIND, (build_sink::<C>, C::PLACEMENT));
        self
    }

    /// How sinks of `kind` may be placed (`None`: no such kind).
    pub fn placement(&self, kind: &str) -> Option<Placement> {
        self.sinks.get(kind).map(|(_, placement)| *placement)
    }

    /// Builds a sink from its config at `cx.at`.
    pub fn build_sink(
        &self,
        component: &ComponentConfig,
        cx: &SinkBuildContext,
    ) -> Result<Box<dyn Sink>, ConfigError> {
        let Some((build, _)) = self.sinks.get(component.kind.as_str()) else {
            let known: Vec<&str> = self.sinks.keys().copied().collect();
            let message = format!(
                "unknown sink type `{}` (known: {})",
                component.kind,
                known.join(", ")
            );
            return Err(ConfigError::new(format!("{}.type", cx.at), message));
        };
        if component.on_error.is_some() {
            return Err(ConfigError::new(
                format!("{}.on_error", cx.at),
                "sinks take no `on_error`: results they cannot deliver go to the dead-letter queue",
            ));
        }
        if component.id.is_some() {
            return Err(ConfigError::new(
                format!("{}.id", cx.at),
                "sinks take no `id`: a sink is known by its name under `sinks:`",
            ));
        }
        build(component, cx)
    }

    /// Builds a stage from its config at `cx.at`.
    pub fn build_stage(
        &self,
        component: &ComponentConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Built, ConfigError> {
        let Some(build) = self.stages.get(component.kind.as_str()) else {
            let known: Vec<&str> = self.stages.keys().copied().collect();
            let message = format!(
                "unknown stage type `{}` (known: {})",
                component.kind,
                known.join(", ")
            );
            return Err(ConfigError::new(format!("{}.type", cx.at), message));
        };
        build(component, cx)
    }
}

fn build<C: StageConfig>(
    component: &ComponentConfig,
    cx: &BuildContext<'_>,
) -> Result<Built, ConfigError> {
    let config = options::<C>(component, &cx.at)?;
    let side_sinks = config.side_sinks();
    Ok(Built {
        stage: config.build(cx)?,
        side_sinks,
    })
}

fn build_sink<C: SinkConfig>(
    component: &ComponentConfig,
    cx: &SinkBuildContext,
) -> Result<Box<dyn Sink>, ConfigError> {
    options::<C>(component, &cx.at)?.build(cx)
}

/// Deserializes a component's options, errors led by their key path under `at`.
fn options<C: serde::de::DeserializeOwned>(
    component: &ComponentConfig,
    at: &str,
) -> Result<C, ConfigError> {
    colloquium_config::typed_options(&component.options, at)
}
