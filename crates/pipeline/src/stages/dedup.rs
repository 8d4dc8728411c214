//! `dedup`: drops an event whose key was already seen within `ttl`.
//!
//! The key is a JSON pointer into the data or a Computo script (its result, as JSON text). Time
//! is the event's ingest time, so a replay after a restart decides exactly as the first pass did.
//! Memory is bounded: past `max_keys` the oldest keys are forgotten first. The seen keys are the
//! stage's state, committed with the pipeline's checkpoint (`checkpoint`), so a restart
//! resumes with exactly the keys of that position.
//!
//! State layout: the keys admitted between two commits are one row, a *segment*, keyed by
//! `0xFF` and its sequence number (8 bytes, big-endian), holding the `(key, time)` pairs in
//! admission order ([`Segment`], through the typed state codec). Keys are forgotten oldest
//! first, so once a segment's keys are all forgotten so are those of every segment before it:
//! one range deletion drops them. A row per key, and a deletion per forgotten key, cost a fifth
//! of the throughput of 4 pipelines in compaction (BENCHMARKS.md). A restart replays the
//! segments in order, forgetting as it goes. State of earlier builds (a row per key, then
//! hand-encoded segments) is read too, and rewritten as a segment at the next commit; rows per
//! key sort below `0xFF`, so that commit's range deletion removes them.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::Event;
use computo::Script;
use serde::Deserialize;
use serde_json::Value;

use crate::stage::{
    BuildContext, BuiltStage, Failed, Stage, StageConfig, StageContext, StageError, with_data,
};
use crate::state::Codec;

/// `{type: dedup, key: /pointer | script: …, ttl: 10m, max_keys: 100000}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// JSON pointer into the data whose value is the key.
    #[serde(default)]
    pub key: Option<String>,
    /// Or a script (name or inline) whose result is the key.
    #[serde(default)]
    pub script: Option<Value>,
    /// How long a key is remembered.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most keys remembered at once.
    #[serde(default = "default_max_keys")]
    pub max_keys: NonZeroUsize,
}

fn default_max_keys() -> NonZeroUsize {
    NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN)
}

impl StageConfig for DedupConfig {
    const KIND: &'static str = "dedup";
    fn build(self, cx: &BuildContext<'_>) -> Result<BuiltStage, ConfigError> {
        let key = match (self.key, &self.script) {
            (Some(p), None) if p.starts_with('/') => DedupKey::Pointer(p),
            (Some(p), None) => {
                return Err(ConfigError::new(
                    cx.key("key"),
                    format!("`{p}` is not a JSON pointer"),
                ));
            }
            (None, Some(script)) => {
                DedupKey::Script(cx.scripts.resolve(script, &cx.key("script"))?)
            }
            _ => {
                return Err(ConfigError::new(
                    &cx.at,
                    "`dedup` needs exactly one of `key` (a pointer) or `script`",
                ));
            }
        };
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(ConfigError::new(cx.key("ttl"), "must be at least 1ms"));
        }
        Ok(BuiltStage::sync(Dedup {
            key,
            ttl_ms,
            max_keys: self.max_keys.get(),
            pipeline: cx.pipeline.clone(),
            seen: Seen::with_room(self.max_keys.get()),
            segment: 0,
            kept_from: None,
            admitted: 0,
        }))
    }
}

enum DedupKey {
    Pointer(String),
    Script(Arc<Script>),
}

/// Keys with the ingest time (ms) they were let through, oldest first.
struct Seen {
    first_seen: HashMap<String, u64>,
    order: VecDeque<Admitted>,
}

/// Keys the seen-key table is sized for up front at most; beyond, it grows as keys come.
const PRESIZED_KEYS: usize = 1 << 20;

impl Seen {
    /// Sized for `max_keys` (up to [`PRESIZED_KEYS`]) with the table half full (see
    /// [`Dedup::admit`]). Growing as keys came rehashed every key inside a step, for 5-30 ms at
    /// 100,000 keys (BENCHMARKS.md). Untouched capacity costs address space, and memory only
    /// for its control bytes (one per slot).
    fn with_room(max_keys: usize) -> Self {
        let room = max_keys.min(PRESIZED_KEYS);
        Seen {
            first_seen: HashMap::with_capacity(2 * room),
            order: VecDeque::with_capacity(room + 1),
        }
    }
}

/// One admitted key, in admission order.
struct Admitted {
    key: String,
    at: u64,
    /// The state segment it is stored in.
    segment: u64,
}

struct Dedup {
    key: DedupKey,
    ttl_ms: u64,
    max_keys: usize,
    pipeline: Arc<str>,
    seen: Seen,
    /// The segment the keys admitted now go to (written at the next `checkpoint`).
    segment: u64,
    /// Stored segments below this one are deleted (`None`: rows may be stored below any).
    kept_from: Option<u64>,
    /// Keys admitted since the last `checkpoint` (they are the newest in `seen.order`).
    admitted: usize,
}

/// One segment row: keys with the ingest time (ms) they were admitted at, in order.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Segment {
    keys: Vec<(String, u64)>,
}

/// A [`Segment`] borrowed from the seen keys, written without copying them.
#[derive(serde::Serialize)]
struct SegmentRef<'a> {
    keys: Vec<(&'a str, u64)>,
}

const SEGMENTS: Codec<Segment> = Codec::new("dedup segment", 1);

impl Dedup {
    fn key_of(&self, event: &mut Event) -> Result<String, StageError> {
        match &self.key {
            DedupKey::Pointer(p) => Ok(event
                .data_pointer(p)
                .map_or_else(|| "null".to_owned(), Value::to_string)),
            DedupKey::Script(script) => {
                let result = with_data(event, &self.pipeline, |data, meta| {
                    script.eval(&[data, &meta()])
                })?;
                Ok(result.to_string())
            }
        }
    }

    /// Forgets keys older than the TTL at `now`, and the oldest beyond `max_keys`.
    fn expire(&mut self, now: u64) {
        while let Some(oldest) = self.seen.order.front() {
            let expired = now.saturating_sub(oldest.at) >= self.ttl_ms;
            if !expired && self.seen.order.len() <= self.max_keys {
                break;
            }
            let Some(Admitted { key, at, .. }) = self.seen.order.pop_front() else {
                break;
            };
            // A key re-admitted later has a newer entry; only remove the map entry it owns.
            if let Entry::Occupied(entry) = self.seen.first_seen.entry(key)
                && *entry.get() == at
            {
                entry.remove();
            }
        }
    }

    /// Remembers `key` as let through at `at`, in `segment`.
    fn admit(&mut self, key: String, at: u64, segment: u64) {
        // Room for twice the keys held (presized up to `PRESIZED_KEYS`): removals then rarely
        // leave tombstones in the table, whose periodic in-place rehash of every key stalled a
        // step for ~20 ms at 100,000 keys (BENCHMARKS.md).
        let map = &mut self.seen.first_seen;
        if map.capacity() < 2 * map.len() {
            map.reserve(map.len());
        }
        map.insert(key.clone(), at);
        self.seen.order.push_back(Admitted { key, at, segment });
        self.expire(at);
    }
}

/// The first byte of a segment row's key: above the first byte of any JSON text, so rows of
/// the earlier layout sort below every segment.
const SEGMENT_TAG: u8 = 0xFF;

fn segment_key(segment: u64) -> Vec<u8> {
    [&[SEGMENT_TAG][..], &segment.to_be_bytes()].concat()
}

fn corrupt(what: &str) -> StageError {
    StageError::State(format!("dedup: {what}"))
}

/// The keys of one segment row, in admission order: a codec row, or one hand-encoded by an
/// earlier build (`time (8 bytes), length (4 bytes), key` per key), read to migrate it.
fn decode(row: &[u8]) -> Result<Vec<(String, u64)>, StageError> {
    if Codec::<Segment>::is_codec_row(row) {
        return SEGMENTS.decode(row).map(|s| s.keys);
    }
    decode_hand_encoded(row)
}

fn decode_hand_encoded(mut row: &[u8]) -> Result<Vec<(String, u64)>, StageError> {
    let mut keys = Vec::new();
    while !row.is_empty() {
        let (at, rest) = row
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("a segment ends inside a time"))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("a segment ends inside a key length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let key = rest
            .get(..len)
            .ok_or_else(|| corrupt("a segment ends inside a key"))?;
        let key = String::from_utf8(key.to_vec()).map_err(|e| corrupt(&e.to_string()))?;
        keys.push((key, u64::from_be_bytes(*at)));
        row = &rest[len..];
    }
    Ok(keys)
}

impl Stage for Dedup {
    fn process(&mut self, mut event: Event, cx: &mut StageContext<'_>) -> Result<(), Box<Failed>> {
        let key = match self.key_of(&mut event) {
            Ok(key) => key,
            Err(error) => return Err(Failed::new(error, event)),
        };
        let now = event.ingest_time.as_millis();
        self.expire(now);
        let seen_at = self.seen.first_seen.get(&key);
        if seen_at.is_some_and(|at| now.saturating_sub(*at) < self.ttl_ms) {
            return Ok(()); // a duplicate: counted as dropped by the pipeline
        }
        self.admitted += 1;
        self.admit(key, now, self.segment);
        cx.emit(event);
        Ok(())
    }

    fn checkpoint(&mut self, cx: &mut StageContext<'_>) {
        if self.admitted > 0 {
            // This segment's keys still held are the newest ones; those already forgotten
            // (past `max_keys`) would be forgotten again on restore, so they need no row.
            let order = &self.seen.order;
            let held = order
                .iter()
                .rev()
                .take_while(|a| a.segment == self.segment)
                .count();
            let keys = order
                .range(order.len() - held..)
                .map(|a| (a.key.as_str(), a.at))
                .collect();
            let row = SEGMENTS.encode_as(&SegmentRef { keys });
            cx.put_state(segment_key(self.segment), row);
            self.segment += 1;
            self.admitted = 0;
        }
        let oldest = self.seen.order.front().map_or(self.segment, |a| a.segment);
        if self.kept_from.is_none_or(|kept| oldest > kept) {
            cx.delete_state_below(segment_key(oldest));
            self.kept_from = Some(oldest);
        }
    }

    fn restore_state(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StageError> {
        let mut earlier_layout = Vec::new();
        for (key, row) in entries {
            let Some((&SEGMENT_TAG, number)) = key.split_first() else {
                let key = String::from_utf8(key).map_err(|e| corrupt(&e.to_string()))?;
                let at = <[u8; 8]>::try_from(row.as_slice())
                    .map_err(|_| corrupt("a time is not 8 bytes"))?;
                earlier_layout.push((key, u64::from_be_bytes(at)));
                continue;
            };
            let number = <[u8; 8]>::try_from(number)
                .map_err(|_| corrupt("a segment number is not 8 bytes"))?;
            let segment = u64::from_be_bytes(number);
            self.kept_from.get_or_insert(segment);
            for (key, at) in decode(&row)? {
                self.expire(at);
                self.admit(key, at, segment);
            }
            self.segment = segment + 1;
        }
        if !earlier_layout.is_empty() {
            self.kept_from = None; // the next commit deletes the earlier rows
            earlier_layout.sort_by_key(|(_, at)| *at);
            for (key, at) in earlier_layout {
                self.admitted += 1;
                self.expire(at);
                self.admit(key, at, self.segment);
            }
        }
        Ok(())
    }
}
