//! `set`: sets an event's priority, routing key or topic, to a literal or to a value read from
//! the data.
//!
//! ```yaml
//! - type: set
//!   priority: high                    # a literal
//!   routing_key: {from: /customer/id} # a JSON pointer into the data
//! ```

use colloquium_config::ConfigError;
use colloquium_event::{Event, Priority};
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{
    BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, StageError,
};

/// `{type: set, priority?, routing_key?, topic?}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// `critical|high|medium|low|batch`, or `{from: pointer}`.
    #[serde(default)]
    pub priority: Option<Setting>,
    /// A literal, or `{from: pointer}`.
    #[serde(default)]
    pub routing_key: Option<Setting>,
    /// A literal, or `{from: pointer}`.
    #[serde(default)]
    pub topic: Option<Setting>,
}

/// A literal value, or where in the data to read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    /// Read from the data at this JSON pointer (a string, or a number or boolean as text).
    From {
        /// The pointer.
        from: String,
    },
    /// This value.
    Literal(String),
}

impl StageConfig for SetConfig {
    const KIND: &'static str = "set";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let fields = [
            ("priority", &self.priority),
            ("routing_key", &self.routing_key),
            ("topic", &self.topic),
        ];
        if fields.iter().all(|(_, s)| s.is_none()) {
            return Err(ConfigError::new(
                &cx.at,
                "`set` needs at least one of priority, routing_key, topic",
            ));
        }
        for (name, setting) in fields {
            match setting {
                Some(Setting::From { from }) if !from.starts_with('/') => {
                    return Err(ConfigError::new(
                        cx.key(&format!("{name}.from")),
                        format!("`{from}` is not a JSON pointer"),
                    ));
                }
                Some(Setting::Literal(p)) if name == "priority" => {
                    p.parse::<Priority>()
                        .map_err(|e| ConfigError::new(cx.key(name), e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(BuiltStage::sync(Set { config: self }))
    }
}

struct Set {
    config: SetConfig,
}

impl Set {
    fn apply(&self, event: &mut Event) -> Result<(), StageError> {
        let read = |setting: &Setting| -> Result<String, StageError> {
            match setting {
                Setting::Literal(v) => Ok(v.clone()),
                Setting::From { from } => match event.data_pointer(from) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
                    Some(other) => Err(StageError::BadValue(format!(
                        "`set` needs a string at {from}, found {other}"
                    ))),
                    None => Err(StageError::BadValue(format!("`set`: no value at {from}"))),
                },
            }
        };
        let priority = match &self.config.priority {
            Some(s) => {
                let text = read(s)?;
                Some(
                    text.parse::<Priority>()
                        .map_err(|e| StageError::BadValue(e.to_string()))?,
                )
            }
            None => None,
        };
        let routing_key = self.config.routing_key.as_ref().map(read).transpose()?;
        let topic = self.config.topic.as_ref().map(read).transpose()?;
        // Only now, when every value was read, does the event change.
        let m = &mut event.metadata;
        m.priority = priority.unwrap_or(m.priority);
        m.routing_key = routing_key.or(m.routing_key.take());
        m.topic = topic.or(m.topic.take());
        Ok(())
    }
}

impl Stage for Set {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        match self.apply(&mut event) {
            Ok(()) => {
                cx.emit(event);
                Ok(())
            }
            Err(error) => Err(Failed::new(error, event)),
        }
    }
}
