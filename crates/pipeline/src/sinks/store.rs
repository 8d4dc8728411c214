//! `store`: results into RocksDB's `outputs` column family, read back with `GET /api/outputs`.
//! Written in the step's atomic commit and keyed by pipeline + input event id + index, so a
//! replay rewrites the same keys: effectively exactly-once.

use colloquium_config::ConfigError;
use colloquium_storage::{Output, PipelineCommit};
use serde::Deserialize;

use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError};

/// `{type: store}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {}

impl SinkConfig for StoreConfig {
    const KIND: &'static str = "store";
    const PLACEMENT: Placement = Placement::Shared;
    fn build(self, _cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(StoreSink))
    }
}

struct StoreSink;

#[async_trait::async_trait]
impl Sink for StoreSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        commit.outputs.extend(batch.into_iter().map(|r| Output {
            pipeline: r.pipeline,
            source_id: r.source_id,
            index: r.index,
            event: r.event,
        }));
        Ok(())
    }
}
