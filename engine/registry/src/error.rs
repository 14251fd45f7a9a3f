//! The registry's error type and its Confluent error codes.

use std::net::SocketAddr;

use rdkafka::error::KafkaError;

/// Everything that can go wrong in the registry, from a bad request to a lost broker.
///
/// Request errors map to Confluent's `error_code` values (see [`Error::error_code`]), so
/// existing clients recognise them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 40401: the subject has no versions (or only deleted ones).
    #[error(
        "Subject '{subject}' not found. Register a schema under it first \
         (POST /subjects/{subject}/versions) or check the name with GET /subjects."
    )]
    SubjectNotFound {
        /// The subject asked for.
        subject: String,
    },

    /// 40402: the subject exists but not this version.
    #[error(
        "Version {version} not found for subject '{subject}'. List its versions with \
         GET /subjects/{subject}/versions."
    )]
    VersionNotFound {
        /// The subject asked for.
        subject: String,
        /// The version asked for.
        version: String,
    },

    /// 40403: no schema has this id.
    #[error("Schema {id} not found. Schema ids come from POST /subjects/{{subject}}/versions.")]
    SchemaIdNotFound {
        /// The id asked for, as given.
        id: String,
    },

    /// 40403: the schema is not registered under the subject.
    #[error(
        "Schema not found: no version of subject '{subject}' has this schema. Register it with \
         POST /subjects/{subject}/versions."
    )]
    SchemaNotRegistered {
        /// The subject searched.
        subject: String,
    },

    /// 40404: the subject was soft-deleted.
    #[error("Subject '{subject}' was soft deleted. Set permanent=true to delete it permanently.")]
    SubjectSoftDeleted {
        /// The subject.
        subject: String,
    },

    /// 40405: a permanent delete was asked for a subject that is not soft-deleted.
    #[error(
        "Subject '{subject}' was not deleted first before being permanently deleted. \
         Soft delete it first with DELETE /subjects/{subject}."
    )]
    SubjectNotSoftDeleted {
        /// The subject.
        subject: String,
    },

    /// 40406: the version was soft-deleted.
    #[error(
        "Subject '{subject}' version {version} was soft deleted. Set permanent=true to delete it \
         permanently."
    )]
    VersionSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },

    /// 40407: a permanent delete was asked for a version that is not soft-deleted.
    #[error(
        "Subject '{subject}' version {version} was not deleted first before being permanently \
         deleted. Soft delete it first with DELETE /subjects/{subject}/versions/{version}."
    )]
    VersionNotSoftDeleted {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
    },

    /// 40408: the subject has no compatibility level of its own.
    #[error(
        "Subject '{subject}' does not have subject-level compatibility configured. Set one with \
         PUT /config/{subject}, or add ?defaultToGlobal=true to read the global level."
    )]
    SubjectConfigNotFound {
        /// The subject.
        subject: String,
    },

    /// 42201: the schema does not parse, or uses something this registry does not serve.
    #[error("Invalid schema: {reason}")]
    InvalidSchema {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// 42202: the version in the path is neither a positive number nor `latest`.
    #[error(
        "The specified version '{version}' is not a valid version id. Allowed values are between \
         [1, 2^31-1] and the string \"latest\"."
    )]
    InvalidVersion {
        /// The version as given.
        version: String,
    },

    /// 42203: unknown compatibility level.
    #[error(
        "Invalid compatibility level '{level}'. Valid values are NONE, BACKWARD, \
         BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL and FULL_TRANSITIVE."
    )]
    InvalidCompatibilityLevel {
        /// The level as given.
        level: String,
    },

    /// 42206: the version is imported by other schemas and cannot be deleted.
    #[error(
        "One or more references exist to subject '{subject}' version {version} (from {}). \
         Delete the referencing versions first.",
        referrers.join(", ")
    )]
    ReferenceExists {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
        /// `subject/version` of every version that imports it.
        referrers: Vec<String>,
    },

    /// 409: the schema breaks the subject's compatibility level.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject '{subject}' \
         (compatibility {level}): {}. Change the schema (for example give new fields a default) \
         or change the level with PUT /config/{subject}.",
        messages.join("; ")
    )]
    Incompatible {
        /// The subject.
        subject: String,
        /// The level that was checked.
        level: crate::CompatibilityLevel,
        /// One entry per failed check.
        messages: Vec<String>,
    },

    /// 50001: a stored version cannot be parsed, so nothing can be checked against it.
    #[error(
        "Error in the backend store: subject '{subject}' version {version} holds a schema that \
         cannot be parsed ({reason}). Delete that version or set the subject's compatibility \
         to NONE."
    )]
    UnreadableVersion {
        /// The subject.
        subject: String,
        /// The version.
        version: u32,
        /// The parser's error.
        reason: String,
    },

    /// 50001: every schema id up to 2^31-1 is taken.
    #[error("Error in the backend store: all schema ids up to 2^31-1 are in use")]
    IdsExhausted,

    /// 400: the request (body, path or query) is malformed.
    #[error("Bad request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },

    /// 50001: a Kafka operation failed.
    #[error(
        "Error in the backend store: {operation} on topic '{topic}' failed: {source}. Check that \
         the Kafka broker is reachable."
    )]
    Kafka {
        /// What the registry was doing.
        operation: &'static str,
        /// The schemas topic.
        topic: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },

    /// 50001: the schemas topic cannot be created, or exists with settings it cannot use.
    #[error("Error in the backend store: {0}")]
    Topic(#[from] sagaflow_kafka::Error),

    /// 50001: the schemas topic is not usable as it is.
    #[error("Error in the backend store: topic '{topic}': {reason}")]
    Store {
        /// The schemas topic.
        topic: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// 50001: a record in the schemas topic cannot be decoded.
    #[error(
        "Error in the backend store: record at offset {offset} of topic '{topic}' is not a \
         schema registry record: {reason}. Point the registry at a topic it owns."
    )]
    CorruptRecord {
        /// The schemas topic.
        topic: String,
        /// Where the record is.
        offset: i64,
        /// Why it cannot be read.
        reason: String,
    },

    /// The configuration cannot work.
    #[error("Invalid registry configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The HTTP listener could not be bound.
    #[error("Cannot listen on {addr}: {source}. Choose a free address with the listen setting.")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The Confluent `error_code` this error is reported with.
    pub fn error_code(&self) -> u32 {
        match self {
            Error::SubjectNotFound { .. } => 40401,
            Error::VersionNotFound { .. } => 40402,
            Error::SchemaIdNotFound { .. } | Error::SchemaNotRegistered { .. } => 40403,
            Error::SubjectSoftDeleted { .. } => 40404,
            Error::SubjectNotSoftDeleted { .. } => 40405,
            Error::VersionSoftDeleted { .. } => 40406,
            Error::VersionNotSoftDeleted { .. } => 40407,
            Error::SubjectConfigNotFound { .. } => 40408,
            Error::InvalidSchema { .. } => 42201,
            Error::InvalidVersion { .. } => 42202,
            Error::InvalidCompatibilityLevel { .. } => 42203,
            Error::ReferenceExists { .. } => 42206,
            Error::Incompatible { .. } => 409,
            Error::BadRequest { .. } => 400,
            Error::Kafka { .. }
            | Error::Store { .. }
            | Error::Topic(_)
            | Error::CorruptRecord { .. }
            | Error::UnreadableVersion { .. }
            | Error::IdsExhausted
            | Error::InvalidConfig { .. }
            | Error::Bind { .. } => 50001,
        }
    }

    /// The HTTP status this error is reported with.
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            code @ 400..=599 => code as u16,
            code => (code / 100) as u16,
        }
    }
}

/// The registry's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_follows_the_error_code_prefix() {
        let not_found = Error::SubjectNotFound {
            subject: "orders-value".into(),
        };
        assert_eq!(
            (not_found.error_code(), not_found.http_status()),
            (40401, 404)
        );
        let incompatible = Error::Incompatible {
            subject: "s".into(),
            level: crate::CompatibilityLevel::Backward,
            messages: vec!["x".into()],
        };
        assert_eq!(
            (incompatible.error_code(), incompatible.http_status()),
            (409, 409)
        );
        let invalid = Error::InvalidSchema {
            reason: "bad".into(),
        };
        assert_eq!(invalid.http_status(), 422);
        let store = Error::Store {
            topic: "_schemas".into(),
            reason: "x".into(),
        };
        assert_eq!(store.http_status(), 500);
    }
}
