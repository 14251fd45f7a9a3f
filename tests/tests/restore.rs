//! Restores that must not get stuck: local state older than the journal's retention.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, RegistrySettings};
use sagaflow_tests::{
    client_config, eventually, group, root, spawn_engine, spawn_registry, start_trip,
    trip_participants, Broker, EngineOpts, EventLog, TempDir,
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
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let (_registry, registry_url) = spawn_registry(&bootstrap);
    let codec = BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
    let group = group("retention");
    let (state_1, state_2) = (TempDir::new("retention-1"), TempDir::new("retention-2"));
    let opts = |state: &TempDir| EngineOpts {
        bootstrap: bootstrap.clone(),
        registry_url: registry_url.clone(),
        group: group.clone(),
        state_dir: state.path().to_path_buf(),
        definitions: root().join("examples"),
        partitions: 1,
    };
    let _participants = trip_participants(&bootstrap, &registry_url);
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
