//! Hot reload. Three things ask for one: a change to the config file or to a script file it
//! names (watched with `notify`), SIGHUP, and `POST /admin/reload`. One thread takes the
//! requests in turn: it loads and validates the new config fully, and only then swaps the
//! pipelines ([`Runtime::reload`]: the worker stops at a step boundary, a new one starts from
//! the checkpoints). A config that does not load or build is rejected and the old one keeps
//! running; the reason is logged, counted in `colloquium_config_reload_total{result="error"}`
//! and shown by `GET /admin/config`.
//!
//! Only the pipeline sections (`scripts`, `sinks`, `pipelines`, `tests`) and `server.auth`
//! change while running. A change to the rest of `server`, or to `storage`, `ingest`, `ai` or
//! `sources`, is reported as needing a restart and otherwise ignored. Every reload, even of an
//! unchanged config, reads token files and TLS certificates again ([`Refresher`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use colloquium_api::admin::{ConfigControl, ConfigStatus, ReloadReport, ReloadResult};
use colloquium_config::{Config, ScriptSource};
use colloquium_event::Timestamp;
use colloquium_pipeline::{Runtime, RuntimeError};
use colloquium_telemetry::MetricsRegistry;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::cli::RunArgs;

/// File events closer together than this are one change (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(150);
/// A file that keeps changing is reloaded at least this often.
const SETTLE_AT_MOST: Duration = Duration::from_secs(2);

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The config file or a script file changed.
    File,
    /// SIGHUP.
    Sighup,
    /// `POST /admin/reload`.
    Admin,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::File => "file",
            Cause::Sighup => "sighup",
            Cause::Admin => "admin",
        }
    }
}

/// Reads what a reload refreshes besides the pipelines (tokens, certificates) from the new
/// config; `Err` rejects the reload.
pub type Refresher = Box<dyn Fn(&Config) -> Result<Refresh, String> + Send + 'static>;

/// What a [`Refresher`] read, to install once the reload is accepted.
pub struct Refresh {
    /// Equal when the tokens and certificates read are the ones in use (the config shows
    /// neither: a token from `${ENV}` or a file, a certificate file).
    pub fingerprint: u64,
    /// Puts them in use.
    pub install: Box<dyn FnOnce() + Send>,
}

enum Command {
    Reload {
        cause: Cause,
        reply: Option<oneshot::Sender<ReloadReport>>,
    },
    Shutdown,
}

/// `colloquium_config_reload_total{result}` and `colloquium_config_version`.
#[derive(Clone)]
pub struct ReloadMetrics {
    reloads: Family<ResultLabels, Counter>,
    version: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

impl ReloadMetrics {
    /// Registers the reload metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = ReloadMetrics {
            reloads: Family::default(),
            version: Gauge::default(),
        };
        registry.register("config", |r| {
            r.register(
                "reload",
                "Config reloads by result (ok, unchanged, error)",
                m.reloads.clone(),
            );
            r.register(
                "version",
                "The active config version (1 at start)",
                m.version.clone(),
            );
        });
        m
    }
}

/// The running reloader: the admin routes' [`ConfigControl`], and the way to stop it.
#[derive(Clone)]
pub struct Reloads {
    commands: Sender<Command>,
    status: Arc<RwLock<ConfigStatus>>,
}

impl ConfigControl for Reloads {
    fn status(&self) -> ConfigStatus {
        self.status
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn reload(&self) -> oneshot::Receiver<ReloadReport> {
        let (reply, answer) = oneshot::channel();
        // If the thread is gone, `reply` is dropped and the caller sees it.
        let _ = self.commands.send(Command::Reload {
            cause: Cause::Admin,
            reply: Some(reply),
        });
        answer
    }
}

impl Reloads {
    /// Starts the reload thread. It owns `runtime` from now on and stops it on
    /// [`Reloads::shutdown`]. `args` are the command line's overrides, applied to every
    /// reloaded config as to the first.
    pub fn start(
        args: RunArgs,
        config: Config,
        runtime: Runtime,
        metrics: ReloadMetrics,
        refresh: Refresher,
    ) -> anyhow::Result<(Reloads, JoinHandle<()>)> {
        let (commands, requests) = channel();
        let file = args.config.config.as_deref().map(absolute);
        metrics.version.set(1);
        let refreshed = refresh(&config).map_or(0, |r| r.fingerprint);
        let status = Arc::new(RwLock::new(ConfigStatus {
            file: file.clone(),
            version: 1,
            digest: digest(&config),
            loaded_at: Timestamp::now(),
            pipelines: pipeline_names(&config),
            config: config.shown(),
            last_reload: None,
            last_error: None,
        }));
        let mut reloader = Reloader {
            file,
            args,
            active: config,
            version: 1,
            runtime,
            status: status.clone(),
            metrics,
            commands: commands.clone(),
            watcher: None,
            refresh,
            refreshed,
        };
        reloader.watch();
        let thread = std::thread::Builder::new()
            .name("config-reload".into())
            .spawn(move || reloader.run(&requests))?;
        Ok((Reloads { commands, status }, thread))
    }

    /// Asks for a reload without waiting for it (SIGHUP).
    pub fn request(&self, cause: Cause) {
        let _ = self.commands.send(Command::Reload { cause, reply: None });
    }

    /// Stops the reload thread, which stops the pipelines; join its handle afterwards.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

struct Reloader {
    file: Option<PathBuf>,
    args: RunArgs,
    active: Config,
    version: u64,
    runtime: Runtime,
    status: Arc<RwLock<ConfigStatus>>,
    metrics: ReloadMetrics,
    /// For the watcher's callback.
    commands: Sender<Command>,
    /// Replaced after each reload: the set of script files may have changed.
    watcher: Option<RecommendedWatcher>,
    refresh: Refresher,
    /// The fingerprint of the tokens and certificates in use.
    refreshed: u64,
}

impl Reloader {
    fn run(mut self, requests: &Receiver<Command>) {
        while let Ok(command) = requests.recv() {
            let Command::Reload { cause, reply } = command else {
                break;
            };
            let mut replies: Vec<_> = reply.into_iter().collect();
            let mut shutdown = false;
            if cause == Cause::File {
                // Wait for the writes to settle; whatever else arrives meanwhile joins in.
                let until = Instant::now() + SETTLE_AT_MOST;
                while Instant::now() < until {
                    match requests.recv_timeout(SETTLE) {
                        Ok(Command::Reload { reply, .. }) => replies.extend(reply),
                        Ok(Command::Shutdown) => {
                            shutdown = true;
                            break;
                        }
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            if shutdown {
                break;
            }
            let report = self.reload(cause);
            for reply in replies {
                let _ = reply.send(report.clone());
            }
        }
        self.runtime.stop();
    }

    /// One reload attempt, recorded in the metrics and the status.
    fn reload(&mut self, cause: Cause) -> ReloadReport {
        let started = Instant::now();
        let mut report = ReloadReport {
            result: ReloadResult::Error,
            cause: cause.as_str().to_owned(),
            at: Timestamp::now(),
            version: self.version,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            restart_required: Vec::new(),
            error: None,
        };
        match self.apply(&mut report) {
            Ok(result) => report.result = result,
            Err(error) => report.error = Some(error),
        }
        report.version = self.version;
        report.at = Timestamp::now();
        let took_ms = started.elapsed().as_millis();
        match report.result {
            ReloadResult::Error => tracing::error!(
                cause = cause.as_str(),
                error = report.error.as_deref().unwrap_or_default(),
                "config reload rejected; the previous config keeps running"
            ),
            result => tracing::info!(
                cause = cause.as_str(),
                result = result.as_str(),
                version = self.version,
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed,
                took_ms,
                "config reloaded"
            ),
        }
        if !report.restart_required.is_empty() {
            tracing::warn!(sections = ?report.restart_required, "these config sections changed and take effect only after a restart");
        }
        let labels = ResultLabels {
            result: report.result.as_str(),
        };
        self.metrics.reloads.get_or_create(&labels).inc();
        // One update, so a reader never sees a new version without its report.
        let mut status = self.status.write().unwrap_or_else(PoisonError::into_inner);
        if report.result == ReloadResult::Ok {
            status.version = self.version;
            status.digest = digest(&self.active);
            status.loaded_at = report.at;
            status.pipelines = pipeline_names(&self.active);
            status.config = self.active.shown();
        }
        status.last_reload = Some(report.clone());
        if report.result == ReloadResult::Error {
            status.last_error = Some(report.clone());
        }
        report
    }

    /// Loads, compares and swaps; fills in what changed. `Err` is the reason for rejecting.
    fn apply(&mut self, report: &mut ReloadReport) -> Result<ReloadResult, String> {
        let Some(file) = &self.file else {
            return Err("the node runs on the embedded defaults (no -c FILE)".to_owned());
        };
        let loaded = colloquium_config::from_file(file).map_err(|e| e.to_string())?;
        let mut next = self.args.apply(loaded);
        report.restart_required = keep_restart_only_sections(&self.active, &mut next);
        // A pipeline may only take from a source that is running.
        for (i, pipeline) in next.pipelines.iter().enumerate() {
            for (j, source) in pipeline.from.iter().enumerate() {
                if !next.sources.contains_key(source) {
                    return Err(format!(
                        "pipelines[{i}].from[{j}]: source `{source}` is not running (sources change at a restart)"
                    ));
                }
            }
        }
        if let Some(error) = colloquium_config::security::check_listeners(&next.server).first() {
            return Err(error.to_string());
        }
        let refresh = (self.refresh)(&next)?;
        let refreshed = refresh.fingerprint != self.refreshed;
        let before = digest(&self.active);
        if digest(&next) == before && !refreshed {
            return Ok(ReloadResult::Unchanged);
        }
        diff(&self.active, &next, report);
        self.runtime.reload(&next).map_err(|e| match e {
            RuntimeError::Config(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        })?;
        (refresh.install)();
        self.refreshed = refresh.fingerprint;
        if refreshed {
            report
                .changed
                .push("server.auth/tls (tokens or certificates)".to_owned());
        }
        self.version += 1;
        self.metrics
            .version
            .set(i64::try_from(self.version).unwrap_or(i64::MAX));
        self.active = next;
        self.watch();
        Ok(ReloadResult::Ok)
    }

    /// Watches the config file and the active config's script files (their directories,
    /// because editors replace files by renaming).
    fn watch(&mut self) {
        let Some(file) = &self.file else { return };
        let mut files: HashSet<PathBuf> = script_files(&self.active).map(absolute).collect();
        files.insert(file.clone());
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect();
        let commands = self.commands.clone();
        let callback = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let relevant = !matches!(event.kind, EventKind::Access(_))
                && event.paths.iter().any(|p| files.contains(p));
            if relevant {
                let _ = commands.send(Command::Reload {
                    cause: Cause::File,
                    reply: None,
                });
            }
        };
        // Drop the old watcher first: its directories may be watched again below.
        self.watcher = None;
        let watcher = notify::recommended_watcher(callback).and_then(|mut watcher| {
            for dir in &dirs {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        });
        match watcher {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP or POST /admin/reload")
            }
        }
    }
}

/// `server`, `storage`, `ingest`, `ai` and `sources` only change at a restart: `next` keeps the running ones,
/// and the names of those that differ are returned.
fn keep_restart_only_sections(active: &Config, next: &mut Config) -> Vec<String> {
    let mut differ = Vec::new();
    // Tokens rotate without a restart; the rest of `server:` owns the listeners.
    let auth = next.server.auth.take();
    let mut running = active.server.clone();
    running.auth = None;
    if !same(&running, &next.server) {
        differ.push("server".to_owned());
        next.server = running;
    }
    next.server.auth = auth;
    if !same(&active.storage, &next.storage) {
        differ.push("storage".to_owned());
        next.storage = active.storage.clone();
    }
    if !same(&active.ingest, &next.ingest) {
        differ.push("ingest".to_owned());
        next.ingest = active.ingest.clone();
    }
    // The AI gateway holds the breakers, limiters, cache and ledger of a running node.
    if !same(&active.ai, &next.ai) {
        differ.push("ai".to_owned());
        next.ai = active.ai.clone();
    }
    // Sources own listeners and routes: they change at a restart too.
    if !same(&active.sources, &next.sources) {
        differ.push("sources".to_owned());
        next.sources = active.sources.clone();
    }
    differ
}

/// Fills in the pipelines added and removed, and every named entry that changed
/// (`pipelines.NAME`, `scripts.NAME`, `sinks.NAME`, `sources.NAME`).
fn diff(active: &Config, next: &Config, report: &mut ReloadReport) {
    let by_name = |c: &Config| -> BTreeMap<String, serde_json::Value> {
        c.pipelines
            .iter()
            .map(|p| (p.name.clone(), serde_json::to_value(p).unwrap_or_default()))
            .collect()
    };
    let (old, new) = (by_name(active), by_name(next));
    report.added = new
        .keys()
        .filter(|n| !old.contains_key(*n))
        .cloned()
        .collect();
    report.removed = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .cloned()
        .collect();
    let mut changed = Vec::new();
    changed_entries("pipelines", &old, &new, &mut changed);
    changed_entries("scripts", &active.scripts, &next.scripts, &mut changed);
    changed_entries("sinks", &active.sinks, &next.sinks, &mut changed);
    changed_entries("sources", &active.sources, &next.sources, &mut changed);
    report.changed = changed;
}

/// Names (as `section.NAME`) present in both maps whose values differ.
fn changed_entries<T: Serialize>(
    section: &str,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    out: &mut Vec<String>,
) {
    for (name, value) in new {
        if old.get(name).is_some_and(|before| !same(before, value)) {
            out.push(format!("{section}.{name}"));
        }
    }
}

fn same<T: Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Hash of the config as loaded (script files' contents included).
fn digest(config: &Config) -> String {
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(config)
        .unwrap_or_default()
        .hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn pipeline_names(config: &Config) -> Vec<String> {
    config.pipelines.iter().map(|p| p.name.clone()).collect()
}

fn script_files(config: &Config) -> impl Iterator<Item = &Path> {
    config.scripts.values().filter_map(|s| match s {
        ScriptSource::Loaded { file, .. } | ScriptSource::File { file } => Some(file.as_path()),
        ScriptSource::Inline(_) => None,
    })
}

/// `path` made absolute against the working directory (as notify reports paths).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
