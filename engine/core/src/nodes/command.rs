//! Command steps: dispatching attempts, replies, retries, timeouts and compensation.

use sagaflow_avro::{
    Command, EventType, Phase, Reply, ReplyStatus, SagaState, StepStatus, TimerKind,
};
use sagaflow_definition::{Action, CommandSpec, RetryPolicy};
use serde_json::{json, Value};

use super::{leaf, Progress, Unwound};
use crate::draft::{ms, Draft, Failure};
use crate::ids::{command_id, idempotency_key};
use crate::input::{Dispatch, DispatchAction, IgnoreReason, Rejection};
use crate::jitter::unit;

/// What a reply did.
pub(crate) enum Handled {
    Applied,
    Ignored(IgnoreReason),
    Rejected(Rejection),
}

pub(super) fn advance(d: &mut Draft<'_>, id: &str) -> Progress {
    if d.status(id) == StepStatus::Pending {
        dispatch(d, id, Phase::Forward, 1);
    }
    leaf::progress(d.status(id))
}

/// Sends attempt `attempt` of `phase` for step `id`. A payload that cannot be rendered fails
/// the attempt instead of sending a broken command.
pub(crate) fn dispatch(d: &mut Draft<'_>, id: &str, phase: Phase, attempt: i32) {
    let Some((step, scope)) = d.locate(id) else {
        return;
    };
    let spec: &CommandSpec = match (phase, &step.action, &step.compensation) {
        (Phase::Forward, Action::Command(spec), _) => spec,
        (Phase::Compensate, _, Some(spec)) => spec,
        _ => {
            // Only a definition edited under a deployed version gets here (the drift check
            // compares step names, not kinds). Never panic on a running saga: fail the
            // phase, which an operator sees.
            let error = json!({
                "code": "DEFINITION_DRIFT",
                "message": format!("step {} of {} no longer defines a {} command", step.name, d.def.key(), phase.as_str()),
                "retryable": false,
            });
            match phase {
                Phase::Forward => leaf::fail_step(d, id, attempt, Failure::known(error)),
                Phase::Compensate => compensation_failed(d, id, attempt, error),
            }
            return;
        }
    };
    let payload = match spec.payload.render(&scope.view(&d.context())) {
        Ok(payload) => payload,
        Err(e) => {
            let error =
                json!({"code": "PAYLOAD_RENDER", "message": e.to_string(), "retryable": false});
            fail_attempt(d, id, phase, attempt, Failure::known(error));
            return;
        }
    };
    let now = d.now;
    let deadline_at = step.timeout.map(|t| now + ms(t));
    let command = Command {
        message_id: command_id(&d.state.saga_id, id, phase, attempt),
        saga_id: d.state.saga_id.clone(),
        definition: d.state.definition.clone(),
        version: d.state.version,
        step: id.to_string(),
        phase,
        attempt,
        idempotency_key: idempotency_key(&d.state.saga_id, id, phase),
        command_type: spec.command_type.clone(),
        payload_json: payload.to_string(),
        reply_to: d.settings.replies.clone(),
        deadline: deadline_at,
        issued_at: now,
    };
    d.commands.push((spec.topic.clone(), command));
    let node = d.node_mut(id);
    node.status = match phase {
        Phase::Forward => StepStatus::Running,
        Phase::Compensate => StepStatus::Compensating,
    };
    node.attempt = attempt;
    node.dispatched_at = Some(now);
    let event = match phase {
        Phase::Forward => EventType::StepDispatched,
        Phase::Compensate => EventType::CompensationDispatched,
    };
    d.emit_due(event, Some(id), Some(attempt), None, deadline_at);
    if let Some(due) = deadline_at {
        d.schedule(TimerKind::AttemptTimeout, due, Some(id), Some(attempt));
    }
    if phase == Phase::Forward && attempt == 1 {
        if let Some(deadline) = step.deadline {
            d.schedule(TimerKind::StepDeadline, now + ms(deadline), Some(id), None);
        }
    }
}

/// Whether a step in `status` awaits the reply to its current attempt of `phase` (a cancelled
/// step still awaits its forward reply, to know whether to compensate it).
pub(crate) fn awaits(status: StepStatus, phase: Phase) -> bool {
    match phase {
        Phase::Forward => matches!(status, StepStatus::Running | StepStatus::Cancelled),
        Phase::Compensate => status == StepStatus::Compensating,
    }
}

/// The message ids of the commands `state` awaits replies to.
pub fn awaited_commands(state: &SagaState) -> Vec<String> {
    state
        .steps
        .iter()
        .flat_map(|n| {
            [Phase::Forward, Phase::Compensate]
                .into_iter()
                .filter(|p| awaits(n.status, *p))
                .map(|p| command_id(&state.saga_id, &n.name, p, n.attempt))
        })
        .collect()
}

/// The engine held the command of an attempt (its participant is paused) or sent it after
/// all. Time spent held is not the participant's: the attempt's timeout stops while the
/// command is held and starts again, in full, when it is sent. Step and saga deadlines keep
/// running, since they bound the business process, not one participant.
pub(crate) fn on_dispatch(d: &mut Draft<'_>, dispatch: &Dispatch) -> Handled {
    let id = dispatch.step.as_str();
    let Some(node) = d.node(id) else {
        return Handled::Ignored(IgnoreReason::StaleDispatch);
    };
    if !awaits(node.status, dispatch.phase) || node.attempt != dispatch.attempt {
        return Handled::Ignored(IgnoreReason::StaleDispatch);
    }
    let mut detail = json!({"topic": dispatch.topic, "phase": dispatch.phase.as_str()});
    if let Some(reason) = &dispatch.reason {
        detail["reason"] = json!(reason);
    }
    d.cancel_timers(id, &[TimerKind::AttemptTimeout]);
    match dispatch.action {
        DispatchAction::Held => {
            d.emit(
                EventType::CommandHeld,
                Some(id),
                Some(dispatch.attempt),
                Some(detail),
            );
        }
        DispatchAction::Released => {
            let due = d
                .locate(id)
                .and_then(|(step, _)| step.timeout)
                .map(|t| d.now + ms(t));
            d.emit_due(
                EventType::CommandReleased,
                Some(id),
                Some(dispatch.attempt),
                Some(detail),
                due,
            );
            if let Some(due) = due {
                d.schedule(
                    TimerKind::AttemptTimeout,
                    due,
                    Some(id),
                    Some(dispatch.attempt),
                );
            }
        }
    }
    Handled::Applied
}

/// Applies a participant's reply to the step it answers.
pub(crate) fn on_reply(d: &mut Draft<'_>, reply: &Reply) -> Handled {
    let id = reply.step.as_str();
    let Some(node) = d.node(id) else {
        return match d.locate(id) {
            // A step of a branch that never started: nothing of the saga sent this.
            Some(_) => Handled::Ignored(IgnoreReason::StaleReply),
            None => Handled::Rejected(Rejection::InvalidInput(format!(
                "definition {} has no step named {:?}",
                d.def.key(),
                reply.step
            ))),
        };
    };
    if !awaits(node.status, reply.phase) || reply.attempt != node.attempt {
        let reason = if timed_out(node.status, node.attempt, reply) {
            IgnoreReason::LateReply
        } else if reply.attempt == node.attempt && phase_done(node.status, reply.phase) {
            IgnoreReason::DuplicateReply
        } else {
            IgnoreReason::StaleReply
        };
        return Handled::Ignored(reason);
    }
    if reply.phase == Phase::Forward {
        // A definite answer covers the attempts before it too: participants answer a repeated
        // idempotency key with the outcome they recorded.
        d.node_mut(id).uncertain = false;
    }
    match (reply.phase, reply.status) {
        (Phase::Forward, ReplyStatus::Success) => {
            match reply
                .output_json
                .as_deref()
                .map(serde_json::from_str::<Value>)
            {
                None => leaf::succeed(d, id, Some(reply.attempt), Value::Null),
                Some(Ok(output)) => leaf::succeed(d, id, Some(reply.attempt), output),
                Some(Err(e)) => {
                    let error = json!({"code": "INVALID_OUTPUT", "message": format!("output_json is not valid JSON: {e}"), "retryable": false});
                    fail_attempt(d, id, Phase::Forward, reply.attempt, Failure::known(error));
                }
            }
        }
        (Phase::Compensate, ReplyStatus::Success) => {
            d.cancel_timers(id, &[TimerKind::AttemptTimeout]);
            d.set_status(id, StepStatus::Compensated);
            d.emit(
                EventType::CompensationSucceeded,
                Some(id),
                Some(reply.attempt),
                None,
            );
        }
        (phase, ReplyStatus::Failure) => {
            let error = match &reply.error {
                Some(e) => json!({"code": e.code, "message": e.message, "retryable": e.retryable}),
                None => {
                    json!({"code": "UNSPECIFIED", "message": "failure reply without an error", "retryable": false})
                }
            };
            fail_attempt(d, id, phase, reply.attempt, Failure::known(error));
        }
    }
    Handled::Applied
}

/// Whether `reply` answers an attempt the saga gave up on because it timed out.
pub(crate) fn timed_out(status: StepStatus, attempt: i32, reply: &Reply) -> bool {
    // The state keeps no per-attempt history. An attempt below the current one, or the current
    // one while backing off or after the step timed out for good, was no longer awaited; a
    // failure reply is what ends an attempt otherwise, and its duplicates are rare.
    reply.phase == Phase::Forward
        && (reply.attempt < attempt
            || (reply.attempt == attempt
                && matches!(status, StepStatus::Backoff | StepStatus::TimedOut)))
}

/// Whether a step in `status` has already finished `phase` (so a matching reply is a duplicate).
fn phase_done(status: StepStatus, phase: Phase) -> bool {
    match phase {
        Phase::Forward => !matches!(
            status,
            StepStatus::Pending | StepStatus::Running | StepStatus::Cancelled
        ),
        Phase::Compensate => matches!(
            status,
            StepStatus::Compensated | StepStatus::CompensationFailed
        ),
    }
}

/// Records a failed attempt of `phase` and retries it or decides what follows.
fn fail_attempt(d: &mut Draft<'_>, id: &str, phase: Phase, attempt: i32, failure: Failure) {
    d.cancel_timers(id, &[TimerKind::AttemptTimeout]);
    let Some((step, _)) = d.locate(id) else {
        return;
    };
    if phase == Phase::Forward && d.status(id) == StepStatus::Cancelled {
        // Its branch is gone: the attempt is resolved, never retried. One that may have taken
        // effect is compensated by the branch's unwinding.
        let mut detail = failure.error;
        detail["cancelled"] = Value::Bool(true);
        let uncertain = failure.uncertain && step.compensation.is_some();
        leaf::give_up(d, id, attempt, detail, uncertain);
        return;
    }
    let policy: &RetryPolicy = match phase {
        Phase::Forward => &step.retry,
        Phase::Compensate => &step.compensation_retry,
    };
    let failed = u32::try_from(attempt).unwrap_or(u32::MAX);
    let retry = failure.retryable()
        && policy.retries_code(failure.code())
        && policy.allows_attempt_after(failed);
    if retry {
        let delay = policy.delay(failed, unit(&d.state.saga_id, id, phase, attempt));
        let due = d.now + ms(delay);
        let (event, kind) = match phase {
            Phase::Forward => (EventType::StepRetryScheduled, TimerKind::Retry),
            Phase::Compensate => (
                EventType::CompensationRetryScheduled,
                TimerKind::CompensationRetry,
            ),
        };
        d.node_mut(id).status = StepStatus::Backoff;
        let detail =
            json!({"error": failure.error, "next_attempt": attempt + 1, "delay_ms": ms(delay)});
        d.emit_due(event, Some(id), Some(attempt), Some(detail), Some(due));
        d.schedule(kind, due, Some(id), Some(attempt + 1));
        return;
    }
    match phase {
        Phase::Forward => leaf::fail_step(d, id, attempt, failure),
        Phase::Compensate => compensation_failed(d, id, attempt, failure.error),
    }
}

fn compensation_failed(d: &mut Draft<'_>, id: &str, attempt: i32, error: Value) {
    d.emit(
        EventType::CompensationFailed,
        Some(id),
        Some(attempt),
        Some(error.clone()),
    );
    d.set_status(id, StepStatus::CompensationFailed);
    d.set_failure(json!({"step": id, "error": error, "incident": "compensation failed; an operator must repair this saga"}));
}

/// Whether a step in backoff is waiting to retry its compensation (not its forward command).
fn compensation_backoff(d: &Draft<'_>, id: &str) -> bool {
    d.has_timer(id, TimerKind::CompensationRetry)
}

pub(super) fn on_timer(d: &mut Draft<'_>, kind: TimerKind, id: &str, attempt: i32, late_by: i64) {
    let Some(node) = d.node(id) else {
        return;
    };
    let (status, current) = (node.status, node.attempt);
    match (kind, status) {
        (TimerKind::Retry, StepStatus::Backoff) => dispatch(d, id, Phase::Forward, attempt),
        (TimerKind::CompensationRetry, StepStatus::Backoff) => {
            dispatch(d, id, Phase::Compensate, attempt)
        }
        (
            TimerKind::AttemptTimeout,
            StepStatus::Running | StepStatus::Compensating | StepStatus::Cancelled,
        ) if current == attempt => {
            let phase = if status == StepStatus::Compensating {
                Phase::Compensate
            } else {
                Phase::Forward
            };
            if phase == Phase::Forward {
                // Its effect is unknown until a later attempt gets a definite reply; whatever
                // ends the step before that must compensate it.
                d.node_mut(id).uncertain = true;
            }
            let due = d.now - late_by;
            let error = json!({"code": "TIMEOUT", "message": format!("no reply within the attempt's timeout (due {due})"), "retryable": true});
            d.emit(
                EventType::StepTimedOut,
                Some(id),
                Some(attempt),
                Some(json!({"phase": phase.as_str(), "late_by_ms": late_by})),
            );
            fail_attempt(
                d,
                id,
                phase,
                attempt,
                Failure {
                    error,
                    uncertain: true,
                },
            );
        }
        (TimerKind::StepDeadline, StepStatus::Running | StepStatus::Backoff)
            if !compensation_backoff(d, id) =>
        {
            d.emit(
                EventType::StepDeadlineExceeded,
                Some(id),
                Some(current),
                Some(json!({"late_by_ms": late_by})),
            );
            let error = json!({"code": "STEP_DEADLINE", "message": "the step did not finish before its deadline", "retryable": false});
            leaf::fail_step(
                d,
                id,
                current,
                Failure {
                    error,
                    // Only an attempt still in flight may have had an effect we never heard of.
                    uncertain: status == StepStatus::Running,
                },
            );
        }
        _ => {}
    }
}

/// Undoes what the step did: compensates a completed (or possibly completed) step, stops one
/// that was going to retry, and waits for an attempt in flight to be resolved.
pub(super) fn unwind(d: &mut Draft<'_>, id: &str) -> Unwound {
    let Some((step, _)) = d.locate(id) else {
        return Unwound::Done;
    };
    let compensable = step.compensation.is_some();
    match d.status(id) {
        StepStatus::Succeeded | StepStatus::TimedOut if compensable => {
            dispatch(d, id, Phase::Compensate, 1);
            match d.status(id) {
                StepStatus::CompensationFailed => Unwound::Stuck,
                StepStatus::Compensated => Unwound::Done,
                _ => Unwound::Busy,
            }
        }
        StepStatus::Succeeded | StepStatus::TimedOut => {
            // Nothing to undo (e.g. a notification).
            d.set_status(id, StepStatus::Compensated);
            Unwound::Done
        }
        StepStatus::Backoff if compensation_backoff(d, id) => Unwound::Busy,
        StepStatus::Backoff => {
            d.cancel_timers(id, &[TimerKind::Retry, TimerKind::StepDeadline]);
            if d.node(id).is_some_and(|n| n.uncertain) && compensable {
                possibly_applied(
                    d,
                    id,
                    "stopped while waiting to retry an attempt that timed out; it may have taken effect",
                );
                unwind(d, id)
            } else {
                d.set_status(id, StepStatus::Skipped);
                Unwound::Done
            }
        }
        StepStatus::Running => {
            d.cancel_timers(id, &[TimerKind::StepDeadline]);
            if step.timeout.is_some() {
                // Its reply, or its timeout, will say whether it took effect.
                d.node_mut(id).status = StepStatus::Cancelled;
                Unwound::Busy
            } else if compensable {
                // Nothing bounds the wait for its reply: take it as possibly applied now.
                d.node_mut(id).uncertain = true;
                possibly_applied(
                    d,
                    id,
                    "its branch stopped with this attempt in flight and no timeout to wait for; it may have taken effect",
                );
                unwind(d, id)
            } else {
                d.set_status(id, StepStatus::Compensated);
                Unwound::Done
            }
        }
        StepStatus::Compensating | StepStatus::Cancelled => Unwound::Busy,
        StepStatus::CompensationFailed => Unwound::Stuck,
        StepStatus::Pending => {
            d.set_status(id, StepStatus::Skipped);
            Unwound::Done
        }
        StepStatus::Failed
        | StepStatus::Compensated
        | StepStatus::Skipped
        | StepStatus::Waiting => Unwound::Done,
    }
}

/// A stopped step whose last attempt may have taken effect: it ends `TIMED_OUT`, to be
/// compensated, and the log says why.
fn possibly_applied(d: &mut Draft<'_>, id: &str, message: &str) {
    let attempt = d.node(id).map_or(1, |n| n.attempt);
    let detail =
        json!({"code": "CANCELLED", "message": message, "retryable": false, "cancelled": true});
    leaf::give_up(d, id, attempt, detail, true);
}
