//! The container image, checked where Docker cannot run: the Dockerfile's build stage builds
//! the `sagaflow` binary, and its runtime stage installs the Debian package of every shared
//! library that binary links, and no library it does not.
//!
//! The binary checked is the one the tests run (`target/debug/sagaflow`): a release build
//! links the same libraries, since the features are the same.

use std::collections::BTreeSet;
use std::process::Command;

use sagaflow_tests::{root, sagaflow_bin, skip};

/// In `debian:bookworm-slim` already: libc6, libgcc-s1 (libc6 depends on it) and zlib1g (dpkg
/// depends on it).
const BASE: [&str; 3] = ["libc6", "libgcc-s1", "zlib1g"];

/// Installed for something other than a linked library, and why.
const NOT_LINKED: [(&str, &str); 1] = [("ca-certificates", "TLS to brokers and registries")];

/// The Dockerfile's stages: (the FROM line, the instructions after it, continuation lines
/// joined).
fn stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in joined.into_iter().filter(|i| !i.is_empty()) {
        if instruction.starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instruction);
        }
    }
    stages
}

/// The packages an instruction's `apt-get install` names.
fn installed(instruction: &str) -> Vec<String> {
    instruction
        .split("&&")
        .filter_map(|cmd| cmd.split_once("apt-get install").map(|(_, rest)| rest))
        .flat_map(|rest| rest.split_whitespace())
        .filter(|word| !word.starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// The Debian package that holds `library` (a path as ldd prints it). Debian 12 merged /lib
/// into /usr/lib, while dpkg still records the old paths of some packages: try both.
fn package_of(library: &str) -> String {
    let real = std::fs::canonicalize(library)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| library.to_string());
    let candidates = [
        library.to_string(),
        real.clone(),
        real.trim_start_matches("/usr").to_string(),
    ];
    for path in candidates {
        let out = Command::new("dpkg").args(["-S", &path]).output();
        if let Some(out) = out.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some((package, _)) = text.lines().next().and_then(|l| l.split_once(':')) {
                return package.to_string();
            }
        }
    }
    panic!("no Debian package holds {library} (nor {real})");
}

#[test]
fn the_dockerfile_builds_the_binary_and_installs_exactly_the_libraries_it_links() {
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    if !debian.starts_with("12.") {
        skip(
            "the Dockerfile's library check",
            "it maps libraries to packages with this machine's dpkg, which must be Debian 12 like the image's base (debian:bookworm-slim)",
        );
        return;
    }
    let dockerfile =
        std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile at the top level");
    let stages = stages(&dockerfile);
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build_from, build) = &stages[0];
    let (runtime_from, runtime) = &stages[1];
    assert!(build_from.ends_with(" AS build"), "{build_from}");
    assert_eq!(runtime_from, "FROM debian:bookworm-slim");

    // The build stage builds the package whose binary is `sagaflow`, locked, in release.
    let built = build
        .iter()
        .find(|i| i.contains("cargo build"))
        .expect("a cargo build in the build stage");
    for flag in ["--release", "--locked", "-p sagaflow"] {
        assert!(built.contains(flag), "{built} lacks {flag}");
    }
    let cli = std::fs::read_to_string(root().join("engine/cli/Cargo.toml")).expect("cli crate");
    assert!(
        cli.contains("name = \"sagaflow\"\n") && cli.contains("[[bin]]\nname = \"sagaflow\""),
        "package sagaflow builds the binary sagaflow"
    );
    assert!(
        built.contains("cp target/release/sagaflow /usr/local/bin/sagaflow"),
        "{built}"
    );
    assert!(runtime
        .iter()
        .any(|i| i == "COPY --from=build /usr/local/bin/sagaflow /usr/local/bin/sagaflow"));
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("USER ") && !i.starts_with("USER root") && !i.contains(" 0")),
        "the runtime runs as a non-root user"
    );

    // Every library the binary links comes from the base image or an installed package, and
    // every installed package is linked or listed with its reason.
    let ldd = Command::new("ldd")
        .arg(sagaflow_bin())
        .output()
        .expect("run ldd");
    assert!(ldd.status.success());
    let linked: BTreeSet<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(_, right)| right.trim()))
        .filter_map(|right| right.split_whitespace().next())
        .filter(|path| path.starts_with('/'))
        .map(package_of)
        .collect();
    let installed: BTreeSet<String> = runtime.iter().flat_map(|i| installed(i)).collect();
    let missing: Vec<&String> = linked
        .iter()
        .filter(|p| !BASE.contains(&p.as_str()) && !installed.contains(*p))
        .collect();
    assert!(
        missing.is_empty(),
        "the binary links libraries of {missing:?}, which the runtime stage does not install (it installs {installed:?})"
    );
    let unneeded: Vec<&String> = installed
        .iter()
        .filter(|p| !linked.contains(*p) && !NOT_LINKED.iter().any(|(n, _)| n == p))
        .collect();
    assert!(
        unneeded.is_empty(),
        "the runtime stage installs {unneeded:?}, which the binary does not link (it links {linked:?})"
    );
    eprintln!("linked: {linked:?}; installed: {installed:?}");
}
