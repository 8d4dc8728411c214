//! Allocator settings and idle trimming for a node, so memory taken by a burst goes back to the
//! OS after it.
//!
//! glibc malloc (RocksDB's C++: write batches, memtables) raises its mmap threshold as large
//! blocks are freed, up to 32 MiB, so the multi-megabyte write batches of a burst of large
//! events come from the heap and stay there after it. `MALLOC_MMAP_THRESHOLD_` fixes it at
//! 4 MiB: those are mapped and unmapped, while ordinary group commits (well under 4 MiB) stay
//! on the heap. Measured (issue 12, BENCHMARKS.md): with eight clients posting batches of eight
//! 1 MB events, RSS after the burst ~220 MiB without it and 179-194 MiB with it; at 128 KiB it
//! fell to ~136 MiB and at 1 MiB to ~132 MiB, but NDJSON ingest lost 13-19% to mmap calls;
//! mimalloc's `MIMALLOC_PURGE_DELAY=0` (~85 MiB with both) cost single-event ingest 5-10%.
//! Those are not kept. What does return the memory, at no cost under load, is trimming both
//! allocators once the node is idle: [`idle`] (issue 22: ~235 → 64 MiB after that burst).
//!
//! glibc reads it only when the process starts, so the node executes itself once more with it
//! set (same process id, same arguments). A value already in the environment is kept.

use std::os::unix::process::CommandExt;

const SETTINGS: [(&str, &str); 1] = [("MALLOC_MMAP_THRESHOLD_", "4194304")];
/// Re-executes the process with [`SETTINGS`] unless they are all set; returns (and the node
/// runs with the defaults) only when that fails.
pub fn return_memory_after_bursts() {
    let missing: Vec<_> = SETTINGS
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for (name, value) in missing {
        command.env(name, value);
    }
    // `exec` returns only on failure.
    let error = command.exec();
    eprintln!(
        "warning: could not apply the allocator settings ({error}); memory taken by a burst may stay with the process"
    );
}

/// Giving a burst's memory back once the node is idle again.
///
/// Freed memory stays with the allocators until something returns it: glibc keeps RocksDB's
/// freed blocks in its arenas until `malloc_trim`, and mimalloc purges a thread's freed pages
/// only when that thread allocates or collects again, which an idle tokio worker never does. So
/// when the store has written nothing for a second after writing something, and RocksDB has
/// finished the flushes and compactions those writes started (they free their buffers only
/// then, seconds later on a loaded machine), [`trim_when_idle`]
/// trims glibc's arenas and asks every worker to collect its mimalloc heap the next time it
/// parks ([`on_thread_park`]). Nothing runs while the node is busy.
pub mod idle {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// Bumped once per trim; each worker collects once per value.
    static EPOCH: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        static COLLECTED: Cell<u64> = const { Cell::new(0) };
    }

    /// For `tokio::runtime::Builder::on_thread_park`: collects this worker's heap once after
    /// each trim (an atomic load otherwise).
    pub fn on_thread_park() {
        let epoch = EPOCH.load(Ordering::Relaxed);
        if COLLECTED.with(|c| c.replace(epoch)) != epoch {
            collect_this_thread();
        }
    }

    /// Every second: when `written()` (bytes the store wrote) stood still after it moved and
    /// `background_jobs()` (the store's running flushes and compactions) is zero, trims. Runs
    /// until the task is dropped.
    pub async fn trim_when_idle(
        written: impl Fn() -> u64,
        background_jobs: impl Fn() -> u64,
        workers: usize,
    ) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut last = written();
        let mut busy = false;
        loop {
            ticks.tick().await;
            let now = written();
            if now != last {
                (last, busy) = (now, true);
                continue;
            }
            if !busy || background_jobs() > 0 {
                continue;
            }
            busy = false;
            EPOCH.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(trim_glibc).await;
            // Idle workers are parked: hand each some (empty) work, so it parks again and
            // collects (this one does when it parks after this tick).
            for _ in 0..workers * 2 {
                tokio::spawn(async {});
            }
            tracing::debug!("idle after a burst: returned freed memory to the OS");
        }
    }

    #[allow(unsafe_code)]
    fn collect_this_thread() {
        // SAFETY: `mi_collect` takes no pointers; it frees and purges the calling thread's own
        // heap, which is mimalloc's (the global allocator) and safe to call at any time.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }

    #[allow(unsafe_code)]
    fn trim_glibc() {
        // SAFETY: `malloc_trim` takes a size and no pointers; it releases free memory at the
        // top of and inside glibc's arenas, under their locks, and may be called at any time.
        unsafe { libc::malloc_trim(0) };
    }
}
