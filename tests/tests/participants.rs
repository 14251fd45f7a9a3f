//! Pausing a participant (`sagaflow admin pause-participant`): its commands are held in the
//! engines' state, not sent, across a kill -9 and a rebalance, while other participants go on;
//! their attempt timeouts stop meanwhile; on resume they are sent in the order they were held.
//! Limiting one (`limit-participant`): never more commands in flight, nor per second, than it
//! was given.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, Command, EventType as E, RegistrySettings};
use sagaflow_runtime::partition_for;
use sagaflow_tests::{
    answer, broker_kind, broker_with_registry, client_config, command_consumer, eventually, metric,
    producer, sagaflow_bin, skip, spawn_engine, start_saga, BrokerKind, EventLog, Space, TempDir,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 2;

/// `held`'s attempt timeout is far shorter than the pause: if held time counted, every saga
/// would time out and fail.
const DEFINITIONS: [(&str, &str); 2] = [
    (
        "held.yaml",
        "
name: held
version: 1
steps:
  - name: work
    command: {topic: t.held.commands, type: work}
    timeout: 2s
",
    ),
    (
        "free.yaml",
        "
name: free
version: 1
steps:
  - name: work
    command: {topic: t.free.commands, type: work}
",
    ),
];

/// Runs `sagaflow admin ARGS` as the operator `ops-test`: (success, stdout, stderr).
fn sagaflow_admin(
    bootstrap: &str,
    registry_url: &str,
    group: &str,
    args: &[&str],
) -> (bool, String, String) {
    let out = std::process::Command::new(sagaflow_bin())
        .arg("admin")
        .args(args)
        .args(["--bootstrap", bootstrap, "--registry-url", registry_url])
        .args(["--group", group, "--actor", "ops-test"])
        .output()
        .expect("run sagaflow admin");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Has `group`, on Apache Kafka 4's consumer group protocol (KIP-848), commit offset 0 on every
/// partition of `topic` it is given, then leave.
fn commit_on_the_consumer_protocol(bootstrap: &str, topic: &str, group: &str) {
    let mut config = client_config(bootstrap);
    let _ = config
        .set("group.id", group)
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = config.create().expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let assigned = || consumer.assignment().map_or(0, |a| a.count());
    assert!(
        eventually(WAIT, || {
            let _ = consumer.poll(Duration::from_millis(100));
            assigned() > 0
        }),
        "{group} was never assigned {topic}"
    );
    let mut offsets = TopicPartitionList::new();
    for element in consumer.assignment().expect("assignment").elements() {
        offsets
            .add_partition_offset(topic, element.partition(), Offset::Offset(0))
            .expect("offset");
    }
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
}

/// Answers every command on `topics` with success, and records the saga ids it received per
/// topic, in the order they came.
fn participant(
    bootstrap: String,
    registry: String,
    topics: Vec<String>,
    received: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let codec = BlockingCodec::new(&RegistrySettings::new(registry.as_str())).expect("codec");
        let consumers: Vec<_> = topics
            .iter()
            .map(|t| (t.clone(), command_consumer(&bootstrap, t)))
            .collect();
        let p = producer(&bootstrap);
        while !stop.load(Ordering::SeqCst) {
            for (topic, consumer) in &consumers {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    if let Some(c) = m.payload().and_then(|v| codec.decode::<Command>(v).ok()) {
                        received
                            .lock()
                            .expect("lock")
                            .entry(topic.clone())
                            .or_default()
                            .push(c.saga_id.clone());
                        answer(&codec, &p, &c, Ok("{}".into()));
                    }
                }
            }
        }
    })
}

#[test]
fn a_paused_participant_gets_nothing_across_a_kill_9_and_a_rebalance_then_everything_in_order() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::bare("pausepart");
    for (file, yaml) in DEFINITIONS {
        space.define(file, yaml);
    }
    let group = space.group.clone();
    let (held_topic, free_topic) = (
        space.topic("t.held.commands"),
        space.topic("t.free.commands"),
    );
    let states: Vec<TempDir> = ["a", "b", "c"]
        .iter()
        .map(|n| TempDir::new(&format!("pausepart-{n}")))
        .collect();
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, PARTITIONS);
    let owned = |url: &str| metric(url, "sagaflow_partitions_owned");
    let (mut first, first_metrics) = spawn_engine("engine-1", &opts(&states[0]));
    assert!(eventually(WAIT, || owned(&first_metrics) == f64::from(PARTITIONS)));

    let admin = |args: &[&str]| sagaflow_admin(&bootstrap, &registry_url, &group, args);
    // A typo pauses nothing: it is refused, with the fix.
    let (ok, _, err) = admin(&["pause-participant", "no.such.commands"]);
    assert!(!ok && err.contains("no command topic"), "{err}");
    let (ok, out, err) = admin(&[
        "pause-participant",
        &held_topic,
        "--reason",
        "database migration",
    ]);
    assert!(
        ok && out.starts_with(&format!("paused {held_topic}")),
        "{out}{err}"
    );

    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = participant(
        bootstrap.clone(),
        registry_url.clone(),
        vec![held_topic.clone(), free_topic.clone()],
        received.clone(),
        stop.clone(),
    );
    let held: Vec<String> = (0..20).map(|i| format!("h-{i:02}")).collect();
    let free: Vec<String> = (0..10).map(|i| format!("f-{i:02}")).collect();
    let p = producer(&bootstrap);
    for (i, id) in held.iter().enumerate() {
        start_saga(&codec, &p, &group, "held", id, &json!({}));
        if let Some(f) = free.get(i) {
            start_saga(&codec, &p, &group, "free", f, &json!({}));
        }
    }
    let count = |ids: &[String], event: E| {
        let log = EventLog::snapshot(&bootstrap, &codec, &group);
        ids.iter()
            .filter(|id| log.types(id).contains(&event))
            .count()
    };
    // The other participant is not stalled; the paused one's commands are held.
    assert!(eventually(WAIT, || count(&free, E::SagaCompleted) == free.len()));
    assert!(eventually(WAIT, || count(&held, E::CommandHeld) == held.len()));
    let sent_to_held = || {
        received
            .lock()
            .expect("lock")
            .get(&held_topic)
            .cloned()
            .unwrap_or_default()
    };
    assert!(sent_to_held().is_empty());

    // kill -9, and the next owner restores on an empty state directory (from the changelog);
    // then a second engine joins and the partitions are shared.
    first.kill9();
    let (_second, second_metrics) = spawn_engine("engine-2", &opts(&states[1]));
    assert!(eventually(WAIT, || owned(&second_metrics) == f64::from(PARTITIONS)));
    let (_third, third_metrics) = spawn_engine("engine-3", &opts(&states[2]));
    assert!(
        eventually(WAIT, || owned(&second_metrics) >= 1.0
            && owned(&third_metrics) >= 1.0),
        "the partitions were not shared"
    );
    // Both engines know of the pause and count the held commands between them.
    let held_metric = format!("sagaflow_held_commands{{topic=\"{held_topic}\"}}");
    let paused_metric = format!("sagaflow_participant_paused{{topic=\"{held_topic}\"}}");
    assert!(eventually(WAIT, || {
        metric(&second_metrics, &held_metric) + metric(&third_metrics, &held_metric) == 20.0
            && metric(&second_metrics, &paused_metric) == 1.0
            && metric(&third_metrics, &paused_metric) == 1.0
    }));
    // Longer than the attempt timeout: nothing is sent, and nothing times out.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        sent_to_held().is_empty(),
        "sent while paused: {:?}",
        sent_to_held()
    );
    assert_eq!(count(&held, E::StepTimedOut), 0);

    // The held topic's entry of `participants`, and the whole listing.
    let listed = || {
        let (ok, out, err) = admin(&["participants", "--output", "json"]);
        assert!(ok, "{err}");
        let list: Value = serde_json::from_str(&out).expect("participants JSON");
        let entry = list
            .as_array()
            .and_then(|l| l.iter().find(|p| p["topic"] == held_topic.as_str()))
            .unwrap_or_else(|| panic!("{held_topic} is not listed: {out}"))
            .clone();
        (entry, out)
    };
    let (entry, out) = listed();
    assert_eq!(entry["paused"], true);
    assert_eq!(entry["control"]["actor"], "ops-test");
    assert_eq!(entry["control"]["reason"], "database migration");
    // The participant's group is consuming the topic; its lag is what it has not committed.
    if broker_kind() == BrokerKind::Kafka {
        let lag = &entry["lag"][format!("{held_topic}-participant")];
        assert!(lag.as_i64().is_some_and(|n| n >= 0), "{out}");
        // A group on the consumer group protocol, which Kafka does not describe, is listed by
        // its committed offsets: nothing was sent to the paused topic, so it is not behind.
        let kip848 = format!("{held_topic}-kip848");
        commit_on_the_consumer_protocol(&bootstrap, &held_topic, &kip848);
        let (entry, out) = listed();
        assert_eq!(entry["lag"][&kip848], 0, "{out}");
    } else {
        skip(
            "participant lag",
            "tansu 0.6 does not answer ListGroups; the list says the lag is unknown",
        );
        assert!(entry["lag"].is_null(), "{out}");
    }

    let (ok, out, err) = admin(&["resume-participant", &held_topic]);
    assert!(
        ok && out.starts_with(&format!("resumed {held_topic}")),
        "{out}{err}"
    );
    assert!(
        eventually(WAIT, || count(&held, E::SagaCompleted) == held.len()),
        "not every held saga completed: {:?}",
        EventLog::read(&bootstrap, &codec, &group).unfinished(&held)
    );
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("participant");

    let log = EventLog::read(&bootstrap, &codec, &group);
    for id in &held {
        let types = log.types(id);
        let n = |t: E| types.iter().filter(|x| **x == t).count();
        assert_eq!(
            (n(E::CommandHeld), n(E::CommandReleased)),
            (1, 1),
            "{id}: {types:?}"
        );
        assert_eq!(n(E::StepTimedOut), 0, "{id}: {types:?}");
    }
    // In order: the command topic is keyed by saga id like the engine's partitions, so each
    // partition's commands arrive in the order its sagas were started.
    let sent = sent_to_held();
    let mut seen = Vec::new();
    for id in &sent {
        if !seen.contains(id) {
            seen.push(id.clone());
        }
    }
    assert_eq!(seen.len(), held.len(), "sent: {sent:?}");
    for p in 0..PARTITIONS {
        let of = |ids: &[String]| -> Vec<String> {
            ids.iter()
                .filter(|id| partition_for(id.as_bytes(), PARTITIONS) == p)
                .cloned()
                .collect()
        };
        assert_eq!(of(&seen), of(&held), "partition {p}");
    }
}

/// A rollout of a new definition while a participant is paused: the engine that holds the
/// commands lacks the definition when the participant is resumed. They stay held there, and are
/// sent once an engine that has the definition restores the partition.
#[test]
fn a_held_command_whose_definition_is_missing_here_stays_held_until_it_is_deployed() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::bare("heldrollout");
    for (file, yaml) in DEFINITIONS {
        space.define(file, yaml);
    }
    let group = space.group.clone();
    let held_topic = space.topic("t.held.commands");
    let state = TempDir::new("heldrollout");
    let opts = space.engine_opts(&bootstrap, &registry_url, &state, PARTITIONS);
    let owned = |url: &str| metric(url, "sagaflow_partitions_owned");
    let spawn = |name: &str| {
        let (engine, metrics_url) = spawn_engine(name, &opts);
        assert!(eventually(WAIT, || owned(&metrics_url) == f64::from(PARTITIONS)));
        (engine, metrics_url)
    };
    let (mut engine, _) = spawn("engine-1");
    let admin = |args: &[&str]| sagaflow_admin(&bootstrap, &registry_url, &group, args);
    let (ok, out, err) = admin(&["pause-participant", &held_topic]);
    assert!(ok, "{out}{err}");

    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = participant(
        bootstrap.clone(),
        registry_url.clone(),
        vec![held_topic.clone()],
        received.clone(),
        stop.clone(),
    );
    let ids: Vec<String> = (0..4).map(|i| format!("r-{i}")).collect();
    let p = producer(&bootstrap);
    for id in &ids {
        start_saga(&codec, &p, &group, "held", id, &json!({}));
    }
    let count = |event: E| {
        let log = EventLog::snapshot(&bootstrap, &codec, &group);
        ids.iter()
            .filter(|id| log.types(id).contains(&event))
            .count()
    };
    assert!(eventually(WAIT, || count(E::CommandHeld) == ids.len()));
    assert!(engine.terminate().success(), "engine-1 stopped cleanly");

    let file = space.definitions().join("held.yaml");
    let yaml = std::fs::read_to_string(&file).expect("read held.yaml");
    std::fs::remove_file(&file).expect("remove held.yaml");
    let (mut engine, metrics_url) = spawn("without-held");
    let (ok, out, err) = admin(&["resume-participant", &held_topic]);
    assert!(ok, "{out}{err}");
    // Each release is tried, and kept: tried once per saga, not again every turn.
    let rejected = "sagaflow_dead_letters_total{reason=\"unknown-definition\"}";
    assert!(eventually(WAIT, || metric(&metrics_url, rejected) >= ids.len() as f64));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&metrics_url, rejected), ids.len() as f64);
    assert_eq!(
        metric(&metrics_url, "sagaflow_held_commands_dropped_total"),
        0.0
    );
    let sent = || {
        received
            .lock()
            .expect("lock")
            .get(&held_topic)
            .map_or(0, Vec::len)
    };
    assert_eq!(
        sent(),
        0,
        "a held command was sent by the engine without its definition"
    );
    assert!(engine.terminate().success(), "the engine stopped cleanly");

    std::fs::write(&file, yaml).expect("restore held.yaml");
    let (_engine, _) = spawn("with-held");
    assert!(
        eventually(WAIT, || count(E::SagaCompleted) == ids.len()),
        "{} of {} sagas completed",
        count(E::SagaCompleted),
        ids.len()
    );
    assert_eq!(sent(), ids.len(), "each held command was sent once");
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("participant");
}

#[test]
fn a_limited_participant_never_gets_more_in_flight_or_per_second_than_its_limits() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::bare("limitpart");
    space.define(
        "limited.yaml",
        "
name: limited
version: 1
steps:
  - name: work
    command: {topic: t.limited.commands, type: work}
    timeout: 20s
",
    );
    // One decision sends a command per item: the limit holds within a decision too.
    space.define(
        "fan.yaml",
        "
name: fan
version: 1
steps:
  - name: each
    for_each: $.items
    max_concurrency: 10
    steps:
      - name: work
        command: {topic: t.limited.commands, type: work}
        timeout: 20s
",
    );
    let group = space.group.clone();
    let topic = space.topic("t.limited.commands");
    let state = TempDir::new("limitpart");
    let opts = space.engine_opts(&bootstrap, &registry_url, &state, PARTITIONS);
    let (_engine, metrics) = spawn_engine("engine", &opts);
    assert!(eventually(WAIT, || metric(
        &metrics,
        "sagaflow_partitions_owned"
    ) == f64::from(PARTITIONS)));
    let admin = |args: &[&str]| {
        let (ok, out, err) = sagaflow_admin(&bootstrap, &registry_url, &group, args);
        assert!(ok, "sagaflow admin {args:?}: {out}{err}");
        out
    };
    let (ok, _, err) = sagaflow_admin(
        &bootstrap,
        &registry_url,
        &group,
        &["limit-participant", &topic, "--max-in-flight", "0"],
    );
    assert!(!ok && err.contains("at least 1"), "{err}");
    let (ok, _, err) = sagaflow_admin(
        &bootstrap,
        &registry_url,
        &group,
        &["limit-participant", &topic],
    );
    assert!(!ok && err.contains("--no-limits"), "{err}");
    let out = admin(&["limit-participant", &topic, "--max-in-flight", "2"]);
    assert!(out.contains("at most 2 in flight"), "{out}");

    // The participant answers each command 300 ms after it came, and counts how many it holds
    // at once; then, once told, it answers at once and notes when the engine sent each (the
    // record's CreateTime: the limit governs sends, and the fetch's jitter, hundreds of
    // milliseconds on tansu, is not the engine's).
    let slow = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let most = Arc::new(Mutex::new(0usize));
    let sends = Arc::new(Mutex::new(Vec::new()));
    let worker = {
        let (bootstrap, registry_url, topic) =
            (bootstrap.clone(), registry_url.clone(), topic.clone());
        let (slow, stop, most, sends) = (slow.clone(), stop.clone(), most.clone(), sends.clone());
        std::thread::spawn(move || {
            let codec =
                BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
            let consumer = command_consumer(&bootstrap, &topic);
            let p = producer(&bootstrap);
            let mut pending: Vec<(std::time::Instant, Command)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(10)) {
                    if let Some(c) = m.payload().and_then(|v| codec.decode::<Command>(v).ok()) {
                        if let rdkafka::message::Timestamp::CreateTime(sent) = m.timestamp() {
                            sends.lock().expect("lock").push(sent);
                        }
                        let delay = if slow.load(Ordering::SeqCst) { 300 } else { 0 };
                        pending.push((std::time::Instant::now() + Duration::from_millis(delay), c));
                        let mut most = most.lock().expect("lock");
                        *most = (*most).max(pending.len());
                    }
                }
                let now = std::time::Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    pending.into_iter().partition(|(at, _)| *at <= now);
                pending = later;
                for (_, c) in due {
                    answer(&codec, &p, &c, Ok("{}".into()));
                }
            }
        })
    };
    let p = producer(&bootstrap);
    let first: Vec<String> = (0..20).map(|i| format!("l-{i:02}")).collect();
    for id in &first {
        start_saga(&codec, &p, &group, "limited", id, &json!({}));
    }
    let completed = |ids: &[String]| {
        let log = EventLog::snapshot(&bootstrap, &codec, &group);
        ids.iter()
            .filter(|id| log.types(id).contains(&E::SagaCompleted))
            .count()
    };
    assert!(
        eventually(WAIT, || completed(&first) == first.len()),
        "{:?}",
        EventLog::read(&bootstrap, &codec, &group).unfinished(&first)
    );
    let most_at_once = *most.lock().expect("lock");
    assert!(
        (1..=2).contains(&most_at_once),
        "the participant held {most_at_once} commands at once; the limit is 2"
    );
    let log = EventLog::read(&bootstrap, &codec, &group);
    let held: Vec<&String> = first
        .iter()
        .filter(|id| log.types(id).contains(&E::CommandHeld))
        .collect();
    assert!(
        held.len() >= first.len() - 2,
        "only 2 could go at first, the rest waited: {held:?}"
    );
    let reason = log.sagas[held[0]]
        .values()
        .find(|e| e.event_type == E::CommandHeld)
        .and_then(|e| e.detail_json.clone())
        .unwrap_or_default();
    assert!(reason.contains("max_in_flight"), "{reason}");
    for id in &first {
        assert!(!log.types(id).contains(&E::StepTimedOut), "{id}");
    }
    *most.lock().expect("lock") = 0;
    let fan = vec!["fan-0".to_string()];
    start_saga(
        &codec,
        &p,
        &group,
        "fan",
        &fan[0],
        &json!({"items": [1, 2, 3, 4, 5, 6, 7, 8]}),
    );
    assert!(eventually(WAIT, || completed(&fan) == 1));
    let most_at_once = *most.lock().expect("lock");
    assert!(
        (1..=2).contains(&most_at_once),
        "one decision's 8 commands: the participant held {most_at_once} at once; the limit is 2"
    );

    // Now 10 a second and no limit in flight: 30 commands take 2 s at least (a second's worth
    // goes at once). A slower machine only takes longer.
    slow.store(false, Ordering::SeqCst);
    let out = admin(&["limit-participant", &topic, "--max-rate", "10"]);
    assert!(out.contains("at most 10/s"), "{out}");
    // The engine follows the control topic within a poll; give it a moment to read the change.
    std::thread::sleep(Duration::from_secs(1));
    sends.lock().expect("lock").clear();
    let second: Vec<String> = (0..30).map(|i| format!("r-{i:02}")).collect();
    for id in &second {
        start_saga(&codec, &p, &group, "limited", id, &json!({}));
    }
    assert!(eventually(WAIT, || completed(&second) == second.len()));
    let times = sends.lock().expect("lock").clone();
    assert_eq!(times.len(), second.len());
    let spread = times.iter().max().expect("sent") - times.iter().min().expect("sent");
    assert!(
        spread >= 1800,
        "30 commands at 10/s with a second's burst were sent within {spread} ms"
    );
    let listed = admin(&["participants"]);
    assert!(listed.contains("at most 10/s"), "{listed}");
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("participant");
}
