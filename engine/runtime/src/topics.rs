//! Engine topic names and their creation.

use sagaflow_kafka::{KafkaSettings, TopicPolicy, TopicSpec};

use crate::error::Result;

/// Names of the engine's topics for one group.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The engine group every name is prefixed with.
    pub group: String,
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
    /// The fingerprint of every deployed definition version (compacted, one partition).
    pub definitions: String,
    /// Operators' commands to sagas, keyed by saga id.
    pub admin: String,
    /// Whether each participant is paused, keyed by its command topic (compacted; every
    /// engine reads all of it).
    pub control: String,
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
    /// Operators' admin commands.
    Admin,
}

impl Topics {
    /// Topic names for `group`.
    pub fn new(group: &str) -> Self {
        Self {
            group: group.to_string(),
            starts: format!("{group}.starts"),
            replies: format!("{group}.replies"),
            journal: format!("{group}.journal"),
            changelog: format!("{group}.changelog"),
            events: format!("{group}.events"),
            dlq: format!("{group}.dlq"),
            delay: format!("{group}.delay"),
            signals: format!("{group}.signals"),
            correlations: format!("{group}.correlations"),
            definitions: format!("{group}.definitions"),
            admin: format!("{group}.admin"),
            control: format!("{group}.control"),
        }
    }

    /// Input topics, co-partitioned (saga id, or correlation value for signals).
    pub fn inputs(&self) -> [&str; 6] {
        [
            &self.starts,
            &self.replies,
            &self.delay,
            &self.signals,
            &self.correlations,
            &self.admin,
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
            (&self.admin, InputKind::Admin),
        ]
        .into_iter()
        .find(|(name, _)| name.as_str() == topic)
        .map(|(_, kind)| kind)
    }
}

/// Creates every engine topic for `group` that is missing, and checks the ones created
/// beforehand (partition counts, compaction); see [`KafkaSettings::ensure_topics`].
pub async fn ensure_engine_topics(
    kafka: &KafkaSettings,
    group: &str,
    partitions: i32,
    policy: TopicPolicy,
) -> Result<()> {
    let t = Topics::new(group);
    let specs = [
        TopicSpec::partitioned(&t.starts, partitions),
        TopicSpec::partitioned(&t.replies, partitions),
        TopicSpec::partitioned(&t.journal, partitions),
        TopicSpec::partitioned(&t.changelog, partitions).compacted(),
        TopicSpec::partitioned(&t.events, partitions),
        TopicSpec::partitioned(&t.dlq, 1).any_partitions(),
        TopicSpec::partitioned(&t.delay, partitions),
        TopicSpec::partitioned(&t.signals, partitions),
        TopicSpec::partitioned(&t.correlations, partitions),
        TopicSpec::partitioned(&t.definitions, 1).compacted(),
        TopicSpec::partitioned(&t.admin, partitions),
        TopicSpec::partitioned(&t.control, 1).compacted(),
    ];
    Ok(kafka.ensure_topics(&specs, policy).await?)
}

/// Creates every participant command topic that a deployed definition names, so participants
/// can subscribe before the first command is sent. They take `partitions` partitions when
/// created; an existing one keeps its own count, which only sets how many participant
/// instances can share it.
pub async fn ensure_definition_topics(
    kafka: &KafkaSettings,
    definitions: &sagaflow_definition::Registry,
    partitions: i32,
    policy: TopicPolicy,
) -> Result<()> {
    let names = definitions.command_topics();
    let specs: Vec<TopicSpec> = names
        .into_iter()
        .map(|n| TopicSpec::partitioned(n, partitions).any_partitions())
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    Ok(kafka.ensure_topics(&specs, policy).await?)
}
