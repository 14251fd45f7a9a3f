//! What becomes of finished sagas: the whole state, then a dedupe marker, then nothing.

mod common;

use common::{reply, start, Run};
use sagaflow_avro::{Phase, SagaStatus, TimerKind};
use sagaflow_core::{IdReuse, IgnoreReason, Input, Outcome, Rejection, Retention};
use serde_json::json;

const FINISHED_MS: i64 = 60_000;
const DEDUPE_MS: i64 = 600_000;

fn run(reuse: IdReuse) -> Run {
    let mut r = Run::new();
    r.settings.retention = Retention {
        finished_ms: FINISHED_MS,
        dedupe_ms: DEDUPE_MS,
        reuse,
    };
    r
}

const STEPS: [&str; 4] = ["payment", "flight", "hotel", "notify"];

/// What each step of the trip replies with (its outputs need these fields).
fn output(step: &str) -> serde_json::Value {
    match step {
        "payment" => json!({"payment_id": "p-1"}),
        "flight" | "hotel" => json!({"booking_id": "b-1"}),
        _ => json!({}),
    }
}

/// Runs saga `id` of the trip to its end: completed, or compensated when the payment fails.
fn finish(r: &mut Run, id: &str, complete: bool) -> i64 {
    r.feed(start(id));
    if !complete {
        r.feed(reply(
            id,
            "payment",
            Phase::Forward,
            1,
            Err(("DECLINED", false)),
        ));
        assert_eq!(r.status(), SagaStatus::Compensated);
        return r.now;
    }
    for step in STEPS {
        r.feed(reply(id, step, Phase::Forward, 1, Ok(output(step))));
    }
    assert_eq!(r.status(), SagaStatus::Completed);
    r.now
}

fn expire_timers(r: &Run) -> Vec<i64> {
    r.state
        .as_ref()
        .map(|s| {
            s.timers
                .iter()
                .filter(|t| t.kind == TimerKind::Expire)
                .map(|t| t.due)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_finished_saga_shrinks_to_a_marker_then_goes_and_its_id_may_start_again() {
    let mut r = run(IdReuse::AfterWindow);
    let ended = finish(&mut r, "s1", true);
    assert_eq!(expire_timers(&r), vec![ended + FINISHED_MS]);
    let next_seq = r.state.as_ref().unwrap().next_seq;

    // Within retention the whole state is there.
    let d = r.feed(start("s1"));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateStart));
    assert_ne!(r.state.as_ref().unwrap().context_json, "{}");

    // Retention over: a marker with the ids, status and seq, no context or steps.
    let d = r.fire_next_timer().expect("the retention timer");
    assert_eq!(d.outcome, Outcome::Applied);
    assert!(
        d.events.is_empty() && d.commands.is_empty(),
        "no history is added"
    );
    let marker = r.state.clone().expect("a marker");
    assert!(marker.compacted);
    assert_eq!(marker.status, SagaStatus::Completed);
    assert_eq!(marker.next_seq, next_seq);
    assert_eq!(marker.context_json, "{}");
    assert!(marker.steps.is_empty() && marker.failure_json.is_none());
    assert_eq!(
        expire_timers(&r),
        vec![ended + DEDUPE_MS],
        "the window counts from the end"
    );

    // Within the window: a start is a duplicate, a late reply is recognised, not unknown.
    let d = r.feed(start("s1"));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateStart));
    let d = r.feed(reply("s1", "hotel", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::SagaFinished));
    assert!(r.state.as_ref().unwrap().compacted);

    // Window over: the marker is deleted, and the id starts a new saga.
    let d = r.fire_next_timer().expect("the window timer");
    assert!(d.forget && d.state.is_none());
    assert!(r.state.is_none());
    let d = r.feed(reply("s1", "hotel", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(d.outcome, Outcome::Rejected(Rejection::UnknownSaga));
    let d = r.feed(start("s1"));
    assert_eq!(d.outcome, Outcome::Applied);
    assert_eq!(r.status(), SagaStatus::Running);
    assert!(
        expire_timers(&r).is_empty(),
        "a running saga has no retention"
    );
}

#[test]
fn a_failed_saga_waits_for_an_operator_and_never_expires() {
    let mut r = run(IdReuse::AfterWindow);
    r.feed(start("f1"));
    for step in &STEPS[..2] {
        r.feed(reply("f1", step, Phase::Forward, 1, Ok(output(step))));
    }
    r.feed(reply(
        "f1",
        "hotel",
        Phase::Forward,
        1,
        Err(("FULL", false)),
    ));
    // The flight's compensation fails for good: an incident.
    r.feed(reply(
        "f1",
        "flight",
        Phase::Compensate,
        1,
        Err(("NO", false)),
    ));
    assert_eq!(r.status(), SagaStatus::Incident);
    assert!(expire_timers(&r).is_empty());
}

#[test]
fn the_policy_decides_which_markers_are_kept_for_good() {
    for (reuse, complete, forgotten) in [
        (IdReuse::Never, true, false),
        (IdReuse::Never, false, false),
        (IdReuse::CompensatedOnly, true, false),
        (IdReuse::CompensatedOnly, false, true),
        (IdReuse::AfterWindow, false, true),
    ] {
        let mut r = run(reuse);
        finish(&mut r, "p1", complete);
        r.fire_next_timer().expect("the retention timer");
        assert!(r.state.as_ref().unwrap().compacted);
        assert_eq!(
            !expire_timers(&r).is_empty(),
            forgotten,
            "{reuse:?}, completed: {complete}"
        );
        if !forgotten {
            let d = r.feed_at(start("p1"), r.now + 100 * DEDUPE_MS);
            assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::DuplicateStart));
        }
    }
}

#[test]
fn a_finished_saga_from_before_retention_gets_its_timer_when_touched() {
    let mut r = run(IdReuse::AfterWindow);
    finish(&mut r, "old", true);
    // As written by an engine without retention: terminal, no timers.
    r.state.as_mut().unwrap().timers.clear();
    let d = r.feed(reply("old", "notify", Phase::Forward, 1, Ok(json!({}))));
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::SagaFinished));
    assert_eq!(expire_timers(&r), vec![r.now + FINISHED_MS]);
    // An expire timer id the saga does not have is stale, as any other.
    let d = r.feed(Input::Timer {
        saga_id: "old".into(),
        timer_id: "expire/1".into(),
    });
    assert_eq!(d.outcome, Outcome::Ignored(IgnoreReason::StaleTimer));
}
