//! The projector loop: consume the event log as a group member, decode, and write each batch
//! with its offsets in one PostgreSQL transaction, as a Kafka Connect sink does.
//!
//! Offsets live only in the database. On assignment, each partition starts from its stored
//! offset; every batch first checks under a row lock that the stored offset is still the one
//! this projector read ([`Error::Fenced`]), so a member that lost its partition, or a rebuild
//! that swapped the tables in, can never commit a batch twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, RegistrySettings, SagaEvent};
use sagaflow_kafka::KafkaSettings;
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::metrics::{Lag, Metrics};
use crate::store::{Batch, Store};

/// What the projector reads and where it writes.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    pub kafka: KafkaSettings,
    pub registry: RegistrySettings,
    /// PostgreSQL URL, `postgres://user:password@host:port/db`.
    pub database_url: String,
    /// Schema holding the read models.
    pub schema: String,
    /// The event log topic, `<group>.events`.
    pub topic: String,
    /// Dead-letter topic for records that are not saga events.
    pub dlq_topic: String,
    /// Consumer group of the projectors.
    pub consumer_group: String,
    /// Most events per transaction.
    pub batch_max: usize,
    /// Longest wait for a batch to fill.
    pub batch_wait: Duration,
    /// Days of events kept in `events`.
    pub retention_days: u32,
    /// Leave and rejoin the group after owning nothing for a while (doubling from 10 s to
    /// 2 min): tansu 0.6's group coordinator can leave a member that joined after another
    /// died without partitions for good (docs/operations.md, "Known broker issues").
    pub rejoin_when_unassigned: bool,
}

impl ProjectorConfig {
    /// The projector of engine group `group`'s event log into `schema`, with the topic and
    /// consumer group names derived from it and the default batching and retention.
    pub fn for_group(
        kafka: KafkaSettings,
        registry: RegistrySettings,
        database_url: &str,
        schema: &str,
        group: &str,
    ) -> Self {
        Self {
            kafka,
            registry,
            database_url: database_url.to_string(),
            schema: schema.to_string(),
            topic: format!("{group}.events"),
            dlq_topic: format!("{group}.projections.dlq"),
            consumer_group: format!("{group}.projections"),
            batch_max: 5000,
            batch_wait: Duration::from_millis(50),
            retention_days: 30,
            rejoin_when_unassigned: false,
        }
    }
}

/// A record as fetched.
pub(crate) struct Fetched {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp: Option<i64>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
}

impl Fetched {
    pub(crate) fn of<M: Message>(m: &M) -> Self {
        Self {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        }
    }
}

/// The partitions this member owns and the offset the database held for each when it read
/// them; `generation` moves on every rebalance.
#[derive(Debug, Default)]
struct Assignment {
    expected: BTreeMap<i32, Option<i64>>,
    generation: u64,
    /// The offsets could not be read at assignment: read them before the next batch.
    resync: bool,
}

struct GroupContext {
    database_url: String,
    schema: String,
    topic: String,
    assignment: Arc<Mutex<Assignment>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let mut assignment = self.assignment.lock().expect("assignment lock");
        assignment.generation += 1;
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // A group's leader assigns each member only the topics it subscribed to; a
                // partition of another topic (a leader of another build sharing the group) is
                // named and left alone rather than read as one of this event log's.
                let (ours, others): (Vec<_>, Vec<_>) = tpl
                    .elements()
                    .into_iter()
                    .partition(|e| e.topic() == self.topic);
                if !others.is_empty() {
                    let others: Vec<String> = others
                        .iter()
                        .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                        .collect();
                    warn!(?others, topic = %self.topic, "the group assigned partitions of topics this projector does not read; ignoring them (give each event log's projector its own consumer group)");
                }
                let partitions: Vec<i32> = ours.iter().map(|e| e.partition()).collect();
                let stored = stored_positions(&self.database_url, &self.schema, &self.topic);
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(e) => {
                        warn!(error = %e, "cannot read the projected offsets at assignment; reading them before the first batch");
                        assignment.resync = true;
                        BTreeMap::new()
                    }
                };
                let mut list = TopicPartitionList::new();
                assignment.expected.clear();
                for p in &partitions {
                    let next = stored.get(p).copied();
                    let offset = next.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = list.add_partition_offset(&self.topic, *p, offset) {
                        error!(error = %e, "cannot build the assignment");
                    }
                    let _ = assignment.expected.insert(*p, next);
                }
                info!(?partitions, "event log partitions assigned");
                if let Err(e) = consumer.assign(&list) {
                    error!(error = %e, "cannot assign partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!("event log partitions revoked");
                assignment.expected.clear();
                if let Err(e) = consumer.unassign() {
                    error!(error = %e, "cannot unassign partitions");
                }
            }
            other => error!(?other, "rebalance error"),
        }
    }
}

fn stored_positions(url: &str, schema: &str, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let mut client = crate::store::connect(url)?;
    let rows = client
        .query(
            &format!(
                "SELECT partition, next_offset FROM {schema}.projection_offsets WHERE topic = $1"
            ),
            &[&topic],
        )
        .map_err(|e| Error::sql("reading the projected offsets", e))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A running projector.
#[derive(Debug)]
pub struct ProjectorHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ProjectorHandle {
    /// Whether the loop has ended (it ends only on a setup error or a stop).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops after the batch in progress and waits; the loop's error, if it ended on one.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Config("the projector thread panicked".into()))),
            None => Ok(()),
        }
    }
}

/// Opens the store (running migrations) and starts the projector thread.
pub fn start(config: ProjectorConfig, metrics: Arc<Metrics>) -> Result<ProjectorHandle> {
    let store = Store::open(&config.database_url, &config.schema, config.retention_days)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("projector".into())
        .spawn(move || run(config, store, metrics, thread_stop))
        .map_err(|e| Error::Config(format!("cannot start the projector thread: {e}")))?;
    Ok(ProjectorHandle {
        stop,
        thread: Some(thread),
    })
}

fn run(
    config: ProjectorConfig,
    mut store: Store,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let assignment = Arc::new(Mutex::new(Assignment::default()));
    let context = GroupContext {
        database_url: config.database_url.clone(),
        schema: config.schema.clone(),
        topic: config.topic.clone(),
        assignment: assignment.clone(),
    };
    let consumer: BaseConsumer<GroupContext> = config
        .kafka
        // A projector that died is noticed within 10 s, not librdkafka's 45 s: its partitions
        // wait that long for a replacement. Passthrough properties override both. Rebalances
        // are eager, whatever they say: dropping a half-collected batch at a rebalance relies
        // on every partition being revoked and sought again.
        .eager_range_config(
            "projector",
            &[
                ("fetch.wait.max.ms", "50"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
            ],
            "projector",
        )
        .set("group.id", &config.consumer_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(context)
        .map_err(|e| Error::kafka("creating the event log consumer", e))?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|e| Error::kafka(format!("subscribing to {}", config.topic), e))?;
    let dlq = Dlq::new(&config)?;
    let codec = BlockingCodec::new(&config.registry)
        .map_err(|e| Error::Config(format!("registry settings: {e}")))?;
    info!(topic = %config.topic, schema = %config.schema, "projector started");
    let mut last_lag = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_committed_ts: BTreeMap<i32, i64> = BTreeMap::new();
    let mut unassigned_since = Instant::now();
    let mut rejoin_after = Duration::from_secs(10);
    let mut outage = Outage::default();
    while !stop.load(Ordering::SeqCst) {
        if config.rejoin_when_unassigned {
            let owns = !assignment
                .lock()
                .expect("assignment lock")
                .expected
                .is_empty();
            if owns {
                unassigned_since = Instant::now();
                rejoin_after = Duration::from_secs(10);
            } else if unassigned_since.elapsed() >= rejoin_after {
                warn!(after = ?rejoin_after, "no partitions assigned; leaving and rejoining the group");
                consumer.unsubscribe();
                consumer
                    .subscribe(&[&config.topic])
                    .map_err(|e| Error::kafka(format!("subscribing to {}", config.topic), e))?;
                unassigned_since = Instant::now();
                rejoin_after = (rejoin_after * 2).min(Duration::from_secs(120));
            }
        }
        if std::mem::take(&mut assignment.lock().expect("assignment lock").resync) {
            resync(&consumer, &mut store, &config.topic, &assignment, &metrics);
            if assignment.lock().expect("assignment lock").resync {
                // Not back at the stored offsets: what the consumer would hand over next may
                // lie beyond records that were read and never written.
                std::thread::sleep(Duration::from_secs(1));
                // A connection the database closed (a restart, an outage longer than the one
                // reconnect after the failed write) fails every query until replaced.
                if store.is_closed() {
                    reopen(&mut store, &config, &mut outage);
                }
                continue;
            }
        }
        let generation = assignment.lock().expect("assignment lock").generation;
        let fetched = collect_from(&consumer, config.batch_max, config.batch_wait, &stop);
        let expected = {
            let a = assignment.lock().expect("assignment lock");
            if a.generation != generation {
                // A rebalance happened while collecting: every partition was re-seeked to its
                // stored offset, so what was collected is read again.
                continue;
            }
            a.expected.clone()
        };
        if !fetched.is_empty() {
            let batch = match decode_batch(
                &codec,
                Some(&dlq),
                &config,
                fetched,
                &expected,
                &metrics,
                &stop,
            ) {
                Some(batch) => batch,
                None => {
                    // The batch was consumed and not written: read it again from the stored
                    // offsets, or the next batch would skip it and still pass the fence.
                    resync(&consumer, &mut store, &config.topic, &assignment, &metrics);
                    continue;
                }
            };
            match store.write(&config.topic, &batch) {
                Ok(written) => {
                    metrics.committed(
                        written.applied,
                        written.duplicates,
                        written.gaps,
                        written.expired,
                        &written.observations,
                    );
                    let mut a = assignment.lock().expect("assignment lock");
                    for (p, (_, next)) in &batch.ranges {
                        if a.expected.contains_key(p) {
                            let _ = a.expected.insert(*p, Some(*next));
                        }
                    }
                    last_committed_ts.extend(&batch.written_at);
                }
                Err(Error::Fenced {
                    partition,
                    expected,
                    found,
                }) => {
                    info!(
                        partition,
                        ?expected,
                        ?found,
                        "partition moved on in the database; resuming from the stored offset"
                    );
                    metrics.fenced();
                    store.forget_partitions();
                    resync(&consumer, &mut store, &config.topic, &assignment, &metrics);
                }
                Err(e) => {
                    warn!(error = %e, "writing a batch failed; retrying from the stored offsets");
                    metrics.set_failing(Some(e.to_string()));
                    store.forget_partitions();
                    std::thread::sleep(Duration::from_secs(1));
                    reopen(&mut store, &config, &mut outage);
                    resync(&consumer, &mut store, &config.topic, &assignment, &metrics);
                }
            }
        }
        // A request per owned partition: every 2 s is cheap, and fine-grained enough for lag.
        if last_lag.elapsed() >= Duration::from_secs(2) {
            last_lag = Instant::now();
            let a = assignment.lock().expect("assignment lock");
            let mut lag = BTreeMap::new();
            for (p, next) in &a.expected {
                let high = consumer
                    .fetch_watermarks(&config.topic, *p, Duration::from_secs(1))
                    .map_or(0, |(_, high)| high);
                let events = (high - next.unwrap_or(0)).max(0);
                let seconds = match (events, last_committed_ts.get(p)) {
                    (0, _) => 0.0,
                    (_, Some(at)) => ((crate::store::now_ms() - at) as f64 / 1000.0).max(0.0),
                    (_, None) => 0.0,
                };
                let _ = lag.insert(*p, Lag { events, seconds });
            }
            metrics.set_lag(lag);
        }
        if last_sweep.elapsed() >= Duration::from_secs(3600) {
            last_sweep = Instant::now();
            if let Err(e) = store.drop_expired_partitions() {
                warn!(error = %e, "dropping expired event partitions failed; retrying in an hour");
            }
        }
    }
    // A static or dynamic member alike leaves the group, so its partitions move at once.
    consumer.unsubscribe();
    info!("projector stopped");
    Ok(())
}

/// Reconnects after a database error; the loop calls it again, a second apart, until it works.
fn reopen(store: &mut Store, config: &ProjectorConfig, outage: &mut Outage) {
    match Store::open(&config.database_url, &config.schema, config.retention_days) {
        Ok(fresh) => {
            *store = fresh;
            outage.ended();
        }
        Err(e) => outage.failed(&e),
    }
}

/// How often a database outage that goes on is logged again.
const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A database outage's log lines: one when reconnecting first fails, one a minute while it
/// goes on, one when it ends. The projector retries every second, and a line per retry would
/// bury everything else in an operator's log during a long outage.
#[derive(Debug, Default)]
struct Outage {
    /// When the first reconnect failed and when the last line was logged.
    since: Option<(Instant, Instant)>,
    attempts: u64,
}

impl Outage {
    fn failed(&mut self, error: &Error) {
        self.attempts += 1;
        let now = Instant::now();
        match &mut self.since {
            None => {
                self.since = Some((now, now));
                warn!(%error, "reconnecting to PostgreSQL failed; retrying every second (logged again each minute)");
            }
            Some((since, logged)) if logged.elapsed() >= OUTAGE_LOG_EVERY => {
                *logged = now;
                warn!(
                    %error,
                    down_for = ?since.elapsed(),
                    attempts = self.attempts,
                    "PostgreSQL still unreachable; retrying every second"
                );
            }
            Some(_) => {}
        }
    }

    fn ended(&mut self) {
        if let Some((since, _)) = self.since.take() {
            info!(down_for = ?since.elapsed(), attempts = self.attempts, "reconnected to PostgreSQL");
        }
        self.attempts = 0;
    }
}

/// Reads every owned partition's stored offset and seeks there.
fn resync(
    consumer: &BaseConsumer<GroupContext>,
    store: &mut Store,
    topic: &str,
    assignment: &Mutex<Assignment>,
    metrics: &Metrics,
) {
    let stored = match store.positions(topic) {
        Ok(stored) => stored,
        Err(e) => {
            metrics.set_failing(Some(e.to_string()));
            assignment.lock().expect("assignment lock").resync = true;
            return;
        }
    };
    let mut a = assignment.lock().expect("assignment lock");
    let partitions: Vec<i32> = a.expected.keys().copied().collect();
    for p in partitions {
        let next = stored.get(&p).copied();
        let offset = next.map_or(Offset::Beginning, Offset::Offset);
        if let Err(e) = consumer.seek(topic, p, offset, Duration::from_secs(10)) {
            warn!(partition = p, error = %e, "seek failed; retrying");
            a.resync = true;
        }
        let _ = a.expected.insert(p, next);
    }
    // Records already fetched from before the seek are dropped by the generation check.
    a.generation += 1;
}

/// Polls until `max` records or `wait` has passed since the first one.
pub(crate) fn collect_from<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    max: usize,
    wait: Duration,
    stop: &AtomicBool,
) -> Vec<Fetched> {
    let mut out = Vec::new();
    let mut deadline: Option<Instant> = None;
    while out.len() < max && !stop.load(Ordering::SeqCst) {
        let timeout = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(200),
        };
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                out.push(Fetched::of(&m));
                deadline.get_or_insert_with(|| Instant::now() + wait);
            }
            Some(Err(e)) => {
                warn!(error = %e, "event log fetch failed; retrying");
                if deadline.is_none() {
                    break;
                }
            }
            None => {
                if deadline.is_none() || out.len() >= max {
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    out
}

/// Decodes a fetched batch; records that are not saga events are counted and go to the
/// dead-letter topic with their reason, if there is one. `None` when the batch must be read
/// again: stopped during a registry outage, or the dead-letter topic failed.
pub(crate) fn decode_batch(
    codec: &BlockingCodec,
    dlq: Option<&Dlq>,
    config: &ProjectorConfig,
    fetched: Vec<Fetched>,
    expected: &BTreeMap<i32, Option<i64>>,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> Option<Batch> {
    let mut batch = Batch::default();
    for record in fetched {
        let Some(start) = expected.get(&record.partition) else {
            continue;
        };
        let range = batch
            .ranges
            .entry(record.partition)
            .or_insert((*start, record.offset + 1));
        range.1 = record.offset + 1;
        if let Some(at) = record.timestamp {
            let _ = batch.written_at.insert(record.partition, at);
        }
        let decoded = loop {
            let result = match &record.payload {
                None => Err((
                    "empty",
                    "the record has no value (a tombstone or an empty write)".to_string(),
                )),
                Some(bytes) => match codec.decode::<SagaEvent>(bytes) {
                    Ok(event) => Ok(event),
                    Err(e) if e.is_outage() => {
                        metrics.set_failing(Some(e.to_string()));
                        warn!(error = %e, "schema registry unavailable; retrying the batch");
                        if stop.load(Ordering::SeqCst) {
                            return None;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                    Err(e) => Err(("undecodable", e.to_string())),
                },
            };
            break result;
        };
        match decoded {
            Ok(event) => batch.events.push(event),
            Err((reason, message)) => {
                warn!(partition = record.partition, offset = record.offset, reason, %message, "not a saga event; sent to the dead-letter topic");
                metrics.bad_event(reason);
                let sent = dlq.map_or(Ok(()), |dlq| {
                    dlq.send(&config.topic, &record, reason, &message)
                });
                if let Err(e) = sent {
                    // Never skip a record that could not be parked: retry the batch.
                    warn!(error = %e, "dead-lettering failed; retrying the batch");
                    metrics.set_failing(Some(e.to_string()));
                    std::thread::sleep(Duration::from_secs(1));
                    return None;
                }
            }
        }
    }
    Some(batch)
}

/// The dead-letter topic of records that are not saga events.
pub(crate) struct Dlq {
    producer: FutureProducer,
    topic: String,
}

impl Dlq {
    pub(crate) fn new(config: &ProjectorConfig) -> Result<Self> {
        let producer: FutureProducer = config
            .kafka
            .producer_config("projector-dead-letters", 0)
            .create()
            .map_err(|e| Error::kafka("creating the dead-letter producer", e))?;
        Ok(Self {
            producer,
            topic: config.dlq_topic.clone(),
        })
    }

    /// Sends the record as it was, with why, and waits until the broker has it.
    pub(crate) fn send(
        &self,
        source: &str,
        record: &Fetched,
        reason: &str,
        message: &str,
    ) -> std::result::Result<(), KafkaError> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sagaflow.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "sagaflow.error",
                value: Some(message),
            })
            .insert(Header {
                key: "sagaflow.source.topic",
                value: Some(source),
            })
            .insert(Header {
                key: "sagaflow.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "sagaflow.source.offset",
                value: Some(&offset),
            });
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload.as_slice());
        }
        // The delivery future is a plain channel: waiting on it needs no async runtime.
        let delivery = self.producer.send_result(out).map_err(|(e, _)| e)?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
        Ok(())
    }
}
