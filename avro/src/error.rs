use thiserror::Error;

/// Errors of encoding and decoding Sagaflow records.
#[derive(Debug, Error)]
pub enum Error {
    /// An embedded `.avsc` file does not parse: a bug in this build.
    #[error("embedded schema {name} is invalid: {source}")]
    Schema {
        /// File name of the schema.
        name: &'static str,
        /// Parser error.
        #[source]
        source: apache_avro::Error,
    },
    /// The registry settings are unusable.
    #[error("invalid schema registry settings: {reason}")]
    RegistrySettings {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The registry could not be reached or refused the schema.
    #[error("schema registry error for subject {subject}: {message}")]
    Registry {
        /// Subject being registered or looked up.
        subject: String,
        /// What the registry client reported.
        message: String,
    },
    /// The registry could not be reached, or answered with a transient error: the same call may
    /// succeed later, so the record must be retried, never skipped or dead-lettered.
    #[error("schema registry unavailable ({what}): {message}; check that the registry is up and reachable at the configured URL (--registry-url, SAGAFLOW_REGISTRY_URL)")]
    RegistryUnavailable {
        /// The subject or schema id being looked up.
        what: String,
        /// What the registry client reported.
        message: String,
    },
    /// The bytes are not a Confluent wire-format record of a known schema.
    #[error("cannot decode {expected}: {message}")]
    Decode {
        /// Record type the caller expected.
        expected: &'static str,
        /// Why decoding failed.
        message: String,
    },
    /// The value does not fit its schema.
    #[error("cannot encode {record}: {message}")]
    Encode {
        /// Record type being encoded.
        record: &'static str,
        /// Why encoding failed.
        message: String,
    },
}

impl Error {
    /// Whether this is an outage (retry later) rather than a record or schema that can never
    /// succeed (dead-letter it).
    pub fn is_outage(&self) -> bool {
        matches!(self, Error::RegistryUnavailable { .. })
    }
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
