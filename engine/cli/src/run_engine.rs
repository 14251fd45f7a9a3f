//! `sagaflow engine`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use sagaflow_runtime::{topics, Engine, EngineConfig};
use tracing::info;

/// Engine options. Precedence, lowest first: built-in defaults, the --config file,
/// `SAGAFLOW_<KEY>` environment variables, then these flags. `sagaflow engine --help` lists every
/// key with its default.
#[derive(Debug, Args)]
#[command(after_long_help = concat!(
    "Every configuration key, with its default (engine/runtime/src/default.toml). Each one is\n",
    "also the environment variable SAGAFLOW_<KEY>, upper case with '_' for '-':\n\n",
    include_str!("../../runtime/src/default.toml")
))]
pub(crate) struct EngineArgs {
    /// TOML config file: any key listed below, and a [kafka] table of client properties.
    #[arg(long, env = "SAGAFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka bootstrap servers [default: 127.0.0.1:9092].
    #[arg(long, env = "SAGAFLOW_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// A librdkafka property for every Kafka client, KEY=VALUE; repeat it for more. Overrides
    /// the config file's [kafka] table and SAGAFLOW_KAFKA_<NAME> variables.
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    kafka: Vec<String>,
    /// Schema Registry URL [default: http://127.0.0.1:8081].
    #[arg(long, env = "SAGAFLOW_REGISTRY_URL")]
    registry_url: Option<String>,
    /// Engine group: consumer group and topic prefix [default: sagaflow].
    #[arg(long, env = "SAGAFLOW_GROUP")]
    group: Option<String>,
    /// Partitions of the engine topics when they are created [default: 4].
    #[arg(long, env = "SAGAFLOW_PARTITIONS")]
    partitions: Option<i32>,
    /// RocksDB directory [default: .sagaflow/state].
    #[arg(long, env = "SAGAFLOW_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Directory of saga definitions [default: examples].
    #[arg(long, env = "SAGAFLOW_DEFINITIONS_DIR")]
    definitions: Option<PathBuf>,
    /// HTTP address for /metrics and /health, empty to disable [default: 127.0.0.1:0].
    #[arg(long, env = "SAGAFLOW_HTTP_LISTEN")]
    http_listen: Option<String>,
}

pub(crate) fn run(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let mut config = EngineConfig::load(args.config.as_deref())?;
    if let Some(v) = args.bootstrap {
        config.kafka.set_bootstrap(v);
    }
    config.kafka.apply_overrides(&args.kafka)?;
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
    // Before anything announces this engine (see `StopSignals`).
    let mut signals = {
        let _runtime = rt.enter();
        crate::StopSignals::listen()?
    };
    rt.block_on(topics::ensure_engine_topics(
        &config.kafka,
        &config.group,
        config.partitions,
        config.topic_policy(),
    ))?;
    rt.block_on(topics::ensure_definition_topics(
        &config.kafka,
        &definitions,
        config.partitions,
        config.topic_policy(),
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
        tokio::select! {
            () = signals.recv() => {},
            () = wait_finished(&engine) => {},
        }
    });
    engine.stop()?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_finished(engine: &sagaflow_runtime::EngineHandle) {
    while !engine.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
