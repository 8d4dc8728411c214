//! The configuration document. Every field has a default, so an empty document (and
//! `colloquium run` with no config) gives a working node.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::ConfigError;
use crate::pipelines::{ComponentConfig, PipelineConfig, ScriptSource, SourceConfig, TestCase};

/// The whole node configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory of the config file (files it names are relative to it; the working
    /// directory for a config not read from a file).
    #[serde(skip)]
    pub base_dir: Option<std::path::PathBuf>,
    /// The HTTP listener shared by ingest and the API.
    #[serde(default)]
    pub server: ServerConfig,
    /// The embedded event store.
    #[serde(default)]
    pub storage: StorageConfig,
    /// How incoming events are stamped.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The priority lanes between ingest and the pipelines.
    #[serde(default)]
    pub lanes: crate::lanes::LanesConfig,
    /// The backpressure control plane.
    #[serde(default)]
    pub control: crate::lanes::ControlConfig,
    /// Named sources that pipelines take events from (default: `http`).
    #[serde(default = "crate::pipelines::default_sources")]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Named Computo scripts, inline or `{file: path}` relative to the config file.
    #[serde(default)]
    pub scripts: BTreeMap<String, ScriptSource>,
    /// Named sinks that pipelines send results to.
    #[serde(default)]
    pub sinks: BTreeMap<String, ComponentConfig>,
    /// Pipelines: which events (`from`, `when`), what to do (`stages`), where to (`sinks`).
    #[serde(default)]
    pub pipelines: Vec<PipelineConfig>,
    /// Model providers, the AI spend budget and the response cache.
    #[serde(default)]
    pub ai: crate::ai::AiConfig,
    /// Unit tests of this config, run by `colloquium test`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
    /// What `${VAR}` substitution replaced, to show the config as written (never serialized).
    #[serde(skip)]
    pub written: Substitutions,
}

/// The strings `${VAR}` substitution produced, each with its text as written: `(value,
/// written)`. Its `Debug` shows only how many, so a logged config does not carry secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Substitutions(pub Vec<(String, String)>);

impl std::fmt::Debug for Substitutions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Substitutions({})", self.0.len())
    }
}

impl Config {
    /// The directory relative paths in it are against: its file's, else the working one.
    pub fn base_dir_or_cwd(&self) -> std::path::PathBuf {
        self.base_dir.clone().unwrap_or_else(|| ".".into())
    }

    /// The config as JSON the way it may be shown (`GET /admin/config`): every string that
    /// came from `${VAR}` substitution is put back as written, so secrets passed through the
    /// environment are not revealed.
    pub fn shown(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        self.unsubstitute(&mut value);
        value
    }

    /// Puts every substituted string in `value` (part of this config, as JSON) back as written.
    pub fn unsubstitute(&self, value: &mut serde_json::Value) {
        if self.written.0.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                if let Some((_, written)) = self.written.0.iter().find(|(v, _)| v == s) {
                    *s = written.clone();
                }
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| self.unsubstitute(v));
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.unsubstitute(v));
            }
            _ => {}
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_dir: None,
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            ingest: IngestConfig::default(),
            lanes: crate::lanes::LanesConfig::default(),
            control: crate::lanes::ControlConfig::default(),
            sources: crate::pipelines::default_sources(),
            scripts: BTreeMap::new(),
            sinks: BTreeMap::new(),
            pipelines: Vec::new(),
            ai: crate::ai::AiConfig::default(),
            tests: Vec::new(),
            written: Substitutions::default(),
        }
    }
}

/// `server:` — the HTTP listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin routes (`/admin/config`, `/admin/reload`): `127.0.0.1:8081`, so
    /// only this machine can reload the node unless you choose otherwise.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Largest accepted request body; larger bodies get `413`.
    #[serde(default = "default_max_body_size")]
    pub max_body_size: ByteSize,
    /// Events accepted but not yet durable, across all requests; past it requests get `503`.
    #[serde(default = "default_max_pending_events")]
    pub max_pending_events: NonZeroUsize,
    /// Request-body bytes held at once across all requests, from the first byte read until the
    /// batch is durable; past it requests get `503`. Bounds ingest's memory in bytes, whatever
    /// the event sizes; at least `max_body_size`.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: ByteSize,
    /// How long shutdown waits for in-flight requests before closing connections.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most connections open at once; more wait in the kernel's accept backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// A client that has not sent a request's headers within this is disconnected.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Bearer tokens and their scopes, or `none`; not written: no authentication, and both
    /// listeners on loopback addresses only ([`crate::security`]).
    #[serde(default)]
    pub auth: Option<crate::security::AuthConfig>,
    /// TLS on both HTTP listeners.
    #[serde(default)]
    pub tls: Option<crate::security::TlsConfig>,
    /// The audit log (JSON lines: admin actions and refused requests); relative to the config
    /// file; not written: `audit.log` in the data directory.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

/// `storage:` — the RocksDB event store.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory (`--data-dir` overrides it).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `true`: fsync the WAL once per group commit before acknowledging (survives power loss).
    /// `false`: acknowledge once the WAL write is in the OS (survives a process crash only).
    #[serde(default = "default_true")]
    pub sync: bool,
    /// Events older than this (by ingest time) are deleted in the background; `null` keeps all.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// A ceiling on the store's size on disk. Above it the oldest events (then dead letters)
    /// are deleted even when a pipeline has not processed them, each one counted and logged;
    /// `null` (the default): retention never deletes what a pipeline still needs.
    #[serde(default)]
    pub max_disk_usage: Option<ByteSize>,
    /// How often the retention pass runs.
    #[serde(default = "default_retention_interval", with = "humantime_serde")]
    pub retention_interval: Duration,
    /// Block compression for stored events.
    #[serde(default)]
    pub compression: Compression,
    /// RocksDB block cache shared by all column families.
    #[serde(default = "default_block_cache")]
    pub block_cache: ByteSize,
    /// Memtable size per column family before it is flushed to disk.
    #[serde(default = "default_write_buffer")]
    pub write_buffer: ByteSize,
    /// Below this much free disk space `/health` reports `degraded`.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: ByteSize,
    /// Backups (`POST /admin/backup`, `colloquium backup`) go only into directories under this
    /// one; `null`: into any absolute path outside the data directory.
    #[serde(default)]
    pub backup_root: Option<PathBuf>,
}

/// Block compression algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Fast, moderate ratio.
    #[default]
    Lz4,
    /// Slower, better ratio.
    Zstd,
    /// No compression.
    None,
}

/// `ingest:` — how events are stamped on arrival.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Payload field holding the event time (epoch ms or RFC 3339): a top-level key, or a JSON
    /// pointer such as `/meta/ts`. Missing or invalid values fall back to ingest time.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Pipeline name recorded in each event's metadata.
    #[serde(default = "default_pipeline")]
    pub pipeline: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            max_body_size: default_max_body_size(),
            max_pending_events: default_max_pending_events(),
            max_pending_bytes: default_max_pending_bytes(),
            shutdown_timeout: default_shutdown_timeout(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            auth: None,
            tls: None,
            audit_log: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            sync: true,
            retention: default_retention(),
            max_disk_usage: None,
            retention_interval: default_retention_interval(),
            compression: Compression::default(),
            block_cache: default_block_cache(),
            write_buffer: default_write_buffer(),
            min_free_disk: default_min_free_disk(),
            backup_root: None,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            timestamp_field: default_timestamp_field(),
            pipeline: default_pipeline(),
        }
    }
}

impl Config {
    /// Returns every semantic problem (types and unknown keys were checked while parsing).
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, path: &str, message: &str| {
            if !ok {
                errors.push(ConfigError::new(path, message));
            }
        };
        let body = self.server.max_body_size.as_u64();
        check(body > 0, "server.max_body_size", "must be greater than 0");
        check(
            body <= ByteSize::gib(1).as_u64(),
            "server.max_body_size",
            "must be at most 1 GiB",
        );
        check(
            self.server.max_pending_bytes.as_u64() >= body,
            "server.max_pending_bytes",
            "must be at least server.max_body_size, or the largest request could never be taken",
        );
        check(
            !self.server.shutdown_timeout.is_zero(),
            "server.shutdown_timeout",
            "must be greater than 0",
        );
        check(
            !self.server.header_read_timeout.is_zero(),
            "server.header_read_timeout",
            "must be greater than 0",
        );
        check(
            self.storage.retention.is_none_or(|r| r.as_millis() > 0),
            "storage.retention",
            "must be at least 1ms, or null to keep events forever",
        );
        check(
            self.storage
                .max_disk_usage
                .is_none_or(|m| m.as_u64() >= ByteSize::mib(64).as_u64()),
            "storage.max_disk_usage",
            "must be at least 64 MiB, or null for no ceiling",
        );
        check(
            self.storage.retention_interval.as_millis() > 0,
            "storage.retention_interval",
            "must be at least 1ms",
        );
        check(
            self.storage.write_buffer.as_u64() >= ByteSize::mib(1).as_u64(),
            "storage.write_buffer",
            "must be at least 1 MiB",
        );
        check(
            !self.storage.data_dir.as_os_str().is_empty(),
            "storage.data_dir",
            "must not be empty",
        );
        let field = &self.ingest.timestamp_field;
        check(
            !field.is_empty(),
            "ingest.timestamp_field",
            "must not be empty",
        );
        check(
            !self.ingest.pipeline.is_empty(),
            "ingest.pipeline",
            "must not be empty",
        );
        crate::security::validate(&self.server, &mut errors);
        errors.extend(crate::pipelines::validate(
            &self.sources,
            &self.sinks,
            &self.pipelines,
            &self.tests,
        ));
        self.lanes.validate(&mut errors);
        self.control.validate(&mut errors);
        let pipelines: Vec<&str> = self.pipelines.iter().map(|p| p.name.as_str()).collect();
        self.ai.validate(&pipelines, &mut errors);
        errors
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_max_body_size() -> ByteSize {
    ByteSize::mib(10)
}
fn default_max_pending_events() -> NonZeroUsize {
    NonZeroUsize::new(200_000).unwrap_or(NonZeroUsize::MIN)
}
fn default_max_pending_bytes() -> ByteSize {
    ByteSize::mib(32)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> NonZeroUsize {
    NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_true() -> bool {
    true
}
fn default_retention() -> Option<Duration> {
    Some(Duration::from_secs(7 * 24 * 3600))
}
fn default_retention_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_block_cache() -> ByteSize {
    ByteSize::mib(64)
}
fn default_write_buffer() -> ByteSize {
    ByteSize::mib(32)
}
fn default_min_free_disk() -> ByteSize {
    ByteSize::gib(1)
}
fn default_timestamp_field() -> String {
    "timestamp".to_owned()
}
fn default_pipeline() -> String {
    "default".to_owned()
}
