//! Reads the saga event log back and checks it: the demo's and benchmark's source of truth.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{AsyncCodec, RegistrySettings, SagaEvent};
use sagaflow_kafka::KafkaSettings;

/// Events of one saga, deduplicated by seq.
#[derive(Debug, Default)]
pub(crate) struct SagaLog {
    pub(crate) events: BTreeMap<i64, SagaEvent>,
    /// Redelivered copies (same seq, same content): allowed by G2, counted.
    pub(crate) redelivered: u64,
    /// Different events with the same seq: a bug.
    pub(crate) conflicts: Vec<String>,
    /// When the terminal event was read (for client-side latency).
    pub(crate) ended_at: Option<Instant>,
}

impl SagaLog {
    /// The terminal event, if the saga ended.
    pub(crate) fn terminal(&self) -> Option<&SagaEvent> {
        self.events.values().find(|e| e.event_type.settles())
    }

    /// Problems with this saga's log: gaps, conflicts, terminal events not exactly once at the end.
    pub(crate) fn problems(&self, saga_id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .conflicts
            .iter()
            .map(|c| format!("{saga_id}: {c}"))
            .collect();
        for (i, seq) in self.events.keys().enumerate() {
            if *seq != i as i64 + 1 {
                out.push(format!(
                    "{saga_id}: seq {seq} found where {} was expected (gap)",
                    i + 1
                ));
                break;
            }
        }
        let terminals: Vec<&SagaEvent> = self
            .events
            .values()
            .filter(|e| e.event_type.settles())
            .collect();
        match terminals.as_slice() {
            [] => out.push(format!("{saga_id}: no terminal event")),
            [t] => {
                if self.events.values().next_back().map(|e| e.seq) != Some(t.seq) {
                    out.push(format!("{saga_id}: events after the terminal event"));
                }
            }
            many => out.push(format!("{saga_id}: {} terminal events", many.len())),
        }
        out
    }
}

/// The whole log, filled by a background reader.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    pub(crate) sagas: HashMap<String, SagaLog>,
    pub(crate) records: u64,
    pub(crate) undecodable: u64,
}

/// Starts reading every partition of `topic` from the beginning into a shared [`EventLog`].
pub(crate) async fn follow(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    topic: &str,
) -> anyhow::Result<Arc<Mutex<EventLog>>> {
    let consumer: StreamConsumer = kafka
        .config(
            "event-log-reader",
            &[(
                "fetch.wait.max.ms",
                &sagaflow_kafka::FETCH_WAIT_MAX_MS.to_string(),
            )],
        )
        .set("group.id", "sagaflow-eventlog-reader")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the event log reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "topic {topic} has no partitions");
    consumer.assign(&tpl)?;
    let codec = AsyncCodec::new(registry)?;
    let log = Arc::new(Mutex::new(EventLog::default()));
    let shared = log.clone();
    drop(tokio::spawn(async move {
        loop {
            let Ok(message) = consumer.recv().await else {
                continue;
            };
            let event: Option<SagaEvent> = match message.payload() {
                Some(bytes) => codec.decode(bytes).await.ok(),
                None => None,
            };
            let mut log = shared.lock().expect("event log lock");
            log.records += 1;
            let Some(event) = event else {
                log.undecodable += 1;
                continue;
            };
            let saga = log.sagas.entry(event.saga_id.clone()).or_default();
            match saga.events.get(&event.seq) {
                Some(existing) if *existing == event => saga.redelivered += 1,
                Some(existing) => saga.conflicts.push(format!(
                    "seq {} holds {:?} and {:?}",
                    event.seq, existing.event_type, event.event_type
                )),
                None => {
                    if event.event_type.settles() {
                        saga.ended_at = Some(Instant::now());
                    }
                    let _ = saga.events.insert(event.seq, event);
                }
            }
        }
    }));
    Ok(log)
}

/// Reads the whole log of `topic`: until nothing new has arrived for `quiet` (high watermarks
/// are not reliable on every broker, see docs/architecture.md).
pub(crate) async fn read_all(
    kafka: &KafkaSettings,
    registry: &RegistrySettings,
    topic: &str,
    quiet: Duration,
) -> anyhow::Result<Arc<Mutex<EventLog>>> {
    let log = follow(kafka, registry, topic).await?;
    let mut seen = u64::MAX;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let records = log.lock().expect("event log lock").records;
        if records != seen {
            seen = records;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(log);
        }
    }
}

/// Percentile (0..=100) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
