//! The typed form of a saga definition.
//!
//! New step features arrive as new optional fields or new step kinds decoded
//! next to the existing ones, so older definitions keep parsing unchanged.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::calendar::Calendar;
use crate::diagnostics::Diagnostics;
use crate::expr::Condition;
use crate::parse;
use crate::retry::RetryPolicy;
use crate::template::{lookup, Path, RenderError, Template};

/// A validated saga definition, identified by name and version.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Saga type name, `[a-z0-9_.-]+`.
    pub name: String,
    /// Positive version; instances stay pinned to the version they started with.
    pub version: u32,
    /// Free text for humans.
    pub description: Option<String>,
    /// Saga-level defaults; already merged into every step's `retry`/`timeout` by the parser.
    ///
    /// Only command steps take them (see [`Step::retry`]); they are kept here for display.
    pub defaults: StepDefaults,
    /// The whole saga must end within this long after its start, else it compensates.
    pub deadline: Option<Duration>,
    /// Steps in execution order; never empty. Step names are unique across the whole
    /// definition, branches included, so a name alone finds a step wherever it is nested.
    pub steps: Vec<Step>,
    /// Bounds that keep one saga's state small (YAML `limits:`).
    pub limits: Limits,
    /// Business keys (YAML `index:`): a name for each context path whose value read models
    /// index, so a saga can be found by, say, its order id. The engine records them on the
    /// event log whenever a decision sets or changes one.
    pub index: Vec<(String, Path)>,
    /// A hash of the document's content (FNV-1a, 64 bits, hex): the same for the same keys and
    /// values, whatever the comments, quoting or layout. A deployed version is immutable, and
    /// the engine compares this to tell an edited body from the deployed one.
    pub fingerprint: String,
}

/// The saga-level `limits:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most elements a `for_each` may run over (YAML `limits.for_each_items`, default 1000);
    /// more fails the step with `FOR_EACH_LIMIT`, or rejects a start whose input already has
    /// more.
    pub for_each_items: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            for_each_items: 1000,
        }
    }
}

/// The saga-level `defaults:` for command steps that do not set their own.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepDefaults {
    /// Retry policy of forward commands (YAML `defaults.retry`).
    pub retry: RetryPolicy,
    /// Per-attempt timeout of forward commands (YAML `defaults.timeout`).
    pub timeout: Option<Duration>,
    /// Retry policy of compensation commands (YAML `defaults.compensation_retry`).
    pub compensation_retry: RetryPolicy,
}

/// One step: what it does ([`Action`]), how to undo it, and its time limits.
///
/// `retry`, `compensation_retry` and `timeout` hold the *effective* values, with
/// the saga's [`StepDefaults`] already applied. They concern commands: for wait
/// and await steps they are always [`RetryPolicy::default()`] (one attempt) and
/// `None` (the await's own timeout is [`Await::timeout`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the saga, `[a-z0-9_-]+`.
    pub name: String,
    /// What the step does: send a command, wait, await an external event, or run branches.
    pub action: Action,
    /// The step runs only when this holds on the saga context when its turn comes; otherwise
    /// it is skipped (YAML `when:`).
    pub when: Option<Condition>,
    /// The command sent to undo a completed step when a later one fails.
    ///
    /// Only allowed on command steps.
    pub compensation: Option<CommandSpec>,
    /// Context key <- path into the step's result (the command reply's output, or
    /// the awaited event's payload), in source order. Empty for wait steps.
    pub output: Vec<(String, Path)>,
    /// Effective retry policy of the forward command (step's own `retry`, else saga `defaults.retry`).
    pub retry: RetryPolicy,
    /// Effective retry policy of the compensation command (step `compensation_retry`, else defaults.compensation_retry).
    pub compensation_retry: RetryPolicy,
    /// Per-attempt timeout (step `timeout`, else defaults.timeout); no reply in time = retryable failure.
    pub timeout: Option<Duration>,
    /// Step deadline across all attempts, measured from the first dispatch.
    ///
    /// Allowed on command and await steps; always `None` on wait steps.
    pub deadline: Option<Duration>,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a command to a participant and wait for its reply (YAML `command:`).
    Command(CommandSpec),
    /// Pause the saga (YAML `wait:` or `until:`).
    Wait(Wait),
    /// Wait for an external event (YAML `await:`).
    Await(Await),
    /// Run named branches at the same time and join them (YAML `parallel:`).
    Parallel(Parallel),
    /// Run the first branch whose condition holds (YAML `choice:` and `otherwise:`).
    Choice(Choice),
    /// Run a branch once per element of a context list (YAML `for_each:`).
    ForEach(ForEach),
}

/// `parallel:` branches and their join.
#[derive(Debug, Clone, PartialEq)]
pub struct Parallel {
    /// At least two, names unique within the step, keys unique among them.
    pub branches: Vec<Branch>,
    /// When the step is done (YAML `join:`, default `all`).
    pub join: Join,
}

/// One branch of a `parallel` step.
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    /// `[a-z0-9_-]+`, unique within its parallel step.
    pub name: String,
    /// Context key under which the branch's step outputs land (YAML `key:`, default the name).
    pub key: String,
    /// The branch's steps in order; never empty.
    pub steps: Vec<Step>,
}

/// When a `parallel` or `for_each` step is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Every branch succeeded (`join: all`, the default).
    All,
    /// One branch succeeded; the others are cancelled (`join: any`).
    Any,
    /// N branches succeeded; the others are cancelled (`join: {at_least: N}`).
    AtLeast(u32),
}

impl Join {
    /// How many of `total` branches must succeed.
    pub fn needed(self, total: usize) -> usize {
        match self {
            Join::All => total,
            Join::Any => total.min(1),
            Join::AtLeast(n) => total.min(n as usize),
        }
    }
}

/// `choice:` and `otherwise:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Tried in order; the first whose condition holds runs. At least one.
    pub branches: Vec<ChoiceBranch>,
    /// Runs when no condition holds; without it the step is skipped.
    pub otherwise: Option<Vec<Step>>,
}

/// One `choice` branch: `- when: <condition>` with `steps:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceBranch {
    /// When this branch is the one to run.
    pub condition: Condition,
    /// Never empty.
    pub steps: Vec<Step>,
}

/// `for_each:` a list in the context.
#[derive(Debug, Clone, PartialEq)]
pub struct ForEach {
    /// The list, read when the step starts (YAML `for_each: $.items`).
    pub items: Path,
    /// Context key of the list of per-element results (YAML `key:`, default the step name).
    pub key: String,
    /// Most elements in flight at once (YAML `max_concurrency:`, default 10).
    pub max_concurrency: u32,
    /// When the step is done (YAML `join:`, default `all`).
    pub join: Join,
    /// The steps run for each element (YAML `steps:`); they see `$.item` and `$.index`.
    pub steps: Vec<Step>,
}

/// When a wait step ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// `wait: 10s`
    For(Duration),
    /// `until: 2026-12-01T09:00:00+01:00` (RFC 3339), as epoch milliseconds UTC
    UntilInstant(i64),
    /// `until: $.path`: an RFC 3339 string (or epoch ms number) read from the saga context when the step starts
    UntilContext(Path),
    /// `until: every Monday 09:00 Europe/Paris` or a cron-like expression
    ///
    /// The step ends at the calendar's first firing strictly after the step starts.
    Calendar(Calendar),
}

/// An await step: the saga pauses until an external event (a signal) arrives.
#[derive(Debug, Clone, PartialEq)]
pub struct Await {
    /// Event name the step waits for (matches the signal's `event`).
    pub event: String,
    /// Which saga instance a signal belongs to.
    pub correlate: Correlation,
    /// How long to wait for the event, from the step's start; `None` waits forever
    /// (or until a step or saga deadline).
    pub timeout: Option<Duration>,
    /// What happens when `timeout` passes without the event. [`OnTimeout::Compensate`]
    /// when not set; meaningless without `timeout`.
    pub on_timeout: OnTimeout,
}

/// How a signal is matched to a waiting saga instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correlation {
    /// The signal names the saga id (YAML `correlate: saga_id`, the default).
    SagaId,
    /// The signal carries a key equal to this saga-context value when the step
    /// starts (YAML `correlate: $.order.id`).
    Context(Path),
}

/// What an await step does when its timeout passes.
#[derive(Debug, Clone, PartialEq)]
pub enum OnTimeout {
    /// The step fails; completed steps are compensated (`on_timeout: fail`).
    Fail,
    /// The saga compensates, as for a deadline (`on_timeout: compensate`, the default).
    Compensate,
    /// The step completes as if the event had arrived with this payload
    /// (`on_timeout: {continue: {confirmed: false}}`; `continue` alone is an empty object).
    Continue(Value),
}

/// A command to publish: where, what kind, and with which payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Kafka topic the participant consumes.
    pub topic: String,
    /// Command type understood by the participant (YAML key `type`).
    pub command_type: String,
    /// Payload rendered from the saga context; an empty object when omitted.
    pub payload: Template,
}

impl Definition {
    /// Parses and validates YAML, reporting every problem found; `source_name` labels diagnostics.
    pub fn parse(source_name: &str, yaml: &str) -> Result<Definition, Diagnostics> {
        parse::parse(source_name, yaml).map(|located| located.definition)
    }

    /// The registry key, `name@version` (e.g. `trip@1`).
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The step with this name, wherever it is nested.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.all_steps().find(|step| step.name == name)
    }

    /// The position of the top-level step with this name in execution order.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
    }

    /// Every step, nested ones included, depth first in source order.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> + '_ {
        let mut stack: Vec<&Step> = self.steps.iter().rev().collect();
        std::iter::from_fn(move || {
            let step = stack.pop()?;
            for sequence in step.children().into_iter().rev() {
                stack.extend(sequence.iter().rev());
            }
            Some(step)
        })
    }

    /// Whether every step is a top-level command, wait or await step without a condition:
    /// the shape engines before graph definitions run too.
    pub fn is_linear(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.children().is_empty() && s.when.is_none())
    }
}

impl Step {
    /// The command this step sends, if it is a command step.
    pub fn command(&self) -> Option<&CommandSpec> {
        match &self.action {
            Action::Command(command) => Some(command),
            _ => None,
        }
    }

    /// How this step waits, if it is a wait step.
    pub fn wait(&self) -> Option<&Wait> {
        match &self.action {
            Action::Wait(wait) => Some(wait),
            _ => None,
        }
    }

    /// The event this step awaits, if it is an await step.
    pub fn awaited(&self) -> Option<&Await> {
        match &self.action {
            Action::Await(awaited) => Some(awaited),
            _ => None,
        }
    }

    /// The step sequences this step holds, in source order: a parallel's branches, a choice's
    /// branches then `otherwise`, a for_each's body; none for command, wait and await steps.
    pub fn children(&self) -> Vec<&[Step]> {
        match &self.action {
            Action::Parallel(p) => p.branches.iter().map(|b| b.steps.as_slice()).collect(),
            Action::Choice(c) => c
                .branches
                .iter()
                .map(|b| b.steps.as_slice())
                .chain(c.otherwise.as_deref())
                .collect(),
            Action::ForEach(f) => vec![f.steps.as_slice()],
            _ => Vec::new(),
        }
    }

    /// The context entries this step's result (reply output or event payload) produces;
    /// a missing path is an error naming it.
    pub fn map_output(&self, reply_output: &Value) -> Result<Map<String, Value>, RenderError> {
        self.output
            .iter()
            .map(|(key, path)| Ok((key.clone(), lookup(path, reply_output)?.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const YAML: &str = "
name: shop
version: 3
steps:
  - name: reserve
    command: {topic: shop.stock, type: reserve}
    output:
      reservation: $.id
      first_line: $.lines.0
  - name: ship
    command: {topic: shop.shipping, type: ship}
";

    #[test]
    fn lookups_by_name() {
        let definition = Definition::parse("shop.yaml", YAML).unwrap();
        assert_eq!(definition.key(), "shop@3");
        assert_eq!(definition.step_index("ship"), Some(1));
        assert_eq!(
            definition.step("reserve").unwrap().command().unwrap().topic,
            "shop.stock"
        );
        assert!(definition.step("pay").is_none());
        assert_eq!(definition.step_index("pay"), None);
    }

    #[test]
    fn output_mapping_copies_reply_fields() {
        let definition = Definition::parse("shop.yaml", YAML).unwrap();
        let step = definition.step("reserve").unwrap();
        let mapped = step
            .map_output(&json!({"id": "r-1", "lines": [{"sku": "x"}], "extra": 1}))
            .unwrap();
        assert_eq!(
            Value::Object(mapped),
            json!({"reservation": "r-1", "first_line": {"sku": "x"}})
        );
        assert_eq!(
            step.map_output(&json!({"id": "r-1"}))
                .unwrap_err()
                .to_string(),
            "nothing at `$.lines.0`"
        );
        assert_eq!(
            definition.step("ship").unwrap().command().unwrap().payload,
            Template::default()
        );
    }
}
