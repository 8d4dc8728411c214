//! `colloquium run`: one node. Opens the store, starts the pipelines, mounts every source and
//! the API on one listener, prints `colloquium ready http=<addr>` on stdout once it accepts connections, and
//! on SIGINT/SIGTERM stops accepting, finishes in-flight requests, flushes and closes the store.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use colloquium_api::ApiState;
use colloquium_config::Config;
use colloquium_event::IdGenerator;
use colloquium_ingest::{HttpSource, HttpSourceConfig, IngestMetrics};
use colloquium_pipeline::{PipelineMetrics, Runtime};
use colloquium_storage::{Compression, StorageMetrics, Store, StoreOptions};
use colloquium_telemetry::MetricsRegistry;
use colloquium_telemetry::health::HealthBoard;
use colloquium_telemetry::http::HttpMetrics;
use colloquium_telemetry::process::ProcessMetrics;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::accept::StoreAccept;
use crate::registry;
use crate::server::{self, ServerLimits};

/// Runs a node until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Before the ready line: a signal that arrives once we are "ready" must drain, not kill.
    let signals = Signals::install().context("installing signal handlers")?;
    let registry = MetricsRegistry::default();
    let store = open_store(&config, StorageMetrics::register(&registry))?;
    if let Some(max_age) = config.storage.retention {
        store
            .start_retention(max_age, config.storage.retention_interval)
            .context("starting retention")?;
    }

    let ids = Arc::new(IdGenerator::default());
    let board = HealthBoard::default();
    let pipelines = if config.pipelines.is_empty() {
        None
    } else {
        let metrics = PipelineMetrics::register(&registry);
        let runtime = Runtime::start(
            &config,
            &registry::registry(),
            store.clone(),
            ids.clone(),
            metrics,
            board.clone(),
        )
        .context("starting pipelines")?;
        tracing::info!(pipelines = config.pipelines.len(), "pipelines running");
        Some(runtime)
    };

    let draining = Arc::new(AtomicBool::new(false));
    let http = HttpSource::new(
        HttpSourceConfig {
            max_body_size: usize::try_from(config.server.max_body_size.as_u64())
                .unwrap_or(usize::MAX),
            max_pending_events: config.server.max_pending_events.get(),
            timestamp_field: config.ingest.timestamp_field.clone(),
            pipeline: config.ingest.pipeline.clone(),
        },
        StoreAccept {
            store: store.clone(),
            pipelines: pipelines.as_ref().map(Runtime::handle),
        },
        ids,
        IngestMetrics::register(&registry),
    );
    let api = colloquium_api::router(ApiState {
        store: store.clone(),
        registry: registry.clone(),
        process: ProcessMetrics::register(&registry),
        min_free_disk: config.storage.min_free_disk.as_u64(),
        draining: draining.clone(),
        board,
    });
    let http_metrics = HttpMetrics::register(&registry);
    let app = http
        .router()
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            HttpMetrics::track,
        ));

    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} (server.listen)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), "colloquium ready");
    // The ready line is the contract scripts and tests wait on.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "colloquium ready http={addr}")?;
    stdout.flush()?;

    let limits = ServerLimits {
        max_connections: config.server.max_connections.get(),
        header_read_timeout: config.server.header_read_timeout,
        shutdown_timeout: config.server.shutdown_timeout,
    };
    server::serve(listener, app, limits, async move {
        let signal = signals.recv().await;
        tracing::info!(
            signal,
            "shutting down: no new connections, finishing in-flight requests"
        );
        draining.store(true, Ordering::Relaxed);
    })
    .await;

    // Pipelines stop after ingest (nothing new arrives) and before the store closes; what
    // they have not processed yet resumes from their checkpoints at the next start.
    tokio::task::spawn_blocking(move || {
        if let Some(pipelines) = pipelines {
            pipelines.stop();
        }
        store.close()
    })
    .await
    .context("closing the store")?
    .context("closing the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store with the config's storage settings.
pub fn open_store(config: &Config, metrics: StorageMetrics) -> anyhow::Result<Store> {
    let storage = &config.storage;
    let options = StoreOptions {
        data_dir: storage.data_dir.clone(),
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

/// SIGINT and SIGTERM handlers, installed up front.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM, naming which.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
