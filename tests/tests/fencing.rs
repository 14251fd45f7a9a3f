//! Fencing (G3): an old owner that writes to the journal after losing its partition changes
//! nothing: not the saga states, not the input positions, and none of its outputs is delivered.
//! Its late changelog flush never comes back in a restore, and a standby copy it gave up is not
//! read again in vain at each rebalance.

use std::time::Duration;

use sagaflow_avro::{
    BlockingCodec, EventType as E, InputPosition, JournalKind, JournalRecord, Outbound, SagaState,
    SagaStatus, StateEntry,
};
use sagaflow_tests::{
    broker_with_registry, eventually, metric, producer, read_all, send, spawn_engine,
    spawn_engine_env, start_trip, trip_participants, EventLog, Space, TempDir,
};

const WAIT: Duration = Duration::from_secs(300);

fn journal(bootstrap: &str, codec: &BlockingCodec, group: &str) -> Vec<(i64, JournalRecord)> {
    read_all(bootstrap, &format!("{group}.journal"))
        .into_iter()
        .map(|r| {
            (
                r.offset,
                codec
                    .decode(r.value.as_deref().expect("value"))
                    .expect("journal record"),
            )
        })
        .collect()
}

/// Writes a record to partition 0 of the changelog as a fenced owner's relay would, with the
/// headers its restores read: the source offset if given, and the writer's epoch if given (by
/// which restores and standby copies tell a fenced owner's late write).
fn write_late(
    bootstrap: &str,
    group: &str,
    key: &str,
    value: &[u8],
    source: Option<i64>,
    epoch: Option<i64>,
) {
    let mut headers = rdkafka::message::OwnedHeaders::new();
    for (name, value) in [
        ("sagaflow-source-offset", source),
        ("sagaflow-epoch", epoch),
    ] {
        if let Some(value) = value.map(|v| v.to_string()) {
            headers = headers.insert(rdkafka::message::Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
    }
    let p = producer(bootstrap);
    p.send(
        rdkafka::producer::BaseRecord::to(&format!("{group}.changelog"))
            .partition(0)
            .key(key)
            .payload(value)
            .headers(headers),
    )
    .map_err(|(e, _)| e)
    .expect("enqueue the late write");
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("flush");
}

/// Writes `state` of `saga` in a batch record of `epoch` (`engine/runtime/src/batches.rs`),
/// with a source offset past every journal record.
fn write_late_batch(bootstrap: &str, group: &str, saga: &str, state: &[u8], epoch: i64) {
    let batch = sagaflow_avro::ChangelogBatch {
        check_at: 0,
        entries: vec![sagaflow_avro::BatchEntry {
            saga_id: saga.into(),
            source: i64::MAX / 2,
            state: state.to_vec(),
        }],
    };
    let bytes = sagaflow_avro::internal::encode(&batch).expect("encode a batch");
    let key = format!("__batch/{:020}/{epoch}/999/0", 0);
    write_late(bootstrap, group, &key, &bytes, None, Some(epoch));
}

/// The first state of `saga` in the journal, with the offset of its record.
fn first_state(records: Vec<(i64, JournalRecord)>, saga: &str) -> (i64, Vec<u8>) {
    records
        .into_iter()
        .find_map(|(offset, r)| {
            let entry = r.states.into_iter().find(|e| e.saga_id == saga)?;
            Some((offset, entry.state?))
        })
        .unwrap_or_else(|| panic!("no journal record holds a state of {saga}"))
}

#[test]
fn a_stale_owner_writing_after_losing_its_partition_changes_nothing() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("fence");
    let group = space.group.clone();
    let state_1 = TempDir::new("fence-1");
    let state_2 = TempDir::new("fence-2");
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);

    // The first owner runs one saga to the end, then stops.
    let (mut first, _) = spawn_engine("engine-1", &opts(&state_1));
    start_trip(&codec, &bootstrap, &group, "before");
    assert!(eventually(WAIT, || EventLog::read(
        &bootstrap, &codec, &group
    )
    .finished()
        == 1));
    assert!(first.terminate().success());
    let records = journal(&bootstrap, &codec, &group);
    let (last_offset, last) = records.last().cloned().expect("journal has records");
    let (old_epoch, old_writer) = (last.epoch, last.writer.clone());

    // A new owner claims the partition.
    let (_second, metrics) = spawn_engine("engine-2", &opts(&state_2));
    assert!(eventually(WAIT, || {
        journal(&bootstrap, &codec, &group)
            .iter()
            .any(|(_, r)| r.kind == JournalKind::Claim && r.epoch > old_epoch)
    }));

    // The old owner wakes up and writes as if it still owned the partition: a record that chains
    // on its own last record, and one that chains on the current end of the journal.
    let bogus_state = SagaState {
        saga_id: "before".into(),
        definition: "zombie".into(),
        version: 1,
        status: SagaStatus::Compensated,
        context_json: "{}".into(),
        steps: vec![],
        completion_order: vec![],
        next_seq: 99,
        started_at: 0,
        updated_at: 0,
        ignored_replies: 0,
        failure_json: None,
        timers: vec![],
        compacted: false,
        pause: None,
        admin_requests: Vec::new(),
    };
    let changelog = format!("{group}.changelog");
    let state_bytes = sagaflow_avro::internal::encode(&bogus_state).expect("encode state");
    let end = journal(&bootstrap, &codec, &group)
        .last()
        .map(|(o, _)| *o)
        .expect("end");
    let journal_topic = format!("{group}.journal");
    for base in [last_offset, end] {
        let zombie = JournalRecord {
            kind: JournalKind::Decisions,
            epoch: old_epoch,
            writer: old_writer.clone(),
            base,
            positions: vec![InputPosition {
                topic: format!("{group}.starts"),
                offset: 1_000_000,
            }],
            relayed_through: base,
            states: vec![StateEntry {
                saga_id: "before".into(),
                state: Some(state_bytes.clone()),
            }],
            outputs: vec![Outbound {
                id: format!("zombie-{base}"),
                topic: "zombie.out".into(),
                key: Some(b"before".to_vec()),
                value: Some(b"must never be delivered".to_vec()),
                headers: vec![],
                not_before: None,
            }],
        };
        let value = sagaflow_avro::internal::encode(&zombie).expect("encode");
        send(&producer(&bootstrap), &journal_topic, "zombie", &value);
    }

    // The new owner keeps working: its next write finds the zombie records, it resyncs, and the
    // zombie's input positions (which would skip every start) are not applied.
    start_trip(&codec, &bootstrap, &group, "after");
    let mut log = EventLog::default();
    assert!(
        eventually(WAIT, || {
            log = EventLog::read(&bootstrap, &codec, &group);
            log.finished() == 2
        }),
        "the saga started after the zombie write did not finish"
    );
    assert_eq!(log.types("after").last(), Some(&E::SagaCompleted));
    assert_eq!(log.types("before").last(), Some(&E::SagaCompleted));
    assert!(log.sagas["before"].values().all(|e| e.definition == "trip"));
    assert!(log.conflicts.is_empty(), "{:?}", log.conflicts);

    assert!(
        read_all(&bootstrap, "zombie.out").is_empty(),
        "a fenced output was delivered"
    );
    let changelog_states: Vec<SagaState> =
        sagaflow_tests::changelog_states(&read_all(&bootstrap, &changelog))
            .into_iter()
            .filter(|s| s.saga_id == "before")
            .filter_map(|s| codec.decode(&s.state).ok())
            .collect();
    assert!(
        !changelog_states.is_empty(),
        "the changelog should hold saga `before`"
    );
    assert!(
        changelog_states.iter().all(|s| s.definition == "trip"),
        "a fenced state reached the changelog"
    );
    assert!(metric(&metrics, "sagaflow_journal_conflicts_total") >= 1.0);
    assert!(metric(&metrics, "sagaflow_fenced_records_total") >= 1.0);
}

/// A fenced owner that wakes up can still flush its changelog: older states, written after the
/// new owner's. A restore on another node must keep the newest state per saga by the journal
/// offset it came from, not the last one written; otherwise the older state comes back and a
/// redelivered reply is applied to it a second time.
#[test]
fn a_fenced_owners_late_changelog_flush_never_comes_back_in_a_restore() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("late-flush");
    let group = space.group.clone();
    let dirs = [
        TempDir::new("late-flush-1"),
        TempDir::new("late-flush-2"),
        TempDir::new("late-flush-3"),
    ];
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    let finished = |n: usize| {
        eventually(WAIT, || {
            EventLog::read(&bootstrap, &codec, &group).finished() == n
        })
    };

    // The first owner runs saga `x` to the end, then stops.
    let (mut first, _) = spawn_engine("engine-1", &opts(&dirs[0]));
    start_trip(&codec, &bootstrap, &group, "x");
    assert!(finished(1), "saga x did not finish");
    assert!(first.terminate().success());
    // The state `x` had while it waited for its payment: what the old owner's late flush holds.
    let (source, waiting) = first_state(journal(&bootstrap, &codec, &group), "x");

    // A new owner takes over and finishes another saga.
    let (mut second, _) = spawn_engine("engine-2", &opts(&dirs[1]));
    start_trip(&codec, &bootstrap, &group, "y");
    assert!(finished(2), "saga y did not finish");

    // The old owner wakes up and flushes what it still held, as its relay would: under the
    // saga's key, and in a batch of the first owner's epoch. The batch names a source beyond any
    // record, so a restore that did not ignore late batches would take its state for the newest.
    write_late(&bootstrap, &group, "x", &waiting, Some(source), None);
    write_late_batch(&bootstrap, &group, "x", &waiting, 1);

    // The new owner goes on (its checkpoints now follow the late flush), then stops.
    start_trip(&codec, &bootstrap, &group, "z");
    assert!(finished(3), "saga z did not finish");
    assert!(second.terminate().success());

    // A third node restores from the changelog; the payment reply of `x` is delivered again.
    let (_third, metrics) = spawn_engine("engine-3", &opts(&dirs[2]));
    let replies = format!("{group}.replies");
    let reply = read_all(&bootstrap, &replies)
        .into_iter()
        .find(|r| {
            r.key.as_deref() == Some(b"x")
                && codec
                    .decode::<sagaflow_avro::Reply>(r.value.as_deref().unwrap_or_default())
                    .is_ok_and(|reply| reply.step == "payment")
        })
        .expect("the payment reply of x");
    send(
        &producer(&bootstrap),
        &replies,
        "x",
        reply.value.as_deref().expect("reply value"),
    );
    start_trip(&codec, &bootstrap, &group, "after");
    assert!(
        finished(4),
        "the saga started after the restore did not finish"
    );
    assert!(
        eventually(Duration::from_secs(60), || metric(
            &metrics,
            "sagaflow_inputs_total"
        ) >= 2.0),
        "engine-3 did not read the redelivered reply"
    );
    std::thread::sleep(Duration::from_secs(3));
    let log = EventLog::read(&bootstrap, &codec, &group);
    assert!(
        log.conflicts.is_empty(),
        "the old state came back and the reply was applied again: {:?}",
        log.conflicts
    );
    assert_eq!(log.types("x").last(), Some(&E::SagaCompleted));
    assert_eq!(
        log.types("x")
            .iter()
            .filter(|t| **t == E::StepSucceeded)
            .count(),
        4,
        "x: {:?}",
        log.steps("x")
    );
}

/// A standby copy that a fenced owner's late state gave up would stop at the same record again:
/// at the next rebalance it reads only that record's offset and stays given up, instead of
/// reading the whole changelog again.
#[test]
fn a_standby_copy_a_late_state_gave_up_is_not_read_again_at_the_next_rebalance() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("late-standby");
    let group = space.group.clone();
    let dirs = ["1", "2", "3", "4"].map(|n| TempDir::new(&format!("late-standby-{n}")));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);

    // The first owner runs saga `x` to the end, then stops.
    let (mut first, _) = spawn_engine("engine-1", &opts(&dirs[0]));
    start_trip(&codec, &bootstrap, &group, "x");
    assert!(
        eventually(WAIT, || EventLog::read(&bootstrap, &codec, &group)
            .finished()
            == 1),
        "saga x did not finish"
    );
    assert!(first.terminate().success());
    let records = journal(&bootstrap, &codec, &group);
    let old_epoch = records.last().expect("journal has records").1.epoch;
    let (source, waiting) = first_state(records, "x");

    // Engine 2 owns the partition and engine 3 keeps a standby copy of it. The range assignor
    // orders members by member id, which begins with the client id: the partition stays with
    // engine 2 when engine 4 joins below.
    let (_second, metrics_2) = spawn_engine_env(
        "engine-2",
        &opts(&dirs[1]),
        &[("SAGAFLOW_KAFKA_CLIENT_ID", "a-owner")],
    );
    let owned = |m: &str| metric(m, "sagaflow_partitions_owned");
    assert!(
        eventually(WAIT, || owned(&metrics_2) == 1.0),
        "engine-2 owns nothing"
    );
    let (third, metrics_3) = spawn_engine_env(
        "engine-3",
        &opts(&dirs[2]),
        &[
            ("SAGAFLOW_KAFKA_CLIENT_ID", "b-standby"),
            ("SAGAFLOW_STANDBY", "true"),
        ],
    );
    assert!(
        eventually(WAIT, || metric(&metrics_3, "sagaflow_standby_partitions")
            == 1.0),
        "engine-3 keeps no standby copy"
    );

    // The old owner wakes up and flushes what it still held, under its own epoch.
    write_late(
        &bootstrap,
        &group,
        "x",
        &waiting,
        Some(source),
        Some(old_epoch),
    );
    let late = "a fenced owner wrote saga x's state late";
    assert!(
        eventually(WAIT, || third.stderr_so_far().contains(late)),
        "engine-3's copy did not give up at the late state:\n{}",
        third.stderr_so_far()
    );

    // Engine 4 joins: every member gets a new assignment, and engine 3 a new standby copy.
    let (_fourth, metrics_4) = spawn_engine_env(
        "engine-4",
        &opts(&dirs[3]),
        &[("SAGAFLOW_KAFKA_CLIENT_ID", "c-joiner")],
    );
    assert!(
        eventually(WAIT, || third
            .stderr_so_far()
            .contains("is still in the changelog")),
        "the new copy did not stop at the late state's offset:\n{}",
        third.stderr_so_far()
    );
    let log = third.stderr_so_far();
    assert_eq!(
        log.matches(late).count(),
        1,
        "the new copy read the changelog from the beginning again:\n{log}"
    );
    assert_eq!(
        (owned(&metrics_2), owned(&metrics_3), owned(&metrics_4)),
        (1.0, 0.0, 0.0),
        "the partition moved"
    );
}
