//! Bulk jobs: one admin command to every saga a read-model filter matched, at a bounded rate,
//! with progress, and cancellable. `sagaflow admin` runs one in its own process; the admin API
//! runs them in the background and lists them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use sagaflow_avro::now_ms;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::commands::{Commands, Outcome, Request};

/// Most failures a snapshot lists one by one (the counts cover all of them).
const LISTED_FAILURES: usize = 100;

/// The slowest and the fastest a job may send, commands per second.
pub const RATES: std::ops::RangeInclusive<f64> = 0.01..=10_000.0;

/// Checks a job's rate: a number of commands per second in [`RATES`].
pub fn check_rate(rate: f64) -> Result<(), String> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "the rate must be from {} to {} commands per second, got {rate}",
            RATES.start(),
            RATES.end()
        ))
    }
}

/// What a job does, and to which sagas.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The command each saga gets.
    pub request: Request,
    /// The read-model filter that chose the sagas, as query parameters.
    pub filter: Vec<(String, String)>,
    /// Most commands sent per second.
    pub rate: f64,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Sending, or waiting for answers.
    Running,
    /// Stopped sending when asked; what was sent has its answer.
    Cancelled,
    /// Every saga was sent its command and answered (or timed out).
    Finished,
}

/// What became of one saga of a job.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    NotSent,
    InFlight,
    Answered(Outcome),
    SendFailed(String),
}

impl Fate {
    fn name(&self) -> &'static str {
        match self {
            Fate::NotSent => "not_sent",
            Fate::InFlight => "in_flight",
            Fate::Answered(outcome) => outcome.name(),
            Fate::SendFailed(_) => "send_failed",
        }
    }

    fn reason(&self) -> Option<String> {
        match self {
            Fate::Answered(outcome) => outcome.reason(),
            Fate::SendFailed(why) => Some(why.clone()),
            Fate::NotSent | Fate::InFlight => None,
        }
    }
}

#[derive(Debug)]
struct State {
    status: JobStatus,
    fates: BTreeMap<String, Fate>,
    finished_at: Option<i64>,
}

/// A bulk job.
#[derive(Debug)]
pub struct Job {
    id: String,
    spec: JobSpec,
    created_at: i64,
    state: Mutex<State>,
    cancelled: AtomicBool,
    wake: Notify,
}

/// One saga the job did not apply to, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The saga.
    pub saga_id: String,
    /// `rejected`, `dead_lettered`, `unanswered`, `send_failed` or `not_sent`.
    pub outcome: &'static str,
    /// Why.
    pub reason: Option<String>,
}

/// A job as the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// `job-` and 12 hex digits; every command the job sends carries it.
    pub job_id: String,
    /// The action each saga gets.
    pub action: &'static str,
    /// Who started the job.
    pub actor: String,
    /// Why.
    pub reason: Option<String>,
    /// The read-model filter.
    pub filter: BTreeMap<String, String>,
    /// Most commands per second.
    pub rate: f64,
    /// Where the job is.
    pub status: JobStatus,
    /// Sagas the filter matched.
    pub matched: usize,
    /// Sagas by outcome so far.
    pub counts: BTreeMap<&'static str, usize>,
    /// Sagas answered (or that could not be sent to).
    pub done: usize,
    /// Of those, the ones not applied.
    pub failed: usize,
    /// Sagas not yet sent or not yet answered.
    pub remaining: usize,
    /// Epoch ms.
    pub created_at: i64,
    /// Epoch ms, once it is over.
    pub finished_at: Option<i64>,
    /// The first sagas it did not apply to, with the reason.
    pub failures: Vec<Failure>,
}

impl Job {
    /// A job over `sagas`, not started; its id is new.
    pub fn new(spec: JobSpec, sagas: Vec<String>) -> Self {
        Self {
            id: format!("job-{:012x}", rand::random::<u64>() >> 16),
            spec,
            created_at: now_ms(),
            state: Mutex::new(State {
                status: JobStatus::Running,
                fates: sagas.into_iter().map(|id| (id, Fate::NotSent)).collect(),
                finished_at: None,
            }),
            cancelled: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the job does.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Stops sending; `Err` says why it cannot: the job is over, or has sent every command
    /// and only waits for their answers.
    pub fn cancel(&self) -> Result<(), &'static str> {
        // Checked and set under the lock `run` ends under, so a job is never reported both
        // cancelled and finished.
        let state = self.state.lock().expect("job lock");
        match state.status {
            JobStatus::Finished => return Err("it is already finished"),
            JobStatus::Cancelled => return Err("it is already cancelled"),
            JobStatus::Running => {}
        }
        if !state.fates.values().any(|f| *f == Fate::NotSent) {
            return Err("it has sent every command and only waits for their answers");
        }
        self.cancelled.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        Ok(())
    }

    fn set(&self, saga_id: &str, fate: Fate) {
        let mut state = self.state.lock().expect("job lock");
        if let Some(slot) = state.fates.get_mut(saga_id) {
            *slot = fate;
        }
    }

    /// Where the job is now.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().expect("job lock");
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for fate in state.fates.values() {
            *counts.entry(fate.name()).or_insert(0) += 1;
        }
        let n = |name: &str| counts.get(name).copied().unwrap_or(0);
        let remaining = n("not_sent") + n("in_flight");
        let done = state.fates.len() - remaining;
        let failures = state
            .fates
            .iter()
            .filter(|(_, f)| !matches!(f, Fate::Answered(Outcome::Applied) | Fate::InFlight))
            .filter(|(_, f)| state.status != JobStatus::Running || **f != Fate::NotSent)
            .take(LISTED_FAILURES)
            .map(|(id, f)| Failure {
                saga_id: id.clone(),
                outcome: f.name(),
                reason: f.reason(),
            })
            .collect();
        Snapshot {
            job_id: self.id.clone(),
            action: self.spec.request.action.as_str(),
            actor: self.spec.request.actor.clone(),
            reason: self.spec.request.reason.clone(),
            filter: self.spec.filter.iter().cloned().collect(),
            rate: self.spec.rate,
            status: state.status,
            matched: state.fates.len(),
            failed: done - n("applied"),
            done,
            remaining,
            counts,
            created_at: self.created_at,
            finished_at: state.finished_at,
            failures,
        }
    }

    /// Sends every saga its command, at most `rate` per second, and waits up to `wait` for
    /// each answer; stops sending when cancelled. Returns the final snapshot.
    pub async fn run(&self, commands: &Commands, wait: Duration) -> Snapshot {
        let ids: Vec<String> = self
            .state
            .lock()
            .expect("job lock")
            .fates
            .keys()
            .cloned()
            .collect();
        let interval = Duration::from_secs_f64(1.0 / self.spec.rate);
        let mut answers = FuturesUnordered::new();
        let mut next = Instant::now();
        for id in ids {
            // Takes the answers that come while waiting for the next send slot.
            while Instant::now() < next && !self.cancelled.load(Ordering::SeqCst) {
                tokio::select! {
                    Some(answer) = answers.next(), if !answers.is_empty() => {
                        let answer: crate::commands::Answer = answer;
                        self.set(&answer.command.saga_id, Fate::Answered(answer.outcome));
                    }
                    _ = tokio::time::sleep_until(next) => {}
                    _ = self.wake.notified() => {}
                }
            }
            if self.cancelled.load(Ordering::SeqCst) {
                break;
            }
            let command = self.spec.request.command(&id, Some(&self.id));
            match commands.submit(&command).await {
                Ok(pending) => {
                    self.set(&id, Fate::InFlight);
                    answers.push(commands.answer(pending, wait));
                }
                Err(e) => self.set(&id, Fate::SendFailed(e.to_string())),
            }
            // From now if the send ran late (a slow broker): a stall is not made up for with a
            // burst above the rate.
            next = next.max(Instant::now()) + interval;
        }
        while let Some(answer) = answers.next().await {
            self.set(&answer.command.saga_id, Fate::Answered(answer.outcome));
        }
        {
            let mut state = self.state.lock().expect("job lock");
            // Cancelled only if the cancel left something unsent.
            state.status = if state.fates.values().any(|f| *f == Fate::NotSent) {
                JobStatus::Cancelled
            } else {
                JobStatus::Finished
            };
            state.finished_at = Some(now_ms());
        }
        self.snapshot()
    }
}
