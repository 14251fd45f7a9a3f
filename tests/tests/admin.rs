//! Admin commands on a real broker, sent with `sagaflow admin` as an operator would: an
//! incident repaired by a retry once the participant is back, a rejected command that exits
//! non-zero and is still on the log, a pause that holds a reply until resume, an abort, and a
//! bulk retry of 200 incidents found through the read models.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use sagaflow_avro::{
    BlockingCodec, Command, EventType as E, RegistrySettings, ReplyError, SagaEvent,
};
use sagaflow_tests::pg::Postgres;
use sagaflow_tests::{
    answer, command_consumer, eventually, http_get, producer, sagaflow_bin, spawn_engine,
    spawn_registry, Broker, EventLog, Proc, Space, TempDir, TestBroker,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

const REPAIR: &str = "
name: repair
version: 1
steps:
  - name: reserve
    command: {topic: t.admin.commands, type: reserve, payload: {slow: $.slow}}
    compensation: {topic: t.admin.commands, type: release}
    compensation_retry: {max_attempts: 1, backoff: {type: fixed, interval: 1s}}
  - name: charge
    command: {topic: t.admin.commands, type: charge, payload: {decline: $.decline}}
";

/// Answers every command: `charge` is declined when its payload says so, `release` fails while
/// `broken` is set, and `reserve` answers after 5 s when its payload says `slow` (time
/// enough to pause or abort the saga before it does).
fn participant(
    bootstrap: String,
    registry: String,
    topic: String,
    broken: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let codec = BlockingCodec::new(&RegistrySettings::new(registry.as_str())).expect("codec");
        let consumer = command_consumer(&bootstrap, &topic);
        let p = producer(&bootstrap);
        let mut due: Vec<(Instant, Command)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                if let Some(c) = m.payload().and_then(|v| codec.decode::<Command>(v).ok()) {
                    let payload: Value = serde_json::from_str(&c.payload_json).unwrap_or_default();
                    let delay = if payload["slow"] == true {
                        Duration::from_secs(5)
                    } else {
                        Duration::ZERO
                    };
                    due.push((Instant::now() + delay, c));
                }
            }
            let now = Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(at, _)| *at <= now);
            due = later;
            for (_, c) in ready {
                let payload: Value = serde_json::from_str(&c.payload_json).unwrap_or_default();
                let failure = match c.command_type.as_str() {
                    "charge" if payload["decline"] == true => Some("DECLINED"),
                    "release" if broken.load(Ordering::SeqCst) => Some("DOWN"),
                    _ => None,
                };
                let result = match failure {
                    None => Ok("{}".to_string()),
                    Some(code) => Err(ReplyError {
                        code: code.into(),
                        message: format!("{} refused", c.command_type),
                        retryable: false,
                    }),
                };
                answer(&codec, &p, &c, result);
            }
        }
    })
}

/// A broker, a registry and an engine running the repair definition, with its participant.
struct Rig {
    registry_url: String,
    space: Space,
    codec: BlockingCodec,
    /// Set: `release` fails.
    broken: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    worker: Option<std::thread::JoinHandle<()>>,
    // Dropped in this order: the engine and the registry stop before the broker does.
    _engine: Proc,
    _registry: Proc,
    _state: TempDir,
    broker: TestBroker,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn rig(name: &str, partitions: i32) -> Rig {
    let broker = Broker::for_test();
    let bootstrap = broker.bootstrap();
    let (registry, registry_url) = spawn_registry(&bootstrap);
    let space = Space::bare(name);
    space.define("repair.yaml", REPAIR);
    let state = TempDir::new(name);
    let opts = space.engine_opts(&bootstrap, &registry_url, &state, partitions);
    let (engine, _metrics) = spawn_engine("engine", &opts);
    let broken = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = participant(
        bootstrap,
        registry_url.clone(),
        space.topic("t.admin.commands"),
        broken.clone(),
        stop.clone(),
    );
    Rig {
        codec: BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec"),
        broker,
        registry_url,
        space,
        broken,
        stop,
        worker: Some(worker),
        _engine: engine,
        _registry: registry,
        _state: state,
    }
}

impl Rig {
    fn start(&self, ids: &[String], input: Value) {
        let p = producer(&self.broker.bootstrap());
        for id in ids {
            sagaflow_tests::start_saga(&self.codec, &p, &self.space.group, "repair", id, &input);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("flush");
    }

    fn log(&self) -> EventLog {
        EventLog::read(&self.broker.bootstrap(), &self.codec, &self.space.group)
    }

    /// Waits until saga `id` has had an event of type `what`.
    fn until(&self, id: &str, what: E) {
        let mut seen = Vec::new();
        let reached = eventually(WAIT, || {
            seen = self.log().types(id);
            seen.contains(&what)
        });
        assert!(reached, "{id} never had {what:?}: {seen:?}");
    }

    /// Runs `sagaflow admin <args>` as operator `ops-test`; returns whether it succeeded,
    /// stdout and stderr.
    fn admin(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(sagaflow_bin())
            .arg("admin")
            .args(args)
            .args(["--bootstrap", &self.broker.bootstrap()])
            .args(["--registry-url", &self.registry_url])
            .args(["--group", &self.space.group])
            .args(["--actor", "ops-test", "--wait-secs", "60"])
            .output()
            .expect("run sagaflow admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn detail(e: &SagaEvent) -> Value {
    serde_json::from_str(e.detail_json.as_deref().unwrap_or("null")).unwrap_or(Value::Null)
}

#[test]
fn operators_repair_pause_and_abort_sagas_with_sagaflow_admin() {
    let r = rig("admin", 2);
    let one = |id: &str| vec![id.to_string()];

    // A declined charge whose compensation fails for good: an incident.
    r.start(&one("inc"), json!({"decline": true, "slow": false}));
    r.until("inc", E::SagaIncident);
    // Cancel does not apply to it: the CLI fails and says why, and the log records it.
    let (ok, _, stderr) = r.admin(&["cancel", "inc", "--reason", "try cancel"]);
    assert!(!ok, "a rejected command exits non-zero");
    assert!(
        stderr.contains("compensation already failed"),
        "the rejection says why: {stderr}"
    );
    // The participant is back: the operator retries, and the saga ends compensated.
    r.broken.store(false, Ordering::SeqCst);
    let (ok, stdout, stderr) = r.admin(&["retry", "inc", "--output", "json"]);
    assert!(ok, "retry failed: {stdout} {stderr}");
    let answer: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(answer["outcome"], "applied");
    let types: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types[..2],
        ["ADMIN_COMMAND_APPLIED", "COMPENSATION_DISPATCHED"],
        "{answer}"
    );
    r.until("inc", E::SagaCompensated);
    let log = r.log();
    let inc: Vec<&SagaEvent> = log.sagas["inc"].values().collect();
    let rejected = inc
        .iter()
        .find(|e| e.event_type == E::AdminCommandRejected)
        .expect("the rejection is on the log");
    assert_eq!(detail(rejected)["actor"], "ops-test");
    assert_eq!(detail(rejected)["reason"], "try cancel");
    let applied = inc
        .iter()
        .find(|e| e.event_type == E::AdminCommandApplied)
        .expect("the retry is on the log");
    assert_eq!(detail(applied)["action"], "retry");
    assert_eq!(
        detail(applied)["request_id"],
        answer["request_id"],
        "the log names the request"
    );

    // A command for a saga nobody started is dead-lettered, and the CLI says so.
    let (ok, _, stderr) = r.admin(&["retry", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("unknown-saga"), "{stderr}");

    // Paused while its first step is in flight: the reply is held, nothing moves until resume.
    r.start(&one("held"), json!({"decline": false, "slow": true}));
    r.until("held", E::StepDispatched);
    let (ok, stdout, stderr) = r.admin(&["pause", "held", "--reason", "migrating"]);
    assert!(ok, "pause failed: {stdout} {stderr}");
    r.until("held", E::InputHeld);
    std::thread::sleep(Duration::from_secs(1));
    let before = r.log().types("held");
    assert_eq!(
        before.iter().filter(|t| **t == E::StepDispatched).count(),
        1,
        "nothing was sent while paused: {before:?}"
    );
    let (ok, stdout, stderr) = r.admin(&["resume", "held"]);
    assert!(ok, "resume failed: {stdout} {stderr}");
    assert!(
        stdout.contains("then STEP_SUCCEEDED reserve")
            && stdout.contains("then STEP_DISPATCHED charge"),
        "the held reply applies on resume: {stdout}"
    );
    r.until("held", E::SagaCompleted);

    // Abort needs a reason; with one, the saga ends without compensating.
    r.start(&one("gone"), json!({"decline": false, "slow": true}));
    r.until("gone", E::StepDispatched);
    let (ok, _, stderr) = r.admin(&["abort", "gone"]);
    assert!(!ok && stderr.contains("abort needs a reason"), "{stderr}");
    let (ok, stdout, stderr) = r.admin(&["abort", "gone", "--reason", "customer gone"]);
    assert!(ok, "abort failed: {stdout} {stderr}");
    assert!(stdout.contains("saga status: ABORTED"), "{stdout}");
    // The late reply changes nothing: the log ends at the abort.
    std::thread::sleep(Duration::from_secs(6));
    let gone = r.log().types("gone");
    assert_eq!(gone.last(), Some(&E::SagaAborted), "{gone:?}");
    assert!(!gone.contains(&E::CompensationDispatched), "{gone:?}");
}

#[test]
fn a_bulk_retry_repairs_200_incidents_found_through_the_read_models() {
    const SAGAS: usize = 200;
    let r = rig("admin-bulk", 4);
    let bootstrap = r.broker.bootstrap();
    let pg = Postgres::start("admin-bulk");
    let projector = Proc::spawn(
        "projections",
        &[
            "projections",
            "--bootstrap",
            &bootstrap,
            "--registry-url",
            &r.registry_url,
            "--group",
            &r.space.group,
            "--database-url",
            &pg.url,
            "--http-listen",
            "127.0.0.1:0",
            "--batch-wait-ms",
            "20",
        ]
        .map(String::from),
    );
    let query_url = projector.wait_line("projections:", Duration::from_secs(120));
    let ids: Vec<String> = (0..SAGAS).map(|i| format!("bulk-{i:03}")).collect();
    r.start(&ids, json!({"decline": true, "slow": false}));
    let incidents = || -> usize {
        let page: Value = serde_json::from_str(&http_get(&format!(
            "{query_url}/sagas?status=INCIDENT&limit=500"
        )))
        .expect("the query API answers JSON");
        page["items"].as_array().map_or(0, Vec::len)
    };
    let mut seen = 0;
    assert!(
        eventually(WAIT, || {
            seen = incidents();
            seen == SAGAS
        }),
        "the read models show {seen} of {SAGAS} incidents"
    );
    let filter = [
        "--where-status",
        "INCIDENT",
        "--where-definition",
        "repair",
        "--query-url",
        &query_url,
    ];
    // A dry run counts and samples, and sends nothing.
    let (ok, stdout, stderr) = r.admin(
        &[
            &["retry", "--dry-run", "--sample", "3", "--output", "json"][..],
            &filter,
        ]
        .concat(),
    );
    assert!(ok, "dry run failed: {stdout} {stderr}");
    let dry: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(dry["matched"], SAGAS);
    assert_eq!(dry["sample"].as_array().map(Vec::len), Some(3));
    assert!(
        !r.log()
            .sagas
            .values()
            .flat_map(|s| s.values())
            .any(|e| e.event_type == E::AdminCommandApplied),
        "a dry run sends nothing"
    );

    r.broken.store(false, Ordering::SeqCst);
    let (ok, stdout, stderr) = r.admin(
        &[
            &[
                "retry",
                "--rate",
                "200",
                "--reason",
                "release fixed",
                "--output",
                "json",
            ][..],
            &filter,
        ]
        .concat(),
    );
    assert!(ok, "bulk retry failed: {stdout} {stderr}");
    let job: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(job["matched"], SAGAS, "{job}");
    assert_eq!(job["counts"]["applied"], SAGAS, "{job}");
    assert!(
        stderr.contains(&format!("{SAGAS}/{SAGAS} done")),
        "progress is shown: {stderr}"
    );
    let job_id = job["job_id"].as_str().expect("a job id").to_string();
    let mut log = EventLog::default();
    let done = eventually(WAIT, || {
        log = r.log();
        ids.iter()
            .all(|id| log.types(id).last() == Some(&E::SagaCompensated))
    });
    let unfinished: Vec<String> = ids
        .iter()
        .filter(|id| log.types(id).last() != Some(&E::SagaCompensated))
        .map(|id| format!("{id}: {:?}", log.types(id)))
        .collect();
    assert!(done, "not compensated: {unfinished:?}");
    for id in &ids {
        let applied: Vec<Value> = log.sagas[id]
            .values()
            .filter(|e| e.event_type == E::AdminCommandApplied)
            .map(detail)
            .collect();
        assert_eq!(applied.len(), 1, "{id}: one command each");
        assert_eq!(applied[0]["job_id"], job_id.as_str(), "{id}");
        assert_eq!(applied[0]["reason"], "release fixed", "{id}");
    }
}
