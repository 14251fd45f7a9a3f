//! An OTLP/HTTP trace receiver of a test's own (`scripts/otlp-sink`, which decodes every request
//! with the OpenTelemetry Collector's pdata library), built once with Go into the cache and
//! stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::root;

/// A running sink: its URL, and every span it accepted so far.
#[derive(Debug)]
pub struct OtlpSink {
    child: Child,
    /// The base URL to export to (`/v1/traces` is appended by exporters).
    pub url: String,
    spans: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<Vec<String>>>,
}

impl OtlpSink {
    /// Builds the sink if needed and starts it on a free loopback port.
    pub fn start() -> Self {
        let mut child = Command::new(binary())
            .args(["-listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start otlp-sink");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("otlp-sink prints where it listens");
        let url = first
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line of otlp-sink: {first}"))
            .to_string();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        let _ = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let span: Value = serde_json::from_str(&line).expect("a span as JSON");
                sink.lock().expect("spans").push(span);
            }
        });
        let errors = refused.clone();
        let stderr = child.stderr.take().expect("piped stderr");
        let _ = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                errors.lock().expect("refusals").push(line);
            }
        });
        Self {
            child,
            url,
            spans,
            refused,
        }
    }

    /// The spans accepted so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("spans").clone()
    }

    /// What the sink refused (requests the collector's decoder rejected), if anything.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().expect("refusals").clone()
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sink's binary, built once into the cache by `go_tool` of `scripts/lib.sh` (the same
/// way `scripts/compose-test.sh` builds its checker).
fn binary() -> PathBuf {
    let out = Command::new("bash")
        .args(["-c", "me=otlp-sink; . scripts/lib.sh && go_tool otlp-sink"])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run bash for scripts/lib.sh go_tool");
    assert!(out.status.success(), "building scripts/otlp-sink failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}
