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
mod quiet;
pub mod sink;
pub mod source;

pub use sink::KafkaSinkConfig;
pub use source::KafkaSourceConfig;

/// Checks every librdkafka setting of `client` without creating a client (which would
/// connect: `validate` and `test` build sources and sinks). A bad one is a config error at
/// `{at}.options` naming the setting.
fn check_settings(
    client: &rdkafka::ClientConfig,
    at: &str,
) -> Result<(), colloquium_config::ConfigError> {
    use rdkafka::error::KafkaError;
    client
        .create_native_config()
        .map(drop)
        .map_err(|e| match e {
            KafkaError::ClientConfig(_, description, key, _) => {
                colloquium_config::ConfigError::new(format!("{at}.options.{key}"), description)
            }
            other => {
                colloquium_config::ConfigError::new(format!("{at}.options"), other.to_string())
            }
        })
}
