//! Static group membership (KIP-345) on Apache Kafka: an engine restarted in place takes its
//! partitions back without a rebalance and resumes its standby copies, a scale-down removes the
//! member so its partitions move at once, a survivor evicts a crashed member that fell silent
//! (and a frozen one, which rejoins when it thaws, and one whose restart in place is slower than
//! the eviction's wait), one standby copy per partition is where the partition goes when its
//! owner crashes, and two engines under one instance id, or a session timeout the broker
//! refuses, end with a clear error, not a spin.
//!
//! tansu 0.6 keeps a stopped static member's partitions from every other engine, which is why
//! static membership is documented as Kafka-only; these tests skip there.

use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use sagaflow_tests::trips::{
    check_invariants, owns_all, participants, stream_trips, wait_finished, Rig, WAIT,
};
use sagaflow_tests::{
    eventually, metric, read_to_watermarks, sagaflow_bin, spawn_engine_env, Proc, TempDir,
};

/// A rig for the trip saga on four partitions, or `None` (with a skip message) on tansu.
fn rig(name: &str, test: &str) -> Option<Rig> {
    sagaflow_tests::on_kafka_only(
        test,
        "tansu 0.6 keeps a stopped static member's partitions from the other engines, so static membership is Kafka-only (docs/operations.md)",
    )
    .then(|| sagaflow_tests::trips::rig(name, 4))
}

fn owned(metrics: &str) -> f64 {
    metric(metrics, "sagaflow_partitions_owned")
}

/// Engine `name` as static member `instance` with the given session timeout, and `env`.
fn static_engine(
    r: &Rig,
    state: &TempDir,
    name: &str,
    instance: &str,
    session_ms: u64,
    env: &[(&str, &str)],
) -> (Proc, String) {
    let session = session_ms.to_string();
    let mut vars = vec![
        ("SAGAFLOW_INSTANCE_ID", instance),
        ("SAGAFLOW_SESSION_TIMEOUT_MS", session.as_str()),
    ];
    vars.extend_from_slice(env);
    spawn_engine_env(name, &r.opts.on_state_dir(state), &vars)
}

/// Static members `instances`, each with a state directory of its own (engine-<instance>).
fn static_members<const N: usize>(
    r: &Rig,
    instances: [&str; N],
    session_ms: u64,
    env: &[(&str, &str)],
) -> [(Proc, String, TempDir); N] {
    instances.map(|instance| {
        let state = TempDir::new(&format!("static-{instance}"));
        let name = format!("engine-{instance}");
        let (p, m) = static_engine(r, &state, &name, instance, session_ms, env);
        (p, m, state)
    })
}

/// Two static members that share the four partitions.
fn two_members(r: &Rig, session_ms: u64, env: &[(&str, &str)]) -> [(Proc, String, TempDir); 2] {
    let [a, b] = static_members(r, ["a", "b"], session_ms, env);
    assert!(
        eventually(WAIT, || owned(&a.1) == 2.0 && owned(&b.1) == 2.0),
        "the members did not share the partitions: a={} b={}",
        owned(&a.1),
        owned(&b.1)
    );
    [a, b]
}

/// Waits until engine-b owns all four partitions by having evicted engine-a `evictions` times
/// in all: its session (10 minutes in these tests) cannot end within the five minutes waited.
fn taken_over_by_eviction(metrics_b: &str, evictions: f64, what: &str) {
    assert!(
        eventually(Duration::from_secs(300), || owns_all(metrics_b, 4)),
        "engine-b did not take the {what} engine-a's partitions within 5 minutes (its session is 10)"
    );
    assert_eq!(
        metric(metrics_b, "sagaflow_peer_evictions_total"),
        evictions,
        "engine-b took the partitions without evicting engine-a"
    );
}

/// The trip's participants, and 200 sagas streamed in the background (ids `<prefix>-NNNN`).
fn load(r: &Rig, prefix: &str) -> (Vec<Proc>, Vec<String>, JoinHandle<()>) {
    let bootstrap = r.broker.bootstrap();
    let participants = participants(&r.space, &bootstrap, &r.registry_url, &r.effects);
    let ids: Vec<String> = (0..200).map(|i| format!("{prefix}-{i:04}")).collect();
    let feeder = stream_trips(
        bootstrap,
        r.registry_url.clone(),
        r.opts.group.clone(),
        ids.clone(),
        40,
    );
    (participants, ids, feeder)
}

#[test]
fn a_static_member_restarted_in_place_takes_its_partitions_back_without_a_rebalance() {
    let test = "a_static_member_restarted_in_place_takes_its_partitions_back_without_a_rebalance";
    let Some(r) = rig("static-restart", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    // A session far longer than the test: nothing here may wait it out.
    let [(mut a, _, state_a), (_b, metrics_b, _state_b)] = two_members(&r, 600_000, &[]);
    let (_participants, ids, feeder) = load(&r, "sr");
    let restores_b = metric(&metrics_b, "sagaflow_restores_total");

    assert!(a.terminate().success(), "engine-a did not stop cleanly");
    // A static member that stops sends no LeaveGroup: its partitions wait for it. A dynamic
    // member's would have moved to engine-b within a second or two.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        owned(&metrics_b),
        2.0,
        "engine-b took partitions of a static member that only restarts"
    );
    let (_a, metrics_a) = static_engine(&r, &state_a, "engine-a-again", "a", 600_000, &[]);
    assert!(
        eventually(WAIT, || owned(&metrics_a) == 2.0),
        "the restarted engine-a did not get its partitions back"
    );
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
    // A rebalance would have revoked and restored engine-b's partitions too.
    assert_eq!(
        metric(&metrics_b, "sagaflow_restores_total"),
        restores_b,
        "engine-b went through a rebalance while engine-a restarted in place"
    );
    assert_eq!(owned(&metrics_b), 2.0);
}

/// Standby copies outlive a restart in place: the restarted engine reads the other engine's
/// changelog on from where its copies stood, not all of it again.
#[test]
fn a_static_member_restarted_in_place_resumes_its_standby_copies() {
    let test = "a_static_member_restarted_in_place_resumes_its_standby_copies";
    let Some(r) = rig("static-standby", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    let changelog = format!("{}.changelog", r.opts.group);
    let standby = [("SAGAFLOW_STANDBY", "true")];
    let [(mut a, metrics_a, state_a), (_b, _, _state_b)] = two_members(&r, 600_000, &standby);
    let (_participants, ids, feeder) = load(&r, "ss");
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
    let caught_up = |metrics: &str| {
        metric(metrics, "sagaflow_standby_partitions_ready") == 2.0
            && metric(metrics, "sagaflow_standby_lag_records") == 0.0
    };
    assert!(
        eventually(WAIT, || caught_up(&metrics_a)),
        "engine-a's standby copies of engine-b's two partitions never caught up"
    );
    let before = read_to_watermarks(&bootstrap, &changelog).len();
    let standby_reads =
        "sagaflow_broker_records_total{direction=\"read\",kind=\"standby\",part=\"overhead\"}";
    // What a copy from the start reads; the metric must count it for the check below to mean
    // anything.
    let read_first = metric(&metrics_a, standby_reads);

    assert!(a.terminate().success(), "engine-a did not stop cleanly");
    let (_a, metrics_a) = static_engine(&r, &state_a, "engine-a-again", "a", 600_000, &standby);
    assert!(
        eventually(WAIT, || owned(&metrics_a) == 2.0 && caught_up(&metrics_a)),
        "the restarted engine-a did not own its two partitions with both standby copies caught up"
    );
    let written = read_to_watermarks(&bootstrap, &changelog).len() - before;
    let read = metric(&metrics_a, standby_reads);
    eprintln!(
        "standby resume: the first copies read {read_first} of the {before} changelog records at the stop; {written} written since; the restarted copies read {read}"
    );
    assert!(
        read_first > written as f64,
        "the first copies read {read_first} records, no more than the {written} written after the stop: this test cannot tell a resumed copy from a new one"
    );
    assert!(
        read <= written as f64,
        "the restarted engine-a read {read} changelog records for its standby copies, but only {written} were written after it stopped (the changelog held {before}): it copied engine-b's partitions from the start again"
    );
}

#[test]
fn a_scale_down_removes_the_static_member_and_its_partitions_move_at_once() {
    let test = "a_scale_down_removes_the_static_member_and_its_partitions_move_at_once";
    let Some(r) = rig("static-scale-down", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    // Ten minutes of session: the partitions can only move within the five minutes this test
    // waits if the member is removed.
    let [(mut a, _, _state_a), (_b, metrics_b, _state_b)] = two_members(&r, 600_000, &[]);
    let (_participants, ids, feeder) = load(&r, "sd");
    assert!(a.terminate().success(), "engine-a did not stop cleanly");
    let out = Command::new(sagaflow_bin())
        .args([
            "group",
            "remove-members",
            "--bootstrap",
            &bootstrap,
            "--group",
            &r.opts.group,
            "--instance-id",
            "a",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run sagaflow group remove-members");
    assert!(out.status.success(), "remove-members failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "removed: a");
    assert!(
        eventually(Duration::from_secs(300), || owns_all(&metrics_b, 4)),
        "engine-b did not take engine-a's partitions after the member was removed"
    );
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
}

/// A crashed static member is removed by a survivor that read no heartbeat from it for
/// `evict-silent-peers-ms`, and its partitions move long before its session would end; two live
/// engines never evict each other, also while nothing runs and heartbeats alone move the
/// changelog.
#[test]
fn a_crashed_static_member_is_evicted_by_a_survivor_before_its_session_ends() {
    let test = "a_crashed_static_member_is_evicted_by_a_survivor_before_its_session_ends";
    let Some(r) = rig("static-evict", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    let evictions = "sagaflow_peer_evictions_total";
    let env = [
        ("SAGAFLOW_STANDBY", "true"),
        ("SAGAFLOW_EVICT_SILENT_PEERS_MS", "2000"),
    ];
    // Ten minutes of session: within the five minutes this test waits, the partitions can only
    // move if engine-b removes engine-a.
    let [(mut a, metrics_a, _state_a), (_b, metrics_b, _state_b)] = two_members(&r, 600_000, &env);
    // Idle for five eviction waits: only the heartbeats keep the changelog moving.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(
        (metric(&metrics_a, evictions), metric(&metrics_b, evictions)),
        (0.0, 0.0),
        "a live engine was evicted"
    );
    assert_eq!((owned(&metrics_a), owned(&metrics_b)), (2.0, 2.0));
    let (_participants, ids, feeder) = load(&r, "ev");
    std::thread::sleep(Duration::from_secs(2));
    a.kill9();
    taken_over_by_eviction(&metrics_b, 1.0, "crashed");
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
}

/// With `standby-copies = 1`, each partition is copied once, on the engine the range assignor
/// gives it to if its owner leaves: of three static members a (partitions 0 and 1), b (2) and c
/// (3), b copies 0, 1 and 3 and c copies 2. When a crashes and is evicted, b takes 0 and 1 and c
/// takes 2 (the runs shift), each from its copy, and the copies are placed again for the two.
#[test]
fn one_standby_copy_per_partition_is_where_the_partition_goes_when_its_owner_crashes() {
    let test = "one_standby_copy_per_partition_is_where_the_partition_goes_when_its_owner_crashes";
    let Some(r) = rig("standby-copies", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    let env = [
        ("SAGAFLOW_STANDBY", "true"),
        ("SAGAFLOW_STANDBY_COPIES", "1"),
        ("SAGAFLOW_EVICT_SILENT_PEERS_MS", "2000"),
    ];
    // A session longer than the test: only an eviction moves a crashed member's partitions.
    let [(mut a, metrics_a, _sa), (_b, metrics_b, _sb), (_c, metrics_c, _sc)] =
        static_members(&r, ["a", "b", "c"], 600_000, &env);
    let shares = || [&metrics_a, &metrics_b, &metrics_c].map(|m| owned(m));
    assert!(
        eventually(WAIT, || shares() == [2.0, 1.0, 1.0]),
        "the three members did not share the partitions 2, 1, 1 by instance id: {:?}",
        shares()
    );
    let (_participants, ids, feeder) = load(&r, "sc");
    let copies = |ready: &str| {
        [&metrics_a, &metrics_b, &metrics_c]
            .map(|m| metric(m, &format!("sagaflow_standby_partitions{ready}")))
    };
    assert!(
        eventually(WAIT, || copies("") == [0.0, 3.0, 1.0]
            && copies("_ready") == [0.0, 3.0, 1.0]),
        "the copies were not placed where the partitions go (a none, b 0 1 3, c 2), or never got a checkpoint: {:?} copied, {:?} ready",
        copies(""),
        copies("_ready")
    );
    let full_restores = "sagaflow_changelog_restores_total";
    let before = [&metrics_b, &metrics_c].map(|m| metric(m, full_restores));

    a.kill9();
    let survivors = || [&metrics_b, &metrics_c].map(|m| owned(m));
    assert!(
        eventually(Duration::from_secs(120), || survivors() == [2.0, 2.0]),
        "engine-b and engine-c did not take engine-a's partitions (2 each) after evicting it: {:?}",
        survivors()
    );
    let evictions: f64 = [&metrics_b, &metrics_c]
        .map(|m| metric(m, "sagaflow_peer_evictions_total"))
        .iter()
        .sum();
    assert!(evictions >= 1.0, "the partitions moved without an eviction");
    assert_eq!(
        [&metrics_b, &metrics_c].map(|m| metric(m, full_restores)),
        before,
        "a partition moved to an engine without a copy and was read from the whole changelog"
    );
    // Placed again for two engines: each copies the other's partitions.
    assert!(
        eventually(WAIT, || [&metrics_b, &metrics_c]
            .map(|m| metric(m, "sagaflow_standby_partitions"))
            == [2.0, 2.0]),
        "the copies were not placed again for the two engines left"
    );
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);
}

/// The costs of eviction, paid without a wrong result: an engine frozen past the wait (SIGSTOP)
/// is evicted although alive, and when it thaws it rejoins the group; a restart in place slower
/// than the wait moves its partitions away and back.
#[test]
fn a_frozen_engine_evicted_while_alive_rejoins_when_it_thaws_and_so_does_a_slow_restart() {
    let test =
        "a_frozen_engine_evicted_while_alive_rejoins_when_it_thaws_and_so_does_a_slow_restart";
    let Some(r) = rig("static-thaw", test) else {
        return;
    };
    let bootstrap = r.broker.bootstrap();
    let env = [
        ("SAGAFLOW_STANDBY", "true"),
        ("SAGAFLOW_EVICT_SILENT_PEERS_MS", "2000"),
    ];
    let [(mut a, metrics_a, state_a), (_b, metrics_b, _state_b)] = two_members(&r, 600_000, &env);
    let (_participants, ids, feeder) = load(&r, "fz");
    std::thread::sleep(Duration::from_secs(2));
    a.signal("STOP");
    taken_over_by_eviction(&metrics_b, 1.0, "frozen");
    a.signal("CONT");
    // Its member is gone from the group: the broker answers it as an unknown member, and it
    // gives its partitions up as lost and joins again.
    assert!(
        eventually(WAIT, || owned(&metrics_a) == 2.0
            && owned(&metrics_b) == 2.0),
        "the thawed engine-a did not rejoin: a={} b={}",
        owned(&metrics_a),
        owned(&metrics_b)
    );
    feeder.join().expect("feeder");
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &ids);
    check_invariants(&log, &ids, &r.effects);

    // A restart in place slower than the wait: a static member that stops sends no LeaveGroup,
    // so only the eviction moves its partitions before it is back.
    assert!(a.terminate().success(), "engine-a did not stop cleanly");
    taken_over_by_eviction(&metrics_b, 2.0, "stopped");
    let (_a, metrics_a) = static_engine(&r, &state_a, "engine-a-again", "a", 600_000, &env);
    assert!(
        eventually(WAIT, || owned(&metrics_a) == 2.0
            && owned(&metrics_b) == 2.0),
        "the restarted engine-a did not get two partitions back"
    );
    let more: Vec<String> = (0..40).map(|i| format!("fz2-{i:04}")).collect();
    stream_trips(
        bootstrap.clone(),
        r.registry_url.clone(),
        r.opts.group.clone(),
        more.clone(),
        40,
    )
    .join()
    .expect("feeder");
    let all: Vec<String> = ids.iter().chain(&more).cloned().collect();
    let log = wait_finished(&bootstrap, &r.codec, &r.opts.group, &all);
    check_invariants(&log, &all, &r.effects);
}

#[test]
fn an_engine_whose_instance_id_another_one_takes_stops_with_a_clear_error() {
    let test = "an_engine_whose_instance_id_another_one_takes_stops_with_a_clear_error";
    let Some(r) = rig("static-fenced", test) else {
        return;
    };
    let state_1 = TempDir::new("fenced-1");
    let (mut first, metrics_1) = static_engine(&r, &state_1, "engine-1", "same", 30_000, &[]);
    assert!(
        eventually(WAIT, || owns_all(&metrics_1, 4)),
        "engine-1 never owned its partitions"
    );
    // A second engine under the same id takes the member's place; the broker fences the first.
    let state_2 = TempDir::new("fenced-2");
    let (_second, metrics_2) = static_engine(&r, &state_2, "engine-2", "same", 30_000, &[]);
    assert!(
        eventually(WAIT, || first.exit_status().is_some()),
        "engine-1 kept running after engine-2 took its instance id"
    );
    let status = first.exit_status().expect("exited");
    assert!(!status.success(), "engine-1 exited 0 after being fenced");
    let log = first.stderr_text();
    assert!(
        log.contains("the broker fenced this engine's static member id")
            && log.contains("Give every engine its own instance-id"),
        "engine-1 did not say what happened and what to do:\n{log}"
    );
    assert!(
        eventually(WAIT, || owns_all(&metrics_2, 4)),
        "engine-2 did not own the partitions after fencing engine-1"
    );
}

#[test]
fn an_engine_whose_session_timeout_the_broker_refuses_stops_with_a_clear_error() {
    let test = "an_engine_whose_session_timeout_the_broker_refuses_stops_with_a_clear_error";
    // This one is about session limits, which tansu 0.6's coordinator does not check.
    if !sagaflow_tests::on_kafka_only(
        test,
        "tansu 0.6 accepts any session timeout (its coordinator never answers INVALID_SESSION_TIMEOUT)",
    ) {
        return;
    }
    let r = sagaflow_tests::trips::rig("session-refused", 4);
    let state = TempDir::new("session-refused");
    // Above Apache Kafka's group.max.session.timeout.ms (30 minutes by default).
    let (mut engine, _metrics) = spawn_engine_env(
        "engine-1",
        &r.opts.on_state_dir(&state),
        &[("SAGAFLOW_SESSION_TIMEOUT_MS", "3600000")],
    );
    assert!(
        eventually(WAIT, || engine.exit_status().is_some()),
        "the engine kept running although the broker refused its session timeout"
    );
    let status = engine.exit_status().expect("exited");
    assert!(
        !status.success(),
        "the engine exited 0 after the broker refused its session timeout"
    );
    let log = engine.stderr_text();
    assert!(
        log.contains("the broker refused session-timeout-ms = 3600000")
            && log.contains("group.max.session.timeout.ms")
            && log.contains("SAGAFLOW_SESSION_TIMEOUT_MS"),
        "the engine did not say what the broker refused and how to fix it:\n{log}"
    );
}
