//! `sagaflow bench-projections`: how fast the projector writes a large event log into
//! PostgreSQL, beside the raw consume rate of the same log and the engine's event rate at its
//! peak, all measured in the same run.
//!
//! The log is the engine's own: the `bench` saga runs at peak, and its events are copied under
//! new saga ids until the log holds `--events` events. The projector then runs alone over it,
//! from offset 0 into fresh tables (the rebuild path, which is the live path plus progress).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{AsyncCodec, SagaEvent, Subject};
use sagaflow_kafka::TopicSpec;

use crate::bench::{bench_stack, Load};
use crate::eventlog;
use sagaflow_avro::now_ms;

/// Options.
#[derive(Debug, Args)]
pub(crate) struct BenchProjectionsArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// PostgreSQL URL to project into (a fresh schema `bench_<run>`, dropped at the end).
    #[arg(long, env = "SAGAFLOW_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Events in the projected log.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Sagas of the engine's peak run (their events are the log's template).
    #[arg(long, default_value_t = 2000)]
    sagas: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Directory of saga definitions (must hold `bench`).
    #[arg(long, default_value = "examples")]
    definitions: std::path::PathBuf,
    /// Most events per projector transaction.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
}

pub(crate) async fn run(args: BenchProjectionsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.events >= 1, "--events must be at least 1");
    let definitions = sagaflow_definition::load_dir(&args.definitions)
        .map_err(|d| anyhow::anyhow!("{d}"))
        .with_context(|| format!("loading definitions from {}", args.definitions.display()))?;
    let steps: Vec<String> = definitions
        .latest("bench")
        .with_context(|| format!("no `bench` definition in {}", args.definitions.display()))?
        .steps
        .iter()
        .filter_map(|s| s.command().map(|c| c.topic.clone()))
        .collect();
    let kafka = args.kafka.settings()?;
    let policy = args.topics.policy()?;
    let run_id = format!("{:x}", now_ms());
    let group = format!("benchproj-{run_id}");
    let state_dir = std::env::temp_dir().join(format!("sagaflow-{group}"));
    let stack = bench_stack(
        &kafka,
        None,
        policy,
        &group,
        args.partitions,
        &state_dir,
        &steps,
        definitions,
    )
    .await?;
    let log = eventlog::follow(&kafka, &stack.registry, &stack.topics.events).await?;
    let producer = crate::kafka::producer(&kafka)?;
    let codec = AsyncCodec::new(&stack.registry)?;

    eprintln!("bench-projections: engine peak, {} sagas", args.sagas);
    Load::new("warm", 20)
        .run(&producer, &codec, &stack.topics.starts, &log, None)
        .await?;
    let before = log.lock().expect("event log lock").records;
    let peak = Load::new("peak", args.sagas)
        .run(&producer, &codec, &stack.topics.starts, &log, None)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let template: Vec<Vec<SagaEvent>> = {
        let log = log.lock().expect("event log lock");
        log.sagas
            .values()
            .map(|s| s.events.values().cloned().collect())
            .collect()
    };
    let per_saga =
        (log.lock().expect("event log lock").records - before) as f64 / args.sagas as f64;
    let engine_events_per_s = peak.sagas_per_s * per_saga;

    let topic = format!("{group}.copied.events");
    kafka
        .ensure_topics(&[TopicSpec::partitioned(&topic, args.partitions)], policy)
        .await?;
    eprintln!(
        "bench-projections: writing {} events to {topic}",
        args.events
    );
    copy_log(&kafka, &codec, &topic, &template, args.events).await?;

    eprintln!("bench-projections: raw consume of {topic}");
    let raw_per_s = raw_consume(&kafka, &topic, args.partitions, args.events)?;

    let schema = format!("bench_{run_id}");
    // A rebuild assigns partitions itself; it never joins the group.
    let config = sagaflow_projections::ProjectorConfig {
        topic: topic.clone(),
        batch_max: args.batch_max,
        ..sagaflow_projections::ProjectorConfig::for_group(
            kafka.clone(),
            stack.registry.clone(),
            &args.database_url,
            &schema,
            &group,
        )
    };
    eprintln!("bench-projections: projecting into PostgreSQL schema {schema}");
    let url = args.database_url.clone();
    let report = tokio::task::spawn_blocking(move || {
        let report =
            sagaflow_projections::rebuild(&config, sagaflow_projections::print_progress())?;
        // The blocking PostgreSQL client must not run on the async runtime's threads.
        sagaflow_projections::store::drop_schema(&url, &schema)?;
        Ok::<_, anyhow::Error>(report)
    })
    .await??;
    let projected_per_s = report.events as f64 / report.seconds.max(1e-3);
    stack.stop().await?;
    let _ = std::fs::remove_dir_all(&state_dir);

    println!(
        "Sagaflow projector benchmark ({} events, batches of {})",
        report.events, args.batch_max
    );
    println!("  projector, alone, into PostgreSQL   {projected_per_s:>9.0} events/s");
    println!("  raw consume of the same log         {raw_per_s:>9.0} events/s");
    println!(
        "  engine at its peak                  {engine_events_per_s:>9.0} events/s ({:.0} sagas/s x {per_saga:.1} events)",
        peak.sagas_per_s
    );
    println!(
        "  projector / engine peak             {:>9.1}x (target: at least 2x)",
        projected_per_s / engine_events_per_s.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `total` events: the template's sagas again and again under new ids.
async fn copy_log(
    kafka: &sagaflow_kafka::KafkaSettings,
    codec: &AsyncCodec,
    topic: &str,
    template: &[Vec<SagaEvent>],
    total: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(!template.is_empty(), "the peak run left no events to copy");
    let producer: FutureProducer = kafka.producer_config("bench-projections", 20).create()?;
    let mut inflight = FuturesUnordered::new();
    let mut written = 0usize;
    let started = Instant::now();
    let mut copy = 0usize;
    'copies: loop {
        for saga in template {
            for event in saga {
                if written == total {
                    break 'copies;
                }
                let mut event = event.clone();
                event.saga_id = format!("{}~{copy}", event.saga_id);
                event.event_id = format!("{}/{}", event.saga_id, event.seq);
                let value = codec.encode(Subject::Topic(topic), &event).await?;
                let future = producer
                    .send_result(FutureRecord::to(topic).key(&event.saga_id).payload(&value))
                    .map_err(|(e, _)| e)?;
                inflight.push(future);
                written += 1;
                while inflight.len() >= 20_000 {
                    if let Some(r) = inflight.next().await {
                        let _ = r?.map_err(|(e, _)| e)?;
                    }
                }
                if written.is_multiple_of(100_000) {
                    eprintln!(
                        "bench-projections: {written}/{total} events written ({:.0}/s)",
                        written as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        copy += 1;
    }
    while let Some(r) = inflight.next().await {
        let _ = r?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Reads the whole topic without decoding; records per second.
fn raw_consume(
    kafka: &sagaflow_kafka::KafkaSettings,
    topic: &str,
    partitions: i32,
    n: usize,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = kafka
        .config("bench-projections", &[])
        .set("group.id", "sagaflow-bench-projections-raw")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut seen = 0usize;
    let mut idle = Instant::now();
    while seen < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                seen += 1;
                idle = Instant::now();
            }
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::ensure!(
                idle.elapsed() < Duration::from_secs(30),
                "the raw consumer read only {seen}/{n} records"
            ),
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
