//! `sagaflow registry`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use sagaflow_registry::RegistryConfig;

/// Registry options.
#[derive(Debug, Args)]
pub(crate) struct RegistryArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Topic storing the schemas.
    #[arg(long, default_value = RegistryConfig::DEFAULT_TOPIC)]
    topic: String,
}

pub(crate) async fn run(args: RegistryArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::StopSignals::listen()?;
    let mut config =
        RegistryConfig::new(args.kafka.settings()?, args.topics.policy()?, args.listen);
    config.topic = args.topic;
    let registry = sagaflow_registry::start(config).await?;
    // Printed on stdout so scripts and tests can find the port.
    println!("registry: {}", registry.url());
    signals.recv().await;
    registry.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
