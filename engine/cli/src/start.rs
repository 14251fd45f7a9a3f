//! `sagaflow start`.

use std::process::ExitCode;
use std::time::Duration;

use sagaflow_avro::now_ms;

use anyhow::Context as _;
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sagaflow_avro::{AsyncCodec, StartSaga, Subject};

use crate::Connection;

/// Start options.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    #[command(flatten)]
    connection: Connection,
    /// Engine group.
    #[arg(long, env = "SAGAFLOW_GROUP", default_value = "sagaflow")]
    group: String,
    /// Definition name.
    #[arg(long)]
    definition: String,
    /// Definition version (default: latest deployed).
    #[arg(long)]
    version: Option<i32>,
    /// Initial context, a JSON object.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Saga id (default: random).
    #[arg(long)]
    saga_id: Option<String>,
}

/// Sends one start request.
pub(crate) async fn send_start(
    producer: &FutureProducer,
    codec: &AsyncCodec,
    topic: &str,
    start: &StartSaga,
) -> anyhow::Result<()> {
    let value = codec.encode(Subject::Topic(topic), start).await?;
    producer
        .send(
            FutureRecord::to(topic).key(&start.saga_id).payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("sending a start request to {topic}"))?;
    Ok(())
}

pub(crate) async fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let input: serde_json::Value =
        serde_json::from_str(&args.input).context("--input must be a JSON object")?;
    anyhow::ensure!(
        input.is_object(),
        "--input must be a JSON object, got {input}"
    );
    let saga_id = args
        .saga_id
        .unwrap_or_else(|| format!("{}-{:016x}", args.definition, rand::random::<u64>()));
    let producer = crate::kafka::producer(&args.connection.kafka()?)?;
    let codec = AsyncCodec::new(&args.connection.registry()?)?;
    let start = StartSaga {
        request_id: format!("cli-{}", now_ms()),
        saga_id: saga_id.clone(),
        definition: args.definition,
        version: args.version,
        input_json: input.to_string(),
        requested_at: now_ms(),
    };
    send_start(&producer, &codec, &format!("{}.starts", args.group), &start).await?;
    println!("{saga_id}");
    Ok(ExitCode::SUCCESS)
}
