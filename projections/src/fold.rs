//! Folds events into row changes: pure, so that incremental projection, a rebuild and the
//! tests all apply the same rules.
//!
//! A batch loads the rows it touches (each saga, and its steps still open), folds every event
//! into them in memory, and writes each changed row once: a saga with twelve events in a batch
//! costs one upsert, not twelve.

use std::collections::{BTreeMap, HashMap, HashSet};

use sagaflow_avro::{EventType, SagaEvent};
use serde_json::Value;

/// Statuses after which a saga changes no more.
pub const ENDED: &[&str] = &["COMPLETED", "COMPENSATED", "FAILED", "ABORTED"];

/// Milliseconds in a day: events are grouped by UTC day.
const DAY_MS: i64 = 86_400_000;

/// The UTC day of an epoch-ms time, as days since 1970-01-01.
pub fn day_of(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(DAY_MS)).unwrap_or(i32::MAX)
}

/// The histogram bucket of a duration: `floor(ln(ms + 1) / ln(1.05))`, so each bucket is 5%
/// wide and its middle (SQL `bucket_ms`), rounded, is within 2.5% plus 1 ms of every duration
/// in it.
pub fn bucket_of(duration_ms: i64) -> i16 {
    let ms = duration_ms.max(0) as f64;
    ((ms + 1.0).ln() / 1.05f64.ln()).floor() as i16
}

/// A `sagas` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRow {
    pub saga_id: String,
    pub definition: String,
    pub version: i32,
    pub status: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub current_step: Option<String>,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub attempts: i32,
    pub compensations: i32,
    pub retries: i32,
    pub timeouts: i32,
    pub business_keys: Value,
    pub last_seq: i64,
    pub updated_at: i64,
}

impl SagaRow {
    /// Whole milliseconds from start to end, once ended.
    pub fn duration_ms(&self) -> Option<i64> {
        self.ended_at.map(|end| end - self.started_at)
    }
}

/// The key of a `steps` row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey {
    pub saga_id: String,
    pub step: String,
    pub phase: &'static str,
    pub attempt: i32,
}

/// A `steps` row.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub definition: String,
    pub node: String,
    pub status: &'static str,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub error_code: Option<String>,
}

/// Something the metrics count, seen while folding.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    SagaStarted {
        definition: String,
    },
    SagaEnded {
        definition: String,
        status: String,
    },
    StepEnded {
        definition: String,
        node: String,
        phase: &'static str,
        status: &'static str,
        seconds: f64,
    },
    Retry {
        definition: String,
        node: String,
    },
    Timeout {
        definition: String,
        node: String,
    },
}

/// What folding one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new event, applied.
    New,
    /// Its seq was applied already (a redelivery): nothing changed.
    Duplicate,
    /// Applied, but the events before it never arrived (a gap, or a log that begins after the
    /// saga started): the saga's row is built from what there is.
    AfterGap,
}

/// The changes of one batch.
#[derive(Debug, Default)]
pub struct Fold {
    /// Sagas loaded or created by this batch, by id.
    pub sagas: HashMap<String, SagaRow>,
    /// Sagas this batch changed.
    pub changed_sagas: HashSet<String>,
    /// Open steps loaded, plus every step this batch touched.
    pub steps: HashMap<StepKey, StepRow>,
    /// Steps this batch changed.
    pub changed_steps: HashSet<StepKey>,
    /// New events, in order.
    pub events: Vec<SagaEvent>,
    /// `(definition, day, status)` → (sagas that entered the status, their summed durations).
    pub status_counts: BTreeMap<(String, i32, String), (i64, i64)>,
    /// `(definition, day, status, bucket)` → ended sagas.
    pub durations: BTreeMap<(String, i32, String, i16), i64>,
    pub observations: Vec<Observation>,
}

/// The node name an instance id belongs to: `flight[3]` → `flight`, `book/hotel` → `book`.
pub fn node_of(id: &str) -> &str {
    let base = id.split('/').next().unwrap_or(id);
    base.split('[').next().unwrap_or(base)
}

/// The error an event's detail carries, either at its top or under `error` (retries).
fn error_of(detail: Option<&Value>) -> Option<(String, Option<String>)> {
    let detail = detail?;
    let error = detail
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(detail);
    let code = error.get("code")?.as_str()?.to_string();
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((code, message))
}

/// The status an event leaves its saga in, for events written before they carried it.
fn status_of(event: &SagaEvent, previous: Option<&str>) -> String {
    if let Some(status) = &event.status {
        return status.clone();
    }
    match event.event_type {
        EventType::SagaStarted => "RUNNING",
        EventType::SagaCompleted => "COMPLETED",
        EventType::SagaCompensated => "COMPENSATED",
        EventType::SagaFailed => "FAILED",
        EventType::SagaIncident => "INCIDENT",
        EventType::SagaAborted => "ABORTED",
        EventType::CompensationDispatched if previous == Some("RUNNING") => "COMPENSATING",
        _ => previous.unwrap_or("RUNNING"),
    }
    .to_string()
}

/// How an event changes its step's row: the phase, the status, and whether it starts or ends
/// it.
fn step_change(t: EventType) -> Option<(&'static str, &'static str, bool, bool)> {
    use EventType as E;
    // (phase, status, starts, ends)
    Some(match t {
        E::StepDispatched => ("forward", "RUNNING", true, false),
        E::StepStarted => ("forward", "RUNNING", true, false),
        E::WaitStarted | E::AwaitStarted => ("forward", "WAITING", true, false),
        E::StepSucceeded | E::WaitEnded | E::EventReceived => ("forward", "SUCCEEDED", false, true),
        E::StepFailed => ("forward", "FAILED", false, true),
        E::StepRetryScheduled => ("forward", "FAILED", false, true),
        E::StepTimedOut | E::StepDeadlineExceeded | E::AwaitTimedOut => {
            ("forward", "TIMED_OUT", false, true)
        }
        E::StepSkipped => ("forward", "SKIPPED", true, true),
        E::CompensationDispatched => ("compensation", "RUNNING", true, false),
        E::CompensationSucceeded => ("compensation", "SUCCEEDED", false, true),
        E::CompensationFailed | E::CompensationRetryScheduled => {
            ("compensation", "FAILED", false, true)
        }
        E::BranchStarted => ("branch", "RUNNING", true, false),
        E::BranchSucceeded => ("branch", "SUCCEEDED", false, true),
        E::BranchFailed => ("branch", "FAILED", false, true),
        E::BranchCancelled => ("branch", "CANCELLED", false, true),
        E::SagaStarted
        | E::SagaCompleted
        | E::SagaCompensated
        | E::SagaFailed
        | E::SagaIncident
        | E::SagaDeadlineExceeded
        | E::SagaAborted
        | E::SagaPaused
        | E::SagaResumed
        | E::AdminCommandApplied
        | E::AdminCommandRejected
        | E::InputHeld
        // A held command's step stays RUNNING: the hold is on the event log, not a step status.
        | E::CommandHeld
        | E::CommandReleased => return None,
    })
}

impl Fold {
    /// Folds one event into the batch. Events of one saga must come in log order (they do: the
    /// log is keyed by saga id, so one saga's events share a partition).
    pub fn apply(&mut self, event: &SagaEvent) -> Applied {
        let detail: Option<Value> = event
            .detail_json
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok());
        let mut applied = Applied::New;
        let saga = match self.sagas.get_mut(&event.saga_id) {
            Some(saga) if event.seq <= saga.last_seq => return Applied::Duplicate,
            Some(saga) => {
                if event.seq != saga.last_seq + 1 {
                    applied = Applied::AfterGap;
                }
                saga
            }
            None => {
                if event.seq != 1 {
                    applied = Applied::AfterGap;
                }
                self.sagas.entry(event.saga_id.clone()).or_insert(SagaRow {
                    saga_id: event.saga_id.clone(),
                    definition: event.definition.clone(),
                    version: event.version,
                    status: String::new(),
                    started_at: event.at,
                    ended_at: None,
                    current_step: None,
                    last_error_code: None,
                    last_error_message: None,
                    attempts: 0,
                    compensations: 0,
                    retries: 0,
                    timeouts: 0,
                    business_keys: Value::Object(Default::default()),
                    last_seq: 0,
                    updated_at: event.at,
                })
            }
        };
        let _ = self.changed_sagas.insert(event.saga_id.clone());
        saga.last_seq = event.seq;
        saga.updated_at = event.at;
        if let Some(keys) = event
            .index_json
            .as_deref()
            .and_then(|k| serde_json::from_str::<Value>(k).ok())
            .filter(Value::is_object)
        {
            saga.business_keys = keys;
        }
        let step = event.step.as_deref();
        if let Some(step) = step {
            saga.current_step = Some(step.to_string());
        }
        use EventType as E;
        match event.event_type {
            E::StepDispatched => saga.attempts += 1,
            E::CompensationDispatched => saga.compensations += 1,
            E::StepRetryScheduled | E::CompensationRetryScheduled => saga.retries += 1,
            E::StepTimedOut | E::AwaitTimedOut => saga.timeouts += 1,
            _ => {}
        }
        let failure = matches!(
            event.event_type,
            E::StepFailed
                | E::StepRetryScheduled
                | E::CompensationFailed
                | E::CompensationRetryScheduled
                | E::StepDeadlineExceeded
                | E::SagaDeadlineExceeded
                | E::SagaFailed
                | E::SagaIncident
        );
        if failure {
            if let Some((code, message)) = error_of(detail.as_ref()) {
                saga.last_error_code = Some(code);
                saga.last_error_message = message;
            }
        } else if matches!(event.event_type, E::StepTimedOut | E::AwaitTimedOut) {
            saga.last_error_code = Some("TIMEOUT".into());
            saga.last_error_message = None;
        }

        let previous = (!saga.status.is_empty()).then(|| saga.status.clone());
        let status = status_of(event, previous.as_deref());
        let entered = previous.as_deref() != Some(status.as_str());
        let definition = saga.definition.clone();
        let day = day_of(event.at);
        if entered {
            saga.status = status.clone();
            let mut duration = 0;
            if ENDED.contains(&status.as_str()) {
                saga.ended_at = Some(event.at);
                saga.current_step = None;
                duration = saga.duration_ms().unwrap_or(0);
                *self
                    .durations
                    .entry((definition.clone(), day, status.clone(), bucket_of(duration)))
                    .or_default() += 1;
                self.observations.push(Observation::SagaEnded {
                    definition: definition.clone(),
                    status: status.clone(),
                });
            } else if status == "RUNNING" && previous.is_none() {
                self.observations.push(Observation::SagaStarted {
                    definition: definition.clone(),
                });
            }
            // A saga back to RUNNING after an operator's repair (an incident retried or skipped)
            // did not start again: RUNNING counts the starts (docs/bi.md).
            if status != "RUNNING" || previous.is_none() {
                let count = self
                    .status_counts
                    .entry((definition.clone(), day, status))
                    .or_default();
                count.0 += 1;
                count.1 += duration;
            }
        }

        if let (Some(step), Some((phase, status, starts, ends))) =
            (step, step_change(event.event_type))
        {
            let key = StepKey {
                saga_id: event.saga_id.clone(),
                step: step.to_string(),
                phase,
                attempt: event.attempt.unwrap_or(0),
            };
            let node = node_of(step).to_string();
            let row = self.steps.entry(key.clone()).or_insert_with(|| StepRow {
                definition: definition.clone(),
                node: node.clone(),
                status,
                started_at: None,
                ended_at: None,
                duration_ms: None,
                error_code: None,
            });
            row.status = status;
            if starts && row.started_at.is_none() {
                row.started_at = Some(event.at);
            }
            if ends {
                let first_end = row.ended_at.is_none();
                row.ended_at = Some(event.at);
                if let Some(started) = row.started_at {
                    row.duration_ms = Some(event.at - started);
                    if first_end {
                        self.observations.push(Observation::StepEnded {
                            definition: definition.clone(),
                            node: node.clone(),
                            phase,
                            status,
                            seconds: (event.at - started) as f64 / 1000.0,
                        });
                    }
                }
                if status == "TIMED_OUT" {
                    row.error_code = Some("TIMEOUT".into());
                } else if let Some((code, _)) = error_of(detail.as_ref()) {
                    row.error_code = Some(code);
                }
            }
            let _ = self.changed_steps.insert(key);
            match event.event_type {
                E::StepRetryScheduled | E::CompensationRetryScheduled => self
                    .observations
                    .push(Observation::Retry { definition, node }),
                E::StepTimedOut | E::AwaitTimedOut => self
                    .observations
                    .push(Observation::Timeout { definition, node }),
                _ => {}
            }
        }
        self.events.push(event.clone());
        applied
    }
}
