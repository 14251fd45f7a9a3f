//! The decision being built: the new state plus everything it emits.
//!
//! Keeping event numbering here is what makes each saga's event log gapless; keeping timers in
//! the state is what makes them fire at most once as seen by the saga (firing removes the timer
//! in the same decision, journaled atomically with it).

use std::collections::HashMap;
use std::time::Duration;

use sagaflow_avro::{
    Command, EventType, SagaEvent, SagaState, SagaStatus, StepState, StepStatus, Timer, TimerKind,
};
use sagaflow_definition::{Action, Definition, Step};
use serde_json::{json, Value};

use crate::graph::{parse_instance, Layout, Scope};
use crate::ids::event_id;
use crate::input::{Effect, Settings};

pub(crate) struct Draft<'a> {
    pub(crate) state: SagaState,
    /// Position of each node in `state.steps`: a for_each can hold thousands of them, and
    /// nodes are never removed.
    index: HashMap<String, usize>,
    pub(crate) def: &'a Definition,
    pub(crate) layout: Layout<'a>,
    pub(crate) now: i64,
    pub(crate) settings: &'a Settings,
    pub(crate) commands: Vec<(String, Command)>,
    pub(crate) events: Vec<SagaEvent>,
    pub(crate) effects: Vec<Effect>,
}

/// A failure of one attempt or step, as the saga records it.
pub(crate) struct Failure {
    pub(crate) error: Value,
    /// The attempt's effect is unknown (it timed out): compensate the step too.
    pub(crate) uncertain: bool,
}

impl Failure {
    pub(crate) fn known(error: Value) -> Self {
        Self {
            error,
            uncertain: false,
        }
    }

    /// A failure with this code and message that no retry can fix.
    pub(crate) fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self::known(json!({"code": code, "message": message.into(), "retryable": false}))
    }

    pub(crate) fn code(&self) -> &str {
        self.error
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("UNSPECIFIED")
    }

    pub(crate) fn retryable(&self) -> bool {
        self.error.get("retryable").and_then(Value::as_bool) == Some(true)
    }
}

/// Most characters of an error message the saga's state keeps (see [`Draft::set_failure`]).
pub(crate) const MAX_MESSAGE: usize = 2048;

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Statuses of a node that still has something in flight or scheduled.
pub(crate) fn active(status: StepStatus) -> bool {
    matches!(
        status,
        StepStatus::Running
            | StepStatus::Backoff
            | StepStatus::Waiting
            | StepStatus::Compensating
            | StepStatus::Cancelled
    )
}

impl<'a> Draft<'a> {
    pub(crate) fn new(
        state: SagaState,
        def: &'a Definition,
        now: i64,
        settings: &'a Settings,
    ) -> Self {
        let index = state
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Self {
            state,
            index,
            def,
            layout: Layout::of(def),
            now,
            settings,
            commands: Vec::new(),
            events: Vec::new(),
            effects: Vec::new(),
        }
    }

    pub(crate) fn emit(
        &mut self,
        event_type: EventType,
        step: Option<&str>,
        attempt: Option<i32>,
        detail: Option<Value>,
    ) {
        self.emit_due(event_type, step, attempt, detail, None);
    }

    pub(crate) fn emit_due(
        &mut self,
        event_type: EventType,
        step: Option<&str>,
        attempt: Option<i32>,
        detail: Option<Value>,
        due: Option<i64>,
    ) {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        self.events.push(SagaEvent {
            event_id: event_id(&self.state.saga_id, seq),
            saga_id: self.state.saga_id.clone(),
            seq,
            event_type,
            definition: self.state.definition.clone(),
            version: self.state.version,
            step: step.map(str::to_string),
            attempt,
            at: self.now,
            detail_json: detail.map(|d| d.to_string()),
            due,
            input_json: None,
            status: Some(self.state.status.symbol().to_string()),
            index_json: None,
        });
    }

    /// Adds a timer; its id is unique because it names the last emitted event's seq.
    pub(crate) fn schedule(
        &mut self,
        kind: TimerKind,
        due: i64,
        step: Option<&str>,
        attempt: Option<i32>,
    ) {
        let id = format!("{kind:?}/{}", self.state.next_seq - 1);
        self.state.timers.push(Timer {
            id,
            kind,
            due,
            step: step.map(str::to_string),
            attempt,
        });
    }

    /// Drops the node's timers of these kinds (they stay in the engine's index and are ignored
    /// when they come due).
    pub(crate) fn cancel_timers(&mut self, id: &str, kinds: &[TimerKind]) {
        self.state
            .timers
            .retain(|t| !(t.step.as_deref() == Some(id) && kinds.contains(&t.kind)));
    }

    pub(crate) fn has_timer(&self, id: &str, kind: TimerKind) -> bool {
        self.state
            .timers
            .iter()
            .any(|t| t.kind == kind && t.step.as_deref() == Some(id))
    }

    pub(crate) fn context(&self) -> Value {
        serde_json::from_str(&self.state.context_json).unwrap_or_else(|_| json!({}))
    }

    /// The node's entry, if it has started or is due to.
    pub(crate) fn node(&self, id: &str) -> Option<&StepState> {
        self.index.get(id).map(|&i| &self.state.steps[i])
    }

    pub(crate) fn status(&self, id: &str) -> StepStatus {
        self.node(id).map_or(StepStatus::Pending, |s| s.status)
    }

    /// The node's entry, created pending if it has none yet.
    pub(crate) fn node_mut(&mut self, id: &str) -> &mut StepState {
        let index = match self.index.get(id) {
            Some(&index) => index,
            None => {
                self.state.steps.push(StepState {
                    name: id.to_string(),
                    status: StepStatus::Pending,
                    attempt: 0,
                    dispatched_at: None,
                    finished_at: None,
                    correlation: None,
                    signal_id: None,
                    uncertain: false,
                    items_json: None,
                });
                let index = self.state.steps.len() - 1;
                self.index.insert(id.to_string(), index);
                index
            }
        };
        &mut self.state.steps[index]
    }

    /// Sets a node's status; a finished status stamps `finished_at`.
    pub(crate) fn set_status(&mut self, id: &str, status: StepStatus) {
        let now = self.now;
        let node = self.node_mut(id);
        node.status = status;
        if !active(status) && status != StepStatus::Pending {
            node.finished_at = Some(now);
        }
    }

    /// Creates pending entries for a sequence that starts, in order, so the state lists a
    /// scope's steps the way its definition does.
    pub(crate) fn open(&mut self, steps: &[Step], scope: &Scope) {
        for step in steps {
            let _ = self.node_mut(&scope.id(&step.name));
        }
    }

    /// The definition step and scope of a step instance id.
    pub(crate) fn locate(&self, id: &str) -> Option<(&'a Step, Scope)> {
        let (name, suffix) = parse_instance(id)?;
        let place = self.layout.place(name)?.clone();
        let mut scope = Scope::default();
        let mut iterations = 0;
        for (container, child) in &place.ancestors {
            scope = match &container.action {
                Action::Parallel(p) => scope.branch(&p.branches.get(*child)?.key),
                Action::ForEach(f) => {
                    let index = *suffix.get(iterations)?;
                    iterations += 1;
                    let owner = scope.id(&container.name);
                    let item = self.item(&owner, index).unwrap_or(Value::Null);
                    scope.iteration(&f.key, index, item)
                }
                _ => scope,
            };
        }
        (iterations == suffix.len()).then_some((place.step, scope))
    }

    /// Element `index` of the list a for_each node started over.
    pub(crate) fn item(&self, for_each: &str, index: u32) -> Option<Value> {
        let items = self.node(for_each)?.items_json.as_deref()?;
        let items: Value = serde_json::from_str(items).ok()?;
        items.get(index as usize).cloned()
    }

    /// Writes a step's output entries into its scope's location of the context; the error
    /// says why they cannot be written.
    pub(crate) fn record_outputs(
        &mut self,
        scope: &Scope,
        entries: Vec<(String, Value)>,
    ) -> Result<(), Failure> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut context = self.context();
        let Some(outputs) = scope.outputs(&mut context) else {
            return Err(Failure::fatal(
                "OUTPUT_MAPPING",
                "the context location for this branch's outputs is not an object",
            ));
        };
        for (key, value) in entries {
            outputs.insert(key, value);
        }
        self.set_context(context)
    }

    /// Replaces the context if it stays within the size limit.
    pub(crate) fn set_context(&mut self, context: Value) -> Result<(), Failure> {
        let text = context.to_string();
        let limit = self.settings.max_state_bytes;
        let size = self.state_bytes() - self.state.context_json.len() + text.len();
        if size > limit {
            return Err(Failure::fatal(
                "STATE_TOO_LARGE",
                format!("the saga's state would grow to {size} bytes, over the engine's limit of {limit} (max-state-bytes); keep large documents in a store and put their ids in the context"),
            ));
        }
        self.state.context_json = text;
        Ok(())
    }

    /// About how many bytes the state takes: what grows with the context and the graph.
    pub(crate) fn state_bytes(&self) -> usize {
        let nodes: usize = self
            .state
            .steps
            .iter()
            .map(|s| {
                48 + s.name.len()
                    + s.items_json.as_ref().map_or(0, String::len)
                    + s.correlation.as_ref().map_or(0, String::len)
            })
            .sum();
        self.state.context_json.len()
            + nodes
            + self
                .state
                .completion_order
                .iter()
                .map(|n| n.len() + 2)
                .sum::<usize>()
            + self.state.failure_json.as_ref().map_or(0, String::len)
            + self.state.timers.len() * 48
            + self
                .state
                .pause
                .as_ref()
                .map_or(0, |p| p.held.iter().map(String::len).sum())
    }

    /// Records why the saga fails or compensates. A participant's error message is kept to
    /// [`MAX_MESSAGE`] characters here: the state stays bounded whatever a participant sends,
    /// and the event that reported the failure has the whole text.
    pub(crate) fn set_failure(&mut self, mut failure: Value) {
        if let Some(Value::String(message)) =
            failure.get_mut("error").and_then(|e| e.get_mut("message"))
        {
            if message.chars().count() > MAX_MESSAGE {
                let kept: String = message.chars().take(MAX_MESSAGE).collect();
                *message = format!("{kept}… (cut; the whole message is in the event log)");
            }
        }
        self.state.failure_json = Some(failure.to_string());
    }

    /// What failed the saga (`failure_json`), if anything did.
    pub(crate) fn failure(&self) -> Option<Value> {
        self.state
            .failure_json
            .as_deref()
            .and_then(|f| serde_json::from_str(f).ok())
    }

    /// Whether anything of the saga is still in flight or scheduled.
    pub(crate) fn unresolved(&self) -> bool {
        self.state.steps.iter().any(|s| active(s.status))
    }

    /// Ends the saga: nothing of it may fire any more.
    pub(crate) fn end(&mut self, status: SagaStatus, event: EventType, detail: Option<Value>) {
        self.state.status = status;
        self.state.timers.clear();
        self.emit(event, None, None, detail);
    }

    /// The saga cannot go on without an operator: it enters INCIDENT and stays there, state and
    /// timers kept, until an operator acts. `failure_json` already says which step and why.
    pub(crate) fn incident(&mut self, cause: &str) {
        self.state.status = SagaStatus::Incident;
        let failure = self.failure().unwrap_or(Value::Null);
        let detail = json!({
            "cause": cause,
            "step": failure.get("step"),
            "error": failure.get("error"),
        });
        self.emit(EventType::SagaIncident, None, None, Some(detail));
    }

    /// Ends an await step's subscription.
    pub(crate) fn unsubscribe(&mut self, id: &str) {
        let Some((step, _)) = self.locate(id) else {
            return;
        };
        let (Action::Await(awaited), Some(correlation)) = (
            &step.action,
            self.node(id).and_then(|n| n.correlation.clone()),
        ) else {
            return;
        };
        self.effects.push(Effect::Unsubscribe {
            event: awaited.event.clone(),
            correlation,
            step: id.to_string(),
        });
    }
}
