//! Kafka: how colloquium scales out over partitions without a cluster of its own.
//!
//! - [`source`]: `type: kafka` sources, consumer-group members that store each message exactly
//!   once in this node's log (its offset in the same write as the events).
//! - `consumer`: the consumer loop: rebalances, backpressure, offsets, stalls.
//! - [`sink`]: `type: kafka` sinks, an idempotent producer whose acknowledgements move the
//!   pipeline's checkpoint.
//! - [`metrics`]: the `colloquium_kafka_*` series.
//!
//! librdkafka is the bundled 2.x that `rdkafka-sys` builds from its own sources.
#![warn(missing_docs)]

mod consumer;
pub mod metrics;
pub mod sink;
pub mod source;

pub use sink::KafkaSinkConfig;
pub use source::KafkaSourceConfig;
