//! `sagaflow participant`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sagaflow_worker::examples::{handler, EffectsLog, Injection, Role};
use sagaflow_worker::{Worker, WorkerConfig};
use tracing::warn;

use crate::Connection;

/// Participant options.
#[derive(Debug, Clone, Args)]
pub(crate) struct ParticipantArgs {
    #[command(flatten)]
    connection: Connection,
    /// payment, flight, hotel, notify or echo.
    #[arg(long)]
    role: Role,
    /// Command topic (default: the role's topic in examples/trip.yaml).
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group shared by the instances (default: sagaflow-<command topic>).
    #[arg(long)]
    group: Option<String>,
    /// Competing consumer instances in this process.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Share of forward commands failing for business reasons (0..1).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Share of forward commands failing with a retryable error (0..1).
    #[arg(long, default_value_t = 0.0)]
    transient_rate: f64,
    /// Added latency per command in ms, `N` or `MIN..MAX`.
    #[arg(long, default_value = "0")]
    latency_ms: String,
    /// Append one JSON line per applied command here (for tests).
    #[arg(long)]
    effects_log: Option<PathBuf>,
    /// OTLP/HTTP collector to export the participant's spans to (command fetch, reply
    /// produce), e.g. http://otel-collector:4318.
    #[arg(long, env = "SAGAFLOW_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

pub(crate) fn parse_latency(s: &str) -> anyhow::Result<(u64, u64)> {
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .with_context(|| format!("--latency-ms {s:?}: expected N or MIN..MAX milliseconds"))
    };
    match s.split_once("..") {
        Some((lo, hi)) => {
            let (lo, hi) = (parse(lo)?, parse(hi)?);
            anyhow::ensure!(lo <= hi, "--latency-ms {s:?}: MIN must not exceed MAX");
            Ok((lo, hi))
        }
        None => {
            let v = parse(s)?;
            Ok((v, v))
        }
    }
}

pub(crate) fn check_rate(name: &str, v: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be between 0 and 1, got {v}"
    );
    Ok(())
}

pub(crate) async fn run(args: ParticipantArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::StopSignals::listen()?;
    check_rate("failure-rate", args.failure_rate)?;
    check_rate("transient-rate", args.transient_rate)?;
    let injection = Injection {
        failure_rate: args.failure_rate,
        transient_rate: args.transient_rate,
        latency_ms: parse_latency(&args.latency_ms)?,
    };
    let effects = match &args.effects_log {
        Some(path) => Some(Arc::new(
            EffectsLog::open(path).with_context(|| format!("opening {}", path.display()))?,
        )),
        None => None,
    };
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| args.role.default_topic().to_string());
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("sagaflow-{topic}"));
    let kafka = args.connection.kafka()?;
    let registry = args.connection.registry()?;
    let spans = match args
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    {
        Some(endpoint) => Some(sagaflow_kafka::otlp::Exporter::start(
            endpoint,
            &format!("sagaflow-participant-{topic}"),
        )?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    // One dedupe memory for the instances of this process: a command that moves between them
    // (partitions move when instances join or leave) is still recognised.
    let dedupe = std::sync::Arc::new(tokio::sync::Mutex::new(sagaflow_worker::Dedupe::new(
        100_000,
    )));
    for i in 0..args.instances.max(1) {
        let worker = Worker::with_dedupe(
            WorkerConfig {
                kafka: kafka.clone(),
                registry: registry.clone(),
                topic: topic.clone(),
                group: group.clone(),
                instance: format!("{topic}#{i}"),
                dedupe_capacity: 100_000,
                concurrency: 64,
                fetch_wait_max_ms: sagaflow_kafka::FETCH_WAIT_MAX_MS,
            },
            handler(args.role, injection.clone(), effects.clone()),
            dedupe.clone(),
        )?;
        let worker = match &spans {
            Some(exporter) => worker.with_spans(exporter.clone()),
            None => worker,
        };
        tasks.push(tokio::spawn(run_then_close(worker, stop_rx.clone())));
    }
    println!(
        "participant {:?}: {} instance(s) on {topic}",
        args.role,
        tasks.len()
    );
    signals.recv().await;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await??;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `worker` until `stop` turns true, then closes it. A close the broker does not confirm in
/// time is a warning, not a failure: the worker did stop, and its commands come again elsewhere.
pub(crate) async fn run_then_close(
    worker: Worker,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> sagaflow_worker::Result<()> {
    worker
        .run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    // The consumer's session timeout: the group moves the partitions by then anyway.
    match worker.close(Duration::from_secs(10)).await {
        Err(e @ sagaflow_worker::Error::CloseTimedOut { .. }) => {
            warn!("{e}");
            Ok(())
        }
        other => other,
    }
}
