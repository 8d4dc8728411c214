//! A circuit breaker per provider: closed (calls go) → open after `failure_threshold`
//! failures in a row (calls are refused at once, so a dead provider costs no time) → after
//! `cool_down`, half-open: up to `half_open_probes` calls go; their first success closes it,
//! a failure opens it again. A pure state machine: the caller passes the time.

use std::time::{Duration, Instant};

/// The breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open it.
    pub failure_threshold: u32,
    /// How long it stays open before letting probes through.
    pub cool_down: Duration,
    /// Calls let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

/// Where the breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// Probes go; the rest are refused.
    HalfOpen,
}

impl BreakerState {
    /// The state's name, as in `/health` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// 0 closed, 1 half-open, 2 open (a gauge).
    pub fn level(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// One provider's breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
    opened_at: Option<Instant>,
    probes: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: BreakerState::Closed,
            failures: 0,
            opened_at: None,
            probes: 0,
        }
    }

    /// Its state at `now` (an open breaker past its cool-down reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) if now.duration_since(at) >= self.config.cool_down => {
                BreakerState::HalfOpen
            }
            (state, _) => state,
        }
    }

    /// Whether a call may go at `now` (a half-open breaker counts the probe it lets through).
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.state(now) == BreakerState::HalfOpen && self.state == BreakerState::Open {
            self.state = BreakerState::HalfOpen;
            self.probes = 0;
        }
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let go = self.probes < self.config.half_open_probes;
                self.probes += u32::from(go);
                go
            }
        }
    }

    /// A call succeeded: the breaker closes.
    pub fn success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.opened_at = None;
    }

    /// A call failed (a timeout, a 5xx, a 429 after its retries) at `now`.
    pub fn failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let trips = match self.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.failures >= self.config.failure_threshold.max(1),
            BreakerState::Open => false,
        };
        if trips {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_opens_half_opens_and_closes_or_reopens() {
        let config = BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
            half_open_probes: 2,
        };
        let mut b = Breaker::new(config);
        let t0 = Instant::now();
        // Two failures and a success: still closed, the count starts again.
        b.failure(t0);
        b.failure(t0);
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.allow(t0));
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open, "the third in a row");
        assert!(!b.allow(t0 + Duration::from_secs(9)));
        // Cool-down over: two probes go, the third waits.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.allow(t1));
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        // A probe fails: open again, from now.
        b.failure(t1);
        assert_eq!(b.state(t1 + Duration::from_secs(9)), BreakerState::Open);
        let t2 = t1 + Duration::from_secs(10);
        assert!(b.allow(t2));
        b.success();
        assert_eq!(b.state(t2), BreakerState::Closed);
        assert!(b.allow(t2) && b.allow(t2) && b.allow(t2));
    }
}
