//! The outbox relay: delivers the outputs of valid journal records and keeps the changelog.
//!
//! Outputs are delivered at least once with stable ids (G2). Per partition the relay tracks a
//! watermark: the newest valid journal record such that every output of every record up to it is
//! acknowledged by the broker and every saga state up to it is in the changelog. The watermark is
//! persisted locally, written into later journal records, and into checkpoint records on the
//! changelog; a restore re-delivers everything after it.
//!
//! The changelog is written once per checkpoint interval with only the latest state of each saga
//! changed since the last flush, as Kafka Streams' record cache does, which keeps it off the
//! per-decision path; most of those states share batch records (`batches.rs`).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use sagaflow_avro::Outbound;
use tracing::warn;

use crate::batches;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{RelayMark, Store};
use crate::topics::Topics;
use crate::traffic::{record_bytes, Flow};

/// How long a message the producer refused, or failed to deliver, waits before it is offered
/// again.
const ENQUEUE_RETRY_MS: i64 = 1_000;

/// Header carrying the stable message id.
pub(crate) const ID_HEADER: &str = "sagaflow-id";

/// What a delivered message belonged to.
#[derive(Debug)]
pub(crate) enum Purpose {
    /// Output of the journal record at this offset.
    Output(i64),
    /// Changelog flush number.
    Flush(u64),
    /// A checkpoint record (nothing waits on it).
    Checkpoint,
}

#[derive(Debug)]
pub(crate) struct Ticket {
    partition: i32,
    generation: u64,
    purpose: Purpose,
    message: Outbound,
    explicit_partition: Option<i32>,
    /// When it was first handed to the producer (the relay hop's start: waits for room in the
    /// producer's queue and retries after a failed delivery count).
    sent: Option<Instant>,
    /// How long until the broker acknowledged it, read in the delivery callback.
    acked_after: Option<Duration>,
    /// What it is counted as once acknowledged.
    flow: Flow,
}

#[derive(Debug)]
pub(crate) struct RelayContext {
    acks: Sender<(Box<Ticket>, Result<(), KafkaError>)>,
    metrics: Arc<Metrics>,
    /// This producer's number in `metrics.requests`.
    instance: u64,
}

impl ClientContext for RelayContext {
    fn stats_raw(&self, statistics: &[u8]) {
        self.metrics
            .requests
            .record("relay", self.instance, statistics);
    }
}

impl ProducerContext for RelayContext {
    type DeliveryOpaque = Box<Ticket>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut ticket: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        ticket.acked_after = ticket.sent.map(|sent| sent.elapsed());
        let _ = self.acks.send((ticket, outcome));
    }
}

#[derive(Debug, Default)]
struct PartitionRelay {
    generation: u64,
    /// The epoch this engine claimed the partition with; its changelog states carry it.
    epoch: i64,
    /// Committed journal offsets with their outstanding output count.
    outstanding: BTreeMap<i64, usize>,
    /// Everything at or below is delivered.
    outputs_through: i64,
    /// Chain and positions at each committed offset not yet covered by the watermark.
    marks: BTreeMap<i64, RelayMark>,
    /// Latest state per saga since the last flush.
    dirty: HashMap<String, Dirty>,
    /// Flush in flight: (number, covers through offset, outstanding).
    flush: Option<(u64, i64, usize)>,
    /// Batches the flush in flight deletes.
    flush_deletes: Vec<String>,
    /// Batch records the flush in flight writes.
    flush_batches: u64,
    /// Batches checked by the last flush, deleted at the start of the next one: once every
    /// state that moved their sagas on is acknowledged, even one delivered late after a retry.
    pending_deletes: Vec<String>,
    /// Batches deleted by acknowledged flushes, not yet forgotten in the store.
    deleted: Vec<String>,
    changelog_through: i64,
    last_committed: i64,
    /// The persisted watermark.
    watermark: i64,
}

/// The latest state of a saga since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dirty {
    /// Journal offset it came from.
    pub(crate) source: i64,
    /// `None` deletes.
    pub(crate) state: Option<Vec<u8>>,
    /// From when it is checked if it goes in a batch; `None` for its own key (`batches.rs`).
    pub(crate) batch_at: Option<i64>,
}

impl Dirty {
    /// A state written under its own key.
    pub(crate) fn single(source: i64, state: Option<Vec<u8>>) -> Self {
        Self {
            source,
            state,
            batch_at: None,
        }
    }
}

/// Checks the batches of `partition` whose check time has come (`batches.rs`): a saga whose
/// state is still the one a batch holds is carried, written again under its own key in this
/// flush. Returns the batches to delete at the start of the next flush.
fn carry_due_batches(
    store: &Store,
    partition: i32,
    part: &mut PartitionRelay,
    now: i64,
    metrics: &Metrics,
) -> Result<Vec<String>> {
    let mut due = store.batches_due(partition, now)?;
    // Checked already; deleted in this flush.
    due.retain(|b| !part.pending_deletes.contains(&b.key));
    let mut carry = Vec::new();
    for batch in &due {
        for (saga_id, fingerprint) in &batch.members {
            // A dirty state is newer than any batch and goes out ahead of the deletion.
            if part.dirty.contains_key(saga_id) {
                continue;
            }
            if let Some(state) = store.state(partition, saga_id)? {
                if batches::fingerprint(&state) == *fingerprint {
                    carry.push((saga_id.clone(), state));
                }
            }
        }
    }
    let _ = metrics
        .changelog_batch_carries_total
        .fetch_add(carry.len() as u64, std::sync::atomic::Ordering::Relaxed);
    // The store holds every committed record's states: the newest source is the last commit.
    for (saga_id, state) in carry {
        let _ = part
            .dirty
            .insert(saga_id, Dirty::single(part.last_committed, Some(state)));
    }
    Ok(due.into_iter().map(|b| b.key).collect())
}

/// Advance of a partition's watermark, for the processor to persist.
#[derive(Debug)]
pub(crate) struct Advance {
    pub(crate) partition: i32,
    pub(crate) mark: RelayMark,
}

/// The relay.
pub(crate) struct Relay {
    producer: ThreadedProducer<RelayContext>,
    /// Outputs not to be sent yet (`not_before` in the future), by release time; they count as
    /// outstanding, so the watermark waits for them.
    held: BinaryHeap<Reverse<(i64, u64)>>,
    held_tickets: HashMap<u64, Box<Ticket>>,
    next_hold: u64,
    acks: Receiver<(Box<Ticket>, Result<(), KafkaError>)>,
    partitions: HashMap<i32, PartitionRelay>,
    next_generation: u64,
    next_flush: u64,
    topics: Topics,
    metrics: Arc<Metrics>,
    /// Most bytes of a changelog batch record.
    max_batch_bytes: usize,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl Relay {
    pub(crate) fn new(
        kafka: &sagaflow_kafka::KafkaSettings,
        topics: &Topics,
        metrics: Arc<Metrics>,
        max_batch_bytes: usize,
    ) -> Result<Self> {
        let (tx, rx) = channel();
        // The shared producer config partitions by key as Java clients do (murmur2).
        let producer = kafka
            .hot_path_producer_config("engine-relay")
            .create_with_context(RelayContext {
                acks: tx,
                instance: metrics.requests.instance(),
                metrics: metrics.clone(),
            })
            .map_err(|e| Error::kafka("creating the relay producer", e))?;
        Ok(Self {
            producer,
            held: BinaryHeap::new(),
            held_tickets: HashMap::new(),
            next_hold: 0,
            acks: rx,
            partitions: HashMap::new(),
            next_generation: 1,
            next_flush: 1,
            topics: topics.clone(),
            metrics,
            max_batch_bytes,
        })
    }

    /// Starts relaying for a newly owned partition whose watermark is `mark`.
    pub(crate) fn open(&mut self, partition: i32, mark: RelayMark, epoch: i64) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let through = mark.chain.last_valid;
        let mut marks = BTreeMap::new();
        let _ = marks.insert(through, mark);
        let _ = self.partitions.insert(
            partition,
            PartitionRelay {
                generation,
                epoch,
                outputs_through: through,
                changelog_through: through,
                last_committed: through,
                watermark: through,
                marks,
                ..PartitionRelay::default()
            },
        );
    }

    /// Stops tracking a partition this engine no longer owns.
    pub(crate) fn close(&mut self, partition: i32) {
        let _ = self.partitions.remove(&partition);
    }

    /// Hands over a committed (valid) journal record: its outputs, and saga states with the
    /// journal offset each came from.
    pub(crate) fn committed(
        &mut self,
        partition: i32,
        offset: i64,
        outputs: Vec<Outbound>,
        states: impl IntoIterator<Item = (String, Dirty)>,
        mark: Option<RelayMark>,
        redelivery: bool,
    ) {
        let Some(part) = self.partitions.get_mut(&partition) else {
            return;
        };
        let generation = part.generation;
        *part.outstanding.entry(offset).or_insert(0) += outputs.len();
        if let Some(mark) = mark {
            let _ = part.marks.insert(offset, mark);
        }
        part.last_committed = part.last_committed.max(offset);
        for (saga, state) in states {
            let _ = part.dirty.insert(saga, state);
        }
        if redelivery {
            self.metrics
                .relay_redeliveries_total
                .fetch_add(outputs.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let now = sagaflow_avro::now_ms();
        for message in outputs {
            let not_before = message.not_before;
            let flow = self.flow_of(&message, redelivery);
            let ticket = Box::new(Ticket {
                partition,
                generation,
                purpose: Purpose::Output(offset),
                message,
                explicit_partition: None,
                sent: None,
                acked_after: None,
                flow,
            });
            match not_before {
                Some(at) if at > now => self.hold(at, ticket),
                _ => self.send(ticket),
            }
        }
        self.advance_outputs(partition);
    }

    /// What an output counts as on `/metrics`: a message delivered again after a restore is
    /// overhead, whatever it is.
    fn flow_of(&self, message: &Outbound, redelivery: bool) -> Flow {
        let topic = message.topic.as_str();
        if redelivery {
            Flow::Resend
        } else if message.id.starts_with("forward/") {
            Flow::Forward
        } else if message.id.starts_with("delay/") {
            Flow::Delayed
        } else if topic == self.topics.events {
            Flow::Event
        } else if topic == self.topics.dlq {
            Flow::DeadLetter
        } else if topic == self.topics.correlations {
            Flow::Correlation
        } else {
            Flow::Command
        }
    }

    /// Keeps `ticket` until `at` (epoch ms); [`Relay::release`] sends it then.
    fn hold(&mut self, at: i64, ticket: Box<Ticket>) {
        let id = self.next_hold;
        self.next_hold += 1;
        self.held.push(Reverse((at, id)));
        let _ = self.held_tickets.insert(id, ticket);
    }

    /// Sends held outputs whose time has come; those of partitions closed since are dropped
    /// (their new owner delivers them from the journal).
    pub(crate) fn release(&mut self, now: i64) {
        while let Some(Reverse((at, id))) = self.held.peek().copied() {
            if at > now {
                break;
            }
            let _ = self.held.pop();
            let Some(ticket) = self.held_tickets.remove(&id) else {
                continue;
            };
            let current = self
                .partitions
                .get(&ticket.partition)
                .is_some_and(|p| p.generation == ticket.generation);
            if current {
                self.send(ticket);
            }
        }
    }

    /// When the next held output is due, if any.
    pub(crate) fn next_release(&self) -> Option<i64> {
        self.held.peek().map(|Reverse((at, _))| *at)
    }

    /// Hands a message to the producer. A full queue is waited out here (back-pressure); any
    /// other refusal (a topic deleted since, say) is retried later from the hold, so one
    /// message that cannot be sent never stops the engine thread and the other partitions.
    fn send(&mut self, mut ticket: Box<Ticket>) {
        loop {
            let mut headers = OwnedHeaders::new().insert(KafkaHeader {
                key: ID_HEADER,
                value: Some(ticket.message.id.as_bytes()),
            });
            for h in &ticket.message.headers {
                headers = headers.insert(KafkaHeader {
                    key: &h.name,
                    value: Some(&h.value),
                });
            }
            let topic = ticket.message.topic.clone();
            let key = ticket.message.key.clone();
            let value = ticket.message.value.clone();
            let explicit = ticket.explicit_partition;
            let _ = ticket.sent.get_or_insert_with(Instant::now);
            let mut record = BaseRecord::with_opaque_to(&topic, ticket).headers(headers);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            if let Some(v) = value.as_deref() {
                record = record.payload(v);
            }
            if let Some(p) = explicit {
                record = record.partition(p);
            }
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                    ticket = record.delivery_opaque;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, record)) => {
                    let fix = fix_for(&e, record.topic, &record.delivery_opaque.message);
                    warn!(error = %e, topic = %record.topic, retry_in_ms = ENQUEUE_RETRY_MS, fix, "relay could not enqueue a message; it stays undelivered (the watermark waits) and is retried");
                    self.metrics
                        .relay_retries_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ticket = record.delivery_opaque;
                    self.hold(sagaflow_avro::now_ms() + ENQUEUE_RETRY_MS, ticket);
                    return;
                }
            }
        }
    }

    /// Processes delivery reports; returns watermark advances to persist.
    pub(crate) fn drain(&mut self) -> Vec<Advance> {
        let mut touched = Vec::new();
        while let Ok((ticket, outcome)) = self.acks.try_recv() {
            if let Err(e) = outcome {
                // At least once: the same message (same id) again until the broker takes it.
                // The producer already retried it for up to message.timeout.ms, so a pause
                // before the next try costs nothing and keeps a lasting failure from spinning.
                let fix = fix_for(&e, &ticket.message.topic, &ticket.message);
                warn!(error = %e, topic = %ticket.message.topic, id = %ticket.message.id, retry_in_ms = ENQUEUE_RETRY_MS, fix, "relay delivery failed; it is sent again");
                self.metrics
                    .relay_retries_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.hold(sagaflow_avro::now_ms() + ENQUEUE_RETRY_MS, ticket);
                continue;
            }
            let m = &ticket.message;
            self.metrics.traffic.count(
                ticket.flow,
                record_bytes(
                    m.key.as_deref(),
                    m.value.as_deref(),
                    // The id header the relay adds, and the message's own.
                    std::iter::once(ID_HEADER.len() + m.id.len())
                        .chain(m.headers.iter().map(|h| h.name.len() + h.value.len())),
                ),
            );
            let Some(part) = self.partitions.get_mut(&ticket.partition) else {
                continue;
            };
            if part.generation != ticket.generation {
                continue;
            }
            match ticket.purpose {
                Purpose::Output(offset) => {
                    self.metrics
                        .relayed_messages_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let (Some(after), Some(sent)) = (ticket.acked_after, ticket.sent) {
                        self.metrics.hops.relay_ack.observe(after);
                        let start = crate::spans::wall(sent.elapsed());
                        self.metrics.spans.output(
                            ticket.flow,
                            &ticket.message,
                            start,
                            start + after,
                        );
                    }
                    if let Some(n) = part.outstanding.get_mut(&offset) {
                        *n = n.saturating_sub(1);
                    }
                }
                Purpose::Flush(number) => {
                    if let Some((n, through, left)) = part.flush.as_mut() {
                        if *n == number {
                            *left = left.saturating_sub(1);
                            if *left == 0 {
                                part.changelog_through = *through;
                                part.flush = None;
                                let deletes = std::mem::take(&mut part.flush_deletes);
                                let metrics = &self.metrics;
                                let _ = metrics.changelog_batches_written_total.fetch_add(
                                    part.flush_batches,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                let _ = metrics.changelog_batches_deleted_total.fetch_add(
                                    deletes.len() as u64,
                                    std::sync::atomic::Ordering::Relaxed,
                                );
                                part.deleted.extend(deletes);
                            }
                        }
                    }
                }
                Purpose::Checkpoint => {}
            }
            touched.push(ticket.partition);
        }
        touched.sort_unstable();
        touched.dedup();
        let mut advances = Vec::new();
        for partition in touched {
            self.advance_outputs(partition);
            if let Some(a) = self.advance_watermark(partition) {
                advances.push(a);
            }
        }
        advances
    }

    fn advance_outputs(&mut self, partition: i32) {
        let Some(part) = self.partitions.get_mut(&partition) else {
            return;
        };
        while let Some((&offset, &left)) = part.outstanding.first_key_value() {
            if left > 0 {
                break;
            }
            part.outputs_through = offset;
            let _ = part.outstanding.pop_first();
        }
    }

    fn advance_watermark(&mut self, partition: i32) -> Option<Advance> {
        let part = self.partitions.get_mut(&partition)?;
        let covered = part.outputs_through.min(part.changelog_through);
        let (&offset, _) = part.marks.range(..=covered).next_back()?;
        if offset <= part.watermark {
            return None;
        }
        part.watermark = offset;
        let mark = part.marks.get(&offset).cloned()?;
        part.marks = part.marks.split_off(&offset);
        Some(Advance { partition, mark })
    }

    /// Writes the changelog for every partition (called every checkpoint interval) and, for
    /// advanced watermarks, a checkpoint record. Batches whose check time has come are checked,
    /// carrying any saga still unchanged, and deleted at the start of the next flush (see
    /// `batches.rs`).
    /// Returns the advances, and the partitions whose store failed.
    pub(crate) fn flush_changelog(
        &mut self,
        store: &Store,
        now: i64,
    ) -> (Vec<Advance>, Vec<(i32, Error)>) {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        let mut advances = Vec::new();
        let mut failed = Vec::new();
        for partition in partitions {
            let part = self.partitions.get_mut(&partition).expect("listed");
            if part.flush.is_some() {
                continue;
            }
            let through = part.last_committed;
            let due = match carry_due_batches(store, partition, part, now, &self.metrics) {
                Ok(due) => due,
                Err(e) => {
                    failed.push((partition, e));
                    continue;
                }
            };
            // The batches checked by the last flush, whose sagas' states are all acknowledged by
            // now, are deleted in this one; those checked here wait for the next.
            let deletes = std::mem::replace(&mut part.pending_deletes, due);
            if part.dirty.is_empty() && deletes.is_empty() {
                // Nothing to write (at most batches checked, every saga of them moved on, to
                // delete in the next flush).
                part.changelog_through = through;
                if let Some(a) = self.advance_watermark(partition) {
                    advances.push(a);
                }
                continue;
            }
            let number = self.next_flush;
            let mut single = Vec::new();
            let mut batchable = Vec::new();
            for (saga_id, d) in std::mem::take(&mut part.dirty) {
                match (d.batch_at, d.state) {
                    (Some(at), Some(state)) => batchable.push((saga_id, d.source, state, at)),
                    (_, state) => single.push((saga_id, d.source, state)),
                }
            }
            let (packed, alone) =
                batches::pack(batchable, self.max_batch_bytes, part.epoch, number);
            single.extend(
                alone
                    .into_iter()
                    .map(|(id, source, state)| (id, source, Some(state))),
            );
            // Indexed before they are written: a batch written but not indexed (a crash in
            // between) would never be deleted.
            let mut records = Vec::with_capacity(packed.len());
            let indexed = packed.iter().try_for_each(|p| {
                let bytes = sagaflow_avro::internal::encode(&p.record)?;
                store.put_batch(partition, &p.key, &p.members())?;
                records.push(bytes);
                Ok::<(), Error>(())
            });
            if let Err(e) = indexed {
                // Nothing was sent: the states and deletions wait for the next flush, which
                // checks the due batches again.
                part.pending_deletes = deletes;
                for (saga_id, source, state) in single {
                    let _ = part.dirty.insert(saga_id, Dirty::single(source, state));
                }
                for p in packed {
                    for entry in p.record.entries {
                        let _ = part.dirty.insert(
                            entry.saga_id,
                            Dirty::single(entry.source, Some(entry.state)),
                        );
                    }
                }
                failed.push((partition, e));
                continue;
            }
            self.next_flush += 1;
            let count = single.len() + packed.len() + deletes.len();
            part.flush = Some((number, through, count));
            part.flush_deletes.clone_from(&deletes);
            part.flush_batches = packed.len() as u64;
            let generation = part.generation;
            let epoch = part.epoch.to_string().into_bytes();
            let headers = |source: i64| {
                // Restores keep the state with the newest source, not the last written, and
                // recognise states an owner wrote after it was fenced.
                vec![
                    sagaflow_avro::Header {
                        name: crate::kafka::SOURCE_HEADER.into(),
                        value: source.to_string().into_bytes(),
                    },
                    sagaflow_avro::Header {
                        name: crate::kafka::EPOCH_HEADER.into(),
                        value: epoch.clone(),
                    },
                ]
            };
            // Batches first, and sagas' deletions last: a saga is deleted only after every
            // batch holding an older state of it is (see `batches.rs`).
            let (deletions, states): (Vec<_>, Vec<_>) = single
                .into_iter()
                .partition(|(_, _, state)| state.is_none());
            let mut writes: Vec<(String, Option<Vec<u8>>, Vec<sagaflow_avro::Header>)> = deletes
                .into_iter()
                .map(|key| (key, None, Vec::new()))
                .collect();
            let singles = |v: Vec<(String, i64, Option<Vec<u8>>)>| {
                v.into_iter()
                    .map(|(saga_id, source, state)| (saga_id, state, headers(source)))
                    .collect::<Vec<_>>()
            };
            writes.extend(singles(states));
            writes.extend(
                packed
                    .into_iter()
                    .zip(records)
                    .map(|(p, bytes)| (p.key, Some(bytes), headers(p.source))),
            );
            writes.extend(singles(deletions));
            for (key, value, headers) in writes {
                self.send(Box::new(Ticket {
                    partition,
                    generation,
                    purpose: Purpose::Flush(number),
                    message: Outbound {
                        id: format!("changelog/{key}/{through}"),
                        topic: self.topics.changelog.clone(),
                        key: Some(key.into_bytes()),
                        value,
                        headers,
                        not_before: None,
                    },
                    explicit_partition: Some(partition),
                    sent: None,
                    acked_after: None,
                    flow: Flow::Changelog,
                }));
                sagaflow_failpoints::hit(sagaflow_failpoints::CHANGELOG_FLUSH);
            }
        }
        (advances, failed)
    }

    /// Batches deleted from the changelog since the last call, to forget in the store.
    pub(crate) fn take_deleted_batches(&mut self) -> Vec<(i32, String)> {
        self.partitions
            .iter_mut()
            .flat_map(|(&p, part)| {
                std::mem::take(&mut part.deleted)
                    .into_iter()
                    .map(move |key| (p, key))
            })
            .collect()
    }

    /// Writes a checkpoint record for `partition` (fire and forget: a lost one only means a
    /// longer replay on the next restore).
    pub(crate) fn checkpoint(&mut self, partition: i32, value: Vec<u8>, through: i64) {
        let Some(part) = self.partitions.get(&partition) else {
            return;
        };
        self.send(Box::new(Ticket {
            partition,
            generation: part.generation,
            purpose: Purpose::Checkpoint,
            message: Outbound {
                id: format!("checkpoint/{partition}/{through}"),
                topic: self.topics.changelog.clone(),
                key: Some(crate::restore::CHECKPOINT_KEY.as_bytes().to_vec()),
                value: Some(value),
                // Readers ignore a checkpoint an owner wrote after it was fenced: it may count
                // as flushed what only a late batch, which they ignore, holds.
                headers: vec![sagaflow_avro::Header {
                    name: crate::kafka::EPOCH_HEADER.into(),
                    value: part.epoch.to_string().into_bytes(),
                }],
                not_before: None,
            },
            explicit_partition: Some(partition),
            sent: None,
            acked_after: None,
            flow: Flow::Changelog,
        }));
    }

    /// Whether every handed-over message is delivered and the changelog is flushed.
    pub(crate) fn idle(&self) -> bool {
        self.partitions.values().all(|p| {
            p.outstanding.is_empty()
                && p.flush.is_none()
                && p.dirty.is_empty()
                && p.pending_deletes.is_empty()
                && p.watermark >= p.last_committed
        })
    }

    /// Waits up to `timeout` for in-flight deliveries (on shutdown).
    pub(crate) fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// What an operator can do about an output the broker keeps refusing: the relay sends it
/// again until it is taken, so only a change on the broker's side (or a smaller output) ends it.
fn fix_for(e: &KafkaError, topic: &str, message: &Outbound) -> String {
    let bytes =
        message.key.as_ref().map_or(0, Vec::len) + message.value.as_ref().map_or(0, Vec::len);
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize,
        ) => format!(
            "the record ({bytes} bytes of key and value) or its batch is over the limit of topic {topic} or of the engine's producer: raise the topic's max.message.bytes (kafka-configs --bootstrap-server BROKER --alter --entity-type topics --entity-name {topic} --add-config max.message.bytes=N) and, past 1 MB, the engine's (--kafka message.max.bytes=N, or SAGAFLOW_KAFKA_MESSAGE_MAX_BYTES=N)"
        ),
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            format!("grant the engine's principal WRITE on topic {topic}")
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            format!("create topic {topic}, or restart the engine, which creates the topics it writes")
        }
        _ => format!(
            "the error says why the broker refused it; the relay sends it again every second until topic {topic} takes it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store;

    #[test]
    fn a_refused_output_is_logged_with_what_would_let_it_through() {
        let message = Outbound {
            id: "m".into(),
            topic: "orders.pay".into(),
            key: Some(b"saga".to_vec()),
            value: Some(vec![0; 2_000_000]),
            headers: Vec::new(),
            not_before: None,
        };
        let refused = |code| KafkaError::MessageProduction(code);
        let too_large = fix_for(
            &refused(RDKafkaErrorCode::MessageSizeTooLarge),
            "orders.pay",
            &message,
        );
        assert!(
            too_large.contains("2000004 bytes")
                && too_large.contains("--entity-name orders.pay")
                && too_large.contains("max.message.bytes"),
            "{too_large}"
        );
        let denied = fix_for(
            &refused(RDKafkaErrorCode::TopicAuthorizationFailed),
            "orders.pay",
            &message,
        );
        assert_eq!(
            denied,
            "grant the engine's principal WRITE on topic orders.pay"
        );
        let missing = fix_for(
            &refused(RDKafkaErrorCode::UnknownTopicOrPartition),
            "orders.pay",
            &message,
        );
        assert!(missing.starts_with("create topic orders.pay"), "{missing}");
    }

    #[test]
    fn a_due_batch_carries_only_the_sagas_whose_state_it_still_holds() {
        let store = temp_store("carry");
        let state = |s: &str| s.as_bytes().to_vec();
        fn write<'a>(id: &'a str, bytes: Option<&'a [u8]>) -> crate::store::StateWrite<'a> {
            crate::store::StateWrite {
                saga_id: id,
                state: bytes,
                running: true,
                timers: &[],
            }
        }
        // In the store: `same` as batched, `moved` changed since, `gone` deleted, `dirty`
        // changed and not flushed yet.
        store
            .load_states(
                0,
                &[
                    write("same", Some(b"s1")),
                    write("moved", Some(b"m2")),
                    write("dirty", Some(b"d2")),
                ],
            )
            .unwrap();
        let members: Vec<(String, u64)> = [
            ("same", "s1"),
            ("moved", "m1"),
            ("gone", "g1"),
            ("dirty", "d2"),
        ]
        .iter()
        .map(|(id, s)| (id.to_string(), batches::fingerprint(&state(s))))
        .collect();
        let due = batches::key(1_000, 1, 1, 0);
        let later = batches::key(5_000, 1, 2, 0);
        store.put_batch(0, &due, &members).unwrap();
        store.put_batch(0, &later, &members).unwrap();
        let mut part = PartitionRelay {
            last_committed: 42,
            ..PartitionRelay::default()
        };
        let _ = part
            .dirty
            .insert("dirty".into(), Dirty::single(40, Some(state("d2"))));

        let metrics = Metrics::default();
        let deletes = carry_due_batches(&store, 0, &mut part, 2_000, &metrics).unwrap();

        assert_eq!(deletes, [due]);
        assert_eq!(
            metrics
                .changelog_batch_carries_total
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "only `same` is carried"
        );
        let mut dirty: Vec<_> = part.dirty.iter().collect();
        dirty.sort_by_key(|(k, _)| k.to_string());
        assert_eq!(
            dirty,
            [
                (&"dirty".to_string(), &Dirty::single(40, Some(state("d2")))),
                (&"same".to_string(), &Dirty::single(42, Some(state("s1")))),
            ]
        );
        assert_eq!(store.batches_due(0, 10_000).unwrap().len(), 2);
        store.forget_batch(0, &deletes[0]).unwrap();
        let left: Vec<String> = store
            .batches_due(0, 10_000)
            .unwrap()
            .into_iter()
            .map(|b| b.key)
            .collect();
        assert_eq!(left, [later]);
    }
}
