//! `sagaflow`: the engine, a local schema registry, example participants, definition checks,
//! the demo and the benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod bench_timers;
mod def_check;
mod demo;
mod eventlog;
mod events;
mod kafka;
mod run_engine;
mod run_participant;
mod run_registry;
mod stack;
mod start;

/// Saga orchestration on Kafka and Avro.
#[derive(Debug, Parser)]
#[command(name = "sagaflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the broker and the registry are.
#[derive(Debug, Clone, Args)]
struct Connection {
    /// Kafka bootstrap servers.
    #[arg(long, env = "SAGAFLOW_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Schema Registry URL.
    #[arg(
        long,
        env = "SAGAFLOW_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine.
    Engine(run_engine::EngineArgs),
    /// Serve a Confluent-compatible schema registry stored in a Kafka topic (local mode).
    Registry(run_registry::RegistryArgs),
    /// Run example participants (payment, flight, hotel, notify, echo).
    Participant(run_participant::ParticipantArgs),
    /// Saga definitions.
    Def {
        #[command(subcommand)]
        command: DefCommand,
    },
    /// Start sagas.
    Start(start::StartArgs),
    /// Print a group's saga event log as JSON lines.
    Events(events::EventsArgs),
    /// Run the trip demo end to end on a broker: registry, engine, participants, 1,000 sagas.
    Demo(demo::DemoArgs),
    /// Measure sagas/s and latency beside the raw broker baseline.
    Bench(bench::BenchArgs),
    /// Schedule many timers (delayed deliveries) and measure firing lateness, memory and rates.
    BenchTimers(bench_timers::BenchTimersArgs),
}

#[derive(Debug, Subcommand)]
enum DefCommand {
    /// Check definition files and report every problem with its line and column.
    Check {
        /// YAML files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SAGAFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Def {
            command: DefCommand::Check { paths },
        } => def_check::run(&paths),
        Command::Engine(args) => run_engine::run(args),
        Command::Registry(args) => runtime().and_then(|rt| rt.block_on(run_registry::run(args))),
        Command::Participant(args) => {
            runtime().and_then(|rt| rt.block_on(run_participant::run(args)))
        }
        Command::Start(args) => runtime().and_then(|rt| rt.block_on(start::run(args))),
        Command::Events(args) => runtime().and_then(|rt| rt.block_on(events::run(args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Bench(args) => runtime().and_then(|rt| rt.block_on(bench::run(args))),
        Command::BenchTimers(args) => runtime().and_then(|rt| rt.block_on(bench_timers::run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
