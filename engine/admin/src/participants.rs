//! Pausing a participant: `ParticipantControl` records on `<group>.control`, the compacted
//! topic every engine of the group follows (see the runtime's `control` module). While a
//! command topic is paused the engines hold the commands sagas send to it, and send them in
//! order on resume.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{now_ms, AsyncCodec, ParticipantControl, RegistrySettings, Subject};
use sagaflow_kafka::KafkaSettings;
use serde::Serialize;
use tracing::warn;

use crate::error::{Error, Result};

/// One participant's command topic as the dashboard and `sagaflow admin participants` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Participant {
    /// The command topic.
    pub topic: String,
    /// Whether the engines hold its commands.
    pub paused: bool,
    /// The last pause or resume, if there was one.
    pub control: Option<ParticipantControl>,
    /// Records on the topic that its consumer groups have not committed yet, per group;
    /// `None` when the broker would not say (the reason is logged).
    pub lag: Option<BTreeMap<String, i64>>,
}

/// What to change of a participant's dispatch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Hold its commands.
    Pause,
    /// Send them again.
    Resume,
    /// Set both limits (`None`: no limit), keeping the pause as it is.
    Limit {
        /// Most commands in flight across the group.
        max_in_flight: Option<i32>,
        /// Most commands per second across the group.
        max_rate: Option<f64>,
    },
}

impl Change {
    /// What is wrong with the limits, if anything.
    pub fn validate(self) -> std::result::Result<(), String> {
        if let Change::Limit {
            max_in_flight,
            max_rate,
        } = self
        {
            if max_in_flight.is_some_and(|n| n < 1) {
                return Err("max_in_flight must be at least 1 (leave it out for no limit)".into());
            }
            if max_rate.is_some_and(|r| !(0.01..=100_000.0).contains(&r)) {
                return Err(
                    "max_rate must be between 0.01 and 100000 commands per second (leave it out for no limit)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// Reads and writes a group's participant controls.
pub struct Participants {
    kafka: KafkaSettings,
    producer: FutureProducer,
    codec: AsyncCodec,
    group: String,
    topic: String,
    /// Command topics named by the deployed definitions, listed even if never paused.
    known: Vec<String>,
    /// One change at a time: each rewrites a topic's whole record from the current one, so two
    /// at once could lose one (a pause, say).
    writing: tokio::sync::Mutex<()>,
    /// Kafka clients kept between calls: creating them (and finding a group's coordinator)
    /// costs more than what they are asked.
    clients: Arc<Mutex<Clients>>,
}

/// The blocking clients the metadata, control and lag reads use, one call at a time.
struct Clients {
    reader: BaseConsumer,
    markers: ThreadedProducer<DefaultProducerContext>,
    /// Lists the consumer groups: its own client, since a broker that cannot (tansu 0.6)
    /// drops the connection.
    groups: BaseConsumer,
    /// A consumer per participant group, to read its committed offsets.
    offsets: BTreeMap<String, BaseConsumer>,
    /// Until when the lag is not asked again, after the broker would not list groups.
    no_lag_until: Option<std::time::Instant>,
}

impl Participants {
    /// Runs `f` with the clients on a blocking thread.
    async fn with_clients<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KafkaSettings, &mut Clients) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (kafka, clients) = (self.kafka.clone(), self.clients.clone());
        tokio::task::spawn_blocking(move || {
            let mut clients = clients.lock().expect("clients lock");
            f(&kafka, &mut clients)
        })
        .await
        .map_err(|e| Error::Config(format!("a Kafka client thread failed: {e}")))?
    }
}

impl std::fmt::Debug for Participants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participants")
            .field("topic", &self.topic)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl Participants {
    /// Group `group`'s controls; `known` are the command topics of its definitions.
    pub fn new(
        kafka: &KafkaSettings,
        registry: &RegistrySettings,
        group: &str,
        known: Vec<String>,
    ) -> Result<Self> {
        Ok(Self {
            kafka: kafka.clone(),
            producer: kafka
                .producer_config("admin-participants", 2)
                .create()
                .map_err(|e| Error::kafka("creating a producer", e))?,
            codec: AsyncCodec::new(registry)?,
            group: group.to_string(),
            topic: format!("{group}.control"),
            known,
            writing: tokio::sync::Mutex::new(()),
            clients: Arc::new(Mutex::new(Clients {
                reader: reader(kafka)?,
                markers: kafka
                    .producer_config("admin-markers", 0)
                    .create()
                    .map_err(|e| Error::kafka("creating a producer", e))?,
                groups: reader(kafka)?,
                offsets: BTreeMap::new(),
                no_lag_until: None,
            })),
        })
    }

    /// The control topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The latest control per command topic on the control topic (`None`: a tombstone).
    async fn controls(&self) -> Result<BTreeMap<String, Option<ParticipantControl>>> {
        let (control_topic, group) = (self.topic.clone(), self.group.clone());
        let records = self
            .with_clients(move |_, c| read_controls(c, &control_topic, &group))
            .await?;
        let mut latest = BTreeMap::new();
        for (key, value) in records {
            let control = match value {
                Some(bytes) => Some(self.codec.decode::<ParticipantControl>(&bytes).await?),
                None => None,
            };
            let _ = latest.insert(key, control);
        }
        Ok(latest)
    }

    /// Checks that `topic` is a topic the broker has (a typo would otherwise pause nothing,
    /// silently), and that the engines' control topic exists.
    pub async fn check(&self, topic: &str) -> Result<()> {
        // Kafka's own rule for topic names; anything else cannot be a topic, and is not asked.
        let legal = !topic.is_empty()
            && topic.len() <= 249
            && !topic.starts_with("__")
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !legal {
            return Err(self.unknown(topic));
        }
        let (name, control) = (topic.to_string(), self.topic.clone());
        let (exists, control_exists) = self
            .with_clients(move |_, c| {
                Ok((
                    !partitions(&c.reader, &name)?.is_empty(),
                    !partitions(&c.reader, &control)?.is_empty(),
                ))
            })
            .await?;
        if !exists {
            return Err(self.unknown(topic));
        }
        if !control_exists {
            return Err(Error::NoTopic {
                topic: self.topic.clone(),
                group: self.group.clone(),
            });
        }
        Ok(())
    }

    fn unknown(&self, topic: &str) -> Error {
        Error::UnknownParticipant {
            topic: topic.to_string(),
            hint: if self.known.is_empty() {
                String::new()
            } else {
                format!("; the definitions name {}", self.known.join(", "))
            },
        }
    }

    /// Pauses or resumes `topic` (after [`Participants::check`]), and returns the record the
    /// engines will follow.
    pub async fn set(
        &self,
        topic: &str,
        change: Change,
        actor: &str,
        reason: Option<String>,
    ) -> Result<ParticipantControl> {
        change.validate().map_err(Error::Config)?;
        self.check(topic).await?;
        let _one_at_a_time = self.writing.lock().await;
        // A pause keeps the limits and a new limit keeps the pause: the record is whole, so
        // the current one is read first.
        let current = self.controls().await?.remove(topic).flatten();
        let (mut paused, mut max_in_flight, mut max_rate) = current
            .map_or((false, None, None), |c| {
                (c.paused, c.max_in_flight, c.max_rate)
            });
        match change {
            Change::Pause => paused = true,
            Change::Resume => paused = false,
            Change::Limit {
                max_in_flight: n,
                max_rate: r,
            } => (max_in_flight, max_rate) = (n, r),
        }
        let control = ParticipantControl {
            topic: topic.to_string(),
            paused,
            max_in_flight,
            max_rate,
            actor: actor.to_string(),
            reason,
            request_id: format!("ctl-{:016x}", rand::random::<u64>()),
            at: now_ms(),
        };
        let value = self
            .codec
            .encode(Subject::Topic(&self.topic), &control)
            .await?;
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(topic).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| Error::kafka(format!("writing to {}", self.topic), e))?;
        Ok(control)
    }

    /// Every known command topic and every topic ever paused, with its state and its
    /// consumers' lag.
    pub async fn list(&self) -> Result<Vec<Participant>> {
        let mut latest: BTreeMap<String, Option<ParticipantControl>> =
            self.known.iter().map(|t| (t.clone(), None)).collect();
        latest.extend(self.controls().await?);
        let topics: Vec<String> = latest.keys().cloned().collect();
        let engine_group = self.group.clone();
        let mut lags = self
            .with_clients(move |kafka, c| {
                if c.no_lag_until
                    .is_some_and(|until| std::time::Instant::now() < until)
                {
                    return Ok(None);
                }
                match lag(kafka, c, &topics, &engine_group) {
                    Ok(lags) => Ok(Some(lags)),
                    Err(e) => {
                        // tansu 0.6, for one, does not answer ListGroups: asked again in a
                        // minute, not on every page refresh.
                        warn!(error = %e, "the participants' consumer lag could not be read; the broker may not list consumer groups");
                        c.no_lag_until =
                            Some(std::time::Instant::now() + Duration::from_secs(60));
                        Ok(None)
                    }
                }
            })
            .await?;
        Ok(latest
            .into_iter()
            .map(|(topic, control)| Participant {
                paused: control.as_ref().is_some_and(|c| c.paused),
                lag: lags.as_mut().map(|l| l.remove(&topic).unwrap_or_default()),
                topic,
                control,
            })
            .collect())
    }
}

fn reader(kafka: &KafkaSettings) -> Result<BaseConsumer> {
    kafka
        .config("admin-controls", &[("fetch.wait.max.ms", "20")])
        // Assigned, never subscribed: the group id is required but never joined or committed.
        .set("group.id", "sagaflow-admin-controls")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::kafka("creating a reader", e))
}

fn partitions(reader: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = reader
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| Error::kafka(format!("reading the metadata of {topic}"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The latest record per key on the control topic (engines' read markers left out).
fn read_controls(c: &Clients, topic: &str, group: &str) -> Result<Vec<(String, Option<Vec<u8>>)>> {
    if partitions(&c.reader, topic)?.is_empty() {
        return Err(Error::NoTopic {
            topic: topic.to_string(),
            group: group.to_string(),
        });
    }
    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    // One marker key per admin process, so that compaction keeps one.
    let me = format!("admin-{}", std::process::id());
    sagaflow_kafka::read_to_end(
        &c.reader,
        &c.markers,
        topic,
        &me,
        Duration::from_secs(30),
        |m| {
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                let _ = latest.insert(key.to_string(), m.payload().map(<[u8]>::to_vec));
            }
        },
    )?;
    Ok(latest.into_iter().collect())
}

/// Per topic, per consumer group whose members are assigned it (or, for a group on Apache
/// Kafka 4's consumer group protocol, which has committed offsets on it), the engine's own group
/// aside: how many records the group has not committed yet.
fn lag(
    kafka: &KafkaSettings,
    c: &mut Clients,
    topics: &[String],
    engine_group: &str,
) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let reader = &c.reader;
    let groups = c
        .groups
        .fetch_group_list(None, Duration::from_secs(10))
        .map_err(|e| Error::kafka("listing consumer groups", e))?;
    let mut ends: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for group in groups.groups() {
        let name = group.name();
        if name == engine_group || name.starts_with("sagaflow-") {
            continue;
        }
        // Apache Kafka 4 describes classic groups only: a group on the consumer group protocol
        // (KIP-848) comes back Dead, with no members. The topics it committed offsets on stand
        // in for its assignment.
        let undescribed = group.state() == "Dead" && group.members().is_empty();
        // Otherwise only groups consuming one of the topics now: asking every group of a busy
        // cluster for its offsets would make the page slow.
        let assigned: Vec<&String> = topics
            .iter()
            .filter(|t| {
                undescribed
                    || group.members().iter().any(|m| {
                        m.assignment()
                            .and_then(sagaflow_kafka::member_assignment)
                            .is_some_and(|a| a.contains_key(t.as_str()))
                    })
            })
            .collect();
        if assigned.is_empty() {
            continue;
        }
        let mut wanted = TopicPartitionList::new();
        for topic in &assigned {
            if !ends.contains_key(*topic) {
                let mut list = Vec::new();
                for p in partitions(reader, topic)? {
                    let (_, high) = reader
                        .fetch_watermarks(topic, p, Duration::from_secs(10))
                        .map_err(|e| Error::kafka(format!("reading the end of {topic}/{p}"), e))?;
                    list.push((p, high));
                }
                let _ = ends.insert((*topic).clone(), list);
            }
            for (p, _) in &ends[*topic] {
                wanted
                    .add_partition(topic, *p)
                    .set_offset(Offset::Invalid)
                    .map_err(|e| Error::kafka("listing partitions", e))?;
            }
        }
        if !c.offsets.contains_key(name) {
            let consumer: BaseConsumer = kafka
                .config("admin-offsets", &[])
                .set("group.id", name)
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| Error::kafka("creating an offset reader", e))?;
            let _ = c.offsets.insert(name.to_string(), consumer);
        }
        let committed = c.offsets[name]
            .committed_offsets(wanted, Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("reading group {name}'s offsets"), e))?;
        let elements = committed.elements();
        let read: BTreeSet<&str> = elements
            .iter()
            .filter(|e| !undescribed || matches!(e.offset(), Offset::Offset(_)))
            .map(|e| e.topic())
            .collect();
        for element in &elements {
            if !read.contains(element.topic()) {
                continue;
            }
            let end = ends
                .get(element.topic())
                .and_then(|l| l.iter().find(|(p, _)| *p == element.partition()))
                .map_or(0, |(_, high)| *high);
            // A partition the group never committed is behind by all it holds.
            let behind = match element.offset() {
                Offset::Offset(at) => (end - at).max(0),
                _ => end,
            };
            *out.entry(element.topic().to_string())
                .or_default()
                .entry(name.to_string())
                .or_insert(0) += behind;
        }
    }
    Ok(out)
}
