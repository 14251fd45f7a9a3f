//! Graph definitions on a real broker: an `any` join whose loser answers late, and a for_each
//! over 50 elements five at a time, each with the engine killed (kill -9) in the middle. The
//! parallel trip runs under kill -9 in `crash.rs` and in the fault matrix (`faults.rs`), whose
//! sagas start the latest trip, `examples/parallel-trip.yaml`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use sagaflow_avro::{BlockingCodec, Command, EventType as E, Phase, RegistrySettings, SagaEvent};
use sagaflow_definition::Definition;
use sagaflow_tests::{
    answer, command_consumer, eventually, producer, spawn_engine, spawn_registry, Broker,
    EngineOpts, EventLog, Proc, Space, TempDir, TestBroker,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);

const RACE: &str = "
name: race
version: 1
steps:
  - name: hold
    command: {topic: t.graph.commands, type: hold}
    compensation: {topic: t.graph.commands, type: release}
  - name: quote
    parallel:
      - name: fast
        steps:
          - {name: quick, command: {topic: t.graph.commands, type: quote}, compensation: {topic: t.graph.commands, type: drop}, timeout: 20s}
      - name: slow
        steps:
          - {name: late, command: {topic: t.graph.commands, type: quote}, compensation: {topic: t.graph.commands, type: drop}, timeout: 20s}
    join: any
  - name: confirm
    command: {topic: t.graph.commands, type: confirm}
";

const FAN: &str = "
name: fan
version: 1
steps:
  - name: lines
    for_each: $.items
    max_concurrency: 5
    steps:
      - name: line
        command: {topic: t.graph.commands, type: add, payload: {sku: $.item, position: $.index}}
        compensation: {topic: t.graph.commands, type: remove}
        timeout: 20s
        output: {position: $.position}
  - name: submit
    command: {topic: t.graph.commands, type: submit, payload: {lines: $.lines}}
";

/// What the participant saw.
#[derive(Debug, Default)]
struct Seen {
    /// Command ids received, per saga, with the time each was answered (None: not yet).
    commands: HashMap<String, BTreeMap<String, Option<Instant>>>,
    /// The most commands of one saga received and not yet answered at once.
    most_in_flight: usize,
    /// Forward and compensate commands by idempotency key: how many distinct attempts.
    keys: HashMap<String, HashSet<String>>,
}

struct Participant {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seen: Arc<Mutex<Seen>>,
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A participant that answers every command with a success after `delay(command)`, echoing
/// the payload as output; several commands wait at once, as with a pool of workers.
fn participant(
    bootstrap: String,
    registry: String,
    topic: String,
    delay: fn(&Command) -> Duration,
) -> Participant {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (flag, record) = (stop.clone(), seen.clone());
    let thread = std::thread::spawn(move || {
        let codec = BlockingCodec::new(&RegistrySettings::new(registry.as_str())).expect("codec");
        let consumer = command_consumer(&bootstrap, &topic);
        let p = producer(&bootstrap);
        let mut due: Vec<(Instant, Command)> = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                if let Some(c) = m.payload().and_then(|v| codec.decode::<Command>(v).ok()) {
                    let mut seen = record.lock().unwrap();
                    let saga = seen.commands.entry(c.saga_id.clone()).or_default();
                    if !saga.contains_key(&c.message_id) {
                        saga.insert(c.message_id.clone(), None);
                        let open = saga.values().filter(|a| a.is_none()).count();
                        seen.most_in_flight = seen.most_in_flight.max(open);
                        seen.keys
                            .entry(c.idempotency_key.clone())
                            .or_default()
                            .insert(c.message_id.clone());
                        due.push((Instant::now() + delay(&c), c));
                    }
                }
            }
            let now = Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(at, _)| *at <= now);
            due = later;
            for (_, c) in ready {
                answer(&codec, &p, &c, Ok(c.payload_json.clone()));
                let mut seen = record.lock().unwrap();
                if let Some(answered) = seen
                    .commands
                    .get_mut(&c.saga_id)
                    .and_then(|s| s.get_mut(&c.message_id))
                {
                    *answered = Some(now);
                }
            }
        }
    });
    Participant {
        stop,
        thread: Some(thread),
        seen,
    }
}

struct Rig {
    participant: Option<Participant>,
    engine: Proc,
    opts: EngineOpts,
    _registry: Proc,
    codec: BlockingCodec,
    _space: Space,
    _state: TempDir,
    broker: TestBroker,
}

fn rig(name: &str, delay: fn(&Command) -> Duration) -> Rig {
    let broker = Broker::for_test();
    let (registry, registry_url) = spawn_registry(&broker.bootstrap());
    let space = Space::bare(name);
    space.define("race.yaml", RACE);
    space.define("fan.yaml", FAN);
    let state = TempDir::new(name);
    let opts = space.engine_opts(&broker.bootstrap(), &registry_url, &state, 2);
    let (engine, _metrics) = spawn_engine("engine-1", &opts);
    let participant = participant(
        broker.bootstrap(),
        registry_url.clone(),
        space.topic("t.graph.commands"),
        delay,
    );
    Rig {
        participant: Some(participant),
        engine,
        opts,
        _registry: registry,
        codec: BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec"),
        _space: space,
        _state: state,
        broker,
    }
}

impl Rig {
    fn start_all(&self, definition: &str, ids: &[String], input: serde_json::Value) {
        let p = producer(&self.broker.bootstrap());
        for id in ids {
            sagaflow_tests::start_saga(&self.codec, &p, &self.opts.group, definition, id, &input);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush");
    }

    fn events(&self) -> EventLog {
        EventLog::read(&self.broker.bootstrap(), &self.codec, &self.opts.group)
    }

    /// Kills the engine once some sagas have dispatched `step` and none has ended, then starts
    /// another on the same state directory.
    fn crash_when(&mut self, ids: &[String], step: &str) {
        let mut log = EventLog::default();
        let reached = eventually(WAIT, || {
            log = self.events();
            ids.iter().any(|id| {
                log.sagas.get(id).is_some_and(|events| {
                    events.values().any(|e| {
                        e.event_type == E::StepDispatched && e.step.as_deref() == Some(step)
                    })
                })
            })
        });
        assert!(reached, "no saga reached {step}");
        assert!(
            log.finished() < ids.len(),
            "every saga ended before the crash: it proved nothing"
        );
        self.engine.kill9();
        let (engine, _metrics) = spawn_engine("engine-2", &self.opts);
        self.engine = engine;
    }

    fn wait_finished(&self, ids: &[String]) -> EventLog {
        let mut log = EventLog::default();
        let done = eventually(WAIT, || {
            log = self.events();
            log.unfinished(ids).is_empty()
        });
        assert!(
            done,
            "unfinished sagas:\n{}",
            log.unfinished(ids).join("\n")
        );
        assert!(log.conflicts.is_empty(), "conflicts: {:?}", log.conflicts);
        log
    }
}

/// The saga's events in order, checked: a gapless seq, one end, last, and compensations of
/// exactly what completed, in order (`sagaflow_core::audit`).
fn checked<'l>(log: &'l EventLog, id: &str, definition: &Definition) -> Vec<&'l SagaEvent> {
    let events: Vec<&SagaEvent> = log.sagas[id].values().collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{id}");
    let ends = events.iter().filter(|e| e.event_type.settles()).count();
    assert_eq!(ends, 1, "{id}: one end");
    assert!(events.last().unwrap().event_type.settles());
    let owned: Vec<SagaEvent> = events.iter().map(|e| (*e).clone()).collect();
    let problems = sagaflow_core::audit::compensation_problems(definition, &owned);
    assert!(problems.is_empty(), "{id}: {problems:?}");
    events
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn race_delay(c: &Command) -> Duration {
    match (c.step.as_str(), c.phase) {
        // The loser answers long after the winner, and after the saga moved on.
        ("late", Phase::Forward) => Duration::from_millis(2500),
        _ => Duration::from_millis(50),
    }
}

#[test]
fn an_any_join_compensates_its_late_loser_across_a_crash() {
    let mut r = rig("race", race_delay);
    let sagas = ids("race", 20);
    r.start_all("race", &sagas, json!({}));
    r.crash_when(&sagas, "late");
    let log = r.wait_finished(&sagas);
    let definition = Definition::parse("race.yaml", RACE).expect("valid");
    for id in &sagas {
        let events = checked(&log, id, &definition);
        assert_eq!(events.last().unwrap().event_type, E::SagaCompleted, "{id}");
        let undone: Vec<&str> = events
            .iter()
            .filter(|e| e.event_type == E::CompensationSucceeded)
            .filter_map(|e| e.step.as_deref())
            .collect();
        assert_eq!(undone, ["late"], "{id}: only the late loser is undone");
        // The late success did one thing: start its compensation.
        let late = events
            .iter()
            .position(|e| e.event_type == E::StepSucceeded && e.step.as_deref() == Some("late"))
            .unwrap_or_else(|| panic!("{id}: the late reply was never applied"));
        let next: Vec<(E, Option<&str>)> = events[late + 1..]
            .iter()
            .take(1)
            .map(|e| (e.event_type, e.step.as_deref()))
            .collect();
        assert_eq!(next, [(E::CompensationDispatched, Some("late"))], "{id}");
    }
    // The recorded inputs replay through the same definition without a divergence, from the
    // event topic itself (crash redeliveries and the late loser included).
    let out = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .arg("def")
        .arg("replay")
        .arg(r._space.definitions().join("race.yaml"))
        .args(["--events", &format!("{}.events", r.opts.group)])
        .args(["--bootstrap", &r.broker.bootstrap()])
        .args(["--registry-url", &r.opts.registry_url])
        .output()
        .expect("run sagaflow def replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("replayed 20 sagas of race: 20 the same, 0 diverge"),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = r.participant.as_ref().expect("participant").seen.clone();
    let seen = seen.lock().unwrap();
    for id in &sagas {
        let key = format!("{id}/late/compensate");
        assert_eq!(
            seen.keys.get(&key).map(HashSet::len),
            Some(1),
            "{id}: the loser was compensated by one attempt"
        );
    }
}

/// Slow enough that each saga takes seconds (ten rounds of five), so the kill finds them
/// running on either broker.
fn fan_delay(_: &Command) -> Duration {
    Duration::from_millis(400)
}

#[test]
fn a_for_each_over_50_items_runs_5_at_a_time_across_a_crash() {
    let mut r = rig("fan", fan_delay);
    let sagas = ids("fan", 3);
    let items: Vec<String> = (0..50).map(|i| format!("sku-{i}")).collect();
    r.start_all("fan", &sagas, json!({"items": items}));
    r.crash_when(&sagas, "line[5]");
    let log = r.wait_finished(&sagas);
    let definition = Definition::parse("fan.yaml", FAN).expect("valid");
    for id in &sagas {
        let events = checked(&log, id, &definition);
        let end = events.last().unwrap();
        assert_eq!(end.event_type, E::SagaCompleted, "{id}");
        let context: serde_json::Value =
            serde_json::from_str(end.detail_json.as_deref().unwrap()).unwrap();
        let lines = context["lines"].as_array().expect("results");
        assert_eq!(lines.len(), 50, "{id}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["position"], json!(i), "{id}: element {i}");
        }
        let dispatched: HashSet<&str> = events
            .iter()
            .filter(|e| e.event_type == E::StepDispatched)
            .filter_map(|e| e.step.as_deref())
            .collect();
        assert_eq!(dispatched.len(), 51, "{id}: 50 lines and the submit");
    }
    let seen = r.participant.as_ref().expect("participant").seen.clone();
    let seen = seen.lock().unwrap();
    assert!(
        seen.most_in_flight <= 5,
        "{} commands of one saga were in flight at once",
        seen.most_in_flight
    );
    assert_eq!(
        seen.most_in_flight, 5,
        "the for_each never used its 5 slots"
    );
}
