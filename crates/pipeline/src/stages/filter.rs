//! `filter`: keeps the events a predicate is true for and drops the rest.
//!
//! The predicate is written like a pipeline's `when:`: a Computo expression, a script name, or a
//! shorthand such as `{gt: ["/amount", 100]}`.

use colloquium_config::ConfigError;
use colloquium_event::Event;
use colloquium_router::Predicate;
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, with_data};

/// `{type: filter, when: PREDICATE}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Events for which this is true pass.
    pub when: Value,
}

impl StageConfig for FilterConfig {
    const KIND: &'static str = "filter";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let predicate = Predicate::compile(&self.when, &cx.key("when"), cx.scripts)?;
        Ok(BuiltStage::sync(Filter {
            predicate,
            pipeline: cx.pipeline.to_string(),
        }))
    }
}

struct Filter {
    predicate: Predicate,
    pipeline: String,
}

impl Stage for Filter {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let pipeline = &self.pipeline;
        let predicate = &self.predicate;
        let keep = with_data(&mut event, pipeline, |data, meta| {
            predicate.matches(data, meta)
        });
        match keep {
            Ok(true) => cx.emit(event),
            Ok(false) => {}
            Err(e) => {
                return Err(Failed::new(e, event));
            }
        }
        Ok(())
    }
}
