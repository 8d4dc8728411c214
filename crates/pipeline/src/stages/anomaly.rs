//! `anomaly`: per-entity anomaly scoring (`colloquium-analytics`). `model: streamguard` (the
//! default) is StreamGuard's detector exactly: a per-user baseline of UTC hours, source IPs,
//! places, event types and failures; after `min_events` each event is scored, and only events
//! below the threshold join the baseline. `model: robust` is ours, with the reference's flaws
//! fixed (`docs/anomaly-models.md`); its own settings go under `robust:`.
//!
//! - The result is attached to the event under `into` (default `anomaly`): `{model, scored,
//!   score, components, reason_codes, reasons, is_anomaly, baseline_updated}`, so later
//!   stages and sinks can route on it (`when: {gte: [/anomaly/score, 0.9]}`).
//! - `fields` names where each value is read (JSON pointers; StreamGuard's shape by default)
//!   and which event types and statuses are accepted; an event the model cannot read fails
//!   with `bad_value` (dead-lettered by default) and changes no baseline.
//! - `max_values` (1,000) bounds each baseline's distinct IPs, places and types (the least
//!   recently seen value goes; `value_evictions`).
//! - `max_entities` bounds memory: past it the least recently seen entity's baseline goes
//!   (counted in `colloquium_pipeline_stage_total{name="evictions"}`; also `scored`,
//!   `anomalies`, and scored events by band: `band_critical` ≥ 0.9, `band_high` ≥ 0.8,
//!   `band_medium` ≥ 0.7).
//! - Baselines are stage state (one binary row per entity, written when it learned): a restart
//!   resumes them exactly.

use std::collections::VecDeque;
use std::sync::Arc;

use colloquium_analytics::{
    Baseline, Detector, Fields, LegacyTally, Model, Observation, Profile, RobustDetector,
    RobustProfile, RobustSettings, Scorer, Weights,
};
use colloquium_config::ConfigError;
use colloquium_event::Event;
use serde::Deserialize;
use serde_json::Value;

use crate::context::{ResultRow, count};
use crate::stage::{
    BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, StageError,
};
use crate::state::Codec;

/// `{type: anomaly, model: streamguard, threshold: 0.7, min_events: 100, …}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// The model.
    #[serde(default)]
    pub model: Model,
    /// Score at or above which an event is an anomaly (0 to 1).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Events an entity's baseline learns before its events are scored.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Dimension weights (summing to 1).
    #[serde(default)]
    pub weights: Weights,
    /// Where values are read.
    #[serde(default)]
    pub fields: Fields,
    /// The top-level key the result is attached under.
    #[serde(default = "default_into")]
    pub into: String,
    /// Most entities with a baseline.
    #[serde(default = "default_max_entities")]
    pub max_entities: usize,
    /// Most distinct IPs, places and event types one baseline keeps, each (past it the least
    /// recently seen value goes).
    #[serde(default = "default_max_values")]
    pub max_values: usize,
    /// The `robust` model's own settings.
    #[serde(default)]
    pub robust: RobustSettings,
}

fn default_max_values() -> usize {
    colloquium_analytics::DEFAULT_MAX_VALUES
}

fn default_threshold() -> f64 {
    0.7
}

fn default_min_events() -> u64 {
    100
}

fn default_into() -> String {
    "anomaly".to_owned()
}

fn default_max_entities() -> usize {
    100_000
}

/// The results table anomalies are kept in (`GET /api/anomalies` reads it).
pub const ANOMALIES: &str = "anomalies";

/// How each model's profiles are stored: one binary row per entity, told apart by format
/// version (2: a `streamguard` baseline, each value's count with when it was last seen; 4: a
/// `robust` profile; 3: a `robust` profile from before relocation learning, still read).
trait Stored: Scorer {
    const CODEC: Codec<Self::Profile>;

    /// Reads a row of this model, in its current format or an earlier one.
    fn decode(row: &[u8]) -> Result<Self::Profile, StageError> {
        Self::CODEC.decode(row)
    }
}

impl Stored for Detector {
    const CODEC: Codec<Baseline> = Codec::binary("anomaly baseline", 2);
}

/// `robust` profiles as stored before each value's tally counted calm events.
const ROBUST_V3: Codec<RobustProfile<LegacyTally>> = Codec::binary("anomaly robust profile", 3);

impl Stored for RobustDetector {
    const CODEC: Codec<RobustProfile> = Codec::binary("anomaly robust profile", 4);

    fn decode(row: &[u8]) -> Result<RobustProfile, StageError> {
        Self::CODEC.decode(row).or_else(|e| {
            ROBUST_V3
                .decode(row)
                .map(RobustProfile::from)
                .map_err(|_| e)
        })
    }
}

/// An entity's stored profile row, of either model (its key in the stage's state is the
/// entity's name), also for `GET /api/users/{user}/baseline`.
pub fn stored_baseline(row: &[u8]) -> Result<Profile, StageError> {
    <Detector as Stored>::decode(row)
        .map(Detector::wrap)
        .or_else(|e| {
            <RobustDetector as Stored>::decode(row)
                .map(RobustDetector::wrap)
                .map_err(|_| e)
        })
}

impl StageConfig for AnomalyConfig {
    const KIND: &'static str = "anomaly";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(ConfigError::new(
                cx.key("threshold"),
                "must be between 0 and 1",
            ));
        }
        let w = &self.weights;
        let each = [w.time, w.ip, w.location, w.kind, w.failure];
        if each.iter().any(|x| !x.is_finite() || *x < 0.0) || (w.sum() - 1.0).abs() > 1e-9 {
            return Err(ConfigError::new(
                cx.key("weights"),
                format!(
                    "time, ip, location, type and failure must be ≥ 0 and sum to 1 (they sum to {})",
                    w.sum()
                ),
            ));
        }
        let f = &self.fields;
        let pointers = [
            (&f.entity, "entity"),
            (&f.id, "id"),
            (&f.timestamp, "timestamp"),
            (&f.event_type, "event_type"),
            (&f.source_ip, "source_ip"),
            (&f.status, "status"),
            (&f.place, "place"),
            (&f.threat_score, "threat_score"),
        ];
        for (pointer, name) in pointers {
            if !pointer.starts_with('/') {
                return Err(ConfigError::new(
                    cx.key(&format!("fields.{name}")),
                    "must be a JSON pointer, such as /user",
                ));
            }
        }
        if let Some((key, problem)) = self.robust.invalid() {
            return Err(ConfigError::new(cx.key(&format!("robust.{key}")), problem));
        }
        if self.into.is_empty() {
            return Err(ConfigError::new(cx.key("into"), "must name a key"));
        }
        let (min_events, threshold, weights) = (self.min_events, self.threshold, self.weights);
        Ok(match self.model {
            Model::Streamguard => {
                let detector =
                    Detector::new(min_events, threshold, weights).with_max_values(self.max_values);
                BuiltStage::sync(Anomaly::new(self, detector, cx))
            }
            Model::Robust => {
                let detector = RobustDetector::new(min_events, threshold, weights)
                    .with_max_values(self.max_values)
                    .with_settings(self.robust);
                BuiltStage::sync(Anomaly::new(self, detector, cx))
            }
        })
    }
}

/// An entity's baseline and when it was last seen (a sequence number).
struct Entity<P> {
    name: Arc<str>,
    baseline: P,
    seen: u64,
    changed: bool,
}

#[derive(Debug, Default)]
struct Counts {
    scored: u64,
    anomalies: u64,
    /// Scored events by band: critical ≥ 0.9, high ≥ 0.8, medium ≥ 0.7 (StreamGuard's
    /// metric bands, whatever the threshold).
    bands: [u64; 3],
    /// Values baselines evicted under `max_values`.
    value_evictions: u64,
}

/// The baselines, at most `max`, the least recently seen evicted first.
struct Entities<P> {
    max: usize,
    /// By name; the name shared with `recency` (no copy per event).
    map: hashbrown::HashMap<Arc<str>, Entity<P>>,
    /// Every touch, oldest first, as (sequence, entity). An entry whose entity was touched
    /// again since (a later `seen`) or is gone is stale: skipped when evicting, dropped when
    /// stale entries outnumber a quarter of the live ones (which bounds its memory below the
    /// ordered map's). O(1) per event, where a map ordered by
    /// sequence costs two tree operations.
    recency: VecDeque<(u64, Arc<str>)>,
    clock: u64,
    /// Entities evicted since the last `checkpoint` (their rows go).
    evicted: Vec<Arc<str>>,
    evictions: u64,
}

impl<P: Default> Entities<P> {
    /// Evicts the least recently seen entity: the oldest touch that is still its entity's
    /// latest.
    fn evict_least_recent(&mut self) {
        while let Some((seq, name)) = self.recency.pop_front() {
            if self.map.get(&name).is_some_and(|e| e.seen == seq) {
                self.map.remove(&name);
                self.evictions += 1;
                self.evicted.push(name);
                return;
            }
        }
    }

    /// The entity's slot, created (evicting the least recently seen past `max`) and marked
    /// as seen now.
    fn touch(&mut self, name: &str) -> &mut Entity<P> {
        self.clock += 1;
        let now = self.clock;
        if let Some(entity) = self.map.get_mut(name) {
            entity.seen = now;
            self.recency.push_back((now, entity.name.clone()));
        } else {
            if self.map.len() >= self.max {
                self.evict_least_recent();
            }
            let name: Arc<str> = Arc::from(name);
            let entity = Entity {
                name: name.clone(),
                baseline: P::default(),
                seen: now,
                changed: false,
            };
            self.recency.push_back((now, name.clone()));
            self.map.insert(name, entity);
        }
        if self.recency.len() > self.map.len() + self.map.len() / 4 + 64 {
            // Drop stale touches: each live entity keeps its latest, in order.
            let map = &self.map;
            self.recency
                .retain(|(seq, name)| map.get(name).is_some_and(|e| e.seen == *seq));
        }
        match self.map.get_mut(name) {
            Some(entity) => entity,
            None => unreachable!("found or inserted above"),
        }
    }
}

/// The stage, generic over its model so that each model's profiles are held at their size.
struct Anomaly<D: Scorer> {
    /// The pipeline and the stage, named in each kept anomaly.
    pipeline: Arc<str>,
    stage: Arc<str>,
    detector: D,
    fields: Fields,
    into: String,
    entities: Entities<D::Profile>,
    /// Entities whose baseline learned since the last `checkpoint`.
    changed: Vec<Arc<str>>,
    counts: Counts,
}

impl<D: Scorer> Anomaly<D> {
    fn new(config: AnomalyConfig, detector: D, cx: &BuildContext<'_>) -> Self {
        Anomaly {
            pipeline: cx.pipeline.clone(),
            stage: cx.id.clone(),
            detector,
            fields: config.fields,
            into: config.into,
            entities: Entities {
                max: config.max_entities.max(1),
                map: hashbrown::HashMap::new(),
                // Room for the stale touches a small stage keeps (64 above its live ones):
                // it never grows on the hot path.
                recency: VecDeque::with_capacity(128),
                clock: 0,
                evicted: Vec::new(),
                evictions: 0,
            },
            changed: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Keeps the anomaly of `event` (its result `result`) in the stage's `anomalies` table
    /// (by ingest time and event id): `{id, pipeline, stage, user, ingest_time, score,
    /// components, reason_codes, reasons, model, data}`.
    fn keep(
        &self,
        event: &Event,
        result: &serde_json::Map<String, Value>,
        cx: &mut StageContext<'_>,
    ) {
        let entity = event.data_pointer(&self.fields.entity).cloned();
        let mut record = serde_json::Map::new();
        record.insert("id".into(), Value::from(event.id.to_string()));
        record.insert("pipeline".into(), Value::from(&*self.pipeline));
        record.insert("stage".into(), Value::from(&*self.stage));
        record.insert("user".into(), entity.unwrap_or(Value::Null));
        record.insert(
            "ingest_time".into(),
            Value::from(event.ingest_time.to_string()),
        );
        for field in ["score", "components", "reason_codes", "reasons", "model"] {
            if let Some(value) = result.get(field) {
                record.insert(field.into(), value.clone());
            }
        }
        record.insert("data".into(), Value::Object(event.data.clone()));
        let row = ResultRow {
            key: String::new(),
            at: i64::try_from(event.id.timestamp().as_millis()).unwrap_or(i64::MAX),
            id: Some(event.id),
        };
        cx.keep_json(ANOMALIES, row, &record);
    }
}

impl<D: Stored + Send + 'static> Stage for Anomaly<D> {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        // The model reads the event's data as one JSON value; taken out and put back.
        let data = Value::Object(std::mem::take(&mut event.data));
        let parsed = Observation::parse(&data, &self.fields)
            .map_err(|e| StageError::BadValue(format!("anomaly: {e}")))
            .and_then(|obs| {
                if obs.entity.len() > super::MAX_KEY_BYTES {
                    return Err(StageError::BadValue(format!(
                        "anomaly: the entity is {} bytes long; at most {}",
                        obs.entity.len(),
                        super::MAX_KEY_BYTES
                    )));
                }
                Ok(obs)
            });
        let verdict = match parsed {
            Ok(obs) => {
                let entity = self.entities.touch(obs.entity);
                let verdict = self.detector.observe(&mut entity.baseline, &obs);
                if verdict.learned && !entity.changed {
                    entity.changed = true;
                    self.changed.push(entity.name.clone());
                }
                Ok(verdict)
            }
            Err(error) => Err(error),
        };
        if let Value::Object(map) = data {
            event.data = map;
        }
        let verdict = match verdict {
            Ok(verdict) => verdict,
            Err(error) => return Err(Failed::new(error, event)),
        };
        self.counts.scored += u64::from(verdict.score.is_some());
        self.counts.anomalies += u64::from(verdict.anomaly);
        self.counts.value_evictions += u64::from(verdict.evicted);
        if let Some(score) = &verdict.score {
            cx.score("anomaly_score", score.score);
            let band = [0.9, 0.8, 0.7].iter().position(|low| score.score >= *low);
            if let Some(band) = band {
                self.counts.bands[band] += 1;
            }
        }
        let mut result = verdict.to_json();
        result.insert("model".into(), Value::from(D::MODEL.as_str()));
        if verdict.anomaly {
            self.keep(&event, &result, cx);
        }
        event.data.insert(self.into.clone(), Value::Object(result));
        cx.emit(event);
        Ok(())
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        for name in self.entities.evicted.drain(..) {
            if !self.entities.map.contains_key(&name) {
                cx.delete_state(name.as_bytes().to_vec());
            }
        }
        for name in self.changed.drain(..) {
            if let Some(entity) = self.entities.map.get_mut(&name) {
                entity.changed = false;
                cx.put_state(name.as_bytes().to_vec(), D::CODEC.encode(&entity.baseline));
            }
        }
        cx.gauge("entities", count(self.entities.map.len()));
        for (name, value) in [
            ("scored", self.counts.scored),
            ("anomalies", self.counts.anomalies),
            ("evictions", self.entities.evictions),
            ("band_critical", self.counts.bands[0]),
            ("band_high", self.counts.bands[1]),
            ("band_medium", self.counts.bands[2]),
            ("value_evictions", self.counts.value_evictions),
        ] {
            cx.total(name, value);
        }
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        for (key, value) in entries {
            let name = String::from_utf8(key)
                .map_err(|_| StageError::State("anomaly entity: not UTF-8".to_owned()))?;
            let baseline = match D::decode(&value) {
                Ok(baseline) => baseline,
                // The other model's profile: the stage's model was changed, so this entity
                // starts afresh (its row is replaced when it next learns, or deleted).
                Err(_) if stored_baseline(&value).is_ok() => {
                    self.entities.evicted.push(Arc::from(name.as_str()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.entities.touch(&name).baseline = baseline;
        }
        // Restored rows are stored already; evictions past the cap (a lowered max_entities)
        // are real ones, and their rows go at the next checkpoint.
        self.changed.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateWrite;

    #[test]
    fn the_least_recently_seen_entity_is_evicted_however_often_others_were_seen() {
        let mut entities: Entities<u8> = Entities {
            max: 2,
            map: hashbrown::HashMap::new(),
            recency: VecDeque::new(),
            clock: 0,
            evicted: Vec::new(),
            evictions: 0,
        };
        for name in ["a", "b", "a", "a", "c", "a", "d", "b"] {
            entities.touch(name);
        }
        // c evicts b (a was seen after it), d evicts c, b evicts a.
        let evicted: Vec<&str> = entities.evicted.iter().map(|n| &**n).collect();
        assert_eq!(evicted, ["b", "c", "a"]);
        let mut live: Vec<&str> = entities.map.keys().map(|n| &**n).collect();
        live.sort_unstable();
        assert_eq!(live, ["b", "d"]);
        // Many touches of one entity: the stale ones are dropped, not kept.
        for _ in 0..1_000 {
            entities.touch("d");
        }
        assert!(
            entities.recency.len() <= 2 + 1 + 64,
            "{}",
            entities.recency.len()
        );
    }
    use crate::pipeline::Pipeline;
    use colloquium_event::{Metadata, Reason, Timestamp};
    use serde_json::json;

    fn pipeline(stage: &str) -> Result<Pipeline, String> {
        crate::stages::one_stage::<AnomalyConfig>(stage)
    }

    fn login(user: &str, hour: u64, ip: &str, place: &str) -> Event {
        let data = json!({"event_id": "evt_1", "timestamp": hour * 3_600_000,
            "event_type": "auth_attempt", "source_ip": ip, "user": user,
            "status": "success", "threat_score": 0.1, "metadata": {"geo_location": place}});
        Event::at(
            Timestamp::now(),
            data.as_object().cloned().unwrap(),
            Metadata::new("http", "default"),
        )
    }

    #[test]
    fn a_scripted_user_learns_then_a_new_ip_from_a_new_country_at_3_am_is_flagged() {
        let mut p = pipeline("{type: anomaly, min_events: 100}").unwrap();
        for i in 0..120 {
            let out = p
                .process(&login("alice", 9 + i % 8, "10.0.0.1", "US-CA"))
                .outputs;
            assert_eq!(out[0].data["anomaly"]["is_anomaly"], false, "event {i}");
        }
        let out = p
            .process(&login("alice", 3, "203.0.113.9", "RU-MOW"))
            .outputs;
        let result = &out[0].data["anomaly"];
        assert_eq!(result["is_anomaly"], true);
        assert_eq!(result["model"], "streamguard");
        let codes: Vec<&str> = result["reason_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(codes, ["high", "time", "ip", "location"]);
        assert_eq!(result["baseline_updated"], false);
        let metrics = crate::stages::metrics_of(&mut p);
        assert_eq!(
            (
                metrics["scored"],
                metrics["anomalies"],
                metrics["band_medium"]
            ),
            (21, 1, 1),
            "{metrics:?}"
        );
        assert_eq!((metrics["band_high"], metrics["band_critical"]), (0, 0));
    }

    #[test]
    fn baselines_survive_a_restart_and_the_least_recently_seen_is_evicted() {
        let mut p = pipeline("{type: anomaly, min_events: 2, max_entities: 2}").unwrap();
        for user in ["a", "b", "a", "b"] {
            p.process(&login(user, 9, "10.0.0.1", "US"));
        }
        let rows = crate::stages::put_rows(&mut p);
        assert_eq!(rows.len(), 2);
        let mut restarted = pipeline("{type: anomaly, min_events: 2, max_entities: 2}").unwrap();
        restarted
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(rows.clone()))
            .unwrap();
        let (before, after) = (
            p.process(&login("a", 3, "1.2.3.4", "FR")).outputs,
            restarted.process(&login("a", 3, "1.2.3.4", "FR")).outputs,
        );
        assert_eq!(before[0].data["anomaly"], after[0].data["anomaly"]);
        assert_eq!(after[0].data["anomaly"]["scored"], true);
        // A third entity evicts b (seen least recently), whose row goes.
        restarted.process(&login("c", 9, "10.0.0.1", "US"));
        let writes = restarted.state_changes();
        assert!(
            writes
                .iter()
                .any(|(_, w)| *w == StateWrite::Delete(b"b".to_vec()))
        );
        let bad = restarted.process(&Event::at(
            Timestamp::now(),
            json!({"user": "a"}).as_object().cloned().unwrap(),
            Metadata::new("http", "default"),
        ));
        assert_eq!(bad.failures[0].reason, Reason::BadValue);
    }

    #[test]
    fn the_robust_model_scores_restores_and_reports_its_scores() {
        let stage = "{type: anomaly, model: robust, min_events: 20, robust: {settle_days: 10}}";
        let mut p = pipeline(stage).unwrap();
        for i in 0..40 {
            let out = p
                .process(&login("a", 9 + i % 8, "10.0.0.1", "US-CA"))
                .outputs;
            assert_eq!(out[0].data["anomaly"]["is_anomaly"], false, "event {i}");
        }
        let rows = crate::stages::put_rows(&mut p);
        let profile = stored_baseline(&rows[0].1).unwrap();
        assert_eq!((profile.model(), profile.events()), (Model::Robust, 40));
        let mut restarted = pipeline(stage).unwrap();
        restarted
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(rows.clone()))
            .unwrap();
        let odd = login("a", 3, "203.0.113.9", "RU-MOW");
        let (before, after) = (p.process(&odd).outputs, restarted.process(&odd).outputs);
        assert_eq!(before[0].data["anomaly"], after[0].data["anomaly"]);
        let result = &after[0].data["anomaly"];
        assert_eq!(
            (&result["model"], &result["is_anomaly"]),
            (&json!("robust"), &json!(true))
        );
        assert_eq!(result["components"]["new_since_baseline"], 0.9);
        let mut scores = Vec::new();
        restarted
            .stage_scores()
            .into_iter()
            .for_each(|(_, name, x)| {
                assert_eq!(name, "anomaly_score");
                scores.push(x);
            });
        assert_eq!(scores, [result["score"].as_f64().unwrap()]);
        // A stage whose model changed starts those entities afresh and deletes their rows.
        let mut switched = pipeline("{type: anomaly, min_events: 20}").unwrap();
        switched
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(rows.clone()))
            .unwrap();
        let out = switched.process(&odd).outputs;
        assert_eq!(out[0].data["anomaly"]["scored"], false, "learning afresh");
        let writes: Vec<StateWrite> = switched
            .state_changes()
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(stored_baseline(&rows[0].1).unwrap().model(), Model::Robust);
        assert!(
            matches!(&writes[..], [StateWrite::Put(k, v)] if k == b"a"
                && stored_baseline(v).unwrap().model() == Model::Streamguard),
            "{writes:?}"
        );
        // A `robust` row written before relocation learning (format 3) still reads.
        let old = RobustProfile::<LegacyTally> {
            events: 40,
            ready: true,
            ..Default::default()
        };
        let old_rows = vec![(b"a".to_vec(), ROBUST_V3.encode(&old))];
        let profile = stored_baseline(&old_rows[0].1).unwrap();
        assert_eq!((profile.model(), profile.events()), (Model::Robust, 40));
        let mut upgraded = pipeline(stage).unwrap();
        upgraded
            .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(old_rows.clone()))
            .unwrap();
        let out = upgraded.process(&odd).outputs;
        assert_eq!(
            out[0].data["anomaly"]["scored"], true,
            "a ready profile scores"
        );
        // A row of neither model is corrupt state.
        let mut corrupt = pipeline("{type: anomaly}").unwrap();
        let bad = vec![(b"a".to_vec(), b"garbage".to_vec())];
        assert!(
            corrupt
                .restore_state(|_| Ok::<_, colloquium_storage::StorageError>(bad.clone()))
                .is_err()
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let error = |stage: &str| pipeline(stage).err().unwrap_or_default();
        assert!(error("{type: anomaly, threshold: 2}").contains("stages[0].threshold"));
        assert!(
            error(
                "{type: anomaly, weights: {time: 0.5, ip: 0.5, location: 0.5, type: 0, failure: 0}}"
            )
            .contains("stages[0].weights")
        );
        assert!(
            error("{type: anomaly, fields: {entity: user}}").contains("stages[0].fields.entity")
        );
        assert!(error("{type: anomaly, model: magic}").contains("model"));
        assert!(
            error("{type: anomaly, model: robust, robust: {half_life_days: -1}}")
                .contains("stages[0].robust.half_life_days")
        );
        assert!(error("{type: anomaly, robust: {decay: 1}}").contains("decay"));
    }
}
