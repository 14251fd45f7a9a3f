//! The serde mirrors match the `.avsc` files, and every schema stays BACKWARD compatible (new
//! readers read old data) with every version committed before it.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use sagaflow_avro::schemas::ALL;
use sagaflow_avro::*;

fn roundtrip<T: Contract + PartialEq + std::fmt::Debug>(value: T) {
    let schema = T::SCHEMA.schema().expect("schema");
    let avro = apache_avro::to_value(&value).expect("to avro value");
    let resolved = avro
        .resolve(schema)
        .unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", T::SCHEMA.file));
    assert!(
        resolved.validate(schema),
        "{} fails validation",
        T::SCHEMA.file
    );
    let back: T = apache_avro::from_value(&resolved).expect("from avro value");
    assert_eq!(back, value);
}

/// An internal record's encoding (serde straight into the writer) is byte for byte the generic
/// one (a resolved `Value`), so the faster path writes nothing a reader would misread.
fn internal_roundtrip<T: internal::Internal + PartialEq + std::fmt::Debug + Clone>(value: T) {
    roundtrip(value.clone());
    let schema = T::SCHEMA.schema().expect("schema");
    let generic = apache_avro::to_value(&value)
        .and_then(|v| v.resolve(schema))
        .and_then(|v| {
            apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                .build()?
                .write_value_to_vec(v)
        })
        .expect("generic encoding");
    let encoded = internal::encode(&value).expect("internal encoding");
    assert_eq!(
        &encoded[10..],
        generic.as_slice(),
        "{} encodes differently",
        T::SCHEMA.file
    );
    assert_eq!(
        internal::decode::<T>(&encoded)
            .expect("single-object encoding")
            .expect("decode"),
        value
    );
}

#[test]
fn every_contract_roundtrips_through_its_schema() {
    roundtrip(StartSaga {
        request_id: "r".into(),
        saga_id: "s".into(),
        definition: "trip".into(),
        version: Some(2),
        input_json: "{}".into(),
        requested_at: 5,
    });
    roundtrip(Command {
        message_id: "m".into(),
        saga_id: "s".into(),
        definition: "trip".into(),
        version: 1,
        step: "pay".into(),
        phase: Phase::Compensate,
        attempt: 2,
        idempotency_key: "k".into(),
        command_type: "refund".into(),
        payload_json: "{}".into(),
        reply_to: "r".into(),
        deadline: Some(9),
        issued_at: 1,
    });
    roundtrip(Reply {
        message_id: "m".into(),
        saga_id: "s".into(),
        step: "pay".into(),
        phase: Phase::Forward,
        attempt: 1,
        idempotency_key: "k".into(),
        status: ReplyStatus::Failure,
        output_json: None,
        error: Some(ReplyError {
            code: "NO".into(),
            message: "no".into(),
            retryable: true,
        }),
        replied_at: 3,
    });
    roundtrip(SagaEvent {
        event_id: "s/1".into(),
        saga_id: "s".into(),
        seq: 1,
        event_type: EventType::CompensationSucceeded,
        definition: "trip".into(),
        version: 1,
        step: Some("pay".into()),
        attempt: Some(1),
        at: 7,
        detail_json: Some("{}".into()),
        due: Some(9),
    });
    internal_roundtrip(SagaState {
        saga_id: "s".into(),
        definition: "trip".into(),
        version: 1,
        status: SagaStatus::Compensating,
        context_json: "{}".into(),
        steps: vec![StepState {
            name: "pay".into(),
            status: StepStatus::CompensationFailed,
            attempt: 3,
            dispatched_at: Some(1),
            finished_at: None,
            correlation: Some("o-1".into()),
            signal_id: Some("sig".into()),
            uncertain: true,
        }],
        completion_order: vec!["pay".into()],
        next_seq: 4,
        started_at: 1,
        updated_at: 2,
        ignored_replies: 1,
        failure_json: None,
        timers: vec![Timer {
            id: "RETRY/3".into(),
            kind: TimerKind::Retry,
            due: 10,
            step: Some("pay".into()),
            attempt: Some(2),
        }],
        compacted: false,
    });
    roundtrip(Signal {
        signal_id: "sig".into(),
        event: "confirmed".into(),
        correlation: "o-1".into(),
        payload_json: Some("{}".into()),
        sent_at: 1,
        ttl_ms: None,
    });
    internal_roundtrip(Parked {
        kind: ParkedKind::Delayed,
        id: "d".into(),
        due: 5,
        topic: Some("t".into()),
        key: Some(vec![1]),
        value: None,
        headers: vec![ParkedHeader {
            name: "h".into(),
            value: vec![2],
        }],
        sagas: vec![Awaiter {
            saga_id: "s".into(),
            step: "confirm".into(),
        }],
        received_at: 4,
    });
    internal_roundtrip(Correlation {
        kind: CorrelationKind::Deliver,
        event: "confirmed".into(),
        correlation: "o-1".into(),
        saga_id: "s".into(),
        step: "confirm".into(),
        signal: Some(vec![0]),
    });
    internal_roundtrip(JournalRecord {
        kind: JournalKind::Claim,
        epoch: 3,
        writer: "w".into(),
        base: -1,
        positions: vec![InputPosition {
            topic: "t".into(),
            offset: 4,
        }],
        relayed_through: -1,
        states: vec![StateEntry {
            saga_id: "s".into(),
            state: Some(vec![0, 1, 2]),
        }],
        outputs: vec![Outbound {
            id: "i".into(),
            topic: "t".into(),
            key: Some(vec![1]),
            value: None,
            headers: vec![Header {
                name: "h".into(),
                value: vec![9],
            }],
            not_before: None,
        }],
    });
    internal_roundtrip(Checkpoint {
        journal_offset: 4,
        epoch: 1,
        writer: "w".into(),
        positions: vec![CheckpointPosition {
            topic: "t".into(),
            offset: 2,
        }],
        relayed_through: 4,
    });
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("avro/ has a parent")
        .to_path_buf()
}

fn git(args: &[&str]) -> Option<String> {
    let out = Process::new("git")
        .args(args)
        .current_dir(repo_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every committed version of `file` (newest first).
fn committed_versions(file: &str) -> Vec<(String, String)> {
    let path = format!("avro/schemas/{file}");
    let Some(log) = git(&["log", "--format=%H", "--", &path]) else {
        return Vec::new();
    };
    log.lines()
        .filter_map(|commit| {
            let text = git(&["show", &format!("{commit}:{path}")])?;
            Some((commit[..10].to_string(), text))
        })
        .collect()
}

/// Why `new` cannot read data written with `old`, if it cannot.
fn backward_problem(old: &str, new: &str) -> Option<String> {
    let old = match Schema::parse_str(old) {
        Ok(s) => s,
        Err(e) => return Some(format!("the committed version does not parse: {e}")),
    };
    let new = Schema::parse_str(new).expect("current schema parses");
    SchemaCompatibility::can_read(&old, &new)
        .err()
        .map(|e| e.to_string())
}

#[test]
fn schemas_stay_backward_compatible_with_every_committed_version() {
    assert!(
        git(&["rev-parse", "--git-dir"]).is_some(),
        "this test reads the schemas' history with git; run it inside a clone of the repository"
    );
    let mut problems = Vec::new();
    for file in ALL {
        for (commit, text) in committed_versions(file.file) {
            if let Some(p) = backward_problem(&text, file.text) {
                problems.push(format!(
                    "avro/schemas/{}: cannot read data written with the version of commit {commit}: {p}\n  fix: give new fields a default, keep removed fields' defaults, never change a field's type",
                    file.file
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_compatibility_check_rejects_a_breaking_change() {
    let old = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    let added_required = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;
    let added_optional = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","long"],"default":null}]}"#;
    let retyped = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    assert!(backward_problem(old, added_required).is_some());
    assert!(backward_problem(old, retyped).is_some());
    assert!(backward_problem(old, added_optional).is_none());
}

/// Records in single-object encoding name their writer's schema by fingerprint, so every version
/// of an internal schema committed since that encoding came in must stay known to the engine:
/// the current one, or one in `schemas::HISTORY`.
#[test]
fn every_internal_schema_version_written_since_single_object_encoding_stays_known() {
    use sagaflow_avro::internal::fingerprint;
    use sagaflow_avro::{Checkpoint, Contract, Correlation, JournalRecord, Parked, SagaState};
    assert!(
        git(&["rev-parse", "--git-dir"]).is_some(),
        "this test reads the schemas' history with git; run it inside a clone of the repository"
    );
    // The commit that brought single-object encoding in; none yet means nothing was written.
    let Some(since) = git(&[
        "log",
        "--diff-filter=A",
        "--format=%H",
        "--",
        "avro/src/internal.rs",
    ])
    .and_then(|log| log.lines().last().map(str::to_string)) else {
        return;
    };
    let internal = [
        SagaState::SCHEMA,
        JournalRecord::SCHEMA,
        Checkpoint::SCHEMA,
        Parked::SCHEMA,
        Correlation::SCHEMA,
    ];
    let mut problems = Vec::new();
    for file in internal {
        let known: Vec<[u8; 8]> = std::iter::once(file.text)
            .chain(
                sagaflow_avro::schemas::HISTORY
                    .iter()
                    .filter(|(f, _)| f.file == file.file)
                    .map(|(_, text)| *text),
            )
            .map(|text| fingerprint(&Schema::parse_str(text).expect("schema parses")))
            .collect();
        let path = format!("avro/schemas/{}", file.file);
        let range = format!("{since}~1..HEAD");
        let commits = git(&["log", "--format=%H", &range, "--", &path]).unwrap_or_default();
        for commit in commits.lines() {
            let Some(text) = git(&["show", &format!("{commit}:{path}")]) else {
                continue;
            };
            let Ok(schema) = Schema::parse_str(&text) else {
                continue;
            };
            let print = fingerprint(&schema);
            if !known.contains(&print) {
                let hex: String = print.iter().map(|b| format!("{b:02x}")).collect();
                problems.push(format!(
                    "{path} as of commit {}: records written with it would no longer decode; save it as avro/schemas/history/{}.{hex}.avsc and list it in schemas::HISTORY",
                    &commit[..10],
                    file.file.trim_end_matches(".avsc")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
