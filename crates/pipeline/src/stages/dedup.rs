//! `dedup`: drops an event whose key was already seen within `ttl`.
//!
//! The key is a JSON pointer into the data or a Computo script (its result, as JSON text). Time
//! is the event's ingest time, so a replay after a restart decides exactly as the first pass did.
//! Memory is bounded: past `max_keys` the oldest keys are forgotten first. The seen keys are the
//! stage's state: each admitted or forgotten key is a change committed with the pipeline's
//! checkpoint (`state_changes`), so a restart resumes with exactly the keys of that position.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::Event;
use computo::Script;
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{BuildContext, Failed, Stage, StageConfig, StageError, with_data};

/// `{type: dedup, key: /pointer | script: …, ttl: 10m, max_keys: 100000}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// JSON pointer into the data whose value is the key.
    #[serde(default)]
    pub key: Option<String>,
    /// Or a script (name or inline) whose result is the key.
    #[serde(default)]
    pub script: Option<Value>,
    /// How long a key is remembered.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most keys remembered at once.
    #[serde(default = "default_max_keys")]
    pub max_keys: NonZeroUsize,
}

fn default_max_keys() -> NonZeroUsize {
    NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN)
}

impl StageConfig for DedupConfig {
    const KIND: &'static str = "dedup";
    fn build(self, cx: &BuildContext<'_>) -> Result<Box<dyn Stage>, ConfigError> {
        let key = match (self.key, &self.script) {
            (Some(p), None) if p.starts_with('/') => DedupKey::Pointer(p),
            (Some(p), None) => {
                return Err(ConfigError::new(
                    cx.key("key"),
                    format!("`{p}` is not a JSON pointer"),
                ));
            }
            (None, Some(script)) => {
                DedupKey::Script(cx.scripts.resolve(script, &cx.key("script"))?)
            }
            _ => {
                return Err(ConfigError::new(
                    &cx.at,
                    "`dedup` needs exactly one of `key` (a pointer) or `script`",
                ));
            }
        };
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(ConfigError::new(cx.key("ttl"), "must be at least 1ms"));
        }
        Ok(Box::new(Dedup {
            key,
            ttl_ms,
            max_keys: self.max_keys.get(),
            pipeline: cx.pipeline.clone(),
            seen: Seen::default(),
            changes: Vec::new(),
        }))
    }
}

enum DedupKey {
    Pointer(String),
    Script(Arc<Script>),
}

/// Keys with the ingest time (ms) they were let through, oldest first.
#[derive(Default)]
struct Seen {
    first_seen: HashMap<String, u64>,
    order: VecDeque<(String, u64)>,
}

struct Dedup {
    key: DedupKey,
    ttl_ms: u64,
    max_keys: usize,
    pipeline: Arc<str>,
    seen: Seen,
    /// Keys admitted (`Some(time)`) or forgotten (`None`) since the last `state_changes`.
    changes: Vec<(String, Option<u64>)>,
}

impl Dedup {
    fn key_of(&self, event: &mut Event) -> Result<String, StageError> {
        match &self.key {
            DedupKey::Pointer(p) => Ok(event
                .data_pointer(p)
                .map_or_else(|| "null".to_owned(), Value::to_string)),
            DedupKey::Script(script) => {
                let result = with_data(event, &self.pipeline, |data, meta| {
                    script.eval(&[data, &meta()])
                })?;
                Ok(result.to_string())
            }
        }
    }

    /// Forgets keys older than the TTL at `now`, and the oldest beyond `max_keys`.
    fn expire(&mut self, now: u64) {
        while let Some((_, at)) = self.seen.order.front() {
            let expired = now.saturating_sub(*at) >= self.ttl_ms;
            if !expired && self.seen.order.len() <= self.max_keys {
                break;
            }
            let Some((key, at)) = self.seen.order.pop_front() else {
                break;
            };
            // A key re-admitted later has a newer entry; only remove the map entry it owns.
            if let Entry::Occupied(entry) = self.seen.first_seen.entry(key)
                && *entry.get() == at
            {
                let (key, _) = entry.remove_entry();
                self.changes.push((key, None));
            }
        }
    }
}

impl Stage for Dedup {
    fn process(&mut self, mut event: Event, out: &mut Vec<Event>) -> Result<(), Box<Failed>> {
        let key = match self.key_of(&mut event) {
            Ok(key) => key,
            Err(error) => return Err(Failed::new(error, event)),
        };
        let now = event.ingest_time.as_millis();
        self.expire(now);
        let seen_at = self.seen.first_seen.get(&key);
        if seen_at.is_some_and(|at| now.saturating_sub(*at) < self.ttl_ms) {
            return Ok(()); // a duplicate: counted as dropped by the pipeline
        }
        self.seen.first_seen.insert(key.clone(), now);
        self.changes.push((key.clone(), Some(now)));
        self.seen.order.push_back((key, now));
        self.expire(now);
        out.push(event);
        Ok(())
    }

    fn state_changes(&mut self, changes: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        changes.extend(
            self.changes
                .drain(..)
                .map(|(key, at)| (key.into_bytes(), at.map(|ms| ms.to_be_bytes().to_vec()))),
        );
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        let mut seen: Vec<(String, u64)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let key = String::from_utf8(key)
                .map_err(|e| StageError::BadValue(format!("dedup state: {e}")))?;
            let at = <[u8; 8]>::try_from(value.as_slice())
                .map_err(|_| StageError::BadValue("dedup state: a time is not 8 bytes".into()))?;
            seen.push((key, u64::from_be_bytes(at)));
        }
        seen.sort_by_key(|(_, at)| *at);
        self.seen.first_seen = seen.iter().cloned().collect();
        self.seen.order = seen.into();
        Ok(())
    }
}
