//! Parked records: partition state that is not a saga, kept under reserved keys next to the
//! saga states (so the journal, the changelog and restores treat both alike).
//!
//! - `__delay/<topic>/<partition>/<offset>`: a record waiting for delayed delivery;
//! - `__signal/<event>/<correlation>␟<signal id>`: a signal no saga awaits yet, or (without a
//!   value) one already delivered, remembered for the signal time to live to recognise copies;
//! - `__await/<event>/<correlation>`: the sagas awaiting an event with that correlation value;
//! - `__held/<topic>/<journal offset>/<n>`: a command held while its participant is paused or
//!   at a limit, in the order to release it (journal offsets only grow, across owners too);
//! - `__sent/<saga id>`: the saga's commands in flight to participants with a limit.

use sagaflow_avro::{Awaiter, Header, Outbound, Parked, ParkedKind, Signal};
use sagaflow_core::delay::DelayRecord;
use sagaflow_core::signal_input::KEY_SEPARATOR;

use crate::task::InputRecord;

pub use sagaflow_core::delay::{DELAY_TOPIC_HEADER, DELAY_UNTIL_HEADER};

/// Prefix of every parked key; saga ids may not start with it.
pub(crate) const RESERVED: &str = "__";

pub(crate) fn delay_key(id: &str) -> String {
    format!("__delay/{id}")
}

pub(crate) fn await_key(event: &str, correlation: &str) -> String {
    format!("__await/{event}/{correlation}")
}

pub(crate) fn signal_prefix(event: &str, correlation: &str) -> String {
    format!("__signal/{event}/{correlation}{KEY_SEPARATOR}")
}

pub(crate) fn signal_key(event: &str, correlation: &str, signal_id: &str) -> String {
    format!("{}{signal_id}", signal_prefix(event, correlation))
}

pub(crate) fn held_prefix(topic: &str) -> String {
    format!("{HELD}{topic}/")
}

/// `offset` is the journal offset of the batch that holds the command and `n` its place in the
/// batch, so that key order is the order the commands were decided in.
pub(crate) fn held_key(topic: &str, offset: i64, n: usize) -> String {
    format!("{}{offset:020}/{n:08}", held_prefix(topic))
}

/// The command topic of a held command's key.
pub(crate) fn held_topic(key: &str) -> Option<&str> {
    key.strip_prefix(HELD)?.split('/').next()
}

pub(crate) const HELD: &str = "__held/";

/// Prefix of the records of commands in flight to participants with a limit, one per saga.
pub(crate) const SENT: &str = "__sent/";

pub(crate) fn sent_key(saga_id: &str) -> String {
    format!("{SENT}{saga_id}")
}

/// A saga's record of commands in flight, empty.
pub(crate) fn sent(saga_id: &str) -> Parked {
    Parked {
        kind: ParkedKind::Sent,
        id: saga_id.to_string(),
        due: 0,
        topic: None,
        key: None,
        value: None,
        headers: Vec::new(),
        sagas: Vec::new(),
        received_at: 0,
    }
}

/// Whether a changelog or journal key holds a parked record rather than a saga.
pub(crate) fn is_parked_key(key: &str) -> bool {
    ["__delay/", "__signal/", "__await/", HELD, SENT]
        .iter()
        .any(|p| key.starts_with(p))
}

/// When the record's timer fires, if it has one.
pub(crate) fn due(parked: &Parked) -> Option<i64> {
    match parked.kind {
        ParkedKind::Delayed | ParkedKind::Signal => Some(parked.due),
        ParkedKind::Await | ParkedKind::Held | ParkedKind::Sent => None,
    }
}

/// Reads a delayed-delivery request from the delay topic (see [`sagaflow_core::delay`]); the
/// error is the dead letter's reason.
pub(crate) fn delayed(
    topic: &str,
    partition: i32,
    record: &InputRecord<'_>,
    now: i64,
) -> Result<Parked, String> {
    let request = DelayRecord {
        offset: record.offset,
        key: record.key,
        payload: record.payload,
        headers: &record.headers,
    };
    sagaflow_core::delay::delayed(topic, partition, request, now).map_err(|e| e.to_string())
}

/// The delivery of a delayed record: key, value and headers as they came; the relay adds the
/// stable `sagaflow-id` header (the same on a redelivery after a crash).
pub(crate) fn delivery(parked: &Parked) -> Outbound {
    Outbound {
        id: format!("delay/{}", parked.id),
        topic: parked.topic.clone().unwrap_or_default(),
        key: parked.key.clone(),
        value: parked.value.clone(),
        headers: headers(parked),
        // Decided up to `timer-lookahead-ms` early; the relay holds it until its time.
        not_before: Some(parked.due),
    }
}

fn headers(parked: &Parked) -> Vec<Header> {
    parked
        .headers
        .iter()
        .map(|h| Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

/// A command held because its participant is paused: the record as the relay would have sent
/// it.
pub(crate) fn held(command: Outbound, now: i64) -> Parked {
    Parked {
        kind: ParkedKind::Held,
        id: command.id,
        due: 0,
        topic: Some(command.topic),
        key: command.key,
        value: command.value,
        headers: command
            .headers
            .into_iter()
            .map(|h| sagaflow_avro::ParkedHeader {
                name: h.name,
                value: h.value,
            })
            .collect(),
        sagas: Vec::new(),
        received_at: now,
    }
}

/// The sagas awaiting `event` with `correlation`.
pub(crate) fn awaiters(event: &str, correlation: &str, sagas: Vec<Awaiter>, now: i64) -> Parked {
    Parked {
        kind: ParkedKind::Await,
        id: format!("{event}/{correlation}"),
        due: 0,
        topic: None,
        key: None,
        value: None,
        headers: Vec::new(),
        sagas,
        received_at: now,
    }
}

/// A signal kept until a saga awaits it or it expires; `value` is its wire form.
pub(crate) fn buffered(signal: &Signal, value: Vec<u8>, expires: i64, now: i64) -> Parked {
    Parked {
        kind: ParkedKind::Signal,
        id: signal.signal_id.clone(),
        due: expires,
        topic: None,
        key: Some(signal.correlation.clone().into_bytes()),
        value: Some(value),
        headers: Vec::new(),
        sagas: Vec::new(),
        received_at: now,
    }
}

/// A signal that was delivered: its id stays remembered until `until`, so a copy of it (a
/// producer's retry, or a forward sent again after a crash) is recognised as a duplicate. Kept
/// under the signal's own key, with no value.
pub(crate) fn delivered_signal(signal: &Signal, until: i64, now: i64) -> Parked {
    Parked {
        kind: ParkedKind::Signal,
        id: signal.signal_id.clone(),
        due: until,
        topic: None,
        key: Some(signal.correlation.clone().into_bytes()),
        value: None,
        headers: Vec::new(),
        sagas: Vec::new(),
        received_at: now,
    }
}

/// Whether a parked signal is only the memory of a delivered one.
pub(crate) fn is_delivered_signal(parked: &Parked) -> bool {
    parked.kind == ParkedKind::Signal && parked.value.is_none()
}

/// The dead letter of a signal that no saga claimed before it expired.
pub(crate) fn expired_signal(parked: &Parked, dlq: &str, partition: i32) -> Outbound {
    let mut headers = headers(parked);
    for (name, value) in [
        ("sagaflow-dlq-reason", "signal-expired".to_string()),
        (
            "sagaflow-dlq-detail",
            "no saga awaited this event before its time to live ran out".to_string(),
        ),
        ("sagaflow-dlq-partition", partition.to_string()),
    ] {
        headers.push(Header {
            name: name.into(),
            value: value.into_bytes(),
        });
    }
    Outbound {
        id: format!("expired/{}/{}", partition, parked.id),
        topic: dlq.to_string(),
        key: parked.key.clone(),
        value: parked.value.clone(),
        headers,
        not_before: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: Vec<(&str, &str)>) -> InputRecord<'static> {
        InputRecord {
            topic: "g.delay",
            offset: 7,
            key: Some(b"k"),
            payload: Some(b"v"),
            headers: headers
                .into_iter()
                .map(|(n, v)| Header {
                    name: n.into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_delay_request_needs_a_target_and_a_time() {
        let ok = delayed(
            "g.delay",
            2,
            &record(vec![
                (DELAY_TOPIC_HEADER, "out"),
                (DELAY_UNTIL_HEADER, "2026-01-01T00:00:00Z"),
                ("x", "y"),
            ]),
            5,
        )
        .unwrap();
        assert_eq!(ok.id, "g.delay/2/7");
        assert_eq!(ok.due, 1_767_225_600_000);
        let out = delivery(&ok);
        assert_eq!(out.topic, "out");
        assert_eq!(out.id, "delay/g.delay/2/7");
        assert_eq!(out.headers.len(), 3, "headers pass through unchanged");
        assert_eq!(
            delayed(
                "g.delay",
                0,
                &record(vec![
                    (DELAY_TOPIC_HEADER, "out"),
                    (DELAY_UNTIL_HEADER, "123")
                ]),
                0
            )
            .unwrap()
            .due,
            123
        );
        let no_time = delayed("g.delay", 0, &record(vec![(DELAY_TOPIC_HEADER, "out")]), 0);
        assert!(no_time.unwrap_err().contains(DELAY_UNTIL_HEADER));
        let bad = delayed(
            "g.delay",
            0,
            &record(vec![
                (DELAY_TOPIC_HEADER, "out"),
                (DELAY_UNTIL_HEADER, "soon"),
            ]),
            0,
        );
        assert!(bad.unwrap_err().contains("neither epoch ms nor RFC 3339"));
        assert!(delayed("g.delay", 0, &record(vec![(DELAY_UNTIL_HEADER, "1")]), 0).is_err());
    }

    #[test]
    fn keys_are_reserved_and_prefixes_do_not_overlap() {
        assert!(is_parked_key(&delay_key("a")));
        assert!(is_parked_key(&await_key("e", "c")));
        assert!(is_parked_key(&signal_key("e", "c", "s")));
        assert!(!is_parked_key("trip-1"));
        let held = held_key("hotel.commands", 12, 3);
        assert!(is_parked_key(&held));
        assert_eq!(held_topic(&held), Some("hotel.commands"));
        assert!(
            held_key("t", 9, 99) < held_key("t", 10, 0),
            "offset order first"
        );
        assert!(held.starts_with(&held_prefix("hotel.commands")));
        assert!(!held_key("t.a", 1, 0).starts_with(&held_prefix("t")));
        assert!(is_parked_key(&sent_key("trip-1")));
        // "c" and "c2" are different correlation values.
        assert!(!signal_key("e", "c2", "s").starts_with(&signal_prefix("e", "c")));
    }
}
