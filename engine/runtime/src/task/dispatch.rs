//! Dispatch control: while a participant is paused (`crate::control`), or at its limit of
//! commands in flight or per second, the commands sagas send it are parked in the partition's
//! state instead of handed to the relay, and sent in the order they were decided once it is
//! resumed or below its limits.
//!
//! Parking them as state (not in the journal's outputs, nor in a topic of their own) means they
//! outlive the journal's retention, move with the partition on a rebalance, and come back from
//! the changelog after a crash, like any parked record. Each hold and each release is also an
//! input to its saga ([`Input::Dispatch`]), so the attempt's timeout stops while the command is
//! held, and a command whose attempt the saga gave up on meanwhile is dropped, not sent.
//!
//! Commands in flight to a topic with a `max_in_flight` are remembered per saga
//! (`__sent/<saga id>`) until the saga no longer awaits them, so the count survives restarts
//! and rebalances. Each partition gets an even share of a limit.

use sagaflow_avro::{Command, ParkedHeader, ParkedKind};
use sagaflow_core::{Dispatch, DispatchAction};

use crate::control::Bucket;

use super::*;

impl Task {
    /// Why a command to `topic` must be held now, if it must: its participant is paused,
    /// commands held for it are still being released (a new one goes behind them), or this
    /// partition's share of a limit is used up. Takes a rate token when it returns `None`.
    pub(super) fn must_hold(
        &mut self,
        env: &TaskEnv<'_>,
        topic: &str,
        now: i64,
    ) -> Option<&'static str> {
        if env.controls.is_paused(topic) {
            return Some("paused");
        }
        if self.held.get(topic).is_some_and(|n| *n > 0) {
            return Some("queued");
        }
        self.no_capacity(env, topic, now)
    }

    /// Which limit keeps one more command to `topic` from going out now, if any; takes a rate
    /// token otherwise.
    fn no_capacity(&mut self, env: &TaskEnv<'_>, topic: &str, now: i64) -> Option<&'static str> {
        let limits = env.controls.limits(topic, self.partition, env.partitions);
        if let Some(max) = limits.max_in_flight {
            if self.in_flight.get(topic).copied().unwrap_or(0) >= max {
                return Some("max_in_flight");
            }
        }
        if let Some(rate) = limits.max_rate {
            let bucket = self
                .buckets
                .entry(topic.to_string())
                .or_insert_with(|| Bucket::full(rate, now));
            if !bucket.take(rate, now) {
                return Some("max_rate");
            }
        }
        None
    }

    /// How many more commands to `topic` may go out now under its limits; takes no token.
    fn room(&mut self, env: &TaskEnv<'_>, topic: &str, now: i64) -> usize {
        let limits = env.controls.limits(topic, self.partition, env.partitions);
        let in_flight = limits.max_in_flight.map_or(usize::MAX, |max| {
            max.saturating_sub(self.in_flight.get(topic).copied().unwrap_or(0))
        });
        let rate = limits.max_rate.map_or(usize::MAX, |rate| {
            self.buckets
                .entry(topic.to_string())
                .or_insert_with(|| Bucket::full(rate, now))
                .available(rate, now)
        });
        in_flight.min(rate)
    }

    /// Parks `output`, a command of `command`'s saga, and tells the saga it is held.
    pub(super) fn hold(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        output: Outbound,
        command: &Command,
        reason: &str,
    ) -> Result<()> {
        // A new state entry per held command, so the batch's entry count numbers them in order.
        let key = parked::held_key(&output.topic, self.next_offset, self.batch.states.len());
        let input = Input::Dispatch(Dispatch {
            saga_id: command.saga_id.clone(),
            step: command.step.clone(),
            phase: command.phase,
            attempt: command.attempt,
            topic: output.topic.clone(),
            action: DispatchAction::Held,
            reason: Some(reason.to_string()),
        });
        self.stage_parked(&key, Some(parked::held(output, now)))?;
        env.metrics
            .commands_held_total
            .fetch_add(1, Ordering::Relaxed);
        let _ = self.run_saga(env, now, &input, None)?;
        Ok(())
    }

    /// Sends the held commands of topics that are neither paused nor at a limit, oldest first,
    /// at most `max`. Returns how many it took.
    pub(crate) fn release_held(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        max: usize,
    ) -> Result<usize> {
        if self.status != TaskStatus::Active {
            return Ok(0);
        }
        let topics: Vec<String> = self
            .held
            .iter()
            .filter(|(topic, n)| **n > 0 && !env.controls.is_paused(topic))
            .map(|(topic, _)| topic.clone())
            .collect();
        let mut taken = 0;
        for topic in topics {
            if taken >= max {
                break;
            }
            let room = self.room(env, &topic, now).min(max - taken);
            if room == 0 {
                continue;
            }
            let prefix = parked::held_prefix(&topic);
            let skipped = self
                .undecidable_held
                .range(prefix.clone()..)
                .take_while(|key| key.starts_with(&prefix))
                .count();
            let batch = self.parked_with_prefix(env, &prefix, room + skipped)?;
            let mut released = 0;
            for (key, record) in batch {
                if released == room || self.no_capacity(env, &topic, now).is_some() {
                    break;
                }
                if self.undecidable_held.contains(&key) || !self.release(env, now, &key, record)? {
                    continue;
                }
                released += 1;
            }
            taken += released;
        }
        Ok(taken)
    }

    /// Releases one held command; false if its saga cannot be decided here, which keeps it.
    fn release(&mut self, env: &TaskEnv<'_>, now: i64, key: &str, record: Parked) -> Result<bool> {
        debug_assert_eq!(record.kind, ParkedKind::Held);
        let topic = record.topic.clone().unwrap_or_default();
        let bytes = record.value.clone().unwrap_or_default();
        let mut command: Command = env.codec.decode(&bytes)?;
        let input = Input::Dispatch(Dispatch {
            saga_id: command.saga_id.clone(),
            step: command.step.clone(),
            phase: command.phase,
            attempt: command.attempt,
            topic: topic.clone(),
            action: DispatchAction::Released,
            reason: None,
        });
        let outcome = self.run_saga(env, now, &input, None)?;
        if let Outcome::Rejected(rejection) = &outcome {
            if *rejection != sagaflow_core::Rejection::UnknownSaga {
                // Its saga's definition is missing on this engine (one not yet restarted with
                // a new version, during a rollout). Dropping the command would leave the saga
                // waiting for good: it stays held, skipped here until the partition restores.
                warn!(saga_id = %command.saga_id, step = %command.step, topic, code = rejection.code(), "a held command cannot be released on this engine ({rejection}); it stays held until the partition's next restore: deploy the saga's definition version to every engine and restart this one");
                let _ = self.undecidable_held.insert(key.to_string());
                return Ok(false);
            }
        }
        self.batch.inputs += 1;
        self.stage_parked(key, None)?;
        if outcome != Outcome::Applied {
            debug!(saga_id = %command.saga_id, step = %command.step, attempt = command.attempt, topic, ?outcome, "held command dropped: its attempt is no longer awaited");
            env.metrics
                .held_commands_dropped_total
                .fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        // The attempt's timeout restarted at the release; the deadline the command carries
        // says so too.
        let deadline = self
            .state(env, &command.saga_id)?
            .and_then(|s| {
                s.timers.iter().find(|t| {
                    t.kind == sagaflow_avro::TimerKind::AttemptTimeout
                        && t.step.as_deref() == Some(command.step.as_str())
                        && t.attempt == Some(command.attempt)
                })
            })
            .map(|t| t.due);
        let value = if deadline.is_some() && deadline != command.deadline {
            command.deadline = deadline;
            env.codec.encode(Subject::Topic(&topic), &command)?
        } else {
            bytes
        };
        env.metrics
            .commands_released_total
            .fetch_add(1, Ordering::Relaxed);
        self.sent(env, &command.saga_id, &topic, &record.id)?;
        self.push_output(Outbound {
            id: record.id,
            topic,
            key: record.key,
            value: Some(value),
            headers: record
                .headers
                .into_iter()
                .map(|h| Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            not_before: None,
        });
        Ok(true)
    }

    /// A command of `saga_id` goes out to `topic`: counted in flight if the topic has a limit.
    pub(super) fn sent(
        &mut self,
        env: &TaskEnv<'_>,
        saga_id: &str,
        topic: &str,
        message_id: &str,
    ) -> Result<()> {
        if env
            .controls
            .limits(topic, self.partition, env.partitions)
            .max_in_flight
            .is_none()
        {
            return Ok(());
        }
        let key = parked::sent_key(saga_id);
        let mut record = match self.parked(env, &key)? {
            Some(r) => r,
            None => {
                self.sent_sagas += 1;
                parked::sent(saga_id)
            }
        };
        record.headers.push(ParkedHeader {
            name: message_id.to_string(),
            value: topic.as_bytes().to_vec(),
        });
        *self.in_flight.entry(topic.to_string()).or_insert(0) += 1;
        self.stage_parked(&key, Some(record))
    }

    /// After a decision of `saga_id`: forgets its commands in flight that it no longer awaits
    /// (answered, timed out, skipped, or the saga ended), which frees their places.
    pub(super) fn settle_sent(&mut self, env: &TaskEnv<'_>, saga_id: &str) -> Result<()> {
        if self.sent_sagas == 0 {
            return Ok(());
        }
        let key = parked::sent_key(saga_id);
        let Some(mut record) = self.parked(env, &key)? else {
            return Ok(());
        };
        let awaited = self
            .state(env, saga_id)?
            .map(sagaflow_core::awaited_commands)
            .unwrap_or_default();
        let before = record.headers.len();
        let mut ended = Vec::new();
        record.headers.retain(|h| {
            let keep = awaited.contains(&h.name);
            if !keep {
                ended.push(String::from_utf8_lossy(&h.value).into_owned());
            }
            keep
        });
        if record.headers.len() == before {
            return Ok(());
        }
        for topic in ended {
            if let Some(n) = self.in_flight.get_mut(&topic) {
                *n = n.saturating_sub(1);
            }
        }
        if record.headers.is_empty() {
            self.sent_sagas = self.sent_sagas.saturating_sub(1);
            self.stage_parked(&key, None)
        } else {
            self.stage_parked(&key, Some(record))
        }
    }

    /// Commands held per command topic (speculative changes included).
    pub(crate) fn held(&self) -> &BTreeMap<String, usize> {
        &self.held
    }

    /// Commands in flight per command topic with a limit (speculative changes included).
    pub(crate) fn in_flight(&self) -> &BTreeMap<String, usize> {
        &self.in_flight
    }

    /// Keeps the count of held commands per topic in step with a parked record staged under
    /// `key`: a held command's key is staged once with a value (held) and once without
    /// (released), never rewritten.
    pub(super) fn count_held(&mut self, key: &str, added: bool) {
        let Some(topic) = parked::held_topic(key) else {
            return;
        };
        let count = self.held.entry(topic.to_string()).or_insert(0);
        if added {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        if *count == 0 {
            let _ = self.held.remove(topic);
        }
    }
}

/// Commands in flight per topic, and how many sagas have some, from a partition's committed
/// `__sent/` records.
pub(super) fn load_sent(
    env: &TaskEnv<'_>,
    partition: i32,
) -> Result<(BTreeMap<String, usize>, usize)> {
    let mut in_flight = BTreeMap::new();
    let records = env
        .store
        .states_with_prefix(partition, parked::SENT, usize::MAX)?;
    let sagas = records.len();
    for (_, bytes) in records {
        let record: Parked = env.codec.decode(&bytes)?;
        for h in record.headers {
            *in_flight
                .entry(String::from_utf8_lossy(&h.value).into_owned())
                .or_insert(0) += 1;
        }
    }
    Ok((in_flight, sagas))
}
