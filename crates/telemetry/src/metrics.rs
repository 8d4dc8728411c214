//! The metric registry. Crates register their metrics once at startup (each crate's `events.rs`
//! owns its names); `/metrics` encodes the registry in Prometheus text format.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A shared Prometheus registry under the `colloquium` prefix.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
    /// Metric sets registered once per registry by type ([`MetricsRegistry::once`]).
    sets: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send>>>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::with_prefix("colloquium"))),
            sets: Arc::default(),
        }
    }
}

impl MetricsRegistry {
    /// Runs `f` with the registry, to register metrics under `subsystem`
    /// (names become `colloquium_<subsystem>_<name>`).
    pub fn register<T>(&self, subsystem: &str, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(registry.sub_registry_with_prefix(subsystem))
    }

    /// The metric set `T`, registered by `register` the first time it is asked for: for
    /// components built more than once per registry (two sources of one kind).
    pub fn once<T: Clone + Send + 'static>(&self, register: impl FnOnce(&Self) -> T) -> T {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = sets
            .get(&TypeId::of::<T>())
            .and_then(|s| s.downcast_ref::<T>())
        {
            return set.clone();
        }
        let set = register(self);
        sets.insert(TypeId::of::<T>(), Box::new(set.clone()));
        set
    }

    /// Returns every metric in OpenMetrics text format (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let registry = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Returns OpenMetrics text rewritten as Prometheus text format 0.0.4, for scrapers and tools
/// (promtool, older agents) that do not speak OpenMetrics: counter families are named with
/// their `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT` and `# EOF` lines are dropped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            // Its family's type comes on the next line; hold it until then.
            help = Some(line);
            continue;
        }
        if let Some(family) = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            if let Some(help) = help.take() {
                let text = help
                    .strip_prefix(&format!("# HELP {family} "))
                    .unwrap_or_default();
                out.push_str(&format!("# HELP {family}_total {text}\n"));
            }
            out.push_str(&format!("# TYPE {family}_total counter\n"));
            continue;
        }
        if let Some(help) = help.take() {
            out.push_str(help);
            out.push('\n');
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A labelled histogram family whose histograms use [`latency_buckets`].
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Returns an empty histogram with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Histogram buckets in seconds for latencies from 50 µs to 10 s, finer from 10 to 25 ms where
/// the pipelines' latency aim (p99 under 20 ms) lies.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.015, 0.02, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_are_prefixed() {
        let registry = MetricsRegistry::default();
        let counter: Counter = registry.register("test", |r| {
            let c = Counter::default();
            r.register("things", "Things seen", c.clone());
            c
        });
        counter.inc();
        let text = registry.encode();
        assert!(text.contains("colloquium_test_things_total 1"), "{text}");
    }

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let openmetrics = "# HELP a_things Things seen.\n# TYPE a_things counter\na_things_total 1\n\
                           # HELP a_size Size.\n# TYPE a_size gauge\n# UNIT a_size bytes\na_size 5\n# EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP a_things_total Things seen.\n# TYPE a_things_total counter\na_things_total 1\n\
             # HELP a_size Size.\n# TYPE a_size gauge\na_size 5\n"
        );
    }
}
