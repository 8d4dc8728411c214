//! The consumer loop: one thread per `kafka` source, polling a `BaseConsumer`.
//!
//! Why a `BaseConsumer` polled on our own thread, not a `StreamConsumer`: rebalance callbacks
//! run only inside `poll`, and revocation must wait for in-flight batches to be durable and
//! commit synchronously before the partitions are released. A `StreamConsumer`'s waker has been
//! lost after rebalances (it silently stopped consuming); a loop that polls every 100 ms at most
//! cannot be forgotten that way.
//!
//! The loop keeps up to [`MAX_INFLIGHT`] batches in flight to the store, queued in order in
//! one [`BatchChain`] (so the store's group commit merges them, and a failed one fails every
//! later one unwritten: no stored position passes a message that was not stored), and fills
//! the next while they are written. Batches are settled in order. Offsets are stored in
//! librdkafka only after their batch is durable and only for partitions still assigned, and
//! committed every `commit_interval`, on revocation (synchronously) and on shutdown.
//!
//! Backpressure: while a lane says stop, a batch waits for a failed write's retry, or the next
//! batch is full, every assigned partition is paused; polling goes on (rebalances, stats), and
//! librdkafka's prefetch queue is bounded (`queued.max.messages.kbytes`), so memory stays
//! bounded whatever the broker holds. A write that fails (a full disk) seeks the partitions back
//! to their last durable position: Kafka is the retry buffer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use colloquium_event::{
    BatchChain, Event, KafkaOrigin, Metadata, Position, PositionedBatch, Priority, Reason,
    Timestamp,
};
use colloquium_ingest::stamp::Envelope;
use colloquium_ingest::tcp::BadPayload;
use colloquium_ingest::{Accept, AcceptError};
use colloquium_telemetry::health::{ComponentHealth, Status};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message};
use serde_json::{Map, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{PartitionLabels, RebalanceLabels, SourceLabels};
use crate::quiet::Quiet;
use crate::source::{Shared, StartFrom};

/// A topic and partition.
type Tp = (Arc<str>, i32);

/// How long a revocation or shutdown waits for a batch to become durable.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait before re-reading after a failed write.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How long asking the group for its committed offsets may take on assignment.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);
/// Most batches on their way to the store at once. With the one filling, they hold at most
/// `(MAX_INFLIGHT + 1) / BATCHES_PER_PENDING` of `server.max_pending_bytes` in payloads.
pub(crate) const MAX_INFLIGHT: usize = 4;
/// A batch is at most this fraction of `server.max_pending_bytes`.
pub(crate) const BATCHES_PER_PENDING: usize = 8;
/// Most messages taken between two turns of the loop.
const MAX_DRAIN: usize = 10_000;
/// How often `/health` and the lag gauges are refreshed.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The position key of a partition: topic, `0x00`, partition (4 bytes big-endian).
pub(crate) fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + 5);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn parse_position_key(key: &[u8]) -> Option<(String, i32)> {
    let split = key.len().checked_sub(5)?;
    let (topic, rest) = key.split_at(split);
    let partition = <[u8; 4]>::try_from(rest.get(1..)?).ok()?;
    (rest[0] == 0).then(|| {
        (
            String::from_utf8_lossy(topic).into_owned(),
            i32::from_be_bytes(partition),
        )
    })
}

/// What a batch took from one partition.
#[derive(Clone, Copy)]
struct Range {
    /// The first offset taken.
    first: i64,
    /// The offset after the last one taken.
    next: i64,
    /// Messages taken (events and dead letters), for the stored counter.
    messages: u64,
}

/// Messages fetched and not yet handed to the store.
#[derive(Default)]
struct Pending {
    payloads: Vec<(Map<String, Value>, Priority, Box<KafkaOrigin>)>,
    dead_letters: Vec<(Event, Reason, String)>,
    /// What was taken per partition.
    offsets: HashMap<Tp, Range>,
    /// Which priorities the payloads have (a lane check looks at each once).
    priorities: [bool; Priority::ALL.len()],
    bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    fn priorities(&self) -> impl Iterator<Item = Priority> + '_ {
        Priority::ALL
            .iter()
            .zip(self.priorities)
            .filter_map(|(p, present)| present.then_some(*p))
    }
}

/// A batch being written.
struct Inflight {
    task: JoinHandle<Result<(), AcceptError>>,
    /// What it took per partition.
    offsets: HashMap<Tp, Range>,
    /// When it was handed to the store.
    started: Instant,
}

/// An assigned partition.
struct Part {
    /// The next offset after what is durable here; `None` until known (a fresh start).
    durable: Option<i64>,
    /// The partition's high watermark, from the last statistics.
    high: Option<i64>,
    /// Until something is durable here, where reading started: the low watermark (a fresh
    /// `earliest` start), or the high watermark when first seen (`latest`). Lag counts from it.
    base: Option<i64>,
    /// The partition started at its end (`latest`, nothing stored or committed).
    from_end: bool,
    /// When a message was last fetched (or the partition assigned).
    fetched: Instant,
    /// Whether it was stalled at the last report.
    stalled: bool,
}

#[derive(Default)]
struct State {
    pending: Pending,
    /// Oldest first.
    inflight: VecDeque<Inflight>,
    /// The chain the batches in flight are queued in; a new one after a failure.
    chain: BatchChain,
    parts: BTreeMap<Tp, Part>,
    paused: bool,
    /// Set after a failed write: no batch goes out before.
    retry_at: Option<Instant>,
    /// Offsets stored in librdkafka since the last commit.
    uncommitted: bool,
    rebalances: u64,
    last_error: Option<String>,
    /// librdkafka said no broker is reachable, and nothing arrived since.
    brokers_down: bool,
}

/// The consumer's context: the loop's state, reachable from librdkafka's callbacks (which run
/// on this thread, inside `poll`, while the loop holds no lock).
pub(crate) struct Ctx<A> {
    shared: Arc<Shared<A>>,
    runtime: Handle,
    state: Mutex<State>,
    /// librdkafka's reports, rate-limited.
    quiet: Quiet,
}

impl<A> Ctx<A> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn labels(&self, tp: &Tp) -> PartitionLabels {
        PartitionLabels {
            source: self.shared.name.to_owned(),
            topic: tp.0.to_string(),
            partition: i64::from(tp.1),
        }
    }
}

/// Runs the consumer until `shutdown` turns true: subscribe, poll, store, commit; then makes
/// what it holds durable, commits, and leaves the group.
pub(crate) fn consume<A: Accept>(
    shared: Arc<Shared<A>>,
    client: ClientConfig,
    topics: &[String],
    runtime: Handle,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let ctx = Ctx {
        shared: shared.clone(),
        runtime,
        state: Mutex::default(),
        quiet: Quiet::default(),
    };
    let consumer: BaseConsumer<Ctx<A>> = client
        .create_with_context(ctx)
        .map_err(|e| format!("creating the consumer: {e}"))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| format!("subscribing to {names:?}: {e}"))?;
    tracing::info!(source = shared.name, topics = ?names, group = %shared.group_id, "kafka source subscribed");
    let ctx = consumer.context().clone();
    let mut last_commit = Instant::now();
    let mut last_report = Instant::now();
    while !*shutdown.borrow() {
        let busy = {
            let mut state = ctx.state();
            ctx.step(&consumer, &mut state);
            if last_commit.elapsed() >= shared.commit_interval && state.uncommitted {
                ctx.commit(&consumer, &mut state, CommitMode::Async);
                last_commit = Instant::now();
            }
            if last_report.elapsed() >= REPORT_EVERY {
                ctx.report(&state);
                last_report = Instant::now();
            }
            !state.inflight.is_empty() || !state.pending.is_empty()
        };
        // Short while a batch is on its way, so the next goes out as soon as it is durable.
        let timeout = if busy {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(100)
        };
        // The lock is taken per message, never across `poll`: librdkafka runs the rebalance
        // and statistics callbacks inside it, and they take the lock too.
        let mut next = consumer.poll(timeout);
        let mut drained = 0;
        while let Some(polled) = next.take() {
            match polled {
                Ok(message) => {
                    let mut state = ctx.state();
                    state.brokers_down = false;
                    ctx.take(&mut state, &message);
                    if state.pending.bytes >= shared.max_batch_bytes {
                        break;
                    }
                }
                Err(e) => {
                    ctx.trouble(&e, "consuming");
                    break;
                }
            }
            // Drain what librdkafka already holds before the next turn, a batch at most.
            drained += 1;
            if drained < MAX_DRAIN {
                next = consumer.poll(Duration::ZERO);
            }
        }
    }
    {
        let mut state = ctx.state();
        ctx.flush(&consumer, &mut state);
        ctx.commit(&consumer, &mut state, CommitMode::Sync);
    }
    // Leaves the group (the revocation callback finds nothing left to do).
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    shared.health.remove(shared.name);
    tracing::info!(source = shared.name, "kafka source stopped");
    Ok(())
}

impl<A: Accept> Ctx<A> {
    /// One turn of the loop: settle the batches in flight that are done, send the next if it
    /// may go, and pause or resume fetching.
    fn step(&self, consumer: &BaseConsumer<Self>, state: &mut State) {
        self.finish(consumer, state, false);
        let retry_due = state.retry_at.is_none_or(|at| Instant::now() >= at);
        let mut blocked = !retry_due;
        let room = state.inflight.len() < MAX_INFLIGHT && !state.chain.is_broken();
        if room && !state.pending.is_empty() && retry_due {
            let full = self.shared.accept.full(&mut state.pending.priorities());
            if full.is_none() {
                state.retry_at = None;
                self.submit(state);
            } else {
                blocked = true;
            }
        }
        let want_pause = blocked || state.pending.bytes >= self.shared.max_batch_bytes;
        if want_pause != state.paused {
            self.set_paused(consumer, state, want_pause);
        }
    }

    fn set_paused(&self, consumer: &BaseConsumer<Self>, state: &mut State, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in state.parts.keys() {
            tpl.add_partition(topic, *partition);
        }
        let result = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                state.paused = pause;
                let count = if pause { state.parts.len() } else { 0 };
                self.shared
                    .metrics
                    .paused
                    .get_or_create(&self.source_labels())
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                if pause {
                    self.shared.ingest.paused(self.shared.name);
                }
                tracing::debug!(
                    source = self.shared.name,
                    pause,
                    "kafka partitions paused or resumed"
                );
            }
            Err(e) => {
                tracing::warn!(source = self.shared.name, error = %e, "pausing or resuming partitions failed")
            }
        }
    }

    fn source_labels(&self) -> SourceLabels {
        SourceLabels {
            source: self.shared.name.to_owned(),
        }
    }

    /// Turns a message into a pending event or dead letter.
    fn take(&self, state: &mut State, message: &BorrowedMessage<'_>) {
        let tp: Tp = match state
            .parts
            .keys()
            .find(|(t, p)| &**t == message.topic() && *p == message.partition())
        {
            Some(tp) => tp.clone(),
            // Fetched before a revocation we have already handled: its next owner reads it.
            None => return,
        };
        let offset = message.offset();
        let part = state.parts.get_mut(&tp);
        if let Some(part) = part {
            part.fetched = Instant::now();
            // Already durable here (a seek back after a failed write overlapped it).
            if part.durable.is_some_and(|durable| offset < durable) {
                return;
            }
        }
        let shared = &self.shared;
        let payload = message.payload().unwrap_or_default();
        let origin = Box::new(origin(message));
        let mut priority = header(message, "priority")
            .and_then(|p| std::str::from_utf8(p).ok()?.parse::<Priority>().ok())
            .unwrap_or(shared.priority);
        priority = shared.priorities.raise(&tp.0, priority);
        let pending = &mut state.pending;
        // Every path below keeps the message: an event or a dead letter.
        let range = pending.offsets.entry(tp.clone()).or_insert(Range {
            first: offset,
            next: offset,
            messages: 0,
        });
        range.next = offset + 1;
        range.messages += 1;
        pending.bytes += payload.len() + 64;
        if payload.len() > shared.max_body {
            shared.ingest.rejected(shared.name, "too_large", 1);
            let error = format!(
                "the message is {} bytes, larger than max_body_size ({} bytes)",
                payload.len(),
                shared.max_body
            );
            let event = self.raw_event(payload, priority, origin);
            pending
                .dead_letters
                .push((event, Reason::BadPayload, error));
            return;
        }
        let object = payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        let parsed = object
            .then(|| serde_json::from_slice::<Map<String, Value>>(payload).ok())
            .flatten();
        match (parsed, shared.bad_payload) {
            (Some(data), _) => {
                pending.priorities[priority.index()] = true;
                pending.payloads.push((data, priority, origin));
            }
            (None, BadPayload::Raw) => {
                let mut data = Map::new();
                let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
                data.insert("raw".into(), Value::String(encoded));
                pending.priorities[priority.index()] = true;
                pending.payloads.push((data, priority, origin));
            }
            (None, BadPayload::Dlq) => {
                shared.ingest.rejected(shared.name, "bad_payload", 1);
                let event = self.raw_event(payload, priority, origin);
                let error = "the message is not a JSON object".to_owned();
                pending
                    .dead_letters
                    .push((event, Reason::BadPayload, error));
            }
        }
    }

    /// A dead letter's event: the message's bytes as `{"raw": base64}`, with its origin.
    fn raw_event(&self, payload: &[u8], priority: Priority, origin: Box<KafkaOrigin>) -> Event {
        let mut data = Map::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        data.insert("raw".into(), Value::String(encoded));
        let mut metadata = Metadata::new(self.shared.name, &self.shared.pipeline);
        metadata.priority = priority;
        metadata.topic = Some(origin.topic.clone());
        metadata.kafka = Some(origin);
        Event::at(Timestamp::now(), data, metadata)
    }

    /// Hands the pending messages to the store as one batch with their partitions' positions.
    fn submit(&self, state: &mut State) {
        let pending = std::mem::take(&mut state.pending);
        let (data, origins): (Vec<_>, Vec<_>) = pending
            .payloads
            .into_iter()
            .map(|(data, priority, origin)| (data, (priority, origin)))
            .unzip();
        if !data.is_empty() {
            self.shared.ingest.received(self.shared.name, data.len());
        }
        // Counted per partition here, not per message as they are taken (a label set and a
        // lookup each).
        for (tp, range) in &pending.offsets {
            self.shared
                .metrics
                .consumed
                .get_or_create(&self.labels(tp))
                .inc_by(range.messages);
        }
        let (mut events, ids) =
            self.shared
                .stamper
                .stamp(data, &Envelope::default(), Timestamp::now());
        for (event, (priority, origin)) in events.iter_mut().zip(origins) {
            event.metadata.priority = priority;
            event.metadata.topic = Some(origin.topic.clone());
            event.metadata.routing_key = origin.key.clone();
            event.metadata.kafka = Some(origin);
        }
        let positions = pending
            .offsets
            .iter()
            .map(|((topic, partition), range)| Position {
                key: position_key(topic, *partition),
                next: u64::try_from(range.next).unwrap_or_default(),
            })
            .collect();
        let batch = PositionedBatch {
            events,
            dead_letters: pending.dead_letters,
            positions,
            chain: state.chain.clone(),
        };
        // Queued here, on the loop's thread, so batches reach the store in the order taken.
        let task = match self
            .shared
            .accept
            .accept_positioned(self.shared.name, batch, ids)
        {
            Ok(durable) => self.runtime.spawn(durable),
            Err(e) => {
                // Nothing later of this chain may be written before this one is read again.
                state.chain.break_off();
                self.runtime.spawn(async move { Err(e) })
            }
        };
        state.inflight.push_back(Inflight {
            task,
            started: Instant::now(),
            offsets: pending.offsets,
        });
    }

    /// Settles the batches in flight, oldest first, while they are done (or, with `wait`, once
    /// they are, up to [`FLUSH_TIMEOUT`] each): stores the offsets of a durable one for the
    /// partitions still assigned; at a failed one, reads it and everything after it again.
    fn finish(&self, consumer: &BaseConsumer<Self>, state: &mut State, wait: bool) {
        while state
            .inflight
            .front()
            .is_some_and(|i| wait || i.task.is_finished())
        {
            let Some(inflight) = state.inflight.pop_front() else {
                return;
            };
            match self.outcome(inflight.task) {
                Ok(()) => self.durable(consumer, state, &inflight.started, &inflight.offsets),
                Err(error) => {
                    self.failed(consumer, state, inflight.offsets, error);
                    return;
                }
            }
        }
    }

    /// Waits for a batch's write.
    fn outcome(&self, task: JoinHandle<Result<(), AcceptError>>) -> Result<(), String> {
        self.runtime.block_on(async {
            match tokio::time::timeout(FLUSH_TIMEOUT, task).await {
                Ok(Ok(result)) => result.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("the write task failed: {e}")),
                Err(_) => Err("the write did not finish in time".to_owned()),
            }
        })
    }

    /// A batch is durable: its partitions' positions move on and their offsets are stored.
    fn durable(
        &self,
        consumer: &BaseConsumer<Self>,
        state: &mut State,
        started: &Instant,
        offsets: &HashMap<Tp, Range>,
    ) {
        tracing::debug!(
            source = self.shared.name,
            messages = offsets.values().map(|r| r.messages).sum::<u64>(),
            elapsed = ?started.elapsed(),
            "kafka batch durable"
        );
        // Only partitions still assigned: another member may own the rest now.
        let mut tpl = TopicPartitionList::new();
        for (tp, range) in offsets {
            let Some(part) = state.parts.get_mut(tp) else {
                continue;
            };
            part.durable = Some(range.next);
            // `store_offsets` takes the next offset to read (`store_offset` adds one to what
            // it is given: the last message's offset).
            if let Err(e) = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(range.next)) {
                tracing::debug!(source = self.shared.name, topic = %tp.0, partition = tp.1, error = %e, "listing an offset failed");
            }
            self.shared
                .metrics
                .stored
                .get_or_create(&self.labels(tp))
                .inc_by(range.messages);
        }
        if tpl.count() > 0 {
            match consumer.store_offsets(&tpl) {
                Ok(()) => state.uncommitted = true,
                Err(e) => {
                    tracing::debug!(source = self.shared.name, error = %e, "storing offsets failed")
                }
            }
        }
    }

    /// A batch failed: the batches after it in flight fail too (its chain is broken, so the
    /// store writes none of them), so every partition is read again from its last durable
    /// position, in a new chain, after [`RETRY_AFTER`].
    fn failed(
        &self,
        consumer: &BaseConsumer<Self>,
        state: &mut State,
        offsets: HashMap<Tp, Range>,
        error: String,
    ) {
        state.chain.break_off();
        let mut from: HashMap<Tp, i64> = HashMap::new();
        let mut reread = |offsets: &HashMap<Tp, Range>| {
            for (tp, range) in offsets {
                let at = from.entry(tp.clone()).or_insert(range.first);
                *at = (*at).min(range.first);
            }
        };
        reread(&offsets);
        let later = std::mem::take(&mut state.inflight);
        tracing::warn!(source = self.shared.name, %error, after = later.len(), "storing a kafka batch failed; reading it again, with the batches in flight after it");
        state.last_error = Some(error);
        for later in later {
            if self.outcome(later.task).is_ok() {
                // Possible only when the failed one was given up on (FLUSH_TIMEOUT) and may
                // still land: reading both again may store them twice, never loses them.
                tracing::warn!(
                    source = self.shared.name,
                    "a batch after a failed one was written; its messages are read again"
                );
            }
            reread(&later.offsets);
        }
        reread(&std::mem::take(&mut state.pending).offsets);
        for (tp, first) in from {
            let Some(part) = state.parts.get(&tp) else {
                continue;
            };
            let to = part.durable.unwrap_or(first);
            if let Err(e) = consumer.seek(&tp.0, tp.1, Offset::Offset(to), Duration::from_secs(5)) {
                tracing::warn!(source = self.shared.name, topic = %tp.0, partition = tp.1, error = %e, "seeking back failed");
            }
        }
        state.chain = BatchChain::default();
        state.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// Makes everything fetched durable: the batch in flight, then what is pending.
    fn flush(&self, consumer: &BaseConsumer<Self>, state: &mut State) {
        self.finish(consumer, state, true);
        if !state.pending.is_empty() {
            self.submit(state);
            self.finish(consumer, state, true);
        }
    }

    fn commit(&self, consumer: &BaseConsumer<Self>, state: &mut State, mode: CommitMode) {
        if !state.uncommitted || state.parts.is_empty() {
            return;
        }
        match consumer.commit_consumer_state(mode) {
            Ok(()) => {
                state.uncommitted = false;
                if matches!(mode, CommitMode::Sync) {
                    self.committed(state);
                }
            }
            // Nothing stored since the last commit is not an error worth a line.
            Err(e)
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) =>
            {
                state.uncommitted = false;
            }
            Err(e) => {
                tracing::warn!(source = self.shared.name, error = %e, "committing offsets failed")
            }
        }
    }

    /// Sets the committed gauges from what is durable here (after a successful sync commit).
    fn committed(&self, state: &State) {
        for (tp, part) in &state.parts {
            if let Some(durable) = part.durable {
                self.shared
                    .metrics
                    .committed
                    .get_or_create(&self.labels(tp))
                    .set(durable);
            }
        }
    }

    /// Assignment: each partition starts at the later of this node's stored position and the
    /// group's committed offset; `start_from` only when neither exists.
    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let local: HashMap<(String, i32), i64> = match self
            .shared
            .accept
            .positions(self.shared.name)
        {
            Ok(positions) => positions
                .into_iter()
                .filter_map(|p| Some((parse_position_key(&p.key)?, i64::try_from(p.next).ok()?)))
                .collect(),
            Err(e) => {
                tracing::error!(source = self.shared.name, error = %e, "reading stored positions failed");
                HashMap::new()
            }
        };
        let committed = consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT);
        if let Err(e) = &committed {
            tracing::warn!(source = self.shared.name, error = %e, "reading the group's committed offsets failed; librdkafka falls back to them itself");
        }
        let mut state = self.state();
        let entries: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in entries {
            let ours = local.get(&(topic.clone(), partition)).copied();
            let group = committed.as_ref().ok().and_then(|c| {
                match c.find_partition(&topic, partition)?.offset() {
                    Offset::Offset(n) if n >= 0 => Some(n),
                    _ => None,
                }
            });
            let start = match (ours, group, &committed) {
                (Some(a), Some(b), _) => Offset::Offset(a.max(b)),
                (Some(a), None, Ok(_)) => Offset::Offset(a),
                (None, Some(b), _) => Offset::Offset(b),
                (None, None, Ok(_)) => match self.shared.start_from {
                    StartFrom::Earliest => Offset::Beginning,
                    StartFrom::Latest => Offset::End,
                },
                // The group's offset is unknown: librdkafka reads it at fetch start; ours
                // skips what it already stored (see `take`).
                (_, None, Err(_)) => Offset::Stored,
            };
            if let Err(e) = tpl.set_partition_offset(&topic, partition, start) {
                tracing::warn!(source = self.shared.name, %topic, partition, error = %e, "setting a start offset failed");
            }
            tracing::info!(source = self.shared.name, %topic, partition, ?start, stored_here = ?ours, committed = ?group, "partition assigned");
            let durable = match start {
                Offset::Offset(n) => Some(n),
                _ => ours,
            };
            state.parts.insert(
                (Arc::from(topic.as_str()), partition),
                Part {
                    durable,
                    high: None,
                    base: None,
                    from_end: matches!(start, Offset::End),
                    fetched: Instant::now(),
                    stalled: false,
                },
            );
        }
        state.brokers_down = false;
        state.rebalances += 1;
        // New partitions start fetching: pausing applies again from the next turn.
        state.paused = false;
        self.count_rebalance("assign");
        self.report(&state);
    }

    /// Revocation: what was fetched becomes durable, its offsets are committed, then the
    /// partitions go. A lost assignment (the session expired) is not committed: another member
    /// may already own it.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        let mut state = self.state();
        self.flush(consumer, &mut state);
        if lost {
            self.count_rebalance("lost");
        } else {
            state.uncommitted = true;
            self.commit(consumer, &mut state, CommitMode::Sync);
            self.count_rebalance("revoke");
        }
        for element in tpl.elements() {
            let tp: Tp = (Arc::from(element.topic()), element.partition());
            state.parts.remove(&tp);
            let labels = self.labels(&tp);
            self.shared.metrics.lag.remove(&labels);
        }
        state.rebalances += 1;
        tracing::info!(
            source = self.shared.name,
            partitions = tpl.count(),
            lost,
            "partitions revoked"
        );
        self.report(&state);
    }

    fn count_rebalance(&self, kind: &'static str) {
        let labels = RebalanceLabels {
            source: self.shared.name.to_owned(),
            kind,
        };
        self.shared.metrics.rebalances.get_or_create(&labels).inc();
    }

    /// Updates lag gauges, stall detection and `/health`.
    fn report(&self, state: &State) {
        let mut stalled = 0;
        let mut assignment = Vec::new();
        let mut reasons = Vec::new();
        let mut lag_total: i64 = 0;
        for (tp, part) in &state.parts {
            let lag = match (part.high, part.position()) {
                (Some(high), Some(position)) => Some((high - position).max(0)),
                _ => None,
            };
            if let Some(lag) = lag {
                lag_total += lag;
                self.shared
                    .metrics
                    .lag
                    .get_or_create(&self.labels(tp))
                    .set(lag);
            }
            if part.stalled {
                stalled += 1;
                reasons.push(format!(
                    "partition {}/{} has lag {} and fetched nothing for {:?}",
                    tp.0,
                    tp.1,
                    lag.unwrap_or_default(),
                    part.fetched.elapsed()
                ));
            }
            assignment.push(serde_json::json!({
                "topic": &*tp.0,
                "partition": tp.1,
                "position": part.durable,
                "high_watermark": part.high,
                "lag": lag,
                "paused": state.paused,
                "stalled": part.stalled,
            }));
        }
        self.shared
            .metrics
            .stalled
            .get_or_create(&self.source_labels())
            .set(stalled);
        let mut details = Map::new();
        details.insert("type".into(), "kafka".into());
        details.insert("group_id".into(), self.shared.group_id.clone().into());
        details.insert("assignment".into(), Value::Array(assignment));
        details.insert("lag".into(), lag_total.into());
        details.insert("rebalances".into(), state.rebalances.into());
        if let Some(error) = &state.last_error {
            details.insert("last_error".into(), error.clone().into());
        }
        if state.brokers_down {
            reasons.push(format!(
                "no broker is reachable: {}",
                state
                    .last_error
                    .as_deref()
                    .unwrap_or("librdkafka says all are down")
            ));
        }
        let status = if stalled > 0 || state.brokers_down {
            Status::Degraded
        } else {
            Status::Healthy
        };
        self.shared.health.set(
            self.shared.name,
            ComponentHealth {
                status,
                reasons,
                details,
            },
        );
    }

    /// Statistics: high watermarks, and which partitions are stalled (assigned, not paused,
    /// lag above zero, nothing fetched for `stall_after`).
    fn statistics(&self, stats: &Statistics) {
        let mut state = self.state();
        let paused = state.paused;
        let stall_after = self.shared.stall_after;
        for (tp, part) in state.parts.iter_mut() {
            let stats = stats
                .topics
                .get(&*tp.0)
                .and_then(|t| t.partitions.get(&tp.1));
            let watermarks = stats.map(|p| (p.lo_offset, p.hi_offset));
            if part.observe(watermarks, paused, stall_after, Instant::now()) {
                tracing::warn!(source = self.shared.name, topic = %tp.0, partition = tp.1, "kafka partition stalled: lag and nothing fetched");
            }
        }
    }
}

impl Part {
    /// Where this node is in the partition: what is durable here, else where reading started.
    fn position(&self) -> Option<i64> {
        self.durable.or(self.base)
    }

    /// Takes the partition's (low, high) watermarks from the statistics (−1: unknown) and
    /// decides whether it is stalled: assigned, not paused, behind, and nothing fetched for
    /// `stall_after`. Returns whether it has just become stalled.
    fn observe(
        &mut self,
        watermarks: Option<(i64, i64)>,
        paused: bool,
        stall_after: Duration,
        now: Instant,
    ) -> bool {
        if let Some((low, high)) = watermarks {
            if high >= 0 {
                self.high = Some(high);
                if self.from_end {
                    self.base.get_or_insert(high);
                }
            }
            if !self.from_end && low >= 0 {
                self.base = Some(low);
            }
        }
        let lagging = match (self.high, self.position()) {
            (Some(high), Some(position)) => high > position,
            (Some(high), None) => high > 0,
            _ => false,
        };
        if !lagging {
            // Nothing to fetch is not a stall: restart the clock.
            self.fetched = now;
        }
        let was = self.stalled;
        self.stalled =
            lagging && !paused && now.saturating_duration_since(self.fetched) >= stall_after;
        self.stalled && !was
    }
}

/// The message's first header named `name`.
fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value)
}

/// `metadata.kafka` for a message.
fn origin(message: &BorrowedMessage<'_>) -> KafkaOrigin {
    let mut binary = Vec::new();
    let mut text = |name: &str, bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            binary.push(name.to_owned());
            base64::engine::general_purpose::STANDARD.encode(bytes)
        }
    };
    let key = message.key().map(|k| text("key", k));
    let mut headers = BTreeMap::new();
    if let Some(list) = message.headers() {
        for h in list.iter() {
            let value = h.value.map(|v| text(h.key, v)).unwrap_or_default();
            headers.insert(h.key.to_owned(), value);
        }
    }
    KafkaOrigin {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key,
        timestamp: message.timestamp().to_millis(),
        headers,
        binary,
    }
}

impl<A: Accept> ClientContext for Ctx<A> {
    fn stats(&self, statistics: Statistics) {
        self.statistics(&statistics);
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.quiet.log(self.shared.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.trouble(&error, reason);
    }
}

impl<A> Ctx<A> {
    /// An error from librdkafka (its callback, or a failed poll): logged at most once per
    /// kind every 30 s, kept for `/health`, and "no broker reachable" makes it degraded until
    /// a message arrives or partitions are assigned.
    fn trouble(&self, error: &KafkaError, reason: &str) {
        self.quiet.error(self.shared.name, error, reason);
        let mut state = self.state();
        state.last_error = Some(format!("{error}: {reason}"));
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            state.brokers_down = true;
        }
    }
}

impl<A: Accept> ConsumerContext for Ctx<A> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result: KafkaResult<()> = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, tpl);
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(source = self.shared.name, error = ?other, "rebalance failed");
                self.revoke(consumer, tpl);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(source = self.shared.name, error = %e, "applying a rebalance failed");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(source = self.shared.name, error = %e, "an offset commit failed");
            return;
        }
        for element in offsets.elements() {
            if let Offset::Offset(n) = element.offset() {
                let tp: Tp = (Arc::from(element.topic()), element.partition());
                self.shared
                    .metrics
                    .committed
                    .get_or_create(&self.labels(&tp))
                    .set(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_keys_round_trip() {
        for (topic, partition) in [("orders", 0), ("a.b-c", 7), ("", i32::MAX), ("x\0y", 3)] {
            let key = position_key(topic, partition);
            assert_eq!(
                parse_position_key(&key),
                Some((topic.to_owned(), partition))
            );
        }
        assert_eq!(parse_position_key(b"abc"), None);
    }

    fn part(durable: Option<i64>, from_end: bool, at: Instant) -> Part {
        Part {
            durable,
            high: None,
            base: None,
            from_end,
            fetched: at,
            stalled: false,
        }
    }

    #[test]
    fn a_partition_behind_that_fetches_nothing_is_stalled_once_and_recovers() {
        let t0 = Instant::now();
        let after = Duration::from_secs(30);
        let mut p = part(Some(100), false, t0);
        assert!(!p.observe(Some((0, 150)), false, after, t0 + Duration::from_secs(29)));
        assert!(!p.stalled, "not yet");
        assert!(p.observe(Some((0, 150)), false, after, t0 + after));
        assert!(p.stalled);
        assert!(
            !p.observe(Some((0, 160)), false, after, t0 + after * 2),
            "reported once"
        );
        assert!(p.stalled);
        // Paused on purpose (backpressure) is not a stall.
        p.observe(Some((0, 160)), true, after, t0 + after * 3);
        assert!(!p.stalled);
        // Caught up: no lag, the clock restarts.
        p.durable = Some(160);
        p.observe(Some((0, 160)), false, after, t0 + after * 4);
        assert!(!p.stalled);
        assert!(!p.observe(
            Some((0, 170)),
            false,
            after,
            t0 + after * 4 + Duration::from_secs(1)
        ));
    }

    #[test]
    fn lag_counts_from_where_reading_started_until_something_is_durable() {
        let t0 = Instant::now();
        let after = Duration::from_secs(30);
        // `earliest`: from the low watermark (retention may have moved it past 0).
        let mut p = part(None, false, t0);
        assert_eq!(p.position(), None);
        p.observe(Some((40, 100)), false, after, t0);
        assert_eq!(p.position(), Some(40));
        // `latest`: from the high watermark first seen; what arrives after is lag.
        let mut p = part(None, true, t0);
        p.observe(Some((0, 100)), false, after, t0);
        p.observe(Some((0, 130)), false, after, t0);
        assert_eq!((p.position(), p.high), (Some(100), Some(130)));
        // Once something is durable, that is the position.
        p.durable = Some(120);
        assert_eq!(p.position(), Some(120));
        // Unknown watermarks (−1) change nothing.
        p.observe(Some((-1, -1)), false, after, t0);
        assert_eq!(p.high, Some(130));
    }
}
