//! Engine behaviour against a real broker: happy path, compensation order, duplicate and stale
//! replies, dead letters, a registry outage.

use std::time::Duration;

use sagaflow_avro::RegistrySettings;
use sagaflow_avro::{
    BlockingCodec, Command, EventType as E, Phase, Reply, ReplyStatus, StartSaga, Subject,
};
use sagaflow_kafka::trace;
use sagaflow_tests::{
    eventually, free_port, group, metric, producer, read_all, root, send, spawn_engine,
    spawn_participant, spawn_registry, spawn_registry_on, wait_status, Broker, EngineOpts,
    EventLog, Proc, Space, TempDir, TestBroker,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);

// Fields drop in order: processes before the broker they talk to.
struct Stack {
    _engine: Proc,
    /// None while stopped (see [`Stack::stop_registry`]).
    registry: Option<Proc>,
    /// Its address: a registry started again there finds its schemas again.
    registry_listen: String,
    registry_url: String,
    metrics_url: String,
    group: String,
    _state: TempDir,
    codec: BlockingCodec,
    space: Space,
    broker: TestBroker,
}

fn stack(name: &str) -> Stack {
    stack_env(name, &[])
}

/// A stack whose engine has `env` added to its environment.
fn stack_env(name: &str, env: &[(&str, &str)]) -> Stack {
    stack_with(Space::new(name), env)
}

/// A stack in `space` (its group and definitions), whose engine has `env` added.
fn stack_with(space: Space, env: &[(&str, &str)]) -> Stack {
    let broker = Broker::for_test();
    let registry_listen = format!("127.0.0.1:{}", free_port());
    let (registry, registry_url) = spawn_registry_on(&broker.bootstrap(), &registry_listen);
    let state = TempDir::new(&space.group);
    let group = space.group.clone();
    let (engine, metrics_url) = sagaflow_tests::spawn_engine_env(
        "engine",
        &space.engine_opts(&broker.bootstrap(), &registry_url, &state, 2),
        env,
    );
    let codec = BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
    Stack {
        broker,
        registry: Some(registry),
        registry_listen,
        registry_url,
        _engine: engine,
        metrics_url,
        group,
        _state: state,
        codec,
        space,
    }
}

impl Stack {
    /// A registry outage: the process is killed.
    fn stop_registry(&mut self) {
        drop(self.registry.take());
    }

    /// The registry back on the same address, with the schemas it had.
    fn start_registry_again(&mut self) {
        let (registry, _) = spawn_registry_on(&self.broker.bootstrap(), &self.registry_listen);
        self.registry = Some(registry);
    }

    fn start_trip(&self, saga_id: &str) {
        self.start_trip_with_notes(saga_id, "");
    }

    /// A start of the linear trip (trip@1, whose exact event sequences these tests check)
    /// whose input carries `notes` (to make it large).
    fn start_trip_with_notes(&self, saga_id: &str, notes: &str) {
        let start = StartSaga {
            request_id: format!("req-{saga_id}"),
            saga_id: saga_id.into(),
            definition: "trip".into(),
            version: Some(1),
            input_json: json!({
                "customer": {"id": "c-1", "email": "c1@example.com"},
                "amount": 120, "currency": "EUR",
                "flight": {"number": "SF1", "date": "2026-07-01"},
                "hotel": {"id": "h-1", "check_in": "2026-07-01", "nights": 2},
                "notes": notes
            })
            .to_string(),
            requested_at: 0,
        };
        let topic = format!("{}.starts", self.group);
        let value = self
            .codec
            .encode(Subject::Topic(&topic), &start)
            .expect("encode");
        send(&producer(&self.broker.bootstrap()), &topic, saga_id, &value);
    }

    fn participants(&self, hotel_failure_rate: f64) -> Vec<Proc> {
        let rate = hotel_failure_rate.to_string();
        ["payment", "flight", "hotel", "notify"]
            .iter()
            .map(|role| {
                let topic = self.space.role_topic(role);
                let mut extra = vec!["--topic", topic.as_str()];
                if *role == "hotel" {
                    extra.extend(["--failure-rate", &rate]);
                }
                spawn_participant(&self.broker.bootstrap(), &self.registry_url, role, &extra)
            })
            .collect()
    }

    fn events(&self) -> EventLog {
        EventLog::read(&self.broker.bootstrap(), &self.codec, &self.group)
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
        log
    }
}

fn assert_gapless(log: &EventLog) {
    assert!(
        log.conflicts.is_empty(),
        "conflicting events: {:?}",
        log.conflicts
    );
    for (saga, events) in &log.sagas {
        let seqs: Vec<i64> = events.keys().copied().collect();
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "{saga}: seq is not gapless from 1");
    }
}

#[test]
fn happy_path_completes_every_step_in_order() {
    // librdkafka's statistics, for sagaflow_kafka_requests_total.
    let s = stack_env("happy", &[("SAGAFLOW_KAFKA_STATISTICS_INTERVAL_MS", "500")]);
    let _participants = s.participants(0.0);
    let ids: Vec<String> = (0..10).map(|i| format!("happy-{i}")).collect();
    for id in &ids {
        s.start_trip(id);
    }
    let log = s.wait_finished(&ids);
    assert_gapless(&log);
    for id in &ids {
        let steps = log.steps(id);
        let expected: Vec<(E, Option<String>)> = std::iter::once((E::SagaStarted, None))
            .chain(
                ["payment", "flight", "hotel", "notify"]
                    .iter()
                    .flat_map(|s| {
                        [
                            (E::StepDispatched, Some(s.to_string())),
                            (E::StepSucceeded, Some(s.to_string())),
                        ]
                    }),
            )
            .chain(std::iter::once((E::SagaCompleted, None)))
            .collect();
        assert_eq!(steps, expected, "{id}");
        let completed = log.sagas[id].values().last().expect("events");
        let context: serde_json::Value =
            serde_json::from_str(completed.detail_json.as_deref().expect("context")).expect("json");
        assert_eq!(context["payment_id"], json!(format!("pay-{id}")));
        assert_eq!(context["hotel_booking_id"], json!(format!("ht-{id}")));
    }
    assert_eq!(
        metric(&s.metrics_url, "sagaflow_sagas_completed_total"),
        10.0
    );
    events_into_a_pipe_closed_early(&s);
    commands_and_replies_carry_the_sagas_trace(&s, &ids);
    every_hop_was_measured(&s);
    the_engines_requests_are_counted(&s);
    traffic_is_counted_by_kind(&s, ids.len());
}

/// The hot path's clients report the requests they sent (`statistics.interval.ms` is set): the
/// input consumer fetched, and the journal and the relay produced.
fn the_engines_requests_are_counted(s: &Stack) {
    let requests = |client: &str, request: &str| {
        metric(
            &s.metrics_url,
            &format!("sagaflow_kafka_requests_total{{client=\"{client}\",request=\"{request}\"}}"),
        )
    };
    assert!(
        eventually(Duration::from_secs(10), || requests("input", "Fetch") > 0.0
            && requests("journal", "Produce") > 0.0
            && requests("relay", "Produce") > 0.0),
        "requests not counted:\n{}",
        sagaflow_tests::http_get(&s.metrics_url)
    );
}

/// `sagaflow_broker_records_total` counts the contract's messages exactly (a start, four
/// replies, four commands and ten events per trip saga) and the engine's overhead apart.
fn traffic_is_counted_by_kind(s: &Stack, sagas: usize) {
    let records = |page: &str, kind: &str, direction: &str| {
        let part = if matches!(kind, "journal" | "changelog" | "resend" | "forward") {
            "overhead"
        } else {
            "contract"
        };
        let series = format!(
            "sagaflow_broker_records_total{{direction=\"{direction}\",kind=\"{kind}\",part=\"{part}\"}} "
        );
        page.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series}is not on /metrics:\n{page}"))
    };
    let n = sagas as f64;
    let expected = [
        ("start", "read", n),
        ("reply", "read", 4.0 * n),
        ("command", "write", 4.0 * n),
        ("event", "write", 10.0 * n),
        ("dead_letter", "write", 0.0),
        ("resend", "write", 0.0),
        ("forward", "write", 0.0),
    ];
    // Writes count when the broker acknowledges them, which the engine may read after the
    // saga's last event is already on the log.
    let mut page = String::new();
    let settled = sagaflow_tests::eventually(Duration::from_secs(30), || {
        page = sagaflow_tests::http_get(&s.metrics_url);
        expected
            .iter()
            .all(|(kind, direction, n)| records(&page, kind, direction) == *n)
    });
    assert!(settled, "contract traffic miscounted:\n{page}");
    let journal = records(&page, "journal", "write");
    let valid = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("sagaflow_journal_records_total ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .expect("sagaflow_journal_records_total");
    // Every valid decision record, plus the claims of the partitions' restores.
    assert!(
        journal > valid && valid > 0.0,
        "journal {journal}, valid {valid}"
    );
    // Bytes count keys, values and headers: a command (a saga id key, an Avro value after the
    // 5-byte Confluent header, a traceparent of 55 bytes) is more than 60 bytes, and far less
    // than 10 kB for the trip saga.
    let series =
        "sagaflow_broker_bytes_total{direction=\"write\",kind=\"command\",part=\"contract\"} ";
    let bytes = page
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{series}is not on /metrics"));
    let per_command = bytes / (4.0 * n);
    assert!(
        (60.0..10_000.0).contains(&per_command),
        "{per_command} bytes per command"
    );
}

/// Each command carries a W3C `traceparent` in the saga's trace (derived from the saga id), and
/// the worker's reply continues it with a span of its own.
fn commands_and_replies_carry_the_sagas_trace(s: &Stack, ids: &[String]) {
    let header = |r: &sagaflow_tests::Record| {
        let h = r
            .headers
            .get(trace::TRACEPARENT)
            .expect("a traceparent header");
        trace::TraceParent::parse(h).unwrap_or_else(|| panic!("not a valid traceparent: {h}"))
    };
    let commands = read_all(&s.broker.bootstrap(), &s.space.role_topic("payment"));
    let replies = read_all(&s.broker.bootstrap(), &format!("{}.replies", s.group));
    for id in ids {
        let saga_trace = trace::saga_trace_id(&s.group, id);
        let command = commands
            .iter()
            .find(|r| r.key.as_deref() == Some(id.as_bytes()))
            .unwrap_or_else(|| panic!("{id}: no payment command"));
        let sent = header(command);
        assert_eq!(
            format!("{:032x}", sent.trace_id),
            saga_trace,
            "{id}: the command's trace"
        );
        let reply = replies
            .iter()
            .filter(|r| r.key.as_deref() == Some(id.as_bytes()))
            .find(|r| {
                s.codec
                    .decode::<Reply>(r.value.as_deref().unwrap_or_default())
                    .is_ok_and(|reply| reply.step == "payment")
            })
            .unwrap_or_else(|| panic!("{id}: no payment reply"));
        let answered = header(reply);
        assert_eq!(
            answered.trace_id, sent.trace_id,
            "{id}: the reply continues the trace"
        );
        assert_ne!(
            answered.span_id, sent.span_id,
            "{id}: the reply is a span of its own"
        );
    }
}

/// Every hop of the engine's hot path has a histogram on `/metrics`, observed once for each
/// thing its counter counts: each applied journal record was acknowledged and applied, each
/// relayed output acknowledged, each applied decision timed (ignored inputs are timed too).
fn every_hop_was_measured(s: &Stack) {
    let page = sagaflow_tests::http_get(&s.metrics_url);
    let hop = |name: &str| sagaflow_kafka::hops::count(&page, name);
    let counter = |name: &str| {
        page.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} is not on /metrics"))
    };
    for (name, _) in sagaflow_runtime::Hops::NAMES {
        assert!(hop(name) > 0.0, "{name}: no observation:\n{page}");
    }
    let records = counter("sagaflow_journal_records_total");
    assert_eq!(
        hop("sagaflow_state_apply_seconds"),
        records,
        "one apply per journal record"
    );
    assert!(
        hop("sagaflow_journal_ack_seconds") >= records,
        "an acknowledgement per record"
    );
    assert_eq!(
        hop("sagaflow_relay_ack_seconds"),
        counter("sagaflow_relayed_messages_total"),
        "one acknowledgement per relayed output"
    );
    assert!(
        hop("sagaflow_decision_seconds") >= counter("sagaflow_decisions_total"),
        "every decision timed"
    );
    // A quantile reads back from the page, within the buckets' range.
    let p99 = sagaflow_kafka::hops::quantile(&page, None, "sagaflow_decision_seconds", 0.99)
        .expect("a p99");
    assert!((0.0..=10.0).contains(&p99), "decision p99 {p99}");
}

/// `sagaflow events | head`: the reader closes the pipe early, and the command ends quietly
/// instead of panicking with a backtrace. The pipe is closed before anything is written (the
/// command reads the log until it has been quiet for a second first), so every write fails.
fn events_into_a_pipe_closed_early(s: &Stack) {
    let mut child = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .args(["events", "--bootstrap", &s.broker.bootstrap()])
        .args(["--registry-url", &s.registry_url, "--group", &s.group])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sagaflow events");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait for sagaflow events");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("panicked"),
        "sagaflow events with its reader gone: {:?}\n{stderr}",
        output.status
    );
}

#[test]
fn failed_hotel_compensates_flight_then_payment() {
    let s = stack("compensate");
    let _participants = s.participants(1.0);
    let ids: Vec<String> = (0..5).map(|i| format!("comp-{i}")).collect();
    for id in &ids {
        s.start_trip(id);
    }
    let log = s.wait_finished(&ids);
    assert_gapless(&log);
    for id in &ids {
        let steps = log.steps(id);
        let tail: Vec<(E, Option<String>)> = steps[steps.len() - 6..].to_vec();
        assert_eq!(
            tail,
            vec![
                (E::StepFailed, Some("hotel".into())),
                (E::CompensationDispatched, Some("flight".into())),
                (E::CompensationSucceeded, Some("flight".into())),
                (E::CompensationDispatched, Some("payment".into())),
                (E::CompensationSucceeded, Some("payment".into())),
                (E::SagaCompensated, None),
            ],
            "{id}"
        );
        assert!(!log.types(id).contains(&E::SagaCompleted));
    }
}

fn read_commands(s: &Stack, topic: &str, n: usize) -> Vec<Command> {
    let mut commands = Vec::new();
    let ok = eventually(WAIT, || {
        commands = read_all(&s.broker.bootstrap(), topic)
            .into_iter()
            .filter_map(|r| s.codec.decode::<Command>(r.value.as_deref()?).ok())
            .filter(|c| c.reply_to == format!("{}.replies", s.group))
            .collect();
        commands.len() >= n
    });
    assert!(
        ok,
        "expected {n} command(s) on {topic}, found {}",
        commands.len()
    );
    commands
}

fn reply_to(s: &Stack, command: &Command, attempt: i32, output: serde_json::Value) {
    let reply = Reply {
        message_id: format!("test-reply-{attempt}-{}", rand_suffix()),
        saga_id: command.saga_id.clone(),
        step: command.step.clone(),
        phase: command.phase,
        attempt,
        idempotency_key: command.idempotency_key.clone(),
        status: ReplyStatus::Success,
        output_json: Some(output.to_string()),
        error: None,
        replied_at: 0,
    };
    let value = s
        .codec
        .encode(Subject::Topic(&command.reply_to), &reply)
        .expect("encode");
    send(
        &producer(&s.broker.bootstrap()),
        &command.reply_to,
        &command.saga_id,
        &value,
    );
}

fn rand_suffix() -> u32 {
    rand::random()
}

#[test]
fn duplicate_and_stale_replies_are_ignored_and_counted() {
    let s = stack("dupes");
    s.start_trip("dup-1");
    let payment = read_commands(&s, &s.space.topic("trip.payment.commands"), 1).remove(0);
    assert_eq!(
        (payment.step.as_str(), payment.phase, payment.attempt),
        ("payment", Phase::Forward, 1)
    );
    assert_eq!(payment.idempotency_key, "dup-1/payment/forward");
    assert_eq!(payment.message_id, "dup-1/payment/forward/1");

    let output = json!({"payment_id": "p-1"});
    reply_to(&s, &payment, 1, output.clone());
    // The flight command proves the first reply was applied.
    let _ = read_commands(&s, &s.space.topic("trip.flight.commands"), 1);
    reply_to(&s, &payment, 1, output.clone()); // duplicate
    reply_to(&s, &payment, 7, output); // an attempt that was never sent: stale
    let ignored = |reason: &str| {
        metric(
            &s.metrics_url,
            &format!("sagaflow_inputs_ignored_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(
        eventually(WAIT, || ignored("duplicate_reply") == 1.0
            && ignored("stale_reply") == 1.0),
        "duplicate={} stale={}",
        ignored("duplicate_reply"),
        ignored("stale_reply")
    );
    let log = s.events();
    let payment_successes = log
        .steps("dup-1")
        .iter()
        .filter(|(t, step)| *t == E::StepSucceeded && step.as_deref() == Some("payment"))
        .count();
    assert_eq!(payment_successes, 1);
    assert_eq!(
        read_commands(&s, &s.space.topic("trip.flight.commands"), 1).len(),
        1,
        "flight dispatched twice"
    );
}

/// A registry outage reaches the engine when an input comes with a schema it has not seen yet
/// (a producer's newer version): decoding it needs the registry. The input's partition stops,
/// `/health` and `sagaflow_partitions_failing` say why, nothing is dead-lettered, and once the
/// registry is back the partition restores by itself and the saga runs.
#[test]
fn a_registry_outage_stops_the_partition_it_reaches_until_the_registry_is_back() {
    let mut s = stack("registry-outage");
    let bootstrap = s.broker.bootstrap();
    let _participants = s.participants(0.0);
    // Every schema the engine needs for the trip, fetched and cached while the registry is up.
    s.start_trip("before");
    let _ = s.wait_finished(&["before".to_string()]);

    let starts = format!("{}.starts", s.group);
    let value = start_with_a_newer_schema(&s.registry_url, &starts, "newer");
    s.stop_registry();
    send(&producer(&bootstrap), &starts, "newer", &value);
    let health = s.metrics_url.replace("/metrics", "/health");
    let degraded = wait_status(&health, 503, WAIT);
    assert!(
        degraded.starts_with("degraded: 1 partition(s) stopped") && degraded.contains("registry"),
        "{degraded}"
    );
    // Several restores meet the outage (1 s, then 2 s, then 4 s apart). Between a restore and
    // the failure of the input it fetches again, the partition briefly counts as running.
    let failures = "sagaflow_partition_failures_total";
    assert!(
        eventually(WAIT, || metric(&s.metrics_url, failures) >= 3.0),
        "{failures}: {}",
        metric(&s.metrics_url, failures)
    );

    s.start_registry_again();
    let log = s.wait_finished(&["before".to_string(), "newer".to_string()]);
    assert_gapless(&log);
    assert_eq!(
        log.sagas["newer"].values().last().map(|e| e.event_type),
        Some(E::SagaCompleted)
    );
    let _ = wait_status(&health, 200, WAIT);
    assert_eq!(metric(&s.metrics_url, "sagaflow_partitions_failing"), 0.0);
    let letters = read_all(&bootstrap, &format!("{}.dlq", s.group));
    assert!(letters.is_empty(), "dead-lettered: {letters:?}");
}

/// A start of the linear trip in the Confluent wire format, written with StartSaga's schema plus
/// an optional field (a compatible newer version), registered for `topic` now.
fn start_with_a_newer_schema(registry_url: &str, topic: &str, saga_id: &str) -> Vec<u8> {
    use apache_avro::types::Value;
    use schema_registry_converter::blocking::avro::AvroEncoder;
    use schema_registry_converter::blocking::schema_registry::SrSettings;
    use schema_registry_converter::schema_registry_common::{
        SchemaType, SubjectNameStrategy, SuppliedSchema,
    };
    let mut schema: serde_json::Value =
        serde_json::from_str(<StartSaga as sagaflow_avro::Contract>::SCHEMA.text).expect("json");
    schema["fields"]
        .as_array_mut()
        .expect("fields")
        .push(json!({"name": "channel", "type": "string", "default": "web"}));
    let supplied = SuppliedSchema::new(
        Some("io.sagaflow.StartSaga".into()),
        SchemaType::Avro,
        schema.to_string(),
    );
    let input = json!({
        "customer": {"id": "c-1", "email": "c1@example.com"},
        "amount": 120, "currency": "EUR",
        "flight": {"number": "SF1", "date": "2026-07-01"},
        "hotel": {"id": "h-1", "check_in": "2026-07-01", "nights": 2}
    });
    AvroEncoder::new(SrSettings::new(registry_url.to_string()))
        .encode(
            vec![
                ("request_id", Value::String(format!("req-{saga_id}"))),
                ("saga_id", Value::String(saga_id.into())),
                ("definition", Value::String("trip".into())),
                ("version", Value::Union(1, Box::new(Value::Int(1)))),
                ("input_json", Value::String(input.to_string())),
                ("requested_at", Value::Long(0)),
                ("channel", Value::String("mobile".into())),
            ],
            &SubjectNameStrategy::TopicNameStrategyWithSchema(topic.into(), false, supplied),
        )
        .expect("encode with the newer schema")
}

#[test]
fn bad_input_goes_to_the_dead_letter_topic_and_the_engine_continues() {
    let s = stack("dlq");
    let bootstrap = s.broker.bootstrap();
    let p = producer(&bootstrap);
    // Not Avro at all.
    send(
        &p,
        &format!("{}.starts", s.group),
        "junk",
        b"definitely not avro",
    );
    // A reply for a saga that does not exist.
    let ghost = Command {
        message_id: "x".into(),
        saga_id: "no-such-saga".into(),
        definition: "trip".into(),
        version: 1,
        step: "payment".into(),
        phase: Phase::Forward,
        attempt: 1,
        idempotency_key: "no-such-saga/payment/forward/1".into(),
        command_type: "charge".into(),
        payload_json: "{}".into(),
        reply_to: format!("{}.replies", s.group),
        deadline: None,
        issued_at: 0,
    };
    reply_to(&s, &ghost, 1, json!({}));
    // A start for a definition that is not deployed.
    let start = StartSaga {
        request_id: "r".into(),
        saga_id: "undeployed-1".into(),
        definition: "nope".into(),
        version: None,
        input_json: "{}".into(),
        requested_at: 0,
    };
    let starts = format!("{}.starts", s.group);
    let value = s
        .codec
        .encode(Subject::Topic(&starts), &start)
        .expect("encode");
    send(&p, &starts, "undeployed-1", &value);

    let dlq = format!("{}.dlq", s.group);
    let mut reasons = Vec::new();
    let ok = eventually(WAIT, || {
        reasons = read_all(&bootstrap, &dlq)
            .into_iter()
            .map(|r| {
                r.headers
                    .get("sagaflow-dlq-reason")
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        reasons.len() >= 3
    });
    assert!(ok, "dead letters so far: {reasons:?}");
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["undecodable", "unknown-definition", "unknown-saga"]
    );
    let records = read_all(&bootstrap, &dlq);
    let junk = records
        .iter()
        .find(|r| r.headers["sagaflow-dlq-reason"] == "undecodable")
        .expect("undecodable letter");
    assert_eq!(
        junk.value.as_deref(),
        Some(&b"definitely not avro"[..]),
        "payload kept as is"
    );
    assert!(junk.headers["sagaflow-dlq-detail"].contains("cannot decode"));
    assert_eq!(junk.headers["sagaflow-dlq-topic"], starts);

    // The engine keeps going.
    let _participants = s.participants(0.0);
    s.start_trip("after-dlq");
    let log = s.wait_finished(&["after-dlq".to_string()]);
    assert_eq!(log.types("after-dlq").last(), Some(&E::SagaCompleted));
    assert_eq!(
        metric(
            &s.metrics_url,
            "sagaflow_dead_letters_total{reason=\"unknown-saga\"}"
        ),
        1.0
    );
}

/// Editing the YAML of a deployed version (here: removing the flight step of trip v1) used to
/// leave running sagas pointing at the wrong steps. The engine records each version's
/// fingerprint when first deployed and now refuses to start on a different body, saying what
/// to do; the restored body starts again.
#[test]
fn an_edited_definition_version_is_refused_at_start() {
    let broker = Broker::for_test();
    let (_registry, registry_url) = spawn_registry(&broker.bootstrap());
    let definitions = TempDir::new("defs");
    let trip = std::fs::read_to_string(root().join("examples/trip.yaml")).expect("trip.yaml");
    let file = definitions.path().join("trip.yaml");
    std::fs::write(&file, &trip).expect("write trip.yaml");
    let state = TempDir::new("drift");
    let opts = EngineOpts {
        bootstrap: broker.bootstrap(),
        registry_url,
        group: group("drift"),
        state_dir: state.path().to_path_buf(),
        definitions: definitions.path().to_path_buf(),
        partitions: 1,
    };
    let (mut engine, _) = spawn_engine("engine", &opts);
    assert!(engine.terminate().success(), "clean stop");

    let flight = trip.find("  - name: flight").expect("flight step");
    let hotel = trip.find("  - name: hotel").expect("hotel step");
    std::fs::write(&file, format!("{}{}", &trip[..flight], &trip[hotel..])).expect("edit");
    let mut child = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .args(sagaflow_tests::engine_args(&opts))
        .env("SAGAFLOW_REPLICATION_FACTOR", "1")
        .env("SAGAFLOW_MIN_INSYNC_REPLICAS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the engine");
    let exited = eventually(Duration::from_secs(60), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let refused = child.wait_with_output().expect("engine output");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        exited && !refused.status.success(),
        "the engine started on an edited trip@1:\n{stderr}"
    );
    assert!(
        stderr.contains("trip@1") && stderr.contains("immutable") && stderr.contains("new version"),
        "the error says what, where and how to fix it:\n{stderr}"
    );

    std::fs::write(&file, &trip).expect("restore");
    let (mut engine, _) = spawn_engine("engine", &opts);
    assert!(engine.terminate().success(), "the restored body starts");
}

/// A 700 KB start: the saga's state and its SAGA_STARTED event each hold the input, so its
/// journal record is larger than the broker's message.max.bytes. The partition used to retry
/// that record forever. Now the input is dead-lettered as too large, and the partition goes on
/// with the next start. (The engine's state limit, raised here past the broker's, would refuse
/// such an input before it is decided: see the next test.)
#[test]
fn an_input_too_large_to_journal_is_dead_lettered_and_its_partition_goes_on() {
    let s = stack_env("too-large", &[("SAGAFLOW_MAX_STATE_BYTES", "4000000")]);
    let _participants = s.participants(0.0);
    let big = "big-1";
    let next = (0..100)
        .map(|i| format!("after-big-{i}"))
        .find(|id| {
            sagaflow_runtime::partition_for(id.as_bytes(), 2)
                == sagaflow_runtime::partition_for(big.as_bytes(), 2)
        })
        .expect("an id on the same partition");
    s.start_trip_with_notes(big, &"x".repeat(700_000));
    s.start_trip(&next);
    let log = s.wait_finished(std::slice::from_ref(&next));
    assert_eq!(log.types(&next).last(), Some(&E::SagaCompleted));
    assert!(!log.sagas.contains_key(big), "the big saga never started");
    let dlq = format!("{}.dlq", s.group);
    let mut letters = Vec::new();
    assert!(
        eventually(WAIT, || {
            letters = read_all(&s.broker.bootstrap(), &dlq)
                .into_iter()
                .filter(|r| r.key.as_deref() == Some(big.as_bytes()))
                .collect();
            !letters.is_empty()
        }),
        "the big start was not dead-lettered"
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].headers["sagaflow-dlq-reason"], "too-large");
    assert!(letters[0].headers["sagaflow-dlq-detail"].contains("message.max.bytes"));
    assert!(
        metric(&s.metrics_url, "sagaflow_sagas_started_total") <= 1.0,
        "the big start was decided again and again"
    );
}

/// A start whose input is over the engine's `max-state-bytes` is refused before any decision,
/// with the limit and the key in the dead letter, and the next start goes on.
#[test]
fn a_start_over_the_state_limit_is_refused_with_the_limit_named() {
    let s = stack_env("state-limit", &[("SAGAFLOW_MAX_STATE_BYTES", "20000")]);
    let _participants = s.participants(0.0);
    s.start_trip_with_notes("huge", &"x".repeat(30_000));
    s.start_trip("small");
    let log = s.wait_finished(&["small".to_string()]);
    assert!(
        !log.sagas.contains_key("huge"),
        "the huge saga never started"
    );
    let dlq = format!("{}.dlq", s.group);
    let mut letters = Vec::new();
    assert!(
        eventually(WAIT, || {
            letters = read_all(&s.broker.bootstrap(), &dlq)
                .into_iter()
                .filter(|r| r.key.as_deref() == Some(b"huge".as_slice()))
                .collect();
            !letters.is_empty()
        }),
        "the huge start was not dead-lettered"
    );
    assert_eq!(letters[0].headers["sagaflow-dlq-reason"], "invalid-input");
    let detail = &letters[0].headers["sagaflow-dlq-detail"];
    assert!(
        detail.contains("20000") && detail.contains("max-state-bytes"),
        "{detail}"
    );
}

/// With `otlp-endpoint` set, the engine and the participants export each hop of a saga as
/// OTLP spans (decoded here by the OpenTelemetry Collector's own library), all in the saga's
/// trace and chained: a command's relay span is the parent of the participant's spans, whose
/// reply span is the parent of the engine's next input span.
#[test]
fn every_hop_is_exported_as_an_otlp_span() {
    let sink = sagaflow_tests::otlp::OtlpSink::start();
    let s = stack_env("otlp", &[("SAGAFLOW_OTLP_ENDPOINT", sink.url.as_str())]);
    let _participants: Vec<Proc> = ["payment", "flight", "hotel", "notify"]
        .iter()
        .map(|role| {
            let topic = s.space.role_topic(role);
            sagaflow_tests::spawn_participant_env(
                &s.broker.bootstrap(),
                &s.registry_url,
                role,
                &["--topic", topic.as_str()],
                &[("SAGAFLOW_OTLP_ENDPOINT", sink.url.as_str())],
            )
        })
        .collect();
    let id = "otlp-1".to_string();
    s.start_trip(&id);
    let _ = s.wait_finished(std::slice::from_ref(&id));
    let trace_id = trace::saga_trace_id(&s.group, &id);
    let names = [
        "input_wait",
        "decision",
        "journal_ack",
        "state_apply",
        "relay_ack",
        "command_wait",
        "reply_ack",
    ];
    // Spans go out in batches, up to half a second after they end.
    let mut spans = Vec::new();
    let all_there = eventually(Duration::from_secs(30), || {
        spans = sink
            .spans()
            .into_iter()
            .filter(|s| s["trace_id"] == trace_id.as_str())
            .collect();
        // Five inputs (the start and four replies), each decided and journaled; four commands
        // fetched and answered.
        let count = |name: &str| spans.iter().filter(|s| s["name"] == name).count();
        count("input_wait") >= 5
            && count("decision") >= 5
            && count("journal_ack") >= 5
            && count("state_apply") >= 5
            && count("command_wait") >= 4
            && count("reply_ack") >= 4
            && count("relay_ack") >= 4
    });
    assert!(
        all_there,
        "missing spans in trace {trace_id}: {:#?}",
        spans
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    );
    assert!(sink.refused().is_empty(), "{:?}", sink.refused());
    let by_id = |id: &serde_json::Value| spans.iter().find(|s| &s["span_id"] == id);
    let parent_name = |s: &serde_json::Value| {
        by_id(&s["parent_span_id"]).map(|p| p["name"].as_str().unwrap_or("").to_string())
    };
    for span in &spans {
        let name = span["name"].as_str().expect("a name");
        assert!(names.contains(&name), "unexpected span {span}");
        let start = span["start_ns"].as_u64().expect("start");
        let end = span["end_ns"].as_u64().expect("end");
        assert!(start > 0 && start <= end, "{span}");
        let expected_parent = match name {
            "decision" => Some("input_wait"),
            "journal_ack" | "state_apply" => Some("decision"),
            "command_wait" | "reply_ack" => Some("relay_ack"),
            _ => None,
        };
        if let Some(expected) = expected_parent {
            assert_eq!(
                parent_name(span).as_deref(),
                Some(expected),
                "parent of {span}"
            );
        }
        let service = span["service"].as_str().unwrap_or("");
        if matches!(name, "command_wait" | "reply_ack") {
            assert!(service.starts_with("sagaflow-participant-"), "{span}");
        } else {
            assert_eq!(service, "sagaflow-engine", "{span}");
        }
    }
    // A reply's input span continues the participant's reply span.
    let replies_linked = spans
        .iter()
        .filter(|s| s["name"] == "input_wait")
        .filter(|s| parent_name(s).as_deref() == Some("reply_ack"))
        .count();
    assert_eq!(replies_linked, 4, "input spans of the four replies");
    assert!(metric(&s.metrics_url, "sagaflow_otlp_spans_exported_total") > 0.0);
    assert_eq!(
        metric(&s.metrics_url, "sagaflow_otlp_spans_dropped_total"),
        0.0
    );
}
