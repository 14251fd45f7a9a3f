//! Parsing submitted schemas into a form that can be compared and checked.

use apache_avro::Schema;

use crate::error::Error;
use crate::model::{SchemaReference, AVRO};

/// A parsed Avro schema with the two views the registry needs.
#[derive(Debug, Clone)]
pub(crate) struct ParsedSchema {
    /// Self-contained form, with referenced types inlined, for compatibility checks.
    pub(crate) resolved: Schema,
    /// Identity of the schema: its normalized JSON plus its references.
    ///
    /// Whitespace and attribute order do not matter; defaults, docs and aliases do, because
    /// they change how data is resolved (this matches Confluent, which compares the schema's
    /// full JSON form rather than Avro's stripped Parsing Canonical Form).
    pub(crate) fingerprint: String,
}

/// Checks the schema type a client asked for; only Avro is served.
pub(crate) fn check_schema_type(schema_type: &str) -> Result<(), Error> {
    if schema_type.eq_ignore_ascii_case(AVRO) {
        Ok(())
    } else {
        Err(Error::InvalidSchema {
            reason: format!(
                "schema type '{schema_type}' is not supported by this registry; only AVRO is \
                 (omit \"schemaType\" or set it to \"AVRO\")"
            ),
        })
    }
}

/// Parses `text`, resolving named types from `imported` (the texts of every schema reached
/// through `references`, in any order).
pub(crate) fn parse(
    text: &str,
    references: &[SchemaReference],
    imported: &[String],
) -> Result<ParsedSchema, Error> {
    if text.trim().is_empty() {
        return Err(Error::InvalidSchema {
            reason: "the \"schema\" field is empty; it must hold the Avro schema as a JSON \
                     string, e.g. \"{\\\"type\\\":\\\"string\\\"}\""
                .to_owned(),
        });
    }
    let invalid = |e: apache_avro::Error| Error::InvalidSchema {
        reason: format!("{e}. Fix the Avro schema JSON and submit it again"),
    };
    let (schema, resolved) = if imported.is_empty() {
        let schema = Schema::parse_str(text).map_err(invalid)?;
        (schema.clone(), schema)
    } else {
        let (schema, schemata) = Schema::parse_str_with_list(text, imported).map_err(invalid)?;
        let mut resolved = schema.clone();
        resolved.denormalize(&schemata).map_err(invalid)?;
        (schema, resolved)
    };
    let normalized = serde_json::to_string(&schema).map_err(|e| Error::InvalidSchema {
        reason: format!("the schema cannot be normalized: {e}"),
    })?;
    let fingerprint = if references.is_empty() {
        normalized
    } else {
        let refs = serde_json::to_string(references).map_err(|e| Error::InvalidSchema {
            reason: format!("the references cannot be normalized: {e}"),
        })?;
        format!("{normalized}|{refs}")
    };
    Ok(ParsedSchema {
        resolved,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_and_attribute_order_do_not_change_the_fingerprint() {
        let a = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            &[],
            &[],
        )
        .unwrap();
        let b = parse(
            r#"{ "fields": [ {"type": "int", "name": "a"} ],
                 "name": "R", "type": "record" }"#,
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn a_new_default_changes_the_fingerprint() {
        let a = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#,
            &[],
            &[],
        )
        .unwrap();
        let b = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":1}]}"#,
            &[],
            &[],
        )
        .unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn invalid_schemas_report_the_parser_error() {
        let err = parse(r#"{"type":"record","fields":[]}"#, &[], &[]).unwrap_err();
        assert_eq!(err.error_code(), 42201);
        assert!(err.to_string().contains("name"), "{err}");
        let err = parse("   ", &[], &[]).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = parse("{not json", &[], &[]).unwrap_err();
        assert_eq!(err.error_code(), 42201);
    }

    #[test]
    fn references_are_inlined_for_checks() {
        let address = r#"{"type":"record","name":"Address","namespace":"acme","fields":[{"name":"city","type":"string"}]}"#;
        let refs = vec![SchemaReference {
            name: "acme.Address".into(),
            subject: "address".into(),
            version: 1,
        }];
        let parsed = parse(
            r#"{"type":"record","name":"Customer","namespace":"acme","fields":[{"name":"home","type":"Address"}]}"#,
            &refs,
            &[address.to_owned()],
        )
        .unwrap();
        let json = serde_json::to_string(&parsed.resolved).unwrap();
        assert!(json.contains("city"), "{json}");
        assert!(parsed.fingerprint.contains("address"));
    }

    #[test]
    fn only_avro_is_served() {
        check_schema_type("avro").unwrap();
        let err = check_schema_type("PROTOBUF").unwrap_err();
        assert_eq!(err.error_code(), 42201);
        assert!(err.to_string().contains("only AVRO"));
    }
}
