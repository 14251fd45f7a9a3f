//! Kafka reads and writes of the restore path. Client settings come from one place,
//! [`sagaflow_kafka::KafkaSettings`].

use sagaflow_kafka::KafkaSettings;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use tracing::debug;

use crate::error::{Error, Result};

/// Low and high watermark of a topic partition. A transient error (a partition created a
/// moment ago that has no leader yet, a leader moving, a broker restarting) is waited out for
/// up to 10 s: Apache Kafka answers NotLeaderForPartition for a topic just created.
pub(crate) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match watermarks_once(consumer, topic, partition) {
            Err(Error::Kafka { source, .. })
                if sagaflow_kafka::is_transient(&source) && Instant::now() < deadline =>
            {
                debug!(topic, partition, error = %source, "watermarks not available yet; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// [`watermarks`] without waiting out transient errors, for checks that must not hold up the
/// engine loop.
pub(crate) fn watermarks_once(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| Error::kafka(format!("reading watermarks of {topic}[{partition}]"), e))
}

/// A consumer for reading partitions by manual assignment (restores, tools).
pub(crate) fn reader(kafka: &KafkaSettings) -> Result<BaseConsumer> {
    let mut config = kafka.config("engine-reader", &[("fetch.wait.max.ms", "50")]);
    let _ = config
        .set("group.id", "sagaflow-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    config
        .create()
        .map_err(|e| Error::kafka("creating a reader consumer", e))
}

/// Calls `f(offset, key, value)` for every record of `topic[partition]` in `[from, until)`.
pub(crate) fn read_range(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    until: i64,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<()> {
    if from >= until {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| Error::kafka("building an assignment", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| Error::kafka(format!("assigning {topic}[{partition}]"), e))?;
    let mut next = from;
    // A read that makes no progress for this long gives up (a broker that stays down, records
    // that never come).
    let patience = Duration::from_secs(60);
    let mut progressed = Instant::now();
    while next < until {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if progressed.elapsed() > patience {
                    return Err(Error::Journal {
                        topic: topic.to_string(),
                        partition,
                        offset: next,
                        message: format!("no record arrived for 60 s while reading up to {until}: is the broker reachable, and does the partition have a leader (kafka-topics --describe)?"),
                    });
                }
            }
            // The client reconnects by itself.
            Some(Err(e))
                if sagaflow_kafka::is_transient(&e) && progressed.elapsed() <= patience =>
            {
                debug!(topic, partition, error = %e, "broker unavailable while reading; waiting");
            }
            Some(Err(e)) => return Err(Error::kafka(format!("reading {topic}[{partition}]"), e)),
            Some(Ok(m)) => {
                progressed = Instant::now();
                if m.offset() < next {
                    continue;
                }
                next = m.offset() + 1;
                f(&m)?;
            }
        }
    }
    consumer
        .unassign()
        .map_err(|e| Error::kafka("unassigning a reader", e))?;
    Ok(())
}

/// Header of changelog records: the journal offset of the record whose state they hold.
pub(crate) const SOURCE_HEADER: &str = "sagaflow-source-offset";

/// Header of changelog states: the epoch of the owner that wrote them (see
/// `restore::rebuild_from_changelog` for why).
pub(crate) const EPOCH_HEADER: &str = "sagaflow-epoch";

/// The journal offset a changelog record's state came from; -1 for records without one
/// (checkpoints, markers, and states written before the header existed).
pub(crate) fn source_offset(m: &impl Message) -> i64 {
    header_i64(m, SOURCE_HEADER).unwrap_or(-1)
}

/// The epoch of the owner that wrote a changelog state; `None` for records written before the
/// header existed.
pub(crate) fn writer_epoch(m: &impl Message) -> Option<i64> {
    header_i64(m, EPOCH_HEADER)
}

/// Header of owner heartbeats: the static member id (instance-id) of the engine that wrote them.
pub(crate) const INSTANCE_HEADER: &str = "sagaflow-instance";

/// Header of owner heartbeats: their period, in milliseconds.
pub(crate) const HEARTBEAT_EVERY_HEADER: &str = "sagaflow-heartbeat-ms";

/// The instance-id of the engine that wrote a heartbeat; `None` for a dynamic member's.
pub(crate) fn writer_instance(m: &impl Message) -> Option<String> {
    header_str(m, INSTANCE_HEADER).map(str::to_string)
}

/// The period of the heartbeats a heartbeat belongs to; `None` if it does not say.
pub(crate) fn heartbeat_every(m: &impl Message) -> Option<std::time::Duration> {
    header_i64(m, HEARTBEAT_EVERY_HEADER)
        .and_then(|ms| u64::try_from(ms).ok())
        .map(std::time::Duration::from_millis)
}

fn header_str<'a>(m: &'a impl Message, name: &str) -> Option<&'a str> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn header_i64(m: &impl Message, name: &str) -> Option<i64> {
    header_str(m, name).and_then(|v| v.parse().ok())
}

use rdkafka::producer::{FutureProducer, FutureRecord};

/// A producer for the few synchronous writes of a restore (claims, end markers).
pub(crate) fn sync_producer(kafka: &KafkaSettings) -> Result<FutureProducer> {
    kafka
        .producer_config("engine-restore", 0)
        .create()
        .map_err(|e| Error::kafka("creating the restore producer", e))
}

/// Writes one record to `topic[partition]` and returns the offset the broker gave it.
///
/// A restore uses the offset of its own record as the end of the partition instead of the high
/// watermark: tansu 0.6 reports a high watermark that leaves out all but the first record of
/// the last batch, and an offset we wrote ourselves is exact on every broker.
pub(crate) fn write_and_locate(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<i64> {
    let mut record = FutureRecord::to(topic).partition(partition).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    let delivery = producer
        .send_result(record)
        .map_err(|(e, _)| Error::kafka(format!("writing to {topic}[{partition}]"), e))?;
    match futures::executor::block_on(delivery) {
        Ok(Ok(delivered)) => Ok(delivered.offset),
        Ok(Err((e, _))) => Err(Error::kafka(format!("writing to {topic}[{partition}]"), e)),
        Err(_) => Err(Error::Config(format!(
            "the producer dropped a write to {topic}[{partition}]"
        ))),
    }
}
