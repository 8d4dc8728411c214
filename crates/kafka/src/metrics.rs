//! `colloquium_kafka_*`: what the Kafka sources and sinks report, per partition where it helps
//! an operator find the slow one.

use colloquium_telemetry::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// A partition of a source's assignment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The source's name.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i64,
}

/// A source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source's name.
    pub source: String,
}

/// A rebalance event of a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabels {
    /// The source's name.
    pub source: String,
    /// `assign`, `revoke` or `lost`.
    pub kind: &'static str,
}

/// A sink and what happened to a message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's name.
    pub sink: String,
    /// `delivered`, `rejected` (dead-lettered) or `retried` (the step is retried).
    pub outcome: &'static str,
}

/// The Kafka metrics, registered once per node.
#[derive(Clone)]
pub struct KafkaMetrics {
    /// Messages fetched from a partition.
    pub consumed: Family<PartitionLabels, Counter>,
    /// Messages made durable (events and dead letters), with the partition's position.
    pub stored: Family<PartitionLabels, Counter>,
    /// The last offset committed to the group (the next to read).
    pub committed: Family<PartitionLabels, Gauge>,
    /// Messages in the partition after what this node stored.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Rebalances seen.
    pub rebalances: Family<RebalanceLabels, Counter>,
    /// Partitions paused by backpressure now.
    pub paused: Family<SourceLabels, Gauge>,
    /// Assigned partitions with lag that fetched nothing for `stall_after`.
    pub stalled: Family<SourceLabels, Gauge>,
    /// Sink messages by outcome.
    pub produced: Family<SinkLabels, Counter>,
}

impl KafkaMetrics {
    /// The node's Kafka metrics, registered on first use.
    pub fn get(registry: &MetricsRegistry) -> Self {
        registry.once(|registry| {
            registry.register("kafka", |r| {
                let m = KafkaMetrics {
                    consumed: Family::default(),
                    stored: Family::default(),
                    committed: Family::default(),
                    lag: Family::default(),
                    rebalances: Family::default(),
                    paused: Family::default(),
                    stalled: Family::default(),
                    produced: Family::default(),
                };
                r.register(
                    "consumed_messages",
                    "Messages taken from a partition (counted as each batch goes to the store)",
                    m.consumed.clone(),
                );
                r.register(
                    "stored_messages",
                    "Messages made durable (events or dead letters) with their partition's position",
                    m.stored.clone(),
                );
                r.register(
                    "committed_offset",
                    "The group's committed offset (next to read) last committed by this node",
                    m.committed.clone(),
                );
                r.register(
                    "consumer_lag",
                    "Messages in the partition after what this node stored",
                    m.lag.clone(),
                );
                r.register("rebalances", "Rebalances seen", m.rebalances.clone());
                r.register(
                    "paused_partitions",
                    "Partitions paused because a lane or the pending limit is full",
                    m.paused.clone(),
                );
                r.register(
                    "stalled_partitions",
                    "Assigned partitions with lag that fetched nothing for stall_after",
                    m.stalled.clone(),
                );
                r.register(
                    "produced_messages",
                    "Sink messages by outcome",
                    m.produced.clone(),
                );
                m
            })
        })
    }
}
