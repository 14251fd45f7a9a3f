//! The worker library against a real broker and registry: nothing is lost when a command
//! cannot be answered yet, and a slow command holds up no other.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, Command, Phase, RegistrySettings, Subject};
use sagaflow_tests::{
    create_topic, free_port, group, kafka_settings, producer, read_all, send, spawn_registry_on,
    Broker, TestProducer,
};
use sagaflow_worker::{Handler, Worker, WorkerConfig};

fn command(saga: &str, reply_to: &str) -> Command {
    Command {
        message_id: format!("{saga}/pay/forward/1"),
        saga_id: saga.into(),
        definition: "order".into(),
        version: 1,
        step: "pay".into(),
        phase: Phase::Forward,
        attempt: 1,
        idempotency_key: format!("{saga}/pay/forward"),
        command_type: "charge".into(),
        payload_json: "{}".into(),
        reply_to: reply_to.into(),
        deadline: None,
        issued_at: 0,
    }
}

/// A worker of `group` on `topic`, handling up to 8 commands at once.
fn worker_on(
    bootstrap: &str,
    registry_url: &str,
    topic: &str,
    group: &str,
    handler: Handler,
) -> Worker {
    Worker::new(
        WorkerConfig {
            kafka: kafka_settings(bootstrap),
            registry: RegistrySettings::new(registry_url),
            topic: topic.to_string(),
            group: group.to_string(),
            instance: group.to_string(),
            dedupe_capacity: 100,
            concurrency: 8,
            fetch_wait_max_ms: 10,
        },
        handler,
    )
    .expect("worker")
}

/// Sends the command of `saga` to `topic`, its replies going to `replies`.
fn send_command(codec: &BlockingCodec, p: &TestProducer, topic: &str, replies: &str, saga: &str) {
    let value = codec
        .encode(Subject::Topic(topic), &command(saga, replies))
        .expect("encode");
    send(p, topic, saga, &value);
}

/// The sagas answered on `replies` once `count` are, or at `deadline`.
fn answered_by(
    bootstrap: &str,
    replies: &str,
    count: usize,
    deadline: Instant,
) -> BTreeSet<String> {
    let mut answered = BTreeSet::new();
    while answered.len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        answered = read_all(bootstrap, replies)
            .into_iter()
            .filter_map(|r| r.key.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect();
    }
    answered
}

/// While the registry is down a worker cannot decode its commands. It used to skip them as
/// undecodable and commit past them, so they were never answered. Now it rewinds, backs off,
/// and answers every one once the registry is back.
#[test]
fn commands_fetched_during_a_registry_outage_are_answered_after_it() {
    let broker = Broker::for_test();
    let bootstrap = broker.bootstrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (registry, url) = spawn_registry_on(&bootstrap, &listen);
    let name = group("outage");
    let (topic, replies) = (name.clone(), format!("{name}.replies"));
    create_topic(&bootstrap, &topic, 1);
    create_topic(&bootstrap, &replies, 1);
    let codec = BlockingCodec::new(&RegistrySettings::new(url.as_str())).expect("codec");
    let sagas: Vec<String> = (0..20).map(|i| format!("o-{i:02}")).collect();
    let p = producer(&bootstrap);
    for saga in &sagas {
        send_command(&codec, &p, &topic, &replies, saga);
    }
    drop(registry);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let handler: Handler = Arc::new(|_| Box::pin(async { Ok(serde_json::json!({"ok": true})) }));
    let worker = worker_on(&bootstrap, &url, &topic, &name, handler);
    let stats = worker.stats.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        stats.undecodable.load(Ordering::Relaxed),
        0,
        "commands were skipped as undecodable while the registry was down"
    );
    assert!(read_all(&bootstrap, &replies).is_empty(), "no reply yet");

    let (_registry, _) = spawn_registry_on(&bootstrap, &listen);
    let deadline = Instant::now() + Duration::from_secs(90);
    let answered = answered_by(&bootstrap, &replies, sagas.len(), deadline);
    let _ = stop.send(());
    runtime
        .block_on(running)
        .expect("join")
        .expect("worker run");
    let missing: Vec<&String> = sagas.iter().filter(|s| !answered.contains(*s)).collect();
    assert!(missing.is_empty(), "never answered: {missing:?}");
}

/// A command whose handler is still running holds up no command fetched after it, even in its
/// own partition: the slow handler here finishes only once a later command has been answered
/// (a worker that handled commands in batches, each waiting for all its replies, never got to
/// the later one). The partition's offset is then committed past both.
#[test]
fn a_slow_command_holds_up_no_command_fetched_after_it() {
    let broker = Broker::for_test();
    let bootstrap = broker.bootstrap();
    let (_registry, url) = spawn_registry_on(&bootstrap, &format!("127.0.0.1:{}", free_port()));
    let name = group("slow");
    let (topic, replies) = (name.clone(), format!("{name}.replies"));
    create_topic(&bootstrap, &topic, 1);
    create_topic(&bootstrap, &replies, 1);
    let codec = BlockingCodec::new(&RegistrySettings::new(url.as_str())).expect("codec");

    #[derive(Default)]
    struct Seen {
        slow_started: AtomicBool,
        fast_answered: AtomicBool,
        slow_saw_fast: AtomicBool,
    }
    let seen = Arc::new(Seen::default());
    let handler: Handler = {
        let seen = seen.clone();
        Arc::new(move |command: Command| {
            let seen = seen.clone();
            Box::pin(async move {
                if command.saga_id == "slow" {
                    seen.slow_started.store(true, Ordering::SeqCst);
                    let give_up = Instant::now() + Duration::from_secs(60);
                    while !seen.fast_answered.load(Ordering::SeqCst) && Instant::now() < give_up {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let saw = seen.fast_answered.load(Ordering::SeqCst);
                    seen.slow_saw_fast.store(saw, Ordering::SeqCst);
                } else {
                    seen.fast_answered.store(true, Ordering::SeqCst);
                }
                Ok(serde_json::json!({"ok": true}))
            })
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = worker_on(&bootstrap, &url, &topic, &name, handler);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await?;
        worker.close(Duration::from_secs(30)).await
    });

    let p = producer(&bootstrap);
    send_command(&codec, &p, &topic, &replies, "slow");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !seen.slow_started.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.slow_started.load(Ordering::SeqCst),
        "the worker never fetched the first command"
    );
    send_command(&codec, &p, &topic, &replies, "fast");
    let answered = answered_by(&bootstrap, &replies, 2, deadline);
    let _ = stop.send(());
    runtime
        .block_on(running)
        .expect("join")
        .expect("worker run and close");
    assert_eq!(
        answered,
        BTreeSet::from(["fast".to_string(), "slow".to_string()])
    );
    assert!(
        seen.slow_saw_fast.load(Ordering::SeqCst),
        "the command fetched second was answered only after the slow one finished"
    );

    let mut config = kafka_settings(&bootstrap).config(&[]);
    let _ = config.set("group.id", &name);
    let consumer: BaseConsumer = config.create().expect("consumer");
    let mut partition = TopicPartitionList::new();
    let _ = partition.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(partition, Duration::from_secs(30))
        .expect("committed offsets");
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(2),
        "the offset is committed past both commands"
    );
}
