//! The worker library against a real broker and registry: nothing is lost when a command
//! cannot be answered yet, a slow command holds up no other, and a command whose partition moved
//! while it ran stores no offset.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, Command, Phase, RegistrySettings, Subject};
use sagaflow_kafka::KafkaSettings;
use sagaflow_tests::{
    create_topic, free_port, group, kafka_settings, producer, read_all, send, spawn_registry_on,
    Broker, Proc, TestBroker, TestProducer,
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
    worker_with(
        kafka_settings(bootstrap),
        registry_url,
        topic,
        group,
        group,
        handler,
    )
}

/// A worker instance named `instance`, with the given client settings.
fn worker_with(
    kafka: KafkaSettings,
    registry_url: &str,
    topic: &str,
    group: &str,
    instance: &str,
    handler: Handler,
) -> Worker {
    Worker::new(
        WorkerConfig {
            kafka,
            registry: RegistrySettings::new(registry_url),
            topic: topic.to_string(),
            group: group.to_string(),
            instance: instance.to_string(),
            dedupe_capacity: 100,
            concurrency: 8,
            fetch_wait_max_ms: 10,
        },
        handler,
    )
    .expect("worker")
}

/// A broker, a registry, and a one-partition command topic with its replies topic.
struct Rig {
    _broker: TestBroker,
    _registry: Proc,
    bootstrap: String,
    url: String,
    codec: BlockingCodec,
    /// The command topic, also the workers' group.
    name: String,
    replies: String,
}

impl Rig {
    fn new(prefix: &str) -> Self {
        let broker = Broker::for_test();
        let bootstrap = broker.bootstrap();
        let (registry, url) = spawn_registry_on(&bootstrap, &format!("127.0.0.1:{}", free_port()));
        let name = group(prefix);
        let replies = format!("{name}.replies");
        create_topic(&bootstrap, &name, 1);
        create_topic(&bootstrap, &replies, 1);
        let codec = BlockingCodec::new(&RegistrySettings::new(url.as_str())).expect("codec");
        Self {
            _broker: broker,
            _registry: registry,
            bootstrap,
            url,
            codec,
            name,
            replies,
        }
    }

    /// The group's committed offset of the command partition.
    fn committed(&self) -> Offset {
        let mut config = kafka_settings(&self.bootstrap).config(&[]);
        let _ = config.set("group.id", &self.name);
        let consumer: BaseConsumer = config.create().expect("consumer");
        let mut partition = TopicPartitionList::new();
        let _ = partition.add_partition(&self.name, 0);
        let committed = consumer
            .committed_offsets(partition, Duration::from_secs(30))
            .expect("committed offsets");
        committed.elements()[0].offset()
    }
}

/// One command's handler held until another handler lets it go.
#[derive(Default)]
struct Hold {
    started: AtomicBool,
    released: AtomicBool,
    saw_release: AtomicBool,
}

impl Hold {
    /// Holds the calling handler until [`Hold::release`], or two minutes.
    async fn hold(&self) {
        self.started.store(true, Ordering::SeqCst);
        let give_up = Instant::now() + Duration::from_secs(120);
        while !self.released.load(Ordering::SeqCst) && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let saw = self.released.load(Ordering::SeqCst);
        self.saw_release.store(saw, Ordering::SeqCst);
    }

    fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    /// Whether `flag` is set by `deadline`.
    fn by(flag: &AtomicBool, deadline: Instant) -> bool {
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        flag.load(Ordering::SeqCst)
    }
}

/// A handler answering `{"ok": true}` once `then` has run.
fn answering<F, Fut>(then: F) -> Handler
where
    F: Fn(Command) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let then = Arc::new(then);
    Arc::new(move |command: Command| {
        let then = then.clone();
        Box::pin(async move {
            then(command).await;
            Ok(serde_json::json!({"ok": true}))
        })
    })
}

/// A running worker, and the sender that stops it.
type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<sagaflow_worker::Result<()>>,
);

/// Runs `worker` on `runtime` until told to stop, then closes it.
fn spawn_worker(runtime: &tokio::runtime::Runtime, worker: Worker) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = runtime.spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await?;
        worker.close(Duration::from_secs(30)).await
    });
    (stop, running)
}

/// Stops the workers and waits for each to have settled every command it handled.
fn stop_workers(runtime: &tokio::runtime::Runtime, workers: Vec<Running>) {
    let running: Vec<_> = workers
        .into_iter()
        .map(|(stop, running)| {
            let _ = stop.send(());
            running
        })
        .collect();
    for running in running {
        runtime
            .block_on(running)
            .expect("join")
            .expect("worker run and close");
    }
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
    let worker = worker_on(&bootstrap, &url, &topic, &name, answering(|_| async {}));
    let stats = worker.stats.clone();
    let worker = spawn_worker(&runtime, worker);

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
    stop_workers(&runtime, vec![worker]);
    let missing: Vec<&String> = sagas.iter().filter(|s| !answered.contains(*s)).collect();
    assert!(missing.is_empty(), "never answered: {missing:?}");
}

/// A command whose handler is still running holds up no command fetched after it, even in its
/// own partition: the slow handler here finishes only once a later command has been answered
/// (a worker that handled commands in batches, each waiting for all its replies, never got to
/// the later one). The partition's offset is then committed past both.
#[test]
fn a_slow_command_holds_up_no_command_fetched_after_it() {
    let rig = Rig::new("slow");
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);

    let hold = Arc::new(Hold::default());
    let handler = {
        let hold = hold.clone();
        answering(move |command: Command| {
            let hold = hold.clone();
            async move {
                if command.saga_id == "slow" {
                    hold.hold().await;
                } else {
                    hold.release();
                }
            }
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = spawn_worker(&runtime, worker_on(bootstrap, url, topic, name, handler));

    let p = producer(bootstrap);
    send_command(codec, &p, topic, replies, "slow");
    let deadline = Instant::now() + Duration::from_secs(90);
    assert!(
        Hold::by(&hold.started, deadline),
        "the worker never fetched the first command"
    );
    send_command(codec, &p, topic, replies, "fast");
    let answered = answered_by(bootstrap, replies, 2, deadline);
    stop_workers(&runtime, vec![worker]);
    assert_eq!(
        answered,
        BTreeSet::from(["fast".to_string(), "slow".to_string()])
    );
    assert!(
        hold.saw_release.load(Ordering::SeqCst),
        "the command fetched second was answered only after the slow one finished"
    );

    assert_eq!(
        rig.committed(),
        Offset::Offset(2),
        "the offset is committed past both commands"
    );
}

/// Every warning logged in this test binary, from any thread (the workers log on the async
/// runtime's threads).
fn warnings() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        struct Sink(&'static Mutex<Vec<u8>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(log))
            .init();
        log
    })
}

/// A command still running when its partition moves to another instance is answered there
/// again (at least once); the first instance's answer then stores no offset for a partition it
/// no longer owns. It used to try, and log "cannot store the consumer offset" with librdkafka's
/// "Erroneous state" at every rebalance that caught a command in flight.
#[test]
fn a_command_whose_partition_moved_while_it_ran_stores_no_offset() {
    let log = warnings();
    let rig = Rig::new("moved");
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);

    // The first instance holds the command until the second has it.
    let hold = Arc::new(Hold::default());
    let first = {
        let hold = hold.clone();
        answering(move |_| {
            let hold = hold.clone();
            async move { hold.hold().await }
        })
    };
    let second = {
        let hold = hold.clone();
        answering(move |_| {
            hold.release();
            async {}
        })
    };
    // The range assignor gives the one partition to the member whose id sorts first, and a
    // member id begins with its client id: the partition moves to the second instance.
    let client = |id: &str| {
        let mut kafka = kafka_settings(bootstrap);
        kafka
            .apply_overrides(&[format!("client.id={id}")])
            .expect("client.id");
        kafka
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let first = spawn_worker(
        &runtime,
        worker_with(client("z-first"), url, topic, name, "first", first),
    );
    let p = producer(bootstrap);
    send_command(codec, &p, topic, replies, "moved");
    let deadline = Instant::now() + Duration::from_secs(120);
    assert!(
        Hold::by(&hold.started, deadline),
        "the first instance never fetched the command"
    );
    let second = spawn_worker(
        &runtime,
        worker_with(client("a-second"), url, topic, name, "second", second),
    );
    let _ = Hold::by(&hold.saw_release, deadline);
    // Stopped once both have answered: each settles every command it handled before it returns.
    while read_all(bootstrap, replies).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_workers(&runtime, vec![first, second]);
    assert!(
        hold.saw_release.load(Ordering::SeqCst),
        "the partition never moved to the second instance"
    );
    assert_eq!(
        read_all(bootstrap, replies).len(),
        2,
        "not answered once by each instance (at least once)"
    );
    let warnings = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
    assert!(
        !warnings.contains("cannot store the consumer offset"),
        "the first instance stored an offset of a partition it no longer owns:\n{warnings}"
    );

    assert_eq!(
        rig.committed(),
        Offset::Offset(1),
        "the second instance committed past the command"
    );
}
