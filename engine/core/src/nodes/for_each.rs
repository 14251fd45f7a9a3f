//! for_each steps: the same steps once per element of a context list, at most
//! `max_concurrency` elements at a time, joined like parallel branches.
//!
//! The list is copied into the step's entry when it starts, so the iterations run over what it
//! was then whatever the context becomes. Iteration `i` has the entry `<step>/<i>`, its steps
//! `<name>[i]`, and its outputs land in element `i` of the list at the step's `key`.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::ForEach;
use serde_json::{json, Value};

use super::join::{self, Lane, Tally, Verdict};
use super::{fail_node, finish_unwinding, start_unwinding, Progress, Unwound};
use crate::draft::{Draft, Failure};
use crate::graph::{child_id, Scope};

/// The list the step runs over, as it was when it started.
fn items(d: &Draft<'_>, id: &str) -> Vec<Value> {
    d.node(id)
        .and_then(|n| n.items_json.as_deref())
        .and_then(|t| serde_json::from_str::<Vec<Value>>(t).ok())
        .unwrap_or_default()
}

fn lanes<'a>(for_each: &'a ForEach, scope: &Scope, id: &str, items: &[Value]) -> Vec<Lane<'a>> {
    items
        .iter()
        .enumerate()
        .map(|(index, item)| Lane {
            id: child_id(id, &index.to_string()),
            steps: &for_each.steps,
            scope: scope.iteration(&for_each.key, index as u32, item.clone()),
        })
        .collect()
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
    let lanes = lanes(for_each, scope, id, &items(d, id));
    let ids: Vec<String> = lanes.iter().map(|l| l.id.clone()).collect();
    if d.status(id) == StepStatus::Running {
        let limit = for_each.max_concurrency.max(1) as usize;
        let mut tally = Tally::of(d, &ids);
        let mut verdict = tally.verdict(for_each.join);
        // One pass in element order: advance the running elements, start the next ones while
        // there is room, and stop as soon as the join is decided. The tally is kept up to date
        // here rather than recounted: a for_each may have thousands of elements.
        for (index, lane) in lanes.iter().enumerate() {
            if verdict != Verdict::Open {
                break;
            }
            match d.node(&lane.id).map(|n| n.status) {
                Some(StepStatus::Running) => {}
                None if tally.running < limit => {
                    d.set_status(&lane.id, StepStatus::Running);
                    d.emit(
                        EventType::BranchStarted,
                        Some(&lane.id),
                        None,
                        Some(json!({"index": index})),
                    );
                    d.open(lane.steps, &lane.scope);
                    tally.not_started -= 1;
                    tally.running += 1;
                }
                _ => continue,
            }
            match join::advance_lane(d, lane) {
                Progress::Busy => continue,
                Progress::Done => tally.succeeded += 1,
                Progress::Failed => {}
            }
            tally.running -= 1;
            verdict = tally.verdict(for_each.join);
        }
        join::conclude(d, id, for_each.join, &ids, verdict);
    }
    join::progress(d, id, &lanes)
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

pub(super) fn unwind<'a>(
    d: &mut Draft<'a>,
    for_each: &'a ForEach,
    scope: &Scope,
    id: &str,
) -> Unwound {
    if !start_unwinding(d, id) {
        return Unwound::Done;
    }
    let lanes = lanes(for_each, scope, id, &items(d, id));
    let result = join::unwind_lanes(d, &lanes, true);
    finish_unwinding(d, id, result)
}
