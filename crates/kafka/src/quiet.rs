//! librdkafka reports a broker it cannot reach on every reconnect attempt (several a second,
//! through both its log and its error callbacks): one line per kind of trouble every
//! [`EVERY`], with how many were held back, keeps the log readable and the first report
//! prompt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// Least time between two lines of one kind.
pub(crate) const EVERY: Duration = Duration::from_secs(30);

/// When each kind was last written, and how many were held back since.
#[derive(Default)]
pub(crate) struct Quiet {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Quiet {
    /// Whether a line of `kind` may be written at `now`, and how many were held back before it.
    pub(crate) fn allow(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(kind) {
            Some((at, held)) if now.saturating_duration_since(*at) < EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                seen.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }

    /// librdkafka's log callback: errors and warnings rate-limited by facility, the rest at
    /// debug.
    pub(crate) fn log(&self, client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        );
        if !serious {
            tracing::debug!(target: "librdkafka", client, fac, "{message}");
            return;
        }
        if let Some(held) = self.allow(&format!("log {fac}"), Instant::now()) {
            tracing::warn!(target: "librdkafka", client, fac, held_back = held, "{message}");
        }
    }

    /// librdkafka's error callback, rate-limited by error kind.
    pub(crate) fn error(&self, client: &str, error: &KafkaError, reason: &str) {
        let kind = error
            .rdkafka_error_code()
            .map_or_else(|| error.to_string(), |code| format!("{code:?}"));
        if let Some(held) = self.allow(&kind, Instant::now()) {
            tracing::warn!(target: "librdkafka", client, %error, held_back = held, "{reason}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_with_the_count_held_back() {
        let quiet = Quiet::default();
        let t0 = Instant::now();
        assert_eq!(quiet.allow("AllBrokersDown", t0), Some(0));
        assert_eq!(
            quiet.allow("AllBrokersDown", t0 + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            quiet.allow("AllBrokersDown", t0 + Duration::from_secs(2)),
            None
        );
        assert_eq!(
            quiet.allow("Other", t0 + Duration::from_secs(2)),
            Some(0),
            "its own kind"
        );
        assert_eq!(quiet.allow("AllBrokersDown", t0 + EVERY), Some(2));
        assert_eq!(quiet.allow("AllBrokersDown", t0 + EVERY), None);
    }
}
