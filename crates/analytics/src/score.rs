//! What a model makes of one event: the weighted components, the `robust` model's signals,
//! the reasons in the reference's order, and the verdict both models return.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
