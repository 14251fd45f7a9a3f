//! A Confluent-compatible Schema Registry for Sagaflow's local mode.
//!
//! It serves the Confluent REST API (subjects, versions, ids, compatibility checks and
//! config) for Avro schemas, the way Redpanda's built-in registry does, and stores every
//! mutation in a compacted Kafka topic (`_schemas` by default) before applying it, so a
//! restarted registry rebuilds exactly the same ids and versions from the topic.
//!
//! Run one registry per topic: ids and versions are assigned by the process that owns it.
//!
//! ```no_run
//! # async fn example() -> sagaflow_registry::Result<()> {
//! let config = sagaflow_registry::RegistryConfig::new(
//!     sagaflow_kafka::KafkaSettings::new("127.0.0.1:9092"),
//!     sagaflow_kafka::TopicPolicy::LOCAL,
//!     "127.0.0.1:8081".parse().unwrap(),
//! );
//! let registry = sagaflow_registry::start(config).await?;
//! println!("schema registry at {}", registry.url());
//! registry.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod api;
mod compat;
mod error;
mod log;
mod model;
mod schema;
mod state;
mod store;

// Public only for the fuzz targets in `fuzz/`, which cannot reach the crate-private handlers.
#[doc(hidden)]
pub mod fuzzing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use model::{CompatibilityLevel, SchemaReference};
use sagaflow_kafka::{KafkaSettings, TopicPolicy};

/// Where the registry keeps its data and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Kafka bootstrap servers and client properties.
    pub kafka: KafkaSettings,
    /// Replication of the schemas topic when the registry creates it.
    pub policy: TopicPolicy,
    /// The compacted topic holding the registry's records (default `_schemas`).
    pub topic: String,
    /// The HTTP address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl RegistryConfig {
    /// The topic used unless another is configured.
    pub const DEFAULT_TOPIC: &'static str = "_schemas";

    /// A configuration using the default topic.
    pub fn new(kafka: KafkaSettings, policy: TopicPolicy, listen: SocketAddr) -> Self {
        RegistryConfig {
            kafka,
            policy,
            topic: Self::DEFAULT_TOPIC.to_owned(),
            listen,
        }
    }

    /// Checks the settings before anything connects.
    fn validate(&self) -> Result<()> {
        if self.kafka.bootstrap().trim().is_empty() {
            return Err(Error::InvalidConfig {
                reason: "the Kafka bootstrap address is empty; set it to host:port of a broker"
                    .to_owned(),
            });
        }
        let topic = &self.topic;
        let legal = topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "'{topic}' is not a valid Kafka topic name; use 1 to 249 characters out of \
                     a-z, A-Z, 0-9, '.', '_' and '-'"
                ),
            });
        }
        Ok(())
    }
}

/// A registry serving HTTP in a background task; dropping it stops the server too.
#[derive(Debug)]
pub struct RunningRegistry {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl RunningRegistry {
    /// The address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:8081`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests and waits (up to 10 s) for open requests to finish.
    pub async fn shutdown(self) {
        let RunningRegistry { addr, stop, server } = self;
        // An error means the server already stopped, which is what we want.
        let _ = stop.send(());
        let abort = server.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => info!(%addr, "schema registry stopped"),
            Ok(Ok(Err(e))) => warn!(%addr, error = %e, "schema registry stopped with an error"),
            Ok(Err(e)) => warn!(%addr, error = %e, "schema registry task failed"),
            Err(_) => {
                warn!(%addr, "schema registry did not stop within 10 s; aborting it");
                abort.abort();
            }
        }
    }
}

/// Restores the registry from its topic, binds the listener and serves in a spawned task.
pub async fn start(config: RegistryConfig) -> Result<RunningRegistry> {
    config.validate()?;
    let store = Arc::new(store::Store::open(&config.kafka, config.policy, &config.topic).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let router = api::router(store);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // Resolves on `shutdown()` and when the handle is dropped.
                let _ = stopped.await;
            })
            .await
    });
    info!(%addr, topic = %config.topic, bootstrap = %config.kafka.bootstrap(), "schema registry listening");
    Ok(RunningRegistry { addr, stop, server })
}
