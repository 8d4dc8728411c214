//! The stage kinds a node knows: `type:` name → "deserialize the options as this config (with
//! their key path), then build". The list itself is one line per kind, in the binary.

use std::collections::BTreeMap;

use colloquium_config::{ComponentConfig, ConfigError};

use crate::stage::{BuildContext, Stage, StageConfig};

type BuildFn = fn(&ComponentConfig, &BuildContext<'_>) -> Result<Box<dyn Stage>, ConfigError>;

/// Stage kinds by `type:` name.
#[derive(Default, Clone)]
pub struct Registry {
    stages: BTreeMap<&'static str, BuildFn>,
}

impl Registry {
    /// Registers the stage kind `C`.
    pub fn stage<C: StageConfig>(mut self) -> Self {
        self.stages.insert(C::KIND, build::<C>);
        self
    }

    /// Builds a stage from its config at `cx.at`.
    pub fn build_stage(
        &self,
        component: &ComponentConfig,
        cx: &BuildContext<'_>,
    ) -> Result<Box<dyn Stage>, ConfigError> {
        let Some(build) = self.stages.get(component.kind.as_str()) else {
            let known: Vec<&str> = self.stages.keys().copied().collect();
            let message = format!(
                "unknown stage type `{}` (known: {})",
                component.kind,
                known.join(", ")
            );
            return Err(ConfigError::new(format!("{}.type", cx.at), message));
        };
        build(component, cx)
    }
}

fn build<C: StageConfig>(
    component: &ComponentConfig,
    cx: &BuildContext<'_>,
) -> Result<Box<dyn Stage>, ConfigError> {
    let options = serde_json::Value::Object(component.options.clone());
    let config: C = serde_path_to_error::deserialize(options).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            cx.at.clone()
        } else {
            format!("{}.{path}", cx.at)
        };
        ConfigError::new(at, e.into_inner().to_string())
    })?;
    config.build(cx)
}
