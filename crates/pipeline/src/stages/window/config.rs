//! The `window` stage's options, and building the stage from them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use colloquium_config::ConfigError;
use colloquium_windows::{Engine, Watermarks, WindowSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{BuildContext, BuiltStage, StageConfig};

use super::aggregates::{Function, Output};
use super::{WindowCounts, WindowStage};

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
            rises: std::collections::VecDeque::new(),
            result_values: Vec::new(),
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
