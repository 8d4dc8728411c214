//! The open database, and getting it to take writes again after a write error, without a
//! restart.
//!
//! RocksDB stops taking writes after a *hard* error: a WAL append, a flush or a MANIFEST write
//! that found the disk full. It clears some of those itself once space is back (its
//! `SstFileManager` polls the free space and resumes), but not all: after a failed WAL append
//! every later write kept failing until a restart (issue 22). `DB::Resume()` would clear it,
//! but the C API (and so rust-rocksdb) does not expose it; closing and reopening the database
//! does the same, and reopening is what a restart did. So the store watches for itself:
//!
//! - every failed write, and every new RocksDB background error, marks the store unwritable
//!   (`/health` says so at once) and wakes the recovery thread;
//! - the thread probes with a tiny synced write every [`RETRY`]: once one succeeds (RocksDB
//!   resumed by itself), the store is writable again;
//! - while probes fail and the data directory has room to reopen in (the memtables, which
//!   reopening flushes, plus one write buffer for the new WAL), it closes and reopens the
//!   database in-process: readers and writers get [`StorageError::Reopening`] (503, retry) for
//!   that moment, and it waits for operations in flight to finish first. Nothing acknowledged
//!   is lost: every acknowledged write is in the WAL, which the reopen replays.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::{DB, WriteBatch, WriteOptions};

use crate::{ColumnFamily, StorageError, StorageMetrics, StoreOptions};

/// How often an unwritable store is probed (and, with room, reopened).
const RETRY: Duration = Duration::from_millis(250);
/// How often a writable store checks RocksDB's count of background errors.
const CHECK: Duration = Duration::from_secs(1);
/// How long probes fail before the store reopens: RocksDB may be resuming by itself.
const GRACE: Duration = Duration::from_secs(1);
/// How long a reopen waits for operations holding the database to finish.
const QUIESCE: Duration = Duration::from_secs(5);
/// Reopen attempts back off up to this, so a fault reopening cannot fix costs little.
const MAX_REOPEN_BACKOFF: Duration = Duration::from_secs(30);
/// The probe's key, in RocksDB's `default` column family (which holds nothing else).
const PROBE_KEY: &[u8] = b"colloquium.probe";

/// The database handle every part of the store goes through, swapped by a reopen.
pub(crate) struct DbSlot {
    current: Mutex<Option<Arc<DB>>>,
    options: StoreOptions,
    metrics: StorageMetrics,
    writable: AtomicBool,
    signal: Mutex<Signal>,
    wake: Condvar,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    closing: bool,
}

/// How the store became writable again, for the log and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// RocksDB resumed by itself; our probe write went through.
    Resumed,
    /// We closed and reopened the database.
    Reopened,
}

impl Recovered {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Recovered::Resumed => "resumed",
            Recovered::Reopened => "reopened",
        }
    }
}

impl DbSlot {
    /// Opens the database.
    pub(crate) fn open(
        options: StoreOptions,
        metrics: StorageMetrics,
    ) -> Result<Self, StorageError> {
        let db = crate::db::open(&options)?;
        Ok(Self {
            current: Mutex::new(Some(Arc::new(db))),
            options,
            metrics,
            writable: AtomicBool::new(true),
            signal: Mutex::default(),
            wake: Condvar::new(),
        })
    }

    /// The database, for one operation; [`StorageError::Reopening`] while it is being reopened.
    pub(crate) fn get(&self) -> Result<Db<'_>, StorageError> {
        let db = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StorageError::Reopening)?;
        Ok(Db { db, slot: self })
    }

    /// Whether the last write (or probe) succeeded.
    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Records a failed write: the store is unwritable until a probe or reopen succeeds.
    /// Returns whether it was writable until now (so the caller logs the first failure loudly
    /// and the rest quietly).
    pub(crate) fn write_failed(&self, error: &StorageError) -> bool {
        self.metrics.write_failed(error);
        let was = self.writable.swap(false, Ordering::Relaxed);
        self.notify(|s| s.woken = true);
        was
    }

    /// Records a successful write (or probe): the store is writable, and if it was not, it
    /// recovered `how`.
    pub(crate) fn write_succeeded(&self, how: Recovered) {
        // A load first: the swap (a locked instruction) only when something changes.
        if !self.writable.load(Ordering::Relaxed) && !self.writable.swap(true, Ordering::Relaxed) {
            tracing::info!(how = how.as_str(), "the store takes writes again");
            self.metrics.recovered(how);
        }
    }

    fn notify(&self, change: impl FnOnce(&mut Signal)) {
        change(&mut self.signal.lock().unwrap_or_else(|e| e.into_inner()));
        self.wake.notify_all();
    }

    /// Waits up to `timeout` for a wake-up; returns `false` once the store is closing.
    fn wait(&self, timeout: Duration) -> bool {
        let signal = self.signal.lock().unwrap_or_else(|e| e.into_inner());
        let (mut signal, _) = self
            .wake
            .wait_timeout_while(signal, timeout, |s| !s.woken && !s.closing)
            .unwrap_or_else(|e| e.into_inner());
        signal.woken = false;
        !signal.closing
    }

    /// A tiny synced write (a delete of a key nothing holds), the cheapest real WAL append.
    fn probe(&self) -> Result<(), StorageError> {
        let db = self.get()?;
        let mut options = WriteOptions::default();
        options.set_sync(self.options.sync);
        db.db.delete_opt(PROBE_KEY, &options)?;
        Ok(())
    }

    /// RocksDB's count of background errors (failed flushes and compactions) since open.
    fn background_errors(&self) -> u64 {
        self.get()
            .ok()
            .and_then(|db| db.property_int_value("rocksdb.background-errors").ok())
            .flatten()
            .unwrap_or(0)
    }

    /// Bytes a reopen needs free: what it flushes (the memtables) plus one write buffer for
    /// the new WAL (RocksDB preallocates it).
    fn room_needed(&self) -> u64 {
        let memtables: u64 = match self.get() {
            Ok(db) => ColumnFamily::ALL
                .iter()
                .map(|cf| {
                    crate::retention::cf_property(&db, *cf, "rocksdb.cur-size-all-mem-tables")
                })
                .sum(),
            // A reopen that failed left nothing open: whatever the WAL holds gets flushed.
            Err(_) => 0,
        };
        memtables + self.options.write_buffer_bytes as u64 + (1 << 20)
    }

    /// Whether a file can be created and written in the data directory: a reopen that cannot
    /// (a read-only or failing file system) would only close the database readers still use.
    fn dir_writable(&self) -> Result<(), std::io::Error> {
        use std::io::Write;
        let path = self.options.data_dir.join("colloquium.write-check");
        let written = std::fs::File::create(&path).and_then(|mut file| {
            file.write_all(&[0; 4096])?;
            file.sync_all()
        });
        let removed = std::fs::remove_file(&path);
        written.and(removed)
    }

    /// `(free, needed)` bytes in the data directory; `None` when the free space is unknown.
    fn room(&self) -> Option<(u64, u64)> {
        let free = fs4::available_space(&self.options.data_dir).ok()?;
        Some((free, self.room_needed()))
    }

    /// Closes the database (once every operation holding it has finished, [`QUIESCE`] at most)
    /// and opens it again. When the open fails, nothing is open until the next attempt.
    fn reopen(&self) -> Result<(), StorageError> {
        let taken = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut db) = taken {
            let deadline = Instant::now() + QUIESCE;
            loop {
                match Arc::try_unwrap(db) {
                    Ok(only) => {
                        drop(only); // closes it
                        break;
                    }
                    Err(held) if Instant::now() < deadline => {
                        db = held;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(held) => {
                        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
                        return Err(StorageError::Db(
                            "reopening: the database stayed in use".into(),
                        ));
                    }
                }
            }
        }
        let db = crate::db::open(&self.options)?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(db));
        Ok(())
    }

    /// Stops the recovery thread's loop (the caller joins it).
    pub(crate) fn stop(&self) {
        self.notify(|s| s.closing = true);
    }
}

/// The database, held for one operation (a reopen waits for it to be dropped).
pub(crate) struct Db<'a> {
    db: Arc<DB>,
    slot: &'a DbSlot,
}

impl Deref for Db<'_> {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

impl Db<'_> {
    /// The handle of `cf`.
    pub(crate) fn cf(&self, cf: ColumnFamily) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(cf.name())
            .ok_or_else(|| StorageError::Db(format!("column family `{}` missing", cf.name())))
    }

    /// Writes `batch`; a failure marks the store unwritable and wakes its recovery.
    pub(crate) fn write(
        &self,
        batch: WriteBatch,
        options: &WriteOptions,
    ) -> Result<(), StorageError> {
        match self.db.write_opt(batch, options) {
            Ok(()) => {
                // RocksDB resumed by itself if this is the first success after a failure.
                self.slot.write_succeeded(Recovered::Resumed);
                Ok(())
            }
            Err(e) => {
                let error = StorageError::from(e);
                if self.slot.write_failed(&error) {
                    tracing::error!(%error, "a store write failed; the store takes no writes until it recovers");
                }
                Err(error)
            }
        }
    }

    /// The database itself, for a scan that outlives this borrow of the slot.
    pub(crate) fn into_shared(self) -> Arc<DB> {
        self.db
    }
}

/// The thread that watches the store and recovers it (see the module docs).
pub(crate) struct Recovery {
    slot: Arc<DbSlot>,
    thread: Option<JoinHandle<()>>,
}

impl Recovery {
    /// Starts watching `slot`.
    pub(crate) fn start(slot: Arc<DbSlot>) -> Result<Self, StorageError> {
        let watched = slot.clone();
        let thread = std::thread::Builder::new()
            .name("store-recovery".into())
            .spawn(move || watch(&watched))
            .map_err(|e| StorageError::Db(format!("starting the recovery thread: {e}")))?;
        Ok(Self {
            slot,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (a reopen in progress finishes first).
    pub(crate) fn stop(&mut self) {
        self.slot.stop();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store recovery thread panicked");
        }
    }
}

impl Drop for Recovery {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(slot: &DbSlot) {
    let mut errors_seen = slot.background_errors();
    let mut backoff = RETRY;
    let mut next_reopen = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut said_no_room = false;
    while slot.wait(if slot.writable() { CHECK } else { RETRY }) {
        if slot.writable() {
            // A failed flush or compaction stops writes before any write of ours sees it.
            let errors = slot.background_errors();
            if errors <= errors_seen {
                continue;
            }
            errors_seen = errors;
        }
        match slot.probe() {
            Ok(()) => {
                slot.write_succeeded(Recovered::Resumed);
                backoff = RETRY;
                failing_since = None;
                said_no_room = false;
                continue;
            }
            Err(error) => {
                if slot.write_failed(&error) {
                    tracing::error!(%error, "the store cannot write; recovering");
                }
            }
        }
        let failing = *failing_since.get_or_insert_with(Instant::now);
        if failing.elapsed() < GRACE || Instant::now() < next_reopen {
            continue;
        }
        match slot.room() {
            Some((free, needed)) if free < needed => {
                if !said_no_room {
                    tracing::warn!(
                        free,
                        needed,
                        "the store cannot write; waiting for enough free disk space to reopen it"
                    );
                    said_no_room = true;
                }
                continue;
            }
            _ => {}
        }
        if let Err(error) = slot.dir_writable() {
            if !said_no_room {
                tracing::warn!(%error, "the store cannot write; waiting for its data directory to take writes to reopen it");
                said_no_room = true;
            }
            continue;
        }
        tracing::warn!("reopening the store to clear its write error");
        let result = slot.reopen().and_then(|()| slot.probe());
        match result {
            Ok(()) => {
                slot.write_succeeded(Recovered::Reopened);
                errors_seen = slot.background_errors();
                backoff = RETRY;
                failing_since = None;
                said_no_room = false;
            }
            Err(error) => {
                backoff = (backoff * 2).min(MAX_REOPEN_BACKOFF);
                next_reopen = Instant::now() + backoff;
                tracing::error!(%error, retry_in = ?backoff, "reopening the store failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquium_telemetry::MetricsRegistry;

    fn slot(dir: &std::path::Path) -> Arc<DbSlot> {
        let options = StoreOptions {
            sync: false,
            ..StoreOptions::new(dir)
        };
        let metrics = StorageMetrics::register(&MetricsRegistry::default());
        Arc::new(DbSlot::open(options, metrics).unwrap())
    }

    fn put(slot: &DbSlot, key: &[u8]) {
        let db = slot.get().unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(db.cf(ColumnFamily::Events).unwrap(), key, b"v");
        db.write(batch, &WriteOptions::default()).unwrap();
    }

    /// A reopen waits for the operations holding the database, refuses new ones meanwhile
    /// (`Reopening`), and keeps every write, including those only in the WAL.
    #[test]
    fn a_reopen_waits_for_holders_and_keeps_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let slot = slot(dir.path());
        put(&slot, b"a");
        let held = slot.get().unwrap();
        let reopening = std::thread::spawn({
            let slot = slot.clone();
            move || slot.reopen()
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(slot.get(), Err(StorageError::Reopening)) {
            assert!(Instant::now() < deadline, "the reopen never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The holder still reads the database it has.
        let events = held.cf(ColumnFamily::Events).unwrap();
        assert!(held.get_cf(events, b"a").unwrap().is_some());
        drop(held);
        reopening.join().unwrap().unwrap();
        put(&slot, b"b");
        let db = slot.get().unwrap();
        let events = db.cf(ColumnFamily::Events).unwrap();
        assert!(db.get_cf(events, b"a").unwrap().is_some());
        assert!(db.get_cf(events, b"b").unwrap().is_some());
    }

    /// A reopen that cannot get the database back (it stays held past the quiesce time) leaves
    /// the old one in place.
    #[test]
    fn a_reopen_gives_up_on_a_database_held_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let slot = slot(dir.path());
        let held = slot.get().unwrap();
        let error = slot.reopen().unwrap_err();
        assert!(error.to_string().contains("stayed in use"), "{error}");
        drop(held);
        put(&slot, b"still");
    }

    /// A failed write marks the store unwritable; the recovery thread's probe finds it can
    /// write and says so, without any other write.
    #[test]
    fn a_probe_that_succeeds_makes_the_store_writable_again() {
        let dir = tempfile::tempdir().unwrap();
        let slot = slot(dir.path());
        let mut recovery = Recovery::start(slot.clone()).unwrap();
        assert!(slot.write_failed(&StorageError::Db("test".into())));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !slot.writable() {
            assert!(Instant::now() < deadline, "never writable again");
            std::thread::sleep(Duration::from_millis(5));
        }
        recovery.stop();
    }
}
