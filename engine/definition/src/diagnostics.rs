//! Located, human-readable problems found in definitions.

use std::fmt;

use crate::yaml::Pos;

/// One problem in a definition source, with its position and a hint on how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Name of the source, usually its file path.
    pub source: String,
    /// 1-based line, or 0 when the problem concerns the whole source (e.g. an unreadable file).
    pub line: usize,
    /// 1-based column (in characters), or 0 together with `line`.
    pub column: usize,
    /// What is wrong and where, in one sentence.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole source rather than a place in it.
    pub fn whole_source(
        source: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Self {
        Diagnostic {
            source: source.into(),
            line: 0,
            column: 0,
            message: message.into(),
            hint,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.source, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.source, self.line, self.column, self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found, sorted by source and position; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// Sorts by source, line and column, keeping discovery order for ties.
    pub(crate) fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.source, a.line, a.column).cmp(&(&b.source, b.line, b.column)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

impl Extend<Diagnostic> for Diagnostics {
    fn extend<T: IntoIterator<Item = Diagnostic>>(&mut self, iter: T) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Gathers the problems of one source while it is decoded.
#[derive(Debug)]
pub(crate) struct Collector {
    source: String,
    diagnostics: Vec<Diagnostic>,
}

impl Collector {
    pub(crate) fn new(source: &str) -> Self {
        Collector {
            source: source.to_owned(),
            diagnostics: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>, hint: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            source: self.source.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub(crate) fn into_diagnostics(self) -> Diagnostics {
        let mut diagnostics = Diagnostics(self.diagnostics);
        diagnostics.sort();
        diagnostics
    }

    /// The decoded value if nothing went wrong, otherwise every problem.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, Diagnostics> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => {
                let source = self.source.clone();
                let mut diagnostics = self.into_diagnostics();
                if diagnostics.is_empty() {
                    // Decoders report before giving up; this keeps the
                    // "never empty" promise even if one forgot to.
                    diagnostics.0.push(Diagnostic::whole_source(
                        source,
                        "the definition could not be decoded",
                        None,
                    ));
                }
                Err(diagnostics)
            }
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|candidate| (edit_distance(&word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions,
/// so `nmae` is one edit away from `name`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_location_and_hint() {
        let diagnostic = Diagnostic {
            source: "trip.yaml".into(),
            line: 12,
            column: 7,
            message: "unknown field `compensate` in step `payment`".into(),
            hint: Some("did you mean `compensation`?".into()),
        };
        assert_eq!(
            diagnostic.to_string(),
            "trip.yaml:12:7: error: unknown field `compensate` in step `payment`\n  hint: did you mean `compensation`?"
        );
        let whole = Diagnostic::whole_source("x.yaml", "cannot read file", None);
        assert_eq!(whole.to_string(), "x.yaml: error: cannot read file");
    }

    #[test]
    fn typos_are_matched_to_close_candidates_only() {
        let fields = ["name", "command", "compensation", "output"];
        assert_eq!(did_you_mean("compensate", &fields), Some("compensation"));
        assert_eq!(did_you_mean("nmae", &fields), Some("name"));
        assert_eq!(did_you_mean("Command", &fields), Some("command"));
        assert_eq!(did_you_mean("outputs", &fields), Some("output"));
        assert_eq!(did_you_mean("retry", &fields), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
