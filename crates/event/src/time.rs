//! Millisecond timestamps and the forms users write them in (epoch ms or RFC 3339).

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

/// The latest accepted time: the largest a ULID can hold (year 10889).
const MAX_MILLIS: u64 = (1 << 48) - 1;

impl Timestamp {
    /// The latest time an event id can carry (year 10889).
    pub const MAX: Self = Self(MAX_MILLIS);

    /// Returns the timestamp for `ms` milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Returns the milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Returns the current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(MAX_MILLIS))
            .unwrap_or(0);
        Self(ms.min(MAX_MILLIS))
    }

    /// Returns this time minus `ms` milliseconds, stopping at the epoch.
    pub fn saturating_sub_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_sub(ms))
    }

    /// Reads an event time out of a payload value: epoch milliseconds (integer) or an RFC 3339
    /// string. Returns `None` for anything else or a time outside what ids can carry.
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => n.as_u64().filter(|ms| *ms <= MAX_MILLIS).map(Self),
            Value::String(s) => parse_rfc3339(s),
            _ => None,
        }
    }
}

impl Timestamp {
    /// Reads a query's time bound: as [`FromStr`], except that an RFC 3339 time before 1970 is
    /// the epoch (nothing is older), so every RFC 3339 time is a valid bound.
    pub fn parse_bound(s: &str) -> Result<Self, TimestampParseError> {
        s.parse()
            .or_else(|e| match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(at) if at.unix_timestamp_nanos() < 0 => Ok(Self(0)),
                _ => Err(e),
            })
    }
}

/// Reads a time that may be before 1970 as signed epoch milliseconds: an integer, or RFC 3339.
pub fn parse_signed_millis(s: &str) -> Option<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()?;
    (ms <= MAX_MILLIS).then_some(Timestamp(ms))
}

/// Why a string is not a time.
#[derive(Debug, thiserror::Error)]
#[error("invalid time `{input}`: expected epoch milliseconds or RFC 3339 (2026-01-31T12:00:00Z)")]
pub struct TimestampParseError {
    input: String,
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = match s.parse::<u64>() {
            Ok(ms) => (ms <= MAX_MILLIS).then_some(Self(ms)),
            Err(_) => parse_rfc3339(s),
        };
        parsed.ok_or_else(|| TimestampParseError {
            input: s.chars().take(64).collect(),
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_millis_and_rfc3339() {
        assert_eq!(
            "1700000000000".parse::<Timestamp>().unwrap().as_millis(),
            1_700_000_000_000
        );
        let t: Timestamp = "2023-11-14T22:13:20Z".parse().unwrap();
        assert_eq!(t.as_millis(), 1_700_000_000_000);
        let t: Timestamp = "2023-11-14T23:13:20.5+01:00".parse().unwrap();
        assert_eq!(t.as_millis(), 1_700_000_000_500);
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!("-5".parse::<Timestamp>().is_err());
    }

    #[test]
    fn a_bound_before_the_epoch_is_the_epoch() {
        let bound = |s| Timestamp::parse_bound(s).map(Timestamp::as_millis).ok();
        assert_eq!(bound("1969-12-31T23:59:59Z"), Some(0));
        assert_eq!(bound("0001-01-01T00:00:00+05:00"), Some(0));
        assert_eq!(bound("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(bound("-5"), None);
        assert_eq!(bound("yesterday"), None);
        assert_eq!(parse_signed_millis("1969-12-31T23:59:59.9995Z"), Some(-1));
        assert_eq!(parse_signed_millis("-5"), Some(-5));
        assert_eq!(parse_signed_millis("soon"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_strings_parse_or_err(s in "(?s).{0,64}") {
            let _ = s.parse::<Timestamp>();
            let _ = Timestamp::from_json(&Value::String(s.clone()));
            let _ = s.parse::<crate::EventId>();
            let _ = s.parse::<crate::Priority>();
        }
    }

    #[test]
    fn reads_event_time_from_json() {
        assert_eq!(Timestamp::from_json(&json!(42)), Some(Timestamp(42)));
        assert_eq!(Timestamp::from_json(&json!(-1)), None);
        assert_eq!(Timestamp::from_json(&json!(1.5)), None);
        assert_eq!(Timestamp::from_json(&json!(u64::MAX)), None);
        assert_eq!(Timestamp::from_json(&json!("not a time")), None);
        assert_eq!(
            Timestamp::from_json(&json!("1970-01-01T00:00:01Z")),
            Some(Timestamp(1000))
        );
    }
}
