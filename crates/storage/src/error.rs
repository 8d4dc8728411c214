//! The storage error type.

use std::path::PathBuf;

/// What can go wrong in the store.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StorageError {
    /// Another process holds the data directory's lock.
    #[error(
        "data directory {dir} is in use by another process (its RocksDB LOCK is held); stop that process or choose another --data-dir"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The database could not be opened.
    #[error("opening data directory {dir}: {message}")]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// RocksDB's message.
        message: String,
    },
    /// A read or write failed inside RocksDB.
    #[error("rocksdb: {0}")]
    Db(String),
    /// A stored record could not be decoded (corruption or a format from a newer version).
    #[error("stored record {key} in `{cf}` is not valid: {message}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// The key, hex.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The store is shutting down and takes no more writes.
    #[error("store is closed")]
    Closed,
    /// The database is being reopened to clear a write error (a moment); retry shortly.
    #[error("the store is reopening to clear a write error")]
    Reopening,
    /// A backup, a restore or a backup listing failed (the store itself is unaffected).
    #[error("backup directory {dir}: {message}")]
    Backup {
        /// The backup directory.
        dir: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A backup or restore that cannot be done as asked (a directory inside the data
    /// directory, a restore into a directory that is not empty, no such backup).
    #[error("backup directory {dir}: {message}")]
    BackupRefused {
        /// The backup directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The writer's queue is full; retry shortly.
    #[error("the event log's write queue is full")]
    Busy,
    /// An earlier batch of the same source chain failed, so this one was not written.
    #[error("an earlier batch of this source failed; this one was not written")]
    ChainBroken,
    /// A paging cursor that this store did not hand out.
    #[error("invalid cursor")]
    BadCursor,
}

impl StorageError {
    /// What a client is told: a stable, short message with no file paths or RocksDB wording
    /// (those go to the node's log).
    pub fn public_message(&self) -> &'static str {
        match self {
            StorageError::Closed => "the store is closed: the node is shutting down",
            StorageError::BadCursor => "invalid cursor",
            StorageError::Reopening => "the store is recovering from a write error; retry shortly",
            StorageError::Busy => "the store is busy; retry shortly",
            StorageError::ChainBroken => "an earlier batch of this source failed; retry",
            StorageError::Db(message) if is_no_space(message) => {
                "the store cannot write: the disk is full"
            }
            StorageError::Corrupt { .. } => "a stored record is corrupt; see the node's log",
            _ => "the store failed; see the node's log",
        }
    }

    /// Whether this is the disk running out of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Db(message) if is_no_space(message))
    }

    /// Whether this is a backup's disk running out of space.
    pub fn is_backup_no_space(&self) -> bool {
        matches!(self, StorageError::Backup { message, .. } if is_no_space(message))
    }
}

fn is_no_space(message: &str) -> bool {
    message.contains("No space left") || message.contains("NoSpace")
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Db(e.into_string())
    }
}
