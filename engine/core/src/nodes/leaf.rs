//! What command, wait and await steps share: succeeding with a result, failing for good, and
//! how their status reads going forward.

use sagaflow_avro::{EventType, StepStatus, TimerKind};
use serde_json::{json, Value};

use super::Progress;
use crate::draft::{Draft, Failure};

/// A leaf's status as the sequence around it sees it.
pub(super) fn progress(status: StepStatus) -> Progress {
    match status {
        StepStatus::Succeeded | StepStatus::Skipped => Progress::Done,
        StepStatus::Pending
        | StepStatus::Running
        | StepStatus::Backoff
        | StepStatus::Waiting
        | StepStatus::Cancelled
        | StepStatus::Compensating => Progress::Busy,
        StepStatus::Failed
        | StepStatus::TimedOut
        | StepStatus::Compensated
        | StepStatus::CompensationFailed => Progress::Failed,
    }
}

/// Marks the step succeeded with `output` mapped into its scope of the context.
pub(crate) fn succeed(d: &mut Draft<'_>, id: &str, attempt: Option<i32>, output: Value) {
    let Some((step, scope)) = d.locate(id) else {
        return;
    };
    let mut entries = Vec::with_capacity(step.output.len());
    for (key, path) in &step.output {
        match path.get(&output) {
            Some(value) => entries.push((key.clone(), value.clone())),
            None => {
                let failure = Failure::fatal(
                    "OUTPUT_MAPPING",
                    format!("step output has no value at {path} for context key {key}"),
                );
                fail_step(d, id, attempt.unwrap_or(1), failure);
                return;
            }
        }
    }
    if let Err(failure) = d.record_outputs(&scope, entries) {
        fail_step(d, id, attempt.unwrap_or(1), failure);
        return;
    }
    d.cancel_timers(
        id,
        &[
            TimerKind::AttemptTimeout,
            TimerKind::StepDeadline,
            TimerKind::AwaitTimeout,
        ],
    );
    d.set_status(id, StepStatus::Succeeded);
    d.state.completion_order.push(id.to_string());
    d.emit(EventType::StepSucceeded, Some(id), attempt, Some(output));
}

/// The step failed for good; what follows is for the graph walk to decide. A step whose last
/// attempt's effect is unknown is marked timed out, to be compensated first.
pub(super) fn fail_step(d: &mut Draft<'_>, id: &str, attempt: i32, failure: Failure) {
    d.cancel_timers(
        id,
        &[
            TimerKind::AttemptTimeout,
            TimerKind::StepDeadline,
            TimerKind::Retry,
            TimerKind::AwaitTimeout,
            TimerKind::Wait,
        ],
    );
    let compensable = d
        .locate(id)
        .is_some_and(|(step, _)| step.compensation.is_some());
    // An attempt in flight, or an earlier one that timed out with no definite reply since,
    // may have taken effect.
    let uncertain = (failure.uncertain || d.node(id).is_some_and(|n| n.uncertain)) && compensable;
    give_up(d, id, attempt, failure.error.clone(), uncertain);
    d.set_failure(json!({"step": id, "error": failure.error}));
}

/// Ends the step's forward phase for good, with `detail` (the error) in its `STEP_FAILED`: a
/// step whose effect may stand is marked timed out, to be compensated first (it is the latest
/// effect that may stand); any other one failed.
pub(super) fn give_up(
    d: &mut Draft<'_>,
    id: &str,
    attempt: i32,
    mut detail: Value,
    uncertain: bool,
) {
    if uncertain {
        d.set_status(id, StepStatus::TimedOut);
        d.state.completion_order.push(id.to_string());
        detail["uncertain"] = Value::Bool(true);
    } else {
        d.set_status(id, StepStatus::Failed);
    }
    d.emit(EventType::StepFailed, Some(id), Some(attempt), Some(detail));
}
