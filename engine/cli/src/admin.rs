//! `sagaflow admin`: an operator's command to one saga, or to every saga a read-model filter
//! matches (a bulk job).
//!
//! A command goes to `<group>.admin`, keyed by the saga id, and the engine decides it like any
//! other input. Its answer is the event it records, `ADMIN_COMMAND_APPLIED` or
//! `ADMIN_COMMAND_REJECTED` with the request id, so this reads the event log (and the
//! dead-letter topic, where a command for an unknown saga goes) from before it sends.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{
    now_ms, AdminAction, AdminCommand, AsyncCodec, EventType, Resolution, SagaEvent, Subject,
};
use serde_json::{json, Value};

use crate::Connection;

/// The header that carries the request id, so that a dead-lettered command can be matched
/// without decoding it.
const REQUEST_HEADER: &str = "sagaflow-request-id";

/// What to do to the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Verb {
    /// Retry now: a step waiting in backoff (all of them, or --step), or the incident's failed
    /// compensation or timed-out await.
    Retry,
    /// Count --step as succeeded with --step-output.
    Skip,
    /// Compensate what is done.
    Cancel,
    /// End the saga without compensating anything (needs --reason).
    Abort,
    /// Defer the saga's timers and hold its inputs until resumed.
    Pause,
    /// Release what the pause held, in order.
    Resume,
    /// Close an incident as --resolution says.
    Resolve,
}

impl Verb {
    fn action(self) -> AdminAction {
        match self {
            Verb::Retry => AdminAction::Retry,
            Verb::Skip => AdminAction::Skip,
            Verb::Cancel => AdminAction::Cancel,
            Verb::Abort => AdminAction::Abort,
            Verb::Pause => AdminAction::Pause,
            Verb::Resume => AdminAction::Resume,
            Verb::Resolve => AdminAction::Resolve,
        }
    }
}

/// How `resolve` closes an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ResolutionArg {
    /// Send the failed compensation again (or wait for the timed-out event again).
    RetryCompensation,
    /// It was done by hand: count it as done.
    MarkDone,
}

/// How the answer is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Admin command options.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// What to do.
    #[arg(value_enum)]
    verb: Verb,
    /// The saga; or leave it out and select sagas with --where-* (a bulk job).
    saga_id: Option<String>,
    #[command(flatten)]
    connection: Connection,
    /// Engine group.
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// The step instance the command concerns (retry, skip, resolve).
    #[arg(long)]
    step: Option<String>,
    /// skip, and resolve --resolution mark-done of a timed-out await: the step's output, a
    /// JSON object holding what its output mapping reads.
    #[arg(long, value_name = "JSON")]
    step_output: Option<String>,
    /// resolve: how.
    #[arg(long, value_enum)]
    resolution: Option<ResolutionArg>,
    /// Why: recorded in the saga's event log (abort needs one).
    #[arg(long)]
    reason: Option<String>,
    /// Who asks, as the event log records it (default: cli:$USER).
    #[arg(long, env = "SAGAFLOW_ACTOR")]
    actor: Option<String>,
    /// How long to wait for the engine's answer (in a bulk job: after the last command), in
    /// seconds.
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    /// Print the answer as text or as one JSON object.
    #[arg(long, value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    bulk: BulkArgs,
}

/// Selecting sagas through the read models, for a bulk job.
#[derive(Debug, Args)]
struct BulkArgs {
    /// The read models' query API (`sagaflow projections`), which finds the sagas.
    #[arg(
        long,
        env = "SAGAFLOW_QUERY_URL",
        default_value = "http://127.0.0.1:9470"
    )]
    query_url: String,
    /// Sagas of this definition.
    #[arg(long)]
    where_definition: Option<String>,
    /// Sagas of this definition version.
    #[arg(long)]
    where_version: Option<i32>,
    /// Sagas in this status (e.g. INCIDENT).
    #[arg(long)]
    where_status: Option<String>,
    /// Sagas whose current step is this one.
    #[arg(long)]
    where_step: Option<String>,
    /// Sagas whose last error has this code.
    #[arg(long)]
    where_error_code: Option<String>,
    /// Sagas with this business key, NAME=VALUE.
    #[arg(long, value_name = "NAME=VALUE")]
    where_key: Option<String>,
    /// Sagas started at or after this time (RFC 3339 or epoch ms).
    #[arg(long)]
    where_started_after: Option<String>,
    /// Sagas started before this time (RFC 3339 or epoch ms).
    #[arg(long)]
    where_started_before: Option<String>,
    /// Show how many sagas match and a sample of them; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Most commands a bulk job sends per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// How many matching sagas --dry-run lists.
    #[arg(long, default_value_t = 10)]
    sample: usize,
}

impl BulkArgs {
    /// The query API's filter parameters given, if any.
    fn filter(&self) -> Vec<(&'static str, String)> {
        [
            ("definition", self.where_definition.clone()),
            ("version", self.where_version.map(|v| v.to_string())),
            ("status", self.where_status.clone()),
            ("step", self.where_step.clone()),
            ("error_code", self.where_error_code.clone()),
            ("key", self.where_key.clone()),
            ("started_after", self.where_started_after.clone()),
            ("started_before", self.where_started_before.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect()
    }
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    if let Some(text) = &args.step_output {
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("--step-output is not valid JSON: {text}"))?;
        anyhow::ensure!(
            value.is_object(),
            "--step-output must be a JSON object, got {value}"
        );
    }
    anyhow::ensure!(
        args.bulk.rate > 0.0 && args.bulk.rate.is_finite(),
        "--rate must be a positive number of commands per second, got {}",
        args.bulk.rate
    );
    let filter = args.bulk.filter();
    match (&args.saga_id, filter.is_empty()) {
        (Some(saga_id), true) => one(&args, saga_id).await,
        (None, false) => bulk(&args, &filter).await,
        (Some(_), false) => anyhow::bail!(
            "name one saga, or select sagas with --where-*, not both"
        ),
        (None, true) => anyhow::bail!(
            "name the saga (sagaflow admin {} SAGA_ID), or select sagas with --where-* (e.g. --where-status INCIDENT) for a bulk job",
            args.verb.action().as_str()
        ),
    }
}

/// Sends commands and reads the engine's answers.
struct Admin {
    producer: FutureProducer,
    codec: AsyncCodec,
    reader: BaseConsumer,
    admin_topic: String,
    events_topic: String,
}

impl Admin {
    async fn connect(args: &AdminArgs) -> anyhow::Result<Self> {
        let kafka = args.connection.kafka()?;
        let events_topic = format!("{}.events", args.group);
        let dlq_topic = format!("{}.dlq", args.group);
        // Positioned at the end before anything is sent, so no answer can be missed.
        let reader = reader_at_end(&kafka, &[&events_topic, &dlq_topic])?;
        Ok(Self {
            producer: crate::kafka::producer(&kafka)?,
            codec: AsyncCodec::new(&args.connection.registry()?)?,
            reader,
            admin_topic: format!("{}.admin", args.group),
            events_topic,
        })
    }

    fn command(args: &AdminArgs, saga_id: &str, job_id: Option<&str>) -> AdminCommand {
        AdminCommand {
            request_id: format!("cli-{:016x}", rand::random::<u64>()),
            saga_id: saga_id.to_string(),
            action: args.verb.action(),
            step: args.step.clone(),
            output_json: args.step_output.clone(),
            resolution: args.resolution.map(|r| match r {
                ResolutionArg::RetryCompensation => Resolution::RetryCompensation,
                ResolutionArg::MarkDone => Resolution::MarkDone,
            }),
            actor: args.actor.clone().unwrap_or_else(|| {
                format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                )
            }),
            reason: args.reason.clone(),
            job_id: job_id.map(str::to_string),
            requested_at: now_ms(),
        }
    }

    async fn send(&self, command: &AdminCommand) -> anyhow::Result<()> {
        let value = self
            .codec
            .encode(Subject::Topic(&self.admin_topic), command)
            .await?;
        self.producer
            .send(
                FutureRecord::to(&self.admin_topic)
                    .key(&command.saga_id)
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: REQUEST_HEADER,
                        value: Some(command.request_id.as_str()),
                    })),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("sending the command to {}", self.admin_topic))?;
        Ok(())
    }

    /// The next thing the engine wrote that may answer a command, waiting up to `wait`.
    async fn next(&self, wait: Duration) -> anyhow::Result<Option<Seen>> {
        let Some(message) = self.reader.poll(wait) else {
            return Ok(None);
        };
        let message = message.context("reading the engine's answer")?;
        if message.topic() != self.events_topic {
            let header = |name: &str| {
                message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            return Ok(header(REQUEST_HEADER).map(|request_id| Seen::DeadLetter {
                request_id,
                reason: format!(
                    "{} ({})",
                    header("sagaflow-dlq-detail").unwrap_or_default(),
                    header("sagaflow-dlq-reason").unwrap_or_default()
                ),
            }));
        }
        let Some(payload) = message.payload() else {
            return Ok(None);
        };
        let Ok(event) = self.codec.decode::<SagaEvent>(payload).await else {
            return Ok(None);
        };
        let admin = matches!(
            event.event_type,
            EventType::AdminCommandApplied | EventType::AdminCommandRejected
        );
        let request_id = admin
            .then(|| {
                detail(&event)
                    .get("request_id")?
                    .as_str()
                    .map(str::to_string)
            })
            .flatten();
        Ok(Some(match request_id {
            Some(request_id) => Seen::Answer { request_id, event },
            None => Seen::Event(event),
        }))
    }
}

/// Something the engine wrote.
enum Seen {
    /// The admin event of a request.
    Answer {
        request_id: String,
        event: SagaEvent,
    },
    /// Any other event.
    Event(SagaEvent),
    /// A request sent to the dead-letter topic.
    DeadLetter { request_id: String, reason: String },
}

fn detail(event: &SagaEvent) -> Value {
    event
        .detail_json
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}

/// A consumer assigned to every partition of `topics` at its current end.
fn reader_at_end(
    kafka: &sagaflow_kafka::KafkaSettings,
    topics: &[&str],
) -> anyhow::Result<BaseConsumer> {
    let reader: BaseConsumer = kafka
        .config(&[("fetch.wait.max.ms", "20")])
        .set("group.id", "sagaflow-admin-cli")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a reader for the engine's answer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = reader
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .with_context(|| format!("reading the metadata of {topic}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        anyhow::ensure!(
            !partitions.is_empty(),
            "topic {topic} does not exist: is the engine of this group (--group) running?"
        );
        for partition in partitions {
            let (_, high) = reader
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| format!("reading the end of {topic}/{partition}"))?;
            assignment.add_partition_offset(topic, partition, Offset::Offset(high))?;
        }
    }
    reader.assign(&assignment)?;
    Ok(reader)
}

/// One saga: send, wait for the answer and the events of the same decision, print them.
async fn one(args: &AdminArgs, saga_id: &str) -> anyhow::Result<ExitCode> {
    let admin = Admin::connect(args).await?;
    let command = Admin::command(args, saga_id, None);
    admin.send(&command).await?;
    let wait = Duration::from_secs(args.wait_secs);
    let deadline = Instant::now() + wait;
    let mut events: Vec<SagaEvent> = Vec::new();
    // The events of a decision are produced together: those that follow the admin event at
    // once are what it did.
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if settle_until.is_some_and(|until| now >= until) || (now >= deadline && !events.is_empty())
        {
            break;
        }
        if now >= deadline {
            anyhow::bail!(
                "the engine did not answer {} of saga {saga_id} within {}s (request {}): is an engine of this group running? The command stays in the admin topic and is decided when one is",
                command.action.as_str(),
                wait.as_secs(),
                command.request_id
            );
        }
        match admin.next(Duration::from_millis(50)).await? {
            Some(Seen::DeadLetter { request_id, reason }) if request_id == command.request_id => {
                anyhow::bail!(
                    "the engine could not take {} of saga {saga_id}: {reason}",
                    command.action.as_str()
                );
            }
            Some(Seen::Answer { request_id, event })
                if request_id == command.request_id && events.is_empty() =>
            {
                settle_until = Some(Instant::now() + Duration::from_millis(500));
                events.push(event);
            }
            Some(Seen::Event(event)) if event.saga_id == saga_id => {
                let next = events.last().map(|e| e.seq + 1);
                if next == Some(event.seq) && event.input_json.is_none() {
                    events.push(event);
                }
            }
            _ => {}
        }
    }
    let applied = events[0].event_type == EventType::AdminCommandApplied;
    print_one(&command, applied, &events, args.output);
    Ok(if applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_one(command: &AdminCommand, applied: bool, events: &[SagaEvent], format: Format) {
    let head = &events[0];
    let facts = detail(head);
    let rejection = facts
        .get("rejection")
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    match format {
        Format::Json => {
            let out = json!({
                "outcome": if applied { "applied" } else { "rejected" },
                "request_id": command.request_id,
                "saga_id": command.saga_id,
                "action": command.action.as_str(),
                "rejection": facts.get("rejection"),
                "status": events.last().and_then(|e| e.status.clone()),
                "events": events.iter().map(crate::eventlog::to_json).collect::<Vec<_>>(),
            });
            println!("{out}");
        }
        Format::Text if applied => {
            println!(
                "applied: {} of saga {} (request {}, event {})",
                command.action.as_str(),
                command.saga_id,
                command.request_id,
                head.seq
            );
            for e in &events[1..] {
                println!(
                    "  then {} {}{}",
                    e.event_type.symbol(),
                    e.step.as_deref().unwrap_or(""),
                    e.attempt
                        .map(|a| format!(" attempt {a}"))
                        .unwrap_or_default()
                );
            }
            if let Some(status) = events.last().and_then(|e| e.status.as_deref()) {
                println!("  saga status: {status}");
            }
        }
        Format::Text => {}
    }
    if !applied {
        eprintln!(
            "error: the engine rejected {} of saga {}: {rejection} (request {}, event {})",
            command.action.as_str(),
            command.saga_id,
            command.request_id,
            head.seq
        );
    }
}

/// What became of one saga of a bulk job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    NotSent,
    Sent,
    Applied,
    Rejected(String),
    DeadLettered(String),
}

impl Fate {
    fn name(&self) -> &'static str {
        match self {
            Fate::NotSent => "not_sent",
            Fate::Sent => "unanswered",
            Fate::Applied => "applied",
            Fate::Rejected(_) => "rejected",
            Fate::DeadLettered(_) => "dead_lettered",
        }
    }
}

/// Every saga the query API matches, page by page.
async fn matching(query_url: &str, filter: &[(&str, String)]) -> anyhow::Result<Vec<Value>> {
    let client = reqwest::Client::new();
    let base = format!("{}/sagas", query_url.trim_end_matches('/'));
    let mut sagas = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params: Vec<(&str, String)> = filter.to_vec();
        params.push(("limit", "500".into()));
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let url = reqwest::Url::parse_with_params(&base, &params)
            .with_context(|| format!("--query-url {query_url} is not a URL"))?;
        let response = client.get(url).send().await.with_context(|| {
            format!("asking the read models' query API at {query_url} (is `sagaflow projections` serving there? --query-url)")
        })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .context("reading the query API's answer")?;
        anyhow::ensure!(
            status.is_success(),
            "the query API refused the filter ({status}): {body}"
        );
        let page: Value =
            serde_json::from_str(&body).context("the query API's answer is not JSON")?;
        if let Some(items) = page["items"].as_array() {
            sagas.extend(items.iter().cloned());
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return Ok(sagas);
        }
    }
}

/// Every matching saga: sends the command to each at `--rate`, shows progress, and stops
/// sending on Ctrl-C (what was sent is still waited for).
async fn bulk(args: &AdminArgs, filter: &[(&str, String)]) -> anyhow::Result<ExitCode> {
    let sagas = matching(&args.bulk.query_url, filter).await?;
    let described: Vec<String> = filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if args.bulk.dry_run {
        let sample: Vec<&Value> = sagas.iter().take(args.bulk.sample).collect();
        match args.output {
            Format::Json => println!(
                "{}",
                json!({"dry_run": true, "action": args.verb.action().as_str(), "filter": described, "matched": sagas.len(), "sample": sample})
            ),
            Format::Text => {
                println!(
                    "dry run: {} would be sent to {} sagas matching {}",
                    args.verb.action().as_str(),
                    sagas.len(),
                    described.join(" ")
                );
                for s in sample {
                    println!(
                        "  {}  {}  {}@{}  step {}  error {}",
                        s["saga_id"].as_str().unwrap_or("?"),
                        s["status"].as_str().unwrap_or("?"),
                        s["definition"].as_str().unwrap_or("?"),
                        s["version"],
                        s["current_step"].as_str().unwrap_or("-"),
                        s["last_error_code"].as_str().unwrap_or("-"),
                    );
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let job_id = format!("job-{:012x}", rand::random::<u64>() >> 16);
    let admin = Admin::connect(args).await?;
    let ids: Vec<String> = sagas
        .iter()
        .filter_map(|s| s["saga_id"].as_str().map(str::to_string))
        .collect();
    eprintln!(
        "job {job_id}: {} on {} sagas matching {}, at most {}/s (Ctrl-C stops sending)",
        args.verb.action().as_str(),
        ids.len(),
        described.join(" "),
        args.bulk.rate
    );
    let mut fates: BTreeMap<String, Fate> =
        ids.iter().map(|id| (id.clone(), Fate::NotSent)).collect();
    let mut requests: HashMap<String, String> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / args.bulk.rate);
    let wait = Duration::from_secs(args.wait_secs);
    let mut next_send = Instant::now();
    let mut last_sent = Instant::now();
    let mut to_send = ids.iter();
    let mut sending = true;
    let mut cancelled = false;
    let mut progress = Progress::new(&job_id);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        if sending && Instant::now() >= next_send {
            match to_send.next() {
                Some(id) => {
                    let command = Admin::command(args, id, Some(&job_id));
                    admin.send(&command).await?;
                    requests.insert(command.request_id, id.clone());
                    fates.insert(id.clone(), Fate::Sent);
                    next_send += interval;
                    last_sent = Instant::now();
                }
                None => sending = false,
            }
        }
        let open = fates.values().filter(|f| **f == Fate::Sent).count();
        if !sending && (open == 0 || last_sent.elapsed() >= wait) {
            break;
        }
        tokio::select! {
            _ = &mut stop, if sending => {
                sending = false;
                cancelled = true;
                eprintln!("\njob {job_id}: cancelled; waiting for the answers to what was sent");
            }
            seen = admin.next(Duration::from_millis(5)) => {
                let (request_id, fate) = match seen? {
                    Some(Seen::Answer { request_id, event }) => {
                        let fate = if event.event_type == EventType::AdminCommandApplied {
                            Fate::Applied
                        } else {
                            let reason = detail(&event)["rejection"].as_str().unwrap_or("").to_string();
                            Fate::Rejected(reason)
                        };
                        (request_id, fate)
                    }
                    Some(Seen::DeadLetter { request_id, reason }) => (request_id, Fate::DeadLettered(reason)),
                    _ => continue,
                };
                if let Some(saga) = requests.get(&request_id) {
                    fates.insert(saga.clone(), fate);
                }
            }
        }
        progress.show(&fates, false);
    }
    progress.show(&fates, true);
    report(args, &job_id, &described, &fates, cancelled)
}

/// Counts of a bulk job's fates, by name.
fn counts(fates: &BTreeMap<String, Fate>) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for fate in fates.values() {
        *counts.entry(fate.name()).or_insert(0) += 1;
    }
    counts
}

/// Progress on stderr: one updating line on a terminal, else a line every 5 s.
struct Progress<'a> {
    job_id: &'a str,
    tty: bool,
    last: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(job_id: &'a str) -> Self {
        Self {
            job_id,
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, fates: &BTreeMap<String, Fate>, last: bool) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !last && self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let c = counts(fates);
        let n = |name: &str| c.get(name).copied().unwrap_or(0);
        let failed = n("rejected") + n("dead_lettered");
        let line = format!(
            "job {}: {}/{} done, {} applied, {failed} failed, {} remaining",
            self.job_id,
            n("applied") + failed,
            fates.len(),
            n("applied"),
            n("not_sent") + n("unanswered"),
        );
        if self.tty {
            eprint!("\r{line}   ");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

fn report(
    args: &AdminArgs,
    job_id: &str,
    filter: &[String],
    fates: &BTreeMap<String, Fate>,
    cancelled: bool,
) -> anyhow::Result<ExitCode> {
    let c = counts(fates);
    let all_applied = fates.values().all(|f| *f == Fate::Applied);
    match args.output {
        Format::Json => {
            let sagas: Vec<Value> = fates
                .iter()
                .map(|(id, fate)| {
                    let reason = match fate {
                        Fate::Rejected(r) | Fate::DeadLettered(r) => Some(r.as_str()),
                        _ => None,
                    };
                    json!({"saga_id": id, "outcome": fate.name(), "reason": reason})
                })
                .collect();
            println!(
                "{}",
                json!({"job_id": job_id, "action": args.verb.action().as_str(), "filter": filter,
                    "matched": fates.len(), "counts": c, "cancelled": cancelled, "sagas": sagas})
            );
        }
        Format::Text => {
            let summary: Vec<String> = c.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!(
                "job {job_id}: {} on {} sagas: {}{}",
                args.verb.action().as_str(),
                fates.len(),
                summary.join(", "),
                if cancelled { " (cancelled)" } else { "" }
            );
            for (id, fate) in fates.iter().filter(|(_, f)| **f != Fate::Applied).take(20) {
                let reason = match fate {
                    Fate::Rejected(r) | Fate::DeadLettered(r) => r.as_str(),
                    Fate::Sent => "no answer in time",
                    _ => "",
                };
                println!("  {id}: {} {reason}", fate.name());
            }
        }
    }
    Ok(if all_applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
