//! Read models of the saga event log: PostgreSQL tables for BI, Prometheus metrics for
//! operators, and a query API.
//!
//! The projector consumes `<group>.events` as a consumer group and writes each batch, with the
//! offsets it consumed, in one PostgreSQL transaction: exactly once, with offsets read back
//! from the database on start as a Kafka Connect sink does. See `docs/bi.md`.

pub mod api;
pub mod docs;
pub mod error;
pub mod fold;
pub mod metrics;
pub mod projector;
pub mod rebuild;
pub mod store;

pub use api::{serve, ApiConfig, OPENAPI};
pub use docs::bi_query;
pub use error::{Error, Result};
pub use metrics::Metrics;
pub use projector::{start, ProjectorConfig, ProjectorHandle};
pub use rebuild::{print_progress, rebuild, Progress, RebuildReport};
pub use store::Store;
