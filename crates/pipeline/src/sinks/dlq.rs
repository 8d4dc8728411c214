//! `dlq`: results into the dead-letter queue with reason `dlq_sink` (for pipelines whose job is
//! to set events aside for a person). Committed with the step, like `store`.

use colloquium_config::ConfigError;
use colloquium_event::Reason;
use colloquium_storage::PipelineCommit;
use serde::Deserialize;

use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError, dead_letter};

/// `{type: dlq}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqConfig {}

impl SinkConfig for DlqConfig {
    const KIND: &'static str = "dlq";
    const PLACEMENT: Placement = Placement::Shared;
    fn build(self, _cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(DlqSink))
    }
}

struct DlqSink;

#[async_trait::async_trait]
impl Sink for DlqSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        for routed in &batch {
            let error = format!(
                "sent to the dead-letter queue by pipeline `{}`",
                routed.pipeline
            );
            dead_letter(commit, routed, Reason::DlqSink, error);
        }
        Ok(())
    }
}
