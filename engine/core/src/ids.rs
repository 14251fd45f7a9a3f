//! Stable message ids: the same decision always produces the same ids, so every receiver can
//! deduplicate redeliveries (guarantee G2).

use sagaflow_avro::Phase;

/// Message id of a command: `saga/step/phase/attempt`.
pub fn command_id(saga_id: &str, step: &str, phase: Phase, attempt: i32) -> String {
    format!("{saga_id}/{step}/{}/{attempt}", phase.as_str())
}

/// Idempotency key of a command: `saga/step/phase`, the same for every attempt, so a
/// participant that applied a timed-out attempt does not apply its retry again.
pub fn idempotency_key(saga_id: &str, step: &str, phase: Phase) -> String {
    format!("{saga_id}/{step}/{}", phase.as_str())
}

/// Id of an event: `saga/seq`.
pub fn event_id(saga_id: &str, seq: i64) -> String {
    format!("{saga_id}/{seq}")
}
