//! `colloquium run`: one node. Opens the store, starts the pipelines, mounts every source and
//! the API on one listener and the admin routes on another, prints `colloquium ready
//! http=<addr> admin=<addr>` on stdout once it accepts connections, reloads the config on
//! SIGHUP, and on SIGINT/SIGTERM stops accepting, finishes in-flight requests, stops the
//! pipelines, flushes and closes the store.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use colloquium_api::ApiState;
use colloquium_config::Config;
use colloquium_event::IdGenerator;
use colloquium_ingest::{
    HttpRoutes, IngestMetrics, IngestSettings, SourceBuildContext, SourceContext,
};
use colloquium_pipeline::{PipelineMetrics, Runtime};
use colloquium_router::Lanes;
use colloquium_storage::{Compression, RetentionPolicy, StorageMetrics, Store, StoreOptions};
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::health::HealthBoard;
use colloquium_telemetry::http::HttpMetrics;
use colloquium_telemetry::process::ProcessMetrics;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::accept::StoreAccept;
use crate::cli::RunArgs;
use crate::registry;
use crate::reload::{Cause, ReloadMetrics, Reloads};
use crate::server::{self, ServerLimits};

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    // Before the ready line: a signal that arrives once we are "ready" must drain, not kill.
    let signals = Signals::install().context("installing signal handlers")?;
    // `--listen` may have moved a listener off loopback after validation.
    let unsafe_listeners = colloquium_config::security::check_listeners(&config.server);
    if let Some(error) = unsafe_listeners.first() {
        anyhow::bail!("{error}");
    }
    let registry = MetricsRegistry::default();
    let storage_metrics = StorageMetrics::register(&registry);
    let store = open_store(&config, storage_metrics.clone(), true)?;
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let jobs = store.clone();
    let trim = tokio::spawn(crate::allocator::idle::trim_when_idle(
        move || storage_metrics.written_bytes(),
        move || jobs.background_jobs(),
        workers,
    ));

    let ids = Arc::new(IdGenerator::default());
    let board = HealthBoard::default();
    // Lanes and the control plane are set at start (a reload does not change them).
    let lanes = Lanes::new(&config.lanes, &config.control);
    // Always started: with no pipelines it idles until a reload adds some.
    let taps = Arc::new(colloquium_pipeline::Taps::default());
    let (kinds, ai) = registry::with_ai(
        registry::registry()
            .with_metrics(registry.clone())
            .with_service(taps.clone()),
        &config,
        Some(&store),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("starting the AI gateway")?;
    // The gateway's breaker and spend gauges in `/metrics`, every second (a breaker cools down
    // with time, not only with calls); `/health` reads them when asked.
    let ai_gauges = ai.gateway.clone().map(|gateway| {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                ticks.tick().await;
                gateway.refresh();
            }
        })
    });
    let runtime = Runtime::start(
        &config,
        &kinds,
        store.clone(),
        ids.clone(),
        PipelineMetrics::register(&registry),
        board.clone(),
        lanes.clone(),
    )
    .context("starting pipelines")?;
    let control = tokio::spawn(crate::control::run(
        lanes.clone(),
        config.control.interval,
        crate::control::ControlMetrics::register(&registry),
    ));
    tracing::info!(pipelines = config.pipelines.len(), "pipelines running");
    // After the pipelines have written their checkpoints: retention keeps what they still need.
    let storage = &config.storage;
    if storage.retention.is_some() || storage.max_disk_usage.is_some() {
        store
            .start_retention(RetentionPolicy {
                max_age: storage.retention,
                max_disk_bytes: storage.max_disk_usage.map(|b| b.as_u64()),
                interval: storage.retention_interval,
            })
            .context("starting retention")?;
    }
    let wake = runtime.handle();

    let draining = Arc::new(AtomicBool::new(false));
    // Every configured source, built before anything listens: a bad one stops the start.
    let accept = StoreAccept {
        store: store.clone(),
        pipelines: wake,
        lanes: lanes.clone(),
    };
    let settings = ingest_settings(&config);
    let ingest_metrics = IngestMetrics::register(&registry);
    let mut routes = HttpRoutes::default();
    let source_health = HealthBoard::default();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    let kinds = registry::sources();
    for (name, section) in &config.sources {
        let mut cx = SourceBuildContext {
            name: colloquium_ingest::source::leak(name),
            at: format!("sources.{name}"),
            accept: accept.clone(),
            ids: ids.clone(),
            metrics: ingest_metrics.clone(),
            settings: &settings,
            http: &mut routes,
            persist: section.persist,
            registry: registry.clone(),
            health: source_health.clone(),
        };
        match kinds.build(section, &mut cx) {
            Ok(source) => sources.push((name.clone(), source)),
            Err(errors) => problems.extend(errors.iter().map(ToString::to_string)),
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("building sources: {}", problems.join("; "));
    }
    // Sources with sockets of their own bind before the node says it is ready.
    let mut bound = String::new();
    for (name, source) in &mut sources {
        if let Some(addr) = source.bind().await? {
            bound.push_str(&format!(" {name}={addr}"));
        }
    }
    let (stop_sources, sources_stopping) = tokio::sync::watch::channel(false);
    let source_tasks: Vec<_> = sources
        .into_iter()
        .map(|(_, source)| {
            let cx = SourceContext {
                shutdown: sources_stopping.clone(),
            };
            tokio::spawn(source.run(cx))
        })
        .collect();
    // Bound before the API is described: the description names the admin listener.
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    let admin_listen = config.server.admin_listen;
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding {admin_listen} (server.admin_listen)"))?;
    let admin_addr = admin_listener.local_addr()?;
    let http_metrics = HttpMetrics::register(&registry);
    let guard = crate::security::guard(&config, routes.paths(), &registry)?;
    // Each reload rotates the tokens and reads the certificates again, as one with the config.
    let (reloads, reload_thread) = Reloads::start(
        args,
        config.clone(),
        runtime,
        ReloadMetrics::register(&registry),
        crate::security::refresher(guard.clone(), settings.certificates.clone()),
    )?;
    let api = colloquium_api::router(ApiState {
        store: store.clone(),
        registry: registry.clone(),
        process: ProcessMetrics::register(&registry),
        min_free_disk: config.storage.min_free_disk.as_u64(),
        draining: draining.clone(),
        board,
        sources: source_health,
        lanes,
        ai: ai.gateway.clone(),
        similar: ai.indexes.clone(),
        taps,
        ids: ids.clone(),
        config: Some(Arc::new(reloads.clone())),
        storage_limits: colloquium_api::overview::StorageLimits {
            max_disk_usage: config.storage.max_disk_usage.map(|b| b.as_u64()),
            retention: config.storage.retention,
        },
        openapi: serde_json::to_string(&colloquium_api::description(
            &routes.paths().collect::<Vec<_>>(),
            &format!(
                "{}://{admin_addr}",
                if config.server.tls.is_some() {
                    "https"
                } else {
                    "http"
                }
            ),
        ))
        .context("describing the API")?
        .into(),
    });
    let guarded = |router: axum::Router| {
        router
            .layer(axum::middleware::from_fn_with_state(
                guard.clone(),
                colloquium_security::guard::check,
            ))
            .layer(axum::middleware::from_fn_with_state(
                http_metrics.clone(),
                HttpMetrics::track,
            ))
    };
    // A path no route serves is answered in the one error shape, as every error is.
    let app = guarded(
        routes
            .into_router()
            .merge(api)
            .fallback(colloquium_api::error::not_found),
    );
    let admin_app = guarded(
        colloquium_api::admin::router(colloquium_api::admin::AdminState {
            control: Arc::new(reloads.clone()),
            backups: colloquium_api::backup::Backups::new(
                store.clone(),
                config.storage.backup_root.clone(),
            ),
        })
        .fallback(colloquium_api::error::not_found),
    );
    let tls = match &config.server.tls {
        Some(tls) => Some(
            settings
                .certificates
                .load(tls, "server.tls")
                .and_then(|c| c.acceptor(true))
                .context("server.tls")?,
        ),
        None => None,
    };

    if !admin_addr.ip().is_loopback() {
        tracing::warn!(%admin_addr, "the admin routes (config reload) are reachable from other machines");
    }
    tracing::info!(%addr, %admin_addr, data_dir = %config.storage.data_dir.display(), "colloquium ready");
    // The ready line is the contract scripts and tests wait on.
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "colloquium ready http={addr} admin={admin_addr}{bound}"
    )?;
    stdout.flush()?;

    let limits = ServerLimits {
        max_connections: config.server.max_connections.get(),
        header_read_timeout: config.server.header_read_timeout,
        shutdown_timeout: config.server.shutdown_timeout,
    };
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let admin = server::serve(admin_listener, admin_app, tls.clone(), limits, async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    });
    let main = server::serve(listener, app, tls, limits, {
        let reloads = reloads.clone();
        async move {
            let signal = signals.until_stop(|| reloads.request(Cause::Sighup)).await;
            tracing::info!(
                signal,
                "shutting down: no new connections, finishing in-flight requests"
            );
            draining.store(true, Ordering::Relaxed);
            let _ = stopping.send(true);
        }
    });
    tokio::join!(main, admin);
    let _ = stop_sources.send(true);
    for task in source_tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "a source failed"),
            Err(e) => tracing::error!(error = %e, "a source panicked"),
        }
    }

    control.abort();
    trim.abort();
    if let Some(task) = ai_gauges {
        task.abort();
    }
    // Pipelines stop after ingest (nothing new arrives) and before the store closes; what
    // they have not processed yet resumes from their checkpoints at the next start.
    reloads.shutdown();
    tokio::task::spawn_blocking(move || {
        if reload_thread.join().is_err() {
            tracing::error!("the config reload thread panicked");
        }
        store.close()
    })
    .await
    .context("closing the store")?
    .context("closing the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// The node-wide settings sources share, from `server:` and `ingest:`.
pub fn ingest_settings(config: &Config) -> IngestSettings {
    IngestSettings {
        max_body_size: usize::try_from(config.server.max_body_size.as_u64()).unwrap_or(usize::MAX),
        max_pending_events: config.server.max_pending_events.get(),
        max_pending_bytes: usize::try_from(config.server.max_pending_bytes.as_u64())
            .unwrap_or(usize::MAX),
        timestamp_field: config.ingest.timestamp_field.clone(),
        pipeline: config.ingest.pipeline.clone(),
        certificates: colloquium_security::tls::Certificates::new(config.base_dir_or_cwd()),
    }
}

/// Opens the store with the config's storage settings; `create`: create the data directory
/// when missing (only a node does).
pub fn open_store(config: &Config, metrics: StorageMetrics, create: bool) -> anyhow::Result<Store> {
    let storage = &config.storage;
    let options = StoreOptions {
        data_dir: storage.data_dir.clone(),
        create_if_missing: create,
        sync: storage.sync,
        compression: match storage.compression {
            colloquium_config::Compression::Lz4 => Compression::Lz4,
            colloquium_config::Compression::Zstd => Compression::Zstd,
            colloquium_config::Compression::None => Compression::None,
        },
        block_cache_bytes: usize::try_from(storage.block_cache.as_u64()).unwrap_or(usize::MAX),
        write_buffer_bytes: usize::try_from(storage.write_buffer.as_u64()).unwrap_or(usize::MAX),
    };
    Ok(Store::open(options, metrics)?)
}

/// SIGINT, SIGTERM and SIGHUP handlers, installed up front.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Calls `on_hangup` at each SIGHUP; resolves on the first SIGINT or SIGTERM, naming which.
    async fn until_stop(mut self, on_hangup: impl Fn()) -> &'static str {
        loop {
            tokio::select! {
                _ = self.interrupt.recv() => return "SIGINT",
                _ = self.terminate.recv() => return "SIGTERM",
                _ = self.hangup.recv() => on_hangup(),
            }
        }
    }
}
