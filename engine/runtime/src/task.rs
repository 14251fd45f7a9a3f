//! One owned partition: turns its inputs into journal records.
//!
//! Decisions are applied to an in-memory (speculative) view at once, so a batch of inputs is
//! decided without waiting for the broker; the journal record of the batch is then produced with
//! the offset it must land at. Only when the broker confirms that offset is the record committed
//! to RocksDB and handed to the relay. Any surprise (another writer's record, a produce error)
//! throws the speculative view away and restores from the journal: the chain rule then says
//! which records count, and inputs are re-read from the committed positions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;

use sagaflow_avro::{
    BlockingCodec, Header, InputPosition, JournalKind, JournalRecord, Outbound, Reply, SagaState,
    StartSaga, StateEntry, Subject,
};
use sagaflow_core::{decide, Chain, ChainVerdict, Definitions, Input, JournalHeader, Outcome};
use tracing::{debug, info, info_span, warn};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::partitioner::partition_for;
use crate::relay::Relay;
use crate::restore::Restored;
use crate::store::{ChainMeta, Meta, RelayMark, StateWrite, Store};
use crate::topics::Topics;

/// Shared, read-only things a task needs.
pub(crate) struct TaskEnv<'a> {
    pub(crate) store: &'a Store,
    pub(crate) codec: &'a BlockingCodec,
    pub(crate) topics: &'a Topics,
    pub(crate) core_topics: &'a sagaflow_core::Topics,
    pub(crate) definitions: &'a dyn Definitions,
    pub(crate) metrics: &'a Metrics,
    pub(crate) partitions: i32,
    pub(crate) writer: &'a str,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    /// Processing inputs (its claim may still be in flight).
    Active,
    /// Something unexpected happened: restore before going on.
    NeedsResync,
    /// A newer owner claimed the partition: wait to be revoked.
    Fenced,
}

#[derive(Debug)]
struct Cached {
    state: SagaState,
    /// Sequence of the journal record that last changed it; 0 if committed.
    seq: u64,
}

#[derive(Debug, Default)]
struct Batch {
    states: Vec<StateEntry>,
    index: HashMap<String, usize>,
    outputs: Vec<Outbound>,
    inputs: usize,
    bytes: usize,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    expected: i64,
    record: JournalRecord,
    running: Vec<bool>,
}

/// One input record as consumed.
#[derive(Debug)]
pub(crate) struct InputRecord<'a> {
    pub(crate) topic: &'a str,
    pub(crate) offset: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) payload: Option<&'a [u8]>,
    pub(crate) headers: Vec<Header>,
}

/// A record the task produced and waits on.
#[derive(Debug)]
pub(crate) struct Produce {
    pub(crate) seq: u64,
    pub(crate) generation: u64,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) partition: i32,
    pub(crate) status: TaskStatus,
    pub(crate) generation: u64,
    epoch: i64,
    chain: Chain,
    meta: Meta,
    positions: BTreeMap<String, i64>,
    cache: HashMap<String, Cached>,
    batch: Batch,
    inflight: VecDeque<InFlight>,
    next_offset: i64,
    next_base: i64,
    next_seq: u64,
}

impl Task {
    /// A task over a freshly restored partition; it claims the journal first.
    /// A task over a freshly restored (and claimed) partition.
    pub(crate) fn new(
        env: &TaskEnv<'_>,
        partition: i32,
        generation: u64,
        restored: &Restored,
    ) -> Result<Self> {
        let meta = restored.meta.clone();
        let chain = Chain::from(&meta.chain);
        let mut task = Self {
            partition,
            status: if restored.fenced {
                TaskStatus::Fenced
            } else {
                TaskStatus::Active
            },
            generation,
            epoch: chain.epoch,
            positions: meta.positions.clone(),
            next_base: chain.last_valid,
            chain,
            meta,
            cache: HashMap::new(),
            batch: Batch::default(),
            inflight: VecDeque::new(),
            next_offset: restored.journal_end,
            next_seq: 1,
        };
        for (saga_id, bytes) in env.store.running(partition)? {
            let state: SagaState = env.codec.decode(&bytes)?;
            let _ = task.cache.insert(saga_id, Cached { state, seq: 0 });
        }
        info!(partition, epoch = task.epoch, sagas_in_flight = task.cache.len(), status = ?task.status, "partition task ready");
        Ok(task)
    }

    /// The epoch this task writes with.
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Input positions to seek to (next offset to read per input topic).
    pub(crate) fn seek_positions(&self) -> Vec<(String, i64)> {
        self.positions
            .iter()
            .map(|(topic, offset)| (topic.clone(), offset + 1))
            .collect()
    }

    /// Handles one input record.
    pub(crate) fn handle(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        record: InputRecord<'_>,
    ) -> Result<()> {
        // The record stays whole so it can be dead-lettered as it came.
        let (topic, offset, payload) = (record.topic, record.offset, record.payload);
        if self.status != TaskStatus::Active {
            return Ok(());
        }
        if self.positions.get(topic).is_some_and(|p| offset <= *p) {
            // Already applied (or dead-lettered) before a restart: G1.
            return Ok(());
        }
        let _ = self.positions.insert(topic.to_string(), offset);
        self.batch.inputs += 1;
        env.metrics.inputs_total.fetch_add(1, Ordering::Relaxed);
        let input = match self.decode(env, topic, payload) {
            Ok(input) => input,
            Err(reason) => {
                self.dead_letter(env, record, "undecodable", &reason);
                return Ok(());
            }
        };
        let saga_id = input.saga_id().to_string();
        let home = partition_for(saga_id.as_bytes(), env.partitions);
        if home != self.partition {
            // Produced with another partitioner: send it where its saga lives.
            env.metrics
                .forwarded_inputs_total
                .fetch_add(1, Ordering::Relaxed);
            let mut headers = record.headers;
            headers.push(Header {
                name: "sagaflow-forwarded-from".into(),
                value: format!("{topic}/{}/{offset}", self.partition).into_bytes(),
            });
            self.push_output(Outbound {
                id: format!("forward/{topic}/{}/{offset}", self.partition),
                topic: topic.to_string(),
                key: Some(saga_id.into_bytes()),
                value: payload.map(<[u8]>::to_vec),
                headers,
            });
            return Ok(());
        }
        let current = self.state(env, &saga_id)?;
        let decision = decide(env.definitions, env.core_topics, current, &input, now);
        match &decision.outcome {
            Outcome::Applied => {
                env.metrics.decisions_total.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Ignored(reason) => {
                debug!(saga_id = %saga_id, reason = reason.as_str(), "input ignored");
                env.metrics.ignored(reason.as_str());
            }
            Outcome::Rejected(rejection) => {
                let reason = rejection.to_string();
                self.dead_letter(env, record, rejection.code(), &reason);
                return Ok(());
            }
        }
        let _span =
            info_span!("commit_decision", saga_id = %saga_id, partition = self.partition).entered();
        for (topic, command) in &decision.commands {
            let value = env.codec.encode(Subject::Topic(topic), command)?;
            self.push_output(Outbound {
                id: command.message_id.clone(),
                topic: topic.clone(),
                key: Some(saga_id.clone().into_bytes()),
                value: Some(value),
                headers: Vec::new(),
            });
        }
        for event in &decision.events {
            let value = env
                .codec
                .encode(Subject::Topic(&env.topics.events), event)?;
            count_event(env.metrics, event.event_type);
            self.push_output(Outbound {
                id: event.event_id.clone(),
                topic: env.topics.events.clone(),
                key: Some(saga_id.clone().into_bytes()),
                value: Some(value),
                headers: Vec::new(),
            });
        }
        if let Some(state) = decision.state {
            let bytes = env
                .codec
                .encode(Subject::TopicRecord(&env.topics.changelog), &state)?;
            self.batch.bytes += bytes.len();
            let entry = StateEntry {
                saga_id: saga_id.clone(),
                state: Some(bytes),
            };
            match self.batch.index.get(&saga_id) {
                Some(&i) => self.batch.states[i] = entry,
                None => {
                    let _ = self
                        .batch
                        .index
                        .insert(saga_id.clone(), self.batch.states.len());
                    self.batch.states.push(entry);
                }
            }
            let _ = self.cache.insert(
                saga_id,
                Cached {
                    state,
                    seq: self.next_seq,
                },
            );
        }
        Ok(())
    }

    fn decode(
        &self,
        env: &TaskEnv<'_>,
        topic: &str,
        payload: Option<&[u8]>,
    ) -> Result<Input, String> {
        let Some(bytes) = payload else {
            return Err("record has no value".into());
        };
        if topic == env.topics.starts {
            env.codec
                .decode::<StartSaga>(bytes)
                .map(Input::Start)
                .map_err(|e| e.to_string())
        } else {
            env.codec
                .decode::<Reply>(bytes)
                .map(Input::Reply)
                .map_err(|e| e.to_string())
        }
    }

    fn state(&mut self, env: &TaskEnv<'_>, saga_id: &str) -> Result<Option<&SagaState>> {
        if !self.cache.contains_key(saga_id) {
            let Some(bytes) = env.store.state(self.partition, saga_id)? else {
                return Ok(None);
            };
            let state: SagaState = env.codec.decode(&bytes)?;
            let _ = self
                .cache
                .insert(saga_id.to_string(), Cached { state, seq: 0 });
        }
        Ok(self.cache.get(saga_id).map(|c| &c.state))
    }

    fn push_output(&mut self, message: Outbound) {
        self.batch.bytes += message.value.as_ref().map_or(0, Vec::len) + message.id.len() + 64;
        self.batch.outputs.push(message);
    }

    fn dead_letter(
        &mut self,
        env: &TaskEnv<'_>,
        input: InputRecord<'_>,
        code: &'static str,
        reason: &str,
    ) {
        let InputRecord {
            topic,
            offset,
            key,
            payload,
            mut headers,
        } = input;
        warn!(
            topic,
            partition = self.partition,
            offset,
            code,
            reason,
            "input dead-lettered"
        );
        env.metrics.dead_letter(code);
        for (name, value) in [
            ("sagaflow-dlq-reason", code.to_string()),
            ("sagaflow-dlq-detail", reason.to_string()),
            ("sagaflow-dlq-topic", topic.to_string()),
            ("sagaflow-dlq-partition", self.partition.to_string()),
            ("sagaflow-dlq-offset", offset.to_string()),
        ] {
            headers.push(Header {
                name: name.into(),
                value: value.into_bytes(),
            });
        }
        self.push_output(Outbound {
            id: format!("dlq/{topic}/{}/{offset}", self.partition),
            topic: env.topics.dlq.clone(),
            key: key.map(<[u8]>::to_vec),
            value: payload.map(<[u8]>::to_vec),
            headers,
        });
    }

    /// Whether the batch should be written now.
    pub(crate) fn batch_full(&self, max_inputs: usize, max_bytes: usize) -> bool {
        self.batch.inputs >= max_inputs || self.batch.bytes >= max_bytes
    }

    /// Turns the current batch into a journal record, if it has anything.
    pub(crate) fn flush(&mut self, env: &TaskEnv<'_>) -> Result<Option<Produce>> {
        if self.batch.inputs == 0 || self.status != TaskStatus::Active {
            return Ok(None);
        }
        let batch = std::mem::take(&mut self.batch);
        let running = batch
            .states
            .iter()
            .map(|e| {
                self.cache
                    .get(&e.saga_id)
                    .is_some_and(|c| !c.state.status.is_terminal())
            })
            .collect();
        let record = JournalRecord {
            kind: JournalKind::Decisions,
            epoch: self.epoch,
            writer: env.writer.to_string(),
            base: self.next_base,
            positions: positions_vec(&self.positions),
            relayed_through: self.meta.relayed.chain.last_valid,
            states: batch.states,
            outputs: batch.outputs,
        };
        self.produce(env, record, running).map(Some)
    }

    fn produce(
        &mut self,
        env: &TaskEnv<'_>,
        record: JournalRecord,
        running: Vec<bool>,
    ) -> Result<Produce> {
        let bytes = env
            .codec
            .encode(Subject::Topic(&env.topics.journal), &record)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let expected = self.next_offset;
        self.next_offset += 1;
        self.next_base = expected;
        self.inflight.push_back(InFlight {
            seq,
            expected,
            record,
            running,
        });
        Ok(Produce {
            seq,
            generation: self.generation,
            bytes,
        })
    }

    /// Handles the broker's answer for journal record `seq`.
    pub(crate) fn acked(
        &mut self,
        env: &TaskEnv<'_>,
        relay: &mut Relay,
        seq: u64,
        result: std::result::Result<i64, String>,
    ) -> Result<()> {
        let Some(front) = self.inflight.front() else {
            return Ok(());
        };
        if front.seq != seq {
            warn!(
                partition = self.partition,
                seq,
                expected = front.seq,
                "journal acknowledgements out of order; resyncing"
            );
            self.status = TaskStatus::NeedsResync;
            return Ok(());
        }
        let flight = self.inflight.pop_front().expect("front exists");
        let offset = match result {
            Ok(offset) if offset == flight.expected => offset,
            Ok(offset) => {
                env.metrics
                    .journal_conflicts_total
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    partition = self.partition,
                    expected = flight.expected,
                    landed = offset,
                    "another writer appended to the journal; resyncing"
                );
                self.status = TaskStatus::NeedsResync;
                return Ok(());
            }
            Err(e) => {
                warn!(partition = self.partition, error = %e, "journal write failed; resyncing");
                self.status = TaskStatus::NeedsResync;
                return Ok(());
            }
        };
        let record = flight.record;
        let verdict = self.chain.apply(
            offset,
            JournalHeader {
                kind: record.kind,
                epoch: record.epoch,
                writer: &record.writer,
                base: record.base,
            },
        );
        if verdict != ChainVerdict::Valid {
            warn!(
                partition = self.partition,
                offset,
                ?verdict,
                "own journal record does not count; resyncing"
            );
            self.status = TaskStatus::NeedsResync;
            return Ok(());
        }
        self.meta.chain = ChainMeta::from(&self.chain);
        for p in &record.positions {
            let _ = self.meta.positions.insert(p.topic.clone(), p.offset);
        }
        let writes: Vec<StateWrite<'_>> = record
            .states
            .iter()
            .zip(&flight.running)
            .map(|(e, running)| StateWrite {
                saga_id: &e.saga_id,
                state: e.state.as_deref(),
                running: *running,
            })
            .collect();
        env.store
            .apply(self.partition, offset, &writes, &self.meta)?;
        env.metrics
            .journal_records_total
            .fetch_add(1, Ordering::Relaxed);
        for entry in &record.states {
            let evict = self
                .cache
                .get(&entry.saga_id)
                .is_some_and(|c| c.seq == flight.seq && c.state.status.is_terminal());
            if evict {
                let _ = self.cache.remove(&entry.saga_id);
            } else if let Some(c) = self.cache.get_mut(&entry.saga_id) {
                if c.seq == flight.seq {
                    c.seq = 0;
                }
            }
        }
        let mark = RelayMark {
            chain: self.meta.chain.clone(),
            positions: self.meta.positions.clone(),
        };
        let states = record.states.into_iter().map(|e| (e.saga_id, e.state));
        relay.committed(
            self.partition,
            offset,
            record.outputs,
            states,
            Some(mark),
            false,
        );
        Ok(())
    }

    /// Whether no journal record is waiting for the broker.
    pub(crate) fn idle(&self) -> bool {
        self.inflight.is_empty() || self.status != TaskStatus::Active
    }

    /// Persists a relay watermark advance.
    pub(crate) fn relayed(&mut self, env: &TaskEnv<'_>, mark: RelayMark) -> Result<()> {
        self.meta.relayed = mark;
        env.store.set_relayed(self.partition, &self.meta)
    }
}

/// Hands a restore's undelivered outputs and changed states to the relay.
pub(crate) fn resume_relay(relay: &mut Relay, partition: i32, restored: Restored) {
    let meta = restored.meta;
    relay.open(partition, meta.relayed.clone());
    let last = meta.chain.last_valid;
    let mark = RelayMark {
        chain: meta.chain.clone(),
        positions: meta.positions.clone(),
    };
    let mut dirty = Some(restored.dirty);
    let mut marked = false;
    for (offset, outputs) in restored.unrelayed {
        let is_last = offset == last;
        let states = if is_last { dirty.take() } else { None };
        relay.committed(
            partition,
            offset,
            outputs,
            states.into_iter().flatten(),
            is_last.then(|| mark.clone()),
            true,
        );
        marked |= is_last;
    }
    if !marked && last > meta.relayed.chain.last_valid {
        relay.committed(
            partition,
            last,
            Vec::new(),
            dirty.into_iter().flatten(),
            Some(mark),
            true,
        );
    }
}

fn positions_vec(positions: &BTreeMap<String, i64>) -> Vec<InputPosition> {
    positions
        .iter()
        .map(|(topic, offset)| InputPosition {
            topic: topic.clone(),
            offset: *offset,
        })
        .collect()
}

fn count_event(metrics: &Metrics, event: sagaflow_avro::EventType) {
    use sagaflow_avro::EventType as E;
    let counter = match event {
        E::SagaStarted => &metrics.sagas_started_total,
        E::SagaCompleted => &metrics.sagas_completed_total,
        E::SagaCompensated => &metrics.sagas_compensated_total,
        E::SagaFailed => &metrics.sagas_failed_total,
        _ => return,
    };
    let _ = counter.fetch_add(1, Ordering::Relaxed);
}
