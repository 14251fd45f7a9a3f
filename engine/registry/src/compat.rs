//! Compatibility rules between a candidate schema and a subject's earlier versions.

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::{error::CompatibilityError, Schema};

use crate::model::CompatibilityLevel;

/// Checks `candidate` against `previous` (live versions, oldest first) under `level`.
///
/// Returns one human-readable message per failed check; an empty list means compatible.
/// Non-transitive levels only look at the last entry of `previous`.
pub(crate) fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    previous: &[(u32, &Schema)],
) -> Vec<String> {
    if level == CompatibilityLevel::None {
        return Vec::new();
    }
    let targets = if level.is_transitive() {
        previous
    } else {
        &previous[previous.len().saturating_sub(1)..]
    };
    let mut messages = Vec::new();
    for (version, old) in targets {
        if level.checks_backward() {
            if let Some(why) = can_read(old, candidate) {
                messages.push(format!(
                    "the new schema cannot read data written with version {version}: {why}"
                ));
            }
        }
        if level.checks_forward() {
            if let Some(why) = can_read(candidate, old) {
                messages.push(format!(
                    "version {version} cannot read data written with the new schema: {why}"
                ));
            }
        }
    }
    messages
}

/// `None` when every value written with `writer` can be read with `reader`, else why not.
///
/// apache-avro's `Partial` result (some values readable, e.g. a missing enum symbol) counts
/// as incompatible: a registry must guarantee that every record stays readable.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some(
            "only some values can be read: the writer's enum symbols or union branches are \
             not all known to the reader; add them to the reader (or give its enum a default)"
                .to_owned(),
        ),
        Err(e) => Some(describe(&e)),
    }
}

/// Describes a compatibility error with the field path and a hint, without the huge
/// `Debug` dumps that apache-avro puts into some of its messages.
fn describe(error: &CompatibilityError) -> String {
    let mut path = Vec::new();
    let mut leaf = error;
    while let CompatibilityError::FieldTypeMismatch(field, inner) = leaf {
        path.push(field.as_str());
        leaf = inner;
    }
    let detail = match leaf {
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => format!(
            "the writer's type {} cannot be read as {}",
            kind(writer_schema_type),
            kind(reader_schema_type)
        ),
        CompatibilityError::MissingDefaultValue(field) => format!(
            "field '{field}' is missing from the writer's schema and has no default in the \
             reader's schema; give it a default value"
        ),
        CompatibilityError::MissingSymbols => {
            "the reader's enum has none of the writer's symbols".to_owned()
        }
        CompatibilityError::MissingUnionElements
        | CompatibilityError::SchemaMismatchAllUnionElements => {
            "no branch of the reader's union can read the writer's type".to_owned()
        }
        CompatibilityError::NameMismatch {
            writer_name,
            reader_name,
        } => format!(
            "the writer's named type '{writer_name}' cannot be read as '{reader_name}'; named \
             types must keep their name"
        ),
        other => other.to_string(),
    };
    if path.is_empty() {
        detail
    } else {
        format!("field '{}': {detail}", path.join("."))
    }
}

/// The variant name at the start of a schema's `Debug` output, e.g. `Record` or `Long`.
fn kind(debug: &str) -> &str {
    let end = debug
        .find(|c: char| !c.is_alphanumeric() && c != '_')
        .unwrap_or(debug.len());
    &debug[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse_str(json).unwrap()
    }

    /// v1: `{id: long}`.
    fn v1() -> Schema {
        schema(r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"}]}"#)
    }

    /// v1 plus an optional field: backward and forward compatible with v1.
    fn with_optional() -> Schema {
        schema(
            r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"},
                {"name":"note","type":["null","string"],"default":null}]}"#,
        )
    }

    /// v1 plus a required field: forward compatible only (old readers ignore it).
    fn with_required() -> Schema {
        schema(
            r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"},
                {"name":"amount","type":"int"}]}"#,
        )
    }

    /// v1 without `id`: backward compatible only (new readers ignore it).
    fn empty() -> Schema {
        schema(r#"{"type":"record","name":"R","fields":[]}"#)
    }

    /// `id` as a string: incompatible both ways.
    fn id_as_string() -> Schema {
        schema(r#"{"type":"record","name":"R","fields":[{"name":"id","type":"string"}]}"#)
    }

    fn ok(level: CompatibilityLevel, candidate: &Schema, previous: &[&Schema]) -> bool {
        let previous: Vec<(u32, &Schema)> = previous
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32 + 1, *s))
            .collect();
        check(level, candidate, &previous).is_empty()
    }

    #[test]
    fn none_accepts_anything() {
        assert!(ok(CompatibilityLevel::None, &id_as_string(), &[&v1()]));
    }

    #[test]
    fn nothing_to_compare_with_is_compatible() {
        for level in CompatibilityLevel::ALL {
            assert!(ok(level, &id_as_string(), &[]), "{level}");
        }
    }

    #[test]
    fn backward_needs_defaults_for_new_fields() {
        use CompatibilityLevel::Backward;
        assert!(ok(Backward, &with_optional(), &[&v1()]));
        assert!(ok(Backward, &empty(), &[&v1()]));
        assert!(!ok(Backward, &with_required(), &[&v1()]));
        assert!(!ok(Backward, &id_as_string(), &[&v1()]));
    }

    #[test]
    fn forward_needs_old_readers_to_cope() {
        use CompatibilityLevel::Forward;
        assert!(ok(Forward, &with_optional(), &[&v1()]));
        assert!(ok(Forward, &with_required(), &[&v1()]));
        assert!(!ok(Forward, &empty(), &[&v1()]));
        assert!(!ok(Forward, &id_as_string(), &[&v1()]));
    }

    #[test]
    fn full_needs_both_directions() {
        use CompatibilityLevel::Full;
        assert!(ok(Full, &with_optional(), &[&v1()]));
        assert!(!ok(Full, &with_required(), &[&v1()]));
        assert!(!ok(Full, &empty(), &[&v1()]));
    }

    #[test]
    fn transitive_levels_check_every_version_plain_ones_only_the_latest() {
        use CompatibilityLevel::*;
        // History: v1 {id: long}, v2 {}.
        // {id: string = ""} reads v2 data (default fills id) but not v1's long id.
        let candidate = schema(
            r#"{"type":"record","name":"R","fields":[{"name":"id","type":"string","default":""}]}"#,
        );
        assert!(ok(Backward, &candidate, &[&v1(), &empty()]));
        assert!(!ok(BackwardTransitive, &candidate, &[&v1(), &empty()]));

        // v2 {} reads data written with {}, but v1 needs an id.
        let candidate = empty();
        assert!(ok(Forward, &candidate, &[&v1(), &empty()]));
        assert!(!ok(ForwardTransitive, &candidate, &[&v1(), &empty()]));

        let candidate = with_optional();
        assert!(ok(FullTransitive, &candidate, &[&v1(), &with_optional()]));
        assert!(ok(Full, &empty(), &[&v1(), &empty()]));
        assert!(!ok(FullTransitive, &empty(), &[&v1(), &empty()]));
    }

    #[test]
    fn type_promotion_is_backward_only() {
        let int = schema(r#"{"type":"record","name":"R","fields":[{"name":"n","type":"int"}]}"#);
        let long = schema(r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#);
        assert!(ok(CompatibilityLevel::Backward, &long, &[&int]));
        assert!(!ok(CompatibilityLevel::Forward, &long, &[&int]));
    }

    #[test]
    fn removed_enum_symbols_are_incompatible_even_if_some_values_still_read() {
        let abc = schema(r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#);
        let ab = schema(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
        let ab_default = schema(r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#);
        let messages = check(CompatibilityLevel::Backward, &ab, &[(1, &abc)]);
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("only some values"), "{messages:?}");
        assert!(ok(CompatibilityLevel::Backward, &ab_default, &[&abc]));
        assert!(ok(CompatibilityLevel::Backward, &abc, &[&ab]));
    }

    #[test]
    fn messages_name_the_field_and_the_fix() {
        let messages = check(
            CompatibilityLevel::Backward,
            &with_required(),
            &[(1, &v1())],
        );
        assert_eq!(
            messages,
            vec![
                "the new schema cannot read data written with version 1: field 'amount' is \
                 missing from the writer's schema and has no default in the reader's schema; \
                 give it a default value"
                    .to_owned()
            ]
        );
        let messages = check(CompatibilityLevel::Full, &id_as_string(), &[(3, &v1())]);
        assert_eq!(messages.len(), 2);
        assert!(
            messages[0].contains("field 'id': the writer's type Long cannot be read as String"),
            "{messages:?}"
        );
        assert!(
            messages[1].starts_with("version 3 cannot read"),
            "{messages:?}"
        );
    }
}
