//! Pipeline health, measured apart from the workers: each pipeline's lag against the log head
//! and whether it stopped, every [`INTERVAL`], from its committed checkpoint.
//!
//! Apart, because a worker can be held for a long time inside one step (a sink retrying a
//! failing endpoint), and that is exactly when its lag matters. From the checkpoint, because
//! that is what a restart resumes from; it trails the worker by at most one step. A pipeline is
//! reported from its first checkpoint, which `Runtime::launch` writes before it runs.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use colloquium_event::Timestamp;
use colloquium_storage::Store;
use colloquium_telemetry::health::{ComponentHealth, HealthBoard, Status};

use crate::events::{PipelineLabels, PipelineMetrics};

/// How often the lag is measured.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);
/// Behind the log by more than this, a pipeline reports `degraded`.
pub(crate) const LAGGING_SECONDS: f64 = 30.0;
/// Most events counted behind a pipeline per measurement (a bounded read of keys).
pub(crate) const LAG_COUNT_LIMIT: usize = 100_000;

/// The thread that measures; stops when dropped.
pub(crate) struct Monitor {
    names: Arc<Mutex<Vec<String>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    pub(crate) fn start(
        store: Store,
        metrics: PipelineMetrics,
        board: HealthBoard,
    ) -> std::io::Result<Self> {
        let names: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pipeline-health".into())
            .spawn({
                let names = names.clone();
                move || {
                    loop {
                        // Held while measuring, so a reload that forgets a pipeline does not
                        // see its report come back after removing it.
                        let names = names.lock().unwrap_or_else(PoisonError::into_inner);
                        for name in names.iter() {
                            measure(&store, &metrics, &board, name);
                        }
                        drop(names);
                        match stopped.recv_timeout(INTERVAL) {
                            Err(RecvTimeoutError::Timeout) => continue,
                            _ => break,
                        }
                    }
                }
            })?;
        Ok(Self {
            names,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Measures these pipelines from now on (and no others).
    pub(crate) fn watch(&self, names: Vec<String>) {
        *self.names.lock().unwrap_or_else(PoisonError::into_inner) = names;
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the pipeline health thread panicked");
        }
    }
}

/// Reports one pipeline's lag (the age of the oldest event after its checkpoint, and how many
/// there are) and health.
fn measure(store: &Store, metrics: &PipelineMetrics, board: &HealthBoard, name: &str) {
    let checkpoint = match store.checkpoint(name) {
        Ok(Some(checkpoint)) => checkpoint,
        Ok(None) => return, // not launched yet
        Err(error) => {
            tracing::warn!(pipeline = name, %error, "reading a checkpoint for health failed");
            return;
        }
    };
    let backlog = match store.backlog(checkpoint.position, LAG_COUNT_LIMIT) {
        Ok(backlog) => backlog,
        Err(error) => {
            tracing::warn!(pipeline = name, %error, "measuring pipeline lag failed");
            return;
        }
    };
    let now = Timestamp::now().as_millis();
    let lag_ms = backlog
        .oldest
        .map_or(0, |id| now.saturating_sub(id.timestamp().as_millis()));
    #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
    let lag = lag_ms as f64 / 1000.0;
    let labels = PipelineLabels {
        pipeline: name.to_owned(),
    };
    metrics.lag.get_or_create(&labels).set(lag);
    let behind = i64::try_from(backlog.events).unwrap_or(i64::MAX);
    metrics.lag_events.get_or_create(&labels).set(behind);
    let stopped = checkpoint.stopped;
    metrics
        .stopped
        .get_or_create(&labels)
        .set(i64::from(stopped.is_some()));
    let (status, reasons) = match &stopped {
        Some(why) => (Status::Unhealthy, vec![format!("stopped: {why}")]),
        None if lag > LAGGING_SECONDS => (
            Status::Degraded,
            vec![format!(
                "{lag:.1} s behind the log ({}{} events)",
                backlog.events,
                if backlog.capped { "+" } else { "" }
            )],
        ),
        None => (Status::Healthy, vec![]),
    };
    let mut details = serde_json::Map::new();
    details.insert("lag_seconds".into(), serde_json::json!(lag));
    details.insert("lag_events".into(), serde_json::json!(backlog.events));
    details.insert(
        "lag_events_capped".into(),
        serde_json::json!(backlog.capped),
    );
    details.insert(
        "position".into(),
        serde_json::json!(checkpoint.position.map(|p| p.to_string())),
    );
    board.set(
        name,
        ComponentHealth {
            status,
            reasons,
            details,
        },
    );
}
