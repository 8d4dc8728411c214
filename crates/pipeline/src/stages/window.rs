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
//! - Every firing is also handed over for the `windows` column family (`GET /api/windows`).
//! - `max_windows_per_key` and `max_keys` bound memory: an event that would pass either fails
//!   with reason `limit_exceeded`.
//! - Open windows and the watermark are stage state: a restart resumes them exactly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colloquium_config::ConfigError;
use colloquium_event::{Event, Metadata, Reason, Timestamp};
use colloquium_storage::{StateWrite, WindowWrite};
use colloquium_windows::{
    Added, Distinct, Ema, Engine, Firing, Merge, Open, Quantiles, Stats, Watermarks, Window,
    WindowSpec,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::stage::{
    BuildContext, BuiltStage, Clock, Failed, Stage, StageConfig, StageError, StageMetric,
};
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
    /// Early firings before the watermark passes a window's end.
    #[serde(default)]
    pub early: Option<EarlyConfig>,
    /// Least processing time between two watermark advances (default: every tick).
    #[serde(default, with = "humantime_serde")]
    pub watermark_interval: Option<Duration>,
}

/// `early: {every: 1s, events: 100}` — either or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyConfig {
    /// Fire every open window that took events, this often (processing time).
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Fire a window each time it has taken this many events since its last firing.
    #[serde(default)]
    pub events: Option<u32>,
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
    emas: Vec<Option<Ema>>,
}

/// One field's statistics, and its sketches when a quantile or a distinct count of it is
/// asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct FieldAgg {
    stats: Stats,
    sketch: Option<Quantiles>,
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

/// Lengthens `v` to `len` with defaults, taking exactly that room: a growing Vec takes room for
/// 4 at least, ~900 bytes a window for the per-field statistics.
fn grow_exact<T: Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.reserve_exact(len - v.len());
        v.resize_with(len, T::default);
    }
}

impl WindowAgg {
    fn add(&mut self, sample: &Sample<'_>) {
        self.count += 1;
        grow_exact(&mut self.fields, sample.values.len());
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
                grow_exact(&mut self.emas, sample.outputs.len());
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
        grow_exact(&mut self.fields, other.fields.len());
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
        grow_exact(&mut self.emas, other.emas.len());
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

/// One open window, as stored: its end and what it holds (binary: written per event).
const WINDOW_ROW: Codec<(i64, Open<WindowAgg>)> = Codec::binary("window", 3);
/// The watermark as stored: the current one and each source's largest event time.
type ClockRow = (Option<i64>, Vec<(String, i64)>);
const CLOCK_ROW: Codec<ClockRow> = Codec::new("window watermark", 1);
/// State keys: `0x02` + key length (u32 BE) + grouping key + window start (i64 BE, sign bit
/// flipped) for a window; `0x01` for the watermark. `0x00` rows (a whole key's windows in one
/// row, rewritten on every change) are an earlier layout.
const WINDOW_PREFIX: u8 = 2;
const CLOCK_KEY: [u8; 1] = [1];

fn window_key(key: &str, start: i64) -> Vec<u8> {
    let len = u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes();
    let start = ((start as u64) ^ (1 << 63)).to_be_bytes();
    [&[WINDOW_PREFIX][..], &len, key.as_bytes(), &start].concat()
}

/// The grouping key and window start of a window row's key (after its prefix byte).
fn parse_window_key(rest: &[u8]) -> Option<(&[u8], i64)> {
    let len = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    let key = rest.get(4..4 + len)?;
    let start: [u8; 8] = rest.get(4 + len..)?.try_into().ok()?;
    Some((key, (u64::from_be_bytes(start) ^ (1 << 63)) as i64))
}

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
        let mut engine = Engine::new(spec, millis(self.allowed_lateness));
        let mut early_every = None;
        if let Some(early) = &self.early {
            match (early.every, early.events) {
                (None, None) | (Some(Duration::ZERO), _) | (_, Some(0)) => {
                    return Err(ConfigError::new(
                        cx.key("early"),
                        "name `every` (a duration above 0) or `events` (above 0), or both",
                    ));
                }
                (every, events) => {
                    early_every = every;
                    if let Some(n) = events {
                        engine = engine.fire_every(n);
                    }
                }
            }
        }
        Ok(BuiltStage::sync(WindowStage {
            sketched,
            counted,
            engine,
            early_every,
            last_early: Instant::now(),
            watermark_interval: self.watermark_interval.unwrap_or_default(),
            last_advance: None,
            results: Vec::new(),
            rises: std::collections::VecDeque::new(),
            delays: Vec::new(),
            counts: WindowCounts::default(),
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
    /// The processing-time early trigger, and when it last fired.
    early_every: Option<Duration>,
    last_early: Instant,
    /// Least time between watermark advances, and the last one.
    watermark_interval: Duration,
    last_advance: Option<Instant>,
    /// Results (and retractions) for the `windows` column family, since the last hand-over.
    results: Vec<WindowWrite>,
    /// Since the last tick: each rise of the watermark and when it happened, to time a
    /// window's emission from the moment the watermark passed its end.
    rises: std::collections::VecDeque<(i64, Instant)>,
    /// Emission delays measured since the last hand-over.
    delays: Vec<Duration>,
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
    fn key_of(&self, event: &mut Event) -> Result<String, StageError> {
        super::bounded_key("window", self.any_key_of(event)?)
    }

    fn any_key_of(&self, event: &mut Event) -> Result<String, StageError> {
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

    fn result(&mut self, firing: Firing<WindowAgg>) -> Event {
        self.counts.early_firings += u64::from(firing.early);
        let (key, start) = (firing.key.clone(), firing.window.start);
        let event = self.result_event(firing);
        // Kept for `GET /api/windows`: a later firing of the window overwrites it.
        if let Ok(json) = serde_json::to_vec(&event.data) {
            self.results.push(WindowWrite::Put { key, start, json });
        }
        event
    }

    /// Advances the engine to `watermark` at `now`, emitting what fires to `out` and timing
    /// each first firing from the moment the watermark passed the window's end.
    fn fire(&mut self, watermark: i64, now: Instant, out: &mut Vec<Event>) {
        self.last_advance = Some(now);
        let mut firings = std::mem::take(&mut self.firings);
        self.engine.advance(watermark, &mut firings);
        out.reserve(firings.len());
        for firing in firings.drain(..) {
            if !firing.early && firing.update_count == 0 {
                // The first rise of the watermark to the window's end (none: it was moved by
                // an idle source or a restore, not by an event).
                let end = firing.window.end;
                let at = self.rises.partition_point(|(w, _)| *w < end);
                if let Some((_, passed)) = self.rises.get(at) {
                    self.delays.push(now.saturating_duration_since(*passed));
                }
            }
            let event = self.result(firing);
            out.push(event);
        }
        // The buffer is kept: an advance fires about as many windows as the last one.
        self.firings = firings;
        // Rises at or below the watermark have served.
        while self.rises.front().is_some_and(|(w, _)| *w <= watermark) {
            self.rises.pop_front();
        }
    }

    /// Sessions merged away are no more: their stored results go.
    fn retract(&mut self) {
        for (key, window) in self.engine.take_retracted() {
            let start = window.start;
            self.results.push(WindowWrite::Delete { key, start });
        }
    }

    fn result_event(&self, firing: Firing<WindowAgg>) -> Event {
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
        data.insert("early".into(), Value::Bool(firing.early));
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
                self.retract();
                out.extend(updates.into_iter().map(|f| self.result(f)));
                let now = Instant::now();
                let after = self.clock.observe(&event.metadata.source, ts, now);
                if let Some(w) = after.filter(|w| before.is_none_or(|b| *w > b)) {
                    self.rises.push_back((w, now));
                    // Fire as soon as the watermark passes a window, not at the step's end
                    // (unless a watermark_interval paces it).
                    if self.watermark_interval.is_zero()
                        && self.engine.next_due().is_some_and(|due| w >= due)
                    {
                        self.fire(w, now, out);
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

    fn on_tick(&mut self, _now: Timestamp, out: &mut Vec<Event>) -> Result<(), StageError> {
        let now = Instant::now();
        let due = self
            .last_advance
            .is_none_or(|last| now.duration_since(last) >= self.watermark_interval);
        // An idle source may have let the watermark move; with an interval, this is where it
        // moves at all.
        if due && let Some(watermark) = self.clock.advance(now) {
            self.fire(watermark, now, out);
        }
        if let Some(every) = self.early_every
            && now.duration_since(self.last_early) >= every
        {
            self.last_early = now;
            let mut firings = std::mem::take(&mut self.firings);
            self.engine.fire_early(&mut firings);
            out.extend(firings.drain(..).map(|f| self.result(f)));
            self.firings = firings;
        }
        Ok(())
    }

    fn timings(&mut self, out: &mut Vec<(&'static str, Duration)>) {
        out.extend(self.delays.drain(..).map(|d| ("emission_delay", d)));
    }

    fn window_results(&mut self, out: &mut Vec<WindowWrite>) {
        out.append(&mut self.results);
    }

    fn metrics(&self, out: &mut Vec<StageMetric>) {
        let gauge = |name, value: usize| StageMetric {
            name,
            value: u64::try_from(value).unwrap_or(u64::MAX),
            counter: false,
        };
        let counter = |name, value| StageMetric {
            name,
            value,
            counter: true,
        };
        out.extend([
            gauge("open_keys", self.engine.open_keys()),
            gauge("open_windows", self.engine.open_windows()),
            counter("late", self.counts.late),
            counter("max_keys_exceeded", self.counts.max_keys_exceeded),
            counter(
                "max_windows_per_key_exceeded",
                self.counts.max_windows_per_key_exceeded,
            ),
            counter("early_firings", self.counts.early_firings),
        ]);
        if let Some(watermark) = self.clock.current() {
            out.push(StageMetric {
                name: "watermark_ms",
                value: u64::try_from(watermark).unwrap_or(0),
                counter: false,
            });
        }
    }

    fn state_changes(&mut self, changes: &mut Vec<StateWrite>) {
        // One row per window, written when it changes: an event costs the rows of the
        // windows it joined, not every window of its key.
        self.engine.take_changes(|key, window, open| {
            let row = window_key(key, window.start);
            changes.push(match open {
                Some(open) => StateWrite::Put(row, WINDOW_ROW.encode_as(&(window.end, open))),
                None => StateWrite::Delete(row),
            });
        });
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
        // Both firings of [0, 10) are handed over for the windows column family, in order.
        let kept = p.window_results();
        let starts: Vec<(i64, bool)> = kept
            .iter()
            .map(|(_, w)| match w {
                WindowWrite::Put { start, json, .. } => {
                    let v: Value = serde_json::from_slice(json).unwrap();
                    (*start, v["early"].as_bool().unwrap())
                }
                WindowWrite::Delete { start, .. } => (*start, false),
            })
            .collect();
        assert_eq!(starts, [(0, true), (0, false)]);
        assert!(p.window_results().is_empty(), "handed over once");
        let metrics = crate::stages::metrics_of(&p);
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
