//! `sagaflow group`: the engine group's membership.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::KafkaArgs;

/// Group commands.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Remove static members (engines run with `instance-id`) from the engine group, so that
    /// their partitions move to the other engines at once instead of after the session timeout
    /// (KIP-345). For engines that stopped for good, as in a scale-down: an engine still running
    /// with one of these ids is fenced and stops.
    RemoveMembers(RemoveMembersArgs),
}

/// Options of `group remove-members`.
#[derive(Debug, Args)]
pub(crate) struct RemoveMembersArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Engine group.
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// The instance-id of an engine to remove; repeat it for more.
    #[arg(long = "instance-id", value_name = "ID", required = true)]
    instance_ids: Vec<String>,
    /// Longest wait for each step (joining in the member's place, leaving), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

pub(crate) fn run(command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::RemoveMembers(args) => {
            let kafka = args.kafka.settings()?;
            for id in &args.instance_ids {
                eprintln!("removing instance {id} from group {}...", args.group);
                sagaflow_runtime::remove_static_member(
                    &kafka,
                    &args.group,
                    id,
                    Duration::from_millis(args.timeout_ms),
                )?;
                println!("removed: {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
