//! Avro contracts of Sagaflow.
//!
//! Every record on every Sagaflow topic has an `.avsc` file in `avro/schemas/`; this crate embeds
//! those files, mirrors each one as a serde type, and encodes/decodes them in the Confluent wire
//! format through a Schema Registry (via `schema_registry_converter`).

mod codec;
mod contracts;
mod error;
mod registry;
pub mod schemas;

pub use codec::{AsyncCodec, BlockingCodec, Subject};
pub use contracts::*;
pub use error::{Error, Result};
pub use registry::RegistrySettings;
