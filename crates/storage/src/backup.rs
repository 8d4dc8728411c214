//! Online backups and restore, through RocksDB's own `BackupEngine`.
//!
//! A backup is consistent across every column family: the engine flushes the memtables, keeps
//! file deletions off, and copies the live SST files with the WAL still needed, so events,
//! pipelines' outputs and their checkpoints, dead letters and results are all from one
//! moment (a pipeline restored from it resumes at its checkpoint, with the outputs that
//! checkpoint covers). Ingest goes on meanwhile: writers are never blocked by a backup.
//! Backups into one directory are incremental: an SST file already there (SST files never
//! change) is shared, not copied again. Each new backup is verified (every file present at its
//! size) before it is reported, and the oldest can be pruned.

use std::path::{Path, PathBuf};

use rocksdb::backup::{BackupEngine, BackupEngineInfo, BackupEngineOptions, RestoreOptions};
use serde::{Deserialize, Serialize};

use crate::{StorageError, Store};

/// One backup in a backup directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// Its id in the directory, counting from 1.
    pub id: u32,
    /// When it was taken, seconds since the Unix epoch.
    pub timestamp: i64,
    /// Bytes of its files (files shared with earlier backups included).
    pub size: u64,
    /// How many files it has.
    pub files: u32,
}

impl From<&BackupEngineInfo> for BackupInfo {
    fn from(info: &BackupEngineInfo) -> Self {
        Self {
            id: info.backup_id,
            timestamp: info.timestamp,
            size: info.size,
            files: info.num_files,
        }
    }
}

/// What a backup did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupOutcome {
    /// The new backup.
    pub backup: BackupInfo,
    /// The backups the directory keeps afterwards, oldest first.
    pub kept: Vec<BackupInfo>,
    /// How many old backups were pruned.
    pub pruned: usize,
}

fn backup_error(dir: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Backup {
        dir: dir.to_owned(),
        message: e.to_string(),
    }
}

fn refused(dir: &Path, message: impl Into<String>) -> StorageError {
    StorageError::BackupRefused {
        dir: dir.to_owned(),
        message: message.into(),
    }
}

fn engine(dir: &Path) -> Result<BackupEngine, StorageError> {
    let mut options = BackupEngineOptions::new(dir).map_err(|e| backup_error(dir, e))?;
    // A backup reported done is on disk.
    options.set_sync(true);
    let env = rocksdb::Env::new().map_err(|e| backup_error(dir, e))?;
    BackupEngine::open(&options, &env).map_err(|e| backup_error(dir, e))
}

/// Refuses a backup directory inside the data directory or the other way round: each would
/// copy (or prune) the other.
fn check_apart(data_dir: &Path, backup_dir: &Path) -> Result<(), StorageError> {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| absolute(p));
    let (data, backup) = (resolve(data_dir), resolve(backup_dir));
    if backup.starts_with(&data) || data.starts_with(&backup) {
        return Err(refused(
            backup_dir,
            format!(
                "a backup directory cannot be inside the data directory {} or hold it",
                data_dir.display()
            ),
        ));
    }
    Ok(())
}

/// `p` made absolute against the current directory, for a path that does not exist yet.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

impl Store {
    /// Backs the store up into `dir` (created if missing) while writes go on, verifies the new
    /// backup, and then keeps only the newest `keep` (all when `None`).
    pub fn backup(&self, dir: &Path, keep: Option<usize>) -> Result<BackupOutcome, StorageError> {
        check_apart(self.data_dir(), dir)?;
        if keep == Some(0) {
            return Err(refused(dir, "keep must be at least 1"));
        }
        std::fs::create_dir_all(dir).map_err(|e| backup_error(dir, e))?;
        let mut engine = engine(dir)?;
        {
            let db = self.db()?;
            engine
                .create_new_backup_flush(&*db, true)
                .map_err(|e| backup_error(dir, e))?;
        }
        let all = list(&engine);
        let newest = all
            .last()
            .cloned()
            .ok_or_else(|| backup_error(dir, "the new backup is not listed"))?;
        engine
            .verify_backup(newest.id)
            .map_err(|e| backup_error(dir, format!("verifying backup {}: {e}", newest.id)))?;
        let before = all.len();
        if let Some(keep) = keep {
            engine
                .purge_old_backups(keep)
                .map_err(|e| backup_error(dir, e))?;
        }
        let kept = list(&engine);
        tracing::info!(dir = %dir.display(), id = newest.id, bytes = newest.size, kept = kept.len(), "backup taken");
        Ok(BackupOutcome {
            pruned: before - kept.len(),
            backup: newest,
            kept,
        })
    }
}

fn list(engine: &BackupEngine) -> Vec<BackupInfo> {
    let mut all: Vec<BackupInfo> = engine
        .get_backup_info()
        .iter()
        .map(BackupInfo::from)
        .collect();
    all.sort_by_key(|b| b.id);
    all
}

/// The engine of a directory that holds backups. One that holds none is an error (it is
/// likely a typo): opening an engine there would make an empty backup directory of it.
fn existing(dir: &Path) -> Result<BackupEngine, StorageError> {
    if !dir.join("meta").is_dir() {
        return Err(refused(
            dir,
            "no colloquium backups there (it has no meta directory)",
        ));
    }
    engine(dir)
}

/// The backups in `dir`, oldest first.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupInfo>, StorageError> {
    Ok(list(&existing(dir)?))
}

/// Restores backup `id` of `dir` (the newest when `None`) into `data_dir`, which must not exist
/// or be empty; returns the backup restored.
pub fn restore_backup(
    dir: &Path,
    data_dir: &Path,
    id: Option<u32>,
) -> Result<BackupInfo, StorageError> {
    let mut engine = existing(dir)?;
    let all = list(&engine);
    let chosen = match id {
        None => all.last().cloned(),
        Some(id) => all.iter().find(|b| b.id == id).cloned(),
    }
    .ok_or_else(|| match id {
        Some(id) => refused(dir, format!("no backup {id} (there are {})", ids(&all))),
        None => refused(dir, "no backups there"),
    })?;
    let occupied = std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(refused(
            dir,
            format!(
                "the data directory {} is not empty: restore into a new one",
                data_dir.display()
            ),
        ));
    }
    check_apart(data_dir, dir)?;
    std::fs::create_dir_all(data_dir).map_err(|e| backup_error(dir, e))?;
    let options = RestoreOptions::default();
    engine
        .restore_from_backup(data_dir, data_dir, &options, chosen.id)
        .map_err(|e| backup_error(dir, format!("restoring backup {}: {e}", chosen.id)))?;
    tracing::info!(dir = %dir.display(), id = chosen.id, data_dir = %data_dir.display(), "backup restored");
    Ok(chosen)
}

fn ids(all: &[BackupInfo]) -> String {
    let ids: Vec<String> = all.iter().map(|b| b.id.to_string()).collect();
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// Bytes of the files under `dir`, for progress: what a running backup has written so far.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::{Event, IdGenerator, Metadata, Timestamp};

    fn events(ids: &IdGenerator, n: usize) -> Vec<Event> {
        let at = Timestamp::now();
        ids.next_ids(at, n)
            .into_iter()
            .enumerate()
            .map(|(i, id)| Event {
                id,
                timestamp: at,
                ingest_time: at,
                data: serde_json::json!({ "i": i }).as_object().cloned().unwrap(),
                metadata: Metadata::new("test", "default"),
            })
            .collect()
    }

    fn count(data_dir: &Path) -> usize {
        let metrics = crate::StorageMetrics::register(
            &colloquium_telemetry::metrics::MetricsRegistry::default(),
        );
        let store = Store::open(crate::StoreOptions::new(data_dir), metrics).unwrap();
        let n = store.scan(crate::ScanRange::default(), false).count();
        store.close().unwrap();
        n
    }

    #[tokio::test]
    async fn a_backup_restores_every_event_and_backups_are_incremental_listed_and_pruned() {
        let (data, store) = crate::test_store();
        let ids = IdGenerator::default();
        let backups = tempfile::tempdir().unwrap();
        let dir = backups.path().join("b");
        store.append(&events(&ids, 500)).await.unwrap();
        let first = store.backup(&dir, None).unwrap();
        assert_eq!((first.backup.id, first.pruned), (1, 0));
        store.append(&events(&ids, 500)).await.unwrap();
        let second = store.backup(&dir, None).unwrap();
        let ids_of = |all: &[BackupInfo]| all.iter().map(|b| b.id).collect::<Vec<_>>();
        assert_eq!(ids_of(&second.kept), [1, 2]);
        store.append(&events(&ids, 10)).await.unwrap();
        let third = store.backup(&dir, Some(2)).unwrap();
        assert_eq!((third.backup.id, third.pruned), (3, 1));
        assert_eq!(ids_of(&list_backups(&dir).unwrap()), [2, 3]);

        // The newest by default, or a named one; each into a new directory only.
        let restored = tempfile::tempdir().unwrap();
        let newest = restored.path().join("newest");
        assert_eq!(restore_backup(&dir, &newest, None).unwrap().id, 3);
        assert_eq!(count(&newest), 1_010);
        let older = restored.path().join("older");
        assert_eq!(restore_backup(&dir, &older, Some(2)).unwrap().id, 2);
        assert_eq!(count(&older), 1_000);
        let error = restore_backup(&dir, &older, None).unwrap_err().to_string();
        assert!(error.contains("not empty"), "{error}");
        let error = restore_backup(&dir, &restored.path().join("x"), Some(1)).unwrap_err();
        assert!(
            error.to_string().contains("no backup 1 (there are 2, 3)"),
            "{error}"
        );

        let error = list_backups(backups.path()).unwrap_err().to_string();
        assert!(error.contains("no colloquium backups"), "{error}");
        let inside = store
            .backup(&data.path().join("backups"), None)
            .unwrap_err();
        assert!(
            inside.to_string().contains("inside the data directory"),
            "{inside}"
        );
        assert!(store.backup(&dir, Some(0)).is_err());
        assert_eq!(
            ids_of(&list_backups(&dir).unwrap()),
            [2, 3],
            "a refused backup prunes nothing"
        );
    }
}
