//! The decision function, driven through whole sagas without any I/O.

mod common;

use common::{reply, settings, start, start_of, trip, Defs, Run};
use sagaflow_avro::{EventType as E, Phase, SagaStatus};
use sagaflow_core::{decide, IgnoreReason, Input, Outcome, Rejection};
use serde_json::json;

#[test]
fn a_trip_runs_every_step_and_maps_outputs_into_commands() {
    let mut run = Run::new();
    let d = run.feed(start("s1"));
    assert_eq!(d.outcome, Outcome::Applied);
    assert_eq!(d.commands.len(), 1);
    let (topic, cmd) = &d.commands[0];
    assert_eq!(topic, "trip.payment.commands");
    assert_eq!(cmd.idempotency_key, "s1/payment/forward");
    assert_eq!(cmd.message_id, "s1/payment/forward/1");
    assert_eq!(cmd.reply_to, "g.replies");
    let payload: serde_json::Value = serde_json::from_str(&cmd.payload_json).unwrap();
    assert_eq!(
        payload,
        json!({"amount": 10, "currency": "EUR", "customer": "c-1"})
    );

    run.feed(reply(
        "s1",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"payment_id": "p-9"})),
    ));
    let d = book_flight_and_hotel(&mut run, "s1");
    let notify: serde_json::Value = serde_json::from_str(&d.commands[0].1.payload_json).unwrap();
    assert_eq!(notify["payment_id"], "p-9");
    assert_eq!(notify["hotel_booking_id"], "h-9");
    let d = run.feed(reply("s1", "notify", Phase::Forward, 1, Ok(json!({}))));
    assert!(d.commands.is_empty());
    assert_eq!(run.status(), SagaStatus::Completed);
    let seqs: Vec<i64> = run.events().iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "gapless seq");
    assert_eq!(run.events().last().map(|e| e.1), Some(E::SagaCompleted));
}

/// Replies to the flight and hotel steps of a trip whose payment has succeeded: the decision on
/// the hotel's reply starts the notify step.
fn book_flight_and_hotel<'r>(run: &'r mut Run, saga: &str) -> &'r sagaflow_core::Decision {
    for (step, booking) in [("flight", "f-9"), ("hotel", "h-9")] {
        run.feed(reply(
            saga,
            step,
            Phase::Forward,
            1,
            Ok(json!({ "booking_id": booking })),
        ));
    }
    run.decisions.last().expect("the hotel's decision")
}

#[test]
fn a_failed_step_compensates_completed_steps_in_reverse_order() {
    let mut run = Run::new();
    run.feed(start("s2"));
    run.feed(reply(
        "s2",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"payment_id": "p"})),
    ));
    run.feed(reply(
        "s2",
        "flight",
        Phase::Forward,
        1,
        Ok(json!({"booking_id": "f"})),
    ));
    let d = run.feed(reply(
        "s2",
        "hotel",
        Phase::Forward,
        1,
        Err(("NO_ROOMS", false)),
    ));
    let (topic, cmd) = &d.commands[0];
    assert_eq!(
        (topic.as_str(), cmd.command_type.as_str(), cmd.phase),
        ("trip.flight.commands", "cancel", Phase::Compensate)
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&cmd.payload_json).unwrap(),
        json!({"booking_id": "f"})
    );
    assert_eq!(run.status(), SagaStatus::Compensating);
    let d = run.feed(reply("s2", "flight", Phase::Compensate, 1, Ok(json!({}))));
    assert_eq!(d.commands[0].1.command_type, "refund");
    run.feed(reply("s2", "payment", Phase::Compensate, 1, Ok(json!({}))));
    assert_eq!(run.status(), SagaStatus::Compensated);
    let tail: Vec<(E, Option<String>)> = run
        .events()
        .into_iter()
        .skip(6)
        .map(|e| (e.1, e.2))
        .collect();
    assert_eq!(
        tail,
        vec![
            (E::StepFailed, Some("hotel".into())),
            (E::CompensationDispatched, Some("flight".into())),
            (E::CompensationSucceeded, Some("flight".into())),
            (E::CompensationDispatched, Some("payment".into())),
            (E::CompensationSucceeded, Some("payment".into())),
            (E::SagaCompensated, None),
        ]
    );
}

#[test]
fn duplicate_and_stale_replies_are_ignored_and_counted_in_the_state() {
    let mut run = Run::new();
    run.feed(start("s3"));
    run.feed(reply(
        "s3",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"payment_id": "p"})),
    ));
    let d = run.feed(reply(
        "s3",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"payment_id": "p"})),
    ));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateReply));
    assert!(d.commands.is_empty() && d.events.is_empty());
    let d = run.feed(reply(
        "s3",
        "flight",
        Phase::Forward,
        2,
        Ok(json!({"booking_id": "f"})),
    ));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleReply));
    let d = run.feed(reply("s3", "flight", Phase::Compensate, 1, Ok(json!({}))));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleReply));
    assert_eq!(run.state.as_ref().unwrap().ignored_replies, 3);
    // The real reply still applies.
    let d = run.feed(reply(
        "s3",
        "flight",
        Phase::Forward,
        1,
        Ok(json!({"booking_id": "f"})),
    ));
    assert_eq!(d.outcome, Outcome::Applied);
}

#[test]
fn bad_inputs_are_rejected_with_a_reason() {
    let defs = Defs(vec![trip()]);
    let d = decide(
        &defs,
        &settings(),
        None,
        &reply("ghost", "payment", Phase::Forward, 1, Ok(json!({}))),
        0,
    );
    assert_eq!(d.outcome, Outcome::Rejected(Rejection::UnknownSaga));
    let Input::Start(mut s) = start("s4") else {
        unreachable!()
    };
    s.definition = "nope".into();
    let d = decide(&defs, &settings(), None, &Input::Start(s.clone()), 0);
    assert!(matches!(
        d.outcome,
        Outcome::Rejected(Rejection::UnknownDefinition { .. })
    ));
    s.definition = "trip".into();
    s.input_json = "[1]".into();
    let d = decide(&defs, &settings(), None, &Input::Start(s), 0);
    assert!(matches!(
        d.outcome,
        Outcome::Rejected(Rejection::InvalidInput(_))
    ));
}

#[test]
fn a_second_start_is_ignored_and_a_reply_after_the_end_changes_nothing() {
    let mut run = Run::new();
    run.feed(start("s5"));
    let d = run.feed(start("s5"));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateStart));
    run.feed(reply(
        "s5",
        "payment",
        Phase::Forward,
        1,
        Err(("CARD_DECLINED", false)),
    ));
    assert_eq!(
        run.status(),
        SagaStatus::Compensated,
        "nothing to compensate"
    );
    let d = run.feed(reply("s5", "payment", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::SagaFinished));
    assert!(d.events.is_empty());
}

#[test]
fn a_missing_context_field_fails_the_step_instead_of_sending_a_broken_command() {
    let mut run = Run::new();
    run.feed(start("s6"));
    // The payment output lacks payment_id: the output mapping fails the step.
    let d = run.feed(reply(
        "s6",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"other": 1})),
    ));
    assert!(d.commands.is_empty());
    let failed = d
        .events
        .iter()
        .find(|e| e.event_type == E::StepFailed)
        .expect("step failed");
    assert!(failed
        .detail_json
        .as_deref()
        .unwrap()
        .contains("OUTPUT_MAPPING"));
    assert_eq!(run.status(), SagaStatus::Compensated);
}

/// Numbers pass through the context unchanged: the engine parses and prints the context at
/// every decision, and serde_json without `float_roundtrip` reads each of these one unit in the
/// last place off (found by printing and reparsing random doubles), so a participant would get
/// back a different amount than the one sent.
#[test]
fn numbers_keep_every_bit_through_the_context() {
    const AMOUNT: f64 = 1.0715660391465826e-75;
    const PAYMENT: f64 = -1.603964615428183e143;
    let mut run = Run::new();
    let d = run.feed(start_of(
        "trip",
        "s7",
        json!({
            "customer": {"id": "c-1", "email": "c@example.com"}, "amount": AMOUNT,
            "currency": "EUR", "flight": {"number": "F1", "date": "2026-07-01"},
            "hotel": {"id": "h1", "check_in": "2026-07-01", "nights": 2}
        }),
    ));
    // Compared as text: the engine prints what it parsed, and the shortest text that reads
    // back as a double is unique, so any bit lost shows.
    let payment = &d.commands[0].1.payload_json;
    assert!(payment.contains("1.0715660391465826e-75"), "{payment}");
    run.feed(reply(
        "s7",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({ "payment_id": PAYMENT })),
    ));
    let d = book_flight_and_hotel(&mut run, "s7");
    let notify = &d.commands[0].1.payload_json;
    assert!(notify.contains("-1.603964615428183e+143"), "{notify}");
    let context = &run.state.as_ref().expect("state").context_json;
    assert!(context.contains("1.0715660391465826e-75"), "{context}");
}

/// The YAML of a deployed version was edited (the flight step removed) while a saga ran on it:
/// the saga's next input is rejected with the reason, never decided against the wrong step, and
/// nothing panics.
#[test]
fn a_definition_edited_under_its_version_is_rejected_as_drift_not_a_panic() {
    let mut run = Run::new();
    run.feed(start("s1"));
    run.feed(reply(
        "s1",
        "payment",
        Phase::Forward,
        1,
        Ok(json!({"payment_id": "p-9"})),
    ));
    let trip = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/trip.yaml"
    ))
    .unwrap();
    let start_of_flight = trip.find("  - name: flight").expect("flight step");
    let start_of_hotel = trip.find("  - name: hotel").expect("hotel step");
    let edited = format!("{}{}", &trip[..start_of_flight], &trip[start_of_hotel..]);
    let edited = sagaflow_definition::Definition::parse("trip.yaml", &edited).expect("valid");
    run.defs = Defs(vec![edited]);
    let d = run.feed(reply(
        "s1",
        "flight",
        Phase::Forward,
        1,
        Ok(json!({"booking_id": "f-9"})),
    ));
    match &d.outcome {
        Outcome::Rejected(r @ Rejection::DefinitionDrift { .. }) => {
            assert_eq!(r.code(), "definition-drift");
            let text = r.to_string();
            assert!(text.contains("trip@1") && text.contains("flight"), "{text}");
        }
        other => panic!("expected a drift rejection, got {other:?}"),
    }
    assert!(d.state.is_none(), "the state is left as it was");
}
