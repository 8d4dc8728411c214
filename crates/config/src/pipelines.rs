//! The topology sections: `sources`, `scripts`, `sinks`, `pipelines` and `tests`.
//!
//! This module owns their shape and the checks that need nothing but the document: names are
//! unique, every reference (a pipeline's sources and sinks, a test's pipeline) exists. Stage and
//! sink options are kept as JSON here and typed by the component that owns them (the pipeline
//! crate's registry), which also compiles the Computo scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ConfigError;

/// `scripts.NAME`: a named Computo script, inline or in a JSON file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ScriptSource {
    /// `{file: path}`: a JSON file, relative to the config file.
    File {
        /// The file as written in the config.
        file: PathBuf,
    },
    /// Set by the loader once it has read `file` (never written in a config).
    #[serde(skip_deserializing)]
    Loaded {
        /// The file, resolved against the config's directory.
        file: PathBuf,
        /// Its contents.
        script: Value,
    },
    /// The script itself.
    Inline(Value),
}

impl ScriptSource {
    /// The script document, once files are loaded (`None` for an unread `File`).
    pub fn script(&self) -> Option<&Value> {
        match self {
            ScriptSource::File { .. } => None,
            ScriptSource::Loaded { script, .. } | ScriptSource::Inline(script) => Some(script),
        }
    }
}

/// A stage or sink as written: its `type` and its options, which the component types itself.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ComponentConfig {
    /// The component kind (`transform`, `filter`, `store`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// A stage's stable identity within its pipeline, which keys its state (default: the
    /// kind when it is the only one of its kind, else `kind#n`, its ordinal among its kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What to do when this stage fails (default: the pipeline's `on_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    /// Every other key, for the component's own typed config.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

/// `sources.NAME`: a source kind and its options, which the source kind types itself (the
/// ingest crate's source registry). Events it receives carry its name as `metadata.source`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SourceConfig {
    /// The source kind (`http`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// `false`: its events are not written to the log, only handed to the pipelines in
    /// memory (fire-and-forget telemetry; what they cannot take is counted as dropped).
    #[serde(default = "persists", skip_serializing_if = "is_true")]
    pub persist: bool,
    /// Every other key, for the source kind's own typed config.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

fn persists() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl SourceConfig {
    /// A source of `kind` with no options.
    pub fn of_kind(kind: &str) -> Self {
        SourceConfig {
            kind: kind.to_owned(),
            persist: true,
            options: Map::new(),
        }
    }
}

/// `pipelines[i]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Unique name; outputs, checkpoints, metrics and the DLQ are keyed by it.
    pub name: String,
    /// Source names whose events this pipeline takes (empty: every source).
    #[serde(default)]
    pub from: Vec<String>,
    /// Which events it takes: a Computo predicate, a script name, or a shorthand such as
    /// `{equals: ["/type", "order"]}` (absent: every event).
    #[serde(default)]
    pub when: Option<Value>,
    /// Stages, in order.
    #[serde(default)]
    pub stages: Vec<ComponentConfig>,
    /// Sink names the results go to.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// How results are spread over several sinks.
    #[serde(default)]
    pub balance: Balance,
    /// JSON pointer into the event data whose value picks the sink (`balance: key_hash`).
    #[serde(default)]
    pub balance_key: Option<String>,
    /// What to do with an event a stage fails on (a stage's own `on_error` wins).
    #[serde(default)]
    pub on_error: OnError,
    /// Where a pipeline that has no checkpoint yet starts reading the log.
    #[serde(default)]
    pub start_from: StartFrom,
    /// How often stages' `on_tick` runs when no events arrive (they also run once per step).
    #[serde(default = "default_tick_interval", with = "humantime_serde")]
    pub tick_interval: Duration,
}

fn default_tick_interval() -> Duration {
    Duration::from_secs(1)
}

impl PipelineConfig {
    /// Each stage's identity, in order: its `id`, else its kind when it is the only stage of
    /// that kind, else `kind#n` with `n` its ordinal among the stages of its kind. State is
    /// keyed by it, so inserting a stage of another kind keeps every other stage's state.
    pub fn stage_ids(&self) -> Vec<String> {
        let mut of_kind: BTreeMap<&str, usize> = BTreeMap::new();
        for stage in &self.stages {
            *of_kind.entry(stage.kind.as_str()).or_default() += 1;
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        self.stages
            .iter()
            .map(|stage| {
                let ordinal = seen.entry(stage.kind.as_str()).or_default();
                let n = *ordinal;
                *ordinal += 1;
                match &stage.id {
                    Some(id) => id.clone(),
                    None if of_kind[stage.kind.as_str()] == 1 => stage.kind.clone(),
                    None => format!("{}#{n}", stage.kind),
                }
            })
            .collect()
    }
}

/// How a pipeline's results are spread over its sinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Every sink gets every result.
    #[default]
    FanOut,
    /// One sink per result, in turn.
    RoundRobin,
    /// One sink per result, chosen by hashing `balance_key` (stable for a given key).
    KeyHash,
}

/// What happens to an event a stage fails on: `dlq`, `skip`, `stop_pipeline`, `retry` or
/// `{retry: {max_attempts: 3, backoff: 100ms}}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Into the dead-letter queue with the error (replayable).
    #[default]
    Dlq,
    /// Counted and dropped.
    Skip,
    /// Tried again with backoff; after the last attempt, into the dead-letter queue.
    Retry {
        /// Attempts in all, the first included.
        #[serde(default = "default_max_attempts")]
        max_attempts: u32,
        /// Wait before the first retry; doubled for each later one.
        #[serde(default = "default_backoff", with = "humantime_serde")]
        backoff: Duration,
    },
    /// The pipeline halts and reports unhealthy; other pipelines keep running.
    StopPipeline,
}

/// The options of `on_error: {retry: …}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryOptions {
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff", with = "humantime_serde")]
    backoff: Duration,
}

// By hand: serde_yaml reads externally tagged enums only as YAML tags (`!retry`), and a
// `{retry: {...}}` map is the natural way to write this.
impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        const EXPECTED: &str = "expected `dlq`, `skip`, `retry`, `stop_pipeline` or `{retry: {max_attempts, backoff}}`";
        let retry = |options: Value| {
            let o: RetryOptions = serde_json::from_value(options)
                .map_err(|e| D::Error::custom(format!("retry: {e}")))?;
            Ok(OnError::Retry {
                max_attempts: o.max_attempts,
                backoff: o.backoff,
            })
        };
        match Value::deserialize(deserializer)? {
            Value::String(name) => match name.as_str() {
                "dlq" => Ok(OnError::Dlq),
                "skip" => Ok(OnError::Skip),
                "stop_pipeline" => Ok(OnError::StopPipeline),
                "retry" => retry(Value::Object(Map::new())),
                other => Err(D::Error::custom(format!(
                    "unknown variant `{other}`, {EXPECTED}"
                ))),
            },
            Value::Object(mut map) if map.len() == 1 && map.contains_key("retry") => {
                retry(map.remove("retry").unwrap_or(Value::Null))
            }
            _ => Err(D::Error::custom(EXPECTED)),
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}

fn default_backoff() -> Duration {
    Duration::from_millis(100)
}

/// Where a new pipeline starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Events stored from now on.
    #[default]
    Latest,
    /// Everything still in the log.
    Earliest,
}

/// `tests[i]`: a unit test of the config, run by `colloquium test`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Shown in the report.
    pub name: String,
    /// The pipeline whose outputs are checked (absent: only the DLQ is checked).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Events sent through routing and every matching pipeline, in order.
    pub input: Vec<TestEvent>,
    /// What should come out.
    #[serde(default)]
    pub expect: TestExpect,
}

/// One input event of a test.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// The event's data (a JSON object).
    pub data: Map<String, Value>,
    /// Source name (default `http`).
    #[serde(default)]
    pub source: Option<String>,
    /// Metadata fields to set: `priority`, `topic`, `routing_key`.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// Expected results of a test.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestExpect {
    /// The data of every event the pipeline emits, in order (absent: not checked).
    #[serde(default)]
    pub outputs: Option<Vec<Value>>,
    /// The data of its last outputs only (as many as given), for a test whose first events
    /// only build state (a baseline, a window).
    #[serde(default)]
    pub last_outputs: Option<Vec<Value>>,
    /// The reasons of every dead-letter entry, in order (absent: none expected).
    #[serde(default)]
    pub dlq: Vec<String>,
}

/// Deserializes a component's options (a stage's, a sink's, a source's) as its typed config
/// `C`, errors led by their key path under `at`.
pub fn typed_options<C: serde::de::DeserializeOwned>(
    options: &Map<String, Value>,
    at: &str,
) -> Result<C, ConfigError> {
    serde_path_to_error::deserialize(Value::Object(options.clone())).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        ConfigError::new(at, e.into_inner().to_string())
    })
}

/// Checks names and references across the topology sections.
pub(crate) fn validate(
    sources: &BTreeMap<String, SourceConfig>,
    sinks: &BTreeMap<String, ComponentConfig>,
    pipelines: &[PipelineConfig],
    tests: &[TestCase],
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    for (i, p) in pipelines.iter().enumerate() {
        let at = |key: &str| format!("pipelines[{i}].{key}");
        if p.name.is_empty()
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            errors.push(ConfigError::new(
                at("name"),
                format!(
                    "invalid pipeline name `{}`: use letters, digits, `_`, `-` and `.`",
                    p.name
                ),
            ));
        }
        if !names.insert(p.name.as_str()) {
            errors.push(ConfigError::new(
                at("name"),
                format!("pipeline `{}` is defined twice", p.name),
            ));
        }
        let mut ids = BTreeSet::new();
        for (j, (stage, id)) in p.stages.iter().zip(p.stage_ids()).enumerate() {
            let at = at(&format!("stages[{j}].id"));
            if let Some(own) = &stage.id
                && (own.is_empty()
                    || !own
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
            {
                let message =
                    format!("invalid stage id `{own}`: use letters, digits, `_`, `-` and `.`");
                errors.push(ConfigError::new(at, message));
            } else if !ids.insert(id.clone()) {
                let message = format!(
                    "stage id `{id}` is used twice in this pipeline: give one of them another `id`"
                );
                errors.push(ConfigError::new(at, message));
            }
        }
        for (j, source) in p.from.iter().enumerate() {
            if !sources.contains_key(source) {
                errors.push(ConfigError::new(
                    at(&format!("from[{j}]")),
                    format!(
                        "no source named `{source}` (sources: {})",
                        known(sources.keys())
                    ),
                ));
            }
        }
        for (j, sink) in p.sinks.iter().enumerate() {
            if !sinks.contains_key(sink) {
                errors.push(ConfigError::new(
                    at(&format!("sinks[{j}]")),
                    format!("no sink named `{sink}` (sinks: {})", known(sinks.keys())),
                ));
            }
        }
        match (p.balance, &p.balance_key) {
            (Balance::KeyHash, None) => {
                errors.push(ConfigError::new(
                    at("balance_key"),
                    "`balance: key_hash` needs a `balance_key` pointer",
                ));
            }
            (_, Some(key)) if !key.is_empty() && !key.starts_with('/') => {
                errors.push(ConfigError::new(
                    at("balance_key"),
                    format!("`{key}` is not a JSON pointer (it must start with `/`)"),
                ));
            }
            _ => {}
        }
        if let OnError::Retry {
            max_attempts: 0, ..
        } = p.on_error
        {
            errors.push(ConfigError::new(
                at("on_error.retry.max_attempts"),
                "must be at least 1",
            ));
        }
    }
    for (i, test) in tests.iter().enumerate() {
        if let Some(pipeline) = test
            .pipeline
            .as_ref()
            .filter(|p| !names.contains(p.as_str()))
        {
            errors.push(ConfigError::new(
                format!("tests[{i}].pipeline"),
                format!("no pipeline named `{pipeline}`"),
            ));
        }
        for (j, event) in test.input.iter().enumerate() {
            if let Some(source) = event.source.as_ref().filter(|s| !sources.contains_key(*s)) {
                errors.push(ConfigError::new(
                    format!("tests[{i}].input[{j}].source"),
                    format!("no source named `{source}`"),
                ));
            }
        }
    }
    errors
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none defined".to_owned()
    } else {
        names.join(", ")
    }
}

/// The sources a config without a `sources:` section has.
pub(crate) fn default_sources() -> BTreeMap<String, SourceConfig> {
    BTreeMap::from([("http".to_owned(), SourceConfig::of_kind("http"))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoadError, from_str};

    fn load(text: &str) -> Result<crate::Config, LoadError> {
        from_str(text, &|_| None)
    }

    const TOPOLOGY: &str = r#"
scripts:
  enrich: ["obj", ["data", ["$input"]]]
  from_file: {file: scripts/x.json}
sinks:
  archive: {type: store}
  hook: {type: http, url: "http://127.0.0.1:9/hook"}
pipelines:
  - name: orders
    from: [http]
    when: {equals: ["/type", "order"]}
    stages:
      - {type: transform, script: enrich}
      - {type: filter, when: [">", ["get", ["$input"], "/amount"], 10], on_error: skip}
    sinks: [archive, hook]
    balance: key_hash
    balance_key: /customer
    on_error: {retry: {max_attempts: 5, backoff: 50ms}}
    start_from: earliest
tests:
  - name: an order
    pipeline: orders
    input:
      - data: {type: order, amount: 20}
        metadata: {priority: high}
    expect:
      outputs: [{data: {type: order, amount: 20}}]
"#;

    #[test]
    fn parses_a_whole_topology() {
        let config = load(TOPOLOGY).unwrap();
        assert!(config.sources.contains_key("http"));
        let p = &config.pipelines[0];
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[0].kind, "transform");
        assert_eq!(p.stages[0].options["script"], "enrich");
        assert_eq!(p.stages[1].on_error, Some(OnError::Skip));
        assert_eq!(p.balance, Balance::KeyHash);
        assert_eq!(
            p.on_error,
            OnError::Retry {
                max_attempts: 5,
                backoff: Duration::from_millis(50)
            }
        );
        assert_eq!(p.start_from, StartFrom::Earliest);
        assert!(matches!(
            config.scripts["from_file"],
            ScriptSource::File { .. }
        ));
        assert!(config.scripts["enrich"].script().is_some());
        assert_eq!(config.tests[0].input[0].metadata["priority"], "high");
    }

    #[test]
    fn every_bad_reference_is_named_by_its_key_path() {
        let text = r#"
sinks:
  archive: {type: store}
pipelines:
  - name: a
    from: [kafka]
    sinks: [archive, nowhere]
    balance: key_hash
  - name: a
    balance_key: customer
    on_error: {retry: {max_attempts: 0}}
tests:
  - {name: t, pipeline: missing, input: [{data: {}, source: udp}]}
"#;
        let message = load(text).unwrap_err().to_string();
        for expected in [
            "pipelines[0].from[0]: no source named `kafka` (sources: http)",
            "pipelines[0].sinks[1]: no sink named `nowhere` (sinks: archive)",
            "pipelines[0].balance_key: `balance: key_hash` needs a `balance_key` pointer",
            "pipelines[1].name: pipeline `a` is defined twice",
            "pipelines[1].balance_key: `customer` is not a JSON pointer",
            "pipelines[1].on_error.retry.max_attempts: must be at least 1",
            "tests[0].pipeline: no pipeline named `missing`",
            "tests[0].input[0].source: no source named `udp`",
        ] {
            assert!(
                message.contains(expected),
                "missing {expected:?} in:\n{message}"
            );
        }
        let message = load("pipelines:\n  - name: a\n    colour: red\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("pipelines[0].colour: unknown field `colour`"),
            "{message}"
        );
        let message = load("pipelines:\n  - name: a\n    on_error: explode\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("pipelines[0].on_error: unknown variant `explode`"),
            "{message}"
        );
    }

    #[test]
    fn script_files_load_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/x.json"), r#"["+", 1, 2]"#).unwrap();
        let path = dir.path().join("colloquium.yaml");
        std::fs::write(
            &path,
            "scripts:\n  x: {file: scripts/x.json}\n  y: {file: missing.json}\n",
        )
        .unwrap();
        let message = crate::from_file(&path).unwrap_err().to_string();
        assert!(message.starts_with("scripts.y.file: reading "), "{message}");
        std::fs::write(&path, "scripts:\n  x: {file: scripts/x.json}\n").unwrap();
        let config = crate::from_file(&path).unwrap();
        assert_eq!(
            config.scripts["x"].script(),
            Some(&serde_json::json!(["+", 1, 2]))
        );
    }
}
