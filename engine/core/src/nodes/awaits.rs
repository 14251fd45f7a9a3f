//! Await steps: waiting for an external event (a signal), with a timeout and a deadline.

use sagaflow_avro::{EventType, Signal, StepStatus, TimerKind};
use sagaflow_definition::{Action, Await, Correlation, OnTimeout};
use serde_json::{json, Value};

use super::command::Handled;
use super::{leaf, Progress, Unwound};
use crate::draft::{ms, Draft, Failure};
use crate::input::{Effect, IgnoreReason, Rejection};

pub(super) fn advance(d: &mut Draft<'_>, id: &str) -> Progress {
    if d.status(id) == StepStatus::Pending {
        start(d, id);
    }
    leaf::progress(d.status(id))
}

fn start(d: &mut Draft<'_>, id: &str) {
    let Some((step, scope)) = d.locate(id) else {
        return;
    };
    let Action::Await(awaited) = &step.action else {
        return;
    };
    let correlation = match &awaited.correlate {
        Correlation::SagaId => Ok(d.state.saga_id.clone()),
        Correlation::Context(path) => match path.get(&scope.view(&d.context())) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
            Some(other) => Err(format!("{path} = {other} cannot be a correlation value")),
            None => Err(format!("the context has nothing at {path}")),
        },
    };
    let correlation = match correlation {
        Ok(c) => c,
        Err(message) => {
            leaf::fail_step(d, id, 1, Failure::fatal("CORRELATION", message));
            return;
        }
    };
    let now = d.now;
    let due = awaited.timeout.map(|t| now + ms(t));
    let node = d.node_mut(id);
    node.status = StepStatus::Waiting;
    node.attempt = 1;
    node.dispatched_at = Some(now);
    node.correlation = Some(correlation.clone());
    d.emit_due(
        EventType::AwaitStarted,
        Some(id),
        None,
        Some(json!({"event": awaited.event, "correlation": correlation})),
        due,
    );
    if let Some(due) = due {
        d.schedule(TimerKind::AwaitTimeout, due, Some(id), None);
    }
    if let Some(deadline) = step.deadline {
        d.schedule(TimerKind::StepDeadline, now + ms(deadline), Some(id), None);
    }
    d.effects.push(Effect::Subscribe {
        event: awaited.event.clone(),
        correlation,
        step: id.to_string(),
    });
}

/// Applies a signal to the await step it was delivered to.
pub(crate) fn on_signal(d: &mut Draft<'_>, id: &str, signal: &Signal) -> Handled {
    let Some((step, _)) = d.locate(id) else {
        return Handled::Ignored(IgnoreReason::StaleSignal);
    };
    let Some(node) = d.node(id) else {
        return Handled::Ignored(IgnoreReason::StaleSignal);
    };
    let waiting = match &step.action {
        Action::Await(awaited) => {
            awaited.event == signal.event
                && node.status == StepStatus::Waiting
                && node.correlation.as_deref() == Some(&signal.correlation)
        }
        _ => false,
    };
    if !waiting {
        // A step that stopped waiting because its branch was cancelled gets the same answer as
        // any step no longer waiting: the signal goes back to be matched elsewhere.
        let reason = if node.signal_id.as_deref() == Some(&signal.signal_id) {
            IgnoreReason::DuplicateSignal
        } else {
            IgnoreReason::StaleSignal
        };
        return Handled::Ignored(reason);
    }
    let payload: Value = match signal.payload_json.as_deref().map(serde_json::from_str) {
        None => json!({}),
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return Handled::Rejected(Rejection::InvalidInput(format!(
                "payload_json is not valid JSON: {e}"
            )))
        }
    };
    d.node_mut(id).signal_id = Some(signal.signal_id.clone());
    d.emit(
        EventType::EventReceived,
        Some(id),
        None,
        Some(json!({"event": signal.event, "signal_id": signal.signal_id, "payload": payload})),
    );
    leaf::succeed(d, id, None, payload);
    Handled::Applied
}

pub(super) fn on_timer(
    d: &mut Draft<'_>,
    awaited: &Await,
    kind: TimerKind,
    id: &str,
    late_by: i64,
) {
    if d.status(id) != StepStatus::Waiting {
        return;
    }
    match kind {
        TimerKind::AwaitTimeout => {
            d.emit(
                EventType::AwaitTimedOut,
                Some(id),
                None,
                Some(json!({"event": awaited.event, "late_by_ms": late_by})),
            );
            d.unsubscribe(id);
            let error = json!({"code": "AWAIT_TIMEOUT", "message": format!("event {} did not arrive in time", awaited.event), "retryable": false});
            match &awaited.on_timeout {
                OnTimeout::Continue(output) => leaf::succeed(d, id, None, output.clone()),
                OnTimeout::Compensate => leaf::fail_step(d, id, 1, Failure::known(error)),
                // Nothing is compensated: the definition asked for a person to decide.
                OnTimeout::Fail => {
                    d.set_status(id, StepStatus::Failed);
                    d.set_failure(json!({"step": id, "error": error, "incident": "await timed out with on_timeout: fail; nothing was compensated"}));
                    d.incident("await_timed_out");
                }
            }
        }
        TimerKind::StepDeadline => {
            d.emit(
                EventType::StepDeadlineExceeded,
                Some(id),
                Some(1),
                Some(json!({"late_by_ms": late_by})),
            );
            d.unsubscribe(id);
            let error = json!({"code": "STEP_DEADLINE", "message": "the step did not finish before its deadline", "retryable": false});
            leaf::fail_step(d, id, 1, Failure::known(error));
        }
        _ => {}
    }
}

/// An await has nothing to undo; one still waiting stops listening.
pub(super) fn unwind(d: &mut Draft<'_>, id: &str) -> Unwound {
    match d.status(id) {
        StepStatus::Waiting => {
            d.unsubscribe(id);
            d.cancel_timers(id, &[TimerKind::AwaitTimeout, TimerKind::StepDeadline]);
            d.set_status(id, StepStatus::Skipped);
        }
        StepStatus::Succeeded => d.set_status(id, StepStatus::Compensated),
        _ => {}
    }
    Unwound::Done
}
