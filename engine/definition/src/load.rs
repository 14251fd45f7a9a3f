//! Loading definitions from files, the only I/O in this crate.

use std::fs;
use std::path::Path;

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::model::Definition;
use crate::parse::{self, Located};
use crate::registry::Registry;
use crate::Error;

/// Reads and parses one definition file; the path labels the diagnostics.
pub fn load_file(path: &Path) -> Result<Definition, Diagnostics> {
    load_located(path).map(|located| located.definition)
}

fn load_located(path: &Path) -> Result<Located, Diagnostics> {
    let source = path.display().to_string();
    let yaml = fs::read_to_string(path).map_err(|error| {
        Diagnostic::whole_source(
            source.clone(),
            format!("cannot read definition file: {error}"),
            Some("check that the file exists, is readable and is UTF-8".to_owned()),
        )
    })?;
    parse::parse(&source, &yaml)
}

/// Loads every `*.yaml` / `*.yml` file directly in `dir` (not subdirectories),
/// reporting the problems of all files together.
///
/// An empty directory gives an empty registry; callers decide whether that is an error.
pub fn load_dir(dir: &Path) -> Result<Registry, Diagnostics> {
    let source = dir.display().to_string();
    let unreadable = |error: std::io::Error| {
        Diagnostics::from(Diagnostic::whole_source(
            source.clone(),
            format!("cannot list definition directory: {error}"),
            Some("check that the directory exists and is readable".to_owned()),
        ))
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let is_yaml = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml"));
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    // Sorted so that "defined earlier" in conflict messages is deterministic.
    files.sort();

    let mut registry = Registry::new();
    let mut diagnostics = Diagnostics::default();
    // Where each key was first loaded from, to explain conflicts.
    let mut origins = std::collections::HashMap::new();
    for path in &files {
        match load_located(path) {
            Ok(Located {
                definition,
                name_pos,
            }) => {
                let key = definition.key();
                match registry.insert(definition) {
                    Ok(()) => {
                        let _ = origins.entry(key).or_insert_with(|| path.display().to_string());
                    }
                    Err(Error::Conflict { key }) => diagnostics.0.push(Diagnostic {
                        source: path.display().to_string(),
                        line: name_pos.line,
                        column: name_pos.column,
                        message: format!(
                            "definition `{key}` is also defined in {} with different content",
                            origins.get(&key).map_or("another file", String::as_str)
                        ),
                        hint: Some(
                            "give the changed definition a new `version`; running instances stay on the old one"
                                .to_owned(),
                        ),
                    }),
                }
            }
            Err(problems) => diagnostics.extend(problems),
        }
    }
    if diagnostics.is_empty() {
        Ok(registry)
    } else {
        diagnostics.sort();
        Err(diagnostics)
    }
}
