//! Kafka client settings shared by every Sagaflow client.
//!
//! One builder for the engine, the schema registry, the worker library, the command-line tools
//! and the tests, so that a property an operator sets (SASL, TLS, `client.rack`, ...) reaches
//! every client, and no client quietly differs from the others.
//!
//! Properties come from, in order (later wins):
//! 1. a `[kafka]` table in a TOML file (`kafka."security.protocol" = "SASL_SSL"`);
//! 2. `SAGAFLOW_KAFKA_*` environment variables: `SAGAFLOW_KAFKA_SASL_MECHANISM=PLAIN` sets
//!    `sasl.mechanism`. As in Confluent's container images, `_` becomes `.`, `__` becomes `_`
//!    and `___` becomes `-`;
//! 3. `--kafka KEY=VALUE` command-line options.

mod assignment;
mod catch_up;
mod close;
mod error;
pub mod hops;
pub mod otlp;
mod settings;
mod topics;
pub mod trace;
mod transient;

pub use assignment::member_assignment;
pub use catch_up::{read_to_end, MARKER_PREFIX};
pub use close::{close_within, close_within_async};
pub use error::{Error, Result};
pub use settings::{KafkaSettings, ENV_PREFIX, FETCH_WAIT_MAX_MS, RESERVED};
pub use topics::{TopicPolicy, TopicSpec};
pub use transient::{is_transient, unreachable_hint};
