//! The `tcp` and `udp` sources through the real binary: EventStream frames from a client
//! written for the original, malformed frames and payloads dead-lettered with their bytes, acks
//! that name only durable frames across a SIGKILL, and the datagram that crashes the original.

use std::collections::BTreeSet;
use std::time::Duration;

use colloquium_event::Priority;
use colloquium_ingest::frame::encode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Node, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

const CONFIG: &str = "sources:\n  frames: {type: tcp, address: '127.0.0.1:0', ack: true, bad_payload: dlq, topics: {'alarms/#': critical, 'sensors/+': low}}\nsinks: {db: {type: store}}\npipelines:\n  - {name: all, from: [frames], sinks: [db]}\n";

fn frame(priority: Priority, topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(priority, topic, payload, &mut bytes);
    bytes
}

/// Reads ack and reject records until an ack of at least `frames`; returns the rejects
/// (frame number, reason) and the last ack.
async fn acks(stream: &mut tokio::net::TcpStream, frames: u64) -> (Vec<(u64, String)>, u64) {
    let mut rejects = Vec::new();
    loop {
        match stream.read_u8().await.unwrap() {
            b'A' => {
                let acked = stream.read_u64().await.unwrap();
                if acked >= frames {
                    return (rejects, acked);
                }
            }
            b'R' => {
                let number = stream.read_u64().await.unwrap();
                let len = stream.read_u8().await.unwrap();
                let mut reason = vec![0; usize::from(len)];
                stream.read_exact(&mut reason).await.unwrap();
                rejects.push((number, String::from_utf8(reason).unwrap()));
            }
            other => panic!("unexpected record {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_become_events_and_bad_ones_dead_letters_with_acks() {
    let node = Node::start(CONFIG);
    let mut stream = tokio::net::TcpStream::connect(node.source_addr("frames"))
        .await
        .unwrap();
    let mut bytes = frame(Priority::High, "sensors/temp", br#"{"value": 23.5}"#);
    bytes.extend(frame(Priority::Batch, "bulk", br#"[1, 2]"#)); // not an object: dlq
    let mut malformed = frame(Priority::Low, "x", b"{}");
    malformed[4] = 9; // priority 9
    bytes.extend(malformed);
    // Sent as low; the `topics:` table raises it (and never lowers `high` for sensors/+).
    bytes.extend(frame(Priority::Low, "alarms/fire", br#"{"n": 1}"#));
    // Byte by byte for the first 10 bytes, then the rest: reads split anywhere.
    for b in &bytes[..10] {
        stream.write_all(&[*b]).await.unwrap();
    }
    stream.write_all(&bytes[10..]).await.unwrap();
    let (rejects, acked) = acks(&mut stream, 4).await;
    assert_eq!(acked, 4);
    assert_eq!(
        rejects,
        [
            (2, "bad_payload".to_owned()),
            (3, "malformed_frame".to_owned())
        ]
    );

    let outputs = eventually(DEADLINE, "two events", || async {
        let outputs = node.outputs("all").await;
        (outputs.len() == 2).then_some(outputs)
    })
    .await;
    assert_eq!(outputs[0]["data"]["value"], 23.5);
    assert_eq!(outputs[0]["metadata"]["topic"], "sensors/temp");
    assert_eq!(outputs[0]["metadata"]["priority"], "high");
    assert_eq!(outputs[0]["metadata"]["source"], "frames");
    assert_eq!(outputs[1]["metadata"]["priority"], "critical");
    let letters = node.dead_letters("").await;
    let reasons: BTreeSet<&str> = letters
        .iter()
        .filter_map(|l| l["reason"].as_str())
        .collect();
    assert_eq!(reasons, BTreeSet::from(["bad_payload", "malformed_frame"]));
    // The raw frame is kept, base64 in the dead letter's event.
    assert!(
        letters
            .iter()
            .all(|l| l["event"]["data"]["frame"].is_string())
    );

    // A frame_len over max_frame_size closes the connection.
    stream.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_frame_survives_a_sigkill() {
    let node = Node::start(CONFIG);
    let mut stream = tokio::net::TcpStream::connect(node.source_addr("frames"))
        .await
        .unwrap();
    let mut acked = 0;
    for batch in 0..20_u64 {
        let mut bytes = Vec::new();
        for n in batch * 50..(batch + 1) * 50 {
            bytes.extend(frame(
                Priority::Medium,
                "t",
                format!("{{\"n\": {n}}}").as_bytes(),
            ));
        }
        stream.write_all(&bytes).await.unwrap();
        acked = acks(&mut stream, (batch + 1) * 50).await.1;
    }
    assert_eq!(acked, 1_000);
    let restarted = node.kill9().restart();
    let (status, page) = restarted.get("/api/events?source=frames&limit=10000").await;
    assert_eq!(status, 200);
    let stored: BTreeSet<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["data"]["n"].as_u64())
        .collect();
    assert_eq!(stored, (0..1_000).collect(), "every acked frame is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_become_events_and_broken_ones_dead_letters() {
    let node = Node::start(
        "sources:\n  dgrams: {type: udp, address: '127.0.0.1:0'}\nsinks: {db: {type: store}}\npipelines:\n  - {name: all, from: [dgrams], sinks: [db]}\n",
    );
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = node.source_addr("dgrams");
    let mut trailing = frame(Priority::High, "a", br#"{"n": 1}"#);
    trailing.extend_from_slice(b"ignored trailing bytes");
    let mut wraps = 0xFFFF_FFFC_u32.to_be_bytes().to_vec(); // crashes the original
    wraps.extend_from_slice(&[2, 0, 1, b'x', b'{', b'}']);
    for datagram in [
        frame(Priority::Low, "b", br#"{"n": 2}"#),
        trailing,
        vec![0, 0, 0, 3, 2, 0, 1], // 7 bytes: too small
        wraps,
        frame(Priority::Medium, "c", b"not json"), // kept as raw (the default)
    ] {
        socket.send_to(&datagram, to).await.unwrap();
    }
    let outputs = eventually(DEADLINE, "three events", || async {
        let outputs = node.outputs("all").await;
        (outputs.len() == 3).then_some(outputs)
    })
    .await;
    let ns: BTreeSet<u64> = outputs
        .iter()
        .filter_map(|o| o["data"]["n"].as_u64())
        .collect();
    assert_eq!(ns, BTreeSet::from([1, 2]));
    assert!(
        outputs.iter().any(|o| o["data"]["raw"] == "bm90IGpzb24="),
        "{outputs:?}"
    );
    let letters = eventually(DEADLINE, "two dead letters", || async {
        let letters = node.dead_letters("reason=malformed_frame").await;
        (letters.len() == 2).then_some(letters)
    })
    .await;
    assert!(
        letters
            .iter()
            .all(|l| l["event"]["metadata"]["source"] == "dgrams")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_all_land() {
    let node = Node::start(CONFIG);
    let addr = node.source_addr("frames");
    // 100 connections, each 200 frames in writes of 20, all at once.
    let clients: Vec<_> = (0..100_u64)
        .map(|c| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                for chunk in 0..10_u64 {
                    let mut bytes = Vec::new();
                    for k in 0..20 {
                        let n = c * 1_000 + chunk * 20 + k;
                        bytes.extend(frame(
                            Priority::Low,
                            "many",
                            format!("{{\"n\": {n}}}").as_bytes(),
                        ));
                    }
                    stream.write_all(&bytes).await.unwrap();
                }
                acks(&mut stream, 200).await.1
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), 200);
    }
    let outputs = eventually(DEADLINE, "20,000 events", || async {
        let outputs = node.outputs("all").await;
        (outputs.len() >= 20_000).then_some(outputs)
    })
    .await;
    let ns: BTreeSet<u64> = outputs
        .iter()
        .filter_map(|o| o["data"]["n"].as_u64())
        .collect();
    let expected: BTreeSet<u64> = (0..100_u64)
        .flat_map(|c| (0..200).map(move |k| c * 1_000 + k))
        .collect();
    assert_eq!(ns, expected);
    assert_eq!(outputs.len(), 20_000, "each once");
}

/// A sum of every sample of `metric` whose labels contain `labels`.
fn metric_sum(text: &str, metric: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_the_kernel_drops_are_counted_so_none_is_lost_silently() {
    // A small receive buffer and a flat-out sender: some datagrams may not fit.
    let node = Node::start(
        "sources:\n  dgrams: {type: udp, address: '127.0.0.1:0', receive_buffer: 16KiB}\n",
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = node.source_addr("dgrams");
    const SENT: u64 = 30_000;
    let datagram = frame(Priority::Medium, "t", br#"{"n": 1}"#);
    // Flat out, at once after the ready line: the node counts from the moment it bound the
    // socket, not from its first read (under load that came late, and early drops went
    // uncounted).
    for _ in 0..SENT {
        socket.send_to(&datagram, to).unwrap();
    }
    // Every datagram is either stored or counted as dropped by the kernel.
    let deadline = std::time::Instant::now() + DEADLINE;
    let (stored, dropped) = loop {
        let (_, text) = node.get_text("/metrics").await;
        let stored = metric_sum(&text, "colloquium_storage_events_stored_total", "");
        let dropped = metric_sum(
            &text,
            "colloquium_ingest_events_rejected_total",
            "reason=\"socket_buffer_full\"",
        );
        if stored + dropped == SENT {
            break (stored, dropped);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} stored + {dropped} dropped of {SENT} sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("udp: {stored} stored, {dropped} dropped by the kernel and counted");
}
