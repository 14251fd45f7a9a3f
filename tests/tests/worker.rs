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
    Broker,
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
        let value = codec
            .encode(Subject::Topic(&topic), &command(saga, &replies))
            .expect("encode");
        send(&p, &topic, saga, &value);
    }
    drop(registry);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let handler: Handler = Arc::new(|_| Box::pin(async { Ok(serde_json::json!({"ok": true})) }));
    let worker = Worker::new(
        WorkerConfig {
            kafka: kafka_settings(&bootstrap),
            registry: RegistrySettings::new(url.as_str()),
            topic: topic.clone(),
            group: name.clone(),
            instance: "outage".into(),
            dedupe_capacity: 100,
            concurrency: 8,
            fetch_wait_max_ms: 10,
        },
        handler,
    )
    .expect("worker");
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
    let mut answered = BTreeSet::new();
    while answered.len() < sagas.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        answered = read_all(&bootstrap, &replies)
            .into_iter()
            .filter_map(|r| r.key.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect();
    }
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

    let slow_started = Arc::new(AtomicBool::new(false));
    let fast_answered = Arc::new(AtomicBool::new(false));
    let slow_saw_fast = Arc::new(AtomicBool::new(false));
    let handler: Handler = {
        let (slow_started, fast_answered, slow_saw_fast) = (
            slow_started.clone(),
            fast_answered.clone(),
            slow_saw_fast.clone(),
        );
        Arc::new(move |command: Command| {
            let (slow_started, fast_answered, slow_saw_fast) = (
                slow_started.clone(),
                fast_answered.clone(),
                slow_saw_fast.clone(),
            );
            Box::pin(async move {
                if command.saga_id == "slow" {
                    slow_started.store(true, Ordering::SeqCst);
                    let give_up = Instant::now() + Duration::from_secs(60);
                    while !fast_answered.load(Ordering::SeqCst) && Instant::now() < give_up {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    slow_saw_fast.store(fast_answered.load(Ordering::SeqCst), Ordering::SeqCst);
                } else {
                    fast_answered.store(true, Ordering::SeqCst);
                }
                Ok(serde_json::json!({"ok": true}))
            })
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = Worker::new(
        WorkerConfig {
            kafka: kafka_settings(&bootstrap),
            registry: RegistrySettings::new(url.as_str()),
            topic: topic.clone(),
            group: name.clone(),
            instance: "slow".into(),
            dedupe_capacity: 100,
            concurrency: 8,
            fetch_wait_max_ms: 10,
        },
        handler,
    )
    .expect("worker");
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
    let send_command = |saga: &str| {
        let value = codec
            .encode(Subject::Topic(&topic), &command(saga, &replies))
            .expect("encode");
        send(&p, &topic, saga, &value);
    };
    send_command("slow");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !slow_started.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        slow_started.load(Ordering::SeqCst),
        "the worker never fetched the first command"
    );
    send_command("fast");
    let mut answered = BTreeSet::new();
    while answered.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        answered = read_all(&bootstrap, &replies)
            .into_iter()
            .filter_map(|r| r.key.map(|k| String::from_utf8_lossy(&k).into_owned()))
            .collect();
    }
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
        slow_saw_fast.load(Ordering::SeqCst),
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
