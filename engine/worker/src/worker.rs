//! The worker loop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use sagaflow_avro::now_ms;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{
    BorrowedMessage, Header as KafkaHeader, Headers, Message, OwnedHeaders, Timestamp,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{AsyncCodec, Command, RegistrySettings, Reply, ReplyError, Subject};
use sagaflow_kafka::hops::Histogram;
use sagaflow_kafka::otlp::{self, Exporter, Span, SpanKind};
use sagaflow_kafka::{trace, KafkaSettings};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::dedupe::{Claim, Dedupe};
use crate::error::{Error, Result};

/// librdkafka's default `max.poll.interval.ms`.
const DEFAULT_MAX_POLL_INTERVAL_MS: u64 = 300_000;

/// A failed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
}

/// What a handler does with a command: an output on success, or a failure.
pub type Handler = Arc<
    dyn Fn(Command) -> Pin<Box<dyn Future<Output = Result<Value, Failure>> + Send>> + Send + Sync,
>;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Kafka bootstrap servers and client properties (SASL, TLS, ...).
    pub kafka: KafkaSettings,
    /// Schema Registry URL and credentials.
    pub registry: RegistrySettings,
    /// Command topic to consume.
    pub topic: String,
    /// Consumer group: instances of one participant share it.
    pub group: String,
    /// Name of this instance, for logs.
    pub instance: String,
    /// Replies remembered for deduplication. The memory's table is sized for twice this from
    /// the start, 32 bytes a slot, so that it never grows while commands flow ([`Dedupe::new`]).
    pub dedupe_capacity: usize,
    /// Commands handled concurrently.
    pub concurrency: usize,
    /// Longest broker-side wait of a fetch, in ms (`fetch.wait.max.ms`, which the user's
    /// Kafka properties override); [`sagaflow_kafka::FETCH_WAIT_MAX_MS`] suits a complete
    /// broker.
    pub fetch_wait_max_ms: u64,
}

/// Counters of a worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Commands handled for the first time.
    pub handled: AtomicU64,
    /// Repeated commands answered from the dedupe memory.
    pub duplicates: AtomicU64,
    /// Records that were not decodable commands.
    pub undecodable: AtomicU64,
    /// Commands skipped because their reply can never be sent (see `Error::is_permanent`).
    pub unanswerable: AtomicU64,
    /// Offsets the broker never delivered: the group's committed offset or the previous record
    /// said they came next, and a later one arrived instead.
    pub skipped_offsets: AtomicU64,
    /// From a command's record timestamp (the engine's send) until this worker fetched it.
    pub command_wait: Histogram,
    /// From a reply's send until the broker acknowledged it.
    pub reply_ack: Histogram,
}

impl WorkerStats {
    /// The participant's hops, with their help texts. The library serves no HTTP: an application
    /// that wants them on its `/metrics` appends [`WorkerStats::render_hops`] to its page.
    pub const HOP_NAMES: [(&'static str, &'static str); 2] = [
        (
            "sagaflow_worker_command_wait_seconds",
            "From a command's record timestamp (the engine's send) until the worker fetched it.",
        ),
        (
            "sagaflow_worker_reply_ack_seconds",
            "From a reply's send until the broker acknowledged it.",
        ),
    ];

    /// The hop histograms in the Prometheus text format.
    pub fn render_hops(&self) -> String {
        let mut out = String::new();
        for (h, (name, help)) in [&self.command_wait, &self.reply_ack]
            .into_iter()
            .zip(Self::HOP_NAMES)
        {
            h.render(&mut out, name, help);
        }
        out
    }
}

/// Logs which command partitions an instance holds, so a stuck command can be traced to the
/// instance that owned its partition, and knows which offset must come next in each.
struct InstanceContext {
    instance: String,
    /// Next offset expected per partition of the command topic (a worker reads one topic): the
    /// committed offset on assignment, then the record after the last one received.
    expected: std::sync::Mutex<HashMap<i32, i64>>,
    /// Partitions assigned whose committed offsets are not read yet. The rebalance callback runs
    /// inside the consumer's poll, on the async runtime, where a broker round trip must not
    /// block; the run loop reads them off the runtime instead.
    assigned: std::sync::Mutex<Vec<i32>>,
    /// Partitions rewound to an unanswered command, and its offset: until that command comes
    /// again, nothing after it is handled or stored (a seek can fail while the broker is down,
    /// and the consumer would go on past it).
    rewound: std::sync::Mutex<HashMap<i32, i64>>,
    /// Partitions revoked since the run loop last looked: it forgets their commands in flight
    /// before it fetches or settles any other, since their offsets are no longer this
    /// instance's to store (the new owner fetches them again from the committed offset).
    revoked: std::sync::Mutex<Vec<i32>>,
}

impl InstanceContext {
    /// Records `offset` as received and returns how many offsets before it never arrived.
    fn skipped_before(&self, partition: i32, offset: i64) -> i64 {
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = expected.insert(partition, offset + 1);
        previous.map_or(0, |next| (offset - next).max(0))
    }
}

impl ClientContext for InstanceContext {}

impl ConsumerContext for InstanceContext {
    /// With the cooperative assignor (the default) or the consumer group protocol, `Assign` and
    /// `Revoke` name only the partitions that change owner; with an eager assignor they name
    /// every partition. Either way each named partition's state is reset on its own, and the
    /// others keep their commands in flight and their rewinds.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (change, tpl) = match rebalance {
            Rebalance::Assign(tpl) => ("assigned", tpl),
            Rebalance::Revoke(tpl) => ("revoked", tpl),
            Rebalance::Error(e) => {
                warn!(instance = %self.instance, error = %e, "rebalance error");
                return;
            }
        };
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // What the instance holds now, not only what changed: an incremental rebalance names the
        // changes alone (often none, for the instances it leaves alone).
        let holds: Vec<i32> = consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            debug!(instance = %self.instance, ?holds, "rebalance left this instance's command partitions alone");
        } else {
            info!(instance = %self.instance, change, ?partitions, ?holds, "command partitions changed");
        }
        let mut expected = self.expected.lock().unwrap_or_else(PoisonError::into_inner);
        let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rewound = self.rewound.lock().unwrap_or_else(PoisonError::into_inner);
        for p in &partitions {
            let _ = expected.remove(p);
            assigned.retain(|a| a != p);
            // A new owner resumes from the committed offset, which is not past the command.
            let _ = rewound.remove(p);
        }
        match rebalance {
            Rebalance::Assign(_) => assigned.extend(partitions),
            _ => self
                .revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(partitions),
        }
    }
}

/// The commands being handled, per partition in offset order, and whether each is answered.
/// Each fetch gets a sequence number: a command fetched again after a rewind supersedes the copy
/// still running, whose outcome then no longer counts.
#[derive(Debug, Default)]
struct Ledger {
    next: u64,
    partitions: HashMap<i32, BTreeMap<i64, (u64, bool)>>,
}

impl Ledger {
    /// Records a command fetched and returns its sequence number.
    fn fetched(&mut self, partition: i32, offset: i64) -> u64 {
        self.next += 1;
        let _ = self
            .partitions
            .entry(partition)
            .or_default()
            .insert(offset, (self.next, false));
        self.next
    }

    /// Records the command at `offset` answered, and returns the last offset of the partition's
    /// answered commands in a row, if that moved.
    fn answered(&mut self, partition: i32, offset: i64, seq: u64) -> Option<i64> {
        let commands = self.partitions.get_mut(&partition)?;
        match commands.get_mut(&offset) {
            Some((s, answered)) if *s == seq => *answered = true,
            _ => return None,
        }
        let mut last = None;
        while let Some(entry) = commands.first_entry() {
            if !entry.get().1 {
                break;
            }
            last = Some(*entry.key());
            let _ = entry.remove();
        }
        last
    }

    /// Records the command at `offset` unanswered: it and every later command of the partition
    /// will be fetched again, so they are forgotten. Returns false for a superseded copy.
    fn failed(&mut self, partition: i32, offset: i64, seq: u64) -> bool {
        let Some(commands) = self.partitions.get_mut(&partition) else {
            return false;
        };
        if commands.get(&offset).map(|&(s, _)| s) != Some(seq) {
            return false;
        }
        let _ = commands.split_off(&offset);
        true
    }

    /// Forgets the commands of a partition this instance no longer owns: their outcomes no
    /// longer count, and none of its offsets is stored.
    fn forget(&mut self, partition: i32) {
        let _ = self.partitions.remove(&partition);
    }
}

/// A participant worker.
pub struct Worker {
    config: WorkerConfig,
    /// The command consumer; taken by [`Worker::close`] or the drop, which close it off the
    /// async runtime (see [`sagaflow_kafka::close_within`]).
    consumer: Option<Arc<StreamConsumer<InstanceContext>>>,
    producer: FutureProducer,
    codec: AsyncCodec,
    handler: Handler,
    dedupe: Arc<Mutex<Dedupe>>,
    /// Counters.
    pub stats: Arc<WorkerStats>,
    /// Where its spans go, if anywhere.
    spans: Option<Exporter>,
    /// When the fix for a group it cannot join was last logged.
    protocol_warned: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long it may go without polling the consumer while no command may start (every
    /// handler is busy, or it is finishing): well within `max.poll.interval.ms`, past which
    /// librdkafka leaves the group.
    keepalive: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish()
    }
}

impl Worker {
    /// A worker running `handler` on the commands of `config.topic`.
    pub fn new(config: WorkerConfig, handler: Handler) -> Result<Self> {
        let dedupe = Arc::new(Mutex::new(Dedupe::new(config.dedupe_capacity)));
        Self::with_dedupe(config, handler, dedupe)
    }

    /// Like [`Worker::new`], sharing the dedupe memory with other instances of the participant
    /// (a command can move between instances when partitions do). The memory keeps the
    /// capacity it was made with; `config.dedupe_capacity` is not used.
    pub fn with_dedupe(
        config: WorkerConfig,
        handler: Handler,
        dedupe: Arc<Mutex<Dedupe>>,
    ) -> Result<Self> {
        let fetch_wait = config.fetch_wait_max_ms.to_string();
        let mut role = vec![
            ("fetch.wait.max.ms", fetch_wait.as_str()),
            // Notice a command topic created after the worker started within seconds, not the
            // default five minutes.
            ("topic.metadata.refresh.interval.ms", "5000"),
        ];
        // Apache Kafka 4's consumer group protocol (KIP-848, `group.protocol=consumer`) is
        // incremental by design and keeps these settings on the broker; librdkafka refuses them
        // with it.
        let consumer_protocol = config
            .kafka
            .properties()
            .get("group.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("consumer"));
        if !consumer_protocol {
            role.extend([
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "2000"),
                // Incremental rebalancing (KIP-429): an instance joining or leaving moves only
                // the partitions that change owner. With the eager default every rebalance
                // revoked every partition, so each command in flight anywhere in the group was
                // fetched and answered again, and every instance stopped fetching until the group
                // settled.
                ("partition.assignment.strategy", "cooperative-sticky"),
            ]);
        }
        let mut consumer_config = config
            .kafka
            .config(&format!("worker-{}", config.topic), &role);
        // A value that is not a number fails the consumer's creation below, with librdkafka's
        // own message naming the property.
        let max_poll_ms = consumer_config
            .get("max.poll.interval.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_MAX_POLL_INTERVAL_MS);
        let _ = consumer_config
            .set("group.id", &config.group)
            .set("enable.auto.commit", "true")
            // Offsets are stored only after the reply is acknowledged: at least once.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        let context = InstanceContext {
            instance: config.instance.clone(),
            expected: std::sync::Mutex::default(),
            assigned: std::sync::Mutex::default(),
            rewound: std::sync::Mutex::default(),
            revoked: std::sync::Mutex::default(),
        };
        let consumer: StreamConsumer<InstanceContext> = consumer_config
            .create_with_context(context)
            .map_err(|source| Error::Kafka {
                action: "creating the command consumer".into(),
                source,
            })?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(|source| Error::Kafka {
                action: format!("subscribing to {}", config.topic),
                source,
            })?;
        // Replies land on the partition the engine computes for the saga id: the shared
        // producer config partitions by murmur2, as the engine does.
        let producer: FutureProducer = config
            .kafka
            .reply_producer_config(&format!("worker-{}-replies", config.topic))
            .create()
            .map_err(|source| Error::Kafka {
                action: "creating the reply producer".into(),
                source,
            })?;
        Ok(Self {
            codec: AsyncCodec::new(&config.registry)?,
            dedupe,
            config,
            consumer: Some(Arc::new(consumer)),
            producer,
            handler,
            stats: Arc::new(WorkerStats::default()),
            spans: None,
            protocol_warned: std::sync::Mutex::default(),
            keepalive: Duration::from_millis((max_poll_ms / 4).max(100)),
        })
    }

    /// The same worker, exporting a span for each command fetched (`command_wait`, from the
    /// engine's send) and each reply produced (`reply_ack`, until the broker acknowledged it),
    /// in the saga's trace, to `exporter` (see [`sagaflow_kafka::otlp`]).
    pub fn with_spans(mut self, exporter: Exporter) -> Self {
        self.spans = Some(exporter);
        self
    }

    /// The command consumer, which only [`Worker::close`] and the drop take.
    fn consumer(&self) -> &Arc<StreamConsumer<InstanceContext>> {
        self.consumer
            .as_ref()
            .expect("the consumer is taken only when the worker closes")
    }

    /// Leaves the group, committing the offsets of the commands answered, and waits at most
    /// `within` for the broker to confirm. Call it after [`Worker::run`] returns, so that the
    /// worker's partitions move to the other instances at once rather than after the session
    /// timeout.
    ///
    /// A broker that does not answer in time (it is gone, say) fails this with
    /// [`Error::CloseTimedOut`]; the commands answered since the last commit (at most five
    /// seconds of them) then come again to the partitions' next owner. Dropping a worker closes
    /// it the same way without waiting, so that it never holds a thread of the async runtime.
    pub async fn close(mut self, within: Duration) -> Result<()> {
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        if sagaflow_kafka::close_within_async(consumer, within).await {
            Ok(())
        } else {
            Err(Error::CloseTimedOut {
                instance: self.config.instance.clone(),
                group: self.config.group.clone(),
                within,
            })
        }
    }

    /// Runs until `shutdown` resolves, then finishes the commands it is handling.
    ///
    /// Up to `concurrency` commands are handled at once, each as soon as it is fetched: none
    /// waits until the commands fetched before it are answered, so one slow handler or reply
    /// holds up no other command. A partition's offset is stored past its longest run of
    /// answered commands, so a commit never skips an unanswered one.
    ///
    /// A command that cannot be answered now (the registry or the broker is down, or a copy of
    /// it is still running) is fetched again: its partition is rewound to it and no offset past
    /// it is stored. The worker backs off while that lasts.
    ///
    /// With all `concurrency` handlers busy, or while it finishes after `shutdown`, it starts
    /// nothing, but every quarter of `max.poll.interval.ms` it polls the consumer once more:
    /// librdkafka would otherwise drop the instance from its group, and a rebalance would wait
    /// until a handler is free. A command that poll fetches is rewound to, and comes again once
    /// a handler is free (or to the partition's next owner). Handlers must await rather than
    /// block the thread: they run on `run`'s own task.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let limit = self.config.concurrency.max(1);
        let mut running = FuturesUnordered::new();
        let mut ledger = Ledger::default();
        let mut backoff = Duration::ZERO;
        let mut paused_until = tokio::time::Instant::now();
        let mut stopping = false;
        // While no command may start: when the consumer is polled anyway (see `keepalive`).
        let mut keepalive_at: Option<tokio::time::Instant> = None;
        loop {
            if stopping && running.is_empty() {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            let paused = paused_until > now;
            // No command may start: every handler is busy, or the worker is finishing.
            let holding = stopping || running.len() >= limit;
            if !holding {
                keepalive_at = None;
            } else if keepalive_at.is_none() {
                keepalive_at = Some(now + self.keepalive);
            }
            // The consumer is still polled now and then, so that handlers longer than
            // max.poll.interval.ms do not cost the instance its place in the group (their
            // offsets could not be stored, and their commands would run again), and rebalances
            // are served meanwhile.
            let keeping_alive = holding && keepalive_at.is_some_and(|at| at <= now);
            let fetch = !paused && (!holding || keeping_alive);
            tokio::select! {
                biased;
                () = &mut shutdown, if !stopping => stopping = true,
                Some((message, seq, result)) = running.next(), if !running.is_empty() => {
                    if self.settle(&mut ledger, &message, seq, result).await {
                        backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                        paused_until = tokio::time::Instant::now() + backoff;
                    } else {
                        backoff = Duration::ZERO;
                    }
                }
                m = self.consumer().recv(), if fetch => {
                    self.forget_revoked(&mut ledger);
                    self.read_committed_offsets().await;
                    match m {
                        // Past a command whose rewind has not taken effect: it comes again.
                        Ok(m) if !self.fetched_again(&m) => {
                            self.rewind(m.topic(), m.partition(), None).await;
                        }
                        // Fetched by a keep-alive poll: it comes again (to this instance or,
                        // once it stops, to the partition's next owner).
                        Ok(m) if stopping || running.len() >= limit => {
                            debug!(instance = %self.config.instance, topic = m.topic(), partition = m.partition(), offset = m.offset(), "no handler is free, or the worker is stopping; the command is fetched again later");
                            self.rewind(m.topic(), m.partition(), Some(m.offset())).await;
                            keepalive_at = Some(tokio::time::Instant::now() + self.keepalive);
                        }
                        Ok(m) => {
                            self.check_contiguous(&m);
                            let seq = ledger.fetched(m.partition(), m.offset());
                            running.push(async move {
                                let result = self.process(&m).await;
                                (m, seq, result)
                            });
                        }
                        Err(e) => self.consumer_error(&e),
                    }
                }
                () = tokio::time::sleep_until(keepalive_at.unwrap_or(now)), if holding && !keeping_alive && !paused => {}
                () = tokio::time::sleep_until(paused_until), if paused => {}
            }
        }
    }

    /// Records how the command in `message` ended, stores its partition's offset past the
    /// commands answered in a row, and rewinds the partition to it if it was not answered.
    /// Returns whether it was not.
    async fn settle(
        &self,
        ledger: &mut Ledger,
        message: &BorrowedMessage<'_>,
        seq: u64,
        result: Result<()>,
    ) -> bool {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        // A rebalance may have run inside the last fetch, while this command was handled.
        self.forget_revoked(ledger);
        match result {
            Ok(()) => {
                sagaflow_failpoints::hit(sagaflow_failpoints::WORKER_REPLIED);
                if let Some(last) = ledger.answered(partition, offset, seq) {
                    // librdkafka commits the offset after the one stored.
                    if let Err(e) = self.consumer().store_offset(topic, partition, last) {
                        warn!(error = %e, instance = %self.config.instance, topic, partition, offset = last, "cannot store the consumer offset; the commands answered up to it may come again to this partition's next owner");
                    }
                }
                false
            }
            Err(e) if e.is_permanent() => {
                // Fetching it again would fail the same way, and hold every later command of
                // the partition up with it.
                tracing::error!(error = %e, instance = %self.config.instance, topic, partition, offset, "the reply to this command can never be sent, so the command is skipped: the engine's attempt timeout retries the step. Fix what the error names (the reply schema in the registry, the reply topic or its ACLs)");
                self.stats.unanswerable.fetch_add(1, Ordering::Relaxed);
                if let Some(last) = ledger.answered(partition, offset, seq) {
                    if let Err(e) = self.consumer().store_offset(topic, partition, last) {
                        warn!(error = %e, instance = %self.config.instance, topic, partition, offset = last, "cannot store the consumer offset; the commands up to it may come again to this partition's next owner");
                    }
                }
                false
            }
            Err(e) => {
                warn!(error = %e, instance = %self.config.instance, partition, offset, "command not answered; it will be fetched again after a backoff");
                // Later commands of the partition come again after it; a copy fetched before
                // an earlier rewind took effect has already been superseded.
                if ledger.failed(partition, offset, seq) {
                    self.rewind(topic, partition, Some(offset)).await;
                }
                true
            }
        }
    }

    /// Logs a consumer error. The one a rolling upgrade meets comes with its fix, once a minute:
    /// librdkafka reports every failed join, about once a second.
    fn consumer_error(&self, e: &KafkaError) {
        let instance = &self.config.instance;
        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::InconsistentGroupProtocol) {
            warn!(error = %e, instance, "consumer error");
            return;
        }
        let group = &self.config.group;
        {
            let mut last = self
                .protocol_warned
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
                debug!(error = %e, instance, group, "cannot join the group yet");
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        match self
            .config
            .kafka
            .properties()
            .get("partition.assignment.strategy")
        {
            Some(own) => {
                warn!(error = %e, instance, group, "cannot join the group: its members offer no assignor in common with this instance's partition.assignment.strategy={own}. Give every instance of the group the same setting (a worker's default is cooperative-sticky; workers before it used range,roundrobin); this warning repeats once a minute")
            }
            None => {
                warn!(error = %e, instance, group, "cannot join the group: its members offer no assignor in common with this one's cooperative-sticky, as instances of an earlier worker (range,roundrobin) do. Either set partition.assignment.strategy=range,roundrobin in this instance's Kafka settings (SAGAFLOW_KAFKA_PARTITION_ASSIGNMENT_STRATEGY), or on Apache Kafka 4 group.protocol=consumer (SAGAFLOW_KAFKA_GROUP_PROTOCOL), or stop the earlier instances first (on Apache Kafka; tansu 0.6 keeps a group's first assignor for good); this warning repeats once a minute")
            }
        }
    }

    /// Forgets the commands in flight of the partitions revoked since the last call.
    fn forget_revoked(&self, ledger: &mut Ledger) {
        let revoked = std::mem::take(
            &mut *self
                .consumer()
                .context()
                .revoked
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for partition in revoked {
            ledger.forget(partition);
        }
    }

    /// Fetches `partition` again from the unanswered command at `offset` (or from the one it
    /// was rewound to before, for `None`).
    async fn rewind(&self, topic: &str, partition: i32, offset: Option<i64>) {
        let offset = {
            let mut rewound = self.rewound();
            let Some(o) = offset.or_else(|| rewound.get(&partition).copied()) else {
                return;
            };
            // The earliest unanswered command of the partition.
            let at = rewound.entry(partition).or_insert(o);
            *at = (*at).min(o);
            *at
        };
        // A seek waits until the consumer's fetcher has moved (so that no record fetched before
        // it is handed over after it), up to its timeout: off the async runtime.
        let consumer = self.consumer().clone();
        let owned_topic = topic.to_string();
        let sought = tokio::task::spawn_blocking(move || {
            consumer.seek(
                &owned_topic,
                partition,
                Offset::Offset(offset),
                Timeout::After(Duration::from_secs(10)),
            )
        })
        .await;
        let error = match sought {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = error {
            // Tried again with the next record of the partition; meanwhile nothing past the
            // command is handled or stored.
            warn!(%error, topic, partition, offset, "cannot rewind to an unanswered command yet");
        }
        // The offsets fetched again are expected, not gaps.
        let _ = self.expected().insert(partition, offset);
    }

    /// Whether `message` may be handled: its partition is not waiting for a rewind to an earlier
    /// command to take effect. The rewind is done once that command arrives again.
    fn fetched_again(&self, message: &BorrowedMessage<'_>) -> bool {
        let mut rewound = self.rewound();
        match rewound.get(&message.partition()) {
            Some(&at) if message.offset() > at => false,
            Some(&at) if message.offset() == at => {
                let _ = rewound.remove(&message.partition());
                true
            }
            _ => true,
        }
    }

    /// The partitions waiting for a rewind, and its offset.
    fn rewound(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        self.consumer()
            .context()
            .rewound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next offset expected per partition.
    fn expected(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        self.consumer()
            .context()
            .expected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads where the group resumes each newly assigned partition, off the async runtime (a
    /// broker round trip). A partition with no committed offset starts wherever the reset policy
    /// says, so nothing is expected of it yet.
    async fn read_committed_offsets(&self) {
        let partitions: Vec<i32> = std::mem::take(
            &mut *self
                .consumer()
                .context()
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let _ = tpl.add_partition(&self.config.topic, *p);
        }
        let consumer = self.consumer().clone();
        let committed = tokio::task::spawn_blocking(move || {
            consumer.committed_offsets(tpl, Timeout::After(Duration::from_secs(10)))
        })
        .await;
        let committed = match committed {
            Ok(Ok(committed)) => committed,
            Ok(Err(e)) => {
                warn!(instance = %self.config.instance, error = %e, "cannot read the committed offsets; offset gaps are not checked until the next assignment");
                return;
            }
            Err(e) => {
                warn!(instance = %self.config.instance, error = %e, "reading the committed offsets failed");
                return;
            }
        };
        let mut expected = self.expected();
        for e in committed.elements() {
            if let Offset::Offset(o) = e.offset() {
                // A record already received since the assignment says more than the commit.
                let _ = expected.entry(e.partition()).or_insert(o);
            }
        }
    }

    /// Warns when offsets before `message` never arrived. The offsets of a command topic are
    /// contiguous, so a gap means commands were lost before the worker saw them: tansu 0.6's
    /// memory storage skips the rest of a batch for a consumer resuming inside it.
    fn check_contiguous(&self, message: &BorrowedMessage<'_>) {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let skipped = self.consumer().context().skipped_before(partition, offset);
        if skipped > 0 {
            self.stats
                .skipped_offsets
                .fetch_add(skipped as u64, Ordering::Relaxed);
            warn!(instance = %self.config.instance, topic, partition, from = offset - skipped, to = offset - 1, "command offsets were never delivered by the broker");
        }
    }

    async fn process(&self, message: &BorrowedMessage<'_>) -> Result<()> {
        let Some(payload) = message.payload() else {
            self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
            warn!(instance = %self.config.instance, topic = message.topic(), partition = message.partition(), offset = message.offset(), "a record with no value on the command topic, skipped: only the engine should write commands there");
            return Ok(());
        };
        // CreateTime only: a LogAppendTime topic's timestamps leave the engine's leg out.
        let sent = match message.timestamp() {
            Timestamp::CreateTime(sent) => {
                self.stats
                    .command_wait
                    .observe_ms(now_ms().saturating_sub(sent));
                Some(sent)
            }
            _ => None,
        };
        let fetched = self.spans.is_some().then(std::time::SystemTime::now);
        let command: Command = match self.codec.decode(payload).await {
            Ok(c) => c,
            // The registry is down: the command is fine, and must wait for it.
            Err(e) if e.is_outage() => return Err(e.into()),
            Err(e) => {
                // Without a decodable command there is no saga to answer; skip it loudly.
                self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, instance = %self.config.instance, topic = message.topic(), partition = message.partition(), offset = message.offset(), "undecodable command skipped: no saga can be answered for it (was it written by something other than the engine, or with a schema the registry no longer has?)");
                return Ok(());
            }
        };
        debug!(instance = %self.config.instance, partition = message.partition(), offset = message.offset(), id = %command.message_id, "command received");
        // The saga's trace (W3C traceparent, set by the engine): the reply continues it.
        let traceparent = message.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == trace::TRACEPARENT)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        });
        let trace_id = traceparent
            .as_deref()
            .and_then(trace::TraceParent::parse)
            .map(|t| format!("{:032x}", t.trace_id))
            .unwrap_or_default();
        if let (Some(spans), Some(parent), Some(sent), Some(fetched)) =
            (&self.spans, &traceparent, sent, fetched)
        {
            let start =
                std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(sent).unwrap_or(0));
            let id = otlp::span_id(&[
                message.topic(),
                &message.partition().to_string(),
                &message.offset().to_string(),
                "command",
            ]);
            if let Some(span) = Span::child_of(
                parent,
                id,
                "command_wait",
                SpanKind::Consumer,
                start.min(fetched),
                fetched,
            ) {
                spans.record(
                    span.with("saga.id", &command.saga_id)
                        .with("messaging.destination.name", message.topic())
                        .with("messaging.message.id", &command.message_id),
                );
            }
        }
        let span = info_span!("command", saga_id = %command.saga_id, step = %command.step, phase = command.phase.as_str(), attempt = command.attempt, trace_id = %trace_id);
        async {
            let key = command.idempotency_key.clone();
            let mut waited = Duration::ZERO;
            let claim = loop {
                let claim = self.dedupe.lock().await.claim(&key);
                // A copy of this command is being handled (a redelivery fetched with the
                // original, or a retry racing a slow attempt): wait for its outcome.
                if claim != Claim::Running || waited > Duration::from_secs(60) {
                    break claim;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                waited += Duration::from_millis(5);
            };
            let reply = match claim {
                Claim::Running => {
                    return Err(Error::Busy(key));
                }
                Claim::Answered(reply) => {
                    // The same operation again (a redelivery, or a retry after a timeout):
                    // answer with the recorded outcome, addressed to this attempt.
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    Reply {
                        message_id: format!("reply/{}", command.message_id),
                        attempt: command.attempt,
                        ..reply
                    }
                }
                Claim::Claimed => {
                    // A panic in the handler answers as a retryable failure: it must neither
                    // end the worker nor leave the key claimed, which would hold every copy of
                    // the command (and so its partition) up for good.
                    let handled =
                        AssertUnwindSafe(async { (self.handler)(command.clone()).await })
                            .catch_unwind()
                            .await;
                    let outcome = handled.unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no message".into());
                        tracing::error!(panic = %what, "the handler panicked; answering with a retryable HANDLER_PANICKED failure (fix the handler: a panic should be a Failure)");
                        Err(Failure {
                            code: "HANDLER_PANICKED".into(),
                            message: format!("the participant's handler panicked: {what}"),
                            retryable: true,
                        })
                    });
                    let reply = build_reply(&command, outcome);
                    // A retryable failure did nothing: the next attempt must run again.
                    let retryable = reply.error.as_ref().is_some_and(|e| e.retryable);
                    self.dedupe
                        .lock()
                        .await
                        .finish(&key, (!retryable).then(|| reply.clone()));
                    self.stats.handled.fetch_add(1, Ordering::Relaxed);
                    reply
                }
            };
            sagaflow_failpoints::hit(sagaflow_failpoints::WORKER_HANDLED);
            self.send(&command.reply_to, &reply, traceparent.as_deref())
                .await
        }
        .instrument(span)
        .await
    }

    /// Sends `reply` to `topic`, continuing the command's trace (`parent`, its `traceparent`).
    async fn send(&self, topic: &str, reply: &Reply, parent: Option<&str>) -> Result<()> {
        let value = self.codec.encode(Subject::Topic(topic), reply).await?;
        let mut headers = OwnedHeaders::new().insert(KafkaHeader {
            key: "sagaflow-id",
            value: Some(reply.message_id.as_bytes()),
        });
        let child = parent.and_then(|p| trace::child(p, &reply.message_id));
        if let Some(traceparent) = &child {
            headers = headers.insert(KafkaHeader {
                key: trace::TRACEPARENT,
                value: Some(traceparent.as_bytes()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(&reply.saga_id)
            .payload(&value)
            .headers(headers);
        let sending = std::time::Instant::now();
        let sending_at = std::time::SystemTime::now();
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map(|delivery| {
                self.stats.reply_ack.observe(sending.elapsed());
                let ids = child.as_deref().and_then(trace::TraceParent::parse);
                if let (Some(spans), Some(parent), Some(ids)) = (&self.spans, parent, ids) {
                    // The reply's own span, the one its traceparent names.
                    let done = sending_at + sending.elapsed();
                    if let Some(span) = Span::child_of(
                        parent,
                        ids.span_id,
                        "reply_ack",
                        SpanKind::Producer,
                        sending_at,
                        done,
                    ) {
                        spans.record(
                            span.with("saga.id", &reply.saga_id)
                                .with("messaging.destination.name", topic)
                                .with("messaging.message.id", &reply.message_id),
                        );
                    }
                }
                debug!(id = %reply.message_id, partition = delivery.partition, offset = delivery.offset, "reply sent");
            })
            .map_err(|(source, _)| Error::Kafka {
                action: format!("sending a reply to {topic}"),
                source,
            })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            // Not waited for: see `Worker::close`.
            let _ = sagaflow_kafka::close_within(consumer, Duration::ZERO);
        }
    }
}

fn build_reply(command: &Command, outcome: Result<Value, Failure>) -> Reply {
    let result = outcome
        .map(|output| output.to_string())
        .map_err(|f| ReplyError {
            code: f.code,
            message: f.message,
            retryable: f.retryable,
        });
    Reply::answering(command, result, now_ms())
}

#[cfg(test)]
mod tests {
    use super::Ledger;

    #[test]
    fn the_offset_moves_only_past_commands_answered_in_a_row() {
        let mut ledger = Ledger::default();
        let (a, b, c) = (
            ledger.fetched(0, 10),
            ledger.fetched(0, 11),
            ledger.fetched(0, 12),
        );
        // Another partition's commands neither wait for nor hold these.
        let other = ledger.fetched(1, 3);
        assert_eq!(ledger.answered(0, 11, b), None, "10 is still running");
        assert_eq!(ledger.answered(1, 3, other), Some(3));
        assert_eq!(ledger.answered(0, 10, a), Some(11));
        assert_eq!(ledger.answered(0, 12, c), Some(12));
    }

    #[test]
    fn an_unanswered_command_holds_its_partition_and_its_copies_are_told_apart() {
        let mut ledger = Ledger::default();
        let (five, six, seven) = (
            ledger.fetched(0, 5),
            ledger.fetched(0, 6),
            ledger.fetched(0, 7),
        );
        assert!(ledger.failed(0, 6, six));
        // 7 comes again after 6: its first copy's answer moves nothing.
        assert_eq!(ledger.answered(0, 7, seven), None);
        assert_eq!(ledger.answered(0, 5, five), Some(5));
        // 6 fetched again while its first copy still runs: only the new copy counts.
        let again = ledger.fetched(0, 6);
        assert!(
            !ledger.failed(0, 6, six),
            "a superseded copy rewinds nothing"
        );
        assert_eq!(ledger.answered(0, 6, six), None);
        assert_eq!(ledger.answered(0, 6, again), Some(6));
        assert!(!ledger.failed(2, 1, 99), "a partition with nothing fetched");
    }

    #[test]
    fn a_revoked_partitions_commands_in_flight_store_nothing_and_rewind_nothing() {
        let mut ledger = Ledger::default();
        let (first, second) = (ledger.fetched(0, 20), ledger.fetched(0, 21));
        let other = ledger.fetched(1, 4);
        ledger.forget(0);
        assert_eq!(ledger.answered(0, 20, first), None);
        assert!(!ledger.failed(0, 21, second));
        assert_eq!(
            ledger.answered(1, 4, other),
            Some(4),
            "other partitions go on"
        );
        // Assigned again, the partition starts over from what the consumer fetches.
        let again = ledger.fetched(0, 20);
        assert_eq!(ledger.answered(0, 20, again), Some(20));
    }
}
