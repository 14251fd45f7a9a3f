//! State transitions, without Kafka: plan, "write" to an in-memory log, apply.

use super::*;

const V1: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"}]}"#;
const V1_REFORMATTED: &str = r#"{ "name": "Order", "type": "record",
    "fields": [ { "type": "long", "name": "id" } ] }"#;
const V2_OPTIONAL: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},
    {"name":"note","type":["null","string"],"default":null}]}"#;
const V2_REQUIRED: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"long"},
    {"name":"amount","type":"int"}]}"#;
const ADDRESS: &str = r#"{"type":"record","name":"Address","namespace":"acme",
    "fields":[{"name":"city","type":"string"}]}"#;
const CUSTOMER: &str = r#"{"type":"record","name":"Customer","namespace":"acme",
    "fields":[{"name":"home","type":"Address"}]}"#;

/// A state plus the log of every record written, like the `_schemas` topic.
#[derive(Default)]
struct Registry {
    state: State,
    log: Vec<Record>,
}

impl Registry {
    fn commit(&mut self, records: Vec<Record>) {
        for record in records {
            self.state.apply(&record);
            self.log.push(record);
        }
        self.state.parse_pending();
    }

    fn register(&mut self, subject: &str, schema: &str) -> Result<(u32, u32)> {
        self.register_with(subject, schema, vec![])
    }

    fn register_with(
        &mut self,
        subject: &str,
        schema: &str,
        references: Vec<SchemaReference>,
    ) -> Result<(u32, u32)> {
        match self
            .state
            .plan_register(subject, &avro(schema, references))?
        {
            Registration::Existing { id, version } => Ok((id, version)),
            Registration::New {
                id,
                version,
                record,
            } => {
                self.commit(vec![record]);
                Ok((id, version))
            }
        }
    }

    fn set_level(&mut self, subject: Option<&str>, level: CompatibilityLevel) {
        self.commit(vec![State::plan_set_level(subject, level)]);
    }

    fn delete_subject(&mut self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let (records, versions) = self.state.plan_delete_subject(subject, permanent)?;
        self.commit(records);
        Ok(versions)
    }

    fn delete_version(&mut self, subject: &str, version: u32, permanent: bool) -> Result<u32> {
        let (record, version) =
            self.state
                .plan_delete_version(subject, VersionSelector::Number(version), permanent)?;
        self.commit(vec![record]);
        Ok(version)
    }

    /// A fresh state rebuilt from the log, as after a restart.
    fn restored(&self) -> State {
        let mut state = State::default();
        for record in &self.log {
            state.apply(record);
        }
        state.parse_pending();
        state
    }
}

fn avro(schema: &str, references: Vec<SchemaReference>) -> NewSchema {
    NewSchema {
        schema: schema.to_owned(),
        schema_type: "AVRO".to_owned(),
        references,
    }
}

fn code<T: std::fmt::Debug>(result: Result<T>) -> u32 {
    result.unwrap_err().error_code()
}

fn all() -> Listing {
    Listing {
        deleted: true,
        deleted_only: false,
    }
}

/// Everything a client can observe, to compare a state with its restored copy.
fn snapshot(state: &State) -> Vec<String> {
    let mut out = vec![format!("global={}", state.global_level())];
    for subject in state.subjects(all(), None) {
        out.push(format!(
            "{subject}: level={:?} live={:?} all={:?}",
            state.subject_level(&subject),
            state.versions(&subject, Listing::default()).ok(),
            state.versions(&subject, all()).ok()
        ));
        for version in state.versions(&subject, all()).unwrap_or_default() {
            let v = state
                .version(&subject, VersionSelector::Number(version), true)
                .unwrap();
            out.push(format!(
                "  v{} id={} deleted={} {}",
                v.version, v.id, v.deleted, v.schema
            ));
        }
    }
    out
}

#[test]
fn registering_assigns_ids_and_versions_and_is_idempotent() {
    let mut r = Registry::default();
    assert_eq!(r.register("orders", V1).unwrap(), (1, 1));
    // Same schema, different formatting: same id, no new version, nothing written.
    assert_eq!(r.register("orders", V1_REFORMATTED).unwrap(), (1, 1));
    assert_eq!(r.log.len(), 1);
    assert_eq!(r.register("orders", V2_OPTIONAL).unwrap(), (2, 2));
    // The same schema under another subject reuses the global id.
    assert_eq!(r.register("archive", V1_REFORMATTED).unwrap(), (1, 1));
    // ...and keeps the text first registered for that id.
    assert_eq!(r.state.schema_by_id(1).unwrap().schema, V1);
    assert_eq!(
        r.state.subjects(Listing::default(), None),
        vec!["archive", "orders"]
    );
    assert_eq!(
        r.state.versions("orders", Listing::default()).unwrap(),
        vec![1, 2]
    );
    let latest = r
        .state
        .version("orders", VersionSelector::Latest, false)
        .unwrap();
    assert_eq!((latest.version, latest.id), (2, 2));
    assert_eq!(
        r.state.usages(1, false).unwrap(),
        vec![("archive".to_owned(), 1), ("orders".to_owned(), 1)]
    );
}

#[test]
fn unknown_things_have_confluent_codes() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    assert_eq!(code(r.state.versions("nope", Listing::default())), 40401);
    assert_eq!(
        code(r.state.version("orders", VersionSelector::Number(9), false)),
        40402
    );
    assert_eq!(code(r.state.schema_by_id(42)), 40403);
    assert_eq!(
        code(r.state.lookup("orders", &avro(V2_OPTIONAL, vec![]), false)),
        40403
    );
    assert_eq!(
        code(r.state.lookup("nope", &avro(V1, vec![]), false)),
        40401
    );
    assert_eq!(code(r.register("orders", r#"{"type":"record"}"#)), 42201);
    assert_eq!(code(r.state.plan_delete_level(Some("orders"))), 40408);
    let found = r
        .state
        .lookup("orders", &avro(V1_REFORMATTED, vec![]), false)
        .unwrap();
    assert_eq!((found.version, found.id), (1, 1));
}

#[test]
fn incompatible_schemas_are_rejected_until_the_level_allows_them() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    let err = r.register("orders", V2_REQUIRED).unwrap_err();
    assert_eq!(err.error_code(), 409);
    assert!(err.to_string().contains("'amount'"), "{err}");
    assert_eq!(r.log.len(), 1, "a rejected schema writes nothing");

    // FORWARD accepts a new required field (old readers ignore it).
    r.set_level(Some("orders"), CompatibilityLevel::Forward);
    assert_eq!(r.register("orders", V2_REQUIRED).unwrap(), (2, 2));
    // Other subjects still use the global BACKWARD level.
    r.register("payments", V1).unwrap();
    assert_eq!(code(r.register("payments", V2_REQUIRED)), 409);
    r.set_level(None, CompatibilityLevel::None);
    assert_eq!(r.register("payments", V2_REQUIRED).unwrap(), (2, 2));
    assert_eq!(
        r.state.effective_level("orders"),
        CompatibilityLevel::Forward
    );
    assert_eq!(
        r.state.effective_level("payments"),
        CompatibilityLevel::None
    );
}

#[test]
fn compatibility_tests_pick_versions_like_confluent() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    let check = |state: &State, selector| {
        state
            .test_compatibility("orders", selector, &avro(V2_REQUIRED, vec![]))
            .map(|(_, messages)| messages.is_empty())
    };
    assert!(!check(&r.state, None).unwrap());
    assert!(!check(&r.state, Some(VersionSelector::Latest)).unwrap());
    assert!(!check(&r.state, Some(VersionSelector::Number(1))).unwrap());
    assert_eq!(
        code(check(&r.state, Some(VersionSelector::Number(2)))),
        40402
    );
    let (_, messages) = r
        .state
        .test_compatibility("fresh", Some(VersionSelector::Latest), &avro(V1, vec![]))
        .unwrap();
    assert!(messages.is_empty(), "nothing to be incompatible with");
    assert_eq!(
        code(r.state.test_compatibility(
            "fresh",
            Some(VersionSelector::Number(1)),
            &avro(V1, vec![])
        )),
        40401
    );
}

#[test]
fn soft_then_hard_deleting_a_subject() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    r.register("orders", V2_OPTIONAL).unwrap();
    r.set_level(Some("orders"), CompatibilityLevel::Full);
    assert_eq!(code(r.delete_subject("orders", true)), 40405);
    assert_eq!(r.delete_subject("orders", false).unwrap(), vec![1, 2]);
    assert_eq!(code(r.delete_subject("orders", false)), 40404);
    assert!(r.state.subjects(Listing::default(), None).is_empty());
    assert_eq!(r.state.subjects(all(), None), vec!["orders"]);
    assert_eq!(code(r.state.versions("orders", Listing::default())), 40401);
    assert_eq!(r.state.versions("orders", all()).unwrap(), vec![1, 2]);
    assert_eq!(
        r.state.subject_level("orders"),
        None,
        "soft delete drops the level"
    );
    // Ids stay resolvable for consumers of old records.
    assert_eq!(r.state.schema_by_id(1).unwrap().schema, V1);

    // Registering again continues the version numbers and reuses the id.
    assert_eq!(r.register("orders", V1).unwrap(), (1, 3));
    assert_eq!(r.delete_subject("orders", false).unwrap(), vec![3]);
    assert_eq!(r.delete_subject("orders", true).unwrap(), vec![1, 2, 3]);
    assert_eq!(code(r.state.versions("orders", all())), 40401);
    assert_eq!(code(r.state.schema_by_id(1)), 40403);

    // Ids of hard-deleted schemas are not handed out again.
    assert_eq!(r.register("orders", V2_REQUIRED).unwrap(), (3, 1));
    assert_eq!(snapshot(&r.restored()), snapshot(&r.state));
}

#[test]
fn deleting_single_versions() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    r.register("orders", V2_OPTIONAL).unwrap();
    assert_eq!(code(r.delete_version("orders", 3, false)), 40402);
    assert_eq!(code(r.delete_version("nope", 1, false)), 40401);
    assert_eq!(code(r.delete_version("orders", 2, true)), 40407);
    assert_eq!(r.delete_version("orders", 2, false).unwrap(), 2);
    assert_eq!(code(r.delete_version("orders", 2, false)), 40406);
    let latest = r
        .state
        .version("orders", VersionSelector::Latest, false)
        .unwrap();
    assert_eq!(latest.version, 1);
    assert_eq!(
        code(r.state.version("orders", VersionSelector::Number(2), false)),
        40402
    );
    assert!(
        r.state
            .version("orders", VersionSelector::Number(2), true)
            .unwrap()
            .deleted
    );
    assert_eq!(r.delete_version("orders", 2, true).unwrap(), 2);
    assert_eq!(r.state.versions("orders", all()).unwrap(), vec![1]);
    // The hard-deleted schema's id is not reused; its version number is free again.
    assert_eq!(r.register("orders", V2_OPTIONAL).unwrap(), (3, 2));
    assert_eq!(snapshot(&r.restored()), snapshot(&r.state));
}

#[test]
fn config_records_set_and_reset_levels() {
    let mut r = Registry::default();
    assert_eq!(r.state.global_level(), CompatibilityLevel::Backward);
    r.set_level(None, CompatibilityLevel::FullTransitive);
    r.set_level(Some("orders"), CompatibilityLevel::None);
    assert_eq!(r.state.global_level(), CompatibilityLevel::FullTransitive);
    let (record, previous) = r.state.plan_delete_level(Some("orders")).unwrap();
    assert_eq!(previous, CompatibilityLevel::None);
    r.commit(vec![record]);
    assert_eq!(r.state.subject_level("orders"), None);
    let (record, previous) = r.state.plan_delete_level(None).unwrap();
    assert_eq!(previous, CompatibilityLevel::FullTransitive);
    r.commit(vec![record]);
    assert_eq!(r.state.global_level(), CompatibilityLevel::Backward);
    assert_eq!(snapshot(&r.restored()), snapshot(&r.state));
}

#[test]
fn references_resolve_and_protect_what_they_import() {
    let mut r = Registry::default();
    r.register("address", ADDRESS).unwrap();
    let reference = SchemaReference {
        name: "acme.Address".into(),
        subject: "address".into(),
        version: 1,
    };
    assert_eq!(
        r.register_with("customer", CUSTOMER, vec![reference.clone()])
            .unwrap(),
        (2, 1)
    );
    // Without the reference the type is unknown.
    assert_eq!(code(r.register("other", CUSTOMER)), 42201);
    let missing = SchemaReference {
        version: 7,
        ..reference.clone()
    };
    let err = r
        .register_with("other", CUSTOMER, vec![missing])
        .unwrap_err();
    assert!(err.to_string().contains("version 7"), "{err}");
    assert_eq!(
        r.state
            .referenced_by("address", VersionSelector::Number(1))
            .unwrap(),
        vec![2]
    );
    assert_eq!(code(r.delete_version("address", 1, false)), 42206);
    assert_eq!(code(r.delete_subject("address", false)), 42206);
    let found = r
        .state
        .lookup("customer", &avro(CUSTOMER, vec![reference]), false)
        .unwrap();
    assert_eq!(found.id, 2);
    assert_eq!(snapshot(&r.restored()), snapshot(&r.state));
}

#[test]
fn restore_tolerates_a_compacted_order() {
    // After compaction, the soft-delete of `address` v1 (a later record of the same key)
    // replaces the original registration and comes after its referrer.
    let mut r = Registry::default();
    r.register("address", ADDRESS).unwrap();
    r.register_with(
        "customer",
        CUSTOMER,
        vec![SchemaReference {
            name: "acme.Address".into(),
            subject: "address".into(),
            version: 1,
        }],
    )
    .unwrap();
    let original = r.log.remove(0);
    let Record::Schema {
        subject,
        version,
        value: Some(mut value),
    } = original
    else {
        panic!("expected a schema record");
    };
    value.deleted = true;
    r.log.push(Record::Schema {
        subject,
        version,
        value: Some(value),
    });
    let restored = r.restored();
    let (_, messages) = restored
        .test_compatibility("customer", None, &avro(V1, vec![]))
        .unwrap();
    assert!(!messages.is_empty(), "customer v1 is parsed and compared");
}

#[test]
fn replaying_the_log_rebuilds_the_same_state() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    r.register("orders", V2_OPTIONAL).unwrap();
    r.register("payments", V1).unwrap();
    r.set_level(Some("payments"), CompatibilityLevel::None);
    r.register("payments", V2_REQUIRED).unwrap();
    r.delete_version("orders", 1, false).unwrap();
    r.delete_subject("payments", false).unwrap();
    r.set_level(None, CompatibilityLevel::Forward);
    let restored = r.restored();
    assert_eq!(snapshot(&restored), snapshot(&r.state));
    // Planning on the restored state continues where the original left off.
    let plan = restored
        .plan_register("orders", &avro(V2_REQUIRED, vec![]))
        .unwrap();
    assert_eq!(
        plan,
        r.state
            .plan_register("orders", &avro(V2_REQUIRED, vec![]))
            .unwrap()
    );
    let Registration::New { id, version, .. } = plan else {
        panic!("expected a new version, got {plan:?}");
    };
    // The soft-deleted payments v2 still owns V2_REQUIRED's id, so it is reused.
    assert_eq!((id, version), (3, 3));
}

#[test]
fn records_of_the_log_round_trip_through_bytes() {
    let mut r = Registry::default();
    r.register("orders", V1).unwrap();
    r.set_level(None, CompatibilityLevel::Full);
    r.delete_subject("orders", false).unwrap();
    r.delete_subject("orders", true).unwrap();
    for record in &r.log {
        let (key, value) = record.encode();
        assert_eq!(
            Record::decode(&key, value.as_deref()).unwrap().as_ref(),
            Some(record)
        );
    }
}

#[test]
fn unsupported_schema_types_are_invalid() {
    let r = Registry::default();
    let mut new = avro(V1, vec![]);
    new.schema_type = "PROTOBUF".into();
    assert_eq!(code(r.state.plan_register("orders", &new)), 42201);
}
