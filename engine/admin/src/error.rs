//! Errors of the admin client, its jobs and its API.

use thiserror::Error;

/// What went wrong, with what an operator needs to fix it.
#[derive(Debug, Error)]
pub enum Error {
    /// A setting or a file of settings is unusable.
    #[error("{0}")]
    Config(String),
    /// A Kafka client call failed.
    #[error("kafka error while {action}: {source}{}", sagaflow_kafka::unreachable_hint(.source))]
    Kafka {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No such participant command topic on the broker.
    #[error("no command topic {topic:?} on the broker; name a participant's command topic (a step's `command.topic` in a definition){hint}")]
    UnknownParticipant {
        /// The topic asked for.
        topic: String,
        /// The known command topics, as a sentence's end (may be empty).
        hint: String,
    },
    /// A topic the engine creates is missing.
    #[error("topic {topic} does not exist: is an engine of group {group} running? (--group, SAGAFLOW_GROUP)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The engine group.
        group: String,
    },
    /// Creating a topic, or a client property, failed.
    #[error(transparent)]
    Topics(#[from] sagaflow_kafka::Error),
    /// Encoding or decoding Avro, or reaching the registry, failed.
    #[error(transparent)]
    Avro(#[from] sagaflow_avro::Error),
    /// The read models' query API refused or could not be reached.
    #[error("the read models' query API at {url}: {message}")]
    ReadModels {
        /// Its base URL.
        url: String,
        /// The HTTP status it answered, if it answered.
        status: Option<u16>,
        /// What it said, or why it could not be asked.
        message: String,
    },
    /// The admin API refused or could not be reached.
    #[error("the admin API at {url}: {message}")]
    AdminApi {
        /// Its base URL.
        url: String,
        /// The HTTP status it answered, if it answered.
        status: Option<u16>,
        /// What it said, or why it could not be asked.
        message: String,
    },
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {listen}: {source}; pick another --listen address")]
    Listen {
        /// The address asked for.
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn kafka(action: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            action: action.into(),
            source,
        }
    }
}
