//! Durable time against a real broker: retries with backoff, timeouts, deadlines, late replies,
//! waits, external events, delayed delivery, and timers across kill -9.
//!
//! The participant here is a scripted one inside the test, so each test decides exactly which
//! attempt fails, succeeds or never answers.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use sagaflow_avro::RegistrySettings;
use sagaflow_avro::{
    BlockingCodec, Command, EventType as E, Phase, Reply, ReplyError, ReplyStatus, SagaEvent,
    Signal, StartSaga, Subject,
};
use sagaflow_tests::{
    answer, command_consumer, eventually, metric, producer, read_all, send, spawn_engine,
    spawn_registry, Broker, EngineOpts, EventLog, Proc, Space, TempDir, TestBroker,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);

const WORK: &str = "
name: work
version: 1
steps:
  - name: work
    command: {topic: t.work.commands, type: do}
    compensation: {topic: t.work.commands, type: undo}
    retry:
      max_attempts: 3
      backoff: {type: exponential, initial: 400ms, multiplier: 2, max: 2s}
      jitter: equal
      non_retryable: [FATAL]
    timeout: 8s
  - name: pause
    wait: 1500ms
  - name: finish
    command: {topic: t.work.commands, type: finish}
";

const HURRY: &str = "
name: hurry
version: 1
deadline: 2s
steps:
  - name: first
    command: {topic: t.work.commands, type: do}
    compensation: {topic: t.work.commands, type: undo}
  - name: stuck
    command: {topic: t.work.commands, type: hang}
";

const CONFIRM: &str = "
name: confirm
version: 1
steps:
  - name: ask
    await: {event: answered, correlate: $.order, timeout: 6s, on_timeout: compensate}
    output: {answer: $.answer}
";

const SLEEPER: &str = "
name: sleeper
version: 1
steps:
  - name: nap
    wait: 30s
";

const BLINK: &str = "
name: blink
version: 1
steps:
  - name: nap
    wait: 3s
";

/// Broker, registry, engine and a scripted participant, dropped in a safe order.
struct Stack {
    participant: Option<Participant>,
    engine: Proc,
    metrics_url: String,
    opts: EngineOpts,
    _registry: Proc,
    codec: BlockingCodec,
    space: Space,
    _state: TempDir,
    broker: TestBroker,
}

fn stack(name: &str, partitions: i32) -> Stack {
    let broker = Broker::for_test();
    let (registry, registry_url) = spawn_registry(&broker.bootstrap());
    let space = Space::bare(name);
    for (file, yaml) in [
        ("work.yaml", WORK),
        ("hurry.yaml", HURRY),
        ("confirm.yaml", CONFIRM),
        ("sleeper.yaml", SLEEPER),
        ("blink.yaml", BLINK),
    ] {
        space.define(file, yaml);
    }
    let state = TempDir::new(name);
    let opts = space.engine_opts(&broker.bootstrap(), &registry_url, &state, partitions);
    let (engine, metrics_url) = spawn_engine("engine", &opts);
    Stack {
        participant: None,
        engine,
        metrics_url,
        opts,
        _registry: registry,
        codec: BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec"),
        space,
        _state: state,
        broker,
    }
}

/// What the scripted participant does with one command.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Success,
    Fail(&'static str, bool),
    Silence,
}

type Script = fn(&Command) -> Answer;

struct Participant {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Stack {
    fn participant(&mut self, script: Script) {
        let stop = Arc::new(AtomicBool::new(false));
        let bootstrap = self.broker.bootstrap();
        let registry = self.opts.registry_url.clone();
        let work = self.space.topic("t.work.commands");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let codec =
                BlockingCodec::new(&RegistrySettings::new(registry.as_str())).expect("codec");
            let consumer = command_consumer(&bootstrap, &work);
            let p = producer(&bootstrap);
            while !flag.load(Ordering::SeqCst) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let Some(command) = m.payload().and_then(|v| codec.decode::<Command>(v).ok())
                else {
                    continue;
                };
                let result = match script(&command) {
                    Answer::Silence => continue,
                    Answer::Success => Ok("{}".to_string()),
                    Answer::Fail(code, retryable) => Err(ReplyError {
                        code: code.into(),
                        message: "scripted".into(),
                        retryable,
                    }),
                };
                answer(&codec, &p, &command, result);
            }
        });
        self.participant = Some(Participant {
            stop,
            thread: Some(thread),
        });
    }

    fn start(&self, definition: &str, saga_id: &str, input: serde_json::Value) {
        let topic = format!("{}.starts", self.opts.group);
        let start = StartSaga {
            request_id: saga_id.into(),
            saga_id: saga_id.into(),
            definition: definition.into(),
            version: None,
            input_json: input.to_string(),
            requested_at: 0,
        };
        let value = self
            .codec
            .encode(Subject::Topic(&topic), &start)
            .expect("encode");
        send(&producer(&self.broker.bootstrap()), &topic, saga_id, &value);
    }

    /// Starts one saga per id, through one producer (a producer per saga costs a connection).
    fn start_all(&self, definition: &str, ids: &[String]) {
        let topic = format!("{}.starts", self.opts.group);
        let p = producer(&self.broker.bootstrap());
        for id in ids {
            let start = StartSaga {
                request_id: id.clone(),
                saga_id: id.clone(),
                definition: definition.into(),
                version: None,
                input_json: "{}".into(),
                requested_at: 0,
            };
            let value = self
                .codec
                .encode(Subject::Topic(&topic), &start)
                .expect("encode");
            // A full local queue only means waiting for the broker.
            while p
                .send(BaseRecord::to(&topic).key(id).payload(&value))
                .is_err()
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush");
    }

    fn events(&self) -> EventLog {
        EventLog::read(&self.broker.bootstrap(), &self.codec, &self.opts.group)
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
        for (saga, events) in &log.sagas {
            let seqs: Vec<i64> = events.keys().copied().collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as i64).collect::<Vec<_>>(),
                "{saga}: seq not gapless"
            );
        }
        log
    }

    fn ignored(&self, reason: &str) -> f64 {
        metric(
            &self.metrics_url,
            &format!("sagaflow_inputs_ignored_total{{reason=\"{reason}\"}}"),
        )
    }
}

fn events_of<'a>(log: &'a EventLog, saga: &str) -> Vec<&'a SagaEvent> {
    log.sagas[saga].values().collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn script(command: &Command) -> Answer {
    let kind = command.saga_id.split('-').next().unwrap_or_default();
    match (kind, command.step.as_str(), command.phase, command.attempt) {
        (_, _, Phase::Compensate, _) => Answer::Success,
        ("flaky", "work", _, a) if a < 3 => Answer::Fail("BUSY", true),
        ("slow", "work", _, 1) => Answer::Silence,
        ("exhaust", "work", _, _) => Answer::Fail("BUSY", true),
        ("fatal", "work", _, _) => Answer::Fail("FATAL", true),
        ("hurry", "stuck", _, _) => Answer::Silence,
        _ => Answer::Success,
    }
}

#[test]
fn retries_backoff_timeouts_and_late_replies() {
    let mut s = stack("retries", 2);
    s.participant(script);
    let flaky = ids("flaky", 3);
    let slow = ids("slow", 3);
    let exhaust = ids("exhaust", 2);
    let fatal = ids("fatal", 2);
    let all: Vec<String> = [&flaky, &slow, &exhaust, &fatal]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for id in &all {
        s.start("work", id, json!({}));
    }
    let log = s.wait_finished(&all);
    let policy = {
        let def = sagaflow_definition::Definition::parse("work.yaml", WORK).expect("valid");
        def.steps[0].retry.clone()
    };

    // Backoff: each retry's dispatch follows the failure by a delay within the policy's bounds
    // (no upper bound is asserted on the engine's own pace beyond the policy's).
    for id in &flaky {
        let events = events_of(&log, id);
        let dispatches: Vec<&SagaEvent> = events
            .iter()
            .copied()
            .filter(|e| e.event_type == E::StepDispatched && e.step.as_deref() == Some("work"))
            .collect();
        let scheduled: Vec<&SagaEvent> = events
            .iter()
            .copied()
            .filter(|e| e.event_type == E::StepRetryScheduled)
            .collect();
        assert_eq!(dispatches.len(), 3, "{id}: three attempts");
        assert_eq!(scheduled.len(), 2, "{id}: two retries scheduled");
        for (n, retry) in scheduled.iter().enumerate() {
            let (lo, hi) = policy.delay_bounds(n as u32 + 1);
            let due = retry.due.expect("due time");
            let planned = due - retry.at;
            assert!(
                lo.as_millis() as i64 <= planned && planned <= hi.as_millis() as i64,
                "{id}: retry {n} planned {planned} ms, outside [{lo:?}, {hi:?}]"
            );
            let next = dispatches[n + 1];
            assert!(
                next.at >= due,
                "{id}: attempt {} sent at {} before its due time {due}",
                n + 2,
                next.at
            );
        }
        assert_eq!(events.last().map(|e| e.event_type), Some(E::SagaCompleted));
    }

    // Timeout, retry, success; then the wait step lasted at least its 1.5 s. The step's timeout
    // (8 s) is far above any reply's time, so that only the silent first attempt times out, also
    // on a loaded machine: with 1.5 s, both retries of a slow-* saga once timed out on tansu
    // during a CI run, and it ended in an incident.
    for id in &slow {
        let events = events_of(&log, id);
        let types: Vec<E> = events.iter().map(|e| e.event_type).collect();
        assert!(types.contains(&E::StepTimedOut), "{id}: {types:?}");
        assert_eq!(types.last(), Some(&E::SagaCompleted), "{id}");
        let at = |t: E| events.iter().find(|e| e.event_type == t).map(|e| e.at);
        let (started, ended) = (at(E::WaitStarted).unwrap(), at(E::WaitEnded).unwrap());
        assert!(
            ended - started >= 1_500,
            "{id}: waited {} ms",
            ended - started
        );
        let dispatched = at(E::StepDispatched).unwrap();
        let timed_out = at(E::StepTimedOut).unwrap();
        assert!(timed_out - dispatched >= 8_000, "{id}: timed out early");
    }

    // Retries exhausted: compensation (the last attempt's effect is unknown, so it is undone).
    for id in &exhaust {
        let types: Vec<E> = events_of(&log, id).iter().map(|e| e.event_type).collect();
        assert_eq!(
            types
                .iter()
                .filter(|t| **t == E::StepRetryScheduled)
                .count(),
            2,
            "{id}"
        );
        assert_eq!(types.last(), Some(&E::SagaCompensated), "{id}: {types:?}");
    }

    // A non-retryable code: one attempt, no retry.
    for id in &fatal {
        let types: Vec<E> = events_of(&log, id).iter().map(|e| e.event_type).collect();
        assert!(!types.contains(&E::StepRetryScheduled), "{id}: {types:?}");
        assert_eq!(types.last(), Some(&E::SagaCompensated), "{id}");
    }

    // Late replies: answer the timed-out first attempts now; they are ignored and counted.
    let p = producer(&s.broker.bootstrap());
    let replies = format!("{}.replies", s.opts.group);
    for id in &slow {
        let reply = Reply {
            message_id: format!("late/{id}"),
            saga_id: id.clone(),
            step: "work".into(),
            phase: Phase::Forward,
            attempt: 1,
            idempotency_key: format!("{id}/work/forward"),
            status: ReplyStatus::Success,
            output_json: Some("{}".into()),
            error: None,
            replied_at: 0,
        };
        let value = s
            .codec
            .encode(Subject::Topic(&replies), &reply)
            .expect("encode");
        send(&p, &replies, id, &value);
    }
    assert!(
        eventually(WAIT, || s.ignored("late_reply") >= slow.len() as f64),
        "late replies counted: {}",
        s.ignored("late_reply")
    );
    let after = s.events();
    for id in &slow {
        assert_eq!(
            after.sagas[id].len(),
            log.sagas[id].len(),
            "{id}: a late reply changed the saga"
        );
    }
}

#[test]
fn the_saga_deadline_compensates() {
    let mut s = stack("deadline", 2);
    s.participant(script);
    let hurry = ids("hurry", 3);
    for id in &hurry {
        s.start("hurry", id, json!({}));
    }
    let log = s.wait_finished(&hurry);
    for id in &hurry {
        let events = events_of(&log, id);
        let types: Vec<E> = events.iter().map(|e| e.event_type).collect();
        assert!(types.contains(&E::SagaDeadlineExceeded), "{id}: {types:?}");
        let deadline = events
            .iter()
            .find(|e| e.event_type == E::SagaDeadlineExceeded)
            .unwrap();
        assert!(deadline.at - events[0].at >= 2_000, "{id}: deadline early");
        let undone: Vec<Option<String>> = events
            .iter()
            .filter(|e| e.event_type == E::CompensationSucceeded)
            .map(|e| e.step.clone())
            .collect();
        // The stuck step has no compensation; the first one is undone.
        assert_eq!(undone, [Some("first".to_string())], "{id}");
        assert_eq!(types.last(), Some(&E::SagaCompensated), "{id}");
    }
}

fn signal(s: &Stack, order: &str, signal_id: &str, answer: &str, ttl_ms: Option<i64>) {
    let topic = format!("{}.signals", s.opts.group);
    let signal = Signal {
        signal_id: signal_id.into(),
        event: "answered".into(),
        correlation: order.into(),
        payload_json: Some(json!({"answer": answer}).to_string()),
        sent_at: 0,
        ttl_ms,
    };
    let value = s
        .codec
        .encode(Subject::Topic(&topic), &signal)
        .expect("encode");
    send(&producer(&s.broker.bootstrap()), &topic, order, &value);
}

#[test]
fn external_events_before_after_and_never() {
    let s = stack("await", 4);
    // Before: the signal waits in the buffer until the saga reaches its await.
    signal(&s, "order-before", "sig-before", "early", None);
    assert!(
        eventually(WAIT, || metric(
            &s.metrics_url,
            "sagaflow_signals_buffered_total"
        ) >= 1.0),
        "the early signal was not buffered"
    );
    s.start("confirm", "c-before", json!({"order": "order-before"}));
    // After: the saga waits first.
    s.start("confirm", "c-after", json!({"order": "order-after"}));
    assert!(eventually(WAIT, || s
        .events()
        .types("c-after")
        .contains(&E::AwaitStarted)));
    signal(&s, "order-after", "sig-after", "late", None);
    // Never: the await times out and the saga compensates.
    s.start("confirm", "c-never", json!({"order": "order-never"}));
    // A signal nobody awaits is dead-lettered when its time to live runs out.
    signal(&s, "order-nobody", "sig-nobody", "lost", Some(1_000));
    // A signal whose payload is not a JSON object is dead-lettered on arrival.
    {
        let topic = format!("{}.signals", s.opts.group);
        let bad = Signal {
            signal_id: "sig-bad".into(),
            event: "answered".into(),
            correlation: "order-bad".into(),
            payload_json: Some("[1, 2]".into()),
            sent_at: 0,
            ttl_ms: None,
        };
        let value = s
            .codec
            .encode(Subject::Topic(&topic), &bad)
            .expect("encode");
        send(
            &producer(&s.broker.bootstrap()),
            &topic,
            "order-bad",
            &value,
        );
    }

    let all = ids("c", 0)
        .into_iter()
        .chain(["c-before", "c-after", "c-never"].map(String::from))
        .collect::<Vec<_>>();
    let log = s.wait_finished(&all);
    let answer = |id: &str| {
        let last = log.sagas[id].values().last().unwrap();
        assert_eq!(last.event_type, E::SagaCompleted, "{id}");
        let context: serde_json::Value =
            serde_json::from_str(last.detail_json.as_deref().unwrap()).unwrap();
        context["answer"].clone()
    };
    assert_eq!(answer("c-before"), json!("early"));
    assert_eq!(answer("c-after"), json!("late"));
    let never: Vec<E> = log.types("c-never");
    assert!(never.contains(&E::AwaitTimedOut), "{never:?}");
    assert_eq!(never.last(), Some(&E::SagaCompensated));

    let dlq = format!("{}.dlq", s.opts.group);
    let mut expired = Vec::new();
    assert!(
        eventually(WAIT, || {
            expired = read_all(&s.broker.bootstrap(), &dlq)
                .into_iter()
                .filter(|r| {
                    r.headers.get("sagaflow-dlq-reason").map(String::as_str)
                        == Some("signal-expired")
                })
                .collect();
            !expired.is_empty()
        }),
        "the unclaimed signal never reached the DLQ"
    );
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].key.as_deref(), Some(&b"order-nobody"[..]));
    let invalid: Vec<_> = read_all(&s.broker.bootstrap(), &dlq)
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"order-bad"[..]))
        .collect();
    assert_eq!(
        invalid.len(),
        1,
        "the signal with a bad payload was not dead-lettered"
    );
    assert_eq!(
        invalid[0]
            .headers
            .get("sagaflow-dlq-reason")
            .map(String::as_str),
        Some("invalid-input")
    );

    // A stale subscription (as a SUBSCRIBE delivered twice after a crash would leave): the
    // finished saga c-after awaits "order-dup" as far as the correlation owner knows. A signal
    // for it reaches c-after, which no longer awaits, and must come back rather than be lost:
    // the next saga that awaits "order-dup" gets it. The value lives on another partition than
    // c-after, so the signal goes there and back through the correlations topic.
    let dup = (0..100)
        .map(|i| format!("order-dup-{i}"))
        .find(|v| {
            sagaflow_runtime::partition_for(v.as_bytes(), 4)
                != sagaflow_runtime::partition_for(b"c-after", 4)
        })
        .expect("a value on another partition");
    let subscribe = sagaflow_avro::Correlation {
        kind: sagaflow_avro::CorrelationKind::Subscribe,
        event: "answered".into(),
        correlation: dup.clone(),
        saga_id: "c-after".into(),
        step: "ask".into(),
        signal: None,
    };
    let topic = format!("{}.correlations", s.opts.group);
    let value = s
        .codec
        .encode(Subject::Topic(&topic), &subscribe)
        .expect("encode");
    send(&producer(&s.broker.bootstrap()), &topic, &dup, &value);
    signal(&s, &dup, "sig-dup", "kept", None);
    assert!(
        eventually(WAIT, || s.ignored("stale_signal") >= 1.0),
        "the stale subscriber never saw the signal"
    );
    s.start("confirm", "c-dup", json!({"order": dup}));
    let log = s.wait_finished(&["c-dup".to_string()]);
    let last = log.sagas["c-dup"].values().last().unwrap();
    assert_eq!(
        last.event_type,
        E::SagaCompleted,
        "the returned signal was lost"
    );

    // A copy of a signal that was already delivered (a producer's retry, or a forward that the
    // relay sends again after a crash) is recognised by its id after the delivery too, not only
    // while it is buffered: the next saga that awaits the value gets the new signal, not the
    // copy.
    signal(&s, "order-after", "sig-after", "late", None);
    assert!(
        eventually(WAIT, || s.ignored("duplicate_signal") >= 1.0),
        "the copy of a delivered signal was not recognised"
    );
    signal(&s, "order-after", "sig-again", "fresh", None);
    s.start("confirm", "c-again", json!({"order": "order-after"}));
    let log = s.wait_finished(&["c-again".to_string()]);
    let last = log.sagas["c-again"].values().last().unwrap();
    assert_eq!(last.event_type, E::SagaCompleted);
    let context: serde_json::Value =
        serde_json::from_str(last.detail_json.as_deref().unwrap()).unwrap();
    assert_eq!(
        context["answer"],
        json!("fresh"),
        "the copy of an applied signal was delivered again"
    );
}

/// A rollout of a new definition: an engine that lacks it restores a partition with a saga of
/// it asleep. The saga's timer comes due there and cannot be decided; it is kept, and fires
/// once an engine with the definition restores the partition.
#[test]
fn a_timer_that_comes_due_where_its_definition_is_missing_fires_once_it_is_deployed() {
    let mut s = stack("undecidable", 1);
    s.start("blink", "blink-1", json!({}));
    assert!(
        eventually(WAIT, || s.events().sagas.contains_key("blink-1")),
        "the saga did not start"
    );
    assert!(s.engine.terminate().success(), "the engine stopped cleanly");
    let file = s.space.definitions().join("blink.yaml");
    let yaml = std::fs::read_to_string(&file).expect("read blink.yaml");
    std::fs::remove_file(&file).expect("remove blink.yaml");
    let (engine, metrics_url) = spawn_engine("without-blink", &s.opts);
    (s.engine, s.metrics_url) = (engine, metrics_url);
    let rejected = "sagaflow_dead_letters_total{reason=\"unknown-definition\"}";
    assert!(
        eventually(WAIT, || metric(&s.metrics_url, rejected) >= 1.0),
        "the timer never came due on the engine without the definition"
    );
    assert!(s.engine.terminate().success(), "the engine stopped cleanly");
    std::fs::write(&file, yaml).expect("restore blink.yaml");
    let (engine, metrics_url) = spawn_engine("with-blink", &s.opts);
    (s.engine, s.metrics_url) = (engine, metrics_url);
    let log = s.wait_finished(&["blink-1".to_string()]);
    assert_eq!(
        events_of(&log, "blink-1").last().map(|e| e.event_type),
        Some(E::SagaCompleted)
    );
}

#[test]
fn delayed_delivery_survives_a_kill_9() {
    let mut s = stack("delay", 2);
    let target = format!("{}.delayed-out", s.opts.group);
    sagaflow_tests::create_topic(&s.broker.bootstrap(), &target, 2);
    let topic = format!("{}.delay", s.opts.group);
    let p = producer(&s.broker.bootstrap());
    let n = 200;
    let due = now_ms() + 6_000;
    for i in 0..n {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sagaflow-delay-topic",
                value: Some(target.as_bytes()),
            })
            .insert(Header {
                key: "sagaflow-delay-until",
                value: Some(due.to_string().as_bytes()),
            })
            .insert(Header {
                key: "app-header",
                value: Some(format!("h{i}").as_bytes()),
            });
        p.send(
            BaseRecord::to(&topic)
                .key(&format!("k{i}"))
                .payload(&format!("v{i}"))
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    }
    // A request for a topic that does not exist is dead-lettered at once, not held forever.
    let missing = format!("{}.no-such-topic", s.opts.group);
    p.send(
        BaseRecord::to(&topic).key("lost").payload("x").headers(
            OwnedHeaders::new()
                .insert(Header {
                    key: "sagaflow-delay-topic",
                    value: Some(missing.as_bytes()),
                })
                .insert(Header {
                    key: "sagaflow-delay-until",
                    value: Some(due.to_string().as_bytes()),
                }),
        ),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("flush");
    assert!(
        eventually(WAIT, || metric(
            &s.metrics_url,
            "sagaflow_delayed_scheduled_total"
        ) >= f64::from(n)),
        "the engine did not accept every delayed record"
    );
    s.engine.kill9();
    let (engine, metrics_url) = spawn_engine("engine-2", &s.opts);
    s.engine = engine;
    s.metrics_url = metrics_url;

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut records = Vec::new();
    assert!(
        eventually(WAIT, || {
            records = read_all(&s.broker.bootstrap(), &target);
            seen.clear();
            for r in &records {
                *seen
                    .entry(r.headers.get("sagaflow-id").cloned().unwrap_or_default())
                    .or_default() += 1;
            }
            seen.len() == n as usize
        }),
        "delivered {} of {n} delayed records",
        seen.len()
    );
    for r in &records {
        // Never early: the relay produced it (its create time) at or after its due time.
        assert!(
            r.timestamp.is_some_and(|t| t >= due),
            "delivered at {:?}, before its due time {due}",
            r.timestamp
        );
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        let i = &key[1..];
        assert_eq!(
            r.value.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "{key}: value changed"
        );
        assert_eq!(
            r.headers.get("app-header").map(String::as_str),
            Some(&*format!("h{i}"))
        );
        assert_eq!(
            r.headers.get("sagaflow-delay-until").map(String::as_str),
            Some(&*due.to_string())
        );
    }
    let dead: Vec<_> = read_all(&s.broker.bootstrap(), &format!("{}.dlq", s.opts.group))
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"lost"[..]))
        .collect();
    // At least once, like every output: copies after the kill carry the same id.
    let ids: HashSet<Option<&String>> = dead.iter().map(|r| r.headers.get("sagaflow-id")).collect();
    assert_eq!(
        (ids.len(), dead.is_empty()),
        (1, false),
        "the request for a missing topic was not dead-lettered once"
    );
    assert_eq!(
        dead[0]
            .headers
            .get("sagaflow-dlq-reason")
            .map(String::as_str),
        Some("invalid-delay")
    );
    let keys: HashSet<&[u8]> = records.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(keys.len(), n as usize, "every key delivered");
    let redelivered: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "delayed delivery across kill -9: {n} records, {redelivered} redelivered copies (same sagaflow-id)"
    );
}

#[test]
fn kill_9_with_ten_thousand_pending_timers_fires_each_once() {
    let mut s = stack("timers", 4);
    let n = 10_000;
    let sleepers = ids("sleeper", n);
    s.start_all("sleeper", &sleepers);
    assert!(
        eventually(WAIT, || metric(
            &s.metrics_url,
            "sagaflow_timers_scheduled_total"
        ) >= n as f64),
        "only {} timers scheduled",
        metric(&s.metrics_url, "sagaflow_timers_scheduled_total")
    );
    // Events are relayed only after their journal record is committed: once every saga's
    // WAIT_STARTED is in the log, all n timers are durable and pending.
    assert!(
        eventually(WAIT, || {
            let log = s.events();
            sleepers
                .iter()
                .all(|id| log.types(id).contains(&E::WaitStarted))
        }),
        "not every wait started"
    );
    let fired_before = metric(&s.metrics_url, "sagaflow_timers_fired_total");
    s.engine.kill9();
    let killed_at = now_ms();
    eprintln!("killed with {n} timers scheduled, {fired_before} fired");
    let (engine, metrics_url) = spawn_engine("engine-2", &s.opts);
    s.engine = engine;
    s.metrics_url = metrics_url;

    let log = s.wait_finished(&sleepers);
    let pending_at_kill = fired_once_each(&log, &sleepers, killed_at);
    eprintln!(
        "{pending_at_kill} of {n} timers were pending at the kill and fired after the restart"
    );
    assert!(
        pending_at_kill > n / 2,
        "the kill should hit pending timers: only {pending_at_kill} fired after it"
    );
}

/// Checks that every sleeper's wait ended exactly once, never before its due time, and that the
/// saga then completed; returns how many waits ended after `since`.
fn fired_once_each(log: &EventLog, sleepers: &[String], since: i64) -> usize {
    let mut after = 0;
    for id in sleepers {
        let events = events_of(log, id);
        let ended: Vec<&&SagaEvent> = events
            .iter()
            .filter(|e| e.event_type == E::WaitEnded)
            .collect();
        assert_eq!(ended.len(), 1, "{id}: the wait ended {} times", ended.len());
        let started = events
            .iter()
            .find(|e| e.event_type == E::WaitStarted)
            .expect("wait started");
        assert!(
            ended[0].at >= started.due.expect("due"),
            "{id}: fired before its due time"
        );
        if ended[0].at > since {
            after += 1;
        }
        assert_eq!(events.last().map(|e| e.event_type), Some(E::SagaCompleted));
    }
    after
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Timers move with their partitions in a rebalance. Two engines share the partitions when the
/// timers are scheduled; then one stops cleanly, and the group hands its partitions, pending timers
/// included, to the other (which also restores its own, as rebalances are eager). Every timer
/// fires exactly once and never early.
#[test]
fn timers_move_with_their_partitions_in_a_rebalance() {
    let mut s = stack("moving", 4);
    let state_b = TempDir::new("moving-b");
    let opts_b = s.opts.on_state_dir(&state_b);
    let (mut b, metrics_b) = spawn_engine("engine-b", &opts_b);
    let owned = |url: &str| metric(url, "sagaflow_partitions_owned");
    // Both engines own partitions before any timer exists, or nothing moves.
    assert!(
        eventually(WAIT, || owned(&s.metrics_url) >= 1.0
            && owned(&metrics_b) >= 1.0),
        "partitions were not shared: a={} b={}",
        owned(&s.metrics_url),
        owned(&metrics_b)
    );
    let n = 1_000;
    let sleepers = ids("mover", n);
    s.start_all("sleeper", &sleepers);
    assert!(
        eventually(WAIT, || {
            let log = s.events();
            sleepers
                .iter()
                .all(|id| log.types(id).contains(&E::WaitStarted))
        }),
        "not every wait started"
    );
    let fired_by_a = metric(&s.metrics_url, "sagaflow_timers_fired_total");
    let scheduled_by_a = metric(&s.metrics_url, "sagaflow_timers_scheduled_total");
    assert!(
        s.engine.terminate().success(),
        "the first engine did not stop cleanly"
    );
    let stopped_at = now_ms();
    eprintln!("first engine stopped: it scheduled {scheduled_by_a} timers and fired {fired_by_a}");

    let log = s.wait_finished(&sleepers);
    let after_stop = fired_once_each(&log, &sleepers, stopped_at);
    let fired_by_b = metric(&metrics_b, "sagaflow_timers_fired_total");
    eprintln!(
        "{after_stop} of {n} timers fired after the stop; the second engine fired {fired_by_b}"
    );
    assert!(
        fired_by_a < scheduled_by_a,
        "the first engine held no pending timer when it stopped"
    );
    // The second engine scheduled n - scheduled_by_a timers itself; firing more proves some
    // moved to it.
    assert!(
        fired_by_b > n as f64 - scheduled_by_a,
        "no timer of the first engine fired on the second"
    );
    // A timer fired by both engines would push the sum past n (by the time it stopped, the
    // first engine can only have fired more than `fired_by_a`, never fewer).
    assert!(
        fired_by_a + fired_by_b <= n as f64,
        "timers fired twice across the engines: {fired_by_a} + {fired_by_b} > {n}"
    );
    assert_eq!(
        owned(&metrics_b),
        4.0,
        "the second engine should own every partition"
    );
    let _ = b.terminate();
}
