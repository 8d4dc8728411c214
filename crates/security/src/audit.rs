//! The audit log: one JSON line per admin action and per refused request, appended to a file
//! of its own (`server.audit_log`). Tokens never appear in it, only their names.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// One audit record.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// When (RFC 3339, milliseconds, UTC).
    pub time: String,
    /// The token's name; `null` for a request without a valid token.
    pub token: Option<&'a str>,
    /// HTTP method.
    pub method: &'a str,
    /// The route (`/api/dlq/{id}`), or the path when it matched none.
    pub route: &'a str,
    /// The path asked for.
    pub path: &'a str,
    /// The client's address.
    pub address: Option<SocketAddr>,
    /// `allowed` or `refused`.
    pub outcome: &'a str,
    /// The response status.
    pub status: u16,
    /// Why it was refused (`missing_token`, `bad_token`, `missing_scope`, `throttled`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// The audit log file.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<File>,
}

impl Audit {
    /// Opens (creating, owner-only) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Audit {
            path: path.to_owned(),
            file: Mutex::new(options.open(path)?),
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line, in one write (lines of concurrent writers never
    /// interleave). A failed write is logged and returned.
    pub fn write(&self, record: &AuditRecord<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let result = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .write_all(&line);
        if let Err(error) = &result {
            tracing::error!(%error, path = %self.path.display(), "writing the audit log failed");
        }
        result
    }
}

/// Now, as the audit log writes it.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
