//! Participant controls: which command topics are paused, read from `<group>.control`.
//!
//! A pause concerns a participant's command topic, not a saga, so it cannot travel on a
//! saga-keyed input partition: every engine reads the whole compacted control topic instead, and
//! each partition task holds the commands its sagas send to a paused topic (`task::held`).
//! An engine reads the topic to its end before it decides anything, so that a restart or a
//! rebalance never sends a command that a pause recorded before it should hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, ParticipantControl};
use sagaflow_kafka::KafkaSettings;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Queues a control record read from `topic` for decoding.
fn take(
    topic: &str,
    pending: &mut Vec<(String, Option<Vec<u8>>)>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
        warn!(
            topic,
            "control record without a UTF-8 key (the command topic) ignored"
        );
        return;
    };
    if !key.starts_with(MARKER_PREFIX) {
        pending.push((key.to_string(), value.map(<[u8]>::to_vec)));
    }
}

/// Keys under this prefix are the engines' own read markers, not command topics.
const MARKER_PREFIX: &str = "__marker/";

/// The latest control of every command topic, as far as this engine has read.
pub(crate) struct Controls {
    consumer: BaseConsumer,
    topic: String,
    /// Paused command topics and the control that paused them.
    paused: BTreeMap<String, ParticipantControl>,
    /// Records not decoded yet because the registry did not answer, in the order they came.
    pending: Vec<(String, Option<Vec<u8>>)>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls")
            .field("topic", &self.topic)
            .field("paused", &self.paused.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Controls {
    /// Reads `topic` from its beginning to its end, then keeps following it. The end is a
    /// marker this engine writes (`writer` names it): a broker's high watermark can lag behind
    /// its last batch (tansu 0.6), an offset we wrote ourselves cannot.
    pub(crate) fn open(
        kafka: &KafkaSettings,
        topic: &str,
        writer: &str,
        codec: &BlockingCodec,
    ) -> Result<Self> {
        let consumer = crate::kafka::reader(kafka)?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("reading the partitions of {topic}"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::Config(format!(
                "the control topic {topic} has no partitions; create the engine's topics first (sagaflow engine creates them unless --create-topics=false)"
            )));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .map_err(|e| Error::kafka("building an assignment", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("assigning {topic}"), e))?;
        let mut controls = Self {
            consumer,
            topic: topic.to_string(),
            paused: BTreeMap::new(),
            pending: Vec::new(),
        };
        let producer = crate::kafka::sync_producer(kafka)?;
        let marker = format!("{MARKER_PREFIX}{writer}");
        let mut ends = BTreeMap::new();
        for p in &partitions {
            let end =
                crate::kafka::write_and_locate(&producer, topic, *p, marker.as_bytes(), None)?;
            let _ = ends.insert(*p, end);
        }
        let started = Instant::now();
        let mut progressed = Instant::now();
        while !ends.is_empty() {
            match controls.consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(e)) if sagaflow_kafka::is_transient(&e) => {}
                Some(Err(e)) => return Err(Error::kafka(format!("reading {topic}"), e)),
                Some(Ok(m)) => {
                    progressed = Instant::now();
                    if ends
                        .get(&m.partition())
                        .is_some_and(|end| m.offset() >= *end)
                    {
                        let _ = ends.remove(&m.partition());
                    }
                    take(&controls.topic, &mut controls.pending, m.key(), m.payload());
                }
            }
            if progressed.elapsed() > Duration::from_secs(60) {
                return Err(Error::Config(format!(
                    "the control topic {topic} did not deliver its own end marker within 60 s; check that the broker is up and that the engine may read {topic}"
                )));
            }
        }
        controls.apply(codec);
        info!(
            topic,
            paused = ?controls.paused.keys().collect::<Vec<_>>(),
            took_ms = started.elapsed().as_millis() as u64,
            "participant controls read"
        );
        Ok(controls)
    }

    /// Reads what came since the last call, without waiting.
    pub(crate) fn poll(&mut self, codec: &BlockingCodec) {
        for _ in 0..1000 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    warn!(topic = %self.topic, error = %e, "reading the control topic");
                    break;
                }
                Some(Ok(m)) => take(&self.topic, &mut self.pending, m.key(), m.payload()),
            }
        }
        self.apply(codec);
    }

    /// Decodes the pending records in order; stops at a registry outage and keeps the rest for
    /// the next call.
    fn apply(&mut self, codec: &BlockingCodec) {
        let mut done = 0;
        for (key, value) in &self.pending {
            let control = match value {
                None => None,
                Some(bytes) => match codec.decode::<ParticipantControl>(bytes) {
                    Ok(c) => Some(c),
                    Err(e) if e.is_outage() => {
                        warn!(topic = %self.topic, error = %e, "the registry is out; participant controls wait for it");
                        break;
                    }
                    Err(e) => {
                        warn!(topic = %self.topic, key, error = %e, "undecodable participant control ignored");
                        done += 1;
                        continue;
                    }
                },
            };
            done += 1;
            let was = self.paused.contains_key(key);
            match control.filter(|c| c.paused) {
                Some(c) => {
                    info!(command_topic = key, actor = %c.actor, reason = ?c.reason, request_id = %c.request_id, "participant paused");
                    let _ = self.paused.insert(key.clone(), c);
                }
                None => {
                    if was {
                        info!(command_topic = key, "participant resumed");
                    }
                    let _ = self.paused.remove(key);
                }
            }
        }
        let _ = self.pending.drain(..done);
    }

    /// Whether commands to `topic` are held.
    pub(crate) fn is_paused(&self, topic: &str) -> bool {
        self.paused.contains_key(topic)
    }

    /// The paused command topics.
    pub(crate) fn paused(&self) -> impl Iterator<Item = &str> {
        self.paused.keys().map(String::as_str)
    }
}
