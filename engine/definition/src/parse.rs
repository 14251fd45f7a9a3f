//! Decodes a positioned YAML tree into a [`Definition`], reporting every problem.
//!
//! Each decoder reports its own problems and returns `None`; callers decode
//! all siblings before combining results so that one problem never hides another.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Number, Value};

use crate::calendar::Calendar;
use crate::diagnostics::{did_you_mean, Collector, Diagnostics};
use crate::duration::{format_duration, parse_duration};
use crate::instant::parse_instant;
use crate::model::{
    Action, Await, CommandSpec, Correlation, Definition, OnTimeout, Step, StepDefaults, Wait,
};
use crate::retry::{Backoff, Jitter, RetryPolicy};
use crate::template::{classify, Path, StringTemplate, Template};
use crate::yaml::{self, shorten, Kind, Node, Pos, Scalar, ScalarValue};

const DEFINITION_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "deadline",
    "defaults",
    "steps",
];
const STEP_FIELDS: &[&str] = &[
    "name",
    "command",
    "wait",
    "until",
    "await",
    "compensation",
    "retry",
    "compensation_retry",
    "timeout",
    "deadline",
    "output",
];
/// The step fields that say what a step does; a step has exactly one.
const ACTION_FIELDS: &[&str] = &["command", "wait", "until", "await"];
const COMMAND_FIELDS: &[&str] = &["topic", "type", "payload"];
const DEFAULTS_FIELDS: &[&str] = &["timeout", "retry", "compensation_retry"];
const RETRY_FIELDS: &[&str] = &["max_attempts", "backoff", "jitter", "non_retryable"];
const BACKOFF_FIELDS: &[&str] = &["type", "interval", "initial", "multiplier", "max"];
const AWAIT_FIELDS: &[&str] = &["event", "correlate", "timeout", "on_timeout"];

/// Where a field that is unknown in one place does belong, for a better hint.
const FIELD_HOMES: &[(&str, &str)] = &[
    ("topic", "`command:` or `compensation:`"),
    ("type", "`command:` or `compensation:`"),
    ("payload", "`command:` or `compensation:`"),
    ("command", "an item of `steps:`"),
    ("wait", "an item of `steps:`"),
    ("until", "an item of `steps:`"),
    ("await", "an item of `steps:`"),
    ("compensation", "an item of `steps:`"),
    ("output", "an item of `steps:`"),
    ("retry", "an item of `steps:` or `defaults:`"),
    ("compensation_retry", "an item of `steps:` or `defaults:`"),
    ("timeout", "an item of `steps:`, `defaults:` or `await:`"),
    (
        "deadline",
        "an item of `steps:` or the top level of the file",
    ),
    ("max_attempts", "`retry:` or `compensation_retry:`"),
    ("backoff", "`retry:` or `compensation_retry:`"),
    ("jitter", "`retry:` or `compensation_retry:`"),
    ("non_retryable", "`retry:` or `compensation_retry:`"),
    ("interval", "`backoff:`"),
    ("initial", "`backoff:`"),
    ("multiplier", "`backoff:`"),
    ("max", "`backoff:`"),
    ("event", "`await:`"),
    ("correlate", "`await:`"),
    ("on_timeout", "`await:`"),
    ("version", "the top level of the file"),
    ("description", "the top level of the file"),
    ("defaults", "the top level of the file"),
    ("steps", "the top level of the file"),
];

/// Words authors reach for instead of a field's name, and that field.
const SYNONYMS: &[(&str, &str)] = &[
    ("retries", "retry"),
    ("retry_policy", "retry"),
    ("max_retries", "max_attempts"),
    ("attempts", "max_attempts"),
    ("undo", "compensation"),
    ("sleep", "wait"),
    ("delay", "wait"),
    ("wait_until", "until"),
    ("await_event", "await"),
    ("signal", "await"),
];

const TOPIC_HINT: &str =
    "Kafka topic names use 1 to 249 letters, digits, `.`, `_` and `-`, e.g. `trip.payment.commands`";
const TYPE_HINT: &str = "set the command type the participant expects, e.g. `type: charge`";
const REF_HINT: &str =
    "references look like `$.customer.id` (`$` alone is the whole context); to send text starting with `$.`, write `$$.` instead";
const PATH_HINT: &str =
    "reply paths look like `$.payment_id` or `$.booking.id` (`$` is the whole reply output)";
const STEP_HINT: &str =
    "a step is a mapping with a `name` and one of `command`, `wait`, `until` or `await`";
const ACTION_HINT: &str = "add `command: {topic: ..., type: ...}` to call a participant, `wait: 10s` to pause, `until: <instant or calendar>` to wait for a time, or `await: {event: ...}` to wait for an external event";
const DURATION_HINT: &str = "durations are whole numbers with a unit (`ms`, `s`, `m`, `h`, `d`), largest unit first: `500ms`, `10s`, `1m30s`, `24h`, `2d`";
const RETRY_HINT: &str = "a retry policy is a mapping with `max_attempts` and optionally `backoff`, `jitter` and `non_retryable`, e.g. `{max_attempts: 5, backoff: {type: exponential, initial: 200ms, max: 10s}, jitter: full}`";
const BACKOFF_HINT: &str = "use `{type: fixed, interval: 1s}` or `{type: exponential, initial: 200ms, multiplier: 2, max: 10s}`";
const JITTER_HINT: &str =
    "use `none`, `full` (between zero and the delay) or `equal` (between half the delay and the delay)";
const INSTANT_HINT: &str = "write an RFC 3339 instant with its UTC offset, e.g. `2026-12-01T09:00:00+01:00` or `2026-12-01T08:00:00Z`";
const CALENDAR_HINT: &str = "calendars are `every <day|weekday|weekend|Monday|Mon,Wed,Fri> [at] HH:MM[:SS] <Zone>` or cron `minute hour day-of-month month day-of-week <Zone>`, e.g. `every Monday 09:00 Europe/Paris` or `0 9 * * MON Europe/Paris`; zones are IANA names such as `Europe/Paris`, or `UTC`";
const UNTIL_HINT: &str = "`until` takes an RFC 3339 instant (`2026-12-01T09:00:00+01:00`), a context path (`$.departure`) or a calendar (`every Monday 09:00 Europe/Paris`)";
const CONTEXT_PATH_HINT: &str =
    "context paths look like `$.departure` or `$.order.id`; `$` alone (the whole context) is not accepted here";
const EVENT_HINT: &str =
    "event names use letters, digits, `_`, `.` and `-`, e.g. `customer_confirmed`";
const CORRELATE_HINT: &str = "use `correlate: saga_id` (signals name the saga id) or a context path such as `correlate: $.order.id` (signals carry that value)";
const ON_TIMEOUT_HINT: &str = "use `fail`, `compensate`, or `{continue: <result>}` to carry on as if the event had arrived with that payload";

/// A definition together with the position of its name, for registry conflicts.
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) definition: Definition,
    pub(crate) name_pos: Pos,
}

/// Parses and validates one source.
pub(crate) fn parse(source: &str, yaml: &str) -> Result<Located, Diagnostics> {
    let mut out = Collector::new(source);
    let located =
        yaml::load(yaml, &mut out).and_then(|root| Decoder { out: &mut out }.definition(&root));
    out.finish(located)
}

struct Decoder<'c> {
    out: &'c mut Collector,
}

/// The known fields of a mapping, after unknown and duplicate keys were reported.
struct Fields<'n> {
    pos: Pos,
    context: String,
    /// Key, position of the key, value.
    entries: Vec<(&'n str, Pos, &'n Node)>,
    /// Fields offered as "did you mean"; their absence is not reported twice.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(key, _, _)| *key == name)
            .map(|(_, _, node)| *node)
    }

    /// An optional field; an explicit null counts as absent.
    fn optional(&self, name: &str) -> Option<&'n Node> {
        self.get(name).filter(|node| !node.is_null())
    }

    /// The position of a present, non-null field's key.
    fn key_pos(&self, name: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(key, _, node)| *key == name && !node.is_null())
            .map(|(_, pos, _)| *pos)
    }

    fn require(&self, decoder: &mut Decoder<'_>, name: &str, hint: &str) -> Option<&'n Node> {
        let node = self.get(name);
        if node.is_none() && !self.suggested.contains(&name) {
            decoder.error(
                self.pos,
                format!("missing required field `{name}` in {}", self.context),
                hint,
            );
        }
        node
    }
}

impl Decoder<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.out.error(pos, message, hint);
    }

    fn definition(&mut self, root: &Node) -> Option<Located> {
        let fields = self.fields(
            root,
            "the saga definition",
            DEFINITION_FIELDS,
            "a definition is a mapping with `name:`, `version:` and `steps:` at the top level",
        )?;
        let name_node = fields.require(self, "name", "add `name: <saga>`, e.g. `name: trip`");
        let name = name_node.and_then(|node| self.name(node, "the saga", true));
        let version = fields
            .require(
                self,
                "version",
                "add `version: 1`; bump it for every change",
            )
            .and_then(|node| self.version(node));
        let description = fields
            .optional("description")
            .map(|node| self.string(node, "`description`", "write the description as text"));
        let deadline = fields
            .optional("deadline")
            .map(|node| self.duration(node, "the saga's `deadline`"));
        let defaults = fields.optional("defaults").map(|node| self.defaults(node));
        // Steps are decoded even when the defaults are broken, to report their problems too.
        let step_defaults = defaults.clone().flatten().unwrap_or_default();
        let steps = fields
            .require(
                self,
                "steps",
                "add a `steps:` list; each step has a `name` and a `command`",
            )
            .and_then(|node| self.steps(node, &step_defaults));
        let definition = Definition {
            name: name?,
            version: version?,
            description: optional(description)?.map(str::to_owned),
            defaults: optional(defaults)?.unwrap_or_default(),
            deadline: optional(deadline)?,
            steps: steps?,
            fingerprint: format!("{:016x}", root.fingerprint()),
        };
        Some(Located {
            definition,
            name_pos: name_node.map_or(root.pos, |node| node.pos),
        })
    }

    fn defaults(&mut self, node: &Node) -> Option<StepDefaults> {
        let fields = self.fields(
            node,
            "`defaults`",
            DEFAULTS_FIELDS,
            "`defaults` is a mapping with optional `timeout`, `retry` and `compensation_retry`, applied to command steps that do not set their own",
        )?;
        let timeout = fields
            .optional("timeout")
            .map(|node| self.duration(node, "`timeout` in `defaults`"));
        let retry = fields
            .optional("retry")
            .map(|node| self.retry(node, "the `retry` of `defaults`"));
        let compensation_retry = fields
            .optional("compensation_retry")
            .map(|node| self.retry(node, "the `compensation_retry` of `defaults`"));
        Some(StepDefaults {
            retry: optional(retry)?.unwrap_or_default(),
            timeout: optional(timeout)?,
            compensation_retry: optional(compensation_retry)?.unwrap_or_default(),
        })
    }

    fn steps(&mut self, node: &Node, defaults: &StepDefaults) -> Option<Vec<Step>> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!("`steps` must be a list of steps, found {}", node.describe()),
                "write each step as a list item starting with `- name: <step>`",
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                node.pos,
                "a saga needs at least one step",
                "add a step under `steps:` with a `name` and a `command`",
            );
            return None;
        }
        let mut first_seen: HashMap<&str, Pos> = HashMap::new();
        let mut steps = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            // Duplicates are checked on the raw name, so they are reported even
            // when the step has other problems.
            let name = step_name_node(item).and_then(|n| n.as_str().map(|s| (s, n.pos)));
            let label = match name {
                Some((name, _)) => format!("step `{name}`"),
                None => format!("step #{}", index + 1),
            };
            if let Some((name, pos)) = name {
                match first_seen.get(name) {
                    Some(first) => self.error(
                        pos,
                        format!(
                            "duplicate step name `{name}` (first defined at line {})",
                            first.line
                        ),
                        "step names must be unique within a saga; rename one of the steps",
                    ),
                    None => {
                        let _ = first_seen.insert(name, pos);
                    }
                }
            }
            steps.push(self.step(item, &label, defaults));
        }
        steps.into_iter().collect()
    }

    fn step(&mut self, node: &Node, label: &str, defaults: &StepDefaults) -> Option<Step> {
        let fields = self.fields(node, label, STEP_FIELDS, STEP_HINT)?;
        let name = fields
            .require(self, "name", "give the step a name, e.g. `name: payment`")
            .and_then(|node| self.name(node, label, false));

        // What the step does: exactly one of the action fields.
        let actions: Vec<(&str, Pos, &Node)> = fields
            .entries
            .iter()
            .filter(|(key, _, _)| ACTION_FIELDS.contains(key))
            .copied()
            .collect();
        let kind = actions.first().map(|(key, _, _)| *key);
        // Whether the step's shape (one action, fields it may have) is right.
        let mut well_formed = actions.len() == 1;
        if actions.is_empty()
            && !ACTION_FIELDS
                .iter()
                .any(|field| fields.suggested.contains(field))
        {
            self.error(
                fields.pos,
                format!(
                    "{label} does nothing: it needs one of `command`, `wait`, `until` or `await`"
                ),
                ACTION_HINT,
            );
        }
        if let Some((first, _, _)) = actions.first() {
            for (key, pos, _) in actions.iter().skip(1) {
                self.error(
                    *pos,
                    format!("{label} has both `{first}` and `{key}`; a step does exactly one of `command`, `wait`, `until` or `await`"),
                    "split it into two steps, one for each",
                );
            }
        }
        let decoded: Vec<Option<(Action, Option<Pos>)>> = actions
            .iter()
            .map(|(key, _, node)| self.action(key, node, label))
            .collect();

        let is_command = kind == Some("command");
        let kind_name = match kind {
            Some("command") => "a command step",
            Some("wait") => "a `wait` step",
            Some("until") => "an `until` step",
            _ => "an `await` step",
        };
        // Fields that only some kinds of step take; without a (single) kind there is nothing to check.
        let allowed = |field: &str| match kind {
            None => true,
            Some("command") => true,
            Some("await") => matches!(field, "deadline" | "output"),
            Some(_) => false,
        };
        for field in [
            "compensation",
            "compensation_retry",
            "retry",
            "timeout",
            "deadline",
            "output",
        ] {
            let Some(pos) = fields.key_pos(field) else {
                continue;
            };
            if allowed(field) {
                continue;
            }
            let only = if matches!(field, "deadline" | "output") {
                "command and await steps"
            } else {
                "command steps"
            };
            let hint = match (field, kind) {
                ("compensation" | "compensation_retry", _) => {
                    "only a command's effect can be undone; remove it, or compensate in the command step before".to_owned()
                }
                ("retry", Some("await")) => {
                    "an await step is not retried; give `await:` a `timeout` and an `on_timeout` instead".to_owned()
                }
                ("timeout", Some("await")) => {
                    "put the timeout inside `await:`, e.g. `await: {event: customer_confirmed, timeout: 24h}`".to_owned()
                }
                ("output", _) => format!("{kind_name} has no result to copy; remove `output`"),
                _ => format!("{kind_name} ends at its own time and cannot fail; remove `{field}`"),
            };
            self.error(
                pos,
                format!("`{field}` is only allowed on {only}, but {label} is {kind_name}"),
                hint,
            );
            well_formed = false;
        }
        if is_command && fields.optional("compensation").is_none() {
            if let Some(pos) = fields.key_pos("compensation_retry") {
                self.error(
                    pos,
                    format!("`compensation_retry` in {label} has no `compensation` to retry"),
                    "add a `compensation:` command, or remove `compensation_retry`",
                );
                well_formed = false;
            }
        }

        let compensation = fields
            .optional("compensation")
            .map(|node| self.command(node, &format!("the compensation of {label}")));
        let retry = fields
            .optional("retry")
            .map(|node| self.retry(node, &format!("the `retry` of {label}")));
        let compensation_retry = fields
            .optional("compensation_retry")
            .map(|node| self.retry(node, &format!("the `compensation_retry` of {label}")));
        let timeout = fields
            .optional("timeout")
            .map(|node| self.duration(node, &format!("`timeout` in {label}")));
        let deadline = fields
            .optional("deadline")
            .map(|node| self.duration(node, &format!("`deadline` in {label}")));
        let output = fields
            .optional("output")
            .map(|node| self.output(node, label));

        let (action, continue_pos) = decoded.into_iter().next()??;
        let output = output.unwrap_or(Some(Vec::new()))?;
        if let (Action::Await(awaited), Some(pos)) = (&action, continue_pos) {
            if let OnTimeout::Continue(result) = &awaited.on_timeout {
                self.check_continue_result(result, &output, pos, label)?;
            }
        }
        let (retry, compensation_retry, timeout) = if is_command {
            (
                optional(retry)?.unwrap_or_else(|| defaults.retry.clone()),
                optional(compensation_retry)?
                    .unwrap_or_else(|| defaults.compensation_retry.clone()),
                optional(timeout)?.or(defaults.timeout),
            )
        } else {
            (RetryPolicy::default(), RetryPolicy::default(), None)
        };
        let compensation = optional(compensation)?;
        let deadline = optional(deadline)?;
        if !well_formed {
            return None;
        }
        Some(Step {
            name: name?,
            action,
            compensation,
            output,
            retry,
            compensation_retry,
            timeout,
            deadline,
        })
    }

    /// Decodes one action field; for an await, also the position of its `continue` result.
    fn action(&mut self, key: &str, node: &Node, label: &str) -> Option<(Action, Option<Pos>)> {
        match key {
            "command" => self
                .command(node, &format!("the command of {label}"))
                .map(|command| (Action::Command(command), None)),
            "wait" => self
                .duration(node, &format!("`wait` in {label}"))
                .map(|duration| (Action::Wait(Wait::For(duration)), None)),
            "until" => self
                .until(node, label)
                .map(|wait| (Action::Wait(wait), None)),
            _ => self
                .await_spec(node, label)
                .map(|(awaited, pos)| (Action::Await(awaited), pos)),
        }
    }

    /// Every path `output` reads must exist in the result an await step continues with on timeout.
    fn check_continue_result(
        &mut self,
        result: &Value,
        output: &[(String, Path)],
        pos: Pos,
        label: &str,
    ) -> Option<()> {
        let mut ok = true;
        for (key, path) in output {
            if path.get(result).is_none() {
                self.error(
                    pos,
                    format!("the `continue` result of {label} has nothing at `{path}`, which `output` copies into `{key}`"),
                    format!("add the field to the `continue:` value (e.g. `on_timeout: {{continue: {{{}: false}}}}`), or change `output`", path.segments().first().map_or("field", String::as_str)),
                );
                ok = false;
            }
        }
        ok.then_some(())
    }

    /// A positive duration such as `10s`; `subject` names it in messages.
    fn duration(&mut self, node: &Node, subject: &str) -> Option<Duration> {
        let text = match &node.kind {
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Str,
            }) => text,
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Int(_) | ScalarValue::Float(_),
            }) => {
                self.error(
                    node.pos,
                    format!("{subject} must be a duration with a unit, found the number `{text}`"),
                    format!(
                        "add a unit, e.g. `{text}s` for seconds or `{text}ms` for milliseconds"
                    ),
                );
                return None;
            }
            _ if node.is_null() => {
                self.error(node.pos, format!("{subject} is empty"), DURATION_HINT);
                return None;
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a duration such as `10s`, found {}",
                        node.describe()
                    ),
                    DURATION_HINT,
                );
                return None;
            }
        };
        match parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.error(
                    node.pos,
                    format!("{subject} must be longer than zero"),
                    "write a positive duration such as `10s`, or remove it",
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(reason) => {
                self.error(
                    node.pos,
                    format!(
                        "invalid duration `{}` for {subject}: {reason}",
                        shorten(text)
                    ),
                    DURATION_HINT,
                );
                None
            }
        }
    }

    fn retry(&mut self, node: &Node, context: &str) -> Option<RetryPolicy> {
        let fields = self.fields(node, context, RETRY_FIELDS, RETRY_HINT)?;
        let max_attempts = fields
            .require(
                self,
                "max_attempts",
                "add e.g. `max_attempts: 3`; it counts the first attempt, so 1 means no retry",
            )
            .and_then(|node| self.max_attempts(node, context));
        let backoff = fields
            .optional("backoff")
            .map(|node| self.backoff(node, context));
        let jitter = fields
            .optional("jitter")
            .map(|node| self.jitter(node, context));
        let non_retryable = fields
            .optional("non_retryable")
            .map(|node| self.error_codes(node, context));
        let default = RetryPolicy::default();
        Some(RetryPolicy {
            max_attempts: max_attempts?,
            backoff: optional(backoff)?.unwrap_or(default.backoff),
            jitter: optional(jitter)?.unwrap_or(default.jitter),
            non_retryable: optional(non_retryable)?.unwrap_or_default(),
        })
    }

    fn max_attempts(&mut self, node: &Node, context: &str) -> Option<u32> {
        let subject = format!("`max_attempts` in {context}");
        let hint = "it counts the first attempt: `max_attempts: 1` never retries, `max_attempts: 5` retries up to 4 times";
        match &node.kind {
            Kind::Scalar(Scalar {
                value: ScalarValue::Int(i),
                ..
            }) => {
                if *i < 1 {
                    self.error(
                        node.pos,
                        format!("{subject} must be at least 1, found {i}"),
                        hint,
                    );
                    return None;
                }
                match u32::try_from(*i) {
                    Ok(attempts) => Some(attempts),
                    Err(_) => {
                        self.error(
                            node.pos,
                            format!("{subject} is too large, found {i}"),
                            format!("use at most {}", u32::MAX),
                        );
                        None
                    }
                }
            }
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Str,
            }) if text.trim().parse::<u32>().is_ok() => {
                self.error(
                    node.pos,
                    format!("{subject} must be a number, found the string `{text}`"),
                    format!("remove the quotes: `max_attempts: {}`", text.trim()),
                );
                None
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a whole number, found {}",
                        node.describe()
                    ),
                    hint,
                );
                None
            }
        }
    }

    fn backoff(&mut self, node: &Node, retry_context: &str) -> Option<Backoff> {
        // `backoff: 2s` is a fixed backoff.
        if node.as_str().is_some() {
            return self
                .duration(node, &format!("`backoff` in {retry_context}"))
                .map(|interval| Backoff::Fixed { interval });
        }
        let context = format!("the backoff in {retry_context}");
        let fields = self.fields(node, &context, BACKOFF_FIELDS, BACKOFF_HINT)?;
        let kind = fields
            .require(self, "type", "add `type: fixed` or `type: exponential`")
            .and_then(|node| self.backoff_type(node, &context));
        // Every given field is decoded, whatever the type, to report all problems.
        let duration = |decoder: &mut Self, field: &str| {
            fields.get(field).map(|node| {
                (
                    node,
                    decoder.duration(node, &format!("`{field}` in {context}")),
                )
            })
        };
        let interval = duration(self, "interval");
        let initial = duration(self, "initial");
        let max = duration(self, "max");
        let multiplier = fields
            .optional("multiplier")
            .map(|node| self.multiplier(node, &context));
        let kind = kind?;
        // Fields of the other kind of backoff.
        let (misplaced, hint): (&[&str], &str) = if kind == "fixed" {
            (
                &["initial", "multiplier", "max"],
                "fixed backoff takes only `interval`; use `type: exponential` for growing delays",
            )
        } else {
            (
                &["interval"],
                "exponential backoff takes `initial`, `multiplier` and `max`; use `type: fixed` for a constant `interval`",
            )
        };
        let mut ok = true;
        for field in misplaced {
            if let Some(pos) = fields.key_pos(field) {
                self.error(
                    pos,
                    format!("`{field}` does not apply to {kind} backoff in {context}"),
                    hint,
                );
                ok = false;
            }
        }
        if kind == "fixed" {
            if interval.is_none() {
                let _ = fields.require(
                    self,
                    "interval",
                    "add the delay between attempts, e.g. `interval: 1s`",
                );
            }
            let interval = interval.and_then(|(_, interval)| interval);
            return interval
                .filter(|_| ok)
                .map(|interval| Backoff::Fixed { interval });
        }
        if initial.is_none() {
            let _ = fields.require(
                self,
                "initial",
                "add the first delay, e.g. `initial: 200ms`",
            );
        }
        if max.is_none() {
            let _ = fields.require(self, "max", "add the longest delay, e.g. `max: 10s`");
        }
        let (initial_node, initial) = initial?;
        let (initial, max) = (initial?, max?.1?);
        let multiplier = optional(multiplier);
        if initial > max {
            self.error(
                initial_node.pos,
                format!(
                    "`initial` ({}) is longer than `max` ({}) in {context}",
                    format_duration(initial),
                    format_duration(max)
                ),
                "`max` caps every delay; make it at least `initial`",
            );
            return None;
        }
        let multiplier = multiplier?.unwrap_or(2.0);
        ok.then_some(Backoff::Exponential {
            initial,
            multiplier,
            max,
        })
    }

    fn backoff_type(&mut self, node: &Node, context: &str) -> Option<&'static str> {
        let text = self.string(node, &format!("`type` in {context}"), BACKOFF_HINT)?;
        let kinds = ["fixed", "exponential"];
        if let Some(kind) = kinds.iter().find(|kind| **kind == text) {
            return Some(kind);
        }
        let prefix_of = kinds
            .iter()
            .find(|kind| text.len() >= 3 && kind.starts_with(&text.to_lowercase()));
        let hint = match did_you_mean(text, &kinds).or(prefix_of.copied()) {
            Some(kind) => format!("did you mean `{kind}`?"),
            None => "backoff types are `fixed` and `exponential`".to_owned(),
        };
        self.error(
            node.pos,
            format!("unknown backoff type `{}` in {context}", shorten(text)),
            hint,
        );
        None
    }

    fn multiplier(&mut self, node: &Node, context: &str) -> Option<f64> {
        let subject = format!("`multiplier` in {context}");
        let hint = "the delay is multiplied by this after each failed attempt; use e.g. `2` to double it, `1` to keep it constant";
        let value = match &node.kind {
            Kind::Scalar(Scalar {
                value: ScalarValue::Int(i),
                ..
            }) => i64::try_from(*i).ok().map(|i| i as f64),
            Kind::Scalar(Scalar {
                value: ScalarValue::Float(f),
                ..
            }) => Some(*f),
            _ => None,
        };
        match value {
            Some(value) if value.is_finite() && value >= 1.0 => Some(value),
            Some(_) => {
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a number of at least 1, found `{}`",
                        node.scalar_text().unwrap_or_default()
                    ),
                    hint,
                );
                None
            }
            None => {
                self.error(
                    node.pos,
                    format!("{subject} must be a number, found {}", node.describe()),
                    hint,
                );
                None
            }
        }
    }

    fn jitter(&mut self, node: &Node, context: &str) -> Option<Jitter> {
        let text = self.string(node, &format!("`jitter` in {context}"), JITTER_HINT)?;
        match text {
            "none" => return Some(Jitter::None),
            "full" => return Some(Jitter::Full),
            "equal" => return Some(Jitter::Equal),
            _ => {}
        }
        let hint = match did_you_mean(text, &["none", "full", "equal"]) {
            Some(kind) => format!("did you mean `{kind}`?"),
            None => JITTER_HINT.to_owned(),
        };
        self.error(
            node.pos,
            format!("unknown jitter `{}` in {context}", shorten(text)),
            hint,
        );
        None
    }

    /// `non_retryable`: a list of error codes (text, or numbers taken as text).
    fn error_codes(&mut self, node: &Node, context: &str) -> Option<Vec<String>> {
        let subject = format!("`non_retryable` in {context}");
        let hint = "list the error codes that must not be retried, e.g. `non_retryable: [CARD_DECLINED, INSUFFICIENT_FUNDS]`";
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "{subject} must be a list of error codes, found {}",
                    node.describe()
                ),
                hint,
            );
            return None;
        };
        let mut ok = true;
        let mut codes = Vec::with_capacity(items.len());
        for item in items {
            let code = match &item.kind {
                Kind::Scalar(Scalar {
                    text,
                    value: ScalarValue::Str | ScalarValue::Int(_),
                }) => text.trim(),
                _ => {
                    self.error(
                        item.pos,
                        format!(
                            "error codes in {subject} must be text, found {}",
                            item.describe()
                        ),
                        hint,
                    );
                    ok = false;
                    continue;
                }
            };
            if code.is_empty() {
                self.error(item.pos, format!("empty error code in {subject}"), hint);
                ok = false;
            } else if !codes.iter().any(|known| known == code) {
                codes.push(code.to_owned());
            }
        }
        ok.then_some(codes)
    }

    /// `until:`: an RFC 3339 instant, a context path, or a calendar expression.
    fn until(&mut self, node: &Node, label: &str) -> Option<Wait> {
        let subject = format!("the `until` of {label}");
        let text = self.string(node, &subject, UNTIL_HINT)?;
        if text.starts_with('$') {
            return self
                .context_path(node, text, &subject)
                .map(Wait::UntilContext);
        }
        let looks_like_instant = text.len() > 4
            && text.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && text.as_bytes()[4] == b'-';
        if looks_like_instant {
            return match parse_instant(text) {
                Ok(ms) => Some(Wait::UntilInstant(ms)),
                Err(reason) => {
                    self.error(
                        node.pos,
                        format!("invalid instant `{}` in {subject}: {reason}", shorten(text)),
                        INSTANT_HINT,
                    );
                    None
                }
            };
        }
        match Calendar::parse(text) {
            Ok(calendar) => Some(Wait::Calendar(calendar)),
            Err(reason) => {
                self.error(
                    node.pos,
                    format!(
                        "invalid calendar `{}` in {subject}: {reason}",
                        shorten(text)
                    ),
                    CALENDAR_HINT,
                );
                None
            }
        }
    }

    /// A path into the saga context (not the root).
    fn context_path(&mut self, node: &Node, text: &str, subject: &str) -> Option<Path> {
        match Path::parse(text) {
            Ok(path) if path.is_root() => {
                self.error(
                    node.pos,
                    format!("{subject} cannot use the whole context `$`"),
                    CONTEXT_PATH_HINT,
                );
                None
            }
            Ok(path) => Some(path),
            Err(error) => {
                self.error(
                    node.pos,
                    format!("invalid context path in {subject}: {error}"),
                    CONTEXT_PATH_HINT,
                );
                None
            }
        }
    }

    /// `await:`, either a mapping or just the event name; also returns where a
    /// `continue` result was written, to check it against `output`.
    fn await_spec(&mut self, node: &Node, label: &str) -> Option<(Await, Option<Pos>)> {
        let context = format!("the `await` of {label}");
        if node.as_str().is_some() {
            return self.event_name(node, &context).map(|event| {
                let awaited = Await {
                    event,
                    correlate: Correlation::SagaId,
                    timeout: None,
                    on_timeout: OnTimeout::Compensate,
                };
                (awaited, None)
            });
        }
        let fields = self.fields(
            node,
            &context,
            AWAIT_FIELDS,
            "an await is a mapping with `event` and optionally `correlate`, `timeout` and `on_timeout`, e.g. `{event: customer_confirmed, timeout: 24h}`",
        )?;
        let event = fields
            .require(
                self,
                "event",
                "name the event to wait for, e.g. `event: customer_confirmed`",
            )
            .and_then(|node| self.event_name(node, &context));
        let correlate = fields
            .optional("correlate")
            .map(|node| self.correlation(node, &context));
        let timeout = fields
            .optional("timeout")
            .map(|node| self.duration(node, &format!("`timeout` in {context}")));
        let on_timeout_node = fields.optional("on_timeout");
        let on_timeout = on_timeout_node.map(|node| self.on_timeout(node, &context));
        if let (Some(pos), None) = (fields.key_pos("on_timeout"), fields.optional("timeout")) {
            self.error(
                pos,
                format!("`on_timeout` in {context} has no effect without `timeout`"),
                "add how long to wait, e.g. `timeout: 24h`, or remove `on_timeout`",
            );
            return None;
        }
        let on_timeout = optional(on_timeout)?;
        let continue_pos = match &on_timeout {
            Some((OnTimeout::Continue(_), pos)) => Some(*pos),
            _ => None,
        };
        let awaited = Await {
            event: event?,
            correlate: optional(correlate)?.unwrap_or(Correlation::SagaId),
            timeout: optional(timeout)?,
            on_timeout: on_timeout.map_or(OnTimeout::Compensate, |(on_timeout, _)| on_timeout),
        };
        Some((awaited, continue_pos))
    }

    fn event_name(&mut self, node: &Node, context: &str) -> Option<String> {
        let event = self.string(node, &format!("the event name in {context}"), EVENT_HINT)?;
        let problem = if event.is_empty() {
            Some("it is empty".to_owned())
        } else {
            event
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .map(|c| format!("it contains {c:?}"))
        };
        match problem {
            Some(problem) => {
                self.error(
                    node.pos,
                    format!(
                        "invalid event name `{}` in {context}: {problem}",
                        shorten(event)
                    ),
                    EVENT_HINT,
                );
                None
            }
            None => Some(event.to_owned()),
        }
    }

    fn correlation(&mut self, node: &Node, context: &str) -> Option<Correlation> {
        let subject = format!("`correlate` in {context}");
        let text = self.string(node, &subject, CORRELATE_HINT)?;
        if text == "saga_id" {
            return Some(Correlation::SagaId);
        }
        if text.starts_with('$') {
            return self
                .context_path(node, text, &subject)
                .map(Correlation::Context);
        }
        self.error(
            node.pos,
            format!(
                "{subject} must be `saga_id` or a context path, found `{}`",
                shorten(text)
            ),
            match Path::parse(&format!("$.{text}")) {
                Ok(path) => {
                    format!("write `{path}` to correlate on that context field, or `saga_id`")
                }
                Err(_) => CORRELATE_HINT.to_owned(),
            },
        );
        None
    }

    /// `on_timeout`, with the position of a `continue` result.
    fn on_timeout(&mut self, node: &Node, context: &str) -> Option<(OnTimeout, Pos)> {
        let subject = format!("`on_timeout` in {context}");
        if let Some(text) = node.as_str() {
            let action = match text {
                "fail" => OnTimeout::Fail,
                "compensate" => OnTimeout::Compensate,
                "continue" => OnTimeout::Continue(Value::Object(Map::new())),
                _ => {
                    let hint = match did_you_mean(text, &["fail", "compensate", "continue"]) {
                        Some(action) => format!("did you mean `{action}`?"),
                        None => ON_TIMEOUT_HINT.to_owned(),
                    };
                    self.error(
                        node.pos,
                        format!("unknown action `{}` for {subject}", shorten(text)),
                        hint,
                    );
                    return None;
                }
            };
            return Some((action, node.pos));
        }
        if !matches!(node.kind, Kind::Map(_)) {
            self.error(
                node.pos,
                format!(
                    "{subject} must be `fail`, `compensate` or `{{continue: ...}}`, found {}",
                    node.describe()
                ),
                ON_TIMEOUT_HINT,
            );
            return None;
        }
        let fields = self.fields(node, &subject, &["continue"], ON_TIMEOUT_HINT)?;
        let Kind::Map(pairs) = &node.kind else {
            return None;
        };
        if fields.entries.len() < pairs.len() {
            // Unknown keys were reported; a missing `continue` would only repeat them.
            return None;
        }
        let result = fields.require(
            self,
            "continue",
            "write `on_timeout: {continue: {confirmed: false}}` to carry on with that result",
        )?;
        let value = if result.is_null() {
            Value::Object(Map::new())
        } else {
            self.json(result, &format!("the `continue` result in {context}"))?
        };
        Some((OnTimeout::Continue(value), result.pos))
    }

    /// Literal JSON (no context references), e.g. a default result.
    fn json(&mut self, node: &Node, context: &str) -> Option<Value> {
        match &node.kind {
            Kind::Scalar(scalar) => self.scalar_json(node, scalar, context),
            Kind::Seq(items) => {
                let items: Vec<_> = items.iter().map(|item| self.json(item, context)).collect();
                items.into_iter().collect::<Option<_>>().map(Value::Array)
            }
            Kind::Map(_) => {
                let entries = self.entries(node, context, "")?;
                let entries: Vec<_> = entries
                    .into_iter()
                    .map(|(key, _, value)| Some((key.to_owned(), self.json(value, context)?)))
                    .collect();
                entries
                    .into_iter()
                    .collect::<Option<Map<_, _>>>()
                    .map(Value::Object)
            }
        }
    }

    fn command(&mut self, node: &Node, context: &str) -> Option<CommandSpec> {
        let fields = self.fields(
            node,
            context,
            COMMAND_FIELDS,
            "a command is a mapping with `topic`, `type` and optionally `payload`",
        )?;
        let topic = fields
            .require(
                self,
                "topic",
                "add the Kafka topic the participant consumes, e.g. `topic: trip.payment.commands`",
            )
            .and_then(|node| self.topic(node, context));
        let command_type = fields
            .require(self, "type", TYPE_HINT)
            .and_then(|node| self.command_type(node, context));
        let payload = fields
            .optional("payload")
            .map(|node| self.template(node, &format!("the payload of {context}")));
        Some(CommandSpec {
            topic: topic?,
            command_type: command_type?,
            payload: payload.unwrap_or_else(|| Some(Template::default()))?,
        })
    }

    /// A saga name (`[a-z0-9_.-]+`) or a step name (`[a-z0-9_-]+`).
    fn name(&mut self, node: &Node, owner: &str, allow_dot: bool) -> Option<String> {
        let (what, chars) = if allow_dot {
            ("saga names", "lowercase letters, digits, `_`, `.` and `-`")
        } else {
            ("step names", "lowercase letters, digits, `_` and `-`")
        };
        let hint = format!("{what} use {chars}");
        let name = self.string(node, &format!("the name of {owner}"), &hint)?;
        let valid = |c: char| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || c == '-'
                || (allow_dot && c == '.')
        };
        if name.chars().all(valid) {
            return Some(name.to_owned());
        }
        let suggestion: String = name
            .trim()
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if valid(c) { c } else { '_' })
            .collect();
        self.error(
            node.pos,
            format!("invalid name `{}` for {owner}", shorten(name)),
            format!("{hint}, e.g. `{suggestion}`"),
        );
        None
    }

    fn version(&mut self, node: &Node) -> Option<u32> {
        let Kind::Scalar(Scalar { text, value }) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`version` must be a positive whole number, found {}",
                    node.describe()
                ),
                "write e.g. `version: 1`; bump it for every change",
            );
            return None;
        };
        match *value {
            ScalarValue::Int(i) if i >= 1 => match u32::try_from(i) {
                Ok(version) => return Some(version),
                Err(_) => self.error(
                    node.pos,
                    format!("`version` {i} is too large"),
                    format!("versions go up to {}", u32::MAX),
                ),
            },
            ScalarValue::Int(i) => self.error(
                node.pos,
                format!("`version` must be positive, found {i}"),
                "versions start at 1 and go up with each change",
            ),
            ScalarValue::Str if text.trim().parse::<u32>().is_ok() => self.error(
                node.pos,
                format!("`version` must be a number, found the string `{text}`"),
                format!("remove the quotes: `version: {}`", text.trim()),
            ),
            _ => self.error(
                node.pos,
                format!(
                    "`version` must be a positive whole number, found {}",
                    node.describe()
                ),
                "write e.g. `version: 1`; bump it for every change",
            ),
        }
        None
    }

    fn topic(&mut self, node: &Node, context: &str) -> Option<String> {
        let topic = self.string(node, &format!("`topic` in {context}"), TOPIC_HINT)?;
        let problem = if topic.is_empty() {
            Some("is empty".to_owned())
        } else if topic.chars().count() > 249 {
            Some("is longer than 249 characters".to_owned())
        } else if topic == "." || topic == ".." {
            Some("is reserved by Kafka".to_owned())
        } else {
            topic
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .map(|c| format!("contains {c:?}"))
        };
        match problem {
            Some(problem) => {
                self.error(
                    node.pos,
                    format!(
                        "invalid topic name `{}` in {context}: it {problem}",
                        shorten(topic)
                    ),
                    TOPIC_HINT,
                );
                None
            }
            None => Some(topic.to_owned()),
        }
    }

    fn command_type(&mut self, node: &Node, context: &str) -> Option<String> {
        let command_type = self.string(node, &format!("`type` in {context}"), TYPE_HINT)?;
        if command_type.trim().is_empty() {
            self.error(node.pos, format!("`type` in {context} is empty"), TYPE_HINT);
            return None;
        }
        Some(command_type.to_owned())
    }

    /// Compiles a payload, reporting every bad reference in it.
    fn template(&mut self, node: &Node, context: &str) -> Option<Template> {
        match &node.kind {
            Kind::Scalar(scalar) => self.scalar_template(node, scalar, context),
            Kind::Seq(items) => {
                let items: Vec<_> = items
                    .iter()
                    .map(|item| self.template(item, context))
                    .collect();
                items.into_iter().collect::<Option<_>>().map(Template::list)
            }
            Kind::Map(_) => {
                let entries = self.entries(node, context, "")?;
                let entries: Vec<_> = entries
                    .into_iter()
                    .map(|(key, _, value)| Some((key.to_owned(), self.template(value, context)?)))
                    .collect();
                entries
                    .into_iter()
                    .collect::<Option<_>>()
                    .map(Template::map)
            }
        }
    }

    fn scalar_template(&mut self, node: &Node, scalar: &Scalar, context: &str) -> Option<Template> {
        if scalar.value == ScalarValue::Str {
            return match classify(&scalar.text) {
                StringTemplate::Literal(text) => Some(Template::Literal(Value::String(text))),
                StringTemplate::Ref(Ok(path)) => Some(Template::Ref(path)),
                StringTemplate::Ref(Err(error)) => {
                    self.error(
                        node.pos,
                        format!("invalid reference in {context}: {error}"),
                        REF_HINT,
                    );
                    None
                }
            };
        }
        self.scalar_json(node, scalar, context)
            .map(Template::Literal)
    }

    /// A scalar as JSON; strings are taken literally.
    fn scalar_json(&mut self, node: &Node, scalar: &Scalar, context: &str) -> Option<Value> {
        let unrepresentable = |decoder: &mut Self| {
            decoder.error(
                node.pos,
                format!(
                    "`{}` in {context} cannot be represented in JSON",
                    shorten(&scalar.text)
                ),
                "quote the value to send it as text",
            );
            None
        };
        let value = match scalar.value {
            ScalarValue::Null => Value::Null,
            ScalarValue::Bool(b) => Value::Bool(b),
            ScalarValue::Int(i) => match i64::try_from(i) {
                Ok(i) => Value::from(i),
                Err(_) => match u64::try_from(i) {
                    Ok(u) => Value::from(u),
                    Err(_) => return unrepresentable(self),
                },
            },
            ScalarValue::Float(f) => match Number::from_f64(f) {
                Some(number) => Value::Number(number),
                None => return unrepresentable(self),
            },
            ScalarValue::Str => Value::String(scalar.text.clone()),
        };
        Some(value)
    }

    fn output(&mut self, node: &Node, label: &str) -> Option<Vec<(String, Path)>> {
        let context = format!("the output of {label}");
        let entries = self.entries(
            node,
            &context,
            "map context keys to reply paths, e.g. `payment_id: $.payment_id`",
        )?;
        let mut ok = true;
        let mut output = Vec::with_capacity(entries.len());
        for (key, key_node, value) in entries {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                self.error(
                    key_node.pos,
                    format!("invalid context key `{}` in {context}", shorten(key)),
                    "context keys are top-level field names made of letters, digits, `_` and `-`",
                );
                ok = false;
            }
            match self.reply_path(key, value, &context) {
                Some(path) => output.push((key.to_owned(), path)),
                None => ok = false,
            }
        }
        ok.then_some(output)
    }

    /// The value of an output entry: a path into the step's reply output.
    fn reply_path(&mut self, key: &str, value: &Node, context: &str) -> Option<Path> {
        let text = value.as_str();
        if let Some(text) = text.filter(|text| text.starts_with('$')) {
            return Path::parse(text)
                .map_err(|error| {
                    self.error(
                        value.pos,
                        format!("invalid path for `{key}` in {context}: {error}"),
                        PATH_HINT,
                    );
                })
                .ok();
        }
        let found = text.map_or_else(
            || value.describe(),
            |text| format!("the string `{}`", shorten(text)),
        );
        // A bare field name is the likely intent; suggest the path that reads it.
        let hint = match text.map(|text| (text, Path::parse(&format!("$.{text}")))) {
            Some((text, Ok(path))) => format!("write `{path}` to copy the reply field `{text}`"),
            _ => format!("output values are paths, not fixed values; {PATH_HINT}"),
        };
        self.error(
            value.pos,
            format!("`{key}` in {context} must be a path into the reply output, found {found}"),
            hint,
        );
        None
    }

    /// A string scalar; anything else is reported.
    fn string<'n>(&mut self, node: &'n Node, subject: &str, hint: &str) -> Option<&'n str> {
        if let Some(text) = node.as_str() {
            return Some(text);
        }
        match &node.kind {
            Kind::Scalar(_) if node.is_null() => {
                self.error(node.pos, format!("{subject} is empty"), hint);
            }
            Kind::Scalar(Scalar { text, .. }) => self.error(
                node.pos,
                format!("{subject} must be a string, found {}", node.describe()),
                format!("quote the value to make it text: `\"{}\"`", shorten(text)),
            ),
            _ => self.error(
                node.pos,
                format!("{subject} must be a string, found {}", node.describe()),
                hint,
            ),
        }
        None
    }

    /// A mapping's entries by key text, reporting non-scalar and duplicate keys.
    fn entries<'n>(
        &mut self,
        node: &'n Node,
        context: &str,
        hint: &str,
    ) -> Option<Vec<(&'n str, &'n Node, &'n Node)>> {
        let Kind::Map(pairs) = &node.kind else {
            self.error(
                node.pos,
                format!("{context} must be a mapping, found {}", node.describe()),
                hint,
            );
            return None;
        };
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let Some(text) = key.scalar_text() else {
                self.error(
                    key.pos,
                    format!(
                        "keys in {context} must be plain text, found {}",
                        key.describe()
                    ),
                    "use a simple word as the key",
                );
                continue;
            };
            if let Some(first) = seen.get(text) {
                self.error(
                    key.pos,
                    format!(
                        "`{text}` appears twice in {context} (first at line {})",
                        first.line
                    ),
                    "remove one of them or rename it",
                );
                continue;
            }
            let _ = seen.insert(text, key.pos);
            entries.push((text, key, value));
        }
        Some(entries)
    }

    /// A mapping with a fixed set of fields; unknown ones are reported with a hint.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        context: &str,
        known: &[&'static str],
        hint: &str,
    ) -> Option<Fields<'n>> {
        let entries = self.entries(node, context, hint)?;
        let mut fields = Fields {
            pos: node.pos,
            context: context.to_owned(),
            entries: Vec::with_capacity(entries.len()),
            suggested: Vec::new(),
        };
        for (key, key_node, value) in entries {
            if known.contains(&key) {
                fields.entries.push((key, key_node.pos, value));
                continue;
            }
            let synonym = SYNONYMS
                .iter()
                .find(|(word, field)| *word == key && known.contains(field))
                .and_then(|(_, field)| known.iter().find(|known| *known == field));
            let hint = if let Some(suggestion) = did_you_mean(key, known).or(synonym.copied()) {
                fields.suggested.push(suggestion);
                format!("did you mean `{suggestion}`?")
            } else if let Some((_, home)) = FIELD_HOMES.iter().find(|(field, _)| *field == key) {
                format!("`{key}` belongs under {home}")
            } else {
                let list: Vec<String> = known.iter().map(|field| format!("`{field}`")).collect();
                format!("known fields here are {}", list.join(", "))
            };
            self.error(
                key_node.pos,
                format!("unknown field `{}` in {context}", shorten(key)),
                hint,
            );
        }
        Some(fields)
    }
}

/// Turns "absent, or decoded (`Some`) / failed (`None`)" into "failed, or decoded-if-present".
fn optional<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    field.map_or(Some(None), |decoded| decoded.map(Some))
}

/// The `name` value of a step mapping, if there is one.
fn step_name_node(step: &Node) -> Option<&Node> {
    let Kind::Map(pairs) = &step.kind else {
        return None;
    };
    pairs
        .iter()
        .find(|(key, _)| key.scalar_text() == Some("name"))
        .map(|(_, value)| value)
}
