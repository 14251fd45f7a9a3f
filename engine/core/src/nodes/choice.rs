//! Choice steps: the first branch whose condition holds runs, else `otherwise`, else nothing.
//!
//! The chosen branch has an entry `<step>/<n>` (1-based) or `<step>/otherwise`; its steps
//! write their outputs where the choice step itself would.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::{Choice, Step};
use serde_json::json;

use super::{
    advance_seq, fail_node, finish_unwinding, start_unwinding, unwind_seq, Progress, Unwound,
};
use crate::draft::{Draft, Failure};
use crate::graph::{child_id, Scope};

/// The branch label and steps of every branch, `otherwise` last.
fn branches(choice: &Choice) -> Vec<(String, &[Step])> {
    choice
        .branches
        .iter()
        .enumerate()
        .map(|(i, b)| ((i + 1).to_string(), b.steps.as_slice()))
        .chain(
            choice
                .otherwise
                .as_deref()
                .map(|steps| ("otherwise".to_string(), steps)),
        )
        .collect()
}

/// The branch that was chosen, if the step started.
fn chosen<'a>(d: &Draft<'_>, choice: &'a Choice, id: &str) -> Option<(String, &'a [Step])> {
    branches(choice)
        .into_iter()
        .find(|(label, _)| d.node(&child_id(id, label)).is_some())
}

pub(super) fn advance<'a>(
    d: &mut Draft<'a>,
    choice: &'a Choice,
    scope: &Scope,
    id: &str,
) -> Progress {
    if d.status(id) == StepStatus::Pending && !start(d, choice, scope, id) {
        return match d.status(id) {
            StepStatus::Skipped => Progress::Done,
            _ => Progress::Failed,
        };
    }
    if d.status(id) == StepStatus::Running {
        let Some((label, steps)) = chosen(d, choice, id) else {
            return Progress::Failed;
        };
        let branch_id = child_id(id, &label);
        match advance_seq(d, steps, scope) {
            Progress::Busy => {}
            Progress::Done => {
                d.set_status(&branch_id, StepStatus::Succeeded);
                d.set_status(id, StepStatus::Succeeded);
                d.state.completion_order.push(id.to_string());
                d.emit(
                    EventType::StepSucceeded,
                    Some(id),
                    None,
                    Some(json!({"branch": label})),
                );
            }
            Progress::Failed => {
                // The failing step recorded the failure; the choice fails with it.
                d.set_status(&branch_id, StepStatus::Failed);
                d.set_status(id, StepStatus::Failed);
            }
        }
    }
    match d.status(id) {
        StepStatus::Running => Progress::Busy,
        // The chosen branch keeps walking: a container in it may still be unwinding.
        StepStatus::Succeeded => match chosen(d, choice, id) {
            Some((_, steps)) if advance_seq(d, steps, scope) == Progress::Failed => {
                Progress::Failed
            }
            _ => Progress::Done,
        },
        _ => Progress::Failed,
    }
}

/// Picks the branch; `false` when none runs (skipped, or a condition could not be evaluated).
fn start<'a>(d: &mut Draft<'a>, choice: &'a Choice, scope: &Scope, id: &str) -> bool {
    let view = scope.view(&d.context());
    let mut picked = None;
    for (i, branch) in choice.branches.iter().enumerate() {
        match branch.condition.eval(&view) {
            Ok(true) => {
                picked = Some(((i + 1).to_string(), &branch.steps, Some(&branch.condition)));
                break;
            }
            Ok(false) => {}
            Err(e) => {
                fail_node(d, id, None, Failure::fatal("CONDITION", e.to_string()));
                return false;
            }
        }
    }
    let picked = picked.or_else(|| {
        choice
            .otherwise
            .as_ref()
            .map(|steps| ("otherwise".to_string(), steps, None))
    });
    let Some((label, steps, condition)) = picked else {
        d.set_status(id, StepStatus::Skipped);
        d.emit(
            EventType::StepSkipped,
            Some(id),
            None,
            Some(json!({"reason": "no choice branch matched and there is no otherwise"})),
        );
        return false;
    };
    let now = d.now;
    let node = d.node_mut(id);
    node.status = StepStatus::Running;
    node.dispatched_at = Some(now);
    let branch_id = child_id(id, &label);
    d.emit(
        EventType::StepStarted,
        Some(id),
        None,
        Some(json!({"branch": label, "when": condition.map(|c| c.source())})),
    );
    d.set_status(&branch_id, StepStatus::Running);
    d.open(steps, scope);
    true
}

pub(super) fn unwind<'a>(
    d: &mut Draft<'a>,
    choice: &'a Choice,
    scope: &Scope,
    id: &str,
) -> Unwound {
    if !start_unwinding(d, id) {
        return Unwound::Done;
    }
    let result = match chosen(d, choice, id) {
        Some((label, steps)) => {
            let branch_id = child_id(id, &label);
            let result = unwind_seq(d, steps, scope);
            finish_unwinding(d, &branch_id, result)
        }
        None => Unwound::Done,
    };
    finish_unwinding(d, id, result)
}
