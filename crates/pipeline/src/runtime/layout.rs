//! Stage state keyed by stable stage id, and what happens to the rows of stages that go.
//!
//! State rows are keyed by pipeline + stage id (see `PipelineConfig::stage_ids`), so a reload
//! that inserts, removes or reorders stages keeps the state of every stage whose id stays.
//! Builds before stable ids keyed state by `kind#position`; the first start of this build
//! renames those rows to the ids of the config it starts with (the one that wrote them, as
//! an upgrade keeps its config), once, remembered by a store flag. Rows of stages and
//! pipelines no longer configured are deleted at start and at every reload.

use std::collections::BTreeSet;

use colloquium_config::Config;
use colloquium_storage::{StorageError, Store};

/// Store flag set once position-keyed state has been renamed to stage ids.
const STAGE_IDS: &str = "state-keyed-by-stage-id";

/// Renames position-keyed state (`kind#position`) to stage ids, once per data directory.
pub(super) fn migrate(store: &Store, config: &Config) -> Result<(), StorageError> {
    if store.flag(STAGE_IDS)? {
        return Ok(());
    }
    let owners: BTreeSet<(String, String)> = store.state_owners()?.into_iter().collect();
    for pipeline in &config.pipelines {
        let ids = pipeline.stage_ids();
        // Two passes through a temporary name: `transform#1` may be both an old key to move
        // and the new id of another stage.
        let mut moves = Vec::new();
        for (position, (stage, id)) in pipeline.stages.iter().zip(&ids).enumerate() {
            let old = format!("{}#{position}", stage.kind);
            if old != *id && owners.contains(&(pipeline.name.clone(), old.clone())) {
                moves.push((old, id.clone()));
            }
        }
        for (old, _) in &moves {
            store.rename_stage(&pipeline.name, old, &format!("\u{1}{old}"))?;
        }
        for (old, id) in &moves {
            tracing::info!(pipeline = %pipeline.name, from = %old, to = %id, "state now keyed by stage id");
            store.rename_stage(&pipeline.name, &format!("\u{1}{old}"), id)?;
        }
    }
    store.set_flag(STAGE_IDS)
}

/// Deletes the state rows of every stage that `config` does not have: of removed pipelines,
/// and of removed (or renamed) stages of kept ones.
pub(super) fn forget_removed_stages(store: &Store, config: &Config) -> Result<(), StorageError> {
    let kept: BTreeSet<(String, String)> = config
        .pipelines
        .iter()
        .flat_map(|p| p.stage_ids().into_iter().map(|id| (p.name.clone(), id)))
        .collect();
    for owner in store.state_owners()? {
        if !kept.contains(&owner) {
            let (pipeline, stage) = &owner;
            tracing::info!(%pipeline, %stage, "deleting the state of a stage that is no longer configured");
            store.forget_stage(pipeline, stage)?;
        }
    }
    Ok(())
}
