//! Parallel steps: named branches that run at the same time, and their join.
//!
//! A branch entry (`<step>/<branch>`) is `Running` while its steps go forward, `Succeeded`
//! when they all did, `Compensating` while it unwinds (it failed, was cancelled, or the saga
//! compensates) and `Compensated` once it has.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::Parallel;
use serde_json::json;

use super::join::{self, Lane, Tally, Verdict};
use super::{finish_unwinding, start_unwinding, Progress, Unwound};
use crate::draft::Draft;
use crate::graph::{child_id, Scope};

fn lanes<'a>(parallel: &'a Parallel, scope: &Scope, id: &str) -> Vec<Lane<'a>> {
    parallel
        .branches
        .iter()
        .map(|b| Lane {
            id: child_id(id, &b.name),
            steps: &b.steps,
            scope: scope.branch(&b.key),
        })
        .collect()
}

pub(super) fn advance<'a>(
    d: &mut Draft<'a>,
    parallel: &'a Parallel,
    scope: &Scope,
    id: &str,
) -> Progress {
    let lanes = lanes(parallel, scope, id);
    let ids: Vec<String> = lanes.iter().map(|l| l.id.clone()).collect();
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
        for lane in &lanes {
            d.set_status(&lane.id, StepStatus::Running);
            d.emit(EventType::BranchStarted, Some(&lane.id), None, None);
            d.open(lane.steps, &lane.scope);
        }
    }
    if d.status(id) == StepStatus::Running {
        let mut verdict = Tally::of(d, &ids).verdict(parallel.join);
        for lane in &lanes {
            if verdict != Verdict::Open {
                break;
            }
            if d.status(&lane.id) == StepStatus::Running {
                join::advance_lane(d, lane);
                verdict = Tally::of(d, &ids).verdict(parallel.join);
            }
        }
        join::conclude(d, id, parallel.join, &ids, verdict);
    }
    join::progress(d, id, &lanes)
}

pub(super) fn unwind<'a>(
    d: &mut Draft<'a>,
    parallel: &'a Parallel,
    scope: &Scope,
    id: &str,
) -> Unwound {
    if !start_unwinding(d, id) {
        return Unwound::Done;
    }
    let result = join::unwind_lanes(d, &lanes(parallel, scope, id), true);
    finish_unwinding(d, id, result)
}
