//! `colloquium replay`: a stopped node's events as NDJSON on stdout, oldest first, with a
//! progress bar (by ingest time covered) on stderr when stderr is a terminal.

use std::io::{BufWriter, ErrorKind, IsTerminal, Write};

use anyhow::Context;
use colloquium_api::query::matches_source;
use colloquium_config::Config;
use colloquium_event::Timestamp;
use colloquium_storage::{Order, ScanRange, StorageMetrics};
use colloquium_telemetry::MetricsRegistry;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ReplayArgs;

/// Prints the events in the requested range.
pub fn run(args: &ReplayArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        config.storage.data_dir = dir.clone();
    }
    let store = crate::node::open_store(&config, StorageMetrics::register(&MetricsRegistry::default()), false)
        .context("replay reads a stopped node's data directory; for a running node use GET /api/events/stream")?;
    let range = ScanRange {
        since: Some(args.since),
        until: args.until,
        ..Default::default()
    };
    // The bar ends at the last event in range (one backward seek), not at `--until` or now.
    let last = store
        .scan(
            ScanRange {
                order: Order::Desc,
                ..range
            },
            false,
        )
        .next()
        .transpose()
        .context("reading the event log")?
        .map(|(id, _)| id.timestamp());
    let mut progress = Progress::new(args.since, last.unwrap_or(args.since));
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
        progress.update(id.timestamp(), written);
    }
    match out.flush() {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("writing to stdout"),
        _ => {}
    }
    progress.finish(written);
    tracing::debug!(written, "replay done");
    Ok(())
}

/// A bar on stderr (when it is a terminal) over the ingest time from the first event found
/// (not `--since`, which may be long before any data) to the last.
struct Progress {
    bar: Option<ProgressBar>,
    since: Timestamp,
    until: Timestamp,
    start: Option<Timestamp>,
}

impl Progress {
    fn new(since: Timestamp, until: Timestamp) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(1);
            let template =
                "{spinner} [{elapsed_precise}] {wide_bar} {percent}% of time range, {msg}";
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self {
            bar,
            since,
            until,
            start: None,
        }
    }

    fn update(&mut self, at: Timestamp, written: u64) {
        let Some(bar) = &self.bar else { return };
        let start = *self.start.get_or_insert_with(|| {
            let start = at.max(self.since);
            bar.set_length(
                self.until
                    .as_millis()
                    .saturating_sub(start.as_millis())
                    .max(1),
            );
            start
        });
        if written.is_multiple_of(1024) {
            bar.set_position(at.as_millis().saturating_sub(start.as_millis()));
            bar.set_message(format!("{written} events"));
        }
    }

    fn finish(&self, written: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bar.length().unwrap_or(0));
            bar.finish_with_message(format!("{written} events"));
        }
    }
}
