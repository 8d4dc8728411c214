//! `kafka` source: a consumer-group member that stores each message exactly once in this node's
//! log.
//!
//! ```yaml
//! sources:
//!   orders:
//!     type: kafka
//!     brokers: 127.0.0.1:9092
//!     topics: [orders, "^audit\\..*"]   # names, or regexes starting with `^`
//!     group_id: colloquium
//!     start_from: earliest               # for a partition neither the group nor this node has read
//!     bad_payload: raw                   # or dlq: what a message that is not a JSON object becomes
//!     priority: medium                   # the events' lane (a `priority` header overrides it)
//!     priorities: {alarms: critical}     # topic (or MQTT-style pattern) → priority, raise only
//!     commit_interval: 1s
//!     stall_after: 30s
//!     options: {security.protocol: SASL_SSL, sasl.password: "${KAFKA_PASSWORD}"}
//! ```
//!
//! How a message is stored exactly once (see [`crate::consumer`] for the loop):
//! - each partition's next offset is written **in the same write batch** as the events and dead
//!   letters it covers ([`Accept::accept_positioned`]); of several batches in flight, a failed
//!   one fails every later one unwritten ([`colloquium_event::BatchChain`]);
//! - on assignment a partition starts at the later of that stored position and the group's
//!   committed offset (`start_from` only when neither exists);
//! - the group's offsets are stored in librdkafka only after the batch is durable, committed
//!   every `commit_interval` and synchronously when partitions are revoked (after what is in
//!   flight is durable).
//!
//! Across nodes delivery is at-least-once: a node killed after storing a batch and before
//! committing it leaves the partition's next owner to read that batch again (at most one
//! `commit_interval` of messages).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::Priority;
use colloquium_ingest::source::{
    Source, SourceBuildContext, SourceConfig, SourceContext, SourceError,
};
use colloquium_ingest::tcp::BadPayload;
use colloquium_ingest::topics::TopicTable;
use colloquium_ingest::{Accept, IngestMetrics, Stamper};
use colloquium_telemetry::health::HealthBoard;
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::consumer::BATCHES_PER_PENDING;
use crate::metrics::KafkaMetrics;

/// Where a partition starts when neither the group nor this node has a position for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest message the broker still has.
    #[default]
    Earliest,
    /// Only messages produced after the assignment.
    Latest,
}

/// `sources.NAME: {type: kafka, …}` (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics to subscribe to: names, or regexes when they start with `^`.
    pub topics: Vec<String>,
    /// The consumer group: nodes with the same one share the topics' partitions.
    pub group_id: String,
    /// Where a partition without any position starts.
    #[serde(default)]
    pub start_from: StartFrom,
    /// What a message that is not a JSON object becomes.
    #[serde(default)]
    pub bad_payload: BadPayload,
    /// The events' priority, unless the message has a `priority` header.
    #[serde(default)]
    pub priority: Priority,
    /// Topic (or MQTT-style pattern) → priority; may only raise a message's own.
    #[serde(default)]
    pub priorities: BTreeMap<String, String>,
    /// How often stored offsets are committed to the group: the most a killed node's
    /// successor reads again.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// An assigned partition with lag that fetched nothing for this long is reported stalled.
    #[serde(default = "default_stall_after", with = "humantime_serde")]
    pub stall_after: Duration,
    /// librdkafka settings (TLS, SASL, timeouts), passed as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_stall_after() -> Duration {
    Duration::from_secs(30)
}

/// librdkafka settings the source owns: its guarantees depend on them.
const OWNED: [&str; 5] = [
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
    "enable.partition.eof",
];

impl SourceConfig for KafkaSourceConfig {
    const KIND: &'static str = "kafka";

    fn validate(&self, at: &str) -> Vec<ConfigError> {
        let mut errors = TopicTable::compile(&self.priorities, at)
            .err()
            .unwrap_or_default();
        if self.brokers.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.brokers"),
                "must name at least one broker",
            ));
        }
        if self.group_id.trim().is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.group_id"),
                "must not be empty",
            ));
        }
        if self.topics.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.topics"),
                "must name at least one topic",
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if topic.starts_with('^')
                && let Err(e) = regex::Regex::new(topic)
            {
                errors.push(ConfigError::new(
                    format!("{at}.topics[{i}]"),
                    format!("not a regex: {e}"),
                ));
            } else if topic.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.topics[{i}]"),
                    "an empty topic",
                ));
            }
        }
        if self.commit_interval.is_zero() || self.stall_after.is_zero() {
            errors.push(ConfigError::new(
                at,
                "`commit_interval` and `stall_after` must be longer than 0",
            ));
        }
        for key in self.options.keys() {
            if OWNED.contains(&key.as_str()) {
                let message = "set by the source (its exactly-once guarantee depends on it); use the source's own option where there is one";
                errors.push(ConfigError::new(format!("{at}.options.{key}"), message));
            }
        }
        errors
    }

    fn build<A: Accept>(
        self,
        cx: &mut SourceBuildContext<'_, A>,
    ) -> Result<Box<dyn Source>, ConfigError> {
        if !cx.persist {
            return Err(ConfigError::new(
                cx.key("persist"),
                "a kafka source stores each message with its offset: it needs `persist: true`",
            ));
        }
        let priorities =
            TopicTable::compile(&self.priorities, &cx.at).map_err(|mut e| e.remove(0))?;
        let client = self.client_config(cx.settings.max_pending_bytes);
        // A bad librdkafka option is a config error, not a failure at start.
        crate::check_settings(&client, &cx.at)?;
        let max_pending = cx.settings.max_pending_bytes;
        Ok(Box::new(KafkaSource {
            shared: Arc::new(Shared {
                accept: cx.accept.clone(),
                name: cx.name,
                stamper: cx.stamper(),
                pipeline: cx.settings.pipeline.clone(),
                ingest: cx.metrics.clone(),
                metrics: KafkaMetrics::get(&cx.registry),
                health: cx.health.clone(),
                priorities,
                priority: self.priority,
                bad_payload: self.bad_payload,
                max_body: cx.settings.max_body_size,
                // A quarter of the node's pending bytes per batch: one batch fills while the
                // one before is written, and librdkafka's queue holds at most as much again.
                max_batch_bytes: (max_pending / BATCHES_PER_PENDING).max(1 << 20),
                start_from: self.start_from,
                commit_interval: self.commit_interval,
                stall_after: self.stall_after,
                group_id: self.group_id.clone(),
            }),
            client,
            topics: self.topics,
        }))
    }
}

impl KafkaSourceConfig {
    /// librdkafka's settings: ours first, then the user's `options` (which may not override
    /// the ones the guarantees depend on: `validate` refuses those).
    fn client_config(&self, max_pending_bytes: usize) -> ClientConfig {
        let mut client = ClientConfig::new();
        let queued_kb = (max_pending_bytes / 1024 / 2).clamp(1024, 1 << 20);
        client
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match self.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            // Bounds what librdkafka prefetches, whatever the broker holds.
            .set("queued.max.messages.kbytes", queued_kb.to_string())
            // A full prefetch queue otherwise stops fetching for a whole second (the default);
            // a consumer that drains in batches, as this one does, hits that after each batch
            // (a plain loop pausing 60 ms per 20,000 messages: 128,500/s → 236,400/s with no
            // backoff; BENCHMARKS.md, Kafka).
            .set("fetch.queue.backoff.ms", "5")
            .set("statistics.interval.ms", "1000")
            .set("client.id", "colloquium");
        for (key, value) in &self.options {
            client.set(key, value);
        }
        client
    }
}

/// What the consumer loop shares with its callbacks.
pub(crate) struct Shared<A> {
    pub(crate) accept: A,
    pub(crate) name: &'static str,
    pub(crate) stamper: Stamper,
    pub(crate) pipeline: String,
    pub(crate) ingest: IngestMetrics,
    pub(crate) metrics: KafkaMetrics,
    pub(crate) health: HealthBoard,
    pub(crate) priorities: TopicTable,
    pub(crate) priority: Priority,
    pub(crate) bad_payload: BadPayload,
    pub(crate) max_body: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) start_from: StartFrom,
    pub(crate) commit_interval: Duration,
    pub(crate) stall_after: Duration,
    pub(crate) group_id: String,
}

struct KafkaSource<A> {
    shared: Arc<Shared<A>>,
    client: ClientConfig,
    topics: Vec<String>,
}

#[async_trait::async_trait]
impl<A: Accept> Source for KafkaSource<A> {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let name = self.shared.name;
        let error = |message: String| SourceError {
            source_name: name.to_owned(),
            message,
        };
        let runtime = tokio::runtime::Handle::current();
        let (done, finished) = tokio::sync::oneshot::channel();
        let KafkaSource {
            shared,
            client,
            topics,
        } = *self;
        // librdkafka's calls block: the consumer gets its own thread, and hands batches to the
        // store on the runtime.
        std::thread::Builder::new()
            .name(format!("kafka-{name}"))
            .spawn(move || {
                let result =
                    crate::consumer::consume(shared, client, &topics, runtime, cx.shutdown);
                let _ = done.send(result);
            })
            .map_err(|e| error(format!("starting the consumer thread: {e}")))?;
        finished
            .await
            .map_err(|_| error("the consumer thread panicked".into()))?
            .map_err(error)
    }
}
