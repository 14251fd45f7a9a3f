//! Correlation routing: signals, await subscriptions and deliveries, each decided on the
//! partition that owns its correlation value (or its saga) and forwarded there otherwise.

use super::*;

impl Task {
    /// Hands `signal` to the saga of `awaiter` on this partition; a signal the saga no longer
    /// awaits (a stale subscription, e.g. a SUBSCRIBE delivered twice) is matched again rather
    /// than lost.
    pub(super) fn deliver_here(
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
    pub(super) fn send_signal(
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
    pub(super) fn rematch(
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

    /// Opens or closes an await subscription: here if this partition owns the correlation
    /// value, else through the correlations topic.
    pub(super) fn route_effect(
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
            return self.correlate(env, now, message, None);
        }
        self.send_correlation(env, message, "")
    }

    /// Sends a correlation message; `signal_id` names the signal a DELIVER or RETURN carries.
    pub(super) fn send_correlation(
        &mut self,
        env: &TaskEnv<'_>,
        message: sagaflow_avro::Correlation,
        signal_id: &str,
    ) -> Result<()> {
        let (id, key) = sagaflow_core::signal_input::route(&message, signal_id);
        let value = sagaflow_avro::internal::encode(&message)?;
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
    /// A DELIVER or RETURN comes with its `signal` decoded (`handle_correlation`).
    pub(super) fn correlate(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        message: sagaflow_avro::Correlation,
        signal: Option<sagaflow_avro::Signal>,
    ) -> Result<()> {
        use sagaflow_avro::{Awaiter, CorrelationKind as K};
        let awaiter = Awaiter {
            saga_id: message.saga_id.clone(),
            step: message.step.clone(),
        };
        if matches!(message.kind, K::Deliver | K::Return) {
            let Some(signal) = signal else {
                return Ok(());
            };
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
            let buffered = self.parked_with_prefix(env, &prefix, usize::MAX)?;
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

    pub(super) fn apply_match(
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
            self.stage_parked(&await_key, value)?;
        }
        for id in &matched.consumed {
            self.stage_parked(&parked::signal_key(event, correlation, id), None)?;
        }
        if let Some((signal, expires)) = matched.buffer {
            env.metrics
                .signals_buffered_total
                .fetch_add(1, Ordering::Relaxed);
            let key = parked::signal_key(event, correlation, &signal.signal_id);
            let value = env
                .codec
                .encode(Subject::Topic(&env.topics.signals), &signal)?;
            self.stage_parked(&key, Some(parked::buffered(&signal, value, expires, now)))?;
        }
        for (awaiter, signal) in matched.deliver {
            // Remembered past its delivery: a copy that arrives later is a duplicate, not a new
            // signal for the next saga that awaits the value.
            let until = now.saturating_add(signal.ttl_ms.unwrap_or(env.signal_ttl_ms).max(0));
            self.stage_parked(
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

    pub(super) fn handle_signal(
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
        if let Err(invalid) = sagaflow_core::signal_input::check_signal(&signal) {
            self.dead_letter(env, record, "invalid-input", &invalid.to_string());
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
    pub(super) fn decode_or_dead_letter<'r, T: sagaflow_avro::Contract>(
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

    pub(super) fn handle_correlation(
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
        let owner = sagaflow_core::signal_input::owner(&message).to_owned();
        let mut record = Some(record);
        if self.forward_if_foreign(env, &owner, &mut record) {
            return Ok(());
        }
        use sagaflow_avro::CorrelationKind as K;
        let signal = match (&message.kind, &message.signal) {
            (K::Deliver | K::Return, Some(bytes)) => match env.codec.decode(bytes) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    // Dead-lettered like an undecodable input: failing the partition instead
                    // would fail it again on the same record after every restore.
                    let reason = input_error(e)?;
                    if let Some(record) = record {
                        self.dead_letter(
                            env,
                            record,
                            "undecodable",
                            &format!("the signal this {:?} carries: {reason}", message.kind),
                        );
                    }
                    return Ok(());
                }
            },
            _ => None,
        };
        self.correlate(env, now, message, signal)
    }
}
