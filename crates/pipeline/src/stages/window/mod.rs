//! `window`: event-time windows per key, on the engine of `colloquium-windows`. Input events
//! are consumed; fired windows come out as events
//! `{key, window_start, window_end, <aggregates>, final, update_count}` (times in epoch ms).
//!
//! - `key`: JSON pointer of the grouping key (absent: one global key, `""`); `time`: JSON
//!   pointer of the event time (epoch ms or RFC 3339; default: the event's `timestamp`).
//! - `window: tumbling` (`size`, `offset`), `sliding` (`size`, `slide`, `offset`), or
//!   `session` (`gap`).
//! - `max_out_of_orderness`, `idle_timeout` (per source, `metadata.source`), and
//!   `allowed_lateness`, with the engine's exact semantics; an event too late for every window
//!   it belongs to fails with reason `late` (dead-lettered by default, counted).
//! - `aggregates: {NAME: count | {count|sum|min|max|avg|variance|stddev|first|last: /pointer}}`
//!   over numeric fields (a non-number is skipped for that field, and counted by `count` only).
//! - A window fires as soon as an event moves the watermark past its end (or at a tick, the
//!   pipeline's `tick_interval`, when an idle source lets the watermark move). With
//!   `watermark_interval` the watermark moves only at ticks, at most once per interval.
//! - `early: {every, events}`: early firings (`early: true`, not final) before the watermark.
//! - Every firing is also kept in the stage's `windows` results table (`GET /api/windows`).
//! - `max_windows_per_key` and `max_keys` bound memory: an event that would pass either fails
//!   with reason `limit_exceeded`.
//! - Open windows and the watermark are stage state: a restart resumes them exactly.
//!
//! Here: the stage itself. Its options and building it: `config`; what a window keeps:
//! `aggregates`; a firing as an output and a kept row: `results`; the state rows: `state`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colloquium_event::{Event, Reason, Timestamp};
use colloquium_windows::{Added, Engine, Firing, Open, Watermarks, Window};
use serde_json::Value;

use crate::context::count;
use crate::stage::{Clock, Failed, Stage, StageContext, StageError};

mod aggregates;
mod config;
mod results;
mod state;

use aggregates::{Output, Sample, WindowAgg};
pub use config::{EarlyConfig, Kind, WindowConfig};
use state::{CLOCK_KEY, CLOCK_ROW, WINDOW_PREFIX, WINDOW_ROW, parse_window_key, window_key};

struct WindowStage {
    engine: Engine<WindowAgg>,
    clock: Watermarks,
    key: Option<String>,
    key_script: Option<std::sync::Arc<computo::Script>>,
    time: Option<String>,
    fields: Vec<String>,
    /// Per field, whether a quantile of it is asked for (it then keeps a sketch).
    sketched: Vec<bool>,
    /// Per field, whether its distinct values are counted.
    counted: Vec<bool>,
    outputs: Vec<Output>,
    max_windows_per_key: usize,
    max_keys: usize,
    pipeline: String,
    now: Clock,
    /// The watermark last written to state.
    clock_written: Option<Option<i64>>,
    /// Per field, the event's number and distinct hash (buffers reused across events).
    values: Vec<Option<f64>>,
    hashes: Vec<Option<u64>>,
    /// A tick's firings (a buffer reused across ticks).
    firings: Vec<Firing<WindowAgg>>,
    /// The processing-time early trigger, and when it last fired.
    early_every: Option<Duration>,
    last_early: Instant,
    /// Least time between watermark advances, and the last one.
    watermark_interval: Duration,
    last_advance: Option<Instant>,
    /// Since the last tick: each rise of the watermark and when it happened, to time a
    /// window's emission from the moment the watermark passed its end.
    rises: std::collections::VecDeque<(i64, Instant)>,
    /// A firing's values (a buffer reused across firings).
    result_values: Vec<Value>,
    counts: WindowCounts,
}

/// What the stage counts about itself, for metrics.
#[derive(Debug, Default)]
struct WindowCounts {
    late: u64,
    max_keys_exceeded: u64,
    max_windows_per_key_exceeded: u64,
    early_firings: u64,
}

impl WindowStage {
    /// The event's grouping key: borrowed from its data when it is a string there (no
    /// allocation per event), made when a script or a number gives it.
    fn key_of<'e>(&self, event: &'e Event) -> Result<Cow<'e, str>, StageError> {
        let key = self.any_key_of(event)?;
        if key.len() > super::MAX_KEY_BYTES {
            // The same check and message as every keyed stage's (an error here).
            return super::bounded_key("window", key.into_owned()).map(Cow::Owned);
        }
        Ok(key)
    }

    fn any_key_of<'e>(&self, event: &'e Event) -> Result<Cow<'e, str>, StageError> {
        let Some(pointer) = &self.key else {
            return Ok(Cow::Borrowed(""));
        };
        match event.data_pointer(pointer) {
            Some(Value::String(s)) => Ok(Cow::Borrowed(s)),
            Some(Value::Number(n)) => Ok(Cow::Owned(n.to_string())),
            Some(Value::Bool(b)) => Ok(Cow::Owned(b.to_string())),
            other => Err(StageError::BadValue(format!(
                "window key {pointer} is {}",
                other.map_or("missing", colloquium_event::json_kind)
            ))),
        }
    }

    /// The key a `key` script gives (it needs the event's data as a JSON value).
    fn script_key(
        &self,
        script: &computo::Script,
        event: &mut Event,
    ) -> Result<String, StageError> {
        let result = crate::stage::with_data(event, &self.pipeline, |data, meta| {
            script.eval(&[data, &meta()])
        })?;
        let key = match result {
            Value::String(s) => s,
            other => other.to_string(),
        };
        super::bounded_key("window", key)
    }

    fn time_of(&self, event: &Event) -> Result<i64, StageError> {
        let Some(pointer) = &self.time else {
            return Ok(i64::try_from(event.timestamp.as_millis()).unwrap_or(i64::MAX));
        };
        let bad = |what: &str| StageError::BadValue(format!("window time {pointer} is {what}"));
        match event.data_pointer(pointer) {
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad("not whole milliseconds")),
            Some(Value::String(s)) => s
                .parse::<Timestamp>()
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
                .map_err(|e| StageError::BadValue(e.to_string())),
            other => Err(bad(other.map_or("missing", colloquium_event::json_kind))),
        }
    }

    /// Advances the engine to `watermark` at `now`, emitting what fires to `out` and timing
    /// each first firing from the moment the watermark passed the window's end.
    fn fire(&mut self, watermark: i64, now: Instant, cx: &mut StageContext<'_>) {
        self.last_advance = Some(now);
        let mut firings = std::mem::take(&mut self.firings);
        self.engine.advance(watermark, &mut firings);
        for firing in firings.drain(..) {
            if !firing.early && firing.update_count == 0 {
                // The first rise of the watermark to the window's end (none: it was moved by
                // an idle source or a restore, not by an event).
                let end = firing.window.end;
                let at = self.rises.partition_point(|(w, _)| *w < end);
                if let Some((_, passed)) = self.rises.get(at) {
                    cx.observe("emission_delay", now.saturating_duration_since(*passed));
                }
            }
            self.result(firing, cx);
        }
        // The buffer is kept: an advance fires about as many windows as the last one.
        self.firings = firings;
        // Rises at or below the watermark have served.
        while self.rises.front().is_some_and(|(w, _)| *w <= watermark) {
            self.rises.pop_front();
        }
    }
}

impl Stage for WindowStage {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let scripted = match &self.key_script {
            Some(script) => match self.script_key(script, &mut event) {
                Ok(key) => Some(key),
                Err(e) => return Err(Failed::new(e, event)),
            },
            None => None,
        };
        let key = match &scripted {
            Some(key) => Ok(Cow::Borrowed(key.as_str())),
            None => self.key_of(&event),
        };
        let (key, ts) = match (key, self.time_of(&event)) {
            (Ok(key), Ok(ts)) => (key, ts),
            (Err(e), _) | (_, Err(e)) => return Err(Failed::new(e, event)),
        };
        let known = self.engine.has_key(&key);
        if !known && self.engine.open_keys() >= self.max_keys {
            let error = StageError::External {
                reason: Reason::LimitExceeded,
                message: format!("window: {} keys are open (max_keys)", self.max_keys),
            };
            self.counts.max_keys_exceeded += 1;
            return Err(Failed::new(error, event));
        }
        if self
            .engine
            .windows_of(&key)
            .is_some_and(|w| w.len() >= self.max_windows_per_key)
        {
            let error = StageError::External {
                reason: Reason::LimitExceeded,
                message: format!(
                    "window: key `{key}` has {} open windows (max_windows_per_key)",
                    self.max_windows_per_key
                ),
            };
            self.counts.max_windows_per_key_exceeded += 1;
            return Err(Failed::new(error, event));
        }
        // Per field: its number, and its hash when distinct values of it are counted (any
        // JSON value, by the hash of its text). Buffers kept across events: no allocation.
        self.values.clear();
        self.hashes.clear();
        for (f, counted) in self.fields.iter().zip(&self.counted) {
            let value = event.data_pointer(f);
            self.values.push(value.and_then(Value::as_f64));
            self.hashes
                .push(value.filter(|_| *counted).map(|v| match v {
                    Value::String(s) => colloquium_windows::distinct::hash(s.as_bytes()),
                    // Other kinds by their JSON text after a byte no UTF-8 string holds: the
                    // string "1" and the number 1 stay apart.
                    other => {
                        let text = [&[0xFF][..], other.to_string().as_bytes()].concat();
                        colloquium_windows::distinct::hash(&text)
                    }
                }));
        }
        let before = self.clock.current();
        let sample = Sample {
            ts,
            values: &self.values,
            hashes: &self.hashes,
            sketched: &self.sketched,
            outputs: &self.outputs,
        };
        let mut updates = Vec::new();
        let added = self
            .engine
            .add(&key, ts, before, &mut updates, |agg| agg.add(&sample));
        match added {
            Added::Joined(_) => {
                self.retract(cx);
                for firing in updates {
                    self.result(firing, cx);
                }
                let now = Instant::now();
                let after = self.clock.observe(&event.metadata.source, ts, now);
                if let Some(w) = after.filter(|w| before.is_none_or(|b| *w > b)) {
                    self.rises.push_back((w, now));
                    // Fire as soon as the watermark passes a window, not at the step's end
                    // (unless a watermark_interval paces it).
                    if self.watermark_interval.is_zero()
                        && self.engine.next_due().is_some_and(|due| w >= due)
                    {
                        self.fire(w, now, cx);
                    }
                }
                Ok(())
            }
            Added::Late => {
                self.counts.late += 1;
                let error = StageError::External {
                    reason: Reason::Late,
                    message: format!(
                        "event time {ts} is too late: the watermark was {}",
                        before.map_or("none".to_owned(), |w| w.to_string())
                    ),
                };
                Err(Failed::new(error, event))
            }
        }
    }

    fn on_tick(&mut self, _now: Timestamp, cx: &mut StageContext<'_>) -> Result<(), StageError> {
        let now = Instant::now();
        let due = self
            .last_advance
            .is_none_or(|last| now.duration_since(last) >= self.watermark_interval);
        // An idle source may have let the watermark move; with an interval, this is where it
        // moves at all.
        if due && let Some(watermark) = self.clock.advance(now) {
            self.fire(watermark, now, cx);
        }
        if let Some(every) = self.early_every
            && now.duration_since(self.last_early) >= every
        {
            self.last_early = now;
            let mut firings = std::mem::take(&mut self.firings);
            self.engine.fire_early(&mut firings);
            for firing in firings.drain(..) {
                self.result(firing, cx);
            }
            self.firings = firings;
        }
        Ok(())
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        // One row per window, written when it changes: an event costs the rows of the
        // windows it joined, not every window of its key.
        self.engine.take_changes(|key, window, open| {
            let row = window_key(key, window.start);
            match open {
                Some(open) => cx.put_state(row, WINDOW_ROW.encode_as(&(window.end, open))),
                None => cx.delete_state(row),
            }
        });
        let current = self.clock.current();
        if self.clock_written != Some(current) {
            let sources: Vec<(&str, i64)> = self.clock.sources().collect();
            cx.put_state(CLOCK_KEY.to_vec(), CLOCK_ROW.encode_as(&(current, sources)));
            self.clock_written = Some(current);
        }
        cx.gauge("open_keys", count(self.engine.open_keys()));
        cx.gauge("open_windows", count(self.engine.open_windows()));
        cx.total("late", self.counts.late);
        cx.total("max_keys_exceeded", self.counts.max_keys_exceeded);
        let per_key = self.counts.max_windows_per_key_exceeded;
        cx.total("max_windows_per_key_exceeded", per_key);
        cx.total("early_firings", self.counts.early_firings);
        if let Some(watermark) = self.clock.current() {
            cx.gauge("watermark_ms", u64::try_from(watermark).unwrap_or(0));
        }
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        let corrupt = |what: &str| StageError::State(format!("window: {what}"));
        let mut keys: BTreeMap<String, Vec<(Window, Open<WindowAgg>)>> = BTreeMap::new();
        for (key, value) in entries {
            match key.split_first() {
                Some((&WINDOW_PREFIX, rest)) => {
                    let (name, start) =
                        parse_window_key(rest).ok_or_else(|| corrupt("a window row's key"))?;
                    let name = std::str::from_utf8(name)
                        .map_err(|_| corrupt("a grouping key that is not UTF-8"))?;
                    let (end, open) = WINDOW_ROW.decode(&value)?;
                    let windows = keys.entry(name.to_owned()).or_default();
                    windows.push((Window { start, end }, open));
                }
                Some((1, [])) => {
                    let (current, sources) = CLOCK_ROW.decode(&value)?;
                    self.clock.restore(current, sources, Instant::now());
                    self.clock_written = Some(current);
                }
                Some((0, _)) => {
                    return Err(corrupt(
                        "state of an earlier build (one row per key); this build keeps one row per window",
                    ));
                }
                _ => return Err(corrupt("a row of no known kind")),
            }
        }
        for (name, windows) in keys {
            self.engine.restore(name, windows);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use serde_json::json;

    use crate::stages::test_event as event;

    fn pipeline(stage: &str) -> Result<Pipeline, String> {
        crate::stages::one_stage::<WindowConfig>(stage)
    }

    /// The data of what processing `data` emits (windows fire as the watermark passes them).
    fn feed(p: &mut Pipeline, data: Value) -> Vec<Value> {
        let outcome = p.process(&event(data));
        outcome
            .outputs
            .into_iter()
            .map(|e| Value::Object(e.data))
            .collect()
    }

    async fn tick(p: &mut Pipeline) -> Vec<Value> {
        let outcomes = p.tick(Timestamp::now()).await;
        outcomes
            .into_iter()
            .flat_map(|o| o.outputs)
            .map(|e| Value::Object(e.data))
            .collect()
    }

    const TUMBLING: &str = "{type: window, window: tumbling, size: 10ms, key: /k, time: /t, aggregates: {n: count, total: {sum: /v}, mean: {avg: /v}, sd: {stddev: /v}, lo: {min: /v}, hi: {max: /v}, first: {first: /v}, last: {last: /v}, median: {p50: /v}, kinds: {distinct: /v}, recent: {ema: /v, half_life: 2ms}}}";

    #[tokio::test]
    async fn tumbling_windows_fire_on_the_watermark_with_every_aggregate() {
        let mut p = pipeline(TUMBLING).unwrap();
        for (t, v) in [(1, 10.0), (3, 20.0), (5, 30.0), (7, 40.0), (9, 50.0)] {
            let outcome = p.process(&event(json!({"k": "a", "t": t, "v": v})));
            assert!(outcome.outputs.is_empty() && outcome.failures.is_empty());
        }
        assert!(tick(&mut p).await.is_empty(), "the watermark is at 9");
        // The event that moves the watermark to 10 fires [0, 10) at once.
        let fired = feed(&mut p, json!({"k": "b", "t": 10, "v": 1}));
        assert_eq!(fired.len(), 1);
        assert!(tick(&mut p).await.is_empty());
        let w = &fired[0];
        assert_eq!(
            (
                w["key"].as_str(),
                w["window_start"].as_i64(),
                w["window_end"].as_i64()
            ),
            (Some("a"), Some(0), Some(10))
        );
        assert_eq!(
            (w["n"].as_u64(), w["total"].as_f64(), w["mean"].as_f64()),
            (Some(5), Some(150.0), Some(30.0))
        );
        assert!((w["sd"].as_f64().unwrap() - 15.811_388).abs() < 1e-6);
        assert_eq!(
            (w["lo"].as_f64(), w["hi"].as_f64()),
            (Some(10.0), Some(50.0))
        );
        let median = w["median"].as_f64().unwrap();
        assert!((median - 30.0).abs() <= 0.3, "within 1 %: {median}");
        assert_eq!(w["kinds"], 5);
        // Times 1..9 step 2, half-life 2 ms: each value weighs twice the one before.
        let recent = w["recent"].as_f64().unwrap();
        assert!((recent - 1290.0 / 31.0).abs() < 1e-9, "{recent}");

        assert_eq!(
            (w["first"].as_f64(), w["last"].as_f64()),
            (Some(10.0), Some(50.0))
        );
        assert_eq!(
            (w["final"].as_bool(), w["update_count"].as_u64()),
            (Some(true), Some(0))
        );
        // Too late for [0, 10): dead-lettered with reason late.
        let late = p.process(&event(json!({"k": "a", "t": 4, "v": 1})));
        assert_eq!(late.failures[0].reason, Reason::Late);
    }

    #[tokio::test]
    async fn open_windows_and_the_watermark_survive_a_restart() {
        let mut p = pipeline(TUMBLING).unwrap();
        let mut fired = Vec::new();
        for t in [1, 2, 12] {
            fired.extend(feed(&mut p, json!({"k": "a", "t": t, "v": t})));
        }
        assert_eq!(fired[0]["n"], 2);
        // [10, 20) is open with one event; the watermark is at 12.
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (_, write) in p.state_changes() {
            match write {
                crate::StateWrite::Put(k, v) => drop(rows.insert(k, v)),
                crate::StateWrite::Delete(k) => drop(rows.remove(&k)),
                crate::StateWrite::DeleteBelow(_) | crate::StateWrite::DeleteRange(..) => {}
            }
        }
        let mut restarted = pipeline(TUMBLING).unwrap();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = rows.into_iter().collect();
        restarted
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(entries.clone()))
            .unwrap();
        let late = restarted.process(&event(json!({"k": "a", "t": 3, "v": 3})));
        assert_eq!(
            late.failures[0].reason,
            Reason::Late,
            "the watermark came back"
        );
        let mut fired = feed(&mut restarted, json!({"k": "a", "t": 15, "v": 15}));
        fired.extend(feed(&mut restarted, json!({"k": "a", "t": 21, "v": 21})));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0]["window_start"].as_i64(), fired[0]["n"].as_u64()),
            (Some(10), Some(2))
        );
        assert_eq!(fired[0]["total"], 27.0);
    }

    #[tokio::test]
    async fn limits_and_bad_input_fail_with_their_reasons() {
        let mut p = pipeline("{type: window, window: session, gap: 5ms, key: /k, time: /t, max_keys: 1, aggregates: {n: count}}").unwrap();
        assert!(
            p.process(&event(json!({"k": "a", "t": 1})))
                .failures
                .is_empty()
        );
        let second = p.process(&event(json!({"k": "b", "t": 2})));
        assert_eq!(second.failures[0].reason, Reason::LimitExceeded);
        let huge = p.process(&event(json!({"k": "k".repeat(1_025), "t": 1})));
        assert_eq!(huge.failures[0].reason, Reason::BadValue);
        let no_time = p.process(&event(json!({"k": "a"})));
        assert_eq!(no_time.failures[0].reason, Reason::BadValue);
        let rfc = p.process(&event(json!({"k": "a", "t": "1970-01-01T00:00:00.003Z"})));
        assert!(rfc.failures.is_empty(), "{:?}", rfc.failures);
    }

    #[tokio::test]
    async fn an_idle_source_stops_holding_the_watermark_back() {
        let mut p = pipeline("{type: window, window: tumbling, size: 10ms, time: /t, idle_timeout: 50ms, aggregates: {n: count}}").unwrap();
        let from = |source: &str, t: i64| {
            let mut e = event(json!({"t": t}));
            e.metadata.source = source.to_owned();
            e
        };
        p.process(&from("fast", 1));
        p.process(&from("slow", 2));
        p.process(&from("fast", 25));
        // slow is at 2: [0, 10) waits for it.
        assert!(tick(&mut p).await.is_empty());
        tokio::time::sleep(Duration::from_millis(80)).await;
        // slow has been quiet past idle_timeout: fast's 25 rules, and [0, 10) fires.
        let fired = tick(&mut p).await;
        let starts: Vec<i64> = fired
            .iter()
            .map(|w| w["window_start"].as_i64().unwrap())
            .collect();
        assert_eq!(starts, [0]);
        assert_eq!(fired[0]["n"], 2);
    }

    #[tokio::test]
    async fn early_firings_results_to_keep_and_metrics() {
        let mut p = pipeline("{type: window, window: tumbling, size: 10ms, key: /k, time: /t, early: {events: 2}, aggregates: {n: count}}").unwrap();
        let mut early = Vec::new();
        for t in [1, 2, 3] {
            early.extend(p.process(&event(json!({"k": "a", "t": t}))).outputs);
        }
        assert_eq!(early.len(), 1, "the second event fires [0, 10) early");
        let data = &early[0].data;
        assert_eq!(
            (data["n"].as_u64(), data["early"].as_bool()),
            (Some(2), Some(true))
        );
        assert_eq!(data["final"], false);
        let fired = feed(&mut p, json!({"k": "a", "t": 12}));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0]["n"].as_u64(), fired[0]["early"].as_bool()),
            (Some(3), Some(false))
        );
        // Both firings of [0, 10) are kept in the `windows` results table, in order.
        let kept = p.results();
        let starts: Vec<(&str, i64, bool)> = kept
            .iter()
            .map(|k| {
                let early = k.value.as_deref().map(|json| {
                    let v: Value = serde_json::from_slice(json).unwrap();
                    v["early"].as_bool().unwrap()
                });
                (k.table, k.row.at, early.unwrap_or(false))
            })
            .collect();
        assert_eq!(starts, [("windows", 0, true), ("windows", 0, false)]);
        assert!(p.results().is_empty(), "handed over once");
        let metrics = crate::stages::metrics_of(&mut p);
        assert_eq!(metrics["open_keys"], 1);
        assert_eq!(metrics["open_windows"], 1);
        assert_eq!(metrics["early_firings"], 1);
        assert_eq!(metrics["watermark_ms"], 12);
        let error = pipeline(
            "{type: window, window: tumbling, size: 10ms, early: {}, aggregates: {n: count}}",
        )
        .err();
        assert!(error.unwrap_or_default().contains("stages[0].early"));
    }

    #[tokio::test]
    async fn the_watermark_moves_at_most_once_per_watermark_interval() {
        let mut p = pipeline("{type: window, window: tumbling, size: 10ms, time: /t, watermark_interval: 1h, aggregates: {n: count}}").unwrap();
        p.process(&event(json!({"t": 1})));
        assert!(
            tick(&mut p).await.is_empty(),
            "the first advance: nothing is due"
        );
        p.process(&event(json!({"t": 25})));
        assert!(
            tick(&mut p).await.is_empty(),
            "not an hour since the last advance"
        );
    }

    #[test]
    fn bad_window_configs_name_their_key() {
        let error = |stage: &str| pipeline(stage).err().unwrap_or_default();
        assert!(
            error("{type: window, window: tumbling, aggregates: {n: count}}")
                .contains("stages[0].size")
        );
        assert!(
            error("{type: window, window: sliding, size: 1s, aggregates: {n: count}}")
                .contains("stages[0].slide")
        );
        assert!(
            error("{type: window, window: session, aggregates: {n: count}}")
                .contains("stages[0].gap")
        );
        assert!(error("{type: window, window: tumbling, size: 1s}").contains("aggregates"));
        assert!(
            error("{type: window, window: tumbling, size: 1s, aggregates: {x: {median: /v}}}")
                .contains("aggregates.x")
        );
        assert!(
            error("{type: window, window: tumbling, size: 1s, key: k, aggregates: {n: count}}")
                .contains("stages[0].key")
        );
        assert!(
            error("{type: window, window: hopping, size: 1s, aggregates: {n: count}}")
                .contains("window")
        );
    }
}
