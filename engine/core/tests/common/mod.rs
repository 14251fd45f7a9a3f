//! Driving the decision function through whole sagas, like the engine, without I/O.

#![allow(dead_code)]

use sagaflow_avro::{
    EventType as E, Phase, Reply, ReplyError, ReplyStatus, SagaEvent, SagaState, SagaStatus,
    StartSaga,
};
use sagaflow_core::{decide, Decision, Definitions, Input, Settings};
use sagaflow_definition::Definition;
use serde_json::json;

pub(crate) struct Defs(pub(crate) Vec<Definition>);

impl Definitions for Defs {
    fn find(&self, name: &str, version: Option<u32>) -> Option<&Definition> {
        self.0
            .iter()
            .filter(|d| d.name == name && version.is_none_or(|v| d.version == v))
            .max_by_key(|d| d.version)
    }
}

pub(crate) fn trip() -> Definition {
    let trip = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/trip.yaml"
    ))
    .expect("examples/trip.yaml");
    Definition::parse("trip.yaml", &trip).expect("valid trip")
}

pub(crate) fn settings() -> Settings {
    Settings {
        replies: "g.replies".into(),
        retention: sagaflow_core::Retention::default(),
        max_state_bytes: Settings::DEFAULT_MAX_STATE_BYTES,
    }
}

/// A start of the trip saga.
pub(crate) fn start(saga_id: &str) -> Input {
    start_of(
        "trip",
        saga_id,
        json!({
            "customer": {"id": "c-1", "email": "c@example.com"}, "amount": 10, "currency": "EUR",
            "flight": {"number": "F1", "date": "2026-07-01"},
            "hotel": {"id": "h1", "check_in": "2026-07-01", "nights": 2}
        }),
    )
}

pub(crate) fn start_of(definition: &str, saga_id: &str, input: serde_json::Value) -> Input {
    Input::Start(StartSaga {
        request_id: "r1".into(),
        saga_id: saga_id.into(),
        definition: definition.into(),
        version: None,
        input_json: input.to_string(),
        requested_at: 0,
    })
}

pub(crate) fn reply(
    saga: &str,
    step: &str,
    phase: Phase,
    attempt: i32,
    result: Result<serde_json::Value, (&str, bool)>,
) -> Input {
    let (status, output_json, error) = match result {
        Ok(v) => (ReplyStatus::Success, Some(v.to_string()), None),
        Err((code, retryable)) => (
            ReplyStatus::Failure,
            None,
            Some(ReplyError {
                code: code.into(),
                message: "m".into(),
                retryable,
            }),
        ),
    };
    Input::Reply(Reply {
        message_id: "m".into(),
        saga_id: saga.into(),
        step: step.into(),
        phase,
        attempt,
        idempotency_key: format!("{saga}/{step}/{}", phase.as_str()),
        status,
        output_json,
        error,
        replied_at: 0,
    })
}

/// Applies inputs one by one, like the engine, collecting every decision.
pub(crate) struct Run {
    pub(crate) defs: Defs,
    pub(crate) state: Option<SagaState>,
    pub(crate) decisions: Vec<Decision>,
    pub(crate) now: i64,
    pub(crate) settings: Settings,
}

impl Run {
    pub(crate) fn new() -> Self {
        Self::with(vec![trip()])
    }

    pub(crate) fn with(defs: Vec<Definition>) -> Self {
        Self {
            defs: Defs(defs),
            state: None,
            decisions: Vec::new(),
            now: 1_000,
            settings: settings(),
        }
    }

    pub(crate) fn feed(&mut self, input: Input) -> &Decision {
        self.now += 10;
        self.feed_at(input, self.now)
    }

    pub(crate) fn feed_at(&mut self, input: Input, now: i64) -> &Decision {
        self.now = now;
        let d = decide(&self.defs, &self.settings, self.state.as_ref(), &input, now);
        if let Some(s) = &d.state {
            self.state = Some(s.clone());
        }
        if d.forget {
            self.state = None;
        }
        self.decisions.push(d);
        self.decisions.last().expect("pushed")
    }

    /// Fires the saga's earliest pending timer at its due time (or `now`, if later).
    pub(crate) fn fire_next_timer(&mut self) -> Option<&Decision> {
        let state = self.state.as_ref()?;
        let timer = state.timers.iter().min_by_key(|t| t.due)?.clone();
        let at = timer.due.max(self.now);
        let input = Input::Timer {
            saga_id: state.saga_id.clone(),
            timer_id: timer.id,
        };
        Some(self.feed_at(input, at))
    }

    pub(crate) fn events(&self) -> Vec<(i64, E, Option<String>)> {
        self.decisions
            .iter()
            .flat_map(|d| {
                d.events
                    .iter()
                    .map(|e| (e.seq, e.event_type, e.step.clone()))
            })
            .collect()
    }

    pub(crate) fn all_events(&self) -> Vec<SagaEvent> {
        self.decisions
            .iter()
            .flat_map(|d| d.events.iter().cloned())
            .collect()
    }

    /// Whether the saga's only pending timer is its retention (see `retention.rs`): nothing of
    /// the saga itself may fire any more.
    pub(crate) fn only_retention_left(&self) -> bool {
        self.state
            .as_ref()
            .expect("state")
            .timers
            .iter()
            .all(|t| t.kind == sagaflow_avro::TimerKind::Expire)
    }

    pub(crate) fn status(&self) -> SagaStatus {
        self.state.as_ref().expect("state").status
    }
}
