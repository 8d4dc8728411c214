//! Built-in stages, one file each. Adding one: a file implementing [`StageConfig`] and
//! [`Stage`](crate::Stage), and one line in the binary's `registry.rs`.
//!
//! [`StageConfig`]: crate::StageConfig

pub mod alert;
pub mod anomaly;
pub mod dedup;
pub mod filter;
pub mod idempotency;
pub mod schema;
pub mod set;
pub mod transform;
pub mod window;
pub mod zscore;

/// Longest grouping key a keyed stage (`window`, `zscore`, `anomaly`) takes: a key is held in memory and in
/// every state row of its own, so one hostile event must not make it megabytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// `key` if it is at most [`MAX_KEY_BYTES`], else a `bad_value` error naming `stage`.
pub(crate) fn bounded_key(stage: &str, key: String) -> Result<String, crate::StageError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(crate::StageError::BadValue(format!(
            "{stage} key is {} bytes long; at most {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(key)
}

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

/// A pipeline of the one stage `stage` (YAML) of kind `C`; errors as text.
#[cfg(test)]
pub(crate) fn one_stage<C: crate::StageConfig>(stage: &str) -> Result<crate::Pipeline, String> {
    let registry = crate::Registry::default().stage::<C>();
    test_pipeline(&registry, "", &format!("[{stage}]"))
}

/// An event of `data` (a JSON object) from the `http` source, ingested now.
#[cfg(test)]
pub(crate) fn test_event(data: serde_json::Value) -> colloquium_event::Event {
    let data = match data {
        serde_json::Value::Object(map) => map,
        other => panic!("test events are JSON objects, not {other}"),
    };
    colloquium_event::Event::at(
        colloquium_event::Timestamp::now(),
        data,
        colloquium_event::Metadata::new("http", "default"),
    )
}

/// The rows a pipeline's stages put since the last hand-over, as `restore_state` takes them.
#[cfg(test)]
pub(crate) fn put_rows(p: &mut crate::Pipeline) -> Vec<(Vec<u8>, Vec<u8>)> {
    p.state_changes()
        .into_iter()
        .filter_map(|(_, w)| match w {
            crate::StateWrite::Put(k, v) => Some((k, v)),
            _ => None,
        })
        .collect()
}

/// What a pipeline's stages report about themselves at a checkpoint, by metric name (the
/// checkpoint's state writes are dropped).
#[cfg(test)]
pub(crate) fn metrics_of(p: &mut crate::Pipeline) -> std::collections::BTreeMap<&'static str, u64> {
    drop(p.state_changes());
    p.stage_metrics()
        .into_iter()
        .map(|(_, m)| (m.name, m.value))
        .collect()
}
