//! Errors of the projector and its API.

use thiserror::Error;

/// What went wrong, with what an operator needs to fix it.
#[derive(Debug, Error)]
pub enum Error {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// PostgreSQL could not be reached.
    #[error("cannot connect to PostgreSQL at {url}: {source}; check --database-url (SAGAFLOW_DATABASE_URL) and that the server is up and accepts this user")]
    Connect {
        /// The URL, without its password.
        url: String,
        #[source]
        source: postgres::Error,
    },
    /// A migration failed: the schema is left at the last migration that applied.
    #[error("migrating the read models in schema {schema} failed: {message}; fix the cause and restart, the migrations that applied stay applied")]
    Migration {
        /// Schema being migrated.
        schema: String,
        /// What refinery reported.
        message: String,
    },
    /// A statement failed.
    #[error("PostgreSQL error while {action}: {source}")]
    Sql {
        /// What the projector was doing.
        action: &'static str,
        #[source]
        source: postgres::Error,
    },
    /// Another projector committed this partition since this one read its offset (a rebalance
    /// moved it, or a rebuild swapped the tables in): the batch is dropped and the partition
    /// resumes from the stored offset.
    #[error("partition {partition} moved on in the database (expected offset {expected:?}, found {found:?}); resuming from the stored offset")]
    Fenced {
        /// Event log partition.
        partition: i32,
        /// The offset this projector last stored or read.
        expected: Option<i64>,
        /// The offset stored now.
        found: Option<i64>,
    },
    /// A Kafka client failed.
    #[error("Kafka error while {action}: {source}{}", sagaflow_kafka::unreachable_hint(.source))]
    Kafka {
        /// What the projector was doing.
        action: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The event log topic is missing.
    #[error("the event log topic {topic} does not exist or has no partitions; start the engine of this group first, or pass the right --group")]
    NoTopic {
        /// Topic name.
        topic: String,
    },
    /// Binding the HTTP listener failed.
    #[error("cannot listen on {listen}: {source}; choose another --http-listen")]
    Listen {
        /// Address.
        listen: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn sql(action: &'static str, source: postgres::Error) -> Self {
        Self::Sql { action, source }
    }

    pub(crate) fn kafka(action: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Self::Kafka {
            action: action.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
