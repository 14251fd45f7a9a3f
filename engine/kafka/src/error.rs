use thiserror::Error;

/// Errors of the Kafka settings and topic checks.
#[derive(Debug, Error)]
pub enum Error {
    /// A user-supplied client property cannot be used.
    #[error("kafka property `{key}` from {source_name}: {reason}")]
    Property {
        /// The librdkafka property name.
        key: String,
        /// Where it was given (a file, an environment variable, a flag).
        source_name: String,
        /// Why it is refused and what to do instead.
        reason: String,
    },
    /// A Kafka client call failed.
    #[error("kafka error while {action}: {source}{}", crate::unreachable_hint(.source))]
    Kafka {
        /// What was being done.
        action: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A topic is missing, or exists with settings the engine cannot work with.
    #[error("topic {topic}: {problem}; {fix}")]
    Topic {
        /// The topic.
        topic: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
