//! References into JSON documents (`$.a.b`) and payload templates built from them.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// A reference into a JSON document: `$` is the whole document, `$.a.b` a nested field.
///
/// A segment that is a number also indexes into a list (`$.items.0.sku`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    segments: Vec<String>,
}

/// Why a string is not a valid [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The string does not start with `$`, or `$` is followed by something other than `.`.
    #[error("`{0}` is not a path; paths are `$` or start with `$.`")]
    NotAPath(String),
    /// Two dots in a row, or a trailing dot.
    #[error("path `{0}` has an empty segment")]
    EmptySegment(String),
    /// A segment contains a character other than a letter, digit, `_` or `-`.
    #[error(
        "path `{path}` contains {found:?}; segments may only use letters, digits, `_` and `-`"
    )]
    InvalidCharacter {
        /// The whole path as written.
        path: String,
        /// The first offending character.
        found: char,
    },
}

impl Path {
    /// The whole document, `$`.
    pub fn root() -> Self {
        Path {
            segments: Vec::new(),
        }
    }

    /// Parses `$` or `$.seg.seg…`.
    pub fn parse(s: &str) -> Result<Path, PathError> {
        if s == "$" {
            return Ok(Path::root());
        }
        let Some(rest) = s.strip_prefix("$.") else {
            return Err(PathError::NotAPath(s.to_owned()));
        };
        let mut segments = Vec::new();
        for segment in rest.split('.') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment(s.to_owned()));
            }
            if let Some(found) = segment
                .chars()
                .find(|&c| !(c.is_alphanumeric() || c == '_' || c == '-'))
            {
                return Err(PathError::InvalidCharacter {
                    path: s.to_owned(),
                    found,
                });
            }
            segments.push(segment.to_owned());
        }
        Ok(Path { segments })
    }

    /// The field names (or list indexes) from the root down.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// Whether this is `$`, the whole document.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The value at this path, or `None` if any segment is missing.
    pub fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(value, |current, segment| match current {
                Value::Object(fields) => fields.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.segments {
            write!(f, ".{segment}")?;
        }
        Ok(())
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Path::parse(s)
    }
}

/// A compiled payload: literal JSON with references to the saga context spliced in.
///
/// Subtrees without references are folded into a single [`Template::Literal`],
/// so rendering mostly clones.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Template {
    /// A value rendered as is.
    Literal(Value),
    /// Replaced by the context value at the path.
    Ref(Path),
    /// A list with at least one reference inside.
    List(Vec<Template>),
    /// A mapping with at least one reference inside, in source order.
    Map(Vec<(String, Template)>),
}

/// Why a template or output mapping could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A referenced path has no value.
    #[error("nothing at `{path}`")]
    Missing {
        /// The path as written in the definition.
        path: Path,
    },
}

impl Default for Template {
    /// A missing payload renders as an empty object.
    fn default() -> Self {
        Template::Literal(Value::Object(Map::new()))
    }
}

/// How a string in a payload is read.
#[derive(Debug)]
pub(crate) enum StringTemplate {
    Literal(String),
    Ref(Result<Path, PathError>),
}

/// `$` and `$.…` are references, `$$…` escapes to the text without its first `$`,
/// anything else is literal.
pub(crate) fn classify(s: &str) -> StringTemplate {
    if s.starts_with("$$") {
        StringTemplate::Literal(s[1..].to_owned())
    } else if s == "$" || s.starts_with("$.") {
        StringTemplate::Ref(Path::parse(s))
    } else {
        StringTemplate::Literal(s.to_owned())
    }
}

impl Template {
    /// Compiles a JSON value with the same string rules as YAML payloads.
    pub fn compile(value: &Value) -> Result<Template, PathError> {
        Ok(match value {
            Value::String(s) => match classify(s) {
                StringTemplate::Literal(text) => Template::Literal(Value::String(text)),
                StringTemplate::Ref(path) => Template::Ref(path?),
            },
            Value::Array(items) => Template::list(
                items
                    .iter()
                    .map(Template::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => Template::map(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v)?)))
                    .collect::<Result<_, PathError>>()?,
            ),
            other => Template::Literal(other.clone()),
        })
    }

    /// A list template, folded to a literal when it has no references.
    pub(crate) fn list(items: Vec<Template>) -> Template {
        if items.iter().all(|t| matches!(t, Template::Literal(_))) {
            Template::Literal(Value::Array(
                items.into_iter().map(Template::into_literal).collect(),
            ))
        } else {
            Template::List(items)
        }
    }

    /// A mapping template, folded to a literal when it has no references.
    pub(crate) fn map(entries: Vec<(String, Template)>) -> Template {
        if entries
            .iter()
            .all(|(_, t)| matches!(t, Template::Literal(_)))
        {
            Template::Literal(Value::Object(
                entries
                    .into_iter()
                    .map(|(k, t)| (k, t.into_literal()))
                    .collect(),
            ))
        } else {
            Template::Map(entries)
        }
    }

    fn into_literal(self) -> Value {
        match self {
            Template::Literal(value) => value,
            _ => unreachable!("only called after checking every item is a literal"),
        }
    }

    /// Renders against the saga context; a missing referenced path is an error naming it.
    pub fn render(&self, context: &Value) -> Result<Value, RenderError> {
        Ok(match self {
            Template::Literal(value) => value.clone(),
            Template::Ref(path) => lookup(path, context)?.clone(),
            Template::List(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(context))
                    .collect::<Result<_, _>>()?,
            ),
            Template::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(context)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }

    /// Every context path this template reads, in source order.
    pub fn references(&self) -> Vec<&Path> {
        let mut paths = Vec::new();
        self.collect_references(&mut paths);
        paths
    }

    fn collect_references<'a>(&'a self, paths: &mut Vec<&'a Path>) {
        match self {
            Template::Literal(_) => {}
            Template::Ref(path) => paths.push(path),
            Template::List(items) => items.iter().for_each(|t| t.collect_references(paths)),
            Template::Map(entries) => entries
                .iter()
                .for_each(|(_, t)| t.collect_references(paths)),
        }
    }
}

/// The value at `path`, or an error naming it.
pub(crate) fn lookup<'a>(path: &Path, value: &'a Value) -> Result<&'a Value, RenderError> {
    path.get(value)
        .ok_or_else(|| RenderError::Missing { path: path.clone() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_read_nested_fields_and_list_items() {
        let context = json!({"customer": {"id": "c-7", "tags": ["a", "b"]}, "none": null});
        let get = |p: &str| Path::parse(p).unwrap().get(&context).cloned();
        assert_eq!(get("$.customer.id"), Some(json!("c-7")));
        assert_eq!(get("$.customer.tags.1"), Some(json!("b")));
        assert_eq!(get("$"), Some(context.clone()));
        assert_eq!(get("$.none"), Some(Value::Null));
        assert_eq!(get("$.customer.missing"), None);
        assert_eq!(get("$.customer.id.deeper"), None);
        assert_eq!(get("$.customer.tags.x"), None);
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert_eq!(Path::parse("$."), Err(PathError::EmptySegment("$.".into())));
        assert_eq!(
            Path::parse("$.a..b"),
            Err(PathError::EmptySegment("$.a..b".into()))
        );
        assert_eq!(
            Path::parse("$.a[0]"),
            Err(PathError::InvalidCharacter {
                path: "$.a[0]".into(),
                found: '['
            })
        );
        assert_eq!(Path::parse("a.b"), Err(PathError::NotAPath("a.b".into())));
        assert_eq!(Path::parse("$.a.b").unwrap().to_string(), "$.a.b");
        assert_eq!(Path::root().to_string(), "$");
    }

    #[test]
    fn render_splices_references_into_literals() {
        let template = Template::compile(&json!({
            "amount": "$.amount",
            "customer": "$.customer.id",
            "currency": "EUR",
            "lines": ["$.customer.id", 1, "$$.literal", "$$$"],
            "all": "$",
        }))
        .unwrap();
        let context = json!({"amount": 120, "customer": {"id": "c-7"}});
        assert_eq!(
            template.render(&context).unwrap(),
            json!({
                "amount": 120,
                "customer": "c-7",
                "currency": "EUR",
                "lines": ["c-7", 1, "$.literal", "$$"],
                "all": context,
            })
        );
        // Sorted because serde_json's map order depends on its `preserve_order` feature.
        let mut references: Vec<String> = template
            .references()
            .iter()
            .map(ToString::to_string)
            .collect();
        references.sort();
        assert_eq!(
            references,
            ["$", "$.amount", "$.customer.id", "$.customer.id"]
        );
    }

    #[test]
    fn literal_subtrees_are_folded() {
        let template = Template::compile(&json!({"a": [1, {"b": "$x"}], "c": "$.c"})).unwrap();
        let Template::Map(entries) = &template else {
            panic!("expected a map template, got {template:?}")
        };
        assert_eq!(entries[0].1, Template::Literal(json!([1, {"b": "$x"}])));
        assert_eq!(
            Template::compile(&json!({"a": "$$.b"})).unwrap(),
            Template::Literal(json!({"a": "$.b"}))
        );
    }

    #[test]
    fn render_names_the_missing_path() {
        let template = Template::compile(&json!({"id": "$.payment.id"})).unwrap();
        let error = template.render(&json!({"payment": {}})).unwrap_err();
        assert_eq!(
            error,
            RenderError::Missing {
                path: Path::parse("$.payment.id").unwrap()
            }
        );
        assert_eq!(error.to_string(), "nothing at `$.payment.id`");
    }
}
