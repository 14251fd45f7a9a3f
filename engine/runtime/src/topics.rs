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
    /// Records for delayed delivery (headers name the target topic and the time).
    pub delay: String,
    /// External events for await steps, keyed by correlation value.
    pub signals: String,
    /// Engine-internal messages between partitions (await subscriptions and deliveries).
    pub correlations: String,
}

/// What an input topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Start requests.
    Start,
    /// Participant replies.
    Reply,
    /// Delayed-delivery requests.
    Delay,
    /// External events.
    Signal,
    /// Internal correlation messages.
    Correlation,
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
            delay: format!("{group}.delay"),
            signals: format!("{group}.signals"),
            correlations: format!("{group}.correlations"),
        }
    }

    /// Input topics, co-partitioned (saga id, or correlation value for signals).
    pub fn inputs(&self) -> [&str; 5] {
        [
            &self.starts,
            &self.replies,
            &self.delay,
            &self.signals,
            &self.correlations,
        ]
    }

    /// What `topic` carries, if it is an input.
    pub fn kind(&self, topic: &str) -> Option<InputKind> {
        [
            (&self.starts, InputKind::Start),
            (&self.replies, InputKind::Reply),
            (&self.delay, InputKind::Delay),
            (&self.signals, InputKind::Signal),
            (&self.correlations, InputKind::Correlation),
        ]
        .into_iter()
        .find(|(name, _)| name.as_str() == topic)
        .map(|(_, kind)| kind)
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
            (&t.delay, partitions, false),
            (&t.signals, partitions, false),
            (&t.correlations, partitions, false),
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
                s.command()
                    .map(|c| c.topic.clone())
                    .into_iter()
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
