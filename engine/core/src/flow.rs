//! Moving a saga forward: dispatching steps, compensating in reverse, emitting events.
//!
//! A [`Draft`] is the decision being built: the new state plus everything it emits. Keeping event
//! numbering here is what makes each saga's event log gapless.

use sagaflow_avro::{
    Command, EventType, Phase, SagaEvent, SagaState, SagaStatus, StepState, StepStatus,
};
use sagaflow_definition::{CommandSpec, Definition};
use serde_json::{json, Value};

use crate::ids::{command_id, event_id};
use crate::input::Topics;

/// Retries of a failed compensation before the saga becomes an incident. Issue-level retry
/// policies with backoff replace this constant once durable timers exist.
pub(crate) const COMPENSATION_ATTEMPTS: i32 = 3;

pub(crate) struct Draft<'a> {
    pub(crate) state: SagaState,
    pub(crate) def: &'a Definition,
    pub(crate) now: i64,
    pub(crate) topics: &'a Topics,
    pub(crate) commands: Vec<(String, Command)>,
    pub(crate) events: Vec<SagaEvent>,
}

impl<'a> Draft<'a> {
    pub(crate) fn new(state: SagaState, def: &'a Definition, now: i64, topics: &'a Topics) -> Self {
        Self {
            state,
            def,
            now,
            topics,
            commands: Vec::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn emit(
        &mut self,
        event_type: EventType,
        step: Option<&str>,
        attempt: Option<i32>,
        detail: Option<Value>,
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
        });
    }

    fn context(&self) -> Value {
        serde_json::from_str(&self.state.context_json).unwrap_or_else(|_| json!({}))
    }

    pub(crate) fn step_mut(&mut self, index: usize) -> &mut StepState {
        &mut self.state.steps[index]
    }

    /// Sends attempt `attempt` of `phase` for step `index`. A payload that cannot be rendered
    /// fails the step instead of sending a broken command.
    pub(crate) fn dispatch(&mut self, index: usize, phase: Phase, attempt: i32) {
        let step_def = &self.def.steps[index];
        let spec: &CommandSpec = match phase {
            Phase::Forward => &step_def.command,
            Phase::Compensate => step_def
                .compensation
                .as_ref()
                .expect("dispatch of a compensation the step does not define"),
        };
        let name = step_def.name.clone();
        let payload = match spec.payload.render(&self.context()) {
            Ok(payload) => payload,
            Err(e) => {
                let error =
                    json!({"code": "PAYLOAD_RENDER", "message": e.to_string(), "retryable": false});
                self.fail_phase(index, phase, attempt, error);
                return;
            }
        };
        let id = command_id(&self.state.saga_id, &name, phase, attempt);
        let command = Command {
            message_id: id.clone(),
            saga_id: self.state.saga_id.clone(),
            definition: self.state.definition.clone(),
            version: self.state.version,
            step: name.clone(),
            phase,
            attempt,
            idempotency_key: id,
            command_type: spec.command_type.clone(),
            payload_json: payload.to_string(),
            reply_to: self.topics.replies.clone(),
            deadline: None,
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
        self.emit(event, Some(&name), Some(attempt), None);
    }

    /// Records a failed attempt of `phase` and decides what follows.
    pub(crate) fn fail_phase(&mut self, index: usize, phase: Phase, attempt: i32, error: Value) {
        let name = self.def.steps[index].name.clone();
        let now = self.now;
        match phase {
            Phase::Forward => {
                let step = self.step_mut(index);
                step.status = StepStatus::Failed;
                step.finished_at = Some(now);
                self.emit(
                    EventType::StepFailed,
                    Some(&name),
                    Some(attempt),
                    Some(error.clone()),
                );
                self.state.failure_json = Some(json!({"step": name, "error": error}).to_string());
                self.start_compensation();
            }
            Phase::Compensate => {
                self.emit(
                    EventType::CompensationFailed,
                    Some(&name),
                    Some(attempt),
                    Some(error.clone()),
                );
                let retryable = error.get("retryable").and_then(Value::as_bool) == Some(true);
                if retryable && attempt < COMPENSATION_ATTEMPTS {
                    self.dispatch(index, Phase::Compensate, attempt + 1);
                } else {
                    let step = self.step_mut(index);
                    step.status = StepStatus::CompensationFailed;
                    step.finished_at = Some(now);
                    self.state.status = SagaStatus::Failed;
                    self.state.failure_json = Some(
                        json!({"step": name, "error": error, "incident": "compensation failed; an operator must repair this saga"})
                            .to_string(),
                    );
                    self.emit(
                        EventType::SagaFailed,
                        Some(&name),
                        Some(attempt),
                        Some(error),
                    );
                }
            }
        }
    }

    fn start_compensation(&mut self) {
        self.state.status = SagaStatus::Compensating;
        for step in &mut self.state.steps {
            if step.status == StepStatus::Pending {
                step.status = StepStatus::Skipped;
            }
        }
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
        if self
            .state
            .steps
            .iter()
            .any(|s| s.status == StepStatus::Running)
        {
            return;
        }
        match self
            .state
            .steps
            .iter()
            .position(|s| s.status == StepStatus::Pending)
        {
            Some(index) => self.dispatch(index, Phase::Forward, 1),
            None => {
                self.state.status = SagaStatus::Completed;
                let context = self.context();
                self.emit(EventType::SagaCompleted, None, None, Some(context));
            }
        }
    }

    fn advance_compensation(&mut self) {
        if self
            .state
            .steps
            .iter()
            .any(|s| s.status == StepStatus::Compensating)
        {
            return;
        }
        // Reverse completion order, so each compensation undoes the latest effect still standing.
        let order = self.state.completion_order.clone();
        for name in order.iter().rev() {
            let Some(index) = self.def.step_index(name) else {
                continue;
            };
            if self.state.steps[index].status != StepStatus::Succeeded {
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
                // Nothing to undo for this step (e.g. a notification).
                self.step_mut(index).status = StepStatus::Compensated;
            }
        }
        if self.state.status == SagaStatus::Compensating {
            self.state.status = SagaStatus::Compensated;
            let failure = self
                .state
                .failure_json
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok());
            self.emit(EventType::SagaCompensated, None, None, failure);
        }
    }
}
