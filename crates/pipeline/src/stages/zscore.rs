//! `zscore`: per-key anomaly detection by z-score. Each key keeps a running baseline (Welford's
//! mean and σ over every value it has seen); a value is judged against the baseline *before*
//! it joins it, and `|x − μ| / σ > threshold` (strictly, with at least `min_samples` ≥ 2 values
//! and σ > 0) emits an anomaly event
//! `{anomaly: "zscore", key, field, value, zscore, mean, stddev, samples, threshold, event_id}`
//! right after the event (which goes on unchanged unless `pass: false`).
//!
//! - `value`: JSON pointer of the number; an event without it passes unscored, one where it
//!   is not a number fails with `bad_value`.
//! - `key`: JSON pointer of the grouping key (absent: one baseline).
//! - `max_keys` bounds memory: a new key past it fails with `limit_exceeded`.
//! - Baselines are stage state: a restart resumes them exactly.

use std::collections::{BTreeSet, HashMap};

use colloquium_config::ConfigError;
use colloquium_event::{Event, Metadata, Reason};
use colloquium_windows::{Welford, zscore};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::stage::{
    BuildContext, BuiltStage, Clock, Failed, Stage, StageConfig, StageContext, StageError,
};
use crate::state::Codec;

/// `{type: zscore, value: /latency, key: /service, threshold: 3, min_samples: 10}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZscoreConfig {
    /// JSON pointer of the value scored.
    pub value: String,
    /// JSON pointer of the grouping key.
    #[serde(default)]
    pub key: Option<String>,
    /// Flag `|z|` above this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Values a baseline needs before it judges (at least 2).
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Whether input events go on (otherwise only anomaly events leave the stage).
    #[serde(default = "default_pass")]
    pub pass: bool,
    /// Most keys with a baseline.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_threshold() -> f64 {
    3.0
}

fn default_min_samples() -> u64 {
    2
}

fn default_pass() -> bool {
    true
}

fn default_max_keys() -> usize {
    100_000
}

/// A key's baseline as stored.
const BASELINE: Codec<Welford> = Codec::new("zscore baseline", 1);

impl StageConfig for ZscoreConfig {
    const KIND: &'static str = "zscore";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        for (pointer, name) in [(Some(&self.value), "value"), (self.key.as_ref(), "key")] {
            if pointer.is_some_and(|p| !p.starts_with('/')) {
                return Err(ConfigError::new(
                    cx.key(name),
                    "must be a JSON pointer, such as /latency_ms",
                ));
            }
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(ConfigError::new(
                cx.key("threshold"),
                "must be a number above 0",
            ));
        }
        Ok(BuiltStage::sync(Zscore {
            pipeline: cx.pipeline.to_string(),
            clock: cx.clock,
            value: self.value,
            key: self.key,
            threshold: self.threshold,
            min_samples: self.min_samples.max(2),
            pass: self.pass,
            max_keys: self.max_keys.max(1),
            baselines: HashMap::new(),
            changed: BTreeSet::new(),
            anomalies: 0,
        }))
    }
}

struct Zscore {
    pipeline: String,
    clock: Clock,
    value: String,
    key: Option<String>,
    threshold: f64,
    min_samples: u64,
    pass: bool,
    max_keys: usize,
    baselines: HashMap<String, Welford>,
    /// Keys whose baseline changed since the last `checkpoint`.
    changed: BTreeSet<String>,
    anomalies: u64,
}

impl Zscore {
    fn key_of(&self, event: &Event) -> Result<String, StageError> {
        let Some(pointer) = &self.key else {
            return Ok(String::new());
        };
        match event.data_pointer(pointer) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
            other => Err(StageError::BadValue(format!(
                "zscore key {pointer} is {}",
                other.map_or("missing", colloquium_event::json_kind)
            ))),
        }
    }
}

impl Stage for Zscore {
    fn process(&mut self, event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let x = match event.data_pointer(&self.value) {
            None => {
                if self.pass {
                    cx.emit(event);
                }
                return Ok(());
            }
            Some(v) => v.as_f64().filter(|x| x.is_finite()),
        };
        let Some(x) = x else {
            let error =
                StageError::BadValue(format!("zscore value {} is not a number", self.value));
            return Err(Failed::new(error, event));
        };
        let key = match self
            .key_of(&event)
            .and_then(|k| super::bounded_key("zscore", k))
        {
            Ok(key) => key,
            Err(error) => return Err(Failed::new(error, event)),
        };
        if !self.baselines.contains_key(&key) && self.baselines.len() >= self.max_keys {
            let error = StageError::External {
                reason: Reason::LimitExceeded,
                message: format!("zscore: {} keys have baselines (max_keys)", self.max_keys),
            };
            return Err(Failed::new(error, event));
        }
        let baseline = self.baselines.entry(key.clone()).or_default();
        let score = zscore(baseline, x, self.min_samples);
        baseline.push(x);
        let anomaly = score.filter(|s| s.exceeds(self.threshold)).map(|score| {
            let mut data = Map::new();
            data.insert("anomaly".into(), Value::from("zscore"));
            data.insert("key".into(), Value::from(key.clone()));
            data.insert("field".into(), Value::from(self.value.clone()));
            data.insert("value".into(), Value::from(x));
            data.insert("zscore".into(), Value::from(score.z));
            data.insert("mean".into(), Value::from(score.mean));
            data.insert("stddev".into(), Value::from(score.stddev));
            data.insert("samples".into(), Value::from(score.samples));
            data.insert("threshold".into(), Value::from(self.threshold));
            data.insert("event_id".into(), Value::from(event.id.to_string()));
            Event::at(
                (self.clock)(),
                data,
                Metadata::new("zscore", self.pipeline.clone()),
            )
        });
        self.changed.insert(key);
        if self.pass {
            cx.emit(event);
        }
        if let Some(anomaly) = anomaly {
            self.anomalies += 1;
            cx.emit(anomaly);
        }
        Ok(())
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        for key in std::mem::take(&mut self.changed) {
            if let Some(baseline) = self.baselines.get(&key) {
                cx.put_state(key.into_bytes(), BASELINE.encode(baseline));
            }
        }
        cx.gauge("keys", crate::context::count(self.baselines.len()));
        cx.total("anomalies", self.anomalies);
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        for (key, value) in entries {
            let key = String::from_utf8(key)
                .map_err(|_| StageError::State("zscore key: not UTF-8".to_owned()))?;
            self.baselines.insert(key, BASELINE.decode(&value)?);
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
        crate::stages::one_stage::<ZscoreConfig>(stage)
    }

    #[test]
    fn a_value_is_scored_against_the_baseline_before_it_and_flagged_strictly() {
        let mut p = pipeline("{type: zscore, value: /v, key: /k, threshold: 3}").unwrap();
        for v in [10, 20, 30, 40, 50] {
            let out = p.process(&event(json!({"k": "a", "v": v}))).outputs;
            assert_eq!(out.len(), 1, "no anomaly while the baseline forms");
        }
        // Another key has its own baseline: nothing to judge against yet.
        assert_eq!(
            p.process(&event(json!({"k": "b", "v": 1e9}))).outputs.len(),
            1
        );
        // μ = 30, σ ≈ 15.811: 77 is at z ≈ 2.97, 80 at ≈ 3.16.
        assert_eq!(
            p.process(&event(json!({"k": "a", "v": 77}))).outputs.len(),
            1
        );
        let mut fresh = pipeline("{type: zscore, value: /v, key: /k, threshold: 3}").unwrap();
        for v in [10, 20, 30, 40, 50] {
            fresh.process(&event(json!({"k": "a", "v": v})));
        }
        let out = fresh.process(&event(json!({"k": "a", "v": 80}))).outputs;
        assert_eq!(out.len(), 2);
        let anomaly = &out[1].data;
        assert_eq!(anomaly["anomaly"], "zscore");
        assert_eq!(
            (anomaly["mean"].as_f64(), anomaly["samples"].as_u64()),
            (Some(30.0), Some(5))
        );
        assert!((anomaly["stddev"].as_f64().unwrap() - 15.811_388).abs() < 1e-6);
        assert!((anomaly["zscore"].as_f64().unwrap() - 50.0 / 15.811_388_300_841_896).abs() < 1e-9);
        assert_eq!(anomaly["event_id"], out[0].id.to_string());
    }

    #[test]
    fn bad_values_fail_missing_ones_pass_and_the_baseline_survives_a_restart() {
        let mut p = pipeline("{type: zscore, value: /v, pass: false, min_samples: 3, max_keys: 1}")
            .unwrap();
        let bad = p.process(&event(json!({"v": "high"})));
        assert_eq!(bad.failures[0].reason, Reason::BadValue);
        assert!(
            p.process(&event(json!({"w": 1}))).outputs.is_empty(),
            "pass: false"
        );
        for v in [1.0, 2.0, 3.0] {
            assert!(p.process(&event(json!({"v": v}))).outputs.is_empty());
        }
        let entries = crate::stages::put_rows(&mut p);
        let mut restarted =
            pipeline("{type: zscore, value: /v, pass: false, min_samples: 3}").unwrap();
        restarted
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(entries.clone()))
            .unwrap();
        let out = restarted.process(&event(json!({"v": 100}))).outputs;
        assert_eq!(out.len(), 1, "the restored baseline judged it");
        assert_eq!(out[0].data["samples"], 3);
        let error = pipeline("{type: zscore, value: v}")
            .err()
            .unwrap_or_default();
        assert!(error.contains("stages[0].value"), "{error}");
        let error = pipeline("{type: zscore, value: /v, threshold: 0}")
            .err()
            .unwrap_or_default();
        assert!(error.contains("stages[0].threshold"), "{error}");
    }
}
