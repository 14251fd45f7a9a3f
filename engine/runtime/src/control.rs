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
    /// Command topics that are paused or have a limit, with their control.
    controls: BTreeMap<String, ParticipantControl>,
    /// Records not decoded yet because the registry did not answer, in the order they came.
    pending: Vec<(String, Option<Vec<u8>>)>,
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controls")
            .field("topic", &self.topic)
            .field("controlled", &self.controls.keys().collect::<Vec<_>>())
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
            controls: BTreeMap::new(),
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
            controlled = ?controls.controls.keys().collect::<Vec<_>>(),
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
            let active =
                control.filter(|c| c.paused || c.max_in_flight.is_some() || c.max_rate.is_some());
            match active {
                Some(c) => {
                    info!(command_topic = key, paused = c.paused, max_in_flight = ?c.max_in_flight, max_rate = ?c.max_rate, actor = %c.actor, reason = ?c.reason, request_id = %c.request_id, "participant dispatch changed");
                    let _ = self.controls.insert(key.clone(), c);
                }
                None => {
                    if self.controls.remove(key).is_some() {
                        info!(command_topic = key, "participant dispatching freely");
                    }
                }
            }
        }
        let _ = self.pending.drain(..done);
    }

    /// Whether commands to `topic` are held.
    pub(crate) fn is_paused(&self, topic: &str) -> bool {
        self.controls.get(topic).is_some_and(|c| c.paused)
    }

    /// `topic`'s limits, for one of `partitions` partitions: its even share of the group's.
    pub(crate) fn limits(&self, topic: &str, partitions: i32) -> Limits {
        let Some(c) = self.controls.get(topic) else {
            return Limits::default();
        };
        let partitions = partitions.max(1);
        Limits {
            // At least one each, or a partition could never send: a limit below the partition
            // count lets up to one command per partition through.
            max_in_flight: c
                .max_in_flight
                .map(|n| usize::try_from((n / partitions).max(1)).unwrap_or(1)),
            max_rate: c
                .max_rate
                .filter(|r| r.is_finite() && *r > 0.0)
                .map(|r| r / f64::from(partitions)),
        }
    }

    /// The paused command topics.
    pub(crate) fn paused(&self) -> impl Iterator<Item = &str> {
        self.controls
            .iter()
            .filter(|(_, c)| c.paused)
            .map(|(t, _)| t.as_str())
    }
}

/// One partition's share of a participant's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Limits {
    /// Most commands in flight from this partition.
    pub(crate) max_in_flight: Option<usize>,
    /// Most commands per second from this partition.
    pub(crate) max_rate: Option<f64>,
}

/// A token bucket for one topic's rate on one partition: a second's worth of burst at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: i64,
}

impl Bucket {
    pub(crate) fn full(rate: f64, now: i64) -> Self {
        Self {
            tokens: rate.max(1.0),
            at: now,
        }
    }

    /// Takes a token if one is there, at `rate` per second.
    pub(crate) fn take(&mut self, rate: f64, now: i64) -> bool {
        let elapsed = (now - self.at).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_second_of_burst_then_the_rate() {
        let mut b = Bucket::full(4.0, 0);
        assert_eq!((0..10).filter(|_| b.take(4.0, 0)).count(), 4);
        assert!(!b.take(4.0, 100), "0.4 of a token after 100 ms");
        assert!(b.take(4.0, 250), "1 token after 250 ms");
        assert_eq!((0..10).filter(|_| b.take(4.0, 10_250)).count(), 4, "capped");
        let mut slow = Bucket::full(0.5, 0);
        assert!(slow.take(0.5, 0), "one to start, even below 1/s");
        assert!(!slow.take(0.5, 1_000));
        assert!(slow.take(0.5, 2_000));
    }
}
