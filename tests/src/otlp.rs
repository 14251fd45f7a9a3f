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

/// The sink's binary: built with `go build` (modules from the Go module proxy) into
/// `${SAGAFLOW_CACHE:-~/.cache/sagaflow}/otlp-sink-<hash of its source>` the first time.
fn binary() -> PathBuf {
    let src = root().join("scripts/otlp-sink");
    // FNV-1a over the source files: a new source gets a new binary.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in ["main.go", "go.mod", "go.sum"] {
        let bytes = std::fs::read(src.join(file))
            .unwrap_or_else(|e| panic!("reading scripts/otlp-sink/{file}: {e}"));
        for b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let cache = std::env::var_os("SAGAFLOW_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sagaflow")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/sagaflow")
        });
    let dir = cache.join(format!("otlp-sink-{:012x}", hash & 0xffff_ffff_ffff));
    let bin = dir.join("otlp-sink");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&dir).expect("create the otlp-sink cache directory");
    let tmp = dir.join(format!("otlp-sink.tmp{}", std::process::id()));
    eprintln!("building otlp-sink (the OpenTelemetry Collector's pdata, from the Go module proxy, once)...");
    let status = Command::new("go")
        .args(["build", "-mod=readonly", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src)
        .status()
        .expect("run go build (Go is needed for the OTLP test)");
    assert!(status.success(), "go build of scripts/otlp-sink failed");
    std::fs::rename(&tmp, &bin).expect("move otlp-sink into place");
    bin
}
