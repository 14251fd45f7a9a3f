//! The Kafka-backed store: the `_schemas` topic is the source of truth, the state a cache.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use sagaflow_kafka::{KafkaSettings, TopicPolicy, TopicSpec};
use tokio::sync::Mutex;
use tracing::{debug, info, instrument, warn};

use crate::error::{Error, Result};
use crate::log::Record;
use crate::model::{CompatibilityLevel, VersionSelector};
use crate::state::{NewSchema, Registration, State};

/// How long a Kafka request may take before the registry reports the broker as unreachable.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the end offset before a mutation, so a lost broker fails fast.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry's single partition.
const PARTITION: i32 = 0;

/// A record as read from the topic, before decoding.
type RawRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// The registry state plus the Kafka clients that persist its mutations.
pub(crate) struct Store {
    topic: String,
    state: RwLock<State>,
    /// Held for the whole of a mutation, so ids and versions are assigned one at a time.
    writer: Mutex<Writer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

struct Writer {
    producer: FutureProducer,
    consumer: Arc<BaseConsumer>,
    /// The offset after the last record applied to the state.
    next_offset: i64,
}

impl Store {
    /// Creates the topic if needed and restores the state from it.
    pub(crate) async fn open(
        kafka_settings: &KafkaSettings,
        policy: TopicPolicy,
        topic: &str,
    ) -> Result<Store> {
        let started = Instant::now();
        let kafka = |operation| {
            let topic = topic.to_owned();
            move |source| Error::Kafka {
                operation,
                topic,
                source,
            }
        };
        // One partition, compacted: the registry's log is read whole, in order, at start.
        kafka_settings
            .ensure_topics(&[TopicSpec::partitioned(topic, 1).compacted()], policy)
            .await?;
        let consumer: BaseConsumer = kafka_settings
            .config("registry", &[])
            // librdkafka refuses a manual assign() without a group.id ("Local: Unknown
            // group"), although assign() never joins the group. With auto commit off and no
            // subscribe(), the group is never contacted: no membership, no offsets.
            .set("group.id", format!("sagaflow-registry-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kafka("creating the consumer"))?;
        let consumer = Arc::new(consumer);
        check_partitions(consumer.clone(), topic).await?;
        let producer: FutureProducer = kafka_settings
            .producer_config("registry", 0)
            .set("message.timeout.ms", KAFKA_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(kafka("creating the producer"))?;
        let store = Store {
            topic: topic.to_owned(),
            state: RwLock::new(State::default()),
            writer: Mutex::new(Writer {
                producer,
                consumer,
                next_offset: 0,
            }),
        };
        let restored = {
            let mut writer = store.writer.lock().await;
            store.catch_up(&mut writer).await?
        };
        info!(
            topic,
            records = restored,
            subjects = store.state().subjects(Default::default(), None).len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "schema registry state restored"
        );
        Ok(store)
    }

    /// A read view of the current state.
    pub(crate) fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a schema; returns its id (the existing one if already registered).
    #[instrument(skip(self, new), fields(topic = %self.topic))]
    pub(crate) async fn register(&self, subject: &str, new: &NewSchema) -> Result<u32> {
        let (id, version, written) = self
            .mutate(|state| match state.plan_register(subject, new)? {
                Registration::Existing { id, version } => Ok((vec![], (id, version, false))),
                Registration::New {
                    id,
                    version,
                    record,
                } => Ok((vec![record], (id, version, true))),
            })
            .await?;
        if written {
            info!(id, version, "schema registered");
        } else {
            debug!(id, version, "schema already registered");
        }
        Ok(id)
    }

    /// Sets the global (`None`) or a subject's compatibility level.
    #[instrument(skip(self), fields(topic = %self.topic))]
    pub(crate) async fn set_level(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<CompatibilityLevel> {
        self.mutate(|_| Ok((vec![State::plan_set_level(subject, level)], ())))
            .await?;
        info!("compatibility level set");
        Ok(level)
    }

    /// Removes a subject's level or resets the global one; returns the previous level.
    #[instrument(skip(self), fields(topic = %self.topic))]
    pub(crate) async fn delete_level(&self, subject: Option<&str>) -> Result<CompatibilityLevel> {
        let previous = self
            .mutate(|state| {
                let (record, previous) = state.plan_delete_level(subject)?;
                Ok((vec![record], previous))
            })
            .await?;
        info!(%previous, "compatibility level removed");
        Ok(previous)
    }

    /// Deletes a subject; returns the versions deleted.
    #[instrument(skip(self), fields(topic = %self.topic))]
    pub(crate) async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let versions = self
            .mutate(|state| state.plan_delete_subject(subject, permanent))
            .await?;
        info!(?versions, "subject deleted");
        Ok(versions)
    }

    /// Deletes one version; returns its number.
    #[instrument(skip(self), fields(topic = %self.topic, selector = %selector))]
    pub(crate) async fn delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<u32> {
        let version = self
            .mutate(|state| {
                let (record, version) = state.plan_delete_version(subject, selector, permanent)?;
                Ok((vec![record], version))
            })
            .await?;
        info!(version, "version deleted");
        Ok(version)
    }

    /// Plans a mutation on up-to-date state, writes its records, then applies them.
    async fn mutate<T>(&self, plan: impl FnOnce(&State) -> Result<(Vec<Record>, T)>) -> Result<T> {
        let mut writer = self.writer.lock().await;
        // Picks up records this registry did not apply: a write that timed out here but
        // reached the broker, or a record written by another process.
        self.catch_up(&mut writer).await?;
        let (records, out) = plan(&self.state())?;
        for record in &records {
            self.write(&mut writer, record).await?;
        }
        Ok(out)
    }

    /// Writes one record and applies it once the broker has acknowledged it.
    async fn write(&self, writer: &mut Writer, record: &Record) -> Result<()> {
        let (key, value) = record.encode();
        let mut message = FutureRecord::<Vec<u8>, Vec<u8>>::to(&self.topic)
            .partition(PARTITION)
            .key(&key);
        if let Some(value) = &value {
            message = message.payload(value);
        }
        let delivery = writer
            .producer
            .send(message, Timeout::After(KAFKA_TIMEOUT))
            .await
            .map_err(|(source, _)| self.kafka_error("writing a record", source))?;
        if delivery.offset == writer.next_offset {
            self.apply(std::slice::from_ref(record));
            writer.next_offset += 1;
        } else if delivery.offset > writer.next_offset {
            warn!(
                expected = writer.next_offset,
                actual = delivery.offset,
                "records appeared in the schemas topic that this registry did not write; \
                 run only one registry per topic"
            );
            let to = delivery.offset + 1;
            self.read_and_apply(writer, to).await?;
        } else {
            return Err(self.store_error(format!(
                "the broker stored a record at offset {} although offsets up to {} were \
                 already read; the topic was probably deleted and recreated. Restart the \
                 registry",
                delivery.offset, writer.next_offset
            )));
        }
        Ok(())
    }

    /// Reads and applies every record up to the high watermark; returns how many were read.
    async fn catch_up(&self, writer: &mut Writer) -> Result<usize> {
        let consumer = writer.consumer.clone();
        let topic = self.topic.clone();
        let (low, high) = blocking(&self.topic, move || {
            consumer.fetch_watermarks(&topic, PARTITION, WATERMARK_TIMEOUT)
        })
        .await?
        .map_err(|e| match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            ) => self.store_error(
                "it no longer exists on the broker (deleted, or the broker lost its data); \
                 restart the registry to recreate it, then register the schemas again"
                    .to_owned(),
            ),
            _ => self.kafka_error("reading the watermarks", e),
        })?;
        if high < writer.next_offset {
            return Err(self.store_error(format!(
                "its end offset is {high} but offsets up to {} were already read; the topic was \
                 probably deleted and recreated. Restart the registry",
                writer.next_offset
            )));
        }
        writer.next_offset = writer.next_offset.max(low);
        self.read_and_apply(writer, high).await
    }

    /// Reads offsets `next_offset..to` and applies them.
    async fn read_and_apply(&self, writer: &mut Writer, to: i64) -> Result<usize> {
        let from = writer.next_offset;
        if from >= to {
            return Ok(0);
        }
        let consumer = writer.consumer.clone();
        let topic = self.topic.clone();
        let raw = blocking(&self.topic, move || read_range(&consumer, &topic, from, to)).await??;
        let mut records = Vec::with_capacity(raw.len());
        for (offset, key, value) in raw {
            let corrupt = |reason: String| Error::CorruptRecord {
                topic: self.topic.clone(),
                offset,
                reason,
            };
            let key = key.ok_or_else(|| corrupt("the record has no key".to_owned()))?;
            match Record::decode(&key, value.as_deref()).map_err(corrupt)? {
                Some(record) => records.push(record),
                None => debug!(
                    offset,
                    "skipping a record of a key type this registry ignores"
                ),
            }
        }
        self.apply(&records);
        writer.next_offset = to;
        debug!(from, to, "applied records from the schemas topic");
        Ok(records.len())
    }

    fn apply(&self, records: &[Record]) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        for record in records {
            state.apply(record);
        }
        state.parse_pending();
    }

    fn kafka_error(&self, operation: &'static str, source: KafkaError) -> Error {
        Error::Kafka {
            operation,
            topic: self.topic.clone(),
            source,
        }
    }

    fn store_error(&self, reason: String) -> Error {
        Error::Store {
            topic: self.topic.clone(),
            reason,
        }
    }
}

/// Waits for the topic's metadata and checks it has exactly one partition.
async fn check_partitions(consumer: Arc<BaseConsumer>, topic: &str) -> Result<()> {
    let name = topic.to_owned();
    let deadline = Instant::now() + KAFKA_TIMEOUT;
    let partitions = blocking(topic, move || loop {
        let result = consumer
            .fetch_metadata(Some(&name), KAFKA_TIMEOUT)
            .map(|metadata| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none())
                    .map(|t| t.partitions().len())
            });
        match result {
            Ok(Some(n)) if n > 0 => return Ok(n),
            // A freshly created topic may take a moment to show up in the metadata.
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) => return Ok(0),
            Err(e) => return Err(e),
        }
    })
    .await?
    .map_err(|source| Error::Kafka {
        operation: "reading the topic metadata",
        topic: topic.to_owned(),
        source,
    })?;
    if partitions != 1 {
        return Err(Error::Store {
            topic: topic.to_owned(),
            reason: format!(
                "it has {partitions} partitions but the registry needs exactly 1 to keep its \
                 records in order; use another topic or recreate it with 1 partition"
            ),
        });
    }
    Ok(())
}

/// Reads offsets `from..to` of the partition (blocking).
fn read_range(consumer: &BaseConsumer, topic: &str, from: i64, to: i64) -> Result<Vec<RawRecord>> {
    let kafka = |operation| {
        move |source| Error::Kafka {
            operation,
            topic: topic.to_owned(),
            source,
        }
    };
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, PARTITION, Offset::Offset(from))
        .map_err(kafka("assigning the partition"))?;
    consumer
        .assign(&assignment)
        .map_err(kafka("assigning the partition"))?;
    let mut records = Vec::new();
    let mut next = from;
    let mut last_progress = Instant::now();
    while next < to {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                if message.offset() < next {
                    continue;
                }
                next = message.offset() + 1;
                last_progress = Instant::now();
                records.push((
                    message.offset(),
                    message.key().map(<[u8]>::to_vec),
                    message.payload().map(<[u8]>::to_vec),
                ));
            }
            Some(Err(e)) => return Err(kafka("reading records")(e)),
            None => {
                // Compaction can leave gaps: the position tells whether we are past `to`.
                let position = consumer.position().ok().and_then(|p| {
                    p.find_partition(topic, PARTITION)
                        .and_then(|p| p.offset().to_raw())
                });
                if position.is_some_and(|p| p >= to) {
                    break;
                }
                if last_progress.elapsed() > KAFKA_TIMEOUT {
                    return Err(Error::Store {
                        topic: topic.to_owned(),
                        reason: format!(
                            "no record arrived for {}s while reading offsets {next}..{to}; check \
                             that the broker is reachable",
                            KAFKA_TIMEOUT.as_secs()
                        ),
                    });
                }
            }
        }
    }
    consumer
        .unassign()
        .map_err(kafka("releasing the partition"))?;
    Ok(records)
}

/// Runs blocking Kafka calls off the async runtime.
async fn blocking<T: Send + 'static>(
    topic: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store {
            topic: topic.to_owned(),
            reason: format!("a Kafka client task failed: {e}"),
        })
}
