//! Serde mirrors of the `.avsc` files. Field names and enum symbols match the schemas exactly.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::schemas::{self, SchemaFile};

/// A record type with an embedded schema.
pub trait Contract: Serialize + DeserializeOwned {
    /// Its schema file.
    const SCHEMA: &'static SchemaFile;
}

macro_rules! contract {
    ($ty:ty, $schema:ident) => {
        impl Contract for $ty {
            const SCHEMA: &'static SchemaFile = &schemas::$schema;
        }
    };
}

/// Request to start a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartSaga {
    /// Client-chosen request id.
    pub request_id: String,
    /// Saga instance id (the Kafka key).
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version, `None` for the latest.
    pub version: Option<i32>,
    /// Initial context as a JSON object.
    pub input_json: String,
    /// Client time, epoch ms.
    pub requested_at: i64,
}
contract!(StartSaga, START_SAGA);

/// Whether a command runs a step or compensates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// The step's own command.
    Forward,
    /// The step's compensation.
    Compensate,
}

impl Phase {
    /// Lower-case name used in ids and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Compensate => "compensate",
        }
    }
}

/// A command to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Stable message id.
    pub message_id: String,
    /// Saga instance id.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: i32,
    /// Step name.
    pub step: String,
    /// Forward or compensation.
    pub phase: Phase,
    /// Attempt number, from 1.
    pub attempt: i32,
    /// Key participants deduplicate on.
    pub idempotency_key: String,
    /// Command type from the definition.
    pub command_type: String,
    /// Payload as JSON.
    pub payload_json: String,
    /// Where to send the reply.
    pub reply_to: String,
    /// Epoch ms after which the attempt is abandoned.
    pub deadline: Option<i64>,
    /// Engine time of the decision.
    pub issued_at: i64,
}
contract!(Command, COMMAND);

/// Success or failure of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplyStatus {
    /// The command succeeded.
    Success,
    /// The command failed.
    Failure,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Whether a retry may succeed.
    pub retryable: bool,
}

/// A participant's answer to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Id of this reply.
    pub message_id: String,
    /// Saga instance id.
    pub saga_id: String,
    /// Step name.
    pub step: String,
    /// Copied from the command.
    pub phase: Phase,
    /// Copied from the command.
    pub attempt: i32,
    /// Copied from the command.
    pub idempotency_key: String,
    /// Outcome.
    pub status: ReplyStatus,
    /// Output on success, JSON.
    pub output_json: Option<String>,
    /// Error on failure.
    pub error: Option<ReplyError>,
    /// Participant time, epoch ms.
    pub replied_at: i64,
}
contract!(Reply, REPLY);

impl Reply {
    /// A participant's answer to `command`: success with the output (JSON text), or the error.
    pub fn answering(
        command: &Command,
        result: std::result::Result<String, ReplyError>,
        replied_at: i64,
    ) -> Self {
        let (status, output_json, error) = match result {
            Ok(output) => (ReplyStatus::Success, Some(output), None),
            Err(e) => (ReplyStatus::Failure, None, Some(e)),
        };
        Self {
            message_id: format!("reply/{}", command.message_id),
            saga_id: command.saga_id.clone(),
            step: command.step.clone(),
            phase: command.phase,
            attempt: command.attempt,
            idempotency_key: command.idempotency_key.clone(),
            status,
            output_json,
            error,
            replied_at,
        }
    }
}

/// Kinds of saga events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// The saga started.
    SagaStarted,
    /// A step command was sent.
    StepDispatched,
    /// A step succeeded.
    StepSucceeded,
    /// A step failed.
    StepFailed,
    /// A compensation command was sent.
    CompensationDispatched,
    /// A compensation succeeded.
    CompensationSucceeded,
    /// A compensation failed.
    CompensationFailed,
    /// Every step succeeded.
    SagaCompleted,
    /// Every completed step was compensated.
    SagaCompensated,
    /// The saga ended needing an operator: written only by versions before incidents existed.
    SagaFailed,
    /// A failed attempt will be retried at `due`.
    StepRetryScheduled,
    /// An attempt got no reply within its timeout.
    StepTimedOut,
    /// A step ran out of time across all its attempts.
    StepDeadlineExceeded,
    /// The saga ran out of time: it compensates.
    SagaDeadlineExceeded,
    /// A failed compensation will be retried at `due`.
    CompensationRetryScheduled,
    /// A wait step started; it ends at `due`.
    WaitStarted,
    /// A wait step ended.
    WaitEnded,
    /// An await step started waiting for an external event (until `due`, if it has a timeout).
    AwaitStarted,
    /// The awaited external event arrived.
    EventReceived,
    /// The awaited external event did not arrive in time.
    AwaitTimedOut,
    /// A parallel, choice or for_each step started its branches (detail: which).
    StepStarted,
    /// A step did not run: its `when` was false, or no choice branch matched.
    StepSkipped,
    /// A branch of a parallel or choice step, or an iteration of a for_each, started.
    BranchStarted,
    /// A branch finished its steps.
    BranchSucceeded,
    /// A branch failed; what it completed is compensated.
    BranchFailed,
    /// A branch was stopped (its join was met or can no longer be); what it completed is
    /// compensated, and an attempt in flight is compensated once it is resolved.
    BranchCancelled,
    /// The saga cannot go on without an operator (a compensation failed for good, or an await
    /// timed out with `on_timeout: fail`): it enters INCIDENT, keeping its state and timers.
    /// The detail says why: `cause`, `step` and `error`.
    SagaIncident,
    /// An operator's admin command was applied (detail: request_id, action, actor, reason,
    /// job_id, step).
    AdminCommandApplied,
    /// An operator's admin command did not apply to the saga's state (detail adds `rejection`).
    AdminCommandRejected,
    /// An operator ended the saga without compensating anything.
    SagaAborted,
    /// An operator paused the saga: timers are deferred and inputs held.
    SagaPaused,
    /// The saga resumed; what was held follows.
    SagaResumed,
    /// An input arrived, or a timer came due, while the saga was paused: held until resume.
    InputHeld,
    /// A command the saga sent is held by the engine: its participant is paused. Its attempt
    /// timeout is stopped until it is released.
    CommandHeld,
    /// A held command was sent; its attempt timeout starts now (`due`).
    CommandReleased,
}

impl EventType {
    /// The Avro symbol, as the schema and the JSON forms spell it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::SagaStarted => "SAGA_STARTED",
            Self::StepDispatched => "STEP_DISPATCHED",
            Self::StepSucceeded => "STEP_SUCCEEDED",
            Self::StepFailed => "STEP_FAILED",
            Self::CompensationDispatched => "COMPENSATION_DISPATCHED",
            Self::CompensationSucceeded => "COMPENSATION_SUCCEEDED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
            Self::SagaCompleted => "SAGA_COMPLETED",
            Self::SagaCompensated => "SAGA_COMPENSATED",
            Self::SagaFailed => "SAGA_FAILED",
            Self::StepRetryScheduled => "STEP_RETRY_SCHEDULED",
            Self::StepTimedOut => "STEP_TIMED_OUT",
            Self::StepDeadlineExceeded => "STEP_DEADLINE_EXCEEDED",
            Self::SagaDeadlineExceeded => "SAGA_DEADLINE_EXCEEDED",
            Self::CompensationRetryScheduled => "COMPENSATION_RETRY_SCHEDULED",
            Self::WaitStarted => "WAIT_STARTED",
            Self::WaitEnded => "WAIT_ENDED",
            Self::AwaitStarted => "AWAIT_STARTED",
            Self::EventReceived => "EVENT_RECEIVED",
            Self::AwaitTimedOut => "AWAIT_TIMED_OUT",
            Self::StepStarted => "STEP_STARTED",
            Self::StepSkipped => "STEP_SKIPPED",
            Self::BranchStarted => "BRANCH_STARTED",
            Self::BranchSucceeded => "BRANCH_SUCCEEDED",
            Self::BranchFailed => "BRANCH_FAILED",
            Self::BranchCancelled => "BRANCH_CANCELLED",
            Self::SagaIncident => "SAGA_INCIDENT",
            Self::AdminCommandApplied => "ADMIN_COMMAND_APPLIED",
            Self::AdminCommandRejected => "ADMIN_COMMAND_REJECTED",
            Self::SagaAborted => "SAGA_ABORTED",
            Self::SagaPaused => "SAGA_PAUSED",
            Self::SagaResumed => "SAGA_RESUMED",
            Self::InputHeld => "INPUT_HELD",
            Self::CommandHeld => "COMMAND_HELD",
            Self::CommandReleased => "COMMAND_RELEASED",
        }
    }
}

/// One state transition on the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaEvent {
    /// `saga_id/seq`.
    pub event_id: String,
    /// Saga instance id.
    pub saga_id: String,
    /// Gapless per-saga sequence, from 1.
    pub seq: i64,
    /// Event kind.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: i32,
    /// Step, for step events.
    pub step: Option<String>,
    /// Attempt, for step events.
    pub attempt: Option<i32>,
    /// Engine time, epoch ms.
    pub at: i64,
    /// Detail JSON.
    pub detail_json: Option<String>,
    /// When what this event scheduled is due, epoch ms.
    #[serde(default)]
    pub due: Option<i64>,
    /// On the first event of a decision: the input that caused it, as JSON.
    #[serde(default)]
    pub input_json: Option<String>,
    /// The saga's status once this event applied, as its Avro symbol (`RUNNING`, ...).
    #[serde(default)]
    pub status: Option<String>,
    /// On the last event of a decision that changed a business key: all of them, as JSON.
    #[serde(default)]
    pub index_json: Option<String>,
}
contract!(SagaEvent, SAGA_EVENT);

impl SagaEvent {
    /// The event as one JSON object, its JSON strings (detail, input, index) parsed: what
    /// `sagaflow events` prints and the admin API answers.
    pub fn to_json(&self) -> serde_json::Value {
        let parsed = |text: &Option<String>| {
            text.as_deref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        };
        serde_json::json!({
            "saga_id": self.saga_id, "seq": self.seq, "type": self.event_type,
            "definition": self.definition, "version": self.version, "step": self.step,
            "attempt": self.attempt, "at": self.at, "due": self.due,
            "detail": parsed(&self.detail_json), "input": parsed(&self.input_json),
            "status": self.status, "index": parsed(&self.index_json),
        })
    }

    /// Reads back a line written from [`SagaEvent::to_json`]; the error names the missing or
    /// bad field.
    pub fn from_json(line: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let text = |key: &str| -> std::result::Result<String, String> {
            v.get(key)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("no `{key}`"))
        };
        let int = |key: &str| v.get(key).and_then(serde_json::Value::as_i64);
        let json = |key: &str| v.get(key).filter(|x| !x.is_null()).map(|x| x.to_string());
        let saga_id = text("saga_id")?;
        let seq = int("seq").ok_or("no `seq`")?;
        Ok(SagaEvent {
            event_id: format!("{saga_id}/{seq}"),
            saga_id,
            seq,
            event_type: serde_json::from_value(v.get("type").cloned().unwrap_or_default())
                .map_err(|e| format!("`type`: {e}"))?,
            definition: text("definition")?,
            version: int("version")
                .and_then(|x| i32::try_from(x).ok())
                .ok_or("no `version`")?,
            step: v.get("step").and_then(|x| x.as_str()).map(str::to_string),
            attempt: int("attempt").and_then(|x| i32::try_from(x).ok()),
            at: int("at").ok_or("no `at`")?,
            detail_json: json("detail"),
            due: int("due"),
            input_json: json("input"),
            status: v.get("status").and_then(|x| x.as_str()).map(str::to_string),
            index_json: json("index"),
        })
    }
}

/// Lifecycle of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SagaStatus {
    /// Steps are running.
    Running,
    /// Compensations are running.
    Compensating,
    /// Terminal: every step succeeded.
    Completed,
    /// Terminal: every completed step was compensated.
    Compensated,
    /// Terminal: needed an operator. Only sagas that ended before incidents existed have it.
    Failed,
    /// Waits for an operator (see `EventType::SagaIncident`); not terminal.
    Incident,
    /// Terminal: an operator ended it without compensating (see `EventType::SagaAborted`).
    Aborted,
}

impl SagaStatus {
    /// The Avro symbol, as the event log's `status` carries it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Compensating => "COMPENSATING",
            Self::Completed => "COMPLETED",
            Self::Compensated => "COMPENSATED",
            Self::Failed => "FAILED",
            Self::Incident => "INCIDENT",
            Self::Aborted => "ABORTED",
        }
    }

    /// Whether no further input changes the saga.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated | Self::Failed | Self::Aborted
        )
    }
}

impl EventType {
    /// Whether the event leaves the saga settled: ended, or waiting for an operator in an
    /// incident. What waits for a saga to finish waits for one of these.
    pub fn settles(self) -> bool {
        matches!(
            self,
            Self::SagaCompleted
                | Self::SagaCompensated
                | Self::SagaFailed
                | Self::SagaIncident
                | Self::SagaAborted
        )
    }
}

/// Lifecycle of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Command sent, waiting for the reply.
    Running,
    /// Reply was a success.
    Succeeded,
    /// Reply was a failure.
    Failed,
    /// Compensation sent, waiting for the reply.
    Compensating,
    /// Compensation succeeded (or the step had none).
    Compensated,
    /// Compensation failed for good.
    CompensationFailed,
    /// Never run because the saga ended first.
    Skipped,
    /// An attempt failed; the next one is scheduled.
    Backoff,
    /// A wait or await step is waiting.
    Waiting,
    /// The step ran out of time with its outcome unknown: it is compensated if it has a
    /// compensation.
    TimedOut,
    /// Its branch was cancelled while an attempt was in flight: the attempt's reply, or its
    /// timeout, resolves it, and a success is then compensated.
    Cancelled,
}

impl StepStatus {
    /// The Avro symbol, as the state and the JSON forms spell it.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Compensating => "COMPENSATING",
            Self::Compensated => "COMPENSATED",
            Self::CompensationFailed => "COMPENSATION_FAILED",
            Self::Skipped => "SKIPPED",
            Self::Backoff => "BACKOFF",
            Self::Waiting => "WAITING",
            Self::TimedOut => "TIMED_OUT",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// State of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Step name.
    pub name: String,
    /// Step status.
    pub status: StepStatus,
    /// Current attempt of the current phase.
    pub attempt: i32,
    /// When the current attempt was sent.
    pub dispatched_at: Option<i64>,
    /// When the step last finished a phase.
    pub finished_at: Option<i64>,
    /// Await steps: the correlation value waited on.
    #[serde(default)]
    pub correlation: Option<String>,
    /// Await steps: the signal that completed the step.
    #[serde(default)]
    pub signal_id: Option<String>,
    /// An attempt of the current phase timed out with no definite reply since: its effect may
    /// stand.
    #[serde(default)]
    pub uncertain: bool,
    /// for_each steps: the list the iterations run over, read when the step started.
    #[serde(default)]
    pub items_json: Option<String>,
}

/// The engine's state of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// Saga instance id.
    pub saga_id: String,
    /// Definition name.
    pub definition: String,
    /// Pinned definition version.
    pub version: i32,
    /// Lifecycle status.
    pub status: SagaStatus,
    /// Context JSON object.
    pub context_json: String,
    /// One entry per definition step, in definition order.
    pub steps: Vec<StepState>,
    /// Succeeded steps in completion order.
    pub completion_order: Vec<String>,
    /// seq of the next event.
    pub next_seq: i64,
    /// Start time, epoch ms.
    pub started_at: i64,
    /// Last change, epoch ms.
    pub updated_at: i64,
    /// Duplicate or stale replies ignored.
    pub ignored_replies: i64,
    /// Failure that triggered compensation, JSON.
    pub failure_json: Option<String>,
    /// Pending timers.
    #[serde(default)]
    pub timers: Vec<Timer>,
    /// Finished and past its retention: only a marker that recognises duplicates is left.
    #[serde(default)]
    pub compacted: bool,
    /// Set while an operator has paused the saga.
    #[serde(default)]
    pub pause: Option<Pause>,
    /// Request ids of the latest admin commands decided (a copy of one is ignored).
    #[serde(default)]
    pub admin_requests: Vec<String>,
}
contract!(SagaState, SAGA_STATE);

/// An operator's pause of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    /// Who paused it.
    pub actor: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The admin request that paused it.
    pub request_id: String,
    /// When, epoch ms.
    pub at: i64,
    /// Inputs and due timers held while paused, in arrival order, as the event log records
    /// inputs.
    #[serde(default)]
    pub held: Vec<String>,
}

/// What an admin command asks of a saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdminAction {
    /// Retry a step waiting in backoff now, or the incident's failed part.
    Retry,
    /// A step counts as succeeded with a given output.
    Skip,
    /// Compensate what is done.
    Cancel,
    /// End without compensating.
    Abort,
    /// Defer timers and hold inputs.
    Pause,
    /// Release what was held.
    Resume,
    /// Close an incident.
    Resolve,
}

impl AdminAction {
    /// Lower-case name, as the CLI and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Skip => "skip",
            Self::Cancel => "cancel",
            Self::Abort => "abort",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Resolve => "resolve",
        }
    }

    /// Every action, in schema order.
    pub const ALL: [AdminAction; 7] = [
        Self::Retry,
        Self::Skip,
        Self::Cancel,
        Self::Abort,
        Self::Pause,
        Self::Resume,
        Self::Resolve,
    ];

    /// The action a lower-case name spells; the error lists the names.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|a| a.as_str()).collect();
                format!(
                    "unknown action `{name}`; the actions are {}",
                    names.join(", ")
                )
            })
    }
}

/// How a RESOLVE closes an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Send the failed compensation again (or wait for the timed-out event again).
    RetryCompensation,
    /// It was done by hand: count it as done.
    MarkDone,
}

impl Resolution {
    /// Lower-case name, as the CLI and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryCompensation => "retry_compensation",
            Self::MarkDone => "mark_done",
        }
    }

    /// The resolution a lower-case name spells; the error lists the names.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
        [Self::RetryCompensation, Self::MarkDone]
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| {
                format!("unknown resolution `{name}`; the resolutions are retry_compensation, mark_done")
            })
    }
}

/// An operator's command to one saga (`<group>.admin`, keyed by saga id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminCommand {
    /// Unique per request; the events it causes carry it.
    pub request_id: String,
    /// The saga (the Kafka key).
    pub saga_id: String,
    /// What to do.
    pub action: AdminAction,
    /// The step instance it concerns, if any.
    #[serde(default)]
    pub step: Option<String>,
    /// SKIP (and RESOLVE MARK_DONE of an await): the step's output, a JSON object.
    #[serde(default)]
    pub output_json: Option<String>,
    /// RESOLVE: how.
    #[serde(default)]
    pub resolution: Option<Resolution>,
    /// Who asked.
    pub actor: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// The bulk job that produced it.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Client time, epoch ms.
    pub requested_at: i64,
}
contract!(AdminCommand, ADMIN_COMMAND);

/// How the admin API answered a request it audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditOutcome {
    /// It was done.
    Accepted,
    /// Bad input, or a state it does not apply to.
    Refused,
    /// 401: no credentials, or ones that do not verify.
    Unauthenticated,
    /// 403: the role does not allow it.
    Forbidden,
}

/// One request to the admin API that did not land on a saga's event log (`<group>.audit`,
/// keyed by actor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, epoch ms.
    pub at: i64,
    /// Who: a token's name, a JWT subject, `anonymous` or `unverified`.
    pub actor: String,
    /// The actor's role, once authenticated.
    #[serde(default)]
    pub role: Option<String>,
    /// HTTP method, or `JOB` for what a bulk job did by itself.
    pub method: String,
    /// Request path.
    pub path: String,
    /// How it was answered.
    pub outcome: AuditOutcome,
    /// HTTP status answered.
    pub status: i32,
    /// A job id or saga id.
    #[serde(default)]
    pub target: Option<String>,
    /// Why it was refused.
    #[serde(default)]
    pub message: Option<String>,
    /// Facts, a JSON object.
    #[serde(default)]
    pub detail_json: Option<String>,
}
contract!(AuditRecord, AUDIT_RECORD);

/// Whether the engine sends commands to one participant's command topic (`<group>.control`,
/// compacted, keyed by the command topic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantControl {
    /// The participant's command topic.
    pub topic: String,
    /// Whether commands to it are held.
    pub paused: bool,
    /// Most commands in flight to it across the group; `None`: no limit.
    #[serde(default)]
    pub max_in_flight: Option<i32>,
    /// Most commands sent to it per second across the group; `None`: no limit.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// Who asked.
    pub actor: String,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unique per request.
    pub request_id: String,
    /// When it was requested, epoch ms.
    pub at: i64,
}
contract!(ParticipantControl, PARTICIPANT_CONTROL);

/// What a saga timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimerKind {
    /// Send the next attempt of a step.
    Retry,
    /// An attempt got no reply in time.
    AttemptTimeout,
    /// A step ran out of time across attempts.
    StepDeadline,
    /// The saga ran out of time.
    SagaDeadline,
    /// A wait step ends.
    Wait,
    /// An await step gives up waiting.
    AwaitTimeout,
    /// Send the next attempt of a compensation.
    CompensationRetry,
    /// A finished saga's retention ends: its state shrinks to a marker, or the marker goes.
    Expire,
}

/// A pending saga timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// `<kind>/<seq>`: unique within the saga, never reused.
    pub id: String,
    /// What it does.
    pub kind: TimerKind,
    /// When it fires, epoch ms.
    pub due: i64,
    /// The step it belongs to.
    #[serde(default)]
    pub step: Option<String>,
    /// The attempt it belongs to.
    #[serde(default)]
    pub attempt: Option<i32>,
}

/// An external event for awaiting sagas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Sender-chosen unique id.
    pub signal_id: String,
    /// Event name.
    pub event: String,
    /// Saga id or correlation value (the record key).
    pub correlation: String,
    /// JSON object, the await step's output.
    #[serde(default)]
    pub payload_json: Option<String>,
    /// Epoch ms.
    pub sent_at: i64,
    /// Buffer time to live, ms; `None` for the engine default.
    #[serde(default)]
    pub ttl_ms: Option<i64>,
}
contract!(Signal, SIGNAL);

/// Kind of parked (non-saga) engine state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParkedKind {
    /// A record waiting for delayed delivery.
    Delayed,
    /// A signal buffered until a saga awaits it.
    Signal,
    /// Sagas awaiting an event with one correlation value.
    Await,
    /// A command held while its participant is paused or at its limits.
    Held,
    /// A saga's commands in flight to participants with a limit.
    Sent,
}

/// A header of a parked record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedHeader {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(with = "apache_avro::serde::bytes")]
    pub value: Vec<u8>,
}

/// A saga waiting in an await step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Awaiter {
    /// Saga id.
    pub saga_id: String,
    /// The await step.
    pub step: String,
}

/// Engine state that is not a saga (see `Parked.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parked {
    /// Kind.
    pub kind: ParkedKind,
    /// Delivery id, signal id, or `event/correlation`.
    pub id: String,
    /// Delivery time or expiry, epoch ms.
    pub due: i64,
    /// Delayed: target topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Record key.
    #[serde(default, with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    /// Record value.
    #[serde(default, with = "apache_avro::serde::bytes_opt")]
    pub value: Option<Vec<u8>>,
    /// Record headers.
    #[serde(default)]
    pub headers: Vec<ParkedHeader>,
    /// Await: waiting sagas.
    #[serde(default)]
    pub sagas: Vec<Awaiter>,
    /// Epoch ms.
    #[serde(default)]
    pub received_at: i64,
}
contract!(Parked, PARKED);

/// Kind of inter-partition correlation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CorrelationKind {
    /// A saga awaits `event` with `correlation`.
    Subscribe,
    /// It no longer does.
    Unsubscribe,
    /// A signal for a saga.
    Deliver,
    /// A delivered signal its saga no longer awaited, to be matched again.
    Return,
}

/// Engine-internal message between partitions (see `Correlation.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// Kind.
    pub kind: CorrelationKind,
    /// Event name.
    pub event: String,
    /// Correlation value.
    pub correlation: String,
    /// Saga id.
    pub saga_id: String,
    /// Await step.
    pub step: String,
    /// Deliver: the Signal record, wire format.
    #[serde(default, with = "apache_avro::serde::bytes_opt")]
    pub signal: Option<Vec<u8>>,
}
contract!(Correlation, CORRELATION);

/// Kind of journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JournalKind {
    /// A new owner takes the partition over.
    Claim,
    /// A batch of decisions.
    Decisions,
}

/// Last consumed offset of one input topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputPosition {
    /// Input topic.
    pub topic: String,
    /// Last consumed offset.
    pub offset: i64,
}

/// New state of one saga in a journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    /// Saga instance id.
    pub saga_id: String,
    /// Wire-format `SagaState`, `None` deletes.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub state: Option<Vec<u8>>,
}

/// A Kafka record header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    #[serde(with = "apache_avro::serde::bytes")]
    pub value: Vec<u8>,
}

/// A message the relay must deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    /// Stable message id.
    pub id: String,
    /// Target topic.
    pub topic: String,
    /// Record key.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub key: Option<Vec<u8>>,
    /// Record value.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub value: Option<Vec<u8>>,
    /// Record headers.
    pub headers: Vec<Header>,
    /// Not to be sent before this time, epoch ms.
    #[serde(default)]
    pub not_before: Option<i64>,
}

/// One atomic journal record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Claim or decisions.
    pub kind: JournalKind,
    /// Owner epoch.
    pub epoch: i64,
    /// Writer incarnation id.
    pub writer: String,
    /// Offset of the valid record this one builds on, -1 for none.
    pub base: i64,
    /// Input positions after this record.
    pub positions: Vec<InputPosition>,
    /// Outputs delivered through this journal offset.
    pub relayed_through: i64,
    /// New saga states.
    pub states: Vec<StateEntry>,
    /// Messages to deliver.
    pub outputs: Vec<Outbound>,
}
contract!(JournalRecord, JOURNAL_RECORD);

/// Position of one input topic in a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointPosition {
    /// Input topic.
    pub topic: String,
    /// Last consumed offset.
    pub offset: i64,
}

/// Changelog checkpoint: the changelog covers the journal through `journal_offset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Last valid journal offset whose states are all in the changelog.
    pub journal_offset: i64,
    /// Owner epoch at that offset.
    pub epoch: i64,
    /// Owner writer at that offset.
    pub writer: String,
    /// Input positions at that offset.
    pub positions: Vec<CheckpointPosition>,
    /// Relay progress at that offset.
    pub relayed_through: i64,
}
contract!(Checkpoint, CHECKPOINT);

/// One saga's state in a [`ChangelogBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Saga instance id.
    pub saga_id: String,
    /// Journal offset the state came from.
    pub source: i64,
    /// Wire-format `SagaState`.
    #[serde(with = "apache_avro::serde::bytes")]
    pub state: Vec<u8>,
}

/// Changelog record holding the states of many sagas from one flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangelogBatch {
    /// Epoch ms from which the owner checks whether every saga has moved on.
    pub check_at: i64,
    /// The states.
    pub entries: Vec<BatchEntry>,
}
contract!(ChangelogBatch, CHANGELOG_BATCH);
