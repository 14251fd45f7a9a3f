//! Avro contracts of Sagaflow.
//!
//! Every record on every Sagaflow topic has an `.avsc` file in `avro/schemas/`; this crate embeds
//! those files, mirrors each one as a serde type, and encodes/decodes them in the Confluent wire
//! format through a Schema Registry (via `schema_registry_converter`).

mod codec;
mod contracts;
mod error;
pub mod internal;
mod registry;
pub mod schemas;

pub use codec::{decode_body, AsyncCodec, BlockingCodec, Subject};
pub use contracts::*;
pub use error::{Error, Result};
pub use registry::RegistrySettings;

/// The wall clock in epoch milliseconds, the unit of every timestamp in the contracts. The one
/// clock every Sagaflow component reads, so that tests and benchmarks compare like with like.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
