//! EventStream's binary frame, byte-exact with the original (`../shared/design/eventstream-wire-format.md`).
//!
//! ```text
//! u32 BE frame_len (bytes after this field) · u8 priority (0 batch … 4 critical)
//!   · u16 BE topic_len (≥ 1) · topic (UTF-8) · payload (the rest)
//! ```
//!
//! Three ways in, as the original reads them: [`decode_frame`] (exactly one frame, its length
//! prefix included), [`StreamDecoder`] (a TCP byte stream: frames split across reads in any way,
//! zero-length frames skipped, a connection closed on an oversized length or on the 11th empty
//! frame in a row), and [`decode_datagram`] (one frame per UDP datagram, trailing bytes
//! ignored). Where we differ from the original on purpose: a topic that is not UTF-8 is
//! rejected ([`FrameError::BadTopicUtf8`]; the original accepts it), and a datagram whose
//! `frame_len` is ≥ 0xFFFFFFFC is rejected as [`FrameError::BadFrameLength`] (the original's
//! 32-bit length check wraps and it crashes). Nothing here panics on any input.

use colloquium_event::Priority;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// The smallest body: priority, topic length, one topic byte.
const MIN_BODY: usize = 1 + 2 + 1;
/// The smallest UDP datagram the original reads (a prefix and the smallest body).
pub const MIN_DATAGRAM: usize = LENGTH_PREFIX + MIN_BODY;
/// The original's TCP frame limit, and our default `max_frame_size`.
pub const DEFAULT_MAX_FRAME: usize = 10 << 20;
/// Empty frames in a row a TCP connection may send; the next one closes it.
const MAX_EMPTY_FRAMES: u32 = 10;

/// One decoded frame, borrowing from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its lane.
    pub priority: Priority,
    /// Its topic (1 to 65,535 bytes of UTF-8).
    pub topic: &'a str,
    /// Everything after the topic: opaque bytes (JSON or not is the source's decision).
    pub payload: &'a [u8],
}

/// Why bytes are not a frame. The names are the conformance suite's categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than 4 bytes: no length prefix.
    #[error("fewer than 4 bytes: no length prefix")]
    ShortLengthPrefix,
    /// `frame_len` differs from the bytes given ([`decode_frame`] only).
    #[error("frame_len does not match the bytes given")]
    LengthMismatch,
    /// The body is shorter than priority + topic length.
    #[error("frame body shorter than 3 bytes")]
    ShortBody,
    /// Priority above 4 (checked before the topic length, as the original does).
    #[error("priority above 4")]
    BadPriority,
    /// `topic_len` is 0.
    #[error("topic_len is 0")]
    TopicLenZero,
    /// `topic_len` runs past the end of the frame.
    #[error("topic_len runs past the end of the frame")]
    TopicPastEnd,
    /// The topic is not UTF-8 (the original accepts it; we do not).
    #[error("topic is not valid UTF-8")]
    BadTopicUtf8,
    /// TCP: a frame_len of 0, skipped (4 bytes).
    #[error("zero frame_len skipped")]
    ZeroLengthSkipped,
    /// TCP: the 11th zero frame_len in a row; the connection is closed.
    #[error("too many empty frames in a row")]
    TooManyEmptyFrames,
    /// TCP: frame_len above `max_frame_size`; the connection is closed.
    #[error("frame_len above max_frame_size")]
    FrameTooLarge,
    /// UDP: a datagram shorter than 8 bytes.
    #[error("datagram shorter than 8 bytes")]
    DatagramTooSmall,
    /// UDP: frame_len 0, or more than the datagram holds.
    #[error("frame_len is 0 or larger than the datagram")]
    BadFrameLength,
}

impl FrameError {
    /// The conformance suite's name for it, also the metric label.
    pub fn category(self) -> &'static str {
        match self {
            FrameError::ShortLengthPrefix => "short_length_prefix",
            FrameError::LengthMismatch => "length_mismatch",
            FrameError::ShortBody => "short_body",
            FrameError::BadPriority => "bad_priority",
            FrameError::TopicLenZero => "topic_len_zero",
            FrameError::TopicPastEnd => "topic_past_end",
            FrameError::BadTopicUtf8 => "bad_topic_utf8",
            FrameError::ZeroLengthSkipped => "zero_length_skipped",
            FrameError::TooManyEmptyFrames => "too_many_empty_frames",
            FrameError::FrameTooLarge => "frame_too_large",
            FrameError::DatagramTooSmall => "datagram_too_small",
            FrameError::BadFrameLength => "bad_frame_length",
        }
    }
}

/// The wire's priority byte as a lane.
fn priority(byte: u8) -> Option<Priority> {
    Some(match byte {
        0 => Priority::Batch,
        1 => Priority::Low,
        2 => Priority::Medium,
        3 => Priority::High,
        4 => Priority::Critical,
        _ => return None,
    })
}

/// The lane's priority byte.
pub fn priority_byte(priority: Priority) -> u8 {
    match priority {
        Priority::Batch => 0,
        Priority::Low => 1,
        Priority::Medium => 2,
        Priority::High => 3,
        Priority::Critical => 4,
    }
}

/// Decodes a frame body (the `frame_len` bytes after the prefix), checking in the original's
/// order: length, priority, topic length, topic bounds; then (ours) UTF-8.
pub fn decode_body(body: &[u8]) -> Result<Frame<'_>, FrameError> {
    let [prio, len_hi, len_lo, rest @ ..] = body else {
        return Err(FrameError::ShortBody);
    };
    let priority = priority(*prio).ok_or(FrameError::BadPriority)?;
    let topic_len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
    if topic_len == 0 {
        return Err(FrameError::TopicLenZero);
    }
    let (topic, payload) = rest
        .split_at_checked(topic_len)
        .ok_or(FrameError::TopicPastEnd)?;
    let topic = std::str::from_utf8(topic).map_err(|_| FrameError::BadTopicUtf8)?;
    Ok(Frame {
        priority,
        topic,
        payload,
    })
}

fn length_prefix(bytes: &[u8]) -> Option<u32> {
    let prefix: [u8; LENGTH_PREFIX] = bytes.get(..LENGTH_PREFIX)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix))
}

/// Decodes exactly one frame, its length prefix included (`frame_len` must equal the bytes
/// after it).
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameError> {
    let frame_len = length_prefix(bytes).ok_or(FrameError::ShortLengthPrefix)?;
    let body = &bytes[LENGTH_PREFIX..];
    if u64::from(frame_len) != body.len() as u64 {
        return Err(FrameError::LengthMismatch);
    }
    decode_body(body)
}

/// Decodes the frame at the start of a UDP datagram; bytes after it are ignored.
pub fn decode_datagram(datagram: &[u8]) -> Result<Frame<'_>, FrameError> {
    if datagram.len() < MIN_DATAGRAM {
        return Err(FrameError::DatagramTooSmall);
    }
    let frame_len = length_prefix(datagram).ok_or(FrameError::DatagramTooSmall)?;
    // In 64 bits: the original's `4 + frame_len` wraps for frame_len ≥ 0xFFFFFFFC.
    let end = LENGTH_PREFIX as u64 + u64::from(frame_len);
    if frame_len == 0 || end > datagram.len() as u64 {
        return Err(FrameError::BadFrameLength);
    }
    decode_body(&datagram[LENGTH_PREFIX..LENGTH_PREFIX + frame_len as usize])
}

/// Appends one frame to `out` (for clients, tests and the load generator).
pub fn encode(priority: Priority, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
    let topic_len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let topic = &topic.as_bytes()[..usize::from(topic_len)];
    let frame_len = 1 + 2 + topic.len() + payload.len();
    out.extend_from_slice(&u32::try_from(frame_len).unwrap_or(u32::MAX).to_be_bytes());
    out.push(priority_byte(priority));
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
}

/// What the next frame of a stream is.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A frame; `raw` is all its bytes, prefix included (what a dead letter keeps).
    Frame {
        /// The decoded frame.
        frame: Frame<'a>,
        /// Its bytes on the wire.
        raw: &'a [u8],
    },
    /// A frame that breaks the format; reading goes on at the next frame. `raw` as above.
    Malformed {
        /// Why.
        error: FrameError,
        /// Its bytes on the wire.
        raw: &'a [u8],
    },
    /// A zero frame_len, skipped.
    Skipped,
    /// The connection must be closed (its reason); nothing more is read from it.
    Close(FrameError),
    /// More bytes are needed.
    NeedMore,
}

/// Splits a TCP byte stream into frames as the original does. Feed it what each read returns
/// ([`StreamDecoder::buffer`] then [`StreamDecoder::filled`]) and take frames with
/// [`StreamDecoder::next_frame`]; call [`StreamDecoder::consume`] once you are done with what `next_frame`
/// returned (frames borrow the buffer).
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    /// Bytes of the frame `next_frame` last returned, to drop at `consume`.
    pending: usize,
    empty_in_a_row: u32,
    max_frame: usize,
    closed: bool,
}

impl StreamDecoder {
    /// A decoder that closes the connection on a frame_len above `max_frame`.
    pub fn new(max_frame: usize) -> Self {
        StreamDecoder {
            buf: Vec::new(),
            start: 0,
            pending: 0,
            empty_in_a_row: 0,
            max_frame,
            closed: false,
        }
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame (an incomplete frame at end of stream is
    /// dropped, as the original does).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start - self.pending
    }

    /// Drops the bytes of what `next_frame` returned last.
    pub fn consume(&mut self) {
        self.start += self.pending;
        self.pending = 0;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    fn compact(&mut self) {
        self.consume();
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next frame, or what else the stream holds (see [`Next`]). Call
    /// [`StreamDecoder::consume`] before the next call.
    pub fn next_frame(&mut self) -> Next<'_> {
        self.consume();
        if self.closed {
            return Next::NeedMore;
        }
        let bytes = &self.buf[self.start..];
        let Some(frame_len) = length_prefix(bytes) else {
            return Next::NeedMore;
        };
        if frame_len == 0 {
            self.empty_in_a_row += 1;
            if self.empty_in_a_row > MAX_EMPTY_FRAMES {
                self.closed = true;
                return Next::Close(FrameError::TooManyEmptyFrames);
            }
            self.pending = LENGTH_PREFIX;
            return Next::Skipped;
        }
        if u64::from(frame_len) > self.max_frame as u64 {
            self.closed = true;
            return Next::Close(FrameError::FrameTooLarge);
        }
        let end = LENGTH_PREFIX + frame_len as usize;
        if bytes.len() < end {
            return Next::NeedMore;
        }
        self.empty_in_a_row = 0;
        self.pending = end;
        let raw = &self.buf[self.start..self.start + end];
        match decode_body(&raw[LENGTH_PREFIX..]) {
            Ok(frame) => Next::Frame { frame, raw },
            Err(error) => Next::Malformed { error, raw },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_documents_example_has_length_27() {
        let mut bytes = Vec::new();
        encode(
            Priority::High,
            "sensors/temp",
            br#"{"value":23.5}"#[..12].as_ref(),
            &mut bytes,
        );
        assert_eq!(&bytes[..4], &[0, 0, 0, 27]);
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!(frame.topic, "sensors/temp");
        assert_eq!(frame.priority, Priority::High);
        // The document prints 0x19 = 25, which is wrong.
        bytes[3] = 25;
        assert_eq!(decode_frame(&bytes), Err(FrameError::LengthMismatch));
    }

    #[test]
    fn a_frame_split_at_every_byte_boundary_reassembles() {
        let mut stream = Vec::new();
        for (n, topic) in ["a", "b/c", "d"].iter().enumerate() {
            encode(
                Priority::Low,
                topic,
                format!("{{\"n\":{n}}}").as_bytes(),
                &mut stream,
            );
        }
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut decoder = StreamDecoder::new(DEFAULT_MAX_FRAME);
                let mut topics = Vec::new();
                for part in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    decoder.extend(part);
                    loop {
                        match decoder.next_frame() {
                            Next::Frame { frame, .. } => topics.push(frame.topic.to_owned()),
                            Next::NeedMore => break,
                            other => panic!("{other:?}"),
                        }
                    }
                }
                assert_eq!(topics, ["a", "b/c", "d"], "cut at {cut} and {cut2}");
                assert_eq!(decoder.buffered(), 0);
            }
        }
    }

    #[test]
    fn udp_lengths_that_wrap_in_32_bits_are_rejected() {
        for frame_len in [0xFFFF_FFFC_u32, 0xFFFF_FFFF] {
            let mut datagram = frame_len.to_be_bytes().to_vec();
            datagram.extend_from_slice(&[2, 0, 1, b'x', b'{', b'}']);
            assert_eq!(decode_datagram(&datagram), Err(FrameError::BadFrameLength));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300), cut in 0usize..300) {
            let _ = decode_frame(&bytes);
            let _ = decode_datagram(&bytes);
            let mut decoder = StreamDecoder::new(64);
            let cut = cut.min(bytes.len());
            for part in [&bytes[..cut], &bytes[cut..]] {
                decoder.extend(part);
                for _ in 0..400 {
                    if matches!(decoder.next_frame(), Next::NeedMore | Next::Close(_)) {
                        break;
                    }
                }
            }
        }
    }
}
