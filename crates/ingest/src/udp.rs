//! `udp`: one EventStream frame per datagram (see [`crate::frame`]), received in batches.
//!
//! Datagrams are read many per system call (`recvmmsg`, and GRO where the kernel offers it,
//! through `quinn-udp`), up to 4,096 per batch for [`Accept`], with up to 4 batches being
//! stored while receiving goes on. Bytes after a
//! datagram's frame are ignored, as the original does. A datagram that is not a frame (too
//! short, a frame_len of 0 or past its end — including the lengths ≥ 0xFFFFFFFC that crash the
//! original — or a malformed body) is counted and dead-lettered as `malformed_frame` with its
//! bytes; payloads that are not JSON objects follow `bad_payload` as for `tcp`. UDP has no
//! flow control: while a batch is being stored the kernel's socket buffer holds what arrives,
//! and what overflows it is lost before the node sees it.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;

use colloquium_config::ConfigError;
use colloquium_event::Reason;
use quinn_udp::{RecvMeta, UdpSocketState};
use serde::Deserialize;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::Accept;
use crate::frame::decode_datagram;
use crate::source::{Source, SourceBuildContext, SourceConfig, SourceContext, SourceError};
use crate::tcp::{BadPayload, Batch, Shared, commit, raw_event, stopped, take_frame};
use crate::topics::TopicTable;

/// Datagrams taken per receive call.
const BATCH: usize = 32;
/// Most datagrams in one batch for the store.
const MAX_BATCH: usize = 4_096;
/// Batches being stored at once while receiving goes on.
const MAX_STORING: usize = 4;
/// Bytes per receive buffer: the largest datagram (GRO may fill it with several).
const BUFFER: usize = 1 << 16;

/// `sources.NAME: {type: udp, address: 127.0.0.1:9001, bad_payload: raw, topics: {…},
/// receive_buffer: 4MiB}`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// Where to listen.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// What a payload that is not a JSON object becomes.
    #[serde(default)]
    pub bad_payload: BadPayload,
    /// Topic (or MQTT pattern) → priority; may only raise a frame's own ([`crate::topics`]).
    #[serde(default)]
    pub topics: BTreeMap<String, String>,
    /// The socket's receive buffer, which holds what arrives while batches are stored (the
    /// kernel caps it at `net.core.rmem_max`).
    #[serde(default = "default_receive_buffer")]
    pub receive_buffer: bytesize::ByteSize,
}

fn default_receive_buffer() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(4)
}

/// A non-blocking UDP socket on `address` with a receive buffer of `receive_buffer` bytes.
fn bind(address: SocketAddr, receive_buffer: u64) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Err(e) =
        socket.set_recv_buffer_size(usize::try_from(receive_buffer).unwrap_or(usize::MAX))
    {
        tracing::warn!(error = %e, "setting the UDP receive buffer failed; keeping the default");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9001))
}

impl SourceConfig for UdpConfig {
    const KIND: &'static str = "udp";

    fn validate(&self, at: &str) -> Vec<ConfigError> {
        TopicTable::compile(&self.topics, at)
            .err()
            .unwrap_or_default()
    }

    fn build<A: Accept>(
        self,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, ConfigError> {
        let shared = Arc::new(Shared::new(cx, &self.topics)?);
        Ok(Box::new(UdpSource {
            config: self,
            socket: None,
            shared,
        }))
    }
}

struct UdpSource<A> {
    config: UdpConfig,
    /// Bound, with the kernel's drop count from the moment of binding: what it drops from
    /// then on, before the first read too, is counted.
    socket: Option<(UdpSocket, UdpSocketState, KernelDrops)>,
    shared: Arc<Shared<A>>,
}

/// How often the kernel's drop count of the socket is read.
const DROPS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Datagrams the kernel dropped for the socket because its receive buffer was full (the
/// `drops` column of `/proc/net/udp` and `udp6`), counted as rejected with reason
/// `socket_buffer_full`: they never reach the node, but they are not lost silently.
struct KernelDrops {
    inode: Option<u64>,
    counted: u64,
}

impl KernelDrops {
    fn of(socket: &UdpSocket) -> Self {
        use std::os::fd::AsRawFd;
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd()));
        let inode = link.ok().and_then(|l| {
            let text = l.to_str()?.to_owned();
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
        let mut drops = KernelDrops { inode, counted: 0 };
        // A new socket has dropped nothing; what it drops from now on is ours to report.
        drops.counted = drops.read().unwrap_or(0);
        drops
    }

    fn read(&self) -> Option<u64> {
        let inode = self.inode?;
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.get(9).and_then(|f| f.parse::<u64>().ok()) == Some(inode) {
                    return fields.get(12).and_then(|f| f.parse().ok());
                }
            }
        }
        None
    }

    fn count<A>(&mut self, shared: &Shared<A>) {
        if let Some(total) = self.read()
            && total > self.counted
        {
            let new = usize::try_from(total - self.counted).unwrap_or(usize::MAX);
            shared
                .metrics
                .rejected(shared.name, "socket_buffer_full", new);
            tracing::warn!(
                source = shared.name,
                dropped = new,
                "the kernel dropped datagrams: the socket's receive buffer was full"
            );
            self.counted = total;
        }
    }
}

fn lane_is_full<A: Accept>(shared: &Shared<A>, batch: &Batch) -> bool {
    !batch.payloads.is_empty() && shared.accept.full(&mut batch.priorities()).is_some()
}

impl<A> UdpSource<A> {
    fn error(&self, message: String) -> SourceError {
        SourceError {
            source_name: self.shared.name.to_owned(),
            message,
        }
    }
}

#[async_trait::async_trait]
impl<A: Accept> Source for UdpSource<A> {
    async fn bind(&mut self) -> Result<Option<SocketAddr>, SourceError> {
        let address = self.config.address;
        let socket = bind(address, self.config.receive_buffer.as_u64())
            .map_err(|e| self.error(format!("binding {address}: {e}")))?;
        let state = UdpSocketState::new((&socket).into())
            .map_err(|e| self.error(format!("configuring the socket: {e}")))?;
        let addr = socket.local_addr().map_err(|e| self.error(e.to_string()))?;
        let drops = KernelDrops::of(&socket);
        self.socket = Some((socket, state, drops));
        Ok(Some(addr))
    }

    async fn run(mut self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        if self.socket.is_none() {
            self.bind().await?;
        }
        let Some((socket, state, mut drops)) = self.socket.take() else {
            return Err(self.error("not bound".into()));
        };
        let stopping = stopped(cx.shutdown.clone());
        tokio::pin!(stopping);
        let mut buffers = vec![vec![0_u8; BUFFER]; BATCH];
        let mut meta = vec![RecvMeta::default(); BATCH];
        let mut seen: u64 = 0;
        // Receiving goes on while earlier batches are stored: what arrives meanwhile would
        // otherwise wait in (and overflow) the kernel's socket buffer.
        let mut storing = tokio::task::JoinSet::new();
        let mut batch = Batch::default();
        let mut drops_tick = tokio::time::interval(DROPS_INTERVAL);
        loop {
            tokio::select! {
                ready = socket.readable() => {
                    if let Err(e) = ready {
                        return Err(self.error(format!("waiting for datagrams: {e}")));
                    }
                }
                Some(_) = storing.join_next(), if !storing.is_empty() => continue,
                _ = drops_tick.tick() => {
                    drops.count(&self.shared);
                    continue;
                }
                () = &mut stopping => break,
            }
            // Everything the socket holds now, up to one batch.
            while batch.payloads.len() + batch.rejects.len() < MAX_BATCH {
                let received = {
                    let mut slices: Vec<IoSliceMut<'_>> =
                        buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
                    socket.try_io(Interest::READABLE, || {
                        state.recv((&socket).into(), &mut slices, &mut meta)
                    })
                };
                let count = match received {
                    Ok(count) => count,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(source = self.shared.name, error = %e, "receiving datagrams failed");
                        break;
                    }
                };
                for (buffer, meta) in buffers.iter().zip(&meta).take(count) {
                    let filled = &buffer[..meta.len.min(buffer.len())];
                    // With GRO one buffer holds several datagrams, `stride` bytes apart (an
                    // empty datagram is one too: too small).
                    let stride = meta.stride.max(1);
                    let datagrams = filled
                        .chunks(stride)
                        .chain(filled.is_empty().then_some(filled));
                    for datagram in datagrams {
                        seen += 1;
                        self.take(datagram, seen, &mut batch);
                    }
                }
            }
            // UDP cannot push back: what a full lane cannot take now is dropped, and counted.
            if lane_is_full(&self.shared, &batch) {
                let dropped = batch.payloads.len();
                self.shared.accept.dropped(&mut batch.priorities());
                self.shared
                    .metrics
                    .rejected(self.shared.name, "lane_full", dropped);
                batch.payloads.clear();
            }
            if batch.payloads.is_empty() && batch.rejects.is_empty() {
                continue;
            }
            while storing.len() >= MAX_STORING {
                storing.join_next().await;
            }
            let (shared, full) = (self.shared.clone(), std::mem::take(&mut batch));
            storing.spawn(async move {
                // A batch that could not be stored is lost: UDP has no way to say so.
                if let Err(error) = commit(&shared, full).await {
                    tracing::warn!(source = shared.name, %error, "datagrams not stored");
                }
            });
        }
        while storing.join_next().await.is_some() {}
        drops.count(&self.shared);
        Ok(())
    }
}

impl<A> UdpSource<A> {
    fn take(&self, datagram: &[u8], number: u64, batch: &mut Batch) {
        let shared = &self.shared;
        match decode_datagram(datagram) {
            Ok(frame) => take_frame(
                &frame,
                datagram,
                number,
                self.config.bad_payload,
                shared,
                batch,
            ),
            Err(error) => {
                shared.metrics.rejected(shared.name, error.category(), 1);
                let event = raw_event(shared, datagram, None, None);
                let message = format!("malformed datagram: {error}");
                batch
                    .rejects
                    .push((number, Reason::MalformedFrame, message, event));
            }
        }
    }
}
