//! Participant controls: which command topics are paused, and their limits, read from
//! `<group>.control`.
//!
//! A pause concerns a participant's command topic, not a saga, so it cannot travel on a
//! saga-keyed input partition: every engine reads the whole compacted control topic instead, and
//! each partition task holds the commands its sagas send to a paused topic (`task::held`).
//! An engine reads the topic to its end before it decides anything, so that a restart or a
//! rebalance never sends a command that a pause recorded before it should hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, ThreadedProducer};
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
    if !key.starts_with(sagaflow_kafka::MARKER_PREFIX) {
        pending.push((key.to_string(), value.map(<[u8]>::to_vec)));
    }
}

/// The latest control of every command topic, as far as this engine has read.
pub(crate) struct Controls {
    consumer: BaseConsumer,
    topic: String,
    /// Command topics that are paused or have a limit, with their control.
    controls: BTreeMap<String, ParticipantControl>,
    /// Records not decoded yet because the registry did not answer, in the order they came.
    pending: Vec<(String, Option<Vec<u8>>)>,
    /// Since when a registry outage has kept records undecoded.
    blocked_since: Option<Instant>,
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
        let started = Instant::now();
        let mut controls = Self {
            consumer: crate::kafka::reader(kafka)?,
            topic: topic.to_string(),
            controls: BTreeMap::new(),
            pending: Vec::new(),
            blocked_since: None,
        };
        let markers: ThreadedProducer<DefaultProducerContext> = kafka
            .producer_config("engine-control", 0)
            .create()
            .map_err(|e| Error::kafka("creating the control topic's marker producer", e))?;
        let pending = &mut controls.pending;
        sagaflow_kafka::read_to_end(
            &controls.consumer,
            &markers,
            topic,
            writer,
            Duration::from_secs(60),
            |m| take(topic, pending, m.key(), m.payload()),
        )?;
        // Every record must be known before the first decision: wait out a registry outage
        // here rather than start without a pause an operator set.
        while !controls.apply(codec) {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(Error::Config(format!(
                    "the participant controls on {topic} cannot be decoded: the schema registry does not answer. The engine must know which participants are paused before it sends a command; it starts once the registry is back"
                )));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        info!(
            topic,
            controlled = ?controls.controls.keys().collect::<Vec<_>>(),
            took_ms = started.elapsed().as_millis() as u64,
            "participant controls read"
        );
        Ok(controls)
    }

    /// Whether every control record read so far is applied: while the registry is out, later
    /// ones may wait undecoded, and the engine decides nothing until they are known.
    pub(crate) fn caught_up(&self) -> bool {
        self.pending.is_empty()
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
        let _ = self.apply(codec);
    }

    /// Decodes the pending records in order; stops at a registry outage and keeps the rest for
    /// the next call. Returns whether nothing is left.
    fn apply(&mut self, codec: &BlockingCodec) -> bool {
        let mut done = 0;
        let mut outage = None;
        for (key, value) in &self.pending {
            let control = match value {
                None => None,
                Some(bytes) => match codec.decode::<ParticipantControl>(bytes) {
                    Ok(c) => Some(c),
                    Err(e) if e.is_outage() => {
                        outage = Some(e);
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
        match (outage, self.blocked_since) {
            (Some(e), None) => {
                warn!(topic = %self.topic, error = %e, "the registry is out: the engine decides nothing until it can read the participant controls that came");
                self.blocked_since = Some(Instant::now());
            }
            (None, Some(since)) => {
                info!(topic = %self.topic, waited_ms = since.elapsed().as_millis() as u64, "participant controls read again");
                self.blocked_since = None;
            }
            _ => {}
        }
        self.pending.is_empty()
    }

    /// Whether commands to `topic` are held.
    pub(crate) fn is_paused(&self, topic: &str) -> bool {
        self.controls.get(topic).is_some_and(|c| c.paused)
    }

    /// `topic`'s limits for `partition` of `partitions`: its share of the group's. A limit in
    /// flight is split as evenly as it goes, the first partitions taking the remainder, and
    /// each gets at least one, or it could never send (a limit below the partition count lets
    /// one command per partition through). A rate is split evenly.
    pub(crate) fn limits(&self, topic: &str, partition: i32, partitions: i32) -> Limits {
        limits_of(&self.controls, topic, partition, partitions)
    }

    /// The paused command topics.
    pub(crate) fn paused(&self) -> impl Iterator<Item = &str> {
        self.controls
            .iter()
            .filter(|(_, c)| c.paused)
            .map(|(t, _)| t.as_str())
    }
}

fn limits_of(
    controls: &BTreeMap<String, ParticipantControl>,
    topic: &str,
    partition: i32,
    partitions: i32,
) -> Limits {
    let Some(c) = controls.get(topic) else {
        return Limits::default();
    };
    let partitions = partitions.max(1);
    Limits {
        max_in_flight: c.max_in_flight.map(|n| {
            let share = n / partitions + i32::from(partition < n % partitions);
            usize::try_from(share.max(1)).unwrap_or(1)
        }),
        max_rate: c
            .max_rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| r / f64::from(partitions)),
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

    fn refill(&mut self, rate: f64, now: i64) {
        let elapsed = (now - self.at).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.at = now;
    }

    /// Whole tokens there now, at `rate` per second; takes none.
    pub(crate) fn available(&mut self, rate: f64, now: i64) -> usize {
        self.refill(rate, now);
        self.tokens as usize
    }

    /// Takes a token if one is there, at `rate` per second.
    pub(crate) fn take(&mut self, rate: f64, now: i64) -> bool {
        self.refill(rate, now);
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
    fn a_limit_is_shared_by_the_partitions_and_each_gets_one_at_least() {
        let control = |n: i32| ParticipantControl {
            topic: "t".into(),
            paused: false,
            max_in_flight: Some(n),
            max_rate: Some(10.0),
            actor: "a".into(),
            reason: None,
            request_id: "r".into(),
            at: 0,
        };
        let shares = |n: i32, partitions: i32| -> Vec<usize> {
            let mut c = BTreeMap::new();
            let _ = c.insert("t".to_string(), control(n));
            (0..partitions)
                .map(|p| {
                    limits_of(&c, "t", p, partitions)
                        .max_in_flight
                        .expect("limited")
                })
                .collect()
        };
        assert_eq!(shares(10, 4), [3, 3, 2, 2], "the remainder is not lost");
        assert_eq!(shares(8, 4), [2, 2, 2, 2]);
        assert_eq!(
            shares(1, 3),
            [1, 1, 1],
            "below the partition count: one each"
        );
        let mut c = BTreeMap::new();
        let _ = c.insert("t".to_string(), control(4));
        assert_eq!(limits_of(&c, "t", 0, 4).max_rate, Some(2.5));
        assert_eq!(limits_of(&c, "other", 0, 4), Limits::default());
    }

    #[test]
    fn a_bucket_allows_a_second_of_burst_then_the_rate() {
        let mut b = Bucket::full(4.0, 0);
        assert_eq!(b.available(4.0, 0), 4);
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
