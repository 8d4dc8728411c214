//! `POST /admin/backup` (the node backs its store up into a directory while ingest goes on)
//! and `GET /admin/backup` (the running backup's progress and the last outcome), on the admin
//! listener with the `admin` scope. One backup at a time.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use colloquium_event::Timestamp;
use colloquium_storage::backup::dir_bytes;
use colloquium_storage::{BackupOutcome, StorageError, Store};
use serde::{Deserialize, Serialize};

use crate::admin::AdminState;

/// The node's backups: the store, where backups may go, and the one running backup.
#[derive(Clone)]
pub struct Backups {
    store: Store,
    root: Option<PathBuf>,
    status: Arc<Mutex<BackupStatus>>,
}

/// `GET /admin/backup`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackupStatus {
    /// The backup under way, if any.
    pub running: Option<Running>,
    /// How the last backup ended.
    pub last: Option<Finished>,
}

/// A backup under way.
#[derive(Clone, Debug, Serialize)]
pub struct Running {
    /// Its directory.
    pub to: PathBuf,
    /// When it started.
    pub started_at: Timestamp,
    /// Bytes written into the directory so far (an incremental backup writes only new files).
    pub written_bytes: u64,
    /// The store's size when it started: at most this many bytes will be written.
    pub store_bytes: u64,
    #[serde(skip)]
    base_bytes: u64,
}

/// A backup that ended.
#[derive(Clone, Debug, Serialize)]
pub struct Finished {
    /// Its directory.
    pub to: PathBuf,
    /// When it ended.
    pub at: Timestamp,
    /// What it made, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<BackupOutcome>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Backups {
    /// Backups of `store`, only under `root` when there is one (`storage.backup_root`).
    pub fn new(store: Store, root: Option<PathBuf>) -> Self {
        Self {
            store,
            root: root.map(|r| std::path::absolute(&r).unwrap_or(r)),
            status: Arc::default(),
        }
    }

    /// Where a backup into `to` may go, or why not.
    fn check(&self, to: &Path) -> Result<(), crate::ApiError> {
        let refuse = |why: String| Err(crate::ApiError::BadRequest(format!("to: {why}")));
        if !to.is_absolute() {
            return refuse("an absolute path on the node's machine".into());
        }
        if to.components().any(|c| matches!(c, Component::ParentDir)) {
            return refuse("no `..` in a backup path".into());
        }
        match &self.root {
            Some(root) if !to.starts_with(root) => refuse(format!(
                "backups go under {} (storage.backup_root)",
                root.display()
            )),
            _ => Ok(()),
        }
    }

    fn status(&self) -> BackupStatus {
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(running) = &mut status.running {
            running.written_bytes = dir_bytes(&running.to).saturating_sub(running.base_bytes);
        }
        status
    }
}

/// The body of `POST /admin/backup`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The backup directory, an absolute path on the node's machine (created if missing),
    /// under `storage.backup_root` when the node has one.
    #[schema(min_length = 1)]
    to: String,
    /// Keep only the newest this many backups there afterwards (default: all).
    #[serde(default)]
    #[schema(minimum = 1)]
    keep: Option<usize>,
}

fn error(status: StatusCode, reason: &str, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string(), "reason": reason });
    (status, Json(body)).into_response()
}

/// `POST /admin/backup` with `{"to": "/backups/node-1", "keep": 7}`: takes a backup (RocksDB's
/// `BackupEngine`: consistent across every column family, incremental, verified) while ingest
/// goes on, then prunes to `keep`; answers when it is done.
#[utoipa::path(post, path = "/admin/backup", tag = "admin", request_body = BackupRequest,
    responses((status = 200, description = "The backup, verified, and those kept", body = crate::openapi::Record),
        (status = 400, description = "The body is malformed, or the directory cannot hold a backup of this node", body = crate::openapi::ErrorBody),
        (status = 409, description = "A backup is already running", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not `application/json`", body = crate::openapi::ErrorBody),
        (status = 507, description = "The backup's disk is full (the node serves on)", body = crate::openapi::ErrorBody)))]
pub async fn create(
    State(state): State<AdminState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Response, crate::ApiError> {
    let request: BackupRequest = crate::query::object_body(body)?;
    let to = PathBuf::from(&request.to);
    let backups = state.backups;
    backups.check(&to)?;
    {
        let Ok(mut status) = backups.status.lock() else {
            return Err(crate::ApiError::Internal("backup status".into()));
        };
        if let Some(running) = &status.running {
            return Ok(error(
                StatusCode::CONFLICT,
                "backup_running",
                format!("a backup into {} is running", running.to.display()),
            ));
        }
        status.running = Some(Running {
            base_bytes: dir_bytes(&to),
            to: to.clone(),
            started_at: Timestamp::now(),
            written_bytes: 0,
            store_bytes: backups.store.sizes().iter().map(|(_, b)| b).sum(),
        });
    }
    // The backup and its record happen on the blocking thread: a client that goes away
    // mid-backup drops this handler, not the backup, and the next one must not find it
    // "running" forever.
    let (store, status, dir) = (backups.store.clone(), backups.status.clone(), to.clone());
    let keep = request.keep;
    let result = tokio::task::spawn_blocking(move || {
        let result = store.backup(&dir, keep);
        finish(&status, &dir, &result);
        result
    })
    .await
    .unwrap_or_else(|e| {
        let result = Err(StorageError::Backup {
            dir: to.clone(),
            message: format!("the backup task failed: {e}"),
        });
        finish(&backups.status, &to, &result);
        result
    });
    match result {
        Ok(outcome) => Ok(Json(outcome).into_response()),
        Err(e @ StorageError::BackupRefused { .. }) => {
            Ok(error(StatusCode::BAD_REQUEST, "bad_request", e))
        }
        Err(e) if e.is_backup_no_space() => {
            tracing::warn!(error = %e, "backup failed: its disk is full");
            Ok(error(
                StatusCode::INSUFFICIENT_STORAGE,
                "backup_disk_full",
                e,
            ))
        }
        Err(e @ StorageError::Backup { .. }) => {
            tracing::error!(error = %e, "backup failed");
            Ok(error(StatusCode::INTERNAL_SERVER_ERROR, "backup_failed", e))
        }
        Err(e) => Err(e.into()),
    }
}

/// Records how a backup into `to` ended; no backup is running any more.
fn finish(status: &Mutex<BackupStatus>, to: &Path, result: &Result<BackupOutcome, StorageError>) {
    let finished = Finished {
        to: to.to_owned(),
        at: Timestamp::now(),
        outcome: result.as_ref().ok().cloned(),
        error: result.as_ref().err().map(ToString::to_string),
    };
    if let Ok(mut status) = status.lock() {
        status.running = None;
        status.last = Some(finished);
    }
}

/// `GET /admin/backup`: the running backup's progress, and how the last one ended.
#[utoipa::path(get, path = "/admin/backup", tag = "admin",
    responses((status = 200, description = "The running backup and the last outcome", body = crate::openapi::Record)))]
pub async fn status(State(state): State<AdminState>) -> Response {
    let backups = state.backups;
    let status = tokio::task::spawn_blocking(move || backups.status())
        .await
        .unwrap_or_default();
    Json(status).into_response()
}
