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
//! - The watermark moves, and windows fire, on every tick (the pipeline's `tick_interval`, and
//!   once per step after its events).
//! - `max_windows_per_key` and `max_keys` bound memory: an event that would pass either fails
//!   with reason `limit_exceeded`.
//! - Open windows and the watermark are stage state: a restart resumes them exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colloquium_config::ConfigError;
use colloquium_event::{Event, Metadata, Reason, Timestamp};
use colloquium_storage::StateWrite;
use colloquium_windows::{
    Added, Distinct, Ema, Engine, Firing, Merge, Open, Quantiles, Stats, Watermarks, Window,
    WindowSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::stage::{BuildContext, BuiltStage, Clock, Failed, Stage, StageConfig, StageError};
use crate::state::Codec;

/// `window:` — the window kind.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `size`, `offset`.
    Tumbling,
    /// `size`, `slide`, `offset`.
    Sliding,
    /// `gap`.
    Session,
}

/// `{type: window, window: tumbling, size: 5s, …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The window kind.
    pub window: Kind,
    /// JSON pointer of the grouping key.
    #[serde(default)]
    pub key: Option<String>,
    /// Or a script (name or inline) whose result is the key (e.g. the topic:
    /// `[get, [$inputs], /1/topic]`).
    #[serde(default)]
    pub key_script: Option<Value>,
    /// JSON pointer of the event time.
    #[serde(default)]
    pub time: Option<String>,
    /// Window length (tumbling, sliding).
    #[serde(default, with = "humantime_serde")]
    pub size: Option<Duration>,
    /// Distance between window starts (sliding).
    #[serde(default, with = "humantime_serde")]
    pub slide: Option<Duration>,
    /// Shift of every boundary (tumbling, sliding).
    #[serde(default, with = "humantime_serde")]
    pub offset: Option<Duration>,
    /// Longest quiet time inside a session.
    #[serde(default, with = "humantime_serde")]
    pub gap: Option<Duration>,
    /// How far behind the latest event time the watermark stays.
    #[serde(default, with = "humantime_serde")]
    pub max_out_of_orderness: Option<Duration>,
    /// A source quiet for this long stops holding the watermark back.
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// How long after a window's end late events still update it.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
    /// Output name → aggregate.
    #[serde(default)]
    pub aggregates: BTreeMap<String, Value>,
    /// Most open windows one key may have.
    #[serde(default = "default_max_windows")]
    pub max_windows_per_key: usize,
    /// Most keys with open windows.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_windows() -> usize {
    1_000
}

fn default_max_keys() -> usize {
    100_000
}

/// One output's function.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    /// `pNN`: the 0.NN quantile (`p50`, `p95`, `p999`), from a DDSketch (1 % relative error).
    Quantile(f64),
    /// Distinct values of any JSON kind: exact up to 64, then HyperLogLog (≈ 2.3 %).
    Distinct,
    /// `{ema: /pointer, half_life: 10s}`: an event-time exponential moving average.
    Ema,
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Variance,
    Stddev,
    First,
    Last,
}

impl Function {
    fn named(name: &str) -> Option<Function> {
        Some(match name {
            "count" => Function::Count,
            "sum" => Function::Sum,
            "min" => Function::Min,
            "max" => Function::Max,
            "avg" => Function::Avg,
            "variance" => Function::Variance,
            "stddev" => Function::Stddev,
            "first" => Function::First,
            "last" => Function::Last,
            "distinct" => Function::Distinct,
            p if p.len() > 1
                && p.starts_with('p')
                && p[1..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                let digits = &p[1..];
                let n: f64 = digits.parse().ok()?;
                let exponent = i32::try_from(digits.len()).ok()?;
                Function::Quantile(n / 10f64.powi(exponent))
            }
            _ => return None,
        })
    }
}

/// One output: its name, function, and the field it reads (an index into `fields`).
#[derive(Debug, Clone)]
struct Output {
    name: String,
    function: Function,
    field: Option<usize>,
    /// For `ema`: ms for a weight to halve.
    half_life: f64,
}

/// What a window keeps: its event count, what it keeps of each field read, and its EMAs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowAgg {
    count: u64,
    fields: Vec<FieldAgg>,
    /// Per output, its moving average when it is an `ema` (empty when none is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    emas: Vec<Option<Ema>>,
}

/// One field's statistics, and its sketches when a quantile or a distinct count of it is
/// asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct FieldAgg {
    stats: Stats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sketch: Option<Quantiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    distinct: Option<Distinct>,
}

/// What one event brings to a window: per field, its number and (when counted) the hash of
/// its value.
struct Sample<'a> {
    ts: i64,
    values: &'a [Option<f64>],
    hashes: &'a [Option<u64>],
    sketched: &'a [bool],
    outputs: &'a [Output],
}

impl WindowAgg {
    fn add(&mut self, sample: &Sample<'_>) {
        self.count += 1;
        if self.fields.len() < sample.values.len() {
            self.fields
                .resize_with(sample.values.len(), FieldAgg::default);
        }
        for (i, field) in self.fields.iter_mut().enumerate() {
            if let Some(hash) = sample.hashes.get(i).copied().flatten() {
                field
                    .distinct
                    .get_or_insert_with(Distinct::default)
                    .push(hash);
            }
            let Some(x) = sample.values.get(i).copied().flatten() else {
                continue;
            };
            field.stats.push(sample.ts, x);
            if sample.sketched.get(i).copied().unwrap_or(false) {
                field.sketch.get_or_insert_with(Quantiles::default).push(x);
            }
        }
        for (n, output) in sample.outputs.iter().enumerate() {
            if let (Function::Ema, Some(f)) = (output.function, output.field)
                && let Some(Some(x)) = sample.values.get(f)
            {
                if self.emas.len() < sample.outputs.len() {
                    self.emas.resize(sample.outputs.len(), None);
                }
                self.emas[n]
                    .get_or_insert_with(|| Ema::new(output.half_life))
                    .push(sample.ts, *x);
            }
        }
    }
}

impl Merge for WindowAgg {
    fn merge(&mut self, other: &Self) {
        self.count += other.count;
        if self.fields.len() < other.fields.len() {
            self.fields
                .resize_with(other.fields.len(), FieldAgg::default);
        }
        for (mine, theirs) in self.fields.iter_mut().zip(&other.fields) {
            mine.stats.merge(&theirs.stats);
            if let Some(theirs) = &theirs.sketch {
                mine.sketch
                    .get_or_insert_with(Quantiles::default)
                    .merge(theirs);
            }
            if let Some(theirs) = &theirs.distinct {
                mine.distinct
                    .get_or_insert_with(Distinct::default)
                    .merge(theirs);
            }
        }
        if self.emas.len() < other.emas.len() {
            self.emas.resize(other.emas.len(), None);
        }
        for (mine, theirs) in self.emas.iter_mut().zip(&other.emas) {
            if let Some(theirs) = theirs {
                match mine {
                    Some(mine) => mine.merge(theirs),
                    None => *mine = Some(*theirs),
                }
            }
        }
    }
}

/// Open windows of one key, as stored.
const WINDOWS_ROW: Codec<Vec<(Window, Open<WindowAgg>)>> = Codec::new("window key", 2);
/// The watermark as stored: the current one and each source's largest event time.
type ClockRow = (Option<i64>, Vec<(String, i64)>);
const CLOCK_ROW: Codec<ClockRow> = Codec::new("window watermark", 1);
/// State keys: `0x00` + a grouping key for its windows; `0x01` for the watermark.
const KEY_PREFIX: u8 = 0;
const CLOCK_KEY: [u8; 1] = [1];

fn millis(d: Option<Duration>) -> i64 {
    d.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl StageConfig for WindowConfig {
    const KIND: &'static str = "window";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let need = |value: Option<Duration>, name: &str| -> Result<i64, ConfigError> {
            match value {
                Some(d) if !d.is_zero() => Ok(millis(Some(d))),
                _ => Err(ConfigError::new(
                    cx.key(name),
                    format!("a {:?} window needs `{name}` (more than 0)", self.window)
                        .to_lowercase(),
                )),
            }
        };
        let spec = match self.window {
            Kind::Tumbling => WindowSpec::Tumbling {
                size: need(self.size, "size")?,
                offset: millis(self.offset),
            },
            Kind::Sliding => WindowSpec::Sliding {
                size: need(self.size, "size")?,
                slide: need(self.slide, "slide")?,
                offset: millis(self.offset),
            },
            Kind::Session => WindowSpec::Session {
                gap: need(self.gap, "gap")?,
            },
        };
        for (pointer, name) in [(&self.key, "key"), (&self.time, "time")] {
            if pointer.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return Err(ConfigError::new(
                    cx.key(name),
                    "must be a JSON pointer, such as /sensor",
                ));
            }
        }
        let key_script = match (&self.key, &self.key_script) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    cx.at.clone(),
                    "`key` or `key_script`, not both",
                ));
            }
            (_, Some(script)) => Some(cx.scripts.resolve(script, &cx.key("key_script"))?),
            _ => None,
        };
        if self.aggregates.is_empty() {
            return Err(ConfigError::new(
                cx.key("aggregates"),
                "name at least one, e.g. {n: count, mean: {avg: /value}}",
            ));
        }
        let mut fields: Vec<String> = Vec::new();
        let mut outputs = Vec::new();
        for (name, spec) in &self.aggregates {
            let at = cx.key(&format!("aggregates.{name}"));
            let bad = || {
                ConfigError::new(
                    at.clone(),
                    "expected `count` or {FUNCTION: /pointer} with FUNCTION one of count, sum, min, max, avg, variance, stddev, first, last, distinct, or a quantile pNN (p50, p95, p999)",
                )
            };
            let mut half_life = 0.0;
            let (function, pointer) = match spec {
                Value::String(s) if s == "count" => (Function::Count, None),
                Value::Object(map) if map.contains_key("ema") => {
                    let pointer = map["ema"]
                        .as_str()
                        .filter(|p| p.starts_with('/'))
                        .ok_or_else(bad)?;
                    let life = map
                        .get("half_life")
                        .and_then(Value::as_str)
                        .and_then(|t| humantime::parse_duration(t).ok());
                    let Some(life) = life.filter(|l| !l.is_zero() && map.len() == 2) else {
                        return Err(ConfigError::new(
                            at.clone(),
                            "an ema needs `half_life` (e.g. {ema: /v, half_life: 10s}) and nothing else",
                        ));
                    };
                    half_life = life.as_millis() as f64;
                    (Function::Ema, Some(pointer.to_owned()))
                }
                Value::Object(map) if map.len() == 1 => {
                    let Some((function, pointer)) = map.iter().next() else {
                        return Err(bad());
                    };
                    let function = Function::named(function).ok_or_else(bad)?;
                    let pointer = pointer
                        .as_str()
                        .filter(|p| p.starts_with('/'))
                        .ok_or_else(bad)?;
                    (function, Some(pointer.to_owned()))
                }
                _ => return Err(bad()),
            };
            let field = pointer.map(|p| match fields.iter().position(|f| *f == p) {
                Some(i) => i,
                None => {
                    fields.push(p);
                    fields.len() - 1
                }
            });
            outputs.push(Output {
                name: name.clone(),
                function,
                field,
                half_life,
            });
        }
        let mut sketched = vec![false; fields.len()];
        let mut counted = vec![false; fields.len()];
        for output in &outputs {
            match (output.function, output.field) {
                (Function::Quantile(_), Some(f)) => sketched[f] = true,
                (Function::Distinct, Some(f)) => counted[f] = true,
                _ => {}
            }
        }
        Ok(BuiltStage::sync(WindowStage {
            sketched,
            counted,
            engine: Engine::new(spec, millis(self.allowed_lateness)),
            clock: Watermarks::new(
                self.max_out_of_orderness.unwrap_or_default(),
                self.idle_timeout,
            ),
            key: self.key,
            key_script,
            time: self.time,
            fields,
            outputs,
            max_windows_per_key: self.max_windows_per_key.max(1),
            max_keys: self.max_keys.max(1),
            pipeline: cx.pipeline.to_string(),
            now: cx.clock,
            clock_written: None,
            values: Vec::new(),
            hashes: Vec::new(),
            firings: Vec::new(),
        }))
    }
}

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
}

impl WindowStage {
    fn key_of(&self, event: &mut Event) -> Result<String, StageError> {
        if let Some(script) = &self.key_script {
            let result = crate::stage::with_data(event, &self.pipeline, |data, meta| {
                script.eval(&[data, &meta()])
            })?;
            return Ok(match result {
                Value::String(s) => s,
                other => other.to_string(),
            });
        }
        let Some(pointer) = &self.key else {
            return Ok(String::new());
        };
        match event.data_pointer(pointer) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            other => Err(StageError::BadValue(format!(
                "window key {pointer} is {}",
                other.map_or("missing", colloquium_event::json_kind)
            ))),
        }
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

    fn result(&self, firing: Firing<WindowAgg>) -> Event {
        let mut data = Map::new();
        data.insert("key".into(), Value::String(firing.key));
        data.insert("window_start".into(), Value::from(firing.window.start));
        data.insert("window_end".into(), Value::from(firing.window.end));
        let agg = &firing.agg;
        for (index, output) in self.outputs.iter().enumerate() {
            let field = output.field.and_then(|f| agg.fields.get(f));
            let stats = field.map(|f| &f.stats);
            let value = match (output.function, stats) {
                (Function::Count, None) => Value::from(agg.count),
                (Function::Count, Some(s)) => Value::from(s.count()),
                (Function::Ema, _) => {
                    let ema = agg.emas.get(index).and_then(Option::as_ref);
                    number(ema.and_then(Ema::value))
                }
                (Function::Distinct, _) => {
                    let distinct = field.and_then(|f| f.distinct.as_ref());
                    Value::from(distinct.map_or(0, Distinct::count))
                }
                (Function::Quantile(q), _) => {
                    let sketch = field.and_then(|f| f.sketch.as_ref());
                    number(sketch.and_then(|s| s.quantile(q)))
                }
                (_, None) => Value::Null,
                (Function::Sum, Some(s)) => number(Some(s.sum)),
                (Function::Min, Some(s)) => number(s.min),
                (Function::Max, Some(s)) => number(s.max),
                (Function::Avg, Some(s)) => number(s.avg()),
                (Function::Variance, Some(s)) => number(s.moments.variance()),
                (Function::Stddev, Some(s)) => number(s.moments.stddev()),
                (Function::First, Some(s)) => number(s.first.map(|(_, x)| x)),
                (Function::Last, Some(s)) => number(s.last.map(|(_, x)| x)),
            };
            data.insert(output.name.clone(), value);
        }
        data.insert("final".into(), Value::Bool(firing.last));
        data.insert("update_count".into(), Value::from(firing.update_count));
        let now = (self.now)();
        Event::at(now, data, Metadata::new("window", self.pipeline.clone()))
    }
}

fn number(x: Option<f64>) -> Value {
    x.and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

impl Stage for WindowStage {
    fn process(&mut self, mut event: Event, out: &mut Vec<Event>) -> Result<(), Box<Failed>> {
        let (key, ts) = match (self.key_of(&mut event), self.time_of(&event)) {
            (Ok(key), Ok(ts)) => (key, ts),
            (Err(e), _) | (_, Err(e)) => return Err(Failed::new(e, event)),
        };
        let known = self.engine.has_key(&key);
        if !known && self.engine.open_keys() >= self.max_keys {
            let error = StageError::External {
                reason: Reason::LimitExceeded,
                message: format!("window: {} keys are open (max_keys)", self.max_keys),
            };
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
                out.extend(updates.into_iter().map(|f| self.result(f)));
                self.clock
                    .observe(&event.metadata.source, ts, Instant::now());
                Ok(())
            }
            Added::Late => {
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

    fn on_tick(&mut self, _now: Timestamp, out: &mut Vec<Event>) -> Result<(), StageError> {
        if let Some(watermark) = self.clock.advance(Instant::now()) {
            let mut firings = std::mem::take(&mut self.firings);
            self.engine.advance(watermark, &mut firings);
            out.reserve(firings.len());
            out.extend(firings.drain(..).map(|f| self.result(f)));
            // The buffer is kept: a tick fires about as many windows as the last one.
            self.firings = firings;
        }
        Ok(())
    }

    fn state_changes(&mut self, changes: &mut Vec<StateWrite>) {
        for key in self.engine.take_changed() {
            let row_key = [&[KEY_PREFIX][..], key.as_bytes()].concat();
            match self.engine.windows_of(&key) {
                Some(windows) => {
                    changes.push(StateWrite::Put(row_key, WINDOWS_ROW.encode_as(&windows)));
                }
                None => changes.push(StateWrite::Delete(row_key)),
            }
        }
        let current = self.clock.current();
        if self.clock_written != Some(current) {
            let sources: Vec<(&str, i64)> = self.clock.sources().collect();
            changes.push(StateWrite::Put(
                CLOCK_KEY.to_vec(),
                CLOCK_ROW.encode_as(&(current, sources)),
            ));
            self.clock_written = Some(current);
        }
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        for (key, value) in entries {
            match key.split_first() {
                Some((&KEY_PREFIX, name)) => {
                    let name = String::from_utf8(name.to_vec())
                        .map_err(|_| StageError::State("window key: not UTF-8".to_owned()))?;
                    self.engine.restore(name, WINDOWS_ROW.decode(&value)?);
                }
                Some((1, [])) => {
                    let (current, sources) = CLOCK_ROW.decode(&value)?;
                    self.clock.restore(current, sources, Instant::now());
                    self.clock_written = Some(current);
                }
                _ => {
                    return Err(StageError::State(
                        "window: a row of no known kind".to_owned(),
                    ));
                }
            }
        }
        // What was restored is already stored: nothing to write back.
        self.engine.take_changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::registry::Registry;
    use serde_json::json;

    fn pipeline(stage: &str) -> Result<Pipeline, String> {
        let registry = Registry::default().stage::<WindowConfig>();
        crate::stages::test_pipeline(&registry, "", &format!("[{stage}]"))
    }

    fn event(data: Value) -> Event {
        Event::at(
            Timestamp::now(),
            data.as_object().cloned().unwrap(),
            Metadata::new("http", "default"),
        )
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
        p.process(&event(json!({"k": "b", "t": 10, "v": 1})));
        let fired = tick(&mut p).await;
        assert_eq!(fired.len(), 1);
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
        for t in [1, 2, 12] {
            p.process(&event(json!({"k": "a", "t": t, "v": t})));
        }
        let fired = tick(&mut p).await;
        assert_eq!(fired[0]["n"], 2);
        // [10, 20) is open with one event; the watermark is at 12.
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (_, write) in p.state_changes() {
            match write {
                StateWrite::Put(k, v) => drop(rows.insert(k, v)),
                StateWrite::Delete(k) => drop(rows.remove(&k)),
                StateWrite::DeleteBelow(_) => {}
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
        restarted.process(&event(json!({"k": "a", "t": 15, "v": 15})));
        restarted.process(&event(json!({"k": "a", "t": 21, "v": 21})));
        let fired = tick(&mut restarted).await;
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
