//! Crash tests (G1, G2): kill -9 of engines, and of the broker, with sagas in flight.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sagaflow_avro::RegistrySettings;
use sagaflow_avro::{BlockingCodec, EventType as E, StartSaga, Subject};
use sagaflow_tests::{
    eventually, group, producer, root, spawn_engine, spawn_participant, spawn_registry, Broker,
    EngineOpts, EventLog, Proc, TempDir,
};

use serde_json::json;

const WAIT: Duration = Duration::from_secs(600);

fn trip_start(id: &str) -> StartSaga {
    StartSaga {
        request_id: id.to_string(),
        saga_id: id.to_string(),
        definition: "trip".into(),
        version: None,
        input_json: json!({
            "customer": {"id": id, "email": "x@example.com"}, "amount": 10, "currency": "EUR",
            "flight": {"number": "SF9", "date": "2026-07-01"},
            "hotel": {"id": "h", "check_in": "2026-07-01", "nights": 1}
        })
        .to_string(),
        requested_at: 0,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Proves each kill hit running sagas: some saga started before it and ended after it.
fn assert_in_flight_at(log: &EventLog, kills: &[i64]) {
    for kill in kills {
        let spanning = log
            .sagas
            .values()
            .filter(|events| {
                let first = events.values().next().map_or(i64::MAX, |e| e.at);
                let last = events.values().last().map_or(i64::MIN, |e| e.at);
                first < *kill && *kill < last
            })
            .count();
        eprintln!("{spanning} sagas were in flight at the kill at {kill}");
        assert!(
            spanning > 0,
            "no saga was in flight at the kill at {kill}: the test proved nothing"
        );
    }
}

fn owns_all(metrics_url: &str, partitions: i32) -> bool {
    sagaflow_tests::metric(metrics_url, "sagaflow_partitions_owned") >= f64::from(partitions)
}

/// Streams start requests at `per_second` from a background thread, one producer throughout so
/// the rate is steady.
fn stream_trips(
    bootstrap: String,
    registry_url: String,
    group: String,
    ids: Vec<String>,
    per_second: u64,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let codec =
            BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
        let topic = format!("{group}.starts");
        let p = producer(&bootstrap);
        let pause = Duration::from_millis(1000 / per_second.max(1));
        for id in &ids {
            let value = codec
                .encode(Subject::Topic(&topic), &trip_start(id))
                .expect("encode");
            p.send(
                rdkafka::producer::BaseRecord::to(&topic)
                    .key(id)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .expect("enqueue");
            std::thread::sleep(pause);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush");
    })
}

/// Whether a kill now hits sagas in flight. The engine must have started sagas itself (it is
/// working), and the event log must show sagas started and not ended: only journaled decisions
/// reach the log, so sagas the engine holds only in memory prove nothing. The snapshot is quick,
/// so most of those sagas are still running when the caller kills right after.
fn in_flight(metrics_url: &str, bootstrap: &str, codec: &BlockingCodec, group: &str) -> bool {
    sagaflow_tests::metric(metrics_url, "sagaflow_sagas_started_total") >= 5.0 && {
        let log = EventLog::snapshot(bootstrap, codec, group);
        log.sagas.len() - log.finished() >= 10
    }
}

fn participants(bootstrap: &str, registry: &str, effects: &std::path::Path) -> Vec<Proc> {
    let log = effects.display().to_string();
    ["payment", "flight", "hotel", "notify"]
        .iter()
        .map(|role| {
            let mut extra = vec![
                "--instances",
                "2",
                "--latency-ms",
                "20..120",
                "--effects-log",
                &log,
            ];
            if *role == "hotel" {
                extra.extend(["--failure-rate", "0.3"]);
            }
            spawn_participant(bootstrap, registry, role, &extra)
        })
        .collect()
}

/// Every saga has exactly one terminal event, a gapless seq, no conflicting events, and each
/// compensation was applied exactly once by the participants.
fn check_invariants(log: &EventLog, ids: &[String], effects: &std::path::Path) {
    assert!(
        log.conflicts.is_empty(),
        "conflicting events: {:?}",
        &log.conflicts[..log.conflicts.len().min(5)]
    );
    let mut compensated = 0;
    for id in ids {
        let events = log
            .sagas
            .get(id)
            .unwrap_or_else(|| panic!("{id}: no events"));
        let seqs: Vec<i64> = events.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "{id}: seq not gapless"
        );
        let terminals: Vec<E> = events
            .values()
            .map(|e| e.event_type)
            .filter(|t| sagaflow_tests::is_terminal(*t))
            .collect();
        assert_eq!(terminals.len(), 1, "{id}: terminal events {terminals:?}");
        assert_eq!(
            events.values().last().map(|e| e.event_type),
            Some(terminals[0]),
            "{id}: events after the terminal one"
        );
        if terminals[0] == E::SagaCompensated {
            compensated += 1;
            let comps: Vec<String> = events
                .values()
                .filter(|e| e.event_type == E::CompensationSucceeded)
                .filter_map(|e| e.step.clone())
                .collect();
            assert_eq!(comps, ["flight", "payment"], "{id}: compensation order");
        }
    }
    assert!(
        compensated > 0,
        "no saga compensated: the test did not exercise compensation"
    );

    // Side effects as the participants applied them (deduplicated by idempotency key).
    let text = std::fs::read_to_string(effects).expect("effects log");
    let mut applied: HashMap<(String, String, String), usize> = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("effects line");
        let key = (
            v["saga_id"].as_str().unwrap_or_default().to_string(),
            v["step"].as_str().unwrap_or_default().to_string(),
            v["phase"].as_str().unwrap_or_default().to_string(),
        );
        *applied.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = applied.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "effects applied more than once: {twice:?}"
    );
    let compensations = applied
        .keys()
        .filter(|(_, _, phase)| phase == "compensate")
        .count();
    assert_eq!(
        compensations,
        2 * compensated,
        "each compensated saga undoes flight and payment once"
    );
}

/// Waits until every saga of `ids` has finished, then reads the event log once more after a pause,
/// so a late duplicate (a redelivered output) has the chance to show up before it is judged.
fn wait_finished(bootstrap: &str, codec: &BlockingCodec, group: &str, ids: &[String]) -> EventLog {
    let mut log = EventLog::default();
    let started = Instant::now();
    let done = eventually(WAIT, || {
        log = EventLog::read(bootstrap, codec, group);
        log.finished() == ids.len()
    });
    assert!(
        done,
        "only {}/{} sagas finished after {:?}; unfinished:\n{}",
        log.finished(),
        ids.len(),
        started.elapsed(),
        log.unfinished(ids)
            .into_iter()
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::thread::sleep(Duration::from_secs(2));
    let log = EventLog::read(bootstrap, codec, group);
    eprintln!(
        "event log: {} sagas, {} redelivered copies",
        log.sagas.len(),
        log.redelivered
    );
    log
}

/// One engine's surroundings: broker, registry, state and effects directories, engine options.
/// Fields drop in order, so the broker stops last.
struct Rig {
    _registry: Proc,
    registry_url: String,
    codec: BlockingCodec,
    opts: EngineOpts,
    effects: std::path::PathBuf,
    _work: TempDir,
    _state: TempDir,
    broker: Broker,
}

fn rig(name: &str) -> Rig {
    let broker = Broker::start();
    let (registry, registry_url) = spawn_registry(&broker.bootstrap());
    let state = TempDir::new(name);
    let work = TempDir::new(&format!("{name}-effects"));
    Rig {
        _registry: registry,
        codec: BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec"),
        opts: EngineOpts {
            bootstrap: broker.bootstrap(),
            registry_url: registry_url.clone(),
            group: group(name),
            state_dir: state.path().to_path_buf(),
            definitions: root().join("examples"),
            partitions: 4,
        },
        registry_url,
        effects: work.path().join("effects.jsonl"),
        _work: work,
        _state: state,
        broker,
    }
}

#[test]
fn kill_9_with_sagas_in_flight_then_restart_loses_and_repeats_nothing() {
    let r = rig("kill9");
    let (bootstrap, registry_url, codec, effects, opts) = (
        r.broker.bootstrap(),
        r.registry_url.clone(),
        &r.codec,
        &r.effects,
        &r.opts,
    );
    let (mut engine, mut metrics) = spawn_engine("engine-1", opts);
    let _participants = participants(&bootstrap, &registry_url, effects);
    let ids: Vec<String> = (0..600).map(|i| format!("k9-{i:04}")).collect();
    let mut kills = Vec::new();
    let mut feeders = Vec::new();
    // Each round streams its own third of the sagas, so every engine gets new work however long
    // the rounds before it took.
    for (round, chunk) in (1..=3).zip(ids.chunks(200)) {
        feeders.push(stream_trips(
            bootstrap.clone(),
            registry_url.clone(),
            opts.group.clone(),
            chunk.to_vec(),
            20,
        ));
        // Kill only an engine that is working: it owns every partition and has sagas in flight
        // (proved afterwards from the event log by `assert_in_flight_at`).
        assert!(
            eventually(WAIT, || owns_all(&metrics, opts.partitions)),
            "engine-{round} never owned every partition"
        );
        assert!(
            eventually(WAIT, || in_flight(&metrics, &bootstrap, codec, &opts.group)),
            "engine-{round} never had sagas in flight"
        );
        engine.kill9();
        kills.push(now_ms());
        eprintln!("round {round}: killed the engine");
        let (e, m) = spawn_engine(&format!("engine-{}", round + 1), opts);
        engine = e;
        metrics = m;
    }
    for feeder in feeders {
        feeder.join().expect("feeder");
    }

    let log = wait_finished(&bootstrap, codec, &opts.group, &ids);
    check_invariants(&log, &ids, effects);
    assert_in_flight_at(&log, &kills);
}

#[test]
fn the_survivor_of_two_engines_finishes_every_saga() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let (_registry, registry_url) = spawn_registry(&bootstrap);
    let codec = BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
    let state_a = TempDir::new("survivor-a");
    let state_b = TempDir::new("survivor-b");
    let work = TempDir::new("survivor-effects");
    let effects = work.path().join("effects.jsonl");
    let group = group("survivor");
    let opts = |state: &TempDir| EngineOpts {
        bootstrap: bootstrap.clone(),
        registry_url: registry_url.clone(),
        group: group.clone(),
        state_dir: state.path().to_path_buf(),
        definitions: root().join("examples"),
        partitions: 4,
    };
    let (mut a, metrics_a) = spawn_engine("engine-a", &opts(&state_a));
    let (_b, metrics_b) = spawn_engine("engine-b", &opts(&state_b));
    // Both must own partitions before the kill, or the test proves nothing.
    let owned = |url: &str| sagaflow_tests::metric(url, "sagaflow_partitions_owned");
    assert!(
        eventually(WAIT, || owned(&metrics_a) >= 1.0
            && owned(&metrics_b) >= 1.0),
        "partitions were not shared: a={} b={}",
        owned(&metrics_a),
        owned(&metrics_b)
    );
    let _participants = participants(&bootstrap, &registry_url, &effects);
    let ids: Vec<String> = (0..400).map(|i| format!("sv-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap.clone(),
        registry_url.clone(),
        group.clone(),
        ids.clone(),
        100,
    );
    assert!(
        eventually(WAIT, || in_flight(&metrics_a, &bootstrap, &codec, &group)),
        "engine-a never had sagas in flight"
    );
    a.kill9();
    let killed_at = now_ms();
    feeder.join().expect("feeder");

    let log = wait_finished(&bootstrap, &codec, &group, &ids);
    assert_eq!(
        owned(&metrics_b),
        4.0,
        "the survivor should own every partition"
    );
    check_invariants(&log, &ids, &effects);
    assert_in_flight_at(&log, &[killed_at]);
}

#[test]
fn broker_kill_9_with_sagas_in_flight_loses_and_repeats_nothing() {
    let r = rig("broker-kill");
    if !r.broker.is_local() {
        eprintln!("skipped: SAGAFLOW_BOOTSTRAP names a broker this test cannot kill");
        return;
    }
    let (bootstrap, registry_url, codec, effects, opts) = (
        r.broker.bootstrap(),
        r.registry_url.clone(),
        &r.codec,
        &r.effects,
        &r.opts,
    );
    let (_engine, metrics) = spawn_engine("engine", opts);
    let _participants = participants(&bootstrap, &registry_url, effects);
    let ids: Vec<String> = (0..300).map(|i| format!("bk-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap.clone(),
        registry_url.clone(),
        opts.group.clone(),
        ids.clone(),
        20,
    );
    assert!(
        eventually(WAIT, || owns_all(&metrics, opts.partitions)),
        "the engine never owned every partition"
    );
    assert!(
        eventually(WAIT, || in_flight(&metrics, &bootstrap, codec, &opts.group)),
        "the engine never had sagas in flight"
    );
    let killed_at = now_ms();
    r.broker.kill9_and_restart();
    eprintln!("killed and restarted the broker");
    // The feeder's producer retries through the outage.
    feeder.join().expect("feeder");

    let log = wait_finished(&bootstrap, codec, &opts.group, &ids);
    check_invariants(&log, &ids, effects);
    assert_in_flight_at(&log, &[killed_at]);
}
