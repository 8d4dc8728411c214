//! A whole config's processing graph: the router and every pipeline, built together so that
//! `validate`, `test` and the node report every problem at once, each at its key path.

use std::collections::BTreeMap;
use std::sync::Arc;

use colloquium_config::{Config, ConfigError, ScriptLibrary};
use colloquium_event::{Event, Reason};
use colloquium_router::{Router, Verdict};
use serde_json::Value;

use crate::pipeline::{Failure, Pipeline};
use crate::registry::Registry;
use crate::sink::{Sink, SinkBuildContext};
use crate::stage::SideOutput;

/// The router, the pipelines and the sinks of one config.
pub struct Topology {
    router: Router,
    pipelines: Vec<Pipeline>,
    sinks: BTreeMap<String, Box<dyn Sink>>,
}

/// Where one event went.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Outputs per pipeline index (only pipelines the event reached).
    pub outputs: Vec<(usize, Vec<Event>)>,
    /// Side outputs per pipeline index (only pipelines whose stages sent any).
    pub side: Vec<(usize, Vec<SideOutput>)>,
    /// Dead letters: routing failures and stage failures.
    pub failures: Vec<Failure>,
    /// Events skipped by `on_error: skip`.
    pub skipped: u64,
    /// Pipelines that take the event in a batch later ([`Take::Later`]).
    pub deferred: Vec<usize>,
    /// The event, handed back when some pipeline takes it later.
    pub event: Option<Event>,
}

/// Whether a matching pipeline runs an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Now, in place.
    Now,
    /// With the rest of the step, as a batch (the pipeline may wait).
    Later,
    /// Not at all (it is past the event, or another worker runs it).
    No,
}

impl Topology {
    /// Compiles every script and builds the router and every pipeline, collecting all errors.
    pub fn build(config: &Config, registry: &Registry) -> Result<Self, Vec<ConfigError>> {
        // Broken scripts are reported once, and everything else is still checked.
        let scripts = ScriptLibrary::compile_all(config);
        let mut errors = scripts.errors();
        let router = Router::build(config, &scripts)
            .map_err(|e| errors.extend(e))
            .ok();
        let mut pipelines = Vec::new();
        for (i, p) in config.pipelines.iter().enumerate() {
            match Pipeline::build(p, &format!("pipelines[{i}]"), registry, &scripts) {
                Ok(pipeline) => pipelines.push(pipeline),
                Err(e) => errors.extend(e),
            }
        }
        let mut sinks = BTreeMap::new();
        for (name, sink) in &config.sinks {
            let cx = SinkBuildContext {
                name: Arc::from(name.as_str()),
                at: format!("sinks.{name}"),
                metrics: registry.metrics().clone(),
            };
            match registry.build_sink(sink, &cx) {
                Ok(built) => {
                    sinks.insert(name.clone(), built);
                }
                Err(e) => errors.push(e),
            }
        }
        // Stages that send to sinks of their own name configured ones.
        for (i, pipeline) in pipelines.iter().enumerate() {
            for (stage, names) in pipeline.side_sinks() {
                for name in names.iter().filter(|n| !config.sinks.contains_key(*n)) {
                    errors.push(ConfigError::new(
                        format!("pipelines[{i}].stages[{stage}].sinks"),
                        format!("unknown sink `{name}` (not in `sinks:`)"),
                    ));
                }
            }
        }
        // One broken script referenced in several places is one problem.
        let mut seen = std::collections::BTreeSet::new();
        errors.retain(|e| seen.insert((e.path.clone(), e.message.clone())));
        match router {
            Some(router) if errors.is_empty() => Ok(Topology {
                router,
                pipelines,
                sinks,
            }),
            _ => Err(errors),
        }
    }

    /// The sink named `name`.
    pub fn sink_mut(&mut self, name: &str) -> Option<&mut (dyn Sink + 'static)> {
        self.sinks.get_mut(name).map(|s| &mut **s)
    }

    /// The pipelines, in config order.
    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// Mutable access to the pipelines (e.g. to change how retries sleep).
    pub fn pipelines_mut(&mut self) -> &mut [Pipeline] {
        &mut self.pipelines
    }

    /// Routes one event and runs it through every pipeline that takes it.
    pub fn process(&mut self, event: Event) -> Delivery {
        self.process_gated(event, &|_| Take::Now, true)
    }

    /// Indexes of the pipelines whose `from` and `when` match `event`.
    pub fn matching(&self, event: &Event) -> Vec<usize> {
        let data = Value::Object(event.data.clone());
        let routing = self.router.route(&event.metadata.source, &data, || {
            event.script_metadata(&event.metadata.pipeline)
        });
        routing.matched().collect()
    }

    /// Like [`Topology::process`], but each matching pipeline runs it as `take(index)` says (a
    /// pipeline already past the event skips it), and routing failures (`no_route`,
    /// `route_error`) are reported only when `report_routing` (once per event, not per replay).
    pub fn process_gated(
        &mut self,
        mut event: Event,
        take: &dyn Fn(usize) -> Take,
        report_routing: bool,
    ) -> Delivery {
        let data = Value::Object(std::mem::take(&mut event.data));
        let routing = self.router.route(&event.metadata.source, &data, || {
            event.script_metadata(&event.metadata.pipeline)
        });
        if let Value::Object(map) = data {
            event.data = map;
        }
        let mut delivery = Delivery::default();
        if routing.is_unroutable() && report_routing {
            delivery.failures.push(Failure {
                reason: Reason::NoRoute,
                pipeline: None,
                stage: None,
                error: "no pipeline's `from` and `when` match the event".to_owned(),
                attempts: 1,
                event,
            });
            return delivery;
        }
        for (i, verdict) in routing.verdicts.iter().enumerate() {
            if let (Verdict::Error(e), true) = (verdict, report_routing) {
                delivery.failures.push(Failure {
                    reason: Reason::RouteError,
                    pipeline: self.pipelines.get(i).map(|p| p.name().clone()),
                    stage: None,
                    error: e.to_string(),
                    attempts: 1,
                    event: event.clone(),
                });
            }
        }
        let mut now = Vec::new();
        for i in routing.matched() {
            match take(i) {
                Take::No => {}
                Take::Later => delivery.deferred.push(i),
                Take::Now => now.push(i),
            }
        }
        // The last pipeline to run it now takes the event itself unless a batched one needs
        // it later: no copy.
        let mut event = Some(event);
        let last = now.len().checked_sub(1);
        for (n, i) in now.into_iter().enumerate() {
            let Some(pipeline) = self.pipelines.get_mut(i) else {
                continue;
            };
            let outcome = match (Some(n) == last && delivery.deferred.is_empty(), &event) {
                (true, _) => match event.take() {
                    Some(owned) => pipeline.process_owned(owned),
                    None => continue,
                },
                (false, Some(shared)) => pipeline.process(shared),
                (false, None) => continue,
            };
            delivery.failures.extend(outcome.failures);
            delivery.skipped += outcome.skipped;
            delivery.outputs.push((i, outcome.outputs));
            if !outcome.side.is_empty() {
                delivery.side.push((i, outcome.side));
            }
        }
        if !delivery.deferred.is_empty() {
            delivery.event = event;
        }
        delivery
    }
}
