//! `sagaflow engine`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use sagaflow_runtime::{topics, Engine, EngineConfig};
use tracing::info;

/// Engine options; each overrides the config file and `SAGAFLOW_*` environment variables.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// TOML config file (keys as in engine/runtime/src/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Schema Registry URL.
    #[arg(long)]
    registry_url: Option<String>,
    /// Engine group (consumer group and topic prefix).
    #[arg(long)]
    group: Option<String>,
    /// Partitions of the engine topics when they are created.
    #[arg(long)]
    partitions: Option<i32>,
    /// RocksDB directory.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory of saga definitions.
    #[arg(long)]
    definitions: Option<PathBuf>,
    /// HTTP address for /metrics and /health (empty disables).
    #[arg(long)]
    http_listen: Option<String>,
}

pub(crate) fn run(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let mut config = EngineConfig::load(args.config.as_deref())?;
    if let Some(v) = args.bootstrap {
        config.bootstrap = v;
    }
    if let Some(v) = args.registry_url {
        config.registry_url = v;
    }
    if let Some(v) = args.group {
        config.group = v;
    }
    if let Some(v) = args.partitions {
        config.partitions = v;
    }
    if let Some(v) = args.state_dir {
        config.state_dir = v;
    }
    if let Some(v) = args.definitions {
        config.definitions_dir = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    config.validate()?;
    let definitions = sagaflow_definition::load_dir(&config.definitions_dir)
        .map_err(|d| anyhow::anyhow!("{d}"))
        .with_context(|| {
            format!(
                "loading definitions from {}",
                config.definitions_dir.display()
            )
        })?;
    anyhow::ensure!(
        !definitions.is_empty(),
        "no saga definitions (*.yaml) in {}; pass --definitions DIR",
        config.definitions_dir.display()
    );
    let rt = crate::runtime()?;
    rt.block_on(topics::ensure_engine_topics(
        &config.bootstrap,
        &config.group,
        config.partitions,
    ))?;
    rt.block_on(topics::ensure_definition_topics(
        &config.bootstrap,
        &definitions,
        config.partitions,
    ))?;
    let engine = Engine::start(config.clone(), definitions)?;
    if !config.http_listen.is_empty() {
        let addr = rt.block_on(sagaflow_runtime::serve_http(
            &config.http_listen,
            engine.metrics.clone(),
        ))?;
        // Printed on stdout so scripts and tests can find the port.
        println!("metrics: http://{addr}/metrics");
    }
    info!(group = %config.group, "engine running; Ctrl-C or SIGTERM stops it");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
            _ = wait_finished(&engine) => {},
        }
        anyhow::Ok(())
    })?;
    engine.stop()?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_finished(engine: &sagaflow_runtime::EngineHandle) {
    while !engine.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
