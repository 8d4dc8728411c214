//! EventStream frames on arbitrary bytes: one frame, a TCP stream, a UDP datagram.
//!
//! Beyond "never panics": a frame that decodes re-encodes to the same bytes; a stream gives the
//! same frames, errors and close decision however it is split into reads (here: at the offset
//! named by the first byte); a datagram decodes as the frame at its start.
#![no_main]

use colloquium_ingest::frame::{Next, StreamDecoder, decode_datagram, decode_frame, encode};
use libfuzzer_sys::fuzz_target;

/// Frames (topic, payload), errors and whether the stream closed, for `data` read in `parts`.
fn stream(parts: &[&[u8]]) -> (Vec<(String, Vec<u8>)>, Vec<&'static str>, bool) {
    let mut decoder = StreamDecoder::new(1 << 16);
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for part in parts {
        decoder.extend(part);
        loop {
            match decoder.next_frame() {
                Next::Frame { frame, raw } => {
                    assert_eq!(decode_frame(raw), Ok(frame));
                    frames.push((frame.topic.to_owned(), frame.payload.to_vec()));
                }
                Next::Malformed { error, .. } => errors.push(error.category()),
                Next::Skipped => errors.push("skipped"),
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

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame(data) {
        let mut again = Vec::new();
        encode(frame.priority, frame.topic, frame.payload, &mut again);
        assert_eq!(again, data, "a decoded frame re-encodes to its bytes");
    }
    if let Ok(frame) = decode_datagram(data) {
        let len = 4 + 3 + frame.topic.len() + frame.payload.len();
        assert!(len <= data.len());
    }
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    assert_eq!(
        stream(&[data]),
        stream(&[&data[..cut], &data[cut..]]),
        "the same however the reads split it"
    );
});
