//! Creating topics with the operator's replication policy, and checking topics created
//! beforehand.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::warn;

use crate::error::{Error, Result};
use crate::settings::KafkaSettings;

/// Replication of the topics Sagaflow creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPolicy {
    /// Replicas of each partition.
    pub replication_factor: i32,
    /// `min.insync.replicas` of each created topic.
    pub min_insync_replicas: i32,
}

impl TopicPolicy {
    /// One replica: a single local broker.
    pub const LOCAL: TopicPolicy = TopicPolicy {
        replication_factor: 1,
        min_insync_replicas: 1,
    };
}

/// A topic Sagaflow needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Its name.
    pub name: String,
    /// Partitions it is created with.
    pub partitions: i32,
    /// Whether it must be compacted (`cleanup.policy=compact`).
    pub compact: bool,
    /// Whether an existing topic must have exactly `partitions` partitions (co-partitioned
    /// inputs and the stores that follow them).
    pub exact_partitions: bool,
}

impl TopicSpec {
    /// A topic with `partitions` that must keep that count.
    pub fn partitioned(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            compact: false,
            exact_partitions: true,
        }
    }

    /// Marks it compacted.
    pub fn compacted(mut self) -> Self {
        self.compact = true;
        self
    }

    /// Accepts an existing topic with any partition count.
    pub fn any_partitions(mut self) -> Self {
        self.exact_partitions = false;
        self
    }
}

impl KafkaSettings {
    /// Creates the missing topics of `specs` with `policy`, then checks every one of them: it
    /// exists, it has the partition count the spec demands, and it is compacted where it must
    /// be. A topic created beforehand with other settings is an error that names the fix.
    pub async fn ensure_topics(&self, specs: &[TopicSpec], policy: TopicPolicy) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .config("topics", &[])
            .create()
            .map_err(|source| Error::Kafka {
                action: "creating an admin client".into(),
                source,
            })?;
        let min_isr = policy.min_insync_replicas.to_string();
        let new: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|spec| {
                let topic = NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(policy.replication_factor),
                )
                .set("min.insync.replicas", &min_isr);
                if spec.compact {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics(new.iter(), &options)
            .await
            .map_err(|source| Error::Kafka {
                action: "creating topics".into(),
                source,
            })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, RDKafkaErrorCode::InvalidReplicationFactor)) => {
                    return Err(Error::Topic {
                        topic,
                        problem: format!(
                            "cannot be created with replication factor {}: the cluster has fewer brokers",
                            policy.replication_factor
                        ),
                        fix: "set replication-factor (SAGAFLOW_REPLICATION_FACTOR) to at most the number of brokers, 1 for a single local broker".into(),
                    })
                }
                Err((topic, code)) => {
                    return Err(Error::Topic {
                        topic,
                        problem: format!("cannot be created: {code}"),
                        fix: "create it by hand, or give this client the right to create topics"
                            .into(),
                    })
                }
            }
        }
        self.check_topics(&admin, specs).await
    }

    async fn check_topics(
        &self,
        admin: &AdminClient<DefaultClientContext>,
        specs: &[TopicSpec],
    ) -> Result<()> {
        let client = admin.inner();
        for spec in specs {
            // Freshly created topics can take a moment to reach every broker's metadata.
            let mut partitions = 0;
            for _ in 0..50 {
                let metadata = client
                    .fetch_metadata(Some(&spec.name), Duration::from_secs(10))
                    .map_err(|source| Error::Kafka {
                        action: format!("reading the metadata of {}", spec.name),
                        source,
                    })?;
                partitions = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == spec.name && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if partitions > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if partitions == 0 {
                return Err(Error::Topic {
                    topic: spec.name.clone(),
                    problem: "does not exist after creating it".into(),
                    fix: "check that the broker allows topic creation, or create it by hand".into(),
                });
            }
            if spec.exact_partitions && partitions != spec.partitions {
                return Err(Error::Topic {
                    topic: spec.name.clone(),
                    problem: format!(
                        "has {partitions} partitions, but the engine's topics must all have {} (inputs are co-partitioned by saga id)",
                        spec.partitions
                    ),
                    fix: format!(
                        "set partitions = {partitions} (SAGAFLOW_PARTITIONS) if every engine topic has {partitions}, or recreate the topic"
                    ),
                });
            }
        }
        let compacted: Vec<&TopicSpec> = specs.iter().filter(|s| s.compact).collect();
        if compacted.is_empty() {
            return Ok(());
        }
        let resources: Vec<ResourceSpecifier<'_>> = compacted
            .iter()
            .map(|s| ResourceSpecifier::Topic(&s.name))
            .collect();
        let described = match admin
            .describe_configs(resources.iter(), &AdminOptions::new())
            .await
        {
            Ok(described) => described,
            Err(e) => {
                // Some Kafka-protocol brokers do not implement DescribeConfigs; the engine still
                // works there, it just cannot check.
                warn!(error = %e, "cannot read topic configs; the compaction of the changelog is not checked");
                return Ok(());
            }
        };
        for (spec, result) in compacted.iter().zip(described) {
            let resource = match result {
                Ok(resource) => resource,
                Err(code) => {
                    warn!(topic = %spec.name, %code, "cannot read the topic's config; its compaction is not checked");
                    continue;
                }
            };
            let policy = resource
                .entries
                .iter()
                .find(|e| e.name == "cleanup.policy")
                .and_then(|e| e.value.clone());
            match policy {
                Some(p) if p.split(',').any(|v| v.trim() == "compact") => {}
                Some(p) => {
                    return Err(Error::Topic {
                        topic: spec.name.clone(),
                        problem: format!(
                            "has cleanup.policy={p}, but it must be compacted: it keeps the latest state per key, and deleting old segments would lose sagas"
                        ),
                        fix: format!(
                            "run kafka-configs --alter --entity-type topics --entity-name {} --add-config cleanup.policy=compact",
                            spec.name
                        ),
                    })
                }
                None => {
                    warn!(topic = %spec.name, "the broker does not report cleanup.policy; compaction is not checked")
                }
            }
        }
        Ok(())
    }
}
