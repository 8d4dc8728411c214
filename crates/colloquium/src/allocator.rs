//! Allocator settings for a node, so memory taken by a burst goes back to the OS after it.
//!
//! glibc malloc (RocksDB's C++: write batches, memtables) raises its mmap threshold as large
//! blocks are freed, up to 32 MiB, so the multi-megabyte write batches of a burst of large
//! events come from the heap and stay there after it. `MALLOC_MMAP_THRESHOLD_` fixes it at
//! 4 MiB: those are mapped and unmapped, while ordinary group commits (well under 4 MiB) stay
//! on the heap. Measured (issue 12, BENCHMARKS.md): with eight clients posting batches of eight
//! 1 MB events, RSS after the burst ~220 MiB without it and 179-194 MiB with it; at 128 KiB it
//! fell to ~136 MiB and at 1 MiB to ~132 MiB, but NDJSON ingest lost 13-19% to mmap calls;
//! mimalloc's `MIMALLOC_PURGE_DELAY=0` (~85 MiB with both) cost single-event ingest 5-10%.
//! Those are not kept.
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
