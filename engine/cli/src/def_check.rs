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
    if path.is_dir() {
        match load_dir(path) {
            Ok(registry) => {
                for def in registry.iter() {
                    println!(
                        "{}: ok ({}, {} steps)",
                        path.display(),
                        def.key(),
                        def.steps.len()
                    );
                }
                0
            }
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                diagnostics.len()
            }
        }
    } else {
        match load_file(path) {
            Ok(def) => {
                println!(
                    "{}: ok ({}, {} steps)",
                    path.display(),
                    def.key(),
                    def.steps.len()
                );
                0
            }
            Err(diagnostics) => {
                eprintln!("{diagnostics}");
                diagnostics.len()
            }
        }
    }
}
