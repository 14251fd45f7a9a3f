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
use crate::expr::Condition;
use crate::instant::parse_instant;
use crate::model::{
    Action, Await, Branch, Choice, ChoiceBranch, CommandSpec, Correlation, Definition, ForEach,
    Join, Limits, OnTimeout, Parallel, Step, StepDefaults, Wait,
};
use crate::retry::{Backoff, Jitter, RetryPolicy};
use crate::scope::{self, BranchOutline, Outline, Read, Shape};
use crate::template::{classify, Path, StringTemplate, Template};
use crate::yaml::{self, shorten, Kind, Node, Pos, Scalar, ScalarValue, Style};

const DEFINITION_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "deadline",
    "defaults",
    "steps",
    "limits",
    "index",
];
const STEP_FIELDS: &[&str] = &[
    "name",
    "when",
    "command",
    "wait",
    "until",
    "await",
    "parallel",
    "choice",
    "for_each",
    "compensation",
    "retry",
    "compensation_retry",
    "timeout",
    "deadline",
    "output",
    "join",
    "otherwise",
    "key",
    "max_concurrency",
    "steps",
];
/// The step fields that say what a step does; a step has exactly one.
const ACTION_FIELDS: &[&str] = &[
    "command", "wait", "until", "await", "parallel", "choice", "for_each",
];
/// The step fields that only container steps take, and which kinds take them.
const CONTAINER_FIELDS: &[(&str, &[&str])] = &[
    ("join", &["parallel", "for_each"]),
    ("otherwise", &["choice"]),
    ("key", &["for_each"]),
    ("max_concurrency", &["for_each"]),
    ("steps", &["for_each"]),
];
const BRANCH_FIELDS: &[&str] = &["name", "key", "steps"];
const CHOICE_BRANCH_FIELDS: &[&str] = &["when", "steps"];
const LIMITS_FIELDS: &[&str] = &["for_each_items"];
/// `for_each` elements in flight at once when `max_concurrency` is not set.
const DEFAULT_MAX_CONCURRENCY: u32 = 10;
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
    ("parallel", "an item of `steps:`"),
    ("choice", "an item of `steps:`"),
    ("for_each", "an item of `steps:`"),
    ("when", "an item of `steps:` or a branch of `choice:`"),
    ("join", "a `parallel` or `for_each` step"),
    ("otherwise", "a `choice` step"),
    ("key", "a branch of `parallel:` or a `for_each` step"),
    ("max_concurrency", "a `for_each` step"),
    ("at_least", "`join:`"),
    ("for_each_items", "`limits:`"),
    ("limits", "the top level of the file"),
    ("index", "the top level of the file"),
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
    (
        "steps",
        "the top level of the file, a branch of `parallel:` or `choice:`, or a `for_each` step",
    ),
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
    ("if", "when"),
    ("condition", "when"),
    ("else", "otherwise"),
    ("default", "otherwise"),
    ("switch", "choice"),
    ("each", "for_each"),
    ("concurrency", "max_concurrency"),
    ("parallelism", "max_concurrency"),
    ("max_items", "for_each_items"),
];

const TOPIC_HINT: &str =
    "Kafka topic names use 1 to 249 letters, digits, `.`, `_` and `-`, e.g. `trip.payment.commands`";
const TYPE_HINT: &str = "set the command type the participant expects, e.g. `type: charge`";
const REF_HINT: &str =
    "references look like `$.customer.id` (`$` alone is the whole context); to send text starting with `$.`, write `$$.` instead";
const PATH_HINT: &str =
    "reply paths look like `$.payment_id` or `$.booking.id` (`$` is the whole reply output)";
const STEP_HINT: &str = "a step is a mapping with a `name` and one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`";
/// The action fields as listed in messages.
const ACTIONS: &str = "`command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`";
const ACTION_HINT: &str = "add `command: {topic: ..., type: ...}` to call a participant, `wait: 10s` to pause, `until: <instant or calendar>` to wait for a time, `await: {event: ...}` to wait for an external event, `parallel: [<branches>]` to run branches at once, `choice: [<branches>]` to run the first branch whose `when` holds, or `for_each: $.items` with `steps:` to run steps once per element";
const PARALLEL_HINT: &str = "write each branch as a list item with a `name` and `steps`, e.g. `parallel: [{name: flight, steps: [...]}, {name: hotel, steps: [...]}]`";
const CHOICE_HINT: &str = "write each branch as a list item with a `when` and `steps`, e.g. `choice: [{when: \"$.country == 'FR'\", steps: [...]}]`";
const JOIN_HINT: &str = "use `all` (every branch must succeed, the default), `any` (one success is enough) or `{at_least: N}`";
const FOR_EACH_HINT: &str =
    "name the context list to run over, e.g. `for_each: $.items`; its steps read `$.item` and `$.index`";
const CONDITION_HINT: &str = "write a condition such as `$.amount > 100 and $.country in ['FR', 'DE']`; quote it if it starts with `[` or `{`, or contains `: ` or ` #`";
const KEY_HINT: &str =
    "context keys are top-level field names made of letters, digits, `_` and `-`";
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
    let located = yaml::load(yaml, &mut out).and_then(|root| {
        Decoder {
            out: &mut out,
            lines: yaml.split('\n').collect(),
            names: HashMap::new(),
            reads: Vec::new(),
        }
        .definition(&root)
    });
    out.finish(located)
}

struct Decoder<'c> {
    out: &'c mut Collector,
    /// The source's lines, to place problems inside a scalar (a condition's text).
    lines: Vec<&'c str>,
    /// Every step name seen so far, wherever nested, and where.
    names: HashMap<String, Pos>,
    /// Paths read by the steps being decoded; each step takes its own when it is done.
    reads: Vec<Read>,
}

/// A list of steps being decoded: the saga's, a branch's, a for_each's or an `otherwise`.
struct Sequence<'a> {
    /// Names the list in "must be a list" messages, e.g. "the `steps` of branch `a` of step `b`".
    subject: &'a str,
    /// What needs at least one step, e.g. "branch `a` of step `b`"; `None` for the saga.
    owner: Option<&'a str>,
    /// How to fill an empty list.
    empty_hint: &'a str,
}

/// A step's fields besides its action, for the decoders of container steps.
struct Container<'f, 'n> {
    fields: &'f Fields<'n>,
    /// The step's name as written, if it is a string (the default `key` of a for_each).
    name: Option<&'n str>,
    /// Where the name is written (or the step, without one).
    name_pos: Pos,
    defaults: &'f StepDefaults,
}

impl Sequence<'_> {
    const SAGA: Sequence<'static> = Sequence {
        subject: "`steps`",
        owner: None,
        empty_hint: "add a step under `steps:` with a `name` and a `command`",
    };
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
        let limits = fields.optional("limits").map(|node| self.limits(node));
        let index = fields.optional("index").map(|node| self.index(node));
        // Steps are decoded even when the defaults are broken, to report their problems too.
        let step_defaults = defaults.clone().flatten().unwrap_or_default();
        let steps = fields
            .require(
                self,
                "steps",
                "add a `steps:` list; each step has a `name` and a `command`",
            )
            .map(|node| self.steps(node, &step_defaults, &Sequence::SAGA));
        let steps = steps.and_then(|(steps, outlines)| {
            scope::check(&outlines, self.out);
            steps
        });
        let definition = Definition {
            name: name?,
            version: version?,
            description: optional(description)?.map(str::to_owned),
            defaults: optional(defaults)?.unwrap_or_default(),
            deadline: optional(deadline)?,
            steps: steps?,
            limits: optional(limits)?.unwrap_or_default(),
            index: optional(index)?.unwrap_or_default(),
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

    /// A list of steps, with the outline of each for the graph checks.
    fn steps(
        &mut self,
        node: &Node,
        defaults: &StepDefaults,
        sequence: &Sequence<'_>,
    ) -> (Option<Vec<Step>>, Vec<Outline>) {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "{} must be a list of steps, found {}",
                    sequence.subject,
                    node.describe()
                ),
                "write each step as a list item starting with `- name: <step>`",
            );
            return (None, Vec::new());
        };
        if items.is_empty() {
            let message = match sequence.owner {
                None => "a saga needs at least one step".to_owned(),
                Some(owner) => format!("{owner} needs at least one step"),
            };
            self.error(node.pos, message, sequence.empty_hint);
            return (None, Vec::new());
        }
        let mut steps = Vec::with_capacity(items.len());
        let mut outlines = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            // Duplicates are checked on the raw name, so they are reported even
            // when the step has other problems.
            let name = step_name_node(item).and_then(|n| n.as_str().map(|s| (s, n.pos)));
            let label = match (name, sequence.owner) {
                (Some((name, _)), _) => format!("step `{name}`"),
                (None, None) => format!("step #{}", index + 1),
                (None, Some(owner)) => format!("step #{} of {owner}", index + 1),
            };
            if let Some((name, pos)) = name {
                match self.names.get(name) {
                    Some(first) => self.error(
                        pos,
                        format!(
                            "duplicate step name `{name}` (first defined at line {})",
                            first.line
                        ),
                        "step names must be unique within a saga, nested steps included; rename one of the steps",
                    ),
                    None => {
                        let _ = self.names.insert(name.to_owned(), pos);
                    }
                }
            }
            let (step, outline) = self.step(item, &label, defaults);
            steps.push(step);
            outlines.push(outline);
        }
        (steps.into_iter().collect(), outlines)
    }

    /// One step, and its outline for the graph checks (filled in even when the step is broken).
    fn step(
        &mut self,
        node: &Node,
        label: &str,
        defaults: &StepDefaults,
    ) -> (Option<Step>, Outline) {
        let mark = self.reads.len();
        let mut outline = Outline {
            label: label.to_owned(),
            ..Outline::default()
        };
        let step = self.step_fields(node, label, defaults, &mut outline);
        outline.reads = self.reads.split_off(mark.min(self.reads.len()));
        (step, outline)
    }

    fn step_fields(
        &mut self,
        node: &Node,
        label: &str,
        defaults: &StepDefaults,
        outline: &mut Outline,
    ) -> Option<Step> {
        let fields = self.fields(node, label, STEP_FIELDS, STEP_HINT)?;
        let name_node = fields.require(self, "name", "give the step a name, e.g. `name: payment`");
        let name = name_node.and_then(|node| self.name(node, label, false));

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
                format!("{label} does nothing: it needs one of {ACTIONS}"),
                ACTION_HINT,
            );
        }
        if let Some((first, _, _)) = actions.first() {
            for (key, pos, _) in actions.iter().skip(1) {
                self.error(
                    *pos,
                    format!("{label} has both `{first}` and `{key}`; a step does exactly one of {ACTIONS}"),
                    "split it into two steps, one for each",
                );
            }
        }
        let when = fields
            .optional("when")
            .map(|node| self.condition(node, &format!("the `when` of {label}")));
        if let Some(Kind::Map(entries)) = fields.optional("output").map(|node| &node.kind) {
            outline.outputs = entries
                .iter()
                .filter_map(|(key, _)| Some((key.scalar_text()?.to_owned(), key.pos)))
                .collect();
        }
        let container = Container {
            fields: &fields,
            name: name_node.and_then(Node::as_str),
            name_pos: name_node.map_or(fields.pos, |node| node.pos),
            defaults,
        };
        let decoded: Vec<Option<(Action, Option<Pos>)>> = actions
            .iter()
            .enumerate()
            .map(|(index, (key, _, node))| {
                // Only the step's (first) action takes the step's container fields.
                let own = index == 0;
                self.action(key, node, label, &container, own, outline)
            })
            .collect();

        let is_command = kind == Some("command");
        let is_container = matches!(kind, Some("parallel" | "choice" | "for_each"));
        let kind_name = match kind {
            Some("command") => "a command step",
            Some("wait") => "a `wait` step",
            Some("until") => "an `until` step",
            Some("parallel") => "a `parallel` step",
            Some("choice") => "a `choice` step",
            Some("for_each") => "a `for_each` step",
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
            let inside = if kind == Some("for_each") {
                "`steps:`"
            } else {
                "the branches"
            };
            let hint = match (field, kind) {
                ("output", Some("parallel")) => {
                    "put `output` on the steps inside the branches; their outputs land under each branch's key".to_owned()
                }
                ("output", Some("for_each")) => {
                    "put `output` on the steps inside `steps:`; their outputs land in the list under the step's `key`".to_owned()
                }
                (_, _) if is_container => format!("put `{field}` on the steps inside {inside}"),
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
        for (field, kinds) in CONTAINER_FIELDS {
            let Some(pos) = fields.key_pos(field) else {
                continue;
            };
            let Some(kind) = kind.filter(|kind| !kinds.contains(kind)) else {
                continue;
            };
            let hint = match (*field, kind) {
                ("steps", "parallel") => {
                    "put the steps inside each branch: `parallel: [{name: a, steps: [...]}, {name: b, steps: [...]}]`"
                }
                ("steps", "choice") => {
                    "put the steps inside each branch: `choice: [{when: ..., steps: [...]}]`"
                }
                ("steps", _) => "only `for_each` steps hold `steps:` directly; remove it",
                ("key", "parallel") => {
                    "give each branch its own `key:`, inside its item of `parallel:`"
                }
                ("key", "command" | "await") => {
                    "use `output:` to choose the context keys of the step's result"
                }
                ("key", _) => "`key` names where a `for_each` puts its results; remove it",
                ("max_concurrency", "parallel") => {
                    "all branches of a `parallel` run at once; remove it"
                }
                ("max_concurrency", _) => {
                    "`max_concurrency` bounds the elements a `for_each` runs at once; remove it"
                }
                ("join", _) => {
                    "`join` says how many branches of a `parallel` or elements of a `for_each` must succeed; remove it"
                }
                _ => "`otherwise` lists the steps a `choice` runs when no branch matches; remove it",
            };
            let kinds: Vec<String> = kinds.iter().map(|kind| format!("`{kind}`")).collect();
            self.error(
                pos,
                format!(
                    "`{field}` is only allowed on {} steps, but {label} is {kind_name}",
                    kinds.join(" and ")
                ),
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

        let when = optional(when);
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
            when: when?,
            compensation,
            output,
            retry,
            compensation_retry,
            timeout,
            deadline,
        })
    }

    /// Decodes one action field; for an await, also the position of its `continue` result.
    /// `own`: whether this is the step's action (the first), which takes the step's container
    /// fields (`join`, `steps`, ...) and gives the outline its shape.
    fn action(
        &mut self,
        key: &str,
        node: &Node,
        label: &str,
        container: &Container<'_, '_>,
        own: bool,
        outline: &mut Outline,
    ) -> Option<(Action, Option<Pos>)> {
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
            "parallel" => self
                .parallel(node, label, container, own.then_some(&mut *outline))
                .map(|parallel| (Action::Parallel(parallel), None)),
            "choice" => self
                .choice(node, label, container, own.then_some(&mut *outline))
                .map(|choice| (Action::Choice(choice), None)),
            "for_each" => self
                .for_each(node, label, container, own.then_some(&mut *outline))
                .map(|for_each| (Action::ForEach(for_each), None)),
            _ => self
                .await_spec(node, label)
                .map(|(awaited, pos)| (Action::Await(awaited), pos)),
        }
    }

    /// `parallel:`, its branches and the step's `join`.
    fn parallel(
        &mut self,
        node: &Node,
        label: &str,
        container: &Container<'_, '_>,
        outline: Option<&mut Outline>,
    ) -> Option<Parallel> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`parallel` in {label} must be a list of branches, found {}",
                    node.describe()
                ),
                PARALLEL_HINT,
            );
            return None;
        };
        let mut ok = true;
        if items.len() < 2 {
            let count = if items.is_empty() {
                "no branches"
            } else {
                "one branch"
            };
            self.error(
                node.pos,
                format!("`parallel` in {label} has {count}; it needs at least two"),
                "add another branch, or make the branch's steps plain steps of the saga",
            );
            ok = false;
        }
        let mut names: HashMap<&str, Pos> = HashMap::new();
        // Context key -> the branch that writes it first.
        let mut keys: HashMap<String, String> = HashMap::new();
        let mut branches = Vec::with_capacity(items.len());
        let mut outlines = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let raw = step_name_node(item).and_then(|n| n.as_str().map(|s| (s, n.pos)));
            let shown = raw.map_or_else(|| format!("#{}", index + 1), |(name, _)| name.to_owned());
            let branch_label = match raw {
                Some((name, _)) => format!("branch `{name}` of {label}"),
                None => format!("branch #{} of {label}", index + 1),
            };
            if let Some((name, pos)) = raw {
                if let Some(first) = names.get(name) {
                    self.error(
                        pos,
                        format!(
                            "duplicate branch name `{name}` in {label} (first at line {})",
                            first.line
                        ),
                        "branch names must be unique within a `parallel`; rename one of them",
                    );
                    ok = false;
                } else {
                    let _ = names.insert(name, pos);
                }
            }
            let (branch, branch_outline) = self.branch(item, &branch_label, container.defaults);
            if let Some((key, pos)) = &branch_outline.key {
                if let Some(first) = keys.get(key) {
                    self.error(
                        *pos,
                        format!("branches `{first}` and `{shown}` of {label} both write context key `{key}`"),
                        "each branch writes its steps' outputs under its own key; give one of them another `key:`",
                    );
                    ok = false;
                } else {
                    let _ = keys.insert(key.clone(), shown);
                }
            }
            branches.push(branch);
            outlines.push(branch_outline);
        }
        let outline = outline?;
        outline.shape = Shape::Parallel(outlines);
        let join = container
            .fields
            .optional("join")
            .map(|node| self.join(node, label, Some(items.len())));
        let branches: Option<Vec<Branch>> = branches.into_iter().collect();
        let join = optional(join)?.unwrap_or(Join::All);
        ok.then_some(Parallel {
            branches: branches?,
            join,
        })
    }

    /// One branch of a `parallel`, and its outline.
    fn branch(
        &mut self,
        node: &Node,
        label: &str,
        defaults: &StepDefaults,
    ) -> (Option<Branch>, BranchOutline) {
        let mut outline = BranchOutline {
            label: label.to_owned(),
            key: None,
            steps: Vec::new(),
        };
        let Some(fields) = self.fields(node, label, BRANCH_FIELDS, PARALLEL_HINT) else {
            return (None, outline);
        };
        let name_node = fields.require(self, "name", "give the branch a name, e.g. `name: flight`");
        let name = name_node.and_then(|node| self.name(node, label, false));
        let key = match fields.optional("key") {
            Some(node) => self
                .context_key(node, &format!("the `key` of {label}"))
                .map(|key| (key, node.pos)),
            None => name
                .clone()
                .zip(name_node)
                .map(|(name, node)| (name, node.pos)),
        };
        outline.key.clone_from(&key);
        let steps = fields
            .require(
                self,
                "steps",
                "add the branch's steps, e.g. `steps: [{name: flight, command: {topic: ..., type: ...}}]`",
            )
            .and_then(|node| {
                let (steps, outlines) = self.steps(
                    node,
                    defaults,
                    &Sequence {
                        subject: &format!("the `steps` of {label}"),
                        owner: Some(label),
                        empty_hint: "add the steps the branch runs, or remove the branch",
                    },
                );
                outline.steps = outlines;
                steps
            });
        let branch = match (name, key, steps) {
            (Some(name), Some((key, _)), Some(steps)) => Some(Branch { name, key, steps }),
            _ => None,
        };
        (branch, outline)
    }

    /// `choice:`, its branches and the step's `otherwise`.
    fn choice(
        &mut self,
        node: &Node,
        label: &str,
        container: &Container<'_, '_>,
        outline: Option<&mut Outline>,
    ) -> Option<Choice> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.pos,
                format!(
                    "`choice` in {label} must be a list of branches, found {}",
                    node.describe()
                ),
                CHOICE_HINT,
            );
            return None;
        };
        let mut ok = true;
        if items.is_empty() {
            self.error(
                node.pos,
                format!("`choice` in {label} has no branches; it needs at least one"),
                CHOICE_HINT,
            );
            ok = false;
        }
        let mut branches = Vec::with_capacity(items.len());
        let mut outlines = Vec::with_capacity(items.len() + 1);
        for (index, item) in items.iter().enumerate() {
            let branch_label = format!("branch #{} of {label}", index + 1);
            let Some(fields) = self.fields(item, &branch_label, CHOICE_BRANCH_FIELDS, CHOICE_HINT)
            else {
                ok = false;
                continue;
            };
            let condition = fields
                .require(
                    self,
                    "when",
                    "add the condition under which this branch runs, e.g. `when: $.country == 'FR'`",
                )
                .and_then(|node| self.condition(node, &format!("the `when` of {branch_label}")));
            let steps = fields
                .require(
                    self,
                    "steps",
                    "add the branch's steps, e.g. `steps: [{name: ..., command: {topic: ..., type: ...}}]`",
                )
                .map(|node| {
                    self.steps(
                        node,
                        container.defaults,
                        &Sequence {
                            subject: &format!("the `steps` of {branch_label}"),
                            owner: Some(&branch_label),
                            empty_hint: "add the steps the branch runs, or remove the branch",
                        },
                    )
                });
            let steps = steps.and_then(|(steps, branch_outlines)| {
                outlines.push(branch_outlines);
                steps
            });
            match (condition, steps) {
                (Some(condition), Some(steps)) => branches.push(ChoiceBranch { condition, steps }),
                _ => ok = false,
            }
        }
        let outline = outline?;
        let otherwise = container.fields.optional("otherwise").map(|node| {
            let owner = format!("`otherwise` of {label}");
            let (steps, otherwise_outlines) = self.steps(
                node,
                container.defaults,
                &Sequence {
                    subject: &format!("`otherwise` in {label}"),
                    owner: Some(&owner),
                    empty_hint:
                        "add the steps to run when no branch matches, or remove `otherwise`",
                },
            );
            outlines.push(otherwise_outlines);
            steps
        });
        outline.shape = Shape::Choice(outlines);
        let otherwise = optional(otherwise)?;
        ok.then_some(Choice {
            branches,
            otherwise,
        })
    }

    /// `for_each:` and the step's `key`, `max_concurrency`, `join` and `steps`.
    fn for_each(
        &mut self,
        node: &Node,
        label: &str,
        container: &Container<'_, '_>,
        outline: Option<&mut Outline>,
    ) -> Option<ForEach> {
        let items = self.for_each_items(node, label);
        let outline = outline?;
        let fields = container.fields;
        let key = match fields.optional("key") {
            Some(node) => self
                .context_key(node, &format!("the `key` of {label}"))
                .map(|key| (key, node.pos)),
            None => container
                .name
                .map(|name| (name.to_owned(), container.name_pos)),
        };
        let max_concurrency = fields.optional("max_concurrency").map(|node| {
            self.count(
                node,
                "max_concurrency",
                &format!("`max_concurrency` in {label}"),
                "the most elements run at once, e.g. `max_concurrency: 5`",
            )
        });
        let join = fields
            .optional("join")
            .map(|node| self.join(node, label, None));
        let body = format!("the `steps` of {label}");
        let steps = fields
            .require(
                self,
                "steps",
                "add the steps to run for each element under `steps:`; they read the element as `$.item` and its position as `$.index`",
            )
            .and_then(|node| {
                let (steps, outlines) = self.steps(
                    node,
                    container.defaults,
                    &Sequence {
                        subject: &body,
                        owner: Some(&body),
                        empty_hint: "add the steps to run for each element; they read the element as `$.item` and its position as `$.index`",
                    },
                );
                outline.shape = Shape::ForEach(key.clone(), outlines);
                steps
            });
        if steps.is_none() && !matches!(outline.shape, Shape::ForEach(..)) {
            outline.shape = Shape::ForEach(key.clone(), Vec::new());
        }
        let max_concurrency = optional(max_concurrency)?.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        let join = optional(join)?.unwrap_or(Join::All);
        Some(ForEach {
            items: items?,
            key: key?.0,
            max_concurrency,
            join,
            steps: steps?,
        })
    }

    /// The value of `for_each:`: a path to a list in the context.
    fn for_each_items(&mut self, node: &Node, label: &str) -> Option<Path> {
        let subject = format!("`for_each` in {label}");
        match node.as_str() {
            Some(text) if text.starts_with('$') => self.path_read(
                node,
                text,
                &subject,
                (
                    "cannot run over the whole context `$`",
                    "the context is an object, not a list; name the list, e.g. `for_each: $.items`",
                ),
                FOR_EACH_HINT,
            ),
            Some(text) => {
                let hint = match Path::parse(&format!("$.{text}")) {
                    Ok(path) => format!("write `{path}` to run over that context list"),
                    Err(_) => FOR_EACH_HINT.to_owned(),
                };
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a context path to a list, found the string `{}`",
                        shorten(text)
                    ),
                    hint,
                );
                None
            }
            None => {
                let hint = if matches!(node.kind, Kind::Seq(_)) {
                    "put the list in the saga's input and name it, e.g. `for_each: $.items`"
                } else {
                    FOR_EACH_HINT
                };
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a context path to a list, found {}",
                        node.describe()
                    ),
                    hint,
                );
                None
            }
        }
    }

    /// `join:` of a parallel (with its number of branches) or a for_each.
    fn join(&mut self, node: &Node, label: &str, branches: Option<usize>) -> Option<Join> {
        let subject = format!("`join` in {label}");
        if let Some(text) = node.as_str() {
            match text {
                "all" => return Some(Join::All),
                "any" => return Some(Join::Any),
                _ => {}
            }
            let hint = match did_you_mean(text, &["all", "any"]) {
                Some(join) => format!("did you mean `{join}`?"),
                None if text.starts_with("at") => "write `join: {at_least: 2}`".to_owned(),
                None => JOIN_HINT.to_owned(),
            };
            self.error(
                node.pos,
                format!("unknown join `{}` in {label}", shorten(text)),
                hint,
            );
            return None;
        }
        match &node.kind {
            Kind::Map(_) => {
                let context = format!("the `join` of {label}");
                let fields = self.fields(node, &context, &["at_least"], JOIN_HINT)?;
                let count = fields.require(
                    self,
                    "at_least",
                    "add how many must succeed, e.g. `join: {at_least: 2}`",
                )?;
                let subject = format!("`at_least` in {context}");
                let at_least = self.count(
                    count,
                    "at_least",
                    &subject,
                    "how many must succeed, e.g. `join: {at_least: 2}`",
                )?;
                match branches {
                    Some(branches) if branches >= 2 && at_least as usize > branches => {
                        self.error(
                            count.pos,
                            format!("{subject} is {at_least}, but the step has only {branches} branches"),
                            format!("use at most {branches}; `join: all` waits for every branch"),
                        );
                        None
                    }
                    _ => Some(Join::AtLeast(at_least)),
                }
            }
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Int(_),
                ..
            }) => {
                self.error(
                    node.pos,
                    format!("{subject} must be `all`, `any` or `{{at_least: N}}`, found the integer `{text}`"),
                    format!("write `join: {{at_least: {text}}}`"),
                );
                None
            }
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be `all`, `any` or `{{at_least: N}}`, found {}",
                        node.describe()
                    ),
                    JOIN_HINT,
                );
                None
            }
        }
    }

    /// The top-level `index:`: business key names to context paths.
    fn index(&mut self, node: &Node) -> Option<Vec<(String, Path)>> {
        let context = "`index`";
        let entries = self.entries(
            node,
            context,
            "map business key names to context paths, e.g. `order: $.order.id`",
        )?;
        let mut ok = true;
        let mut index = Vec::with_capacity(entries.len());
        for (key, key_node, value) in entries {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.error(
                    key_node.pos,
                    format!("invalid business key name `{}` in {context}", shorten(key)),
                    "business key names are made of ASCII letters, digits, `_` and `-`, e.g. `order_id`",
                );
                ok = false;
            }
            let hint = format!("write a context path, e.g. `{key}: $.order.id`");
            let path = match value.as_str() {
                Some(text) => self.path_read(
                    value,
                    text,
                    &format!("business key `{key}`"),
                    (
                        "reads the whole context",
                        "name one field of the context, e.g. `$.order.id`",
                    ),
                    &hint,
                ),
                None => {
                    self.error(
                        value.pos,
                        format!(
                            "business key `{key}` in {context} must be a context path, found {}",
                            value.describe()
                        ),
                        hint,
                    );
                    None
                }
            };
            match path {
                Some(path) => index.push((key.to_owned(), path)),
                None => ok = false,
            }
        }
        ok.then_some(index)
    }

    /// The top-level `limits:`.
    fn limits(&mut self, node: &Node) -> Option<Limits> {
        let fields = self.fields(
            node,
            "`limits`",
            LIMITS_FIELDS,
            "`limits` is a mapping with optional `for_each_items` (the most elements a `for_each` may run over, default 1000)",
        )?;
        let for_each_items = fields.optional("for_each_items").map(|node| {
            self.count(
                node,
                "for_each_items",
                "`for_each_items` in `limits`",
                "the most elements a `for_each` may run over, e.g. `for_each_items: 500`",
            )
        });
        Some(Limits {
            for_each_items: optional(for_each_items)?.unwrap_or(Limits::default().for_each_items),
        })
    }

    /// A whole number of at least 1, for the field `field` (`subject` names it in messages).
    fn count(&mut self, node: &Node, field: &str, subject: &str, hint: &str) -> Option<u32> {
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
                    Ok(count) => Some(count),
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
                ..
            }) if text.trim().parse::<u32>().is_ok() => {
                self.error(
                    node.pos,
                    format!("{subject} must be a number, found the string `{text}`"),
                    format!("remove the quotes: `{field}: {}`", text.trim()),
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

    /// The `key` of a branch or a for_each: a top-level context field name.
    fn context_key(&mut self, node: &Node, subject: &str) -> Option<String> {
        let key = self.string(node, subject, KEY_HINT)?;
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Some(key.to_owned());
        }
        self.error(
            node.pos,
            format!("invalid context key `{}` in {subject}", shorten(key)),
            KEY_HINT,
        );
        None
    }

    /// A condition (`when:`); a YAML boolean is the literal. Records the paths it reads.
    fn condition(&mut self, node: &Node, subject: &str) -> Option<Condition> {
        let text = match &node.kind {
            Kind::Scalar(Scalar {
                value: ScalarValue::Bool(b),
                ..
            }) => {
                if *b {
                    "true"
                } else {
                    "false"
                }
            }
            Kind::Scalar(_) if node.is_null() => {
                self.error(node.pos, format!("{subject} is empty"), CONDITION_HINT);
                return None;
            }
            Kind::Scalar(scalar) => scalar.text.as_str(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "{subject} must be a condition written as text, found {}",
                        node.describe()
                    ),
                    CONDITION_HINT,
                );
                return None;
            }
        };
        match Condition::parse(text) {
            Ok(condition) => {
                for (offset, path) in condition.located_paths() {
                    let pos = self.locate(node, offset);
                    self.reads.push(Read {
                        path: path.clone(),
                        pos,
                    });
                }
                Some(condition)
            }
            Err(error) => {
                let pos = self.locate(node, error.offset);
                self.error(
                    pos,
                    format!("invalid condition in {subject}: {}", error.message),
                    error.hint,
                );
                None
            }
        }
    }

    /// The source position of the character at `offset` in a scalar's text: exact for plain
    /// and quoted scalars on one line, close for folded or block ones; the scalar's own
    /// position when the text cannot be followed in the source (e.g. through an escape).
    fn locate(&self, node: &Node, offset: usize) -> Pos {
        let Kind::Scalar(scalar) = &node.kind else {
            return node.pos;
        };
        let fallback = node.pos;
        // 0-based line and character column of the source cursor.
        let (mut line, mut column) = (
            node.pos.line.saturating_sub(1),
            node.pos.column.saturating_sub(1),
        );
        // The source character under the cursor; a line break at the end of a line.
        let at = |line: usize, column: usize| -> Option<char> {
            let text = self.lines.get(line)?;
            match text.chars().nth(column) {
                Some('\r') if column + 1 == text.chars().count() => Some('\n'),
                Some(c) => Some(c),
                None if line + 1 < self.lines.len() => Some('\n'),
                None => None,
            }
        };
        let skip_blanks = |line: &mut usize, column: &mut usize| {
            while let Some(c) = at(*line, *column) {
                match c {
                    '\n' => (*line, *column) = (*line + 1, 0),
                    c if c.is_whitespace() => *column += 1,
                    _ => break,
                }
            }
        };
        match scalar.style {
            Style::Plain => {}
            Style::SingleQuoted | Style::DoubleQuoted => column += 1,
            Style::Literal | Style::Folded => {
                // The text starts on the line after the indicator (`|`, `>-`, ...).
                if matches!(at(line, column), Some('|' | '>')) {
                    (line, column) = (line + 1, 0);
                }
                skip_blanks(&mut line, &mut column);
            }
        }
        let mut text = scalar.text.chars().take(offset).peekable();
        while let Some(t) = text.next() {
            let Some(c) = at(line, column) else {
                return fallback;
            };
            if scalar.style == Style::DoubleQuoted && c == '\\' {
                let length = match at(line, column + 1) {
                    Some('x') => 4,
                    Some('u') => 6,
                    Some('U') => 10,
                    _ => 2,
                };
                column += length;
            } else if t == c && c != '\n' {
                column += 1;
                if t == '\'' && scalar.style == Style::SingleQuoted {
                    // `''` writes one quote.
                    column += 1;
                }
            } else if t.is_whitespace() && c.is_whitespace() {
                // A folded line break or indentation: any run of blanks matches any other.
                while text.next_if(|t| t.is_whitespace()).is_some() {}
                skip_blanks(&mut line, &mut column);
            } else {
                return fallback;
            }
        }
        Pos {
            line: line + 1,
            column: column + 1,
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
                ..
            }) => text,
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Int(_) | ScalarValue::Float(_),
                ..
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
        self.count(
            node,
            "max_attempts",
            &format!("`max_attempts` in {context}"),
            "it counts the first attempt: `max_attempts: 1` never retries, `max_attempts: 5` retries up to 4 times",
        )
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
                    ..
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
        self.path_read(
            node,
            text,
            subject,
            ("cannot use the whole context `$`", CONTEXT_PATH_HINT),
            CONTEXT_PATH_HINT,
        )
    }

    /// A path the step reads from the context, recorded for the graph checks; the root `$` is
    /// refused with `root` (what is wrong with it, and a hint), a malformed path with `hint`.
    fn path_read(
        &mut self,
        node: &Node,
        text: &str,
        subject: &str,
        root: (&str, &str),
        hint: &str,
    ) -> Option<Path> {
        match Path::parse(text) {
            Ok(path) if path.is_root() => {
                self.error(node.pos, format!("{subject} {}", root.0), root.1);
                None
            }
            Ok(path) => {
                let pos = self.locate(node, 0);
                self.reads.push(Read {
                    path: path.clone(),
                    pos,
                });
                Some(path)
            }
            Err(error) => {
                self.error(
                    node.pos,
                    format!("invalid context path in {subject}: {error}"),
                    hint,
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
        let Kind::Scalar(Scalar { text, value, .. }) = &node.kind else {
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
                StringTemplate::Ref(Ok(path)) => {
                    let pos = self.locate(node, 0);
                    self.reads.push(Read {
                        path: path.clone(),
                        pos,
                    });
                    Some(Template::Ref(path))
                }
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
