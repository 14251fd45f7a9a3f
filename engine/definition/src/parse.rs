//! Decodes a positioned YAML tree into a [`Definition`], reporting every problem.
//!
//! Each decoder reports its own problems and returns `None`; callers decode
//! all siblings before combining results so that one problem never hides another.

use std::collections::HashMap;

use serde_json::{Number, Value};

use crate::diagnostics::{did_you_mean, Collector, Diagnostics};
use crate::model::{CommandSpec, Definition, Step};
use crate::template::{classify, Path, StringTemplate, Template};
use crate::yaml::{self, shorten, Kind, Node, Pos, Scalar, ScalarValue};

const DEFINITION_FIELDS: &[&str] = &["name", "version", "description", "steps"];
const STEP_FIELDS: &[&str] = &["name", "command", "compensation", "output"];
const COMMAND_FIELDS: &[&str] = &["topic", "type", "payload"];

/// Where a field that is unknown in one place does belong, for a better hint.
const FIELD_HOMES: &[(&str, &str)] = &[
    ("topic", "`command:` or `compensation:`"),
    ("type", "`command:` or `compensation:`"),
    ("payload", "`command:` or `compensation:`"),
    ("command", "an item of `steps:`"),
    ("compensation", "an item of `steps:`"),
    ("output", "an item of `steps:`"),
    ("version", "the top level of the file"),
    ("description", "the top level of the file"),
    ("steps", "the top level of the file"),
];

const TOPIC_HINT: &str =
    "Kafka topic names use 1 to 249 letters, digits, `.`, `_` and `-`, e.g. `trip.payment.commands`";
const TYPE_HINT: &str = "set the command type the participant expects, e.g. `type: charge`";
const REF_HINT: &str =
    "references look like `$.customer.id` (`$` alone is the whole context); to send text starting with `$.`, write `$$.` instead";
const PATH_HINT: &str =
    "reply paths look like `$.payment_id` or `$.booking.id` (`$` is the whole reply output)";

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
    entries: Vec<(&'n str, &'n Node)>,
    /// Fields offered as "did you mean"; their absence is not reported twice.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, node)| *node)
    }

    /// An optional field; an explicit null counts as absent.
    fn optional(&self, name: &str) -> Option<&'n Node> {
        self.get(name).filter(|node| !node.is_null())
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
        let steps = fields
            .require(
                self,
                "steps",
                "add a `steps:` list; each step has a `name` and a `command`",
            )
            .and_then(|node| self.steps(node));
        let definition = Definition {
            name: name?,
            version: version?,
            description: optional(description)?.map(str::to_owned),
            steps: steps?,
        };
        Some(Located {
            definition,
            name_pos: name_node.map_or(root.pos, |node| node.pos),
        })
    }

    fn steps(&mut self, node: &Node) -> Option<Vec<Step>> {
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
            steps.push(self.step(item, &label));
        }
        steps.into_iter().collect()
    }

    fn step(&mut self, node: &Node, label: &str) -> Option<Step> {
        let fields = self.fields(
            node,
            label,
            STEP_FIELDS,
            "a step is a mapping with `name`, `command` and optionally `compensation` and `output`",
        )?;
        let name = fields
            .require(self, "name", "give the step a name, e.g. `name: payment`")
            .and_then(|node| self.name(node, label, false));
        let command = fields
            .require(
                self,
                "command",
                "add `command:` with a `topic` and a `type`",
            )
            .and_then(|node| self.command(node, &format!("the command of {label}")));
        let compensation = fields
            .optional("compensation")
            .map(|node| self.command(node, &format!("the compensation of {label}")));
        let output = fields
            .optional("output")
            .map(|node| self.output(node, label));
        Some(Step {
            name: name?,
            command: command?,
            compensation: optional(compensation)?,
            output: output.unwrap_or(Some(Vec::new()))?,
        })
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
            ScalarValue::Str => match classify(&scalar.text) {
                StringTemplate::Literal(text) => Value::String(text),
                StringTemplate::Ref(Ok(path)) => return Some(Template::Ref(path)),
                StringTemplate::Ref(Err(error)) => {
                    self.error(
                        node.pos,
                        format!("invalid reference in {context}: {error}"),
                        REF_HINT,
                    );
                    return None;
                }
            },
        };
        Some(Template::Literal(value))
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
                fields.entries.push((key, value));
                continue;
            }
            let hint = if let Some(suggestion) = did_you_mean(key, known) {
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
