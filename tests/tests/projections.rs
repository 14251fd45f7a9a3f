//! The read models on a real broker and a real PostgreSQL: the projection matches the event log
//! exactly, survives kill -9 mid-batch, equals a rebuild and a clean projection, answers the
//! BI queries of docs/bi.md, rides out a PostgreSQL outage, skips bad records to a dead-letter
//! topic, and serves a query API that schemathesis checks against its OpenAPI document.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer as _};
use sagaflow_avro::{EventType, SagaEvent};
use sagaflow_tests::pg::Postgres;
use sagaflow_tests::trips::{participants, rig, stream_trips, Rig};
use sagaflow_tests::{
    eventually, http_get, http_get_status, metric, producer, read_all, schemathesis, spawn_engine,
    wait_status, EventLog, Proc,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(300);

/// An event as the test compares it: saga, seq, type, step, attempt, time, status.
type EventRow = (
    String,
    i64,
    String,
    Option<String>,
    Option<i32>,
    i64,
    Option<String>,
);

fn projector(
    r: &Rig,
    pg: &Postgres,
    schema: &str,
    consumer_group: &str,
    batch: usize,
) -> (Proc, String) {
    let mut args = connection_args("projections", r, pg, schema);
    // The test binary's tests share one broker: a consumer group of the rig's own, so that no
    // two tests' projectors join one group.
    let consumer_group = format!("{}.{consumer_group}", r.space.group);
    args.extend(
        [
            "--consumer-group",
            &consumer_group,
            "--http-listen",
            "127.0.0.1:0",
            "--batch-max",
            &batch.to_string(),
            "--batch-wait-ms",
            "20",
        ]
        .map(String::from),
    );
    let p = Proc::spawn(&format!("projections-{schema}"), &args);
    let url = p.wait_line("projections:", Duration::from_secs(120));
    (p, url)
}

/// `sagaflow <command>` with the broker, registry, group, database and schema of the test.
fn connection_args(command: &str, r: &Rig, pg: &Postgres, schema: &str) -> Vec<String> {
    command
        .split(' ')
        .chain([
            "--bootstrap",
            &r.broker.bootstrap(),
            "--registry-url",
            &r.registry_url,
            "--group",
            &r.space.group,
            "--database-url",
            &pg.url,
            "--schema",
            schema,
        ])
        .map(String::from)
        .collect()
}

/// Starts trips `ids`, `per_second` of them a second, and returns once all are sent.
fn start_trips(r: &Rig, ids: &[String], per_second: u64) {
    stream_trips(
        r.broker.bootstrap(),
        r.registry_url.clone(),
        r.space.group.clone(),
        ids.to_vec(),
        per_second,
    )
    .join()
    .expect("starts");
}

/// The events the log holds, one per (saga, seq).
fn log_events(log: &EventLog) -> Vec<&SagaEvent> {
    log.sagas.values().flat_map(|s| s.values()).collect()
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).expect(sql).get(0)
}

/// Waits until the schema holds `events` events.
fn wait_projected(pg: &Postgres, schema: &str, events: usize) {
    let mut client = pg.client(schema);
    let mut seen = 0;
    assert!(
        eventually(WAIT, || {
            seen = count(&mut client, "SELECT count(*) FROM events");
            seen as usize >= events
        }),
        "{schema}: {seen}/{events} events projected"
    );
}

/// Every table, as sorted JSON rows: equal dumps mean equal read models.
fn dump(pg: &Postgres, schema: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mut client = pg.client(schema);
    let mut out = BTreeMap::new();
    for (table, order) in [
        ("sagas", "saga_id"),
        ("steps", "saga_id, step, phase, attempt"),
        ("events", "saga_id, seq"),
        ("daily_status_counts", "definition, day, status"),
        ("daily_durations", "definition, day, status, bucket"),
        ("projection_offsets", "topic, partition"),
    ] {
        let rows = client
            .query(
                &format!(
                    "SELECT row_to_json(t)::text FROM (SELECT * FROM {table} ORDER BY {order}) t"
                ),
                &[],
            )
            .expect("dump");
        let _ = out.insert(table, rows.iter().map(|r| r.get(0)).collect());
    }
    out
}

fn assert_same(
    a: &BTreeMap<&'static str, Vec<String>>,
    b: &BTreeMap<&'static str, Vec<String>>,
    what: &str,
) {
    for (table, rows) in a {
        let other = &b[table];
        if rows != other {
            let first = rows
                .iter()
                .zip(other)
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("\n  {x}\n  {y}"))
                .unwrap_or_default();
            panic!(
                "{what}: table {table} differs ({} vs {} rows){first}",
                rows.len(),
                other.len()
            );
        }
    }
}

fn terminal(log: &[&SagaEvent], saga: &str) -> Option<EventType> {
    log.iter()
        .filter(|e| e.saga_id == saga)
        .map(|e| e.event_type)
        .find(|t| t.settles())
}

#[test]
fn the_projection_matches_the_log_survives_kill_9_equals_a_rebuild_and_answers_bi_queries() {
    let r = rig("projections", 4);
    let pg = Postgres::start("projections");
    let (_engine, _) = spawn_engine("engine", &r.opts);
    let _participants = participants(&r.space, &r.broker.bootstrap(), &r.registry_url, &r.effects);
    let ids: Vec<String> = (0..120).map(|i| format!("p{i:03}")).collect();
    start_trips(&r, &ids, 60);

    // Projector A: small batches, killed -9 three times while it is committing batches.
    let (mut a, _) = projector(&r, &pg, "live", "proj-a", 7);
    let mut projected = 0;
    for kill in 0..3 {
        let mut client = pg.client("live");
        assert!(
            eventually(WAIT, || {
                let now = client
                    .query_one("SELECT count(*) FROM events", &[])
                    .map_or(0, |r| r.get::<_, i64>(0));
                now > projected && {
                    projected = now;
                    true
                }
            }),
            "projector A made no progress before kill {kill}"
        );
        std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 300));
        a.kill9();
        eprintln!("projector A killed with {projected}+ events projected");
        (a, _) = projector(&r, &pg, "live", "proj-a", 7);
    }
    let log =
        sagaflow_tests::trips::wait_finished(&r.broker.bootstrap(), &r.codec, &r.space.group, &ids);
    let events = log_events(&log);
    assert!(
        (projected as usize) < events.len(),
        "the kills came before the end of the log ({projected} of {} events)",
        events.len()
    );
    wait_projected(&pg, "live", events.len());

    // Exactly the event log: every (saga, seq) once, with its content.
    let mut client = pg.client("live");
    let rows = client
        .query(
            "SELECT saga_id, seq, type, step, attempt, (extract(epoch FROM at) * 1000)::int8, status
             FROM events ORDER BY saga_id, seq",
            &[],
        )
        .expect("events");
    let rows: Vec<EventRow> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    let mut expected: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.saga_id.clone(),
                e.seq,
                e.event_type.symbol().to_string(),
                e.step.clone(),
                e.attempt,
                e.at,
                e.status.clone(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(rows.len(), expected.len(), "events projected vs in the log");
    assert_eq!(rows, expected, "the events table is the event log");

    // Sagas: status, times and business keys as the log says.
    for id in &ids {
        let row = client
            .query_one(
                "SELECT status, (extract(epoch FROM started_at) * 1000)::int8,
                        (extract(epoch FROM ended_at) * 1000)::int8, duration_ms,
                        business_keys ->> 'customer', last_seq, current_step
                 FROM sagas WHERE saga_id = $1",
                &[id],
            )
            .expect("saga row");
        let saga = &log.sagas[id];
        let first = saga.values().next().expect("events");
        let last = saga.values().next_back().expect("events");
        let status: String = row.get(0);
        assert_eq!(Some(status.as_str()), last.status.as_deref(), "{id} status");
        assert_eq!(row.get::<_, i64>(1), first.at, "{id} started_at");
        assert_eq!(row.get::<_, Option<i64>>(2), Some(last.at), "{id} ended_at");
        assert_eq!(
            row.get::<_, Option<i64>>(3),
            Some(last.at - first.at),
            "{id} duration"
        );
        assert_eq!(
            row.get::<_, Option<String>>(4).as_deref(),
            Some(id.as_str()),
            "{id} key"
        );
        assert_eq!(row.get::<_, i64>(5), last.seq, "{id} last_seq");
        assert_eq!(
            row.get::<_, Option<String>>(6),
            None,
            "{id} ended: no current step"
        );
    }
    let compensated = ids
        .iter()
        .filter(|id| terminal(&events, id) == Some(EventType::SagaCompensated))
        .count();
    assert!(
        compensated > 0,
        "some trips compensated (30% of hotels refuse)"
    );

    // Projector B: a clean projection (big batches, no kills) into its own schema.
    let (mut b, _) = projector(&r, &pg, "clean", "proj-b", 5000);
    wait_projected(&pg, "clean", events.len());
    a.terminate();
    b.terminate();
    let live = dump(&pg, "live");
    assert_same(
        &live,
        &dump(&pg, "clean"),
        "killed -9 three times vs a clean projection",
    );

    // A rebuild from offset 0 swaps in the same tables.
    let out = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .args(connection_args("projections rebuild", &r, &pg, "live"))
        .output()
        .expect("run rebuild");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rebuild failed: {stderr}");
    assert!(
        stderr.contains("ETA") && stderr.contains("100%"),
        "progress shown: {stderr}"
    );
    assert!(
        stdout.contains(&format!("{} events projected", events.len())),
        "{stdout}"
    );
    assert_same(&live, &dump(&pg, "live"), "incremental vs rebuilt");

    // docs/bi.md: each query's answer, checked against the event log.
    let query = |name: &str| sagaflow_projections::bi_query(name).expect("a docs/bi.md query");
    let mut client = pg.client("live");
    let rows = client
        .query(query("completion_rate"), &[])
        .expect("completion_rate");
    let completed = ids
        .iter()
        .filter(|id| terminal(&events, id) == Some(EventType::SagaCompleted))
        .count() as i64;
    let (mut done, mut not_done) = (0i64, 0i64);
    for row in &rows {
        assert_eq!(row.get::<_, String>(0), "trip");
        done += row.get::<_, i64>(2);
        not_done += row.get::<_, i64>(3);
    }
    assert_eq!(
        (done, not_done),
        (completed, ids.len() as i64 - completed),
        "completion rate counts"
    );

    let rows = client
        .query(query("slowest_steps"), &[])
        .expect("slowest_steps");
    let mut longest: HashMap<String, i64> = HashMap::new();
    for saga in log.sagas.values() {
        let mut started: HashMap<(String, Option<i32>), i64> = HashMap::new();
        for e in saga.values() {
            let key = (e.step.clone().unwrap_or_default(), e.attempt);
            match e.event_type {
                EventType::StepDispatched | EventType::StepStarted => {
                    let _ = started.entry(key).or_insert(e.at);
                }
                EventType::StepSucceeded
                | EventType::StepFailed
                | EventType::StepRetryScheduled
                | EventType::StepTimedOut => {
                    if let Some(start) = started.remove(&key) {
                        let node = key.0.split(['/', '[']).next().unwrap_or("").to_string();
                        let max = longest.entry(node).or_default();
                        *max = (*max).max(e.at - start);
                    }
                }
                _ => {}
            }
        }
    }
    assert!(!rows.is_empty(), "slowest steps found");
    for row in &rows {
        let node: String = row.get(1);
        assert_eq!(
            Some(row.get::<_, i64>(5)),
            longest.get(&node).copied(),
            "max duration of {node}"
        );
    }

    let rows = client
        .query(query("top_failure_codes"), &[])
        .expect("top_failure_codes");
    let mut codes: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let _ = codes.insert(row.get(1), row.get(2));
    }
    let mut expected_codes: BTreeMap<String, i64> = BTreeMap::new();
    for id in &ids {
        if terminal(&events, id) != Some(EventType::SagaCompensated) {
            continue;
        }
        let code = log.sagas[id]
            .values()
            .filter(|e| e.event_type == EventType::StepFailed)
            .filter_map(|e| {
                let detail: Value = serde_json::from_str(e.detail_json.as_deref()?).ok()?;
                Some(detail.get("code")?.as_str()?.to_string())
            })
            .next_back();
        if let Some(code) = code {
            *expected_codes.entry(code).or_default() += 1;
        }
    }
    assert!(!expected_codes.is_empty());
    assert_eq!(
        codes, expected_codes,
        "failure codes of the sagas that did not complete"
    );

    // Nothing is stuck an hour; every saga is "stuck" a second after a made-up clock jump.
    let stuck = client.query(query("stuck"), &[]).expect("stuck");
    assert!(stuck.is_empty(), "no saga is stuck");
    client
        .execute("UPDATE sagas SET ended_at = NULL, updated_at = updated_at - interval '2 hours' WHERE saga_id = 'p000'", &[])
        .expect("age one saga");
    let stuck = client.query(query("stuck"), &[]).expect("stuck");
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].get::<_, String>(0), "p000");
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_the_query_api_matches_its_openapi_document() {
    let r = rig("projections-api", 2);
    let pg = Postgres::start("projections-api");
    let (_engine, _) = spawn_engine("engine", &r.opts);
    let _participants = participants(&r.space, &r.broker.bootstrap(), &r.registry_url, &r.effects);
    let (_p, url) = projector(&r, &pg, "sagaflow", "proj", 500);

    let ids: Vec<String> = (0..30).map(|i| format!("q{i:02}")).collect();
    start_trips(&r, &ids, 30);
    let log =
        sagaflow_tests::trips::wait_finished(&r.broker.bootstrap(), &r.codec, &r.space.group, &ids);
    wait_projected(&pg, "sagaflow", log_events(&log).len());

    // A record that is not a saga event, then a saga after it on the same partition (same key).
    let events_topic = format!("{}.events", r.space.group);
    let p = producer(&r.broker.bootstrap());
    p.send(
        BaseRecord::to(&events_topic)
            .key("after-junk")
            .payload(b"not avro".as_slice()),
    )
    .map_err(|(e, _)| e)
    .expect("send junk");
    p.flush(Duration::from_secs(30)).expect("flush");
    start_trips(&r, &["after-junk".to_string()], 1);
    let mut client = pg.client("sagaflow");
    assert!(
        eventually(WAIT, || client
            .query_opt(
                "SELECT 1 FROM sagas WHERE saga_id = 'after-junk' AND ended_at IS NOT NULL",
                &[]
            )
            .is_ok_and(|r| r.is_some())),
        "the saga after the bad record was projected to its end"
    );
    let dlq = format!("{}.projections.dlq", r.space.group);
    let mut letters = Vec::new();
    assert!(eventually(WAIT, || {
        letters = read_all(&r.broker.bootstrap(), &dlq);
        !letters.is_empty()
    }));
    assert_eq!(letters[0].value.as_deref(), Some(b"not avro".as_slice()));
    assert_eq!(letters[0].headers["sagaflow.reason"], "undecodable");
    assert_eq!(letters[0].headers["sagaflow.source.topic"], events_topic);
    let metrics = format!("{url}/metrics");
    assert_eq!(
        metric(
            &metrics,
            "sagaflow_projection_bad_events_total{reason=\"undecodable\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "sagaflow_projected_sagas_started_total{definition=\"trip\"}"
        ),
        31.0
    );
    let ended = metric(
        &metrics,
        "sagaflow_projected_sagas_ended_total{definition=\"trip\",status=\"COMPLETED\"}",
    ) + metric(
        &metrics,
        "sagaflow_projected_sagas_ended_total{definition=\"trip\",status=\"COMPENSATED\"}",
    );
    assert_eq!(ended, 31.0);
    assert!(
        metric(&metrics, "sagaflow_step_duration_seconds_count{definition=\"trip\",step=\"payment\",phase=\"forward\",outcome=\"SUCCEEDED\"}") >= 30.0,
        "{}",
        http_get(&metrics)
    );
    let started = Instant::now();
    assert!(eventually(WAIT, || metric(
        &metrics,
        "sagaflow_projection_lag_events{partition=\"0\"}"
    ) == 0.0));
    let (status, health) = http_get_status(&format!("{url}/health"));
    assert_eq!(status, 200, "{health}");
    assert!(
        health.starts_with("ok"),
        "{health} after {:?}",
        started.elapsed()
    );

    // Search: by business key, by status, paged by cursor.
    let page: Value =
        serde_json::from_str(&http_get(&format!("{url}/sagas?key=customer=q07"))).expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["items"][0]["saga_id"], "q07");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let body = http_get(&format!("{url}/sagas?definition=trip&limit=7{cursor}"));
        let page: Value = serde_json::from_str(&body).expect("json");
        for item in page["items"].as_array().expect("items") {
            seen.push(item["saga_id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    seen.sort();
    let mut all = ids.clone();
    all.insert(0, "after-junk".to_string());
    assert_eq!(seen, all, "cursor pages cover every saga once");
    let one: Value = serde_json::from_str(&http_get(&format!("{url}/sagas/q03"))).expect("json");
    let seqs: Vec<i64> = one["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=log.sagas["q03"].len() as i64).collect::<Vec<_>>(),
        "the whole timeline"
    );
    // A day before PostgreSQL's dates begin is no error: there is nothing before 1970.
    let (status, body) = http_get_status(&format!("{url}/stats/daily?from=-5000-01-01"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get_status(&format!("{url}/sagas?limit=0"));
    assert_eq!(status, 400);
    assert!(
        body.contains("`limit` must be a whole number from 1 to 500"),
        "{body}"
    );

    // schemathesis: every operation, positive and negative, against the document.
    schemathesis(&format!("{url}/openapi.json"), &[]);

    // A rebuild ends though the log never falls quiet (a record every 300 ms): it stops a
    // while after reaching the ends the log had when it began, and the live projector goes on.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, p, topic) = (writing.clone(), p, events_topic.clone());
        std::thread::spawn(move || {
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = p.send(
                    BaseRecord::to(&topic)
                        .key("live")
                        .payload(b"not avro".as_slice()),
                );
                p.flush(Duration::from_secs(30)).expect("flush");
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut rebuild = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .args(connection_args("projections rebuild", &r, &pg, "sagaflow"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run rebuild");
    let ended = eventually(Duration::from_secs(120), || {
        rebuild.try_wait().expect("rebuild status").is_some()
    });
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    if !ended {
        let _ = rebuild.kill();
    }
    assert!(ended, "the rebuild never ended on a log that kept growing");
    assert!(rebuild.wait().expect("rebuild").success());
}

#[test]
fn a_database_outage_shows_on_health_and_ends_by_itself_with_nothing_lost() {
    let r = rig("projections-outage", 2);
    let pg = Postgres::start("projections-outage");
    let (_engine, _) = spawn_engine("engine", &r.opts);
    let _participants = participants(&r.space, &r.broker.bootstrap(), &r.registry_url, &r.effects);
    let (mut p, url) = projector(&r, &pg, "sagaflow", "proj", 500);
    let health = format!("{url}/health");
    let metrics = format!("{url}/metrics");
    let finished = |ids: &[String]| {
        sagaflow_tests::trips::wait_finished(&r.broker.bootstrap(), &r.codec, &r.space.group, ids)
    };

    let before: Vec<String> = (0..10).map(|i| format!("b{i:02}")).collect();
    start_trips(&r, &before, 20);
    wait_projected(&pg, "sagaflow", log_events(&finished(&before)).len());
    let _ = wait_status(&health, 200, WAIT);

    // The database goes away while events keep coming.
    pg.stop();
    let during: Vec<String> = (0..10).map(|i| format!("d{i:02}")).collect();
    start_trips(&r, &during, 20);
    let degraded = wait_status(&health, 503, WAIT);
    assert!(degraded.starts_with("degraded: "), "{degraded}");
    assert_eq!(metric(&metrics, "sagaflow_projection_up"), 0.0);
    // Several of the projector's one-second retries: each finds the connection closed.
    std::thread::sleep(Duration::from_secs(5));

    // Back on the same port: the projector reconnects by itself and catches up.
    pg.restart();
    let all: Vec<String> = before.iter().chain(&during).cloned().collect();
    let log = finished(&all);
    let events = log_events(&log).len();
    wait_projected(&pg, "sagaflow", events);
    let ok = wait_status(&health, 200, WAIT);
    assert!(ok.starts_with("ok"), "{ok}");
    assert_eq!(metric(&metrics, "sagaflow_projection_up"), 1.0);
    p.terminate();
    // One line for the outage, not one per retry (it lasted seconds, the retries are a second
    // apart).
    let stderr = p.stderr_text();
    let failed = stderr
        .lines()
        .filter(|l| l.contains("reconnecting to PostgreSQL failed"))
        .count();
    assert_eq!(failed, 1, "the projector's log:\n{stderr}");

    // Nothing lost and nothing counted twice: a rebuild from offset 0 makes the same tables.
    let projected = dump(&pg, "sagaflow");
    assert_eq!(projected["events"].len(), events);
    let out = std::process::Command::new(sagaflow_tests::sagaflow_bin())
        .args(connection_args("projections rebuild", &r, &pg, "sagaflow"))
        .output()
        .expect("run rebuild");
    assert!(
        out.status.success(),
        "rebuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        &projected,
        &dump(&pg, "sagaflow"),
        "projected across an outage vs rebuilt",
    );
}
