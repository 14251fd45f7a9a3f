//! Stable message ids: the same decision always produces the same ids, so every receiver can
//! deduplicate redeliveries (guarantee G2).

use sagaflow_avro::Phase;

/// Id and idempotency key of a command: `saga/step/phase/attempt`.
pub fn command_id(saga_id: &str, step: &str, phase: Phase, attempt: i32) -> String {
    format!("{saga_id}/{step}/{}/{attempt}", phase.as_str())
}

/// Id of an event: `saga/seq`.
pub fn event_id(saga_id: &str, seq: i64) -> String {
    format!("{saga_id}/{seq}")
}
