//! What becomes of a saga after it ends.
//!
//! A finished saga's whole state stays for `finished_ms`, so that operators can still read it.
//! Then it shrinks to a *marker*: the ids, the status and the seq, enough to recognise a
//! duplicate start or a late reply. The marker goes when the dedupe window (`dedupe_ms` after the
//! end) is over, if the id-reuse policy lets the id start a new saga; its history stays in the
//! event log. Both steps are `Expire` timers of the saga, so they are journaled decisions like
//! any other and survive crashes and hand-overs. A saga in INCIDENT waits for an
//! operator and never expires, nor does one that ended `Failed` before incidents existed.

use sagaflow_avro::{SagaState, SagaStatus, Timer, TimerKind};

use crate::input::{Decision, Outcome};

/// Retention of finished sagas and the id-reuse policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a finished saga keeps its whole state, in ms.
    pub finished_ms: i64,
    /// How long after its end a start or a late reply for the saga id is still recognised as a
    /// duplicate, in ms; at least `finished_ms`.
    pub dedupe_ms: i64,
    /// Whether the id of a finished saga may start a new saga after the dedupe window.
    pub reuse: IdReuse,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            finished_ms: 24 * 3_600_000,
            dedupe_ms: 7 * 24 * 3_600_000,
            reuse: IdReuse::AfterWindow,
        }
    }
}

/// Whether a saga id may start a saga again once an earlier saga under it has ended. Within the
/// dedupe window a start for the id is always a duplicate and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdReuse {
    /// After the window the marker goes, and a start for the id begins a new saga.
    AfterWindow,
    /// Only the id of a saga that was compensated may start again after the window; a
    /// completed saga's marker is kept for good.
    CompensatedOnly,
    /// Never: every marker is kept for good (about a hundred bytes per saga).
    Never,
}

impl IdReuse {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AfterWindow => "after-window",
            Self::CompensatedOnly => "compensated-only",
            Self::Never => "never",
        }
    }

    /// Reads a configuration value.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::AfterWindow, Self::CompensatedOnly, Self::Never]
            .into_iter()
            .find(|p| p.as_str() == s)
    }

    fn forgets(self, status: SagaStatus) -> bool {
        match self {
            Self::AfterWindow => true,
            Self::CompensatedOnly => status == SagaStatus::Compensated,
            Self::Never => false,
        }
    }
}

/// Gives a saga that the decision just ended (or that ended before retention existed) its first
/// `Expire` timer.
pub(crate) fn schedule(decision: &mut Decision, retention: &Retention, now: i64) {
    let Some(state) = decision.state.as_mut() else {
        return;
    };
    let expires = matches!(
        state.status,
        SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Aborted
    );
    if !expires || state.compacted || state.timers.iter().any(|t| t.kind == TimerKind::Expire) {
        return;
    }
    state.timers.push(Timer {
        // Unique: the saga emits no event after its end, and the marker's timer is `forget/…`.
        id: format!("expire/{}", state.next_seq),
        kind: TimerKind::Expire,
        due: now.saturating_add(retention.finished_ms),
        step: None,
        attempt: None,
    });
}

/// The `Expire` timer `timer` of the finished saga `state` fired.
pub(crate) fn expire(
    state: &SagaState,
    timer: &Timer,
    retention: &Retention,
    now: i64,
) -> Decision {
    if state.compacted {
        return Decision {
            forget: true,
            ..Decision::unchanged(Outcome::Applied)
        };
    }
    let mut marker = SagaState {
        context_json: "{}".into(),
        steps: Vec::new(),
        completion_order: Vec::new(),
        failure_json: None,
        timers: Vec::new(),
        compacted: true,
        updated_at: now,
        ..state.clone()
    };
    if retention.reuse.forgets(state.status) {
        // The first timer was due `finished_ms` after the end: the window counts from the end.
        let end = timer.due.saturating_sub(retention.finished_ms);
        marker.timers.push(Timer {
            id: format!("forget/{}", state.next_seq),
            kind: TimerKind::Expire,
            due: end.saturating_add(retention.dedupe_ms).max(now),
            step: None,
            attempt: None,
        });
    }
    Decision {
        state: Some(marker),
        ..Decision::unchanged(Outcome::Applied)
    }
}
