//! `sagaflow projections`: the read models (run, or rebuild from offset 0).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sagaflow_kafka::TopicSpec;
use sagaflow_projections::{ApiConfig, Metrics, ProjectorConfig};

/// Read model options: `sagaflow projections [OPTIONS]` runs the projector, as does
/// `sagaflow projections run [OPTIONS]`; `sagaflow projections rebuild [OPTIONS]` rebuilds.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ProjectionsArgs {
    #[command(subcommand)]
    command: Option<ProjectionsCommand>,
    #[command(flatten)]
    options: ProjectionOptions,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Project the event log continuously and serve the query API (the default).
    Run(ProjectionOptions),
    /// Project the whole event log from offset 0 into fresh tables, then swap them in for the
    /// live ones. A running projector carries on from where the rebuild ended.
    Rebuild(ProjectionOptions),
}

#[derive(Debug, Args)]
struct ProjectionOptions {
    #[command(flatten)]
    connection: crate::Connection,
    #[command(flatten)]
    topics: crate::TopicArgs,
    // Checked in `config`, not by clap: clap must be able to build the parent's options when a
    // subcommand carries its own.
    /// PostgreSQL URL of the read models (required), e.g.
    /// postgres://sagaflow:secret@db:5432/sagaflow.
    #[arg(long, env = "SAGAFLOW_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// PostgreSQL schema of the read models (created if missing).
    #[arg(long, env = "SAGAFLOW_PROJECTIONS_SCHEMA", default_value = "sagaflow")]
    schema: String,
    /// Engine group whose event log to project (<group>.events).
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// Consumer group of the projectors [default: <group>.projections].
    #[arg(long, env = "SAGAFLOW_PROJECTIONS_CONSUMER_GROUP")]
    consumer_group: Option<String>,
    /// HTTP address of the query API, /health and /metrics.
    #[arg(
        long,
        env = "SAGAFLOW_PROJECTIONS_HTTP_LISTEN",
        default_value = "127.0.0.1:9470"
    )]
    http_listen: String,
    /// Days of history kept in the events table (older day partitions are dropped).
    #[arg(long, env = "SAGAFLOW_EVENTS_RETENTION_DAYS", default_value_t = 30)]
    events_retention_days: u32,
    /// Most events written in one transaction.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
    /// Longest wait for a batch to fill, in milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_wait_ms: u64,
    /// Leave and rejoin the group after owning no partition for a while: a workaround for
    /// tansu 0.6's group coordinator (the engine's `tansu-workarounds` key).
    #[arg(long, env = "SAGAFLOW_TANSU_WORKAROUNDS", default_value_t = false, action = clap::ArgAction::Set)]
    tansu_workarounds: bool,
}

impl ProjectionOptions {
    fn config(&self) -> anyhow::Result<ProjectorConfig> {
        anyhow::ensure!(self.batch_max >= 1, "--batch-max must be at least 1, got 0");
        anyhow::ensure!(
            self.events_retention_days >= 1,
            "--events-retention-days must be at least 1, got 0"
        );
        let database_url = self.database_url.clone().context(
            "--database-url (or SAGAFLOW_DATABASE_URL) is required: the PostgreSQL to project into, e.g. postgres://sagaflow:secret@db:5432/sagaflow",
        )?;
        let defaults = ProjectorConfig::for_group(
            self.connection.kafka()?,
            self.connection.registry()?,
            &database_url,
            &self.schema,
            &self.group,
        );
        Ok(ProjectorConfig {
            consumer_group: self
                .consumer_group
                .clone()
                .unwrap_or(defaults.consumer_group.clone()),
            batch_max: self.batch_max,
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            retention_days: self.events_retention_days,
            rejoin_when_unassigned: self.tansu_workarounds,
            ..defaults
        })
    }
}

pub(crate) async fn run(args: ProjectionsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => {
            let config = args.options.config()?;
            project(&args.options, config).await
        }
        Some(ProjectionsCommand::Run(options)) => {
            let config = options.config()?;
            project(&options, config).await
        }
        Some(ProjectionsCommand::Rebuild(options)) => {
            let config = options.config()?;
            let report = tokio::task::spawn_blocking(move || {
                sagaflow_projections::rebuild(&config, sagaflow_projections::print_progress())
            })
            .await
            .context("the rebuild thread failed")??;
            println!(
                "rebuild: {} events projected in {:.1} s ({:.0}/s), {} bad records skipped; the rebuilt tables are live",
                report.events,
                report.seconds,
                report.events as f64 / report.seconds.max(0.001),
                report.bad
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Creates the projector's dead-letter topic if it is missing: a bad record must have somewhere
/// to go before the first one comes.
pub(crate) async fn ensure_dead_letter_topic(
    config: &ProjectorConfig,
    policy: sagaflow_kafka::TopicPolicy,
) -> anyhow::Result<()> {
    config
        .kafka
        .ensure_topics(
            &[TopicSpec::partitioned(&config.dlq_topic, 1).any_partitions()],
            policy,
        )
        .await
        .with_context(|| format!("creating the dead-letter topic {}", config.dlq_topic))
}

async fn project(options: &ProjectionOptions, config: ProjectorConfig) -> anyhow::Result<ExitCode> {
    let mut signals = crate::StopSignals::listen()?;
    ensure_dead_letter_topic(&config, options.topics.policy()?).await?;
    let metrics = Arc::new(Metrics::default());
    let api = ApiConfig {
        database_url: config.database_url.clone(),
        schema: config.schema.clone(),
    };
    let projector =
        tokio::task::block_in_place(|| sagaflow_projections::start(config, metrics.clone()))?;
    let projector = Arc::new(std::sync::Mutex::new(Some(projector)));
    let watched = projector.clone();
    let running = Arc::new(move || {
        watched
            .lock()
            .expect("projector lock")
            .as_ref()
            .is_some_and(|p| !p.is_finished())
    });
    let addr =
        sagaflow_projections::serve(&options.http_listen, api, metrics, running.clone()).await?;
    // Printed on stdout so scripts and tests can find the port.
    println!("projections: http://{addr}");
    loop {
        tokio::select! {
            _ = signals.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if !running() {
                    break;
                }
            }
        }
    }
    let handle = projector.lock().expect("projector lock").take();
    if let Some(handle) = handle {
        tokio::task::block_in_place(|| handle.stop())?;
    }
    Ok(ExitCode::SUCCESS)
}
