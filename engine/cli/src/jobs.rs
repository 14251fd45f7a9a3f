//! `sagaflow jobs`: the bulk jobs an admin API runs (`sagaflow admin-server`): list them, show
//! one (following its progress), cancel one.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sagaflow_admin::ApiClient;
use serde_json::Value;

use crate::admin::{Done, Format, Progress};

/// Where the admin API is, and who asks.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    /// The admin API (`sagaflow admin-server`).
    #[arg(
        long,
        env = "SAGAFLOW_ADMIN_URL",
        default_value = "http://127.0.0.1:9480",
        global = true
    )]
    api_url: String,
    /// A bearer token: viewer to look, operator to cancel.
    #[arg(
        long,
        env = "SAGAFLOW_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print text, or the API's JSON.
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// The jobs the service ran since it started, newest first.
    List,
    /// One job: its progress, counts and failures.
    Show {
        /// The job id (`job-…`).
        job_id: String,
        /// Show progress until the job is over.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a job sending; the answers to what it sent are still collected.
    Cancel {
        /// The job id (`job-…`).
        job_id: String,
    },
}

pub(crate) async fn run(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let token = args.token.as_deref().context(
        "no token: pass --token or set SAGAFLOW_ADMIN_TOKEN to a token of the admin API",
    )?;
    let api = ApiClient::new(&args.api_url, token);
    let ok = |(status, body): (u16, Value)| -> anyhow::Result<Value> {
        anyhow::ensure!(
            status == 200,
            "{} ({status})",
            body["error"].as_str().unwrap_or("the admin API refused")
        );
        Ok(body)
    };
    match &args.command {
        JobsCommand::List => {
            let jobs = ok(api.get("/api/jobs").await?)?;
            match args.output {
                Format::Json => println!("{jobs}"),
                Format::Text => {
                    let items = jobs["items"].as_array().cloned().unwrap_or_default();
                    if items.is_empty() {
                        println!("no job has run on this admin API since it started");
                    }
                    for job in &items {
                        println!("{}", summary(job));
                    }
                }
            }
        }
        JobsCommand::Show { job_id, follow } => {
            let path = format!("/api/jobs/{job_id}");
            let mut job = ok(api.get(&path).await?)?;
            if *follow {
                let mut progress = Progress::new();
                while job["status"] == "running" {
                    progress.show(&Done::from(&job), false);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    job = ok(api.get(&path).await?)?;
                }
                progress.show(&Done::from(&job), true);
            }
            match args.output {
                Format::Json => println!("{job}"),
                Format::Text => {
                    println!("{}", summary(&job));
                    for f in job["failures"].as_array().into_iter().flatten().take(20) {
                        println!(
                            "  {}: {} {}",
                            f["saga_id"].as_str().unwrap_or("?"),
                            f["outcome"].as_str().unwrap_or("?"),
                            f["reason"].as_str().unwrap_or("")
                        );
                    }
                }
            }
        }
        JobsCommand::Cancel { job_id } => {
            let path = format!("/api/jobs/{job_id}/cancel");
            let job =
                ok(api.post(&path, None).await?).with_context(|| format!("cancelling {job_id}"))?;
            match args.output {
                Format::Json => println!("{job}"),
                Format::Text => println!("cancelled: {}", summary(&job)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line: id, action, status, progress, who, filter.
fn summary(job: &Value) -> String {
    let d = Done::from(job);
    let filter: Vec<String> = job["filter"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!(
        "{}  {}  {}  {}/{} done, {} applied, {} failed, {} remaining  by {}  {}",
        d.job_id,
        job["action"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?"),
        d.done,
        d.matched,
        d.applied,
        d.failed,
        d.remaining,
        job["actor"].as_str().unwrap_or("?"),
        filter.join(" ")
    )
}
