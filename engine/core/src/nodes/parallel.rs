//! Parallel steps: named branches that run at the same time, and their join.
//!
//! A branch entry (`<step>/<branch>`) is `Running` while its steps go forward, `Succeeded`
//! when they all did, `Compensating` while it unwinds (it failed, was cancelled, or the saga
//! compensates) and `Compensated` once it has.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::Parallel;
use serde_json::json;

use super::join::{self, Tally, Verdict};
use super::{advance_seq, fail_node, unwind_seq, Progress, Unwound};
use crate::draft::{Draft, Failure};
use crate::graph::{child_id, Scope};

fn ids(parallel: &Parallel, id: &str) -> Vec<String> {
    parallel
        .branches
        .iter()
        .map(|b| child_id(id, &b.name))
        .collect()
}

pub(super) fn advance<'a>(
    d: &mut Draft<'a>,
    parallel: &'a Parallel,
    scope: &Scope,
    id: &str,
) -> Progress {
    let branch_ids = ids(parallel, id);
    if d.status(id) == StepStatus::Pending {
        let now = d.now;
        let node = d.node_mut(id);
        node.status = StepStatus::Running;
        node.dispatched_at = Some(now);
        let names: Vec<&str> = parallel.branches.iter().map(|b| b.name.as_str()).collect();
        d.emit(
            EventType::StepStarted,
            Some(id),
            None,
            Some(json!({"branches": names, "join": join::describe(parallel.join)})),
        );
        for (branch, branch_id) in parallel.branches.iter().zip(&branch_ids) {
            d.set_status(branch_id, StepStatus::Running);
            d.emit(EventType::BranchStarted, Some(branch_id), None, None);
            d.open(&branch.steps, &scope.branch(&branch.key));
        }
    }
    if d.status(id) == StepStatus::Running {
        let mut verdict = Tally::of(d, &branch_ids).verdict(parallel.join);
        for (branch, branch_id) in parallel.branches.iter().zip(&branch_ids) {
            if verdict != Verdict::Open {
                break;
            }
            if d.status(branch_id) != StepStatus::Running {
                continue;
            }
            match advance_seq(d, &branch.steps, &scope.branch(&branch.key)) {
                Progress::Busy => {}
                Progress::Done => {
                    d.set_status(branch_id, StepStatus::Succeeded);
                    d.emit(EventType::BranchSucceeded, Some(branch_id), None, None);
                }
                Progress::Failed => {
                    d.set_status(branch_id, StepStatus::Compensating);
                    d.emit(EventType::BranchFailed, Some(branch_id), None, None);
                }
            }
            verdict = Tally::of(d, &branch_ids).verdict(parallel.join);
        }
        decide_join(d, parallel, id, &branch_ids, verdict);
    }
    // Failed and cancelled branches undo what they did while the saga goes on, and so do the
    // cancelled branches of a parallel or for_each nested in a branch that succeeded.
    let unwinding = unwind_branches(d, parallel, scope, &branch_ids, false);
    let mut nested_stuck = false;
    for (branch, branch_id) in parallel.branches.iter().zip(&branch_ids) {
        if d.status(branch_id) == StepStatus::Succeeded {
            nested_stuck |=
                advance_seq(d, &branch.steps, &scope.branch(&branch.key)) == Progress::Failed;
        }
    }
    match d.status(id) {
        StepStatus::Running => Progress::Busy,
        StepStatus::Succeeded if unwinding != Unwound::Stuck && !nested_stuck => Progress::Done,
        _ => Progress::Failed,
    }
}

fn decide_join(
    d: &mut Draft<'_>,
    parallel: &Parallel,
    id: &str,
    branch_ids: &[String],
    verdict: Verdict,
) {
    match verdict {
        Verdict::Open => {}
        Verdict::Met => {
            let cancelled = join::cancel_running(d, branch_ids, "join met");
            let succeeded: Vec<&String> = branch_ids
                .iter()
                .filter(|b| d.status(b) == StepStatus::Succeeded)
                .collect();
            let detail = json!({"join": join::describe(parallel.join), "succeeded": succeeded, "cancelled": cancelled});
            d.set_status(id, StepStatus::Succeeded);
            d.state.completion_order.push(id.to_string());
            d.emit(EventType::StepSucceeded, Some(id), None, Some(detail));
        }
        Verdict::Unreachable => {
            let cancelled = join::cancel_running(d, branch_ids, "join can no longer be met");
            let failure = Failure::fatal(
                "JOIN_FAILED",
                format!(
                    "too many branches failed for join {} (cancelled: {})",
                    join::describe(parallel.join),
                    cancelled.join(", ")
                ),
            );
            fail_node(d, id, None, failure);
        }
    }
}

/// Unwinds the branches that must be: the failed and cancelled ones, or with `all` every
/// branch (the saga compensates).
fn unwind_branches<'a>(
    d: &mut Draft<'a>,
    parallel: &'a Parallel,
    scope: &Scope,
    branch_ids: &[String],
    all: bool,
) -> Unwound {
    let mut results = Vec::new();
    for (branch, branch_id) in parallel.branches.iter().zip(branch_ids) {
        let status = d.status(branch_id);
        if all && status == StepStatus::Running {
            join::cancel_running(d, std::slice::from_ref(branch_id), "the saga compensates");
        } else if all && status == StepStatus::Succeeded {
            d.set_status(branch_id, StepStatus::Compensating);
        }
        if d.status(branch_id) != StepStatus::Compensating {
            continue;
        }
        let result = unwind_seq(d, &branch.steps, &scope.branch(&branch.key));
        if result == Unwound::Done {
            d.set_status(branch_id, StepStatus::Compensated);
        }
        results.push(result);
    }
    Unwound::all(results)
}

pub(super) fn unwind<'a>(
    d: &mut Draft<'a>,
    parallel: &'a Parallel,
    scope: &Scope,
    id: &str,
) -> Unwound {
    match d.status(id) {
        StepStatus::Compensated | StepStatus::Skipped => return Unwound::Done,
        StepStatus::Compensating => {}
        _ => d.set_status(id, StepStatus::Compensating),
    }
    let branch_ids = ids(parallel, id);
    let result = unwind_branches(d, parallel, scope, &branch_ids, true);
    if result == Unwound::Done {
        d.set_status(id, StepStatus::Compensated);
    }
    result
}
