//! `kafka` sink: results produced to a topic by an idempotent producer, counted delivered only
//! once the broker acknowledged them.
//!
//! ```yaml
//! sinks:
//!   out:
//!     type: kafka
//!     brokers: 127.0.0.1:9092
//!     topic: alerts              # or a JSON pointer into the result: /data/region
//!     key: /data/user            # optional JSON pointer: the message key
//!     headers: true              # the result's metadata as `colloquium-*` headers
//!     compression: lz4           # none, gzip, snappy, lz4, zstd
//!     linger: 5ms
//!     delivery_timeout: 30s
//!     options: {}                # librdkafka producer settings
//! ```
//!
//! A step's results are all produced, then awaited: the step commits (the pipeline's checkpoint
//! moves) only once the broker acknowledged every one (`acks=all`, `enable.idempotence=true`).
//! A message not acknowledged within `delivery_timeout` (a broker down) fails the step, which is
//! retried: delivery is delayed, nothing is lost, and what was already acknowledged may be sent
//! again (at-least-once). A message the broker refuses for good (too large, an unknown topic
//! with auto-create off, not authorized) is a dead letter (`sink_rejected`) with the broker's
//! error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use colloquium_config::ConfigError;
use colloquium_event::{Event, Reason};
use colloquium_pipeline::sink::{
    Placement, Routed, Sink, SinkBuildContext, SinkConfig, SinkError, dead_letter,
};
use colloquium_storage::PipelineCommit;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use serde_json::Value;

use crate::metrics::{KafkaMetrics, SinkLabels};
use crate::quiet::Quiet;

/// Message compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheap and effective on JSON).
    #[default]
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `sinks.NAME: {type: kafka, …}` (see the module docs).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic, or a JSON pointer (starting with `/`) into the result.
    pub topic: String,
    /// A JSON pointer into the result whose value is the message key.
    #[serde(default)]
    pub key: Option<String>,
    /// Whether the result's metadata goes along as `colloquium-*` headers.
    #[serde(default = "yes")]
    pub headers: bool,
    /// Message compression.
    #[serde(default)]
    pub compression: Compression,
    /// How long the producer waits to fill a batch.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// How long a message may wait for its acknowledgement before the step is retried.
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// librdkafka producer settings, passed as given.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn default_linger() -> Duration {
    Duration::from_millis(5)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Settings the sink's guarantee depends on.
const OWNED: [&str; 3] = ["enable.idempotence", "acks", "bootstrap.servers"];

impl SinkConfig for KafkaSinkConfig {
    const KIND: &'static str = "kafka";
    const PLACEMENT: Placement = Placement::Exclusive;

    fn build(self, cx: &SinkBuildContext) -> Result<Box<dyn Sink>, ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::new(
                cx.key("brokers"),
                "must name at least one broker",
            ));
        }
        if self.topic.is_empty() {
            return Err(ConfigError::new(cx.key("topic"), "must not be empty"));
        }
        if let Some(key) = &self.key
            && !key.starts_with('/')
        {
            return Err(ConfigError::new(
                cx.key("key"),
                "must be a JSON pointer (`/data/user`)",
            ));
        }
        if self.delivery_timeout.is_zero() {
            return Err(ConfigError::new(
                cx.key("delivery_timeout"),
                "must be longer than 0",
            ));
        }
        for key in self.options.keys() {
            if OWNED.contains(&key.as_str()) {
                return Err(ConfigError::new(
                    format!("{}.options.{key}", cx.at),
                    "set by the sink (its guarantee depends on it)",
                ));
            }
        }
        let client = self.client_config();
        // A bad librdkafka option is a config error, not a failure at start.
        crate::check_settings(&client, &cx.at)?;
        Ok(Box::new(KafkaSink {
            name: cx.name.clone(),
            client,
            producer: None,
            topic: Target::new(&self.topic),
            key: self.key.as_deref().map(Target::new),
            headers: self.headers,
            metrics: KafkaMetrics::get(&cx.metrics),
            wait: self.delivery_timeout + Duration::from_secs(5),
        }))
    }
}

impl KafkaSinkConfig {
    fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.as_str())
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            )
            .set("client.id", "colloquium");
        for (key, value) in &self.options {
            client.set(key, value);
        }
        client
    }
}

/// A topic or key: literal text, or a JSON pointer into the result.
#[derive(Debug, Clone)]
enum Target {
    Literal(String),
    Pointer(String),
}

impl Target {
    fn new(text: &str) -> Self {
        if text.starts_with('/') {
            Target::Pointer(text.to_owned())
        } else {
            Target::Literal(text.to_owned())
        }
    }

    /// The text for `event`, or `None` when a pointer finds nothing (or an object or array).
    fn resolve(&self, event: &Event) -> Option<String> {
        match self {
            Target::Literal(text) => Some(text.clone()),
            Target::Pointer(pointer) => {
                let found = match pointer.strip_prefix("/data") {
                    Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                        Value::Object(event.data.clone()).pointer(rest).cloned()
                    }
                    _ => serde_json::to_value(event).ok()?.pointer(pointer).cloned(),
                };
                match found? {
                    Value::String(s) => Some(s),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                }
            }
        }
    }
}

struct KafkaSink {
    name: Arc<str>,
    client: ClientConfig,
    /// Created on first use (and again after a fatal producer error).
    producer: Option<FutureProducer<Reports>>,
    topic: Target,
    key: Option<Target>,
    headers: bool,
    metrics: KafkaMetrics,
    /// How long to wait for all of a step's acknowledgements.
    wait: Duration,
}

impl KafkaSink {
    fn error(&self, message: String) -> SinkError {
        SinkError {
            sink: self.name.clone(),
            message,
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        let labels = SinkLabels {
            sink: self.name.to_string(),
            outcome,
        };
        self.metrics.produced.get_or_create(&labels).inc_by(n);
    }

    fn producer(&mut self) -> Result<FutureProducer<Reports>, SinkError> {
        if let Some(producer) = &self.producer
            && producer.client().fatal_error().is_none()
        {
            return Ok(producer.clone());
        }
        let reports = Reports {
            sink: self.name.clone(),
            quiet: Quiet::default(),
        };
        let producer: FutureProducer<Reports> = self
            .client
            .create_with_context(reports)
            .map_err(|e| self.error(format!("creating the producer: {e}")))?;
        self.producer = Some(producer.clone());
        Ok(producer)
    }
}

/// The producer's context: librdkafka's reports, rate-limited (a broker that is down is
/// reported on every reconnect attempt; the step's retries already say the sink waits).
struct Reports {
    sink: Arc<str>,
    quiet: Quiet,
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.quiet.log(&self.sink, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.quiet.error(&self.sink, &error, reason);
    }
}

/// Errors after which the broker will not take the message however often it is sent.
fn permanent(error: &KafkaError) -> bool {
    let Some(code) = error.rdkafka_error_code() else {
        return false;
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::InvalidMessage
    )
}

fn headers(event: &Event) -> OwnedHeaders {
    let m = &event.metadata;
    let id = event.id.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "colloquium-id",
            value: Some(id.as_str()),
        })
        .insert(Header {
            key: "colloquium-source",
            value: Some(m.source.as_str()),
        })
        .insert(Header {
            key: "colloquium-pipeline",
            value: Some(m.pipeline.as_str()),
        })
        .insert(Header {
            key: "colloquium-priority",
            value: Some(m.priority.as_str()),
        });
    if let Some(topic) = &m.topic {
        headers = headers.insert(Header {
            key: "colloquium-topic",
            value: Some(topic.as_str()),
        });
    }
    if let Some(key) = &m.routing_key {
        headers = headers.insert(Header {
            key: "colloquium-routing-key",
            value: Some(key.as_str()),
        });
    }
    headers
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn send(
        &mut self,
        batch: Vec<Routed>,
        commit: &mut PipelineCommit,
    ) -> Result<(), SinkError> {
        let producer = self.producer()?;
        let mut waiting = Vec::with_capacity(batch.len());
        let mut rejected = 0;
        for routed in &batch {
            let event = &routed.event;
            let Some(topic) = self.topic.resolve(event) else {
                let error = format!(
                    "the topic pointer {:?} found no text in the result",
                    self.topic
                );
                dead_letter(commit, routed, Reason::SinkRejected, error);
                rejected += 1;
                continue;
            };
            let key = self.key.as_ref().and_then(|k| k.resolve(event));
            let payload = serde_json::to_vec(event).map_err(|e| self.error(e.to_string()))?;
            let mut record = FutureRecord::<String, Vec<u8>>::to(&topic).payload(&payload);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if self.headers {
                record = record.headers(headers(event));
            }
            // A full local queue: wait for room (the producer sends as we wait).
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break Some(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((error, _)) if permanent(&error) => {
                        dead_letter(commit, routed, Reason::SinkRejected, error.to_string());
                        rejected += 1;
                        break None;
                    }
                    Err((error, _)) => {
                        self.count("retried", 1);
                        return Err(self.error(format!("producing to {topic}: {error}")));
                    }
                }
            };
            if let Some(delivery) = delivery {
                waiting.push((routed, delivery));
            }
        }
        let mut delivered = 0;
        let mut failure = None;
        let results = tokio::time::timeout(
            self.wait,
            futures::future::join_all(
                waiting
                    .into_iter()
                    .map(|(routed, d)| async move { (routed, d.await) }),
            ),
        )
        .await
        .map_err(|_| self.error("the broker acknowledged nothing in time".into()))?;
        for (routed, result) in results {
            match result {
                Ok(Ok(_)) => delivered += 1,
                Ok(Err((error, _))) if permanent(&error) => {
                    dead_letter(
                        commit,
                        routed,
                        Reason::SinkRejected,
                        format!("the broker refused it: {error}"),
                    );
                    rejected += 1;
                }
                Ok(Err((error, _))) => failure = Some(error.to_string()),
                Err(_) => failure = Some("the producer went away".to_owned()),
            }
        }
        self.count("delivered", delivered);
        self.count("rejected", rejected);
        if let Some(error) = failure {
            self.count("retried", 1);
            return Err(self.error(format!("not acknowledged: {error}")));
        }
        Ok(())
    }
}
