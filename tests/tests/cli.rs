//! The `sagaflow` command line.

use std::process::Command;

use sagaflow_tests::{root, sagaflow_bin};

#[test]
fn def_check_reports_every_problem_with_line_column_and_hint() {
    let out = Command::new(sagaflow_bin())
        .args(["def", "check"])
        .arg(root().join("examples/broken/trip-broken.yaml"))
        .output()
        .expect("run sagaflow def check");
    assert!(!out.status.success(), "broken YAML must fail the check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(errors.len() >= 5, "expected every problem, got:\n{stderr}");
    for line in &errors {
        // file:line:column: error: message
        let mut parts = line.splitn(4, ':');
        let file = parts.next().unwrap_or_default();
        let line_no: usize = parts.next().unwrap_or_default().parse().unwrap_or(0);
        let col: usize = parts.next().unwrap_or_default().parse().unwrap_or(0);
        assert!(
            file.ends_with("trip-broken.yaml") && line_no > 0 && col > 0,
            "no position in {line:?}"
        );
    }
    assert!(stderr.contains("did you mean `compensation`?"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn def_check_accepts_the_examples() {
    let out = Command::new(sagaflow_bin())
        .args(["def", "check"])
        .arg(root().join("examples/trip.yaml"))
        .arg(root().join("examples/bench4.yaml"))
        .output()
        .expect("run sagaflow def check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (trip@1, 4 steps)"), "{stdout}");
    assert!(stdout.contains("ok (bench@1, 4 steps)"), "{stdout}");
}

/// Trip sagas of version 1 decided without a broker and written as `sagaflow events` prints
/// them; `def replay` finds no divergence against version 1 and one per saga against the
/// parallel version 2, and names a line it cannot read.
#[test]
fn def_replay_reports_where_a_new_version_diverges() {
    use sagaflow_avro::{Phase, Reply, ReplyStatus, StartSaga};
    use sagaflow_core::{decide, Definitions, Input, Settings};
    use sagaflow_definition::Definition;

    struct One(Definition);
    impl Definitions for One {
        fn find(&self, _: &str, _: Option<u32>) -> Option<&Definition> {
            Some(&self.0)
        }
    }
    let v1 = One(sagaflow_definition::load_file(&root().join("examples/trip.yaml")).unwrap());
    let settings = Settings {
        replies: "r".into(),
        retention: sagaflow_core::Retention::default(),
        max_state_bytes: Settings::DEFAULT_MAX_STATE_BYTES,
    };
    let mut lines = Vec::new();
    for saga in ["a", "b", "c"] {
        let mut state = None;
        let mut inputs = vec![Input::Start(StartSaga {
            request_id: saga.into(),
            saga_id: saga.into(),
            definition: "trip".into(),
            version: Some(1),
            input_json: r#"{"customer": {"id": "c", "email": "e"}, "amount": 1, "currency": "EUR", "flight": {"number": "F", "date": "d"}, "hotel": {"id": "h", "check_in": "d", "nights": 1}}"#.into(),
            requested_at: 0,
        })];
        for (at, step) in ["payment", "flight", "hotel", "notify"].iter().enumerate() {
            inputs.push(Input::Reply(Reply {
                message_id: format!("{saga}-{step}"),
                saga_id: saga.into(),
                step: step.to_string(),
                phase: Phase::Forward,
                attempt: 1,
                idempotency_key: format!("{saga}/{step}/forward"),
                status: ReplyStatus::Success,
                output_json: Some(r#"{"payment_id": "p", "booking_id": "b"}"#.into()),
                error: None,
                replied_at: at as i64,
            }));
        }
        for (n, input) in inputs.iter().enumerate() {
            let d = decide(&v1, &settings, state.as_ref(), input, 1_000 + n as i64);
            for e in &d.events {
                let parse = |t: &Option<String>| {
                    t.as_deref()
                        .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap())
                };
                lines.push(
                    serde_json::json!({
                        "saga_id": e.saga_id, "seq": e.seq, "type": e.event_type,
                        "definition": e.definition, "version": e.version, "step": e.step,
                        "attempt": e.attempt, "at": e.at, "due": e.due,
                        "detail": parse(&e.detail_json), "input": parse(&e.input_json),
                    })
                    .to_string(),
                );
            }
            state = d.state.or(state);
        }
    }
    let dir = sagaflow_tests::TempDir::new("replay");
    let history = dir.path().join("history.jsonl");
    std::fs::write(&history, lines.join("\n")).unwrap();
    let replay = |definition: &str, events: &std::path::Path| {
        let out = Command::new(sagaflow_bin())
            .args(["def", "replay"])
            .arg(root().join(definition))
            .arg("--events")
            .arg(events)
            .output()
            .expect("run sagaflow def replay");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = replay("examples/trip.yaml", &history);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("replayed 3 sagas of trip: 3 the same, 0 diverge"),
        "{stdout}"
    );

    let (code, stdout, _) = replay("examples/parallel-trip.yaml", &history);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("3 diverge"), "{stdout}");
    // Version 2 sends the flight and the hotel at once where version 1 sent the flight alone.
    assert!(
        stdout.contains("a: diverges at seq 3")
            && stdout.contains(r#"recorded:    ["send flight"]"#)
            && stdout.contains(r#"new version: ["send flight", "send hotel"]"#),
        "{stdout}"
    );

    let broken = dir.path().join("broken.jsonl");
    std::fs::write(&broken, format!("{}\nnot json\n", lines[0])).unwrap();
    let (code, _, stderr) = replay("examples/trip.yaml", &broken);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("broken.jsonl:2: not an event line"),
        "{stderr}"
    );
}
