//! The saga as a graph: parallel branches and their joins, cancellation, conditions, choices
//! and for_each, driven through the decision function like the engine does.

mod common;

use common::{reply, start_of, Run};
use sagaflow_avro::{EventType as E, Phase, SagaStatus, StepStatus};
use sagaflow_core::{IgnoreReason, Input, Outcome, Rejection};
use sagaflow_definition::Definition;
use serde_json::{json, Value};

fn run(yaml: &str) -> Run {
    Run::with(vec![Definition::parse("test.yaml", yaml).expect("valid")])
}

/// A trip with flight and hotel booked at the same time, joined by `join`.
fn trip(join: &str) -> String {
    // Under `all` both bookings are there to send; under `any` only the winner's is.
    let notify = if join == "all" {
        "{flight: $.flight.booking_id, hotel: $.hotel.booking_id}"
    } else {
        "{}"
    };
    format!(
        "
name: trip
version: 2
steps:
  - name: payment
    command: {{topic: t.pay, type: charge}}
    compensation: {{topic: t.pay, type: refund, payload: {{id: $.payment_id}}}}
    output: {{payment_id: $.id}}
  - name: book
    parallel:
      - name: flight
        steps:
          - name: flight
            command: {{topic: t.flight, type: book}}
            compensation: {{topic: t.flight, type: cancel, payload: {{booking: $.booking_id}}}}
            timeout: 30s
            output: {{booking_id: $.id}}
      - name: hotel
        steps:
          - name: hotel
            command: {{topic: t.hotel, type: book}}
            compensation: {{topic: t.hotel, type: cancel}}
            timeout: 30s
            output: {{booking_id: $.id}}
    join: {join}
  - name: notify
    command: {{topic: t.notify, type: send, payload: {notify}}}
"
    )
}

fn ok(run: &mut Run, step: &str, output: Value) -> Vec<(String, String, Phase)> {
    let attempt = attempt(run, step);
    let d = run.feed(reply("s", step, Phase::Forward, attempt, Ok(output)));
    sent(d)
}

fn failed(run: &mut Run, step: &str, code: &str) -> Vec<(String, String, Phase)> {
    let attempt = attempt(run, step);
    let d = run.feed(reply(
        "s",
        step,
        Phase::Forward,
        attempt,
        Err((code, false)),
    ));
    sent(d)
}

fn undone(run: &mut Run, step: &str) -> Vec<(String, String, Phase)> {
    let d = run.feed(reply("s", step, Phase::Compensate, 1, Ok(json!({}))));
    sent(d)
}

fn attempt(run: &Run, step: &str) -> i32 {
    node(run, step).map_or(1, |n| n.attempt)
}

fn node<'r>(run: &'r Run, id: &str) -> Option<&'r sagaflow_avro::StepState> {
    run.state.as_ref()?.steps.iter().find(|s| s.name == id)
}

fn status(run: &Run, id: &str) -> StepStatus {
    node(run, id).map_or(StepStatus::Pending, |n| n.status)
}

/// (topic, step, phase) of every command a decision sent.
fn sent(d: &sagaflow_core::Decision) -> Vec<(String, String, Phase)> {
    d.commands
        .iter()
        .map(|(topic, c)| (topic.clone(), c.step.clone(), c.phase))
        .collect()
}

fn cmd(topic: &str, step: &str, phase: Phase) -> (String, String, Phase) {
    (topic.into(), step.into(), phase)
}

fn context(run: &Run) -> Value {
    serde_json::from_str(&run.state.as_ref().unwrap().context_json).unwrap()
}

fn started(yaml: &str, input: Value) -> Run {
    let mut r = run(yaml);
    r.feed(start_of(
        &Definition::parse("t", yaml).unwrap().name,
        "s",
        input,
    ));
    r
}

#[test]
fn a_parallel_step_dispatches_every_branch_at_once_and_joins_all() {
    let mut r = started(&trip("all"), json!({}));
    let sent = ok(&mut r, "payment", json!({"id": "p1"}));
    assert_eq!(
        sent,
        vec![
            cmd("t.flight", "flight", Phase::Forward),
            cmd("t.hotel", "hotel", Phase::Forward)
        ]
    );
    assert!(ok(&mut r, "hotel", json!({"id": "h1"})).is_empty());
    assert_eq!(status(&r, "book"), StepStatus::Running);
    assert_eq!(status(&r, "book/hotel"), StepStatus::Succeeded);
    let sent = ok(&mut r, "flight", json!({"id": "f1"}));
    assert_eq!(sent, vec![cmd("t.notify", "notify", Phase::Forward)]);
    let payload: Value =
        serde_json::from_str(&r.decisions.last().unwrap().commands[0].1.payload_json).unwrap();
    assert_eq!(payload, json!({"flight": "f1", "hotel": "h1"}));
    ok(&mut r, "notify", json!({}));
    assert_eq!(r.status(), SagaStatus::Completed);
    let ctx = context(&r);
    assert_eq!(ctx["flight"], json!({"booking_id": "f1"}));
    assert_eq!(ctx["hotel"], json!({"booking_id": "h1"}));
}

#[test]
fn a_failed_branch_under_join_all_cancels_the_others_then_compensates_in_order() {
    let mut r = started(&trip("all"), json!({}));
    ok(&mut r, "payment", json!({"id": "p1"}));
    // The hotel fails while the flight is in flight: the flight is cancelled, and the saga
    // waits for its attempt to be resolved before anything before the parallel step is undone.
    assert!(failed(&mut r, "hotel", "FULL").is_empty());
    assert_eq!(r.status(), SagaStatus::Compensating);
    assert_eq!(status(&r, "flight"), StepStatus::Cancelled);
    // The late success only starts the flight's compensation.
    assert_eq!(
        ok(&mut r, "flight", json!({"id": "f1"})),
        vec![cmd("t.flight", "flight", Phase::Compensate)]
    );
    let cancel: Value =
        serde_json::from_str(&r.decisions.last().unwrap().commands[0].1.payload_json).unwrap();
    assert_eq!(cancel, json!({"booking": "f1"}), "it reads the late output");
    // Steps before the parallel step compensate once every branch is done.
    assert_eq!(
        undone(&mut r, "flight"),
        vec![cmd("t.pay", "payment", Phase::Compensate)]
    );
    undone(&mut r, "payment");
    assert_eq!(r.status(), SagaStatus::Compensated);
    let types: Vec<E> = r.events().iter().map(|e| e.1).collect();
    assert!(types.contains(&E::BranchFailed) && types.contains(&E::BranchCancelled));
}

#[test]
fn an_any_join_goes_on_with_the_winner_and_compensates_the_late_loser() {
    let mut r = started(&trip("any"), json!({}));
    ok(&mut r, "payment", json!({"id": "p1"}));
    let sent = ok(&mut r, "flight", json!({"id": "f1"}));
    assert_eq!(sent, vec![cmd("t.notify", "notify", Phase::Forward)]);
    assert_eq!(status(&r, "book"), StepStatus::Succeeded);
    assert_eq!(status(&r, "hotel"), StepStatus::Cancelled);
    // The loser's late success does one thing: start its compensation.
    assert_eq!(
        ok(&mut r, "hotel", json!({"id": "h1"})),
        vec![cmd("t.hotel", "hotel", Phase::Compensate)]
    );
    // The saga does not end while the loser is being undone.
    ok(&mut r, "notify", json!({}));
    assert_eq!(r.status(), SagaStatus::Running);
    undone(&mut r, "hotel");
    assert_eq!(r.status(), SagaStatus::Completed);
    assert_eq!(status(&r, "book/hotel"), StepStatus::Compensated);
}

#[test]
fn a_cancelled_attempt_resolved_by_its_timeout_is_compensated_as_uncertain() {
    let mut r = started(&trip("any"), json!({}));
    ok(&mut r, "payment", json!({"id": "p1"}));
    ok(&mut r, "flight", json!({"id": "f1"}));
    ok(&mut r, "notify", json!({}));
    assert_eq!(
        r.status(),
        SagaStatus::Running,
        "the hotel attempt is unresolved"
    );
    // Its attempt timeout resolves it: possibly applied, so compensated; never retried.
    let d = r.fire_next_timer().unwrap();
    assert_eq!(sent(d), vec![cmd("t.hotel", "hotel", Phase::Compensate)]);
    undone(&mut r, "hotel");
    assert_eq!(r.status(), SagaStatus::Completed);
}

#[test]
fn a_cancelled_attempt_that_fails_needs_no_compensation() {
    let mut r = started(&trip("any"), json!({}));
    ok(&mut r, "payment", json!({"id": "p1"}));
    ok(&mut r, "flight", json!({"id": "f1"}));
    assert!(failed(&mut r, "hotel", "FULL").is_empty());
    assert_eq!(status(&r, "book/hotel"), StepStatus::Compensated);
    ok(&mut r, "notify", json!({}));
    assert_eq!(r.status(), SagaStatus::Completed);
    assert!(r.only_retention_left());
}

#[test]
fn an_any_join_fails_only_when_every_branch_failed() {
    let mut r = started(&trip("any"), json!({}));
    ok(&mut r, "payment", json!({"id": "p1"}));
    assert!(failed(&mut r, "flight", "NO_SEAT").is_empty());
    assert_eq!(r.status(), SagaStatus::Running);
    assert_eq!(
        failed(&mut r, "hotel", "FULL"),
        vec![cmd("t.pay", "payment", Phase::Compensate)]
    );
    undone(&mut r, "payment");
    assert_eq!(r.status(), SagaStatus::Compensated);
    let failure: Value = serde_json::from_str(
        r.decisions
            .iter()
            .flat_map(|d| d.events.iter())
            .find(|e| e.event_type == E::StepFailed && e.step.as_deref() == Some("book"))
            .and_then(|e| e.detail_json.as_deref())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(failure["code"], "JOIN_FAILED");
}

const THREE: &str = "
name: quotes
version: 1
steps:
  - name: quote
    parallel:
      - name: a
        steps:
          - {name: qa, command: {topic: t.a, type: q}, compensation: {topic: t.a, type: undo}, output: {price: $.p}}
      - name: b
        steps:
          - {name: qb1, command: {topic: t.b, type: q}, compensation: {topic: t.b, type: undo}}
          - {name: qb2, command: {topic: t.b, type: q2}, compensation: {topic: t.b, type: undo2}, output: {price: $.p}}
      - name: c
        steps:
          - {name: qc, command: {topic: t.c, type: q}, output: {price: $.p}}
    join: {at_least: 2}
  - name: pick
    command: {topic: t.pick, type: pick, payload: {a: $.a.price}}
";

#[test]
fn an_at_least_join_tolerates_a_failed_branch_and_unwinds_it_in_reverse() {
    let mut r = started(THREE, json!({}));
    ok(&mut r, "qb1", json!({}));
    // b fails at its second step: its first step is undone while the others go on.
    assert_eq!(
        failed(&mut r, "qb2", "X"),
        vec![cmd("t.b", "qb1", Phase::Compensate)]
    );
    assert_eq!(r.status(), SagaStatus::Running);
    ok(&mut r, "qa", json!({"p": 1}));
    let sent = ok(&mut r, "qc", json!({"p": 3}));
    assert_eq!(sent, vec![cmd("t.pick", "pick", Phase::Forward)]);
    ok(&mut r, "pick", json!({}));
    assert_eq!(
        r.status(),
        SagaStatus::Running,
        "qb1's compensation is in flight"
    );
    undone(&mut r, "qb1");
    assert_eq!(r.status(), SagaStatus::Completed);
}

#[test]
fn an_at_least_join_that_can_no_longer_be_met_cancels_the_rest_and_compensates() {
    let mut r = started(THREE, json!({}));
    ok(&mut r, "qa", json!({"p": 1}));
    // b fails at its first step: 2 of 3 can still succeed.
    assert!(failed(&mut r, "qb1", "X").is_empty());
    assert_eq!(r.status(), SagaStatus::Running);
    // c fails too: only a can succeed, fewer than 2. a is undone; nothing else stands.
    let sent = failed(&mut r, "qc", "Y");
    assert_eq!(sent, vec![cmd("t.a", "qa", Phase::Compensate)]);
    assert_eq!(r.status(), SagaStatus::Compensating);
    undone(&mut r, "qa");
    assert_eq!(r.status(), SagaStatus::Compensated);
    let failure: Value =
        serde_json::from_str(r.state.as_ref().unwrap().failure_json.as_deref().unwrap()).unwrap();
    assert_eq!(failure["step"], "quote");
    assert_eq!(failure["error"]["code"], "JOIN_FAILED");
}

#[test]
fn a_huge_error_message_is_cut_in_the_state_and_whole_in_the_event() {
    let mut r = started(&trip("all"), json!({}));
    let Input::Reply(mut failure) = reply("s", "payment", Phase::Forward, 1, Err(("BAD", false)))
    else {
        unreachable!()
    };
    failure.error.as_mut().unwrap().message = "e".repeat(100_000);
    let d = r.feed(Input::Reply(failure));
    assert!(d
        .events
        .iter()
        .any(|e| e.detail_json.as_deref().is_some_and(|d| d.len() > 100_000)));
    let state = r.state.as_ref().unwrap();
    assert!(state.failure_json.as_deref().unwrap().len() < 5_000);
    assert!(state.failure_json.as_deref().unwrap().contains("cut"));
}

#[test]
fn when_the_saga_compensates_branches_undo_in_parallel_each_in_reverse() {
    let mut r = started(THREE, json!({}));
    ok(&mut r, "qa", json!({"p": 1}));
    ok(&mut r, "qb1", json!({}));
    ok(&mut r, "qb2", json!({"p": 2}));
    // The join is met with a and b; c is cancelled (no timeout: taken as possibly applied,
    // but it has nothing to undo). Then pick fails.
    assert_eq!(status(&r, "quote"), StepStatus::Succeeded);
    let sent = failed(&mut r, "pick", "NOPE");
    assert_eq!(
        sent,
        vec![
            cmd("t.a", "qa", Phase::Compensate),
            cmd("t.b", "qb2", Phase::Compensate)
        ],
        "both branches undo at once, b from its last step"
    );
    assert_eq!(
        undone(&mut r, "qb2"),
        vec![cmd("t.b", "qb1", Phase::Compensate)]
    );
    assert!(undone(&mut r, "qa").is_empty());
    undone(&mut r, "qb1");
    assert_eq!(r.status(), SagaStatus::Compensated);
}

#[test]
fn a_false_when_skips_the_step_with_an_event() {
    let yaml = "
name: w
version: 1
steps:
  - name: fraud
    when: $.vip != true
    command: {topic: t.fraud, type: check}
  - name: ship
    command: {topic: t.ship, type: ship}
";
    let mut r = started(yaml, json!({"vip": true}));
    assert_eq!(
        sent(&r.decisions[0]),
        vec![cmd("t.ship", "ship", Phase::Forward)]
    );
    assert!(r
        .events()
        .iter()
        .any(|e| e.1 == E::StepSkipped && e.2.as_deref() == Some("fraud")));
    let mut r2 = started(yaml, json!({"vip": false}));
    assert_eq!(
        sent(&r2.decisions[0]),
        vec![cmd("t.fraud", "fraud", Phase::Forward)]
    );
    ok(&mut r2, "fraud", json!({}));
    ok(&mut r2, "ship", json!({}));
    assert_eq!(r2.status(), SagaStatus::Completed);
    ok(&mut r, "ship", json!({}));
    assert_eq!(r.status(), SagaStatus::Completed);
}

#[test]
fn a_condition_that_cannot_be_evaluated_fails_the_step() {
    let yaml = "
name: w
version: 1
steps:
  - name: big
    when: $.amount > 100
    command: {topic: t.big, type: check}
";
    let r = started(yaml, json!({"amount": "lots"}));
    assert_eq!(r.status(), SagaStatus::Compensated);
    let failure: Value =
        serde_json::from_str(r.state.as_ref().unwrap().failure_json.as_deref().unwrap()).unwrap();
    assert_eq!(failure["error"]["code"], "CONDITION");
}

const ROUTE: &str = "
name: route
version: 1
steps:
  - name: route
    choice:
      - when: $.country in ['FR', 'DE']
        steps:
          - {name: eu, command: {topic: t.eu, type: ship}, output: {carrier: $.carrier}}
      - when: $.country == 'US'
        steps:
          - {name: us, command: {topic: t.us, type: ship}, output: {carrier: $.carrier}}
    otherwise:
      - {name: manual, command: {topic: t.manual, type: review}, output: {carrier: $.carrier}}
  - name: done
    command: {topic: t.done, type: done, payload: {carrier: $.carrier}}
";

#[test]
fn a_choice_runs_the_first_matching_branch_or_otherwise() {
    for (country, first) in [("DE", "eu"), ("US", "us"), ("JP", "manual")] {
        let mut r = started(ROUTE, json!({"country": country}));
        assert_eq!(sent(&r.decisions[0])[0].1, first, "{country}");
        ok(&mut r, first, json!({"carrier": "dhl"}));
        ok(&mut r, "done", json!({}));
        assert_eq!(r.status(), SagaStatus::Completed, "{country}");
    }
    let r = started(ROUTE, json!({"country": "FR"}));
    assert_eq!(status(&r, "route/1"), StepStatus::Running);
    assert_eq!(node(&r, "us"), None, "a branch not taken has no nodes");
}

#[test]
fn a_choice_without_a_match_or_otherwise_is_skipped() {
    let yaml = "
name: c
version: 1
steps:
  - name: route
    choice:
      - when: exists($.coupon)
        steps:
          - {name: apply, command: {topic: t.c, type: apply}}
  - name: done
    command: {topic: t.done, type: done}
";
    let r = started(yaml, json!({}));
    assert_eq!(status(&r, "route"), StepStatus::Skipped);
    assert_eq!(
        sent(&r.decisions[0]),
        vec![cmd("t.done", "done", Phase::Forward)]
    );
}

const SHIP: &str = "
name: ship
version: 1
limits: {for_each_items: 60}
steps:
  - name: ship
    for_each: $.warehouses
    max_concurrency: 3
    key: shipments
    steps:
      - name: book
        command: {topic: t.ship, type: book, payload: {warehouse: $.item, n: $.index}}
        compensation: {topic: t.ship, type: cancel, payload: {id: $.shipment}}
        output: {shipment: $.id}
  - name: done
    command: {topic: t.done, type: done, payload: {first: $.shipments.0.shipment}}
";

#[test]
fn a_for_each_runs_at_most_max_concurrency_elements_at_once() {
    let warehouses: Vec<String> = (0..7).map(|i| format!("w{i}")).collect();
    let mut r = started(SHIP, json!({"warehouses": warehouses}));
    let first = sent(&r.decisions[0]);
    assert_eq!(
        first,
        vec![
            cmd("t.ship", "book[0]", Phase::Forward),
            cmd("t.ship", "book[1]", Phase::Forward),
            cmd("t.ship", "book[2]", Phase::Forward)
        ]
    );
    let payload: Value = serde_json::from_str(&r.decisions[0].commands[1].1.payload_json).unwrap();
    assert_eq!(payload, json!({"warehouse": "w1", "n": 1}));
    // Each answer frees a slot for the next element.
    assert_eq!(
        ok(&mut r, "book[1]", json!({"id": "s1"})),
        vec![cmd("t.ship", "book[3]", Phase::Forward)]
    );
    for i in [0, 2, 3, 4, 5] {
        ok(
            &mut r,
            &format!("book[{i}]"),
            json!({"id": format!("s{i}")}),
        );
    }
    let last = ok(&mut r, "book[6]", json!({"id": "s6"}));
    assert_eq!(last, vec![cmd("t.done", "done", Phase::Forward)]);
    let ctx = context(&r);
    assert_eq!(ctx["shipments"].as_array().unwrap().len(), 7);
    assert_eq!(ctx["shipments"][6], json!({"shipment": "s6"}));
    ok(&mut r, "done", json!({}));
    assert_eq!(r.status(), SagaStatus::Completed);
}

#[test]
fn a_failed_element_under_join_all_undoes_every_element_that_completed() {
    let mut r = started(SHIP, json!({"warehouses": ["a", "b", "c"]}));
    ok(&mut r, "book[0]", json!({"id": "s0"}));
    ok(&mut r, "book[2]", json!({"id": "s2"}));
    let sent = failed(&mut r, "book[1]", "NO_STOCK");
    let mut sent: Vec<String> = sent.into_iter().map(|c| c.1).collect();
    sent.sort();
    assert_eq!(sent, vec!["book[0]", "book[2]"]);
    let payloads: Vec<Value> = r
        .decisions
        .last()
        .unwrap()
        .commands
        .iter()
        .map(|(_, c)| serde_json::from_str(&c.payload_json).unwrap())
        .collect();
    assert!(payloads.contains(&json!({"id": "s0"})), "{payloads:?}");
    undone(&mut r, "book[0]");
    undone(&mut r, "book[2]");
    assert_eq!(r.status(), SagaStatus::Compensated);
}

#[test]
fn a_for_each_over_more_elements_than_its_limit_is_refused() {
    let many: Vec<u32> = (0..61).collect();
    let mut r = run(SHIP);
    let d = r.feed(start_of("ship", "s", json!({"warehouses": many})));
    match &d.outcome {
        Outcome::Rejected(Rejection::InvalidInput(message)) => {
            assert!(
                message.contains("61 elements") && message.contains("for_each_items"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(r.state.is_none());
}

#[test]
fn an_output_that_would_outgrow_the_state_limit_fails_the_step() {
    let mut r = started(&trip("all"), json!({}));
    r.settings.max_state_bytes = 4096;
    let big = "x".repeat(5000);
    ok(&mut r, "payment", json!({"id": big}));
    // The first step failed: nothing to compensate.
    assert_eq!(r.status(), SagaStatus::Compensated);
    let failure: Value =
        serde_json::from_str(r.state.as_ref().unwrap().failure_json.as_deref().unwrap()).unwrap();
    assert_eq!(failure["error"]["code"], "STATE_TOO_LARGE");
    assert!(r.state.as_ref().unwrap().context_json.len() < 100);
}

#[test]
fn a_timer_of_a_cancelled_branch_is_ignored() {
    let yaml = "
name: r
version: 1
steps:
  - name: race
    parallel:
      - name: fast
        steps:
          - {name: go, command: {topic: t.go, type: go}}
      - name: slow
        steps:
          - {name: nap, wait: 1h}
          - {name: late, command: {topic: t.late, type: go}}
    join: any
  - name: after
    command: {topic: t.after, type: go}
";
    let mut r = started(yaml, json!({}));
    let wait_timer = r.state.as_ref().unwrap().timers[0].id.clone();
    ok(&mut r, "go", json!({}));
    assert_eq!(r.status(), SagaStatus::Running);
    assert_eq!(status(&r, "nap"), StepStatus::Skipped);
    let d = r.feed(Input::Timer {
        saga_id: "s".into(),
        timer_id: wait_timer,
    });
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleTimer));
    assert!(d.commands.is_empty());
}

/// Read models find sagas by business keys and show statuses without knowing the definition:
/// the last event of a decision that set or changed a key carries them all, and every event
/// carries the saga's status once it applied.
#[test]
fn events_carry_the_status_and_the_business_keys_when_they_change() {
    let yaml = "
name: shop
version: 1
index:
  customer: $.customer
  payment: $.payment_id
steps:
  - name: pay
    command: {topic: t.pay, type: charge}
    compensation: {topic: t.pay, type: refund}
    output: {payment_id: $.id}
  - name: ship
    command: {topic: t.ship, type: send}
";
    let mut r = started(yaml, json!({"customer": "c-7"}));
    let first = &r.decisions[0].events;
    let keys: Vec<Option<&str>> = first.iter().map(|e| e.index_json.as_deref()).collect();
    assert_eq!(
        keys.last().copied().flatten(),
        Some(r#"{"customer":"c-7"}"#)
    );
    assert!(
        keys[..keys.len() - 1].iter().all(Option::is_none),
        "{keys:?}"
    );
    assert!(first.iter().all(|e| e.status.as_deref() == Some("RUNNING")));

    let _ = ok(&mut r, "pay", json!({"id": "p-1"}));
    let last = r.decisions.last().unwrap().events.last().unwrap();
    assert_eq!(
        last.index_json.as_deref(),
        Some(r#"{"customer":"c-7","payment":"p-1"}"#)
    );

    let _ = failed(&mut r, "ship", "NOPE");
    let d = r.decisions.last().unwrap();
    assert!(
        d.events.iter().all(|e| e.index_json.is_none()),
        "no key changed"
    );
    assert_eq!(
        d.events.last().unwrap().status.as_deref(),
        Some("COMPENSATING")
    );
    let _ = undone(&mut r, "pay");
    let end = r.decisions.last().unwrap().events.last().unwrap();
    assert_eq!(
        (end.event_type, end.status.as_deref()),
        (E::SagaCompensated, Some("COMPENSATED"))
    );
}
