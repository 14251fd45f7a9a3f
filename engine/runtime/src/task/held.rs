//! Held commands: while a participant is paused (`crate::control`), the commands sagas send it
//! are parked in the partition's state instead of handed to the relay, and sent in the order
//! they were decided once it resumes.
//!
//! Parking them as state (not in the journal's outputs, nor in a topic of their own) means they
//! outlive the journal's retention, move with the partition on a rebalance, and come back from
//! the changelog after a crash, like any parked record. Each hold and each release is also an
//! input to its saga ([`Input::Dispatch`]), so the attempt's timeout stops while the command is
//! held, and a command whose attempt the saga gave up on meanwhile is dropped, not sent.

use sagaflow_avro::{Command, ParkedKind};
use sagaflow_core::{Dispatch, DispatchAction};

use super::*;

impl Task {
    /// Whether a command to `topic` must be held: its participant is paused, or commands held
    /// for it are still being released (a new one goes behind them).
    pub(super) fn must_hold(&self, env: &TaskEnv<'_>, topic: &str) -> bool {
        env.controls.is_paused(topic) || self.held.get(topic).is_some_and(|n| *n > 0)
    }

    /// Parks `output`, a command of `command`'s saga, and tells the saga it is held.
    pub(super) fn hold(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        output: Outbound,
        command: &Command,
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
        });
        self.stage_parked(&key, Some(parked::held(output, now)))?;
        env.metrics
            .commands_held_total
            .fetch_add(1, Ordering::Relaxed);
        let _ = self.run_saga(env, now, &input, None)?;
        Ok(())
    }

    /// Sends up to `max` held commands of topics that are no longer paused, oldest first.
    /// Returns how many it took.
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
            let batch = self.parked_with_prefix(env, &parked::held_prefix(&topic), max - taken)?;
            for (key, record) in batch {
                self.release(env, now, &key, record)?;
                taken += 1;
            }
        }
        Ok(taken)
    }

    fn release(&mut self, env: &TaskEnv<'_>, now: i64, key: &str, record: Parked) -> Result<()> {
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
        });
        self.batch.inputs += 1;
        self.stage_parked(key, None)?;
        let outcome = self.run_saga(env, now, &input, None)?;
        if outcome != Outcome::Applied {
            debug!(saga_id = %command.saga_id, step = %command.step, attempt = command.attempt, topic, ?outcome, "held command dropped: its attempt is no longer awaited");
            env.metrics
                .held_commands_dropped_total
                .fetch_add(1, Ordering::Relaxed);
            return Ok(());
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
        Ok(())
    }

    /// Commands held per command topic (speculative changes included).
    pub(crate) fn held(&self) -> &BTreeMap<String, usize> {
        &self.held
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
