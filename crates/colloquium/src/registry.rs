//! Every component kind the node knows, one line each. Adding a stage (or sink): a file in
//! `crates/pipeline/src/stages/` (`sinks/`) implementing `StageConfig` + `Stage` (`SinkConfig` +
//! `Sink`), and a line here. Adding a source: a file in `crates/ingest/src/` implementing
//! `SourceConfig` + `Source`, and a line in [`sources`].

use colloquium_ingest::{Accept, SourceRegistry};
use colloquium_pipeline::Registry;
use colloquium_pipeline::sinks::{dlq, file, http, stdout, store};
use colloquium_pipeline::stages::{
    alert, anomaly, dedup, filter, idempotency, schema, set, transform, window, zscore,
};

/// [`registry`] with the node's AI gateway when `config` has providers (`ai:`), spending from
/// `ledger` (the node's store; in memory for `validate` and `test`).
pub fn with_ai(
    registry: Registry,
    config: &colloquium_config::Config,
    ledger: impl colloquium_ai::LedgerStore,
) -> Result<
    (Registry, Option<std::sync::Arc<colloquium_ai::Gateway>>),
    colloquium_config::ConfigError,
> {
    let gateway = colloquium_ai::setup::gateway(
        &config.ai,
        config.base_dir.as_deref(),
        ledger,
        registry.metrics(),
        colloquium_event::Timestamp::now,
    )?
    .map(std::sync::Arc::new);
    Ok(match gateway {
        Some(gateway) => (registry.with_service(gateway.clone()), Some(gateway)),
        None => (registry, None),
    })
}

/// The stage and sink kinds, by `type:` name.
pub fn registry() -> Registry {
    Registry::default()
        .stage::<transform::TransformConfig>()
        .stage::<filter::FilterConfig>()
        .stage::<set::SetConfig>()
        .stage::<dedup::DedupConfig>()
        .stage::<alert::AlertConfig>()
        .stage::<idempotency::IdempotencyConfig>()
        .stage::<window::WindowConfig>()
        .stage::<zscore::ZscoreConfig>()
        .stage::<anomaly::AnomalyConfig>()
        .stage::<schema::SchemaConfig>()
        .stage::<colloquium_ai::AiStageConfig>()
        .sink::<store::StoreConfig>()
        .sink::<dlq::DlqConfig>()
        .sink::<stdout::StdoutConfig>()
        .sink::<file::FileConfig>()
        .sink::<http::HttpConfig>()
        .sink::<colloquium_kafka::KafkaSinkConfig>()
}

/// The source kinds, by `type:` name.
pub fn sources<A: Accept>() -> SourceRegistry<A> {
    SourceRegistry::default()
        .source::<colloquium_ingest::HttpConfig>()
        .source::<colloquium_ingest::TcpConfig>()
        .source::<colloquium_ingest::UdpConfig>()
        .source::<colloquium_kafka::KafkaSourceConfig>()
}
