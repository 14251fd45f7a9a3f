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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;

use sagaflow_avro::{
    AdminCommand, BlockingCodec, Header, InputPosition, JournalKind, JournalRecord, Outbound,
    Parked, Reply, SagaState, StartSaga, StateEntry, Subject,
};
use sagaflow_core::{decide, Chain, ChainVerdict, Definitions, Input, JournalHeader, Outcome};
use sagaflow_kafka::trace;
use tracing::{debug, info, info_span, warn};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::oversize::{JournalFailure, Oversize};
use crate::parked;
use crate::partitioner::partition_for;
use crate::relay::{Dirty, Relay};
use crate::restore::Restored;
use crate::spans::{InputRef, Traced};
use crate::store::{ChainMeta, Meta, RelayMark, StateWrite, Store};
use crate::topics::{InputKind, Topics};
use crate::wheel::{Target, Wheel};

mod correlation;
mod dispatch;
mod journal;
mod parking;

pub(crate) use journal::{resume_relay, Acked, Produce};
use journal::{Batch, InFlight};

/// Shared, read-only things a task needs.
pub(crate) struct TaskEnv<'a> {
    pub(crate) store: &'a Store,
    pub(crate) codec: &'a BlockingCodec,
    pub(crate) topics: &'a Topics,
    pub(crate) settings: &'a sagaflow_core::Settings,
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
    /// Which participants are paused, and their limits.
    pub(crate) controls: &'a crate::control::Controls,
    /// Whether the changelog may hold batches of states (`batches.rs`).
    pub(crate) changelog_batches: bool,
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

#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) partition: i32,
    pub(crate) status: TaskStatus,
    pub(crate) generation: u64,
    epoch: i64,
    chain: Chain,
    meta: Meta,
    positions: BTreeMap<String, i64>,
    /// Saga states; `None`: deleted by a record still in flight (its retention is over).
    cache: HashMap<String, Cached<Option<SagaState>>>,
    /// Speculative parked records (`None`: deleted), ordered for prefix scans.
    parked: BTreeMap<String, Cached<Option<Parked>>>,
    /// Commands held per command topic, speculative changes included.
    held: BTreeMap<String, usize>,
    /// Held commands whose release this engine cannot decide (their saga's definition is
    /// missing here): skipped until the partition restores, when a new task tries again.
    undecidable_held: BTreeSet<String>,
    /// Commands in flight per command topic with a limit, speculative changes included.
    in_flight: BTreeMap<String, usize>,
    /// Sagas with commands in flight to a topic with a limit (`__sent/` records).
    sent_sagas: usize,
    /// Rate limits' token buckets per command topic: not persisted, so a new owner starts with
    /// a full second's worth; a restore of the same owner keeps them (see `resync_tasks`).
    pub(crate) buckets: HashMap<String, crate::control::Bucket>,
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
        let (in_flight, sent_sagas) = dispatch::load_sent(env, partition)?;
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
            held: env.store.count_states_with_prefix(
                partition,
                parked::HELD,
                parked::held_topic,
            )?,
            undecidable_held: BTreeSet::new(),
            in_flight,
            sent_sagas,
            buckets: HashMap::new(),
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
            .load(env.store, partition, sagaflow_avro::now_ms())?;
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
            Some(InputKind::Start | InputKind::Reply | InputKind::Admin) => {
                self.handle_saga_input(env, now, record)
            }
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
                        self.stage_parked(&key, Some(delayed))?;
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

    /// Decides `input` for its saga and stages the result; `record` is the input as consumed,
    /// if it came from a topic (to dead-letter it when rejected). Returns what happened to it.
    fn run_saga(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        input: &Input,
        record: Option<InputRecord<'_>>,
    ) -> Result<Outcome> {
        let from = record.as_ref().map(|r| InputRef {
            topic: r.topic,
            partition: self.partition,
            offset: r.offset,
            waited: matches!(
                env.topics.kind(r.topic),
                Some(InputKind::Start | InputKind::Reply)
            ),
        });
        let deciding = std::time::Instant::now();
        let deciding_at = std::time::SystemTime::now();
        let outcome = self.decide_and_stage(env, now, input, record);
        env.metrics.hops.decision.observe(deciding.elapsed());
        if matches!(outcome, Ok(Outcome::Applied)) {
            let end = std::time::SystemTime::now();
            if let Some(traced) =
                env.metrics
                    .spans
                    .decision(input.saga_id(), from, deciding_at, end)
            {
                self.batch.traced.push(traced);
            }
        }
        outcome
    }

    /// [`Task::run_saga`], untimed.
    fn decide_and_stage(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        input: &Input,
        record: Option<InputRecord<'_>>,
    ) -> Result<Outcome> {
        let saga_id = input.saga_id().to_string();
        let current = self.state(env, &saga_id)?;
        let decision = decide(env.definitions, env.settings, current, input, now);
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
            info_span!("commit_decision", saga_id = %saga_id, partition = self.partition, trace_id = %trace::saga_trace_id(&env.topics.group, &saga_id)).entered();
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
        // Commands come first among the outputs, in the decision's order; they are sent or held
        // once the new state is staged, which may free room under a participant's limit.
        let mut outputs = encoded.outputs.into_iter();
        let commands: Vec<Outbound> = outputs.by_ref().take(decision.commands.len()).collect();
        for output in outputs {
            self.push_output(output);
        }
        self.batch.events.extend(encoded.events);
        if decision.forget {
            self.stage_entry(saga_id.clone(), None);
            let _ = self.cache.insert(
                saga_id.clone(),
                Cached {
                    state: None,
                    seq: self.next_seq,
                },
            );
            env.metrics
                .finished_sagas_deleted_total
                .fetch_add(1, Ordering::Relaxed);
            self.settle_sent(env, &saga_id)?;
            // A deleted saga sends nothing; should a decision ever do both, nothing is lost.
            for output in commands {
                self.push_output(output);
            }
            return Ok(decision.outcome);
        }
        let (Some(state), Some(bytes)) = (decision.state, encoded.state) else {
            for output in commands {
                self.push_output(output);
            }
            return Ok(decision.outcome);
        };
        if state.compacted && !self.state(env, &saga_id)?.is_some_and(|s| s.compacted) {
            env.metrics
                .finished_sagas_compacted_total
                .fetch_add(1, Ordering::Relaxed);
        }
        let before: Vec<&str> = self
            .cache
            .get(&saga_id)
            .and_then(|c| c.state.as_ref())
            .map(|s| s.timers.iter().map(|t| t.id.as_str()).collect())
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
                state: Some(state),
                seq: self.next_seq,
            },
        );
        for effect in decision.effects {
            self.route_effect(env, now, &saga_id, effect)?;
        }
        self.settle_sent(env, &saga_id)?;
        for (output, (_, command)) in commands.into_iter().zip(&decision.commands) {
            // Counted as it goes: the next command of this decision sees this one in flight,
            // and once one is held the rest for its topic queue behind it.
            match self.must_hold(env, &output.topic, now) {
                Some(reason) => self.hold(env, now, output, command, reason)?,
                None => {
                    self.sent(env, &saga_id, &output.topic, &output.id)?;
                    self.push_output(output);
                }
            }
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
            let mut keep = false;
            let changed = match Target::decode(&encoded) {
                Some(Target::Saga(saga_id, timer_id)) => {
                    let input = Input::Timer { saga_id, timer_id };
                    match self.run_saga(env, now, &input, None)? {
                        Outcome::Applied => true,
                        // The saga exists, but this engine cannot decide it: its definition is
                        // missing here (an engine not yet restarted with a new version, during
                        // a rollout). The index entry stays, so the timer fires when the
                        // partition next restores, here or on an engine that has it.
                        Outcome::Rejected(rejection)
                            if rejection != sagaflow_core::Rejection::UnknownSaga =>
                        {
                            if let Input::Timer { saga_id, .. } = &input {
                                warn!(saga_id = %saga_id, code = rejection.code(), "a timer came due for a saga this engine cannot decide ({rejection}); the timer is kept and fires after the partition's next restore: deploy the saga's definition version to every engine and restart this one");
                            }
                            keep = true;
                            false
                        }
                        _ => false,
                    }
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
                    .timer_lateness_ms
                    .fetch_add(u64::try_from(now - at).unwrap_or(0), Ordering::Relaxed);
            }
            if !keep {
                self.batch.fired.push((at, encoded));
            }
        }
        Ok(count)
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
        } else if topic == env.topics.admin {
            env.codec.decode::<AdminCommand>(bytes).map(Input::Admin)
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
            let _ = self.cache.insert(
                saga_id.to_string(),
                Cached {
                    state: Some(state),
                    seq: 0,
                },
            );
        }
        Ok(self.cache.get(saga_id).and_then(|c| c.state.as_ref()))
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
            // The saga's trace, continued by the participant (sagaflow_kafka::trace).
            headers: vec![Header {
                name: trace::TRACEPARENT.into(),
                value: trace::command_traceparent(&env.topics.group, saga_id, &command.message_id)
                    .into_bytes(),
            }],
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
        .map(sagaflow_avro::internal::encode)
        .transpose()?;
    Ok(Encoded {
        outputs,
        events,
        state,
    })
}
