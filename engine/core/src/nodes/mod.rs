//! Moving a saga through its graph, one module per kind of node.
//!
//! Every decision first applies its input to the one node it concerns (a reply to a command
//! step, a fired timer, a signal to an await step), then [`advance`] walks the graph from the
//! top and lets each node take the transitions that follow: start the next step, meet a join,
//! cancel branches, unwind (compensate) what failed. Walking the whole graph each time is what
//! keeps the decision one pure function of the state: nothing depends on which input came
//! before.
//!
//! A node reports [`Progress`] going forward and [`Unwound`] going backward; a sequence moves
//! on when its current node is done, and unwinds in reverse, which is reverse completion order
//! because a sequence's steps complete one after the other.

mod awaits;
mod choice;
mod command;
mod for_each;
mod join;
mod leaf;
mod parallel;
mod wait;

use sagaflow_avro::{EventType, SagaStatus, StepStatus, TimerKind};
use sagaflow_definition::{Action, Step};
use serde_json::json;

use crate::draft::{Draft, Failure};
use crate::graph::Scope;

pub(crate) use awaits::on_signal;
pub use command::awaited_commands;
pub(crate) use command::{dispatch, on_dispatch, on_reply, timed_out, Handled};
pub(crate) use leaf::succeed;

/// How a node or a sequence stands going forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Finished (succeeded or skipped): what follows may start.
    Done,
    /// Something is in flight or scheduled.
    Busy,
    /// Failed for good: the enclosing branch, or the saga, must unwind.
    Failed,
}

/// How a node or a sequence stands going backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unwound {
    /// Everything it completed is compensated.
    Done,
    /// A compensation, or the resolution of a cancelled attempt, is in flight.
    Busy,
    /// A compensation failed for good: an operator must repair it.
    Stuck,
}

impl Unwound {
    /// Several branches unwinding at once: busy while any is, stuck if any is once none is.
    pub(crate) fn all(results: impl IntoIterator<Item = Unwound>) -> Unwound {
        let mut outcome = Unwound::Done;
        for result in results {
            outcome = match (outcome, result) {
                (Unwound::Busy, _) | (_, Unwound::Busy) => Unwound::Busy,
                (Unwound::Stuck, _) | (_, Unwound::Stuck) => Unwound::Stuck,
                _ => Unwound::Done,
            };
        }
        outcome
    }
}

/// Takes every transition the saga's graph allows now, or ends the saga.
pub(crate) fn advance(d: &mut Draft<'_>) {
    let def = d.def;
    let steps = &def.steps;
    if d.state.status == SagaStatus::Running {
        match advance_seq(d, steps, &Scope::default()) {
            // Cancelled branches still unwinding, or cancelled attempts not yet resolved,
            // keep the saga open.
            Progress::Done if !d.unresolved() => {
                d.state.failure_json = None;
                let context = d.context();
                d.end(
                    SagaStatus::Completed,
                    EventType::SagaCompleted,
                    Some(context),
                );
            }
            Progress::Done | Progress::Busy => {}
            Progress::Failed => {
                d.state.status = SagaStatus::Compensating;
                // No deadline applies to undoing.
                d.state.timers.retain(|t| t.kind != TimerKind::SagaDeadline);
            }
        }
    }
    if d.state.status == SagaStatus::Compensating {
        match unwind_seq(d, steps, &Scope::default()) {
            Unwound::Busy => {}
            Unwound::Done => {
                let failure = d.failure();
                d.end(SagaStatus::Compensated, EventType::SagaCompensated, failure);
            }
            // A compensation failed for good: nothing more is undone, waits stop, and the saga
            // becomes an incident once every attempt still in flight elsewhere (a branch that
            // was unwinding on its own) is resolved, so that the operator sees a settled saga.
            Unwound::Stuck => {
                stop_waiting(d);
                if !attempts_in_flight(d) {
                    d.incident("compensation_failed");
                }
            }
        }
    }
}

/// The ids of the command, wait and await steps whose entries have this status.
fn leaves_in(d: &Draft<'_>, statuses: &[StepStatus]) -> Vec<String> {
    d.state
        .steps
        .iter()
        .filter(|n| statuses.contains(&n.status))
        .filter(|n| {
            d.locate(&n.name)
                .is_some_and(|(step, _)| step.children().is_empty())
        })
        .map(|n| n.name.clone())
        .collect()
}

fn attempts_in_flight(d: &Draft<'_>) -> bool {
    !leaves_in(
        d,
        &[
            StepStatus::Running,
            StepStatus::Cancelled,
            StepStatus::Compensating,
            StepStatus::Backoff,
        ],
    )
    .is_empty()
}

/// Stops every await and wait that is waiting: nothing they wait for matters any more.
pub(crate) fn stop_waiting(d: &mut Draft<'_>) {
    for id in leaves_in(d, &[StepStatus::Waiting]) {
        d.unsubscribe(&id);
        d.state
            .timers
            .retain(|t| t.step.as_deref() != Some(id.as_str()));
        d.set_status(&id, StepStatus::Skipped);
    }
}

pub(crate) fn advance_seq<'a>(d: &mut Draft<'a>, steps: &'a [Step], scope: &Scope) -> Progress {
    for step in steps {
        match advance_node(d, step, scope) {
            Progress::Done => {}
            other => return other,
        }
    }
    Progress::Done
}

pub(crate) fn unwind_seq<'a>(d: &mut Draft<'a>, steps: &'a [Step], scope: &Scope) -> Unwound {
    for step in steps.iter().rev() {
        match unwind_node(d, step, scope) {
            Unwound::Done => {}
            other => return other,
        }
    }
    Unwound::Done
}

fn advance_node<'a>(d: &mut Draft<'a>, step: &'a Step, scope: &Scope) -> Progress {
    let id = scope.id(&step.name);
    if d.status(&id) == StepStatus::Pending {
        if let Some(condition) = &step.when {
            match condition.eval(&scope.view(&d.context())) {
                Ok(true) => {}
                Ok(false) => {
                    d.set_status(&id, StepStatus::Skipped);
                    d.emit(
                        EventType::StepSkipped,
                        Some(&id),
                        None,
                        Some(json!({"when": condition.source()})),
                    );
                    return Progress::Done;
                }
                Err(e) => {
                    fail_node(d, &id, None, Failure::fatal("CONDITION", e.to_string()));
                    return Progress::Failed;
                }
            }
        }
    }
    match &step.action {
        Action::Command(_) => command::advance(d, &id),
        Action::Wait(wait) => wait::advance(d, wait, &id),
        Action::Await(_) => awaits::advance(d, &id),
        Action::Parallel(parallel) => parallel::advance(d, parallel, scope, &id),
        Action::Choice(choice) => choice::advance(d, choice, scope, &id),
        Action::ForEach(for_each) => for_each::advance(d, for_each, scope, &id),
    }
}

fn unwind_node<'a>(d: &mut Draft<'a>, step: &'a Step, scope: &Scope) -> Unwound {
    let id = scope.id(&step.name);
    match d.node(&id).map(|n| n.status) {
        None => return Unwound::Done,
        Some(StepStatus::Pending) => {
            d.set_status(&id, StepStatus::Skipped);
            return Unwound::Done;
        }
        Some(_) => {}
    }
    match &step.action {
        Action::Command(_) => command::unwind(d, &id),
        Action::Wait(_) => wait::unwind(d, &id),
        Action::Await(_) => awaits::unwind(d, &id),
        Action::Parallel(parallel) => parallel::unwind(d, parallel, scope, &id),
        Action::Choice(choice) => choice::unwind(d, choice, scope, &id),
        Action::ForEach(for_each) => for_each::unwind(d, for_each, scope, &id),
    }
}

/// Marks a container node as unwinding; `false` when it has nothing left to undo.
pub(crate) fn start_unwinding(d: &mut Draft<'_>, id: &str) -> bool {
    match d.status(id) {
        StepStatus::Compensated | StepStatus::Skipped => false,
        StepStatus::Compensating => true,
        _ => {
            d.set_status(id, StepStatus::Compensating);
            true
        }
    }
}

/// Records a container node compensated once everything in it is.
pub(crate) fn finish_unwinding(d: &mut Draft<'_>, id: &str, result: Unwound) -> Unwound {
    if result == Unwound::Done {
        d.set_status(id, StepStatus::Compensated);
    }
    result
}

/// A node failed for good, with nothing of it left to compensate.
pub(crate) fn fail_node(d: &mut Draft<'_>, id: &str, attempt: Option<i32>, failure: Failure) {
    d.state.timers.retain(|t| t.step.as_deref() != Some(id));
    d.set_status(id, StepStatus::Failed);
    d.emit(
        EventType::StepFailed,
        Some(id),
        attempt,
        Some(failure.error.clone()),
    );
    d.set_failure(json!({"step": id, "error": failure.error}));
}

/// A fired timer of a node: the module of the node's kind applies it. One that no longer
/// applies to anything (the node moved on) changes nothing but the timer's removal.
pub(crate) fn on_timer(d: &mut Draft<'_>, kind: TimerKind, id: &str, attempt: i32, late_by: i64) {
    if kind == TimerKind::SagaDeadline {
        if d.state.status == SagaStatus::Running {
            saga_deadline(d, late_by);
        }
        return;
    }
    let Some((step, _)) = d.locate(id) else {
        return;
    };
    match &step.action {
        Action::Command(_) => command::on_timer(d, kind, id, attempt, late_by),
        Action::Wait(_) => wait::on_timer(d, kind, id, late_by),
        Action::Await(awaited) => awaits::on_timer(d, awaited, kind, id, late_by),
        _ => {}
    }
}

/// The saga ran out of time: it is abandoned.
fn saga_deadline(d: &mut Draft<'_>, late_by: i64) {
    d.emit(
        EventType::SagaDeadlineExceeded,
        None,
        None,
        Some(json!({"late_by_ms": late_by})),
    );
    let error = json!({"code": "SAGA_DEADLINE", "message": "the saga did not finish before its deadline", "retryable": false});
    abandon(d, error);
}

/// The running saga stops for `error` (its deadline passed, or an operator cancelled it):
/// whatever runs is abandoned (a command in flight counts as possibly applied) and completed
/// steps are compensated.
pub(crate) fn abandon(d: &mut Draft<'_>, error: serde_json::Value) {
    let active: Vec<(String, StepStatus, i32)> = d
        .state
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.status,
                StepStatus::Running | StepStatus::Backoff | StepStatus::Waiting
            ) && !d.has_timer(&s.name, TimerKind::CompensationRetry)
                && d.locate(&s.name).is_some_and(|(step, _)| {
                    matches!(
                        step.action,
                        Action::Command(_) | Action::Wait(_) | Action::Await(_)
                    )
                })
        })
        .map(|s| (s.name.clone(), s.status, s.attempt))
        .collect();
    if active.is_empty() {
        d.set_failure(json!({"error": error}));
    }
    for (id, status, attempt) in active {
        if status == StepStatus::Waiting {
            d.unsubscribe(&id);
        }
        leaf::fail_step(
            d,
            &id,
            attempt,
            Failure {
                error: error.clone(),
                uncertain: status == StepStatus::Running,
            },
        );
    }
    d.state.status = SagaStatus::Compensating;
    d.state.timers.retain(|t| t.kind != TimerKind::SagaDeadline);
}
