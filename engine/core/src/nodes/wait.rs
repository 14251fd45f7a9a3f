//! Wait steps: pausing for a duration, until an instant or a calendar time.

use sagaflow_avro::{EventType, StepStatus, TimerKind};
use sagaflow_definition::Wait;
use serde_json::{json, Value};

use super::{leaf, Progress, Unwound};
use crate::draft::{ms, Draft, Failure};

pub(super) fn advance(d: &mut Draft<'_>, wait: &Wait, id: &str) -> Progress {
    if d.status(id) == StepStatus::Pending {
        start(d, wait, id);
    }
    leaf::progress(d.status(id))
}

fn start(d: &mut Draft<'_>, wait: &Wait, id: &str) {
    let view = match d.locate(id) {
        Some((_, scope)) => scope.view(&d.context()),
        None => d.context(),
    };
    let due = match wait {
        Wait::For(duration) => Ok(d.now + ms(*duration)),
        Wait::UntilInstant(at) => Ok(*at),
        Wait::UntilContext(path) => match path.get(&view) {
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| format!("{path} is not an integer")),
            Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|e| format!("{path} = {s:?} is not an RFC 3339 time: {e}")),
            Some(other) => Err(format!(
                "{path} = {other} is neither an RFC 3339 string nor epoch milliseconds"
            )),
            None => Err(format!("the context has nothing at {path}")),
        },
        Wait::Calendar(calendar) => calendar
            .next_after(d.now)
            .ok_or_else(|| format!("calendar `{calendar}` never fires again")),
    };
    let due = match due {
        Ok(due) => due,
        Err(message) => {
            leaf::fail_step(d, id, 1, Failure::fatal("WAIT_TIME", message));
            return;
        }
    };
    let now = d.now;
    let node = d.node_mut(id);
    node.status = StepStatus::Waiting;
    node.attempt = 1;
    node.dispatched_at = Some(now);
    d.emit_due(EventType::WaitStarted, Some(id), None, None, Some(due));
    // A time already past still goes through the timer, so every wait ends the same way.
    d.schedule(TimerKind::Wait, due, Some(id), None);
}

pub(super) fn on_timer(d: &mut Draft<'_>, kind: TimerKind, id: &str, late_by: i64) {
    if kind == TimerKind::Wait && d.status(id) == StepStatus::Waiting {
        d.emit(
            EventType::WaitEnded,
            Some(id),
            None,
            Some(json!({"late_by_ms": late_by})),
        );
        leaf::succeed(d, id, None, json!({}));
    }
}

/// A wait has nothing to undo; one still waiting just stops.
pub(super) fn unwind(d: &mut Draft<'_>, id: &str) -> Unwound {
    match d.status(id) {
        StepStatus::Waiting => {
            d.cancel_timers(id, &[TimerKind::Wait]);
            d.set_status(id, StepStatus::Skipped);
        }
        StepStatus::Succeeded => d.set_status(id, StepStatus::Compensated),
        _ => {}
    }
    Unwound::Done
}
