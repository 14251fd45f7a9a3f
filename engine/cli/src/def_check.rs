//! `sagaflow def check`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sagaflow_definition::{load_dir, load_file};

pub(crate) fn run(paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut problems = 0usize;
    for path in paths {
        problems += check(path);
    }
    if problems > 0 {
        eprintln!("{problems} problem(s) found");
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn check(path: &Path) -> usize {
    let loaded = if path.is_dir() {
        load_dir(path).map(|registry| {
            registry
                .iter()
                .map(|d| (d.key(), d.all_steps().count()))
                .collect()
        })
    } else {
        load_file(path).map(|d| vec![(d.key(), d.all_steps().count())])
    };
    match loaded {
        Ok(definitions) => {
            for (key, steps) in definitions {
                println!("{}: ok ({key}, {steps} steps)", path.display());
            }
            0
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            diagnostics.len()
        }
    }
}
