//! `tcp`: EventStream binary frames over TCP (see [`crate::frame`]), one task per connection.
//!
//! Each read's complete frames become one batch for [`Accept`], so frames of many connections
//! meet in the store's group commit; the connection is not read again until its batch is
//! durable, so a client that writes faster than the node stores is slowed by TCP's own window,
//! never dropped. A frame's priority and topic land in the event's metadata. A payload that is
//! a JSON object becomes the event's `data`; any other payload (invalid JSON, an array, a
//! scalar, binary) is kept as `{"raw": "<base64>"}` (`bad_payload: raw`, the default) or
//! dead-lettered as `bad_payload` (`bad_payload: dlq`). The `topics:` table may raise a frame's
//! priority ([`crate::topics`]). A malformed frame is dead-lettered as
//! `malformed_frame` with its raw bytes and reading goes on at the next frame; a frame_len above
//! `max_frame_size`, or the 11th empty frame in a row, closes the connection (logged, counted).
//!
//! Acknowledgements (`ack: true`; off by default, as the original has none): after each batch
//! is durable the server writes, in order, one record per dead-lettered frame and then one
//! ack record:
//!
//! ```text
//! ack:    b'A' · u64 BE  frames durable so far on this connection (events + dead letters)
//! reject: b'R' · u64 BE  the frame's number on this connection (1-based) · u8 reason length ·
//!                        reason (`bad_payload`, `malformed_frame`, …)
//! ```
//!
//! A client that counts acks knows exactly which frames are durable: after an ack of N, its
//! first N frames are stored (rejected ones in the dead-letter queue, replayable).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use bytesize::ByteSize;
use colloquium_config::ConfigError;
use colloquium_event::{Event, Metadata, Reason, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::body::{BodyFormat, parse};
use crate::frame::{DEFAULT_MAX_FRAME, Frame, Next, StreamDecoder};
use crate::source::{Source, SourceBuildContext, SourceConfig, SourceContext, SourceError};
use crate::stamp::{Envelope, Stamper};
use crate::topics::TopicTable;
use crate::{Accept, IngestMetrics};

/// A connection's first read buffer, and the largest it grows to.
const MIN_READ: usize = 64 << 10;
const MAX_READ: usize = 256 << 10;

/// What a payload that is not a JSON object becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadPayload {
    /// An event whose data is `{"raw": "<base64 of the payload>"}`.
    #[default]
    Raw,
    /// A dead letter with reason `bad_payload` (the raw bytes in its event's data).
    Dlq,
}

/// `sources.NAME: {type: tcp, address: 127.0.0.1:9000, max_frame_size: 10MiB,
/// bad_payload: raw, ack: false, topics: {alarms/#: critical}}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Where to listen.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Longest frame; a longer frame_len closes the connection.
    #[serde(default = "default_max_frame")]
    pub max_frame_size: ByteSize,
    /// What a payload that is not a JSON object becomes.
    #[serde(default)]
    pub bad_payload: BadPayload,
    /// Write ack and reject records back (see the module docs).
    #[serde(default)]
    pub ack: bool,
    /// Topic (or MQTT pattern) → priority; may only raise a frame's own ([`crate::topics`]).
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// TLS: `{cert, key}` PEM files, read again at each reload.
    #[serde(default)]
    pub tls: Option<colloquium_config::TlsConfig>,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

fn default_max_frame() -> ByteSize {
    ByteSize::b(DEFAULT_MAX_FRAME as u64)
}

impl SourceConfig for TcpConfig {
    const KIND: &'static str = "tcp";

    fn validate(&self, at: &str) -> Vec<ConfigError> {
        let mut errors = TopicTable::compile(&self.topics, at)
            .err()
            .unwrap_or_default();
        let size = self.max_frame_size.as_u64();
        if size < 8 || size > u64::from(u32::MAX) {
            let message = "must be between 8 B and 4 GiB (frame_len is 32 bits)";
            errors.push(ConfigError::new(format!("{at}.max_frame_size"), message));
        }
        errors
    }

    fn build<A: Accept>(
        self,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, ConfigError> {
        if self.ack && !cx.persist {
            return Err(ConfigError::new(
                cx.key("ack"),
                "an ack says the frames are durable: it needs `persist: true`",
            ));
        }
        let shared = Arc::new(Shared::new(cx, &self.topics)?);
        let tls = match &self.tls {
            Some(tls) => {
                let at = cx.key("tls");
                let certificate = cx.settings.certificates.load(tls, &at)?;
                Some(certificate.acceptor(false)?)
            }
            None => None,
        };
        Ok(Box::new(TcpSource {
            config: self,
            listener: None,
            shared,
            tls,
        }))
    }
}

/// What a frame source's connections (or datagrams) share.
pub(crate) struct Shared<A> {
    pub(crate) accept: A,
    pub(crate) stamper: Stamper,
    pub(crate) metrics: IngestMetrics,
    pub(crate) name: &'static str,
    pub(crate) pipeline: String,
    pub(crate) topics: TopicTable,
    /// Whether its events are written to the log (`persist:`).
    pub(crate) persist: bool,
}

impl<A: Accept> Shared<A> {
    pub(crate) fn new(
        cx: &SourceBuildContext<'_, A>,
        topics: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let topics = TopicTable::compile(topics, &cx.at).map_err(|mut errors| errors.remove(0))?;
        Ok(Shared {
            accept: cx.accept.clone(),
            stamper: cx.stamper(),
            metrics: cx.metrics.clone(),
            name: cx.name,
            pipeline: cx.settings.pipeline.clone(),
            topics,
            persist: cx.persist,
        })
    }
}

struct TcpSource<A> {
    config: TcpConfig,
    listener: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared<A>>,
}

impl<A> TcpSource<A> {
    fn error(&self, message: String) -> SourceError {
        SourceError {
            source_name: self.shared.name.to_owned(),
            message,
        }
    }
}

#[async_trait::async_trait]
impl<A: Accept> Source for TcpSource<A> {
    async fn bind(&mut self) -> Result<Option<SocketAddr>, SourceError> {
        let listener = TcpListener::bind(self.config.address)
            .await
            .map_err(|e| self.error(format!("binding {}: {e}", self.config.address)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| self.error(e.to_string()))?;
        self.listener = Some(listener);
        Ok(Some(addr))
    }

    async fn run(mut self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let listener = match self.listener.take() {
            Some(listener) => listener,
            None => {
                self.bind().await?;
                self.listener
                    .take()
                    .ok_or_else(|| self.error("not bound".into()))?
            }
        };
        let max_frame = usize::try_from(self.config.max_frame_size.as_u64()).unwrap_or(usize::MAX);
        let options = Connection {
            max_frame,
            bad_payload: self.config.bad_payload,
            ack: self.config.ack,
        };
        let mut connections = tokio::task::JoinSet::new();
        let stopping = stopped(cx.shutdown.clone());
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let (shared, shutdown) = (self.shared.clone(), cx.shutdown.clone());
                        let tls = self.tls.clone();
                        connections.spawn(async move {
                            let served = match tls {
                                None => serve(stream, &shared, options, shutdown).await,
                                Some(tls) => {
                                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                        Ok(Ok(stream)) => serve(stream, &shared, options, shutdown).await,
                                        Ok(Err(error)) => Err(error),
                                        Err(_) => Err(std::io::Error::new(
                                            std::io::ErrorKind::TimedOut,
                                            "TLS handshake timed out",
                                        )),
                                    }
                                }
                            };
                            if let Err(error) = served {
                                tracing::debug!(%peer, %error, "tcp connection ended with an error");
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(%error, "accepting a tcp connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut stopping => break,
            }
        }
        drop(listener);
        // Each connection finishes the batch it is storing (and acks it), then stops.
        while connections.join_next().await.is_some() {}
        Ok(())
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Per-connection options.
#[derive(Clone, Copy)]
struct Connection {
    max_frame: usize,
    bad_payload: BadPayload,
    ack: bool,
}

/// What one read's (or one receive's) frames became.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) payloads: Vec<(Map<String, Value>, colloquium_event::Priority, String)>,
    /// Dead letters: the frame's number on the connection, reason, message, event.
    pub(crate) rejects: Vec<(u64, Reason, String, Event)>,
}

impl Batch {
    /// The priorities of its events.
    pub(crate) fn priorities(&self) -> impl Iterator<Item = colloquium_event::Priority> + '_ {
        self.payloads.iter().map(|(_, priority, _)| *priority)
    }
}

/// How often a paused connection looks for room in its lane.
const PAUSE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Longest a client may take to finish a TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve<A: Accept, S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    shared: &Shared<A>,
    options: Connection,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopping = stopped(shutdown);
    tokio::pin!(stopping);
    let mut decoder = StreamDecoder::new(options.max_frame);
    // Small for an idle connection (thousands may be open), doubled while reads fill it, up
    // to `MAX_READ`: a busy one reads (and commits) big batches.
    let mut buf = vec![0_u8; MIN_READ];
    let mut frames_seen: u64 = 0;
    let mut durable: u64 = 0;
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buf) => read?,
            () = &mut stopping => return Ok(()),
        };
        if read == 0 {
            return Ok(()); // an incomplete trailing frame is dropped, as the original does
        }
        decoder.extend(&buf[..read]);
        if read == buf.len() && buf.len() < MAX_READ {
            buf.resize(buf.len() * 2, 0);
        }
        let mut batch = Batch::default();
        let mut close = None;
        loop {
            match decoder.next_frame() {
                Next::Frame { frame, raw } => {
                    frames_seen += 1;
                    take_frame(
                        &frame,
                        raw,
                        frames_seen,
                        options.bad_payload,
                        shared,
                        &mut batch,
                    );
                }
                Next::Malformed { error, raw } => {
                    frames_seen += 1;
                    shared.metrics.rejected(shared.name, error.category(), 1);
                    let event = raw_event(shared, raw, None, None);
                    let message = format!("malformed frame: {error}");
                    batch
                        .rejects
                        .push((frames_seen, Reason::MalformedFrame, message, event));
                }
                Next::Skipped => shared
                    .metrics
                    .rejected(shared.name, "zero_length_skipped", 0),
                Next::Close(error) => {
                    shared.metrics.rejected(shared.name, error.category(), 1);
                    close = Some(error);
                    break;
                }
                Next::NeedMore => break,
            }
        }
        decoder.consume();
        let count = batch.payloads.len() + batch.rejects.len();
        if count > 0 {
            // Backpressure: while a lane of this batch must push back, this connection is
            // not read, so the kernel's window slows the client down; nothing is dropped.
            let mut paused = false;
            while let Some(lane) = shared.accept.full(&mut batch.priorities()) {
                if !paused {
                    paused = true;
                    shared.metrics.paused(shared.name);
                    tracing::debug!(source = shared.name, %lane, "lane full: not reading");
                }
                tokio::select! {
                    () = tokio::time::sleep(PAUSE_POLL) => {}
                    // Not stored and not acked: the client still has it.
                    () = &mut stopping => return Ok(()),
                }
            }
            store(shared, batch, options, &mut stream, &mut durable, count).await?;
        }
        if let Some(error) = close {
            tracing::warn!(source = shared.name, %error, "closing a tcp connection");
            return Ok(());
        }
    }
}

/// Sorts one decoded frame into the batch: an event, or a `bad_payload` dead letter.
pub(crate) fn take_frame<A>(
    frame: &Frame<'_>,
    raw: &[u8],
    number: u64,
    bad_payload: BadPayload,
    shared: &Shared<A>,
    batch: &mut Batch,
) {
    let object = frame
        .payload
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    let parsed = object
        .then(|| parse(frame.payload, BodyFormat::Json).ok())
        .flatten()
        .and_then(|mut payloads| (payloads.len() == 1).then(|| payloads.pop()).flatten());
    let priority = shared.topics.raise(frame.topic, frame.priority);
    match (parsed, bad_payload) {
        (Some(data), _) => batch
            .payloads
            .push((data, priority, frame.topic.to_owned())),
        (None, BadPayload::Raw) => {
            let mut data = Map::new();
            let encoded = base64::engine::general_purpose::STANDARD.encode(frame.payload);
            data.insert("raw".into(), Value::String(encoded));
            batch
                .payloads
                .push((data, priority, frame.topic.to_owned()));
        }
        (None, BadPayload::Dlq) => {
            shared.metrics.rejected(shared.name, "bad_payload", 1);
            let event = raw_event(shared, raw, Some(priority), Some(frame.topic));
            let message = "the payload is not a JSON object".to_owned();
            batch
                .rejects
                .push((number, Reason::BadPayload, message, event));
        }
    }
}

/// An event holding a frame's raw bytes, for the dead-letter queue.
pub(crate) fn raw_event<A>(
    shared: &Shared<A>,
    raw: &[u8],
    priority: Option<colloquium_event::Priority>,
    topic: Option<&str>,
) -> Event {
    let mut data = Map::new();
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    data.insert("frame".into(), Value::String(encoded));
    let mut metadata = Metadata::new(shared.name, &shared.pipeline);
    metadata.priority = priority.unwrap_or_default();
    metadata.topic = topic.map(str::to_owned);
    Event::at(Timestamp::now(), data, metadata)
}

/// Makes a batch durable (events, then dead letters), then acks it when asked.
async fn store<A: Accept, S: tokio::io::AsyncWrite + Unpin>(
    shared: &Shared<A>,
    batch: Batch,
    options: Connection,
    stream: &mut S,
    durable: &mut u64,
    count: usize,
) -> std::io::Result<()> {
    let rejected = commit(shared, batch).await?;
    *durable += count as u64;
    if options.ack {
        let mut records = Vec::new();
        for (number, reason) in rejected {
            let name = reason.as_str().as_bytes();
            records.push(b'R');
            records.extend_from_slice(&number.to_be_bytes());
            records.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            records.extend_from_slice(name);
        }
        records.push(b'A');
        records.extend_from_slice(&durable.to_be_bytes());
        stream.write_all(&records).await?;
        // TLS holds records until flushed; plain TCP's flush does nothing.
        stream.flush().await?;
    }
    Ok(())
}

/// Makes a batch durable: its events in one `Accept` batch, then its dead letters. Returns
/// the dead-lettered frames' numbers and reasons; errs when any of it could not be stored.
pub(crate) async fn commit<A: Accept>(
    shared: &Shared<A>,
    batch: Batch,
) -> std::io::Result<Vec<(u64, Reason)>> {
    let started = std::time::Instant::now();
    let Batch { payloads, rejects } = batch;
    if !payloads.is_empty() {
        let events_count = payloads.len();
        shared.metrics.received(shared.name, events_count);
        let (data, lanes): (Vec<_>, Vec<_>) = payloads
            .into_iter()
            .map(|(data, priority, topic)| (data, (priority, topic)))
            .unzip();
        let (mut events, ids) = shared
            .stamper
            .stamp(data, &Envelope::default(), Timestamp::now());
        for (event, (priority, topic)) in events.iter_mut().zip(lanes) {
            event.metadata.priority = priority;
            event.metadata.topic = Some(topic);
        }
        let taken = if shared.persist {
            shared.accept.accept(events, ids).await
        } else {
            shared.accept.publish(events, ids).await
        };
        if let Err(error) = taken {
            // Nothing of it was stored; the client learns it from the missing ack.
            shared
                .metrics
                .rejected(shared.name, "storage_unavailable", events_count);
            tracing::warn!(source = shared.name, %error, "batch of frames not stored");
            return Err(std::io::Error::other(error.to_string()));
        }
        shared
            .metrics
            .accepted(shared.name, events_count, started.elapsed().as_secs_f64());
    }
    let mut rejected = Vec::with_capacity(rejects.len());
    for (number, reason, message, event) in rejects {
        if let Err(error) = shared.accept.dead_letter(event, reason, message).await {
            tracing::warn!(source = shared.name, %error, "a rejected frame could not be dead-lettered");
            return Err(std::io::Error::other(error.to_string()));
        }
        rejected.push((number, reason));
    }
    Ok(rejected)
}
