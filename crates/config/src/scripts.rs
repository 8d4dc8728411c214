//! The compiled `scripts:` section, and resolving a script reference written in a stage or a
//! `when:`.
//!
//! Every named script is compiled once, when the config is built; a script that does not compile
//! is an error naming the script, the path inside it and the reason. A reference is either a
//! name from `scripts:` (a YAML string) or an inline script (anything else), compiled where it
//! stands.

use std::collections::BTreeMap;
use std::sync::Arc;

use computo::Script;
use serde_json::Value;

use crate::{Config, ConfigError};

/// Every named script of a config, compiled.
#[derive(Debug, Default, Clone)]
pub struct ScriptLibrary {
    scripts: BTreeMap<String, Arc<Script>>,
    /// Scripts that did not compile (or whose file was not loaded), with why: a reference to
    /// one fails with the same error, so it is reported once.
    broken: BTreeMap<String, ConfigError>,
    /// The config file's directory, for files stages name.
    base_dir: std::path::PathBuf,
}

impl ScriptLibrary {
    /// Compiles every script in `config.scripts`, collecting every error.
    pub fn compile(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let library = Self::compile_all(config);
        if library.broken.is_empty() {
            Ok(library)
        } else {
            Err(library.errors())
        }
    }

    /// Compiles every script that compiles; the others are in [`ScriptLibrary::errors`].
    pub fn compile_all(config: &Config) -> Self {
        let mut scripts = BTreeMap::new();
        let mut broken = BTreeMap::new();
        for (name, source) in &config.scripts {
            let at = format!("scripts.{name}");
            let Some(script) = source.script() else {
                let error =
                    ConfigError::new(format!("{at}.file"), "the script file was not loaded");
                broken.insert(name.clone(), error);
                continue;
            };
            match computo::compile(script) {
                Ok(compiled) => {
                    scripts.insert(name.clone(), Arc::new(compiled));
                }
                Err(e) => {
                    broken.insert(
                        name.clone(),
                        ConfigError::new(at, format!("does not compile: {e}")),
                    );
                }
            }
        }
        let base_dir = config.base_dir_or_cwd();
        ScriptLibrary {
            scripts,
            broken,
            base_dir,
        }
    }

    /// `path` as a file a stage names (a JSON Schema): relative to the config file's directory.
    pub fn path(&self, path: &std::path::Path) -> std::path::PathBuf {
        self.base_dir.join(path)
    }

    /// Why each broken script is broken, by name.
    pub fn errors(&self) -> Vec<ConfigError> {
        self.broken.values().cloned().collect()
    }

    /// Resolves a script reference found at key path `at`: a name from `scripts:`, or an
    /// inline script.
    pub fn resolve(&self, reference: &Value, at: &str) -> Result<Arc<Script>, ConfigError> {
        if let Value::String(name) = reference {
            if let Some(error) = self.broken.get(name) {
                return Err(error.clone());
            }
            return self.scripts.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.scripts.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none defined".to_owned()
                } else {
                    known.join(", ")
                };
                ConfigError::new(at, format!("no script named `{name}` (scripts: {known})"))
            });
        }
        computo::compile(reference)
            .map(Arc::new)
            .map_err(|e| ConfigError::new(at, format!("script does not compile: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_resolve_and_bad_scripts_name_their_place() {
        let config = crate::from_str(
            "scripts:\n  ok: [\"+\", 1, 2]\n  bad: [\"obj\", [\"a\", [\"frob\"]]]\n",
            &|_| None,
        )
        .unwrap();
        let errors = ScriptLibrary::compile(&config).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "scripts.bad: does not compile: unknown operator `frob` at /1/1"
        );

        let config = crate::from_str("scripts:\n  ok: [\"+\", 1, 2]\n", &|_| None).unwrap();
        let library = ScriptLibrary::compile(&config).unwrap();
        let inputs: &[Value] = &[];
        assert_eq!(
            library
                .resolve(&json!("ok"), "x")
                .unwrap()
                .eval(inputs)
                .unwrap(),
            json!(3)
        );
        assert_eq!(
            library
                .resolve(&json!(["-", 5]), "x")
                .unwrap()
                .eval(inputs)
                .unwrap(),
            json!(-5)
        );
        assert_eq!(
            library
                .resolve(&json!("nope"), "pipelines[0].when")
                .unwrap_err()
                .to_string(),
            "pipelines[0].when: no script named `nope` (scripts: ok)"
        );
        assert_eq!(
            library
                .resolve(&json!(["if", 1]), "s")
                .unwrap_err()
                .to_string(),
            "s: script does not compile: `if` takes exactly 3 arguments, got 1 at (root)"
        );
    }
}
