//! Admin commands: an operator's retry, skip, cancel, abort, pause, resume or resolve of one
//! saga, decided like any other input.
//!
//! Each command is first checked against the saga's state ([`plan`], which changes nothing):
//! one that does not apply is rejected with the reason, and the rejection is an event of the
//! saga's log like the application is, so that the log is the audit trail. An applied command's
//! event comes first, then the events of what it did, then whatever the graph does next.
//!
//! A paused saga defers its timers and holds its inputs in its state (`pause.held`); resuming
//! applies them in the order they came, each followed by the graph walk it would have had.

use sagaflow_avro::{
    AdminAction, AdminCommand, EventType, Pause, Phase, Resolution, SagaStatus, StepStatus, Timer,
    TimerKind,
};
use sagaflow_definition::Action;
use serde_json::{json, Value};

use crate::draft::Draft;
use crate::input::Input;
use crate::nodes::{self, Handled};

/// How many request ids a saga remembers to recognise a copy of an admin command.
const REMEMBERED_REQUESTS: usize = 32;

/// What an admin command will do, once checked.
#[derive(Debug)]
enum Plan {
    /// Fire these steps' retry timers now.
    RetryNow(Vec<Timer>),
    /// Send these failed compensations again, as their next attempt.
    RetryCompensations(Vec<String>),
    /// Wait again for the event of this await step, which timed out.
    RetryAwait(String),
    /// The step counts as succeeded with this output.
    Skip {
        id: String,
        output: Value,
        incident: bool,
    },
    /// These failed compensations were done by hand.
    MarkCompensated(Vec<String>),
    /// Compensate what is done.
    Cancel {
        incident: bool,
    },
    Abort,
    Pause,
    Resume,
}

/// Why a saga is in INCIDENT, as far as an operator can act on it.
enum Incident {
    /// These compensations failed for good.
    Compensations(Vec<String>),
    /// This await timed out with `on_timeout: fail`.
    Await(String),
}

fn incident(d: &Draft<'_>) -> Option<Incident> {
    if d.state.status != SagaStatus::Incident {
        return None;
    }
    let failed: Vec<String> = d
        .state
        .steps
        .iter()
        .filter(|n| n.status == StepStatus::CompensationFailed)
        .map(|n| n.name.clone())
        .collect();
    if !failed.is_empty() {
        return Some(Incident::Compensations(failed));
    }
    let step = d
        .failure()
        .and_then(|f| f.get("step").and_then(Value::as_str).map(str::to_string))?;
    let is_await = d
        .locate(&step)
        .is_some_and(|(s, _)| matches!(s.action, Action::Await(_)));
    (is_await && d.status(&step) == StepStatus::Failed).then_some(Incident::Await(step))
}

/// Keeps the steps `step` names (all of them when it names none); the error says which could.
fn select(ids: Vec<String>, step: Option<&str>, what: &str) -> Result<Vec<String>, String> {
    match step {
        None => Ok(ids),
        Some(step) if ids.iter().any(|id| id == step) => Ok(vec![step.to_string()]),
        Some(step) => Err(format!("step {step} is not {what}; these are: {ids:?}")),
    }
}

/// Checks `cmd` against the saga without changing it.
fn plan(d: &Draft<'_>, cmd: &AdminCommand) -> Result<Plan, String> {
    let status = d.state.status;
    if status.is_terminal() {
        return Err(format!(
            "the saga has ended ({}); nothing can be done to it",
            status.symbol()
        ));
    }
    if let Some(pause) = &d.state.pause {
        return match cmd.action {
            AdminAction::Resume => Ok(Plan::Resume),
            AdminAction::Abort => abort(cmd),
            _ => Err(format!(
                "the saga is paused (by {}, request {}); resume it first, or abort it",
                pause.actor, pause.request_id
            )),
        };
    }
    let step = cmd.step.as_deref();
    match cmd.action {
        AdminAction::Retry => retry(d, step),
        AdminAction::Skip => {
            let Some(id) = step else {
                return Err("skip needs the step to count as succeeded (step)".into());
            };
            skip(d, id, cmd.output_json.as_deref())
        }
        AdminAction::Cancel => match (status, incident(d)) {
            (SagaStatus::Running, _) => Ok(Plan::Cancel { incident: false }),
            (SagaStatus::Incident, Some(Incident::Await(_))) => Ok(Plan::Cancel { incident: true }),
            (SagaStatus::Incident, _) => Err(
                "the saga's compensation already failed: retry it, or resolve it with mark_done"
                    .into(),
            ),
            _ => Err("the saga is already compensating".into()),
        },
        AdminAction::Abort => abort(cmd),
        AdminAction::Pause => Ok(Plan::Pause),
        AdminAction::Resume => Err("the saga is not paused".into()),
        AdminAction::Resolve => {
            let Some(resolution) = cmd.resolution else {
                return Err("resolve needs a resolution: retry_compensation or mark_done".into());
            };
            let Some(open) = incident(d) else {
                return Err(format!(
                    "the saga has no open incident (it is {})",
                    status.symbol()
                ));
            };
            match (resolution, open) {
                (Resolution::RetryCompensation, _) => retry(d, step),
                (Resolution::MarkDone, Incident::Compensations(ids)) => Ok(Plan::MarkCompensated(
                    select(ids, step, "a failed compensation")?,
                )),
                (Resolution::MarkDone, Incident::Await(id)) => {
                    if step.is_some_and(|s| s != id) {
                        return Err(format!("the incident is step {id}'s, not {step:?}'s"));
                    }
                    skip(d, &id, cmd.output_json.as_deref())
                }
            }
        }
    }
}

fn abort(cmd: &AdminCommand) -> Result<Plan, String> {
    if cmd.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err("abort needs a reason: nothing is compensated, so the log must say why".into());
    }
    Ok(Plan::Abort)
}

fn retry(d: &Draft<'_>, step: Option<&str>) -> Result<Plan, String> {
    match incident(d) {
        Some(Incident::Compensations(ids)) => {
            return Ok(Plan::RetryCompensations(select(
                ids,
                step,
                "a failed compensation",
            )?))
        }
        Some(Incident::Await(id)) => {
            return match step {
                Some(s) if s != id => Err(format!("the incident is step {id}'s, not {s}'s")),
                _ => Ok(Plan::RetryAwait(id)),
            }
        }
        None if d.state.status == SagaStatus::Incident => {
            return Err("the incident names no step an operator can retry".into())
        }
        None => {}
    }
    let waiting: Vec<Timer> = d
        .state
        .timers
        .iter()
        .filter(|t| matches!(t.kind, TimerKind::Retry | TimerKind::CompensationRetry))
        .filter(|t| {
            t.step
                .as_deref()
                .is_some_and(|s| d.status(s) == StepStatus::Backoff)
        })
        .cloned()
        .collect();
    let names: Vec<String> = waiting.iter().filter_map(|t| t.step.clone()).collect();
    match step {
        None if waiting.is_empty() => {
            Err("no step is waiting to retry, and the saga is not in an incident".into())
        }
        None => Ok(Plan::RetryNow(waiting)),
        Some(s) => match waiting.iter().find(|t| t.step.as_deref() == Some(s)) {
            Some(t) => Ok(Plan::RetryNow(vec![t.clone()])),
            None => Err(format!(
                "step {s} is {}, not waiting to retry; waiting: {names:?}",
                d.status(s).symbol()
            )),
        },
    }
}

fn skip(d: &Draft<'_>, id: &str, output: Option<&str>) -> Result<Plan, String> {
    let Some((step, _)) = d.locate(id) else {
        return Err(format!("{} has no step instance {id}", d.def.key()));
    };
    if !step.children().is_empty() {
        return Err(format!(
            "{id} holds other steps; skip the step inside it that is stuck"
        ));
    }
    let status = d.status(id);
    let incident = matches!(incident(d), Some(Incident::Await(ref a)) if a == id);
    let skippable = incident
        || (d.state.status == SagaStatus::Running
            && (matches!(status, StepStatus::Running | StepStatus::Waiting)
                || (status == StepStatus::Backoff && d.has_timer(id, TimerKind::Retry))));
    if !skippable {
        return Err(format!(
            "step {id} is {} while the saga is {}; only a step that is running, waiting or waiting to retry can be skipped",
            status.symbol(),
            d.state.status.symbol()
        ));
    }
    let output: Value = match output.map(serde_json::from_str) {
        None => json!({}),
        Some(Ok(v @ Value::Object(_))) => v,
        Some(Ok(other)) => return Err(format!("the output must be a JSON object, not {other}")),
        Some(Err(e)) => return Err(format!("the output is not valid JSON: {e}")),
    };
    let missing: Vec<String> = step
        .output
        .iter()
        .filter(|(_, path)| path.get(&output).is_none())
        .map(|(key, path)| format!("{path} (for {key})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the output lacks what step {id} maps into the context: {}",
            missing.join(", ")
        ));
    }
    Ok(Plan::Skip {
        id: id.to_string(),
        output,
        incident,
    })
}

/// The detail every admin event carries.
fn audit(cmd: &AdminCommand) -> Value {
    json!({
        "request_id": cmd.request_id,
        "action": cmd.action.as_str(),
        "actor": cmd.actor,
        "reason": cmd.reason,
        "job_id": cmd.job_id,
        "step": cmd.step,
        "resolution": cmd.resolution.map(Resolution::as_str),
    })
}

fn remember(d: &mut Draft<'_>, request_id: &str) {
    let requests = &mut d.state.admin_requests;
    requests.push(request_id.to_string());
    if requests.len() > REMEMBERED_REQUESTS {
        let excess = requests.len() - REMEMBERED_REQUESTS;
        requests.drain(..excess);
    }
}

/// Applies `cmd` to the saga, or records why it does not apply. Returns whether it applied.
pub(crate) fn apply(d: &mut Draft<'_>, cmd: &AdminCommand) -> bool {
    remember(d, &cmd.request_id);
    let plan = match plan(d, cmd) {
        Ok(plan) => plan,
        Err(rejection) => {
            let mut detail = audit(cmd);
            detail["rejection"] = Value::String(rejection);
            d.emit(
                EventType::AdminCommandRejected,
                cmd.step.as_deref(),
                None,
                Some(detail),
            );
            return false;
        }
    };
    d.emit(
        EventType::AdminCommandApplied,
        cmd.step.as_deref(),
        None,
        Some(audit(cmd)),
    );
    execute(d, cmd, plan);
    true
}

fn execute(d: &mut Draft<'_>, cmd: &AdminCommand, plan: Plan) {
    match plan {
        Plan::RetryNow(timers) => {
            for timer in timers {
                d.state.timers.retain(|t| t.id != timer.id);
                let step = timer.step.as_deref().unwrap_or("");
                let early_by = timer.due - d.now;
                nodes::on_timer(d, timer.kind, step, timer.attempt.unwrap_or(1), -early_by);
            }
        }
        Plan::RetryCompensations(ids) => {
            d.state.status = SagaStatus::Compensating;
            for id in ids {
                let attempt = d.node(&id).map_or(0, |n| n.attempt) + 1;
                nodes::dispatch(d, &id, Phase::Compensate, attempt);
            }
        }
        Plan::RetryAwait(id) => {
            let node = d.node_mut(&id);
            node.status = StepStatus::Pending;
            node.correlation = None;
            node.signal_id = None;
            node.finished_at = None;
            d.state.status = SagaStatus::Running;
            d.state.failure_json = None;
        }
        Plan::Skip {
            id,
            output,
            incident,
        } => {
            if incident {
                d.state.status = SagaStatus::Running;
                d.state.failure_json = None;
            }
            if d.status(&id) == StepStatus::Waiting {
                d.unsubscribe(&id);
            }
            d.cancel_timers(
                &id,
                &[
                    TimerKind::Retry,
                    TimerKind::AttemptTimeout,
                    TimerKind::StepDeadline,
                    TimerKind::AwaitTimeout,
                    TimerKind::Wait,
                ],
            );
            // The step counts as done: an attempt still in flight is the operator's to know
            // about, and compensating the step later undoes it like any success.
            d.node_mut(&id).uncertain = false;
            nodes::succeed(d, &id, None, output);
        }
        Plan::MarkCompensated(ids) => {
            d.state.status = SagaStatus::Compensating;
            for id in ids {
                let attempt = d.node(&id).map(|n| n.attempt);
                d.set_status(&id, StepStatus::Compensated);
                d.emit(
                    EventType::CompensationSucceeded,
                    Some(&id),
                    attempt,
                    Some(json!({"by_hand": true, "request_id": cmd.request_id})),
                );
            }
        }
        Plan::Cancel { incident } => {
            let error = json!({
                "code": "CANCELLED",
                "message": format!("cancelled by {}: {}", cmd.actor, cmd.reason.as_deref().unwrap_or("no reason given")),
                "retryable": false,
            });
            if incident {
                // The await's failure is already recorded; compensating is what was not done.
                d.state.status = SagaStatus::Compensating;
            } else {
                nodes::abandon(d, error);
            }
        }
        Plan::Abort => {
            nodes::stop_waiting(d);
            let in_flight: Vec<&str> = d
                .state
                .steps
                .iter()
                .filter(|n| {
                    matches!(
                        n.status,
                        StepStatus::Running | StepStatus::Compensating | StepStatus::Cancelled
                    )
                })
                .map(|n| n.name.as_str())
                .collect();
            let detail = json!({
                "actor": cmd.actor,
                "reason": cmd.reason,
                "request_id": cmd.request_id,
                "in_flight": in_flight,
                "completed": d.state.completion_order,
            });
            d.state.pause = None;
            d.end(SagaStatus::Aborted, EventType::SagaAborted, Some(detail));
        }
        Plan::Pause => {
            d.state.pause = Some(Pause {
                actor: cmd.actor.clone(),
                reason: cmd.reason.clone(),
                request_id: cmd.request_id.clone(),
                at: d.now,
                held: Vec::new(),
            });
            d.emit(
                EventType::SagaPaused,
                None,
                None,
                Some(json!({"actor": cmd.actor, "reason": cmd.reason})),
            );
        }
        Plan::Resume => resume(d, cmd),
    }
}

/// Releases what the pause held, in order: each as the decision it would have had.
fn resume(d: &mut Draft<'_>, cmd: &AdminCommand) {
    let Some(pause) = d.state.pause.take() else {
        return;
    };
    d.emit(
        EventType::SagaResumed,
        None,
        None,
        Some(json!({
            "actor": cmd.actor,
            "paused_by": pause.actor,
            "paused_ms": d.now - pause.at,
            "held": pause.held.len(),
        })),
    );
    for held in &pause.held {
        if d.state.status.is_terminal() {
            // What is left would be ignored by an ended saga anyway.
            break;
        }
        match Held::parse(&d.state.saga_id, held) {
            Some(Held::Timer(timer)) => {
                let late_by = d.now - timer.due;
                let step = timer.step.as_deref().unwrap_or("");
                nodes::on_timer(d, timer.kind, step, timer.attempt.unwrap_or(1), late_by);
            }
            Some(Held::Input(Input::Reply(reply))) => {
                if let Handled::Ignored(_) = nodes::on_reply(d, &reply) {
                    d.state.ignored_replies += 1;
                }
            }
            Some(Held::Input(Input::Signal { step, signal, .. })) => {
                let _ = nodes::on_signal(d, &step, &signal);
            }
            // Only replies, signals and timers are ever held.
            Some(Held::Input(_)) | None => continue,
        }
        nodes::advance(d);
    }
}

/// Something a paused saga holds.
pub(crate) enum Held {
    Timer(Timer),
    Input(Input),
}

impl Held {
    /// How the pause stores it: the input as its event records it, or the whole timer.
    pub(crate) fn describe(&self) -> Value {
        match self {
            Held::Timer(timer) => json!({ "timer": timer }),
            Held::Input(input) => crate::replay::describe(input),
        }
    }

    fn parse(saga_id: &str, text: &str) -> Option<Held> {
        let value: Value = serde_json::from_str(text).ok()?;
        if let Some(timer) = value.get("timer") {
            return serde_json::from_value(timer.clone()).ok().map(Held::Timer);
        }
        crate::replay::recorded_input(saga_id, text).map(Held::Input)
    }
}
