//! Confluent wire-format encoding through a Schema Registry.
//!
//! Encoders register the embedded schema under its subject the first time they see it, so a
//! fresh registry needs no separate setup step; decoders resolve the writer's schema (by the id in
//! the record) to the embedded reader schema, so older and newer compatible writers both decode.

use std::collections::HashMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::Schema;
use schema_registry_converter::avro_common::get_supplied_schema;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SubjectNameStrategy, SuppliedSchema};
use schema_registry_converter::{async_impl, blocking};

use crate::contracts::Contract;
use crate::error::{Error, Result};
use crate::registry::RegistrySettings;
use crate::schemas;

/// How a record's registry subject is named.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// `<topic>-value`: one record type per topic (starts, commands, replies, events, signals).
    /// The engine's own records need no subject: see [`crate::internal`].
    Topic(&'a str),
}

/// Precomputed supplied schemas, so encoding does not recompute canonical forms.
#[derive(Debug)]
struct Supplied(HashMap<&'static str, SuppliedSchema>);

impl Supplied {
    fn new() -> Result<Self> {
        let mut map = HashMap::new();
        for file in schemas::ALL {
            let _ = map.insert(file.full_name, get_supplied_schema(file.schema()?));
        }
        Ok(Self(map))
    }

    fn strategy<T: Contract>(&self, subject: Subject<'_>) -> SubjectNameStrategy {
        let supplied = self.0[T::SCHEMA.full_name].clone();
        match subject {
            Subject::Topic(topic) => {
                SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_string(), false, supplied)
            }
        }
    }
}

/// Whether the registry may answer differently later: the converter flags network errors and
/// HTTP 502/503 as retriable, but a registry whose own store is down (a Confluent registry
/// without Kafka, or ours) answers 500 with error code 50001-50003, which it flags as final.
fn is_outage(e: &SRCError) -> bool {
    e.retriable
        || e.cause
            .as_deref()
            .into_iter()
            .chain([e.error.as_str()])
            .any(|text| text.contains("failed with status 5"))
}

fn registry_error(subject: Subject<'_>, e: SRCError) -> Error {
    let Subject::Topic(topic) = subject;
    let subject = format!("{topic}-value");
    let outage = is_outage(&e);
    let message = match e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error,
    };
    if outage {
        return Error::RegistryUnavailable {
            what: format!("registering subject {subject}"),
            message,
        };
    }
    Error::Registry { subject, message }
}

fn from_writer_value<T: Contract>(value: Value) -> Result<T> {
    let expected = T::SCHEMA.full_name;
    let reader = T::SCHEMA.schema()?;
    let resolved = value.resolve(reader).map_err(|e| Error::Decode {
        expected,
        message: format!("writer schema does not resolve to the reader schema: {e}"),
    })?;
    apache_avro::from_value::<T>(&resolved).map_err(|e| Error::Decode {
        expected,
        message: e.to_string(),
    })
}

/// Decodes the Avro body of a record written with `writer` (the bytes after the wire-format
/// header) into `T`: what a codec does once the registry has named the writer's schema.
///
/// The codecs leave reading the body to the registry client, which keeps each writer's resolved
/// schema across records; it reads it exactly as here, and both end in the same resolution to
/// `T`'s schema. This one needs no registry, so tests and the fuzz targets can call it.
pub fn decode_body<T: Contract>(writer: &Schema, body: &[u8]) -> Result<T> {
    let mut reader = body;
    let value = GenericDatumReader::builder(writer)
        .build()
        .and_then(|datum| datum.read_value(&mut reader))
        .map_err(|e| Error::Decode {
            expected: T::SCHEMA.full_name,
            message: format!("Could not transform bytes using schema: {e}"),
        })?;
    from_writer_value(value)
}

fn decode_error(expected: &'static str, bytes: &[u8], e: SRCError) -> Error {
    let outage = is_outage(&e);
    let message = match e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error,
    };
    if outage {
        let id = bytes
            .get(1..5)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        return Error::RegistryUnavailable {
            what: format!("looking up schema id {id} for {expected}"),
            message,
        };
    }
    Error::Decode { expected, message }
}

fn check_not_empty(expected: &'static str, bytes: &[u8]) -> Result<()> {
    // The converter maps an empty payload to Avro null, which no contract accepts; say so plainly.
    if bytes.is_empty() {
        return Err(Error::Decode {
            expected,
            message: "empty record value".into(),
        });
    }
    Ok(())
}

/// Codec for threads that may block (the engine's processor and relay threads).
///
/// Must not be used from inside a tokio runtime: its HTTP client blocks.
#[derive(Debug)]
pub struct BlockingCodec {
    encoder: blocking::avro::AvroEncoder,
    decoder: blocking::avro::AvroDecoder,
    supplied: Supplied,
}

impl BlockingCodec {
    /// A codec talking to the registry `registry` describes.
    pub fn new(registry: &RegistrySettings) -> Result<Self> {
        let settings = || registry.blocking_settings();
        Ok(Self {
            encoder: blocking::avro::AvroEncoder::new(settings()?),
            decoder: blocking::avro::AvroDecoder::new(settings()?),
            supplied: Supplied::new()?,
        })
    }

    /// Encodes `value` in the Confluent wire format, registering its schema if needed.
    pub fn encode<T: Contract>(&self, subject: Subject<'_>, value: &T) -> Result<Vec<u8>> {
        let strategy = self.supplied.strategy::<T>(subject);
        self.encoder.encode_struct(value, &strategy).map_err(|e| {
            // The converter keeps failures it deems final; the next call must ask again.
            self.encoder.remove_errors_from_cache();
            registry_error(subject, e)
        })
    }

    /// Decodes a record into `T`: an internal record in single-object encoding with the
    /// compiled-in schemas (see [`crate::internal`]), anything else in the Confluent wire format
    /// through the registry.
    pub fn decode<T: Contract>(&self, bytes: &[u8]) -> Result<T> {
        check_not_empty(T::SCHEMA.full_name, bytes)?;
        if let Some(decoded) = crate::internal::decode(bytes) {
            return decoded;
        }
        let decoded = self.decoder.decode(Some(bytes)).map_err(|e| {
            self.decoder.remove_errors_from_cache();
            decode_error(T::SCHEMA.full_name, bytes, e)
        })?;
        from_writer_value(decoded.value)
    }
}

/// Codec for async code (participants, tools).
#[derive(Debug)]
pub struct AsyncCodec {
    encoder: async_impl::avro::AvroEncoder,
    decoder: async_impl::avro::AvroDecoder,
    supplied: Supplied,
}

impl AsyncCodec {
    /// A codec talking to the registry `registry` describes.
    pub fn new(registry: &RegistrySettings) -> Result<Self> {
        let settings = || registry.async_settings();
        Ok(Self {
            encoder: async_impl::avro::AvroEncoder::new(settings()?),
            decoder: async_impl::avro::AvroDecoder::new(settings()?),
            supplied: Supplied::new()?,
        })
    }

    /// Encodes `value` in the Confluent wire format, registering its schema if needed.
    pub async fn encode<T: Contract>(&self, subject: Subject<'_>, value: &T) -> Result<Vec<u8>> {
        let strategy = self.supplied.strategy::<T>(subject);
        self.encoder
            .encode_struct(value, &strategy)
            .await
            .map_err(|e| {
                // The converter keeps failures it deems final; the next call must ask again.
                self.encoder.remove_errors_from_cache();
                registry_error(subject, e)
            })
    }

    /// Decodes a record into `T`, as [`BlockingCodec::decode`] does.
    pub async fn decode<T: Contract>(&self, bytes: &[u8]) -> Result<T> {
        check_not_empty(T::SCHEMA.full_name, bytes)?;
        if let Some(decoded) = crate::internal::decode(bytes) {
            return decoded;
        }
        let decoded = self.decoder.decode(Some(bytes)).await.map_err(|e| {
            self.decoder.remove_errors_from_cache();
            decode_error(T::SCHEMA.full_name, bytes, e)
        })?;
        from_writer_value(decoded.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Signal;

    #[test]
    fn a_body_decodes_without_a_registry() {
        let schema = Signal::SCHEMA.schema().unwrap();
        // signal_id "s", event "e", correlation "c", payload_json null, sent_at 5, ttl_ms 7.
        let body = [2, b's', 2, b'e', 2, b'c', 0, 10, 2, 14];
        assert_eq!(
            decode_body::<Signal>(schema, &body).unwrap(),
            Signal {
                signal_id: "s".into(),
                event: "e".into(),
                correlation: "c".into(),
                payload_json: None,
                sent_at: 5,
                ttl_ms: Some(7),
            }
        );
        let error = decode_body::<Signal>(schema, &body[..3]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot decode io.sagaflow.Signal: "),
            "{error}"
        );
    }
}
