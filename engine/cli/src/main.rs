//! `sagaflow`: the engine, a local schema registry, example participants, definition checks,
//! the demo and the benchmark.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sagaflow_avro::RegistrySettings;
use sagaflow_kafka::{KafkaSettings, TopicPolicy};

mod admin;
mod admin_server;
mod bench;
mod bench_engine;
mod bench_projections;
mod bench_sleepers;
mod bench_timers;
mod def_check;
mod def_replay;
mod demo;
mod eventlog;
mod events;
mod group;
mod jobs;
mod kafka;
mod projections;
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

/// Where the broker is, and the client properties to reach it with.
#[derive(Debug, Clone, Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "SAGAFLOW_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// A librdkafka property for every Kafka client, KEY=VALUE; repeat it for more. The
    /// environment variables SAGAFLOW_KAFKA_<NAME> set them too (`_` for `.`, `__` for `_`,
    /// `___` for `-`).
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    properties: Vec<String>,
}

impl KafkaArgs {
    fn settings(&self) -> anyhow::Result<KafkaSettings> {
        Ok(KafkaSettings::from_env_and(
            &self.bootstrap,
            &self.properties,
        )?)
    }
}

/// How to authenticate to a Schema Registry.
#[derive(Debug, Clone, Args)]
struct RegistryAuthArgs {
    /// Registry basic auth, user:password.
    #[arg(long, env = "SAGAFLOW_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    registry_basic_auth: Option<String>,
    /// Registry bearer token.
    #[arg(long, env = "SAGAFLOW_REGISTRY_BEARER_TOKEN", hide_env_values = true)]
    registry_bearer_token: Option<String>,
    /// PEM file of CA certificates to trust for the registry's TLS certificate.
    #[arg(long, env = "SAGAFLOW_REGISTRY_CA_FILE")]
    registry_ca_file: Option<PathBuf>,
}

impl RegistryAuthArgs {
    fn settings(&self, url: &str) -> anyhow::Result<RegistrySettings> {
        let settings = RegistrySettings {
            url: url.to_string(),
            basic_auth: self.registry_basic_auth.clone(),
            bearer_token: self.registry_bearer_token.clone(),
            ca_file: self.registry_ca_file.clone(),
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// Replication of the topics a command creates.
#[derive(Debug, Clone, Args)]
struct TopicArgs {
    /// Replication factor of created topics (1 for a single local broker).
    #[arg(long, env = "SAGAFLOW_REPLICATION_FACTOR", default_value_t = 3)]
    replication_factor: i32,
    /// min.insync.replicas of created topics.
    #[arg(long, env = "SAGAFLOW_MIN_INSYNC_REPLICAS", default_value_t = 2)]
    min_insync_replicas: i32,
}

impl TopicArgs {
    fn policy(&self) -> anyhow::Result<TopicPolicy> {
        anyhow::ensure!(
            self.replication_factor >= 1
                && (1..=self.replication_factor).contains(&self.min_insync_replicas),
            "--replication-factor must be at least 1 and --min-insync-replicas between 1 and it, got {} and {}",
            self.replication_factor,
            self.min_insync_replicas
        );
        Ok(TopicPolicy {
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        })
    }
}

/// Where the broker and the registry are.
#[derive(Debug, Clone, Args)]
struct Connection {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Schema Registry URL.
    #[arg(
        long,
        env = "SAGAFLOW_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
    #[command(flatten)]
    registry_auth: RegistryAuthArgs,
}

impl Connection {
    fn kafka(&self) -> anyhow::Result<KafkaSettings> {
        self.kafka.settings()
    }

    fn registry(&self) -> anyhow::Result<RegistrySettings> {
        self.registry_auth.settings(&self.registry_url)
    }
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
    /// The engine group's membership.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Print a group's saga event log as JSON lines.
    Events(events::EventsArgs),
    /// An operator's command to one saga (retry, skip, cancel, abort, pause, resume, resolve):
    /// waits for the engine's answer, and exits non-zero when it is rejected.
    Admin(Box<admin::AdminArgs>),
    /// The admin API: reads through the read models, saga commands and bulk jobs, for callers
    /// with a viewer or operator token; audited on the saga's event log and `<group>.audit`.
    AdminServer(Box<admin_server::AdminServerArgs>),
    /// The bulk jobs an admin API runs: list them, show one (--follow its progress), cancel one.
    Jobs(jobs::JobsArgs),
    /// Read models: project the event log into PostgreSQL, with a query API and metrics.
    Projections(Box<projections::ProjectionsArgs>),
    /// Run the trip demo end to end on a broker: registry, engine, participants, 1,000 sagas.
    Demo(demo::DemoArgs),
    /// Measure sagas/s and latency beside the raw broker baseline.
    Bench(bench::BenchArgs),
    /// Benchmark the read model projector on a log of a million events.
    BenchProjections(bench_projections::BenchProjectionsArgs),
    /// Schedule many timers (delayed deliveries) and measure firing lateness, memory and rates.
    BenchTimers(bench_timers::BenchTimersArgs),
    /// Hold many sagas asleep in a wait step: engine memory, restore time on a new node, and
    /// how late they wake.
    BenchSleepers(bench_sleepers::BenchSleepersArgs),
}

#[derive(Debug, Subcommand)]
enum DefCommand {
    /// Check definition files and report every problem with its line and column.
    Check {
        /// YAML files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Replay recorded sagas through a new version and report where it would diverge (a
    /// different command, order or ending); exit code 0 means no divergence.
    Replay(def_replay::ReplayArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // SAGAFLOW_LOG first, so that a RUST_LOG meant for another program (a broker, say)
            // does not flood this one's log; RUST_LOG is the fallback.
            tracing_subscriber::EnvFilter::try_from_env("SAGAFLOW_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Fault injection for the fault-matrix test; inert unless SAGAFLOW_FAILPOINTS is set.
    match sagaflow_failpoints::arm_from_env() {
        Ok(armed) if !armed.is_empty() => tracing::warn!(?armed, "failpoints armed"),
        Ok(_) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Def {
            command: DefCommand::Check { paths },
        } => def_check::run(&paths),
        Command::Def {
            command: DefCommand::Replay(args),
        } => runtime().and_then(|rt| rt.block_on(def_replay::run(args))),
        Command::Engine(args) => run_engine::run(args),
        Command::Group { command } => group::run(command),
        Command::Registry(args) => runtime().and_then(|rt| rt.block_on(run_registry::run(args))),
        Command::Participant(args) => {
            runtime().and_then(|rt| rt.block_on(run_participant::run(args)))
        }
        Command::Start(args) => runtime().and_then(|rt| rt.block_on(start::run(args))),
        Command::Events(args) => runtime().and_then(|rt| rt.block_on(events::run(args))),
        Command::Admin(args) => runtime().and_then(|rt| rt.block_on(admin::run(*args))),
        Command::Jobs(args) => runtime().and_then(|rt| rt.block_on(jobs::run(args))),
        Command::AdminServer(args) => {
            runtime().and_then(|rt| rt.block_on(admin_server::run(*args)))
        }
        Command::Projections(args) => runtime().and_then(|rt| rt.block_on(projections::run(*args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Bench(args) => runtime().and_then(|rt| rt.block_on(bench::run(args))),
        Command::BenchProjections(args) => {
            runtime().and_then(|rt| rt.block_on(bench_projections::run(args)))
        }
        Command::BenchTimers(args) => runtime().and_then(|rt| rt.block_on(bench_timers::run(args))),
        Command::BenchSleepers(args) => {
            runtime().and_then(|rt| rt.block_on(bench_sleepers::run(args)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain_once(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once. The library crates' errors name their cause in
/// their own message (it belongs to what an operator must read) and also expose it as their
/// source, so printing the chain as it is repeats every cause, often twice.
fn chain_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// SIGTERM and Ctrl-C (SIGINT). A process listens for them before it announces itself (its
/// `metrics:`, `registry:` or `participant` line): a signal sent right after the announcement then
/// stops it cleanly, instead of killing it by the default action. Needs a tokio runtime context.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.interrupt.recv() => {},
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// An error that names its cause in its message and also exposes it, as the library
    /// crates' do.
    #[derive(Debug)]
    struct Naming(std::io::Error);

    impl std::fmt::Display for Naming {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "reading the metadata of t: {}; check --bootstrap",
                self.0
            )
        }
    }

    impl std::error::Error for Naming {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_says_each_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(Naming(refused())).context("starting sagas");
        assert_eq!(
            super::chain_once(&e),
            "starting sagas: reading the metadata of t: refused; check --bootstrap"
        );
        // A cause the message does not name is still said.
        let e = anyhow::Error::new(refused()).context("connecting");
        assert_eq!(super::chain_once(&e), "connecting: refused");
    }

    /// The defaults `sagaflow engine --help` states are the ones the engine applies.
    #[test]
    fn engine_help_states_the_real_defaults() {
        let mut cli = super::Cli::command();
        let help = cli
            .find_subcommand_mut("engine")
            .expect("engine subcommand")
            .render_long_help()
            .to_string();
        let defaults: toml::Table = include_str!("../../runtime/src/default.toml")
            .parse()
            .expect("defaults parse");
        for key in [
            "bootstrap",
            "registry-url",
            "group",
            "partitions",
            "state-dir",
            "definitions-dir",
            "http-listen",
        ] {
            let value = match &defaults[key] {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert!(
                help.contains(&format!("[default: {value}]")),
                "engine --help does not state {key}'s default {value}:\n{help}"
            );
            let var = format!("SAGAFLOW_{}", key.to_uppercase().replace('-', "_"));
            assert!(help.contains(&var), "engine --help does not name {var}");
        }
    }
}
