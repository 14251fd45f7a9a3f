//! The decision function: routes an input to the node it concerns, then lets the graph move.

use sagaflow_avro::{
    AdminCommand, EventType, Reply, SagaState, SagaStatus, Signal, StartSaga, TimerKind,
};
use sagaflow_definition::{Action, Definition};
use serde_json::{json, Value};
use tracing::debug_span;

use crate::admin::{self, Held};
use crate::draft::Draft;
use crate::graph::{parse_instance, Scope};
use crate::input::{
    Decision, Definitions, Dispatch, IgnoreReason, Input, Outcome, Rejection, Settings,
};
use crate::nodes::{self, Handled};
use crate::replay::{describe, describe_timer};

/// Decides what `input` does to the saga whose current state is `state` (`None` if the saga does
/// not exist yet). Pure: the same arguments always give the same decision.
pub fn decide(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    input: &Input,
    now: i64,
) -> Decision {
    let mut decision = match input {
        Input::Start(start) => {
            let _span = debug_span!("decide", saga_id = %start.saga_id, input = "start").entered();
            decide_start(definitions, settings, state, start, now)
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
            decide_reply(definitions, settings, state, reply, now)
        }
        Input::Timer { saga_id, timer_id } => {
            let timer = state.and_then(|s| s.timers.iter().find(|t| &t.id == timer_id));
            let _span = debug_span!(
                "decide",
                saga_id = %saga_id,
                input = "timer",
                timer = %timer_id,
                step = timer.and_then(|t| t.step.as_deref()).unwrap_or(""),
                attempt = timer.and_then(|t| t.attempt).unwrap_or(0)
            )
            .entered();
            decide_timer(definitions, settings, state, timer_id, now)
        }
        Input::Signal {
            saga_id,
            step,
            signal,
        } => {
            let _span = debug_span!("decide", saga_id = %saga_id, input = "signal", step = %step, event = %signal.event).entered();
            decide_signal(definitions, settings, state, step, signal, now)
        }
        Input::Admin(command) => {
            let _span = debug_span!(
                "decide",
                saga_id = %command.saga_id,
                input = "admin",
                action = command.action.as_str(),
                step = command.step.as_deref().unwrap_or(""),
                request_id = %command.request_id
            )
            .entered();
            decide_admin(definitions, settings, state, command, now)
        }
        Input::Dispatch(dispatch) => {
            let _span = debug_span!(
                "decide",
                saga_id = %dispatch.saga_id,
                input = "dispatch",
                action = dispatch.action.as_str(),
                step = %dispatch.step,
                attempt = dispatch.attempt,
                topic = %dispatch.topic
            )
            .entered();
            decide_dispatch(definitions, settings, state, dispatch, now)
        }
    };
    if decision.outcome == Outcome::Applied {
        if let Some(first) = decision.events.first_mut() {
            // The log carries every input in full, so a new version can be replayed on it.
            let cause = match input {
                Input::Timer { timer_id, .. } => state
                    .and_then(|s| s.timers.iter().find(|t| &t.id == timer_id))
                    .map(|t| describe_timer(t.kind, t.step.as_deref(), t.attempt)),
                other => Some(describe(other)),
            };
            first.input_json = cause.map(|c| c.to_string());
        }
        if let Some(keys) = business_keys_changed(definitions, state, &decision) {
            if let Some(last) = decision.events.last_mut() {
                last.index_json = Some(keys.to_string());
            }
        }
    }
    crate::retention::schedule(&mut decision, &settings.retention, now);
    decision
}

/// Every business key's value after `decision`, if the definition declares some (`index:`) and
/// the decision set or changed one: read models find sagas by these without knowing the
/// definition.
fn business_keys_changed(
    definitions: &dyn Definitions,
    before: Option<&SagaState>,
    decision: &Decision,
) -> Option<Value> {
    let after = decision.state.as_ref()?;
    if before.is_some_and(|b| b.context_json == after.context_json) {
        return None;
    }
    let def = definitions.find(&after.definition, Some(after.version as u32))?;
    if def.index.is_empty() {
        return None;
    }
    let keys = |state: Option<&SagaState>| -> serde_json::Map<String, Value> {
        let context: Value = state
            .and_then(|s| serde_json::from_str(&s.context_json).ok())
            .unwrap_or(Value::Null);
        def.index
            .iter()
            .filter_map(|(name, path)| {
                path.get(&context)
                    .filter(|v| !v.is_null())
                    .map(|v| (name.clone(), v.clone()))
            })
            .collect()
    };
    let now = keys(Some(after));
    (now != keys(before)).then_some(Value::Object(now))
}

/// The decision about to be built for the running saga, or the one that says why there is
/// none.
fn running<'a>(
    definitions: &'a dyn Definitions,
    settings: &'a Settings,
    state: Option<&SagaState>,
    now: i64,
    finished: IgnoreReason,
) -> Result<Draft<'a>, Box<Decision>> {
    let Some(state) = state else {
        return Err(Box::new(Decision::unchanged(Outcome::Rejected(
            Rejection::UnknownSaga,
        ))));
    };
    if state.status.is_terminal() {
        return Err(Box::new(if finished == IgnoreReason::SagaFinished {
            ignore(state, finished, now)
        } else {
            Decision::unchanged(Outcome::Ignored(finished))
        }));
    }
    let def = definitions
        .find(&state.definition, Some(state.version as u32))
        .ok_or_else(|| {
            Box::new(Decision::unchanged(Outcome::Rejected(
                Rejection::UnknownDefinition {
                    name: state.definition.clone(),
                    version: Some(state.version),
                },
            )))
        })?;
    let draft = Draft::new(state.clone(), def, now, settings);
    match drift(&draft) {
        None => Ok(draft),
        Some(detail) => Err(Box::new(Decision::unchanged(Outcome::Rejected(
            Rejection::DefinitionDrift {
                definition: def.key(),
                detail,
            },
        )))),
    }
}

/// How the saga's nodes differ from its definition's, if they do. Every node the state records
/// must still be a step of the definition, and every top-level step must be recorded (they all
/// are from the start), or an input would be applied to the wrong step.
fn drift(d: &Draft<'_>) -> Option<String> {
    let known = |id: &str| {
        let base = id.split('/').next().unwrap_or(id);
        parse_instance(base).is_some_and(|(name, _)| d.layout.place(name).is_some())
    };
    let top_level_recorded = d.def.steps.iter().all(|s| d.node(&s.name).is_some());
    if top_level_recorded && d.state.steps.iter().all(|n| known(&n.name)) {
        return None;
    }
    let defined: Vec<&str> = d.def.all_steps().map(|s| s.name.as_str()).collect();
    let recorded: Vec<&str> = d.state.steps.iter().map(|s| s.name.as_str()).collect();
    Some(format!(
        "the saga has steps {recorded:?}, the definition now has {defined:?}"
    ))
}

fn decide_start(
    definitions: &dyn Definitions,
    settings: &Settings,
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
    if let Some(problem) = check_input(def, settings, &context, start.input_json.len()) {
        return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(problem)));
    }
    let state = SagaState {
        saga_id: start.saga_id.clone(),
        definition: def.name.clone(),
        version: def.version as i32,
        status: SagaStatus::Running,
        context_json: context.to_string(),
        steps: Vec::new(),
        completion_order: Vec::new(),
        next_seq: 1,
        started_at: now,
        updated_at: now,
        ignored_replies: 0,
        failure_json: None,
        timers: Vec::new(),
        compacted: false,
        pause: None,
        admin_requests: Vec::new(),
    };
    let mut draft = Draft::new(state, def, now, settings);
    draft.open(&def.steps, &Scope::default());
    let deadline = def
        .deadline
        .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    draft.emit_due(
        EventType::SagaStarted,
        None,
        None,
        Some(json!({"request_id": start.request_id, "input": context})),
        deadline,
    );
    if let Some(due) = deadline {
        draft.schedule(TimerKind::SagaDeadline, due, None, None);
    }
    nodes::advance(&mut draft);
    finish(draft)
}

/// Why an input cannot start a saga of `def`: too large, or a list a for_each of the
/// definition would run over (read from the input as it is) longer than the definition allows.
fn check_input(
    def: &Definition,
    settings: &Settings,
    input: &Value,
    bytes: usize,
) -> Option<String> {
    if bytes > settings.max_state_bytes {
        return Some(format!(
            "the input is {bytes} bytes, over the engine's state limit of {} (max-state-bytes); keep large documents in a store and pass their ids",
            settings.max_state_bytes
        ));
    }
    let limit = def.limits.for_each_items as usize;
    def.all_steps().find_map(|step| match &step.action {
        Action::ForEach(f) => match f.items.get(input) {
            Some(Value::Array(items)) if items.len() > limit => Some(format!(
                "{} has {} elements, but step {} of {} runs over at most {limit} (limits.for_each_items)",
                f.items,
                items.len(),
                step.name,
                def.key()
            )),
            _ => None,
        },
        _ => None,
    })
}

fn finish(draft: Draft<'_>) -> Decision {
    let mut state = draft.state;
    state.updated_at = draft.now;
    Decision {
        outcome: Outcome::Applied,
        state: Some(state),
        commands: draft.commands,
        events: draft.events,
        effects: draft.effects,
        forget: false,
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
        effects: Vec::new(),
        forget: false,
    }
}

fn decide_reply(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    reply: &Reply,
    now: i64,
) -> Decision {
    if let Some(state) = state.filter(|s| s.status.is_terminal()) {
        // Still tell a late reply from any other reply to a finished saga: it is what an
        // operator looks for when a participant is slower than its timeout.
        let late = state
            .steps
            .iter()
            .find(|s| s.name == reply.step)
            .is_some_and(|step| nodes::timed_out(step.status, step.attempt, reply));
        let reason = if late {
            IgnoreReason::LateReply
        } else {
            IgnoreReason::SagaFinished
        };
        return ignore(state, reason, now);
    }
    let mut draft = match running(
        definitions,
        settings,
        state,
        now,
        IgnoreReason::SagaFinished,
    ) {
        Ok(draft) => draft,
        Err(decision) => return *decision,
    };
    if draft.state.pause.is_some() {
        return hold(
            draft,
            Held::Input(Input::Reply(reply.clone())),
            Some(&reply.step),
            Some(reply.attempt),
        );
    }
    let state = state.expect("running() checked it");
    match nodes::on_reply(&mut draft, reply) {
        Handled::Applied => {
            nodes::advance(&mut draft);
            finish(draft)
        }
        Handled::Ignored(reason) => ignore(state, reason, now),
        Handled::Rejected(rejection) => Decision::unchanged(Outcome::Rejected(rejection)),
    }
}

fn decide_timer(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    timer_id: &str,
    now: i64,
) -> Decision {
    if let Some(state) = state.filter(|s| s.status.is_terminal()) {
        return match state.timers.iter().find(|t| t.id == timer_id) {
            Some(timer) if timer.kind == TimerKind::Expire => {
                crate::retention::expire(state, timer, &settings.retention, now)
            }
            _ => Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleTimer)),
        };
    }
    let mut draft = match running(definitions, settings, state, now, IgnoreReason::StaleTimer) {
        Ok(draft) => draft,
        Err(decision) => return *decision,
    };
    let Some(position) = draft.state.timers.iter().position(|t| t.id == timer_id) else {
        // Timers of a branch that was cancelled, or of a step that moved on, were dropped.
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleTimer));
    };
    // Firing removes the timer whatever it does, so it never fires again.
    let timer = draft.state.timers.remove(position);
    if draft.state.pause.is_some() {
        let step = timer.step.clone();
        let attempt = timer.attempt;
        return hold(draft, Held::Timer(timer), step.as_deref(), attempt);
    }
    let late_by = now - timer.due;
    let step = timer.step.as_deref().unwrap_or("");
    nodes::on_timer(
        &mut draft,
        timer.kind,
        step,
        timer.attempt.unwrap_or(1),
        late_by,
    );
    nodes::advance(&mut draft);
    finish(draft)
}

fn decide_signal(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    step: &str,
    signal: &Signal,
    now: i64,
) -> Decision {
    let mut draft = match running(definitions, settings, state, now, IgnoreReason::StaleSignal) {
        Ok(draft) => draft,
        Err(decision) => return *decision,
    };
    if draft.state.pause.is_some() {
        let held = Held::Input(Input::Signal {
            saga_id: draft.state.saga_id.clone(),
            step: step.to_string(),
            signal: signal.clone(),
        });
        return hold(draft, held, Some(step), None);
    }
    match nodes::on_signal(&mut draft, step, signal) {
        Handled::Applied => {
            nodes::advance(&mut draft);
            finish(draft)
        }
        Handled::Ignored(reason) => Decision::unchanged(Outcome::Ignored(reason)),
        Handled::Rejected(rejection) => Decision::unchanged(Outcome::Rejected(rejection)),
    }
}

/// Keeps what reached a paused saga for its resume. An input that would grow the state past its
/// limit is dead-lettered instead, to be sent again once the saga resumes; a timer is tiny and
/// always kept.
fn hold(mut draft: Draft<'_>, held: Held, step: Option<&str>, attempt: Option<i32>) -> Decision {
    let entry = held.describe().to_string();
    let limit = draft.settings.max_state_bytes;
    if matches!(held, Held::Input(_)) && draft.state_bytes() + entry.len() > limit {
        return Decision::unchanged(Outcome::Rejected(Rejection::InvalidInput(format!(
            "the saga is paused, and holding this input ({} bytes) would grow its state past the engine's limit of {limit} bytes (max-state-bytes); resume the saga, then send the input again from the dead-letter topic",
            entry.len()
        ))));
    }
    let Some(pause) = draft.state.pause.as_mut() else {
        return finish(draft);
    };
    pause.held.push(entry);
    let count = pause.held.len();
    draft.emit(
        EventType::InputHeld,
        step,
        attempt,
        Some(json!({"held": count})),
    );
    finish(draft)
}

/// The engine held a command of the saga (its participant is paused) or sent one it held.
/// Unlike a reply, this is not held while an operator pauses the saga: it is the engine's
/// account of a command already decided, and the attempt's timeout must follow what happened
/// to the command.
fn decide_dispatch(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    dispatch: &Dispatch,
    now: i64,
) -> Decision {
    if state.is_none() {
        // The saga was deleted (its retention ran out) while its command was held: nothing
        // awaits the command, which is dropped, and nothing is dead-lettered.
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::StaleDispatch));
    }
    let mut draft = match running(
        definitions,
        settings,
        state,
        now,
        IgnoreReason::StaleDispatch,
    ) {
        Ok(draft) => draft,
        Err(decision) => return *decision,
    };
    match nodes::on_dispatch(&mut draft, dispatch) {
        Handled::Applied => finish(draft),
        Handled::Ignored(reason) => Decision::unchanged(Outcome::Ignored(reason)),
        Handled::Rejected(rejection) => Decision::unchanged(Outcome::Rejected(rejection)),
    }
}

fn decide_admin(
    definitions: &dyn Definitions,
    settings: &Settings,
    state: Option<&SagaState>,
    command: &AdminCommand,
    now: i64,
) -> Decision {
    let Some(state) = state else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownSaga));
    };
    if state.admin_requests.contains(&command.request_id) {
        return Decision::unchanged(Outcome::Ignored(IgnoreReason::DuplicateAdminCommand));
    }
    let Some(def) = definitions.find(&state.definition, Some(state.version as u32)) else {
        return Decision::unchanged(Outcome::Rejected(Rejection::UnknownDefinition {
            name: state.definition.clone(),
            version: Some(state.version),
        }));
    };
    let mut draft = Draft::new(state.clone(), def, now, settings);
    // An ended saga's command is rejected by the plan; its graph is not looked at.
    if !state.status.is_terminal() {
        if let Some(detail) = drift(&draft) {
            return Decision::unchanged(Outcome::Rejected(Rejection::DefinitionDrift {
                definition: def.key(),
                detail,
            }));
        }
    }
    if admin::apply(&mut draft, command) && !draft.state.status.is_terminal() {
        nodes::advance(&mut draft);
    }
    finish(draft)
}
