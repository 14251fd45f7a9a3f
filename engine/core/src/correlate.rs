//! Matching external events (signals) to sagas waiting in `await` steps.
//!
//! The partition that owns a correlation value (the partition of its key) keeps, per event and
//! value, the sagas awaiting it and the signals that arrived before any saga did. These pure
//! functions say what one input does to that record; the runtime journals the result like any
//! decision, so matching is effectively-once too.

use sagaflow_avro::{Awaiter, Signal};

/// What the correlation record of one (event, value) must become, and what to deliver.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matched {
    /// Signals to hand to sagas (saga id, await step, signal).
    pub deliver: Vec<(Awaiter, Signal)>,
    /// The new list of awaiting sagas (empty: delete the record).
    pub awaiters: Vec<Awaiter>,
    /// A signal to buffer until it expires (epoch ms).
    pub buffer: Option<(Signal, i64)>,
    /// Buffered signals consumed (by id).
    pub consumed: Vec<String>,
}

/// A signal arrived: every saga awaiting it gets it; with none, it waits in the buffer.
pub fn on_signal(awaiters: &[Awaiter], signal: Signal, now: i64, default_ttl_ms: i64) -> Matched {
    if awaiters.is_empty() {
        let ttl = signal.ttl_ms.unwrap_or(default_ttl_ms).max(0);
        let expires = now.saturating_add(ttl);
        return Matched {
            buffer: Some((signal, expires)),
            ..Matched::default()
        };
    }
    Matched {
        deliver: awaiters
            .iter()
            .map(|a| (a.clone(), signal.clone()))
            .collect(),
        ..Matched::default()
    }
}

/// A saga started awaiting: the oldest buffered signal, if any, is its at once.
/// `buffered` is in arrival order.
pub fn on_subscribe(awaiters: &[Awaiter], buffered: &[Signal], awaiter: Awaiter) -> Matched {
    if let Some(first) = buffered.first() {
        return Matched {
            deliver: vec![(awaiter, first.clone())],
            awaiters: awaiters.to_vec(),
            consumed: vec![first.signal_id.clone()],
            ..Matched::default()
        };
    }
    let mut list = awaiters.to_vec();
    if !list.contains(&awaiter) {
        list.push(awaiter);
    }
    Matched {
        awaiters: list,
        ..Matched::default()
    }
}

/// A saga stopped awaiting (it timed out or ended).
pub fn on_unsubscribe(awaiters: &[Awaiter], awaiter: &Awaiter) -> Matched {
    Matched {
        awaiters: awaiters.iter().filter(|a| *a != awaiter).cloned().collect(),
        ..Matched::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(id: &str) -> Signal {
        Signal {
            signal_id: id.into(),
            event: "confirmed".into(),
            correlation: "o-1".into(),
            payload_json: None,
            sent_at: 0,
            ttl_ms: None,
        }
    }

    fn saga(id: &str) -> Awaiter {
        Awaiter {
            saga_id: id.into(),
            step: "confirm".into(),
        }
    }

    #[test]
    fn a_signal_before_the_await_is_buffered_then_consumed() {
        let m = on_signal(&[], signal("x"), 100, 50);
        assert_eq!(m.buffer, Some((signal("x"), 150)));
        assert!(m.deliver.is_empty());
        let m = on_subscribe(&[], &[signal("x")], saga("s1"));
        assert_eq!(m.deliver, vec![(saga("s1"), signal("x"))]);
        assert_eq!(m.consumed, vec!["x".to_string()]);
        assert!(m.awaiters.is_empty());
    }

    #[test]
    fn a_signal_after_the_await_goes_to_every_awaiting_saga() {
        let m = on_subscribe(&[], &[], saga("s1"));
        let m = on_subscribe(&m.awaiters, &[], saga("s2"));
        assert_eq!(m.awaiters, vec![saga("s1"), saga("s2")]);
        let mut with_ttl = signal("y");
        with_ttl.ttl_ms = Some(5);
        let d = on_signal(&m.awaiters, with_ttl.clone(), 0, 50);
        assert_eq!(d.deliver.len(), 2);
        assert!(d.awaiters.is_empty() && d.buffer.is_none());
        assert_eq!(on_signal(&[], with_ttl, 10, 50).buffer.unwrap().1, 15);
    }

    #[test]
    fn unsubscribe_removes_only_that_saga() {
        let m = on_unsubscribe(&[saga("s1"), saga("s2")], &saga("s1"));
        assert_eq!(m.awaiters, vec![saga("s2")]);
    }
}
