//! `colloquium replay`: a stopped node's events as NDJSON on stdout, oldest first, with a
//! progress bar (by ingest time covered) on stderr when stderr is a terminal.

use std::io::{BufWriter, ErrorKind, IsTerminal, Write};

use anyhow::Context;
use colloquium_api::query::matches_source;
use colloquium_config::Config;
use colloquium_event::Timestamp;
use colloquium_storage::{ScanRange, StorageMetrics};
use colloquium_telemetry::MetricsRegistry;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ReplayArgs;

/// Prints the events in the requested range.
pub fn run(args: &ReplayArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        config.storage.data_dir = dir.clone();
    }
    let store = crate::node::open_store(&config, StorageMetrics::register(&MetricsRegistry::default()))
        .context("replay reads a stopped node's data directory; for a running node use GET /api/events/stream")?;
    let range = ScanRange {
        since: Some(args.since),
        until: args.until,
        ..Default::default()
    };
    let progress = progress_bar(args.since, args.until.unwrap_or_else(Timestamp::now));
    let mut out = BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
    let mut written = 0u64;
    for item in store.scan(range, false) {
        let (id, raw) = item.context("reading the event log")?;
        if !matches_source(&raw, args.source.as_deref()) {
            continue;
        }
        let result = out.write_all(&raw).and_then(|()| out.write_all(b"\n"));
        match result {
            Ok(()) => {}
            // `colloquium replay ... | head` closes the pipe: that is the reader's choice.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).context("writing to stdout"),
        }
        written += 1;
        if let Some(bar) = &progress
            && written.is_multiple_of(1024)
        {
            bar.set_position(
                id.timestamp()
                    .as_millis()
                    .saturating_sub(args.since.as_millis()),
            );
            bar.set_message(format!("{written} events"));
        }
    }
    match out.flush() {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("writing to stdout"),
        _ => {}
    }
    if let Some(bar) = progress {
        bar.finish_with_message(format!("{written} events"));
    }
    tracing::debug!(written, "replay done");
    Ok(())
}

/// A bar over the time range, or `None` when stderr is not a terminal.
fn progress_bar(since: Timestamp, until: Timestamp) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(until.as_millis().saturating_sub(since.as_millis()).max(1));
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {percent}% of time range, {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}
