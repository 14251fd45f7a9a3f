//! Sends admin commands and waits for the engine's answers.
//!
//! A command goes to `<group>.admin`, keyed by the saga id, and the engine decides it like any
//! other input. Its answer is the event it records, `ADMIN_COMMAND_APPLIED` or
//! `ADMIN_COMMAND_REJECTED` with the request id, or, for a saga the engine does not know, a
//! record on the dead-letter topic. One reader, positioned at the end of both topics before the
//! first command is sent, hands each answer to whoever waits for its request id, so that one
//! client serves a single command, a bulk job of thousands and an API's concurrent requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{
    now_ms, AdminAction, AdminCommand, AsyncCodec, EventType, RegistrySettings, Resolution,
    SagaEvent, Subject,
};
use sagaflow_kafka::KafkaSettings;
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::warn;

use crate::error::{Error, Result};

/// The header that carries the request id, so that a dead-lettered command can be matched
/// without decoding it.
pub const REQUEST_HEADER: &str = "sagaflow-request-id";

/// How long after the admin event the events of the same decision are still collected: the
/// engine produces a decision's events together, so they arrive within a few milliseconds.
const SETTLE: Duration = Duration::from_millis(300);

/// What an operator asks of one saga, before it gets its request id.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What to do.
    pub action: AdminAction,
    /// The step instance it concerns.
    pub step: Option<String>,
    /// SKIP (and RESOLVE MARK_DONE of an await): the step's output, a JSON object.
    pub output_json: Option<String>,
    /// RESOLVE: how.
    pub resolution: Option<Resolution>,
    /// Why.
    pub reason: Option<String>,
    /// Who asks.
    pub actor: String,
}

impl Request {
    /// Checks what can be checked without the saga: an output that is not a JSON object, an
    /// empty step or actor. The engine checks the rest against the saga's state.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(text) = &self.output_json {
            match serde_json::from_str::<Value>(text) {
                Ok(v) if v.is_object() => {}
                Ok(v) => return Err(format!("the step output must be a JSON object, got {v}")),
                Err(e) => return Err(format!("the step output is not valid JSON ({e}): {text}")),
            }
        }
        if self.step.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err("the step is empty: name a step instance, or leave it out".into());
        }
        if self.actor.trim().is_empty() {
            return Err("the actor must not be empty".into());
        }
        Ok(())
    }

    /// The command for saga `saga_id`, with a fresh request id.
    pub fn command(&self, saga_id: &str, job_id: Option<&str>) -> AdminCommand {
        AdminCommand {
            request_id: format!("req-{:016x}", rand::random::<u64>()),
            saga_id: saga_id.to_string(),
            action: self.action,
            step: self.step.clone(),
            output_json: self.output_json.clone(),
            resolution: self.resolution,
            actor: self.actor.clone(),
            reason: self.reason.clone(),
            job_id: job_id.map(str::to_string),
            requested_at: now_ms(),
        }
    }
}

/// How the engine answered one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied: the events are the admin event and what the command did.
    Applied,
    /// Rejected, for this reason (also on the saga's event log).
    Rejected(String),
    /// The engine could not take it (`reason` is the dead-letter reason code, e.g.
    /// `unknown-saga`; `detail` says more).
    DeadLettered {
        /// Reason code.
        reason: String,
        /// What the engine said.
        detail: String,
    },
    /// No answer within the wait: is an engine of the group running?
    Unanswered,
}

impl Outcome {
    /// Lower-case name, as the CLI and the API report it.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Rejected(_) => "rejected",
            Outcome::DeadLettered { .. } => "dead_lettered",
            Outcome::Unanswered => "unanswered",
        }
    }

    /// Why it was not applied, if it was not.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Applied => None,
            Outcome::Rejected(r) => Some(r.clone()),
            Outcome::DeadLettered { reason, detail } => Some(format!("{detail} ({reason})")),
            Outcome::Unanswered => Some("no answer from the engine in time".into()),
        }
    }
}

/// The engine's answer to one command.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The command as sent.
    pub command: AdminCommand,
    /// What became of it.
    pub outcome: Outcome,
    /// The admin event, then the events of the same decision (empty unless applied or
    /// rejected).
    pub events: Vec<SagaEvent>,
}

impl Answer {
    /// The saga's status after the command, when the events say.
    pub fn status(&self) -> Option<&str> {
        self.events.iter().rev().find_map(|e| e.status.as_deref())
    }
}

/// The detail of an event as JSON (`null` when it has none).
pub fn detail(event: &SagaEvent) -> Value {
    event
        .detail_json
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null)
}

/// A request waiting for its answer.
struct Waiter {
    saga_id: String,
    reply: Option<oneshot::Sender<(Outcome, Vec<SagaEvent>)>>,
    /// Set once the admin event came: the outcome, the events so far, and until when more of
    /// the same decision are collected.
    settling: Option<(Outcome, Vec<SagaEvent>, Instant)>,
}

type Waiters = Arc<Mutex<HashMap<String, Waiter>>>;

/// Sends admin commands to one engine group and hands back the engine's answers.
pub struct Commands {
    producer: FutureProducer,
    codec: AsyncCodec,
    admin_topic: String,
    waiters: Waiters,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("admin_topic", &self.admin_topic)
            .finish_non_exhaustive()
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Commands {
    /// Connects to group `group`'s topics; its answers are read from now on.
    pub async fn connect(
        kafka: &KafkaSettings,
        registry: &RegistrySettings,
        group: &str,
    ) -> Result<Self> {
        let events_topic = format!("{group}.events");
        let dlq_topic = format!("{group}.dlq");
        let reader_kafka = kafka.clone();
        let topics = [events_topic.clone(), dlq_topic];
        let group_name = group.to_string();
        // Metadata and watermark calls block: off the async threads.
        let reader =
            tokio::task::spawn_blocking(move || reader_at_end(&reader_kafka, &topics, &group_name))
                .await
                .map_err(|e| Error::Config(format!("the reader's setup thread failed: {e}")))??;
        let codec = AsyncCodec::new(registry)?;
        let waiters: Waiters = Arc::default();
        let reader = tokio::spawn(read_answers(
            reader,
            AsyncCodec::new(registry)?,
            events_topic,
            waiters.clone(),
        ));
        Ok(Self {
            producer: kafka
                .producer_config("admin-commands", 2)
                .create()
                .map_err(|e| Error::kafka("creating a producer", e))?,
            codec,
            admin_topic: format!("{group}.admin"),
            waiters,
            reader,
        })
    }

    /// Sends `command`; the receiver gets the engine's answer (dropped if none comes before
    /// the client is dropped). Use [`Commands::answer`] to wait for it.
    pub async fn submit(&self, command: &AdminCommand) -> Result<Pending> {
        let value = self
            .codec
            .encode(Subject::Topic(&self.admin_topic), command)
            .await?;
        let (tx, rx) = oneshot::channel();
        // Registered before sending, so even an instant answer finds its waiter.
        self.waiters.lock().expect("waiters lock").insert(
            command.request_id.clone(),
            Waiter {
                saga_id: command.saga_id.clone(),
                reply: Some(tx),
                settling: None,
            },
        );
        let sent = self
            .producer
            .send(
                FutureRecord::to(&self.admin_topic)
                    .key(&command.saga_id)
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: REQUEST_HEADER,
                        value: Some(command.request_id.as_str()),
                    })),
                Duration::from_secs(30),
            )
            .await;
        if let Err((e, _)) = sent {
            self.forget(&command.request_id);
            return Err(Error::kafka(
                format!("sending the command to {}", self.admin_topic),
                e,
            ));
        }
        Ok(Pending {
            command: command.clone(),
            rx: Some(rx),
            waiters: self.waiters.clone(),
        })
    }

    /// Waits up to `wait` for the answer to a submitted command.
    pub async fn answer(&self, mut pending: Pending, wait: Duration) -> Answer {
        let mut rx = pending
            .rx
            .take()
            .expect("a pending command is answered once");
        let (outcome, events) = match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(answer)) => answer,
            _ => {
                // The admin event may have come while its decision's events were still being
                // collected: that is an answer, not a silence.
                let waiter = self
                    .waiters
                    .lock()
                    .expect("waiters lock")
                    .remove(&pending.command.request_id);
                match (waiter.and_then(|w| w.settling), rx.try_recv()) {
                    (_, Ok(answer)) => answer,
                    (Some((outcome, events, _)), _) => (outcome, events),
                    (None, _) => (Outcome::Unanswered, Vec::new()),
                }
            }
        };
        Answer {
            command: pending.command.clone(),
            outcome,
            events,
        }
    }

    /// Sends `command` and waits up to `wait` for its answer.
    pub async fn send(&self, command: &AdminCommand, wait: Duration) -> Result<Answer> {
        let pending = self.submit(command).await?;
        Ok(self.answer(pending, wait).await)
    }

    fn forget(&self, request_id: &str) {
        self.waiters
            .lock()
            .expect("waiters lock")
            .remove(request_id);
    }
}

/// A command sent, its answer not yet awaited. Dropped (answered, or abandoned by a caller
/// that went away), it stops waiting.
pub struct Pending {
    command: AdminCommand,
    rx: Option<oneshot::Receiver<(Outcome, Vec<SagaEvent>)>>,
    waiters: Waiters,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("request_id", &self.command.request_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&self.command.request_id);
        }
    }
}

impl Pending {
    /// The command as sent.
    pub fn command(&self) -> &AdminCommand {
        &self.command
    }
}

/// A consumer assigned to every partition of `topics` at its current end.
fn reader_at_end(kafka: &KafkaSettings, topics: &[String], group: &str) -> Result<StreamConsumer> {
    let reader: StreamConsumer = kafka
        .config("admin-answers", &[("fetch.wait.max.ms", "20")])
        // Assigned, never subscribed: the group id is required but never joined or committed.
        .set("group.id", "sagaflow-admin-answers")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::kafka("creating a reader for the engine's answers", e))?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = reader
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("reading the metadata of {topic}"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(Error::NoTopic {
                topic: topic.clone(),
                group: group.to_string(),
            });
        }
        for partition in partitions {
            let (_, high) = reader
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(|e| Error::kafka(format!("reading the end of {topic}/{partition}"), e))?;
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(high))
                .map_err(|e| Error::kafka("assigning the answer reader", e))?;
        }
    }
    reader
        .assign(&assignment)
        .map_err(|e| Error::kafka("assigning the answer reader", e))?;
    Ok(reader)
}

/// Something the engine wrote.
enum Seen {
    /// The admin event of a request.
    Answer {
        request_id: String,
        event: SagaEvent,
    },
    /// Any other event.
    Event(SagaEvent),
    /// A request sent to the dead-letter topic.
    DeadLetter {
        request_id: String,
        reason: String,
        detail: String,
    },
}

/// Reads the event log and the dead-letter topic for as long as the client lives, and answers
/// the waiters.
async fn read_answers(
    reader: StreamConsumer,
    codec: AsyncCodec,
    events_topic: String,
    waiters: Waiters,
) {
    loop {
        let received = tokio::time::timeout(Duration::from_millis(50), reader.recv()).await;
        let seen = match received {
            Err(_) => None,
            Ok(Err(e)) => {
                warn!(error = %e, "reading the engine's answers");
                tokio::time::sleep(Duration::from_millis(200)).await;
                None
            }
            Ok(Ok(message)) => classify(&message, &codec, &events_topic).await,
        };
        let mut waiters = waiters.lock().expect("waiters lock");
        match seen {
            Some(Seen::Answer { request_id, event }) => {
                if let Some(w) = waiters.get_mut(&request_id) {
                    if w.settling.is_none() {
                        let outcome = if event.event_type == EventType::AdminCommandApplied {
                            Outcome::Applied
                        } else {
                            let why = detail(&event)["rejection"]
                                .as_str()
                                .unwrap_or("no reason given")
                                .to_string();
                            Outcome::Rejected(why)
                        };
                        w.settling = Some((outcome, vec![event], Instant::now() + SETTLE));
                    }
                }
            }
            Some(Seen::Event(event)) => {
                // The events right after the admin event, of the same decision, are what it
                // did; a new decision starts with an event that records its input.
                for w in waiters.values_mut() {
                    if let Some((_, events, _)) = w.settling.as_mut() {
                        let next = events.last().map(|e| e.seq + 1);
                        if w.saga_id == event.saga_id
                            && next == Some(event.seq)
                            && event.input_json.is_none()
                        {
                            events.push(event.clone());
                        }
                    }
                }
            }
            Some(Seen::DeadLetter {
                request_id,
                reason,
                detail,
            }) => {
                if let Some(mut w) = waiters.remove(&request_id) {
                    if let Some(reply) = w.reply.take() {
                        let _ = reply.send((Outcome::DeadLettered { reason, detail }, Vec::new()));
                    }
                }
            }
            None => {}
        }
        let now = Instant::now();
        let settled: Vec<String> = waiters
            .iter()
            .filter(|(_, w)| {
                w.settling
                    .as_ref()
                    .is_some_and(|(_, _, until)| *until <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in settled {
            if let Some(mut w) = waiters.remove(&id) {
                if let (Some(reply), Some((outcome, events, _))) = (w.reply.take(), w.settling) {
                    let _ = reply.send((outcome, events));
                }
            }
        }
    }
}

async fn classify(
    message: &rdkafka::message::BorrowedMessage<'_>,
    codec: &AsyncCodec,
    events_topic: &str,
) -> Option<Seen> {
    if message.topic() != events_topic {
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        return header(REQUEST_HEADER).map(|request_id| Seen::DeadLetter {
            request_id,
            reason: header("sagaflow-dlq-reason").unwrap_or_default(),
            detail: header("sagaflow-dlq-detail").unwrap_or_default(),
        });
    }
    let event = codec.decode::<SagaEvent>(message.payload()?).await.ok()?;
    let admin = matches!(
        event.event_type,
        EventType::AdminCommandApplied | EventType::AdminCommandRejected
    );
    let request_id = admin
        .then(|| {
            detail(&event)
                .get("request_id")?
                .as_str()
                .map(str::to_string)
        })
        .flatten();
    Some(match request_id {
        Some(request_id) => Seen::Answer { request_id, event },
        None => Seen::Event(event),
    })
}
