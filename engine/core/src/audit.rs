//! Checking a saga's event log against its definition: did it undo exactly what it did, each
//! step once, in the right order? The demo, the benchmarks and the property tests all judge
//! runs with this one reading of the log.

use std::collections::HashMap;

use sagaflow_avro::{EventType, SagaEvent};
use sagaflow_definition::{Action, Definition, Step};

use crate::graph::{child_id, instance_id, parse_instance};

/// One level of where a step instance sits: a sequence's identity, the position in it of the
/// node that leads to the step, and the branch (or iteration) entry taken below that node.
type Level = (String, usize, Option<String>);

/// Where a step instance sits, outermost sequence first. Two steps are ordered when they sit at
/// different positions of their innermost common sequence; otherwise they are in parallel
/// branches (or iterations).
fn path(def: &Definition, id: &str) -> Option<Vec<Level>> {
    let (name, suffix) = parse_instance(id)?;
    fn walk(
        steps: &[Step],
        sequence: String,
        name: &str,
        suffix: &[u32],
        taken: &[u32],
        out: &mut Vec<Level>,
    ) -> bool {
        for (position, step) in steps.iter().enumerate() {
            out.push((sequence.clone(), position, None));
            if step.name == name {
                return true;
            }
            let owner = instance_id(&step.name, taken);
            for (child, steps) in step.children().into_iter().enumerate() {
                let (inner, entry, taken) = match &step.action {
                    Action::ForEach(_) => {
                        let Some(index) = suffix.get(taken.len()) else {
                            continue;
                        };
                        let mut deeper = taken.to_vec();
                        deeper.push(*index);
                        (
                            format!("{}/{index}", step.name),
                            Some(child_id(&owner, &index.to_string())),
                            deeper,
                        )
                    }
                    Action::Parallel(p) => (
                        format!("{}/{child}", step.name),
                        Some(child_id(&owner, &p.branches[child].name)),
                        taken.to_vec(),
                    ),
                    _ => (format!("{}/{child}", step.name), None, taken.to_vec()),
                };
                if let Some(last) = out.last_mut() {
                    last.2 = entry;
                }
                if walk(steps, inner, name, suffix, &taken, out) {
                    return true;
                }
            }
            out.pop();
        }
        false
    }
    let mut out = Vec::new();
    walk(&def.steps, String::new(), name, &suffix, &[], &mut out).then_some(out)
}

/// Everything wrong with how the saga whose `events` these are (in seq order) compensated:
/// a step undone that never completed (or may have), undone twice, left standing when the saga
/// ended compensated, or undone while a step that comes after it in the same sequence, and was
/// already sent, still stood.
pub fn compensation_problems(def: &Definition, events: &[SagaEvent]) -> Vec<String> {
    let mut completed: HashMap<&str, i64> = HashMap::new();
    let mut sent: HashMap<&str, i64> = HashMap::new();
    // Branches and iterations that failed or were cancelled, and when.
    let mut stopped: HashMap<&str, i64> = HashMap::new();
    let mut dispatched: HashMap<&str, i64> = HashMap::new();
    let mut undone: HashMap<&str, i64> = HashMap::new();
    let mut problems = Vec::new();
    let mut compensated_saga = false;
    for e in events {
        let Some(step) = e.step.as_deref() else {
            compensated_saga |= e.event_type == EventType::SagaCompensated;
            continue;
        };
        if step.contains('/') {
            if matches!(
                e.event_type,
                EventType::BranchFailed | EventType::BranchCancelled
            ) {
                stopped.entry(step).or_insert(e.seq);
            }
            continue;
        }
        match e.event_type {
            EventType::StepDispatched => {
                sent.entry(step).or_insert(e.seq);
            }
            EventType::StepSucceeded => {
                completed.entry(step).or_insert(e.seq);
            }
            // A step whose last attempt's effect is unknown is compensated too.
            EventType::StepFailed
                if e.detail_json
                    .as_deref()
                    .is_some_and(|d| d.contains("\"uncertain\":true")) =>
            {
                completed.entry(step).or_insert(e.seq);
            }
            EventType::CompensationDispatched => {
                if !completed.contains_key(step) {
                    problems.push(format!(
                        "{step} was compensated (seq {}) but never completed",
                        e.seq
                    ));
                }
                dispatched.entry(step).or_insert(e.seq);
            }
            EventType::CompensationSucceeded if undone.insert(step, e.seq).is_some() => {
                problems.push(format!("{step} was compensated twice (seq {})", e.seq));
            }
            _ => {}
        }
    }
    if compensated_saga {
        let mut standing: Vec<&str> = completed
            .keys()
            .filter(|step| !undone.contains_key(*step))
            .filter(|step| {
                parse_instance(step)
                    .and_then(|(name, _)| def.step(name))
                    .is_some_and(|s| s.compensation.is_some())
            })
            .copied()
            .collect();
        standing.sort_unstable();
        for step in standing {
            problems.push(format!(
                "{step} completed but was not compensated, though the saga ended compensated"
            ));
        }
    }
    let paths: Vec<(&str, Vec<Level>)> = dispatched
        .keys()
        .filter_map(|step| path(def, step).map(|p| (*step, p)))
        .collect();
    for (a, path_a) in &paths {
        for (b, path_b) in &paths {
            let depth = path_a
                .iter()
                .zip(path_b)
                .take_while(|(x, y)| x.0 == y.0)
                .count();
            let (Some(level_a), Some(level_b)) = (
                depth.checked_sub(1).map(|d| &path_a[d]),
                depth.checked_sub(1).map(|d| &path_b[d]),
            ) else {
                continue;
            };
            if level_a.1 >= level_b.1 {
                continue;
            }
            // `a` comes before `b`. When `a` is undone as part of a branch that failed or was
            // cancelled before `b` was sent, the two are unrelated. Otherwise, once `b` has been
            // sent, `a` may be undone only after `b` is (if `b` took effect at all).
            let started = dispatched[a];
            let branch_stopped = path_a[depth - 1..]
                .iter()
                .filter_map(|level| level.2.as_deref())
                .filter_map(|entry| stopped.get(entry))
                .min()
                .copied()
                .unwrap_or(started);
            let b_sent_first = sent.get(b).is_some_and(|s| *s < branch_stopped);
            let b_undone_first = undone.get(b).is_some_and(|done| *done < started);
            if b_sent_first && completed.contains_key(b) && !b_undone_first {
                problems.push(format!(
                    "{a} was compensated (seq {started}) before {b}, which comes after it, was undone"
                ));
            }
        }
    }
    problems.sort();
    problems
}
