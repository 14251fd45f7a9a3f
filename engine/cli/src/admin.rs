//! `sagaflow admin`: an operator's command to one saga, or to every saga a read-model filter
//! matches (a bulk job).
//!
//! The command, its answer and the job are `sagaflow-admin`'s, shared with the admin API; this
//! parses the options and prints.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use sagaflow_admin::{
    detail, Answer, Change, Commands, Job, JobSpec, Outcome, Participant, Participants, ReadModels,
    Request, Snapshot,
};
use sagaflow_avro::{AdminAction, Resolution};
use serde_json::{json, Value};

use crate::Connection;

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
    /// Hold every command sagas send to a participant's command topic (named instead of a
    /// saga) until it is resumed; attempt timeouts stop meanwhile.
    PauseParticipant,
    /// Send a paused participant's held commands, in order, and dispatch to it again.
    ResumeParticipant,
    /// Set a participant's limits, --max-in-flight and --max-rate, across the group (a limit
    /// left out is removed); commands over them are held and sent in order as room frees up.
    LimitParticipant,
    /// List the participants' command topics: paused or not, by whom, and their consumers' lag.
    Participants,
}

impl Verb {
    /// The saga command; `None` for the participant verbs, which are no saga's.
    fn action(self) -> Option<AdminAction> {
        Some(match self {
            Verb::Retry => AdminAction::Retry,
            Verb::Skip => AdminAction::Skip,
            Verb::Cancel => AdminAction::Cancel,
            Verb::Abort => AdminAction::Abort,
            Verb::Pause => AdminAction::Pause,
            Verb::Resume => AdminAction::Resume,
            Verb::Resolve => AdminAction::Resolve,
            Verb::PauseParticipant
            | Verb::ResumeParticipant
            | Verb::LimitParticipant
            | Verb::Participants => return None,
        })
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
pub(crate) enum Format {
    Text,
    Json,
}

/// Admin command options.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// What to do.
    #[arg(value_enum)]
    verb: Verb,
    /// The saga; or leave it out and select sagas with --where-* (a bulk job). For
    /// pause-participant, resume-participant and limit-participant: the participant's command
    /// topic.
    saga_id: Option<String>,
    /// participants: the definitions directory, whose command topics are listed even if never
    /// paused.
    #[arg(long, env = "SAGAFLOW_DEFINITIONS_DIR")]
    definitions: Option<std::path::PathBuf>,
    /// limit-participant: most commands in flight to it across the group.
    #[arg(long)]
    max_in_flight: Option<i32>,
    /// limit-participant: most commands sent to it per second across the group.
    #[arg(long)]
    max_rate: Option<f64>,
    /// limit-participant: remove both limits.
    #[arg(long, conflicts_with_all = ["max_in_flight", "max_rate"])]
    no_limits: bool,
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
    fn filter(&self) -> Vec<(String, String)> {
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
        .filter_map(|(name, value)| value.map(|v| (name.to_string(), v)))
        .collect()
    }
}

impl AdminArgs {
    fn actor(&self) -> String {
        self.actor.clone().unwrap_or_else(|| {
            format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            )
        })
    }

    /// A saga command's action (`run` sends the participant verbs elsewhere first).
    fn saga_action(&self) -> AdminAction {
        self.verb
            .action()
            .expect("participant verbs never build a saga command")
    }

    fn request(&self) -> Request {
        Request {
            action: self.saga_action(),
            step: self.step.clone(),
            output_json: self.step_output.clone(),
            resolution: self.resolution.map(|r| match r {
                ResolutionArg::RetryCompensation => Resolution::RetryCompensation,
                ResolutionArg::MarkDone => Resolution::MarkDone,
            }),
            reason: self.reason.clone(),
            actor: self.actor(),
        }
    }

    async fn commands(&self) -> anyhow::Result<Commands> {
        Ok(Commands::connect(
            &self.connection.kafka()?,
            &self.connection.registry()?,
            &self.group,
        )
        .await?)
    }
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    if args.verb.action().is_none() {
        return participants(&args).await;
    }
    args.request()
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (--step, --step-output, --actor)"))?;
    sagaflow_admin::jobs::check_rate(args.bulk.rate).map_err(|e| anyhow::anyhow!("--rate: {e}"))?;
    let filter = args.bulk.filter();
    match (&args.saga_id, filter.is_empty()) {
        (Some(saga_id), true) => one(&args, saga_id).await,
        (None, false) => bulk(&args, filter).await,
        (Some(_), false) => anyhow::bail!(
            "name one saga, or select sagas with --where-*, not both"
        ),
        (None, true) => anyhow::bail!(
            "name the saga (sagaflow admin {} SAGA_ID), or select sagas with --where-* (e.g. --where-status INCIDENT) for a bulk job",
            args.saga_action().as_str()
        ),
    }
}

/// The command topics of the definitions in `dir`, if given: the participants to list.
pub(crate) fn command_topics(dir: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    Ok(sagaflow_definition::load_dir(dir)
        .map_err(|e| anyhow::anyhow!("loading definitions from {}:\n{e}", dir.display()))?
        .command_topics())
}

/// The participant verbs: pause or resume one command topic, or list them all.
async fn participants(args: &AdminArgs) -> anyhow::Result<ExitCode> {
    let known = command_topics(args.definitions.as_deref())?;
    let participants = Participants::new(
        &args.connection.kafka()?,
        &args.connection.registry()?,
        &args.group,
        known,
    )?;
    let change = match args.verb {
        Verb::PauseParticipant => Change::Pause,
        Verb::ResumeParticipant => Change::Resume,
        Verb::LimitParticipant => Change::Limit {
            max_in_flight: args.max_in_flight,
            max_rate: args.max_rate,
        },
        _ => {
            let list = participants.list().await?;
            match args.output {
                Format::Json => println!("{}", serde_json::to_string(&list)?),
                Format::Text => print_participants(&list),
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let verb = match change {
        Change::Pause => "pause-participant",
        Change::Resume => "resume-participant",
        Change::Limit { .. } => "limit-participant",
    };
    let Some(topic) = &args.saga_id else {
        anyhow::bail!(
            "name the participant's command topic: sagaflow admin {verb} TOPIC (list them with sagaflow admin participants)"
        );
    };
    let limited = args.max_in_flight.is_some() || args.max_rate.is_some();
    match change {
        Change::Limit { .. } if !limited && !args.no_limits => anyhow::bail!(
            "limit-participant needs --max-in-flight N, --max-rate R (a limit left out is removed), or --no-limits"
        ),
        Change::Limit { .. } => {}
        _ if limited || args.no_limits => anyhow::bail!(
            "--max-in-flight, --max-rate and --no-limits go with limit-participant"
        ),
        _ => {}
    }
    change
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (--max-in-flight, --max-rate)"))?;
    if !args.bulk.filter().is_empty() {
        anyhow::bail!("--where-* selects sagas; a participant is named by its command topic");
    }
    let control = participants
        .set(topic, change, &args.actor(), args.reason.clone())
        .await?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string(&control)?),
        Format::Text => println!(
            "{} {} (request {}, by {}){}; every engine of group {} follows {}",
            match change {
                Change::Pause => "paused",
                Change::Resume => "resumed",
                Change::Limit { .. } => "limited",
            },
            control.topic,
            control.request_id,
            control.actor,
            limits(&control),
            args.group,
            participants.topic()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The control's limits, as a clause: ", at most 5 in flight and 10/s".
fn limits(c: &sagaflow_avro::ParticipantControl) -> String {
    let parts: Vec<String> = [
        c.max_in_flight.map(|n| format!("{n} in flight")),
        c.max_rate.map(|r| format!("{r}/s")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(", at most {}", parts.join(" and "))
    }
}

fn print_participants(list: &[Participant]) {
    if list.is_empty() {
        println!(
            "no participant was ever paused; pass --definitions DIR to list every command topic"
        );
        return;
    }
    for p in list {
        let state = match &p.control {
            Some(c) if c.paused => format!(
                "PAUSED by {} ({}){}",
                c.actor,
                chrono::DateTime::from_timestamp_millis(c.at)
                    .map_or_else(|| c.at.to_string(), |t| t.to_rfc3339()),
                c.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Some(c) => format!("dispatching (last changed by {})", c.actor),
            None => "dispatching".into(),
        };
        let state = format!(
            "{state}{}",
            p.control.as_ref().map(limits).unwrap_or_default()
        );
        let lag = match &p.lag {
            None => "lag unknown".to_string(),
            Some(l) if l.is_empty() => "no consumer group has committed".to_string(),
            Some(l) => l
                .iter()
                .map(|(group, n)| format!("{group} lag {n}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        println!("{}  {state}  {lag}", p.topic);
    }
}

/// One saga: send, wait for the answer and the events of the same decision, print them.
async fn one(args: &AdminArgs, saga_id: &str) -> anyhow::Result<ExitCode> {
    let commands = args.commands().await?;
    let command = args.request().command(saga_id, None);
    let wait = Duration::from_secs(args.wait_secs);
    let answer = commands.send(&command, wait).await?;
    let action = command.action.as_str();
    match &answer.outcome {
        Outcome::Unanswered => anyhow::bail!(
            "the engine did not answer {action} of saga {saga_id} within {}s (request {}): is an engine of this group running? The command stays in the admin topic and is decided when one is",
            wait.as_secs(),
            command.request_id
        ),
        Outcome::DeadLettered { .. } => anyhow::bail!(
            "the engine could not take {action} of saga {saga_id}: {}",
            answer.outcome.reason().unwrap_or_default()
        ),
        Outcome::Applied | Outcome::Rejected(_) => {}
    }
    print_one(&answer, args.output);
    Ok(if answer.outcome == Outcome::Applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_one(answer: &Answer, format: Format) {
    let command = &answer.command;
    let applied = answer.outcome == Outcome::Applied;
    let head = &answer.events[0];
    let rejection = answer.outcome.reason();
    match format {
        Format::Json => {
            let out = json!({
                "outcome": answer.outcome.name(),
                "request_id": command.request_id,
                "saga_id": command.saga_id,
                "action": command.action.as_str(),
                "rejection": detail(head).get("rejection"),
                "status": answer.status(),
                "events": answer.events.iter().map(sagaflow_avro::SagaEvent::to_json).collect::<Vec<_>>(),
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
            for e in &answer.events[1..] {
                println!(
                    "  then {} {}{}",
                    e.event_type.symbol(),
                    e.step.as_deref().unwrap_or(""),
                    e.attempt
                        .map(|a| format!(" attempt {a}"))
                        .unwrap_or_default()
                );
            }
            if let Some(status) = answer.status() {
                println!("  saga status: {status}");
            }
        }
        Format::Text => {}
    }
    if !applied {
        eprintln!(
            "error: the engine rejected {} of saga {}: {} (request {}, event {})",
            command.action.as_str(),
            command.saga_id,
            rejection.unwrap_or_default(),
            command.request_id,
            head.seq
        );
    }
}

/// Every matching saga: sends the command to each at `--rate`, shows progress, and stops
/// sending on Ctrl-C (what was sent is still waited for).
async fn bulk(args: &AdminArgs, filter: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    let read_models = ReadModels::new(&args.bulk.query_url);
    let described: Vec<String> = filter.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if args.bulk.dry_run {
        let (matched, sample) = read_models
            .count_and_sample(&filter, args.bulk.sample)
            .await?;
        match args.output {
            Format::Json => println!(
                "{}",
                json!({"dry_run": true, "action": args.saga_action().as_str(), "filter": described, "matched": matched, "sample": sample})
            ),
            Format::Text => {
                println!(
                    "dry run: {} would be sent to {} sagas matching {}",
                    args.saga_action().as_str(),
                    matched,
                    described.join(" ")
                );
                for s in &sample {
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
    // Listing takes a page of 500 per request: a filter matching millions shows its count grow.
    let mut last_shown = Instant::now();
    let ids = read_models
        .matching_ids(&filter, |n| {
            if last_shown.elapsed() >= Duration::from_secs(2) {
                last_shown = Instant::now();
                eprintln!(
                    "listing the sagas matching {}: {n} so far",
                    described.join(" ")
                );
            }
        })
        .await?;
    let commands = Arc::new(args.commands().await?);
    let job = Arc::new(Job::new(
        JobSpec {
            request: args.request(),
            filter,
            rate: args.bulk.rate,
        },
        ids,
    ));
    eprintln!(
        "job {}: {} on {} sagas matching {}, at most {}/s (Ctrl-C stops sending)",
        job.id(),
        args.saga_action().as_str(),
        job.snapshot().matched,
        described.join(" "),
        args.bulk.rate
    );
    let wait = Duration::from_secs(args.wait_secs);
    let runner = {
        let (job, commands) = (job.clone(), commands.clone());
        tokio::spawn(async move { job.run(&commands, wait).await })
    };
    tokio::pin!(runner);
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    let mut progress = Progress::new();
    let mut stopping = false;
    let done = loop {
        tokio::select! {
            finished = &mut runner => break finished.context("the job's task failed")?,
            _ = &mut stop, if !stopping => {
                stopping = true;
                match job.cancel() {
                    Ok(()) => eprintln!("\njob {}: cancelled; waiting for the answers to what was sent", job.id()),
                    Err(why) => eprintln!("\njob {}: not cancelled: {why}", job.id()),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => progress.show(&Done::from(&job.snapshot()), false),
        }
    };
    progress.show(&Done::from(&done), true);
    report(args, &described, &done)
}

/// How far a job is, as the progress line shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Done {
    pub(crate) job_id: String,
    pub(crate) done: u64,
    pub(crate) matched: u64,
    pub(crate) applied: u64,
    pub(crate) failed: u64,
    pub(crate) remaining: u64,
}

impl From<&Snapshot> for Done {
    fn from(job: &Snapshot) -> Self {
        Self {
            job_id: job.job_id.clone(),
            done: job.done as u64,
            matched: job.matched as u64,
            applied: job.counts.get("applied").copied().unwrap_or(0) as u64,
            failed: job.failed as u64,
            remaining: job.remaining as u64,
        }
    }
}

impl From<&Value> for Done {
    /// A job as the admin API answers it.
    fn from(job: &Value) -> Self {
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Self {
            job_id: job["job_id"].as_str().unwrap_or("?").to_string(),
            done: n(&job["done"]),
            matched: n(&job["matched"]),
            applied: n(&job["counts"]["applied"]),
            failed: n(&job["failed"]),
            remaining: n(&job["remaining"]),
        }
    }
}

/// Progress on stderr: a bar updating in place on a terminal, else a line every 5 s.
pub(crate) struct Progress {
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    pub(crate) fn show(&mut self, job: &Done, last: bool) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if !last && self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let line = format!(
            "job {}: {}/{} done, {} applied, {} failed, {} remaining",
            job.job_id, job.done, job.matched, job.applied, job.failed, job.remaining,
        );
        if self.tty {
            const WIDTH: u64 = 30;
            let filled = (job.done * WIDTH).checked_div(job.matched).unwrap_or(WIDTH);
            eprint!(
                "\r[{}{}] {line}   ",
                "#".repeat(filled as usize),
                "-".repeat((WIDTH - filled) as usize)
            );
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

fn report(args: &AdminArgs, filter: &[String], job: &Snapshot) -> anyhow::Result<ExitCode> {
    let cancelled = job.status == sagaflow_admin::JobStatus::Cancelled;
    let all_applied = job.counts.get("applied").copied().unwrap_or(0) == job.matched;
    match args.output {
        Format::Json => {
            let mut out = json!(job);
            out["cancelled"] = json!(cancelled);
            out["filter"] = json!(filter);
            println!("{out}");
        }
        Format::Text => {
            let summary: Vec<String> = job.counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            println!(
                "job {}: {} on {} sagas: {}{}",
                job.job_id,
                job.action,
                job.matched,
                summary.join(", "),
                if cancelled { " (cancelled)" } else { "" }
            );
            for f in job.failures.iter().take(20) {
                println!(
                    "  {}: {} {}",
                    f.saga_id,
                    f.outcome,
                    f.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(if all_applied {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
