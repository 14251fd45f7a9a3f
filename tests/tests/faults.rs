//! The fault matrix: a crash at each write boundary, one failpoint at a time, with sagas in
//! flight, then a restart. After each, the event log and the participants' side effects must
//! show G1–G3: every saga ends exactly once, its seq is gapless without duplicates, every
//! compensation is applied once, and no command is lost (the trip saga has no timeouts, so a
//! lost command leaves its saga unfinished).
//!
//! The points are armed with `SAGAFLOW_FAILPOINTS` (see `engine/failpoints`): `N*off->return`
//! lets a point pass N times, then crashes the process there as kill -9 would.

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use sagaflow_failpoints as fp;
use sagaflow_tests::trips::{
    assert_in_flight_at, check_events, check_invariants, in_flight, now_ms, owns_all, participant,
    participants, rig, stream_trips, wait_finished, WAIT,
};
use sagaflow_tests::{eventually, spawn_engine, spawn_engine_env, EventLog, Proc, TempDir};

const SMALL_CACHE: (&str, &str) = ("SAGAFLOW_STATE_CACHE_SAGAS", "3");

fn armed(point: &str, passes: u32) -> String {
    format!("{point}={passes}*off->return")
}

/// Waits for `proc` to end, and checks that its own failpoint ended it (kill -9 of itself).
fn crashed_at(proc: &mut Proc, point: &str) -> i64 {
    let mut status = None;
    let ended = eventually(Duration::from_secs(180), || {
        status = proc.exit_status();
        status.is_some()
    });
    assert!(
        ended,
        "{point} never fired within 180 s: the scenario proved nothing"
    );
    let at = now_ms();
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(9),
        "the process ended with {status:?}, not the crash at {point}"
    );
    eprintln!("crashed at {point}");
    at
}

/// An engine crashes at `point` after it passed `passes` times under load; a restart in the
/// same state directory finishes every saga.
fn engine_crash_under_load(point: &str, passes: u32) {
    let r = rig(point, 4);
    let (bootstrap, opts) = (r.broker.bootstrap(), &r.opts);
    let env = armed(point, passes);
    // A cache of three states per partition: most decisions read their saga from RocksDB, so
    // the matrix also proves that evicted states come back right.
    let (mut engine, metrics) = spawn_engine_env(
        "engine-armed",
        opts,
        &[(fp::ENV, &env), (SMALL_CACHE.0, SMALL_CACHE.1)],
    );
    let _participants = participants(&r.space, &bootstrap, &r.registry_url, &r.effects);
    assert!(
        eventually(WAIT, || owns_all(&metrics, opts.partitions)),
        "the engine never owned every partition"
    );
    let ids: Vec<String> = (0..150).map(|i| format!("{point}-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap.clone(),
        r.registry_url.clone(),
        opts.group.clone(),
        ids.clone(),
        40,
    );
    let crash = crashed_at(&mut engine, point);
    let (_engine, _) = spawn_engine_env("engine-restarted", opts, &[SMALL_CACHE]);
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
    assert_in_flight_at(&log, &[crash]);
}

#[test]
fn a_crash_after_the_journal_ack_before_the_rocksdb_apply() {
    engine_crash_under_load(fp::JOURNAL_ACKED, 30);
}

#[test]
fn a_crash_after_relay_deliveries_before_the_watermark_moves() {
    engine_crash_under_load(fp::RELAY_DELIVERED, 4);
}

/// A flush writes a record per saga that keeps its own key and one per batch of states (about
/// one per partition per flush here), so 8 passes fall two seconds into the load.
#[test]
fn a_crash_in_the_middle_of_a_changelog_flush() {
    engine_crash_under_load(fp::CHANGELOG_FLUSH, 8);
}

/// An engine dies with sagas in flight; the next one crashes after its second CLAIM, before
/// any input is assigned; a third one, in the same state directory, finishes every saga.
#[test]
fn a_crash_after_a_claim_before_the_inputs_are_assigned() {
    let point = fp::CLAIM_WRITTEN;
    let r = rig(point, 4);
    let (bootstrap, opts) = (r.broker.bootstrap(), &r.opts);
    let (mut first, metrics) = spawn_engine("engine-1", opts);
    let _participants = participants(&r.space, &bootstrap, &r.registry_url, &r.effects);
    assert!(
        eventually(WAIT, || owns_all(&metrics, opts.partitions)),
        "engine-1 never owned every partition"
    );
    let ids: Vec<String> = (0..150).map(|i| format!("claim-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap.clone(),
        r.registry_url.clone(),
        opts.group.clone(),
        ids.clone(),
        40,
    );
    assert!(
        eventually(WAIT, || in_flight(
            &metrics,
            &bootstrap,
            &r.codec,
            &opts.group
        )),
        "engine-1 never had sagas in flight"
    );
    first.kill9();
    // Not `spawn_engine`: this one may crash before it prints its metrics address.
    let env = armed(point, 1);
    let mut second = Proc::spawn_env(
        "engine-2-armed",
        &sagaflow_tests::engine_args(opts),
        &[(fp::ENV, &env)],
    );
    let crash = crashed_at(&mut second, point);
    let (_third, _) = spawn_engine("engine-3", opts);
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
    assert_in_flight_at(&log, &[crash]);
}

const SLEEPER: &str = "
name: sleeper
version: 1
steps:
  - name: nap
    wait: 15s
";

/// A new node restoring from the changelog crashes between two chunks of states; its restart
/// must restore the partition again, not trust the chunk it had written.
#[test]
fn a_crash_between_changelog_restore_chunks() {
    let point = fp::RESTORE_CHUNK;
    let definitions = TempDir::new("restore-chunk-definitions");
    std::fs::write(definitions.path().join("sleeper.yaml"), SLEEPER).expect("write definition");
    // One partition, so that its several hundred sagas span several restore chunks.
    let mut r = rig(point, 1);
    r.opts.definitions = definitions.path().to_path_buf();
    let (bootstrap, opts) = (r.broker.bootstrap(), &r.opts);
    let (mut first, metrics) = spawn_engine("engine-1", opts);
    assert!(
        eventually(WAIT, || owns_all(&metrics, opts.partitions)),
        "engine-1 never owned its partition"
    );
    let ids: Vec<String> = (0..400).map(|i| format!("nap-{i:04}")).collect();
    let p = sagaflow_tests::producer(&bootstrap);
    for id in &ids {
        sagaflow_tests::start_saga(
            &r.codec,
            &p,
            &opts.group,
            "sleeper",
            id,
            &serde_json::json!({}),
        );
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush starts");
    assert!(
        eventually(WAIT, || EventLog::snapshot(
            &bootstrap,
            &r.codec,
            &opts.group
        )
        .sagas
        .len()
            == ids.len()),
        "not every sleeper started"
    );
    // A clean stop writes every state and a checkpoint to the changelog.
    assert!(first.terminate().success(), "engine-1 did not stop cleanly");
    let fresh = TempDir::new("restore-chunk-new-node");
    let new_node = opts.on_state_dir(&fresh);
    let env = armed(point, 0);
    let mut second = Proc::spawn_env(
        "engine-2-armed",
        &sagaflow_tests::engine_args(&new_node),
        &[(fp::ENV, &env)],
    );
    let crash = crashed_at(&mut second, point);
    let (_third, _) = spawn_engine("engine-3", &new_node);
    let started = Instant::now();
    let mut log = EventLog::default();
    let done = eventually(Duration::from_secs(120), || {
        log = EventLog::read(&bootstrap, &r.codec, &opts.group);
        log.finished() == ids.len()
    });
    assert!(
        done,
        "only {}/{} sleepers woke up {:?} after the restart; lost, e.g.: {:?}",
        log.finished(),
        ids.len(),
        started.elapsed(),
        log.unfinished(&ids).into_iter().take(3).collect::<Vec<_>>()
    );
    let _ = check_events(&log, &ids);
    assert_in_flight_at(&log, &[crash]);
}

/// A participant crashes at `point` under load; once restarted, every saga finishes and no
/// side effect is applied twice.
fn worker_crash_under_load(point: &str, passes: u32) {
    let r = rig(point, 4);
    let (bootstrap, opts) = (r.broker.bootstrap(), &r.opts);
    let (_engine, metrics) = spawn_engine("engine", opts);
    let env = armed(point, passes);
    let mut payment = participant(
        &r.space,
        &bootstrap,
        &r.registry_url,
        "payment",
        &r.effects,
        &[(fp::ENV, &env)],
    );
    let _others: Vec<Proc> = ["flight", "hotel", "notify"]
        .iter()
        .map(|role| participant(&r.space, &bootstrap, &r.registry_url, role, &r.effects, &[]))
        .collect();
    assert!(
        eventually(WAIT, || owns_all(&metrics, opts.partitions)),
        "the engine never owned every partition"
    );
    let ids: Vec<String> = (0..150).map(|i| format!("{point}-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap.clone(),
        r.registry_url.clone(),
        opts.group.clone(),
        ids.clone(),
        40,
    );
    let crash = crashed_at(&mut payment, point);
    // After the dead instances' session (10 s) ran out: tansu 0.6 can hand a member that joins
    // right after a death an empty assignment for good (docs/operations.md).
    std::thread::sleep(Duration::from_secs(12));
    let _payment = participant(
        &r.space,
        &bootstrap,
        &r.registry_url,
        "payment",
        &r.effects,
        &[],
    );
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
    assert_in_flight_at(&log, &[crash]);
}

#[test]
fn a_worker_crash_after_its_handler_before_the_reply() {
    worker_crash_under_load(fp::WORKER_HANDLED, 40);
}

#[test]
fn a_worker_crash_after_the_reply_before_the_offset_is_stored() {
    worker_crash_under_load(fp::WORKER_REPLIED, 40);
}
