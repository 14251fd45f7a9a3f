//! The engine loop: one thread owns the consumer, the tasks and the relay.
//!
//! Partitions are restored inside the consumer's rebalance callback, before they are assigned,
//! so the consumer starts fetching each input exactly at the position the journal recorded (no
//! committed consumer offsets are used). The callback runs inside `poll` on this same thread,
//! so no decision can run concurrently with a rebalance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sagaflow_avro::now_ms;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, Header};
use sagaflow_core::Definitions;
use sagaflow_definition::{Definition, Registry};
use tracing::{error, info, warn};

use crate::config::EngineConfig;
use crate::control::Controls;
use crate::error::{Error, Result};
use crate::liveness::{Evictor, Heartbeats, Settled};
use crate::membership::{self, OrphanWatch, Rejoin};
use crate::metrics::Metrics;
use crate::oversize::JournalFailure;
use crate::relay::Relay;
use crate::restore::{self, RestoreClients, Restored};
use crate::standby::Standby;
use crate::store::Store;
use crate::task::{resume_relay, Acked, InputRecord, Produce, Task, TaskEnv, TaskStatus};
use crate::topics::{InputKind, Topics};
use crate::traffic::{message_bytes, Flow};

struct RegistryDefinitions(Registry);

impl Definitions for RegistryDefinitions {
    fn find(&self, name: &str, version: Option<u32>) -> Option<&Definition> {
        match version {
            Some(v) => self.0.get(name, v).map(AsRef::as_ref),
            None => self.0.latest(name).map(AsRef::as_ref),
        }
    }
}

/// Everything a restore needs; shared with the rebalance callback.
struct RestoreDeps {
    store: Arc<Store>,
    codec: Arc<BlockingCodec>,
    reader: BaseConsumer,
    producer: FutureProducer,
    topics: Topics,
    writer: String,
    metrics: Arc<Metrics>,
    /// Copies of the partitions other engines own; the rebalance callback hands them to the
    /// restores.
    standby: Standby,
    /// The owned partitions' heartbeats; the rebalance callback says which those are.
    heartbeats: Heartbeats,
    /// Since when this engine holds its assignment, for the eviction of silent peers.
    settled: Settled,
}

impl RestoreDeps {
    fn clients(&self) -> RestoreClients<'_> {
        RestoreClients {
            store: &self.store,
            reader: &self.reader,
            producer: &self.producer,
            codec: &self.codec,
            topics: &self.topics,
            writer: &self.writer,
            traffic: &self.metrics.traffic,
        }
    }
}

enum GroupEvent {
    /// The whole set the group gave this engine (before its per-partition events).
    Assignment(BTreeSet<i32>),
    Assigned(i32, Box<Restored>),
    AssignFailed(i32, String),
    Revoked(Vec<i32>),
}

struct GroupContext {
    deps: Arc<RestoreDeps>,
    events: Mutex<Vec<GroupEvent>>,
    /// This consumer's number in `metrics.requests`.
    requests_instance: u64,
}

impl ClientContext for GroupContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.deps
            .metrics
            .requests
            .record("input", self.requests_instance, statistics);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let mut events = self.events.lock().expect("group events lock");
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                info!(?partitions, "partitions assigned; restoring");
                events.push(GroupEvent::Assignment(partitions.clone()));
                self.deps.heartbeats.assigned(&partitions);
                self.deps.standby.release(&partitions);
                let mut assignment = TopicPartitionList::new();
                for &partition in &partitions {
                    let d = &self.deps;
                    let restored = restore::restore(&d.clients(), partition, true, 0);
                    let positions = match &restored {
                        Ok(r) => r.meta.positions.clone(),
                        Err(_) => BTreeMap::new(),
                    };
                    for topic in d.topics.inputs() {
                        let offset = positions
                            .get(topic)
                            .map_or(Offset::Beginning, |o| Offset::Offset(o + 1));
                        if let Err(e) = assignment.add_partition_offset(topic, partition, offset) {
                            error!(error = %e, topic, partition, "cannot add an input partition to the assignment: it is not read until the next rebalance (restart this engine to force one)");
                        }
                    }
                    events.push(match restored {
                        Ok(r) => GroupEvent::Assigned(partition, Box::new(r)),
                        Err(e) => GroupEvent::AssignFailed(partition, e.to_string()),
                    });
                }
                if let Err(e) = consumer.assign(&assignment) {
                    error!(error = %e, ?partitions, "cannot assign the input partitions: none of them is read until the next rebalance (restart this engine to force one)");
                }
                // After the restores: a rebalance that began during them waits for this engine,
                // and the partitions it moved fall silent meanwhile.
                *self.deps.settled.lock().expect("settled lock") = Some(Instant::now());
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(?partitions, "partitions revoked");
                *self.deps.settled.lock().expect("settled lock") = None;
                self.deps.heartbeats.revoked(&partitions);
                events.push(GroupEvent::Revoked(partitions.into_iter().collect()));
                if let Err(e) = consumer.unassign() {
                    error!(error = %e, "cannot unassign partitions");
                }
            }
            other => error!(
                error = ?other,
                ?partitions,
                "the consumer group reported a rebalance error; the client rejoins the group by itself, and the engine restores what it is then assigned"
            ),
        }
    }
}

struct JournalTicket {
    partition: i32,
    generation: u64,
    seq: u64,
    /// When the record was first handed to the producer (the journal hop's start, waits for
    /// room in its queue included).
    sent: Instant,
    /// How long the broker took to acknowledge it, read in the delivery callback (the engine
    /// loop drains the acknowledgements later).
    acked_after: Option<Duration>,
    /// The record's size.
    bytes: usize,
}

impl JournalTicket {
    fn timing(&self) -> Acked {
        let produced = crate::spans::wall(self.sent.elapsed());
        Acked {
            seq: self.seq,
            produced,
            acknowledged: produced + self.acked_after.unwrap_or_default(),
        }
    }
}

type JournalAck = (JournalTicket, std::result::Result<i64, JournalFailure>);

struct JournalContext {
    acks: Sender<JournalAck>,
    metrics: Arc<Metrics>,
    /// This producer's number in `metrics.requests`.
    requests_instance: u64,
}

impl ClientContext for JournalContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics
            .requests
            .record("journal", self.requests_instance, statistics);
    }
}

impl ProducerContext for JournalContext {
    type DeliveryOpaque = Box<JournalTicket>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut ticket: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(JournalFailure::from_kafka(e)),
        };
        ticket.acked_after = Some(ticket.sent.elapsed());
        let _ = self.acks.send((*ticket, outcome));
    }
}

/// How long [`EngineHandle::stop`] waits: the shutdown's own 10 s for the last writes, 5 s for
/// the relay, and the group consumer's close.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// Starts engines.
#[derive(Debug)]
pub struct Engine;

/// A running engine.
#[derive(Debug)]
pub struct EngineHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
    /// The engine's counters.
    pub metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Whether the engine loop has ended (by error or stop).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the engine cleanly (finishes in-flight writes, leaves the group) and waits, for
    /// 30 s at most: closing a group consumer waits for the broker for as long as it
    /// takes, forever if it is gone (a stop that gives up leaves the engine thread behind).
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_WITHIN;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return Err(Error::StopTimedOut(STOP_WITHIN));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.join_inner()
    }

    /// Waits for the engine loop to end (it ends only on error or stop).
    pub fn join(mut self) -> Result<()> {
        self.join_inner()
    }

    fn join_inner(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(Error::Config("engine thread panicked".into()))),
            None => Ok(()),
        }
    }
}

/// A late reply must still meet the saga's marker: the dedupe window has to outlast every
/// attempt timeout, or a reply that is slow but in time would be dead-lettered as unknown.
fn check_dedupe_window(config: &EngineConfig, definitions: &Registry) -> Result<()> {
    let longest = definitions
        .iter()
        .flat_map(|d| d.all_steps().map(move |s| (d, s)))
        .filter_map(|(d, s)| s.timeout.map(|t| (d.key(), s.name.as_str(), t)))
        .max_by_key(|(_, _, t)| *t);
    match longest {
        Some((definition, step, timeout))
            if timeout.as_millis() >= u128::try_from(config.dedupe_window_ms).unwrap_or(0) =>
        {
            Err(Error::Config(format!(
                "dedupe-window-ms ({} ms) must be longer than the longest attempt timeout, {} ms of step {step:?} in {definition}; raise dedupe-window-ms (SAGAFLOW_DEDUPE_WINDOW_MS) or shorten the timeout",
                config.dedupe_window_ms,
                timeout.as_millis()
            )))
        }
        _ => Ok(()),
    }
}

impl Engine {
    /// Starts an engine with `config` and deployed `definitions` on its own thread. Call it
    /// outside async code, or from `spawn_blocking`: start-up blocks until the clients exist.
    pub fn start(config: EngineConfig, definitions: Registry) -> Result<EngineHandle> {
        config.validate()?;
        check_dedupe_window(&config, &definitions)?;
        crate::deployed::check_immutable(
            &config.kafka,
            &Topics::new(&config.group).definitions,
            &definitions,
            &config.definitions_dir.display().to_string(),
        )?;
        let metrics = Arc::new(Metrics::with_spans(crate::spans::Spans::new(
            &config.otlp_endpoint,
            &config.group,
        )?));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = channel();
        let thread = {
            let metrics = metrics.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sagaflow-engine".into())
                .spawn(move || {
                    let mut processor = match Processor::new(config, definitions, metrics, stop) {
                        Ok(p) => {
                            let _ = ready_tx.send(Ok(()));
                            p
                        }
                        Err(e) => {
                            let message = e.to_string();
                            let _ = ready_tx.send(Err(e));
                            return Err(Error::Config(message));
                        }
                    };
                    let result = processor.run();
                    if let Err(e) = &result {
                        error!(error = %e, "engine stopped with an error");
                    }
                    result
                })
                .map_err(|source| Error::Io {
                    action: "spawning the engine thread".into(),
                    source,
                })?
        };
        ready_rx
            .recv()
            .map_err(|_| Error::Config("engine thread ended during start-up".into()))??;
        Ok(EngineHandle {
            stop,
            thread: Some(thread),
            metrics,
        })
    }
}

/// What every task reads and nothing changes while the engine runs.
struct Context {
    targets: crate::targets::Targets,
    config: EngineConfig,
    definitions: RegistryDefinitions,
    metrics: Arc<Metrics>,
    deps: Arc<RestoreDeps>,
    settings: sagaflow_core::Settings,
    writer: String,
    /// Whether the changelog gets batches (the setting, if the retention allows it).
    changelog_batches: bool,
}

impl Context {
    fn env<'a>(&'a self, controls: &'a Controls) -> TaskEnv<'a> {
        TaskEnv {
            controls,
            store: &self.deps.store,
            codec: &self.deps.codec,
            topics: &self.deps.topics,
            settings: &self.settings,
            definitions: &self.definitions,
            metrics: &self.metrics,
            partitions: self.config.partitions,
            writer: &self.writer,
            signal_ttl_ms: self.config.signal_ttl_ms,
            timer_horizon_ms: self.config.timer_horizon_ms,
            cache_sagas: self.config.state_cache_sagas,
            timer_lookahead_ms: self.config.timer_lookahead_ms,
            targets: &self.targets,
            changelog_batches: self.changelog_batches,
        }
    }
}

/// First wait before a stopped partition restores again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Processor {
    ctx: Context,
    /// Paused participants, from the control topic.
    controls: Controls,
    /// When the held commands were last counted into the metrics.
    held_reported: Instant,
    stop: Arc<AtomicBool>,
    consumer: BaseConsumer<GroupContext>,
    journal: ThreadedProducer<JournalContext>,
    journal_acks: Receiver<JournalAck>,
    relay: Relay,
    tasks: BTreeMap<i32, Task>,
    /// Owned partitions stopped by an error, with when to restore them again.
    failed: BTreeMap<i32, Instant>,
    /// Per partition, the last failure and the backoff it got.
    backoffs: BTreeMap<i32, (Instant, Duration)>,
    next_generation: u64,
    rejoin: Rejoin,
    orphans: OrphanWatch,
    /// When partitions were last checked for being orphaned, and when that last led to a rejoin.
    orphan_checked: Instant,
    orphan_rejoined: Option<Instant>,
}

impl Processor {
    fn new(
        config: EngineConfig,
        definitions: Registry,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self> {
        let topics = Topics::new(&config.group);
        let store = Arc::new(Store::open(&config.state_dir)?);
        let codec = Arc::new(BlockingCodec::new(&config.registry())?);
        let reader = crate::kafka::reader(&config.kafka)?;
        let writer = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        let instance = membership::instance_id(&config.instance_id);
        let settled = Settled::default();
        let evict_after = Duration::from_millis(config.evict_silent_peers_ms);
        // Validated: eviction comes with standby copies and an instance-id.
        let evictor = match (&instance, evict_after.is_zero()) {
            (Some(me), false) => Some(Evictor::new(
                &config.kafka,
                &config.group,
                me,
                evict_after,
                settled.clone(),
                metrics.clone(),
            )),
            _ => None,
        };
        let standby = Standby::start(
            &config.kafka,
            &topics,
            config.standby.then_some(config.standby_copies),
            evictor,
            store.clone(),
            codec.clone(),
            metrics.clone(),
        )?;
        let producer = crate::kafka::sync_producer(&config.kafka)?;
        let heartbeats = Heartbeats::start(
            producer.clone(),
            topics.changelog.clone(),
            instance.clone(),
            config.heartbeat_every(),
            metrics.clone(),
        )?;
        let deps = Arc::new(RestoreDeps {
            store,
            codec,
            reader,
            producer,
            topics: topics.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            standby,
            heartbeats,
            settled,
        });
        let session_timeout = config.session_timeout_ms.to_string();
        // Members learn of a rebalance from their heartbeats, so a long session (static members
        // often get minutes) must not slow every rebalance down: at most 3 s, Kafka's default;
        // with evictions, the survivors learn of one within half the eviction wait.
        let mut heartbeat = config.session_timeout_ms / 4;
        if config.evict_silent_peers_ms > 0 {
            heartbeat = heartbeat.min(config.evict_silent_peers_ms / 2);
        }
        let heartbeat = heartbeat.clamp(500, 3000).to_string();
        // librdkafka refuses a poll interval below the session (its default is 5 minutes).
        let max_poll = config.session_timeout_ms.max(300_000).to_string();
        let fetch_wait = sagaflow_kafka::FETCH_WAIT_MAX_MS.to_string();
        let mut consumer_config = config.kafka.eager_range_config(
            "engine-input",
            &[
                ("session.timeout.ms", &session_timeout),
                ("heartbeat.interval.ms", &heartbeat),
                ("max.poll.interval.ms", &max_poll),
                ("fetch.wait.max.ms", &fetch_wait),
            ],
            "engine",
        );
        if let Some(id) = &instance {
            let _ = consumer_config.set("group.instance.id", id);
        }
        let _ = consumer_config
            .set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<GroupContext> = consumer_config
            .create_with_context(GroupContext {
                requests_instance: deps.metrics.requests.instance(),
                deps: deps.clone(),
                events: Mutex::new(Vec::new()),
            })
            .map_err(|e| Error::kafka("creating the input consumer", e))?;
        consumer
            .subscribe(&topics.inputs())
            .map_err(|e| Error::kafka("subscribing to the input topics", e))?;
        let (tx, rx) = channel();
        let journal: ThreadedProducer<JournalContext> = config
            .kafka
            .hot_path_producer_config("engine-journal")
            .create_with_context(JournalContext {
                acks: tx,
                requests_instance: deps.metrics.requests.instance(),
                metrics: deps.metrics.clone(),
            })
            .map_err(|e| Error::kafka("creating the journal producer", e))?;
        let relay = Relay::new(
            &config.kafka,
            &topics,
            metrics.clone(),
            config.max_batch_bytes,
        )?;
        let retention = config.retention()?;
        let changelog_batches = crate::batches::enabled(
            config.changelog_batches,
            retention.finished_ms,
            retention.dedupe_ms,
            config.checkpoint_interval_ms,
        );
        if config.changelog_batches && !changelog_batches {
            info!(
                finished_retention_ms = retention.finished_ms,
                dedupe_window_ms = retention.dedupe_ms,
                "changelog batches are off: dedupe-window-ms is within ten minutes and two checkpoint intervals of finished-retention-ms, so every state gets a changelog record of its own"
            );
        }
        // Before any decision: a command to a participant paused before this start is held.
        let controls = Controls::open(&config.kafka, &topics.control, &writer, &deps.codec)?;
        info!(writer = %writer, group = %config.group, instance = ?instance, "engine started");
        let [when_unassigned, when_same, _] = config.rejoin_rules_ms();
        let rejoin = Rejoin::new(
            Duration::from_millis(when_unassigned),
            Duration::from_millis(when_same),
            usize::try_from(config.partitions).unwrap_or(0),
        );
        Ok(Self {
            controls,
            held_reported: Instant::now(),
            ctx: Context {
                targets: crate::targets::Targets::new(crate::kafka::reader(&config.kafka)?),
                settings: sagaflow_core::Settings {
                    replies: topics.replies.clone(),
                    retention,
                    max_state_bytes: config.max_state_bytes,
                },
                changelog_batches,
                config,
                definitions: RegistryDefinitions(definitions),
                metrics,
                deps,
                writer,
            },
            stop,
            consumer,
            journal,
            journal_acks: rx,
            relay,
            tasks: BTreeMap::new(),
            failed: BTreeMap::new(),
            backoffs: BTreeMap::new(),
            next_generation: 1,
            rejoin,
            orphans: OrphanWatch::default(),
            orphan_checked: Instant::now(),
            orphan_rejoined: None,
        })
    }

    fn run(&mut self) -> Result<()> {
        let mut last_checkpoint = Instant::now();
        let checkpoint_every = Duration::from_millis(self.ctx.config.checkpoint_interval_ms);
        while !self.stop.load(Ordering::SeqCst) {
            // Controls first: a pause that came is applied before the inputs after it.
            self.controls.poll(&self.ctx.deps.codec);
            if self.controls.caught_up() {
                self.poll_inputs()?;
                self.fire_timers()?;
                self.release_held();
            } else {
                // A control record waits for the registry: deciding now could send a command
                // to a participant it pauses. Relaying and checkpoints go on below.
                std::thread::sleep(Duration::from_millis(50));
            }
            self.relay.release(now_ms());
            self.flush_batches()?;
            self.drain_journal_acks()?;
            let advances = self.relay.drain();
            self.apply_advances(advances)?;
            if last_checkpoint.elapsed() >= checkpoint_every {
                last_checkpoint = Instant::now();
                self.flush_changelog()?;
            }
            self.resync_tasks()?;
            self.rejoin_if_due()?;
            self.rejoin_if_orphaned()?;
        }
        self.shutdown()
    }

    fn poll_inputs(&mut self) -> Result<()> {
        // Acknowledgements are handled between polls: poll briefly while any are awaited.
        let wait = if self
            .tasks
            .values()
            .any(|t| t.status == TaskStatus::NeedsResync)
        {
            Duration::ZERO
        } else if self.tasks.values().all(Task::idle) && self.relay.idle() {
            // Idle, but never past the next timer or held output.
            let now = now_ms();
            let next = self
                .tasks
                .values()
                .filter_map(Task::next_timer)
                .chain(self.relay.next_release())
                .min()
                .map_or(20, |at| (at - now).clamp(0, 20));
            Duration::from_millis(u64::try_from(next).unwrap_or(0))
        } else {
            Duration::from_millis(1)
        };
        let mut polled = 0usize;
        let max = self.ctx.config.max_batch_decisions;
        while polled < max {
            let timeout = if polled == 0 { wait } else { Duration::ZERO };
            // Detached so that group events (which need `&mut self`) can be handled right after
            // the poll that raised them, before the message's partition is looked up.
            let message = self.consumer.poll(timeout).map(|m| m.map(|m| m.detach()));
            self.handle_group_events()?;
            let Some(message) = message else { break };
            polled += 1;
            let message = match message {
                Ok(m) => m,
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId) => {
                    // Fatal for this consumer: carrying on would only spin.
                    return Err(Error::Config(format!(
                        "the broker fenced this engine's static member id (instance-id {:?}) in group {}: another engine uses the same one, or removed it from the group (sagaflow group remove-members, or an engine with evict-silent-peers-ms that read no heartbeat from this one for that long: was it frozen or cut off from the broker?). Give every engine its own instance-id (in Kubernetes, the pod name) and restart this one",
                        self.ctx.config.instance_id, self.ctx.config.group
                    )));
                }
                Err(e)
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidSessionTimeout) =>
                {
                    // The join is refused for good: the engine would never own a partition.
                    return Err(Error::Config(format!(
                        "the broker refused session-timeout-ms = {} for group {}: it must lie within the broker's group.min.session.timeout.ms and group.max.session.timeout.ms (6000 and 1800000 on Apache Kafka by default). Set session-timeout-ms (SAGAFLOW_SESSION_TIMEOUT_MS) within them, or change the broker's limits",
                        self.ctx.config.session_timeout_ms, self.ctx.config.group
                    )));
                }
                Err(e) => {
                    warn!(error = %e, "consumer error");
                    break;
                }
            };
            let partition = message.partition();
            let headers: Vec<Header> = message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| Header {
                            name: h.key.to_string(),
                            value: h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let flow = match self.ctx.deps.topics.kind(message.topic()) {
                Some(InputKind::Start) => Flow::Start,
                Some(InputKind::Reply) => Flow::Reply,
                Some(InputKind::Correlation) => Flow::CorrelationIn,
                Some(InputKind::Delay | InputKind::Signal | InputKind::Admin) | None => {
                    Flow::OtherInput
                }
            };
            self.ctx
                .metrics
                .traffic
                .count(flow, message_bytes(&message));
            let now = now_ms();
            // CreateTime only: a LogAppendTime topic's timestamps leave the producer's leg out.
            if let Timestamp::CreateTime(produced) = message.timestamp() {
                self.ctx.metrics.hops.input_wait.observe_ms(now - produced);
                let spans = &self.ctx.metrics.spans;
                // Inputs keyed by their saga's id; signals and correlations are keyed by a
                // correlation value, and their saga is known only once matched.
                let saga = || {
                    matches!(flow, Flow::Start | Flow::Reply)
                        .then(|| message.key().and_then(|k| std::str::from_utf8(k).ok()))
                        .flatten()
                };
                if let Some(saga_id) = spans.on().then(saga).flatten() {
                    let traceparent = headers
                        .iter()
                        .find(|h| h.name == sagaflow_kafka::trace::TRACEPARENT)
                        .and_then(|h| std::str::from_utf8(&h.value).ok());
                    let input = crate::spans::InputRef {
                        topic: message.topic(),
                        partition,
                        offset: message.offset(),
                        waited: true,
                    };
                    spans.input(
                        saga_id,
                        input,
                        produced,
                        std::time::SystemTime::now(),
                        traceparent,
                    );
                }
            }
            let env = self.ctx.env(&self.controls);
            let Some(task) = self.tasks.get_mut(&partition) else {
                continue;
            };
            let input = InputRecord {
                topic: message.topic(),
                offset: message.offset(),
                key: message.key(),
                payload: message.payload(),
                headers,
            };
            let (max_inputs, max_bytes) = (
                self.ctx.config.max_batch_decisions,
                self.ctx.config.max_batch_bytes,
            );
            let result = task
                .handle(&env, now, input)
                .and_then(|()| task.flush_if_full(&env, max_inputs, max_bytes));
            self.journal_or_fail(partition, result);
        }
        Ok(())
    }

    /// Feeds due timers into their partitions' batches, like inputs.
    fn fire_timers(&mut self) -> Result<()> {
        let now = now_ms();
        let max = self.ctx.config.max_batch_decisions;
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        let mut in_memory = 0;
        for partition in partitions {
            let env = self.ctx.env(&self.controls);
            let task = self.tasks.get_mut(&partition).expect("listed");
            let max_bytes = self.ctx.config.max_batch_bytes;
            let result = task.fire_timers(&env, now, max).and_then(|_| {
                in_memory += task.timers_in_memory();
                task.flush_if_full(&env, max, max_bytes)
            });
            self.journal_or_fail(partition, result);
        }
        self.ctx.metrics.timers_in_memory.store(
            i64::try_from(in_memory).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Feeds the commands held for participants that are neither paused nor at a limit into
    /// their partitions' batches, like inputs.
    fn release_held(&mut self) {
        let now = now_ms();
        let max = self.ctx.config.max_batch_decisions;
        let max_bytes = self.ctx.config.max_batch_bytes;
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let env = self.ctx.env(&self.controls);
            let task = self.tasks.get_mut(&partition).expect("listed");
            if task.held().is_empty() {
                continue;
            }
            let result = task
                .release_held(&env, now, max)
                .and_then(|_| task.flush_if_full(&env, max, max_bytes));
            self.journal_or_fail(partition, result);
        }
        if self.held_reported.elapsed() >= Duration::from_millis(500) {
            self.held_reported = Instant::now();
            let mut held: BTreeMap<String, (bool, u64, u64)> = self
                .controls
                .paused()
                .map(|topic| (topic.to_string(), (true, 0, 0)))
                .collect();
            for task in self.tasks.values() {
                for (topic, n) in task.held() {
                    held.entry(topic.clone()).or_insert((false, 0, 0)).1 += *n as u64;
                }
                for (topic, n) in task.in_flight() {
                    held.entry(topic.clone()).or_insert((false, 0, 0)).2 += *n as u64;
                }
            }
            self.ctx.metrics.set_held(held);
        }
    }

    /// After a partition's work: sends the journal record a full batch became, or stops the
    /// partition on the error.
    fn journal_or_fail(&mut self, partition: i32, result: Result<Option<Produce>>) {
        match result {
            Ok(Some(p)) => {
                Self::send_journal(&self.journal, &self.ctx.deps.topics.journal, partition, p);
            }
            Ok(None) => {}
            Err(e) => self.fail_partition(partition, e.to_string()),
        }
    }

    fn handle_group_events(&mut self) -> Result<()> {
        let events: Vec<GroupEvent> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .events
                .lock()
                .expect("group events lock"),
        );
        for event in events {
            match event {
                GroupEvent::Assignment(partitions) => {
                    self.rejoin.assigned(&partitions, Instant::now());
                    self.ctx
                        .deps
                        .standby
                        .assigned(&partitions, self.ctx.config.partitions);
                }
                GroupEvent::Assigned(partition, restored) => {
                    let _ = self.failed.remove(&partition);
                    self.ctx.metrics.partition_recovered(partition);
                    if let Err(e) = self.install(partition, *restored) {
                        self.fail_partition(partition, format!("starting the partition: {e}"));
                    }
                }
                GroupEvent::AssignFailed(partition, reason) => {
                    self.fail_partition(partition, format!("restore failed: {reason}"));
                }
                GroupEvent::Revoked(partitions) => {
                    self.rejoin.revoked(&partitions.iter().copied().collect());
                    for partition in partitions {
                        let _ = self.tasks.remove(&partition);
                        let _ = self.failed.remove(&partition);
                        let _ = self.backoffs.remove(&partition);
                        self.ctx.metrics.partition_recovered(partition);
                        self.relay.close(partition);
                    }
                }
            }
        }
        self.ctx
            .metrics
            .partitions_owned
            .store(self.tasks.len() as i64, Ordering::Relaxed);
        Ok(())
    }

    fn install(&mut self, partition: i32, restored: Restored) -> Result<()> {
        let metrics = &self.ctx.metrics;
        metrics.restores_total.fetch_add(1, Ordering::Relaxed);
        if restored.from_changelog {
            metrics
                .changelog_restores_total
                .fetch_add(1, Ordering::Relaxed);
        }
        metrics
            .fenced_records_total
            .fetch_add(restored.fenced_records, Ordering::Relaxed);
        let generation = self.next_generation;
        self.next_generation += 1;
        let task = Task::new(
            &self.ctx.env(&self.controls),
            partition,
            generation,
            &restored,
        )?;
        if task.status == TaskStatus::Fenced {
            warn!(
                partition,
                "another engine claimed this partition; waiting for the group to revoke it"
            );
        }
        resume_relay(&mut self.relay, partition, restored);
        let _ = self.tasks.insert(partition, task);
        Ok(())
    }

    fn input_tpl(
        &self,
        partition: i32,
        positions: Option<&[(String, i64)]>,
    ) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for topic in self.ctx.deps.topics.inputs() {
            let offset = positions
                .and_then(|ps| ps.iter().find(|(t, _)| t == topic))
                .map_or(Offset::Beginning, |(_, o)| Offset::Offset(*o));
            tpl.add_partition_offset(topic, partition, offset).ok()?;
        }
        Some(tpl)
    }

    fn send_journal(
        producer: &ThreadedProducer<JournalContext>,
        topic: &str,
        partition: i32,
        produce: Produce,
    ) {
        let mut ticket = Box::new(JournalTicket {
            partition,
            generation: produce.generation,
            seq: produce.seq,
            sent: Instant::now(),
            acked_after: None,
            bytes: produce.bytes.len(),
        });
        loop {
            let record = BaseRecord::with_opaque_to(topic, ticket)
                .partition(partition)
                .payload(&produce.bytes);
            match producer.send::<(), _>(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    ticket = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, record)) => {
                    // Report it as a failed write: the task resyncs.
                    let t = record.delivery_opaque;
                    warn!(error = %e, partition, "journal record not enqueued");
                    let _ = producer
                        .context()
                        .acks
                        .send((*t, Err(JournalFailure::from_kafka(&e))));
                    return;
                }
            }
        }
    }

    fn flush_batches(&mut self) -> Result<()> {
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let produce = {
                let env = self.ctx.env(&self.controls);
                let task = self.tasks.get_mut(&partition).expect("listed");
                task.flush(&env)
            };
            match produce {
                Ok(Some(p)) => {
                    Self::send_journal(&self.journal, &self.ctx.deps.topics.journal, partition, p);
                }
                Ok(None) => {}
                Err(e) => self.fail_partition(partition, e.to_string()),
            }
        }
        Ok(())
    }

    fn drain_journal_acks(&mut self) -> Result<()> {
        while let Ok((ticket, result)) = self.journal_acks.try_recv() {
            if result.is_ok() {
                self.ctx.metrics.traffic.count(Flow::Journal, ticket.bytes);
                self.ctx
                    .metrics
                    .hops
                    .journal_ack
                    .observe(ticket.acked_after.unwrap_or_default());
            }
            let env = self.ctx.env(&self.controls);
            let Some(task) = self.tasks.get_mut(&ticket.partition) else {
                continue;
            };
            if task.generation != ticket.generation || task.status != TaskStatus::Active {
                continue;
            }
            if let Err(e) = task.acked(&env, &mut self.relay, &ticket.timing(), result) {
                self.fail_partition(ticket.partition, e.to_string());
            }
        }
        Ok(())
    }

    /// Writes the changelog (see `Relay::flush_changelog`).
    fn flush_changelog(&mut self) -> Result<()> {
        let (advances, failed) = self.relay.flush_changelog(&self.ctx.deps.store, now_ms());
        for (partition, e) in failed {
            self.fail_partition(partition, e.to_string());
        }
        self.apply_advances(advances)
    }

    fn apply_advances(&mut self, advances: Vec<crate::relay::Advance>) -> Result<()> {
        for (partition, key) in self.relay.take_deleted_batches() {
            if let Err(e) = self.ctx.deps.store.forget_batch(partition, &key) {
                self.fail_partition(partition, e.to_string());
            }
        }
        for advance in advances {
            let Some(task) = self.tasks.get_mut(&advance.partition) else {
                continue;
            };
            let through = advance.mark.chain.last_valid;
            let persisted = restore::encode_checkpoint(&advance.mark).and_then(|checkpoint| {
                sagaflow_failpoints::hit(sagaflow_failpoints::RELAY_DELIVERED);
                task.relayed(&self.ctx.env(&self.controls), advance.mark)?;
                Ok(checkpoint)
            });
            match persisted {
                Ok(checkpoint) => self
                    .relay
                    .checkpoint(advance.partition, checkpoint, through),
                Err(e) => self.fail_partition(advance.partition, e.to_string()),
            }
        }
        Ok(())
    }

    /// Stops `partition` after an error that is not its inputs' fault (a registry or broker
    /// outage, a store error): it drops its speculative state and restores from the journal
    /// after a backoff, while the other partitions go on. `/health` and
    /// `sagaflow_partitions_failing` show it until then.
    fn fail_partition(&mut self, partition: i32, reason: String) {
        let now = Instant::now();
        // Failures in a row double the wait; a partition that ran for a minute starts over.
        let backoff = match self.backoffs.get(&partition) {
            Some((at, last)) if now.duration_since(*at) < Duration::from_secs(60) => {
                (*last * 2).min(MAX_BACKOFF)
            }
            _ => FIRST_BACKOFF,
        };
        let _ = self.backoffs.insert(partition, (now, backoff));
        error!(partition, error = %reason, retry_in = ?backoff, "partition stopped; it restores again after the backoff");
        let _ = self.tasks.remove(&partition);
        self.relay.close(partition);
        if let Some(tpl) = self.input_tpl(partition, None) {
            let _ = self.consumer.pause(&tpl);
        }
        let _ = self.failed.insert(partition, now + backoff);
        self.ctx.metrics.partition_failed(partition, reason);
        self.ctx
            .metrics
            .partitions_owned
            .store(self.tasks.len() as i64, Ordering::Relaxed);
    }

    /// Leaves and rejoins the group when the membership rules say so (see `membership`).
    fn rejoin_if_due(&mut self) -> Result<()> {
        let Some(after) = self.rejoin.take_due(Instant::now(), self.tasks.len()) else {
            return Ok(());
        };
        warn!(
            owned = self.tasks.len(),
            ?after,
            "the group left partitions with a dead member or gave this engine none; rejoining"
        );
        self.consumer.unsubscribe();
        self.consumer
            .subscribe(&self.ctx.deps.topics.inputs())
            .map_err(|e| Error::kafka("subscribing to the input topics again", e))
    }

    /// Rejoins the group when a partition this engine does not own has had no heartbeat (see
    /// `liveness`) for `rejoin-when-orphaned-ms`: its owner died and the coordinator did not
    /// hand it on.
    fn rejoin_if_orphaned(&mut self) -> Result<()> {
        let [_, _, when_orphaned] = self.ctx.config.rejoin_rules_ms();
        let patience = Duration::from_millis(when_orphaned);
        if patience.is_zero() || self.orphan_checked.elapsed() < Duration::from_secs(5) {
            return Ok(());
        }
        self.orphan_checked = Instant::now();
        let now = Instant::now();
        let topics = &self.ctx.deps.topics;
        let mut orphaned = Vec::new();
        for partition in 0..self.ctx.config.partitions {
            if self.tasks.contains_key(&partition) || self.failed.contains_key(&partition) {
                self.orphans.forget(partition);
                continue;
            }
            let reader = &self.ctx.deps.reader;
            let Ok((_, end)) = crate::kafka::watermarks_once(reader, &topics.changelog, partition)
            else {
                continue;
            };
            if self.orphans.observe(partition, end, now, patience) {
                orphaned.push(partition);
            }
        }
        let cooled = self
            .orphan_rejoined
            .is_none_or(|at| at.elapsed() >= patience.max(Duration::from_secs(30)));
        if orphaned.is_empty() || !cooled {
            return Ok(());
        }
        warn!(
            ?orphaned,
            owned = self.tasks.len(),
            "partitions have had no live owner for a while; rejoining the group"
        );
        self.orphan_rejoined = Some(Instant::now());
        for partition in orphaned {
            self.orphans.forget(partition);
        }
        self.consumer.unsubscribe();
        self.consumer
            .subscribe(&topics.inputs())
            .map_err(|e| Error::kafka("subscribing to the input topics again", e))
    }

    fn resync_tasks(&mut self) -> Result<()> {
        let stale: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.status == TaskStatus::NeedsResync)
            .map(|(p, _)| *p)
            .collect();
        let retry: Vec<i32> = self
            .failed
            .iter()
            .filter(|(_, at)| **at <= Instant::now())
            .map(|(p, _)| *p)
            .collect();
        for partition in stale.into_iter().chain(retry.iter().copied()) {
            let takeover = retry.contains(&partition);
            let own_epoch = self.tasks.get(&partition).map_or(0, Task::epoch);
            let restored =
                match restore::restore(&self.ctx.deps.clients(), partition, takeover, own_epoch) {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail_partition(partition, format!("restore failed: {e}"));
                        continue;
                    }
                };
            let _ = self.failed.remove(&partition);
            self.ctx.metrics.partition_recovered(partition);
            self.relay.close(partition);
            // What a restore cannot rebuild from the journal is carried over: the inputs refused
            // as too large, and the rate buckets (a resync must not grant a new burst).
            let carried = self.tasks.get_mut(&partition).map(|t| {
                (
                    std::mem::take(&mut t.oversize),
                    std::mem::take(&mut t.buckets),
                )
            });
            if let Err(e) = self.install(partition, restored) {
                self.fail_partition(partition, format!("starting the partition: {e}"));
                continue;
            }
            if let (Some((oversize, buckets)), Some(task)) =
                (carried, self.tasks.get_mut(&partition))
            {
                task.oversize = oversize;
                task.buckets = buckets;
            }
            let positions = self.tasks[&partition].seek_positions();
            if let Some(tpl) = self.input_tpl(partition, Some(&positions)) {
                for element in tpl.elements() {
                    if let Err(e) = self.consumer.seek(
                        element.topic(),
                        partition,
                        element.offset(),
                        Duration::from_secs(5),
                    ) {
                        warn!(partition, topic = element.topic(), error = %e, "seek after resync failed");
                    }
                }
                let _ = self.consumer.resume(&tpl);
            }
        }
        Ok(())
    }

    /// Writes each caught-up partition's hand-over record and waits briefly for it: the next
    /// owner then knows that nothing before it needs sending again.
    fn hand_over(&mut self) {
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let env = self.ctx.env(&self.controls);
            let task = self.tasks.get_mut(&partition).expect("listed");
            match task.handover(&env) {
                Ok(Some(p)) => {
                    Self::send_journal(&self.journal, &self.ctx.deps.topics.journal, partition, p);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(partition, error = %e, "no hand-over record; the next owner re-sends the last outputs")
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.tasks.values().all(Task::idle) {
            if let Err(e) = self.drain_journal_acks() {
                warn!(error = %e, "hand-over records not confirmed");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // A hand-over record has nothing to deliver: one more relay round writes a checkpoint
        // that covers it, so that a restore from the changelog never needs it from the journal.
        let advances = self.relay.drain();
        let advanced = self
            .apply_advances(advances)
            .and_then(|()| self.flush_changelog());
        if let Err(e) = advanced {
            warn!(error = %e, "no checkpoint after the hand-over records");
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        info!("engine stopping: writing the last batches");
        self.flush_batches()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.relay.release(now_ms());
            self.drain_journal_acks()?;
            let advances = self.relay.drain();
            self.apply_advances(advances)?;
            self.flush_changelog()?;
            let journal_idle = self.tasks.values().all(Task::idle);
            if journal_idle && self.relay.idle() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.hand_over();
        self.relay.flush(Duration::from_secs(5));
        if membership::instance_id(&self.ctx.config.instance_id).is_some() {
            // A static member keeps its place (KIP-345): closing the consumer sends no
            // LeaveGroup, so a restart within the session takes the same partitions back without
            // a rebalance. Unsubscribing would leave the group. A scale-down removes the member
            // with `sagaflow group remove-members`.
            info!("engine stopped; its static member keeps its partitions for the session timeout");
        } else {
            // Leave the group, so that the partitions move at once.
            self.consumer.unsubscribe();
            info!("engine stopped");
        }
        Ok(())
    }
}
