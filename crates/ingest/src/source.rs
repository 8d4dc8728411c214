//! The Source trait: where events enter, built from its typed YAML config (`sources.NAME`).
//!
//! A source kind is a [`SourceConfig`] (`KIND`, `validate`, `build`) and the running
//! [`Source`] it builds. A source owns its listener until `shutdown` fires, hands batches to
//! [`Accept`] and answers or counts bad input itself; `run` errs only on a fatal failure (its
//! address is taken). Sources that speak HTTP share the node's main listener: they mount their
//! routes in [`HttpRoutes`] at build time. Every event a source stamps carries the source's
//! **name** as `metadata.source`, which pipelines' `from:` and `/api/events?source=` match.
//! The kinds a node knows are listed in the binary, one line each ([`SourceRegistry`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use colloquium_config::{ConfigError, SourceConfig as SourceSection};
use colloquium_event::IdGenerator;
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::health::HealthBoard;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{Accept, IngestMetrics};

/// A source kind as written in YAML (`type: http`): typed options that build a [`Source`].
pub trait SourceConfig: DeserializeOwned + 'static {
    /// The `type:` name.
    const KIND: &'static str;
    /// Checks what needs no I/O, returning every problem (key paths under `at`).
    fn validate(&self, _at: &str) -> Vec<ConfigError> {
        Vec::new()
    }
    /// Builds the source: no socket is bound yet (`validate` builds every source too).
    fn build<A: Accept>(
        self,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, ConfigError>;
}

/// A running source.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Binds the source's own socket, before the node says it is ready (a taken address stops
    /// the start); returns the bound address, which the ready line names. Sources on the main
    /// listener have none.
    async fn bind(&mut self) -> Result<Option<std::net::SocketAddr>, SourceError> {
        Ok(None)
    }

    /// Receives events until `cx.shutdown` turns true.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}

/// What a running source is given.
pub struct SourceContext {
    /// Turns `true` when the node stops: finish what is in flight and return.
    pub shutdown: watch::Receiver<bool>,
}

/// A source failed for good.
#[derive(Debug, thiserror::Error)]
#[error("source `{source_name}`: {message}")]
pub struct SourceError {
    /// The source's name.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

/// Node-wide settings every source shares (from `server:` and `ingest:`).
#[derive(Clone, Debug)]
pub struct IngestSettings {
    /// Largest accepted request body (or frame) in bytes.
    pub max_body_size: usize,
    /// Most events accepted but not yet durable, across all sources.
    pub max_pending_events: usize,
    /// Most request bytes held at once across all sources, from the first byte read until
    /// the batch is durable.
    pub max_pending_bytes: usize,
    /// Payload field (or JSON pointer) holding the event time.
    pub timestamp_field: String,
    /// Pipeline recorded in metadata.
    pub pipeline: String,
    /// Certificates of sources that speak TLS, relative to the config file, reloaded together.
    pub certificates: colloquium_security::tls::Certificates,
}

/// What a source may use while it is built.
pub struct SourceBuildContext<'a, A> {
    /// The source's name under `sources:`, stamped as `metadata.source`. `'static` because it
    /// labels metrics on every request; sources are built once per process (and once more by
    /// `validate`), so their few names live as long as it does.
    pub name: &'static str,
    /// Its key path, e.g. `sources.mobile`.
    pub at: String,
    /// Where batches go.
    pub accept: A,
    /// The node-wide id generator.
    pub ids: Arc<IdGenerator>,
    /// Ingest metrics, labelled by source name.
    pub metrics: IngestMetrics,
    /// Node-wide limits and defaults.
    pub settings: &'a IngestSettings,
    /// Routes on the node's main listener, for sources that speak HTTP.
    pub http: &'a mut HttpRoutes,
    /// Whether its events are written to the log (`persist:`), or only handed to the
    /// pipelines in memory ([`Accept::publish`]).
    pub persist: bool,
    /// The node's metrics, for a source kind's own (register them with
    /// [`MetricsRegistry::once`]).
    pub registry: MetricsRegistry,
    /// Where sources report their health (`/health`'s `sources`).
    pub health: HealthBoard,
}

impl<A> SourceBuildContext<'_, A> {
    /// The key path of one of the source's options.
    pub fn key(&self, option: &str) -> String {
        format!("{}.{option}", self.at)
    }

    /// A stamper for this source's events: its name, the node's ids and `ingest:` settings.
    pub fn stamper(&self) -> crate::Stamper {
        crate::Stamper::new(
            self.ids.clone(),
            self.name,
            &self.settings.timestamp_field,
            &self.settings.pipeline,
        )
    }
}

/// HTTP routes sources mount on the main listener, one path each, plus what their requests
/// share (the node-wide pending limits).
#[derive(Default)]
pub struct HttpRoutes {
    router: axum::Router,
    paths: BTreeMap<String, String>,
    limits: Option<Arc<crate::http::Limits>>,
}

impl HttpRoutes {
    /// Mounts `router` (whose routes are under `path`) for the source at `at`; a path another
    /// source has is an error naming both.
    pub fn mount(&mut self, path: &str, at: &str, router: axum::Router) -> Result<(), ConfigError> {
        if let Some(other) = self.paths.get(path) {
            return Err(ConfigError::new(
                format!("{at}.path"),
                format!("`{path}` is already the path of {other}"),
            ));
        }
        self.paths.insert(path.to_owned(), at.to_owned());
        self.router = std::mem::take(&mut self.router).merge(router);
        Ok(())
    }

    /// The limits every HTTP source's requests count against together.
    pub(crate) fn limits(&mut self, settings: &IngestSettings) -> Arc<crate::http::Limits> {
        self.limits
            .get_or_insert_with(|| Arc::new(crate::http::Limits::new(settings)))
            .clone()
    }

    /// The path of every mounted source (each `POST`), for the route table.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.keys().map(String::as_str)
    }

    /// Every mounted route, for the main listener.
    pub fn into_router(self) -> axum::Router {
        self.router
    }
}

type BuildFn<A> =
    fn(&SourceSection, &mut SourceBuildContext<'_, A>) -> Result<Box<dyn Source>, Vec<ConfigError>>;

/// Source kinds by `type:` name.
pub struct SourceRegistry<A> {
    kinds: BTreeMap<&'static str, BuildFn<A>>,
}

impl<A> Default for SourceRegistry<A> {
    fn default() -> Self {
        SourceRegistry {
            kinds: BTreeMap::new(),
        }
    }
}

impl<A: Accept> SourceRegistry<A> {
    /// Registers the source kind `C`.
    pub fn source<C: SourceConfig>(mut self) -> Self {
        self.kinds.insert(C::KIND, build::<A, C>);
        self
    }

    /// Builds the source `section` at `cx.at`, with every problem of its options.
    pub fn build(
        &self,
        section: &SourceSection,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, Vec<ConfigError>> {
        let Some(build) = self.kinds.get(section.kind.as_str()) else {
            let known: Vec<&str> = self.kinds.keys().copied().collect();
            let message = format!(
                "unknown source type `{}` (known: {})",
                section.kind,
                known.join(", ")
            );
            return Err(vec![ConfigError::new(format!("{}.type", cx.at), message)]);
        };
        build(section, cx)
    }
}

fn build<A: Accept, C: SourceConfig>(
    section: &SourceSection,
    cx: &mut SourceBuildContext<'_, A>,
) -> Result<Box<dyn Source>, Vec<ConfigError>> {
    let config: C =
        colloquium_config::typed_options(&section.options, &cx.at).map_err(|e| vec![e])?;
    let problems = config.validate(&cx.at);
    if !problems.is_empty() {
        return Err(problems);
    }
    config.build(cx).map_err(|e| vec![e])
}

/// An [`Accept`] that takes nothing, for building sources only to check them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Refuse;

impl Accept for Refuse {
    async fn accept(
        &self,
        _events: Vec<colloquium_event::Event>,
        _ids: colloquium_event::Reservation,
    ) -> Result<(), crate::AcceptError> {
        Err(crate::AcceptError::ShuttingDown)
    }
}

/// Every problem of `config`'s sources, found by building them as a node would (nothing is
/// bound or started).
pub fn check_sources(
    registry: &SourceRegistry<Refuse>,
    sources: &BTreeMap<String, SourceSection>,
    settings: &IngestSettings,
    metrics: &IngestMetrics,
) -> Vec<ConfigError> {
    let mut routes = HttpRoutes::default();
    let mut errors = Vec::new();
    for (name, section) in sources {
        let mut cx = SourceBuildContext {
            name: leak(name),
            at: format!("sources.{name}"),
            accept: Refuse,
            ids: Arc::default(),
            metrics: metrics.clone(),
            settings,
            http: &mut routes,
            persist: section.persist,
            registry: MetricsRegistry::default(),
            health: HealthBoard::default(),
        };
        if let Err(e) = registry.build(section, &mut cx) {
            errors.extend(e);
        }
    }
    errors
}

/// A source name as `'static` (see [`SourceBuildContext::name`]).
pub fn leak(name: &str) -> &'static str {
    Box::leak(name.to_owned().into_boxed_str())
}
