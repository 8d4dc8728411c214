//! The event-time clock. `W` = the largest event time seen per source, the minimum over the
//! active sources, minus `max_out_of_orderness`; it never decreases. A source that has sent
//! nothing for `idle_timeout` (processing time) stops holding it back until it sends again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Per-source event-time progress and the watermark over them.
#[derive(Debug, Clone)]
pub struct Watermarks {
    max_out_of_orderness: i64,
    idle_timeout: Option<Duration>,
    /// Per source: the largest event time seen and when it last sent (processing time).
    sources: BTreeMap<String, (i64, Instant)>,
    current: Option<i64>,
}

impl Watermarks {
    /// A clock with no source yet (no watermark).
    pub fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        Watermarks {
            max_out_of_orderness: i64::try_from(max_out_of_orderness.as_millis())
                .unwrap_or(i64::MAX),
            idle_timeout,
            sources: BTreeMap::new(),
            current: None,
        }
    }

    /// The watermark (`None` before any event).
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Records event time `ts` from `source` at processing time `now`; returns the watermark
    /// after it.
    pub fn observe(&mut self, source: &str, ts: i64, now: Instant) -> Option<i64> {
        match self.sources.get_mut(source) {
            Some((max, seen)) => {
                *max = (*max).max(ts);
                *seen = now;
            }
            None => {
                self.sources.insert(source.to_owned(), (ts, now));
            }
        }
        self.advance(now)
    }

    /// Moves the watermark to what the active sources allow at `now` (an idle source may have
    /// stopped holding it back); returns it.
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let idle = |seen: &Instant| {
            self.idle_timeout
                .is_some_and(|t| now.saturating_duration_since(*seen) >= t)
        };
        let active = self.sources.values().filter(|(_, seen)| !idle(seen));
        let mut low = active.map(|(max, _)| *max).min();
        if low.is_none() {
            // Every source idle: time is what the most advanced one has seen.
            low = self.sources.values().map(|(max, _)| *max).max();
        }
        if let Some(low) = low {
            let candidate = low.saturating_sub(self.max_out_of_orderness);
            self.current = Some(self.current.map_or(candidate, |w| w.max(candidate)));
        }
        self.current
    }

    /// Each source's largest event time, for a checkpoint (processing times are not kept: a
    /// restored source counts as active until it is idle again).
    pub fn sources(&self) -> impl Iterator<Item = (&str, i64)> {
        self.sources
            .iter()
            .map(|(name, (max, _))| (name.as_str(), *max))
    }

    /// Restores a checkpointed clock at processing time `now`.
    pub fn restore(
        &mut self,
        current: Option<i64>,
        sources: impl IntoIterator<Item = (String, i64)>,
        now: Instant,
    ) {
        self.current = current;
        self.sources = sources
            .into_iter()
            .map(|(s, max)| (s, (max, now)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_active_source_holds_time_back_and_it_never_goes_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut w = Watermarks::new(Duration::from_millis(100), Some(Duration::from_secs(5)));
        assert_eq!(w.current(), None);
        assert_eq!(w.observe("a", 1_000, at(0)), Some(900));
        assert_eq!(w.observe("b", 500, at(0)), Some(900), "never decreases");
        assert_eq!(w.observe("a", 3_000, at(10)), Some(900), "b holds it back");
        assert_eq!(w.observe("b", 2_000, at(20)), Some(1_900));
        assert_eq!(
            w.observe("a", 2_500, at(30)),
            Some(1_900),
            "out of order: no change"
        );
        // b goes quiet: after 5 s it no longer holds time back.
        assert_eq!(w.advance(at(4_000)), Some(1_900));
        assert_eq!(w.observe("a", 4_000, at(5_100)), Some(3_900));
        // b sends again: active, but the watermark does not go back.
        assert_eq!(w.observe("b", 2_100, at(5_200)), Some(3_900));
    }

    #[test]
    fn every_source_idle_leaves_time_where_the_furthest_one_is() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::ZERO, Some(Duration::from_secs(1)));
        w.observe("a", 10, start);
        w.observe("b", 50, start);
        assert_eq!(w.current(), Some(10));
        assert_eq!(w.advance(start + Duration::from_secs(2)), Some(50));
        let sources: Vec<(&str, i64)> = w.sources().collect();
        assert_eq!(sources, [("a", 10), ("b", 50)]);
        let mut restored = Watermarks::new(Duration::ZERO, None);
        restored.restore(Some(50), [("a".to_owned(), 10)], start);
        assert_eq!(restored.advance(start), Some(50));
    }
}
