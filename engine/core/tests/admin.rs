//! Admin commands in the decision function: every action in every state a saga can be in when
//! an operator acts, what each one does, and why the others are rejected.

mod common;

use common::{reply, start_of, Run};
use sagaflow_avro::{
    AdminAction as A, AdminCommand, EventType as E, Phase, Resolution, SagaEvent, SagaStatus,
    Signal, StepStatus, TimerKind,
};
use sagaflow_core::{Effect, IgnoreReason, Input, Outcome, Rejection};
use sagaflow_definition::Definition;
use serde_json::{json, Value};

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
      backoff: {type: fixed, interval: 10s}
    compensation_retry: {max_attempts: 2, backoff: {type: fixed, interval: 5s}}
    timeout: 2s
    output: {payment_id: $.id}
  - name: ship
    command: {topic: t.ship, type: ship}
    compensation: {topic: t.ship, type: unship}
";

const AWAIT: &str = "
name: a
version: 1
steps:
  - name: pay
    command: {topic: t.pay, type: charge}
    compensation: {topic: t.pay, type: refund}
  - name: confirm
    await: {event: confirmed, correlate: $.order, timeout: 1h, on_timeout: fail}
    output: {ok: $.ok}
  - name: go
    command: {topic: t, type: go}
";

fn run(yaml: &str) -> Run {
    Run::with(vec![Definition::parse("test.yaml", yaml).expect("valid")])
}

fn admin(saga: &str, action: A) -> AdminCommand {
    AdminCommand {
        request_id: format!("req-{}", rand_id()),
        saga_id: saga.into(),
        action,
        step: None,
        output_json: None,
        resolution: None,
        actor: "ops@example.com".into(),
        reason: Some("ticket OPS-7".into()),
        job_id: None,
        requested_at: 0,
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn with_step(mut cmd: AdminCommand, step: &str) -> AdminCommand {
    cmd.step = Some(step.into());
    cmd
}

fn resolve(saga: &str, resolution: Resolution) -> AdminCommand {
    AdminCommand {
        resolution: Some(resolution),
        ..admin(saga, A::Resolve)
    }
}

fn detail(e: &SagaEvent) -> Value {
    serde_json::from_str(e.detail_json.as_deref().unwrap_or("null")).unwrap()
}

/// Feeds `cmd`; returns the decision's event types after checking the first one says whether it
/// applied and carries the audit facts.
fn act(r: &mut Run, cmd: AdminCommand) -> (bool, Vec<E>, Value) {
    let d = r.feed(Input::Admin(cmd.clone())).clone();
    assert_eq!(d.outcome, Outcome::Applied, "{:?}", d.outcome);
    let first = d.events.first().expect("an admin event");
    let applied = match first.event_type {
        E::AdminCommandApplied => true,
        E::AdminCommandRejected => false,
        other => panic!("first event is {other:?}"),
    };
    let facts = detail(first);
    assert_eq!(facts["request_id"], cmd.request_id.as_str());
    assert_eq!(facts["actor"], "ops@example.com");
    assert_eq!(facts["action"], cmd.action.as_str());
    assert_eq!(facts["reason"], json!(cmd.reason));
    let input: Value = serde_json::from_str(first.input_json.as_deref().unwrap()).unwrap();
    assert_eq!(input["admin"]["request_id"], cmd.request_id.as_str());
    (
        applied,
        d.events.iter().map(|e| e.event_type).collect(),
        facts,
    )
}

fn rejected_because(r: &mut Run, cmd: AdminCommand, why: &str) {
    let before = r.state.clone().unwrap();
    let (applied, events, facts) = act(r, cmd);
    assert!(!applied, "applied, expected a rejection because {why}");
    assert_eq!(events, vec![E::AdminCommandRejected]);
    let rejection = facts["rejection"].as_str().unwrap();
    assert!(
        rejection.contains(why),
        "{rejection:?} does not say {why:?}"
    );
    // Nothing else changed: the same status, graph and timers.
    let after = r.state.as_ref().unwrap();
    assert_eq!(after.status, before.status);
    assert_eq!(after.steps, before.steps);
    assert_eq!(after.timers, before.timers);
    assert_eq!(after.pause, before.pause);
}

fn status_of(r: &Run, step: &str) -> StepStatus {
    r.state
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .find(|s| s.name == step)
        .map(|s| s.status)
        .unwrap()
}

// States an operator meets.

/// `pay` dispatched, no reply yet.
fn running() -> Run {
    let mut r = run(ORDER);
    r.feed(start_of("order", "o1", json!({})));
    r
}

/// `pay` failed once with a retryable error and waits 10 s to retry.
fn in_backoff() -> Run {
    let mut r = running();
    r.feed(reply("o1", "pay", Phase::Forward, 1, Err(("BUSY", true))));
    assert_eq!(status_of(&r, "pay"), StepStatus::Backoff);
    r
}

/// `ship` failed; `pay`'s refund failed once and waits to retry.
fn compensating() -> Run {
    let mut r = running();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    r.feed(reply("o1", "ship", Phase::Forward, 1, Err(("NO", false))));
    r.feed(reply(
        "o1",
        "pay",
        Phase::Compensate,
        1,
        Err(("BUSY", true)),
    ));
    assert_eq!(r.status(), SagaStatus::Compensating);
    r
}

/// `pay`'s refund failed for good.
fn compensation_incident() -> Run {
    let mut r = compensating();
    r.fire_next_timer();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Compensate,
        2,
        Err(("BUSY", true)),
    ));
    assert_eq!(r.status(), SagaStatus::Incident);
    r
}

/// `confirm` timed out with `on_timeout: fail`.
fn await_incident() -> Run {
    let mut r = run(AWAIT);
    r.feed(start_of("a", "o1", json!({"order": "o-9"})));
    r.feed(reply("o1", "pay", Phase::Forward, 1, Ok(json!({}))));
    r.fire_next_timer();
    assert_eq!(r.status(), SagaStatus::Incident);
    r
}

fn paused() -> Run {
    let mut r = running();
    let (applied, events, _) = act(&mut r, admin("o1", A::Pause));
    assert!(applied);
    assert_eq!(events, vec![E::AdminCommandApplied, E::SagaPaused]);
    r
}

fn completed() -> Run {
    let mut r = running();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    r.feed(reply("o1", "ship", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Completed);
    r
}

/// A state an operator meets, by name.
type State = (&'static str, fn() -> Run);
/// An admin command to send, by name, for a saga id.
type Action = (&'static str, fn(&str) -> AdminCommand);

/// What each action does in each state: `Ok(status after)` or `Err(part of the rejection)`.
#[test]
fn every_action_in_every_state_applies_or_is_rejected_with_its_reason() {
    type Expect = Result<SagaStatus, &'static str>;
    let states: [State; 7] = [
        ("running", running),
        ("in backoff", in_backoff),
        ("compensating", compensating),
        ("compensation incident", compensation_incident),
        ("await incident", await_incident),
        ("paused", paused),
        ("completed", completed),
    ];
    use SagaStatus::*;
    let expect = |state: &str, action: &str| -> Expect {
        match (state, action) {
            (_, "abort without reason") if state != "completed" => Err("abort needs a reason"),
            ("completed", _) => Err("the saga has ended (COMPLETED)"),
            ("paused", "resume") => Ok(Running),
            ("paused", "abort") => Ok(Aborted),
            ("paused", _) => Err("the saga is paused"),
            (_, "abort") => Ok(Aborted),
            (_, "pause") => Ok(match state {
                "compensating" => Compensating,
                "compensation incident" | "await incident" => Incident,
                _ => Running,
            }),
            (_, "resume") => Err("not paused"),
            ("running", "retry") => Err("no step is waiting to retry"),
            ("in backoff", "retry") => Ok(Running),
            ("compensating", "retry") => Ok(Compensating),
            ("compensation incident", "retry" | "resolve retry") => Ok(Compensating),
            ("compensation incident", "resolve done") => Ok(Compensated),
            ("await incident", "retry" | "resolve retry") => Ok(Running),
            ("await incident", "resolve done" | "skip") => Ok(Running),
            (_, "resolve retry" | "resolve done") => Err("no open incident"),
            (_, "resolve") => Err("needs a resolution"),
            ("running" | "in backoff", "skip") => Ok(Running),
            (_, "skip") => Err("only a step that is running, waiting or waiting to retry"),
            ("running", "cancel") => Ok(Compensating),
            // Nothing was done yet: nothing to compensate.
            ("in backoff", "cancel") => Ok(Compensated),
            ("await incident", "cancel") => Ok(Compensating),
            ("compensating", "cancel") => Err("already compensating"),
            ("compensation incident", "cancel") => Err("compensation already failed"),
            other => panic!("no expectation for {other:?}"),
        }
    };
    let actions: [Action; 10] = [
        ("retry", |s| admin(s, A::Retry)),
        ("skip", |s| AdminCommand {
            output_json: Some(json!({"id": "by-hand", "ok": true}).to_string()),
            ..with_step(admin(s, A::Skip), if s == "o1" { "pay" } else { s })
        }),
        ("cancel", |s| admin(s, A::Cancel)),
        ("abort", |s| admin(s, A::Abort)),
        ("abort without reason", |s| AdminCommand {
            reason: Some("  ".into()),
            ..admin(s, A::Abort)
        }),
        ("pause", |s| admin(s, A::Pause)),
        ("resume", |s| admin(s, A::Resume)),
        ("resolve", |s| admin(s, A::Resolve)),
        ("resolve retry", |s| {
            resolve(s, Resolution::RetryCompensation)
        }),
        ("resolve done", |s| AdminCommand {
            output_json: Some(json!({"ok": true}).to_string()),
            ..resolve(s, Resolution::MarkDone)
        }),
    ];
    let mut checked = 0;
    for (state, make) in states {
        for (action, command) in actions {
            let mut r = make();
            let mut cmd = command("o1");
            if state == "await incident" && cmd.step.is_some() {
                cmd.step = Some("confirm".into());
            }
            match expect(state, action) {
                Ok(status) => {
                    let (applied, _, _) = act(&mut r, cmd);
                    assert!(applied, "{action} in {state} was rejected");
                    assert_eq!(r.status(), status, "{action} in {state}");
                }
                Err(why) => rejected_because(&mut r, cmd, why),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 70);
}

#[test]
fn a_command_for_an_unknown_saga_is_dead_lettered_and_a_copy_is_ignored() {
    let mut r = running();
    let d = sagaflow_core::decide(
        &r.defs,
        &r.settings,
        None,
        &Input::Admin(admin("nobody", A::Retry)),
        5,
    );
    assert_eq!(d.outcome, Outcome::Rejected(Rejection::UnknownSaga));
    let cmd = admin("o1", A::Pause);
    act(&mut r, cmd.clone());
    let d = r.feed(Input::Admin(cmd));
    assert_eq!(
        d.outcome,
        Outcome::Ignored(IgnoreReason::DuplicateAdminCommand)
    );
}

#[test]
fn retry_sends_a_step_waiting_in_backoff_now() {
    let mut r = in_backoff();
    let (_, events, _) = act(&mut r, admin("o1", A::Retry));
    assert_eq!(events, vec![E::AdminCommandApplied, E::StepDispatched]);
    let d = r.decisions.last().unwrap();
    assert_eq!(d.commands.len(), 1);
    assert_eq!(d.commands[0].1.attempt, 2);
    let state = r.state.as_ref().unwrap();
    assert!(
        !state.timers.iter().any(|t| t.kind == TimerKind::Retry),
        "the retry timer is gone, so it cannot send the attempt twice: {:?}",
        state.timers
    );
    // Naming a step that is not waiting says which are.
    let mut r = in_backoff();
    rejected_because(
        &mut r,
        with_step(admin("o1", A::Retry), "ship"),
        "step ship is PENDING, not waiting to retry; waiting: [\"pay\"]",
    );
}

#[test]
fn an_incident_retried_sends_its_compensation_again_and_can_then_end_compensated() {
    let mut r = compensation_incident();
    let (_, events, _) = act(&mut r, admin("o1", A::Retry));
    assert_eq!(
        events,
        vec![E::AdminCommandApplied, E::CompensationDispatched]
    );
    let (_, command) = &r.decisions.last().unwrap().commands[0];
    assert_eq!((command.phase, command.attempt), (Phase::Compensate, 3));
    r.feed(reply("o1", "pay", Phase::Compensate, 3, Ok(json!({}))));
    assert_eq!(r.status(), SagaStatus::Compensated);
    // A retry that fails again is an incident again, without retries of its own.
    let mut r = compensation_incident();
    act(&mut r, resolve("o1", Resolution::RetryCompensation));
    r.feed(reply(
        "o1",
        "pay",
        Phase::Compensate,
        3,
        Err(("BUSY", true)),
    ));
    assert_eq!(r.status(), SagaStatus::Incident);
}

#[test]
fn an_incident_marked_done_by_hand_ends_compensated() {
    let mut r = compensation_incident();
    let (_, events, _) = act(&mut r, resolve("o1", Resolution::MarkDone));
    assert_eq!(
        events,
        vec![
            E::AdminCommandApplied,
            E::CompensationSucceeded,
            E::SagaCompensated
        ]
    );
    let by_hand = &r.decisions.last().unwrap().events[1];
    assert_eq!(detail(by_hand)["by_hand"], true);
    assert!(r.only_retention_left());
}

#[test]
fn an_await_incident_waits_again_or_goes_on_with_the_output_given() {
    let mut r = await_incident();
    let (_, events, _) = act(&mut r, admin("o1", A::Retry));
    assert_eq!(events, vec![E::AdminCommandApplied, E::AwaitStarted]);
    let d = r.decisions.last().unwrap();
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Subscribe { step, .. } if step == "confirm")));
    assert!(r.state.as_ref().unwrap().failure_json.is_none());

    let mut r = await_incident();
    let cmd = AdminCommand {
        output_json: Some(json!({"ok": "yes"}).to_string()),
        ..resolve("o1", Resolution::MarkDone)
    };
    let (_, events, _) = act(&mut r, cmd);
    assert_eq!(
        events,
        vec![E::AdminCommandApplied, E::StepSucceeded, E::StepDispatched]
    );
    let context: Value = serde_json::from_str(&r.state.as_ref().unwrap().context_json).unwrap();
    assert_eq!(context["ok"], "yes");
}

#[test]
fn skip_needs_a_step_and_every_output_its_mapping_reads() {
    let mut r = running();
    rejected_because(&mut r, admin("o1", A::Skip), "skip needs the step");
    rejected_because(
        &mut r,
        with_step(admin("o1", A::Skip), "pay"),
        "the output lacks what step pay maps into the context: $.id (for payment_id)",
    );
    rejected_because(
        &mut r,
        AdminCommand {
            output_json: Some("[1]".into()),
            ..with_step(admin("o1", A::Skip), "pay")
        },
        "must be a JSON object",
    );
    rejected_because(
        &mut r,
        with_step(admin("o1", A::Skip), "nope"),
        "order@1 has no step instance nope",
    );
    let (_, events, _) = act(
        &mut r,
        AdminCommand {
            output_json: Some(json!({"id": "p-hand"}).to_string()),
            ..with_step(admin("o1", A::Skip), "pay")
        },
    );
    assert_eq!(
        events,
        vec![E::AdminCommandApplied, E::StepSucceeded, E::StepDispatched]
    );
    // The skipped attempt's late answer changes nothing.
    let d = r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateReply));
    let context: Value = serde_json::from_str(&r.state.as_ref().unwrap().context_json).unwrap();
    assert_eq!(context["payment_id"], "p-hand");
}

#[test]
fn cancel_compensates_what_is_done() {
    let mut r = running();
    r.feed(reply(
        "o1",
        "pay",
        Phase::Forward,
        1,
        Ok(json!({"id": "p1"})),
    ));
    let (_, events, _) = act(&mut r, admin("o1", A::Cancel));
    assert_eq!(
        events,
        vec![
            E::AdminCommandApplied,
            E::StepFailed,
            E::CompensationDispatched
        ],
        "ship, in flight, may have taken effect: it is undone first"
    );
    let failure: Value =
        serde_json::from_str(r.state.as_ref().unwrap().failure_json.as_deref().unwrap()).unwrap();
    assert_eq!(failure["error"]["code"], "CANCELLED");
    assert_eq!(
        failure["error"]["message"],
        "cancelled by ops@example.com: ticket OPS-7"
    );
}

#[test]
fn abort_ends_without_compensating_and_says_what_was_left() {
    let mut r = await_incident();
    let (_, events, _) = act(&mut r, admin("o1", A::Abort));
    assert_eq!(events, vec![E::AdminCommandApplied, E::SagaAborted]);
    let d = r.decisions.last().unwrap();
    assert!(d.commands.is_empty());
    let aborted = detail(&d.events[1]);
    assert_eq!(aborted["reason"], "ticket OPS-7");
    assert_eq!(aborted["completed"], json!(["pay"]));
    assert_eq!(d.events[1].status.as_deref(), Some("ABORTED"));
    assert!(r.only_retention_left());
    // Ended: a reply now is ignored, and no command applies any more.
    let d = r.feed(reply("o1", "pay", Phase::Compensate, 1, Ok(json!({}))));
    assert!(matches!(d.outcome, Outcome::Ignored(_)));
    rejected_because(&mut r, admin("o1", A::Retry), "has ended (ABORTED)");
}

#[test]
fn a_paused_saga_holds_its_inputs_and_timers_and_applies_them_in_order_on_resume() {
    let mut r = paused();
    // The reply would move the saga on; it is held instead.
    let d = r.feed(reply("o1", "pay", Phase::Forward, 1, Err(("BUSY", true))));
    assert_eq!(d.outcome, Outcome::Applied);
    assert_eq!(
        d.events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        vec![E::InputHeld]
    );
    assert!(d.commands.is_empty());
    assert_eq!(status_of(&r, "pay"), StepStatus::Running);
    // Its attempt timeout comes due: deferred, not applied.
    let d = r.fire_next_timer().unwrap();
    assert_eq!(d.events[0].event_type, E::InputHeld);
    assert_eq!(d.events[0].step.as_deref(), Some("pay"));
    let state = r.state.as_ref().unwrap();
    assert_eq!(state.pause.as_ref().unwrap().held.len(), 2);
    assert!(!state
        .timers
        .iter()
        .any(|t| t.kind == TimerKind::AttemptTimeout));
    // Resume applies the reply (a retry is scheduled), then the stale timeout (nothing).
    let (_, events, _) = act(&mut r, admin("o1", A::Resume));
    assert_eq!(
        events,
        vec![
            E::AdminCommandApplied,
            E::SagaResumed,
            E::StepRetryScheduled
        ]
    );
    let resumed = detail(&r.decisions.last().unwrap().events[1]);
    assert_eq!(resumed["held"], 2);
    let state = r.state.as_ref().unwrap();
    assert!(state.pause.is_none());
    assert!(state.timers.iter().any(|t| t.kind == TimerKind::Retry));
}

#[test]
fn a_signal_to_a_paused_saga_is_held_and_completes_its_await_on_resume() {
    let mut r = run(AWAIT);
    r.feed(start_of("a", "o1", json!({"order": "o-9"})));
    r.feed(reply("o1", "pay", Phase::Forward, 1, Ok(json!({}))));
    act(&mut r, admin("o1", A::Pause));
    let signal = Input::Signal {
        saga_id: "o1".into(),
        step: "confirm".into(),
        signal: Signal {
            signal_id: "s1".into(),
            event: "confirmed".into(),
            correlation: "o-9".into(),
            payload_json: Some(json!({"ok": 1}).to_string()),
            sent_at: 0,
            ttl_ms: None,
        },
    };
    let d = r.feed(signal);
    assert_eq!(d.events[0].event_type, E::InputHeld);
    let (_, events, _) = act(&mut r, admin("o1", A::Resume));
    assert_eq!(
        events,
        vec![
            E::AdminCommandApplied,
            E::SagaResumed,
            E::EventReceived,
            E::StepSucceeded,
            E::StepDispatched
        ]
    );
}

#[test]
fn an_admin_command_replays_from_the_event_log() {
    let mut r = compensation_incident();
    act(&mut r, admin("o1", A::Retry));
    r.feed(reply("o1", "pay", Phase::Compensate, 3, Ok(json!({}))));
    let events = r.all_events();
    let def = Definition::parse("test.yaml", ORDER).unwrap();
    assert_eq!(
        sagaflow_core::replay::replay_saga(&def, &events),
        sagaflow_core::replay::Replayed::Same
    );
}
