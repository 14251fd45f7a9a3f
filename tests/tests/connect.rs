//! The Kafka Connect configurations of `connect/`, each on a real Kafka Connect 4.4 worker with
//! Debezium 3.6's connectors (`scripts/connect.sh`), the test's Apache Kafka and a PostgreSQL of
//! its own.
//!
//! Apache Kafka only: Connect's distributed worker keeps its configurations and source offsets in
//! compacted topics, and tansu 0.6 never compacts a topic.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::Message;
use sagaflow_avro::{
    BlockingCodec, Command, EventType as E, Phase, RegistrySettings, Reply, Subject,
};
use sagaflow_tests::connect::{connect_script, prepare_postgres, Connect};
use sagaflow_tests::pg::Postgres;
use sagaflow_tests::trips::{check_events, now_ms, rig, stream_trips, wait_finished};
use sagaflow_tests::{
    client_config, eventually, metric, on_kafka_only, read_all, root, spawn_engine,
    spawn_participant, trip_participants, EventLog,
};
use serde_json::{json, Value};

const WHY: &str = "Kafka Connect keeps its configurations and source offsets in compacted topics, which tansu 0.6 never compacts";

/// `connect/NAME.json` with each `${KEY}` replaced by its value in `vars`; panics on a
/// placeholder left unset, so that the test and the file cannot drift apart.
fn connector_config(name: &str, vars: &[(&str, &str)]) -> Value {
    let mut text = std::fs::read_to_string(root().join(format!("connect/{name}.json")))
        .expect("a connector configuration");
    for (key, value) in vars {
        text = text.replace(&format!("${{{key}}}"), value);
    }
    assert!(
        !text.contains("${"),
        "connect/{name}.json has a placeholder the test does not set:\n{text}"
    );
    serde_json::from_str(&text).expect("connect/*.json is JSON")
}

/// The hotel participant of the trip, replying only through its database: for each command, in
/// one transaction, it books (or cancels) in `hotel_bookings` and writes the reply, Avro in the
/// Confluent wire format, into `outbox`. It never produces to Kafka: Debezium's outbox router
/// (connect/outbox-router.json) delivers the replies. The consumer offset is committed after the
/// transaction, so a crash between the two handles the command again, and the booking's key
/// (the command's idempotency key) makes that a no-op that answers again.
fn outbox_hotel(
    bootstrap: String,
    registry_url: String,
    topic: String,
    database_url: String,
    stop: Arc<AtomicBool>,
    handled: Arc<AtomicUsize>,
    allowed: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = client_config(&bootstrap)
            .set("group.id", format!("{topic}.outbox-hotel"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let codec =
            BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
        let mut db = postgres::Client::connect(&database_url, postgres::NoTls).expect("connect");
        while !stop.load(Ordering::Relaxed) {
            // Holds further commands once `allowed` are handled.
            if handled.load(Ordering::Relaxed) >= allowed.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message.expect("consume a hotel command");
            let command: Command = codec
                .decode(message.payload().expect("a command"))
                .expect("decode a hotel command");
            let booking = format!("ht-{}", command.saga_id);
            let mut tx = db.transaction().expect("begin");
            match command.phase {
                Phase::Forward => tx
                    .execute(
                        "INSERT INTO hotel_bookings (idempotency_key, saga_id, booking_id) VALUES ($1, $2, $3) \
                         ON CONFLICT (idempotency_key) DO NOTHING",
                        &[&command.idempotency_key, &command.saga_id, &booking],
                    )
                    .expect("book"),
                Phase::Compensate => tx
                    .execute(
                        "UPDATE hotel_bookings SET cancelled = true WHERE booking_id = $1",
                        &[&booking],
                    )
                    .expect("cancel"),
            };
            let reply = Reply::answering(
                &command,
                Ok(json!({"booking_id": booking}).to_string()),
                now_ms(),
            );
            let payload = codec
                .encode(Subject::Topic(&command.reply_to), &reply)
                .expect("encode a reply");
            tx.execute(
                "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) \
                 VALUES (gen_random_uuid(), 'hotel', $1, 'reply', $2)",
                &[&command.saga_id, &payload],
            )
            .expect("write the reply into the outbox");
            tx.commit().expect("commit");
            consumer
                .commit_message(&message, CommitMode::Sync)
                .expect("commit the command's offset");
            handled.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// The trip saga completes with the hotel replying only through a database outbox and Debezium's
/// outbox router, and a Kafka Connect crash mid-run (SIGKILL before it committed the source
/// offsets of what it delivered) duplicates no step: the router delivers those replies again, and
/// the engine ignores the copies.
#[test]
fn a_participant_replying_through_a_database_outbox_completes_trips_across_a_connect_crash() {
    if !on_kafka_only("the outbox router", WHY) {
        return;
    }
    let rig = rig("outbox", 4);
    let bootstrap = rig.broker.bootstrap();
    let pg = Postgres::start("outbox");
    let debezium_url = prepare_postgres(pg.dir());
    let mut db = pg.client("public");
    db.batch_execute(
        "CREATE TABLE hotel_bookings (idempotency_key text PRIMARY KEY, saga_id text NOT NULL, \
           booking_id text NOT NULL UNIQUE, cancelled boolean NOT NULL DEFAULT false);
         CREATE TABLE outbox (id uuid PRIMARY KEY, aggregatetype text NOT NULL, \
           aggregateid text NOT NULL, type text NOT NULL, payload bytea NOT NULL);",
    )
    .expect("create the participant's tables");
    let pg_dir = pg.dir().display().to_string();
    let _ = connect_script(&["publish", &pg_dir, "sagaflow_outbox", "public.outbox"]);

    // The engine first: it creates `<group>.replies` with its partitions before the router could
    // create it with the broker's defaults.
    let (_engine, metrics) = spawn_engine("outbox-engine", &rig.opts);
    // Source offsets committed every ten minutes, not every second: the crash below then comes
    // before any commit, so everything delivered so far is delivered again, and the engine's
    // dedupe is put to work for certain.
    let mut connect = Connect::start_with(
        "outbox",
        &bootstrap,
        &[("offset.flush.interval.ms", "600000")],
    );
    let port = debezium_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(port, _)| port.to_string())
        .expect("a port in the Debezium URL");
    let replies_topic = rig.space.topic("replies");
    let slot = format!("sagaflow_{}", rig.space.group.replace(['-', '.'], "_"));
    connect.put_connector(
        "hotel-outbox",
        &connector_config(
            "outbox-router",
            &[
                ("DATABASE_HOST", "127.0.0.1"),
                ("DATABASE_PORT", &port),
                ("DATABASE_USER", "debezium"),
                ("DATABASE_PASSWORD", "debezium"),
                ("DATABASE_NAME", "sagaflow"),
                ("TOPIC_PREFIX", &rig.space.group),
                ("SLOT", &slot),
                ("PUBLICATION", "sagaflow_outbox"),
                ("OUTBOX_TABLE", "public.outbox"),
                ("REPLIES_TOPIC", &replies_topic),
            ],
        ),
    );

    let _participants: Vec<_> = ["payment", "flight", "notify"]
        .iter()
        .map(|role| {
            let topic = rig.space.role_topic(role);
            spawn_participant(&bootstrap, &rig.registry_url, role, &["--topic", &topic])
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(AtomicUsize::new(0));
    let ids: Vec<String> = (0..60).map(|i| format!("ob-{i:03}")).collect();
    // A third of the hotel bookings go through before the crash, the rest after it: held back
    // here rather than timed, so that the crash falls mid-stream on a machine of any speed (on
    // a loaded one, Connect once delivered every reply in one batch before the test looked).
    let allowed = Arc::new(AtomicUsize::new(ids.len() / 3));
    let hotel = outbox_hotel(
        bootstrap.clone(),
        rig.registry_url.clone(),
        rig.space.role_topic("hotel"),
        pg.url.clone(),
        stop.clone(),
        handled.clone(),
        allowed.clone(),
    );

    let starts = stream_trips(
        bootstrap.clone(),
        rig.registry_url.clone(),
        rig.space.group.clone(),
        ids.clone(),
        10,
    );
    // Crash Connect once the first third of the hotel replies are on the replies topic: what it
    // delivered since its last offset commit (none, see above) comes again after the restart,
    // and the rest after them.
    let hotel_replies = || {
        read_all(&bootstrap, &replies_topic)
            .iter()
            .filter_map(|r| rig.codec.decode::<Reply>(r.value.as_deref()?).ok())
            .filter(|reply| reply.step == "hotel")
            .count()
    };
    let mut before_crash = 0;
    assert!(
        eventually(Duration::from_secs(120), || {
            before_crash = hotel_replies();
            before_crash >= ids.len() / 3
        }),
        "{before_crash} hotel replies delivered; the outbox participant handled {}; metrics: {metrics}; worker log:\n{}",
        handled.load(Ordering::Relaxed),
        tail(&connect.log(), 40)
    );
    let crashed = Instant::now();
    connect.kill9_and_restart();
    allowed.store(usize::MAX, Ordering::Relaxed);
    eprintln!(
        "Kafka Connect killed and restarted after it delivered {before_crash} hotel replies, in {:?}",
        crashed.elapsed()
    );
    starts.join().expect("starts sent");

    let log = wait_finished(&bootstrap, &rig.codec, &rig.space.group, &ids);
    stop.store(true, Ordering::Relaxed);
    hotel.join().expect("the outbox participant");
    let _ = check_events(&log, &ids);
    let outbox_rows: i64 = db
        .query_one("SELECT count(*) FROM outbox", &[])
        .expect("count")
        .get(0);
    for id in &ids {
        let events: Vec<_> = log.sagas[id].values().collect();
        assert_eq!(
            events.last().map(|e| e.event_type),
            Some(E::SagaCompleted),
            "{id} did not complete: {events:?}"
        );
        let hotel_successes = events
            .iter()
            .filter(|e| e.event_type == E::StepSucceeded && e.step.as_deref() == Some("hotel"))
            .count();
        assert_eq!(
            hotel_successes, 1,
            "{id}: the hotel step succeeded {hotel_successes} times"
        );
    }
    assert!(
        before_crash < ids.len(),
        "every hotel reply went out before the crash: the test proved nothing"
    );

    // What the router delivered: each outbox row at least once, as the participant stored it.
    let replies: Vec<_> = read_all(&bootstrap, &replies_topic)
        .into_iter()
        .filter_map(|r| {
            let reply: Reply = rig.codec.decode(r.value.as_deref()?).ok()?;
            (reply.step == "hotel").then_some((r.key, reply))
        })
        .collect();
    for (key, reply) in &replies {
        assert_eq!(
            key.as_deref(),
            Some(reply.saga_id.as_bytes()),
            "a reply keyed by its saga id"
        );
    }
    let delivered: BTreeSet<String> = replies.iter().map(|(_, r)| r.message_id.clone()).collect();
    let stored: BTreeSet<String> = db
        .query("SELECT payload FROM outbox", &[])
        .expect("read the outbox")
        .iter()
        .map(|row| {
            let reply: Reply = rig
                .codec
                .decode(row.get::<_, &[u8]>(0))
                .expect("an outbox reply");
            reply.message_id
        })
        .collect();
    assert_eq!(
        delivered, stored,
        "the router delivered exactly the outbox's replies"
    );
    let again = replies.len() - delivered.len();
    eprintln!(
        "{outbox_rows} outbox rows, {} replies delivered ({again} of them again after the crash), {} sagas completed",
        replies.len(),
        ids.len()
    );
    assert!(
        again > 0,
        "no reply was delivered twice: the crash did not exercise the engine's dedupe"
    );
    // Each copy was recognised and not applied (a reply to an attempt already answered, or to a
    // saga already ended).
    let ignored = || {
        [
            "duplicate_reply",
            "stale_reply",
            "late_reply",
            "saga_finished",
        ]
        .iter()
        .map(|r| {
            metric(
                &metrics,
                &format!("sagaflow_inputs_ignored_total{{reason=\"{r}\"}}"),
            )
        })
        .sum::<f64>()
    };
    assert!(
        eventually(Duration::from_secs(30), || ignored() >= again as f64),
        "{again} replies were delivered again, but the engine ignored {} inputs",
        ignored()
    );
    let _ = connect_script(&["drop-slot", &pg_dir, &slot]);
}

/// The event log lands in a warehouse table: Debezium's JDBC sink reads `<group>.events` through
/// Sagaflow's Avro converter (connect/converter) and upserts one row per event, keyed by
/// (saga_id, seq); every row equals its event, field by field.
#[test]
fn the_jdbc_sink_writes_the_event_log_into_a_warehouse_table() {
    if !on_kafka_only("the event-log sink", WHY) {
        return;
    }
    let rig = rig("event-sink", 4);
    let bootstrap = rig.broker.bootstrap();
    let (_engine, _metrics) = spawn_engine("event-sink-engine", &rig.opts);
    let _participants = trip_participants(&rig.space, &bootstrap, &rig.registry_url);
    let ids: Vec<String> = (0..30).map(|i| format!("es-{i:03}")).collect();
    let starts = stream_trips(
        bootstrap.clone(),
        rig.registry_url.clone(),
        rig.space.group.clone(),
        ids.clone(),
        20,
    );
    starts.join().expect("starts sent");
    let finished = wait_finished(&bootstrap, &rig.codec, &rig.space.group, &ids);
    let at_least = finished.sagas.values().map(|s| s.len()).sum::<usize>();

    let pg = Postgres::start("event-sink");
    let connect = Connect::start("event-sink", &bootstrap);
    let port = pg
        .url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(port, _)| port.to_string())
        .expect("a port in the PostgreSQL URL");
    connect.put_connector(
        "event-log-sink",
        &connector_config(
            "event-log-sink",
            &[
                ("EVENTS_TOPIC", &rig.space.topic("events")),
                ("DATABASE_HOST", "127.0.0.1"),
                ("DATABASE_PORT", &port),
                ("DATABASE_NAME", "sagaflow"),
                ("DATABASE_USER", "postgres"),
                ("DATABASE_PASSWORD", ""),
                ("TABLE", "saga_events"),
                ("REGISTRY_URL", &rig.registry_url),
            ],
        ),
    );

    let mut db = pg.client("public");
    let mut rows = 0i64;
    let landed = eventually(Duration::from_secs(120), || {
        rows = db
            .query_one("SELECT count(*) FROM saga_events", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        rows >= at_least as i64
    });
    assert!(
        landed,
        "{rows} of {at_least} events in the table; worker log:\n{}",
        tail(&connect.log(), 40)
    );
    // The whole log as it is now (an event after the snapshot above would be in the table too),
    // once the table holds as many rows.
    let log = EventLog::read(&bootstrap, &rig.codec, &rig.space.group);
    let events: Vec<&sagaflow_avro::SagaEvent> =
        log.sagas.values().flat_map(|s| s.values()).collect();
    assert!(
        eventually(Duration::from_secs(60), || {
            rows = db
                .query_one("SELECT count(*) FROM saga_events", &[])
                .map(|r| r.get(0))
                .unwrap_or(0);
            rows == events.len() as i64
        }),
        "{rows} rows in the table for {} events in the log",
        events.len()
    );
    let table: Vec<Row> = db
        .query(
            "SELECT event_id, saga_id, seq, type, definition, version, step, attempt, at, \
                    detail_json, due, input_json, status, index_json \
             FROM saga_events ORDER BY saga_id COLLATE \"C\", seq",
            &[],
        )
        .expect("read the warehouse table")
        .iter()
        .map(|r| Row {
            event_id: r.get(0),
            saga_id: r.get(1),
            seq: r.get(2),
            event_type: r.get(3),
            definition: r.get(4),
            version: r.get(5),
            step: r.get(6),
            attempt: r.get(7),
            at: r.get(8),
            detail_json: r.get(9),
            due: r.get(10),
            input_json: r.get(11),
            status: r.get(12),
            index_json: r.get(13),
        })
        .collect();
    let expected: Vec<Row> = events
        .iter()
        .map(|e| Row {
            event_id: e.event_id.clone(),
            saga_id: e.saga_id.clone(),
            seq: e.seq,
            event_type: serde_json::to_value(e.event_type)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .expect("an event type symbol"),
            definition: e.definition.clone(),
            version: e.version,
            step: e.step.clone(),
            attempt: e.attempt,
            at: e.at,
            detail_json: e.detail_json.clone(),
            due: e.due,
            input_json: e.input_json.clone(),
            status: e.status.clone(),
            index_json: e.index_json.clone(),
        })
        .collect();
    assert_eq!(table.len(), expected.len());
    for (row, event) in table.iter().zip(&expected) {
        assert_eq!(row, event, "a warehouse row differs from its event");
    }
    eprintln!(
        "{} events of {} sagas in the warehouse table, each equal to the event log",
        table.len(),
        ids.len()
    );
}

/// A row of the warehouse table, and what it must hold: its event's fields.
#[derive(Debug, PartialEq)]
struct Row {
    event_id: String,
    saga_id: String,
    seq: i64,
    event_type: String,
    definition: String,
    version: i32,
    step: Option<String>,
    attempt: Option<i32>,
    at: i64,
    detail_json: Option<String>,
    due: Option<i64>,
    input_json: Option<String>,
    status: Option<String>,
    index_json: Option<String>,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
