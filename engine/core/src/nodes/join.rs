//! Joins of a parallel or for_each step: when it is done, when it can no longer be, and
//! stopping the branches it no longer needs.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::{Join, Step};
use serde_json::{json, Value};

use super::{advance_seq, fail_node, unwind_seq, Progress, Unwound};
use crate::draft::{Draft, Failure};
use crate::graph::Scope;

/// How a join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Enough branches succeeded.
    Met,
    /// Too many failed for enough to succeed.
    Unreachable,
    /// Not decided yet.
    Open,
}

/// The branches of a fan-out by where they are.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) succeeded: usize,
    pub(super) running: usize,
    pub(super) not_started: usize,
    pub(super) total: usize,
}

impl Tally {
    /// Counts the branches with these entry ids (a missing entry has not started).
    pub(super) fn of(d: &Draft<'_>, ids: &[String]) -> Tally {
        let mut tally = Tally {
            total: ids.len(),
            ..Tally::default()
        };
        for id in ids {
            match d.node(id).map(|n| n.status) {
                None | Some(StepStatus::Pending) => tally.not_started += 1,
                Some(StepStatus::Running) => tally.running += 1,
                Some(StepStatus::Succeeded) => tally.succeeded += 1,
                Some(_) => {}
            }
        }
        tally
    }

    pub(super) fn verdict(&self, join: Join) -> Verdict {
        let needed = join.needed(self.total);
        if self.succeeded >= needed {
            Verdict::Met
        } else if self.succeeded + self.running + self.not_started < needed {
            Verdict::Unreachable
        } else {
            Verdict::Open
        }
    }
}

/// How a join is written in events.
pub(super) fn describe(join: Join) -> Value {
    match join {
        Join::All => Value::from("all"),
        Join::Any => Value::from("any"),
        Join::AtLeast(n) => json!({"at_least": n}),
    }
}

/// Stops the running branches among `ids`: each unwinds from now on. Returns their ids.
pub(super) fn cancel_running(d: &mut Draft<'_>, ids: &[String], reason: &str) -> Vec<String> {
    let mut cancelled = Vec::new();
    for id in ids {
        if d.status(id) == StepStatus::Running {
            d.set_status(id, StepStatus::Compensating);
            d.emit(
                EventType::BranchCancelled,
                Some(id),
                None,
                Some(json!({"reason": reason})),
            );
            cancelled.push(id.clone());
        }
    }
    cancelled
}

/// One branch of a fan-out (a parallel branch or a for_each element): its entry, its steps
/// and the scope they run in.
pub(super) struct Lane<'a> {
    pub(super) id: String,
    pub(super) steps: &'a [Step],
    pub(super) scope: Scope,
}

/// Advances a running lane, recording it succeeded or failed when its steps are.
pub(super) fn advance_lane<'a>(d: &mut Draft<'a>, lane: &Lane<'a>) -> Progress {
    let progress = advance_seq(d, lane.steps, &lane.scope);
    match progress {
        Progress::Busy => {}
        Progress::Done => {
            d.set_status(&lane.id, StepStatus::Succeeded);
            d.emit(EventType::BranchSucceeded, Some(&lane.id), None, None);
        }
        Progress::Failed => {
            // It unwinds from now on.
            d.set_status(&lane.id, StepStatus::Compensating);
            d.emit(EventType::BranchFailed, Some(&lane.id), None, None);
        }
    }
    progress
}

/// Ends the fan-out step `id` once its join is decided: met, it succeeds; unreachable, it
/// fails. Either way the lanes still running are cancelled.
pub(super) fn conclude(
    d: &mut Draft<'_>,
    id: &str,
    join: Join,
    lanes: &[String],
    verdict: Verdict,
) {
    let reason = match verdict {
        Verdict::Open => return,
        Verdict::Met => "join met",
        Verdict::Unreachable => "join can no longer be met",
    };
    let cancelled = cancel_running(d, lanes, reason);
    let succeeded = Tally::of(d, lanes).succeeded;
    if verdict == Verdict::Met {
        d.set_status(id, StepStatus::Succeeded);
        d.state.completion_order.push(id.to_string());
        let detail = json!({"join": describe(join), "of": lanes.len(), "succeeded": succeeded, "cancelled": cancelled});
        d.emit(EventType::StepSucceeded, Some(id), None, Some(detail));
    } else {
        let failure =
            Failure::fatal(
                "JOIN_FAILED",
                format!(
                "only {succeeded} of {} succeeded and too many failed for join {}; cancelled: {}",
                lanes.len(),
                describe(join),
                if cancelled.is_empty() { "none".into() } else { cancelled.join(", ") }
            ),
            );
        fail_node(d, id, None, failure);
    }
}

/// What a fan-out step reports going forward, after its failed and cancelled lanes took their
/// unwinding steps and its succeeded lanes were walked again (a parallel or for_each nested in
/// one may still be unwinding cancelled branches of its own).
pub(super) fn progress<'a>(d: &mut Draft<'a>, id: &str, lanes: &[Lane<'a>]) -> Progress {
    let unwinding = unwind_lanes(d, lanes, false);
    let mut nested_stuck = false;
    for lane in lanes {
        if d.status(&lane.id) == StepStatus::Succeeded {
            nested_stuck |= advance_seq(d, lane.steps, &lane.scope) == Progress::Failed;
        }
    }
    match d.status(id) {
        StepStatus::Running => Progress::Busy,
        StepStatus::Succeeded if unwinding != Unwound::Stuck && !nested_stuck => Progress::Done,
        _ => Progress::Failed,
    }
}

/// Unwinds the lanes that must be: the failed and cancelled ones, or with `all` every lane
/// (the saga compensates), all at the same time.
pub(super) fn unwind_lanes<'a>(d: &mut Draft<'a>, lanes: &[Lane<'a>], all: bool) -> Unwound {
    let mut results = Vec::new();
    for lane in lanes {
        let status = d.status(&lane.id);
        if all && status == StepStatus::Running {
            cancel_running(d, std::slice::from_ref(&lane.id), "the saga compensates");
        } else if all && status == StepStatus::Succeeded {
            d.set_status(&lane.id, StepStatus::Compensating);
        }
        if d.status(&lane.id) != StepStatus::Compensating {
            continue;
        }
        let result = unwind_seq(d, lane.steps, &lane.scope);
        if result == Unwound::Done {
            d.set_status(&lane.id, StepStatus::Compensated);
        }
        results.push(result);
    }
    Unwound::all(results)
}
