//! `sagaflow events`: prints a group's saga event log as JSON lines.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::eventlog;
use crate::Connection;

/// Event log options.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Engine group.
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// Only this saga.
    #[arg(long)]
    saga: Option<String>,
    /// Only sagas that have not ended.
    #[arg(long)]
    unfinished: bool,
    /// Stop after the log has been quiet this long, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
}

pub(crate) async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let topic = format!("{}.events", args.group);
    let log = eventlog::read_all(
        &args.connection.kafka()?,
        &args.connection.registry()?,
        &topic,
        Duration::from_millis(args.quiet_ms),
    )
    .await?;
    let log = log.lock().expect("event log lock");
    let mut ids: Vec<&String> = log.sagas.keys().collect();
    ids.sort();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in ids {
        if args.saga.as_ref().is_some_and(|s| s != id) {
            continue;
        }
        let saga = &log.sagas[id];
        if args.unfinished && saga.terminal().is_some() {
            continue;
        }
        for e in saga.events.values() {
            let line = e.to_json();
            if let Err(e) = writeln!(out, "{line}") {
                return stdout_closed(e);
            }
        }
    }
    if let Err(e) = out.flush() {
        return stdout_closed(e);
    }
    Ok(ExitCode::SUCCESS)
}

/// A reader that stops early (`sagaflow events | head`) closes the pipe: that ends the output, it
/// is not an error.
fn stdout_closed(e: std::io::Error) -> anyhow::Result<ExitCode> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(anyhow::Error::new(e).context("writing the events to stdout"))
    }
}
