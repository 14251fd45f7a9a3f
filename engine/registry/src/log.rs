//! Records of the `_schemas` topic, in Confluent's JSON key/value layout.
//!
//! Every key is unique per fact (a subject version, a config, a subject deletion), so the
//! topic can be compacted: the last record of a key is the truth, a null value deletes it.

use serde::{Deserialize, Serialize};

use crate::model::{CompatibilityLevel, SchemaReference, AVRO};

/// One mutation of the registry, as stored in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A subject version: registered, soft-deleted (`deleted`), or hard-deleted (`None`).
    Schema {
        subject: String,
        version: u32,
        value: Option<SchemaValue>,
    },
    /// A compatibility level for one subject, or the global one (`subject: None`);
    /// `None` value removes it.
    Config {
        subject: Option<String>,
        value: Option<ConfigValue>,
    },
    /// Soft deletion of every version of a subject up to `version`.
    DeleteSubject {
        subject: String,
        value: Option<DeleteSubjectValue>,
    },
}

/// The value of a `SCHEMA` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaValue {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
    #[serde(default = "avro", skip_serializing_if = "is_avro")]
    pub(crate) schema_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) references: Vec<SchemaReference>,
    #[serde(default)]
    pub(crate) deleted: bool,
}

/// The value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigValue {
    pub(crate) compatibility_level: CompatibilityLevel,
}

/// The value of a `DELETE_SUBJECT` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeleteSubjectValue {
    pub(crate) subject: String,
    pub(crate) version: u32,
}

fn avro() -> String {
    AVRO.to_owned()
}

fn is_avro(schema_type: &str) -> bool {
    schema_type == AVRO
}

/// The key of a record; `Other` covers key types written by Confluent that we do not use
/// (`NOOP`, `MODE`, `CONTEXT`, ...).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
enum Key {
    Schema {
        subject: String,
        version: u32,
        #[serde(default)]
        magic: u8,
    },
    Config {
        subject: Option<String>,
        #[serde(default)]
        magic: u8,
    },
    DeleteSubject {
        subject: String,
        #[serde(default)]
        magic: u8,
    },
    #[serde(other)]
    Other,
}

impl Record {
    /// The record's key and value bytes (`None` is a tombstone).
    pub(crate) fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = match self {
            Record::Schema {
                subject, version, ..
            } => Key::Schema {
                subject: subject.clone(),
                version: *version,
                magic: 1,
            },
            Record::Config { subject, .. } => Key::Config {
                subject: subject.clone(),
                magic: 0,
            },
            Record::DeleteSubject { subject, .. } => Key::DeleteSubject {
                subject: subject.clone(),
                magic: 0,
            },
        };
        let value = match self {
            Record::Schema { value, .. } => value.as_ref().map(to_json),
            Record::Config { value, .. } => value.as_ref().map(to_json),
            Record::DeleteSubject { value, .. } => value.as_ref().map(to_json),
        };
        (to_json(&key), value)
    }

    /// Decodes a record; `Ok(None)` for key types this registry does not use.
    pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<Record>, String> {
        let key: Key = serde_json::from_slice(key).map_err(|e| {
            format!(
                "the key is not a schema registry key ({e}): {}",
                String::from_utf8_lossy(key)
            )
        })?;
        fn parse<T: for<'de> Deserialize<'de>>(value: Option<&[u8]>) -> Result<Option<T>, String> {
            value
                .map(|bytes| {
                    serde_json::from_slice(bytes).map_err(|e| {
                        format!(
                            "the value does not match its key type ({e}): {}",
                            String::from_utf8_lossy(bytes)
                        )
                    })
                })
                .transpose()
        }
        Ok(Some(match key {
            Key::Schema {
                subject, version, ..
            } => Record::Schema {
                subject,
                version,
                value: parse(value)?,
            },
            Key::Config { subject, .. } => Record::Config {
                subject,
                value: parse(value)?,
            },
            Key::DeleteSubject { subject, .. } => Record::DeleteSubject {
                subject,
                value: parse(value)?,
            },
            Key::Other => return Ok(None),
        }))
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: all map keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_confluents_layout() {
        let record = Record::Schema {
            subject: "orders-value".into(),
            version: 2,
            value: Some(SchemaValue {
                subject: "orders-value".into(),
                version: 2,
                id: 7,
                schema: "\"string\"".into(),
                schema_type: AVRO.into(),
                references: vec![],
                deleted: false,
            }),
        };
        let (key, value) = record.encode();
        assert_eq!(
            String::from_utf8(key.clone()).unwrap(),
            r#"{"keytype":"SCHEMA","subject":"orders-value","version":2,"magic":1}"#
        );
        assert_eq!(
            String::from_utf8(value.clone().unwrap()).unwrap(),
            r#"{"subject":"orders-value","version":2,"id":7,"schema":"\"string\"","deleted":false}"#
        );
        assert_eq!(
            Record::decode(&key, value.as_deref()).unwrap(),
            Some(record)
        );

        let global = Record::Config {
            subject: None,
            value: Some(ConfigValue {
                compatibility_level: CompatibilityLevel::Full,
            }),
        };
        let (key, value) = global.encode();
        assert_eq!(
            String::from_utf8(key.clone()).unwrap(),
            r#"{"keytype":"CONFIG","subject":null,"magic":0}"#
        );
        assert_eq!(
            String::from_utf8(value.clone().unwrap()).unwrap(),
            r#"{"compatibilityLevel":"FULL"}"#
        );
        assert_eq!(
            Record::decode(&key, value.as_deref()).unwrap(),
            Some(global)
        );
    }

    #[test]
    fn tombstones_and_foreign_key_types_decode() {
        let tombstone = Record::Schema {
            subject: "s".into(),
            version: 1,
            value: None,
        };
        let (key, value) = tombstone.encode();
        assert_eq!(value, None);
        assert_eq!(Record::decode(&key, None).unwrap(), Some(tombstone));
        assert_eq!(
            Record::decode(br#"{"keytype":"NOOP","magic":0}"#, None).unwrap(),
            None
        );
    }

    #[test]
    fn garbage_is_reported() {
        let err = Record::decode(b"hello", Some(b"x")).unwrap_err();
        assert!(err.contains("not a schema registry key"), "{err}");
        let err = Record::decode(
            br#"{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}"#,
            Some(b"{}"),
        )
        .unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}
