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

/// The node's AI services: its gateway (when `ai:` has providers) and the similar-event indexes.
pub struct AiServices {
    /// The gateway.
    pub gateway: Option<std::sync::Arc<colloquium_ai::Gateway>>,
    /// The `embed` stages' vectors.
    pub indexes: std::sync::Arc<colloquium_ai::Indexes>,
}

/// `registry` with the node's AI services: the gateway spends from the ledger in `store` and
/// the indexes are loaded from it (`None` for `validate` and `test`: an in-memory ledger and
/// empty indexes).
pub fn with_ai(
    registry: Registry,
    config: &colloquium_config::Config,
    store: Option<&colloquium_storage::Store>,
) -> Result<(Registry, AiServices), colloquium_config::ConfigError> {
    let build = |ledger| {
        colloquium_ai::setup::gateway(
            &config.ai,
            config.base_dir.as_deref(),
            ledger,
            registry.metrics(),
            colloquium_event::Timestamp::now,
        )
    };
    let (gateway, indexes) = match store {
        Some(store) => (
            build(Box::new(store.clone()))?,
            colloquium_ai::Indexes::load(store)
                .map_err(|e| colloquium_config::ConfigError::new("ai", e.to_string()))?,
        ),
        None => (
            build(Box::<colloquium_ai::MemoryLedger>::default())?,
            colloquium_ai::Indexes::default(),
        ),
    };
    let gateway = gateway.map(std::sync::Arc::new);
    let indexes = std::sync::Arc::new(indexes);
    let mut registry = registry.with_service(indexes.clone());
    if let Some(gateway) = &gateway {
        registry = registry.with_service(gateway.clone());
    }
    Ok((registry, AiServices { gateway, indexes }))
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
        .stage::<colloquium_ai::EmbedConfig>()
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
