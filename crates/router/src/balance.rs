//! Spreading a pipeline's results over its sinks: every sink (`fan_out`), one in turn
//! (`round_robin`), or one chosen by a key in the data (`key_hash`, stable: the same key always
//! goes to the same sink, across restarts and builds, because the hash is FNV-1a, not Rust's
//! randomly keyed default).

use std::hash::Hasher;
use std::sync::atomic::{AtomicUsize, Ordering};

use colloquium_config::Balance;
use serde_json::Value;

/// Which of a pipeline's sinks get one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// All of them.
    All,
    /// Only this one (an index into the pipeline's sinks).
    One(usize),
}

/// The balancing policy of one pipeline.
#[derive(Debug)]
pub struct Balancer {
    mode: Balance,
    key: String,
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer for `mode`; `key` is the JSON pointer used by `key_hash`.
    pub fn new(mode: Balance, key: Option<&str>) -> Self {
        Balancer {
            mode,
            key: key.unwrap_or_default().to_owned(),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the sinks (out of `sinks`) for one result with this data.
    pub fn pick(&self, data: &Value, sinks: usize) -> Pick {
        self.pick_by(|pointer| data.pointer(pointer), sinks)
    }

    /// Like [`Balancer::pick`], reading the key through `lookup` (called only for `key_hash`),
    /// so callers need not build a `Value` of the data.
    pub fn pick_by<'a>(
        &self,
        lookup: impl FnOnce(&str) -> Option<&'a Value>,
        sinks: usize,
    ) -> Pick {
        if sinks <= 1 {
            return Pick::All;
        }
        match self.mode {
            Balance::FanOut => Pick::All,
            Balance::RoundRobin => Pick::One(self.next.fetch_add(1, Ordering::Relaxed) % sinks),
            Balance::KeyHash => {
                // A missing key hashes like `null`: always the same sink.
                let key = lookup(&self.key).unwrap_or(&Value::Null);
                let mut hasher = fnv::FnvHasher::default();
                hasher.write(key.to_string().as_bytes());
                let slot = hasher.finish() % u64::try_from(sinks).unwrap_or(u64::MAX);
                Pick::One(usize::try_from(slot).unwrap_or(0))
            }
        }
    }
}
