//! Loading in steps: read the file; parse YAML (JSON is accepted: it is YAML); substitute
//! `${ENV}` in string values; deserialize into [`Config`] with the failing key path; validate.
//! Substitution and validation report every problem, not just the first.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::Config;
use crate::env::substitute;
use crate::pipelines::ScriptSource;

/// One problem in a config document, at a key path such as `storage.retention`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, with `[i]` for sequence items; empty for the document itself.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl ConfigError {
    /// Returns an error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not YAML or JSON.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The document parsed but has bad keys or values; each error names its key path.
    #[error("{}", list(.0))]
    Invalid(Vec<ConfigError>),
}

fn list(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// A config document read as far as it goes: the config (without the entries whose shape is
/// wrong, so the rest can still be checked), and every problem found, each at its key path.
#[derive(Debug, Default)]
pub struct Checked {
    /// The config as far as it deserialized: entries with a wrong shape (an unknown key, a bad
    /// value, a pipeline that does not parse) are left out.
    pub config: Option<Config>,
    /// Every problem: `${ENV}`, unknown keys and bad values of every section, then the
    /// semantic checks and script files of what deserialized.
    pub errors: Vec<ConfigError>,
    kept: KeptItems,
}

impl Checked {
    /// A config with no problems.
    pub fn ok(config: Config) -> Self {
        Self {
            config: Some(config),
            ..Self::default()
        }
    }

    /// Puts an error found in [`Checked::config`] at its place in the document as written
    /// (`pipelines[j]` of the config is `pipelines[i]` of the document when items before it
    /// were left out); `None` when it only says that a left-out entry is missing (`no sink
    /// named X` for a sink whose own problem is already reported).
    pub fn place(&self, error: ConfigError) -> Option<ConfigError> {
        self.kept.place(error)
    }

    fn into_result(self) -> Result<Config, LoadError> {
        match self.config {
            Some(config) if self.errors.is_empty() => Ok(config),
            _ => Err(LoadError::Invalid(self.errors)),
        }
    }
}

/// Loads a config file, substituting from the process environment.
pub fn from_file(path: &Path) -> Result<Config, LoadError> {
    check_file(path)?.into_result()
}

/// Reads a config file and reports every problem in it (see [`Checked`]); `Err` only when
/// the file cannot be read or is not YAML.
pub fn check_file(path: &Path) -> Result<Checked, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut checked = check_str(&text, &|name| std::env::var(name).ok())?;
    if let Some(config) = &mut checked.config {
        let base = path.parent().unwrap_or(Path::new("."));
        config.base_dir = Some(base.to_owned());
        checked.errors.extend(load_script_files(config, base));
    }
    Ok(checked)
}

/// Reads every `scripts.NAME.file` (relative to `base`, the config file's directory) as JSON.
pub fn load_script_files(config: &mut Config, base: &Path) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, source) in &mut config.scripts {
        let ScriptSource::File { file } = source else {
            continue;
        };
        let resolved = base.join(&*file);
        let at = format!("scripts.{name}.file");
        let text = match std::fs::read_to_string(&resolved) {
            Ok(text) => text,
            Err(e) => {
                errors.push(ConfigError::new(
                    at,
                    format!("reading {}: {e}", resolved.display()),
                ));
                continue;
            }
        };
        match serde_json::from_str(&text) {
            Ok(script) => {
                *source = ScriptSource::Loaded {
                    file: resolved,
                    script,
                }
            }
            Err(e) => errors.push(ConfigError::new(
                at,
                format!("{} is not JSON: {e}", resolved.display()),
            )),
        }
    }
    errors
}

/// Loads a config document from text, looking `${VAR}`s up with `env`.
pub fn from_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, LoadError> {
    check_str(text, env)?.into_result()
}

/// Reads a config document and reports every problem in it (see [`Checked`]); `Err` only
/// when it is not YAML.
pub fn check_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Checked, LoadError> {
    let mut document: Value =
        serde_yaml::from_str(text).map_err(|e| LoadError::Syntax(e.to_string()))?;
    if document.is_null() {
        // An empty file is the default config.
        document = Value::Mapping(Default::default());
    }
    let mut errors = Vec::new();
    let mut written = Vec::new();
    substitute_env(
        &mut document,
        &mut String::new(),
        env,
        &mut errors,
        &mut written,
    );
    let mut kept = KeptItems::default();
    let mut config = match deserialize::<Config>(document.clone()) {
        Ok(config) => {
            errors.extend(config.validate());
            Some(config)
        }
        Err(first) => {
            let mut shape = shape_errors(&document);
            if shape.errors.is_empty() {
                shape.errors.push(first);
            }
            // A value left as `${VAR}` by a failed substitution is wrong for its type too:
            // that is the same problem, already reported.
            shape
                .errors
                .retain(|e| !errors.iter().any(|s: &ConfigError| s.path == e.path));
            errors.extend(shape.errors);
            // The rest, checked as far as it goes: a bad sink entry must not hide a bad
            // reference elsewhere. Paths into trimmed lists are put back to the original index.
            let config = deserialize::<Config>(shape.repaired).ok();
            if let Some(config) = &config {
                errors.extend(
                    config
                        .validate()
                        .into_iter()
                        .filter_map(|e| shape.kept.place(e)),
                );
            }
            kept = shape.kept;
            config
        }
    };
    if let Some(config) = &mut config {
        config.written = crate::model::Substitutions(written);
    }
    Ok(Checked {
        config,
        errors,
        kept,
    })
}

/// Deserializes `document`, naming the key path of the first problem.
fn deserialize<T: serde::de::DeserializeOwned>(document: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

/// The shape problems of a document, and the document without the entries that have them.
struct Shape {
    errors: Vec<ConfigError>,
    repaired: Value,
    kept: KeptItems,
}

/// What was left out of a document for its shape.
#[derive(Debug, Default)]
struct KeptItems {
    /// For each list trimmed of bad items (`pipelines`), the original index of each item kept.
    lists: Vec<(String, Vec<usize>)>,
    /// The map entries left out, as (section, name): `("sinks", "x")`.
    left_out: Vec<(String, String)>,
}

impl KeptItems {
    /// See [`Checked::place`].
    fn place(&self, mut error: ConfigError) -> Option<ConfigError> {
        if self.is_knock_on(&error) {
            return None;
        }
        self.restore(&mut error.path);
        Some(error)
    }

    /// Whether `error` only says that a left-out entry does not exist.
    fn is_knock_on(&self, error: &ConfigError) -> bool {
        self.left_out.iter().any(|(section, name)| {
            let singular = section.strip_suffix('s').unwrap_or(section);
            error
                .message
                .starts_with(&format!("no {singular} named `{name}`"))
        })
    }

    /// Rewrites `name[j]` at the start of `path` to the item's index in the original list.
    fn restore(&self, path: &mut String) {
        for (name, kept) in &self.lists {
            let Some(rest) = path.strip_prefix(&format!("{name}[")) else {
                continue;
            };
            let Some((index, rest)) = rest.split_once(']') else {
                continue;
            };
            if let Some(original) = index.parse::<usize>().ok().and_then(|j| kept.get(j)) {
                *path = format!("{name}[{original}]{rest}");
            }
            return;
        }
    }
}

/// Every shape problem (unknown key, bad value) of a config document, not just serde's first:
/// each top-level section is deserialized alone, and a failing section entry by entry (each
/// key of `server:`, each sink, each pipeline), so one problem does not hide the next. Every
/// field of [`Config`] and of its flat sections has a default, which is what makes a
/// document of one entry a valid probe. The entries that fail are left out of `repaired`.
fn shape_errors(document: &Value) -> Shape {
    let mut shape = Shape {
        errors: Vec::new(),
        repaired: document.clone(),
        kept: KeptItems::default(),
    };
    let Value::Mapping(top) = document else {
        return shape;
    };
    let one = |key: &Value, value: Value| {
        let mut map = serde_yaml::Mapping::new();
        map.insert(key.clone(), value);
        Value::Mapping(map)
    };
    let fails = |probe: Value| deserialize::<Config>(probe).err();
    let mut repaired = serde_yaml::Mapping::new();
    for (key, section) in top {
        let Some(whole) = fails(one(key, section.clone())) else {
            repaired.insert(key.clone(), section.clone());
            continue;
        };
        let name = key.as_str().unwrap_or_default();
        let before = shape.errors.len();
        match section {
            Value::Mapping(entries) => {
                let mut good = serde_yaml::Mapping::new();
                for (k, v) in entries {
                    match fails(one(key, one(k, v.clone()))) {
                        Some(error) => {
                            shape.errors.push(error);
                            let entry = k.as_str().unwrap_or_default().to_owned();
                            shape.kept.left_out.push((name.to_owned(), entry));
                        }
                        None => drop(good.insert(k.clone(), v.clone())),
                    }
                }
                repaired.insert(key.clone(), Value::Mapping(good));
            }
            Value::Sequence(items) => {
                let (mut good, mut kept) = (Vec::new(), Vec::new());
                for (i, item) in items.iter().enumerate() {
                    match fails(one(key, Value::Sequence(vec![item.clone()]))) {
                        Some(mut error) => {
                            // The probe held one item, at [0]: name the real index.
                            if let Some(rest) = error.path.strip_prefix(&format!("{name}[0]")) {
                                error.path = format!("{name}[{i}]{rest}");
                            }
                            shape.errors.push(error);
                        }
                        None => {
                            good.push(item.clone());
                            kept.push(i);
                        }
                    }
                }
                repaired.insert(key.clone(), Value::Sequence(good));
                shape.kept.lists.push((name.to_owned(), kept));
            }
            _ => {}
        }
        if shape.errors.len() == before {
            shape.errors.push(whole);
        }
    }
    shape.repaired = Value::Mapping(repaired);
    shape
}

/// Replaces `${VAR}` in every string value, recording errors with their key path and, in
/// `written`, each substituted string as `(value, text as written)`.
fn substitute_env(
    value: &mut Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
    written: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) if s.contains('$') => match substitute(s, env) {
            Ok(replaced) => {
                if replaced != *s {
                    written.push((replaced.clone(), s.clone()));
                }
                let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                *value = if whole {
                    scalar(replaced)
                } else {
                    Value::String(replaced)
                };
            }
            Err(e) => errors.push(ConfigError::new(path.clone(), e.to_string())),
        },
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match key {
                    Value::String(k) => path.push_str(k),
                    other => path.push_str(&serde_yaml::to_string(other).unwrap_or_default()),
                }
                substitute_env(item, path, env, errors, written);
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_env(item, path, env, errors, written);
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => substitute_env(&mut tagged.value, path, env, errors, written),
        _ => {}
    }
}

/// A value that was exactly `${VAR}` takes the variable's YAML type (`port: ${PORT}` is a
/// number), but never becomes a mapping or sequence.
fn scalar(text: String) -> Value {
    match serde_yaml::from_str::<Value>(&text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("9999".into()),
            "DIR" => Some("/var/lib/colloquium".into()),
            "SYNC" => Some("false".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Config, LoadError> {
        from_str(text, &env)
    }

    fn errors(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_document_is_the_default() {
        let config = load("").unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            config.storage.retention,
            Some(Duration::from_secs(7 * 86_400))
        );
        assert!(config.storage.sync);
    }

    #[test]
    fn parses_yaml_with_env_and_units() {
        let config = load(
            "server:\n  listen: 127.0.0.1:${PORT}\n  max_body_size: 2MiB\n\
             storage:\n  data_dir: ${DIR}/data\n  sync: ${SYNC}\n  retention: 2h\n  compression: zstd\n",
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.max_body_size.as_u64(), 2 * 1024 * 1024);
        assert_eq!(
            config.storage.data_dir.to_str(),
            Some("/var/lib/colloquium/data")
        );
        assert!(!config.storage.sync);
        assert_eq!(config.storage.retention, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn accepts_json() {
        let config =
            load(r#"{"server": {"max_body_size": 1000}, "storage": {"retention": null}}"#).unwrap();
        assert_eq!(config.server.max_body_size.as_u64(), 1000);
        assert_eq!(config.storage.retention, None);
    }

    #[test]
    fn each_mistake_names_its_key_path() {
        let cases = [
            ("server:\n  bind: x\n", "server.bind: unknown field `bind`"),
            ("storage:\n  retention: forever\n", "storage.retention: "),
            (
                "storage:\n  compression: snappy\n",
                "storage.compression: unknown variant `snappy`",
            ),
            (
                "server:\n  listen: nowhere\n",
                "server.listen: invalid socket address",
            ),
            (
                "server:\n  max_pending_events: 0\n",
                "server.max_pending_events: ",
            ),
            (
                "server:\n  max_body_size: 0\n",
                "server.max_body_size: must be greater than 0",
            ),
            (
                "ingest:\n  timestamp_field: ''\n",
                "ingest.timestamp_field: must not be empty",
            ),
            (
                "storage:\n  data_dir: ${MISSING}\n",
                "storage.data_dir: environment variable `MISSING` is not set",
            ),
            (
                "- just\n- a list\n",
                "invalid type: sequence, expected struct Config",
            ),
            ("server: [unclosed\n", "syntax error"),
        ];
        for (text, expected) in cases {
            let message = errors(text);
            assert!(
                message.contains(expected),
                "{text:?}: got {message:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn collects_every_substitution_and_validation_error() {
        let message = errors("storage:\n  data_dir: ${A}\nserver:\n  listen: ${B}\n");
        assert!(
            message.contains("storage.data_dir: environment variable `A`"),
            "{message}"
        );
        assert!(
            message.contains("server.listen: environment variable `B`"),
            "{message}"
        );
        let message = errors("server:\n  max_body_size: 0\ningest:\n  pipeline: ''\n");
        assert_eq!(message.lines().count(), 2, "{message}");
    }

    proptest::proptest! {
        /// Whatever the text, loading returns a config or an error; it never panics.
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = load(&text);
        }

        /// The same for documents with the right shape but arbitrary values.
        #[test]
        fn arbitrary_values_never_panic(key in "(listen|max_body_size|retention|sync|data_dir)", value in ".{0,40}") {
            let _ = load(&format!("server:\n  {key}: {value}\nstorage:\n  {key}: {value}\n"));
        }
    }

    #[test]
    fn reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "storage:\n  sync: false\n").unwrap();
        assert!(!from_file(&path).unwrap().storage.sync);
        let missing = from_file(&dir.path().join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("reading "), "{missing}");
    }
}
