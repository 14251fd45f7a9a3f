//! Operating sagas: admin commands and the engine's answers, bulk jobs over read-model
//! filters, and the admin API with bearer tokens and an audit topic.
//!
//! `sagaflow admin` (one command, or a job in its own process) and `sagaflow admin-server`
//! (the API, jobs in the background) share everything here. See `docs/operations.md`.

pub mod audit;
pub mod auth;
pub mod client;
pub mod commands;
pub mod error;
pub mod jobs;
pub mod participants;
pub mod read_models;
pub mod server;

pub use audit::Audit;
pub use auth::{token_digest, Auth, Principal, Role};
pub use client::ApiClient;
pub use commands::{detail, Answer, Commands, Outcome, Request};
pub use error::{Error, Result};
pub use jobs::{Job, JobSpec, JobStatus, Snapshot};
pub use participants::{Change, Participant, Participants};
pub use read_models::{ReadModels, FILTERS};
pub use server::{openapi, serve, Parts, ServerConfig};
