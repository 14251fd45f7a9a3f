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
    /// Another copy of the command was still being handled after a minute; this copy is left
    /// unanswered (and its offset unstored) rather than run twice.
    #[error("command {0} is still being handled by another copy")]
    Busy(String),
    /// The broker did not confirm, within the time given to [`crate::Worker::close`], that the
    /// instance left its group.
    #[error(
        "worker {instance}: the broker did not confirm within {within:?} that it left consumer \
         group {group}; the commands answered since the last offset commit will come again to \
         the group's other instances (check that the brokers are reachable)"
    )]
    CloseTimedOut {
        /// The instance (`WorkerConfig::instance`).
        instance: String,
        /// Its consumer group.
        group: String,
        /// How long the close was given.
        within: std::time::Duration,
    },
}

impl Error {
    /// Whether trying again cannot help: the registry refused the reply's schema, or the
    /// broker refuses the reply itself (its topic is invalid or not allowed, or it is too
    /// large). A command whose reply fails so is skipped rather than tried for good.
    pub fn is_permanent(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            Self::Avro(e) => !e.is_outage(),
            Self::Kafka { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(
                    C::InvalidTopic
                        | C::TopicAuthorizationFailed
                        | C::MessageSizeTooLarge
                        | C::MessageBatchTooLarge
                        | C::InvalidRecord
                        | C::InvalidArgument
                )
            ),
            Self::Busy(_) | Self::CloseTimedOut { .. } => false,
        }
    }
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
