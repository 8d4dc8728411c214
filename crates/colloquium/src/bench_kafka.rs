//! `colloquium bench kafka MODE`: the Kafka benchmark's parts (`scripts/bench-kafka.sh` runs
//! them side by side on one topic).
//!
//! - `produce`: fills the topic with `--count` JSON messages of `--size` bytes, keyed to spread
//!   over its partitions; reports acknowledged messages/s.
//! - `consume`: a plain rdkafka loop that reads the topic from the start (a fresh group) and
//!   drops every message: the limit a Kafka source can reach here.
//! - `source`: follows a node's kafka source through `/metrics` until it stored `--count`;
//!   reports events/s and the lag each second.
//! - `sink`: follows a node's kafka sink until it delivered `--count`.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::bench::{metric_sum, metrics_text, print_rss};
use crate::cli::BenchKafkaArgs;

/// Runs one mode.
pub async fn run(args: BenchKafkaArgs) -> anyhow::Result<()> {
    match args.mode.as_str() {
        "produce" => tokio::task::spawn_blocking(move || produce(&args)).await?,
        "consume" => tokio::task::spawn_blocking(move || consume(&args)).await?,
        "source" => follow(&args, "colloquium_kafka_stored_messages_total", true).await,
        "sink" => {
            follow(
                &args,
                "colloquium_kafka_produced_messages_total{sink=\"out\",outcome=\"delivered\"}",
                false,
            )
            .await
        }
        other => anyhow::bail!("unknown mode `{other}` (produce, consume, source, sink)"),
    }
}

fn produce(args: &BenchKafkaArgs) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let pad = "x".repeat(args.size.saturating_sub(40));
    for n in 0..args.count {
        let payload = format!("{{\"n\":{n},\"user\":\"u{}\",\"pad\":\"{pad}\"}}", n % 1000);
        let key = (n % 1000).to_string();
        let mut record = BaseRecord::to(&args.topic).payload(&payload).key(&key);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .context("waiting for the acknowledgements")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced:   {} messages of {} bytes in {secs:.1} s: {:.0} msg/s acknowledged",
        args.count,
        args.size,
        args.count as f64 / secs
    );
    Ok(())
}

fn consume(args: &BenchKafkaArgs) -> anyhow::Result<()> {
    let group = format!("bench-plain-{}", std::process::id());
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000");
    for setting in &args.settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--set {setting}: expected KEY=VALUE"))?;
        client.set(key, value);
    }
    let consumer: BaseConsumer = client.create().context("creating the consumer")?;
    consumer.subscribe(&[&args.topic])?;
    let mut read = 0_u64;
    let mut bytes = 0_u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < args.count && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            read += 1;
            bytes += rdkafka::Message::payload(&message).map_or(0, <[u8]>::len) as u64;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "plain consumer: {read} messages ({:.0} MiB) in {secs:.1} s from the first: {:.0} msg/s",
        bytes as f64 / (1 << 20) as f64,
        read as f64 / secs
    );
    Ok(())
}

/// Samples the node's counter every quarter second (a rate once a second) from its first
/// increase until it reaches `--count`.
async fn follow(args: &BenchKafkaArgs, metric: &str, lag: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first: Option<(Instant, u64)> = None;
    let mut last = 0;
    let mut last_at = Instant::now();
    while Instant::now() < deadline {
        let text = metrics_text(args.http).await?;
        let now = metric_sum(&text, metric).unwrap_or(0);
        if first.is_none() && now > 0 {
            first = Some((Instant::now(), now));
        }
        if let Some((at, from)) = first {
            let lag_now = metric_sum(&text, "colloquium_kafka_consumer_lag").unwrap_or(0);
            let elapsed = at.elapsed().as_secs_f64();
            let done = now >= args.count;
            if last_at.elapsed() >= Duration::from_secs(1) || done {
                if lag {
                    println!(
                        "t={elapsed:5.1}s stored={now} rate={:.0}/s lag={lag_now}",
                        (now - last) as f64 / last_at.elapsed().as_secs_f64()
                    );
                } else {
                    println!("t={elapsed:5.1}s delivered={now}");
                }
                last = now;
                last_at = Instant::now();
            }
            if done {
                println!(
                    "node: {} in {elapsed:.1} s from the first: {:.0} events/s",
                    now - from,
                    (now - from) as f64 / elapsed.max(0.001)
                );
                if let Some(pid) = args.pid {
                    print_rss(pid);
                }
                return Ok(());
            }
        }
        if first.is_none() {
            (last, last_at) = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the node did not reach {} in time ({last})", args.count)
}
