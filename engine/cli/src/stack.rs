//! A whole local Sagaflow in one process, for the demo and the benchmark: schema registry (unless
//! one is given), engine, and example participants.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sagaflow_avro::RegistrySettings;
use sagaflow_definition::Registry;
use sagaflow_kafka::{KafkaSettings, TopicPolicy, TopicSpec, FETCH_WAIT_MAX_MS};
use sagaflow_registry::{RegistryConfig, RunningRegistry};
use sagaflow_runtime::topics::{self, Topics};
use sagaflow_runtime::{EngineConfig, EngineHandle, Metrics};
use sagaflow_worker::examples::{handler, Injection, Role};
use sagaflow_worker::{Worker, WorkerConfig, WorkerStats};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One example participant and how many competing instances to run.
#[derive(Debug, Clone)]
pub(crate) struct ParticipantSpec {
    pub(crate) role: Role,
    pub(crate) topic: String,
    pub(crate) instances: usize,
    pub(crate) injection: Injection,
}

/// What to start.
#[derive(Debug)]
pub(crate) struct StackOptions {
    pub(crate) kafka: KafkaSettings,
    /// An external registry; `None` starts one in this process.
    pub(crate) registry: Option<RegistrySettings>,
    pub(crate) policy: TopicPolicy,
    pub(crate) group: String,
    pub(crate) partitions: i32,
    pub(crate) state_dir: PathBuf,
    pub(crate) definitions: Registry,
    pub(crate) participants: Vec<ParticipantSpec>,
}

/// The running stack.
pub(crate) struct LocalStack {
    pub(crate) registry: RegistrySettings,
    pub(crate) topics: Topics,
    pub(crate) metrics: Arc<Metrics>,
    /// The participants' counters and hop histograms, shared by all of them.
    pub(crate) worker_stats: Arc<WorkerStats>,
    /// How often the engine writes its changelog (`checkpoint-interval-ms`).
    pub(crate) checkpoint_interval: Duration,
    local_registry: Option<RunningRegistry>,
    engine: Option<EngineHandle>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<sagaflow_worker::Result<()>>>,
}

impl LocalStack {
    pub(crate) async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let topics = Topics::new(&options.group);
        topics::ensure_engine_topics(
            &options.kafka,
            &options.group,
            options.partitions,
            options.policy,
        )
        .await?;
        let participant_topics: Vec<TopicSpec> = options
            .participants
            .iter()
            .map(|p| TopicSpec::partitioned(&p.topic, options.partitions).any_partitions())
            .collect();
        options
            .kafka
            .ensure_topics(&participant_topics, options.policy)
            .await?;

        let (registry, registry_settings) = match &options.registry {
            Some(settings) => (None, settings.clone()),
            None => {
                let listen: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
                let registry = sagaflow_registry::start(RegistryConfig::new(
                    options.kafka.clone(),
                    options.policy,
                    listen,
                ))
                .await
                .context("starting the local schema registry")?;
                let settings = RegistrySettings::new(registry.url());
                (Some(registry), settings)
            }
        };

        let mut config = EngineConfig::load(None)?;
        config.kafka = options.kafka.clone();
        config.registry_url = registry_settings.url.clone();
        config.registry_basic_auth = registry_settings.basic_auth.clone().unwrap_or_default();
        config.registry_bearer_token = registry_settings.bearer_token.clone().unwrap_or_default();
        config.registry_ca_file = registry_settings
            .ca_file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default();
        config.replication_factor = options.policy.replication_factor;
        config.min_insync_replicas = options.policy.min_insync_replicas;
        config.group = options.group.clone();
        config.partitions = options.partitions;
        config.state_dir = options.state_dir.clone();
        config.http_listen = String::new();
        let checkpoint_interval = Duration::from_millis(config.checkpoint_interval_ms);
        let definitions = options.definitions.clone();
        let engine = tokio::task::spawn_blocking(move || {
            sagaflow_runtime::Engine::start(config, definitions)
        })
        .await??;
        let metrics = engine.metrics.clone();

        let (stop, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        let worker_stats = Arc::new(WorkerStats::default());
        for spec in &options.participants {
            for i in 0..spec.instances {
                let mut worker = Worker::new(
                    WorkerConfig {
                        kafka: options.kafka.clone(),
                        registry: registry_settings.clone(),
                        topic: spec.topic.clone(),
                        group: format!("{}-{}", options.group, spec.topic),
                        instance: format!("{}#{i}", spec.topic),
                        dedupe_capacity: 200_000,
                        concurrency: 64,
                        fetch_wait_max_ms: FETCH_WAIT_MAX_MS,
                    },
                    handler(spec.role, spec.injection.clone(), None),
                )?;
                worker.stats = worker_stats.clone();
                workers.push(tokio::spawn(crate::run_participant::run_then_close(
                    worker,
                    stop_rx.clone(),
                )));
            }
        }
        Ok(Self {
            registry: registry_settings,
            topics,
            metrics,
            worker_stats,
            checkpoint_interval,
            local_registry: registry,
            engine: Some(engine),
            stop,
            workers,
        })
    }

    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for w in self.workers.drain(..) {
            w.await??;
        }
        if let Some(engine) = self.engine.take() {
            tokio::task::spawn_blocking(move || engine.stop()).await??;
        }
        if let Some(registry) = self.local_registry.take() {
            registry.shutdown().await;
        }
        Ok(())
    }
}
