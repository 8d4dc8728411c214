//! Which windows an event time belongs to.
//!
//! - Tumbling `size`, `offset`: the one window `[start, start + size)` with
//!   `start = floor((ts − offset) / size) · size + offset` (floor, also before the epoch).
//! - Sliding `size`, `slide`, `offset`: every `[start, start + size)` with
//!   `start = k · slide + offset` and `start ≤ ts < start + size`, oldest first.
//! - Session `gap`: the event opens `[ts, ts + gap)`; windows of one key that overlap or touch
//!   merge, which only the engine (holding the open windows) can do.

use serde::{Deserialize, Serialize};

/// A half-open event-time interval `[start, end)`, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First instant in it.
    pub start: i64,
    /// First instant after it.
    pub end: i64,
}

impl Window {
    /// Whether `ts` is in it.
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether it and `other` overlap or touch (session windows that do merge).
    pub fn meets(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The smallest window covering both.
    pub fn span(&self, other: &Window) -> Window {
        Window {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A window kind with its sizes, in ms (all > 0; `slide ≤ size` is not required: a slide
/// larger than the size leaves gaps, and an event in one belongs to no window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows.
    Tumbling {
        /// Length.
        size: i64,
        /// Shift of every boundary.
        offset: i64,
    },
    /// Fixed windows starting every `slide`.
    Sliding {
        /// Length.
        size: i64,
        /// Distance between starts.
        slide: i64,
        /// Shift of every boundary.
        offset: i64,
    },
    /// Activity separated by at least `gap`.
    Session {
        /// Longest quiet time inside one session.
        gap: i64,
    },
}

impl WindowSpec {
    /// The windows `ts` belongs to, oldest first (for a session: the window it opens).
    pub fn windows(&self, ts: i64) -> Vec<Window> {
        self.each(ts).collect()
    }

    /// [`WindowSpec::windows`] without collecting them (the engine calls it per event).
    pub fn each(&self, ts: i64) -> impl Iterator<Item = Window> + use<> {
        let (first, step, count, size) = match *self {
            WindowSpec::Tumbling { size, offset } => (floor_to(ts, size, offset), size, 1, size),
            WindowSpec::Sliding {
                size,
                slide,
                offset,
            } => {
                // The latest start at or before ts; the windows back from it that still hold ts
                // are those whose start is above ts − size.
                let latest = floor_to(ts, slide, offset);
                let reach = latest.saturating_sub(ts.saturating_sub(size));
                let count = if reach > 0 {
                    (reach - 1) / slide + 1
                } else {
                    0
                };
                let first = latest.saturating_sub((count - 1).max(0).saturating_mul(slide));
                (first, slide, count, size)
            }
            WindowSpec::Session { gap } => (ts, gap, 1, gap),
        };
        (0..count).map(move |k| {
            let start = first.saturating_add(k.saturating_mul(step));
            Window {
                start,
                end: start.saturating_add(size),
            }
        })
    }
}

/// The largest `k · step + offset` at or below `ts`.
fn floor_to(ts: i64, step: i64, offset: i64) -> i64 {
    let shifted = ts.saturating_sub(offset);
    shifted
        .div_euclid(step)
        .saturating_mul(step)
        .saturating_add(offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn tumbling_floors_also_before_the_epoch_and_with_an_offset() {
        let t = WindowSpec::Tumbling {
            size: 1_000,
            offset: 0,
        };
        assert_eq!(t.windows(0), [w(0, 1_000)]);
        assert_eq!(t.windows(999), [w(0, 1_000)]);
        assert_eq!(t.windows(1_000), [w(1_000, 2_000)]);
        assert_eq!(t.windows(-1), [w(-1_000, 0)]);
        assert_eq!(t.windows(-1_000), [w(-1_000, 0)]);
        assert_eq!(t.windows(-1_001), [w(-2_000, -1_000)]);
        let shifted = WindowSpec::Tumbling {
            size: 1_000,
            offset: 250,
        };
        assert_eq!(shifted.windows(249), [w(-750, 250)]);
        assert_eq!(shifted.windows(250), [w(250, 1_250)]);
    }

    #[test]
    fn sliding_gives_every_window_holding_the_time_oldest_first() {
        let s = WindowSpec::Sliding {
            size: 10_000,
            slide: 1_000,
            offset: 0,
        };
        let windows = s.windows(12_500);
        assert_eq!(windows.len(), 10);
        assert_eq!(windows[0], w(3_000, 13_000));
        assert_eq!(windows[9], w(12_000, 22_000));
        assert_eq!(s.windows(-500)[9], w(-1_000, 9_000));
        // A slide larger than the size leaves gaps.
        let gappy = WindowSpec::Sliding {
            size: 1_000,
            slide: 5_000,
            offset: 0,
        };
        assert_eq!(gappy.windows(500), [w(0, 1_000)]);
        assert!(gappy.windows(1_500).is_empty());
    }

    #[test]
    fn sessions_open_at_the_event_and_merge_when_they_meet() {
        let s = WindowSpec::Session { gap: 30 };
        let a = s.windows(100)[0];
        let b = s.windows(130)[0];
        let c = s.windows(161)[0];
        assert_eq!(a, w(100, 130));
        assert!(a.meets(&b), "touching windows merge");
        assert_eq!(a.span(&b), w(100, 160));
        assert!(!a.span(&b).meets(&c));
    }

    proptest! {
        #[test]
        fn assigned_windows_are_exactly_those_holding_the_time(
            ts in -100_000i64..100_000,
            size in 1i64..5_000,
            slide in 1i64..5_000,
            offset in -3_000i64..3_000,
        ) {
            let spec = WindowSpec::Sliding { size, slide, offset };
            let got = spec.windows(ts);
            // Brute force: every start k · slide + offset near ts.
            let lowest = (ts - size - offset).div_euclid(slide) - 1;
            let highest = (ts - offset).div_euclid(slide) + 1;
            let expected: Vec<Window> = (lowest..=highest)
                .map(|k| Window { start: k * slide + offset, end: k * slide + offset + size })
                .filter(|w| w.contains(ts))
                .collect();
            prop_assert_eq!(got, expected);
            let tumbling = WindowSpec::Tumbling { size, offset }.windows(ts);
            prop_assert_eq!(tumbling.len(), 1);
            prop_assert!(tumbling[0].contains(ts));
            prop_assert_eq!((tumbling[0].start - offset).rem_euclid(size), 0);
        }
    }
}
