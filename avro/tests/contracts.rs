//! The serde mirrors match the `.avsc` files, and every schema stays BACKWARD compatible (new
//! readers read old data) with every version committed before it.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
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
        input_json: Some(r#"{"timer":{"kind":"WAIT"}}"#.into()),
        status: Some("COMPENSATING".into()),
        index_json: Some(r#"{"order":"o-1"}"#.into()),
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
            items_json: Some("[1,2]".into()),
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
        pause: Some(Pause {
            actor: "ops".into(),
            reason: Some("migrating".into()),
            request_id: "r-1".into(),
            at: 3,
            held: vec![r#"{"reply":{}}"#.into()],
        }),
        admin_requests: vec!["r-1".into()],
    });
    roundtrip(AdminCommand {
        request_id: "r-2".into(),
        saga_id: "s".into(),
        action: AdminAction::Resolve,
        step: Some("pay".into()),
        output_json: Some("{}".into()),
        resolution: Some(Resolution::MarkDone),
        actor: "ops".into(),
        reason: Some("refunded by hand".into()),
        job_id: Some("job-1".into()),
        requested_at: 4,
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
    match SchemaCompatibility::can_read(&old, &new) {
        Ok(Compatibility::Full) => None,
        // Some values resolve and some do not (an enum symbol the reader lacks, with no
        // default to fall back on): a record would fail to decode on the day it carries one.
        Ok(Compatibility::Partial) => {
            Some("only partially compatible: some values it can hold do not resolve (an enum symbol without a default to fall back on?)".into())
        }
        Err(e) => Some(e.to_string()),
    }
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

/// The saga state is FULL_TRANSITIVE: this engine reads the state of every earlier one, and every
/// earlier engine reads this one's, so engines of two versions can share partitions during a
/// rolling restart (a partition may move back to an engine not yet upgraded).
#[test]
fn the_saga_state_stays_full_transitive_with_every_committed_version() {
    assert!(
        git(&["rev-parse", "--git-dir"]).is_some(),
        "this test reads the schemas' history with git; run it inside a clone of the repository"
    );
    let mut problems = Vec::new();
    for (commit, text) in committed_versions(SagaState::SCHEMA.file) {
        if let Some(p) = backward_problem(SagaState::SCHEMA.text, &text) {
            problems.push(format!(
                "avro/schemas/SagaState.avsc: the engine of commit {commit} cannot read states written now: {p}\n  fix: never remove a field or an enum symbol; new enum symbols need the enum's default"
            ));
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
    // Forward: an old reader meets a symbol it does not know, which only its default covers.
    let old_enum = r#"{"type":"enum","name":"E","symbols":["A"]}"#;
    let new_enum = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
    let old_enum_default = r#"{"type":"enum","name":"E","symbols":["A"],"default":"A"}"#;
    assert!(backward_problem(new_enum, old_enum).is_some());
    assert!(backward_problem(new_enum, old_enum_default).is_none());
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

/// A state written by the engine before graph definitions (the schema saved in history) decodes
/// in this one, with the fields it lacked at their defaults.
#[test]
fn a_saga_state_written_before_graph_nodes_decodes_now() {
    use apache_avro::types::Value as Avro;
    let old_text = sagaflow_avro::schemas::HISTORY
        .iter()
        .find(|(f, _)| f.file == SagaState::SCHEMA.file)
        .map(|(_, text)| *text)
        .expect("the pre-graph SagaState is in the history");
    let old = Schema::parse_str(old_text).unwrap();
    let state = SagaState {
        saga_id: "s".into(),
        definition: "trip".into(),
        version: 1,
        status: SagaStatus::Running,
        context_json: "{}".into(),
        steps: vec![StepState {
            name: "pay".into(),
            status: StepStatus::Running,
            attempt: 1,
            dispatched_at: Some(1),
            finished_at: None,
            correlation: None,
            signal_id: None,
            uncertain: false,
            items_json: None,
        }],
        completion_order: vec![],
        next_seq: 3,
        started_at: 1,
        updated_at: 2,
        ignored_replies: 0,
        failure_json: None,
        timers: vec![],
        compacted: false,
        pause: None,
        admin_requests: vec![],
    };
    // The old engine's record: the same values without the field it did not have.
    fn drop_field(value: Avro, name: &str) -> Avro {
        match value {
            Avro::Record(fields) => Avro::Record(
                fields
                    .into_iter()
                    .filter(|(k, _)| k != name)
                    .map(|(k, v)| (k, drop_field(v, name)))
                    .collect(),
            ),
            Avro::Array(items) => {
                Avro::Array(items.into_iter().map(|v| drop_field(v, name)).collect())
            }
            other => other,
        }
    }
    let value = drop_field(apache_avro::to_value(&state).unwrap(), "items_json")
        .resolve(&old)
        .expect("fits the old schema");
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(&old)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap();
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&sagaflow_avro::internal::fingerprint(&old));
    bytes.extend_from_slice(&body);
    let decoded: SagaState = sagaflow_avro::internal::decode(&bytes)
        .expect("single-object encoding")
        .expect("an old state decodes");
    assert_eq!(decoded, state);
}

/// The hand-written `symbol()` of each enum spells every symbol of its schema the way serde
/// (and so Avro) does.
#[test]
fn every_enum_symbol_is_spelled_as_its_schema_spells_it() {
    fn symbols(file: &sagaflow_avro::schemas::SchemaFile, name: &str) -> Vec<String> {
        fn find(v: &serde_json::Value, name: &str) -> Option<Vec<String>> {
            match v {
                serde_json::Value::Object(o) => {
                    if o.get("type").and_then(|t| t.as_str()) == Some("enum")
                        && o.get("name").and_then(|n| n.as_str()) == Some(name)
                    {
                        let list = o["symbols"].as_array()?;
                        return Some(
                            list.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect(),
                        );
                    }
                    o.values().find_map(|v| find(v, name))
                }
                serde_json::Value::Array(a) => a.iter().find_map(|v| find(v, name)),
                _ => None,
            }
        }
        let schema: serde_json::Value = serde_json::from_str(file.text).expect("schema JSON");
        find(&schema, name).unwrap_or_else(|| panic!("{} has no enum {name}", file.file))
    }
    fn check<T: serde::de::DeserializeOwned>(symbols: Vec<String>, spell: fn(T) -> String) {
        assert!(!symbols.is_empty());
        for symbol in symbols {
            let value: T = serde_json::from_value(serde_json::Value::String(symbol.clone()))
                .unwrap_or_else(|e| panic!("{symbol} is not a variant: {e}"));
            assert_eq!(spell(value), symbol);
        }
    }
    use sagaflow_avro::schemas::{ADMIN_COMMAND, SAGA_EVENT, SAGA_STATE};
    check::<EventType>(symbols(&SAGA_EVENT, "EventType"), |t| t.symbol().into());
    check::<SagaStatus>(symbols(&SAGA_STATE, "SagaStatus"), |t| t.symbol().into());
    check::<StepStatus>(symbols(&SAGA_STATE, "StepStatus"), |t| t.symbol().into());
    check::<AdminAction>(symbols(&ADMIN_COMMAND, "AdminAction"), |t| {
        t.as_str().to_uppercase()
    });
    assert_eq!(
        symbols(&ADMIN_COMMAND, "AdminAction").len(),
        AdminAction::ALL.len()
    );
}
