//! The decision function.

use sagaflow_avro::{
    EventType, Phase, Reply, ReplyStatus, SagaState, SagaStatus, Signal, StartSaga, StepState,
    StepStatus, TimerKind,
};
use sagaflow_definition::{Action, Definition, OnTimeout};
use serde_json::{json, Value};
use tracing::debug_span;

use crate::flow::{Draft, Failure};
use crate::input::{Decision, Definitions, IgnoreReason, Input, Outcome, Rejection, Settings};

/// Decides what `input` does to the saga whose current state is `state` (`None` if the saga does
/// not exist yet). Pure: the same arguments always give the same decision.
pub fn decide(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    input: &Input,
    now: i64,
) -> Decision {
    let mut decision = match input {
        Input::Start(start) => {
            let _span = debug_span!("decide", saga_id = %start.saga_id, input = "start").entered();
            decide_start(definitions, settings, state, start, now)
        }
        Input::Reply(reply) => {
            let _span = debug_span!(
                "decide",
                saga_id = %reply.saga_id,
                input = "reply",
                step = %reply.step,
                phase = reply.phase.as_str(),
                attempt = reply.attempt
            )
            .entered();
            decide_reply(definitions, settings, state, reply, now)
        }
        Input::Timer { saga_id, timer_id } => {
            let _span =
                debug_span!("decide", saga_id = %saga_id, input = "timer", timer = %timer_id)
                    .entered();
            decide_timer(definitions, settings, state, timer_id, now)
        }
        Input::Signal {
            saga_id,
            step,
            signal,
        } => {
            let _span = debug_span!("decide", saga_id = %saga_id, input = "signal", step = %step, event = %signal.event).entered();
            decide_signal(definitions, settings, state, step, signal, now)
        }
    };
    crate::retention::schedule(&mut decision, &settings.retention, now);
    decision
}

/// The running saga's definition, or the decision that says why there is none.
fn running<'d>(
    definitions: &'d dyn Definitions,
    state: Option<&SagaState>,
    now: i64,
    finished: IgnoreReason,
) -> Result<&'d Definition, Box<Decision>> {
    let Some(state) = state else {
        return Err(Box::new(Decision::unchanged(Outcome::Rejected(
            Rejection::UnknownSaga,
        ))));
    };
    if state.status.is_terminal() {
        return Err(Box::new(if finished == IgnoreReason::SagaFinished {
            ignore(state, finished, now)
        } else {
            Decision::unchanged(Outcome::Ignored(finished))
        }));
    }
    let def = definitions
        .find(&state.definition, Some(state.version as u32))
        .ok_or_else(|| {
            Box::new(Decision::unchanged(Outcome::Rejected(
                Rejection::UnknownDefinition {
                    name: state.definition.clone(),
                    version: Some(state.version),
                },
            )))
        })?;
    match drift(def, state) {
        None => Ok(def),
        Some(detail) => Err(Box::new(Decision::unchanged(Outcome::Rejected(
            Rejection::DefinitionDrift {
                definition: def.key(),
                detail,
            },
        )))),
    }
}

/// How the saga's steps differ from its definition's, if they do. The decision indexes both by
/// step position, so any difference would apply an input to the wrong step.
fn drift(def: &Definition, state: &SagaState) -> Option<String> {
    let defined: Vec<&str> = def.steps.iter().map(|s| s.name.as_str()).collect();
    let recorded: Vec<&str> = state.steps.iter().map(|s| s.name.as_str()).collect();
    (defined != recorded)
        .then(|| format!("the saga has steps {recorded:?}, the definition now has {defined:?}"))
}

fn decide_start(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    start: &StartSaga,
    now: i64,
) -> Decision {
    if state.is_some() {
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::DuplicateStart));
    }
    let version = match start.version {
        Some(v) if v < 1 => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
                "version must be at least 1, got {v}"
            ))))
        }
        Some(v) => Some(v as u32),
        None => None,
    };
    let Some(def) = definitions.find(&start.definition, version) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownDefinition {
            name: start.definition.clone(),
            version: start.version,
        }));
    };
    let context: Value = match serde_json::from_str(&start.input_json) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(
                "input_json must be a JSON object".into(),
            )))
        }
        Err(e) => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
                "input_json is not valid JSON: {e}"
            ))))
        }
    };
    let state = SagaState {
        saga_id: start.saga_id.clone(),
        definition: def.name.clone(),
        version: def.version as i32,
        status: SagaStatus::Running,
        context_json: context.to_string(),
        steps: def
            .steps
            .iter()
            .map(|s| StepState {
                name: s.name.clone(),
                status: StepStatus::Pending,
                attempt: 0,
                dispatched_at: None,
                finished_at: None,
                correlation: None,
                signal_id: None,
                uncertain: false,
            })
            .collect(),
        completion_order: Vec::new(),
        next_seq: 1,
        started_at: now,
        updated_at: now,
        ignored_replies: 0,
        failure_json: None,
        timers: Vec::new(),
        compacted: false,
    };
    let mut draft = Draft::new(state, def, now, settings);
    let deadline = def
        .deadline
        .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    draft.emit_due(
        EventType::SagaStarted,
        None,
        None,
        Some(json!({"request_id": start.request_id, "input": context})),
        deadline,
    );
    if let Some(due) = deadline {
        draft.schedule(TimerKind::SagaDeadline, due, None, None);
    }
    draft.advance();
    finish(draft)
}

fn finish(draft: Draft<'_>) -> Decision {
    let mut state = draft.state;
    state.updated_at = draft.now;
    Decision {
        outcome: Outcome::Applied,
        state: Some(state),
        commands: draft.commands,
        events: draft.events,
        effects: draft.effects,
        forget: false,
    }
}

fn ignore(state: &SagaState, reason: IgnoreReason, now: i64) -> Decision {
    // The count is part of the state so that it survives restarts and shows up in audits.
    let mut state = state.clone();
    state.ignored_replies += 1;
    state.updated_at = now;
    Decision {
        outcome: Outcome::Ignored(reason),
        state: Some(state),
        commands: Vec::new(),
        events: Vec::new(),
        effects: Vec::new(),
        forget: false,
    }
}

fn decide_reply(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    reply: &Reply,
    now: i64,
) -> Decision {
    if let Some(state) = state.filter(|s| s.status.is_terminal()) {
        // Still tell a late reply from any other reply to a finished saga: it is what an
        // operator looks for when a participant is slower than its timeout.
        let late = state
            .steps
            .iter()
            .find(|s| s.name == reply.step)
            .is_some_and(|step| timed_out(step, reply));
        let reason = if late {
            IgnoreReason::LateReply
        } else {
            IgnoreReason::SagaFinished
        };
        return ignore(state, reason, now);
    }
    let def = match running(definitions, state, now, IgnoreReason::SagaFinished) {
        Ok(def) => def,
        Err(decision) => return *decision,
    };
    let state = state.expect("running() checked it");
    let Some(index) = def.step_index(&reply.step) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
            "definition {}@{} has no step named {:?}",
            def.name, def.version, reply.step
        ))));
    };
    let step = &state.steps[index];
    let awaiting = match reply.phase {
        Phase::Forward => step.status == StepStatus::Running,
        Phase::Compensate => step.status == StepStatus::Compensating,
    };
    if !awaiting || reply.attempt != step.attempt {
        let reason = if timed_out(step, reply) {
            IgnoreReason::LateReply
        } else if reply.attempt == step.attempt && phase_done(step.status, reply.phase) {
            IgnoreReason::DuplicateReply
        } else {
            IgnoreReason::StaleReply
        };
        return ignore(state, reason, now);
    }

    let mut draft = Draft::new(state.clone(), def, now, settings);
    if reply.phase == Phase::Forward {
        // A definite answer covers the attempts before it too: participants answer a repeated
        // idempotency key with the outcome they recorded.
        draft.step_mut(index).uncertain = false;
    }
    match (reply.phase, reply.status) {
        (Phase::Forward, ReplyStatus::Success) => apply_output(&mut draft, index, reply),
        (Phase::Compensate, ReplyStatus::Success) => {
            let step = draft.step_mut(index);
            step.status = StepStatus::Compensated;
            step.finished_at = Some(now);
            draft.state.timers.clear();
            draft.emit(
                EventType::CompensationSucceeded,
                Some(&reply.step),
                Some(reply.attempt),
                None,
            );
            draft.advance();
        }
        (phase, ReplyStatus::Failure) => {
            let error = match &reply.error {
                Some(e) => json!({"code": e.code, "message": e.message, "retryable": e.retryable}),
                None => {
                    json!({"code": "UNSPECIFIED", "message": "failure reply without an error", "retryable": false})
                }
            };
            draft.fail_attempt(index, phase, reply.attempt, Failure::known(error));
        }
    }
    finish(draft)
}

/// Whether `reply` answers an attempt the saga gave up on because it timed out.
fn timed_out(step: &StepState, reply: &Reply) -> bool {
    // The state keeps no per-attempt history. An attempt below the current one, or the current
    // one while backing off or after the step timed out for good, was no longer awaited; a
    // failure reply is what ends an attempt otherwise, and its duplicates are rare.
    reply.phase == Phase::Forward
        && (reply.attempt < step.attempt
            || (reply.attempt == step.attempt
                && matches!(step.status, StepStatus::Backoff | StepStatus::TimedOut)))
}

fn decide_timer(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    timer_id: &str,
    now: i64,
) -> Decision {
    if let Some(state) = state.filter(|s| s.status.is_terminal()) {
        return match state.timers.iter().find(|t| t.id == timer_id) {
            Some(timer) if timer.kind == TimerKind::Expire => {
                crate::retention::expire(state, timer, &settings.retention, now)
            }
            _ => Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleTimer)),
        };
    }
    let def = match running(definitions, state, now, IgnoreReason::StaleTimer) {
        Ok(def) => def,
        Err(decision) => return *decision,
    };
    let state = state.expect("running() checked it");
    let Some(position) = state.timers.iter().position(|t| t.id == timer_id) else {
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleTimer));
    };
    let mut draft = Draft::new(state.clone(), def, now, settings);
    let timer = draft.state.timers.remove(position);
    let index = timer.step.as_deref().and_then(|s| def.step_index(s));
    let step_status = index.map(|i| draft.state.steps[i].status);
    let compensating = draft.state.status == SagaStatus::Compensating;
    let attempt = timer.attempt.unwrap_or(1);
    let late_by = now - timer.due;
    match (timer.kind, index, step_status) {
        (TimerKind::Retry, Some(i), Some(StepStatus::Backoff)) if !compensating => {
            draft.dispatch(i, Phase::Forward, attempt);
        }
        (TimerKind::CompensationRetry, Some(i), Some(StepStatus::Backoff)) if compensating => {
            draft.dispatch(i, Phase::Compensate, attempt);
        }
        (TimerKind::AttemptTimeout, Some(i), Some(status))
            if draft.state.steps[i].attempt == attempt
                && matches!(status, StepStatus::Running | StepStatus::Compensating) =>
        {
            let phase = if status == StepStatus::Running {
                Phase::Forward
            } else {
                Phase::Compensate
            };
            let name = def.steps[i].name.clone();
            if phase == Phase::Forward {
                // Its effect is unknown until a later attempt gets a definite reply; whatever
                // ends the step before that must compensate it.
                draft.step_mut(i).uncertain = true;
            }
            let error = json!({"code": "TIMEOUT", "message": format!("no reply within the attempt's timeout (due {})", timer.due), "retryable": true});
            draft.emit(
                EventType::StepTimedOut,
                Some(&name),
                Some(attempt),
                Some(json!({"phase": phase.as_str(), "late_by_ms": late_by})),
            );
            draft.fail_attempt(
                i,
                phase,
                attempt,
                Failure {
                    error,
                    uncertain: true,
                },
            );
        }
        (TimerKind::StepDeadline, Some(i), Some(status))
            if !compensating
                && matches!(
                    status,
                    StepStatus::Running | StepStatus::Backoff | StepStatus::Waiting
                ) =>
        {
            let name = def.steps[i].name.clone();
            let attempt = draft.state.steps[i].attempt;
            draft.emit(
                EventType::StepDeadlineExceeded,
                Some(&name),
                Some(attempt),
                Some(json!({"late_by_ms": late_by})),
            );
            if status == StepStatus::Waiting {
                draft.unsubscribe(i);
            }
            let error = json!({"code": "STEP_DEADLINE", "message": "the step did not finish before its deadline", "retryable": false});
            draft.fail_step(
                i,
                attempt,
                Failure {
                    error,
                    // Only an attempt still in flight may have had an effect we never heard of.
                    uncertain: status == StepStatus::Running,
                },
            );
        }
        (TimerKind::SagaDeadline, _, _) if !compensating => saga_deadline(&mut draft, late_by),
        (TimerKind::Wait, Some(i), Some(StepStatus::Waiting)) => {
            let name = def.steps[i].name.clone();
            draft.emit(
                EventType::WaitEnded,
                Some(&name),
                None,
                Some(json!({"late_by_ms": late_by})),
            );
            draft.succeed(i, None, json!({}));
        }
        (TimerKind::AwaitTimeout, Some(i), Some(StepStatus::Waiting)) => {
            let name = def.steps[i].name.clone();
            let Action::Await(awaited) = &def.steps[i].action else {
                return Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleTimer));
            };
            draft.emit(
                EventType::AwaitTimedOut,
                Some(&name),
                None,
                Some(json!({"event": awaited.event, "late_by_ms": late_by})),
            );
            draft.unsubscribe(i);
            let error = json!({"code": "AWAIT_TIMEOUT", "message": format!("event {} did not arrive in time", awaited.event), "retryable": false});
            match &awaited.on_timeout {
                OnTimeout::Continue(output) => draft.succeed(i, None, output.clone()),
                OnTimeout::Compensate => draft.fail_step(i, 1, Failure::known(error)),
                OnTimeout::Fail => {
                    let now = draft.now;
                    let step = draft.step_mut(i);
                    step.status = StepStatus::Failed;
                    step.finished_at = Some(now);
                    draft.state.failure_json =
                        Some(json!({"step": name, "error": error, "incident": "await timed out with on_timeout: fail; nothing was compensated"}).to_string());
                    draft.end(SagaStatus::Failed, EventType::SagaFailed, Some(error));
                }
            }
        }
        // The timer belongs to a phase the saga has left: firing it changes nothing but the
        // removal (so it never fires again).
        _ => {}
    }
    finish(draft)
}

/// The saga ran out of time: whatever runs is abandoned (a command in flight counts as
/// possibly applied) and completed steps are compensated.
fn saga_deadline(draft: &mut Draft<'_>, late_by: i64) {
    draft.emit(
        EventType::SagaDeadlineExceeded,
        None,
        None,
        Some(json!({"late_by_ms": late_by})),
    );
    let error = json!({"code": "SAGA_DEADLINE", "message": "the saga did not finish before its deadline", "retryable": false});
    let active = draft.state.steps.iter().position(|s| {
        matches!(
            s.status,
            StepStatus::Running | StepStatus::Backoff | StepStatus::Waiting
        )
    });
    match active {
        Some(i) => {
            let status = draft.state.steps[i].status;
            let attempt = draft.state.steps[i].attempt;
            if status == StepStatus::Waiting {
                draft.unsubscribe(i);
            }
            draft.fail_step(
                i,
                attempt,
                Failure {
                    error,
                    uncertain: status == StepStatus::Running,
                },
            );
        }
        None => {
            draft.state.failure_json = Some(json!({"error": error}).to_string());
            draft.start_compensation();
        }
    }
}

fn decide_signal(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    step: &str,
    signal: &Signal,
    now: i64,
) -> Decision {
    let def = match running(definitions, state, now, IgnoreReason::StaleSignal) {
        Ok(def) => def,
        Err(decision) => return *decision,
    };
    let state = state.expect("running() checked it");
    let Some(index) = def.step_index(step) else {
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleSignal));
    };
    let waiting = match &def.steps[index].action {
        Action::Await(awaited) => {
            awaited.event == signal.event
                && state.steps[index].status == StepStatus::Waiting
                && state.steps[index].correlation.as_deref() == Some(&signal.correlation)
        }
        _ => false,
    };
    if !waiting {
        let reason = if state.steps[index].signal_id.as_deref() == Some(&signal.signal_id) {
            IgnoreReason::DuplicateSignal
        } else {
            IgnoreReason::StaleSignal
        };
        return Decision::unchanged(Outcome::Ignored(reason));
    }
    let payload: Value = match signal.payload_json.as_deref().map(serde_json::from_str) {
        None => json!({}),
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
                "payload_json is not valid JSON: {e}"
            ))))
        }
    };
    let mut draft = Draft::new(state.clone(), def, now, settings);
    draft.step_mut(index).signal_id = Some(signal.signal_id.clone());
    draft.emit(
        EventType::EventReceived,
        Some(step),
        None,
        Some(json!({"event": signal.event, "signal_id": signal.signal_id, "payload": payload})),
    );
    draft.succeed(index, None, payload);
    finish(draft)
}

/// Whether a step in `status` has already finished `phase` (so a matching reply is a duplicate).
fn phase_done(status: StepStatus, phase: Phase) -> bool {
    match phase {
        Phase::Forward => !matches!(status, StepStatus::Pending | StepStatus::Running),
        Phase::Compensate => matches!(
            status,
            StepStatus::Compensated | StepStatus::CompensationFailed
        ),
    }
}

fn apply_output(draft: &mut Draft<'_>, index: usize, reply: &Reply) {
    let output: Value = match reply.output_json.as_deref().map(serde_json::from_str) {
        None => Value::Null,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            let error = json!({"code": "INVALID_OUTPUT", "message": format!("output_json is not valid JSON: {e}"), "retryable": false});
            draft.fail_attempt(index, Phase::Forward, reply.attempt, Failure::known(error));
            return;
        }
    };
    draft.succeed(index, Some(reply.attempt), output);
}
