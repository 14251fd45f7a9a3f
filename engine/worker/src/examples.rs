//! Example participants for the trip saga (payment, flight, hotel, notify) and the benchmark
//! (echo), with failure injection for demos and tests.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sagaflow_avro::{Command, Phase};
use serde_json::{json, Value};

use crate::worker::{Failure, Handler};

/// Which example participant to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// charge / refund.
    Payment,
    /// book / cancel a flight.
    Flight,
    /// book / cancel a hotel.
    Hotel,
    /// send a notification.
    Notify,
    /// Answers every command at once with an empty output (benchmarks).
    Echo,
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "payment" => Self::Payment,
            "flight" => Self::Flight,
            "hotel" => Self::Hotel,
            "notify" => Self::Notify,
            "echo" => Self::Echo,
            other => {
                return Err(format!(
                    "unknown participant role {other:?}; expected payment, flight, hotel, notify or echo"
                ))
            }
        })
    }
}

impl Role {
    /// Default command topic of the role.
    pub fn default_topic(self) -> &'static str {
        match self {
            Self::Payment => "trip.payment.commands",
            Self::Flight => "trip.flight.commands",
            Self::Hotel => "trip.hotel.commands",
            Self::Notify => "trip.notify.commands",
            Self::Echo => "bench.s1.commands",
        }
    }
}

/// Failure injection settings.
#[derive(Debug, Clone, Default)]
pub struct Injection {
    /// Share of forward commands that fail for business reasons (not retryable). Decided by a
    /// hash of the saga id, so a redelivered command gets the same answer.
    pub failure_rate: f64,
    /// Share of forward commands that fail with a transient (retryable) error, at random.
    pub transient_rate: f64,
    /// Added latency per command, uniformly in this range of milliseconds.
    pub latency_ms: (u64, u64),
}

/// Appends one JSON line per operation applied for the first time (tests count side effects).
///
/// It is the example participants' database: like a real participant's, it applies an
/// operation once per idempotency key, also after a crash and restart of the participant
/// (the keys already in the file are read at open). An operation the engine sent twice under
/// two keys shows as two lines.
#[derive(Debug)]
pub struct EffectsLog(Mutex<(File, HashSet<String>)>);

impl EffectsLog {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut applied = HashSet::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines() {
                    let key = serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v["key"].as_str().map(str::to_string));
                    if let Some(key) = key {
                        let _ = applied.insert(key);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self(Mutex::new((file, applied))))
    }

    fn record(&self, command: &Command) {
        let line = json!({
            "key": command.idempotency_key,
            "saga_id": command.saga_id,
            "step": command.step,
            "phase": command.phase.as_str(),
            "type": command.command_type,
        });
        // One write call per line: processes share the file, and O_APPEND keeps a single write
        // whole, where `writeln!` may split a line into several writes that interleave.
        let line = format!("{line}\n");
        if let Ok(mut guard) = self.0.lock() {
            let (file, applied) = &mut *guard;
            if applied.insert(command.idempotency_key.clone()) {
                let _ = file.write_all(line.as_bytes());
            }
        }
    }
}

fn share(saga_id: &str, step: &str) -> f64 {
    let mut h = DefaultHasher::new();
    (saga_id, step, "sagaflow-injection").hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// The handler of an example participant.
pub fn handler(role: Role, injection: Injection, effects: Option<Arc<EffectsLog>>) -> Handler {
    Arc::new(move |command: Command| {
        let injection = injection.clone();
        let effects = effects.clone();
        Box::pin(async move {
            let (lo, hi) = injection.latency_ms;
            if hi > 0 {
                let ms = if hi > lo {
                    rand::random_range(lo..=hi)
                } else {
                    hi
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if command.phase == Phase::Forward {
                if share(&command.saga_id, &command.step) < injection.failure_rate {
                    return Err(business_failure(role));
                }
                if rand::random::<f64>() < injection.transient_rate {
                    return Err(Failure {
                        code: "UNAVAILABLE".into(),
                        message: "injected transient error".into(),
                        retryable: true,
                    });
                }
            }
            if let Some(log) = &effects {
                log.record(&command);
            }
            Ok(output(role, &command))
        })
    })
}

fn business_failure(role: Role) -> Failure {
    let (code, message) = match role {
        Role::Payment => ("CARD_DECLINED", "the card was declined"),
        Role::Flight => ("NO_SEATS", "no seats left on this flight"),
        Role::Hotel => ("NO_ROOMS", "no rooms left for these dates"),
        Role::Notify => ("BAD_ADDRESS", "the address does not accept mail"),
        Role::Echo => ("INJECTED", "injected failure"),
    };
    Failure {
        code: code.into(),
        message: message.into(),
        retryable: false,
    }
}

fn output(role: Role, command: &Command) -> Value {
    let id = |prefix: &str| format!("{prefix}-{}", command.saga_id);
    match (role, command.phase) {
        (Role::Payment, Phase::Forward) => json!({"payment_id": id("pay")}),
        (Role::Flight, Phase::Forward) => json!({"booking_id": id("fl")}),
        (Role::Hotel, Phase::Forward) => json!({"booking_id": id("ht")}),
        (Role::Notify, Phase::Forward) => json!({"message_id": id("msg")}),
        (_, Phase::Compensate) => json!({"undone": command.command_type}),
        (Role::Echo, _) => json!({}),
    }
}
