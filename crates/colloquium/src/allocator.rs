//! Allocator settings for a node, so memory taken by a burst goes back to the OS after it.
//!
//! Measured with eight clients posting batches of eight 1 MB events (issue 12, BENCHMARKS.md):
//! RSS stayed at ~220 MiB long after the burst with the allocators' defaults, and fell to
//! ~85 MiB with both settings below.
//! - mimalloc (our heap) purges freed pages lazily, at the next allocation of the thread that
//!   freed them; threads idle after a burst never do. `MIMALLOC_PURGE_DELAY=0` purges at once.
//! - glibc malloc (RocksDB's C++: write batches, memtables) raises its mmap threshold as large
//!   blocks are freed, so later ones come from the heap and stay there.
//!   `MALLOC_MMAP_THRESHOLD_` fixes it at 128 KiB.
//!
//! Both allocators read these only when the process starts, so the node executes itself once
//! more with them set (same process id, same arguments). A value already in the environment
//! is kept.

use std::os::unix::process::CommandExt;

const SETTINGS: [(&str, &str); 2] = [
    ("MIMALLOC_PURGE_DELAY", "0"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
];

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
