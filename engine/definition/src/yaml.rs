//! A YAML tree in which every node remembers where it was written.
//!
//! serde_yaml stops at the first problem and forgets positions, so we build
//! our own small tree from `saphyr-parser` events and decode it by hand.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};

use crate::diagnostics::Collector;

/// Aliases are expanded by copying; this bound stops a "billion laughs"
/// document from exhausting memory.
const MAX_EXPANDED_NODES: usize = 100_000;

/// A hint for the parser's message; its wording is matched loosely because
/// only a few messages have a more specific fix than the general advice.
fn syntax_hint(info: &str) -> &'static str {
    if info.contains("tab") {
        "indent with spaces; YAML does not allow tabs for indentation"
    } else if info.contains("unknown anchor") {
        "define the anchor (`&name`) before the alias (`*name`) that uses it"
    } else {
        "check indentation and quoting here; quote values that contain `: `, ` #` or start with `*`, `&`, `!`, `{`, `[`"
    }
}

/// A 64-bit FNV-1a hash: stable across builds and platforms, unlike std's hasher.
struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A 1-based line and column in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Pos {
    fn from_marker(marker: &Marker) -> Self {
        Pos {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) pos: Pos,
    pub(crate) kind: Kind,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in document order; duplicates are kept so the decoder can report them.
    Map(Vec<(Node, Node)>),
}

/// A scalar keeps its source text (mapping keys use it verbatim) and its
/// YAML 1.2 core-schema interpretation.
#[derive(Debug, Clone)]
pub(crate) struct Scalar {
    pub(crate) text: String,
    pub(crate) value: ScalarValue,
    /// How the scalar was written; not part of the fingerprint.
    pub(crate) style: Style,
}

/// How a scalar was written, to map offsets in its text back to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` block.
    Literal,
    /// `>` block.
    Folded,
}

impl From<ScalarStyle> for Style {
    fn from(style: ScalarStyle) -> Self {
        match style {
            ScalarStyle::Plain => Style::Plain,
            ScalarStyle::SingleQuoted => Style::SingleQuoted,
            ScalarStyle::DoubleQuoted => Style::DoubleQuoted,
            ScalarStyle::Literal => Style::Literal,
            ScalarStyle::Folded => Style::Folded,
        }
    }
}

/// The core-schema type of a scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    /// The string is the scalar's text.
    Str,
}

impl Node {
    /// The text of a string scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(Scalar {
                text,
                value: ScalarValue::Str,
                ..
            }) => Some(text),
            _ => None,
        }
    }

    /// The source text of any scalar, used for mapping keys.
    pub(crate) fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar(scalar) => Some(&scalar.text),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(
            self.kind,
            Kind::Scalar(Scalar {
                value: ScalarValue::Null,
                ..
            })
        )
    }

    /// FNV-1a over the tree's content: kinds, scalar texts and their core-schema types, in
    /// document order. Comments, quoting styles and layout do not count.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
        self.feed(&mut hash);
        hash.0
    }

    fn feed(&self, hash: &mut Fnv) {
        match &self.kind {
            Kind::Scalar(scalar) => {
                let tag = match scalar.value {
                    ScalarValue::Null => b'n',
                    ScalarValue::Bool(_) => b'b',
                    ScalarValue::Int(_) => b'i',
                    ScalarValue::Float(_) => b'f',
                    ScalarValue::Str => b's',
                };
                hash.bytes(&[b'S', tag]);
                hash.bytes(&(scalar.text.len() as u64).to_le_bytes());
                hash.bytes(scalar.text.as_bytes());
            }
            Kind::Seq(items) => {
                hash.bytes(b"Q");
                hash.bytes(&(items.len() as u64).to_le_bytes());
                items.iter().for_each(|item| item.feed(hash));
            }
            Kind::Map(entries) => {
                hash.bytes(b"M");
                hash.bytes(&(entries.len() as u64).to_le_bytes());
                for (key, value) in entries {
                    key.feed(hash);
                    value.feed(hash);
                }
            }
        }
    }

    /// A short description for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        let Kind::Scalar(scalar) = &self.kind else {
            return match self.kind {
                Kind::Seq(_) => "a list".to_owned(),
                _ => "a mapping".to_owned(),
            };
        };
        let text = shorten(&scalar.text);
        match scalar.value {
            ScalarValue::Null => "nothing".to_owned(),
            ScalarValue::Bool(_) => format!("the boolean `{text}`"),
            ScalarValue::Int(_) => format!("the integer `{text}`"),
            ScalarValue::Float(_) => format!("the number `{text}`"),
            ScalarValue::Str => format!("the string `{text}`"),
        }
    }

    /// Number of nodes in this subtree, to bound alias expansion.
    fn size(&self) -> usize {
        1 + match &self.kind {
            Kind::Scalar(_) => 0,
            Kind::Seq(items) => items.iter().map(Node::size).sum(),
            Kind::Map(entries) => entries.iter().map(|(k, v)| k.size() + v.size()).sum(),
        }
    }
}

/// Keeps messages readable when a value is long.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// Parses `yaml` into a tree. Reports syntax errors (the first one only,
/// since the parser cannot recover), unsupported tags and extra documents.
/// Returns `None` when there is nothing to decode.
pub(crate) fn load(yaml: &str, out: &mut Collector) -> Option<Node> {
    let mut builder = Builder::default();
    let mut documents = 0;
    for event in Parser::new_from_str(yaml) {
        let (event, span) = match event {
            Ok(event) => event,
            Err(error) => {
                out.error(
                    Pos::from_marker(error.marker()),
                    format!("invalid YAML: {}", error.info()),
                    syntax_hint(error.info()),
                );
                return None;
            }
        };
        let pos = Pos::from_marker(&span.start);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    out.error(
                        pos,
                        "a definition file holds exactly one YAML document",
                        "move each further definition (after `---`) into its own file",
                    );
                    break;
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve(&text, style, tag.as_deref(), pos, out);
                let node = Node {
                    pos,
                    kind: Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        value,
                        style: style.into(),
                    }),
                };
                builder.finish(node, anchor);
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", pos, out);
                builder
                    .stack
                    .push(Frame::new(pos, anchor, FrameKind::Seq(Vec::new())));
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", pos, out);
                builder
                    .stack
                    .push(Frame::new(pos, anchor, FrameKind::Map(Vec::new(), None)));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = builder.stack.pop()?;
                let kind = match frame.kind {
                    FrameKind::Seq(items) => Kind::Seq(items),
                    FrameKind::Map(entries, _) => Kind::Map(entries),
                };
                builder.finish(
                    Node {
                        pos: frame.pos,
                        kind,
                    },
                    frame.anchor,
                );
            }
            Event::Alias(id) => {
                // An anchor is only stored once its node is complete, so a
                // missing entry means the alias sits inside its own anchor.
                let Some(node) = builder.anchors.get(&id).cloned() else {
                    out.error(
                        pos,
                        "this alias refers to the node that contains it",
                        "recursive aliases cannot be expanded; copy the value instead",
                    );
                    return None;
                };
                builder.expanded += node.size();
                if builder.expanded > MAX_EXPANDED_NODES {
                    out.error(
                        pos,
                        format!("aliases expand to more than {MAX_EXPANDED_NODES} nodes"),
                        "use fewer nested aliases; write the values out instead",
                    );
                    return None;
                }
                builder.finish(node, 0);
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    if builder.root.is_none() && out.is_empty() {
        out.error(
            Pos { line: 1, column: 1 },
            "the file contains no saga definition",
            "start with `name: <saga>`, `version: 1` and a `steps:` list",
        );
    }
    builder.root
}

#[derive(Debug, Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    expanded: usize,
    root: Option<Node>,
}

#[derive(Debug)]
struct Frame {
    pos: Pos,
    anchor: usize,
    kind: FrameKind,
}

#[derive(Debug)]
enum FrameKind {
    Seq(Vec<Node>),
    /// Entries so far, and a key waiting for its value.
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Frame {
    fn new(pos: Pos, anchor: usize, kind: FrameKind) -> Self {
        Frame { pos, anchor, kind }
    }
}

impl Builder {
    /// Attaches a completed node to its parent (or makes it the root).
    fn finish(&mut self, node: Node, anchor: usize) {
        // Anchor id 0 means "no anchor".
        if anchor != 0 {
            let _ = self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame {
                kind: FrameKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                kind: FrameKind::Map(entries, pending),
                ..
            }) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
        }
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, pos: Pos, out: &mut Collector) {
    if let Some(tag) = tag {
        if !(tag.is_yaml_core_schema() && tag.suffix == expected) {
            unsupported_tag(tag, pos, out);
        }
    }
}

fn unsupported_tag(tag: &Tag, pos: Pos, out: &mut Collector) {
    out.error(
        pos,
        format!("unsupported YAML tag `{tag}`"),
        "remove the tag; only `!!str`, `!!int`, `!!float`, `!!bool` and `!!null` are understood",
    );
}

/// Resolves a scalar with the YAML 1.2 core schema; quoted scalars are strings.
fn resolve(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
    out: &mut Collector,
) -> ScalarValue {
    let plain = if style == ScalarStyle::Plain {
        resolve_plain(text)
    } else {
        ScalarValue::Str
    };
    let Some(tag) = tag else {
        return plain;
    };
    if !tag.is_yaml_core_schema() {
        unsupported_tag(tag, pos, out);
        return plain;
    }
    let untyped = resolve_plain(text);
    let forced = match (tag.suffix.as_str(), untyped) {
        ("str", _) => Some(ScalarValue::Str),
        ("null", ScalarValue::Null)
        | ("bool", ScalarValue::Bool(_))
        | ("int", ScalarValue::Int(_))
        | ("float", ScalarValue::Float(_)) => Some(untyped),
        #[allow(clippy::cast_precision_loss)] // `!!float 1` asks for exactly this conversion
        ("float", ScalarValue::Int(i)) => Some(ScalarValue::Float(i as f64)),
        ("null" | "bool" | "int" | "float", _) => {
            out.error(
                pos,
                format!("`{}` is not a valid `!!{}`", shorten(text), tag.suffix),
                "remove the tag or fix the value",
            );
            None
        }
        _ => {
            unsupported_tag(tag, pos, out);
            None
        }
    };
    forced.unwrap_or(plain)
}

fn resolve_plain(text: &str) -> ScalarValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarValue::Null,
        "true" | "True" | "TRUE" => return ScalarValue::Bool(true),
        "false" | "False" | "FALSE" => return ScalarValue::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return ScalarValue::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return ScalarValue::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarValue::Float(f64::NAN),
        _ => {}
    }
    let radix = |prefix: &str, radix: u32| {
        text.strip_prefix(prefix)
            .filter(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)))
            .and_then(|digits| i128::from_str_radix(digits, radix).ok())
    };
    if let Some(i) = radix("0x", 16).or_else(|| radix("0o", 8)) {
        return ScalarValue::Int(i);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        // Integers too large for i128 still parse as floats below.
        if let Ok(i) = text.parse::<i128>() {
            return ScalarValue::Int(i);
        }
    }
    if is_core_float(unsigned) {
        if let Ok(f) = text.parse::<f64>() {
            return ScalarValue::Float(f);
        }
    }
    ScalarValue::Str
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` without the sign.
/// Checked by hand because Rust's float parser also accepts `inf` and `nan`.
fn is_core_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty()),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> ScalarValue {
        resolve_plain(text)
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(value("~"), ScalarValue::Null);
        assert_eq!(value("True"), ScalarValue::Bool(true));
        assert_eq!(value("-12"), ScalarValue::Int(-12));
        assert_eq!(value("0x1F"), ScalarValue::Int(31));
        assert_eq!(value("0o17"), ScalarValue::Int(15));
        assert_eq!(value("1.5e3"), ScalarValue::Float(1500.0));
        assert_eq!(value(".5"), ScalarValue::Float(0.5));
        assert_eq!(value("-.inf"), ScalarValue::Float(f64::NEG_INFINITY));
        // YAML 1.1 booleans and Rust-only float spellings stay strings.
        assert_eq!(value("yes"), ScalarValue::Str);
        assert_eq!(value("inf"), ScalarValue::Str);
        assert_eq!(value("1.2.3"), ScalarValue::Str);
        assert_eq!(value("."), ScalarValue::Str);
        assert_eq!(value("1e"), ScalarValue::Str);
    }

    #[test]
    fn nodes_carry_one_based_positions() {
        let mut out = Collector::new("t.yaml");
        let root = load("a:\n  - x\n  - {b: 1}\n", &mut out).expect("tree");
        assert!(out.is_empty());
        let Kind::Map(entries) = &root.kind else {
            panic!("expected a mapping, got {root:?}")
        };
        let (key, list) = &entries[0];
        assert_eq!(key.pos, Pos { line: 1, column: 1 });
        let Kind::Seq(items) = &list.kind else {
            panic!("expected a list, got {list:?}")
        };
        assert_eq!(items[0].pos, Pos { line: 2, column: 5 });
        assert_eq!(items[1].pos, Pos { line: 3, column: 5 });
    }

    #[test]
    fn aliases_are_expanded() {
        let mut out = Collector::new("t.yaml");
        let root = load("a: &x {b: 1}\nc: *x\n", &mut out).expect("tree");
        let Kind::Map(entries) = &root.kind else {
            panic!("expected a mapping")
        };
        assert!(matches!(&entries[1].1.kind, Kind::Map(inner) if inner.len() == 1));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let mut out = Collector::new("t.yaml");
        assert!(load(&doc, &mut out).is_none());
        let diagnostics = out.into_diagnostics();
        assert!(
            diagnostics.0[0].message.contains("aliases expand"),
            "{diagnostics}"
        );
    }

    #[test]
    fn a_second_document_is_reported() {
        let mut out = Collector::new("t.yaml");
        let _ = load("a: 1\n---\nb: 2\n", &mut out);
        let diagnostics = out.into_diagnostics();
        assert_eq!(diagnostics.0.len(), 1);
        assert_eq!((diagnostics.0[0].line, diagnostics.0[0].column), (2, 1));
    }
}
