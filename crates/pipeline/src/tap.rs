//! Taps: live copies of the events a stage emits, for `colloquium tap` and the dashboard,
//! that never slow the stage they watch.
//!
//! Each stage of a running pipeline has a [`TapPoint`], and so do its outputs ([`OUTPUTS`]);
//! with no listener, offering a stage's outputs costs one atomic load. A listener has a bounded channel: each sampled event takes a
//! slot with `try_reserve` (serialized only once it has one) or is counted as dropped — a slow
//! reader loses events, the pipeline never waits. Points are kept by (pipeline, stage) name,
//! so a tap outlives a reload that rebuilds its pipeline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use colloquium_event::Event;
use tokio::sync::mpsc;

/// A stage by pipeline and stage id.
type StageKey = (Arc<str>, Arc<str>);

/// Every tap point of the node, by pipeline and stage.
#[derive(Debug, Default)]
pub struct Taps {
    points: Mutex<HashMap<StageKey, Arc<TapPoint>>>,
    /// Each built pipeline's stage ids, in order (which stages a tap may name).
    stages: Mutex<HashMap<Arc<str>, Vec<Arc<str>>>>,
    /// Taps open now, of any kind (at most [`MAX_TAPS`]).
    open: Arc<AtomicUsize>,
}

/// The point of a pipeline's outputs (what goes to its sinks), beside its stages': no stage id
/// is empty.
pub const OUTPUTS: &str = "";

/// Most taps open at once on a node: each holds a buffer, so their number is bounded too.
pub const MAX_TAPS: usize = 32;

/// A tap's place among the [`MAX_TAPS`]; given back when dropped.
#[derive(Debug)]
pub struct Opened(Arc<AtomicUsize>);

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Taps {
    /// The point of `stage` in `pipeline` (made on first use).
    pub fn point(&self, pipeline: &Arc<str>, stage: &Arc<str>) -> Arc<TapPoint> {
        let mut points = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        points
            .entry((pipeline.clone(), stage.clone()))
            .or_default()
            .clone()
    }

    /// Records the stages of a pipeline just built.
    pub fn built(&self, pipeline: &Arc<str>, stages: Vec<Arc<str>>) {
        let mut known = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        known.insert(pipeline.clone(), stages);
    }

    /// The stage ids of `pipeline`, when it was built on this node.
    pub fn stages_of(&self, pipeline: &str) -> Option<Vec<Arc<str>>> {
        let known = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(pipeline).cloned()
    }

    /// A place for one more tap, unless [`MAX_TAPS`] are open.
    pub fn open(&self) -> Option<Opened> {
        let taken = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_TAPS).then_some(n + 1)
            });
        taken.ok().map(|_| Opened(self.open.clone()))
    }

    /// Taps open now.
    pub fn opened(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Where a stage's outputs can be watched.
#[derive(Debug, Default)]
pub struct TapPoint {
    /// Listeners attached: read on every offer, so it is its own atomic.
    active: AtomicUsize,
    listeners: Mutex<Vec<Arc<Listener>>>,
}

impl TapPoint {
    /// Offers `events` to the listeners, if any.
    #[inline]
    pub fn offer<'a>(&self, events: impl IntoIterator<Item = &'a Event> + Clone) {
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.iter() {
            for event in events.clone() {
                listener.offer(event);
            }
        }
    }

    /// Attaches `listener` until the returned guard is dropped.
    pub fn attach(self: &Arc<Self>, listener: Arc<Listener>) -> Attached {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.push(listener.clone());
        self.active.store(listeners.len(), Ordering::Relaxed);
        Attached {
            point: self.clone(),
            listener,
        }
    }

    fn detach(&self, listener: &Arc<Listener>) {
        let mut listeners = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|l| !Arc::ptr_eq(l, listener));
        self.active.store(listeners.len(), Ordering::Relaxed);
    }
}

/// Which of the events passing a point a tap takes.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only events from this source.
    pub source: Option<String>,
    /// Every `sample`th matching event (1: all).
    pub sample: u64,
}

/// One tap: its filter, its bounded buffer of JSON lines, and its counts.
#[derive(Debug)]
pub struct Listener {
    filter: Filter,
    /// Matching events offered (before sampling).
    seen: AtomicU64,
    /// Sampled events the buffer had no room for.
    dropped: AtomicU64,
    tx: mpsc::Sender<Bytes>,
}

/// What a tap has seen and dropped so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TapCounts {
    /// Events that passed the point and matched the filter.
    pub seen: u64,
    /// Sampled events the tap had no room for.
    pub dropped: u64,
}

impl Listener {
    /// A listener with a buffer of `capacity` lines, and that buffer's reading end.
    pub fn new(filter: Filter, capacity: usize) -> (Arc<Listener>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let filter = Filter {
            sample: filter.sample.max(1),
            ..filter
        };
        let listener = Listener {
            filter,
            seen: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            tx,
        };
        (Arc::new(listener), rx)
    }

    /// Whether `event` is one this tap takes (and counts it as seen when it matches).
    fn takes(&self, event: &Event) -> bool {
        if self
            .filter
            .source
            .as_ref()
            .is_some_and(|s| *s != event.metadata.source)
        {
            return false;
        }
        (self.seen.fetch_add(1, Ordering::Relaxed)).is_multiple_of(self.filter.sample)
    }

    /// Takes `event` if there is room, else counts it dropped: never waits.
    pub fn offer(&self, event: &Event) {
        if !self.takes(event) {
            return;
        }
        match self.tx.try_reserve() {
            Ok(permit) => match serde_json::to_vec(event) {
                Ok(line) => permit.send(line.into()),
                Err(error) => tracing::warn!(%error, "a tapped event is not JSON"),
            },
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes `event`, waiting for room (history, which nothing else waits on); `false` once
    /// the reader is gone.
    pub async fn deliver(&self, event: &Event) -> bool {
        if !self.takes(event) {
            return !self.tx.is_closed();
        }
        match serde_json::to_vec(event) {
            Ok(line) => self.tx.send(line.into()).await.is_ok(),
            Err(_) => true,
        }
    }

    /// Sends `line` as it is, waiting for room (a marker of the tap's own); `false` once the
    /// reader is gone.
    pub async fn deliver_raw(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }

    /// Counts `n` events lost before they reached this tap (its feed had no room).
    pub fn lost(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Whether the reader is gone.
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// What it has seen and dropped so far.
    pub fn counts(&self) -> TapCounts {
        TapCounts {
            seen: self.seen.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A listener attached to a point; detached when dropped.
#[derive(Debug)]
pub struct Attached {
    point: Arc<TapPoint>,
    listener: Arc<Listener>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.point.detach(&self.listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::{Metadata, Timestamp};

    fn event(n: u64) -> Event {
        let mut payload = serde_json::Map::new();
        payload.insert("n".into(), n.into());
        Event::at(
            Timestamp::from_millis(n),
            payload,
            Metadata::new("http", "default"),
        )
    }

    #[test]
    fn a_full_tap_drops_and_counts_and_a_detached_one_costs_nothing() {
        let taps = Taps::default();
        let point = taps.point(&Arc::from("p"), &Arc::from("s"));
        point.offer(&[event(0)]); // no listener: nothing happens
        let (every, mut every_lines) = Listener::new(Filter::default(), 2);
        let (sampled, mut sampled_lines) = Listener::new(
            Filter {
                sample: 3,
                source: Some("http".into()),
            },
            100,
        );
        let (elsewhere, _) = Listener::new(
            Filter {
                sample: 1,
                source: Some("tcp".into()),
            },
            100,
        );
        let attached = [every, sampled, elsewhere].map(|l| point.attach(l));
        assert_eq!(point.active.load(Ordering::Relaxed), 3);
        point.offer(&(0..6).map(event).collect::<Vec<_>>());
        let counts = attached.each_ref().map(|a| a.listener.counts());
        let count = |seen, dropped| TapCounts { seen, dropped };
        assert_eq!(counts[0], count(6, 4), "two fit, four dropped");
        assert_eq!(counts[1], count(6, 0));
        assert_eq!(counts[2], count(0, 0), "another source's tap sees none");
        let mut got = Vec::new();
        while let Ok(line) = sampled_lines.try_recv() {
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            got.push(v["data"]["n"].as_i64().unwrap());
        }
        assert_eq!(got, [0, 3], "every third event");
        assert!(every_lines.try_recv().is_ok());
        drop(attached);
        assert_eq!(point.active.load(Ordering::Relaxed), 0);

        let places: Vec<_> = (0..MAX_TAPS).map_while(|_| taps.open()).collect();
        assert_eq!((places.len(), taps.opened()), (MAX_TAPS, MAX_TAPS));
        assert!(taps.open().is_none(), "one tap too many");
        drop(places);
        assert!(taps.open().is_some() && taps.opened() == 0);
    }
}
