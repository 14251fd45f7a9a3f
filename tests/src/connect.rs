//! A Kafka Connect worker of a test's own (`scripts/connect.sh`: Kafka Connect 4.4 in distributed
//! mode with Debezium's connectors), stopped on drop, and the PostgreSQL preparation Debezium
//! needs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, http_request, root, run_script, TempDir};

/// Runs `scripts/connect.sh ARGS`; panics with its stderr when it fails, returns its stdout.
pub fn connect_script(args: &[&str]) -> String {
    connect_script_with(args, "")
}

/// [`connect_script`] with `worker_properties` (lines of `key=value`) added to a started
/// worker's properties.
fn connect_script_with(args: &[&str], worker_properties: &str) -> String {
    // The worker stops, and its directory goes, when the test process exits, even if killed.
    let owner = std::process::id().to_string();
    run_script(
        "connect.sh",
        args,
        &[
            ("CONNECT_WORKER_PROPERTIES", worker_properties),
            ("SAGAFLOW_CONNECT_OWNER", &owner),
        ],
    )
}

/// A running Kafka Connect worker.
#[derive(Debug)]
pub struct Connect {
    /// Its REST API, `http://127.0.0.1:PORT`.
    pub url: String,
    bootstrap: String,
    properties: String,
    dir: TempDir,
}

impl Connect {
    /// Starts a worker on the Kafka at `bootstrap`.
    pub fn start(name: &str, bootstrap: &str) -> Self {
        Self::start_with(name, bootstrap, &[])
    }

    /// Starts a worker on the Kafka at `bootstrap` with worker `properties` added (also at each
    /// restart).
    pub fn start_with(name: &str, bootstrap: &str, properties: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(&format!("{name}-connect"));
        let properties: String = properties
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let url = connect_script_with(
            &["start", &dir.path().display().to_string(), bootstrap],
            &properties,
        );
        Self {
            url,
            bootstrap: bootstrap.to_string(),
            properties,
            dir,
        }
    }

    /// Stops the worker (a clean stop: it commits its source offsets) and starts it again in the
    /// same directory, with the same group and topics, so that it resumes its connectors.
    pub fn restart(&mut self) {
        let dir = self.dir.path().display().to_string();
        let _ = connect_script(&["stop", &dir]);
        self.url = connect_script_with(&["start", &dir, &self.bootstrap], &self.properties);
    }

    /// Kills the worker with SIGKILL, so that it cannot commit the source offsets of what it
    /// delivered since its last commit, and starts it again in the same directory.
    pub fn kill9_and_restart(&mut self) {
        let dir = self.dir.path().display().to_string();
        let pid = std::fs::read_to_string(self.dir.path().join("connect.pid"))
            .expect("connect.pid")
            .trim()
            .to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = connect_script(&["stop", &dir]);
        self.url = connect_script_with(&["start", &dir, &self.bootstrap], &self.properties);
    }

    /// Creates (or updates) connector `name` with `config` and waits until it and its task run.
    pub fn put_connector(&self, name: &str, config: &Value) {
        let (status, _, body) = http_request(
            "PUT",
            &format!("{}/connectors/{name}/config", self.url),
            &[],
            Some(&config.to_string()),
        );
        assert!(
            status == 200 || status == 201,
            "PUT connector {name}: {status} {body}"
        );
        self.wait_running(name);
    }

    /// Waits until connector `name` and all of its tasks report RUNNING; panics with its status
    /// (which holds a failed task's trace) after two minutes.
    pub fn wait_running(&self, name: &str) {
        let mut last = String::new();
        let running = eventually(Duration::from_secs(120), || {
            let (status, _, body) = http_request(
                "GET",
                &format!("{}/connectors/{name}/status", self.url),
                &[],
                None,
            );
            last = body.clone();
            if status != 200 {
                return false;
            }
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
            v["connector"]["state"] == "RUNNING"
                && !tasks.is_empty()
                && tasks.iter().all(|t| t["state"] == "RUNNING")
        });
        assert!(running, "connector {name} is not running: {last}");
    }

    /// The worker's log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("connect.log")).unwrap_or_default()
    }
}

impl Drop for Connect {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/connect.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// Prepares the PostgreSQL server running in `pg_dir` for Debezium (logical decoding, which
/// restarts it, and a replication role); returns the role's URL.
pub fn prepare_postgres(pg_dir: &Path) -> String {
    connect_script(&["prepare-postgres", &pg_dir.display().to_string()])
}
