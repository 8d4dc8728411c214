//! `transform`: replaces an event's data with a Computo script's result.
//!
//! The script reads the data as input 0 and the metadata as input 1. An object result becomes
//! the new data; an array emits one event per element (each must be an object); `null` drops
//! the event. Anything else is the event's error.

use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_event::{Event, json_kind};
use computo::Script;
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{
    BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, StageError, with_data,
};

/// `{type: transform, script: NAME | [computo…]}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A script name from `scripts:` or an inline Computo expression.
    pub script: Value,
}

impl StageConfig for TransformConfig {
    const KIND: &'static str = "transform";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let script = cx.scripts.resolve(&self.script, &cx.key("script"))?;
        Ok(BuiltStage::sync(Transform {
            script,
            pipeline: cx.pipeline.clone(),
        }))
    }
}

struct Transform {
    script: Arc<Script>,
    pipeline: Arc<str>,
}

impl Stage for Transform {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let result = with_data(&mut event, &self.pipeline, |data, meta| {
            self.script.eval(&[data, &meta()])
        });
        let result = match result {
            Ok(result) => result,
            Err(e) => {
                return Err(Failed::new(e, event));
            }
        };
        match result {
            Value::Null => {}
            Value::Object(data) => cx.emit(Event { data, ..event }),
            Value::Array(items) => {
                if let Some(bad) = items.iter().find(|v| !v.is_object()) {
                    let error = StageError::BadOutput(json_kind(bad));
                    return Err(Failed::new(error, event));
                }
                for item in items {
                    if let Value::Object(data) = item {
                        cx.emit(Event {
                            data,
                            ..event.clone()
                        });
                    }
                }
            }
            other => {
                let error = StageError::BadOutput(json_kind(&other));
                return Err(Failed::new(error, event));
            }
        }
        Ok(())
    }
}
