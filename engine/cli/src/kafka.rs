//! Kafka helpers of the command-line tools.

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
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
