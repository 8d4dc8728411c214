//! Retries: which answers are worth another try (timeouts, 429, 5xx; never another 4xx), and
//! how long to wait: what the provider asks (`retry-after-ms`, then `retry-after` in seconds or
//! as an HTTP date), else a doubling backoff with full jitter, capped.

use std::time::{Duration, SystemTime};

/// How a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// The first backoff.
    pub base: Duration,
    /// The longest wait, asked for or not.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(500),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Whether an HTTP status is worth another attempt.
pub fn retryable(status: u16) -> bool {
    status == 429 || status == 408 || (500..600).contains(&status)
}

/// The wait a response asks for: `retry-after-ms` (OpenAI), else `retry-after` as seconds or
/// an HTTP date (relative to `now`). `header` looks a header up by its lowercase name.
pub fn asked_wait<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed: what was
    /// asked, else `base · 2^(attempt−1)` with full jitter; never above `max_wait`.
    pub fn wait(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let wait = asked.unwrap_or_else(|| {
            let doubled = self
                .base
                .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
            doubled.mul_f64(fastrand::f64())
        });
        wait.min(self.max_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn what_is_retried_and_how_long_it_waits() {
        assert!(retryable(429) && retryable(500) && retryable(503) && retryable(408));
        assert!(!retryable(400) && !retryable(401) && !retryable(404) && !retryable(422));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        assert_eq!(
            asked_wait(
                headers(&[("retry-after-ms", "250"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            asked_wait(headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            asked_wait(
                headers(&[("retry-after", "Thu, 01 Jan 2026 00:00:07 GMT")]),
                now
            ),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            asked_wait(
                headers(&[("retry-after", "Wed, 31 Dec 2025 00:00:00 GMT")]),
                now
            ),
            Some(Duration::ZERO),
            "a date past is no wait"
        );
        assert_eq!(asked_wait(headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(asked_wait(headers(&[("retry-after-ms", "-5")]), now), None);
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
        };
        for attempt in 1..=5 {
            let wait = policy.wait(attempt, None);
            let cap = Duration::from_millis(100 * 2u64.pow(attempt - 1)).min(policy.max_wait);
            assert!(wait <= cap, "attempt {attempt}: {wait:?} > {cap:?}");
        }
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }
}
