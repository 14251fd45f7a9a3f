//! for_each steps: the same steps once per element of a context list, at most
//! `max_concurrency` elements at a time, joined like parallel branches.
//!
//! The list is copied into the step's entry when it starts, so the iterations run over what it
//! was then whatever the context becomes. Iteration `i` has the entry `<step>/<i>`, its steps
//! `<name>[i]`, and its outputs land in element `i` of the list at the step's `key`.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::ForEach;
use serde_json::{json, Value};

use super::join::{self, Tally, Verdict};
use super::{advance_seq, fail_node, unwind_seq, Progress, Unwound};
use crate::draft::{Draft, Failure};
use crate::graph::{child_id, Scope};

/// The list the step runs over, as it was when it started.
fn items(d: &Draft<'_>, id: &str) -> Vec<Value> {
    d.node(id)
        .and_then(|n| n.items_json.as_deref())
        .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
        .unwrap_or_default()
}

fn iteration_ids(id: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| child_id(id, &i.to_string())).collect()
}

pub(super) fn advance<'a>(
    d: &mut Draft<'a>,
    for_each: &'a ForEach,
    scope: &Scope,
    id: &str,
) -> Progress {
    if d.status(id) == StepStatus::Pending && !start(d, for_each, scope, id) {
        return Progress::Failed;
    }
    let items = items(d, id);
    let ids = iteration_ids(id, items.len());
    if d.status(id) == StepStatus::Running {
        let limit = for_each.max_concurrency.max(1) as usize;
        let mut tally = Tally::of(d, &ids);
        let mut verdict = tally.verdict(for_each.join);
        // One pass in element order: advance the running iterations, start the next ones while
        // there is room, and stop as soon as the join is decided. The tally is kept up to date
        // here rather than recounted: a for_each may have thousands of elements.
        for (index, iteration_id) in ids.iter().enumerate() {
            if verdict != Verdict::Open {
                break;
            }
            let inner = || scope.iteration(&for_each.key, index as u32, items[index].clone());
            match d.node(iteration_id).map(|n| n.status) {
                Some(StepStatus::Running) => {}
                None if tally.running < limit => {
                    d.set_status(iteration_id, StepStatus::Running);
                    d.emit(
                        EventType::BranchStarted,
                        Some(iteration_id),
                        None,
                        Some(json!({"index": index})),
                    );
                    d.open(&for_each.steps, &inner());
                    tally.not_started -= 1;
                    tally.running += 1;
                }
                _ => continue,
            }
            match advance_seq(d, &for_each.steps, &inner()) {
                Progress::Busy => continue,
                Progress::Done => {
                    d.set_status(iteration_id, StepStatus::Succeeded);
                    d.emit(EventType::BranchSucceeded, Some(iteration_id), None, None);
                    tally.succeeded += 1;
                }
                Progress::Failed => {
                    d.set_status(iteration_id, StepStatus::Compensating);
                    d.emit(EventType::BranchFailed, Some(iteration_id), None, None);
                }
            }
            tally.running -= 1;
            verdict = tally.verdict(for_each.join);
        }
        match verdict {
            Verdict::Open => {}
            Verdict::Met => {
                let cancelled = join::cancel_running(d, &ids, "join met");
                let succeeded = Tally::of(d, &ids).succeeded;
                d.set_status(id, StepStatus::Succeeded);
                d.state.completion_order.push(id.to_string());
                d.emit(
                    EventType::StepSucceeded,
                    Some(id),
                    None,
                    Some(json!({"join": join::describe(for_each.join), "items": ids.len(), "succeeded": succeeded, "cancelled": cancelled})),
                );
            }
            Verdict::Unreachable => {
                let cancelled = join::cancel_running(d, &ids, "join can no longer be met");
                let failure = Failure::fatal(
                    "JOIN_FAILED",
                    format!(
                        "too many elements failed for join {} over {} elements ({} cancelled)",
                        join::describe(for_each.join),
                        ids.len(),
                        cancelled.len()
                    ),
                );
                fail_node(d, id, None, failure);
            }
        }
    }
    let unwinding = unwind_iterations(d, for_each, scope, id, &items, false);
    // Succeeded iterations keep walking: a container nested in them may still be unwinding.
    let mut nested_stuck = false;
    for (index, iteration_id) in ids.iter().enumerate() {
        if d.status(iteration_id) == StepStatus::Succeeded {
            let inner = scope.iteration(&for_each.key, index as u32, items[index].clone());
            nested_stuck |= advance_seq(d, &for_each.steps, &inner) == Progress::Failed;
        }
    }
    match d.status(id) {
        StepStatus::Running => Progress::Busy,
        StepStatus::Succeeded if unwinding != Unwound::Stuck && !nested_stuck => Progress::Done,
        _ => Progress::Failed,
    }
}

/// Reads and checks the list; `false` if the step failed instead of starting.
fn start(d: &mut Draft<'_>, for_each: &ForEach, scope: &Scope, id: &str) -> bool {
    let items = match for_each.items.get(&scope.view(&d.context())) {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            let failure = Failure::fatal(
                "FOR_EACH_ITEMS",
                format!("{} is {other}, not a list", for_each.items),
            );
            fail_node(d, id, None, failure);
            return false;
        }
        None => {
            let failure = Failure::fatal(
                "FOR_EACH_ITEMS",
                format!("the context has nothing at {}", for_each.items),
            );
            fail_node(d, id, None, failure);
            return false;
        }
    };
    let limit = d.def.limits.for_each_items as usize;
    if items.len() > limit {
        let failure = Failure::fatal(
            "FOR_EACH_LIMIT",
            format!(
                "{} has {} elements, more than the definition's limit of {limit} (limits.for_each_items)",
                for_each.items,
                items.len()
            ),
        );
        fail_node(d, id, None, failure);
        return false;
    }
    let results = vec![json!({}); items.len()];
    let count = items.len();
    d.node_mut(id).items_json = Some(Value::Array(items).to_string());
    if let Err(failure) = d.record_outputs(scope, vec![(for_each.key.clone(), results.into())]) {
        d.node_mut(id).items_json = None;
        fail_node(d, id, None, failure);
        return false;
    }
    let now = d.now;
    let node = d.node_mut(id);
    node.status = StepStatus::Running;
    node.dispatched_at = Some(now);
    d.emit(
        EventType::StepStarted,
        Some(id),
        None,
        Some(json!({"items": count, "max_concurrency": for_each.max_concurrency, "join": join::describe(for_each.join)})),
    );
    true
}

fn unwind_iterations<'a>(
    d: &mut Draft<'a>,
    for_each: &'a ForEach,
    scope: &Scope,
    id: &str,
    items: &[Value],
    all: bool,
) -> Unwound {
    let mut results = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let iteration_id = child_id(id, &index.to_string());
        let status = d.status(&iteration_id);
        if all && status == StepStatus::Running {
            join::cancel_running(
                d,
                std::slice::from_ref(&iteration_id),
                "the saga compensates",
            );
        } else if all && status == StepStatus::Succeeded {
            d.set_status(&iteration_id, StepStatus::Compensating);
        }
        if d.status(&iteration_id) != StepStatus::Compensating {
            continue;
        }
        let inner = scope.iteration(&for_each.key, index as u32, item.clone());
        let result = unwind_seq(d, &for_each.steps, &inner);
        if result == Unwound::Done {
            d.set_status(&iteration_id, StepStatus::Compensated);
        }
        results.push(result);
    }
    Unwound::all(results)
}

pub(super) fn unwind<'a>(
    d: &mut Draft<'a>,
    for_each: &'a ForEach,
    scope: &Scope,
    id: &str,
) -> Unwound {
    match d.status(id) {
        StepStatus::Compensated | StepStatus::Skipped => return Unwound::Done,
        StepStatus::Compensating => {}
        _ => d.set_status(id, StepStatus::Compensating),
    }
    let items = items(d, id);
    let result = unwind_iterations(d, for_each, scope, id, &items, true);
    if result == Unwound::Done {
        d.set_status(id, StepStatus::Compensated);
    }
    result
}
