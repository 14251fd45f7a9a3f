//! Moving a saga forward: starting steps, retrying, timing out, compensating in reverse.
//!
//! A [`Draft`] is the decision being built: the new state plus everything it emits. Keeping event
//! numbering here is what makes each saga's event log gapless; keeping timers in the state is
//! what makes them fire at most once as seen by the saga (firing removes the timer in the same
//! decision, journaled atomically with it).

use std::time::Duration;

use sagaflow_avro::{
    Command, EventType, Phase, SagaEvent, SagaState, SagaStatus, StepState, StepStatus, Timer,
    TimerKind,
};
use sagaflow_definition::{Action, CommandSpec, Correlation, Definition, RetryPolicy, Wait};
use serde_json::{json, Value};

use crate::ids::{command_id, event_id, idempotency_key};
use crate::input::{Effect, Settings};
use crate::jitter::unit;

pub(crate) struct Draft<'a> {
    pub(crate) state: SagaState,
    pub(crate) def: &'a Definition,
    pub(crate) now: i64,
    pub(crate) settings: &'a Settings,
    pub(crate) commands: Vec<(String, Command)>,
    pub(crate) events: Vec<SagaEvent>,
    pub(crate) effects: Vec<Effect>,
}

/// A failure of one attempt, as the saga records it.
pub(crate) struct Failure {
    pub(crate) error: Value,
    /// The attempt's effect is unknown (it timed out): compensate the step too.
    pub(crate) uncertain: bool,
}

impl Failure {
    pub(crate) fn known(error: Value) -> Self {
        Self {
            error,
            uncertain: false,
        }
    }

    fn code(&self) -> &str {
        self.error
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("UNSPECIFIED")
    }

    fn retryable(&self) -> bool {
        self.error.get("retryable").and_then(Value::as_bool) == Some(true)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<'a> Draft<'a> {
    pub(crate) fn new(
        state: SagaState,
        def: &'a Definition,
        now: i64,
        settings: &'a Settings,
    ) -> Self {
        Self {
            state,
            def,
            now,
            settings,
            commands: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub(crate) fn emit(
        &mut self,
        event_type: EventType,
        step: Option<&str>,
        attempt: Option<i32>,
        detail: Option<Value>,
    ) {
        self.emit_due(event_type, step, attempt, detail, None);
    }

    pub(crate) fn emit_due(
        &mut self,
        event_type: EventType,
        step: Option<&str>,
        attempt: Option<i32>,
        detail: Option<Value>,
        due: Option<i64>,
    ) {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.events.push(SagaEvent {
            event_id: event_id(&self.state.saga_id, seq),
            saga_id: self.state.saga_id.clone(),
            seq,
            event_type,
            definition: self.state.definition.clone(),
            version: self.state.version,
            step: step.map(str::to_string),
            attempt,
            at: self.now,
            detail_json: detail.map(|d| d.to_string()),
            due,
        });
    }

    /// Adds a timer; its id is unique because it names the last emitted event's seq.
    pub(crate) fn schedule(
        &mut self,
        kind: TimerKind,
        due: i64,
        step: Option<&str>,
        attempt: Option<i32>,
    ) {
        let id = format!("{kind:?}/{}", self.state.next_seq - 1);
        self.state.timers.push(Timer {
            id,
            kind,
            due,
            step: step.map(str::to_string),
            attempt,
        });
    }

    /// Drops the step's timers of these kinds (they stay in the engine's index and are ignored
    /// when they come due).
    fn cancel(&mut self, step: &str, kinds: &[TimerKind]) {
        self.state
            .timers
            .retain(|t| !(t.step.as_deref() == Some(step) && kinds.contains(&t.kind)));
    }

    pub(crate) fn context(&self) -> Value {
        serde_json::from_str(&self.state.context_json).unwrap_or_else(|_| json!({}))
    }

    pub(crate) fn step_mut(&mut self, index: usize) -> &mut StepState {
        &mut self.state.steps[index]
    }

    fn name(&self, index: usize) -> String {
        self.def.steps[index].name.clone()
    }

    /// Sends attempt `attempt` of `phase` for step `index`. A payload that cannot be rendered
    /// fails the step instead of sending a broken command.
    pub(crate) fn dispatch(&mut self, index: usize, phase: Phase, attempt: i32) {
        let step_def = &self.def.steps[index];
        let spec: &CommandSpec = match (phase, &step_def.action, &step_def.compensation) {
            (Phase::Forward, Action::Command(spec), _) => spec,
            (Phase::Compensate, _, Some(spec)) => spec,
            _ => {
                // Only a definition edited under a deployed version gets here (the drift check
                // compares step names, not kinds). Never panic on a running saga: fail the
                // phase, which an operator sees.
                let error = json!({
                    "code": "DEFINITION_DRIFT",
                    "message": format!("step {} of {} no longer defines a {} command", step_def.name, self.def.key(), phase.as_str()),
                    "retryable": false,
                });
                match phase {
                    Phase::Forward => self.fail_step(index, attempt, Failure::known(error)),
                    Phase::Compensate => self.compensation_failed(index, attempt, error),
                }
                return;
            }
        };
        let (timeout, deadline) = (step_def.timeout, step_def.deadline);
        let name = step_def.name.clone();
        let payload = match spec.payload.render(&self.context()) {
            Ok(payload) => payload,
            Err(e) => {
                let error =
                    json!({"code": "PAYLOAD_RENDER", "message": e.to_string(), "retryable": false});
                self.fail_attempt(index, phase, attempt, Failure::known(error));
                return;
            }
        };
        let id = command_id(&self.state.saga_id, &name, phase, attempt);
        let deadline_at = timeout.map(|t| self.now + ms(t));
        let command = Command {
            message_id: id.clone(),
            saga_id: self.state.saga_id.clone(),
            definition: self.state.definition.clone(),
            version: self.state.version,
            step: name.clone(),
            phase,
            attempt,
            idempotency_key: idempotency_key(&self.state.saga_id, &name, phase),
            command_type: spec.command_type.clone(),
            payload_json: payload.to_string(),
            reply_to: self.settings.replies.clone(),
            deadline: deadline_at,
            issued_at: self.now,
        };
        self.commands.push((spec.topic.clone(), command));
        let now = self.now;
        let step = self.step_mut(index);
        step.status = match phase {
            Phase::Forward => StepStatus::Running,
            Phase::Compensate => StepStatus::Compensating,
        };
        step.attempt = attempt;
        step.dispatched_at = Some(now);
        let event = match phase {
            Phase::Forward => EventType::StepDispatched,
            Phase::Compensate => EventType::CompensationDispatched,
        };
        self.emit_due(event, Some(&name), Some(attempt), None, deadline_at);
        if let Some(due) = deadline_at {
            self.schedule(TimerKind::AttemptTimeout, due, Some(&name), Some(attempt));
        }
        if phase == Phase::Forward && attempt == 1 {
            if let Some(d) = deadline {
                self.schedule(TimerKind::StepDeadline, now + ms(d), Some(&name), None);
            }
        }
    }

    /// Records a failed attempt of `phase` and retries it or decides what follows.
    pub(crate) fn fail_attempt(
        &mut self,
        index: usize,
        phase: Phase,
        attempt: i32,
        failure: Failure,
    ) {
        let name = self.name(index);
        self.cancel(&name, &[TimerKind::AttemptTimeout]);
        let policy: &RetryPolicy = match phase {
            Phase::Forward => &self.def.steps[index].retry,
            Phase::Compensate => &self.def.steps[index].compensation_retry,
        };
        let failed = u32::try_from(attempt).unwrap_or(u32::MAX);
        let retry = failure.retryable()
            && policy.retries_code(failure.code())
            && policy.allows_attempt_after(failed);
        if retry {
            let delay = policy.delay(failed, unit(&self.state.saga_id, &name, phase, attempt));
            let due = self.now + ms(delay);
            let (event, kind) = match phase {
                Phase::Forward => (EventType::StepRetryScheduled, TimerKind::Retry),
                Phase::Compensate => (
                    EventType::CompensationRetryScheduled,
                    TimerKind::CompensationRetry,
                ),
            };
            self.step_mut(index).status = StepStatus::Backoff;
            let detail =
                json!({"error": failure.error, "next_attempt": attempt + 1, "delay_ms": ms(delay)});
            self.emit_due(event, Some(&name), Some(attempt), Some(detail), Some(due));
            self.schedule(kind, due, Some(&name), Some(attempt + 1));
            return;
        }
        match phase {
            Phase::Forward => self.fail_step(index, attempt, failure),
            Phase::Compensate => self.compensation_failed(index, attempt, failure.error),
        }
    }

    /// The step failed for good: compensate what is done (including the step itself when its
    /// last attempt's effect is unknown).
    pub(crate) fn fail_step(&mut self, index: usize, attempt: i32, failure: Failure) {
        let name = self.name(index);
        self.cancel(
            &name,
            &[
                TimerKind::AttemptTimeout,
                TimerKind::StepDeadline,
                TimerKind::Retry,
            ],
        );
        let now = self.now;
        // An attempt in flight, or an earlier one that timed out with no definite reply since,
        // may have taken effect.
        let uncertain = (failure.uncertain || self.state.steps[index].uncertain)
            && self.def.steps[index].compensation.is_some();
        let step = self.step_mut(index);
        step.status = if uncertain {
            StepStatus::TimedOut
        } else {
            StepStatus::Failed
        };
        step.finished_at = Some(now);
        if uncertain {
            // Compensated first: it is the latest effect that may stand.
            self.state.completion_order.push(name.clone());
        }
        self.emit(
            EventType::StepFailed,
            Some(&name),
            Some(attempt),
            Some(failure.error.clone()),
        );
        self.state.failure_json = Some(json!({"step": name, "error": failure.error}).to_string());
        self.start_compensation();
    }

    fn compensation_failed(&mut self, index: usize, attempt: i32, error: Value) {
        let name = self.name(index);
        let now = self.now;
        self.emit(
            EventType::CompensationFailed,
            Some(&name),
            Some(attempt),
            Some(error.clone()),
        );
        let step = self.step_mut(index);
        step.status = StepStatus::CompensationFailed;
        step.finished_at = Some(now);
        self.state.failure_json = Some(
            json!({"step": name, "error": error, "incident": "compensation failed; an operator must repair this saga"})
                .to_string(),
        );
        self.end(SagaStatus::Failed, EventType::SagaFailed, Some(error));
    }

    /// Ends the saga: nothing of it may fire any more.
    pub(crate) fn end(&mut self, status: SagaStatus, event: EventType, detail: Option<Value>) {
        self.state.status = status;
        self.state.timers.clear();
        self.emit(event, None, None, detail);
    }

    pub(crate) fn start_compensation(&mut self) {
        self.state.status = SagaStatus::Compensating;
        let mut unsubscribe = Vec::new();
        for (i, step) in self.state.steps.iter_mut().enumerate() {
            match step.status {
                StepStatus::Pending | StepStatus::Backoff => step.status = StepStatus::Skipped,
                StepStatus::Waiting => {
                    step.status = StepStatus::Skipped;
                    if let (Action::Await(a), Some(c)) =
                        (&self.def.steps[i].action, step.correlation.clone())
                    {
                        unsubscribe.push(Effect::Unsubscribe {
                            event: a.event.clone(),
                            correlation: c,
                            step: step.name.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        self.effects.extend(unsubscribe);
        // Forward-phase timers are moot now; the saga deadline no longer applies either.
        self.state.timers.clear();
        self.advance();
    }

    /// Dispatches whatever comes next, or ends the saga.
    pub(crate) fn advance(&mut self) {
        match self.state.status {
            SagaStatus::Running => self.advance_forward(),
            SagaStatus::Compensating => self.advance_compensation(),
            _ => {}
        }
    }

    fn advance_forward(&mut self) {
        loop {
            if self.state.status != SagaStatus::Running
                || self.state.steps.iter().any(|s| {
                    matches!(
                        s.status,
                        StepStatus::Running | StepStatus::Backoff | StepStatus::Waiting
                    )
                })
            {
                return;
            }
            let Some(index) = self
                .state
                .steps
                .iter()
                .position(|s| s.status == StepStatus::Pending)
            else {
                let context = self.context();
                self.end(
                    SagaStatus::Completed,
                    EventType::SagaCompleted,
                    Some(context),
                );
                return;
            };
            match &self.def.steps[index].action {
                Action::Command(_) => self.dispatch(index, Phase::Forward, 1),
                Action::Wait(wait) => self.start_wait(index, &wait.clone()),
                Action::Await(_) => self.start_await(index),
            }
        }
    }

    /// Marks step `index` succeeded with `output` mapped into the context, then moves on.
    pub(crate) fn succeed(&mut self, index: usize, attempt: Option<i32>, output: Value) {
        let name = self.name(index);
        let mut context = self.context();
        for (key, path) in self.def.steps[index].output.iter() {
            match path.get(&output) {
                Some(value) => context[key.as_str()] = value.clone(),
                None => {
                    let error = json!({
                        "code": "OUTPUT_MAPPING",
                        "message": format!("step output has no value at {path} for context key {key}"),
                        "retryable": false
                    });
                    self.fail_step(index, attempt.unwrap_or(1), Failure::known(error));
                    return;
                }
            }
        }
        self.state.context_json = context.to_string();
        self.cancel(
            &name,
            &[
                TimerKind::AttemptTimeout,
                TimerKind::StepDeadline,
                TimerKind::AwaitTimeout,
            ],
        );
        let now = self.now;
        let step = self.step_mut(index);
        step.status = StepStatus::Succeeded;
        step.finished_at = Some(now);
        self.state.completion_order.push(name.clone());
        self.emit(EventType::StepSucceeded, Some(&name), attempt, Some(output));
        self.advance();
    }

    fn start_wait(&mut self, index: usize, wait: &Wait) {
        let name = self.name(index);
        let due = match wait {
            Wait::For(d) => Ok(self.now + ms(*d)),
            Wait::UntilInstant(at) => Ok(*at),
            Wait::UntilContext(path) => match path.get(&self.context()) {
                Some(Value::Number(n)) => n
                    .as_i64()
                    .ok_or_else(|| format!("{path} is not an integer")),
                Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| format!("{path} = {s:?} is not an RFC 3339 time: {e}")),
                Some(other) => Err(format!(
                    "{path} = {other} is neither an RFC 3339 string nor epoch milliseconds"
                )),
                None => Err(format!("the context has nothing at {path}")),
            },
            Wait::Calendar(calendar) => calendar
                .next_after(self.now)
                .ok_or_else(|| format!("calendar `{calendar}` never fires again")),
        };
        let due = match due {
            Ok(due) => due,
            Err(message) => {
                let error = json!({"code": "WAIT_TIME", "message": message, "retryable": false});
                self.fail_step(index, 1, Failure::known(error));
                return;
            }
        };
        let now = self.now;
        let step = self.step_mut(index);
        step.status = StepStatus::Waiting;
        step.attempt = 1;
        step.dispatched_at = Some(now);
        self.emit_due(EventType::WaitStarted, Some(&name), None, None, Some(due));
        // A time already past still goes through the timer, so every wait ends the same way.
        self.schedule(TimerKind::Wait, due, Some(&name), None);
    }

    fn start_await(&mut self, index: usize) {
        let name = self.name(index);
        let Action::Await(awaited) = &self.def.steps[index].action else {
            return;
        };
        let (event, correlate, timeout, deadline) = (
            awaited.event.clone(),
            awaited.correlate.clone(),
            awaited.timeout,
            self.def.steps[index].deadline,
        );
        let correlation = match &correlate {
            Correlation::SagaId => Ok(self.state.saga_id.clone()),
            Correlation::Context(path) => match path.get(&self.context()) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
                Some(other) => Err(format!("{path} = {other} cannot be a correlation value")),
                None => Err(format!("the context has nothing at {path}")),
            },
        };
        let correlation = match correlation {
            Ok(c) => c,
            Err(message) => {
                let error = json!({"code": "CORRELATION", "message": message, "retryable": false});
                self.fail_step(index, 1, Failure::known(error));
                return;
            }
        };
        let now = self.now;
        let due = timeout.map(|t| now + ms(t));
        let step = self.step_mut(index);
        step.status = StepStatus::Waiting;
        step.attempt = 1;
        step.dispatched_at = Some(now);
        step.correlation = Some(correlation.clone());
        self.emit_due(
            EventType::AwaitStarted,
            Some(&name),
            None,
            Some(json!({"event": event, "correlation": correlation})),
            due,
        );
        if let Some(due) = due {
            self.schedule(TimerKind::AwaitTimeout, due, Some(&name), None);
        }
        if let Some(d) = deadline {
            self.schedule(TimerKind::StepDeadline, now + ms(d), Some(&name), None);
        }
        self.effects.push(Effect::Subscribe {
            event,
            correlation,
            step: name,
        });
    }

    /// Ends an await step's subscription.
    pub(crate) fn unsubscribe(&mut self, index: usize) {
        let (Action::Await(awaited), Some(correlation)) = (
            &self.def.steps[index].action,
            self.state.steps[index].correlation.clone(),
        ) else {
            return;
        };
        self.effects.push(Effect::Unsubscribe {
            event: awaited.event.clone(),
            correlation,
            step: self.def.steps[index].name.clone(),
        });
    }

    fn advance_compensation(&mut self) {
        if self
            .state
            .steps
            .iter()
            .any(|s| matches!(s.status, StepStatus::Compensating | StepStatus::Backoff))
        {
            return;
        }
        // Reverse completion order, so each compensation undoes the latest effect still standing.
        let order = self.state.completion_order.clone();
        for name in order.iter().rev() {
            let Some(index) = self.def.step_index(name) else {
                continue;
            };
            if !matches!(
                self.state.steps[index].status,
                StepStatus::Succeeded | StepStatus::TimedOut
            ) {
                continue;
            }
            if self.def.steps[index].compensation.is_some() {
                self.dispatch(index, Phase::Compensate, 1);
                if self.state.steps[index].status == StepStatus::Compensating
                    || self.state.status != SagaStatus::Compensating
                {
                    return;
                }
            } else {
                // Nothing to undo for this step (e.g. a notification or a wait).
                self.step_mut(index).status = StepStatus::Compensated;
            }
        }
        if self.state.status == SagaStatus::Compensating {
            let failure = self
                .state
                .failure_json
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok());
            self.end(SagaStatus::Compensated, EventType::SagaCompensated, failure);
        }
    }
}
