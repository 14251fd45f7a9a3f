//! Durable time in the decision function: retries with backoff, timeouts, deadlines, waits and
//! awaits, driven by timer inputs exactly as the engine's timer wheel feeds them.

mod common;

use common::{reply, start_of, Run};
use sagaflow_avro::{EventType as E, Phase, SagaEvent, SagaStatus, Signal, StepStatus};
use sagaflow_core::{Dispatch, DispatchAction, Effect, IgnoreReason, Input, Outcome};
use sagaflow_definition::Definition;
use serde_json::json;

const ORDER: &str = "
name: order
version: 1
deadline: 1h
steps:
  - name: pay
    command: {topic: t.pay, type: charge}
    compensation: {topic: t.pay, type: refund}
    retry:
      max_attempts: 3
      backoff: {type: exponential, initial: 1s, multiplier: 2, max: 10s}
      jitter: full
      non_retryable: [DECLINED]
    compensation_retry: {max_attempts: 2, backoff: {type: fixed, interval: 5s}}
    timeout: 2s
    output: {payment_id: $.id}
  - name: ship
    command: {topic: t.ship, type: ship}
";

fn run(yaml: &str) -> Run {
    Run::with(vec![Definition::parse("test.yaml", yaml).expect("valid")])
}

fn order() -> Run {
    let mut r = run(ORDER);
    r.feed(start_of("order", "o1", json!({})));
    r
}

#[test]
fn retries_are_scheduled_within_the_policy_bounds_with_their_due_time() {
    let mut r = order();
    let policy = r.defs.0[0].steps[0].retry.clone();
    for attempt in 1..=2 {
        let failed_at = r.now + 10;
        let d = r.feed_at(
            reply("o1", "pay", Phase::Forward, attempt, Err(("BUSY", true))),
            failed_at,
        );
        let event = d
            .events
            .iter()
            .find(|e| e.event_type == E::StepRetryScheduled)
            .expect("retry scheduled event");
        let due = event.due.expect("due time");
        let (lo, hi) = policy.delay_bounds(attempt as u32);
        let delay = (due - failed_at) as u128;
        assert!(
            lo.as_millis() <= delay && delay <= hi.as_millis(),
            "attempt {attempt}: delay {delay} ms outside [{lo:?}, {hi:?}]"
        );
        assert!(d.commands.is_empty(), "nothing is sent before the backoff");
        let fired = r.fire_next_timer().expect("retry timer");
        assert_eq!(fired.commands.len(), 1);
        assert_eq!(fired.commands[0].1.attempt, attempt + 1);
        // Same operation, same idempotency key; a new message id.
        assert_eq!(fired.commands[0].1.idempotency_key, "o1/pay/forward");
    }
    // The third failure exhausts the policy: the step fails and the saga compensates (nothing
    // is done yet, so it ends right away).
    r.feed(reply("o1", "pay", Phase::Forward, 3, Err(("BUSY", true))));
    assert_eq!(r.status(), SagaStatus::Compensated);
    assert!(r.only_retention_left());
}

#[test]
fn a_timeout_counts_as_a_retryable_failure_then_a_retry_succeeds() {
    let mut r = order();
    let dispatched = r.all_events();
    let due = dispatched
        .iter()
        .find(|e| e.event_type == E::StepDispatched)
        .and_then(|e| e.due)
        .expect("attempt deadline on the dispatch event");
    assert_eq!(due, r.now + 2_000);
    // The attempt timeout fires.
    let d = r.fire_next_timer().expect("timeout timer").clone();
    let types: Vec<E> = d.events.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [E::StepTimedOut, E::StepRetryScheduled]);
    // Backoff, then attempt 2 succeeds.
    let d = r.fire_next_timer().expect("retry timer");
    assert_eq!(d.commands[0].1.attempt, 2);
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        2,
        Ok(json!({"id": "p1"})),
    ));
    // The late reply of attempt 1 is ignored, counted, and changes nothing else.
    let before = r.state.clone().unwrap();
    let d = r
        .feed(reply(
            "o1",
            "pay",
            Phase::Forward,
            1,
            Ok(json!({"id": "p0"})),
        ))
        .clone();
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::LateReply));
    let after = d.state.expect("counted in the state");
    assert_eq!(after.ignored_replies, before.ignored_replies + 1);
    assert_eq!(after.context_json, before.context_json);
    assert!(d.events.is_empty() && d.commands.is_empty());
    r.feed(reply("o1", "ship", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Completed);
}

#[test]
fn a_late_reply_for_a_timed_out_attempt_during_backoff_is_ignored() {
    let mut r = order();
    r.fire_next_timer().expect("timeout");
    let d = r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "late"})),
    ));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::LateReply));
    assert_eq!(
        r.state.as_ref().unwrap().steps[0].status,
        StepStatus::Backoff
    );
}

#[test]
fn a_non_retryable_code_is_not_retried() {
    let mut r = order();
    let d = r
        .feed(reply(
            "o1",
            "pay",
            Phase::Forward,
            1,
            Err(("DECLINED", true)),
        ))
        .clone();
    assert!(d
        .events
        .iter()
        .all(|e| e.event_type != E::StepRetryScheduled));
    assert!(d.events.iter().any(|e| e.event_type == E::StepFailed));
    assert_eq!(r.status(), SagaStatus::Compensated);
}

#[test]
fn exhausted_timeouts_compensate_the_uncertain_step_too() {
    let mut r = order();
    for _ in 0..3 {
        // timeout, then (except after the last) the retry
        r.fire_next_timer().expect("timer");
        if r.state.as_ref().unwrap().steps[0].status == StepStatus::Backoff {
            r.fire_next_timer().expect("retry");
        }
    }
    // The last attempt's effect is unknown: its compensation is sent.
    let state = r.state.clone().unwrap();
    assert_eq!(state.status, SagaStatus::Compensating);
    let last = r.decisions.last().unwrap();
    assert_eq!(last.commands[0].1.phase, Phase::Compensate);
    assert_eq!(last.commands[0].1.step, "pay");
    r.feed(reply("o1", "pay", Phase::Compensate, 1, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Compensated);
}

/// Fires the timer of `kind` now (whatever its due time), as the wheel would once it is due.
fn fire(r: &mut Run, kind: sagaflow_avro::TimerKind) -> sagaflow_core::Decision {
    let timer = r
        .state
        .as_ref()
        .unwrap()
        .timers
        .iter()
        .find(|t| t.kind == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind:?} timer"));
    r.feed_at(
        Input::Timer {
            saga_id: "o1".into(),
            timer_id: timer.id,
        },
        timer.due,
    )
    .clone()
}

/// Attempt 1 timed out (its effect is unknown) and the step waits in backoff when a deadline
/// ends it: the attempt that may have charged the card must be refunded, exactly as when the
/// last attempt times out.
#[test]
fn a_deadline_during_backoff_after_a_timeout_compensates_the_uncertain_attempt() {
    for deadline in [
        sagaflow_avro::TimerKind::StepDeadline,
        sagaflow_avro::TimerKind::SagaDeadline,
    ] {
        let yaml = ORDER.replace("    timeout: 2s\n", "    timeout: 2s\n    deadline: 30s\n");
        let mut r = run(&yaml);
        r.feed(start_of("order", "o1", json!({})));
        let timed_out = fire(&mut r, sagaflow_avro::TimerKind::AttemptTimeout);
        assert!(timed_out
            .events
            .iter()
            .any(|e| e.event_type == E::StepRetryScheduled));
        assert_eq!(
            r.state.as_ref().unwrap().steps[0].status,
            StepStatus::Backoff
        );
        let d = fire(&mut r, deadline);
        let refund = d
            .commands
            .iter()
            .find(|(_, c)| c.phase == Phase::Compensate && c.step == "pay");
        assert!(
            refund.is_some(),
            "{deadline:?}: the timed-out attempt was never compensated; events {:?}",
            d.events.iter().map(|e| e.event_type).collect::<Vec<_>>()
        );
        r.feed(reply("o1", "pay", Phase::Compensate, 1, Ok(json!({}))));
        assert_eq!(r.status(), SagaStatus::Compensated);
    }
}

/// A definite answer after a timeout settles the doubt: a declined retry means the charge never
/// happened (participants answer a repeated idempotency key with the recorded outcome), so
/// nothing is refunded.
#[test]
fn a_definite_failure_after_a_timeout_is_not_compensated() {
    let mut r = order();
    let _ = fire(&mut r, sagaflow_avro::TimerKind::AttemptTimeout);
    let _ = fire(&mut r, sagaflow_avro::TimerKind::Retry);
    let d = r
        .feed(reply(
            "o1",
            "pay",
            Phase::Forward,
            2,
            Err(("DECLINED", false)),
        ))
        .clone();
    assert!(
        d.commands.is_empty(),
        "nothing to compensate: {:?}",
        d.commands
    );
    assert_eq!(r.status(), SagaStatus::Compensated);
}

#[test]
fn compensation_retries_with_backoff_then_becomes_an_incident() {
    let mut r = order();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    r.feed(reply("o1", "ship", Phase::Forward, 1, Err(("NO", false))));
    let d = r
        .feed(reply(
            "o1",
            "pay",
            Phase::Compensate,
            1,
            Err(("BUSY", true)),
        ))
        .clone();
    let scheduled = d
        .events
        .iter()
        .find(|e| e.event_type == E::CompensationRetryScheduled)
        .expect("compensation retry scheduled");
    assert_eq!(scheduled.due, Some(r.now + 5_000));
    let d = r.fire_next_timer().expect("compensation retry");
    assert_eq!(d.commands[0].1.attempt, 2);
    r.feed(reply(
        "o1",
        "pay",
        Phase::Compensate,
        2,
        Err(("BUSY", true)),
    ));
    // Not an end: the saga waits in INCIDENT for an operator, and says why.
    assert_eq!(r.status(), SagaStatus::Incident);
    let incident = d_last(&r);
    assert_eq!(incident.event_type, E::SagaIncident);
    assert_eq!(incident.status.as_deref(), Some("INCIDENT"));
    let detail: serde_json::Value =
        serde_json::from_str(incident.detail_json.as_deref().unwrap()).unwrap();
    assert_eq!(detail["cause"], "compensation_failed");
    assert_eq!(detail["step"], "pay");
    assert_eq!(detail["error"]["code"], "BUSY");
}

fn d_last(r: &Run) -> SagaEvent {
    r.all_events().last().cloned().expect("an event")
}

#[test]
fn the_saga_deadline_compensates_what_is_done() {
    let mut r = order();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    // Ship is in flight when the saga deadline passes.
    let deadline = r
        .state
        .as_ref()
        .unwrap()
        .timers
        .iter()
        .find(|t| t.kind == sagaflow_avro::TimerKind::SagaDeadline)
        .cloned()
        .expect("saga deadline timer");
    let d = r
        .feed_at(
            Input::Timer {
                saga_id: "o1".into(),
                timer_id: deadline.id.clone(),
            },
            deadline.due,
        )
        .clone();
    let types: Vec<E> = d.events.iter().map(|e| e.event_type).collect();
    assert_eq!(types[0], E::SagaDeadlineExceeded);
    assert!(types.contains(&E::CompensationDispatched));
    assert_eq!(r.status(), SagaStatus::Compensating);
    // The same timer again (a replay after a crash) changes nothing.
    let again = r.feed(Input::Timer {
        saga_id: "o1".into(),
        timer_id: deadline.id,
    });
    assert_eq!(again.outcome, Outcome::Ignored(IgnoreReason::StaleTimer));
    assert!(again.state.is_none());
}

#[test]
fn a_wait_ends_when_its_timer_fires_and_not_before() {
    let mut r = run("
name: w
version: 1
steps:
  - name: pause
    wait: 1500ms
  - name: go
    command: {topic: t, type: go}
");
    let d = r.feed(start_of("w", "w1", json!({}))).clone();
    let started = d
        .events
        .iter()
        .find(|e| e.event_type == E::WaitStarted)
        .expect("wait started");
    assert_eq!(started.due, Some(started.at + 1_500));
    assert!(d.commands.is_empty());
    let d = r.fire_next_timer().expect("wait timer");
    assert_eq!(d.commands.len(), 1);
    assert_eq!(r.now, started.at + 1_500);
}

#[test]
fn until_a_context_time_and_a_calendar() {
    let mut r = run("
name: u
version: 1
steps:
  - name: at
    until: $.when
  - name: monday
    until: every Monday 09:00 Europe/Paris
  - name: go
    command: {topic: t, type: go}
");
    // 2026-03-27T12:00:00Z is a Friday; the next Monday 09:00 Paris (CEST since 29 March) is
    // 2026-03-30T07:00:00Z.
    let d = r
        .feed_at(
            start_of("u", "u1", json!({"when": "2026-03-27T13:00:00+01:00"})),
            1_774_000_000_000,
        )
        .clone();
    let due = d
        .events
        .iter()
        .find(|e| e.event_type == E::WaitStarted)
        .and_then(|e| e.due);
    assert_eq!(due, Some(1_774_612_800_000));
    let d = r.fire_next_timer().expect("first wait").clone();
    let due = d
        .events
        .iter()
        .find(|e| e.event_type == E::WaitStarted)
        .and_then(|e| e.due);
    assert_eq!(due, Some(1_774_854_000_000));
}

const AWAIT: &str = "
name: a
version: 1
steps:
  - name: confirm
    await: {event: confirmed, correlate: $.order, timeout: 1h, on_timeout: {continue: {ok: false}}}
    output: {ok: $.ok}
  - name: go
    command: {topic: t, type: go}
";

fn signal(correlation: &str, payload: serde_json::Value) -> Signal {
    Signal {
        signal_id: "sig-1".into(),
        event: "confirmed".into(),
        correlation: correlation.into(),
        payload_json: Some(payload.to_string()),
        sent_at: 0,
        ttl_ms: None,
    }
}

#[test]
fn an_await_subscribes_and_completes_with_the_signal_payload() {
    let mut r = run(AWAIT);
    let d = r.feed(start_of("a", "a1", json!({"order": "o-9"}))).clone();
    assert_eq!(
        d.effects,
        vec![Effect::Subscribe {
            event: "confirmed".into(),
            correlation: "o-9".into(),
            step: "confirm".into()
        }]
    );
    // A signal for another correlation value is stale.
    let stale = r.feed(Input::Signal {
        saga_id: "a1".into(),
        step: "confirm".into(),
        signal: signal("o-8", json!({"ok": true})),
    });
    assert_eq!(stale.outcome, Outcome::Ignored(IgnoreReason::StaleSignal));
    let d = r
        .feed(Input::Signal {
            saga_id: "a1".into(),
            step: "confirm".into(),
            signal: signal("o-9", json!({"ok": true})),
        })
        .clone();
    assert!(d.events.iter().any(|e| e.event_type == E::EventReceived));
    assert_eq!(d.commands.len(), 1);
    let context: serde_json::Value =
        serde_json::from_str(&r.state.as_ref().unwrap().context_json).unwrap();
    assert_eq!(context["ok"], json!(true));
    // Its timeout timer was cancelled with it.
    assert!(r.state.as_ref().unwrap().timers.is_empty());
    // A copy of the same signal is a duplicate; another signal is stale (the engine matches it
    // again for other sagas).
    let copy = r.feed(Input::Signal {
        saga_id: "a1".into(),
        step: "confirm".into(),
        signal: signal("o-9", json!({"ok": true})),
    });
    assert_eq!(
        copy.outcome,
        Outcome::Ignored(IgnoreReason::DuplicateSignal)
    );
    let mut other = signal("o-9", json!({"ok": false}));
    other.signal_id = "sig-2".into();
    let other = r.feed(Input::Signal {
        saga_id: "a1".into(),
        step: "confirm".into(),
        signal: other,
    });
    assert_eq!(other.outcome, Outcome::Ignored(IgnoreReason::StaleSignal));
}

#[test]
fn an_await_timeout_continues_with_the_default_or_compensates_or_fails() {
    let mut r = run(AWAIT);
    r.feed(start_of("a", "a1", json!({"order": "o-9"})));
    let d = r.fire_next_timer().expect("await timeout").clone();
    assert!(d.events.iter().any(|e| e.event_type == E::AwaitTimedOut));
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Unsubscribe { .. })));
    let context: serde_json::Value =
        serde_json::from_str(&r.state.as_ref().unwrap().context_json).unwrap();
    assert_eq!(context["ok"], json!(false));
    assert_eq!(d.commands.len(), 1, "continued to the next step");

    let mut r = run(&AWAIT.replace(
        "on_timeout: {continue: {ok: false}}",
        "on_timeout: compensate",
    ));
    r.feed(start_of("a", "a2", json!({"order": "o-9"})));
    r.fire_next_timer();
    assert_eq!(r.status(), SagaStatus::Compensated);

    let mut r = run(&AWAIT.replace("on_timeout: {continue: {ok: false}}", "on_timeout: fail"));
    r.feed(start_of("a", "a3", json!({"order": "o-9"})));
    r.fire_next_timer();
    assert_eq!(r.status(), SagaStatus::Incident);
    let detail: serde_json::Value =
        serde_json::from_str(d_last(&r).detail_json.as_deref().unwrap()).unwrap();
    assert_eq!(detail["cause"], "await_timed_out");
    assert_eq!(detail["error"]["code"], "AWAIT_TIMEOUT");
}

#[test]
fn timers_of_a_finished_saga_never_fire() {
    let mut r = order();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    r.feed(reply("o1", "ship", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Completed);
    assert!(r.only_retention_left());
    let d = r.feed(Input::Timer {
        saga_id: "o1".into(),
        timer_id: "SagaDeadline/1".into(),
    });
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleTimer));
}

fn dispatch(step: &str, attempt: i32, action: DispatchAction) -> Input {
    Input::Dispatch(Dispatch {
        saga_id: "o1".into(),
        step: step.into(),
        phase: Phase::Forward,
        attempt,
        topic: "t.pay".into(),
        reason: (action == DispatchAction::Held).then(|| "paused".into()),
        action,
    })
}

fn attempt_timeouts(r: &Run) -> Vec<i64> {
    r.state
        .as_ref()
        .expect("state")
        .timers
        .iter()
        .filter(|t| t.kind == sagaflow_avro::TimerKind::AttemptTimeout)
        .map(|t| t.due)
        .collect()
}

#[test]
fn the_time_a_command_spends_held_does_not_count_toward_its_attempt_timeout() {
    let mut r = order();
    assert_eq!(attempt_timeouts(&r), [r.now + 2_000]);
    let d = r.feed(dispatch("pay", 1, DispatchAction::Held)).clone();
    assert_eq!(d.outcome, Outcome::Applied);
    assert!(d.commands.is_empty(), "holding sends nothing");
    assert_eq!(d.events[0].event_type, E::CommandHeld);
    assert_eq!(
        d.events[0].detail_json.as_deref(),
        Some(r#"{"phase":"forward","reason":"paused","topic":"t.pay"}"#)
    );
    assert!(attempt_timeouts(&r).is_empty(), "the timeout stops");
    // An hour held: still no timeout, and the saga deadline (1h) is what would end it.
    let released_at = r.now + 30 * 60_000;
    let d = r
        .feed_at(dispatch("pay", 1, DispatchAction::Released), released_at)
        .clone();
    assert_eq!(d.events[0].event_type, E::CommandReleased);
    assert_eq!(d.events[0].due, Some(released_at + 2_000));
    assert_eq!(attempt_timeouts(&r), [released_at + 2_000], "in full");
    // The log records both inputs, and a replay through the same definition agrees.
    assert!(d.events[0]
        .input_json
        .as_deref()
        .is_some_and(|i| i.contains(r#""action":"released""#)));
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    r.feed(reply("o1", "ship", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Completed);
    assert_eq!(
        sagaflow_core::replay::replay_saga(&r.defs.0[0], &r.all_events()),
        sagaflow_core::replay::Replayed::Same
    );
}

#[test]
fn a_held_command_the_saga_no_longer_awaits_is_dropped_not_sent() {
    let mut r = order();
    r.feed(dispatch("pay", 1, DispatchAction::Held));
    // Attempt 2 is not the one awaited: stale, and nothing changes.
    let d = r.feed(dispatch("pay", 2, DispatchAction::Released)).clone();
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleDispatch));
    assert!(d.state.is_none() && d.events.is_empty());
    // The step ends while its command is held (here a reply that came by another way).
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    let d = r.feed(dispatch("pay", 1, DispatchAction::Released)).clone();
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleDispatch));
}
