//! What the engine needs from the broker under test (G4), checked directly, so that a broker
//! that breaks it fails here with a clear message rather than as a stuck saga elsewhere.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_tests::{client_config, create_topic, Broker};

/// Offsets read from partition 0 of `topic`, starting at `from`, until `until` is reached or
/// nothing more arrives.
fn read_from(bootstrap: &str, topic: &str, from: i64, until: i64) -> Vec<i64> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "sagaflow-test-broker")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .expect("partition offset");
    consumer.assign(&tpl).expect("assign");
    let mut offsets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && offsets.last().is_none_or(|o| *o < until) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            offsets.push(m.offset());
        }
    }
    offsets
}

/// A consumer resumes at a committed or restored offset, which is usually inside a batch the
/// relay or a participant produced. The broker must serve the rest of that batch; tansu 0.6's
/// memory storage does not (docs/operations.md), which lost participant commands.
#[test]
fn a_fetch_that_starts_inside_a_batch_gets_the_rest_of_it() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = "sagaflow-test-mid-batch";
    create_topic(&bootstrap, topic, 1);
    // A long linger so the ten records travel as one batch.
    let producer: ThreadedProducer<_> = client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "500")
        .create()
        .expect("producer");
    let enqueue = |i: i32| {
        let value = format!("r{i}");
        producer
            .send(
                BaseRecord::<str, str>::to(topic)
                    .partition(0)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
    };
    (0..10).for_each(enqueue);
    producer.flush(Duration::from_secs(30)).expect("flush");
    // Two more batches, one record each.
    for i in 10..12 {
        enqueue(i);
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    assert_eq!(
        read_from(&bootstrap, topic, 0, 11),
        (0..12).collect::<Vec<_>>(),
        "reading from the start"
    );
    assert_eq!(
        read_from(&bootstrap, topic, 5, 11),
        (5..12).collect::<Vec<_>>(),
        "reading from offset 5, inside the first batch: the broker skipped records"
    );
}
