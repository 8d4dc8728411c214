//! `colloquium bench http`: a closed-loop (or rate-limited) load generator for `POST /events`;
//! `colloquium bench tcp`: EventStream frames to a `tcp` source, counting its durable acks.
//!
//! Each connection is one HTTP/1.1 keep-alive connection with one request in flight. Latency is
//! the time from when a request was due (its scheduled slot under `--rate`, else when it was
//! sent) until its `202` arrived, so a stalled node shows up in the tail instead of being
//! hidden by the generator waiting (coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::cli::{BenchCommand, BenchHttpArgs, BenchTcpArgs, BenchUdpArgs};

/// Runs a benchmark subcommand.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Http(args) => http(args).await,
        BenchCommand::Tcp(args) => tcp(args).await,
        BenchCommand::Udp(args) => udp(args).await,
        BenchCommand::Kafka(args) => crate::bench_kafka::run(args).await,
    }
}

/// Sends datagrams for `--duration`, waits for the node to settle, and compares what it
/// stored (its `colloquium_storage_events_stored_total`, before and after) with what was sent.
async fn udp(args: BenchUdpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.sockets > 0, "--sockets must be at least 1");
    anyhow::ensure!(args.size >= 32, "--size must be at least 32");
    let before = stored_events(args.http).await?;
    let mut datagram = Vec::new();
    let head = "{\"pad\":\"";
    let payload = format!(
        "{head}{}\"}}",
        "x".repeat(args.size.saturating_sub(head.len() + 2))
    );
    colloquium_ingest::frame::encode(
        colloquium_event::Priority::Medium,
        "bench",
        payload.as_bytes(),
        &mut datagram,
    );
    let end = Instant::now() + args.duration;
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.sockets as f64 / r.max(1) as f64));
    let mut tasks = Vec::new();
    for _ in 0..args.sockets {
        let datagram = datagram.clone();
        tasks.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let mut sent = 0u64;
            let mut next = Instant::now();
            while Instant::now() < end {
                if let Some(interval) = interval {
                    next += interval;
                    tokio::time::sleep_until(next.into()).await;
                }
                // A full kernel send buffer is an error here, not a loss: retry.
                if socket.send_to(&datagram, args.addr).await.is_ok() {
                    sent += 1;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    let mut sent = 0u64;
    for task in tasks {
        sent += task.await.context("sender task")??;
    }
    // Let the node store what is in its socket buffer.
    let mut stored = stored_events(args.http).await? - before;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stored_events(args.http).await? - before;
        if now == stored {
            break;
        }
        stored = now;
    }
    let seconds = args.duration.as_secs_f64();
    println!(
        "bench udp: {} sockets, {} B payloads, rate {}, {:?}",
        args.sockets,
        args.size,
        args.rate
            .map_or("unlimited".to_owned(), |r| format!("{r} datagrams/s")),
        args.duration
    );
    println!(
        "datagrams: sent {sent} ({:.0}/s), stored {stored} ({:.0}/s), lost {} ({:.1} %)",
        sent as f64 / seconds,
        stored as f64 / seconds,
        sent.saturating_sub(stored),
        100.0 * sent.saturating_sub(stored) as f64 / sent.max(1) as f64
    );
    Ok(())
}

/// Prints the node's peak and current resident memory.
pub(crate) fn print_rss(pid: u32) {
    match peak_rss(pid) {
        Some((peak, now)) => println!(
            "node rss:   peak {} MiB, now {} MiB",
            peak / 1024,
            now / 1024
        ),
        None => println!("node rss:   unavailable for pid {pid}"),
    }
}

/// The node's `colloquium_storage_events_stored_total`.
pub(crate) async fn stored_events(http: SocketAddr) -> anyhow::Result<u64> {
    let text = metrics_text(http).await?;
    metric_sum(&text, "colloquium_storage_events_stored_total")
        .context("the node's /metrics has no colloquium_storage_events_stored_total")
}

/// The node's `/metrics` text.
pub(crate) async fn metrics_text(http: SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(http)
        .await
        .with_context(|| format!("connecting to {http}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// The sum of a metric's series whose line starts with `prefix` in Prometheus text.
pub(crate) fn metric_sum(text: &str, prefix: &str) -> Option<u64> {
    let mut found = None;
    for value in text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    {
        *found.get_or_insert(0) += value as u64;
    }
    found
}

/// Streams frames over `--connections` connections for the warm-up and the measured time;
/// counts the frames acked (durable) during the measured time.
async fn tcp(args: BenchTcpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.size >= 32, "--size must be at least 32");
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let pace = args.rate.map(|rate| {
            // Frames per connection per millisecond, at least one.
            rate.div_ceil(args.connections as u64 * 1_000).max(1) as usize
        });
        tasks.push(tokio::spawn(tcp_connection(
            TcpLoad {
                addr: args.addr,
                size: args.size,
                window: args.window,
                priority: args.priority,
                per_ms: pace,
            },
            measure_from,
            end,
        )));
    }
    let mut acked = 0u64;
    for task in tasks {
        acked += task.await.context("connection task")??;
    }
    let seconds = args.duration.as_secs_f64();
    let frame_bytes = (4 + 3 + 5 + args.size) as f64;
    println!(
        "bench tcp: {} connections, {} B payloads, {:?} measured after {:?} warm-up",
        args.connections, args.size, args.duration, args.warmup
    );
    println!(
        "frames/s:   {:.0} durable (acked), {:.1} MiB/s of payload, {:.1} MiB/s on the wire",
        acked as f64 / seconds,
        acked as f64 * args.size as f64 / seconds / f64::from(1 << 20),
        acked as f64 * frame_bytes / seconds / f64::from(1 << 20),
    );
    if let Some(pid) = args.pid {
        print_rss(pid);
    }
    Ok(())
}

/// What one `bench tcp` connection sends.
struct TcpLoad {
    addr: SocketAddr,
    size: usize,
    window: u64,
    priority: colloquium_event::Priority,
    /// Frames per millisecond (`None`: flat out).
    per_ms: Option<usize>,
}

/// One connection: writes frames in chunks while fewer than `window` are unacked; returns the
/// frames acked between `measure_from` and `end`.
async fn tcp_connection(load: TcpLoad, measure_from: Instant, end: Instant) -> anyhow::Result<u64> {
    let TcpLoad {
        addr,
        size,
        window,
        priority,
        per_ms,
    } = load;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let (acks, mut acked) = tokio::sync::watch::channel(0u64);
    let counter = tokio::spawn(async move {
        let (mut at_start, mut at_end) = (None, None);
        // Acks stop counting at `end`: waiting past it for one more would hang a run whose
        // frames were all acked before it (a node that pushed back, then drained).
        while let Ok(Ok(record)) = tokio::time::timeout_at(end.into(), reader.read_u8()).await {
            match record {
                b'A' => {
                    let Ok(n) = reader.read_u64().await else {
                        break;
                    };
                    let now = Instant::now();
                    if now < measure_from {
                        at_start = Some(n);
                    } else if now < end {
                        at_end = Some(n);
                    }
                    let _ = acks.send(n);
                    if now >= end {
                        break;
                    }
                }
                b'R' => {
                    let mut head = [0u8; 9];
                    if reader.read_exact(&mut head).await.is_err() {
                        break;
                    }
                    let mut reason = vec![0u8; usize::from(head[8])];
                    if reader.read_exact(&mut reason).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        at_end.unwrap_or(0).saturating_sub(at_start.unwrap_or(0))
    });
    // A chunk of frames with JSON payloads padded to `size` bytes.
    let mut chunk = Vec::new();
    let per_chunk = per_ms.unwrap_or((256 << 10) / (size + 12).max(1));
    for seq in 0..per_chunk {
        let head = format!("{{\"seq\":{seq},\"pad\":\"");
        let pad = size.saturating_sub(head.len() + 2);
        let payload = format!("{head}{}\"}}", "x".repeat(pad));
        colloquium_ingest::frame::encode(priority, "bench", payload.as_bytes(), &mut chunk);
    }
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while Instant::now() < end {
        if per_ms.is_some() {
            tick.tick().await;
        }
        while sent.saturating_sub(*acked.borrow()) > window {
            if tokio::time::timeout(Duration::from_millis(100), acked.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                anyhow::bail!("the node closed the connection (is `ack: true` set?)");
            }
            if Instant::now() >= end {
                break;
            }
        }
        writer.write_all(&chunk).await?;
        sent += per_chunk as u64;
    }
    let measured = counter.await.context("ack reader")?;
    Ok(measured)
}

/// What one connection measured.
struct ConnectionReport {
    latency_us: Histogram<u64>,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

async fn http(args: BenchHttpArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let (body, content_type) = request_body(args.batch);
    let bodies = Arc::new(match args.window_keys {
        Some(keys) => Bodies::Windows {
            keys: keys.max(1),
            batch: args.batch as u64,
            next: AtomicU64::new(0),
        },
        None => match args.streamguard_users {
            Some(users) => Bodies::Streamguard {
                users: users.max(1),
                batch: args.batch as u64,
                next: AtomicU64::new(0),
            },
            None => Bodies::Fixed(body),
        },
    });
    // Per-connection request interval under --rate.
    let interval = match args.rate {
        Some(0) => anyhow::bail!("--rate must be at least 1"),
        Some(rate) => {
            let requests_per_second = rate as f64 / args.batch as f64 / args.connections as f64;
            Some(Duration::from_secs_f64(1.0 / requests_per_second))
        }
        None => None,
    };
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;

    let target = Arc::new(Target::new(&args)?);
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let body = bodies.clone();
        // Spread the connections' schedules over one interval so they do not fire together.
        let offset = interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64(i as f64 / args.connections as f64)
        });
        tasks.push(tokio::spawn(connection(
            target.clone(),
            body,
            content_type,
            start + offset,
            interval,
            measure_from,
            end,
        )));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0u64, 0u64);
    let mut statuses = BTreeMap::new();
    for task in tasks {
        let report = task.await.context("connection task")??;
        latency_us.add(&report.latency_us)?;
        requests += report.requests;
        errors += report.errors;
        for (status, n) in report.statuses {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let seconds = args.duration.as_secs_f64();
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "bench http: {} connections, batch {}, rate {}, {:?} measured after {:?} warm-up{}{}",
        args.connections,
        args.batch,
        args.rate
            .map_or("unlimited".to_owned(), |r| format!("{r} events/s")),
        args.duration,
        args.warmup,
        if args.token.is_some() {
            ", with a token"
        } else {
            ""
        },
        if args.tls_ca.is_some() {
            ", over TLS"
        } else {
            ""
        },
    );
    println!(
        "requests:   {requests} ({:.0}/s), statuses {statuses:?}, connection errors {errors}",
        requests as f64 / seconds
    );
    println!(
        "events/s:   {:.0} acknowledged",
        accepted as f64 * args.batch as f64 / seconds
    );
    println!(
        "ack latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency_us.max() as f64 / 1000.0
    );
    if let Some(pid) = args.pid {
        print_rss(pid);
    }
    Ok(())
}

/// One request body: a JSON object for single events, NDJSON for batches.
fn request_body(batch: usize) -> (Bytes, &'static str) {
    let event = |i: usize| {
        format!(
            r#"{{"user":"user-{}","action":"checkout","amount":{}.{:02},"items":["sku-1","sku-2"],"region":"eu-west","seq":{i}}}"#,
            i % 1000,
            i % 500,
            i % 100
        )
    };
    if batch == 1 {
        (Bytes::from(event(0)), "application/json")
    } else {
        let lines: Vec<String> = (0..batch).map(event).collect();
        (Bytes::from(lines.join("\n")), "application/x-ndjson")
    }
}

/// What the requests of `bench http` carry.
enum Bodies {
    /// The same body every time.
    Fixed(Bytes),
    /// The window workload: each request the next `batch` event indices.
    Windows {
        keys: u32,
        batch: u64,
        next: AtomicU64,
    },
    /// StreamGuard events of `users` users: each request the next `batch` event indices.
    Streamguard {
        users: u32,
        batch: u64,
        next: AtomicU64,
    },
}

/// 2026-01-01T00:00Z, where the StreamGuard workload's event time starts.
const STREAMGUARD_EPOCH_MS: u64 = 1_767_225_600_000;

/// StreamGuard event `i` of the bench workload (see `--streamguard-users`).
fn streamguard_event(text: &mut String, i: u64, users: u32, rng: &mut fastrand::Rng) {
    use std::fmt::Write as _;
    const PLACES: [&str; 4] = [
        "US-CA-San Francisco",
        "US-NY-New York",
        "GB-LND-London",
        "DE-BE-Berlin",
    ];
    let user = rng.u32(0..users);
    let day = i / (2 * u64::from(users));
    let odd = rng.u8(0..100) == 0;
    let (hour, ip, place) = if odd {
        (
            3,
            format!("203.0.{}.{}", rng.u8(0..255), rng.u8(1..255)),
            "RU-MOW-Moscow",
        )
    } else {
        let ip = format!(
            "10.{}.{}.{}",
            (user >> 16) & 255,
            (user >> 8) & 255,
            user & 255
        );
        (9 + rng.u64(0..8), ip, PLACES[(user % 4) as usize])
    };
    let ms = STREAMGUARD_EPOCH_MS + day * 86_400_000 + hour * 3_600_000 + rng.u64(0..3_600_000);
    let kind = ["auth_attempt", "file_access", "network_connection"][rng.usize(0..3)];
    let status = if rng.u8(0..50) == 0 {
        "failed"
    } else {
        "success"
    };
    let _ = writeln!(
        text,
        r#"{{"event_id":"evt_{i}","timestamp":{ms},"event_type":"{kind}","source_ip":"{ip}","user":"user{user}","status":"{status}","threat_score":0.1,"metadata":{{"geo_location":"{place}"}}}}"#
    );
}

impl Bodies {
    fn next(&self, rng: &mut fastrand::Rng) -> Bytes {
        match self {
            Bodies::Fixed(body) => body.clone(),
            Bodies::Windows { keys, batch, next } => {
                use std::fmt::Write as _;
                let first = next.fetch_add(*batch, Ordering::Relaxed);
                let mut text = String::with_capacity(*batch as usize * 48);
                for i in first..first + batch {
                    let t = i as i64 - rng.i64(0..=500);
                    let (k, v) = (rng.u32(0..*keys), rng.f64() * 1000.0);
                    let _ = writeln!(text, r#"{{"k":"k{k}","v":{v:.3},"t":{t}}}"#);
                }
                Bytes::from(text)
            }
            Bodies::Streamguard { users, batch, next } => {
                let first = next.fetch_add(*batch, Ordering::Relaxed);
                let mut text = String::with_capacity(*batch as usize * 240);
                for i in first..first + batch {
                    streamguard_event(&mut text, i, *users, rng);
                }
                Bytes::from(text)
            }
        }
    }
}

/// Where `bench http` sends, and how.
struct Target {
    addr: SocketAddr,
    /// `Bearer <token>`.
    authorization: Option<hyper::header::HeaderValue>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    fn new(args: &BenchHttpArgs) -> anyhow::Result<Self> {
        let authorization = args
            .token
            .as_ref()
            .map(|t| hyper::header::HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("--token has characters a header cannot carry")?;
        let tls = match &args.tls_ca {
            Some(ca) => Some(tls_connector(ca)?),
            None => None,
        };
        Ok(Target {
            addr: args.addr,
            authorization,
            tls,
        })
    }

    /// A keep-alive HTTP/1.1 connection (over TLS when asked).
    async fn connect(
        &self,
    ) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let addr = self.addr;
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        match &self.tls {
            None => http1(stream).await,
            Some(tls) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                http1(tls.connect(name, stream).await.context("TLS handshake")?).await
            }
        }
    }
}

/// An HTTP/1.1 client connection over `io`, its driver spawned.
async fn http1<IO>(io: IO) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A TLS client trusting only the certificates in `ca`; connections share its session
/// cache, so all but the first resume.
fn tls_connector(ca: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connection(
    target: Arc<Target>,
    body: Arc<Bodies>,
    content_type: &'static str,
    first_slot: Instant,
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<ConnectionReport> {
    let mut report = ConnectionReport {
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        requests: 0,
        statuses: BTreeMap::new(),
        errors: 0,
    };
    let mut sender = target.connect().await?;
    let host = target.addr.to_string();
    let mut slot = first_slot;
    let mut rng = fastrand::Rng::with_seed(15);
    loop {
        let due = match interval {
            Some(interval) => {
                tokio::time::sleep_until(slot.into()).await;
                let due = slot;
                slot += interval;
                due
            }
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        let mut request = Request::post("/events")
            .header(HOST, &host)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body.next(&mut rng)))?;
        if let Some(authorization) = &target.authorization {
            request
                .headers_mut()
                .insert(hyper::header::AUTHORIZATION, authorization.clone());
        }
        if sender.ready().await.is_err() {
            report.errors += 1;
            break;
        }
        match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Drain the body so the connection can be reused.
                let _ = response.into_body().collect().await;
                if due >= measure_from {
                    let micros = u64::try_from(due.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1);
                    report.latency_us.saturating_record(micros);
                    report.requests += 1;
                    *report.statuses.entry(status).or_insert(0) += 1;
                }
                if status == 503 {
                    // Pushed back (a full lane): wait a little, as a client must, but less
                    // than Retry-After says, to keep the node's pipelines busy.
                    tokio::time::sleep(BACK_OFF).await;
                }
            }
            Err(_) => {
                report.errors += 1;
                break;
            }
        }
    }
    Ok(report)
}

/// How long a connection of `bench http` waits after a 503.
const BACK_OFF: Duration = Duration::from_millis(10);

/// Returns (peak, current) resident KiB of `pid`.
fn peak_rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
