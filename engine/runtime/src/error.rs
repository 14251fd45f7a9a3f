use thiserror::Error;

/// Errors of the engine runtime.
#[derive(Debug, Error)]
pub enum Error {
    /// Kafka client error, with what the engine was doing.
    #[error("kafka error while {action}: {source}{}", sagaflow_kafka::unreachable_hint(.source))]
    Kafka {
        /// What the engine was doing.
        action: String,
        /// Client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// RocksDB error.
    #[error("state store error at {path}: {source}")]
    Store {
        /// Store path.
        path: String,
        /// RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// Encoding or decoding through the registry failed.
    #[error(transparent)]
    Avro(#[from] sagaflow_avro::Error),
    /// Client settings or topics are unusable.
    #[error(transparent)]
    Client(#[from] sagaflow_kafka::Error),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A journal record that should be valid could not be read back.
    #[error("journal {topic}[{partition}] at offset {offset}: {message}")]
    Journal {
        /// Journal topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What is wrong.
        message: String,
    },
    /// Definitions could not be loaded.
    #[error("saga definitions are invalid:\n{0}")]
    Definitions(String),
    /// The engine did not stop in the time [`crate::EngineHandle::stop`] gives it.
    #[error(
        "the engine did not stop within {0:?}: a Kafka client is most likely still waiting for a \
         broker that does not answer. Nothing is lost (what the engine decided is in its journal), \
         but its partitions move to other engines only after the session timeout"
    )]
    StopTimedOut(std::time::Duration),
    /// I/O error (HTTP listener, state directory).
    #[error("{action}: {source}")]
    Io {
        /// What failed.
        action: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn kafka(action: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            action: action.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
