//! Replaying recorded sagas through another definition, to see where it would diverge before it
//! ships.
//!
//! The first event of every decision carries the input that caused it ([`input_json`]), so a
//! saga's log is the list of its inputs. Replaying feeds them, at their recorded times, to the
//! new definition's decision function and compares what each decision does with what the
//! recorded one did: the commands sent (step and phase), the waits and awaits started, and how
//! the saga ended. Events that only describe the graph (a parallel step starting, a branch
//! ending) are not compared: a new version may structure the same behaviour differently.
//!
//! [`input_json`]: sagaflow_avro::SagaEvent::input_json

use sagaflow_avro::{
    EventType, Phase, Reply, ReplyError, ReplyStatus, SagaEvent, SagaState, Signal, StartSaga,
    TimerKind,
};
use sagaflow_definition::Definition;
use serde_json::{json, Value};

use crate::input::{Definitions, Dispatch, DispatchAction, Input, Outcome, Settings};

/// The input of a decision, as its first event records it.
pub fn describe(input: &Input) -> Value {
    match input {
        Input::Start(s) => json!({"start": {
            "request_id": s.request_id, "definition": s.definition, "version": s.version,
            "input_json": s.input_json, "requested_at": s.requested_at,
        }}),
        Input::Reply(r) => json!({"reply": {
            "message_id": r.message_id, "step": r.step, "phase": r.phase.as_str(),
            "attempt": r.attempt, "status": match r.status { ReplyStatus::Success => "SUCCESS", ReplyStatus::Failure => "FAILURE" },
            "output_json": r.output_json,
            "error": r.error.as_ref().map(|e| json!({"code": e.code, "message": e.message, "retryable": e.retryable})),
            "replied_at": r.replied_at,
        }}),
        Input::Timer { .. } => json!({"timer": {}}),
        Input::Admin(a) => json!({"admin": {
            "request_id": a.request_id, "action": a.action, "step": a.step,
            "output_json": a.output_json, "resolution": a.resolution, "actor": a.actor,
            "reason": a.reason, "job_id": a.job_id, "requested_at": a.requested_at,
        }}),
        Input::Signal { step, signal, .. } => json!({"signal": {
            "step": step, "signal_id": signal.signal_id, "event": signal.event,
            "correlation": signal.correlation, "payload_json": signal.payload_json,
            "sent_at": signal.sent_at, "ttl_ms": signal.ttl_ms,
        }}),
        Input::Dispatch(d) => json!({"dispatch": {
            "action": d.action.as_str(), "step": d.step, "phase": d.phase.as_str(),
            "attempt": d.attempt, "topic": d.topic, "reason": d.reason,
        }}),
    }
}

/// A timer input names the timer by id, which another version numbers differently: the log
/// records what it was instead.
pub(crate) fn describe_timer(kind: TimerKind, step: Option<&str>, attempt: Option<i32>) -> Value {
    json!({"timer": {"kind": kind, "step": step, "attempt": attempt}})
}

/// What a replayed input is, before it is matched to the replaying saga.
enum Recorded {
    Input(Input),
    Timer {
        kind: TimerKind,
        step: Option<String>,
        attempt: Option<i32>,
    },
}

fn text(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("no `{key}` string"))
}

fn opt_text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn int(v: &Value, key: &str) -> Result<i64, String> {
    v.get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("no `{key}` number"))
}

fn phase(name: &str) -> Result<Phase, String> {
    match name {
        "forward" => Ok(Phase::Forward),
        "compensate" => Ok(Phase::Compensate),
        other => Err(format!("unknown phase {other:?}")),
    }
}

fn recorded(saga_id: &str, cause: &str) -> Result<Recorded, String> {
    let v: Value = serde_json::from_str(cause).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(s) = v.get("start") {
        return Ok(Recorded::Input(Input::Start(StartSaga {
            request_id: text(s, "request_id")?,
            saga_id: saga_id.to_string(),
            definition: text(s, "definition")?,
            // The replay runs on the new version whatever the start asked for.
            version: None,
            input_json: text(s, "input_json")?,
            requested_at: int(s, "requested_at")?,
        })));
    }
    if let Some(r) = v.get("reply") {
        let phase = phase(&text(r, "phase")?)?;
        let status = match text(r, "status")?.as_str() {
            "SUCCESS" => ReplyStatus::Success,
            "FAILURE" => ReplyStatus::Failure,
            other => return Err(format!("unknown reply status {other:?}")),
        };
        let error = match r.get("error") {
            Some(e @ Value::Object(_)) => Some(ReplyError {
                code: text(e, "code")?,
                message: text(e, "message")?,
                retryable: e.get("retryable").and_then(Value::as_bool) == Some(true),
            }),
            _ => None,
        };
        let step = text(r, "step")?;
        return Ok(Recorded::Input(Input::Reply(Reply {
            message_id: text(r, "message_id")?,
            saga_id: saga_id.to_string(),
            idempotency_key: crate::ids::idempotency_key(saga_id, &step, phase),
            step,
            phase,
            attempt: i32::try_from(int(r, "attempt")?).map_err(|e| e.to_string())?,
            status,
            output_json: opt_text(r, "output_json"),
            error,
            replied_at: int(r, "replied_at")?,
        })));
    }
    if let Some(t) = v.get("timer") {
        let kind: TimerKind = serde_json::from_value(t.get("kind").cloned().unwrap_or_default())
            .map_err(|e| format!("unknown timer kind: {e}"))?;
        return Ok(Recorded::Timer {
            kind,
            step: opt_text(t, "step"),
            attempt: t
                .get("attempt")
                .and_then(Value::as_i64)
                .and_then(|a| i32::try_from(a).ok()),
        });
    }
    if let Some(s) = v.get("signal") {
        return Ok(Recorded::Input(Input::Signal {
            saga_id: saga_id.to_string(),
            step: text(s, "step")?,
            signal: Signal {
                signal_id: text(s, "signal_id")?,
                event: text(s, "event")?,
                correlation: text(s, "correlation")?,
                payload_json: opt_text(s, "payload_json"),
                sent_at: int(s, "sent_at")?,
                ttl_ms: s.get("ttl_ms").and_then(Value::as_i64),
            },
        }));
    }
    if let Some(a) = v.get("admin") {
        let mut a = a.clone();
        a["saga_id"] = Value::String(saga_id.to_string());
        return serde_json::from_value(a)
            .map(|a| Recorded::Input(Input::Admin(a)))
            .map_err(|e| format!("not an admin command: {e}"));
    }
    if let Some(d) = v.get("dispatch") {
        let action = match text(d, "action")?.as_str() {
            "held" => DispatchAction::Held,
            "released" => DispatchAction::Released,
            other => return Err(format!("unknown dispatch action {other:?}")),
        };
        return Ok(Recorded::Input(Input::Dispatch(Dispatch {
            saga_id: saga_id.to_string(),
            step: text(d, "step")?,
            phase: phase(&text(d, "phase")?)?,
            attempt: i32::try_from(int(d, "attempt")?).map_err(|e| e.to_string())?,
            topic: text(d, "topic")?,
            action,
            reason: opt_text(d, "reason"),
        })));
    }
    Err("neither a start, a reply, a timer, a signal, an admin command nor a dispatch".into())
}

/// The input `cause` records, unless it is a timer (which the caller must match to a pending
/// one) or cannot be read.
pub(crate) fn recorded_input(saga_id: &str, cause: &str) -> Option<Input> {
    match recorded(saga_id, cause) {
        Ok(Recorded::Input(input)) => Some(input),
        _ => None,
    }
}

/// What a decision did that its saga's participants or its outcome would notice.
fn observable(events: &[SagaEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| {
            let step = e.step.as_deref().unwrap_or("");
            match e.event_type {
                EventType::StepDispatched => Some(format!("send {step}")),
                EventType::CompensationDispatched => Some(format!("compensate {step}")),
                EventType::WaitStarted => Some(format!("wait {step}")),
                EventType::AwaitStarted => Some(format!("await {step}")),
                EventType::SagaCompleted => Some("end COMPLETED".into()),
                EventType::SagaCompensated => Some("end COMPENSATED".into()),
                EventType::SagaFailed => Some("end FAILED".into()),
                EventType::SagaIncident => Some("incident".into()),
                EventType::SagaAborted => Some("end ABORTED".into()),
                _ => None,
            }
        })
        .collect()
}

/// Where a replayed saga first did something else than it did on record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Seq of the recorded decision's first event.
    pub seq: i64,
    /// The input both versions decided, described.
    pub input: String,
    /// What the recorded decision did.
    pub recorded: Vec<String>,
    /// What the new version does instead (or why it could not take the input).
    pub replayed: Vec<String>,
}

/// How replaying one saga went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The new version does the same thing at every input.
    Same,
    /// It diverges here.
    Diverged(Divergence),
    /// The log cannot be replayed (it starts before inputs were recorded, or has a gap).
    Unreplayable(String),
}

/// Replays one saga's recorded events (in seq order) through `definition`.
pub fn replay_saga(definition: &Definition, events: &[SagaEvent]) -> Replayed {
    struct One<'d>(&'d Definition);
    impl Definitions for One<'_> {
        fn find(&self, name: &str, _version: Option<u32>) -> Option<&Definition> {
            (self.0.name == name).then_some(self.0)
        }
    }
    let defs = One(definition);
    let settings = Settings {
        replies: "replay".into(),
        retention: crate::Retention::default(),
        max_state_bytes: usize::MAX,
    };
    let Some(first) = events.first() else {
        return Replayed::Unreplayable("no events".into());
    };
    let saga_id = first.saga_id.as_str();
    if first.seq != 1 {
        return Replayed::Unreplayable(format!("the log starts at seq {}, not 1", first.seq));
    }
    // Decisions: each starts at an event that records its input.
    let mut decisions: Vec<&[SagaEvent]> = Vec::new();
    let mut begin = 0;
    for i in 1..=events.len() {
        if i == events.len() || events[i].input_json.is_some() {
            decisions.push(&events[begin..i]);
            begin = i;
        }
    }
    let mut state: Option<SagaState> = None;
    for decision in decisions {
        let head = &decision[0];
        let Some(cause) = head.input_json.as_deref() else {
            return Replayed::Unreplayable(format!(
                "event {} records no input (it was written before inputs were logged)",
                head.seq
            ));
        };
        let diverged = |replayed: Vec<String>| {
            Replayed::Diverged(Divergence {
                seq: head.seq,
                input: cause.to_string(),
                recorded: observable(decision),
                replayed,
            })
        };
        let input = match recorded(saga_id, cause) {
            Ok(Recorded::Input(input)) => input,
            Ok(Recorded::Timer {
                kind,
                step,
                attempt,
            }) => {
                let timer = state.as_ref().and_then(|s| {
                    s.timers
                        .iter()
                        .find(|t| t.kind == kind && t.step == step && t.attempt == attempt)
                });
                match timer {
                    Some(t) => Input::Timer {
                        saga_id: saga_id.to_string(),
                        timer_id: t.id.clone(),
                    },
                    None => {
                        return diverged(vec![format!(
                            "no {kind:?} timer of step {} is pending",
                            step.as_deref().unwrap_or("(saga)")
                        )])
                    }
                }
            }
            Err(e) => {
                return Replayed::Unreplayable(format!(
                    "the input of event {} cannot be read: {e}",
                    head.seq
                ))
            }
        };
        let result = crate::decide(&defs, &settings, state.as_ref(), &input, head.at);
        let replayed = match &result.outcome {
            Outcome::Applied => observable(&result.events),
            Outcome::Ignored(reason) => vec![format!("ignored: {}", reason.as_str())],
            Outcome::Rejected(rejection) => vec![format!("rejected: {rejection}")],
        };
        if replayed != observable(decision) {
            return diverged(replayed);
        }
        if let Some(next) = result.state {
            state = Some(next);
        }
    }
    Replayed::Same
}
