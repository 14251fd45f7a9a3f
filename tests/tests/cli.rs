//! The `sagaflow` command line.

use std::process::Command;

use sagaflow_tests::{root, sagaflow_bin};

#[test]
fn def_check_reports_every_problem_with_line_column_and_hint() {
    let out = Command::new(sagaflow_bin())
        .args(["def", "check"])
        .arg(root().join("examples/broken/trip-broken.yaml"))
        .output()
        .expect("run sagaflow def check");
    assert!(!out.status.success(), "broken YAML must fail the check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error: ")).collect();
    assert!(errors.len() >= 5, "expected every problem, got:\n{stderr}");
    for line in &errors {
        // file:line:column: error: message
        let mut parts = line.splitn(4, ':');
        let file = parts.next().unwrap_or_default();
        let line_no: usize = parts.next().unwrap_or_default().parse().unwrap_or(0);
        let col: usize = parts.next().unwrap_or_default().parse().unwrap_or(0);
        assert!(
            file.ends_with("trip-broken.yaml") && line_no > 0 && col > 0,
            "no position in {line:?}"
        );
    }
    assert!(stderr.contains("did you mean `compensation`?"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn def_check_accepts_the_examples() {
    let out = Command::new(sagaflow_bin())
        .args(["def", "check"])
        .arg(root().join("examples/trip.yaml"))
        .arg(root().join("examples/bench4.yaml"))
        .output()
        .expect("run sagaflow def check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok (trip@1, 4 steps)"), "{stdout}");
    assert!(stdout.contains("ok (bench@1, 4 steps)"), "{stdout}");
}
