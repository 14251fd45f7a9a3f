//! Joins of a parallel or for_each step: when it is done, when it can no longer be, and
//! stopping the branches it no longer needs.

use sagaflow_avro::{EventType, StepStatus};
use sagaflow_definition::Join;
use serde_json::Value;

use crate::draft::Draft;

/// How a join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Enough branches succeeded.
    Met,
    /// Too many failed for enough to succeed.
    Unreachable,
    /// Not decided yet.
    Open,
}

/// The branches of a fan-out by where they are.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    pub(super) succeeded: usize,
    pub(super) running: usize,
    pub(super) not_started: usize,
    pub(super) total: usize,
}

impl Tally {
    /// Counts the branches with these entry ids (a missing entry has not started).
    pub(super) fn of(d: &Draft<'_>, ids: &[String]) -> Tally {
        let mut tally = Tally {
            total: ids.len(),
            ..Tally::default()
        };
        for id in ids {
            match d.node(id).map(|n| n.status) {
                None | Some(StepStatus::Pending) => tally.not_started += 1,
                Some(StepStatus::Running) => tally.running += 1,
                Some(StepStatus::Succeeded) => tally.succeeded += 1,
                Some(_) => {}
            }
        }
        tally
    }

    pub(super) fn verdict(&self, join: Join) -> Verdict {
        let needed = join.needed(self.total);
        if self.succeeded >= needed {
            Verdict::Met
        } else if self.succeeded + self.running + self.not_started < needed {
            Verdict::Unreachable
        } else {
            Verdict::Open
        }
    }
}

/// How a join is written in events.
pub(super) fn describe(join: Join) -> Value {
    match join {
        Join::All => Value::from("all"),
        Join::Any => Value::from("any"),
        Join::AtLeast(n) => serde_json::json!({"at_least": n}),
    }
}

/// Stops the running branches among `ids`: each unwinds from now on. Returns their ids.
pub(super) fn cancel_running(d: &mut Draft<'_>, ids: &[String], reason: &str) -> Vec<String> {
    let mut cancelled = Vec::new();
    for id in ids {
        if d.status(id) == StepStatus::Running {
            d.set_status(id, StepStatus::Compensating);
            d.emit(
                EventType::BranchCancelled,
                Some(id),
                None,
                Some(serde_json::json!({"reason": reason})),
            );
            cancelled.push(id.clone());
        }
    }
    cancelled
}
