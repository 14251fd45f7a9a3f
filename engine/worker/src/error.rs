use thiserror::Error;

/// Errors of a participant worker.
#[derive(Debug, Error)]
pub enum Error {
    /// Kafka client error.
    #[error("kafka error while {action}: {source}")]
    Kafka {
        /// What the worker was doing.
        action: String,
        /// Client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// Encoding a reply failed.
    #[error(transparent)]
    Avro(#[from] sagaflow_avro::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
