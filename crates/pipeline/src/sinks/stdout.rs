//! `stdout`: results as NDJSON on the node's standard output, at-least-once (printed before the
//! step commits). Written on a blocking thread: a reader that stops reading stalls only this
//! sink's pipelines.

use std::io::Write;
use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_storage::PipelineCommit;
use serde::Deserialize;

use crate::sink::{Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError};

/// `{type: stdout}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

impl SinkConfig for StdoutConfig {
    const KIND: &'static str = "stdout";
    const PLACEMENT: Placement = Placement::Exclusive;
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(StdoutSink {
            name: cx.name.clone(),
        }))
    }
}

struct StdoutSink {
    name: Arc<str>,
}

#[async_trait::async_trait]
impl Sink for StdoutSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        _commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        let error = |message: String| SinkError {
            sink: self.name.clone(),
            message,
        };
        let mut bytes = Vec::with_capacity(batch.len() * 256);
        for routed in &batch {
            serde_json::to_writer(&mut bytes, &routed.event).map_err(|e| error(e.to_string()))?;
            bytes.push(b'\n');
        }
        // A reader that stops reading fills the pipe and blocks the write: off the runtime.
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).and_then(|()| out.flush())
        })
        .await
        .map_err(|e| error(e.to_string()))?
        .map_err(|e| error(e.to_string()))
    }
}
