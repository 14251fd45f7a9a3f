//! The audit topic, `<group>.audit`: what the admin API was asked that did not land on a saga's
//! event log. Bulk jobs (created, cancelled, finished), requests refused before they reached a
//! saga, and every 401 and 403. Avro `AuditRecord`s keyed by actor, so one actor's trail is in
//! order and any Kafka tool reads it.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use sagaflow_avro::{now_ms, AsyncCodec, AuditOutcome, AuditRecord, RegistrySettings, Subject};
use sagaflow_kafka::{KafkaSettings, TopicPolicy, TopicSpec};
use serde_json::Value;
use tracing::error;

use crate::error::{Error, Result};

/// Writes audit records.
pub struct Audit {
    producer: FutureProducer,
    codec: AsyncCodec,
    topic: String,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// One audited request, before its time is stamped.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who.
    pub actor: String,
    /// Their role, once authenticated.
    pub role: Option<String>,
    /// HTTP method, or `JOB`.
    pub method: String,
    /// Request path.
    pub path: String,
    /// How it was answered.
    pub outcome: AuditOutcome,
    /// HTTP status answered.
    pub status: u16,
    /// A job id or saga id.
    pub target: Option<String>,
    /// Why it was refused.
    pub message: Option<String>,
    /// Facts.
    pub detail: Option<Value>,
}

impl Audit {
    /// The audit topic of group `group`, created if missing; records are keyed by actor, so
    /// each actor's are in order.
    pub async fn connect(
        kafka: &KafkaSettings,
        registry: &RegistrySettings,
        group: &str,
        policy: TopicPolicy,
    ) -> Result<Self> {
        let topic = format!("{group}.audit");
        kafka
            .ensure_topics(
                &[TopicSpec::partitioned(&topic, 3).any_partitions()],
                policy,
            )
            .await?;
        Ok(Self {
            producer: kafka
                .producer_config("admin-audit", 5)
                .create()
                .map_err(|e| Error::kafka("creating the audit producer", e))?,
            codec: AsyncCodec::new(registry)?,
            topic,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes one record and waits for the broker's acknowledgement. A failure is returned, so
    /// that a mutation is not carried out unaudited.
    pub async fn record(&self, entry: Entry) -> Result<()> {
        let record = AuditRecord {
            at: now_ms(),
            actor: entry.actor,
            role: entry.role,
            method: entry.method,
            path: entry.path,
            outcome: entry.outcome,
            status: i32::from(entry.status),
            target: entry.target,
            message: entry.message,
            detail_json: entry.detail.map(|d| d.to_string()),
        };
        let value = self
            .codec
            .encode(Subject::Topic(&self.topic), &record)
            .await?;
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&record.actor)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| {
                error!(error = %e, topic = %self.topic, "an audit record could not be written");
                Error::kafka(format!("writing the audit record to {}", self.topic), e)
            })?;
        Ok(())
    }
}
