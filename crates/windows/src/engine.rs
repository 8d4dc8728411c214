//! Open windows per key, judged against the watermark: what an event joins, what is late,
//! what fires, and when a window closes.
//!
//! - An event is judged against the watermark `W` as it was before the event arrived. For
//!   each window it belongs to (for sessions, the window after merging every open session of
//!   its key it meets), if `end + allowed_lateness ≤ W` it is too late for that window;
//!   otherwise it is added, and a window that had already fired fires again as an update.
//!   An event that joins no window is late ([`Added::Late`]).
//! - A window fires when `W ≥ end`; it closes (its state freed, nothing joins it any more)
//!   when `end + allowed_lateness ≤ W`. Its last firing has `final` set: with no lateness the
//!   first firing is the last; otherwise closing fires it once more, final.
//! - The aggregate is the caller's (`A`: merged when sessions merge), updated through a
//!   closure, so the engine never sees events.

use serde::{Deserialize, Serialize};

use crate::assign::{Window, WindowSpec};

/// Something a window keeps: mergeable partials.
pub trait Merge {
    /// Adds everything `other` holds.
    fn merge(&mut self, other: &Self);
}

impl Merge for crate::Stats {
    fn merge(&mut self, other: &Self) {
        crate::Stats::merge(self, other);
    }
}

/// One open window of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Open<A> {
    /// The aggregate over every event added.
    pub agg: A,
    /// Whether it has fired (an added event then fires it again, as an update).
    pub fired: bool,
    /// Firings after the first.
    pub updates: u32,
}

impl<A: Default> Open<A> {
    fn empty() -> Self {
        Open {
            agg: A::default(),
            fired: false,
            updates: 0,
        }
    }
}

/// A window's result, to emit.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing<A> {
    /// The grouping key.
    pub key: String,
    /// The window.
    pub window: Window,
    /// Its aggregate now.
    pub agg: A,
    /// The window's last firing (it is closed).
    pub last: bool,
    /// Firings of this window before this one.
    pub update_count: u32,
}

/// What became of one event.
#[derive(Debug, PartialEq)]
pub enum Added {
    /// It joined this many windows; those that had fired fired again (pushed as updates).
    Joined(usize),
    /// Too late for every window it belongs to.
    Late,
}

/// One key's open windows, sorted by start (and so by end: fixed sizes, or sessions that
/// never overlap). A key has few (one or two tumbling, `size / slide` sliding), so a sorted
/// vector beats a tree.
#[derive(Debug)]
struct KeyWindows<A> {
    windows: Vec<(Window, Open<A>)>,
    /// Listed in `changed` since the last [`Engine::take_changed`].
    changed: bool,
}

/// The open windows of every key.
#[derive(Debug)]
pub struct Engine<A> {
    spec: WindowSpec,
    allowed_lateness: i64,
    keys: hashbrown::HashMap<String, KeyWindows<A>>,
    /// Keys whose windows changed since [`Engine::take_changed`] (each once).
    changed: Vec<String>,
}

impl<A: Default + Clone + Merge> Engine<A> {
    /// An engine with no open window.
    pub fn new(spec: WindowSpec, allowed_lateness: i64) -> Self {
        Engine {
            spec,
            allowed_lateness,
            keys: hashbrown::HashMap::new(),
            changed: Vec::new(),
        }
    }

    /// The open windows of `key`, oldest first.
    pub fn windows_of(&self, key: &str) -> Option<&[(Window, Open<A>)]> {
        self.keys.get(key).map(|k| k.windows.as_slice())
    }

    /// Whether `key` has open windows (a new key would be one more).
    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// The keys whose windows changed since the last call (added to, fired, closed).
    pub fn take_changed(&mut self) -> Vec<String> {
        for key in &self.changed {
            if let Some(k) = self.keys.get_mut(key) {
                k.changed = false;
            }
        }
        std::mem::take(&mut self.changed)
    }

    /// Puts back `key`'s open windows (from a checkpoint).
    pub fn restore(&mut self, key: String, mut windows: Vec<(Window, Open<A>)>) {
        windows.sort_unstable_by_key(|(w, _)| *w);
        if !windows.is_empty() {
            let changed = false;
            self.keys.insert(key, KeyWindows { windows, changed });
        }
    }

    /// Adds the event of time `ts` and key `key` to every window it belongs to and that is
    /// not too late for `watermark` (the watermark before this event), updating each with
    /// `add`; windows that had fired fire again, pushed to `updates`.
    pub fn add(
        &mut self,
        key: &str,
        ts: i64,
        watermark: Option<i64>,
        updates: &mut Vec<Firing<A>>,
        mut add: impl FnMut(&mut A),
    ) -> Added {
        let lateness = self.allowed_lateness;
        let open = |w: &Window| watermark.is_none_or(|wm| w.end.saturating_add(lateness) > wm);
        // Looked up before inserting: most events' keys are known, and a key costs a String.
        if !self.keys.contains_key(key) {
            // Room for the windows an event opens at once, so a key's vector rarely grows.
            let room = match self.spec {
                WindowSpec::Sliding { size, slide, .. } => (size / slide + 1).clamp(1, 64),
                _ => 2,
            };
            let entry = KeyWindows {
                windows: Vec::with_capacity(usize::try_from(room).unwrap_or(2)),
                changed: false,
            };
            self.keys.insert(key.to_owned(), entry);
        }
        let Some(entry) = self.keys.get_mut(key) else {
            return Added::Late;
        };
        let windows = &mut entry.windows;
        let fire_again = |window: Window, slot: &mut Open<A>, updates: &mut Vec<Firing<A>>| {
            if slot.fired {
                slot.updates += 1;
                updates.push(Firing {
                    key: key.to_owned(),
                    window,
                    agg: slot.agg.clone(),
                    last: false,
                    update_count: slot.updates,
                });
            }
        };
        let mut joined = 0;
        if let WindowSpec::Session { gap } = self.spec {
            let mut merged = Window {
                start: ts,
                end: ts.saturating_add(gap),
            };
            // Sessions of a key never overlap: those meeting this one are a run.
            let from = windows.partition_point(|(w, _)| w.end < merged.start);
            let to = from + windows[from..].partition_point(|(w, _)| w.start <= merged.end);
            for (w, _) in &windows[from..to] {
                merged = merged.span(w);
            }
            if open(&merged) {
                let mut slot: Open<A> = Open::empty();
                for (_, old) in windows.drain(from..to) {
                    slot.agg.merge(&old.agg);
                    slot.fired |= old.fired;
                    slot.updates += old.updates;
                }
                add(&mut slot.agg);
                fire_again(merged, &mut slot, updates);
                windows.insert(from, (merged, slot));
                joined = 1;
            }
        } else {
            for window in self.spec.each(ts) {
                if !open(&window) {
                    continue;
                }
                let at = match windows.binary_search_by_key(&window, |(w, _)| *w) {
                    Ok(at) => at,
                    Err(at) => {
                        windows.insert(at, (window, Open::empty()));
                        at
                    }
                };
                let slot = &mut windows[at].1;
                add(&mut slot.agg);
                fire_again(window, slot, updates);
                joined += 1;
            }
        }
        if joined == 0 {
            if windows.is_empty() {
                self.keys.remove(key);
            }
            return Added::Late;
        }
        if !entry.changed {
            entry.changed = true;
            self.changed.push(key.to_owned());
        }
        Added::Joined(joined)
    }

    /// Fires every window the watermark has passed and closes those past their lateness,
    /// pushing the firings to `firings` (by window, then key).
    pub fn advance(&mut self, watermark: i64, firings: &mut Vec<Firing<A>>) {
        let lateness = self.allowed_lateness;
        let first = firings.len();
        let mut emptied = false;
        for (key, entry) in &mut self.keys {
            let windows = &mut entry.windows;
            if windows.first().is_none_or(|(w, _)| w.end > watermark) {
                continue;
            }
            if !entry.changed {
                entry.changed = true;
                self.changed.push(key.clone());
            }
            // Those past their lateness close: a prefix, moved out (their last firing).
            let closed =
                windows.partition_point(|(w, _)| w.end.saturating_add(lateness) <= watermark);
            for (window, mut slot) in windows.drain(..closed) {
                if slot.fired {
                    slot.updates += 1;
                }
                firings.push(Firing {
                    key: key.clone(),
                    window,
                    agg: slot.agg,
                    last: true,
                    update_count: slot.updates,
                });
            }
            emptied |= windows.is_empty();
            // The rest that the watermark passed fire once, not last (lateness keeps them).
            for (window, slot) in windows.iter_mut() {
                if window.end > watermark {
                    break;
                }
                if !slot.fired {
                    slot.fired = true;
                    firings.push(Firing {
                        key: key.clone(),
                        window: *window,
                        agg: slot.agg.clone(),
                        last: false,
                        update_count: slot.updates,
                    });
                }
            }
        }
        if emptied {
            self.keys.retain(|_, entry| !entry.windows.is_empty());
        }
        firings[first..].sort_unstable_by(|a, b| (a.window, &a.key).cmp(&(b.window, &b.key)));
    }

    /// Open windows, all keys together.
    pub fn open_windows(&self) -> usize {
        self.keys.values().map(|k| k.windows.len()).sum()
    }

    /// Keys with an open window.
    pub fn open_keys(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::Watermarks;
    use proptest::prelude::*;

    /// Which events (by index) a window holds: exact, to compare with a brute-force model.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Members(BTreeSet<usize>);

    impl Merge for Members {
        fn merge(&mut self, other: &Self) {
            self.0.extend(other.0.iter().copied());
        }
    }

    /// Feeds `(key, ts)` events in order with one source's watermark (max − `ooo`), advancing
    /// after each; then closes everything. Returns every firing and the late events.
    fn run(
        spec: WindowSpec,
        ooo: u64,
        lateness: i64,
        events: &[(&str, i64)],
    ) -> (Vec<Firing<Members>>, Vec<usize>) {
        let mut engine = Engine::<Members>::new(spec, lateness);
        let mut clock = Watermarks::new(Duration::from_millis(ooo), None);
        let now = Instant::now();
        let (mut firings, mut late) = (Vec::new(), Vec::new());
        for (i, (key, ts)) in events.iter().enumerate() {
            let added = engine.add(key, *ts, clock.current(), &mut firings, |m| {
                m.0.insert(i);
            });
            if added == Added::Late {
                late.push(i);
            }
            if let Some(w) = clock.observe("s", *ts, now) {
                engine.advance(w, &mut firings);
            }
        }
        engine.advance(i64::MAX, &mut firings);
        assert_eq!(engine.open_windows(), 0);
        (firings, late)
    }

    fn members(f: &Firing<Members>) -> Vec<usize> {
        f.agg.0.iter().copied().collect()
    }

    #[test]
    fn tumbling_in_order_out_of_order_and_late() {
        let spec = WindowSpec::Tumbling {
            size: 10,
            offset: 0,
        };
        // No lateness: 3 comes after the watermark passed 10, so [0, 10) had closed.
        let (firings, late) = run(
            spec,
            0,
            0,
            &[("k", 1), ("k", 5), ("k", 12), ("k", 3), ("k", 25)],
        );
        assert_eq!(late, [3]);
        let shown: Vec<(Window, Vec<usize>, bool, u32)> = firings
            .iter()
            .map(|f| (f.window, members(f), f.last, f.update_count))
            .collect();
        assert_eq!(
            shown,
            [
                (Window { start: 0, end: 10 }, vec![0, 1], true, 0),
                (Window { start: 10, end: 20 }, vec![2], true, 0),
                (Window { start: 20, end: 30 }, vec![4], true, 0),
            ]
        );
        // 5 ms of lateness: 3 updates [0, 10), which then closes with a final firing.
        let (firings, late) = run(
            spec,
            0,
            5,
            &[("k", 1), ("k", 5), ("k", 12), ("k", 3), ("k", 25)],
        );
        assert!(late.is_empty());
        let first: Vec<(Vec<usize>, bool, u32)> = firings
            .iter()
            .filter(|f| f.window.start == 0)
            .map(|f| (members(f), f.last, f.update_count))
            .collect();
        assert_eq!(
            first,
            [
                (vec![0, 1], false, 0),
                (vec![0, 1, 3], false, 1),
                (vec![0, 1, 3], true, 2),
            ]
        );
        // Out of order within max_out_of_orderness: nothing late, nothing re-fired.
        let (firings, late) = run(spec, 10, 0, &[("k", 12), ("k", 3), ("k", 15), ("k", 7)]);
        assert!(late.is_empty());
        assert_eq!(members(&firings[0]), [1, 3]);
        assert!(firings.iter().all(|f| f.update_count == 0));
    }

    #[test]
    fn sliding_adds_to_every_open_window() {
        let spec = WindowSpec::Sliding {
            size: 10,
            slide: 5,
            offset: 0,
        };
        let (firings, late) = run(spec, 0, 0, &[("k", 7), ("k", 12), ("k", 6)]);
        // 6 arrives at W = 12: [0, 10) is closed, [5, 15) is still open.
        assert!(late.is_empty());
        let by_window: Vec<(i64, Vec<usize>)> = firings
            .iter()
            .map(|f| (f.window.start, members(f)))
            .collect();
        assert_eq!(by_window, [(0, vec![0]), (5, vec![0, 1, 2]), (10, vec![1])]);
    }

    #[test]
    fn sessions_merge_when_an_event_bridges_them_and_keys_stay_apart() {
        let spec = WindowSpec::Session { gap: 10 };
        let events = [("a", 1), ("a", 15), ("b", 5), ("a", 8), ("a", 40)];
        let (firings, late) = run(spec, 100, 0, &events);
        assert!(late.is_empty());
        let shown: Vec<(&str, Window, Vec<usize>)> = firings
            .iter()
            .map(|f| (f.key.as_str(), f.window, members(f)))
            .collect();
        assert_eq!(
            shown,
            [
                ("a", Window { start: 1, end: 25 }, vec![0, 1, 3]),
                ("b", Window { start: 5, end: 15 }, vec![2]),
                ("a", Window { start: 40, end: 50 }, vec![4]),
            ]
        );
        // A session closed by the watermark takes no more: 30 would have bridged nothing.
        let (_, late) = run(spec, 0, 0, &[("a", 1), ("a", 100), ("a", 5)]);
        assert_eq!(late, [2]);
    }

    /// The brute-force model: for each event, the watermark before it (max − ooo, never
    /// decreasing), then every window holding it by enumeration; it is added where
    /// `end + lateness > W`. Returns each window's members.
    fn model(
        size: i64,
        slide: i64,
        offset: i64,
        ooo: i64,
        lateness: i64,
        events: &[i64],
    ) -> BTreeMap<Window, Vec<usize>> {
        let mut windows: BTreeMap<Window, Vec<usize>> = BTreeMap::new();
        let mut max: Option<i64> = None;
        for (i, ts) in events.iter().enumerate() {
            let w = max.map(|m| m - ooo);
            let lowest = (ts - size - offset).div_euclid(slide) - 1;
            let highest = (ts - offset).div_euclid(slide) + 1;
            for k in lowest..=highest {
                let window = Window {
                    start: k * slide + offset,
                    end: k * slide + offset + size,
                };
                if window.contains(*ts) && w.is_none_or(|w| window.end + lateness > w) {
                    windows.entry(window).or_default().push(i);
                }
            }
            max = Some(max.map_or(*ts, |m| m.max(*ts)));
        }
        windows
    }

    /// A separate simulation of sessions: per event (against the watermark before it), the
    /// open sessions of its key meeting `[ts, ts + gap)` merge with it unless the result is
    /// past its lateness (then the event is late); after each event, sessions past their
    /// lateness close. Returns each closed session's members.
    fn session_model(
        gap: i64,
        ooo: i64,
        lateness: i64,
        events: &[(&str, i64)],
    ) -> BTreeMap<(String, Window), Vec<usize>> {
        let mut open: Vec<(String, Window, Vec<usize>)> = Vec::new();
        let mut closed = BTreeMap::new();
        let mut max: Option<i64> = None;
        let close = |open: &mut Vec<(String, Window, Vec<usize>)>,
                     closed: &mut BTreeMap<(String, Window), Vec<usize>>,
                     w: i64| {
            let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(open)
                .into_iter()
                .partition(|(_, window, _)| window.end + lateness <= w);
            *open = keep;
            for (key, window, mut members) in done {
                members.sort_unstable();
                closed.insert((key, window), members);
            }
        };
        for (i, (key, ts)) in events.iter().enumerate() {
            let w = max.map(|m| m - ooo);
            let candidate = Window {
                start: *ts,
                end: ts + gap,
            };
            let meeting: Vec<usize> = (0..open.len())
                .filter(|j| open[*j].0 == *key && open[*j].1.meets(&candidate))
                .collect();
            let merged = meeting.iter().fold(candidate, |m, j| m.span(&open[*j].1));
            if w.is_none_or(|w| merged.end + lateness > w) {
                let mut members = vec![i];
                for j in meeting.into_iter().rev() {
                    members.extend(open.remove(j).2);
                }
                open.push(((*key).to_owned(), merged, members));
            }
            max = Some(max.map_or(*ts, |m| m.max(*ts)));
            if let Some(m) = max {
                close(&mut open, &mut closed, m - ooo);
            }
        }
        close(&mut open, &mut closed, i64::MAX);
        closed
    }

    proptest! {
        #[test]
        fn every_sessions_final_firing_matches_a_separate_simulation(
            events in proptest::collection::vec((0usize..3, 0i64..2_000), 1..80),
            gap in 1i64..300,
            ooo in 0i64..300,
            lateness in 0i64..300,
        ) {
            let keys = ["a", "b", "c"];
            let keyed: Vec<(&str, i64)> = events.iter().map(|(k, ts)| (keys[*k], *ts)).collect();
            let (firings, _) = run(WindowSpec::Session { gap }, ooo as u64, lateness, &keyed);
            let finals: BTreeMap<(String, Window), Vec<usize>> = firings
                .iter()
                .filter(|f| f.last)
                .map(|f| ((f.key.clone(), f.window), members(f)))
                .collect();
            prop_assert_eq!(finals, session_model(gap, ooo, lateness, &keyed));
        }

        #[test]
        fn every_windows_last_firing_is_exactly_what_a_batch_model_adds_to_it(
            events in proptest::collection::vec(0i64..3_000, 1..80),
            size in 1i64..400,
            slide_part in 1i64..400,
            tumbling in proptest::bool::ANY,
            offset in -200i64..200,
            ooo in 0i64..300,
            lateness in 0i64..300,
        ) {
            let slide = if tumbling { size } else { slide_part };
            let spec = if tumbling {
                WindowSpec::Tumbling { size, offset }
            } else {
                WindowSpec::Sliding { size, slide, offset }
            };
            let keyed: Vec<(&str, i64)> = events.iter().map(|ts| ("k", *ts)).collect();
            let (firings, _) = run(spec, ooo as u64, lateness, &keyed);
            let mut last: BTreeMap<Window, (Vec<usize>, bool)> = BTreeMap::new();
            for f in &firings {
                last.insert(f.window, (members(f), f.last));
            }
            prop_assert!(last.values().all(|(_, is_last)| *is_last), "every window ends final");
            let got: BTreeMap<Window, Vec<usize>> =
                last.into_iter().map(|(w, (m, _))| (w, m)).collect();
            prop_assert_eq!(got, model(size, slide, offset, ooo, lateness, &events));
        }
    }
}
