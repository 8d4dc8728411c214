//! Process gauges, read from `/proc/self` when `/metrics` is scraped.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;

use crate::MetricsRegistry;

/// `colloquium_process_resident_memory_bytes`.
#[derive(Clone)]
pub struct ProcessMetrics {
    resident: Gauge<u64, AtomicU64>,
}

impl ProcessMetrics {
    /// Registers the process gauges.
    pub fn register(registry: &MetricsRegistry) -> Self {
        registry.register("process", |r| {
            let resident = Gauge::<u64, AtomicU64>::default();
            r.register(
                "resident_memory_bytes",
                "Resident set size",
                resident.clone(),
            );
            Self { resident }
        })
    }

    /// Reads the current values; call before encoding.
    pub fn refresh(&self) {
        if let Some(rss) = resident_bytes() {
            self.resident.set(rss);
        }
    }
}

/// Returns this process's resident set size, or `None` where `/proc` is unavailable.
pub fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Returns this process's peak resident set size, or `None` where `/proc` is unavailable.
pub fn peak_resident_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_resident_memory_on_linux() {
        if cfg!(target_os = "linux") {
            let resident = super::resident_bytes().unwrap();
            assert!(resident > 0);
            // Read after: the peak can only have grown since.
            assert!(super::peak_resident_bytes().unwrap() >= resident);
        }
    }
}
