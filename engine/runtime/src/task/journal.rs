//! Journal batching: a batch of decisions becomes one journal record, produced at the offset
//! it must land at; the broker's answer commits it to RocksDB and hands it to the relay.

use super::*;

#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) states: Vec<StateEntry>,
    pub(super) index: HashMap<String, usize>,
    pub(super) outputs: Vec<Outbound>,
    pub(super) inputs: usize,
    pub(super) bytes: usize,
    /// Timer index entries that came due while this batch was open.
    pub(super) fired: Vec<(i64, String)>,
    /// The input records decided in this batch (topic, offset).
    pub(super) sources: Vec<(String, i64)>,
    /// The events decided, counted in the metrics once the record is written: a batch decided
    /// again after a resync is not counted twice.
    pub(super) events: Vec<sagaflow_avro::EventType>,
    /// The decisions whose spans are exported (empty unless they are).
    pub(super) traced: Vec<Traced>,
}

#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) expected: i64,
    pub(super) record: JournalRecord,
    pub(super) running: Vec<bool>,
    /// From when each state is checked if it goes in a changelog batch (`batches.rs`).
    pub(super) batch_at: Vec<Option<i64>>,
    /// Timer index entries of each state (parallel to `record.states`).
    pub(super) timers: Vec<Vec<(i64, String)>>,
    pub(super) fired: Vec<(i64, String)>,
    pub(super) sources: Vec<(String, i64)>,
    pub(super) events: Vec<sagaflow_avro::EventType>,
    pub(super) traced: Vec<Traced>,
}

/// A journal acknowledgement: the record's sequence number, and when it was produced and
/// acknowledged (for its spans).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acked {
    pub(crate) seq: u64,
    pub(crate) produced: std::time::SystemTime,
    pub(crate) acknowledged: std::time::SystemTime,
}

/// A record the task produced and waits on.
#[derive(Debug)]
pub(crate) struct Produce {
    pub(crate) seq: u64,
    pub(crate) generation: u64,
    pub(crate) bytes: Vec<u8>,
}

impl Task {
    /// Whether the batch should be written now.
    pub(crate) fn batch_full(&mut self, max_inputs: usize, max_bytes: usize) -> bool {
        self.batch.inputs >= max_inputs
            || self.batch.bytes >= max_bytes
            || (self.batch.inputs > 0 && self.oversize.splitting(&self.positions))
    }

    /// Turns the batch into a journal record if it is full.
    pub(crate) fn flush_if_full(
        &mut self,
        env: &TaskEnv<'_>,
        max_inputs: usize,
        max_bytes: usize,
    ) -> Result<Option<Produce>> {
        if self.batch_full(max_inputs, max_bytes) {
            self.flush(env)
        } else {
            Ok(None)
        }
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
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|s| !s.status.is_terminal())
            })
            .collect();
        let now = sagaflow_avro::now_ms();
        let batch_at = batch
            .states
            .iter()
            .map(|e| {
                if !env.changelog_batches || self.parked.contains_key(&e.saga_id) {
                    return None;
                }
                let state = self.cache.get(&e.saga_id).and_then(|c| c.state.as_ref());
                crate::batches::check_at(state, now)
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
            batch_at,
            timers,
            fired: batch.fired,
            sources: batch.sources,
            events: batch.events,
            traced: batch.traced,
        };
        self.produce(flight).map(Some)
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
            batch_at: Vec::new(),
            timers: Vec::new(),
            fired: Vec::new(),
            sources: Vec::new(),
            events: Vec::new(),
            traced: Vec::new(),
        };
        self.produce(flight).map(Some)
    }

    /// Timer index entries of the speculative state under `key`.
    pub(super) fn timer_entries(&self, key: &str) -> Vec<(i64, String)> {
        if let Some(c) = self.parked.get(key) {
            return c
                .state
                .as_ref()
                .and_then(parked::due)
                .map(|due| (due, Target::Parked(key.to_string()).encode()))
                .into_iter()
                .collect();
        }
        self.cache
            .get(key)
            .and_then(|c| c.state.as_ref())
            .map_or_else(Vec::new, |s| {
                s.timers
                    .iter()
                    .map(|t| (t.due, Target::Saga(key.to_string(), t.id.clone()).encode()))
                    .collect()
            })
    }

    pub(super) fn produce(&mut self, mut flight: InFlight) -> Result<Produce> {
        let bytes = sagaflow_avro::internal::encode(&flight.record)?;
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
        ack: &Acked,
        result: std::result::Result<i64, JournalFailure>,
    ) -> Result<()> {
        let seq = ack.seq;
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
        let applying = std::time::Instant::now();
        let applying_at = std::time::SystemTime::now();
        env.store
            .apply(self.partition, offset, &writes, &flight.fired, &self.meta)?;
        env.metrics.hops.state_apply.observe(applying.elapsed());
        let spans = &env.metrics.spans;
        let p = self.partition;
        spans.journal(
            "journal_ack",
            &flight.traced,
            p,
            offset,
            ack.produced,
            ack.acknowledged,
        );
        let applied_at = std::time::SystemTime::now();
        spans.journal(
            "state_apply",
            &flight.traced,
            p,
            offset,
            applying_at,
            applied_at,
        );
        for (due, target) in flight.timers.into_iter().flatten() {
            self.wheel.offer(due, target);
        }
        self.parked.retain(|_, c| c.seq != flight.seq);
        env.metrics
            .journal_records_total
            .fetch_add(1, Ordering::Relaxed);
        for entry in &record.states {
            let evict = self.cache.get(&entry.saga_id).is_some_and(|c| {
                c.seq == flight.seq && c.state.as_ref().is_none_or(|s| s.status.is_terminal())
            });
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
            .zip(flight.batch_at)
            .map(|(e, batch_at)| {
                let dirty = Dirty {
                    source: offset,
                    state: e.state,
                    batch_at,
                };
                (e.saga_id, dirty)
            });
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
    relay.open(partition, meta.relayed.clone(), meta.chain.epoch);
    let last = meta.chain.last_valid;
    let mark = RelayMark {
        chain: meta.chain.clone(),
        positions: meta.positions.clone(),
    };
    // A restore's states go under their own keys: they are few, and rare.
    let mut dirty = Some(
        restored
            .dirty
            .into_iter()
            .map(|(saga_id, (source, state))| (saga_id, Dirty::single(source, state))),
    );
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

pub(super) fn positions_vec(positions: &BTreeMap<String, i64>) -> Vec<InputPosition> {
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
        E::SagaIncident => &metrics.incidents_total,
        E::SagaAborted => &metrics.sagas_aborted_total,
        E::AdminCommandApplied => &metrics.admin_commands_applied_total,
        E::AdminCommandRejected => &metrics.admin_commands_rejected_total,
        _ => return,
    };
    let _ = counter.fetch_add(1, Ordering::Relaxed);
}
