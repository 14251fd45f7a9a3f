//! The decision function.

use sagaflow_avro::{
    EventType, Phase, Reply, ReplyStatus, SagaState, SagaStatus, StartSaga, StepState, StepStatus,
};
use serde_json::{json, Value};
use tracing::debug_span;

use crate::flow::Draft;
use crate::input::{Decision, Definitions, IgnoreReason, Input, Outcome, Rejection, Topics};

/// Decides what `input` does to the saga whose current state is `state` (`None` if the saga does
/// not exist yet). Pure: the same arguments always give the same decision.
pub fn decide(
    definitions: &dyn Definitions,
    topics: &Topics,
    state: Option<&SagaState>,
    input: &Input,
    now: i64,
) -> Decision {
    match input {
        Input::Start(start) => {
            let _span = debug_span!("decide", saga_id = %start.saga_id, input = "start").entered();
            decide_start(definitions, topics, state, start, now)
        }
        Input::Reply(reply) => {
            let _span = debug_span!(
                "decide",
                saga_id = %reply.saga_id,
                input = "reply",
                step = %reply.step,
                phase = reply.phase.as_str(),
                attempt = reply.attempt
            )
            .entered();
            decide_reply(definitions, topics, state, reply, now)
        }
    }
}

fn decide_start(
    definitions: &dyn Definitions,
    topics: &Topics,
    state: Option<&SagaState>,
    start: &StartSaga,
    now: i64,
) -> Decision {
    if state.is_some() {
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::DuplicateStart));
    }
    let version = match start.version {
        Some(v) if v < 1 => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
                "version must be at least 1, got {v}"
            ))))
        }
        Some(v) => Some(v as u32),
        None => None,
    };
    let Some(def) = definitions.find(&start.definition, version) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownDefinition {
            name: start.definition.clone(),
            version: start.version,
        }));
    };
    let context: Value = match serde_json::from_str(&start.input_json) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(
                "input_json must be a JSON object".into(),
            )))
        }
        Err(e) => {
            return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
                "input_json is not valid JSON: {e}"
            ))))
        }
    };
    let state = SagaState {
        saga_id: start.saga_id.clone(),
        definition: def.name.clone(),
        version: def.version as i32,
        status: SagaStatus::Running,
        context_json: context.to_string(),
        steps: def
            .steps
            .iter()
            .map(|s| StepState {
                name: s.name.clone(),
                status: StepStatus::Pending,
                attempt: 0,
                dispatched_at: None,
                finished_at: None,
            })
            .collect(),
        completion_order: Vec::new(),
        next_seq: 1,
        started_at: now,
        updated_at: now,
        ignored_replies: 0,
        failure_json: None,
    };
    let mut draft = Draft::new(state, def, now, topics);
    draft.emit(
        EventType::SagaStarted,
        None,
        None,
        Some(json!({"request_id": start.request_id, "input": context})),
    );
    draft.advance();
    finish(draft)
}

fn finish(draft: Draft<'_>) -> Decision {
    let mut state = draft.state;
    state.updated_at = draft.now;
    Decision {
        outcome: Outcome::Applied,
        state: Some(state),
        commands: draft.commands,
        events: draft.events,
    }
}

fn ignore(state: &SagaState, reason: IgnoreReason, now: i64) -> Decision {
    // The count is part of the state so that it survives restarts and shows up in audits.
    let mut state = state.clone();
    state.ignored_replies += 1;
    state.updated_at = now;
    Decision {
        outcome: Outcome::Ignored(reason),
        state: Some(state),
        commands: Vec::new(),
        events: Vec::new(),
    }
}

fn decide_reply(
    definitions: &dyn Definitions,
    topics: &Topics,
    state: Option<&SagaState>,
    reply: &Reply,
    now: i64,
) -> Decision {
    let Some(state) = state else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownSaga));
    };
    if state.status.is_terminal() {
        return ignore(state, IgnoreReason::SagaFinished, now);
    }
    let Some(def) = definitions.find(&state.definition, Some(state.version as u32)) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownDefinition {
            name: state.definition.clone(),
            version: Some(state.version),
        }));
    };
    let Some(index) = def.step_index(&reply.step) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
            "definition {}@{} has no step named {:?}",
            def.name, def.version, reply.step
        ))));
    };
    let step = &state.steps[index];
    let awaiting = match reply.phase {
        Phase::Forward => step.status == StepStatus::Running,
        Phase::Compensate => step.status == StepStatus::Compensating,
    };
    if !awaiting || reply.attempt != step.attempt {
        let duplicate = reply.attempt == step.attempt && phase_done(step.status, reply.phase);
        let reason = if duplicate {
            IgnoreReason::DuplicateReply
        } else {
            IgnoreReason::StaleReply
        };
        return ignore(state, reason, now);
    }

    let mut draft = Draft::new(state.clone(), def, now, topics);
    match (reply.phase, reply.status) {
        (Phase::Forward, ReplyStatus::Success) => apply_output(&mut draft, index, reply),
        (Phase::Compensate, ReplyStatus::Success) => {
            let step = draft.step_mut(index);
            step.status = StepStatus::Compensated;
            step.finished_at = Some(now);
            draft.emit(
                EventType::CompensationSucceeded,
                Some(&reply.step),
                Some(reply.attempt),
                None,
            );
            draft.advance();
        }
        (phase, ReplyStatus::Failure) => {
            let error = match &reply.error {
                Some(e) => json!({"code": e.code, "message": e.message, "retryable": e.retryable}),
                None => {
                    json!({"code": "UNSPECIFIED", "message": "failure reply without an error", "retryable": false})
                }
            };
            draft.fail_phase(index, phase, reply.attempt, error);
        }
    }
    finish(draft)
}

/// Whether a step in `status` has already finished `phase` (so a matching reply is a duplicate).
fn phase_done(status: StepStatus, phase: Phase) -> bool {
    match phase {
        Phase::Forward => !matches!(status, StepStatus::Pending | StepStatus::Running),
        Phase::Compensate => matches!(
            status,
            StepStatus::Compensated | StepStatus::CompensationFailed
        ),
    }
}

fn apply_output(draft: &mut Draft<'_>, index: usize, reply: &Reply) {
    let output: Value = match reply.output_json.as_deref().map(serde_json::from_str) {
        None => Value::Null,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            let error = json!({"code": "INVALID_OUTPUT", "message": format!("output_json is not valid JSON: {e}"), "retryable": false});
            draft.fail_phase(index, Phase::Forward, reply.attempt, error);
            return;
        }
    };
    let mut context: Value =
        serde_json::from_str(&draft.state.context_json).unwrap_or_else(|_| json!({}));
    for (key, path) in draft.def.steps[index].output.iter() {
        match path.get(&output) {
            Some(value) => {
                context[key.as_str()] = value.clone();
            }
            None => {
                let error = json!({
                    "code": "OUTPUT_MAPPING",
                    "message": format!("step output has no value at {path} for context key {key}"),
                    "retryable": false
                });
                draft.fail_phase(index, Phase::Forward, reply.attempt, error);
                return;
            }
        }
    }
    draft.state.context_json = context.to_string();
    let now = draft.now;
    let step = draft.step_mut(index);
    step.status = StepStatus::Succeeded;
    step.finished_at = Some(now);
    draft.state.completion_order.push(reply.step.clone());
    draft.emit(
        EventType::StepSucceeded,
        Some(&reply.step),
        Some(reply.attempt),
        Some(output),
    );
    draft.advance();
}
