//! `sagaflow bench-timers`: schedules many timers (delayed deliveries) spread over a few
//! minutes and reports how late they fire, the engine's memory, and timers/s scheduled and
//! fired, beside the raw broker baseline measured in the same run.
//!
//! The engine runs as a child process so its memory is its own. Lateness is measured where it
//! matters, at a consumer of the target topic: receive time minus due time.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sagaflow_kafka::TopicSpec;
use sagaflow_registry::RegistryConfig;
use sagaflow_runtime::parked::{DELAY_TOPIC_HEADER, DELAY_UNTIL_HEADER};
use sagaflow_runtime::topics::{self, Topics};
use serde::Serialize;

use crate::bench::{baseline, BrokerBaseline};
use crate::bench_engine::spawn_engine;
use crate::eventlog::percentile;
use sagaflow_avro::now_ms;

/// Timer benchmark options.
#[derive(Debug, Args)]
pub(crate) struct BenchTimersArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// Timers to schedule.
    #[arg(long, default_value_t = 1_000_000)]
    timers: usize,
    /// Seconds over which the due times are spread (uniformly at random).
    #[arg(long, default_value_t = 180)]
    spread_secs: u64,
    /// Seconds from the start of scheduling to the first due time.
    #[arg(long, default_value_t = 120)]
    lead_secs: u64,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Messages for the raw broker baseline.
    #[arg(long, default_value_t = 50_000)]
    baseline_messages: usize,
    /// Directory of saga definitions for the engine (timers need none; the engine needs one).
    #[arg(long, default_value = "examples")]
    definitions: std::path::PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct TimerReport {
    broker: BrokerBaseline,
    timers: usize,
    spread_secs: u64,
    lead_secs: u64,
    /// Timers accepted (journaled) by the engine per second while they were being produced.
    scheduled_per_s: f64,
    /// Seconds until the engine had accepted every timer.
    scheduling_secs: f64,
    /// Deliveries per second between the first and the last one.
    fired_per_s: f64,
    delivered: usize,
    redelivered: usize,
    fired_early: usize,
    lateness_p50_ms: f64,
    lateness_p99_ms: f64,
    lateness_max_ms: f64,
    /// Due time to the relay's send (the record's create time): the engine's share.
    engine_p50_ms: f64,
    engine_p99_ms: f64,
    /// The relay's send to the consumer's receipt: the broker's and the consumer's share.
    transport_p50_ms: f64,
    transport_p99_ms: f64,
    engine_peak_rss_mib: f64,
    engine_rss_at_end_mib: f64,
    max_timers_in_memory: f64,
}

/// Progress goes to stderr, with `--json` too: the report alone goes to stdout.
fn progress(message: &str) {
    eprintln!("bench-timers: {message}");
}

pub(crate) async fn run(args: BenchTimersArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.timers > 0, "--timers must be at least 1");
    let run_id = format!("{:x}", now_ms());
    let kafka = args.kafka.settings()?;
    let policy = args.topics.policy()?;
    progress("measuring the raw broker baseline");
    let broker = baseline(
        &kafka,
        policy,
        args.partitions,
        args.baseline_messages,
        &run_id,
    )
    .await?;

    let group = format!("timers-{run_id}");
    let names = Topics::new(&group);
    let target = format!("{group}.fired");
    topics::ensure_engine_topics(&kafka, &group, args.partitions, policy).await?;
    kafka
        .ensure_topics(&[TopicSpec::partitioned(&target, args.partitions)], policy)
        .await?;
    let listen = "127.0.0.1:0".parse().expect("valid address");
    let registry = sagaflow_registry::start(RegistryConfig::new(kafka.clone(), policy, listen))
        .await
        .context("starting the local schema registry")?;
    let state_dir = std::env::temp_dir().join(format!("sagaflow-{group}"));
    let definitions = &args.definitions;
    let engine = spawn_engine(
        &args.kafka,
        policy,
        &registry.url(),
        &group,
        args.partitions,
        &state_dir,
        definitions,
        &[],
    )?;
    // The clock starts once the engine owns its partitions.
    engine.wait_owned(args.partitions).await?;

    // The consumer of fired timers runs from the start, so no delivery waits on it.
    let consumer: StreamConsumer = kafka
        .config("bench-timers", &[("fetch.wait.max.ms", "5")])
        .set("group.id", format!("{group}-bench"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&target])?;

    let started = now_ms();
    let first_due = started + i64::try_from(args.lead_secs * 1000)?;
    let spread = i64::try_from(args.spread_secs * 1000)?.max(1);
    progress(&format!(
        "scheduling {} timers due over {} s, starting in {} s",
        args.timers, args.spread_secs, args.lead_secs
    ));
    let producer: FutureProducer = kafka.producer_config("bench-timers", 5).create()?;
    let scheduling = tokio::spawn(schedule(
        producer,
        names.delay.clone(),
        target.clone(),
        args.timers,
        first_due,
        spread,
    ));

    let mut lateness: Vec<f64> = Vec::with_capacity(args.timers);
    let mut engine_share: Vec<f64> = Vec::with_capacity(args.timers);
    let mut transport: Vec<f64> = Vec::with_capacity(args.timers);
    let mut seen: HashSet<String> = HashSet::with_capacity(args.timers);
    let mut redelivered = 0usize;
    let mut fired_early = 0usize;
    let mut first_delivery: Option<i64> = None;
    let mut last_delivery = 0i64;
    let mut scheduled_at: Option<f64> = None;
    let mut peak_rss = 0f64;
    let mut max_in_memory = 0f64;
    let deadline = Instant::now() + Duration::from_secs(args.lead_secs + args.spread_secs + 600);
    let mut last_report = Instant::now();
    let mut last_poll = Instant::now();
    while seen.len() < args.timers && Instant::now() < deadline {
        // Poll the engine often while it is still accepting, so the scheduling rate is exact
        // to half a second.
        if scheduled_at.is_none() && last_poll.elapsed() >= Duration::from_millis(500) {
            last_poll = Instant::now();
            let accepted = engine.metric("sagaflow_delayed_scheduled_total").await;
            if accepted as usize >= args.timers {
                scheduled_at = Some((now_ms() - started) as f64 / 1000.0);
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            peak_rss = peak_rss.max(engine.rss_kib("VmRSS:"));
            max_in_memory = max_in_memory.max(engine.metric("sagaflow_timers_in_memory").await);
            let accepted = engine.metric("sagaflow_delayed_scheduled_total").await;
            progress(&format!(
                "{:>5.0} s: {accepted:.0} accepted, {} fired, engine RSS {:.0} MiB",
                (now_ms() - started) as f64 / 1000.0,
                seen.len(),
                engine.rss_kib("VmRSS:") / 1024.0
            ));
        }
        let message = match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
        {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        let now = now_ms();
        let header = |name: &str| {
            message.headers().and_then(|hs| {
                hs.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let (Some(id), Some(due)) = (
            header("sagaflow-id"),
            header(DELAY_UNTIL_HEADER).and_then(|d| d.parse::<i64>().ok()),
        ) else {
            continue;
        };
        if !seen.insert(id) {
            redelivered += 1;
            continue;
        }
        let produced = message.timestamp().to_millis().unwrap_or(now);
        if produced < due {
            fired_early += 1;
        }
        lateness.push((now - due) as f64);
        engine_share.push((produced - due) as f64);
        transport.push((now - produced) as f64);
        first_delivery.get_or_insert(now);
        last_delivery = now;
    }
    let produced = scheduling.await??;
    let scheduling_secs = scheduled_at.unwrap_or(((now_ms() - started) as f64 / 1000.0).max(1e-3));
    peak_rss = peak_rss.max(engine.rss_kib("VmHWM:"));
    let rss_end = engine.rss_kib("VmRSS:");
    drop(engine);
    registry.shutdown().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    anyhow::ensure!(
        seen.len() == args.timers,
        "only {} of {} timers fired before the deadline",
        seen.len(),
        args.timers
    );
    lateness.sort_by(f64::total_cmp);
    engine_share.sort_by(f64::total_cmp);
    transport.sort_by(f64::total_cmp);
    let firing_secs =
        ((last_delivery - first_delivery.unwrap_or(last_delivery)) as f64 / 1000.0).max(1e-3);
    let report = TimerReport {
        broker,
        timers: produced,
        spread_secs: args.spread_secs,
        lead_secs: args.lead_secs,
        scheduled_per_s: args.timers as f64 / scheduling_secs,
        scheduling_secs,
        fired_per_s: seen.len() as f64 / firing_secs,
        delivered: seen.len(),
        redelivered,
        fired_early,
        lateness_p50_ms: percentile(&lateness, 50.0),
        lateness_p99_ms: percentile(&lateness, 99.0),
        lateness_max_ms: lateness.last().copied().unwrap_or(0.0),
        engine_p50_ms: percentile(&engine_share, 50.0),
        engine_p99_ms: percentile(&engine_share, 99.0),
        transport_p50_ms: percentile(&transport, 50.0),
        transport_p99_ms: percentile(&transport, 99.0),
        engine_peak_rss_mib: peak_rss / 1024.0,
        engine_rss_at_end_mib: rss_end / 1024.0,
        max_timers_in_memory: max_in_memory,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.fired_early == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Produces `n` delay requests due uniformly at random in `[first_due, first_due + spread)`.
async fn schedule(
    producer: FutureProducer,
    delay_topic: String,
    target: String,
    n: usize,
    first_due: i64,
    spread: i64,
) -> anyhow::Result<usize> {
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        let due = first_due + rand::random_range(0..spread);
        let due_text = due.to_string();
        let key = format!("t{i}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: DELAY_TOPIC_HEADER,
                value: Some(target.as_bytes()),
            })
            .insert(Header {
                key: DELAY_UNTIL_HEADER,
                value: Some(due_text.as_bytes()),
            });
        let future = producer
            .send_result(
                FutureRecord::to(&delay_topic)
                    .key(&key)
                    .payload(&due_text)
                    .headers(headers),
            )
            .map_err(|(e, _)| e)
            .context("enqueueing a delay request")?;
        inflight.push(future);
        while inflight.len() >= 20_000 {
            if let Some(r) = inflight.next().await {
                let _ = r?.map_err(|(e, _)| e)?;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        let _ = r?.map_err(|(e, _)| e)?;
    }
    Ok(n)
}

fn print_table(r: &TimerReport) {
    let row = |label: &str, value: String| println!("  {label:<46} {value:>16}");
    println!(
        "Sagaflow timer benchmark ({} timers due over {} s, starting {} s after scheduling began)",
        r.timers, r.spread_secs, r.lead_secs
    );
    println!();
    row(
        "raw broker produce (200 B records)",
        format!("{:.0} msg/s", r.broker.produce_msgs_per_s),
    );
    row(
        "raw broker consume",
        format!("{:.0} msg/s", r.broker.consume_msgs_per_s),
    );
    row(
        "timers scheduled (accepted by the engine)",
        format!("{:.0} /s", r.scheduled_per_s),
    );
    row(
        "scheduled over raw produce msg/s",
        format!("{:.3}", r.scheduled_per_s / r.broker.produce_msgs_per_s),
    );
    row("timers fired", format!("{:.0} /s", r.fired_per_s));
    row(
        "firing lateness p50 / p99",
        format!("{:.0} / {:.0} ms", r.lateness_p50_ms, r.lateness_p99_ms),
    );
    row(
        "firing lateness max",
        format!("{:.0} ms", r.lateness_max_ms),
    );
    row(
        "  of which engine (due -> relay send) p50 / p99",
        format!("{:.0} / {:.0} ms", r.engine_p50_ms, r.engine_p99_ms),
    );
    row(
        "  of which broker + consumer p50 / p99",
        format!("{:.0} / {:.0} ms", r.transport_p50_ms, r.transport_p99_ms),
    );
    row(
        "engine RSS peak / at end",
        format!(
            "{:.0} / {:.0} MiB",
            r.engine_peak_rss_mib, r.engine_rss_at_end_mib
        ),
    );
    row(
        "most timers held in memory",
        format!("{:.0}", r.max_timers_in_memory),
    );
    row(
        "delivered, redelivered copies, early",
        format!("{}, {}, {}", r.delivered, r.redelivered, r.fired_early),
    );
}
