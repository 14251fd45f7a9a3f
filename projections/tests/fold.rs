//! Folding events into rows: redeliveries are no-ops, gaps are flagged, statuses come from the
//! events, and the duration buckets keep their documented error bound.

use sagaflow_avro::{EventType as E, SagaEvent};
use sagaflow_projections::fold::{bucket_of, node_of, Applied, Fold, StepKey};

fn event(
    seq: i64,
    t: E,
    step: Option<&str>,
    attempt: Option<i32>,
    at: i64,
    status: &str,
) -> SagaEvent {
    SagaEvent {
        event_id: format!("s/{seq}"),
        saga_id: "s".into(),
        seq,
        event_type: t,
        definition: "trip".into(),
        version: 2,
        step: step.map(str::to_string),
        attempt,
        at,
        detail_json: None,
        due: None,
        input_json: None,
        status: Some(status.into()),
        index_json: None,
    }
}

#[test]
fn a_redelivered_event_changes_nothing_and_a_gap_is_flagged() {
    let mut fold = Fold::default();
    let started = event(1, E::SagaStarted, None, None, 1_000, "RUNNING");
    let dispatched = event(
        2,
        E::StepDispatched,
        Some("payment"),
        Some(1),
        1_010,
        "RUNNING",
    );
    assert_eq!(fold.apply(&started), Applied::New);
    assert_eq!(fold.apply(&dispatched), Applied::New);
    assert_eq!(fold.apply(&dispatched), Applied::Duplicate);
    assert_eq!(fold.apply(&started), Applied::Duplicate);
    let mut failed = event(
        4,
        E::StepFailed,
        Some("payment"),
        Some(1),
        1_250,
        "COMPENSATING",
    );
    failed.detail_json = Some(r#"{"code":"DECLINED","message":"no funds"}"#.into());
    assert_eq!(fold.apply(&failed), Applied::AfterGap);
    assert_eq!(fold.events.len(), 3);
    let saga = &fold.sagas["s"];
    assert_eq!(
        (saga.status.as_str(), saga.attempts, saga.last_seq),
        ("COMPENSATING", 1, 4)
    );
    assert_eq!(saga.last_error_code.as_deref(), Some("DECLINED"));
    let key = StepKey {
        saga_id: "s".into(),
        step: "payment".into(),
        phase: "forward",
        attempt: 1,
    };
    let step = &fold.steps[&key];
    assert_eq!(
        (step.status, step.duration_ms, step.error_code.as_deref()),
        ("FAILED", Some(240), Some("DECLINED"))
    );
    let counts: Vec<_> = fold
        .status_counts
        .iter()
        .map(|(k, v)| (k.2.as_str(), v.0))
        .collect();
    assert_eq!(counts, vec![("COMPENSATING", 1), ("RUNNING", 1)]);
}

#[test]
fn an_ended_saga_lands_in_its_day_and_duration_bucket() {
    let mut fold = Fold::default();
    let _ = fold.apply(&event(
        1,
        E::SagaStarted,
        None,
        None,
        86_400_000 - 500,
        "RUNNING",
    ));
    let _ = fold.apply(&event(
        2,
        E::SagaCompleted,
        None,
        None,
        86_400_000 + 1_500,
        "COMPLETED",
    ));
    let saga = &fold.sagas["s"];
    assert_eq!(
        (saga.duration_ms(), saga.current_step.as_deref()),
        (Some(2_000), None)
    );
    let days: Vec<_> = fold
        .status_counts
        .keys()
        .map(|k| (k.1, k.2.as_str()))
        .collect();
    assert_eq!(
        days,
        vec![(0, "RUNNING"), (1, "COMPLETED")],
        "each status on the day it was entered"
    );
    let buckets: Vec<_> = fold.durations.keys().map(|k| k.3).collect();
    assert_eq!(buckets, vec![bucket_of(2_000)]);
}

#[test]
fn a_bucket_middle_is_within_two_and_a_half_percent_plus_a_millisecond() {
    // The SQL side (bucket_ms, then round) reports this value for every duration in a bucket.
    let reported =
        |b: i16| ((1.05f64.powi(b.into()) * 1.05f64.powi(i32::from(b) + 1)).sqrt() - 1.0).round();
    let mut d = 0i64;
    while d < 10_000_000_000 {
        let error = (reported(bucket_of(d)) - d as f64).abs();
        assert!(
            error <= 0.025 * d as f64 + 1.0,
            "{d} ms reported as {}",
            reported(bucket_of(d))
        );
        d = d + 1 + d / 97;
    }
}

#[test]
fn instance_ids_group_under_their_node() {
    assert_eq!(node_of("flight[3]"), "flight");
    assert_eq!(node_of("book/hotel"), "book");
    assert_eq!(node_of("lines/4"), "lines");
    assert_eq!(node_of("payment"), "payment");
}

#[test]
fn a_saga_back_to_running_after_a_repair_is_not_counted_as_a_start() {
    let mut fold = Fold::default();
    let _ = fold.apply(&event(1, E::SagaStarted, None, None, 1_000, "RUNNING"));
    let _ = fold.apply(&event(2, E::SagaIncident, None, None, 2_000, "INCIDENT"));
    // An operator retries the await: the saga runs again, and then completes.
    let _ = fold.apply(&event(
        3,
        E::StepDispatched,
        Some("payment"),
        Some(2),
        3_000,
        "RUNNING",
    ));
    let _ = fold.apply(&event(4, E::SagaCompleted, None, None, 4_000, "COMPLETED"));
    let counts: Vec<_> = fold
        .status_counts
        .iter()
        .map(|(k, v)| (k.2.as_str(), v.0))
        .collect();
    assert_eq!(
        counts,
        vec![("COMPLETED", 1), ("INCIDENT", 1), ("RUNNING", 1)]
    );
}
