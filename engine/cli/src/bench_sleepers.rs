//! `sagaflow bench-sleepers`: holds many sagas asleep in a wait step (`examples/sleepers.yaml`)
//! and reports what that costs and how it recovers:
//! - the engine's RSS with all of them asleep;
//! - the time until the sagas' partitions decide again after a hand-over (`--handover`): a clean
//!   stop or a crash with a new node restoring from the changelog into an empty state directory,
//!   or a crash and a restart in place with the same static member id and state directory;
//! - the outputs the new node sent again;
//! - how late they wake, measured from each saga's due time to the decision that ended its
//!   wait (the `at` of its `SAGA_COMPLETED` event);
//!
//! beside the raw broker baseline measured in the same run.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sagaflow_avro::{
    now_ms, AsyncCodec, EventType, RegistrySettings, SagaEvent, StartSaga, Subject,
};
use sagaflow_registry::RegistryConfig;
use sagaflow_runtime::topics::{self, Topics};
use serde::Serialize;
use serde_json::json;

use crate::bench::{baseline, BrokerBaseline};
use crate::bench_engine::{spawn_engine, EngineProcess};
use crate::eventlog::percentile;

/// Sleeper benchmark options.
#[derive(Debug, Args)]
pub(crate) struct BenchSleepersArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// Sagas to put to sleep.
    #[arg(long, default_value_t = 1_000_000)]
    sagas: usize,
    /// Seconds from the first start to the first wake-up. Starting every saga and the hand-over
    /// to a new node must fit in it; the benchmark says so if they did not.
    #[arg(long, default_value_t = 900)]
    lead_secs: u64,
    /// Seconds over which the wake-up times are spread (uniformly at random).
    #[arg(long, default_value_t = 120)]
    spread_secs: u64,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Messages for the raw broker baseline.
    #[arg(long, default_value_t = 50_000)]
    baseline_messages: usize,
    /// Directory of saga definitions (must hold `sleepers`).
    #[arg(long, default_value = "examples")]
    definitions: std::path::PathBuf,
    /// How the first node hands its sagas over: `term` stops it cleanly and a new node restores
    /// on an empty state directory; `kill` is a crash (SIGKILL) with the same new node, which
    /// waits out the dead member's session; `kill-in-place` is a crash and a restart with the same
    /// static member id (instance-id) and the same state directory, as a Kubernetes pod restarts.
    /// `standby-term` and `standby-kill` run both nodes with `standby = true`: the new node joins
    /// before the hand-over, owns a share of the partitions and keeps a copy of the others, and
    /// the first node is then stopped or killed.
    #[arg(long, value_enum, default_value_t = Handover::Term)]
    handover: Handover,
    /// With `standby-term` or `standby-kill`: run both nodes as static members (instance-ids of
    /// their own) with `evict-silent-peers-ms` set to this, so that the second node removes a
    /// crashed first node from the group after this long instead of waiting out its session.
    #[arg(long, default_value_t = 0)]
    evict_silent_peers_ms: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Handover {
    Term,
    Kill,
    KillInPlace,
    StandbyTerm,
    StandbyKill,
}

impl Handover {
    /// Whether the new node runs, with standby copies, before the hand-over.
    fn standby(self) -> bool {
        matches!(self, Handover::StandbyTerm | Handover::StandbyKill)
    }
}

#[derive(Debug, Serialize)]
struct SleepersReport {
    broker: BrokerBaseline,
    sagas: usize,
    partitions: i32,
    /// Starts decided per second while every saga was being started.
    started_per_s: f64,
    /// The first node's RSS with every saga asleep, and its peak.
    asleep_rss_mib: f64,
    asleep_peak_rss_mib: f64,
    handover: Handover,
    /// `evict-silent-peers-ms` of both nodes; 0 for none.
    evict_silent_peers_ms: u64,
    /// Members the second node removed from the group for silence.
    evictions: f64,
    /// From the signal until the first node exited (a SIGKILL takes no time).
    stop_secs: f64,
    /// Until the second node decided again: from its start; or with standby copies, as the node
    /// runs already and may take over while the first one exits, from the signal to the first
    /// node until the second decided on every partition.
    restore_secs: f64,
    /// Partitions the second node restored by reading the whole changelog during the hand-over
    /// (none when its standby copies were ready).
    full_restores: f64,
    /// Outputs (commands, events, delayed deliveries) the second node sent again because the
    /// first one's sends were not known to be acknowledged.
    resent_outputs: f64,
    /// The second node's RSS once it had restored, and its peak over the whole run.
    restored_rss_mib: f64,
    restored_peak_rss_mib: f64,
    woken: usize,
    woken_early: usize,
    lateness_p50_ms: f64,
    lateness_p99_ms: f64,
    lateness_max_ms: f64,
    /// Wake-ups decided per second between the first and the last one.
    woken_per_s: f64,
}

/// Progress goes to stderr, with `--json` too: the report alone goes to stdout.
fn progress(message: &str) {
    eprintln!("bench-sleepers: {message}");
}

pub(crate) async fn run(args: BenchSleepersArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.sagas > 0, "--sagas must be at least 1");
    anyhow::ensure!(
        args.evict_silent_peers_ms == 0 || args.handover.standby(),
        "--evict-silent-peers-ms needs --handover standby-term or standby-kill: evictions read heartbeats through standby copies"
    );
    anyhow::ensure!(
        args.definitions.join("sleepers.yaml").exists(),
        "{} has no sleepers.yaml; pass --definitions with the directory of examples/sleepers.yaml",
        args.definitions.display()
    );
    let run_id = format!("{:x}", now_ms());
    let kafka = args.kafka.settings()?;
    let policy = args.topics.policy()?;
    progress("measuring the raw broker baseline");
    let broker = baseline(
        &kafka,
        policy,
        args.partitions,
        args.baseline_messages,
        &run_id,
    )
    .await?;
    progress(&format!(
        "raw broker: produce {:.0} msg/s, consume {:.0} msg/s",
        broker.produce_msgs_per_s, broker.consume_msgs_per_s
    ));

    let group = format!("sleepers-{run_id}");
    let names = Topics::new(&group);
    topics::ensure_engine_topics(&kafka, &group, args.partitions, policy).await?;
    let listen = "127.0.0.1:0".parse().expect("valid address");
    let registry = sagaflow_registry::start(RegistryConfig::new(kafka.clone(), policy, listen))
        .await
        .context("starting the local schema registry")?;
    let first_dir = std::env::temp_dir().join(format!("sagaflow-{group}-first"));
    let second_dir = std::env::temp_dir().join(format!("sagaflow-{group}-second"));
    // A static member id only where the restart is in place, or evictions name the member: the
    // new node of `term` and `kill` stands for another machine.
    let instances = [format!("{group}-0"), format!("{group}-1")];
    let evict = args.evict_silent_peers_ms.to_string();
    let mut env: Vec<(&str, &str)> = Vec::new();
    if args.handover.standby() {
        env.push(("SAGAFLOW_STANDBY", "true"));
    }
    if args.evict_silent_peers_ms > 0 {
        env.push(("SAGAFLOW_EVICT_SILENT_PEERS_MS", evict.as_str()));
    }
    let static_member = args.handover == Handover::KillInPlace || args.evict_silent_peers_ms > 0;
    // Node `n` (0 first, 1 second; a restart in place is node 0 again).
    let spawn = |dir: &std::path::Path, n: usize| {
        let mut env = env.clone();
        if static_member {
            env.push(("SAGAFLOW_INSTANCE_ID", instances[n].as_str()));
        }
        spawn_engine(
            &args.kafka,
            policy,
            &registry.url(),
            &group,
            args.partitions,
            dir,
            &args.definitions,
            &env,
        )
    };
    let mut first = spawn(&first_dir, 0)?;
    first.wait_owned(args.partitions).await?;

    let codec = std::sync::Arc::new(AsyncCodec::new(&RegistrySettings::new(
        registry.url().as_str(),
    ))?);
    let started = now_ms();
    let first_due = started + i64::try_from(args.lead_secs * 1000)?;
    let spread = i64::try_from(args.spread_secs * 1000)?.max(1);
    let due: Vec<i64> = (0..args.sagas)
        .map(|_| first_due + rand::random_range(0..spread))
        .collect();
    progress(&format!(
        "starting {} sagas that wake over {} s, from {} s on",
        args.sagas, args.spread_secs, args.lead_secs
    ));
    let producer: FutureProducer = kafka.producer_config("bench-sleepers", 5).create()?;
    let starting = tokio::spawn(start_all(
        producer.clone(),
        codec.clone(),
        names.starts.clone(),
        run_id.clone(),
        due.clone(),
    ));
    let mut peak = 0f64;
    let all = args.sagas as f64;
    let mut last_report = Instant::now();
    loop {
        let decided = first.metric("sagaflow_sagas_started_total").await;
        if decided >= all {
            break;
        }
        anyhow::ensure!(
            now_ms() < first_due,
            "only {decided} of {} sagas had started when the first was due to wake; raise --lead-secs",
            args.sagas
        );
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            peak = peak.max(first.rss_kib("VmRSS:"));
            progress(&format!(
                "{:>5.0} s: {decided:.0} started, engine RSS {:.0} MiB",
                (now_ms() - started) as f64 / 1000.0,
                first.rss_kib("VmRSS:") / 1024.0
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    starting.await??;
    let started_per_s = all / ((now_ms() - started) as f64 / 1000.0).max(1e-3);
    // Let the relay and the changelog settle, then read the memory of a sleeping engine.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let asleep_rss = first.rss_kib("VmRSS:");
    let asleep_peak = first.rss_kib("VmHWM:").max(peak);
    progress(&format!(
        "all asleep: engine RSS {:.0} MiB; {}",
        asleep_rss / 1024.0,
        match args.handover {
            Handover::Term => "stopping it and restoring on a new node",
            Handover::Kill => "killing it (SIGKILL) and restoring on a new node",
            Handover::KillInPlace => "killing it (SIGKILL) and restarting it in place",
            Handover::StandbyTerm =>
                "starting a second node with standby copies, then stopping the first",
            Handover::StandbyKill =>
                "starting a second node with standby copies, then killing the first (SIGKILL)",
        }
    ));

    let early = if args.handover.standby() {
        let second = spawn(&second_dir, 1)?;
        wait_for_copies(&first, &second, args.partitions).await?;
        Some(second)
    } else {
        None
    };
    let (started_before, full_before) = match &early {
        Some(second) => (
            second.metric("sagaflow_sagas_started_total").await,
            second.metric("sagaflow_changelog_restores_total").await,
        ),
        None => (0.0, 0.0),
    };
    let stopping = Instant::now();
    match args.handover {
        Handover::Term | Handover::StandbyTerm => first.terminate()?,
        Handover::Kill | Handover::KillInPlace | Handover::StandbyKill => first.kill()?,
    }
    let stop_secs = stopping.elapsed().as_secs_f64();
    drop(first);
    let restoring = if args.handover.standby() {
        stopping
    } else {
        Instant::now()
    };
    let second = match early {
        Some(second) => second,
        None => match args.handover {
            Handover::KillInPlace => spawn(&first_dir, 0)?,
            _ => spawn(&second_dir, 1)?,
        },
    };
    // Probe sagas that wake at once: the new node has restored when it decides again. A new node
    // restores every partition it is given before its first decision, so one probe tells. The
    // node with standby copies decided on its own share all along: it gets a probe on every
    // partition.
    let probes: Vec<String> = if args.handover.standby() {
        (0..args.partitions)
            .map(|partition| {
                (0..)
                    .map(|n| format!("probe-{run_id}-{n}"))
                    .find(|id| {
                        sagaflow_runtime::partition_for(id.as_bytes(), args.partitions) == partition
                    })
                    .expect("some id lands on every partition")
            })
            .collect()
    } else {
        vec![format!("probe-{run_id}")]
    };
    for probe in &probes {
        crate::start::send_start(&producer, &codec, &names.starts, &sleeper(probe, now_ms()))
            .await?;
    }
    let restore_deadline = Instant::now() + Duration::from_secs(1800);
    let decided = started_before + probes.len() as f64;
    while second.metric("sagaflow_sagas_started_total").await < decided {
        anyhow::ensure!(
            Instant::now() < restore_deadline,
            "the new node did not decide on every partition within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restore_secs = restoring.elapsed().as_secs_f64();
    let full_restores = second.metric("sagaflow_changelog_restores_total").await - full_before;
    let evictions = second.metric("sagaflow_peer_evictions_total").await;
    let restored_rss = second.rss_kib("VmRSS:");
    let resent_outputs = second
        .metric(r#"sagaflow_broker_records_total{direction="write",kind="resend",part="overhead"}"#)
        .await;
    progress(&format!(
        "restored on the new node in {restore_secs:.1} s (RSS {:.0} MiB)",
        restored_rss / 1024.0
    ));
    anyhow::ensure!(
        now_ms() < first_due,
        "the hand-over ended after the first saga was due to wake, so lateness would measure it; raise --lead-secs"
    );

    let report = wake(&kafka, &codec, &names.events, &run_id, &due, &second).await?;
    let (woken, woken_early, mut lateness, woken_per_s) = report;
    let restored_peak = second.rss_kib("VmHWM:");
    drop(second);
    registry.shutdown().await;
    let _ = std::fs::remove_dir_all(&first_dir);
    let _ = std::fs::remove_dir_all(&second_dir);
    if woken < args.sagas {
        eprintln!(
            "bench-sleepers: only {woken} of {} sagas woke; nothing woke for {} s after the last was due, so the figures below cover those that did",
            args.sagas,
            STALLED.as_secs()
        );
    }
    lateness.sort_by(f64::total_cmp);
    let report = SleepersReport {
        broker,
        sagas: args.sagas,
        partitions: args.partitions,
        started_per_s,
        asleep_rss_mib: asleep_rss / 1024.0,
        asleep_peak_rss_mib: asleep_peak / 1024.0,
        handover: args.handover,
        evict_silent_peers_ms: args.evict_silent_peers_ms,
        evictions,
        stop_secs,
        restore_secs,
        full_restores,
        resent_outputs,
        restored_rss_mib: restored_rss / 1024.0,
        restored_peak_rss_mib: restored_peak / 1024.0,
        woken,
        woken_early,
        lateness_p50_ms: percentile(&lateness, 50.0),
        lateness_p99_ms: percentile(&lateness, 99.0),
        lateness_max_ms: lateness.last().copied().unwrap_or(0.0),
        woken_per_s,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.woken_early == 0 && report.woken == args.sagas {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Waits until the two nodes share the partitions and the second has a ready copy of each of the
/// first node's. Both must own some: if the group gave the second node everything (a first node
/// dropped for missed heartbeats, say), stopping the first would hand nothing over, and the time
/// measured would mean nothing.
async fn wait_for_copies(
    first: &EngineProcess,
    second: &EngineProcess,
    partitions: i32,
) -> anyhow::Result<()> {
    let joined = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let owned_first = first.metric("sagaflow_partitions_owned").await;
        let owned = second.metric("sagaflow_partitions_owned").await;
        let ready = second.metric("sagaflow_standby_partitions_ready").await;
        let lag = second.metric("sagaflow_standby_lag_records").await;
        let shared =
            owned >= 1.0 && owned_first >= 1.0 && owned + owned_first == f64::from(partitions);
        if shared && owned + ready >= f64::from(partitions) && lag == 0.0 {
            progress(&format!(
                "second node: {owned:.0} partitions owned, {ready:.0} standby copies ready after {:.1} s",
                joined.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(1800),
            "the nodes did not share the partitions with the second's standby copies ready within 30 minutes (first node owns {owned_first:.0}, second {owned:.0} with {ready:.0} copies ready, {lag:.0} records behind); a first node that owns none was dropped from the group (missed heartbeats: raise session-timeout-ms)"
        );
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&format!(
                "second node: {owned:.0} partitions owned (first node {owned_first:.0}), {ready:.0} standby copies ready, {lag:.0} changelog records behind"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sleeper(saga_id: &str, wake_at: i64) -> StartSaga {
    StartSaga {
        request_id: saga_id.to_string(),
        saga_id: saga_id.to_string(),
        definition: "sleepers".into(),
        version: None,
        input_json: json!({ "wake_at": wake_at }).to_string(),
        requested_at: now_ms(),
    }
}

/// How long the wake-ups may stall, after the last one was due, before the benchmark gives up.
const STALLED: Duration = Duration::from_secs(120);

fn saga_id(run_id: &str, index: usize) -> String {
    format!("sl-{run_id}-{index}")
}

/// Starts one sleeper per due time, as fast as the producer takes them.
async fn start_all(
    producer: FutureProducer,
    codec: std::sync::Arc<AsyncCodec>,
    topic: String,
    run_id: String,
    due: Vec<i64>,
) -> anyhow::Result<()> {
    let mut inflight = FuturesUnordered::new();
    for (i, due) in due.iter().enumerate() {
        let start = sleeper(&saga_id(&run_id, i), *due);
        let value = codec.encode(Subject::Topic(&topic), &start).await?;
        let future = producer
            .send_result(FutureRecord::to(&topic).key(&start.saga_id).payload(&value))
            .map_err(|(e, _)| e)
            .with_context(|| format!("enqueueing a start on {topic}"))?;
        inflight.push(future);
        while inflight.len() >= 20_000 {
            if let Some(r) = inflight.next().await {
                let _ = r?.map_err(|(e, _)| e)?;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        let _ = r?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Reads the event log until every sleeper has completed; returns (woken, woken early,
/// lateness in ms per saga, wake-ups per second).
async fn wake(
    kafka: &sagaflow_kafka::KafkaSettings,
    codec: &AsyncCodec,
    events: &str,
    run_id: &str,
    due: &[i64],
    engine: &EngineProcess,
) -> anyhow::Result<(usize, usize, Vec<f64>, f64)> {
    let consumer: StreamConsumer = kafka
        .config("bench-sleepers", &[("fetch.wait.max.ms", "5")])
        .set("group.id", format!("sleepers-{run_id}-bench"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[events])?;
    let prefix = format!("sl-{run_id}-");
    let mut woken = vec![false; due.len()];
    let mut count = 0usize;
    let mut early = 0usize;
    let mut lateness = Vec::with_capacity(due.len());
    let (mut first_at, mut last_at) = (i64::MAX, i64::MIN);
    let last_due = due.iter().copied().max().unwrap_or(0);
    // However slowly they wake, wait while they do: give up only once nothing has woken for a
    // while after the last one was due.
    let mut last_progress = Instant::now();
    let stalled = |last_progress: Instant| now_ms() > last_due && last_progress.elapsed() > STALLED;
    let mut last_report = Instant::now();
    while count < due.len() && !stalled(last_progress) {
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            progress(&format!(
                "{count} of {} woken, engine RSS {:.0} MiB, timers in memory {:.0}",
                due.len(),
                engine.rss_kib("VmRSS:") / 1024.0,
                engine.metric("sagaflow_timers_in_memory").await
            ));
        }
        let message = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        let Some(bytes) = message.payload() else {
            continue;
        };
        let event: SagaEvent = codec.decode(bytes).await?;
        if event.event_type != EventType::SagaCompleted {
            continue;
        }
        let Some(index) = event
            .saga_id
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < due.len())
        else {
            continue;
        };
        if std::mem::replace(&mut woken[index], true) {
            continue; // a redelivered copy
        }
        count += 1;
        last_progress = Instant::now();
        if event.at < due[index] {
            early += 1;
        }
        lateness.push((event.at - due[index]) as f64);
        first_at = first_at.min(event.at);
        last_at = last_at.max(event.at);
    }
    let secs = ((last_at - first_at) as f64 / 1000.0).max(1e-3);
    Ok((count, early, lateness, count as f64 / secs))
}

fn print_table(r: &SleepersReport) {
    let row = |label: &str, value: String| println!("  {label:<50} {value:>18}");
    println!(
        "Sagaflow sleeper benchmark ({} sagas asleep in a wait step, {} partitions)",
        r.sagas, r.partitions
    );
    println!();
    row(
        "raw broker produce (200 B records)",
        format!("{:.0} msg/s", r.broker.produce_msgs_per_s),
    );
    row(
        "raw broker consume",
        format!("{:.0} msg/s", r.broker.consume_msgs_per_s),
    );
    row("sagas started", format!("{:.0} /s", r.started_per_s));
    row(
        "engine RSS, all asleep (peak)",
        format!("{:.0} MiB ({:.0})", r.asleep_rss_mib, r.asleep_peak_rss_mib),
    );
    let (stop, restore) = match r.handover {
        Handover::Term => (
            "clean stop of the first node (SIGTERM)",
            "restore on a new node, until it decides again",
        ),
        Handover::Kill => (
            "crash of the first node (SIGKILL)",
            "restore on a new node, until it decides again",
        ),
        Handover::KillInPlace => (
            "crash of the first node (SIGKILL)",
            "restart in place, until it decides again",
        ),
        Handover::StandbyTerm => (
            "clean stop of the first node (SIGTERM)",
            "from SIGTERM until the standby node decides",
        ),
        Handover::StandbyKill => (
            "crash of the first node (SIGKILL)",
            "from SIGKILL until the standby node decides",
        ),
    };
    row(stop, format!("{:.1} s", r.stop_secs));
    if r.evict_silent_peers_ms > 0 {
        row(
            "evict-silent-peers-ms of both nodes",
            format!("{} ms", r.evict_silent_peers_ms),
        );
        row(
            "members the second node evicted",
            format!("{:.0}", r.evictions),
        );
    }
    row(restore, format!("{:.1} s", r.restore_secs));
    row(
        "partitions restored from the whole changelog",
        format!("{:.0}", r.full_restores),
    );
    row(
        "new node RSS after restore (peak)",
        format!(
            "{:.0} MiB ({:.0})",
            r.restored_rss_mib, r.restored_peak_rss_mib
        ),
    );
    row("outputs re-sent", format!("{:.0}", r.resent_outputs));
    row("wake-ups", format!("{:.0} /s", r.woken_per_s));
    row(
        "wake lateness p50 / p99",
        format!("{:.0} / {:.0} ms", r.lateness_p50_ms, r.lateness_p99_ms),
    );
    row("wake lateness max", format!("{:.0} ms", r.lateness_max_ms));
    row("woken, early", format!("{}, {}", r.woken, r.woken_early));
}
