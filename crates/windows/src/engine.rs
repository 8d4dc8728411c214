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
    /// Events added since its last firing (what an early firing would report anew).
    pub pending: u32,
    /// Changed since the last [`Engine::take_changes`].
    #[serde(skip)]
    pub dirty: bool,
    /// Handed to [`Engine::take_changes`] since it opened: a stored copy holds it. A window
    /// that opens and closes between two calls is never stored, nor deleted.
    #[serde(skip)]
    pub stored: bool,
}

impl<A: Default> Open<A> {
    fn empty() -> Self {
        Open {
            agg: A::default(),
            fired: false,
            updates: 0,
            pending: 0,
            dirty: true,
            stored: false,
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
    /// Firings of this window after its first watermark firing, up to this one.
    pub update_count: u32,
    /// An early firing: the watermark has not passed the window's end yet.
    pub early: bool,
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
    /// Listed in `changed` since the last [`Engine::take_changes`].
    changed: bool,
}

/// The open windows of every key.
#[derive(Debug)]
pub struct Engine<A> {
    spec: WindowSpec,
    allowed_lateness: i64,
    keys: hashbrown::HashMap<String, KeyWindows<A>>,
    /// Keys with a window changed since [`Engine::take_changes`] (each once).
    changed: Vec<String>,
    /// Fire a window early once it has taken this many events since its last firing.
    every_events: Option<u32>,
    /// Fired windows merged into a session with another start (their results are void).
    retracted: Vec<(String, Window)>,
    /// Windows gone since the last [`Engine::take_changes`]: closed, or merged into a session
    /// with another start.
    gone: Vec<(String, Window)>,
    /// No window fires or closes before the watermark reaches this (a lower bound, exact
    /// after [`Engine::advance`]): callers advance only when it is due.
    next_due: i64,
}

impl<A: Default + Clone + Merge> Engine<A> {
    /// An engine with no open window.
    pub fn new(spec: WindowSpec, allowed_lateness: i64) -> Self {
        Engine {
            spec,
            allowed_lateness,
            keys: hashbrown::HashMap::new(),
            changed: Vec::new(),
            every_events: None,
            retracted: Vec::new(),
            gone: Vec::new(),
            next_due: i64::MAX,
        }
    }

    /// Also fires a window early each time it has taken `n` events since its last firing.
    pub fn fire_every(mut self, n: u32) -> Self {
        self.every_events = Some(n.max(1));
        self
    }

    /// The fired windows that merged into a session starting elsewhere since the last call
    /// (their results are superseded by the merged window's).
    pub fn take_retracted(&mut self) -> Vec<(String, Window)> {
        std::mem::take(&mut self.retracted)
    }

    /// The open windows of `key`, oldest first.
    pub fn windows_of(&self, key: &str) -> Option<&[(Window, Open<A>)]> {
        self.keys.get(key).map(|k| k.windows.as_slice())
    }

    /// Whether `key` has open windows (a new key would be one more).
    pub fn has_key(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Hands every window change since the last call to `change`: first the windows gone
    /// (`None`), then those added to, fired or otherwise changed (`Some`), so a stored copy
    /// (by key and window start) that applies them in order matches the engine.
    pub fn take_changes(&mut self, mut change: impl FnMut(&str, Window, Option<&Open<A>>)) {
        for (key, window) in self.gone.drain(..) {
            change(&key, window, None);
        }
        for key in self.changed.drain(..) {
            let Some(entry) = self.keys.get_mut(&key) else {
                continue;
            };
            entry.changed = false;
            for (window, slot) in &mut entry.windows {
                if slot.dirty {
                    slot.dirty = false;
                    slot.stored = true;
                    change(&key, *window, Some(slot));
                }
            }
        }
    }

    /// Puts back `key`'s open windows (from a checkpoint).
    pub fn restore(&mut self, key: String, mut windows: Vec<(Window, Open<A>)>) {
        windows.sort_unstable_by_key(|(w, _)| *w);
        for (_, slot) in &mut windows {
            slot.dirty = false;
            slot.stored = true;
        }
        if !windows.is_empty() {
            self.next_due = self.next_due.min(due(&windows, self.allowed_lateness));
            let changed = false;
            self.keys.insert(key, KeyWindows { windows, changed });
        }
    }

    /// The watermark at which [`Engine::advance`] next has something to do, if any window is
    /// open (it may be earlier than needed, never later).
    pub fn next_due(&self) -> Option<i64> {
        (self.next_due != i64::MAX).then_some(self.next_due)
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
        let every_events = self.every_events;
        // After an event joins: a fired window fires again (an update); one not yet fired
        // fires early when it has taken `every_events` since its last firing.
        let fire_again = |window: Window, slot: &mut Open<A>, updates: &mut Vec<Firing<A>>| {
            slot.pending += 1;
            slot.dirty = true;
            let early = !slot.fired && every_events.is_some_and(|n| slot.pending >= n);
            if slot.fired || early {
                slot.updates += u32::from(slot.fired);
                slot.pending = 0;
                updates.push(Firing {
                    key: key.to_owned(),
                    window,
                    agg: slot.agg.clone(),
                    last: false,
                    update_count: slot.updates,
                    early,
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
                for (old_window, old) in windows.drain(from..to) {
                    slot.agg.merge(&old.agg);
                    slot.fired |= old.fired;
                    slot.updates += old.updates;
                    slot.pending += old.pending;
                    if old_window.start == merged.start {
                        // Its stored copy is the merged window's (same start).
                        slot.stored |= old.stored;
                    } else {
                        if old.stored {
                            self.gone.push((key.to_owned(), old_window));
                        }
                        if old.fired {
                            self.retracted.push((key.to_owned(), old_window));
                        }
                    }
                }
                add(&mut slot.agg);
                fire_again(merged, &mut slot, updates);
                self.next_due = self.next_due.min(merged.end);
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
                        self.next_due = self.next_due.min(window.end);
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
        mark(&mut entry.changed, &mut self.changed, key);
        Added::Joined(joined)
    }

    /// Fires every window the watermark has passed and closes those past their lateness,
    /// pushing the firings to `firings` (by window, then key).
    pub fn advance(&mut self, watermark: i64, firings: &mut Vec<Firing<A>>) {
        let lateness = self.allowed_lateness;
        let first = firings.len();
        let mut emptied = false;
        let mut next_due = i64::MAX;
        for (key, entry) in &mut self.keys {
            let windows = &mut entry.windows;
            if windows.first().is_none_or(|(w, _)| w.end > watermark) {
                next_due = next_due.min(due(windows, lateness));
                continue;
            }
            // Those past their lateness close: a prefix, moved out (their last firing).
            let closed =
                windows.partition_point(|(w, _)| w.end.saturating_add(lateness) <= watermark);
            for (window, mut slot) in windows.drain(..closed) {
                if slot.fired {
                    slot.updates += 1;
                }
                if slot.stored {
                    self.gone.push((key.clone(), window));
                }
                firings.push(Firing {
                    key: key.clone(),
                    window,
                    agg: slot.agg,
                    last: true,
                    update_count: slot.updates,
                    early: false,
                });
            }
            emptied |= windows.is_empty();
            // The rest that the watermark passed fire once, not last (lateness keeps them).
            let mut fired = false;
            for (window, slot) in windows.iter_mut() {
                if window.end > watermark {
                    break;
                }
                if !slot.fired {
                    slot.fired = true;
                    slot.pending = 0;
                    slot.dirty = true;
                    fired = true;
                    firings.push(Firing {
                        key: key.clone(),
                        window: *window,
                        agg: slot.agg.clone(),
                        last: false,
                        update_count: slot.updates,
                        early: false,
                    });
                }
            }
            if fired {
                mark(&mut entry.changed, &mut self.changed, key);
            }
            next_due = next_due.min(due(windows, lateness));
        }
        self.next_due = next_due;
        if emptied {
            self.keys.retain(|_, entry| !entry.windows.is_empty());
        }
        firings[first..].sort_unstable_by(|a, b| (a.window, &a.key).cmp(&(b.window, &b.key)));
    }

    /// Fires early every window the watermark has not reached that took events since its
    /// last firing (a processing-time trigger), pushing the firings to `firings`.
    pub fn fire_early(&mut self, firings: &mut Vec<Firing<A>>) {
        let first = firings.len();
        for (key, entry) in &mut self.keys {
            let mut fired = false;
            for (window, slot) in &mut entry.windows {
                if slot.fired || slot.pending == 0 {
                    continue;
                }
                slot.pending = 0;
                slot.dirty = true;
                fired = true;
                firings.push(Firing {
                    key: key.clone(),
                    window: *window,
                    agg: slot.agg.clone(),
                    last: false,
                    update_count: slot.updates,
                    early: true,
                });
            }
            if fired {
                mark(&mut entry.changed, &mut self.changed, key);
            }
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

/// Lists `key` in `changed` unless its flag says it is there already.
fn mark(flag: &mut bool, changed: &mut Vec<String>, key: &str) {
    if !*flag {
        *flag = true;
        changed.push(key.to_owned());
    }
}

/// When the first of `windows` (sorted by end) fires or closes: the first not fired fires at
/// its end; one fired closes at its end plus the lateness. Later ones end no earlier.
fn due<A>(windows: &[(Window, Open<A>)], lateness: i64) -> i64 {
    let mut due = i64::MAX;
    for (window, slot) in windows {
        if !slot.fired {
            return due.min(window.end);
        }
        due = due.min(window.end.saturating_add(lateness));
    }
    due
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
            // Only when something is due, as the window stage does: `next_due` must never
            // be later than the first firing or closing.
            if let Some(w) = clock.observe("s", *ts, now)
                && engine.next_due().is_some_and(|due| w >= due)
            {
                engine.advance(w, &mut firings);
            }
        }
        engine.advance(i64::MAX, &mut firings);
        assert_eq!(engine.open_windows(), 0);
        assert_eq!(engine.next_due(), None);
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

    #[test]
    fn early_firings_come_before_the_watermark_and_are_not_final() {
        let spec = WindowSpec::Tumbling {
            size: 10,
            offset: 0,
        };
        let mut engine = Engine::<Members>::new(spec, 0).fire_every(2);
        let mut firings = Vec::new();
        for (i, ts) in [1, 2, 3, 4, 5].into_iter().enumerate() {
            engine.add("k", ts, Some(0), &mut firings, |m| {
                m.0.insert(i);
            });
        }
        // Every second event fires [0, 10) early with what it holds so far.
        let early: Vec<(Vec<usize>, bool, bool)> = firings
            .iter()
            .map(|f| (members(f), f.early, f.last))
            .collect();
        assert_eq!(
            early,
            [(vec![0, 1], true, false), (vec![0, 1, 2, 3], true, false)]
        );
        // A processing-time trigger fires what came since (event 4), then nothing new.
        firings.clear();
        engine.fire_early(&mut firings);
        assert_eq!(firings.len(), 1);
        assert_eq!(members(&firings[0]), [0, 1, 2, 3, 4]);
        firings.clear();
        engine.fire_early(&mut firings);
        assert!(firings.is_empty());
        engine.advance(10, &mut firings);
        assert_eq!(firings.len(), 1);
        assert!(firings[0].last && !firings[0].early);
    }

    #[test]
    fn a_fired_session_merged_into_an_earlier_start_is_retracted() {
        let mut engine = Engine::<Members>::new(WindowSpec::Session { gap: 10 }, 100);
        let mut firings = Vec::new();
        engine.add("k", 20, None, &mut firings, |_| {});
        engine.advance(30, &mut firings);
        assert_eq!(firings[0].window, Window { start: 20, end: 30 });
        // Within the lateness, 12 bridges into [20, 30): the session now starts at 12.
        firings.clear();
        engine.add("k", 12, Some(30), &mut firings, |_| {});
        assert_eq!(firings[0].window, Window { start: 12, end: 30 });
        assert_eq!(firings[0].update_count, 1);
        assert_eq!(
            engine.take_retracted(),
            [("k".to_owned(), Window { start: 20, end: 30 })]
        );
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
        fn an_engine_rebuilt_from_its_changes_fires_as_the_original_would(
            events in proptest::collection::vec((0usize..3, 0i64..2_000), 2..80),
            cut in 1usize..80,
            kind in 0u8..3,
            ooo in 0i64..300,
            lateness in 0i64..300,
            every in 1usize..6,
        ) {
            let spec = match kind {
                0 => WindowSpec::Tumbling { size: 100, offset: 0 },
                1 => WindowSpec::Sliding { size: 300, slide: 100, offset: 0 },
                _ => WindowSpec::Session { gap: 150 },
            };
            let keys = ["a", "b", "c"];
            let cut = cut.min(events.len() - 1);
            let mut original = Engine::<Members>::new(spec, lateness).fire_every(3);
            // What a store holds, by key and window start (as the window stage keeps rows):
            // every change applied in order.
            let mut stored: BTreeMap<(String, i64), (Window, Open<Members>)> = BTreeMap::new();
            let mut max: Option<i64> = None;
            let step = |engine: &mut Engine<Members>, max: &mut Option<i64>, i: usize, out: &mut Vec<Firing<Members>>| {
                let (k, ts) = events[i];
                let w = max.map(|m| m - ooo);
                engine.add(keys[k], ts, w, out, |m| { m.0.insert(i); });
                *max = Some(max.map_or(ts, |m| m.max(ts)));
                engine.advance(max.unwrap_or(ts) - ooo, out);
            };
            let mut ignored = Vec::new();
            for i in 0..cut {
                step(&mut original, &mut max, i, &mut ignored);
                // Changes are taken per step (every `every` events), and at the cut.
                if i % every != 0 && i + 1 != cut {
                    continue;
                }
                original.take_changes(|key, window, open| {
                    match open {
                        Some(open) => drop(stored.insert((key.to_owned(), window.start), (window, open.clone()))),
                        None => drop(stored.remove(&(key.to_owned(), window.start))),
                    }
                });
            }
            let mut rebuilt = Engine::<Members>::new(spec, lateness).fire_every(3);
            let mut by_key: BTreeMap<String, Vec<(Window, Open<Members>)>> = BTreeMap::new();
            for ((key, _), (window, open)) in stored {
                by_key.entry(key).or_default().push((window, open));
            }
            for (key, windows) in by_key {
                rebuilt.restore(key, windows);
            }
            let (mut want, mut got) = (Vec::new(), Vec::new());
            let mut max_rebuilt = max;
            for i in cut..events.len() {
                step(&mut original, &mut max, i, &mut want);
                step(&mut rebuilt, &mut max_rebuilt, i, &mut got);
            }
            original.advance(i64::MAX, &mut want);
            rebuilt.advance(i64::MAX, &mut got);
            prop_assert_eq!(got, want);
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
