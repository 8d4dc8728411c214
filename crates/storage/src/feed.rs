//! The in-memory hand-over of newly durable batches to readers that keep up with the log (the
//! pipeline workers), so they need not read them back and decode them.
//!
//! The writer thread publishes each batch written through `Store::append_settling` after it is
//! durable and *before* its ids settle. So once the id watermark has passed an event, a
//! subscription taken before the event was published holds it. A subscriber that falls more
//! than its capacity behind loses its buffer (and is told so), and reads the log instead.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use colloquium_event::Event;
use prometheus_client::metrics::counter::Counter;

/// Where durable batches are published, and volatile ones (`persist: false`: never written).
#[derive(Debug, Default)]
pub struct Feed {
    subscribers: Mutex<Vec<Weak<Subscription>>>,
    /// Volatile events no reader took.
    volatile_dropped: Counter,
}

/// One reader's buffer of published batches.
#[derive(Debug)]
pub struct Subscription {
    capacity: usize,
    /// Drops what does not fit (counted in `dropped`) instead of overflowing.
    lossy: bool,
    dropped: std::sync::atomic::AtomicU64,
    buffered: Mutex<Buffered>,
}

#[derive(Debug, Default)]
struct Buffered {
    batches: Vec<Arc<[Event]>>,
    events: usize,
    /// Volatile events among `events`, lost if the buffer is.
    volatile: usize,
    overflowed: bool,
}

impl Feed {
    /// A feed that counts the volatile events no reader took on `dropped`.
    pub fn counting(dropped: Counter) -> Self {
        Feed {
            subscribers: Mutex::default(),
            volatile_dropped: dropped,
        }
    }

    /// Counts `n` volatile events a reader had but could not process (it fell behind).
    pub fn volatile_dropped(&self, n: usize) {
        if n > 0 {
            self.volatile_dropped.inc_by(n as u64);
        }
    }

    /// Hands a volatile batch (in no log) to every live subscription; with none, or where a
    /// subscription has fallen behind, its events are counted as dropped.
    pub(crate) fn publish_volatile(&self, batch: &Arc<[Event]>) {
        if self.deliver(batch, true) == 0 {
            self.volatile_dropped(batch.len());
        }
    }

    /// Starts buffering every batch published from now on, up to `capacity` events at a time.
    pub fn subscribe(&self, capacity: usize) -> Arc<Subscription> {
        self.add(capacity, false)
    }

    /// Like [`Feed::subscribe`], but a batch that does not fit is dropped and counted
    /// ([`Subscription::dropped`]) and the subscription goes on: for watchers (taps), which
    /// are no reader of record (their drops are not volatile events lost).
    pub fn subscribe_lossy(&self, capacity: usize) -> Arc<Subscription> {
        self.add(capacity, true)
    }

    fn add(&self, capacity: usize, lossy: bool) -> Arc<Subscription> {
        let subscription = Arc::new(Subscription {
            capacity,
            lossy,
            dropped: Default::default(),
            buffered: Mutex::default(),
        });
        self.lock().push(Arc::downgrade(&subscription));
        subscription
    }

    /// Hands `batch` to every live subscription (dropped ones are forgotten here).
    pub(crate) fn publish(&self, batch: &Arc<[Event]>) {
        self.deliver(batch, false);
    }

    /// Hands `batch` to every live subscription; returns how many there are. A volatile
    /// batch a subscription cannot hold, or holds when it overflows, is counted as dropped
    /// (once per subscription: each is a reader that will not process it).
    fn deliver(&self, batch: &Arc<[Event]>, volatile: bool) -> usize {
        let mut subscribers = self.lock();
        let mut readers = 0;
        subscribers.retain(|weak| {
            let Some(subscription) = weak.upgrade() else {
                return false;
            };
            let mut buffered = subscription.lock();
            if subscription.lossy {
                if buffered.events + batch.len() > subscription.capacity {
                    let n = batch.len() as u64;
                    subscription
                        .dropped
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                } else {
                    buffered.events += batch.len();
                    buffered.batches.push(batch.clone());
                }
                return true;
            }
            readers += 1;
            if buffered.overflowed {
                if volatile {
                    self.volatile_dropped(batch.len());
                }
                return true;
            }
            if buffered.events + batch.len() > subscription.capacity {
                // Too far behind: free the memory; the reader goes back to the log, where
                // volatile events are not.
                let lost = buffered.volatile + if volatile { batch.len() } else { 0 };
                self.volatile_dropped(lost);
                *buffered = Buffered {
                    overflowed: true,
                    ..Buffered::default()
                };
            } else {
                buffered.events += batch.len();
                if volatile {
                    buffered.volatile += batch.len();
                }
                buffered.batches.push(batch.clone());
            }
            true
        });
        readers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Subscription>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Subscription {
    /// Takes the batches published since the last call, in publication order (not id order:
    /// concurrent batches become durable in any order). `None` when some were dropped because
    /// the reader fell behind: the log must be read instead, and this subscription is done.
    pub fn take(&self) -> Option<Vec<Arc<[Event]>>> {
        let mut buffered = self.lock();
        if buffered.overflowed {
            return None;
        }
        buffered.events = 0;
        buffered.volatile = 0;
        Some(std::mem::take(&mut buffered.batches))
    }

    /// Events a lossy subscription had no room for, so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffered> {
        self.buffered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_event::{Metadata, Timestamp};

    fn batch(n: usize) -> Arc<[Event]> {
        (0..n)
            .map(|_| {
                Event::at(
                    Timestamp::from_millis(1),
                    serde_json::Map::new(),
                    Metadata::new("http", "default"),
                )
            })
            .collect()
    }

    #[test]
    fn subscribers_get_what_is_published_after_they_subscribe_until_they_fall_behind() {
        let feed = Feed::default();
        feed.publish(&batch(1));
        let a = feed.subscribe(5);
        let b = feed.subscribe(100);
        feed.publish(&batch(2));
        feed.publish(&batch(3));
        assert_eq!(a.take().map(|b| b.len()), Some(2));
        assert_eq!(a.take().map(|b| b.len()), Some(0));
        // `a` holds at most 5 events: 3 + 3 overflows it, for good.
        feed.publish(&batch(3));
        feed.publish(&batch(3));
        assert!(a.take().is_none());
        feed.publish(&batch(1));
        assert!(a.take().is_none());
        let total: usize = b.take().unwrap().iter().map(|b| b.len()).sum();
        assert_eq!(total, 12);
        drop(a);
        drop(b);
        // A lossy one drops what does not fit, counts it, and goes on.
        let tap = feed.subscribe_lossy(4);
        feed.publish(&batch(3));
        feed.publish(&batch(3));
        feed.publish(&batch(1));
        assert_eq!(tap.dropped(), 3);
        assert_eq!(tap.take().map(|b| b.len()), Some(2));
        feed.publish(&batch(3));
        assert_eq!(tap.take().map(|b| b.len()), Some(1));
        drop(tap);
        feed.publish(&batch(1));
        assert!(
            feed.lock().is_empty(),
            "dropped subscriptions are forgotten"
        );
    }
}
