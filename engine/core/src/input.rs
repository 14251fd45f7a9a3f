//! What goes into a decision and what comes out.

use sagaflow_avro::{AdminCommand, Command, Phase, Reply, SagaEvent, SagaState, Signal, StartSaga};
use sagaflow_definition::Definition;

/// One input of the decision function, already decoded.
#[derive(Debug, Clone)]
pub enum Input {
    /// Start a saga.
    Start(StartSaga),
    /// A participant replied.
    Reply(Reply),
    /// One of the saga's timers is due.
    Timer {
        /// The saga.
        saga_id: String,
        /// The timer's id in the saga state.
        timer_id: String,
    },
    /// An external event correlated to the saga's await step.
    Signal {
        /// The saga.
        saga_id: String,
        /// The await step it was correlated to.
        step: String,
        /// The event.
        signal: Signal,
    },
    /// An operator's command.
    Admin(AdminCommand),
    /// The engine held a command the saga sent, because its participant is paused, or sent
    /// one it held.
    Dispatch(Dispatch),
}

/// A command held or released by the engine: the saga's side of pausing a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The saga.
    pub saga_id: String,
    /// The step whose command it is.
    pub step: String,
    /// Its phase.
    pub phase: Phase,
    /// Its attempt.
    pub attempt: i32,
    /// The participant's command topic.
    pub topic: String,
    /// Held or released.
    pub action: DispatchAction,
    /// Why it was held: `paused`, `max_in_flight`, `max_rate`, or `queued` (behind commands
    /// already held for the topic).
    pub reason: Option<String>,
}

/// What the engine did with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchAction {
    /// Kept in the engine's state instead of sent: the attempt's timeout stops.
    Held,
    /// Sent after all: the attempt's timeout starts again, in full.
    Released,
}

impl DispatchAction {
    /// As the event log spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Released => "released",
        }
    }
}

impl Input {
    /// The saga the input is for.
    pub fn saga_id(&self) -> &str {
        match self {
            Input::Start(start) => &start.saga_id,
            Input::Reply(reply) => &reply.saga_id,
            Input::Admin(admin) => &admin.saga_id,
            Input::Dispatch(dispatch) => &dispatch.saga_id,
            Input::Timer { saga_id, .. } | Input::Signal { saga_id, .. } => saga_id,
        }
    }
}

/// Something a decision asks of the engine besides commands and events: awaits register
/// with the partition that owns their correlation value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The saga awaits `event` with `correlation` in `step`.
    Subscribe {
        /// Event name.
        event: String,
        /// Correlation value.
        correlation: String,
        /// The await step.
        step: String,
    },
    /// It no longer does.
    Unsubscribe {
        /// Event name.
        event: String,
        /// Correlation value.
        correlation: String,
        /// The await step.
        step: String,
    },
}

/// Deployed definitions, by name and version.
pub trait Definitions {
    /// The definition `name` at `version`, or the latest version when `version` is `None`.
    fn find(&self, name: &str, version: Option<u32>) -> Option<&Definition>;
}

/// Engine settings a decision depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where participants reply (set as `reply_to` on commands).
    pub replies: String,
    /// What becomes of finished sagas.
    pub retention: crate::Retention,
    /// Most bytes a saga's state may take (its context, nodes and timers): a decision that
    /// would grow it past this fails the step with `STATE_TOO_LARGE`, and a larger input is
    /// rejected at the start. It keeps every journal record below the broker's message size.
    pub max_state_bytes: usize,
}

impl Settings {
    /// The default `max_state_bytes`: a quarter of Kafka's default message size, leaving room
    /// for a decision's commands and events in the same journal record.
    pub const DEFAULT_MAX_STATE_BYTES: usize = 256 * 1024;
}

/// Why an input was ignored (counted, never applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// A start for a saga id that already exists.
    DuplicateStart,
    /// A reply for a step phase and attempt that was already applied.
    DuplicateReply,
    /// A reply for an older attempt or a phase the step is no longer in.
    StaleReply,
    /// A reply for a saga that already ended.
    SagaFinished,
    /// A reply for an attempt that had already timed out.
    LateReply,
    /// A timer the saga no longer has (it fired already or was cancelled).
    StaleTimer,
    /// A signal for a step that no longer awaits it.
    StaleSignal,
    /// A copy of the signal that already completed its step.
    DuplicateSignal,
    /// A copy of an admin command the saga already decided (same request id).
    DuplicateAdminCommand,
    /// A held command whose attempt the saga no longer awaits (it was skipped, aborted or
    /// ended otherwise while held): it is dropped, not sent.
    StaleDispatch,
}

impl IgnoreReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateStart => "duplicate_start",
            Self::DuplicateReply => "duplicate_reply",
            Self::StaleReply => "stale_reply",
            Self::SagaFinished => "saga_finished",
            Self::LateReply => "late_reply",
            Self::StaleTimer => "stale_timer",
            Self::StaleSignal => "stale_signal",
            Self::DuplicateSignal => "duplicate_signal",
            Self::DuplicateAdminCommand => "duplicate_admin_command",
            Self::StaleDispatch => "stale_dispatch",
        }
    }
}

/// Why an input cannot be processed at all: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// A reply for a saga id the engine does not know.
    UnknownSaga,
    /// The start names a definition (or version) that is not deployed.
    UnknownDefinition {
        /// Requested definition.
        name: String,
        /// Requested version, if any.
        version: Option<i32>,
    },
    /// The input is well-formed Avro but semantically invalid.
    InvalidInput(String),
    /// The saga's state no longer matches the deployed body of its definition version (the
    /// YAML was edited under the same version): deciding on it could apply the wrong step.
    DefinitionDrift {
        /// `name@version`.
        definition: String,
        /// What differs.
        detail: String,
    },
}

impl Rejection {
    /// Short machine-readable reason, sent as the `sagaflow-dlq-reason` header.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownSaga => "unknown-saga",
            Self::UnknownDefinition { .. } => "unknown-definition",
            Self::InvalidInput(_) => "invalid-input",
            Self::DefinitionDrift { .. } => "definition-drift",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownSaga => write!(f, "no saga with this id exists on this partition"),
            Self::UnknownDefinition {
                name,
                version: Some(v),
            } => {
                write!(f, "definition {name}@{v} is not deployed")
            }
            Self::UnknownDefinition {
                name,
                version: None,
            } => {
                write!(f, "no version of definition {name} is deployed")
            }
            Self::InvalidInput(message) => f.write_str(message),
            Self::DefinitionDrift { definition, detail } => write!(
                f,
                "the saga's state does not match the deployed {definition}: {detail}; a deployed version is immutable, so restore its body and deploy the change as a new version"
            ),
        }
    }
}

/// What happened to the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It changed the saga.
    Applied,
    /// It was recognised as a duplicate or stale input.
    Ignored(IgnoreReason),
    /// It cannot be processed: dead-letter it.
    Rejected(Rejection),
}

/// Result of one decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What happened to the input.
    pub outcome: Outcome,
    /// The saga's new state, when it changed.
    pub state: Option<SagaState>,
    /// Commands to send, each to its `topic`.
    pub commands: Vec<(String, Command)>,
    /// Events to append to the event log, in seq order.
    pub events: Vec<SagaEvent>,
    /// Subscriptions to open or close.
    pub effects: Vec<Effect>,
    /// The saga's state is deleted (a tombstone in the changelog): its retention is over.
    pub forget: bool,
}

impl Decision {
    pub(crate) fn unchanged(outcome: Outcome) -> Self {
        Self {
            outcome,
            state: None,
            commands: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
            forget: false,
        }
    }
}
