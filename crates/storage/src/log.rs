//! The event log and its group-commit writer.
//!
//! Key: the event's 16-byte id (big-endian ULID: 48-bit ms ingest time, then 80 bits that
//! increase within a millisecond), so keys sort by ingest time and a range scan is a time scan.
//! Value: the event as JSON, exactly what the API serves, so reads need no re-encoding.
//!
//! Durability: callers hand a batch to [`Writer::append`] and wait. One writer thread drains
//! every batch queued at that moment into one `WriteBatch` and one WAL write (fsynced when
//! `sync` is on), then answers all of them: concurrent requests share one fsync (group commit).
//! A batch is written atomically: all of its events or none.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use colloquium_event::{BatchChain, Event, Reservation};
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot};

use crate::feed::Feed;
use crate::recovery::DbSlot;
use crate::{ColumnFamily, StorageError, StorageMetrics};

/// Most bytes merged into one group commit, so one huge group cannot stall the rest.
const MAX_GROUP_BYTES: usize = 32 << 20;
/// Queued batches before `append` waits.
const QUEUE_DEPTH: usize = 4096;

/// A batch already encoded to `(key, value)` pairs, with the channel its result goes to.
struct Request {
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Records of other column families written in the same batch (a source's positions and
    /// dead letters: see [`crate::positions`]).
    extra: Vec<Extra>,
    bytes: usize,
    done: oneshot::Sender<Result<(), StorageError>>,
    /// Dropped by the writer thread once the batch is written (or failed), not before: the ids
    /// must stay below the watermark while the batch may still land.
    settle: Option<Reservation>,
    /// Published to the feed once durable, before `settle` is dropped.
    publish: Option<Arc<[Event]>>,
    /// A source's chain of batches in flight: skipped (failed) once an earlier one failed.
    chain: Option<BatchChain>,
}

/// A record of another column family that must land atomically with a batch of events.
pub(crate) type Extra = (ColumnFamily, Vec<u8>, Vec<u8>);

/// Encodes an event as its log record.
pub fn encode(event: &Event) -> Result<(Vec<u8>, Vec<u8>), StorageError> {
    let value = serde_json::to_vec(event).map_err(|e| StorageError::Db(e.to_string()))?;
    Ok((event.id.to_bytes().to_vec(), value))
}

/// Decodes a log record value.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Event, StorageError> {
    serde_json::from_slice(value).map_err(|e| StorageError::Corrupt {
        cf: ColumnFamily::Events.name(),
        key: hex(key),
        message: e.to_string(),
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The handle callers append through; the thread behind it owns all event-log writes.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread for `cf` of the database in `slot`.
    pub(crate) fn start(
        slot: Arc<DbSlot>,
        feed: Arc<Feed>,
        cf: ColumnFamily,
        sync: bool,
        metrics: StorageMetrics,
    ) -> Result<Self, StorageError> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name(format!("{}-writer", cf.name()))
            .spawn(move || write_loop(&slot, &feed, cf, sync, rx, &metrics))
            .map_err(|e| StorageError::Db(format!("starting writer thread: {e}")))?;
        Ok(Self {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends `events` atomically and returns once they are durable (per the `sync` setting).
    pub(crate) async fn append(
        &self,
        events: &[Event],
        settle: Option<Reservation>,
        publish: Option<Arc<[Event]>>,
        extra: Vec<Extra>,
    ) -> Result<(), StorageError> {
        let (request, result) = Self::request(events, settle, publish, extra, None)?;
        self.sender()?
            .send(request)
            .await
            .map_err(|_| StorageError::Closed)?;
        result.await.map_err(|_| StorageError::Closed)?
    }

    /// Queues `events` as [`Writer::append`] does, without waiting: batches queued one after
    /// another are written in that order, and those of a `chain` that failed are not written.
    /// What it returns resolves once the batch is durable. A full queue is
    /// [`StorageError::Busy`], before anything is queued.
    pub(crate) fn queue(
        &self,
        events: &[Event],
        settle: Option<Reservation>,
        publish: Option<Arc<[Event]>>,
        extra: Vec<Extra>,
        chain: BatchChain,
    ) -> Result<impl Future<Output = Result<(), StorageError>> + Send + use<>, StorageError> {
        let (request, result) = Self::request(events, settle, publish, extra, Some(chain))?;
        self.sender()?.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StorageError::Busy,
            mpsc::error::TrySendError::Closed(_) => StorageError::Closed,
        })?;
        Ok(async move { result.await.map_err(|_| StorageError::Closed)? })
    }

    /// Encodes a batch into its request.
    fn request(
        events: &[Event],
        settle: Option<Reservation>,
        publish: Option<Arc<[Event]>>,
        extra: Vec<Extra>,
        chain: Option<BatchChain>,
    ) -> Result<(Request, oneshot::Receiver<Result<(), StorageError>>), StorageError> {
        let mut records = Vec::with_capacity(events.len());
        let mut bytes: usize = extra.iter().map(|(_, k, v)| k.len() + v.len()).sum();
        for event in events {
            let record = encode(event)?;
            bytes += record.0.len() + record.1.len();
            records.push(record);
        }
        let (done, result) = oneshot::channel();
        let request = Request {
            records,
            extra,
            bytes,
            done,
            settle,
            publish,
            chain,
        };
        Ok((request, result))
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, StorageError> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StorageError::Closed)
    }

    /// Stops taking writes, finishes the queued ones and joins the thread.
    pub(crate) fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

impl Drop for Writer {
    /// Joins the thread, so the database it holds is closed before the process exits
    /// (RocksDB aborts when its static state is torn down under a live handle).
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(
    slot: &DbSlot,
    feed: &Feed,
    cf: ColumnFamily,
    sync: bool,
    mut rx: mpsc::Receiver<Request>,
    metrics: &StorageMetrics,
) {
    let mut options = WriteOptions::default();
    options.set_sync(sync);
    let mut group: Vec<Request> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(request) = next.take() {
            if request.chain.as_ref().is_some_and(BatchChain::is_broken) {
                drop(request.settle);
                let _ = request.done.send(Err(StorageError::ChainBroken));
            } else {
                bytes += request.bytes;
                group.push(request);
            }
            if bytes < MAX_GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        let events: u64 = group.iter().map(|r| r.records.len() as u64).sum();
        let result = slot.get().and_then(|db| {
            let handle = db.cf(cf)?;
            let mut batch = WriteBatch::default();
            for request in &group {
                for (key, value) in &request.records {
                    batch.put_cf(handle, key, value);
                }
                for (cf, key, value) in &request.extra {
                    batch.put_cf(db.cf(*cf)?, key, value);
                }
            }
            // A failure is logged there, once until the store recovers.
            db.write(batch, &options)
        });
        match &result {
            Ok(()) => metrics.commit(events, bytes as u64, started.elapsed()),
            Err(_) => {
                metrics.commit_failed(events);
                for chain in group.iter().filter_map(|r| r.chain.as_ref()) {
                    chain.break_off();
                }
            }
        }
        for request in group.drain(..) {
            // Publish before settling: once the watermark passes a batch, its subscribers have it.
            if let (Ok(()), Some(batch)) = (&result, &request.publish)
                && !batch.is_empty()
            {
                feed.publish(batch);
            }
            // Settle the ids before answering: whoever is woken by the answer (the pipeline
            // worker) must already find the watermark past this batch.
            drop(request.settle);
            // The requester may have gone away (client disconnected); nothing to tell then.
            let _ = request.done.send(result.clone());
        }
    }
}
