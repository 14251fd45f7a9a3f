//! Participant library for Sagaflow.
//!
//! A participant consumes its command topic in a consumer group (instances compete for
//! partitions), runs a handler per command, and sends a [`Reply`](sagaflow_avro::Reply) to the
//! command's `reply_to` topic. Commands are redelivered after crashes (at least once), so the
//! worker deduplicates on the command's idempotency key and answers a repeated command with the
//! reply it gave before, without running the handler twice.

mod dedupe;
mod error;
pub mod examples;
mod worker;

pub use dedupe::{Claim, Dedupe};
pub use error::{Error, Result};
pub use sagaflow_avro::RegistrySettings;
pub use sagaflow_kafka::KafkaSettings;
pub use worker::{Failure, Handler, Worker, WorkerConfig, WorkerStats};
