//! Pure decision logic of Sagaflow.
//!
//! Nothing here does I/O: [`decide`] maps `(state, input, now)` to `(state', outputs)`, and
//! [`Chain`] decides which journal records count. The runtime crate feeds both from Kafka; tests
//! and replays can call them directly.

mod admin;
pub mod audit;
mod chain;
pub mod correlate;
mod decide;
pub mod delay;
mod draft;
mod graph;
mod ids;
mod input;
mod jitter;
mod nodes;
pub mod replay;
mod retention;
pub mod signal_input;

pub use chain::{Chain, ChainVerdict, JournalHeader};
pub use decide::decide;
pub use ids::{command_id, event_id, idempotency_key};
pub use input::{
    Decision, Definitions, Dispatch, DispatchAction, Effect, IgnoreReason, Input, Outcome,
    Rejection, Settings,
};
pub use nodes::awaited_commands;
pub use retention::{IdReuse, Retention};
