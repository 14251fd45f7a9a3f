//! `sagaflow admin-server`: the admin API (reads through the read models, saga commands and
//! bulk jobs) for callers with a bearer token.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sagaflow_admin::{Audit, Auth, Commands, Participants, Parts, ReadModels, ServerConfig};

use crate::{Connection, TopicArgs};

/// Admin API options.
#[derive(Debug, Args)]
pub(crate) struct AdminServerArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    topics: TopicArgs,
    /// Engine group whose sagas it operates.
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// Where to serve the API.
    #[arg(long, env = "SAGAFLOW_ADMIN_LISTEN", default_value = "127.0.0.1:9480")]
    listen: String,
    /// The tokens and the JWT issuer it accepts (TOML; see docs/operations.md).
    #[arg(
        long,
        env = "SAGAFLOW_ADMIN_AUTH_FILE",
        required_unless_present = "hash_token"
    )]
    auth_file: Option<PathBuf>,
    /// The read models' query API (`sagaflow projections`).
    #[arg(
        long,
        env = "SAGAFLOW_QUERY_URL",
        default_value = "http://127.0.0.1:9470"
    )]
    query_url: String,
    /// How long a saga command waits for the engine's answer, in seconds.
    #[arg(long, default_value_t = 30)]
    answer_wait_secs: u64,
    /// Print the SHA-256 digest of the token read from stdin, as the auth file wants it, and
    /// exit.
    #[arg(long)]
    hash_token: bool,
    /// The definitions directory (the engine's): its command topics are listed as participants
    /// even if never paused.
    #[arg(long, env = "SAGAFLOW_DEFINITIONS_DIR")]
    definitions: Option<std::path::PathBuf>,
}

pub(crate) async fn run(args: AdminServerArgs) -> anyhow::Result<ExitCode> {
    if args.hash_token {
        let mut token = String::new();
        std::io::stdin()
            .read_to_string(&mut token)
            .context("reading the token from stdin")?;
        anyhow::ensure!(!token.trim().is_empty(), "no token on stdin");
        println!("{}", sagaflow_admin::token_digest(&token));
        return Ok(ExitCode::SUCCESS);
    }
    let auth_file = args
        .auth_file
        .as_deref()
        .context("--auth-file is required")?;
    let auth = Auth::load(auth_file)?;
    let mut signals = crate::StopSignals::listen()?;
    let kafka = args.connection.kafka()?;
    let registry = args.connection.registry()?;
    let commands = Commands::connect(&kafka, &registry, &args.group).await?;
    let audit = Audit::connect(&kafka, &registry, &args.group, args.topics.policy()?).await?;
    let known = crate::admin::command_topics(args.definitions.as_deref())?;
    let participants = Participants::new(&kafka, &registry, &args.group, known)?;
    let addr = sagaflow_admin::serve(
        &args.listen,
        Parts {
            auth,
            commands,
            read_models: ReadModels::new(&args.query_url),
            audit,
            participants,
        },
        ServerConfig {
            answer_wait: Duration::from_secs(args.answer_wait_secs),
        },
    )
    .await?;
    // Printed on stdout so scripts and tests can find the port.
    println!("admin: http://{addr}");
    signals.recv().await;
    Ok(ExitCode::SUCCESS)
}
