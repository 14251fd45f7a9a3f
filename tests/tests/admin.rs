//! Admin commands on a real broker, sent with `sagaflow admin` as an operator would: an
//! incident repaired by a retry once the participant is back, a rejected command that exits
//! non-zero and is still on the log, a pause that holds a reply until resume, an abort, and a
//! bulk retry of 200 incidents found through the read models. Then the same through the admin
//! API (`sagaflow admin-server`): tokens and roles, 401/403, the audit topic, jobs with progress
//! and cancel, schemathesis against its OpenAPI document, and the dashboard in Chromium.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
/// `broken` is set, and `reserve` is held back while `hold_slow` is set when its payload says
/// `slow` (so the test pauses or aborts the saga before its reply, however slow the machine).
fn participant(
    bootstrap: String,
    registry: String,
    topic: String,
    broken: Arc<AtomicBool>,
    hold_slow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let codec = BlockingCodec::new(&RegistrySettings::new(registry.as_str())).expect("codec");
        let consumer = command_consumer(&bootstrap, &topic);
        let p = producer(&bootstrap);
        let mut due: Vec<(bool, Command)> = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                if let Some(c) = m.payload().and_then(|v| codec.decode::<Command>(v).ok()) {
                    let payload: Value = serde_json::from_str(&c.payload_json).unwrap_or_default();
                    due.push((payload["slow"] == true, c));
                }
            }
            let holding = hold_slow.load(Ordering::SeqCst);
            let (ready, later): (Vec<_>, Vec<_>) =
                due.into_iter().partition(|(slow, _)| !(*slow && holding));
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
    /// Set: a `slow` reserve gets no reply yet.
    hold_slow: Arc<AtomicBool>,
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
    let hold_slow = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = participant(
        bootstrap,
        registry_url.clone(),
        space.topic("t.admin.commands"),
        broken.clone(),
        hold_slow.clone(),
        stop.clone(),
    );
    Rig {
        codec: BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec"),
        broker,
        registry_url,
        space,
        broken,
        hold_slow,
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

impl Rig {
    /// `sagaflow projections` on `pg`: the process and its query API's URL.
    fn projections(&self, pg: &Postgres) -> (Proc, String) {
        let projector = Proc::spawn(
            "projections",
            &[
                "projections",
                "--bootstrap",
                &self.broker.bootstrap(),
                "--registry-url",
                &self.registry_url,
                "--group",
                &self.space.group,
                "--database-url",
                &pg.url,
                "--http-listen",
                "127.0.0.1:0",
                "--batch-wait-ms",
                "20",
            ]
            .map(String::from),
        );
        let url = projector.wait_line("projections:", Duration::from_secs(120));
        (projector, url)
    }

    /// How many sagas the read models at `query_url` show in `status`.
    fn count(&self, query_url: &str, status: &str) -> usize {
        let page: Value = serde_json::from_str(&http_get(&format!(
            "{query_url}/sagas?status={status}&limit=500"
        )))
        .expect("the query API answers JSON");
        page["items"].as_array().map_or(0, Vec::len)
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
    // The reply comes while the saga is paused.
    r.hold_slow.store(false, Ordering::SeqCst);
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
    r.hold_slow.store(true, Ordering::SeqCst);
    r.start(&one("gone"), json!({"decline": false, "slow": true}));
    r.until("gone", E::StepDispatched);
    let (ok, _, stderr) = r.admin(&["abort", "gone"]);
    assert!(!ok && stderr.contains("abort needs a reason"), "{stderr}");
    let (ok, stdout, stderr) = r.admin(&["abort", "gone", "--reason", "customer gone"]);
    assert!(ok, "abort failed: {stdout} {stderr}");
    assert!(stdout.contains("saga status: ABORTED"), "{stdout}");
    // The late reply changes nothing: the log ends at the abort.
    r.hold_slow.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    let gone = r.log().types("gone");
    assert_eq!(gone.last(), Some(&E::SagaAborted), "{gone:?}");
    assert!(!gone.contains(&E::CompensationDispatched), "{gone:?}");
}

#[test]
fn a_bulk_retry_repairs_200_incidents_found_through_the_read_models() {
    const SAGAS: usize = 200;
    let r = rig("admin-bulk", 4);
    let pg = Postgres::start("admin-bulk");
    let (_projector, query_url) = r.projections(&pg);
    let ids: Vec<String> = (0..SAGAS).map(|i| format!("bulk-{i:03}")).collect();
    r.start(&ids, json!({"decline": true, "slow": false}));
    let mut seen = 0;
    assert!(
        eventually(WAIT, || {
            seen = r.count(&query_url, "INCIDENT");
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

/// An HTTP call to the admin API with `token` (if any): the status, the header lines and the
/// JSON body.
fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, String, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let body = body.map(|b| b.to_string());
    let (status, head, text) = sagaflow_tests::http_request(method, url, &headers, body.as_deref());
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, head, json)
}

#[test]
fn the_admin_api_checks_roles_audits_and_repairs_incidents_one_by_one_and_in_bulk() {
    const JOB_SAGAS: usize = 30;
    let r = rig("admin-api", 2);
    let pg = Postgres::start("admin-api");
    let (_projector, query_url) = r.projections(&pg);

    // Tokens are configured by digest; the CLI prints it.
    let digest = |token: &str| -> String {
        let mut child = std::process::Command::new(sagaflow_bin())
            .args(["admin-server", "--hash-token"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run sagaflow admin-server --hash-token");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), token.as_bytes())
            .expect("write the token");
        let out = child.wait_with_output().expect("hash");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let dir = TempDir::new("admin-api-auth");
    let auth_file = dir.path().join("auth.toml");
    std::fs::write(
        &auth_file,
        format!(
            "[[tokens]]\nname = \"ann\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\n[[tokens]]\nname = \"olga\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
            digest("view-token"),
            digest("op-token")
        ),
    )
    .expect("write the auth file");
    assert!(
        !std::fs::read_to_string(&auth_file)
            .unwrap()
            .contains("op-token"),
        "the auth file holds no token in clear"
    );
    let server = Proc::spawn(
        "admin-server",
        &[
            "admin-server",
            "--bootstrap",
            &r.broker.bootstrap(),
            "--registry-url",
            &r.registry_url,
            "--group",
            &r.space.group,
            "--auth-file",
            auth_file.to_str().expect("utf-8 path"),
            "--query-url",
            &query_url,
            "--listen",
            "127.0.0.1:0",
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "1",
            "--answer-wait-secs",
            "60",
            "--definitions",
            r.space.definitions().to_str().expect("utf-8 path"),
        ]
        .map(String::from),
    );
    let api = server.wait_line("admin:", Duration::from_secs(120));
    let (viewer, operator) = (Some("view-token"), Some("op-token"));

    // One incident to repair by hand, one to repair from the dashboard, and more for a bulk
    // job.
    r.start(
        &["inc".to_string(), "ui".to_string()],
        json!({"decline": true, "slow": false}),
    );
    let ids: Vec<String> = (0..JOB_SAGAS).map(|i| format!("api-{i:02}")).collect();
    r.start(&ids, json!({"decline": true, "slow": false}));
    let mut seen = 0;
    assert!(
        eventually(WAIT, || {
            seen = r.count(&query_url, "INCIDENT");
            seen == JOB_SAGAS + 2
        }),
        "the read models show {seen} of {} incidents",
        JOB_SAGAS + 2
    );

    // 401 without a token or with an unknown one; 403 for a viewer's action.
    let (status, head, body) = call("GET", &format!("{api}/api/sagas"), None, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{body}"
    );
    let (status, _, body) = call("GET", &format!("{api}/api/sagas"), Some("guess"), None);
    assert_eq!(status, 401, "{body}");
    let retry = json!({"action": "retry", "reason": "release fixed"});
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/sagas/inc/commands"),
        viewer,
        Some(retry.clone()),
    );
    assert_eq!(status, 403, "a viewer cannot mutate: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs the operator role"),
        "{body}"
    );
    // A viewer reads, through the read models.
    let (status, _, body) = call(
        "GET",
        &format!("{api}/api/sagas?status=INCIDENT&definition=repair&limit=500"),
        viewer,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(JOB_SAGAS + 2));
    let (status, _, body) = call("GET", &format!("{api}/api/sagas/inc"), viewer, None);
    assert_eq!(
        (status, body["saga"]["status"].as_str()),
        (200, Some("INCIDENT")),
        "{body}"
    );
    let (_, _, me) = call("GET", &format!("{api}/api/whoami"), operator, None);
    assert_eq!(me, json!({"actor": "olga", "role": "operator"}));

    // Bad input is a 400 that says what to fix, and nothing reaches the saga.
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/sagas/inc/commands"),
        operator,
        Some(json!({"action": "explode"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown action `explode`"),
        "{body}"
    );
    // A command that does not apply is a 409 with the engine's reason.
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/sagas/inc/commands"),
        operator,
        Some(json!({"action": "cancel", "reason": "try"})),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["outcome"], "rejected");
    // A saga nobody started is a 404.
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/sagas/nobody/commands"),
        operator,
        Some(retry.clone()),
    );
    assert_eq!(status, 404, "{body}");

    // The participant is back: the operator retries the incident; the log names her.
    r.broken.store(false, Ordering::SeqCst);
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/sagas/inc/commands"),
        operator,
        Some(retry.clone()),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"][0]["type"], "ADMIN_COMMAND_APPLIED", "{body}");
    assert_eq!(
        body["events"][1]["type"], "COMPENSATION_DISPATCHED",
        "{body}"
    );
    r.until("inc", E::SagaCompensated);
    let log = r.log();
    let applied = log.sagas["inc"]
        .values()
        .find(|e| e.event_type == E::AdminCommandApplied)
        .map(detail)
        .expect("the retry is on the saga's log");
    assert_eq!(applied["actor"], "olga");
    assert_eq!(applied["request_id"], body["request_id"]);

    // The dashboard, in Chromium: the viewer sees the incident and cannot act; the operator
    // retries it from the page and sees the saga compensate and the audit event.
    let participant_topic = r.space.topic("t.admin.commands");
    // One folder per broker, so that both passes' screenshots are kept.
    let screenshots = sagaflow_tests::root()
        .join("target/screenshots")
        .join(sagaflow_tests::broker_kind().name());
    // Emptied first, so the screenshots checked below are this run's.
    let _ = std::fs::remove_dir_all(&screenshots);
    let out = std::process::Command::new(sagaflow_tests::root().join("scripts/dashboard-test.sh"))
        .env("SAGAFLOW_UI_URL", &api)
        .env("SAGAFLOW_UI_OPERATOR_TOKEN", "op-token")
        .env("SAGAFLOW_UI_VIEWER_TOKEN", "view-token")
        .env("SAGAFLOW_UI_SAGA", "ui")
        .env("SAGAFLOW_UI_PARTICIPANT", &participant_topic)
        .env("SAGAFLOW_UI_SCREENSHOTS", &screenshots)
        .output()
        .expect("run scripts/dashboard-test.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the dashboard test failed:\n{text}");
    eprintln!("{text}");
    assert!(
        screenshots.join("saga.png").exists(),
        "screenshots are taken"
    );
    r.until("ui", E::SagaCompensated);
    // The page paused the participant and resumed it; a viewer may look, not pause.
    let (status, _, body) = call("GET", &format!("{api}/api/participants"), viewer, None);
    assert_eq!(status, 200, "{body}");
    let listed = body["items"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["topic"] == participant_topic.as_str()))
        .unwrap_or_else(|| panic!("the definitions' command topic is listed: {body}"));
    assert_eq!(listed["paused"], false, "{body}");
    assert_eq!(listed["control"]["actor"], "olga", "{body}");
    let pause = format!("{api}/api/participants/{participant_topic}/pause");
    let (status, _, body) = call("POST", &pause, viewer, Some(json!({})));
    assert_eq!(status, 403, "{body}");
    // No body is a pause without a reason; a body of blanks is not JSON, and pauses nothing.
    let (status, _, text) = sagaflow_tests::http_request(
        "POST",
        &pause,
        &[("Authorization", "Bearer op-token")],
        Some(" "),
    );
    assert_eq!(status, 400, "{text}");
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/participants/no.such.commands/pause"),
        operator,
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains(&participant_topic)),
        "the refusal names the known command topics: {body}"
    );

    // A bulk job: a viewer may count (dry run), only an operator may run it.
    let filter = json!({"status": "INCIDENT", "definition": "repair"});
    assert!(eventually(WAIT, || r.count(&query_url, "INCIDENT") == JOB_SAGAS));
    let (status, _, dry) = call(
        "POST",
        &format!("{api}/api/jobs"),
        viewer,
        Some(json!({"action": "retry", "filter": filter, "dry_run": true, "sample": 2})),
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["matched"], JOB_SAGAS);
    assert_eq!(dry["sample"].as_array().map(Vec::len), Some(2));
    let slow = json!({"action": "retry", "filter": filter, "rate": 4, "reason": "bulk"});
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/jobs"),
        viewer,
        Some(slow.clone()),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = call(
        "POST",
        &format!("{api}/api/jobs"),
        operator,
        Some(json!({"action": "retry", "filter": {"colour": "red"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unknown filter"),
        "{body}"
    );
    // Started slowly, then cancelled: it stops sending, and what it sent is answered.
    let (status, _, job) = call("POST", &format!("{api}/api/jobs"), operator, Some(slow));
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["matched"], JOB_SAGAS);
    let first = job["job_id"].as_str().expect("a job id").to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _, cancelled) = call(
        "POST",
        &format!("{api}/api/jobs/{first}/cancel"),
        operator,
        None,
    );
    assert_eq!(status, 200, "{cancelled}");
    let mut progress = Value::Null;
    assert!(
        eventually(WAIT, || {
            progress = call("GET", &format!("{api}/api/jobs/{first}"), viewer, None).2;
            progress["status"] == "cancelled"
        }),
        "{progress}"
    );
    let applied_first = progress["counts"]["applied"].as_u64().unwrap_or(0) as usize;
    assert!(
        (1..JOB_SAGAS).contains(&applied_first),
        "the cancelled job applied some, not all: {progress}"
    );
    assert_eq!(
        progress["counts"]["not_sent"],
        JOB_SAGAS - applied_first,
        "{progress}"
    );
    // The rest, in a second job, to the end.
    assert!(eventually(WAIT, || r.count(&query_url, "INCIDENT")
        == JOB_SAGAS - applied_first));
    let (status, _, job) = call(
        "POST",
        &format!("{api}/api/jobs"),
        operator,
        Some(json!({"action": "retry", "filter": filter, "rate": 100, "reason": "bulk"})),
    );
    assert_eq!(status, 202, "{job}");
    let second = job["job_id"].as_str().expect("a job id").to_string();
    assert!(
        eventually(WAIT, || {
            progress = call("GET", &format!("{api}/api/jobs/{second}"), viewer, None).2;
            progress["status"] == "finished"
        }),
        "{progress}"
    );
    assert_eq!(
        progress["counts"]["applied"],
        JOB_SAGAS - applied_first,
        "{progress}"
    );
    assert_eq!(progress["remaining"], 0);
    let (_, _, jobs) = call("GET", &format!("{api}/api/jobs"), viewer, None);
    assert_eq!(
        jobs["items"][0]["job_id"],
        second.as_str(),
        "newest first: {jobs}"
    );
    // `sagaflow jobs` lists, shows and cancels them through the API, with the caller's token.
    let jobs_cli = |token: &str, args: &[&str]| -> (bool, String, String) {
        let out = std::process::Command::new(sagaflow_bin())
            .arg("jobs")
            .args(args)
            .args(["--api-url", &api, "--token", token])
            .output()
            .expect("run sagaflow jobs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = jobs_cli("view-token", &["list", "--output", "json"]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(stdout.trim()).expect("the API's JSON");
    assert_eq!(listed["items"][0]["job_id"], second.as_str(), "{listed}");
    let (ok, stdout, stderr) = jobs_cli("view-token", &["show", &first, "--follow"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&first) && stdout.contains("  cancelled  "),
        "{stdout}"
    );
    let (ok, _, stderr) = jobs_cli("op-token", &["cancel", &second]);
    assert!(!ok && stderr.contains("is already finished"), "{stderr}");
    let (ok, _, stderr) = jobs_cli("view-token", &["cancel", &first]);
    assert!(
        !ok && stderr.contains("needs the operator role"),
        "{stderr}"
    );
    let mut log = EventLog::default();
    assert!(eventually(WAIT, || {
        log = r.log();
        ids.iter()
            .all(|id| log.types(id).last() == Some(&E::SagaCompensated))
    }));
    for id in &ids {
        let jobs: Vec<Value> = log.sagas[id]
            .values()
            .filter(|e| e.event_type == E::AdminCommandApplied)
            .map(|e| detail(e)["job_id"].clone())
            .collect();
        assert_eq!(jobs.len(), 1, "{id}: one command each");
        assert!(
            jobs[0] == first.as_str() || jobs[0] == second.as_str(),
            "{id}: {jobs:?}"
        );
    }

    // The audit topic has the 401s, the 403s, the refusals and the jobs' lifecycle.
    let audit: Vec<sagaflow_avro::AuditRecord> =
        sagaflow_tests::read_all(&r.broker.bootstrap(), &format!("{}.audit", r.space.group))
            .iter()
            .filter_map(|rec| rec.value.as_deref())
            .map(|v| r.codec.decode(v).expect("an AuditRecord"))
            .collect();
    let has =
        |actor: &str, outcome: sagaflow_avro::AuditOutcome, status: i32, target: Option<&str>| {
            audit.iter().any(|a| {
                a.actor == actor
                    && a.outcome == outcome
                    && a.status == status
                    && (target.is_none() || a.target.as_deref() == target)
            })
        };
    use sagaflow_avro::AuditOutcome as A;
    assert!(
        has("anonymous", A::Unauthenticated, 401, None),
        "{audit:#?}"
    );
    assert!(
        has("unverified", A::Unauthenticated, 401, None),
        "{audit:#?}"
    );
    assert!(has("ann", A::Forbidden, 403, None), "{audit:#?}");
    assert!(has("olga", A::Refused, 400, Some("inc")), "{audit:#?}");
    assert!(
        has("olga", A::Refused, 404, Some("nobody")),
        "a dead-lettered command is audited: {audit:#?}"
    );
    assert!(has("olga", A::Accepted, 202, Some(&first)), "{audit:#?}");
    for verb in ["pause", "resume"] {
        assert!(
            audit.iter().any(|a| a.actor == "olga"
                && a.outcome == A::Accepted
                && a.path == format!("/api/participants/{participant_topic}/{verb}")),
            "the dashboard's {verb} of the participant is audited: {audit:#?}"
        );
    }
    assert!(
        has("olga", A::Refused, 404, Some("no.such.commands")),
        "{audit:#?}"
    );
    assert!(
        has("olga", A::Accepted, 200, Some(&first)),
        "the cancel: {audit:#?}"
    );
    let finished = audit
        .iter()
        .find(|a| a.method == "JOB" && a.target.as_deref() == Some(&second))
        .expect("the end of the second job is audited");
    assert!(finished
        .detail_json
        .as_deref()
        .unwrap_or("")
        .contains("\"finished\""));

    // schemathesis: every operation, positive and negative, against the document, as an
    // operator (the sagas it targets are made up or already over, so it repairs nothing).
    sagaflow_tests::schemathesis(
        &format!("{api}/openapi.json"),
        &["-H", "Authorization: Bearer op-token"],
    );
}
