//! `sagaflow demo`: the trip saga end to end, checked against its own event log.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sagaflow_avro::{AsyncCodec, EventType, SagaEvent, StartSaga};
use sagaflow_definition::Definition;
use sagaflow_worker::examples::{Injection, Role};
use serde_json::json;

use crate::eventlog::{self, percentile, SagaLog};
use crate::run_participant::{check_rate, parse_latency};
use crate::stack::{LocalStack, ParticipantSpec, StackOptions};
use crate::start::send_start;
use sagaflow_avro::now_ms;

/// Demo options.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// Use this schema registry instead of starting one in-process.
    #[arg(long, env = "SAGAFLOW_REGISTRY_URL")]
    registry_url: Option<String>,
    #[command(flatten)]
    registry_auth: crate::RegistryAuthArgs,
    /// Sagas to run.
    #[arg(long, default_value_t = 1000)]
    sagas: usize,
    /// Share of hotel bookings that fail (and make the saga compensate).
    #[arg(long, default_value_t = 0.1)]
    hotel_failure_rate: f64,
    /// Participant latency in ms, `N` or `MIN..MAX`.
    #[arg(long, default_value = "1..5")]
    latency_ms: String,
    /// Partitions of the topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Directory of saga definitions.
    #[arg(long, default_value = "examples")]
    definitions: PathBuf,
    /// RocksDB directory (default: a fresh temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Give up waiting for sagas after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// PostgreSQL URL: also project the run's event log into read models there (schema
    /// `demo_<run>`) and print BI queries read from them (`scripts/demo.sh` starts one).
    #[arg(long, env = "SAGAFLOW_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    check_rate("hotel-failure-rate", args.hotel_failure_rate)?;
    let latency = parse_latency(&args.latency_ms)?;
    let definitions = sagaflow_definition::load_dir(&args.definitions)
        .map_err(|d| anyhow::anyhow!("{d}"))
        .with_context(|| format!("loading definitions from {}", args.definitions.display()))?;
    // Sagas start on the latest version, which judges their compensations.
    let trip = definitions
        .latest("trip")
        .cloned()
        .with_context(|| format!("no `trip` definition in {}", args.definitions.display()))?;
    let run_id = format!("{:x}", now_ms());
    let group = format!("demo-{run_id}");
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("sagaflow-{group}")));
    let plain = Injection {
        latency_ms: latency,
        ..Injection::default()
    };
    let participants = vec![
        spec(Role::Payment, 2, plain.clone()),
        spec(Role::Flight, 2, plain.clone()),
        spec(
            Role::Hotel,
            2,
            Injection {
                failure_rate: args.hotel_failure_rate,
                ..plain.clone()
            },
        ),
        spec(Role::Notify, 2, plain),
    ];
    let kafka = args.kafka.settings()?;
    let registry = match &args.registry_url {
        Some(url) => Some(args.registry_auth.settings(url)?),
        None => None,
    };
    eprintln!(
        "demo: broker {}, group {group}, {} sagas, {:.0}% hotel failures",
        kafka.bootstrap(),
        args.sagas,
        args.hotel_failure_rate * 100.0
    );
    let stack = LocalStack::start(StackOptions {
        kafka: kafka.clone(),
        registry,
        policy: args.topics.policy()?,
        group: group.clone(),
        partitions: args.partitions,
        state_dir: state_dir.clone(),
        definitions,
        participants,
    })
    .await?;
    eprintln!(
        "demo: registry {}, engine and 8 participant instances running",
        stack.registry.url
    );
    let log = eventlog::follow(&kafka, &stack.registry, &stack.topics.events).await?;
    let projections = match &args.database_url {
        Some(url) => Some(
            ReadModels::start(&kafka, &stack, url, &run_id, &group, args.topics.policy()?).await?,
        ),
        None => None,
    };

    let producer = crate::kafka::producer(&kafka)?;
    let codec = AsyncCodec::new(&stack.registry)?;
    let began = Instant::now();
    let mut ids = Vec::with_capacity(args.sagas);
    for i in 0..args.sagas {
        let saga_id = format!("trip-{run_id}-{i:05}");
        let input = json!({
            "customer": {"id": format!("c-{i}"), "email": format!("c{i}@example.com")},
            "amount": 100 + (i % 900), "currency": "EUR",
            "flight": {"number": format!("SF{:04}", i % 97), "date": "2026-07-01"},
            "hotel": {"id": format!("h-{}", i % 13), "check_in": "2026-07-01", "nights": 1 + i % 5}
        });
        let start = StartSaga {
            request_id: format!("demo-{i}"),
            saga_id: saga_id.clone(),
            definition: "trip".into(),
            version: None,
            input_json: input.to_string(),
            requested_at: now_ms(),
        };
        send_start(&producer, &codec, &stack.topics.starts, &start).await?;
        ids.push(saga_id);
    }
    eprintln!(
        "demo: {} start requests sent in {:.1?}",
        ids.len(),
        began.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut last_report = Instant::now();
    loop {
        let finished = {
            let log = log.lock().expect("event log lock");
            ids.iter()
                .filter(|id| log.sagas.get(*id).is_some_and(|s| s.terminal().is_some()))
                .count()
        };
        if finished == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "demo: timed out with {finished}/{} sagas finished",
                ids.len()
            );
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "demo: {finished}/{} sagas finished ({:.0?})",
                ids.len(),
                began.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let late duplicates (if any) arrive before judging.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = began.elapsed();

    let report = {
        let log = log.lock().expect("event log lock");
        judge(&ids, &log.sagas, log.records, &trip)
    };
    let unique_events: usize = log
        .lock()
        .expect("event log lock")
        .sagas
        .values()
        .map(|s| s.events.len())
        .sum();
    let read_models = match projections {
        Some(p) => Some(
            p.finish(unique_events, Duration::from_secs(args.timeout_secs))
                .await?,
        ),
        None => None,
    };
    let metrics = &stack.metrics;
    let engine_counts = (
        metrics.sagas_completed_total.load(Ordering::Relaxed),
        metrics.sagas_compensated_total.load(Ordering::Relaxed),
        metrics.incidents_total.load(Ordering::Relaxed),
    );
    stack.stop().await?;
    let _ = std::fs::remove_dir_all(&state_dir);

    println!("Sagaflow demo: {} trip sagas in {:.1?}", ids.len(), elapsed);
    println!("  completed    {:>6}", report.completed);
    println!("  compensated  {:>6}", report.compensated);
    println!("  incidents    {:>6}", report.incidents);
    println!("  unfinished   {:>6}", report.unfinished);
    println!(
        "  duration     p50 {:.0} ms, p99 {:.0} ms (SAGA_STARTED to terminal event)",
        report.p50_ms, report.p99_ms
    );
    println!(
        "  event log    {} records, {} redelivered copies",
        report.records, report.redelivered
    );
    let mut checks = vec![
        (
            "every saga reached exactly one terminal state, gapless seq from 1".to_string(),
            report.problems.is_empty() && report.unfinished == 0,
        ),
        (
            "every compensated saga undid what it completed, each once, in reverse order within each branch, the payment last"
                .to_string(),
            report.order_problems.is_empty(),
        ),
        (
            format!(
                "engine counters agree with the event log (engine: {} completed, {} compensated, {} incidents)",
                engine_counts.0, engine_counts.1, engine_counts.2
            ),
            engine_counts
                == (report.completed as u64, report.compensated as u64, report.incidents as u64),
        ),
    ];
    if let Some(rm) = &read_models {
        println!("read models (PostgreSQL, schema {}):", rm.schema);
        for (title, table) in &rm.tables {
            println!("  {title}");
            for line in table {
                println!("    {line}");
            }
        }
        checks.push((
            format!(
                "the read models agree with the event log ({} events, {} completed, {} compensated)",
                rm.events, rm.completed, rm.compensated
            ),
            rm.events == unique_events as i64
                && (rm.completed, rm.compensated)
                    == (report.completed as i64, report.compensated as i64),
        ));
    }
    if args.hotel_failure_rate > 0.0 && ids.len() >= 100 {
        checks.push((
            "some sagas compensated (hotel failures were injected)".to_string(),
            report.compensated > 0,
        ));
    }
    println!("checks:");
    let mut ok = true;
    for (name, passed) in &checks {
        println!("  {}  {name}", if *passed { "ok  " } else { "FAIL" });
        ok &= passed;
    }
    for p in report
        .problems
        .iter()
        .chain(&report.order_problems)
        .take(20)
    {
        println!("    {p}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn spec(role: Role, instances: usize, injection: Injection) -> ParticipantSpec {
    ParticipantSpec {
        role,
        topic: role.default_topic().to_string(),
        instances,
        injection,
    }
}

/// What the event log says about a set of sagas.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) completed: usize,
    pub(crate) compensated: usize,
    /// Sagas waiting for an operator (and any that ended FAILED, before incidents existed).
    pub(crate) incidents: usize,
    pub(crate) unfinished: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) records: u64,
    pub(crate) redelivered: u64,
    pub(crate) problems: Vec<String>,
    pub(crate) order_problems: Vec<String>,
}

pub(crate) fn judge(
    ids: &[String],
    sagas: &std::collections::HashMap<String, SagaLog>,
    records: u64,
    definition: &Definition,
) -> Report {
    let mut report = Report {
        records,
        ..Report::default()
    };
    let mut durations = Vec::new();
    let empty = SagaLog::default();
    for id in ids {
        let saga = sagas.get(id).unwrap_or(&empty);
        report.redelivered += saga.redelivered;
        report.problems.extend(saga.problems(id));
        let Some(terminal) = saga.terminal() else {
            report.unfinished += 1;
            continue;
        };
        match terminal.event_type {
            EventType::SagaCompleted => report.completed += 1,
            EventType::SagaCompensated => {
                report.compensated += 1;
                report
                    .order_problems
                    .extend(compensation_problems(id, saga, definition));
            }
            _ => report.incidents += 1,
        }
        if let Some(start) = saga.events.get(&1) {
            durations.push((terminal.at - start.at) as f64);
        }
    }
    durations.sort_by(f64::total_cmp);
    report.p50_ms = percentile(&durations, 50.0);
    report.p99_ms = percentile(&durations, 99.0);
    report
}

/// Compensations must undo what completed, each step once, in reverse order within each
/// branch and after every branch for the steps before a parallel step; for the trip saga a failed
/// hotel also means the payment was refunded, last.
fn compensation_problems(id: &str, saga: &SagaLog, definition: &Definition) -> Vec<String> {
    let events: Vec<SagaEvent> = saga.events.values().cloned().collect();
    let mut out: Vec<String> = sagaflow_core::audit::compensation_problems(definition, &events)
        .into_iter()
        .map(|p| format!("{id}: {p}"))
        .collect();
    let compensated: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == EventType::CompensationSucceeded)
        .filter_map(|e| e.step.as_deref())
        .collect();
    let failed_hotel = events
        .iter()
        .any(|e| e.event_type == EventType::StepFailed && e.step.as_deref() == Some("hotel"));
    if failed_hotel && compensated.last() != Some(&"payment") {
        out.push(format!(
            "{id}: hotel failed but the compensations were {compensated:?}, not ending with the payment"
        ));
    }
    out
}

/// The demo's projector, and what it shows at the end.
struct ReadModels {
    handle: sagaflow_projections::ProjectorHandle,
    url: String,
    schema: String,
}

/// What the read models said at the end of the demo.
struct ReadModelReport {
    schema: String,
    events: i64,
    completed: i64,
    compensated: i64,
    /// Two BI queries of docs/bi.md, as printable tables.
    tables: Vec<(String, Vec<String>)>,
}

impl ReadModels {
    async fn start(
        kafka: &sagaflow_kafka::KafkaSettings,
        stack: &LocalStack,
        url: &str,
        run_id: &str,
        group: &str,
        policy: sagaflow_kafka::TopicPolicy,
    ) -> anyhow::Result<Self> {
        let schema = format!("demo_{run_id}");
        let config = sagaflow_projections::ProjectorConfig {
            rejoin_when_unassigned: std::env::var("SAGAFLOW_TANSU_WORKAROUNDS")
                .is_ok_and(|v| v == "true"),
            ..sagaflow_projections::ProjectorConfig::for_group(
                kafka.clone(),
                stack.registry.clone(),
                url,
                &schema,
                group,
            )
        };
        crate::projections::ensure_dead_letter_topic(&config, policy).await?;
        let metrics = std::sync::Arc::new(sagaflow_projections::Metrics::default());
        let handle = tokio::task::block_in_place(|| sagaflow_projections::start(config, metrics))
            .context("starting the read model projector")?;
        eprintln!("demo: projecting the event log into PostgreSQL, schema {schema}");
        Ok(Self {
            handle,
            url: url.to_string(),
            schema,
        })
    }

    /// Waits until the read models hold `events` events, stops the projector and reads them.
    async fn finish(self, events: usize, timeout: Duration) -> anyhow::Result<ReadModelReport> {
        let Self {
            handle,
            url,
            schema,
        } = self;
        tokio::task::spawn_blocking(move || {
            let mut store = sagaflow_projections::Store::open(&url, &schema, 30)?;
            let deadline = Instant::now() + timeout;
            let projected = loop {
                let (_, rows) = store.query_text("SELECT count(*) FROM events")?;
                let n: i64 = rows[0][0].parse().unwrap_or(0);
                if n >= events as i64 || Instant::now() > deadline {
                    break n;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            handle.stop()?;
            let count =
                |store: &mut sagaflow_projections::Store, status: &str| -> anyhow::Result<i64> {
                    let (_, rows) = store.query_text(&format!(
                        "SELECT count(*) FROM sagas WHERE status = '{status}'"
                    ))?;
                    Ok(rows[0][0].parse().unwrap_or(0))
                };
            let completed = count(&mut store, "COMPLETED")?;
            let compensated = count(&mut store, "COMPENSATED")?;
            let mut tables = Vec::new();
            for (title, name) in [
                ("completion rate by definition and day", "completion_rate"),
                ("slowest steps over the last 7 days", "slowest_steps"),
            ] {
                let sql = sagaflow_projections::bi_query(name)
                    .with_context(|| format!("docs/bi.md has no query `{name}`"))?;
                let (columns, rows) = store.query_text(sql)?;
                let mut lines = vec![columns.join(" | ")];
                lines.extend(rows.iter().map(|r| r.join(" | ")));
                tables.push((format!("{title} (docs/bi.md, {name})"), lines));
            }
            Ok::<_, anyhow::Error>(ReadModelReport {
                schema,
                events: projected,
                completed,
                compensated,
                tables,
            })
        })
        .await?
    }
}
