//! `stdout`: results as NDJSON on the node's standard output, at-least-once (printed before the
//! step commits).

use std::io::Write;
use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_storage::PipelineCommit;
use serde::Deserialize;

use crate::sink::{Routed, Sink, SinkBuildContext, SinkConfig, SinkError};

/// `{type: stdout}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

impl SinkConfig for StdoutConfig {
    const KIND: &'static str = "stdout";
    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        Ok(Box::new(StdoutSink {
            name: cx.name.clone(),
        }))
    }
}

struct StdoutSink {
    name: Arc<str>,
}

impl Sink for StdoutSink {
    fn send(&mut self, batch: Vec<Routed>, _commit: &mut PipelineCommit) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        let mut write = || -> std::io::Result<()> {
            for routed in &batch {
                serde_json::to_writer(&mut out, &routed.event)?;
                out.write_all(b"\n")?;
            }
            out.flush()
        };
        write().map_err(|e| SinkError {
            sink: self.name.clone(),
            message: e.to_string(),
        })
    }
}
