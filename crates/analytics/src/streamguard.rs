//! StreamGuard's per-user baseline detector, as `shared/design/anomaly-scoring.md` describes it
//! and the conformance suite pins it down.
//!
//! - A [`Baseline`] counts, per entity, the UTC hours of day, source IPs, places and event
//!   types of the events it learned, and how many failed.
//! - Until it holds `min_events` events every event is learned and none is scored. After, an
//!   event is scored against the baseline as it stands: each dimension's component is
//!   `1 − P(value)` (`P` = count / events, 0.01 for a value never seen, 0.5 for an event
//!   without a place), the failure component 0.8 for a failure while fewer than 10 % of the
//!   baseline failed; the score is their weighted sum, added left to right in `f64` exactly as
//!   the reference does (the suite's exact-threshold cases need the same bits).
//! - Only events scoring below the threshold are learned (anti-poisoning); `score ≥ threshold`
//!   is an anomaly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::values::Values;

/// The event types StreamGuard's parser accepts.
pub const EVENT_TYPES: [&str; 5] = [
    "auth_attempt",
    "network_connection",
    "file_access",
    "process_execution",
    "dns_query",
];

/// The statuses it accepts (a missing or null status is `success`).
pub const STATUSES: [&str; 4] = ["success", "failed", "blocked", "pending"];

/// Where each field is read from (JSON pointers into the event's data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fields {
    /// The entity whose baseline it is.
    pub entity: String,
    /// The event's id (required, a string: the reference refuses events without one).
    pub id: String,
    /// Event time, epoch ms (a whole number ≥ 0).
    pub timestamp: String,
    /// The event type.
    pub event_type: String,
    /// The source IP (any string).
    pub source_ip: String,
    /// The status (optional).
    pub status: String,
    /// The place (optional).
    pub place: String,
    /// The threat score (required, a number; not used in the score).
    pub threat_score: String,
    /// Accepted event types (empty: any string).
    pub event_types: Vec<String>,
    /// Accepted statuses besides a missing one (empty: any string).
    pub statuses: Vec<String>,
    /// The status that counts as a failure.
    pub failed: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            entity: "/user".into(),
            id: "/event_id".into(),
            timestamp: "/timestamp".into(),
            event_type: "/event_type".into(),
            source_ip: "/source_ip".into(),
            status: "/status".into(),
            place: "/metadata/geo_location".into(),
            threat_score: "/threat_score".into(),
            event_types: EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect(),
            statuses: STATUSES.iter().map(|s| (*s).to_owned()).collect(),
            failed: "failed".into(),
        }
    }
}

/// Why an event cannot be scored (the reference's parser refuses it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// What the detector reads of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// The entity.
    pub entity: &'a str,
    /// The event's id.
    pub id: &'a str,
    /// Event time, epoch ms.
    pub time_ms: u64,
    /// The UTC hour of day, 0–23.
    pub hour: usize,
    /// The source IP.
    pub ip: &'a str,
    /// The place (`""`: none).
    pub place: &'a str,
    /// The event type.
    pub kind: &'a str,
    /// Whether its status is the failure status.
    pub failed: bool,
    /// The threat score.
    pub threat: f64,
}

/// `data`'s value at the JSON pointer `pointer`, unescaping (`~1`, `~0`) only the tokens that
/// need it: `Value::pointer` allocates for every token, a fifth of the stage's time.
fn lookup<'a>(data: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut value = data;
    for token in pointer.strip_prefix('/')?.split('/') {
        value = match value {
            Value::Object(map) if token.contains('~') => {
                map.get(&token.replace("~1", "/").replace("~0", "~"))?
            }
            Value::Object(map) => map.get(token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn at<'a>(data: &'a Value, pointer: &str) -> Option<&'a Value> {
    lookup(data, pointer).filter(|v| !v.is_null())
}

impl<'a> Observation<'a> {
    /// Reads `data` as StreamGuard's parser does (`anomaly-scoring.md` §1), through `fields`.
    pub fn parse(data: &'a Value, fields: &'a Fields) -> Result<Self, ParseError> {
        let string = |pointer: &str, name: &str| -> Result<&'a str, ParseError> {
            match lookup(data, pointer) {
                Some(Value::String(s)) => Ok(s.as_str()),
                None => Err(ParseError(format!("{name} ({pointer}) is missing"))),
                Some(other) => Err(ParseError(format!(
                    "{name} ({pointer}) must be a string, not {}",
                    colloquium_event::json_kind(other)
                ))),
            }
        };
        let id = string(&fields.id, "event id")?;
        let timestamp = match lookup(data, &fields.timestamp) {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                ParseError(format!(
                    "timestamp ({}) must be whole milliseconds from 0",
                    fields.timestamp
                ))
            })?,
            None => {
                return Err(ParseError(format!(
                    "timestamp ({}) is missing",
                    fields.timestamp
                )));
            }
            Some(other) => {
                return Err(ParseError(format!(
                    "timestamp ({}) must be a number, not {}",
                    fields.timestamp,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        let kind = string(&fields.event_type, "event type")?;
        if !fields.event_types.is_empty() && !fields.event_types.iter().any(|t| t == kind) {
            return Err(ParseError(format!("unknown event type `{kind}`")));
        }
        let ip = string(&fields.source_ip, "source IP")?;
        let entity = string(&fields.entity, "entity")?;
        let status = match at(data, &fields.status) {
            None => "success",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(ParseError(format!(
                    "status ({}) must be a string, not {}",
                    fields.status,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        if at(data, &fields.status).is_some()
            && !fields.statuses.is_empty()
            && !fields.statuses.iter().any(|s| s == status)
        {
            return Err(ParseError(format!("unknown status `{status}`")));
        }
        let threat = match lookup(data, &fields.threat_score) {
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            None => {
                return Err(ParseError(format!(
                    "threat score ({}) is missing",
                    fields.threat_score
                )));
            }
            Some(other) => {
                return Err(ParseError(format!(
                    "threat score ({}) must be a number, not {}",
                    fields.threat_score,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        let place = match at(data, &fields.place) {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(ParseError(format!(
                    "place ({}) must be a string, not {}",
                    fields.place,
                    colloquium_event::json_kind(other)
                )));
            }
        };
        Ok(Observation {
            entity,
            id,
            time_ms: timestamp,
            hour: usize::try_from((timestamp / 3_600_000) % 24).unwrap_or(0),
            ip,
            place,
            kind,
            failed: status == fields.failed,
            threat,
        })
    }
}

/// How often a value was seen, and when last (the baseline's event count then).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Events with this value (stops at u32::MAX).
    pub count: u32,
    /// The baseline's event count when it was last seen: the least recent goes first when
    /// a cap bites.
    pub last: u32,
}

/// One entity's learned profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Events per UTC hour of day (u32: half the bytes of a baseline's fixed part; a count
    /// stops at 4,294,967,295 events in one hour of day).
    pub hours: [u32; 24],
    /// Events per source IP.
    pub ips: Values<Seen>,
    /// Events per place (events without one add nothing here).
    pub places: Values<Seen>,
    /// Events per event type.
    pub types: Values<Seen>,
    /// Events learned.
    pub events: u64,
    /// Those that failed.
    pub failures: u64,
    /// Mean threat score (kept as the reference does; not used in the score).
    pub threat_mean: f64,
    /// Scoring has started (set once).
    pub ready: bool,
}

impl Baseline {
    /// Adds `obs` to the counts, keeping at most `cap` distinct values per dimension (the
    /// least recently seen goes; its events stay in the totals). Returns how many values it
    /// evicted.
    pub fn learn(&mut self, obs: &Observation<'_>, cap: usize) -> u32 {
        self.hours[obs.hour] = self.hours[obs.hour].saturating_add(1);
        self.events += 1;
        let now = u32::try_from(self.events).unwrap_or(u32::MAX);
        let mut evicted = bump(&mut self.ips, obs.ip, now, cap);
        if !obs.place.is_empty() {
            evicted += bump(&mut self.places, obs.place, now, cap);
        }
        evicted += bump(&mut self.types, obs.kind, now, cap);
        if obs.failed {
            self.failures += 1;
        }
        self.threat_mean += (obs.threat - self.threat_mean) / self.events as f64;
        evicted
    }

    /// `count / events`, or `unseen` for a count of 0.
    fn probability(&self, count: u64, unseen: f64) -> f64 {
        if self.events == 0 {
            return 0.5;
        }
        if count == 0 {
            unseen
        } else {
            count as f64 / self.events as f64
        }
    }
}

/// Counts `value` at `now`; a new value past `cap` evicts the least recently seen first.
fn bump(counts: &mut Values<Seen>, value: &str, now: u32, cap: usize) -> u32 {
    if let Some(seen) = counts.get_mut(value) {
        seen.count = seen.count.saturating_add(1);
        seen.last = now;
        return 0;
    }
    let mut evicted = 0;
    while counts.len() >= cap.max(1) && counts.remove_min_by_key(|s| s.last).is_some() {
        evicted += 1;
    }
    counts.insert(
        value,
        Seen {
            count: 1,
            last: now,
        },
    );
    evicted
}

/// Each dimension's weight in the score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Hour of day.
    pub time: f64,
    /// Source IP.
    pub ip: f64,
    /// Place.
    pub location: f64,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: f64,
    /// Failure.
    pub failure: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            time: 0.25,
            ip: 0.30,
            location: 0.20,
            kind: 0.15,
            failure: 0.10,
        }
    }
}

impl Weights {
    /// Their sum (must be 1 within 1e-9, each ≥ 0, for a score in [0, 1]).
    pub fn sum(&self) -> f64 {
        self.time + self.ip + self.location + self.kind + self.failure
    }
}

/// The five components, before weighting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Components {
    /// `1 − P(hour)`.
    pub time: f64,
    /// `1 − P(ip)`.
    pub ip: f64,
    /// `1 − P(place)`.
    pub location: f64,
    /// `1 − P(type)`.
    #[serde(rename = "type")]
    pub kind: f64,
    /// 0.8 for a failure while under 10 % of the baseline failed, else 0.
    pub failure: f64,
}

/// The `robust` model's signals besides the weighted profile components; its score is the
/// largest of the four.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// The weighted sum of the five components.
    pub profile: f64,
    /// 0.75 when two of hour, IP and place are new since the baseline, 0.9 for all three.
    pub new_since_baseline: f64,
    /// From 0.7 at `burst_failures` recent failures towards 1.
    pub failure_burst: f64,
    /// 0.8 for another country within `travel_hours` of the last event.
    pub travel: f64,
}

/// Why an event scored as it did, in the reference's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Score ≥ 0.9.
    Critical,
    /// 0.7 ≤ score < 0.9.
    High,
    /// The hour is rare (P < 0.05).
    Time,
    /// The IP is rare.
    Ip,
    /// The place is rare (and the event has one).
    Location,
    /// The event type is rare.
    Type,
    /// A failure from an entity that rarely fails.
    Failure,
    /// Two or more of hour, IP and place are new since the baseline (`robust` only).
    NewSinceBaseline,
    /// Failures in a burst (`robust` only).
    FailureBurst,
    /// Another country too soon after the last event (`robust` only).
    ImpossibleTravel,
}

impl ReasonCode {
    /// Its name in results.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Critical => "critical",
            ReasonCode::High => "high",
            ReasonCode::Time => "time",
            ReasonCode::Ip => "ip",
            ReasonCode::Location => "location",
            ReasonCode::Type => "type",
            ReasonCode::Failure => "failure",
            ReasonCode::NewSinceBaseline => "new_since_baseline",
            ReasonCode::FailureBurst => "failure_burst",
            ReasonCode::ImpossibleTravel => "impossible_travel",
        }
    }
}

/// A scored event.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// In [0, 1].
    pub score: f64,
    /// Before weighting.
    pub components: Components,
    /// The `robust` model's other signals (`None` for `streamguard`).
    pub signals: Option<Signals>,
    /// Reason codes, in order.
    pub codes: Vec<ReasonCode>,
    /// The same as text.
    pub reasons: Vec<String>,
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Its score (`None` while the baseline was still learning).
    pub score: Option<Score>,
    /// Scored and `score ≥ threshold`.
    pub anomaly: bool,
    /// It joined the baseline.
    pub learned: bool,
    /// Values the baseline evicted to take it (a cap on distinct values bit).
    pub evicted: u32,
}

impl Verdict {
    /// As JSON, in the conformance suite's field names: `scored`, `score`, `components`,
    /// `reason_codes`, `reasons`, `is_anomaly`, `baseline_updated` (score and components
    /// `null` when not scored).
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        out.insert("scored".into(), Value::Bool(self.score.is_some()));
        let number = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
        match &self.score {
            Some(score) => {
                out.insert("score".into(), number(score.score));
                let c = &score.components;
                let components = [
                    ("time", c.time),
                    ("ip", c.ip),
                    ("location", c.location),
                    ("type", c.kind),
                    ("failure", c.failure),
                ];
                let mut components: serde_json::Map<String, Value> = components
                    .into_iter()
                    .map(|(name, x)| (name.to_owned(), number(x)))
                    .collect();
                if let Some(s) = &score.signals {
                    components.insert("profile".into(), number(s.profile));
                    components.insert("new_since_baseline".into(), number(s.new_since_baseline));
                    components.insert("failure_burst".into(), number(s.failure_burst));
                    components.insert("travel".into(), number(s.travel));
                }
                out.insert("components".into(), Value::Object(components));
                let codes = score
                    .codes
                    .iter()
                    .map(|c| Value::from(c.as_str()))
                    .collect();
                out.insert("reason_codes".into(), Value::Array(codes));
                let reasons = score
                    .reasons
                    .iter()
                    .map(|r| Value::from(r.as_str()))
                    .collect();
                out.insert("reasons".into(), Value::Array(reasons));
            }
            None => {
                for name in ["score", "components"] {
                    out.insert(name.into(), Value::Null);
                }
                for name in ["reason_codes", "reasons"] {
                    out.insert(name.into(), Value::Array(Vec::new()));
                }
            }
        }
        out.insert("is_anomaly".into(), Value::Bool(self.anomaly));
        out.insert("baseline_updated".into(), Value::Bool(self.learned));
        out
    }
}

/// The reasons' severity line, first: critical at 0.9, high at 0.7 (whatever the threshold).
pub(crate) fn severity(score: f64) -> (Vec<ReasonCode>, Vec<String>) {
    if score >= 0.9 {
        (
            vec![ReasonCode::Critical],
            vec![format!("critical anomaly score {score:.3}")],
        )
    } else if score >= 0.7 {
        (
            vec![ReasonCode::High],
            vec![format!("high anomaly score {score:.3}")],
        )
    } else {
        (Vec::new(), Vec::new())
    }
}

/// Distinct values per dimension a baseline keeps unless told otherwise.
pub const DEFAULT_MAX_VALUES: usize = 1_000;

/// The detector's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detector {
    /// Events a baseline learns before scoring starts (0 acts as 1).
    pub min_events: u64,
    /// Most distinct IPs, places and event types a baseline keeps, each.
    pub max_values: usize,
    threshold: f64,
    /// Dimension weights.
    pub weights: Weights,
}

impl Detector {
    /// A detector; `threshold` is clamped to [0, 1] as the reference's setter does.
    pub fn new(min_events: u64, threshold: f64, weights: Weights) -> Self {
        Detector {
            min_events,
            max_values: DEFAULT_MAX_VALUES,
            threshold: threshold.clamp(0.0, 1.0),
            weights,
        }
    }

    /// Keeps at most `n` distinct values per dimension in each baseline (at least 1).
    pub fn with_max_values(mut self, n: usize) -> Self {
        self.max_values = n.max(1);
        self
    }

    /// The threshold in use.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Scores `obs` against `baseline` (if it is ready) and learns it when it should.
    pub fn observe(&self, baseline: &mut Baseline, obs: &Observation<'_>) -> Verdict {
        if !baseline.ready {
            let evicted = baseline.learn(obs, self.max_values);
            if baseline.events >= self.min_events {
                baseline.ready = true;
            }
            return Verdict {
                score: None,
                anomaly: false,
                learned: true,
                evicted,
            };
        }
        let score = self.score(baseline, obs);
        let learned = score.score < self.threshold;
        let evicted = if learned {
            baseline.learn(obs, self.max_values)
        } else {
            0
        };
        Verdict {
            anomaly: score.score >= self.threshold,
            score: Some(score),
            learned,
            evicted,
        }
    }

    /// The score of `obs` against `baseline` as it stands.
    pub fn score(&self, baseline: &Baseline, obs: &Observation<'_>) -> Score {
        let count = |counts: &Values<Seen>, key: &str| counts.get(key).map(|s| u64::from(s.count));
        let p_hour = baseline.probability(u64::from(baseline.hours[obs.hour]), 0.01);
        let p_ip = baseline.probability(count(&baseline.ips, obs.ip).unwrap_or(0), 0.01);
        let p_geo = if obs.place.is_empty() {
            0.5
        } else {
            baseline.probability(count(&baseline.places, obs.place).unwrap_or(0), 0.01)
        };
        let p_type = baseline.probability(count(&baseline.types, obs.kind).unwrap_or(0), 0.01);
        let failure_rate = if baseline.events == 0 {
            0.0
        } else {
            baseline.failures as f64 / baseline.events as f64
        };
        let components = Components {
            time: 1.0 - p_hour,
            ip: 1.0 - p_ip,
            location: 1.0 - p_geo,
            kind: 1.0 - p_type,
            failure: if obs.failed && failure_rate < 0.1 {
                0.8
            } else {
                0.0
            },
        };
        let w = &self.weights;
        // Left to right, as the reference: another order may land one ulp away.
        let sum = components.time * w.time
            + components.ip * w.ip
            + components.location * w.location
            + components.kind * w.kind
            + components.failure * w.failure;
        let score = sum.clamp(0.0, 1.0);
        let (mut codes, mut reasons) = severity(score);
        if p_hour < 0.05 {
            codes.push(ReasonCode::Time);
            reasons.push(format!("unusual time: {:02}:00 UTC", obs.hour));
        }
        if p_ip < 0.05 {
            codes.push(ReasonCode::Ip);
            reasons.push(format!("unusual source IP: {}", obs.ip));
        }
        if !obs.place.is_empty() && p_geo < 0.05 {
            codes.push(ReasonCode::Location);
            reasons.push(format!("unusual place: {}", obs.place));
        }
        if p_type < 0.05 {
            codes.push(ReasonCode::Type);
            reasons.push(format!("unusual event type: {}", obs.kind));
        }
        if components.failure == 0.8 {
            codes.push(ReasonCode::Failure);
            reasons.push(format!(
                "a failure from an entity that fails {:.1} % of the time",
                failure_rate * 100.0
            ));
        }
        Score {
            score,
            components,
            signals: None,
            codes,
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(hour: u64, ip: &str, place: Option<&str>, status: &str) -> Value {
        let mut e = json!({"event_id": "evt_1", "timestamp": hour * 3_600_000,
            "event_type": "auth_attempt", "source_ip": ip, "user": "alice",
            "status": status, "threat_score": 0.1});
        if let Some(place) = place {
            e["metadata"] = json!({"geo_location": place});
        }
        e
    }

    #[test]
    fn the_first_events_only_learn_then_a_new_ip_from_a_new_place_at_3_am_is_flagged() {
        let fields = Fields::default();
        let detector = Detector::new(100, 0.7, Weights::default());
        let mut baseline = Baseline::default();
        for i in 0..100 {
            let data = event(9 + i % 8, "10.0.0.1", Some("US-CA"), "success");
            let obs = Observation::parse(&data, &fields).unwrap();
            let verdict = detector.observe(&mut baseline, &obs);
            assert!(verdict.learned && verdict.score.is_none());
        }
        let data = event(3, "203.0.113.9", Some("RU-MOW"), "success");
        let obs = Observation::parse(&data, &fields).unwrap();
        let verdict = detector.observe(&mut baseline, &obs);
        let score = verdict.score.unwrap();
        assert!(verdict.anomaly && !verdict.learned, "{score:?}");
        // time, ip and location never seen (0.99 each), type always (0): 0.2475 + 0.297 + 0.198.
        assert!((score.score - (0.99 * 0.25 + 0.99 * 0.30 + 0.99 * 0.20)).abs() < 1e-12);
        assert_eq!(
            score.codes,
            [
                ReasonCode::High,
                ReasonCode::Time,
                ReasonCode::Ip,
                ReasonCode::Location
            ]
        );
        assert_eq!(baseline.events, 100);
    }

    #[test]
    fn past_the_cap_the_least_recently_seen_value_goes() {
        let fields = Fields::default();
        let mut baseline = Baseline::default();
        let mut evicted = 0;
        for ip in ["1.1.1.1", "2.2.2.2", "1.1.1.1", "3.3.3.3"] {
            let data = event(9, ip, None, "success");
            let obs = Observation::parse(&data, &fields).unwrap();
            evicted += baseline.learn(&obs, 2);
        }
        // 2.2.2.2 was the least recently seen when 3.3.3.3 came.
        assert_eq!(evicted, 1);
        let ips: Vec<(&str, u32)> = baseline.ips.iter().map(|(k, s)| (k, s.count)).collect();
        assert_eq!(ips, [("1.1.1.1", 2), ("3.3.3.3", 1)]);
        assert_eq!(baseline.events, 4, "its events stay in the totals");
    }

    #[test]
    fn the_parser_refuses_what_the_reference_refuses() {
        let fields = Fields::default();
        let good = event(1, "1.2.3.4", None, "success");
        assert!(Observation::parse(&good, &fields).is_ok());
        let mut null_status = good.clone();
        null_status["status"] = Value::Null;
        assert!(!Observation::parse(&null_status, &fields).unwrap().failed);
        for (pointer, value) in [
            ("/status", json!("FAILED")),
            ("/event_type", json!("login")),
            ("/user", json!(7)),
            ("/timestamp", json!("1")),
            ("/threat_score", json!("high")),
        ] {
            let mut bad = good.clone();
            *bad.pointer_mut(pointer).unwrap() = value;
            assert!(Observation::parse(&bad, &fields).is_err(), "{pointer}");
        }
        let mut no_user = good.clone();
        no_user.as_object_mut().unwrap().remove("user");
        assert!(Observation::parse(&no_user, &fields).is_err());
    }
}
