//! Reading a topic to its end, for the small compacted topics every client must know whole
//! before it acts (the engines' participant controls).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// Keys under this prefix are read markers, not data: readers skip them.
pub const MARKER_PREFIX: &str = "__marker/";

/// Assigns every partition of `topic` to `consumer` from its beginning and calls `f` for each
/// record up to the end, then leaves the consumer assigned, to follow the topic. `producer`
/// writes the end marker.
///
/// The end is a marker written now, not the high watermark, which some brokers report short of
/// their last batch (tansu 0.6): a record keyed `__marker/<reader>` whose value is new for each
/// read, so that compaction keeps one per reader. A record past the marker may be read too.
/// Gives up after `patience` without progress.
pub fn read_to_end(
    consumer: &BaseConsumer,
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    reader: &str,
    patience: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    let kafka_err = |action: String| move |source| Error::Kafka { action, source };
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(kafka_err(format!("reading the partitions of {topic}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Topic {
            topic: topic.to_string(),
            problem: "it does not exist".into(),
            fix: "start an engine of the group first: it creates its topics".into(),
        });
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(kafka_err("building an assignment".into()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_err(format!("assigning {topic}")))?;
    let marker = format!("{MARKER_PREFIX}{reader}");
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    // Partitions whose marker has not come back yet.
    let mut waiting: BTreeSet<i32> = BTreeSet::new();
    for p in &partitions {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(*p)
                    .key(&marker)
                    .payload(&nonce),
            )
            .map_err(|(source, _)| Error::Kafka {
                action: format!("writing a read marker to {topic}[{p}]"),
                source,
            })?;
        let _ = waiting.insert(*p);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(kafka_err(format!("writing the read markers to {topic}")))?;
    let mut progressed = Instant::now();
    while !waiting.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) if crate::is_transient(&e) => {}
            Some(Err(e)) => return Err(kafka_err(format!("reading {topic}"))(e)),
            Some(Ok(m)) => {
                progressed = Instant::now();
                let key = m.key().unwrap_or_default();
                if key == marker.as_bytes() && m.payload() == Some(nonce.as_bytes()) {
                    let _ = waiting.remove(&m.partition());
                } else if !key.starts_with(MARKER_PREFIX.as_bytes()) {
                    f(&m);
                }
            }
        }
        if progressed.elapsed() > patience {
            return Err(Error::Topic {
                topic: topic.to_string(),
                problem: format!(
                    "its own read marker did not come back within {} s",
                    patience.as_secs()
                ),
                fix:
                    "check that the broker is up and that this client may read and write the topic"
                        .into(),
            });
        }
    }
    Ok(())
}
