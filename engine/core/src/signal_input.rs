//! Signals and correlation messages as they come off their topics: what a signal must hold
//! before any saga sees it, and which partition handles each correlation message.

use sagaflow_avro::{Correlation, CorrelationKind, Signal};

/// Separates the correlation value from the signal id in the keys of parked signals, so a
/// correlation value must not contain it.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// A signal that cannot be matched to any saga; the runtime dead-letters it as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a signal needs an event, a signal_id, a correlation without U+001F, and a payload_json that is a JSON object (or null)")]
pub struct InvalidSignal;

/// Checks a signal from the signals topic. Done on arrival, where the signal can still be
/// dead-lettered as it came: a bad payload found at delivery would leave the saga waiting and
/// the signal gone.
pub fn check_signal(signal: &Signal) -> Result<(), InvalidSignal> {
    let payload_ok = signal
        .payload_json
        .as_deref()
        .is_none_or(|p| serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| v.is_object()));
    if signal.event.is_empty()
        || signal.signal_id.is_empty()
        || signal.correlation.contains(KEY_SEPARATOR)
        || !payload_ok
    {
        return Err(InvalidSignal);
    }
    Ok(())
}

/// The value whose partition handles a correlation message: a delivery goes to its saga, every
/// other kind to the owner of the correlation value.
pub fn owner(message: &Correlation) -> &str {
    if message.kind == CorrelationKind::Deliver {
        &message.saga_id
    } else {
        &message.correlation
    }
}

/// The output id and the record key of a correlation message sent to another partition;
/// `signal_id` names the signal a DELIVER or RETURN carries.
///
/// The key is the [`owner`], so the message lands on the partition that handles it. The id is
/// stable, so a message sent again after a crash is the same message.
pub fn route(message: &Correlation, signal_id: &str) -> (String, String) {
    let id = match message.kind {
        CorrelationKind::Subscribe => format!("subscribe/{}/{}", message.saga_id, message.step),
        CorrelationKind::Unsubscribe => {
            format!("unsubscribe/{}/{}", message.saga_id, message.step)
        }
        CorrelationKind::Deliver => format!(
            "deliver/{}/{}/{}/{}",
            message.event, message.correlation, message.saga_id, signal_id
        ),
        CorrelationKind::Return => format!(
            "return/{}/{}/{}/{}",
            message.event, message.correlation, message.saga_id, signal_id
        ),
    };
    (id, owner(message).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(correlation: &str, payload: Option<&str>) -> Signal {
        Signal {
            signal_id: "s-1".into(),
            event: "confirmed".into(),
            correlation: correlation.into(),
            payload_json: payload.map(Into::into),
            sent_at: 0,
            ttl_ms: None,
        }
    }

    #[test]
    fn a_signal_needs_ids_a_clean_correlation_and_an_object_payload() {
        assert_eq!(check_signal(&signal("o-1", None)), Ok(()));
        assert_eq!(check_signal(&signal("o-1", Some(r#"{"ok":true}"#))), Ok(()));
        assert_eq!(
            check_signal(&signal("o-1", Some("[1]"))),
            Err(InvalidSignal)
        );
        assert_eq!(check_signal(&signal("o-1", Some("{"))), Err(InvalidSignal));
        assert_eq!(check_signal(&signal("o\u{1f}1", None)), Err(InvalidSignal));
        let mut nameless = signal("o-1", None);
        nameless.event.clear();
        assert_eq!(check_signal(&nameless), Err(InvalidSignal));
    }

    #[test]
    fn deliveries_go_to_the_saga_everything_else_to_the_correlation_value() {
        let mut message = Correlation {
            kind: CorrelationKind::Deliver,
            event: "confirmed".into(),
            correlation: "o-1".into(),
            saga_id: "trip-1".into(),
            step: "confirm".into(),
            signal: None,
        };
        assert_eq!(
            route(&message, "s-1"),
            ("deliver/confirmed/o-1/trip-1/s-1".into(), "trip-1".into())
        );
        message.kind = CorrelationKind::Subscribe;
        assert_eq!(
            route(&message, ""),
            ("subscribe/trip-1/confirm".into(), "o-1".into())
        );
        message.kind = CorrelationKind::Return;
        assert_eq!(owner(&message), "o-1");
    }
}
