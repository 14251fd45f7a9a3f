//! Kafka helpers of the command-line tools.

use anyhow::Context as _;
use rdkafka::producer::FutureProducer;
use sagaflow_kafka::KafkaSettings;

/// A producer that partitions by key like Java clients and the engine do.
pub(crate) fn producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    kafka
        .hot_path_producer_config("cli")
        .create()
        .context("creating a producer")
}
