//! `schema`: validates each event's data against a JSON Schema (the `jsonschema` crate; draft
//! 2020-12 and draft-07, and the others it knows, chosen by the schema's `$schema`, 2020-12
//! when it names none). An event that fails is dead-lettered with reason `schema_invalid` and
//! the validator's messages (instance path, the failing rule's schema path, the message), at
//! most `max_errors` of them; a valid event goes on unchanged.
//!
//! - `schema`: the schema inline, or `file: path` (relative to the config file), read and
//!   compiled when the pipeline is built: a bad schema is a config error.
//! - `draft: 2020-12 | 7 | auto` (default `auto`): force a draft whatever `$schema` says.

use std::path::PathBuf;

use colloquium_config::ConfigError;
use colloquium_event::{Event, Reason};
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{
    BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, StageError,
};

/// `{type: schema, schema: {...}}` or `{type: schema, file: schemas/event.json}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// The schema, inline.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Or a file holding it.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The draft (`auto`: from `$schema`).
    #[serde(default)]
    pub draft: Draft,
    /// Most validator messages kept in a dead letter.
    #[serde(default = "default_max_errors")]
    pub max_errors: usize,
}

/// `draft:`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum Draft {
    /// From the schema's `$schema` (2020-12 when absent).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Draft 2020-12.
    #[serde(rename = "2020-12")]
    Draft202012,
    /// Draft-07.
    #[serde(rename = "7", alias = "07")]
    Draft7,
}

/// Longest validator message kept (in bytes).
const MAX_MESSAGE: usize = 200;

fn default_max_errors() -> usize {
    10
}

impl StageConfig for SchemaConfig {
    const KIND: &'static str = "schema";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let schema = match (self.schema, &self.file) {
            (Some(schema), None) => schema,
            (None, Some(file)) => {
                let path = cx.scripts.path(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    ConfigError::new(cx.key("file"), format!("reading {}: {e}", path.display()))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    ConfigError::new(
                        cx.key("file"),
                        format!("{} is not JSON: {e}", path.display()),
                    )
                })?
            }
            _ => {
                return Err(ConfigError::new(
                    cx.at.clone(),
                    "give the schema inline (`schema:`) or as a `file:`, one of them",
                ));
            }
        };
        let compiled = match self.draft {
            Draft::Auto if schema.get("$schema").is_some() => jsonschema::validator_for(&schema),
            Draft::Auto | Draft::Draft202012 => jsonschema::draft202012::new(&schema),
            Draft::Draft7 => jsonschema::draft7::new(&schema),
        };
        let validator = compiled.map_err(|e| {
            let at = if self.file.is_some() {
                "file"
            } else {
                "schema"
            };
            ConfigError::new(cx.key(at), format!("not a valid JSON Schema: {e}"))
        })?;
        Ok(BuiltStage::sync(Schema {
            validator,
            max_errors: self.max_errors.max(1),
        }))
    }
}

struct Schema {
    validator: jsonschema::Validator,
    max_errors: usize,
}

impl Stage for Schema {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        // Validated as one JSON value: taken out of the event and put back, not copied.
        let data = Value::Object(std::mem::take(&mut event.data));
        let mut messages = Vec::new();
        let mut more = 0usize;
        if !self.validator.is_valid(&data) {
            for error in self.validator.iter_errors(&data) {
                if messages.len() < self.max_errors {
                    let path = error.instance_path().to_string();
                    // The validator quotes the failing value: a hostile one may be huge.
                    let mut message = error.to_string();
                    if message.len() > MAX_MESSAGE {
                        let cut = (0..=MAX_MESSAGE)
                            .rev()
                            .find(|i| message.is_char_boundary(*i))
                            .unwrap_or(0);
                        message.truncate(cut);
                        message.push('…');
                    }
                    messages.push(format!(
                        "{}: {message} (rule {})",
                        if path.is_empty() { "/" } else { &path },
                        error.schema_path()
                    ));
                } else {
                    more += 1;
                }
            }
        }
        if let Value::Object(map) = data {
            event.data = map;
        }
        if messages.is_empty() {
            cx.emit(event);
            return Ok(());
        }
        if more > 0 {
            messages.push(format!("and {more} more"));
        }
        let error = StageError::External {
            reason: Reason::SchemaInvalid,
            message: messages.join("; "),
        };
        Err(Failed::new(error, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use serde_json::json;

    use crate::stages::test_event as event;

    fn pipeline(stage: &str) -> Result<Pipeline, String> {
        crate::stages::one_stage::<SchemaConfig>(stage)
    }

    /// The shipped StreamGuard event schema.
    fn streamguard() -> String {
        // Built in, so the test binary does not depend on where the checkout it came from is.
        let schema = include_str!("../../../../examples/streamguard/event-schema.json");
        format!("{{type: schema, schema: {schema}}}")
    }

    fn good() -> Value {
        json!({"event_id": "evt_a1b2c3d4e5f6", "timestamp": 1_767_225_600_000_u64,
            "event_type": "auth_attempt", "source_ip": "192.168.1.10", "destination_ip": "10.0.0.5",
            "user": "alice", "status": "success", "threat_score": 0.25,
            "metadata": {"geo_location": "US-CA-San Francisco", "user_agent": "curl/8"}})
    }

    #[test]
    fn streamguard_events_are_checked_against_the_shipped_schema() {
        let mut p = pipeline(&streamguard()).unwrap();
        let outcome = p.process(&event(good()));
        assert_eq!(outcome.outputs.len(), 1, "{:?}", outcome.failures);
        for (pointer, value, rule) in [
            ("/event_id", json!("42"), "pattern"),
            ("/event_type", json!("login"), "enum"),
            ("/source_ip", json!("999.1.1.1"), "source_ip"),
            ("/status", json!("FAILED"), "enum"),
            ("/threat_score", json!(1.5), "maximum"),
            ("/metadata/geo_location", json!("somewhere"), "pattern"),
        ] {
            let mut bad = good();
            *bad.pointer_mut(pointer).unwrap() = value;
            let outcome = p.process(&event(bad));
            let failure = &outcome.failures[0];
            assert_eq!(failure.reason, Reason::SchemaInvalid, "{pointer}");
            assert!(
                failure.error.contains(pointer),
                "{pointer}: {}",
                failure.error
            );
            assert!(failure.error.contains(rule), "{pointer}: {}", failure.error);
        }
        let mut missing = good();
        missing.as_object_mut().unwrap().remove("timestamp");
        let failure = &p.process(&event(missing)).failures[0];
        assert!(failure.error.contains("timestamp"), "{}", failure.error);
        let mut huge = good();
        huge["user"] = json!("é".repeat(5_000));
        let failure = &p.process(&event(huge)).failures[0];
        assert!(failure.error.len() < 400, "{}", failure.error.len());
    }

    #[test]
    fn drafts_limits_and_bad_schemas() {
        let mut p = pipeline("{type: schema, draft: '7', max_errors: 2, schema: {type: object, properties: {a: {type: integer}, b: {type: integer}, c: {type: integer}}}}").unwrap();
        let failure = &p
            .process(&event(json!({"a": "x", "b": "y", "c": "z"})))
            .failures[0];
        assert!(failure.error.ends_with("and 1 more"), "{}", failure.error);
        let error = |stage: &str| pipeline(stage).err().unwrap_or_default();
        assert!(error("{type: schema, schema: {type: 12}}").contains("stages[0].schema"));
        assert!(error("{type: schema}").contains("inline"));
        assert!(error("{type: schema, file: no/such.json}").contains("stages[0].file"));
    }
}
