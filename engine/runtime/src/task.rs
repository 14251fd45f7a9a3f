//! One owned partition: turns its inputs into journal records.
//!
//! Decisions are applied to an in-memory (speculative) view at once, so a batch of inputs is
//! decided without waiting for the broker; the journal record of the batch is then produced with
//! the offset it must land at. Only when the broker confirms that offset is the record committed
//! to RocksDB and handed to the relay. Any surprise (another writer's record, a produce error)
//! throws the speculative view away and restores from the journal: the chain rule then says
//! which records count, and inputs are re-read from the committed positions.
//!
//! Besides sagas, a partition holds *parked* records (records for delayed delivery, signals
//! waiting for an await, the sagas awaiting an event) and a timer wheel. A due timer enters the
//! same path as an input record, so its effects are journaled exactly like a reply's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;

use sagaflow_avro::{
    BlockingCodec, Header, InputPosition, JournalKind, JournalRecord, Outbound, Parked, Reply,
    SagaState, StartSaga, StateEntry, Subject,
};
use sagaflow_core::{decide, Chain, ChainVerdict, Definitions, Input, JournalHeader, Outcome};
use tracing::{debug, info, info_span, warn};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::oversize::{JournalFailure, Oversize};
use crate::parked;
use crate::partitioner::partition_for;
use crate::relay::Relay;
use crate::restore::Restored;
use crate::store::{ChainMeta, Meta, RelayMark, StateWrite, Store};
use crate::topics::{InputKind, Topics};
use crate::wheel::{Target, Wheel};

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
    /// How long a signal nobody awaits yet is kept, unless it says otherwise.
    pub(crate) signal_ttl_ms: i64,
    /// How far ahead the timer wheel keeps timers in memory.
    pub(crate) timer_horizon_ms: i64,
    /// Most committed saga states a partition keeps decoded in memory.
    pub(crate) cache_sagas: usize,
    /// How early a delayed delivery is decided and journaled (the relay holds it until due).
    pub(crate) timer_lookahead_ms: i64,
    /// Which topics exist (delayed records must name one).
    pub(crate) targets: &'a crate::targets::Targets,
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
struct Cached<T> {
    state: T,
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
    /// Timer index entries that came due while this batch was open.
    fired: Vec<(i64, String)>,
    /// The input records decided in this batch (topic, offset).
    sources: Vec<(String, i64)>,
    /// The events decided, counted in the metrics once the record is written: a batch decided
    /// again after a resync is not counted twice.
    events: Vec<sagaflow_avro::EventType>,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    expected: i64,
    record: JournalRecord,
    running: Vec<bool>,
    /// Timer index entries of each state (parallel to `record.states`).
    timers: Vec<Vec<(i64, String)>>,
    fired: Vec<(i64, String)>,
    sources: Vec<(String, i64)>,
    events: Vec<sagaflow_avro::EventType>,
}

const TOO_LARGE: &str = "deciding this input makes a journal record larger than the broker's message.max.bytes, so it can never be applied; make the input smaller (large documents belong in a store, referenced by id), or raise message.max.bytes on the broker and the engine's producer (--kafka message.max.bytes=...)";
const TOO_LARGE_DROPPED: &str = "deciding this input makes a journal record larger than the broker's message.max.bytes, and so did this dead letter with the input's value, which is left out; the input is still at the topic, partition and offset in these headers";

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
    cache: HashMap<String, Cached<SagaState>>,
    /// Speculative parked records (`None`: deleted), ordered for prefix scans.
    parked: BTreeMap<String, Cached<Option<Parked>>>,
    wheel: Wheel,
    batch: Batch,
    inflight: VecDeque<InFlight>,
    /// Inputs whose journal records were refused as too large (kept across resyncs).
    pub(crate) oversize: Oversize,
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
            parked: BTreeMap::new(),
            wheel: Wheel::new(env.timer_horizon_ms),
            batch: Batch::default(),
            inflight: VecDeque::new(),
            oversize: Oversize::default(),
            next_offset: restored.journal_end,
            next_seq: 1,
        };
        // Saga states are read from RocksDB as inputs need them, not all decoded up front:
        // memory stays bounded by `state-cache-sagas`, however many sagas are running.
        let running = env.store.running_count(partition)?;
        task.wheel
            .load(env.store, partition, crate::processor::now_ms())?;
        info!(partition, epoch = task.epoch, sagas_running = running, status = ?task.status, "partition task ready");
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
        let (topic, offset) = (record.topic, record.offset);
        if self.status != TaskStatus::Active {
            return Ok(());
        }
        if self.positions.get(topic).is_some_and(|p| offset <= *p) {
            // Already applied (or dead-lettered) before a restart: G1.
            return Ok(());
        }
        if let Some(last) = self.positions.get(topic).filter(|last| offset > *last + 1) {
            // Offsets of an input topic are contiguous unless records were lost. tansu 0.6's
            // memory storage does this to a consumer resuming inside a batch; saying so here
            // turns a saga that waits forever into a log line.
            let skipped = offset - last - 1;
            warn!(
                topic,
                partition = self.partition,
                from = last + 1,
                to = offset - 1,
                skipped,
                "input offsets were never delivered"
            );
            env.metrics
                .input_offsets_skipped_total
                .fetch_add(skipped as u64, Ordering::Relaxed);
        }
        let _ = self.positions.insert(topic.to_string(), offset);
        self.batch.inputs += 1;
        self.batch.sources.push((topic.to_string(), offset));
        env.metrics.inputs_total.fetch_add(1, Ordering::Relaxed);
        match self.oversize.refusals(topic, offset) {
            0 => {}
            1 => {
                self.dead_letter(env, record, "too-large", TOO_LARGE);
                return Ok(());
            }
            _ => {
                // Even the dead letter with the payload was refused: send it without.
                let record = InputRecord {
                    payload: None,
                    ..record
                };
                self.dead_letter(env, record, "too-large", TOO_LARGE_DROPPED);
                return Ok(());
            }
        }
        match env.topics.kind(topic) {
            Some(InputKind::Start | InputKind::Reply) => self.handle_saga_input(env, now, record),
            Some(InputKind::Delay) => {
                let request = parked::delayed(topic, self.partition, &record, now).and_then(|d| {
                    let target = d.topic.clone().unwrap_or_default();
                    if env.targets.exists(&target) {
                        Ok(d)
                    } else {
                        Err(format!(
                            "the target topic {target} does not exist; create it first"
                        ))
                    }
                });
                match request {
                    Ok(delayed) => {
                        env.metrics
                            .delayed_scheduled_total
                            .fetch_add(1, Ordering::Relaxed);
                        let key = parked::delay_key(&delayed.id);
                        self.stage_parked(env, &key, Some(delayed))?;
                    }
                    Err(reason) => self.dead_letter(env, record, "invalid-delay", &reason),
                }
                Ok(())
            }
            Some(InputKind::Signal) => self.handle_signal(env, now, record),
            Some(InputKind::Correlation) => self.handle_correlation(env, now, record),
            None => {
                self.dead_letter(env, record, "unknown-topic", "not an engine input topic");
                Ok(())
            }
        }
    }

    /// Sends a record to the partition that owns `key` (it was produced with another
    /// partitioner); true if it had to.
    fn forward_if_foreign(
        &mut self,
        env: &TaskEnv<'_>,
        key: &str,
        record: &mut Option<InputRecord<'_>>,
    ) -> bool {
        if partition_for(key.as_bytes(), env.partitions) == self.partition {
            return false;
        }
        let Some(record) = record.take() else {
            return false;
        };
        env.metrics
            .forwarded_inputs_total
            .fetch_add(1, Ordering::Relaxed);
        let (topic, offset) = (record.topic, record.offset);
        let mut headers = record.headers;
        headers.push(Header {
            name: "sagaflow-forwarded-from".into(),
            value: format!("{topic}/{}/{offset}", self.partition).into_bytes(),
        });
        self.push_output(Outbound {
            id: format!("forward/{topic}/{}/{offset}", self.partition),
            topic: topic.to_string(),
            key: Some(key.as_bytes().to_vec()),
            value: record.payload.map(<[u8]>::to_vec),
            headers,
            not_before: None,
        });
        true
    }

    fn handle_saga_input(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        record: InputRecord<'_>,
    ) -> Result<()> {
        let input = match self.decode(env, record.topic, record.payload)? {
            Ok(input) => input,
            Err(reason) => {
                self.dead_letter(env, record, "undecodable", &reason);
                return Ok(());
            }
        };
        let saga_id = input.saga_id().to_string();
        if saga_id.starts_with(parked::RESERVED) {
            let reason = format!("saga ids starting with {:?} are reserved", parked::RESERVED);
            self.dead_letter(env, record, "invalid-input", &reason);
            return Ok(());
        }
        let mut record = Some(record);
        if self.forward_if_foreign(env, &saga_id, &mut record) {
            return Ok(());
        }
        self.run_saga(env, now, &input, record).map(|_| ())
    }

    /// Hands `signal` to the saga of `awaiter` on this partition; a signal the saga no longer
    /// awaits (a stale subscription, e.g. a SUBSCRIBE delivered twice) is matched again rather
    /// than lost.
    fn deliver_here(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        awaiter: sagaflow_avro::Awaiter,
        signal: sagaflow_avro::Signal,
    ) -> Result<()> {
        let correlation = signal.correlation.clone();
        let input = Input::Signal {
            saga_id: awaiter.saga_id.clone(),
            step: awaiter.step.clone(),
            signal: signal.clone(),
        };
        let outcome = self.run_saga(env, now, &input, None)?;
        if outcome != Outcome::Ignored(sagaflow_core::IgnoreReason::StaleSignal) {
            return Ok(());
        }
        if partition_for(correlation.as_bytes(), env.partitions) == self.partition {
            return self.rematch(env, now, signal);
        }
        self.send_signal(
            env,
            sagaflow_avro::CorrelationKind::Return,
            awaiter,
            &signal,
        )
    }

    /// Sends `signal` to another partition: delivered to a saga, or returned to the owner of
    /// its correlation value.
    fn send_signal(
        &mut self,
        env: &TaskEnv<'_>,
        kind: sagaflow_avro::CorrelationKind,
        awaiter: sagaflow_avro::Awaiter,
        signal: &sagaflow_avro::Signal,
    ) -> Result<()> {
        let bytes = env
            .codec
            .encode(Subject::Topic(&env.topics.signals), signal)?;
        let message = sagaflow_avro::Correlation {
            kind,
            event: signal.event.clone(),
            correlation: signal.correlation.clone(),
            saga_id: awaiter.saga_id,
            step: awaiter.step,
            signal: Some(bytes),
        };
        self.send_correlation(env, message, &signal.signal_id)
    }

    /// Matches a signal against the current awaiters (or buffers it), on the partition that
    /// owns its correlation value.
    fn rematch(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        signal: sagaflow_avro::Signal,
    ) -> Result<()> {
        let (event, correlation) = (signal.event.clone(), signal.correlation.clone());
        let await_key = parked::await_key(&event, &correlation);
        let current = self.parked(env, &await_key)?;
        let awaiters = current
            .as_ref()
            .map_or(&[][..], |p| p.sagas.as_slice())
            .to_vec();
        let matched =
            sagaflow_core::correlate::on_signal(&awaiters, signal, now, env.signal_ttl_ms);
        self.apply_match(env, now, &event, &correlation, current, matched)
    }

    /// Decides `input` for its saga and stages the result; `record` is the input as consumed,
    /// if it came from a topic (to dead-letter it when rejected). Returns what happened to it.
    fn run_saga(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        input: &Input,
        record: Option<InputRecord<'_>>,
    ) -> Result<Outcome> {
        let saga_id = input.saga_id().to_string();
        let current = self.state(env, &saga_id)?;
        let decision = decide(env.definitions, env.core_topics, current, input, now);
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
                match record {
                    Some(record) => self.dead_letter(env, record, rejection.code(), &reason),
                    None => {
                        warn!(saga_id = %saga_id, code = rejection.code(), %reason, "internal input rejected");
                        env.metrics.dead_letter(rejection.code());
                    }
                }
                return Ok(decision.outcome);
            }
        }
        let _span =
            info_span!("commit_decision", saga_id = %saga_id, partition = self.partition).entered();
        // Everything is encoded before anything is staged: a decision is staged whole or not
        // at all.
        let encoded = match encode_decision(env, &saga_id, &decision) {
            Ok(encoded) => encoded,
            Err(e) if e.is_outage() => return Err(e.into()),
            Err(e) => {
                let reason = format!("the decision on this input cannot be encoded: {e}; make the schema in the registry compatible with the engine's, then send the input again");
                let Some(record) = record else {
                    return Err(e.into());
                };
                self.dead_letter(env, record, "unencodable", &reason);
                return Ok(Outcome::Rejected(sagaflow_core::Rejection::InvalidInput(
                    reason,
                )));
            }
        };
        for output in encoded.outputs {
            self.push_output(output);
        }
        self.batch.events.extend(encoded.events);
        let (Some(state), Some(bytes)) = (decision.state, encoded.state) else {
            return Ok(decision.outcome);
        };
        let before: Vec<&str> = self
            .cache
            .get(&saga_id)
            .map(|c| c.state.timers.iter().map(|t| t.id.as_str()).collect())
            .unwrap_or_default();
        let new_timers = state
            .timers
            .iter()
            .filter(|t| !before.contains(&t.id.as_str()))
            .count();
        env.metrics
            .timers_scheduled_total
            .fetch_add(new_timers as u64, Ordering::Relaxed);
        for timer in &state.timers {
            self.wheel.offer(
                timer.due,
                Target::Saga(saga_id.clone(), timer.id.clone()).encode(),
            );
        }
        self.stage_entry(saga_id.clone(), Some(bytes));
        let _ = self.cache.insert(
            saga_id.clone(),
            Cached {
                state,
                seq: self.next_seq,
            },
        );
        for effect in decision.effects {
            self.route_effect(env, now, &saga_id, effect)?;
        }
        Ok(decision.outcome)
    }

    fn stage_entry(&mut self, key: String, bytes: Option<Vec<u8>>) {
        self.batch.bytes += bytes.as_ref().map_or(0, Vec::len) + key.len();
        let entry = StateEntry {
            saga_id: key.clone(),
            state: bytes,
        };
        match self.batch.index.get(&key) {
            Some(&i) => self.batch.states[i] = entry,
            None => {
                let _ = self.batch.index.insert(key, self.batch.states.len());
                self.batch.states.push(entry);
            }
        }
    }

    /// Stages a parked record (`None` deletes it).
    fn stage_parked(&mut self, env: &TaskEnv<'_>, key: &str, value: Option<Parked>) -> Result<()> {
        let bytes = match &value {
            Some(p) => Some(
                env.codec
                    .encode(Subject::TopicRecord(&env.topics.changelog), p)?,
            ),
            None => None,
        };
        if let Some(due) = value.as_ref().and_then(parked::due) {
            self.wheel
                .offer(due, Target::Parked(key.to_string()).encode());
        }
        self.stage_entry(key.to_string(), bytes);
        let _ = self.parked.insert(
            key.to_string(),
            Cached {
                state: value,
                seq: self.next_seq,
            },
        );
        Ok(())
    }

    fn parked(&mut self, env: &TaskEnv<'_>, key: &str) -> Result<Option<Parked>> {
        if let Some(c) = self.parked.get(key) {
            return Ok(c.state.clone());
        }
        match env.store.state(self.partition, key)? {
            Some(bytes) => Ok(Some(env.codec.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Parked records under `prefix`, in key order, speculative changes included.
    fn parked_with_prefix(
        &mut self,
        env: &TaskEnv<'_>,
        prefix: &str,
    ) -> Result<Vec<(String, Parked)>> {
        let mut found: BTreeMap<String, Option<Parked>> = BTreeMap::new();
        for (key, bytes) in env.store.states_with_prefix(self.partition, prefix)? {
            let _ = found.insert(key, Some(env.codec.decode(&bytes)?));
        }
        for (key, c) in self.parked.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            let _ = found.insert(key.clone(), c.state.clone());
        }
        Ok(found
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// Opens or closes an await subscription: here if this partition owns the correlation
    /// value, else through the correlations topic.
    fn route_effect(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        saga_id: &str,
        effect: sagaflow_core::Effect,
    ) -> Result<()> {
        let (kind, event, correlation, step) = match effect {
            sagaflow_core::Effect::Subscribe {
                event,
                correlation,
                step,
            } => (
                sagaflow_avro::CorrelationKind::Subscribe,
                event,
                correlation,
                step,
            ),
            sagaflow_core::Effect::Unsubscribe {
                event,
                correlation,
                step,
            } => (
                sagaflow_avro::CorrelationKind::Unsubscribe,
                event,
                correlation,
                step,
            ),
        };
        let message = sagaflow_avro::Correlation {
            kind,
            event,
            correlation,
            saga_id: saga_id.to_string(),
            step,
            signal: None,
        };
        if partition_for(message.correlation.as_bytes(), env.partitions) == self.partition {
            return self.correlate(env, now, message);
        }
        self.send_correlation(env, message, "")
    }

    /// Sends a correlation message; `signal_id` names the signal a DELIVER or RETURN carries.
    fn send_correlation(
        &mut self,
        env: &TaskEnv<'_>,
        message: sagaflow_avro::Correlation,
        signal_id: &str,
    ) -> Result<()> {
        use sagaflow_avro::CorrelationKind as K;
        let (id, key) = match message.kind {
            K::Subscribe => (
                format!("subscribe/{}/{}", message.saga_id, message.step),
                message.correlation.clone(),
            ),
            K::Unsubscribe => (
                format!("unsubscribe/{}/{}", message.saga_id, message.step),
                message.correlation.clone(),
            ),
            K::Deliver => (
                format!(
                    "deliver/{}/{}/{}/{}",
                    message.event, message.correlation, message.saga_id, signal_id
                ),
                message.saga_id.clone(),
            ),
            K::Return => (
                format!(
                    "return/{}/{}/{}/{}",
                    message.event, message.correlation, message.saga_id, signal_id
                ),
                message.correlation.clone(),
            ),
        };
        let value = env
            .codec
            .encode(Subject::Topic(&env.topics.correlations), &message)?;
        self.push_output(Outbound {
            id,
            topic: env.topics.correlations.clone(),
            key: Some(key.into_bytes()),
            value: Some(value),
            headers: Vec::new(),
            not_before: None,
        });
        Ok(())
    }

    /// Applies a correlation message on the partition that owns its correlation value (or, for
    /// a delivery, its saga).
    fn correlate(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        message: sagaflow_avro::Correlation,
    ) -> Result<()> {
        use sagaflow_avro::{Awaiter, CorrelationKind as K};
        let awaiter = Awaiter {
            saga_id: message.saga_id.clone(),
            step: message.step.clone(),
        };
        if matches!(message.kind, K::Deliver | K::Return) {
            let Some(bytes) = &message.signal else {
                return Ok(());
            };
            let signal: sagaflow_avro::Signal = env.codec.decode(bytes)?;
            if message.kind == K::Return {
                return self.rematch(env, now, signal);
            }
            return self.deliver_here(env, now, awaiter, signal);
        }
        let await_key = parked::await_key(&message.event, &message.correlation);
        let current = self.parked(env, &await_key)?;
        let awaiters = current.as_ref().map_or(&[][..], |p| p.sagas.as_slice());
        let matched = if message.kind == K::Subscribe {
            let prefix = parked::signal_prefix(&message.event, &message.correlation);
            let buffered = self.parked_with_prefix(env, &prefix)?;
            let mut signals = Vec::with_capacity(buffered.len());
            for (_, p) in &buffered {
                if let Some(bytes) = &p.value {
                    signals.push(env.codec.decode::<sagaflow_avro::Signal>(bytes)?);
                }
            }
            signals.sort_by_key(|s| s.sent_at);
            sagaflow_core::correlate::on_subscribe(awaiters, &signals, awaiter)
        } else {
            sagaflow_core::correlate::on_unsubscribe(awaiters, &awaiter)
        };
        self.apply_match(
            env,
            now,
            &message.event,
            &message.correlation,
            current,
            matched,
        )
    }

    fn apply_match(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        event: &str,
        correlation: &str,
        current: Option<Parked>,
        matched: sagaflow_core::correlate::Matched,
    ) -> Result<()> {
        let await_key = parked::await_key(event, correlation);
        let before = current
            .as_ref()
            .map(|p| p.sagas.clone())
            .unwrap_or_default();
        if before != matched.awaiters {
            let value = (!matched.awaiters.is_empty())
                .then(|| parked::awaiters(event, correlation, matched.awaiters.clone(), now));
            self.stage_parked(env, &await_key, value)?;
        }
        for id in &matched.consumed {
            self.stage_parked(env, &parked::signal_key(event, correlation, id), None)?;
        }
        if let Some((signal, expires)) = matched.buffer {
            env.metrics
                .signals_buffered_total
                .fetch_add(1, Ordering::Relaxed);
            let key = parked::signal_key(event, correlation, &signal.signal_id);
            let value = env
                .codec
                .encode(Subject::Topic(&env.topics.signals), &signal)?;
            self.stage_parked(
                env,
                &key,
                Some(parked::buffered(&signal, value, expires, now)),
            )?;
        }
        for (awaiter, signal) in matched.deliver {
            // Remembered past its delivery: a copy that arrives later is a duplicate, not a new
            // signal for the next saga that awaits the value.
            let until = now.saturating_add(signal.ttl_ms.unwrap_or(env.signal_ttl_ms).max(0));
            self.stage_parked(
                env,
                &parked::signal_key(event, correlation, &signal.signal_id),
                Some(parked::delivered_signal(&signal, until, now)),
            )?;
            if partition_for(awaiter.saga_id.as_bytes(), env.partitions) == self.partition {
                self.deliver_here(env, now, awaiter, signal)?;
            } else {
                self.send_signal(
                    env,
                    sagaflow_avro::CorrelationKind::Deliver,
                    awaiter,
                    &signal,
                )?;
            }
        }
        Ok(())
    }

    fn handle_signal(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        record: InputRecord<'_>,
    ) -> Result<()> {
        let Some((signal, record)) =
            self.decode_or_dead_letter::<sagaflow_avro::Signal>(env, record)?
        else {
            return Ok(());
        };
        // Checked here, where the signal can still be dead-lettered as it came: a bad payload
        // found at delivery would leave the saga waiting and the signal gone.
        let payload_ok = signal.payload_json.as_deref().is_none_or(|p| {
            serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| v.is_object())
        });
        if signal.event.is_empty()
            || signal.signal_id.is_empty()
            || signal.correlation.contains('\u{1f}')
            || !payload_ok
        {
            self.dead_letter(
                env,
                record,
                "invalid-input",
                "a signal needs an event, a signal_id, a correlation without U+001F, and a payload_json that is a JSON object (or null)",
            );
            return Ok(());
        }
        env.metrics
            .signals_received_total
            .fetch_add(1, Ordering::Relaxed);
        let mut record = Some(record);
        let correlation = signal.correlation.clone();
        if self.forward_if_foreign(env, &correlation, &mut record) {
            return Ok(());
        }
        let key = parked::signal_key(&signal.event, &correlation, &signal.signal_id);
        if self.parked(env, &key)?.is_some() {
            env.metrics.ignored("duplicate_signal");
            return Ok(());
        }
        self.rematch(env, now, signal)
    }

    /// Decodes an input record's value, or dead-letters the record (`None`); `Err` if the
    /// registry is out.
    fn decode_or_dead_letter<'r, T: sagaflow_avro::Contract>(
        &mut self,
        env: &TaskEnv<'_>,
        record: InputRecord<'r>,
    ) -> Result<Option<(T, InputRecord<'r>)>> {
        let decoded = match record.payload {
            None => Err("record has no value".to_string()),
            Some(bytes) => match env.codec.decode::<T>(bytes) {
                Ok(value) => Ok(value),
                Err(e) => Err(input_error(e)?),
            },
        };
        match decoded {
            Ok(value) => Ok(Some((value, record))),
            Err(reason) => {
                self.dead_letter(env, record, "undecodable", &reason);
                Ok(None)
            }
        }
    }

    fn handle_correlation(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        record: InputRecord<'_>,
    ) -> Result<()> {
        let Some((message, record)) =
            self.decode_or_dead_letter::<sagaflow_avro::Correlation>(env, record)?
        else {
            return Ok(());
        };
        let owner = if message.kind == sagaflow_avro::CorrelationKind::Deliver {
            message.saga_id.clone()
        } else {
            message.correlation.clone()
        };
        let mut record = Some(record);
        if self.forward_if_foreign(env, &owner, &mut record) {
            return Ok(());
        }
        self.correlate(env, now, message)
    }

    /// Fires the timers due at `now` (at most `max`), like inputs.
    pub(crate) fn fire_timers(&mut self, env: &TaskEnv<'_>, now: i64, max: usize) -> Result<usize> {
        if self.status != TaskStatus::Active {
            return Ok(0);
        }
        self.wheel.load(env.store, self.partition, now)?;
        // Delayed deliveries are decided ahead of time so that the journal round trip is done
        // when they come due; saga timers fire at their time, so no reply is cut short.
        let early = |target: &str| target.starts_with("P|__delay/");
        let due = self.wheel.take_due(now, env.timer_lookahead_ms, early, max);
        let count = due.len();
        for (at, encoded) in due {
            let changed = match Target::decode(&encoded) {
                Some(Target::Saga(saga_id, timer_id)) => {
                    let input = Input::Timer { saga_id, timer_id };
                    self.run_saga(env, now, &input, None)? == Outcome::Applied
                }
                Some(Target::Parked(key)) => {
                    self.fire_parked(env, now, env.timer_lookahead_ms, &key)?
                }
                None => false,
            };
            if changed {
                self.batch.inputs += 1;
                env.metrics
                    .timers_fired_total
                    .fetch_add(1, Ordering::Relaxed);
                env.metrics
                    .timer_lateness_ms_total
                    .fetch_add(u64::try_from(now - at).unwrap_or(0), Ordering::Relaxed);
            }
            self.batch.fired.push((at, encoded));
        }
        Ok(count)
    }

    /// A parked record's time came (or, for a delayed record, is `ahead` ms away): deliver a
    /// delayed record, or dead-letter a signal no saga claimed. Returns whether anything
    /// changed.
    fn fire_parked(&mut self, env: &TaskEnv<'_>, now: i64, ahead: i64, key: &str) -> Result<bool> {
        let Some(record) = self.parked(env, key)? else {
            return Ok(false);
        };
        let ready = match record.kind {
            sagaflow_avro::ParkedKind::Delayed => now.saturating_add(ahead),
            _ => now,
        };
        if parked::due(&record).is_none_or(|due| due > ready) {
            return Ok(false);
        }
        match record.kind {
            sagaflow_avro::ParkedKind::Delayed => {
                env.metrics
                    .delayed_delivered_total
                    .fetch_add(1, Ordering::Relaxed);
                self.push_output(parked::delivery(&record));
            }
            sagaflow_avro::ParkedKind::Signal if parked::is_delivered_signal(&record) => {}
            sagaflow_avro::ParkedKind::Signal => {
                env.metrics
                    .signals_expired_total
                    .fetch_add(1, Ordering::Relaxed);
                env.metrics.dead_letter("signal-expired");
                self.push_output(parked::expired_signal(
                    &record,
                    &env.topics.dlq,
                    self.partition,
                ));
            }
            sagaflow_avro::ParkedKind::Await => return Ok(false),
        }
        self.stage_parked(env, key, None)?;
        Ok(true)
    }

    /// Decodes a start or a reply: `Err` if the registry is out (the partition waits for it),
    /// `Ok(Err(reason))` if the record itself can never be decoded (it is dead-lettered).
    fn decode(
        &self,
        env: &TaskEnv<'_>,
        topic: &str,
        payload: Option<&[u8]>,
    ) -> Result<Result<Input, String>> {
        let Some(bytes) = payload else {
            return Ok(Err("record has no value".into()));
        };
        let decoded = if topic == env.topics.starts {
            env.codec.decode::<StartSaga>(bytes).map(Input::Start)
        } else {
            env.codec.decode::<Reply>(bytes).map(Input::Reply)
        };
        match decoded {
            Ok(input) => Ok(Ok(input)),
            Err(e) => input_error(e).map(Err),
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
            not_before: None,
        });
    }

    /// Whether the batch should be written now.
    pub(crate) fn batch_full(&mut self, max_inputs: usize, max_bytes: usize) -> bool {
        self.batch.inputs >= max_inputs
            || self.batch.bytes >= max_bytes
            || (self.batch.inputs > 0 && self.oversize.splitting(&self.positions))
    }

    /// Turns the current batch into a journal record, if it has anything.
    pub(crate) fn flush(&mut self, env: &TaskEnv<'_>) -> Result<Option<Produce>> {
        if self.status != TaskStatus::Active {
            return Ok(None);
        }
        if self.batch.inputs == 0 {
            // Only stale timer entries came due: with nothing in flight the store matches the
            // speculative view, so they can be forgotten now; otherwise they wait for a record.
            if !self.batch.fired.is_empty() && self.inflight.is_empty() {
                let fired = std::mem::take(&mut self.batch.fired);
                env.store.forget_timers(self.partition, &fired)?;
            }
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
        let timers = batch
            .states
            .iter()
            .map(|e| self.timer_entries(&e.saga_id))
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
        let flight = InFlight {
            // Set by `produce`.
            seq: 0,
            expected: 0,
            record,
            running,
            timers,
            fired: batch.fired,
            sources: batch.sources,
            events: batch.events,
        };
        self.produce(env, flight).map(Some)
    }

    /// On a clean stop, once the relay has caught up: an empty record that tells the next
    /// owner that everything before it is delivered and in the changelog, so that it re-sends
    /// nothing (see `restore::Replay::relayed_hint`).
    pub(crate) fn handover(&mut self, env: &TaskEnv<'_>) -> Result<Option<Produce>> {
        let caught_up = self.meta.relayed.chain.last_valid == self.chain.last_valid;
        if self.status != TaskStatus::Active
            || self.batch.inputs > 0
            || !self.inflight.is_empty()
            || !caught_up
        {
            return Ok(None);
        }
        let record = JournalRecord {
            kind: JournalKind::Decisions,
            epoch: self.epoch,
            writer: env.writer.to_string(),
            base: self.next_base,
            positions: positions_vec(&self.positions),
            relayed_through: self.meta.relayed.chain.last_valid,
            states: Vec::new(),
            outputs: Vec::new(),
        };
        let flight = InFlight {
            seq: 0,
            expected: 0,
            record,
            running: Vec::new(),
            timers: Vec::new(),
            fired: Vec::new(),
            sources: Vec::new(),
            events: Vec::new(),
        };
        self.produce(env, flight).map(Some)
    }

    /// Timer index entries of the speculative state under `key`.
    fn timer_entries(&self, key: &str) -> Vec<(i64, String)> {
        if let Some(c) = self.parked.get(key) {
            return c
                .state
                .as_ref()
                .and_then(parked::due)
                .map(|due| (due, Target::Parked(key.to_string()).encode()))
                .into_iter()
                .collect();
        }
        self.cache.get(key).map_or_else(Vec::new, |c| {
            c.state
                .timers
                .iter()
                .map(|t| (t.due, Target::Saga(key.to_string(), t.id.clone()).encode()))
                .collect()
        })
    }

    fn produce(&mut self, env: &TaskEnv<'_>, mut flight: InFlight) -> Result<Produce> {
        let bytes = env
            .codec
            .encode(Subject::Topic(&env.topics.journal), &flight.record)?;
        flight.seq = self.next_seq;
        self.next_seq += 1;
        flight.expected = self.next_offset;
        self.next_offset += 1;
        self.next_base = flight.expected;
        let seq = flight.seq;
        self.inflight.push_back(flight);
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
        result: std::result::Result<i64, JournalFailure>,
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
            Err(e) if e.too_large => {
                warn!(partition = self.partition, error = %e.message, inputs = flight.sources.len(), "journal record refused as too large; deciding its inputs one record each, and dead-lettering any whose own record is too large");
                self.oversize.refused(&flight.sources);
                self.status = TaskStatus::NeedsResync;
                return Ok(());
            }
            Err(e) => {
                warn!(partition = self.partition, error = %e.message, "journal write failed; resyncing");
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
        self.oversize.settle(&self.meta.positions);
        for event in &flight.events {
            count_event(env.metrics, *event);
        }
        let writes: Vec<StateWrite<'_>> = record
            .states
            .iter()
            .zip(&flight.running)
            .zip(&flight.timers)
            .map(|((e, running), timers)| StateWrite {
                saga_id: &e.saga_id,
                state: e.state.as_deref(),
                running: *running,
                timers,
            })
            .collect();
        sagaflow_failpoints::hit(sagaflow_failpoints::JOURNAL_ACKED);
        env.store
            .apply(self.partition, offset, &writes, &flight.fired, &self.meta)?;
        for (due, target) in flight.timers.into_iter().flatten() {
            self.wheel.offer(due, target);
        }
        self.parked.retain(|_, c| c.seq != flight.seq);
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
        self.bound_cache(env.cache_sagas);
        let mark = RelayMark {
            chain: self.meta.chain.clone(),
            positions: self.meta.positions.clone(),
        };
        let states = record
            .states
            .into_iter()
            .map(|e| (e.saga_id, (offset, e.state)));
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

    /// Evicts committed states once the cache holds more than `capacity`, a tenth below it at
    /// once so that the scan is rare. Speculative states (not yet journaled) always stay.
    fn bound_cache(&mut self, capacity: usize) {
        if self.cache.len() <= capacity {
            return;
        }
        let mut excess = self.cache.len() - capacity * 9 / 10;
        self.cache.retain(|_, c| {
            if excess > 0 && c.seq == 0 {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }

    /// The earliest timer in memory.
    pub(crate) fn next_timer(&self) -> Option<i64> {
        self.wheel.next_due()
    }

    /// Timers this task's wheel holds in memory.
    pub(crate) fn timers_in_memory(&self) -> usize {
        self.wheel.len()
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

/// Sorts a codec error met on an input: a registry outage stops the partition until the
/// registry answers again (`Err`); any other error is the input's own (`Ok(reason)`), and the
/// input is dead-lettered with it.
fn input_error(e: sagaflow_avro::Error) -> Result<String> {
    if e.is_outage() {
        Err(e.into())
    } else {
        Ok(e.to_string())
    }
}

/// A decision's outputs and state, encoded.
struct Encoded {
    outputs: Vec<Outbound>,
    events: Vec<sagaflow_avro::EventType>,
    state: Option<Vec<u8>>,
}

fn encode_decision(
    env: &TaskEnv<'_>,
    saga_id: &str,
    decision: &sagaflow_core::Decision,
) -> std::result::Result<Encoded, sagaflow_avro::Error> {
    let mut outputs = Vec::with_capacity(decision.commands.len() + decision.events.len());
    for (topic, command) in &decision.commands {
        outputs.push(Outbound {
            id: command.message_id.clone(),
            topic: topic.clone(),
            key: Some(saga_id.as_bytes().to_vec()),
            value: Some(env.codec.encode(Subject::Topic(topic), command)?),
            headers: Vec::new(),
            not_before: None,
        });
    }
    let mut events = Vec::with_capacity(decision.events.len());
    for event in &decision.events {
        events.push(event.event_type);
        outputs.push(Outbound {
            id: event.event_id.clone(),
            topic: env.topics.events.clone(),
            key: Some(saga_id.as_bytes().to_vec()),
            value: Some(
                env.codec
                    .encode(Subject::Topic(&env.topics.events), event)?,
            ),
            headers: Vec::new(),
            not_before: None,
        });
    }
    let state = decision
        .state
        .as_ref()
        .map(|state| {
            env.codec
                .encode(Subject::TopicRecord(&env.topics.changelog), state)
        })
        .transpose()?;
    Ok(Encoded {
        outputs,
        events,
        state,
    })
}
