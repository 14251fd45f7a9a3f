//! Restores: local state older than the journal's retention, compacted changelogs, a fenced
//! owner's late flush, takeovers from a standby copy, and a node that joins during a long
//! restore.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_tests::{
    broker_with_registry, client_config, eventually, spawn_engine, start_trip, trip_participants,
    EventLog, Space, TempDir,
};

const WAIT: Duration = Duration::from_secs(300);

/// Deletes every record of `topic[0]` below its high watermark, as retention would; false if
/// the broker does not implement DeleteRecords.
fn delete_all_records(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "sagaflow-test-retention")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().expect("admin client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(high))
        .expect("offset");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deleted = runtime.block_on(admin.delete_records(&tpl, &AdminOptions::new()));
    match deleted {
        Ok(result) => {
            result.elements().iter().all(|e| e.error().is_ok()) && {
                let (low, _) = consumer
                    .fetch_watermarks(topic, 0, Duration::from_secs(10))
                    .expect("watermarks");
                low == high
            }
        }
        Err(e) => {
            eprintln!("DeleteRecords failed: {e}");
            false
        }
    }
}

/// Engine 1 owns the partition, then engine 2 takes over and runs more sagas; the journal's
/// retention then deletes every record. Engine 1 restarting on its old RocksDB directory used to
/// retry a restore that could never succeed, holding the partition forever. It now rebuilds from
/// the changelog, which engine 2 kept current, and goes on.
#[test]
fn local_state_older_than_the_journal_retention_rebuilds_from_the_changelog() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("retention");
    let group = space.group.clone();
    let (state_1, state_2) = (TempDir::new("retention-1"), TempDir::new("retention-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    let finished = |n: usize| {
        eventually(WAIT, || {
            EventLog::read(&bootstrap, &codec, &group).finished() == n
        })
    };

    let (mut first, _) = spawn_engine("engine-1", &opts(&state_1));
    start_trip(&codec, &bootstrap, &group, "one-1");
    assert!(finished(1), "engine 1 finished its saga");
    assert!(first.terminate().success());

    let (mut second, _) = spawn_engine("engine-2", &opts(&state_2));
    for i in 0..5 {
        start_trip(&codec, &bootstrap, &group, &format!("two-{i}"));
    }
    assert!(finished(6), "engine 2 finished its sagas");
    assert!(second.terminate().success());

    if !delete_all_records(&bootstrap, &format!("{group}.journal")) {
        sagaflow_tests::skip(
            "local_state_older_than_the_journal_retention_rebuilds_from_the_changelog",
            "this broker does not delete records (DeleteRecords), which stands in for retention",
        );
        return;
    }

    let (_first_again, _) = spawn_engine("engine-1-again", &opts(&state_1));
    start_trip(&codec, &bootstrap, &group, "three-1");
    assert!(
        finished(7),
        "the engine with stale local state never processed the partition again"
    );
    let log = EventLog::read(&bootstrap, &codec, &group);
    assert!(log.conflicts.is_empty(), "{:?}", log.conflicts);
}

/// A journal deleted and created again under a changelog that still has the old journal's
/// checkpoints: its offsets name records of the old journal, so replaying from them would skip
/// or misread the new one's, and count unsent outputs as sent. The partition refuses to restore
/// and says why and what to do.
#[test]
fn a_journal_created_again_under_the_old_changelog_is_refused_with_the_fix() {
    if !sagaflow_tests::on_kafka_only(
        "a_journal_created_again_under_the_old_changelog_is_refused_with_the_fix",
        "it deletes a topic, which tansu 0.6 is not checked for here",
    ) {
        return;
    }
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("rejournal").only(&["trip.yaml"]);
    let group = space.group.clone();
    let (state_1, state_2) = (TempDir::new("rejournal-1"), TempDir::new("rejournal-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);

    let (mut first, _) = spawn_engine("engine-1", &opts(&state_1));
    for i in 0..3 {
        start_trip(&codec, &bootstrap, &group, &format!("old-{i}"));
    }
    assert!(eventually(WAIT, || {
        EventLog::read(&bootstrap, &codec, &group).finished() == 3
    }));
    assert!(first.terminate().success());

    let journal = format!("{group}.journal");
    sagaflow_tests::delete_topic(&bootstrap, &journal);
    let consumer: BaseConsumer = client_config(&bootstrap).create().expect("consumer");
    assert!(
        eventually(WAIT, || consumer
            .fetch_metadata(Some(&journal), Duration::from_secs(5))
            .is_ok_and(|m| m
                .topics()
                .iter()
                .all(|t| t.partitions().is_empty()))),
        "{journal} was never deleted"
    );
    // The new node creates the journal again, empty, and restores from the old changelog.
    let (second, _) = spawn_engine("engine-2", &opts(&state_2));
    assert!(
        eventually(WAIT, || second
            .stderr_so_far()
            .contains("it was deleted and created again, or lost records")),
        "the restore did not refuse the new journal:\n{}",
        second.stderr_so_far()
    );
}

/// Creates `topic` compacted as eagerly as Apache Kafka allows: segments roll every 100 ms (the
/// cleaner never touches the active one), and any dirty share is worth cleaning. Tombstones stay
/// a minute, so that a test sees them before they go.
fn create_eagerly_compacted(bootstrap: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "100")
        .set("min.cleanable.dirty.ratio", "0.001")
        .set("delete.retention.ms", "60000")
        .set("min.compaction.lag.ms", "0");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(&[new], &AdminOptions::new()))
        .expect("create topics");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("cannot create {name}: {code}"));
    }
}

/// On Apache Kafka the broker compacts the changelog. Sagas that ended and expired leave only
/// tombstones (or nothing) there; sagas still running leave their latest state. A new node that
/// restores from that changelog finishes every running saga exactly once, and no deleted saga
/// comes back.
#[test]
fn a_restore_from_a_changelog_the_broker_compacted_loses_nothing() {
    if !sagaflow_tests::on_kafka_only(
        "a_restore_from_a_changelog_the_broker_compacted_loses_nothing",
        "tansu 0.6 never compacts a topic",
    ) {
        return;
    }
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    // Only the trip (no attempt timeouts), so that finished sagas may expire within seconds.
    let space = Space::new("compacted").only(&["trip.yaml"]);
    let group = space.group.clone();
    let changelog = format!("{group}.changelog");
    create_eagerly_compacted(&bootstrap, &changelog, 2);
    let (state_1, state_2) = (TempDir::new("compacted-1"), TempDir::new("compacted-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 2);
    let retention = [
        ("SAGAFLOW_FINISHED_RETENTION_MS", "500"),
        ("SAGAFLOW_DEDUPE_WINDOW_MS", "1000"),
    ];
    let (mut first, metrics) =
        sagaflow_tests::spawn_engine_env("engine-1", &opts(&state_1), &retention);
    let done: Vec<String> = (0..30).map(|i| format!("done-{i}")).collect();
    let participants = trip_participants(&space, &bootstrap, &registry_url);
    for id in &done {
        start_trip(&codec, &bootstrap, &group, id);
    }
    assert!(
        eventually(WAIT, || sagaflow_tests::metric(
            &metrics,
            "sagaflow_finished_sagas_deleted_total"
        ) == 30.0),
        "the finished sagas did not expire"
    );
    // Without participants these wait for their payment, and their states stay.
    drop(participants);
    let open: Vec<String> = (0..20).map(|i| format!("open-{i}")).collect();
    for id in &open {
        start_trip(&codec, &bootstrap, &group, id);
    }
    assert!(eventually(WAIT, || sagaflow_tests::metric(
        &metrics,
        "sagaflow_sagas_started_total"
    ) == 50.0));

    // The expired sagas' records in the changelog, and whether any of them is a state.
    let expired = || {
        let records = sagaflow_tests::read_to_watermarks(&bootstrap, &changelog);
        let done: Vec<bool> = records
            .iter()
            .filter(|r| r.key.as_deref().is_some_and(|k| k.starts_with(b"done-")))
            .map(|r| r.value.is_some())
            .collect();
        (done.len(), done.iter().any(|state| *state))
    };
    let tombstoned = || {
        let mut last = std::collections::HashMap::new();
        for r in sagaflow_tests::read_to_watermarks(&bootstrap, &changelog) {
            if let Some(key) = r.key.filter(|k| k.starts_with(b"done-")) {
                let _ = last.insert(key, r.value.is_none());
            }
        }
        last.values().filter(|gone| **gone).count() == 30
    };
    assert!(
        eventually(WAIT, tombstoned),
        "the expired sagas have no tombstones in {changelog}"
    );
    // Each expired saga wrote states, then a tombstone: once none of its states is left, the
    // cleaner has run (it may have run already; the engine writes nothing more on Kafka that
    // would make it run again).
    // A record now and then rolls the segment: Kafka never compacts the active one.
    let producer = sagaflow_tests::producer(&bootstrap);
    let compacted = eventually(Duration::from_secs(180), || {
        sagaflow_tests::send(&producer, &changelog, "__test-filler", b"roll");
        !expired().1
    });
    assert!(
        compacted,
        "the broker never compacted {changelog}: {:?} left (records, any a state)",
        expired()
    );
    assert!(first.terminate().success());

    let (_second, metrics) = spawn_engine("engine-2", &opts(&state_2));
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    let finished = || {
        let log = EventLog::read(&bootstrap, &codec, &group);
        log.unfinished(&open).is_empty()
    };
    assert!(
        eventually(WAIT, finished),
        "sagas running at the hand-over did not finish after a restore from the compacted changelog"
    );
    let log = EventLog::read(&bootstrap, &codec, &group);
    sagaflow_tests::trips::check_events(&log, &open);
    sagaflow_tests::trips::check_events(&log, &done);
    // A deleted saga stays deleted: a start for its id is a new saga, not a duplicate.
    start_trip(&codec, &bootstrap, &group, "done-0");
    assert!(eventually(WAIT, || sagaflow_tests::metric(
        &metrics,
        "sagaflow_sagas_started_total"
    ) == 1.0));
    assert_eq!(
        sagaflow_tests::metric(
            &metrics,
            "sagaflow_inputs_ignored_total{reason=\"duplicate_start\"}"
        ),
        0.0
    );
}

/// Changelog batches (`engine/runtime/src/batches.rs`). Sagas that end soon get no changelog
/// record of their own: their states share batch records. A saga still waiting a minute after
/// its state was flushed gets one, and the batches whose sagas all moved on are deleted. A new
/// node restores from both kinds: the waiting sagas finish once, and a finished saga's start
/// sent again is a duplicate, as its final state came back from a batch.
#[test]
fn finished_sagas_share_changelog_records_and_a_new_node_restores_them() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("batches").only(&["trip.yaml"]);
    let group = space.group.clone();
    let changelog = format!("{group}.changelog");
    let (state_1, state_2) = (TempDir::new("batches-1"), TempDir::new("batches-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    let metric = sagaflow_tests::metric;
    let (mut first, metrics) = spawn_engine("engine-1", &opts(&state_1));
    let participants = trip_participants(&space, &bootstrap, &registry_url);
    let done: Vec<String> = (0..20).map(|i| format!("done-{i}")).collect();
    for id in &done {
        start_trip(&codec, &bootstrap, &group, id);
    }
    assert!(
        eventually(WAIT, || EventLog::read(&bootstrap, &codec, &group)
            .unfinished(&done)
            .is_empty()),
        "the first sagas did not finish"
    );
    // Without participants these wait for their payment.
    drop(participants);
    let open: Vec<String> = (0..5).map(|i| format!("open-{i}")).collect();
    for id in &open {
        start_trip(&codec, &bootstrap, &group, id);
    }
    assert!(eventually(WAIT, || metric(
        &metrics,
        "sagaflow_sagas_started_total"
    ) == 25.0));
    let records = || sagaflow_tests::read_to_watermarks(&bootstrap, &changelog);
    let states = || sagaflow_tests::changelog_states(&records());
    let flushed = |ids: &[String], own_key: bool| {
        let states = states();
        ids.iter().all(|id| {
            states
                .iter()
                .any(|s| &s.saga_id == id && (!own_key || s.batch.is_none()))
        })
    };
    assert!(
        eventually(WAIT, || flushed(&done, false) && flushed(&open, false)),
        "the sagas' states never reached the changelog"
    );
    let own: Vec<String> = states()
        .into_iter()
        .filter(|s| s.batch.is_none() && done.contains(&s.saga_id))
        .map(|s| s.saga_id)
        .collect();
    assert!(
        own.is_empty(),
        "finished sagas got changelog records of their own: {own:?}"
    );
    let deleted_batches = || {
        records()
            .iter()
            .filter(|r| {
                r.value.is_none() && r.key.as_deref().is_some_and(|k| k.starts_with(b"__batch/"))
            })
            .count()
    };
    assert!(
        eventually(Duration::from_secs(180), || flushed(&open, true)
            && deleted_batches() > 0),
        "a minute on, the waiting sagas have no changelog records of their own ({}), or no batch was deleted ({})",
        flushed(&open, true),
        deleted_batches()
    );
    // What the changelog shows, the engine counts.
    let batches_in_log = records()
        .iter()
        .filter(|r| {
            r.value.is_some() && r.key.as_deref().is_some_and(|k| k.starts_with(b"__batch/"))
        })
        .count();
    let counted = |name| metric(&metrics, name);
    // Acknowledgements reach the engine a moment after the records are readable.
    assert!(
        batches_in_log > 0
            && eventually(WAIT, || counted("sagaflow_changelog_batches_written_total")
                >= batches_in_log as f64
                && counted("sagaflow_changelog_batches_deleted_total") > 0.0),
        "{} batches written and {} deleted counted, {batches_in_log} in the changelog",
        counted("sagaflow_changelog_batches_written_total"),
        counted("sagaflow_changelog_batches_deleted_total")
    );
    assert!(
        counted("sagaflow_changelog_batch_carries_total") > 0.0,
        "the waiting sagas got records of their own, yet no carry was counted"
    );
    assert!(first.terminate().success());

    // A new node, with nothing of its own, reads the changelog.
    let (_second, metrics) = spawn_engine("engine-2", &opts(&state_2));
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    let ids: Vec<String> = done.iter().chain(&open).cloned().collect();
    assert!(
        eventually(WAIT, || EventLog::read(&bootstrap, &codec, &group)
            .unfinished(&ids)
            .is_empty()),
        "the waiting sagas did not finish after a restore from the changelog"
    );
    assert_eq!(metric(&metrics, "sagaflow_changelog_restores_total"), 1.0);
    start_trip(&codec, &bootstrap, &group, "done-0");
    assert!(
        eventually(WAIT, || metric(
            &metrics,
            "sagaflow_inputs_ignored_total{reason=\"duplicate_start\"}"
        ) == 1.0),
        "a finished saga's start sent again was not recognised as a duplicate"
    );
    let log = EventLog::read(&bootstrap, &codec, &group);
    assert!(log.conflicts.is_empty(), "{:?}", log.conflicts);
    for id in &ids {
        let ends = log.sagas[id]
            .values()
            .filter(|e| e.event_type.settles())
            .count();
        assert_eq!(ends, 1, "{id} ended {ends} times");
    }
}

/// An engine that takes a partition back must delete in time the batches the other owner wrote
/// meanwhile (`engine/runtime/src/batches.rs`), which its own state does not know: it rebuilds
/// from the changelog. Each engine stops within the minute before its batches of running states
/// come due, so only the engine that ends up owning the partition can delete them, its own and
/// the other's. Its first try crashes when it meets the other's claim, before the rebuild: the
/// next one must meet the claim again (a replay that had stored it took the other owner's
/// state for its own, and carried on without a rebuild).
#[test]
fn an_engine_taking_a_partition_back_deletes_the_batches_written_meanwhile() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("take-back").only(&["trip.yaml"]);
    let group = space.group.clone();
    let changelog = format!("{group}.changelog");
    let (state_1, state_2) = (TempDir::new("take-back-1"), TempDir::new("take-back-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    // Without participants the trips wait for their payment: their running states stay in
    // batches until the owner carries them to keys of their own.
    let run = |name: &str, state: &TempDir, ids: &[String]| {
        let (mut engine, _) = spawn_engine(name, &opts(state));
        for id in ids {
            start_trip(&codec, &bootstrap, &group, id);
        }
        assert!(
            eventually(WAIT, || {
                let states = sagaflow_tests::changelog_states(&sagaflow_tests::read_to_watermarks(
                    &bootstrap, &changelog,
                ));
                ids.iter().all(|id| states.iter().any(|s| &s.saga_id == id))
            }),
            "{name}: the sagas' states never reached the changelog"
        );
        assert!(engine.terminate().success());
    };
    let first: Vec<String> = (0..10).map(|i| format!("one-{i}")).collect();
    let second: Vec<String> = (0..10).map(|i| format!("two-{i}")).collect();
    run("engine-1", &state_1, &first);
    run("engine-2", &state_2, &second);
    // The batches of running states, due within minutes (those of finished sagas are due a day on).
    let soon = sagaflow_avro::now_ms() + 600_000;
    let batches = || {
        let mut last = std::collections::BTreeMap::new();
        for r in sagaflow_tests::read_to_watermarks(&bootstrap, &changelog) {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            let due = key
                .strip_prefix("__batch/")
                .and_then(|rest| rest.split('/').next())
                .and_then(|at| at.parse::<i64>().ok());
            if due.is_some_and(|at| at < soon) {
                let _ = last.insert(key, r.value.is_some());
            }
        }
        last
    };
    let before = batches();
    assert!(
        before.values().filter(|live| **live).count() >= 2,
        "each engine should have left batches of running states: {before:?}"
    );
    let (mut crashing, _) = sagaflow_tests::spawn_engine_env(
        "engine-1-crashing",
        &opts(&state_1),
        &[(sagaflow_failpoints::ENV, "take-back-rebuild=return")],
    );
    assert!(
        eventually(WAIT, || crashing.exit_status().is_some()),
        "engine-1 never met engine-2's claim when it took the partition back"
    );
    let (_first_again, metrics) = spawn_engine("engine-1-again", &opts(&state_1));
    assert!(
        eventually(Duration::from_secs(180), || batches()
            .values()
            .all(|live| !live)),
        "batches of running states were never deleted: {:?}",
        batches()
    );
    assert_eq!(
        sagaflow_tests::metric(&metrics, "sagaflow_changelog_restores_total"),
        1.0,
        "engine-1 took the partition back from its own state"
    );
}

/// G3 on a compacting broker. A fenced owner (a zombie) flushes an old state of a saga after the
/// new owner flushed a newer one, and the broker's compaction then keeps only the zombie's record
/// (the last written). A new node restoring from that changelog must not bring the old state
/// back: here it would hold a saga that completed as still waiting for its payment, and fire its
/// deadline again.
#[test]
fn a_fenced_owners_late_flush_that_compaction_keeps_does_not_bring_an_old_state_back() {
    if !sagaflow_tests::on_kafka_only(
        "a_fenced_owners_late_flush_that_compaction_keeps_does_not_bring_an_old_state_back",
        "tansu 0.6 never compacts a topic, so the late flush never outlives the newer state",
    ) {
        return;
    }
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer as _};

    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    // The trip with a deadline: an old state of it, restored after the deadline, fires it.
    let deadline = Duration::from_secs(20);
    let trip = std::fs::read_to_string(sagaflow_tests::root().join("examples/trip.yaml"))
        .expect("examples/trip.yaml")
        .replacen("version: 1\n", "version: 1\ndeadline: 20s\n", 1);
    let space = Space::bare("late-flush");
    space.define("trip.yaml", &trip);
    let group = space.group.clone();
    let changelog = format!("{group}.changelog");
    create_eagerly_compacted(&bootstrap, &changelog, 1);
    let states = [
        TempDir::new("late-1"),
        TempDir::new("late-2"),
        TempDir::new("late-3"),
    ];
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 1);
    // Every state under its saga's key: what compaction can drop is a key's older record (a
    // batch has a key of its own, which only its owner deletes).
    let per_saga = [("SAGAFLOW_CHANGELOG_BATCHES", "false")];
    let records_of = |key: &str| -> Vec<sagaflow_tests::Record> {
        sagaflow_tests::read_to_watermarks(&bootstrap, &changelog)
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key.as_bytes()) && r.value.is_some())
            .collect()
    };
    let epoch_of = |r: &sagaflow_tests::Record| r.headers.get("sagaflow-epoch").cloned();

    // The first owner: "x" waits for its payment (no participants yet), and its state reaches
    // the changelog. This is the state the zombie will write again.
    let (mut first, _) = sagaflow_tests::spawn_engine_env("engine-1", &opts(&states[0]), &per_saga);
    let started = std::time::Instant::now();
    start_trip(&codec, &bootstrap, &group, "x");
    let mut old = None;
    assert!(
        eventually(WAIT, || {
            old = records_of("x").into_iter().next();
            old.is_some()
        }),
        "the first owner never flushed the saga's state"
    );
    let old = old.expect("old state");
    assert_eq!(epoch_of(&old).as_deref(), Some("1"), "{:?}", old.headers);
    assert!(first.terminate().success());

    // The second owner (epoch 2) finishes the saga and flushes its final state.
    let (mut second, _) =
        sagaflow_tests::spawn_engine_env("engine-2", &opts(&states[1]), &per_saga);
    let participants = trip_participants(&space, &bootstrap, &registry_url);
    assert!(eventually(WAIT, || EventLog::read(
        &bootstrap, &codec, &group
    )
    .finished()
        == 1));
    assert!(
        eventually(WAIT, || records_of("x")
            .iter()
            .any(|r| epoch_of(r).as_deref() == Some("2"))),
        "the second owner never flushed the final state"
    );
    // The zombie's late flush: the first owner's record again, as its relay would write it.
    let producer = sagaflow_tests::producer(&bootstrap);
    let mut headers = OwnedHeaders::new();
    for (name, value) in &old.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    producer
        .send(
            BaseRecord::to(&changelog)
                .partition(0)
                .key("x")
                .payload(old.value.as_deref().expect("state"))
                .headers(headers),
        )
        .map_err(|(e, _)| e)
        .expect("enqueue the late flush");
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert!(second.terminate().success());
    drop(participants);

    // Only the late record is left for "x" once the cleaner has run. Records after it roll the
    // segment that holds it: Kafka never compacts the active segment.
    let compacted = eventually(Duration::from_secs(180), || {
        sagaflow_tests::send(&producer, &changelog, "__test-filler", b"roll");
        let left = records_of("x");
        left.len() == 1 && epoch_of(&left[0]).as_deref() == Some("1")
    });
    assert!(
        compacted,
        "the broker never compacted {changelog} down to the late flush: {:?}",
        records_of("x")
            .iter()
            .map(|r| (r.offset, epoch_of(r)))
            .collect::<Vec<_>>()
    );
    // The old state's deadline is due by now: restored, it would fire at once.
    std::thread::sleep(deadline.saturating_sub(started.elapsed()));

    // A new node restores from the compacted changelog, and runs another saga to the end (by
    // then a deadline restored with the old state would have fired).
    let (_third, _) = sagaflow_tests::spawn_engine_env("engine-3", &opts(&states[2]), &per_saga);
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    start_trip(&codec, &bootstrap, &group, "y");
    assert!(eventually(WAIT, || EventLog::read(
        &bootstrap, &codec, &group
    )
    .finished()
        == 2));
    std::thread::sleep(Duration::from_secs(3));
    let log = EventLog::read(&bootstrap, &codec, &group);
    assert!(
        log.conflicts.is_empty(),
        "conflicting events: {:?}",
        log.conflicts
    );
    let x: Vec<_> = log.sagas["x"].values().map(|e| e.event_type).collect();
    let terminals = x.iter().filter(|t| t.settles()).count();
    assert_eq!(terminals, 1, "x ended {terminals} times: {x:?}");
    assert!(
        x.last().is_some_and(|t| t.settles()),
        "x has events after its end: {x:?}"
    );
}

/// Standby replicas. With `standby = true`, an engine keeps a copy of the partition another
/// engine owns; when that engine stops, the survivor takes the partition over from its copy and
/// reads only the journal after the copy's checkpoint, never the whole changelog. Every saga
/// running at the hand-over then finishes exactly once.
#[test]
fn a_standby_copy_takes_a_partition_over_without_reading_the_changelog() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::new("standby").only(&["trip.yaml"]);
    let group = space.group.clone();
    let (state_1, state_2) = (TempDir::new("standby-1"), TempDir::new("standby-2"));
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, 2);
    let standby = [("SAGAFLOW_STANDBY", "true")];
    let (mut first, _) = sagaflow_tests::spawn_engine_env("engine-1", &opts(&state_1), &standby);
    let metric = sagaflow_tests::metric;
    // Without participants the trips wait for their first reply, and stay in the changelog.
    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    for id in &before {
        start_trip(&codec, &bootstrap, &group, id);
    }
    let (_second, metrics) =
        sagaflow_tests::spawn_engine_env("engine-2", &opts(&state_2), &standby);
    assert!(
        eventually(WAIT, || metric(&metrics, "sagaflow_partitions_owned") == 1.0
            && metric(&metrics, "sagaflow_standby_partitions_ready") == 1.0),
        "engine 2 never owned one partition with a ready standby copy of the other: {} owned, {} ready",
        metric(&metrics, "sagaflow_partitions_owned"),
        metric(&metrics, "sagaflow_standby_partitions_ready")
    );
    // Sagas after the copy was ready: the takeover finds them in the copy or in the journal.
    let after: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    for id in &after {
        start_trip(&codec, &bootstrap, &group, id);
    }
    let log_has = |ids: &[String]| {
        let log = EventLog::read(&bootstrap, &codec, &group);
        ids.iter().all(|id| log.sagas.contains_key(id))
    };
    assert!(
        eventually(WAIT, || log_has(&after)),
        "the later sagas never started"
    );
    let full_reads = metric(&metrics, "sagaflow_changelog_restores_total");
    let restores = metric(&metrics, "sagaflow_restores_total");
    assert!(first.terminate().success());

    assert!(
        eventually(WAIT, || metric(&metrics, "sagaflow_partitions_owned")
            == 2.0),
        "engine 2 never took the other partition over"
    );
    assert!(metric(&metrics, "sagaflow_restores_total") > restores);
    assert_eq!(
        metric(&metrics, "sagaflow_changelog_restores_total"),
        full_reads,
        "a takeover read the whole changelog although a standby copy was ready"
    );
    let _participants = trip_participants(&space, &bootstrap, &registry_url);
    let ids: Vec<String> = before.iter().chain(&after).cloned().collect();
    assert!(
        eventually(WAIT, || EventLog::read(&bootstrap, &codec, &group)
            .unfinished(&ids)
            .is_empty()),
        "sagas running at the hand-over did not finish after the takeover from the standby copy"
    );
    let log = EventLog::read(&bootstrap, &codec, &group);
    sagaflow_tests::trips::check_events(&log, &ids);
}

/// A new node that is still restoring from the changelog when another one joins: the group
/// rebalances as soon as the restores end, so the partitions it restored and claimed move on at
/// once, half of them to a node that restores them again. Every saga, its timer due around the
/// hand-overs, still ends exactly once, with a gapless seq.
#[test]
fn a_node_joining_during_a_long_restore_takes_its_share_and_nothing_repeats() {
    let (_broker, bootstrap, _registry, registry_url, codec) = broker_with_registry();
    let space = Space::bare("join-restore");
    // Long enough to outlast the restores and the rebalance on a slow runner, so that the
    // timers fire under the final owners or during the hand-over, never before it.
    space.define(
        "sleeper.yaml",
        "name: sleeper\nversion: 1\nsteps:\n  - name: nap\n    wait: 40s\n",
    );
    let group = space.group.clone();
    let states = [
        TempDir::new("join-restore-1"),
        TempDir::new("join-restore-2"),
        TempDir::new("join-restore-3"),
    ];
    let partitions = 4;
    let opts = |state: &TempDir| space.engine_opts(&bootstrap, &registry_url, state, partitions);
    let metric = sagaflow_tests::metric;

    let (mut first, metrics_1) = spawn_engine("engine-1", &opts(&states[0]));
    assert!(
        eventually(WAIT, || metric(&metrics_1, "sagaflow_partitions_owned")
            == f64::from(partitions)),
        "engine-1 never owned every partition"
    );
    // 150 per partition on average: two restore chunks (of 128) each, with the pause between.
    let ids: Vec<String> = (0..600).map(|i| format!("nap-{i:03}")).collect();
    let p = sagaflow_tests::producer(&bootstrap);
    for id in &ids {
        sagaflow_tests::start_saga(&codec, &p, &group, "sleeper", id, &serde_json::json!({}));
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(60)).expect("flush starts");
    assert!(
        eventually(WAIT, || EventLog::snapshot(&bootstrap, &codec, &group)
            .sagas
            .len()
            == ids.len()),
        "not every sleeper started"
    );
    // A clean stop writes every state to the changelog.
    assert!(first.terminate().success(), "engine-1 did not stop cleanly");

    // A new node whose restore pauses 2 s between chunks: about 8 s for the four partitions.
    let (second, metrics_2) = sagaflow_tests::spawn_engine_env(
        "engine-2",
        &opts(&states[1]),
        &[
            (sagaflow_failpoints::ENV, "restore-chunk=sleep(2000)"),
            ("SAGAFLOW_LOG", "warn,sagaflow_runtime::processor=info"),
        ],
    );
    assert!(
        eventually(WAIT, || second
            .stderr_so_far()
            .contains("partitions assigned; restoring")),
        "engine-2 never began restoring"
    );
    let (_third, metrics_3) = spawn_engine("engine-3", &opts(&states[2]));
    assert!(
        eventually(WAIT, || metric(&metrics_2, "sagaflow_partitions_owned")
            == 2.0
            && metric(&metrics_3, "sagaflow_partitions_owned") == 2.0),
        "the partitions were not shared after the restore: engine-2 owns {}, engine-3 {}",
        metric(&metrics_2, "sagaflow_partitions_owned"),
        metric(&metrics_3, "sagaflow_partitions_owned")
    );
    let restored_2 = metric(&metrics_2, "sagaflow_changelog_restores_total");
    assert!(
        restored_2 >= f64::from(partitions),
        "engine-2 read the changelog for {restored_2} partitions, not all {partitions}: engine-3 \
         joined before engine-2's restore began, and the test did not exercise a join during it"
    );
    assert!(
        metric(&metrics_3, "sagaflow_changelog_restores_total") >= 2.0,
        "engine-3 took its partitions over without restoring them"
    );

    let log = sagaflow_tests::trips::wait_finished(&bootstrap, &codec, &group, &ids);
    let terminals = sagaflow_tests::trips::check_ended_once(&log, &ids);
    for (id, terminal) in ids.iter().zip(terminals) {
        assert_eq!(terminal, sagaflow_avro::EventType::SagaCompleted, "{id}");
    }
}
