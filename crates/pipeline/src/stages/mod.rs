//! Built-in stages, one file each. Adding one: a file implementing [`StageConfig`] and
//! [`Stage`](crate::Stage), and one line in the binary's `registry.rs`.
//!
//! [`StageConfig`]: crate::StageConfig

pub mod alert;
pub mod dedup;
pub mod filter;
pub mod idempotency;
pub mod set;
pub mod transform;
pub mod window;
pub mod zscore;

/// Builds pipeline `p` of a config whose `pipelines[0].stages` is `stages` (YAML, with the
/// `extra` sections before it), with `registry`'s kinds; errors as text.
#[cfg(test)]
pub(crate) fn test_pipeline(
    registry: &crate::Registry,
    extra: &str,
    stages: &str,
) -> Result<crate::Pipeline, String> {
    let yaml = format!("{extra}pipelines:\n  - name: p\n    stages: {stages}\n");
    let config = colloquium_config::from_str(&yaml, &|_| None).map_err(|e| e.to_string())?;
    let scripts = colloquium_config::ScriptLibrary::compile_all(&config);
    crate::Pipeline::build(&config.pipelines[0], "pipelines[0]", registry, &scripts)
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}
