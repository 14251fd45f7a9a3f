//! Engine topic names and their creation.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};

/// Names of the engine's topics for one group.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Start requests.
    pub starts: String,
    /// Participant replies.
    pub replies: String,
    /// The journal: one atomic record per batch of decisions.
    pub journal: String,
    /// Latest state per saga plus checkpoints.
    pub changelog: String,
    /// Saga event log.
    pub events: String,
    /// Dead letters.
    pub dlq: String,
}

impl Topics {
    /// Topic names for `group`.
    pub fn new(group: &str) -> Self {
        Self {
            starts: format!("{group}.starts"),
            replies: format!("{group}.replies"),
            journal: format!("{group}.journal"),
            changelog: format!("{group}.changelog"),
            events: format!("{group}.events"),
            dlq: format!("{group}.dlq"),
        }
    }

    /// Input topics, co-partitioned by saga id.
    pub fn inputs(&self) -> [&str; 2] {
        [&self.starts, &self.replies]
    }
}

/// Creates `names` with `partitions` partitions where missing (existing topics are left alone).
pub async fn ensure(bootstrap: &str, names: &[(&str, i32, bool)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = crate::kafka::base_config(bootstrap)
        .create()
        .map_err(|e| Error::kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, partitions, compact)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compact {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new.iter(), &options)
        .await
        .map_err(|e| Error::kafka("creating topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Config(format!(
                    "cannot create topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// Creates every engine topic for `group`.
pub async fn ensure_engine_topics(bootstrap: &str, group: &str, partitions: i32) -> Result<()> {
    let t = Topics::new(group);
    ensure(
        bootstrap,
        &[
            (&t.starts, partitions, false),
            (&t.replies, partitions, false),
            (&t.journal, partitions, false),
            (&t.changelog, partitions, true),
            (&t.events, partitions, false),
            (&t.dlq, 1, false),
        ],
    )
    .await
}

/// Creates every participant command topic that a deployed definition names, so participants
/// can subscribe before the first command is sent.
pub async fn ensure_definition_topics(
    bootstrap: &str,
    definitions: &sagaflow_definition::Registry,
    partitions: i32,
) -> Result<()> {
    let mut names: Vec<String> = definitions
        .iter()
        .flat_map(|d| {
            d.steps.iter().flat_map(|s| {
                std::iter::once(s.command.topic.clone())
                    .chain(s.compensation.as_ref().map(|c| c.topic.clone()))
            })
        })
        .collect();
    names.sort();
    names.dedup();
    let specs: Vec<(&str, i32, bool)> = names
        .iter()
        .map(|n| (n.as_str(), partitions, false))
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    ensure(bootstrap, &specs).await
}

/// A base client config; kept in one place because every client needs the same settings.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    crate::kafka::base_config(bootstrap)
}
