//! `idempotency`: EventStream's transactional processor as a stage. It runs the `stages` it
//! protects once per client key: a client's retry of an event already processed (same key,
//! within `ttl`) is dropped, which the original's dedup on a server-assigned id cannot catch;
//! a failure of the protected stages is retried with a doubling backoff, and after
//! `retry.max_attempts` the event is dead-lettered with reason `max_retries_exceeded`.
//!
//! - The key is `key` (a JSON pointer into the data: a string or a number), scoped by the
//!   event's topic with `by_topic: true`. An event without one fails with `bad_value`.
//! - A key is recorded only once the protected stages have succeeded, so an event that ended
//!   in the dead-letter queue is processed when the client sends it again.
//! - Keys are kept in the stage's state (one row each, with its expiry), so they survive a
//!   restart; at most `max_keys`, the one closest to expiry giving way first.
//! - It waits its backoffs without holding other pipelines (an async stage: its pipeline runs
//!   on a worker of its own), and takes events one at a time, in order.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use colloquium_config::{ComponentConfig, ConfigError};
use colloquium_event::{Event, Fault, Reason, Timestamp};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::context::{Effects, StageContext, StateWrite};
use crate::pipeline::Sleeper;
use crate::stage::{
    AsyncStage, BuildContext, BuiltStage, CallResult, Clock, Failed, Stage, StageConfig, StageError,
};
use crate::state::Codec;

/// `{type: idempotency, key: /pointer, by_topic: false, ttl: 10m, max_keys: 100000,
/// retry: {max_attempts: 3, backoff: 100ms}, stages: [...]}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// JSON pointer to the client's key in the data.
    pub key: String,
    /// Keys are per topic (`metadata.topic`): the same key on two topics is two events.
    #[serde(default)]
    pub by_topic: bool,
    /// How long a processed key is remembered.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most keys remembered.
    #[serde(default = "default_max_keys")]
    pub max_keys: NonZeroUsize,
    /// How the protected stages are retried.
    #[serde(default)]
    pub retry: Retry,
    /// The stages run once per key (stages that do not wait, without `on_error` or `id`).
    #[serde(default)]
    pub stages: Vec<ComponentConfig>,
}

/// `retry:` of an `idempotency` stage.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// The first wait; each next one doubles.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 3,
            backoff: Duration::from_millis(100),
        }
    }
}

fn default_max_keys() -> NonZeroUsize {
    NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN)
}

/// A remembered key's row: when it expires (ms).
const KEY_ROW: Codec<u64> = Codec::new("idempotency key", 1);
/// State keys: `0x00` + the client key for its own rows, `n + 1` + the key of protected stage
/// `n`'s rows.
const OWN: u8 = 0;

impl StageConfig for IdempotencyConfig {
    const KIND: &'static str = "idempotency";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        if !self.key.starts_with('/') {
            return Err(ConfigError::new(
                cx.key("key"),
                "must be a JSON pointer, such as /request_id",
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::new(cx.key("ttl"), "must be greater than 0"));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::new(
                cx.key("retry.max_attempts"),
                "must be at least 1",
            ));
        }
        if self.stages.len() > usize::from(u8::MAX) - 1 {
            return Err(ConfigError::new(cx.key("stages"), "at most 254 stages"));
        }
        let mut stages = Vec::with_capacity(self.stages.len());
        for (n, component) in self.stages.iter().enumerate() {
            let at = format!("{}.stages[{n}]", cx.at);
            if component.on_error.is_some() || component.id.is_some() {
                return Err(ConfigError::new(
                    at,
                    "a protected stage takes no `on_error` or `id`: the idempotency stage retries it and keys its state",
                ));
            }
            let id: Arc<str> = Arc::from(format!("{}/{}#{n}", cx.id, component.kind));
            let nested = BuildContext {
                scripts: cx.scripts,
                pipeline: cx.pipeline.clone(),
                id: id.clone(),
                at: at.clone(),
                clock: cx.clock,
                sleep: cx.sleep,
                registry: cx.registry,
            };
            let built = cx.registry.build_stage(component, &nested)?;
            match built.stage {
                BuiltStage::Sync(stage) if built.side_sinks.is_empty() => {
                    // Its state rows are prefixed by its position + 1 (0 is the stage's own).
                    let scope = [u8::try_from(n + 1).unwrap_or(u8::MAX)];
                    stages.push(Protected { stage, id, scope });
                }
                BuiltStage::Sync(_) => {
                    return Err(ConfigError::new(
                        at,
                        "a stage with sinks of its own (`alert`) cannot be protected: put it before or after",
                    ));
                }
                BuiltStage::Async(_) => {
                    return Err(ConfigError::new(
                        at,
                        "a stage that waits cannot be protected",
                    ));
                }
            }
        }
        Ok(BuiltStage::Async(Box::new(Idempotency {
            settings: Arc::new(Settings {
                key: self.key,
                by_topic: self.by_topic,
                ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
                retry: self.retry,
                clock: cx.clock,
                sleep: cx.sleep,
            }),
            inner: Arc::new(Mutex::new(Inner {
                stages,
                seen: HashMap::new(),
                by_expiry: BTreeSet::new(),
                max_keys: self.max_keys.get(),
                changes: Vec::new(),
                effects: Effects::default(),
            })),
        })))
    }
}

struct Settings {
    key: String,
    by_topic: bool,
    ttl_ms: u64,
    retry: Retry,
    clock: Clock,
    sleep: Sleeper,
}

struct Idempotency {
    settings: Arc<Settings>,
    inner: Arc<Mutex<Inner>>,
}

/// A protected stage: its id (results are kept under it) and its state rows' prefix.
struct Protected {
    stage: Box<dyn Stage>,
    id: Arc<str>,
    scope: [u8; 1],
}

/// What the calls share; locked only between awaits.
struct Inner {
    stages: Vec<Protected>,
    /// Processed keys and when each expires (ms).
    seen: HashMap<String, u64>,
    by_expiry: BTreeSet<(u64, String)>,
    max_keys: usize,
    /// Writes to its own rows since the last `checkpoint`.
    changes: Vec<StateWrite>,
    /// What the protected stages did during calls, handed over at the next tick or
    /// checkpoint (a call has no context of the pipeline's to write to).
    effects: Effects,
}

fn own_key(key: &str) -> Vec<u8> {
    [&[OWN][..], key.as_bytes()].concat()
}

impl Inner {
    fn forget(&mut self, expires: u64, key: String) {
        self.seen.remove(&key);
        self.by_expiry.remove(&(expires, key.clone()));
        self.changes.push(StateWrite::Delete(own_key(&key)));
    }

    fn expire(&mut self, now: u64) {
        while let Some((expires, _)) = self.by_expiry.first() {
            if *expires > now {
                break;
            }
            if let Some((expires, key)) = self.by_expiry.pop_first() {
                self.forget(expires, key);
            }
        }
    }

    fn remember(&mut self, key: String, expires: u64) {
        if let Some(old) = self.seen.get(&key).copied() {
            self.by_expiry.remove(&(old, key.clone()));
        } else if self.seen.len() >= self.max_keys
            && let Some((soonest, evicted)) = self.by_expiry.pop_first()
        {
            self.forget(soonest, evicted);
        }
        self.changes
            .push(StateWrite::Put(own_key(&key), KEY_ROW.encode(&expires)));
        self.seen.insert(key.clone(), expires);
        self.by_expiry.insert((expires, key));
    }

    /// Runs the protected stages from the `first` over `events`.
    fn run(&mut self, first: usize, mut events: Vec<Event>) -> Result<Vec<Event>, StageError> {
        for p in self.stages.iter_mut().skip(first) {
            let mut next = Vec::with_capacity(events.len());
            for event in events {
                let cx = StageContext::new(&mut next, &mut self.effects, &p.id);
                p.stage
                    .process(event, &mut cx.within(&p.scope))
                    .map_err(|f| f.error)?;
            }
            events = next;
        }
        Ok(events)
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Settings {
    /// The event's client key, with its topic when keys are per topic.
    fn key_of(&self, event: &Event) -> Result<String, StageError> {
        let value = event.data_pointer(&self.key);
        let key = match value {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                return Err(StageError::BadValue(format!(
                    "idempotency key {} is {}, not a string or a number",
                    self.key,
                    colloquium_event::json_kind(other)
                )));
            }
            None => {
                return Err(StageError::BadValue(format!(
                    "the event has no idempotency key at {}",
                    self.key
                )));
            }
        };
        Ok(if self.by_topic {
            let topic = event.metadata.topic.as_deref().unwrap_or_default();
            // Length-prefixed, so no topic and key pair reads as another.
            format!("{}:{topic}{key}", topic.len())
        } else {
            key
        })
    }
}

impl AsyncStage for Idempotency {
    fn concurrency(&self) -> usize {
        // One at a time: a key's second event must see whether its first succeeded.
        1
    }

    fn call(&mut self, mut event: Event) -> BoxFuture<'static, CallResult> {
        let settings = self.settings.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let key = match settings.key_of(&event) {
                Ok(key) => key,
                Err(e) => return Err(Failed::new(e, event)),
            };
            let now = (settings.clock)().as_millis();
            {
                let mut inner = lock(&inner);
                inner.expire(now);
                if inner.seen.contains_key(&key) {
                    return Ok(Vec::new()); // the client's retry of a processed event
                }
            }
            let mut backoff = settings.retry.backoff;
            let mut attempts = 0;
            loop {
                attempts += 1;
                let result = lock(&inner).run(0, vec![event.clone()]);
                match result {
                    Ok(out) => {
                        lock(&inner).remember(key, now.saturating_add(settings.ttl_ms));
                        return Ok(out);
                    }
                    Err(e) if e.fault() == Fault::Internal => return Err(Failed::new(e, event)),
                    Err(e) if attempts >= settings.retry.max_attempts => {
                        let error = StageError::External {
                            reason: Reason::MaxRetriesExceeded,
                            message: format!("failed {attempts} times; the last: {e}"),
                        };
                        return Err(Failed::new(error, event));
                    }
                    Err(_) => {
                        (settings.sleep)(backoff).await;
                        backoff = backoff.saturating_mul(2);
                        event.metadata.retry_count += 1;
                    }
                }
            }
        })
    }

    fn on_tick(&mut self, now: Timestamp, cx: &mut StageContext<'_>) -> Result<(), StageError> {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        cx.absorb(&mut inner.effects);
        // Each protected stage ticks; what it emits goes through the protected stages after
        // it, then on down the pipeline.
        for n in 0..inner.stages.len() {
            let mut emitted = Vec::new();
            let p = &mut inner.stages[n];
            p.stage
                .on_tick(now, &mut cx.nested(&mut emitted, &p.id, &p.scope))?;
            if emitted.is_empty() {
                continue;
            }
            match inner.run(n + 1, emitted) {
                Ok(events) => cx.emit_all(events),
                Err(error) if error.fault() == Fault::Internal => return Err(error),
                Err(error) => {
                    // Not a client's event: nothing to dead-letter it as. Said, not hidden.
                    tracing::warn!(stage = %cx.stage(), %error, "a protected stage failed on what an earlier one emitted at a tick; dropped");
                }
            }
            cx.absorb(&mut inner.effects);
        }
        Ok(())
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        for write in inner.changes.drain(..) {
            cx.write_state(write);
        }
        cx.absorb(&mut inner.effects);
        let mut ignored = Vec::new();
        for p in &mut inner.stages {
            p.stage
                .checkpoint(&mut cx.nested(&mut ignored, &p.id, &p.scope));
        }
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        let now = (self.settings.clock)().as_millis();
        let mut inner = lock(&self.inner);
        let mut theirs: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); inner.stages.len()];
        for (key, value) in entries {
            match key.split_first() {
                Some((&OWN, own)) => {
                    let client = String::from_utf8(own.to_vec())
                        .map_err(|_| StageError::State("idempotency key: not UTF-8".to_owned()))?;
                    let expires = KEY_ROW.decode(&value)?;
                    if expires > now {
                        inner.seen.insert(client.clone(), expires);
                        inner.by_expiry.insert((expires, client));
                    } else {
                        inner.changes.push(StateWrite::Delete(key));
                    }
                }
                Some((n, rest)) => match theirs.get_mut(usize::from(*n) - 1) {
                    Some(rows) => rows.push((rest.to_vec(), value)),
                    // A protected stage removed from the config: its rows go.
                    None => inner.changes.push(StateWrite::Delete(key)),
                },
                None => return Err(StageError::State("idempotency: an empty key".to_owned())),
            }
        }
        for (p, rows) in inner.stages.iter_mut().zip(theirs) {
            p.stage.restore_state(rows)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::registry::Registry;
    use crate::stages::transform::TransformConfig;
    use colloquium_event::{Metadata, Timestamp};
    use serde_json::json;

    fn registry() -> Registry {
        Registry::default()
            .stage::<IdempotencyConfig>()
            .stage::<TransformConfig>()
            .with_sleep(Pipeline::no_wait)
    }

    fn pipeline(stage: &str) -> Result<Pipeline, String> {
        crate::stages::test_pipeline(&registry(), "", &format!("[{stage}]"))
    }

    fn event(data: Value, topic: &str) -> Event {
        let mut metadata = Metadata::new("http", "default");
        metadata.topic = Some(topic.to_owned());
        Event::at(
            Timestamp::now(),
            data.as_object().cloned().unwrap(),
            metadata,
        )
    }

    async fn run(p: &mut Pipeline, events: Vec<Event>) -> Vec<crate::pipeline::Outcome> {
        p.process_batch(events).await
    }

    #[tokio::test]
    async fn a_clients_retry_is_dropped_and_keys_may_be_per_topic() {
        let mut p = pipeline(
            "{type: idempotency, key: /req, by_topic: true, ttl: 1h, stages: [{type: transform, script: [obj, [req, [get, [$input], /req]], [done, true]]}]}",
        )
        .unwrap();
        let outcomes = run(
            &mut p,
            vec![
                event(json!({"req": "a"}), "orders"),
                event(json!({"req": "a"}), "orders"),
                event(json!({"req": "a"}), "refunds"),
                event(json!({"req": 7}), "orders"),
                event(json!({"req": 7}), "orders"),
            ],
        )
        .await;
        let outputs: Vec<usize> = outcomes.iter().map(|o| o.outputs.len()).collect();
        assert_eq!(outputs, [1, 0, 1, 1, 0]);
        assert_eq!(outcomes[0].outputs[0].data["done"], true);
        let missing = run(&mut p, vec![event(json!({"other": 1}), "orders")]).await;
        assert_eq!(missing[0].failures[0].reason, Reason::BadValue);
    }

    #[tokio::test]
    async fn failures_are_retried_then_dead_lettered_and_the_key_is_not_remembered() {
        // Fails while /n is not a number: a string divides nothing.
        let stage = "{type: idempotency, key: /req, ttl: 1h, retry: {max_attempts: 3, backoff: 1ms}, stages: [{type: transform, script: [obj, [half, [/, [get, [$input], /n], 2]]]}]}";
        let mut p = pipeline(stage).unwrap();
        let outcomes = run(&mut p, vec![event(json!({"req": "x", "n": "four"}), "t")]).await;
        let failure = &outcomes[0].failures[0];
        assert_eq!(failure.reason, Reason::MaxRetriesExceeded);
        assert!(
            failure.error.starts_with("failed 3 times; the last:"),
            "{}",
            failure.error
        );
        // The client sends it again, fixed: processed, since the failure recorded nothing.
        let outcomes = run(&mut p, vec![event(json!({"req": "x", "n": 4}), "t")]).await;
        assert_eq!(outcomes[0].outputs[0].data["half"], 2.0);
    }

    #[tokio::test]
    async fn keys_survive_a_restart_expire_and_are_capped() {
        let stage = "{type: idempotency, key: /req, ttl: 1h, max_keys: 2}";
        let mut p = pipeline(stage).unwrap();
        run(
            &mut p,
            ["a", "b", "c"]
                .iter()
                .map(|k| event(json!({"req": k}), "t"))
                .collect(),
        )
        .await;
        let rows: Vec<(String, StateWrite)> = p
            .state_changes()
            .into_iter()
            .map(|(id, w)| (id.to_string(), w))
            .collect();
        // a, b, then c pushes out a (the soonest to expire).
        let live: Vec<Vec<u8>> = {
            let mut live = std::collections::BTreeMap::new();
            for (_, write) in &rows {
                match write {
                    StateWrite::Put(k, v) => drop(live.insert(k.clone(), v.clone())),
                    StateWrite::Delete(k) => drop(live.remove(k)),
                    StateWrite::DeleteBelow(_) | StateWrite::DeleteRange(..) => {}
                }
            }
            live.keys().cloned().collect()
        };
        assert_eq!(live, [own_key("b"), own_key("c")]);
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (_, write) in rows {
            if let StateWrite::Put(k, v) = write
                && live.contains(&k)
            {
                entries.push((k, v));
            }
        }
        // Restarted: b is still a duplicate, a is new again; an expired row is dropped.
        entries.push((own_key("old"), KEY_ROW.encode(&1)));
        let mut restarted = pipeline(stage).unwrap();
        restarted
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(entries.clone()))
            .unwrap();
        let outcomes = run(
            &mut restarted,
            vec![
                event(json!({"req": "b"}), "t"),
                event(json!({"req": "a"}), "t"),
                event(json!({"req": "old"}), "t"),
            ],
        )
        .await;
        let outputs: Vec<usize> = outcomes.iter().map(|o| o.outputs.len()).collect();
        assert_eq!(outputs, [0, 1, 1]);
    }

    #[tokio::test]
    async fn a_protected_window_gets_ticks_and_keeps_its_results_and_state() {
        let registry = registry().stage::<crate::stages::window::WindowConfig>();
        let stage = "[{type: idempotency, key: /req, ttl: 1h, stages: [{type: window, window: tumbling, size: 10ms, key: /k, time: /t, watermark_interval: 1ms, aggregates: {n: count}}]}]";
        let build = || crate::stages::test_pipeline(&registry, "", stage).unwrap();
        let mut p = build();
        let events = [(1, "a"), (2, "b"), (12, "c")]
            .iter()
            .map(|(t, req)| event(json!({"k": "x", "t": t, "req": req}), "t"))
            .collect();
        let outcomes = run(&mut p, events).await;
        assert!(
            outcomes.iter().all(|o| o.outputs.is_empty()),
            "windows fire at ticks only"
        );
        // The watermark moves at the tick, which reaches the protected window: [0, 10) fires.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fired = p.tick(Timestamp::now()).await;
        let data: Vec<&Value> = fired
            .iter()
            .flat_map(|o| &o.outputs)
            .map(|e| &e.data["n"])
            .collect();
        assert_eq!(data, [&json!(2)]);
        // Its state (prefixed inside the idempotency stage's rows) and its result (under its
        // own id) are handed over with the step.
        let state = p.state_changes();
        assert!(
            state
                .iter()
                .any(|(_, w)| matches!(w, StateWrite::Put(k, _) if k.first() == Some(&1)))
        );
        let results = p.results();
        assert_eq!(results.len(), 1);
        assert_eq!(
            (&*results[0].stage, results[0].table, results[0].row.at),
            ("idempotency/window#0", "windows", 0)
        );
        // Restarted from the state: the open window [10, 20) is still there.
        let rows = state
            .into_iter()
            .filter_map(|(_, w)| match w {
                StateWrite::Put(k, v) => Some((k, v)),
                _ => None,
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        let mut restarted = build();
        restarted
            .restore_state(|_| Ok::<_, ()>(rows.clone().into_iter().collect()))
            .unwrap();
        let later = vec![event(json!({"k": "x", "t": 25, "req": "d"}), "t")];
        run(&mut restarted, later).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let fired = restarted.tick(Timestamp::now()).await;
        let starts: Vec<&Value> = fired
            .iter()
            .flat_map(|o| &o.outputs)
            .map(|e| &e.data["window_start"])
            .collect();
        assert_eq!(starts, [&json!(10)]);
    }

    #[test]
    fn bad_configs_name_their_key() {
        let error = |stage: &str| pipeline(stage).err().unwrap_or_default();
        assert!(
            error("{type: idempotency, key: req, ttl: 1h}").contains("key: must be a JSON pointer")
        );
        assert!(error("{type: idempotency, key: /r, ttl: 0s}").contains("ttl"));
        assert!(
            error("{type: idempotency, key: /r, ttl: 1h, retry: {max_attempts: 0, backoff: 1s}}")
                .contains("retry.max_attempts")
        );
        assert!(
            error("{type: idempotency, key: /r, ttl: 1h, stages: [{type: transform, script: [$input], on_error: skip}]}")
                .contains("pipelines[0].stages[0].stages[0]: a protected stage takes no")
        );
        assert!(
            error("{type: idempotency, key: /r, ttl: 1h, stages: [{type: nope}]}")
                .contains("unknown stage type `nope`")
        );
    }
}
