//! Event ids: ULIDs (48-bit millisecond time, 80 random bits).
//!
//! The 16-byte big-endian form sorts in time order, so storage uses it directly as the key and
//! a range scan over keys is a scan over ingest time. The 26-character Crockford base32 string
//! sorts the same way and is what users see.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

use crate::Timestamp;

/// A unique, time-ordered event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(Ulid);

impl EventId {
    /// Length of [`EventId::to_bytes`].
    pub const LEN: usize = 16;

    /// Returns the smallest id of the given millisecond: every id generated at or after `at`
    /// sorts at or after it, so it bounds range scans.
    pub fn min_at(at: Timestamp) -> Self {
        Self(Ulid::from_parts(at.as_millis(), 0))
    }

    /// Returns the time this id was generated at (the event's ingest time).
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::from_millis(self.0.timestamp_ms())
    }

    /// Returns the big-endian bytes; their order is the ids' order.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        self.0.to_bytes()
    }

    /// Reads an id back from [`EventId::to_bytes`]; `None` when `bytes` has the wrong length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; Self::LEN] = bytes.try_into().ok()?;
        Some(Self(Ulid::from_bytes(bytes)))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.0.array_to_str(&mut buf))
    }
}

/// Why a string is not an event id.
#[derive(Debug, thiserror::Error)]
#[error("invalid event id `{input}`: expected a 26-character ULID (first character 0-7)")]
pub struct IdParseError {
    input: String,
}

impl FromStr for EventId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || IdParseError {
            input: s.chars().take(64).collect(),
        };
        // 26 base-32 digits hold 130 bits; a ULID is 128, so the first digit is at most 7.
        // The ulid crate would fold a larger one onto a real id.
        if !s
            .as_bytes()
            .first()
            .is_some_and(|d| (b'0'..=b'7').contains(d))
        {
            return Err(error());
        }
        Ulid::from_string(s).map(Self).map_err(|_| error())
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; ulid::ULID_LEN];
        serializer.serialize_str(self.0.array_to_str(&mut buf))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hands out strictly increasing ids, also within one millisecond and across threads, and
/// knows which of them are still unsettled.
///
/// Ids are given out when a request is stamped, before its batch is durable, so with concurrent
/// requests the log does not fill in id order. Readers that must not miss an event (pipelines
/// resuming from a checkpoint) read only below [`IdGenerator::watermark`]: ids handed out by
/// [`IdGenerator::reserve`] stay unsettled until their [`Reservation`] is dropped, which the
/// store does once the batch is written or can no longer be.
#[derive(Default)]
pub struct IdGenerator {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Ulid>,
    /// First id of every live reservation, with how many start there.
    unsettled: BTreeMap<Ulid, usize>,
}

/// Ids that are not settled yet; dropping this settles them (stored, or never to be).
pub struct Reservation {
    generator: Arc<IdGenerator>,
    first: Option<Ulid>,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("first", &self.first)
            .finish()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(first) = self.first else { return };
        let mut state = self.generator.lock();
        if let Some(count) = state.unsettled.get_mut(&first) {
            *count -= 1;
            if *count == 0 {
                state.unsettled.remove(&first);
            }
        }
    }
}

impl IdGenerator {
    /// Returns `count` new ids, each greater than every id this generator gave before.
    ///
    /// Ids carry `now`, or the previous id's time when the clock went back, so order holds.
    pub fn next_ids(&self, now: Timestamp, count: usize) -> Vec<EventId> {
        Self::issue(&mut self.lock(), now, count)
    }

    /// Like [`IdGenerator::next_ids`], but the ids stay unsettled (below the watermark's reach)
    /// until the returned reservation is dropped.
    pub fn reserve(self: &Arc<Self>, now: Timestamp, count: usize) -> (Vec<EventId>, Reservation) {
        let mut state = self.lock();
        let ids = Self::issue(&mut state, now, count);
        let first = ids.first().map(|id| id.0);
        if let Some(first) = first {
            *state.unsettled.entry(first).or_default() += 1;
        }
        drop(state);
        let reservation = Reservation {
            generator: Arc::clone(self),
            first,
        };
        (ids, reservation)
    }

    /// Every id below the returned one is settled: it is in the log, or never will be. `None`
    /// when this generator has given out no ids (everything in the log predates it).
    pub fn watermark(&self) -> Option<EventId> {
        let state = self.lock();
        if let Some((first, _)) = state.unsettled.first_key_value() {
            return Some(EventId(*first));
        }
        Self::after_last(&state)
    }

    /// Every id given out so far is below the returned one, and every later id is at least it.
    /// `None` before the first.
    pub fn issued(&self) -> Option<EventId> {
        Self::after_last(&self.lock())
    }

    fn after_last(state: &State) -> Option<EventId> {
        let last = state.last?;
        let next = last
            .increment()
            .unwrap_or_else(|| Ulid::from_parts(last.timestamp_ms() + 1, 0));
        Some(EventId(next))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-increment; the value is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn issue(state: &mut State, now: Timestamp, count: usize) -> Vec<EventId> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let next = match state.last {
                Some(prev) if prev.timestamp_ms() >= now.as_millis() => prev
                    .increment()
                    // 2^80 ids in one millisecond cannot happen; move to the next one if it did.
                    .unwrap_or_else(|| Ulid::from_parts(prev.timestamp_ms() + 1, 0)),
                _ => Ulid::from_parts(now.as_millis(), rand_bits()),
            };
            state.last = Some(next);
            ids.push(EventId(next));
        }
        ids
    }
}

/// Returns 80 random bits. Within a millisecond the generator increments, so randomness only
/// has to keep ids from different processes (or a restart in the same ms) apart.
fn rand_bits() -> u128 {
    // `Ulid::new` draws from a thread-local CSPRNG; keep its random part.
    Ulid::new().random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_increase_within_one_millisecond() {
        let ids = IdGenerator::default().next_ids(Timestamp::from_millis(5), 1000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ids.iter()
                .all(|id| id.timestamp() == Timestamp::from_millis(5))
        );
    }

    #[test]
    fn an_out_of_range_ulid_is_rejected_not_folded() {
        let real: EventId = "01M8RJPM73CS1ASHNKY5PA4VJ6".parse().unwrap();
        assert_eq!(real.to_string(), "01M8RJPM73CS1ASHNKY5PA4VJ6");
        assert!("7ZZZZZZZZZZZZZZZZZZZZZZZZZ".parse::<EventId>().is_ok());
        for bad in [
            "81M8RJPM73CS1ASHNKY5PA4VJ6",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "",
            "01M8",
        ] {
            let error = bad.parse::<EventId>().unwrap_err().to_string();
            assert!(error.contains("first character 0-7"), "{bad}: {error}");
        }
    }

    #[test]
    fn ids_keep_order_when_the_clock_goes_back() {
        let generator = IdGenerator::default();
        let a = generator.next_ids(Timestamp::from_millis(1000), 1)[0];
        let b = generator.next_ids(Timestamp::from_millis(10), 1)[0];
        assert!(a < b);
    }

    #[test]
    fn the_watermark_stays_below_every_unsettled_reservation() {
        let generator = Arc::new(IdGenerator::default());
        assert_eq!(generator.watermark(), None);
        let (a, ra) = generator.reserve(Timestamp::from_millis(100), 2);
        let (b, rb) = generator.reserve(Timestamp::from_millis(100), 3);
        assert_eq!(generator.watermark(), Some(a[0]));
        // b settles first (committed out of order): a still holds the watermark back.
        drop(rb);
        assert_eq!(generator.watermark(), Some(a[0]));
        drop(ra);
        let w = generator.watermark().unwrap();
        assert!(b.iter().chain(&a).all(|id| *id < w));
        let next = generator.next_ids(Timestamp::from_millis(100), 1)[0];
        assert!(
            w <= next,
            "the watermark never passes an id not yet given out"
        );
    }

    #[test]
    fn bad_id_is_an_error() {
        assert!("nope".parse::<EventId>().is_err());
        assert!(EventId::from_slice(&[1, 2, 3]).is_none());
    }

    proptest! {
        #[test]
        fn byte_order_and_string_order_are_time_order(a in 0u64..(1 << 48), b in 0u64..(1 << 48)) {
            let ia = IdGenerator::default().next_ids(Timestamp::from_millis(a), 1)[0];
            let ib = IdGenerator::default().next_ids(Timestamp::from_millis(b), 1)[0];
            if a < b {
                prop_assert!(ia.to_bytes() < ib.to_bytes());
                prop_assert!(ia.to_string() < ib.to_string());
            }
            prop_assert_eq!(EventId::from_slice(&ia.to_bytes()), Some(ia));
            prop_assert_eq!(ia.to_string().parse::<EventId>().ok(), Some(ia));
        }
    }
}
