//! Health that components report about themselves, for `/health`.
//!
//! A [`HealthBoard`] is a shared table of named components (each pipeline, say) that their
//! owners update as they run and `/health` reads. It holds plain data, so the layers that
//! report and the API that serves need not know each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How healthy something is; ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Healthy,
    /// Working, but something needs attention (lagging, low disk).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// One component's report.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentHealth {
    /// Its status.
    pub status: Status,
    /// Why it is not healthy (empty when it is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Anything else worth showing (merged into the component's JSON object).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Named component reports, shared between their owners and `/health`.
#[derive(Clone, Debug, Default)]
pub struct HealthBoard {
    components: Arc<Mutex<BTreeMap<String, ComponentHealth>>>,
}

impl HealthBoard {
    /// Sets (or replaces) the report of `name`.
    pub fn set(&self, name: &str, health: ComponentHealth) {
        self.lock().insert(name.to_owned(), health);
    }

    /// Removes the report of `name`.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// A copy of every report, by name.
    pub fn snapshot(&self) -> BTreeMap<String, ComponentHealth> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ComponentHealth>> {
        // A poisoned lock only means a reporter panicked mid-insert; the map is still valid.
        self.components.lock().unwrap_or_else(|e| e.into_inner())
    }
}
