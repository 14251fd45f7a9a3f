//! Kafka helpers of the command-line tools.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;

/// Settings every client needs (IPv4: local brokers listen on 127.0.0.1 only).
pub(crate) fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    let _ = c
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("log_level", "3");
    c
}

/// A producer that partitions by key like Java clients and the engine do.
pub(crate) fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("partitioner", "murmur2_random")
        .create()
        .context("creating a producer")
}

/// Sum of the high watermarks of `topics` (how many records they hold).
pub(crate) fn record_count(bootstrap: &str, topics: &[String]) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "sagaflow-tools")
        .create()
        .context("creating a metadata consumer")?;
    let mut total = 0;
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading metadata of {topic}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .with_context(|| format!("reading watermarks of {topic}[{}]", p.id()))?;
                total += high - low;
            }
        }
    }
    Ok(total)
}
