//! Checks that need the whole step graph: context keys written twice, and paths that read a
//! branch's or a for_each's results but name something those never write.
//!
//! The decoder records an [`Outline`] of every step (even one that failed to decode, so one
//! problem never hides another): the context keys it writes, where, and the paths it reads.
//!
//! Where results land (see `Parallel`, `ForEach` in the model): a command or await step's
//! `output` writes top-level keys of its scope; a `parallel` branch's steps write under the
//! branch's key (`$.flight.x`); a `for_each` writes a list under its key, one object per
//! element (`$.shipments.0.x`); a `choice` branch's steps write in the choice's own scope.

use crate::diagnostics::{did_you_mean, Collector};
use crate::template::Path;
use crate::yaml::Pos;

/// A context path read by a step, where it is written in the source.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) path: Path,
    pub(crate) pos: Pos,
}

/// What the graph checks need to know about one step.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    /// "step `book`".
    pub(crate) label: String,
    /// Keys of the step's `output`, with their positions.
    pub(crate) outputs: Vec<(String, Pos)>,
    /// Paths read when the step runs: its `when`, choice conditions, `for_each` list, payloads,
    /// `correlate` and `until` paths. Not those of the steps it holds.
    pub(crate) reads: Vec<Read>,
    pub(crate) shape: Shape,
}

/// Which steps a step holds.
#[derive(Debug, Default)]
pub(crate) enum Shape {
    /// Command, wait and await steps (and steps whose kind is unknown).
    #[default]
    Leaf,
    Parallel(Vec<BranchOutline>),
    /// The branches' steps, then `otherwise`.
    Choice(Vec<Vec<Outline>>),
    /// The key (when valid) and the steps run for each element.
    ForEach(Option<(String, Pos)>, Vec<Outline>),
}

/// One branch of a `parallel` step.
#[derive(Debug)]
pub(crate) struct BranchOutline {
    /// "branch `flight` of step `book`".
    pub(crate) label: String,
    /// The key (when valid) and where it is written (the `key:` value, else the branch name).
    pub(crate) key: Option<(String, Pos)>,
    pub(crate) steps: Vec<Outline>,
}

/// A context key written in a scope, and by what.
#[derive(Debug, Clone)]
struct Writer<'o> {
    key: &'o str,
    pos: Pos,
    /// "the `output` of step `a`", "branch `b` of step `p`", "step `ship`".
    who: String,
    /// An `output` entry (as opposed to a branch or for_each key).
    output: bool,
}

/// The results of a finished parallel branch or for_each, as later steps see them.
#[derive(Debug, Clone)]
struct Visible<'o> {
    key: &'o str,
    /// "branch `flight` of step `book`", or the for_each step's label.
    who: &'o str,
    /// Keys its steps write (in each element, for a for_each).
    writes: Vec<&'o str>,
    /// A for_each: the key holds a list.
    list: bool,
}

/// Runs every graph check on the top-level steps.
pub(crate) fn check(steps: &[Outline], out: &mut Collector) {
    collisions(steps, &[], out);
    let _ = reads(steps, &[], out);
}

/// The keys written in the scope of `steps` (choice branches share their step's scope).
fn scope_writes(steps: &[Outline]) -> Vec<Writer<'_>> {
    let mut writers = Vec::new();
    for step in steps {
        step_writes(step, &mut writers);
    }
    writers
}

fn step_writes<'o>(step: &'o Outline, writers: &mut Vec<Writer<'o>>) {
    writers.extend(step.outputs.iter().map(|(key, pos)| Writer {
        key,
        pos: *pos,
        who: format!("the `output` of {}", step.label),
        output: true,
    }));
    writers.extend(container_keys(step));
    if let Shape::Choice(branches) = &step.shape {
        for branch in branches {
            writers.extend(scope_writes(branch));
        }
    }
}

/// The keys a parallel or for_each step itself writes in its scope.
fn container_keys(step: &Outline) -> Vec<Writer<'_>> {
    match &step.shape {
        Shape::Parallel(branches) => branches
            .iter()
            .filter_map(|branch| {
                let (key, pos) = branch.key.as_ref()?;
                Some(Writer {
                    key,
                    pos: *pos,
                    who: branch.label.clone(),
                    output: false,
                })
            })
            .collect(),
        Shape::ForEach(Some((key, pos)), _) => vec![Writer {
            key,
            pos: *pos,
            who: step.label.clone(),
            output: false,
        }],
        _ => Vec::new(),
    }
}

/// Branch and for_each keys that another writer of the same scope, or of an enclosing one,
/// also writes. `enclosing` excludes the steps that hold `steps` (and so the other branches
/// of a choice, which never run together with this one).
fn collisions(steps: &[Outline], enclosing: &[Writer<'_>], out: &mut Collector) {
    for (index, step) in steps.iter().enumerate() {
        if matches!(step.shape, Shape::Leaf) {
            continue;
        }
        let mut others: Vec<Writer<'_>> = Vec::new();
        for (_, other) in steps.iter().enumerate().filter(|(i, _)| *i != index) {
            step_writes(other, &mut others);
        }
        for writer in container_keys(step) {
            // Each pair is reported once: at the later of two branch or for_each keys.
            let clash = others
                .iter()
                .chain(enclosing)
                .find(|other| other.key == writer.key && (other.output || other.pos < writer.pos));
            if let Some(other) = clash {
                let hint = if writer.who.starts_with("branch") {
                    "a branch's step outputs land under its key; give the branch another `key:`, or rename the other key"
                } else {
                    "a for_each's results land under its key; give the step another `key:`, or rename the other key"
                };
                out.error(
                    writer.pos,
                    format!(
                        "{} writes context key `{}`, which {} (line {}) also writes",
                        writer.who, writer.key, other.who, other.pos.line
                    ),
                    hint,
                );
            }
        }
        let mut inner: Vec<Writer<'_>> = enclosing.to_vec();
        inner.extend(others);
        match &step.shape {
            Shape::Leaf => {}
            Shape::Parallel(branches) => {
                for branch in branches {
                    collisions(&branch.steps, &inner, out);
                }
            }
            Shape::Choice(branches) => {
                for branch in branches {
                    collisions(branch, &inner, out);
                }
            }
            Shape::ForEach(_, body) => collisions(body, &inner, out),
        }
    }
}

/// Checks the paths read in `steps` against the results visible to them; returns the results
/// the sequence adds to its scope (for a choice's branches).
fn reads<'o>(
    steps: &'o [Outline],
    visible: &[Visible<'o>],
    out: &mut Collector,
) -> Vec<Visible<'o>> {
    let mut visible = visible.to_vec();
    let mut added: Vec<Visible<'o>> = Vec::new();
    for step in steps {
        for read in &step.reads {
            check_read(read, &visible, out);
        }
        let mut finished = Vec::new();
        match &step.shape {
            Shape::Leaf => {}
            Shape::Parallel(branches) => {
                for branch in branches {
                    let _ = reads(&branch.steps, &visible, out);
                    if let Some((key, _)) = &branch.key {
                        finished.push(Visible {
                            key,
                            who: &branch.label,
                            writes: keys(&branch.steps),
                            list: false,
                        });
                    }
                }
            }
            Shape::Choice(branches) => {
                for branch in branches {
                    finished.extend(reads(branch, &visible, out));
                }
            }
            Shape::ForEach(key, body) => {
                let _ = reads(body, &visible, out);
                if let Some((key, _)) = key {
                    finished.push(Visible {
                        key,
                        who: &step.label,
                        writes: keys(body),
                        list: true,
                    });
                }
            }
        }
        // A later plain output replaces what was there (a collision reported on its own).
        for (key, _) in &step.outputs {
            visible.retain(|v| v.key != key);
            added.retain(|v| v.key != key);
        }
        visible.extend(finished.iter().cloned());
        added.extend(finished);
    }
    added
}

/// The distinct keys written in the scope of `steps`, in source order.
fn keys(steps: &[Outline]) -> Vec<&str> {
    let mut keys: Vec<&str> = Vec::new();
    for writer in scope_writes(steps) {
        if !keys.contains(&writer.key) {
            keys.push(writer.key);
        }
    }
    keys
}

/// "`a`", "`a` and `b`", "`a`, `b` and `c`".
fn list(keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn check_read(read: &Read, visible: &[Visible<'_>], out: &mut Collector) {
    let segments = read.path.segments();
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        return;
    }
    let matching: Vec<&Visible<'_>> = visible.iter().filter(|v| v.key == first).collect();
    let Some(last) = matching.last() else {
        return;
    };
    // Whether a result (of several writers of the key, e.g. in a choice's branches) has it.
    let accepts = |v: &Visible<'_>| {
        if !v.list {
            return v.writes.contains(&rest[0].as_str());
        }
        rest[0].parse::<usize>().is_ok()
            && rest
                .get(1)
                .is_none_or(|field| v.writes.contains(&field.as_str()))
    };
    if matching.iter().any(|v| accepts(v)) {
        return;
    }
    let path = &read.path;
    let (field, prefix) = if last.list {
        if rest[0].parse::<usize>().is_err() {
            let example = match last.writes.first() {
                Some(field) => format!("`$.{first}.0.{field}`"),
                None => format!("`$.{first}.0`"),
            };
            out.error(
                read.pos,
                format!(
                    "`{path}`: `$.{first}` is the list of the results of {}, one per element",
                    last.who
                ),
                format!("read an element by its index, e.g. {example}"),
            );
            return;
        }
        (rest[1].as_str(), format!("$.{first}.{}", rest[0]))
    } else {
        (rest[0].as_str(), format!("$.{first}"))
    };
    let writer = if last.list {
        format!("the steps of {}", last.who)
    } else {
        last.who.to_owned()
    };
    let (verb, holder) = if last.list {
        ("write", format!("each element of `$.{first}` holds"))
    } else {
        ("writes", "the branch writes".to_owned())
    };
    let hint = if last.writes.is_empty() {
        "none of its steps has an `output`; add one, or read another path".to_owned()
    } else if let Some(close) = did_you_mean(field, &last.writes) {
        let mut corrected = format!("{prefix}.{close}");
        for segment in rest.iter().skip(if last.list { 2 } else { 1 }) {
            corrected.push('.');
            corrected.push_str(segment);
        }
        format!(
            "did you mean `{corrected}`? {holder} {}",
            list(&last.writes)
        )
    } else {
        format!("{holder} {}", list(&last.writes))
    };
    out.error(
        read.pos,
        format!("`{path}`: {writer} {verb} no `{field}`"),
        hint,
    );
}
