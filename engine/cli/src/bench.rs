//! `sagaflow bench`: sagas/s and start-to-end latency of a 4-step saga with instant
//! participants, beside the raw broker's produce and consume throughput measured in the same run.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{AsyncCodec, StartSaga, Subject};
use sagaflow_kafka::{hops, KafkaSettings, TopicPolicy, TopicSpec};
use sagaflow_runtime::{Flow, Hops, KafkaRequests, Traffic};
use sagaflow_worker::examples::{Injection, Role};
use sagaflow_worker::WorkerStats;
use serde::Serialize;

use crate::eventlog::{self, percentile, EventLog};
use crate::stack::{LocalStack, ParticipantSpec, StackOptions};
use sagaflow_avro::now_ms;

/// Benchmark options.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    kafka: crate::KafkaArgs,
    #[command(flatten)]
    topics: crate::TopicArgs,
    /// Use this schema registry instead of starting one in-process.
    #[arg(long, env = "SAGAFLOW_REGISTRY_URL")]
    registry_url: Option<String>,
    #[command(flatten)]
    registry_auth: crate::RegistryAuthArgs,
    /// Sagas started as fast as possible (peak throughput).
    #[arg(long, default_value_t = 3000)]
    sagas: usize,
    /// Seconds of load as fast as possible before anything is measured, so that the broker's
    /// JIT compiler, page cache and connections are warm: a JVM broker's first seconds are
    /// slower, and would count against the peak and so against every phase derived from it.
    #[arg(long, default_value_t = 20)]
    warmup_secs: u64,
    /// Seconds of open-loop load at half the measured peak (latency).
    #[arg(long, default_value_t = 10)]
    half_load_secs: u64,
    /// Constant arrival rates (sagas/s, comma-separated) to measure latency at besides half
    /// load, open-loop, for comparisons at the same rates (scripts/bench-vs-restate.sh).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    /// Seconds of load at each of --rates.
    #[arg(long, default_value_t = 10)]
    rate_secs: u64,
    /// Processes whose CPU time counts with this one's in CPU seconds per saga (the broker's,
    /// say); repeatable.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<u32>,
    /// Messages for the raw broker baseline.
    #[arg(long, default_value_t = 50_000)]
    baseline_messages: usize,
    /// Partitions of every topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Directory of saga definitions (must hold `bench`).
    #[arg(long, default_value = "examples")]
    definitions: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write every measured saga's latency to this CSV file: its phase, the phase's rate,
    /// when it was due (epoch ms) and its start-to-end latency (ms). A phase's p99 says how bad
    /// its tail was; this says when it happened, and whether every saga in flight then waited.
    #[arg(long)]
    latency_csv: Option<PathBuf>,
}

/// The raw broker's throughput, measured in the same run as the figures beside it.
#[derive(Debug, Serialize)]
pub(crate) struct BrokerBaseline {
    messages: usize,
    record_bytes: usize,
    pub(crate) produce_msgs_per_s: f64,
    pub(crate) consume_msgs_per_s: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LoadFigures {
    #[serde(skip)]
    label: &'static str,
    /// The constant arrival rate (sagas/s), for open-loop phases.
    rate: Option<f64>,
    sagas: usize,
    finished: usize,
    pub(crate) sagas_per_s: f64,
    /// Start to end: from each saga's intended start under a constant rate (so a late sender
    /// cannot hide the tail), or from its send at peak.
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// When the phase began, epoch ms.
    #[serde(skip)]
    began_ms: i64,
    /// Each completed saga's due time (ms after `began_ms`) and latency (ms), in due order.
    #[serde(skip)]
    samples: Vec<(f64, f64)>,
}

/// One load phase: its latency, its cost in CPU, and its broker traffic.
#[derive(Debug, Serialize)]
struct Phase {
    #[serde(flatten)]
    load: LoadFigures,
    /// CPU seconds (user and system) of this process (engine, participants, load generator,
    /// event-log reader) and of every --cpu-pid, per saga finished.
    cpu_seconds_per_saga: f64,
    traffic: TrafficFigures,
    /// Where the latency went, hop by hop.
    hops: Vec<HopFigures>,
    /// Requests the engine's input consumer, journal and relay sent per saga finished, by
    /// `client/request` (`sagaflow_kafka_requests_total`). Empty unless librdkafka reports them
    /// (`SAGAFLOW_KAFKA_STATISTICS_INTERVAL_MS`); a phase's edges are as coarse as its reports.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    engine_requests_per_saga: BTreeMap<String, f64>,
}

/// What the engine read and wrote per saga step in a phase, split into the saga contract's part
/// and the engine's overhead (`sagaflow_broker_records_total`).
#[derive(Debug, Serialize)]
struct TrafficFigures {
    contract_msgs_per_step: f64,
    overhead_msgs_per_step: f64,
    contract_bytes_per_step: f64,
    overhead_bytes_per_step: f64,
    kinds: Vec<KindFigures>,
}

#[derive(Debug, Serialize)]
struct KindFigures {
    kind: &'static str,
    /// `read` or `write` (`correlation` has both).
    direction: &'static str,
    contract: bool,
    msgs_per_step: f64,
    bytes_per_step: f64,
}

/// One hop of a saga step during a phase (its `_seconds` histogram on `/metrics`, between two
/// scrapes).
#[derive(Debug, Serialize)]
struct HopFigures {
    metric: &'static str,
    observations: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    broker: BrokerBaseline,
    peak: Phase,
    half_load: Phase,
    /// The phases at --rates.
    rates: Vec<Phase>,
    steps_per_saga: usize,
    /// Saga steps per second over the broker's raw produce throughput.
    step_to_produce_ratio: f64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    // Before minutes of measuring, not after.
    if let Some(bad) = args.rates.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
        anyhow::bail!(
            "--rates: {bad} is not a rate; give sagas per second above 0, e.g. --rates 100,200"
        );
    }
    let mut csv = args
        .latency_csv
        .as_deref()
        .map(LatencyCsv::create)
        .transpose()?;
    let definitions = sagaflow_definition::load_dir(&args.definitions)
        .map_err(|d| anyhow::anyhow!("{d}"))
        .with_context(|| format!("loading definitions from {}", args.definitions.display()))?;
    let bench = definitions
        .latest("bench")
        .with_context(|| format!("no `bench` definition in {}", args.definitions.display()))?;
    let steps: Vec<String> = bench
        .steps
        .iter()
        .filter_map(|s| s.command().map(|c| c.topic.clone()))
        .collect();
    let steps_per_saga = steps.len();
    let run_id = format!("{:x}", now_ms());

    let kafka = args.kafka.settings()?;
    let policy = args.topics.policy()?;
    let registry = match &args.registry_url {
        Some(url) => Some(args.registry_auth.settings(url)?),
        None => None,
    };
    progress("measuring the raw broker baseline");
    let broker = baseline(
        &kafka,
        policy,
        args.partitions,
        args.baseline_messages,
        &run_id,
    )
    .await?;

    let group = format!("bench-{run_id}");
    let state_dir = std::env::temp_dir().join(format!("sagaflow-{group}"));
    let stack = bench_stack(
        &kafka,
        registry,
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
    let hop_pages = || {
        format!(
            "{}{}",
            stack.metrics.render(),
            stack.worker_stats.render_hops()
        )
    };
    let measure = Measure {
        hop_pages: &hop_pages,
        producer: &producer,
        codec: &codec,
        starts: &stack.topics.starts,
        log: &log,
        traffic: &stack.metrics.traffic,
        requests: &stack.metrics.requests,
        cpu_pids: &args.cpu_pids,
        steps_per_saga,
        settle: stack.checkpoint_interval + Duration::from_millis(500),
    };

    // Schema registrations, first fetches, group join; then the warm-up proper, in bursts of
    // --sagas, none of it measured.
    let _ = measure.phase(Load::new("warm", 20), None).await?;
    if args.warmup_secs > 0 {
        let warmup = Duration::from_secs(args.warmup_secs);
        progress(&format!(
            "warming up for {} s: bursts of {} sagas, not measured",
            args.warmup_secs, args.sagas
        ));
        let began = std::time::Instant::now();
        let mut sagas = 0;
        while began.elapsed() < warmup {
            let _ = measure.phase(Load::new("warmup", args.sagas), None).await?;
            sagas += args.sagas;
            progress(&format!(
                "warm-up: {sagas} sagas in {:.0} s",
                began.elapsed().as_secs_f64()
            ));
        }
    }

    progress(&format!("peak: {} sagas as fast as possible", args.sagas));
    let peak = measure.phase(Load::new("peak", args.sagas), None).await?;
    if let Some(csv) = &mut csv {
        csv.write(&peak.load)?;
    }

    let rate = (peak.load.sagas_per_s / 2.0).max(1.0);
    let count = ((rate * args.half_load_secs as f64) as usize).max(10);
    progress(&format!(
        "half load: {count} sagas at a constant {rate:.0}/s"
    ));
    let half_load = measure.phase(Load::new("half", count), Some(rate)).await?;
    if let Some(csv) = &mut csv {
        csv.write(&half_load.load)?;
    }
    let mut rates = Vec::with_capacity(args.rates.len());
    for &rate in &args.rates {
        let count = ((rate * args.rate_secs as f64) as usize).max(10);
        progress(&format!("{count} sagas at a constant {rate:.0}/s"));
        let phase = measure.phase(Load::new("rate", count), Some(rate)).await?;
        if let Some(csv) = &mut csv {
            csv.write(&phase.load)?;
        }
        rates.push(phase);
    }
    if let Some(csv) = csv {
        csv.finish()?;
    }
    stack.stop().await?;
    let _ = std::fs::remove_dir_all(&state_dir);

    let report = BenchReport {
        step_to_produce_ratio: peak.load.sagas_per_s * steps_per_saga as f64
            / broker.produce_msgs_per_s,
        broker,
        peak,
        half_load,
        rates,
        steps_per_saga,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The engine with one instant echo participant per step topic of the `bench` definition.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn bench_stack(
    kafka: &KafkaSettings,
    registry: Option<sagaflow_avro::RegistrySettings>,
    policy: TopicPolicy,
    group: &str,
    partitions: i32,
    state_dir: &std::path::Path,
    step_topics: &[String],
    definitions: sagaflow_definition::Registry,
) -> anyhow::Result<LocalStack> {
    // Steps that share a topic share its participant, as they would in a deployment.
    let topics: std::collections::BTreeSet<&String> = step_topics.iter().collect();
    let participants = topics
        .into_iter()
        .map(|topic| ParticipantSpec {
            role: Role::Echo,
            topic: topic.clone(),
            instances: 1,
            injection: Injection::default(),
        })
        .collect();
    LocalStack::start(StackOptions {
        kafka: kafka.clone(),
        registry,
        policy,
        group: group.to_string(),
        partitions,
        state_dir: state_dir.to_path_buf(),
        definitions,
        participants,
    })
    .await
}

/// Progress goes to stderr, with `--json` too: the report alone goes to stdout.
fn progress(message: &str) {
    eprintln!("bench: {message}");
}

fn print_table(r: &BenchReport) {
    let row = |name: String, value: String| println!("  {name:<48} {value:>16}");
    println!(
        "Sagaflow benchmark ({}-step saga, instant participants, one machine)",
        r.steps_per_saga
    );
    println!();
    row(
        "raw broker produce (200 B records)".into(),
        format!("{:.0} msg/s", r.broker.produce_msgs_per_s),
    );
    row(
        "raw broker consume".into(),
        format!("{:.0} msg/s", r.broker.consume_msgs_per_s),
    );
    row(
        "peak sagas".into(),
        format!("{:.0} /s", r.peak.load.sagas_per_s),
    );
    row(
        "peak saga steps".into(),
        format!(
            "{:.0} /s",
            r.peak.load.sagas_per_s * r.steps_per_saga as f64
        ),
    );
    row(
        "steps/s over raw produce msg/s".into(),
        format!("{:.3}", r.step_to_produce_ratio),
    );
    println!();
    println!(
        "  Each phase: start-to-end latency (open-loop phases count from each saga's intended"
    );
    println!("  start), CPU per saga, and what the engine read and wrote per saga step.");
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>11}",
        "phase",
        "p50 ms",
        "p99 ms",
        "finished",
        "CPU ms/saga",
        "contract",
        "overhead",
        "bytes/step"
    );
    for (name, p) in phase_names(r) {
        let t = &p.traffic;
        println!(
            "  {:<22} {:>9.0} {:>9.0} {:>9} {:>11.2} {:>10.3} {:>10.3} {:>11.0}",
            name,
            p.load.p50_ms,
            p.load.p99_ms,
            format!("{}/{}", p.load.finished, p.load.sagas),
            p.cpu_seconds_per_saga * 1e3,
            t.contract_msgs_per_step,
            t.overhead_msgs_per_step,
            t.contract_bytes_per_step + t.overhead_bytes_per_step,
        );
    }
    if !r.half_load.engine_requests_per_saga.is_empty() {
        println!();
        println!("  The engine's requests to the brokers per saga at half load (sagaflow_kafka_requests_total):");
        for (name, n) in &r.half_load.engine_requests_per_saga {
            row(name.clone(), format!("{n:.3}"));
        }
    }
    println!();
    println!("  Messages per step at half load, by kind (sagaflow_broker_records_total):");
    for k in r
        .half_load
        .traffic
        .kinds
        .iter()
        .filter(|k| k.msgs_per_step > 0.0)
    {
        row(
            format!(
                "{} {} ({})",
                k.kind,
                k.direction,
                if k.contract { "contract" } else { "overhead" }
            ),
            format!("{:.3} ({:.0} B)", k.msgs_per_step, k.bytes_per_step),
        );
    }
    println!();
    println!(
        "  Hops, p50 / p99 ms (the engine's and participants' /metrics histograms, interpolated"
    );
    println!("  within buckets):");
    let phases = phase_names(r);
    print!("  {:<42}", "metric");
    for (name, _) in &phases {
        print!(" {name:>20}");
    }
    println!();
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for (i, (metric, _)) in Hops::NAMES
        .iter()
        .chain(&WorkerStats::HOP_NAMES)
        .enumerate()
    {
        print!("  {metric:<42}");
        for (_, p) in &phases {
            let cell = p.hops.get(i).map_or_else(String::new, |h| {
                format!("{} / {}", ms(h.p50_ms), ms(h.p99_ms))
            });
            print!(" {cell:>20}");
        }
        println!();
    }
}

/// Each phase of `r` with its name for the table, in the order they ran.
fn phase_names(r: &BenchReport) -> Vec<(String, &Phase)> {
    [("peak".to_string(), &r.peak)]
        .into_iter()
        .chain(std::iter::once((
            format!("half load {:.0}/s", r.half_load.load.rate.unwrap_or(0.0)),
            &r.half_load,
        )))
        .chain(
            r.rates
                .iter()
                .map(|p| (format!("constant {:.0}/s", p.load.rate.unwrap_or(0.0)), p)),
        )
        .collect()
}

/// Produces then consumes `n` 200-byte records on a fresh topic.
pub(crate) async fn baseline(
    kafka: &KafkaSettings,
    policy: TopicPolicy,
    partitions: i32,
    n: usize,
    run_id: &str,
) -> anyhow::Result<BrokerBaseline> {
    let topic = format!("bench-baseline-{run_id}");
    kafka
        .ensure_topics(&[TopicSpec::partitioned(&topic, partitions)], policy)
        .await?;
    let producer: FutureProducer = kafka.producer_config("bench-baseline", 5).create()?;
    let payload = vec![b'x'; 200];
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        let key = i.to_string();
        let future = producer
            .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
            .map_err(|(e, _)| e)?;
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
    let produce = n as f64 / started.elapsed().as_secs_f64();

    let consumer: StreamConsumer = kafka
        .config("bench-baseline", &[])
        .set("group.id", "sagaflow-bench-baseline")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut seen = 0usize;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(Ok(_)) => seen += 1,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("baseline consumer read only {seen}/{n} records in 30 s"),
        }
    }
    let consume = n as f64 / started.elapsed().as_secs_f64();
    Ok(BrokerBaseline {
        messages: n,
        record_bytes: payload.len(),
        produce_msgs_per_s: produce,
        consume_msgs_per_s: consume,
    })
}

/// What every load phase is measured with.
struct Measure<'a> {
    /// The engine's and the participants' hop histograms, in the Prometheus text format.
    hop_pages: &'a (dyn Fn() -> String + Sync),
    producer: &'a FutureProducer,
    codec: &'a AsyncCodec,
    starts: &'a str,
    log: &'a Arc<Mutex<EventLog>>,
    traffic: &'a Traffic,
    requests: &'a KafkaRequests,
    cpu_pids: &'a [u32],
    steps_per_saga: usize,
    /// How long after a phase its last changelog writes are acknowledged: the engine writes the
    /// changelog once per checkpoint interval, so without this wait a phase's last flush would
    /// count in the next phase.
    settle: Duration,
}

impl Measure<'_> {
    /// Runs `load` (at a constant `rate`/s if given) and measures it.
    async fn phase(&self, load: Load, rate: Option<f64>) -> anyhow::Result<Phase> {
        let traffic_before = self.traffic_now();
        let hops_before = (self.hop_pages)();
        let requests_before = self.requests.totals();
        let cpu_before = cpu_seconds(self.cpu_pids)?;
        let figures = load
            .run(self.producer, self.codec, self.starts, self.log, rate)
            .await?;
        let cpu = cpu_seconds(self.cpu_pids)? - cpu_before;
        // No later phase reads the sagas that ended: the log stays the size of one phase.
        self.log
            .lock()
            .expect("event log lock")
            .sagas
            .retain(|_, saga| saga.ended_at.is_none());
        tokio::time::sleep(self.settle).await;
        let traffic_after = self.traffic_now();
        let hops_after = (self.hop_pages)();
        // In the order a saga's step takes them: the start or reply waits for the engine, is
        // decided, journaled, applied; the command is relayed, waits for the participant, whose
        // reply is produced.
        let hops = Hops::NAMES
            .iter()
            .chain(&WorkerStats::HOP_NAMES)
            .map(|(metric, _)| {
                let ms =
                    |q| hops::quantile(&hops_after, Some(&hops_before), metric, q).map(|s| s * 1e3);
                HopFigures {
                    metric,
                    observations: hops::count(&hops_after, metric)
                        - hops::count(&hops_before, metric),
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                }
            })
            .collect();
        let steps = (figures.sagas * self.steps_per_saga).max(1) as f64;
        let kinds: Vec<KindFigures> = Flow::ALL
            .iter()
            .zip(traffic_before.iter().zip(&traffic_after))
            .map(|(flow, ((r0, b0), (r1, b1)))| KindFigures {
                kind: flow.label(),
                direction: flow.direction(),
                contract: flow.contract(),
                msgs_per_step: (r1 - r0) as f64 / steps,
                bytes_per_step: (b1 - b0) as f64 / steps,
            })
            .collect();
        let sum = |contract: bool, f: fn(&KindFigures) -> f64| {
            kinds
                .iter()
                .filter(|k| k.contract == contract)
                .map(f)
                .sum::<f64>()
        };
        let traffic = TrafficFigures {
            contract_msgs_per_step: sum(true, |k| k.msgs_per_step),
            overhead_msgs_per_step: sum(false, |k| k.msgs_per_step),
            contract_bytes_per_step: sum(true, |k| k.bytes_per_step),
            overhead_bytes_per_step: sum(false, |k| k.bytes_per_step),
            kinds,
        };
        let engine_requests_per_saga = self
            .requests
            .totals()
            .into_iter()
            .map(|(k, n)| {
                let delta = n.saturating_sub(requests_before.get(&k).copied().unwrap_or(0));
                (k, delta as f64 / figures.finished.max(1) as f64)
            })
            .filter(|(_, per_saga)| *per_saga > 0.0)
            .collect();
        Ok(Phase {
            engine_requests_per_saga,
            cpu_seconds_per_saga: cpu / figures.finished.max(1) as f64,
            load: figures,
            traffic,
            hops,
        })
    }

    fn traffic_now(&self) -> Vec<(u64, u64)> {
        Flow::ALL.iter().map(|f| self.traffic.get(*f)).collect()
    }
}

/// User and system CPU seconds of this process and of `pids`, from `/proc/<pid>/stat`.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for pid in std::iter::once("self".to_string()).chain(pids.iter().map(u32::to_string)) {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {path} for CPU time (is --cpu-pid {pid} a running process on this machine?)")
        })?;
        // Fields after the command name, which is in parentheses and may hold spaces: state is
        // field 3, utime and stime are fields 14 and 15, in clock ticks.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("unexpected contents of {path}"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> anyhow::Result<f64> {
            fields
                .get(i - 3)
                .and_then(|f| f.parse::<f64>().ok())
                .with_context(|| format!("no CPU time in field {i} of {path}"))
        };
        total += (ticks(14)? + ticks(15)?) / CLOCK_TICKS_PER_SECOND;
    }
    Ok(total)
}

/// USER_HZ, the unit of `/proc/<pid>/stat` CPU times: 100 on every Linux architecture Sagaflow
/// builds for (the kernel's own tick rate is hidden behind it).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

pub(crate) struct Load {
    label: &'static str,
    sagas: usize,
}

impl Load {
    pub(crate) fn new(label: &'static str, sagas: usize) -> Self {
        Self { label, sagas }
    }

    /// Starts the sagas (at a constant `rate`/s if given, open-loop) and waits until they all
    /// end.
    pub(crate) async fn run(
        &self,
        producer: &FutureProducer,
        codec: &AsyncCodec,
        starts: &str,
        log: &Arc<Mutex<EventLog>>,
        rate: Option<f64>,
    ) -> anyhow::Result<LoadFigures> {
        let run = format!("{}-{:x}", self.label, now_ms());
        // When each saga was meant to start: under a constant rate, its slot in the schedule,
        // however late the sender got to it (no coordinated omission); at peak, its send.
        let mut sent_at: HashMap<String, Instant> = HashMap::with_capacity(self.sagas);
        // Room for the whole phase before its first saga: a map that grows mid-phase moves
        // every entry at once, under the lock the event reader needs, and every saga in flight
        // waits (Dedupe::new in the worker library says how long).
        log.lock()
            .expect("event log lock")
            .sagas
            .reserve(self.sagas);
        let mut inflight = FuturesUnordered::new();
        let began = Instant::now();
        let began_ms = now_ms();
        for i in 0..self.sagas {
            let due = rate.map(|rate| began + Duration::from_secs_f64(i as f64 / rate));
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            let saga_id = format!("bench-{run}-{i}");
            let start = StartSaga {
                request_id: saga_id.clone(),
                saga_id: saga_id.clone(),
                definition: "bench".into(),
                version: None,
                input_json: format!("{{\"id\":\"{saga_id}\"}}"),
                requested_at: now_ms(),
            };
            let value = codec.encode(Subject::Topic(starts), &start).await?;
            let future = producer
                .send_result(FutureRecord::to(starts).key(&saga_id).payload(&value))
                .map_err(|(e, _)| e)
                .context("enqueueing a start request")?;
            let _ = sent_at.insert(saga_id, due.unwrap_or_else(Instant::now));
            inflight.push(future);
            while inflight.len() >= 5_000 {
                if let Some(r) = inflight.next().await {
                    let _ = r?.map_err(|(e, _)| e)?;
                }
            }
        }
        while let Some(r) = inflight.next().await {
            let _ = r?.map_err(|(e, _)| e)?;
        }
        let deadline = Instant::now() + Duration::from_secs(120 + self.sagas as u64 / 50);
        loop {
            let done = {
                let log = log.lock().expect("event log lock");
                sent_at
                    .keys()
                    .filter(|id| log.sagas.get(*id).is_some_and(|s| s.ended_at.is_some()))
                    .count()
            };
            if done == self.sagas || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = log.lock().expect("event log lock");
        let mut samples = Vec::with_capacity(self.sagas);
        let mut last_end = began;
        let mut not_completed = 0usize;
        for (id, sent) in &sent_at {
            let Some(saga) = log.sagas.get(id) else {
                continue;
            };
            let Some(end) = saga.ended_at else { continue };
            // Only completed sagas count: a saga that compensated did not do the work measured.
            if saga.terminal().map(|e| e.event_type)
                != Some(sagaflow_avro::EventType::SagaCompleted)
            {
                not_completed += 1;
                continue;
            }
            samples.push((
                sent.duration_since(began).as_secs_f64() * 1000.0,
                end.duration_since(*sent).as_secs_f64() * 1000.0,
            ));
            last_end = last_end.max(end);
        }
        anyhow::ensure!(
            not_completed == 0,
            "{not_completed} {} sagas ended without completing; the figures would be meaningless (check the engine log)",
            self.label
        );
        drop(log);
        let mut latencies: Vec<f64> = samples.iter().map(|(_, latency)| *latency).collect();
        latencies.sort_by(f64::total_cmp);
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let finished = latencies.len();
        Ok(LoadFigures {
            label: self.label,
            rate,
            sagas: self.sagas,
            finished,
            sagas_per_s: finished as f64 / last_end.duration_since(began).as_secs_f64().max(1e-3),
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            max_ms: latencies.last().copied().unwrap_or(0.0),
            began_ms,
            samples,
        })
    }
}

/// `--latency-csv`: one line per measured saga.
struct LatencyCsv {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl LatencyCsv {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| {
            format!(
                "creating the latency CSV {}; pass --latency-csv a path in a writable directory",
                path.display()
            )
        })?;
        let mut csv = Self {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        };
        csv.put(b"phase,rate,due_ms,latency_ms\n")?;
        Ok(csv)
    }

    fn write(&mut self, figures: &LoadFigures) -> anyhow::Result<()> {
        let text = latency_lines(figures);
        self.put(text.as_bytes())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out
            .flush()
            .with_context(|| format!("writing the latency CSV {}", self.path.display()))
    }

    fn put(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out
            .write_all(bytes)
            .with_context(|| format!("writing the latency CSV {}", self.path.display()))
    }
}

/// A phase's sagas as `--latency-csv` lines: phase, rate (empty at peak), due time in epoch ms,
/// latency in ms.
fn latency_lines(figures: &LoadFigures) -> String {
    let rate = figures.rate.map(|r| format!("{r:.0}")).unwrap_or_default();
    let mut text = String::with_capacity(figures.samples.len() * 40);
    for (due, latency) in &figures.samples {
        text.push_str(&format!(
            "{},{rate},{:.1},{latency:.2}\n",
            figures.label,
            figures.began_ms as f64 + due
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_csv_lines_carry_phase_rate_due_time_and_latency() {
        let figures = LoadFigures {
            label: "half",
            rate: Some(1500.4),
            sagas: 2,
            finished: 2,
            sagas_per_s: 0.0,
            p50_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            began_ms: 1_000,
            samples: vec![(0.0, 12.5), (0.67, 700.25)],
        };
        assert_eq!(
            latency_lines(&figures),
            "half,1500,1000.0,12.50\nhalf,1500,1000.7,700.25\n"
        );
        let peak = LoadFigures {
            label: "peak",
            rate: None,
            ..figures
        };
        assert!(latency_lines(&peak).starts_with("peak,,1000.0,12.50\n"));
    }
}
