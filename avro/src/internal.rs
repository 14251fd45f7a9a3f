//! The engine's own records (journal, changelog, correlations) in Avro single-object encoding:
//! `C3 01`, the 8-byte CRC-64-AVRO fingerprint of the writer's schema, then the body.
//!
//! They decode with the schemas compiled into the engine, never through the registry, so an
//! engine restores its partitions while the registry is down. The registry is for the public
//! contracts, which other teams' code reads. A schema change of an internal record must keep
//! the old version readable: `avro/schemas/history/` holds every committed version written in
//! this encoding, and `tests/contracts.rs` fails if one is missing.
//!
//! Records written before this encoding carry the Confluent header (magic byte 0) and still
//! decode through the registry.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::rabin::Rabin;
use apache_avro::Schema;

use crate::codec::decode_body;
use crate::contracts::Contract;
use crate::error::{Error, Result};
use crate::schemas::{self, SchemaFile};

/// The single-object encoding's marker.
const MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// A record only the engine reads and writes.
pub trait Internal: Contract {}

impl Internal for crate::SagaState {}
impl Internal for crate::JournalRecord {}
impl Internal for crate::Checkpoint {}
impl Internal for crate::ChangelogBatch {}
impl Internal for crate::Parked {}
impl Internal for crate::Correlation {}

/// The fingerprint single-object encoding puts in its header.
pub fn fingerprint(schema: &Schema) -> [u8; 8] {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

/// Encodes an internal record with its compiled-in schema.
pub fn encode<T: Internal>(value: &T) -> Result<Vec<u8>> {
    let encode_error = |e: apache_avro::Error| Error::Encode {
        record: T::SCHEMA.full_name,
        message: e.to_string(),
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&T::SCHEMA.fingerprint()?);
    // Serde straight into the writer: no intermediate `Value` to build and resolve (the
    // contracts test checks that the bytes are those of the generic path).
    let _ = T::SCHEMA
        .writer()?
        .write_ser(&mut out, value)
        .map_err(encode_error)?;
    Ok(out)
}

/// Decodes `bytes` if they are in single-object encoding; `None` if they are not (a record
/// with the Confluent header, for the registry to decode).
pub fn decode<T: Contract>(bytes: &[u8]) -> Option<Result<T>> {
    if !bytes.starts_with(&MARKER) {
        return None;
    }
    let expected = T::SCHEMA.full_name;
    let Some(print) = bytes.get(2..HEADER_LEN) else {
        return Some(Err(Error::Decode {
            expected,
            message: "a single-object record shorter than its header".into(),
        }));
    };
    Some(decode_with(T::SCHEMA, print, &bytes[HEADER_LEN..]))
}

fn decode_with<T: Contract>(file: &'static SchemaFile, print: &[u8], body: &[u8]) -> Result<T> {
    if file.fingerprint()? == print {
        // Written with this very schema: straight into `T`, nothing to resolve.
        let mut body = body;
        return file
            .reader()?
            .read_deser(&mut body)
            .map_err(|e| Error::Decode {
                expected: file.full_name,
                message: e.to_string(),
            });
    }
    decode_body(older_schema(file, print)?, body)
}

/// The older version of `file`'s schema that `print` names, from the history.
fn older_schema(file: &'static SchemaFile, print: &[u8]) -> Result<&'static Schema> {
    history()?
        .get(&(file.full_name, print.to_vec()))
        .ok_or_else(|| Error::Decode {
            expected: file.full_name,
            message: format!(
                "written with a version of its schema this engine does not know (fingerprint {}); was it written by a newer Sagaflow? Upgrade this engine",
                hex(print)
            ),
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Older versions of the internal schemas, by full name and fingerprint.
fn history() -> Result<&'static HashMap<(&'static str, Vec<u8>), Schema>> {
    static HISTORY: OnceLock<HashMap<(&'static str, Vec<u8>), Schema>> = OnceLock::new();
    if let Some(h) = HISTORY.get() {
        return Ok(h);
    }
    let mut map = HashMap::new();
    for (file, text) in schemas::HISTORY {
        let schema = Schema::parse_str(text).map_err(|source| Error::Schema {
            name: file.file,
            source,
        })?;
        let _ = map.insert((file.full_name, fingerprint(&schema).to_vec()), schema);
    }
    Ok(HISTORY.get_or_init(|| map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Checkpoint, CheckpointPosition};

    #[test]
    fn an_internal_record_round_trips_without_a_registry() {
        let cp = Checkpoint {
            journal_offset: 41,
            epoch: 3,
            writer: "node-a".into(),
            positions: vec![CheckpointPosition {
                topic: "g.starts".into(),
                offset: 7,
            }],
            relayed_through: 40,
        };
        let bytes = encode(&cp).unwrap();
        assert_eq!(&bytes[..2], &MARKER);
        assert_eq!(decode::<Checkpoint>(&bytes).unwrap().unwrap(), cp);
        // Confluent-framed bytes are not ours to decode.
        assert!(decode::<Checkpoint>(&[0, 0, 0, 0, 1, 2]).is_none());
    }

    #[test]
    fn an_unknown_schema_version_is_named_not_misread() {
        let mut bytes = encode(&Checkpoint {
            journal_offset: 1,
            epoch: 1,
            writer: "w".into(),
            positions: vec![],
            relayed_through: -1,
        })
        .unwrap();
        bytes[2] ^= 0xFF;
        let error = decode::<Checkpoint>(&bytes).unwrap().unwrap_err();
        assert!(error.to_string().contains("Upgrade this engine"), "{error}");
        let error = decode::<Checkpoint>(&MARKER).unwrap().unwrap_err();
        assert!(
            error.to_string().contains("shorter than its header"),
            "{error}"
        );
    }
}
