//! What the engine needs from the broker under test (G4), checked directly, so that a broker
//! that breaks it fails here with a clear message rather than as a stuck saga elsewhere.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_tests::{client_config, create_topic, group, Broker, Storage};
use sagaflow_worker::{Handler, RegistrySettings, Worker, WorkerConfig};

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

/// Creates `topic` with offsets 0 to 9 in one batch, then 10 and 11 in a batch each.
fn produce_batches(bootstrap: &str, topic: &str) {
    create_topic(bootstrap, topic, 1);
    // A long linger so the ten records travel as one batch.
    let producer: ThreadedProducer<_> = client_config(bootstrap)
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
}

/// A consumer resumes at a committed or restored offset, which is usually inside a batch the
/// relay or a participant produced. The broker must serve the rest of that batch; tansu 0.6's
/// memory storage does not (docs/operations.md), which lost participant commands.
#[test]
fn a_fetch_that_starts_inside_a_batch_gets_the_rest_of_it() {
    let broker = Broker::for_test();
    let bootstrap = broker.bootstrap();
    let topic = &group("mid-batch");
    produce_batches(&bootstrap, topic);
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

/// Offsets of `topic`'s partition 0 that a worker reported as never delivered, after its group
/// resumed at offset 5, inside the first batch; and the records it received.
fn worker_resuming_inside_a_batch(broker: &Broker) -> (u64, u64) {
    let bootstrap = broker.bootstrap();
    let name = group("worker-gap");
    let (topic, group) = (name.as_str(), name.as_str());
    produce_batches(&bootstrap, topic);
    let committer: BaseConsumer = client_config(&bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(topic, 0, Offset::Offset(5))
        .expect("partition offset");
    // A fresh Apache Kafka answers NOT_COORDINATOR until it has created __consumer_offsets.
    let committed = sagaflow_tests::eventually(Duration::from_secs(60), || {
        committer
            .commit(&at, CommitMode::Sync)
            .map_err(|e| eprintln!("commit: {e}; trying again"))
            .is_ok()
    });
    assert!(committed, "the group's offset could not be committed");
    drop(committer);

    // The worker's consumer needs a runtime from its creation on.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let handler: Handler = Arc::new(|_| Box::pin(async { Ok(serde_json::Value::Null) }));
    let worker = Worker::new(
        WorkerConfig {
            kafka: sagaflow_tests::kafka_settings(&bootstrap),
            // The records are not commands, so the registry is never asked.
            registry: RegistrySettings::new("http://127.0.0.1:9"),
            topic: topic.into(),
            group: group.into(),
            instance: "gap".into(),
            dedupe_capacity: 10,
            concurrency: 4,
            fetch_wait_max_ms: 10,
        },
        handler,
    )
    .expect("worker");
    let stats = worker.stats.clone();
    runtime.block_on(async {
        let received = || {
            stats.undecodable.load(Ordering::Relaxed)
                + stats.skipped_offsets.load(Ordering::Relaxed)
        };
        let run = worker.run(async {
            // Offsets 5 to 11 are seven: each is either received or reported missing.
            let deadline = Instant::now() + Duration::from_secs(60);
            while received() < 7 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        run.await.expect("worker run");
    });
    (
        stats.skipped_offsets.load(Ordering::Relaxed),
        stats.undecodable.load(Ordering::Relaxed),
    )
}

/// On a correct broker the worker resumes inside a batch and receives the rest of it. On tansu's
/// memory storage, which skips it, the worker says how many commands it never received. (Should a
/// later tansu fix this, the second assertion fails: memory storage is then safe, and
/// docs/operations.md must say so.)
#[test]
fn a_worker_reports_command_offsets_the_broker_never_delivered() {
    let broker = Broker::for_test();
    assert_eq!(
        worker_resuming_inside_a_batch(&broker),
        (0, 7),
        "offsets 5 to 11 all received"
    );
    if !broker.is_local() || sagaflow_tests::broker_kind() != sagaflow_tests::BrokerKind::Tansu {
        sagaflow_tests::skip(
            "a_worker_reports_command_offsets_the_broker_never_delivered, its second half",
            "it shows tansu's memory storage skipping records, so it needs a local tansu broker",
        );
    } else {
        // tansu serves offsets 10 and 11, some of them more than once, and never 5 to 9.
        let (skipped, received) =
            worker_resuming_inside_a_batch(&Broker::start_with(Storage::Memory));
        assert_eq!(
            skipped, 5,
            "tansu memory storage: offsets 5 to 9 are skipped, and reported ({received} records received)"
        );
    }
}
