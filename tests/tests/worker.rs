//! The worker library against a real broker and registry: nothing is lost when a command
//! cannot be answered yet, a slow command holds up no other, handlers busy past the poll
//! interval keep the instance in its group, and an instance joining moves only the partitions it
//! takes, whose commands in flight store no offset.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::BaseRecord;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, Command, Phase, RegistrySettings, Reply, Subject};
use sagaflow_kafka::KafkaSettings;
use sagaflow_tests::{
    broker_kind, create_topic, eventually, flush_delivered, free_port, group, kafka_settings,
    kafka_settings_with, producer, read_all, skip, spawn_registry_on, Broker, BrokerKind, Proc,
    TestBroker, TestProducer,
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
        worker_config(kafka, registry_url, topic, group, instance),
        handler,
    )
    .expect("worker")
}

/// The settings of [`worker_with`]: up to 8 commands at once.
fn worker_config(
    kafka: KafkaSettings,
    registry_url: &str,
    topic: &str,
    group: &str,
    instance: &str,
) -> WorkerConfig {
    WorkerConfig {
        kafka,
        registry: RegistrySettings::new(registry_url),
        topic: topic.to_string(),
        group: group.to_string(),
        instance: instance.to_string(),
        dedupe_capacity: 100,
        concurrency: 8,
        fetch_wait_max_ms: 10,
    }
}

/// A broker, a registry, and a command topic with its one-partition replies topic.
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
    fn new(prefix: &str, partitions: i32) -> Self {
        let broker = Broker::for_test();
        let bootstrap = broker.bootstrap();
        let (registry, url) = spawn_registry_on(&bootstrap, &format!("127.0.0.1:{}", free_port()));
        let name = group(prefix);
        let replies = format!("{name}.replies");
        create_topic(&bootstrap, &name, partitions);
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

    /// The client ids of the group's members, as the broker describes the group.
    fn member_client_ids(&self) -> Vec<String> {
        let mut config = kafka_settings(&self.bootstrap).config("test", &[]);
        let _ = config.set("group.id", format!("{}-describer", self.name));
        let consumer: BaseConsumer = config.create().expect("consumer");
        let Ok(list) = consumer.fetch_group_list(Some(&self.name), Duration::from_secs(10)) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = list
            .groups()
            .iter()
            .filter(|g| g.name() == self.name)
            .flat_map(|g| g.members().iter().map(|m| m.client_id().to_string()))
            .collect();
        ids.sort();
        ids
    }

    /// The group's committed offset of a command partition.
    fn committed(&self, partition: i32) -> Offset {
        let mut config = kafka_settings(&self.bootstrap).config("test", &[]);
        let _ = config.set("group.id", &self.name);
        let consumer: BaseConsumer = config.create().expect("consumer");
        let mut list = TopicPartitionList::new();
        let _ = list.add_partition(&self.name, partition);
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(30))
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

/// Sends the command of `saga` to `topic` (to `partition`, or the one its key gives), its
/// replies going to `replies`.
fn send_command(
    codec: &BlockingCodec,
    p: &TestProducer,
    (topic, partition): (&str, Option<i32>),
    replies: &str,
    saga: &str,
) {
    let value = codec
        .encode(Subject::Topic(topic), &command(saga, replies))
        .expect("encode");
    let mut record = BaseRecord::to(topic).key(saga).payload(&value);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    p.send(record).map_err(|(e, _)| e).expect("enqueue record");
    flush_delivered(p, Duration::from_secs(30));
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
        send_command(&codec, &p, (&topic, None), &replies, saga);
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
    let rig = Rig::new("slow", 1);
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
    send_command(codec, &p, (topic, None), replies, "slow");
    assert!(
        eventually(Duration::from_secs(90), || hold
            .started
            .load(Ordering::SeqCst)),
        "the worker never fetched the first command"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    send_command(codec, &p, (topic, None), replies, "fast");
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
        rig.committed(0),
        Offset::Offset(2),
        "the offset is committed past both commands"
    );
}

/// Every handler busy for longer than `max.poll.interval.ms` does not cost the instance its
/// place in the group: the worker still polls its consumer now and then, and a command fetched
/// meanwhile comes again once a handler is free. A worker that stopped polling at its limit was
/// dropped from the group by librdkafka, and its busy command, not yet committed, came to it
/// again after it rejoined: a second reply.
#[test]
fn handlers_busy_past_the_poll_interval_keep_the_instance_in_its_group() {
    let rig = Rig::new("keepalive", 1);
    let (bootstrap, codec) = (&rig.bootstrap, &rig.codec);
    let (topic, replies) = (&rig.name, &rig.replies);
    let handled: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    // Whether a command started while the long one ran: the limit of one would be broken.
    let (long_running, overlapped) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let handler = {
        let handled = handled.clone();
        let (long_running, overlapped) = (long_running.clone(), overlapped.clone());
        answering(move |command: Command| {
            *handled
                .lock()
                .expect("lock")
                .entry(command.saga_id.clone())
                .or_default() += 1;
            if long_running.load(Ordering::SeqCst) {
                overlapped.store(true, Ordering::SeqCst);
            }
            let long_running = long_running.clone();
            async move {
                if command.saga_id == "long" {
                    long_running.store(true, Ordering::SeqCst);
                    // Two and a half poll intervals.
                    tokio::time::sleep(Duration::from_secs(25)).await;
                    long_running.store(false, Ordering::SeqCst);
                }
            }
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = spawn_worker(&runtime, one_at_a_time_polling_every_10_s(&rig, handler));
    let p = producer(bootstrap);
    send_command(codec, &p, (topic, None), replies, "long");
    assert!(
        eventually(Duration::from_secs(90), || handled
            .lock()
            .expect("lock")
            .contains_key("long")),
        "the worker never fetched the first command"
    );
    // Fetched while the one handler is busy.
    send_command(codec, &p, (topic, None), replies, "next");
    let answered = answered_by(
        bootstrap,
        replies,
        2,
        Instant::now() + Duration::from_secs(120),
    );
    assert_eq!(answered.len(), 2, "answered: {answered:?}");
    // Time for a command fetched again after a rejoin to be answered a second time.
    std::thread::sleep(Duration::from_secs(3));
    stop_workers(&runtime, vec![worker]);
    let mut replies_per_saga: BTreeMap<String, u32> = BTreeMap::new();
    for record in read_all(bootstrap, replies) {
        let key = String::from_utf8_lossy(&record.key.expect("keyed")).into_owned();
        *replies_per_saga.entry(key).or_default() += 1;
    }
    let once = BTreeMap::from([("long".to_string(), 1), ("next".to_string(), 1)]);
    assert_eq!(replies_per_saga, once, "replies per saga");
    assert_eq!(*handled.lock().expect("lock"), once, "handled per saga");
    assert!(
        !overlapped.load(Ordering::SeqCst),
        "a command started while the long one ran, past the concurrency of 1"
    );
    assert_eq!(rig.committed(0), Offset::Offset(2), "committed past both");
}

/// A worker of `rig`'s group handling one command at a time, with `max.poll.interval.ms` at 10 s.
fn one_at_a_time_polling_every_10_s(rig: &Rig, handler: Handler) -> Worker {
    let mut kafka = kafka_settings(&rig.bootstrap);
    kafka
        .set("max.poll.interval.ms", "10000", "the test")
        .expect("max.poll.interval.ms");
    let config = WorkerConfig {
        concurrency: 1,
        ..worker_config(kafka, &rig.url, &rig.name, &rig.name, &rig.name)
    };
    Worker::new(config, handler).expect("worker")
}

/// A worker told to stop while a command runs past `max.poll.interval.ms` finishes it as a
/// member of its group: it keeps polling while it waits, so the command's offset is stored and
/// committed when it leaves. One that stopped polling was out of the group by then, and the
/// command came again to the partition's next owner.
#[test]
fn a_command_finished_after_shutdown_past_the_poll_interval_is_committed() {
    let rig = Rig::new("keepalive-stop", 1);
    let started = Arc::new(AtomicBool::new(false));
    let handler = {
        let started = started.clone();
        answering(move |_| {
            started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(25))
        })
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = spawn_worker(&runtime, one_at_a_time_polling_every_10_s(&rig, handler));
    send_command(
        &rig.codec,
        &producer(&rig.bootstrap),
        (&rig.name, None),
        &rig.replies,
        "long",
    );
    assert!(
        eventually(Duration::from_secs(90), || started.load(Ordering::SeqCst)),
        "the worker never fetched the command"
    );
    stop_workers(&runtime, vec![worker]);
    assert_eq!(read_all(&rig.bootstrap, &rig.replies).len(), 1, "one reply");
    assert_eq!(
        rig.committed(0),
        Offset::Offset(1),
        "committed past the command"
    );
}

/// A handler that panics answers a retryable failure, and the worker goes on with the next
/// command: before, the panic ended the worker, and the command stayed claimed in the shared
/// dedupe memory, holding every copy of it up.
#[test]
fn a_handler_that_panics_answers_a_retryable_failure_and_the_worker_goes_on() {
    let rig = Rig::new("panic", 1);
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);
    let handler: Handler = Arc::new(|command: Command| {
        Box::pin(async move {
            assert_ne!(command.saga_id, "boom", "a bug in the handler");
            Ok(serde_json::json!({"ok": true}))
        })
    });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = spawn_worker(&runtime, worker_on(bootstrap, url, topic, name, handler));
    let p = producer(bootstrap);
    send_command(codec, &p, (topic, None), replies, "boom");
    send_command(codec, &p, (topic, None), replies, "after");
    let deadline = Instant::now() + Duration::from_secs(90);
    let answered = answered_by(bootstrap, replies, 2, deadline);
    stop_workers(&runtime, vec![worker]);
    assert_eq!(
        answered,
        BTreeSet::from(["after".to_string(), "boom".to_string()])
    );
    let boom: Reply = read_all(bootstrap, replies)
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(b"boom".as_slice()))
        .find_map(|r| codec.decode(r.value.as_deref()?).ok())
        .expect("the reply to boom");
    let error = boom.error.expect("a failure");
    assert_eq!(error.code, "HANDLER_PANICKED");
    assert!(error.retryable);
    assert!(
        error.message.contains("a bug in the handler"),
        "{}",
        error.message
    );
}

/// A command whose reply can never be sent (its reply topic is not a valid name) is skipped,
/// not fetched again for good: the command after it in the partition is answered, and the
/// offset is committed past both.
#[test]
fn a_command_whose_reply_can_never_be_sent_holds_up_no_later_command() {
    if broker_kind() != BrokerKind::Kafka {
        // A produce to an invalid topic name only times out there (as a broker that is down
        // would), which the worker rightly tries again.
        skip(
            "a_command_whose_reply_can_never_be_sent_holds_up_no_later_command",
            "tansu 0.6 never answers a produce to an invalid topic name",
        );
        return;
    }
    let rig = Rig::new("unanswerable", 1);
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let worker = worker_on(bootstrap, url, topic, name, answering(|_| async {}));
    let stats = worker.stats.clone();
    let worker = spawn_worker(&runtime, worker);
    let p = producer(bootstrap);
    send_command(codec, &p, (topic, None), "not a topic!", "lost");
    send_command(codec, &p, (topic, None), replies, "after");
    let deadline = Instant::now() + Duration::from_secs(90);
    let answered = answered_by(bootstrap, replies, 1, deadline);
    assert!(
        eventually(Duration::from_secs(90), || stats
            .unanswerable
            .load(Ordering::Relaxed)
            == 1),
        "the command was never given up"
    );
    stop_workers(&runtime, vec![worker]);
    assert_eq!(answered, BTreeSet::from(["after".to_string()]));
    assert_eq!(rig.committed(0), Offset::Offset(2), "committed past both");
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

/// An instance joining takes only the partition that moves to it. The command in flight on the
/// partition that stays is fetched once and answered once: with the eager assignor the worker
/// used, every rebalance revoked every partition, so the first instance fetched its own command
/// again and answered it twice. The command in flight on the partition that moves is answered
/// again by its new owner (at least once), and the first instance's answer then stores no offset
/// for a partition it no longer owns: it used to try, and log "cannot store the consumer
/// offset" with librdkafka's "Erroneous state", at every rebalance that caught a command in
/// flight.
#[test]
fn an_instance_joining_moves_only_its_partition_and_its_commands_in_flight_store_nothing() {
    an_instance_joins("joining", &[]);
}

/// The same with Apache Kafka 4's consumer group protocol (KIP-848), which a worker takes when
/// its settings say `group.protocol=consumer`.
#[test]
fn an_instance_joining_with_kafkas_consumer_group_protocol_moves_only_its_partition() {
    if broker_kind() == BrokerKind::Tansu {
        skip(
            "an_instance_joining_with_kafkas_consumer_group_protocol_moves_only_its_partition",
            "tansu 0.6 has no consumer group protocol (KIP-848)",
        );
        return;
    }
    an_instance_joins("kip848", &["group.protocol=consumer"]);
}

/// A first instance holds a command on each of two partitions while a second one joins; both
/// take `settings`.
fn an_instance_joins(prefix: &str, settings: &[&str]) {
    let log = warnings();
    let rig = Rig::new(prefix, 2);
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);

    // The first instance holds both commands until the second has one of them.
    let hold = Arc::new(Hold::default());
    let handled_first = Arc::new(AtomicUsize::new(0));
    let first = {
        let (hold, handled) = (hold.clone(), handled_first.clone());
        answering(move |_| {
            let _ = handled.fetch_add(1, Ordering::SeqCst);
            let hold = hold.clone();
            async move { hold.hold().await }
        })
    };
    let taken = Arc::new(Mutex::new(Vec::new()));
    let second = {
        let (hold, taken) = (hold.clone(), taken.clone());
        answering(move |command: Command| {
            taken.lock().expect("taken").push(command.saga_id);
            hold.release();
            async {}
        })
    };
    let kafka = || kafka_settings_with(bootstrap, settings);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    let first = worker_with(kafka(), url, topic, name, "first", first);
    let first_stats = first.stats.clone();
    let first = spawn_worker(&runtime, first);
    let p = producer(bootstrap);
    send_command(codec, &p, (topic, Some(0)), replies, "on-0");
    send_command(codec, &p, (topic, Some(1)), replies, "on-1");
    let wait = Duration::from_secs(120);
    assert!(
        eventually(wait, || handled_first.load(Ordering::SeqCst) == 2),
        "the first instance never fetched both commands"
    );
    let second = spawn_worker(
        &runtime,
        worker_with(kafka(), url, topic, name, "second", second),
    );
    let _ = eventually(wait, || hold.saw_release.load(Ordering::SeqCst));
    // Each instance names itself to the broker after its topic, for quotas and for the
    // group's description (`kafka-consumer-groups.sh --describe`). Checked where the broker
    // describes the group: Apache Kafka, classic protocol (tansu 0.6 does not describe groups).
    if broker_kind() == BrokerKind::Kafka && settings.is_empty() {
        let expected = vec![format!("sagaflow-worker-{topic}"); 2];
        let mut seen = Vec::new();
        assert!(
            eventually(wait, || {
                seen = rig.member_client_ids();
                seen == expected
            }),
            "the group's members are {seen:?}, not {expected:?}"
        );
    }
    // Stopped once three answers are in: each instance settles every command it handled
    // (a copy fetched again included) before it returns.
    let _ = eventually(wait, || read_all(bootstrap, replies).len() >= 3);
    stop_workers(&runtime, vec![first, second]);
    let taken = taken.lock().expect("taken").clone();
    assert_eq!(
        taken.len(),
        1,
        "the second instance did not take exactly one of the two commands: {taken:?}"
    );
    let mut answered: Vec<String> = read_all(bootstrap, replies)
        .into_iter()
        .filter_map(|r| r.key.map(|k| String::from_utf8_lossy(&k).into_owned()))
        .collect();
    answered.sort();
    let stayed = if taken[0] == "on-0" { "on-1" } else { "on-0" };
    let mut expected = vec![taken[0].clone(), taken[0].clone(), stayed.to_string()];
    expected.sort();
    assert_eq!(
        answered, expected,
        "the moved command is answered by both instances and the other one once"
    );
    assert_eq!(
        (
            handled_first.load(Ordering::SeqCst),
            first_stats.duplicates.load(Ordering::SeqCst)
        ),
        (2, 0),
        "the first instance fetched a command of the partition it kept again"
    );
    // This test's warnings only: the log is the whole binary's, and the warning names its topic.
    let warnings = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
    let stored: Vec<&str> = warnings
        .lines()
        .filter(|l| l.contains("cannot store the consumer offset") && l.contains(topic.as_str()))
        .collect();
    assert!(
        stored.is_empty(),
        "the first instance stored an offset of a partition it no longer owns:\n{stored:#?}"
    );

    for partition in [0, 1] {
        assert_eq!(
            rig.committed(partition),
            Offset::Offset(1),
            "partition {partition} is not committed past its command"
        );
    }
}

/// A worker of this version cannot join a group whose members are of an earlier one (eager
/// `range,roundrobin`, with no assignor in common with this one's `cooperative-sticky`). It says
/// so, with the ways out, and takes no command. Each way out then runs: an instance with the
/// earlier assignor rolls in while the earlier one leaves; on Apache Kafka, a worker with the
/// defaults joins once the eager group is empty, and one on the consumer group protocol
/// (KIP-848) joins a running eager group, which the broker moves to that protocol. tansu 0.6 has
/// no such protocol and keeps a group's first assignor even once the group is empty.
#[test]
fn a_worker_meeting_an_eager_group_says_how_to_upgrade() {
    let log = warnings();
    let rig = Rig::new("upgrade", 2);
    let (bootstrap, url, codec) = (&rig.bootstrap, &rig.url, &rig.codec);
    let (name, topic, replies) = (&rig.name, &rig.name, &rig.replies);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _inside = runtime.enter();
    // The sagas each instance handled, by instance.
    let took_by: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let took = |instance: &str| -> Vec<String> {
        let took = took_by.lock().expect("took");
        took.get(instance).cloned().unwrap_or_default()
    };
    let worker = |settings: &[&str], instance: &str| {
        let kafka = kafka_settings_with(bootstrap, settings);
        let (record, who) = (took_by.clone(), instance.to_string());
        let handler = answering(move |command: Command| {
            let mut took = record.lock().expect("took");
            took.entry(who.clone()).or_default().push(command.saga_id);
            async {}
        });
        spawn_worker(
            &runtime,
            worker_with(kafka, url, topic, name, instance, handler),
        )
    };
    let eager = ["partition.assignment.strategy=range,roundrobin"];
    // Each phase gets its own time.
    let phase = || Instant::now() + Duration::from_secs(90);
    let p = producer(bootstrap);
    let sent = std::cell::RefCell::new(BTreeSet::new());
    let send_to = |saga: &str, partition: i32| {
        send_command(codec, &p, (topic, Some(partition)), replies, saga);
        let _ = sent.borrow_mut().insert(saga.to_string());
    };
    let all_answered = |what: &str| {
        let sent = sent.borrow().clone();
        let answered = answered_by(bootstrap, replies, sent.len(), phase());
        let log = String::from_utf8_lossy(&log.lock().expect("log")).into_owned();
        assert_eq!(
            answered, sent,
            "{what}: not every command was answered:\n{log}"
        );
    };
    let answer = |saga: &str, instance: &str| {
        send_to(saga, 0);
        all_answered(saga);
        let took = took_by.lock().expect("took").clone();
        assert!(
            took.get(instance)
                .is_some_and(|t| t.iter().any(|s| s == saga)),
            "{saga} was not handled by {instance}: {took:?}"
        );
    };

    let earlier = worker(&eager, "earlier");
    answer("before", "earlier");
    let now = worker(&[], "now");
    let hint = "set partition.assignment.strategy=range,roundrobin in this instance's Kafka";
    let said = |what: &str| String::from_utf8_lossy(&log.lock().expect("log")).contains(what);
    assert!(
        eventually(Duration::from_secs(90), || said(hint)),
        "the new worker never said how to upgrade"
    );
    // Meanwhile the earlier instance holds every partition, and the new one takes nothing.
    send_to("stuck-0", 0);
    send_to("stuck-1", 1);
    all_answered("while the new instance cannot join");
    stop_workers(&runtime, vec![now]);
    assert_eq!(
        took("now"),
        Vec::<String>::new(),
        "an instance outside the group took a command"
    );

    // The new version with the earlier assignor joins, and the earlier one leaves.
    let rolled = worker(&eager, "rolled");
    stop_workers(&runtime, vec![earlier]);
    answer("rolled", "rolled");
    if broker_kind() == BrokerKind::Tansu {
        stop_workers(&runtime, vec![rolled]);
        skip(
            "a_worker_meeting_an_eager_group_says_how_to_upgrade, its moves to cooperative-sticky and to KIP-848",
            "tansu 0.6 keeps the protocol of a group's first member for good, and has no consumer group protocol",
        );
        return;
    }

    // The eager group empties, and a worker with the defaults joins it.
    stop_workers(&runtime, vec![rolled]);
    let after = worker(&[], "after");
    answer("after", "after");
    stop_workers(&runtime, vec![after]);

    // Eager again, then an instance on the consumer group protocol joins, the broker moves the
    // group to that protocol, and the eager instance keeps a partition until it leaves.
    let again = worker(&eager, "eager-again");
    answer("eager-again", "eager-again");
    let migrated = worker(&["group.protocol=consumer"], "migrated");
    let mut i = 0;
    let joined = eventually(Duration::from_secs(90), || {
        if !took("migrated").is_empty() {
            return true;
        }
        send_to(&format!("mixed-{i}"), i % 2);
        i += 1;
        false
    });
    assert!(
        joined,
        "the instance on the consumer group protocol never took a partition"
    );
    all_answered("a group of both protocols");
    send_to("split-0", 0);
    send_to("split-1", 1);
    all_answered("one partition each");
    let split: BTreeSet<&str> = ["eager-again", "migrated"]
        .into_iter()
        .filter(|i| took(i).iter().any(|s| s.starts_with("split-")))
        .collect();
    assert_eq!(
        split,
        BTreeSet::from(["eager-again", "migrated"]),
        "the two instances do not hold a partition each: {:?}",
        took_by.lock().expect("took")
    );
    stop_workers(&runtime, vec![again]);
    answer("migrated", "migrated");
    stop_workers(&runtime, vec![migrated]);
}
