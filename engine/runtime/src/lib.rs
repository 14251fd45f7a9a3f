//! Sagaflow's partitioned processor.
//!
//! A Kafka Streams-like engine: a consumer group hands out input partitions; the owner of
//! partition `p` restores its saga states (RocksDB, backed by the journal and changelog topics),
//! claims the journal partition, and then turns inputs into journaled decisions whose outputs a
//! relay delivers. See `docs/architecture.md` for why each piece exists.

mod batches;
pub mod config;
mod control;
mod deployed;
mod error;
mod http;
mod kafka;
mod liveness;
mod membership;
mod metrics;
mod oversize;
pub mod parked;
pub mod partitioner;
mod placement;
mod processor;
mod relay;
mod requests;
mod restore;
mod spans;
mod standby;
mod store;
mod targets;
mod task;
pub mod topics;
mod traffic;
mod wheel;

pub use config::EngineConfig;
pub use error::{Error, Result};
pub use http::serve_http;
pub use membership::remove_static_member;
pub use metrics::{Hops, Metrics};
pub use partitioner::{murmur2, partition_for};
pub use processor::{Engine, EngineHandle};
pub use requests::KafkaRequests;
pub use traffic::{Flow, Traffic};
