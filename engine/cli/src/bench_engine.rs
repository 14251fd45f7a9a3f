//! The engine as a child process of a benchmark: its memory is its own, and a benchmark can
//! stop it and start another on a new state directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use anyhow::Context as _;
use sagaflow_kafka::TopicPolicy;

/// The engine child process; killed on drop.
pub(crate) struct EngineProcess {
    pub(crate) child: Child,
    pub(crate) metrics_url: String,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EngineProcess {
    /// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`); 0 if unreadable.
    pub(crate) fn rss_kib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// A series of the engine's metrics, by its name and labels exactly as `/metrics` prints
    /// them (`name` alone for a metric without labels); 0 if absent or unreachable.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let Ok(body) = http_get(&self.metrics_url).await else {
            return 0.0;
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.rsplit_once(' ')?;
                (n == name).then(|| v.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}

impl EngineProcess {
    /// Waits until the engine owns all `partitions` (2 minutes at most).
    pub(crate) async fn wait_owned(&self, partitions: i32) -> anyhow::Result<()> {
        let joined = std::time::Instant::now();
        while self.metric("sagaflow_partitions_owned").await < f64::from(partitions) {
            anyhow::ensure!(
                joined.elapsed() < std::time::Duration::from_secs(120),
                "the engine did not own its {partitions} partitions within 2 minutes"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Kills the engine as a crash would (SIGKILL: no hand-over, no flush) and reaps it.
    pub(crate) fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("killing the engine")?;
        let _ = self.child.wait().context("waiting for the killed engine")?;
        Ok(())
    }

    /// Stops the engine as SIGTERM does (a clean hand-over) and waits for it to exit.
    pub(crate) fn terminate(&mut self) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM of the engine failed");
        let _ = self
            .child
            .wait()
            .context("waiting for the engine to stop")?;
        Ok(())
    }
}

async fn http_get(url: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http url")?;
    let (host, path) = rest.split_once('/').context("url path")?;
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body).await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// Starts `sagaflow engine` as a child process, so that its memory is its own, and waits for its
/// metrics address. `env` is added to its environment.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn_engine(
    kafka: &crate::KafkaArgs,
    policy: TopicPolicy,
    registry_url: &str,
    group: &str,
    partitions: i32,
    state_dir: &std::path::Path,
    definitions: &std::path::Path,
    env: &[(&str, &str)],
) -> anyhow::Result<EngineProcess> {
    let exe = std::env::current_exe().context("locating the sagaflow binary")?;
    let mut child = std::process::Command::new(exe)
        .args([
            "engine",
            "--bootstrap",
            &kafka.bootstrap,
            "--registry-url",
            registry_url,
        ])
        .args(
            kafka
                .properties
                .iter()
                .flat_map(|p| ["--kafka", p.as_str()]),
        )
        .env(
            "SAGAFLOW_REPLICATION_FACTOR",
            policy.replication_factor.to_string(),
        )
        .env(
            "SAGAFLOW_MIN_INSYNC_REPLICAS",
            policy.min_insync_replicas.to_string(),
        )
        .args(["--group", group, "--partitions", &partitions.to_string()])
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--definitions")
        .arg(definitions)
        .args(["--http-listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the engine process")?;
    let stdout = child.stdout.take().context("engine stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let metrics_url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("metrics:") {
                    break url.trim().to_string();
                }
            }
            _ => anyhow::bail!("the engine exited before serving its metrics"),
        }
    };
    // Keep draining stdout so the engine never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(EngineProcess { child, metrics_url })
}
