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

use crate::observation::Observation;
use crate::score::{Components, ReasonCode, Score, Verdict, Weights, severity};
use crate::values::Values;

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
    use crate::Fields;
    use serde_json::{Value, json};

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
