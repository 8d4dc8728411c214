//! Runs EventStream's golden frame cases (`shared/conformance/eventstream/frames.jsonl`) in
//! place against the frame decoder: one frame, a TCP stream (as written, and split at every
//! byte offset), UDP datagrams. Where colloquium differs on purpose (a topic that is not UTF-8
//! is rejected; the lengths that crash the original are rejected cleanly) the test checks our
//! behaviour instead, as the suite's README asks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use colloquium_ingest::frame::{
    DEFAULT_MAX_FRAME, FrameError, Next, StreamDecoder, decode_datagram, decode_frame,
    priority_byte,
};
use serde_json::Value;

fn suite() -> Vec<Value> {
    let dir = match std::env::var("COLLOQUIUM_SHARED_DIR") {
        Ok(dir) => PathBuf::from(dir).join("conformance/eventstream"),
        Err(_) => {
            let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
            manifest
                .ancestors()
                .map(|a| a.join("shared/conformance/eventstream"))
                .find(|c| c.is_dir())
                .expect("shared/conformance/eventstream beside the repository (or set COLLOQUIUM_SHARED_DIR)")
        }
    };
    let text = std::fs::read_to_string(dir.join("frames.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(priority, topic_hex, payload_hex)` of a frame as the suite writes it.
type Seen = (u64, String, String);

fn expected_frame(e: &Value) -> Seen {
    (
        e["priority"].as_u64().unwrap(),
        e["topic_hex"].as_str().unwrap().to_owned(),
        e["payload_hex"].as_str().unwrap().to_owned(),
    )
}

fn seen(frame: &colloquium_ingest::frame::Frame<'_>) -> Seen {
    (
        u64::from(priority_byte(frame.priority)),
        hex(frame.topic.as_bytes()),
        hex(frame.payload),
    )
}

/// What a TCP stream became: frames, error categories, whether it was closed.
fn stream(writes: &[Vec<u8>]) -> (Vec<Seen>, Vec<&'static str>, bool) {
    let mut decoder = StreamDecoder::new(DEFAULT_MAX_FRAME);
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for write in writes {
        decoder.extend(write);
        loop {
            match decoder.next_frame() {
                Next::Frame { frame, .. } => frames.push(seen(&frame)),
                Next::Malformed { error, .. } => errors.push(error.category()),
                Next::Skipped => errors.push(FrameError::ZeroLengthSkipped.category()),
                Next::Close(error) => {
                    errors.push(error.category());
                    return (frames, errors, true);
                }
                Next::NeedMore => break,
            }
        }
    }
    (frames, errors, false)
}

#[test]
fn every_golden_frame_case() {
    let cases = suite();
    assert_eq!(cases.len(), 81, "the suite has 81 cases");
    let mut checked = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let bytes = unhex(case["bytes_hex"].as_str().unwrap());
        match case["mode"].as_str().unwrap() {
            "frame" => {
                let decoded = decode_frame(&bytes);
                if let Some(error) = case["error"].as_str() {
                    assert_eq!(decoded.map(|_| ()).unwrap_err().category(), error, "{name}");
                } else if case["expected"]["topic"].is_null() {
                    // The original takes a topic that is not UTF-8; we reject it.
                    assert_eq!(decoded, Err(FrameError::BadTopicUtf8), "{name}");
                } else {
                    let e = &case["expected"];
                    let frame = decoded.unwrap_or_else(|err| panic!("{name}: {err}"));
                    assert_eq!(seen(&frame), expected_frame(e), "{name}");
                    assert_eq!(Some(bytes.len() as u64), e["consumed"].as_u64(), "{name}");
                }
            }
            "tcp" => {
                let e = &case["expected"];
                let writes: Vec<Vec<u8>> = case["writes_hex"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| unhex(w.as_str().unwrap()))
                    .collect();
                let mut frames: Vec<Seen> = Vec::new();
                let mut not_utf8 = 0;
                for f in e["frames"].as_array().unwrap() {
                    if f["topic"].is_null() {
                        not_utf8 += 1;
                    } else {
                        frames.push(expected_frame(f));
                    }
                }
                let errors: Vec<&str> = e["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap())
                    .collect();
                let closed = e["connection_closed_by_server"].as_bool().unwrap();
                let check = |(got, got_errors, got_closed): (Vec<Seen>, Vec<&str>, bool),
                             how: &str| {
                    let ours = got_errors
                        .iter()
                        .filter(|c| **c == "bad_topic_utf8")
                        .count();
                    let theirs: Vec<&str> = got_errors
                        .into_iter()
                        .filter(|c| *c != "bad_topic_utf8")
                        .collect();
                    assert_eq!(got, frames, "{name} ({how}): frames");
                    assert_eq!(theirs, errors, "{name} ({how}): errors");
                    assert_eq!(ours, not_utf8, "{name} ({how}): non-UTF-8 topics rejected");
                    assert_eq!(got_closed, closed, "{name} ({how}): closed");
                };
                check(stream(&writes), "as written");
                // However the bytes are split, the same comes out (large cases: a few cuts).
                let step = (bytes.len() / 64).max(1);
                for cut in (0..=bytes.len()).step_by(step) {
                    let split = [bytes[..cut].to_vec(), bytes[cut..].to_vec()];
                    check(stream(&split), &format!("split at {cut}"));
                }
            }
            "udp" => {
                let datagrams: Vec<Vec<u8>> = case["datagrams_hex"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| unhex(d.as_str().unwrap()))
                    .collect();
                if case["error"] == "peer_crash" {
                    // frame_len ≥ 0xFFFFFFFC wraps the original's length check: rejected here.
                    for d in &datagrams {
                        assert_eq!(
                            decode_datagram(d),
                            Err(FrameError::BadFrameLength),
                            "{name}"
                        );
                    }
                } else {
                    let e = &case["expected"];
                    let (mut frames, mut errors) = (Vec::new(), Vec::new());
                    for d in &datagrams {
                        match decode_datagram(d) {
                            Ok(frame) => frames.push(seen(&frame)),
                            Err(err) => errors.push(Value::from(err.category())),
                        }
                    }
                    let expected: Vec<Seen> = e["frames"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(expected_frame)
                        .collect();
                    assert_eq!(frames, expected, "{name}");
                    assert_eq!(&Value::Array(errors), &e["errors"], "{name}");
                }
            }
            other => panic!("{name}: unknown mode {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 81);
}
