//! `GET /health`: `healthy`, `degraded` or `unhealthy`, per component, with reasons.
//!
//! With tokens configured, a caller without the `read` scope gets only `{"status": …}`.
//!
//! `unhealthy` (HTTP 503): the store cannot write, or the node is shutting down.
//! `degraded` (HTTP 200): free disk space is below `storage.min_free_disk`, or unknown; a
//! pipeline is more than 30 s behind the log; `storage.max_disk_usage` deleted events or dead
//! letters someone still needed in the last 15 minutes.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ApiState;

/// A component's (or the node's) status, worst last.
pub use colloquium_telemetry::health::Status;

#[derive(Serialize)]
struct Component {
    status: Status,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<String>,
    #[serde(flatten)]
    details: serde_json::Value,
}

#[derive(Serialize)]
struct Report {
    status: Status,
    components: Components,
}

#[derive(Serialize)]
struct Components {
    node: Component,
    storage: Component,
    disk: Component,
    control: Component,
    /// Each pipeline, when the node runs any.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pipelines: std::collections::BTreeMap<String, colloquium_telemetry::health::ComponentHealth>,
    /// Each source that reports its health (Kafka sources).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    sources: std::collections::BTreeMap<String, colloquium_telemetry::health::ComponentHealth>,
    /// The AI providers' breakers and today's spend, when `ai:` has providers.
    #[serde(skip_serializing_if = "Option::is_none")]
    ai: Option<colloquium_telemetry::health::ComponentHealth>,
}

/// How long `/health` reports a forced deletion (`storage.max_disk_usage`) as `degraded`.
const FORCED_DELETION_NOTICE_MS: u64 = 15 * 60 * 1000;

/// `unhealthy` while the store cannot write; `degraded` for a while after the disk ceiling
/// deleted events a pipeline had not processed, or dead letters.
fn storage_component(store: &colloquium_storage::Store) -> Component {
    let writable = store.writable();
    let forced = store.forced_deletions();
    let recent = forced.last.is_some_and(|at| {
        let now = colloquium_event::Timestamp::now().as_millis();
        now.saturating_sub(at.as_millis()) < FORCED_DELETION_NOTICE_MS
    });
    let mut status = Status::Healthy;
    let mut reasons = Vec::new();
    if !writable {
        status = Status::Unhealthy;
        reasons.push("last write to the store failed".into());
    } else if recent {
        status = Status::Degraded;
    }
    if recent {
        reasons.push(format!(
            "storage.max_disk_usage deleted {} events pipelines had not processed and {} dead letters",
            forced.unprocessed_events, forced.dead_letters
        ));
    }
    Component {
        status,
        reasons,
        details: serde_json::json!({
            "writable": writable,
            "forced_deleted_events": forced.unprocessed_events,
            "forced_deleted_dead_letters": forced.dead_letters,
        }),
    }
}

/// The control plane: `degraded` from DEGRADED up (the node is shedding or pushing back).
fn control_component(lanes: &colloquium_router::Lanes) -> Component {
    use colloquium_router::Level;
    let level = lanes.level();
    let action = match level {
        Level::Healthy => None,
        Level::Elevated => Some("lanes are filling"),
        Level::Degraded => Some("transactional intake is paused"),
        Level::Critical => Some("transactional intake is paused; the batch lane is shed"),
        Level::Emergency => Some(
            "transactional intake is paused; the batch lane is shed; low-priority events are diverted to the dead-letter queue",
        ),
    };
    Component {
        status: if level >= Level::Degraded {
            Status::Degraded
        } else {
            Status::Healthy
        },
        reasons: action
            .map(|a| vec![format!("control plane at {level}: {a}")])
            .unwrap_or_default(),
        details: serde_json::json!({ "level": level }),
    }
}

/// `GET /health`.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Healthy or degraded; components with the `read` scope", body = crate::openapi::Health),
        (status = 503, description = "Unhealthy", body = crate::openapi::Health)))]
pub async fn health(
    State(state): State<ApiState>,
    caller: Option<axum::Extension<colloquium_security::Caller>>,
) -> Response {
    let draining = state.draining.load(Ordering::Relaxed);
    let node = Component {
        status: if draining {
            Status::Unhealthy
        } else {
            Status::Healthy
        },
        reasons: if draining {
            vec!["shutting down".into()]
        } else {
            vec![]
        },
        details: serde_json::json!({}),
    };

    let storage = storage_component(&state.store);

    let dir = state.store.data_dir();
    let disk = match (fs4::available_space(dir), fs4::total_space(dir)) {
        (Ok(available), Ok(total)) => {
            let low = available < state.min_free_disk;
            Component {
                status: if low {
                    Status::Degraded
                } else {
                    Status::Healthy
                },
                reasons: if low {
                    vec![format!(
                        "{available} bytes free, below storage.min_free_disk ({})",
                        state.min_free_disk
                    )]
                } else {
                    vec![]
                },
                details: serde_json::json!({
                    "available_bytes": available,
                    "total_bytes": total,
                    "min_free_bytes": state.min_free_disk,
                }),
            }
        }
        (Err(e), _) | (_, Err(e)) => Component {
            status: Status::Degraded,
            reasons: vec![format!("cannot read free disk space: {e}")],
            details: serde_json::json!({}),
        },
    };

    let control = control_component(&state.lanes);
    let pipelines = state.board.snapshot();
    let sources = state.sources.snapshot();
    let worst = |reports: &std::collections::BTreeMap<
        String,
        colloquium_telemetry::health::ComponentHealth,
    >| {
        reports
            .values()
            .map(|r| r.status)
            .max()
            .unwrap_or(Status::Healthy)
    };
    let (worst_pipeline, worst_source) = (worst(&pipelines), worst(&sources));
    // Every provider down leaves the stream running (`on_unavailable`): the node is degraded,
    // not unhealthy, so a load balancer keeps sending it events.
    let ai = state.ai.as_ref().map(|gateway| gateway.refresh());
    let worst_ai = ai
        .as_ref()
        .map_or(Status::Healthy, |a| a.status.min(Status::Degraded));
    let status = node
        .status
        .max(storage.status)
        .max(disk.status)
        .max(control.status)
        .max(worst_pipeline)
        .max(worst_source)
        .max(worst_ai);
    let code = if status == Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    // With tokens configured, `/health` is open for liveness; its detail needs `read`.
    if caller.is_some_and(|c| !c.scopes.contains(colloquium_config::Scope::Read)) {
        return (code, axum::Json(serde_json::json!({ "status": status }))).into_response();
    }
    let report = Report {
        status,
        components: Components {
            node,
            storage,
            disk,
            control,
            pipelines,
            sources,
            ai,
        },
    };
    (code, axum::Json(report)).into_response()
}
