//! `colloquium tap`: the events passing a point of a running node (`GET /api/tap`), as NDJSON
//! on stdout (a table on a terminal); the tap's state (live, dropped) on stderr.

use std::io::{ErrorKind, IsTerminal, Write};

use anyhow::Context;
use serde_json::Value;

use crate::cli::TapArgs;

/// Runs `colloquium tap` until the node closes the tap, stdout closes, or Ctrl-C.
pub async fn run(args: &TapArgs) -> anyhow::Result<()> {
    let api = &args.api;
    let client = crate::client::http_client(&api.credentials)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    let options = [
        ("pipeline", args.pipeline.clone()),
        ("stage", args.stage.clone()),
        ("source", args.source.clone()),
        ("sample", args.sample.map(|n| n.to_string())),
        ("since", args.since.clone()),
        ("buffer", args.buffer.map(|n| n.to_string())),
    ];
    query.extend(options.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let url = format!("{}/api/tap", api.url.trim_end_matches('/'));
    let response = client
        .get(&url)
        .query(&query)
        .header("accept", "text/event-stream")
        .send()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let response = crate::client::check(response, "the tap").await?;
    let table = std::io::stdout().is_terminal() && !args.json;
    let mut printer = Printer {
        table,
        dropped: 0,
        seen: 0,
    };
    let mut response = response;
    let mut pending = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = response.chunk() => chunk.context("reading the tap")?,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(chunk) = chunk else {
            eprintln!("colloquium tap: the node closed the tap");
            break;
        };
        pending.extend_from_slice(&chunk);
        let mut out = std::io::stdout().lock();
        while let Some(end) = find_frame_end(&pending) {
            let frame: Vec<u8> = pending.drain(..end).collect();
            if let Err(error) = printer.frame(&frame, &mut out) {
                if error.kind() == ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error).context("writing to stdout");
            }
        }
        match out.flush() {
            Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    eprintln!(
        "colloquium tap: {} seen, {} dropped",
        printer.seen, printer.dropped
    );
    Ok(())
}

/// The end (past the blank line) of the first whole SSE frame in `buf`.
fn find_frame_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

struct Printer {
    table: bool,
    seen: u64,
    dropped: u64,
}

impl Printer {
    /// Prints one SSE frame: an event's JSON, or the tap's state.
    fn frame(&mut self, frame: &[u8], out: &mut impl Write) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(frame);
        let mut kind = "message";
        let mut data = String::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim_start();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        match kind {
            // A comment (keep-alive) carries no data.
            "message" if data.is_empty() => Ok(()),
            // One event per line (a message carries several when they come fast).
            "message" => {
                for event in data.lines() {
                    if self.table {
                        writeln!(out, "{}", row(event))?;
                    } else {
                        writeln!(out, "{event}")?;
                    }
                }
                Ok(())
            }
            "live" => {
                eprintln!("colloquium tap: following live");
                Ok(())
            }
            "status" => {
                let status: Value = serde_json::from_str(&data).unwrap_or_default();
                self.seen = status["seen"].as_u64().unwrap_or(self.seen);
                let dropped = status["dropped"].as_u64().unwrap_or(self.dropped);
                if dropped != self.dropped {
                    self.dropped = dropped;
                    eprintln!(
                        "colloquium tap: {} seen, {dropped} dropped (the reader is slower than the stream)",
                        self.seen
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// One event as a table row: ingest time, source, priority, id, data (cut to fit a line).
fn row(json: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(json) else {
        return json.to_owned();
    };
    let field = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let meta = &event["metadata"];
    let mut line = format!(
        "{:<24}  {:<10}  {:<8}  {:<26}  {}",
        field(&event["ingest_time"]),
        field(&meta["source"]),
        field(&meta["priority"]),
        field(&event["id"]),
        event["data"]
    );
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(160);
    if let Some((cut, _)) = line.char_indices().nth(width.saturating_sub(1)) {
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_lines_and_state() {
        let mut printer = Printer {
            table: false,
            seen: 0,
            dropped: 0,
        };
        let stream = b"event: live\ndata: {}\n\ndata: {\"id\":\"A\"}\ndata: {\"id\":\"B\"}\n\nevent: status\ndata: {\"seen\":5,\"dropped\":2}\n\n: keep-alive\n\n";
        let mut buf = stream.to_vec();
        let mut out = Vec::new();
        while let Some(end) = find_frame_end(&buf) {
            let frame: Vec<u8> = buf.drain(..end).collect();
            printer.frame(&frame, &mut out).unwrap();
        }
        assert_eq!(out, b"{\"id\":\"A\"}\n{\"id\":\"B\"}\n");
        assert_eq!((printer.seen, printer.dropped), (5, 2));
        assert!(buf.is_empty());
        assert!(row("{\"id\":\"A\",\"data\":{\"x\":1}}").contains("{\"x\":1}"));
    }
}
