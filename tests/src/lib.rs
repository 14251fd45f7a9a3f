//! Shared set-up of Sagaflow's integration tests: a real broker started through
//! `scripts/broker.sh` (or `SAGAFLOW_BOOTSTRAP` for an external Kafka, Redpanda, ...), the
//! `sagaflow` binary run as separate processes (so tests can kill -9 them), and readers of
//! Sagaflow's topics.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, RegistrySettings, SagaEvent};
use sagaflow_kafka::{KafkaSettings, TopicPolicy, TopicSpec};

pub mod connect;
pub mod otlp;
pub mod pg;
pub mod trips;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `sagaflow-test-<name>-<random>` under the system temp dir.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sagaflow-test-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which broker the tests run against: `SAGAFLOW_TEST_BROKER=kafka` for Apache Kafka (KRaft),
/// anything else or unset for tansu.
pub fn broker_kind() -> BrokerKind {
    match std::env::var("SAGAFLOW_TEST_BROKER").as_deref() {
        Ok("kafka") => BrokerKind::Kafka,
        _ => BrokerKind::Tansu,
    }
}

/// A Kafka-protocol broker implementation the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// tansu 0.6, with the storage a test asks for.
    Tansu,
    /// Apache Kafka 4.4 in KRaft mode, one node.
    Kafka,
}

impl BrokerKind {
    /// The name `SAGAFLOW_TEST_BROKER` gives it, which also names what a pass writes under
    /// `target/`, so that one pass's files never mix with the other's.
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Kafka => "kafka",
        }
    }
}

/// Records that (part of) a test does not run on this broker, and why: on stderr, and in
/// `target/test-skips-<broker>.log`, which `scripts/test.sh` prints after each pass (the test
/// harness hides the output of passing tests).
pub fn skip(what: &str, why: &str) {
    use std::io::Write as _;
    let line = format!("SKIPPED on {:?}: {what}: {why}", broker_kind());
    eprintln!("{line}");
    let log = root().join(format!("target/test-skips-{}.log", broker_kind().name()));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        // One write per line: tests run in parallel, and O_APPEND keeps a single write whole.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// Whether `test` can run here: true on Apache Kafka; on tansu it records the skip with `why`.
pub fn on_kafka_only(test: &str, why: &str) -> bool {
    let kafka = broker_kind() == BrokerKind::Kafka;
    if !kafka {
        skip(test, why);
    }
    kafka
}

/// Storage of a local tansu broker (Apache Kafka always keeps its log on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Fast and lost on restart, and not a correct broker: tansu 0.6 serves a fetch from the
    /// first batch that *starts* at or after the offset, so a consumer resuming inside a
    /// multi-record batch (after a rebalance, a restore, a restart) never sees the rest of it.
    Memory,
    /// Survives kill -9 and restarts.
    Sqlite,
}

/// A broker for one test: a local tansu or Apache Kafka (see [`broker_kind`]; stopped on
/// drop), or `SAGAFLOW_BOOTSTRAP`.
#[derive(Debug)]
pub struct Broker {
    bootstrap: String,
    dir: Option<TempDir>,
    storage: Storage,
}

impl Broker {
    /// A sqlite-backed broker: the tests resume consumers mid-batch all the time, which only
    /// sqlite storage serves correctly (see [`Storage::Memory`]).
    pub fn start() -> Self {
        Self::start_with(Storage::Sqlite)
    }

    /// A broker with the given storage.
    pub fn start_with(storage: Storage) -> Self {
        Self::start_with_properties(storage, "")
    }

    /// A broker with the given storage; a Kafka broker with `properties` (server.properties
    /// lines) added to what `scripts/broker.sh` writes.
    fn start_with_properties(storage: Storage, properties: &str) -> Self {
        if let Ok(bootstrap) = std::env::var("SAGAFLOW_BOOTSTRAP") {
            return Self {
                bootstrap,
                dir: None,
                storage,
            };
        }
        let dir = TempDir::new("broker");
        let env: &[(&str, &str)] = if properties.is_empty() {
            &[]
        } else {
            &[("KAFKA_BROKER_PROPERTIES", properties)]
        };
        let bootstrap = broker_script_env(
            &[
                "start",
                &dir.path().display().to_string(),
                start_mode(storage),
            ],
            env,
        );
        Self {
            bootstrap,
            dir: Some(dir),
            storage,
        }
    }

    /// The broker every test of this test binary shares, for tests that never restart, kill or
    /// break it. Each such test keeps to its own topics: the engine's are named after its group
    /// ([`group`]), the participants' carry the test's [`Space`] prefix. Apache Kafka starts in
    /// seconds and warms up slowly, so sharing it saves most of a test's set-up; tansu starts in
    /// a fraction of a second, and each test keeps its own, which also keeps one test's trouble
    /// with tansu out of the others.
    pub fn for_test() -> TestBroker {
        static SHARED: std::sync::OnceLock<Broker> = std::sync::OnceLock::new();
        match broker_kind() {
            // A static is never dropped: the broker.sh watch stops this one, and removes its
            // directory, when the test binary exits.
            //
            // broker.sh gives its own controller 6 s to hear from the broker, so that a broker
            // restarted after a kill -9 can register again soon. Nobody kills this one, and a
            // controller stalled for 11 s on a loaded runner once fenced it, leaving every
            // partition without a leader: 30 s rides out such a stall.
            BrokerKind::Kafka => TestBroker::Shared(SHARED.get_or_init(|| {
                Self::start_with_properties(Storage::Sqlite, "broker.session.timeout.ms=30000")
            })),
            BrokerKind::Tansu => TestBroker::Own(Self::start()),
        }
    }

    /// host:port.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Whether the broker was started by this test (and can be restarted).
    pub fn is_local(&self) -> bool {
        self.dir.is_some()
    }

    /// Stops and starts the broker on the same port and data (sqlite keeps the data).
    pub fn restart(&self) {
        let dir = self.dir.as_ref().expect("restart needs a local broker");
        let d = dir.path().display().to_string();
        let _ = broker_script(&["stop", &d]);
        let again = broker_script(&["start", &d, start_mode(self.storage)]);
        assert_eq!(again, self.bootstrap, "broker restarted on another address");
    }

    /// kill -9 of the broker, then a start on the same port and data.
    pub fn kill9_and_restart(&self) {
        let dir = self.dir.as_ref().expect("a restart needs a local broker");
        let pid = std::fs::read_to_string(dir.path().join("broker.pid")).expect("broker.pid");
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -9 of the broker failed");
        self.restart();
    }
}

/// A test's broker: its own, or the one its test binary shares (see [`Broker::for_test`]).
#[derive(Debug)]
pub enum TestBroker {
    /// Started for this test, stopped when it ends.
    Own(Broker),
    /// Shared by the tests of this binary.
    Shared(&'static Broker),
}

impl std::ops::Deref for TestBroker {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        match self {
            Self::Own(b) => b,
            Self::Shared(b) => b,
        }
    }
}

/// What one test owns on a broker it may share with others: its group, which names the engine's
/// topics, and a prefix for the participants' command topics, which the definitions name.
#[derive(Debug)]
pub struct Space {
    /// The engine group (unique per test run).
    pub group: String,
    definitions: TempDir,
}

impl Space {
    /// A space named after the test, with the example definitions (`examples/*.yaml`) copied
    /// into it under prefixed command topics.
    pub fn new(name: &str) -> Self {
        let space = Self::bare(name);
        for entry in std::fs::read_dir(root().join("examples")).expect("examples/") {
            let path = entry.expect("examples/ entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a definition");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file name");
            space.define(name, &text);
        }
        space
    }

    /// A space named after the test, with no definitions yet (see [`Space::define`]).
    pub fn bare(name: &str) -> Self {
        Self {
            group: group(name),
            definitions: TempDir::new(&format!("{name}-defs")),
        }
    }

    /// Adds definition file `file` with `yaml`, its command topics prefixed for this space.
    pub fn define(&self, file: &str, yaml: &str) {
        let prefixed = prefix_topics(yaml, &format!("{}.", self.group));
        std::fs::write(self.definitions.path().join(file), prefixed).expect("write a definition");
    }

    /// Rewrites definition file `file` of this space with `edit`, which must change it.
    pub fn redefine(&self, file: &str, edit: impl FnOnce(&str) -> String) {
        let path = self.definitions.path().join(file);
        let text = std::fs::read_to_string(&path).expect("read a definition");
        let edited = edit(&text);
        assert_ne!(edited, text, "{file}: the edit changed nothing");
        std::fs::write(&path, edited).expect("write a definition");
    }

    /// The directory of this space's definitions.
    pub fn definitions(&self) -> &Path {
        self.definitions.path()
    }

    /// Keeps only the definition files `names` (e.g. `["trip.yaml"]`).
    pub fn only(self, names: &[&str]) -> Self {
        for entry in std::fs::read_dir(self.definitions.path()).expect("definitions") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !names.contains(&name) {
                std::fs::remove_file(&path).expect("remove a definition");
            }
        }
        self
    }

    /// Options of an engine of this space (its group and definitions) on `state`.
    pub fn engine_opts(
        &self,
        bootstrap: &str,
        registry_url: &str,
        state: &TempDir,
        partitions: i32,
    ) -> EngineOpts {
        EngineOpts {
            bootstrap: bootstrap.to_string(),
            registry_url: registry_url.to_string(),
            group: self.group.clone(),
            state_dir: state.path().to_path_buf(),
            definitions: self.definitions().to_path_buf(),
            partitions,
        }
    }

    /// The name of `topic` (as the examples name it) in this space.
    pub fn topic(&self, topic: &str) -> String {
        format!("{}.{topic}", self.group)
    }

    /// The command topic of example participant `role` in this space (`--topic` for it).
    pub fn role_topic(&self, role: &str) -> String {
        let topic = match role {
            "echo" => "bench.s1.commands".to_string(),
            role => format!("trip.{role}.commands"),
        };
        self.topic(&topic)
    }
}

/// Prefixes every `topic:` value of a definition's YAML (block and flow style alike).
fn prefix_topics(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(at) = rest.find("topic:") {
        let (head, tail) = rest.split_at(at + "topic:".len());
        out.push_str(head);
        let value = tail.trim_start_matches([' ', '\t']);
        out.push_str(&tail[..tail.len() - value.len()]);
        if !value.is_empty() && !value.starts_with(['\n', '\r', '#']) {
            out.push_str(prefix);
        }
        rest = value;
    }
    out.push_str(rest);
    out
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = broker_script(&["stop", &dir.path().display().to_string()]);
        }
    }
}

/// The `scripts/broker.sh start` mode: the broker kind, and for tansu its storage.
fn start_mode(s: Storage) -> &'static str {
    match (broker_kind(), s) {
        (BrokerKind::Kafka, _) => "kafka",
        (BrokerKind::Tansu, Storage::Memory) => "memory",
        (BrokerKind::Tansu, Storage::Sqlite) => "sqlite",
    }
}

fn broker_script(args: &[&str]) -> String {
    broker_script_env(args, &[])
}

fn broker_script_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new(root().join("scripts/broker.sh"))
        .args(args)
        .envs(env.iter().copied())
        // The broker stops when this test binary exits, even if it never drops it (the shared
        // one) or is killed.
        .env("SAGAFLOW_BROKER_OWNER", std::process::id().to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/broker.sh");
    assert!(output.status.success(), "scripts/broker.sh {args:?} failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs `scripts/<script>` with `args` and `env`, and returns what it printed on stdout; fails
/// the test with its stderr when it fails.
pub fn run_script<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    script: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> String {
    let out = Command::new(root().join("scripts").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `sagaflow` binary (`SAGAFLOW_BIN`, or the workspace's debug build).
pub fn sagaflow_bin() -> PathBuf {
    let path = std::env::var("SAGAFLOW_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target/debug/sagaflow"));
    assert!(
        path.exists(),
        "{} does not exist: run `cargo build -p sagaflow` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A `sagaflow` child process; killed on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    /// The last lines it wrote to stderr (they go to the test output too).
    stderr: Arc<Mutex<VecDeque<String>>>,
    name: String,
}

impl Proc {
    /// Runs `sagaflow args...`, with stderr going to the test output (and kept, see
    /// [`Proc::stderr_text`]).
    pub fn spawn(name: &str, args: &[String]) -> Self {
        Self::spawn_env(name, args, &[])
    }

    /// Runs `sagaflow args...` with `env` added to its environment (over the defaults).
    pub fn spawn_env(name: &str, args: &[String], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(sagaflow_bin())
            .args(args)
            .env(
                "SAGAFLOW_LOG",
                std::env::var("SAGAFLOW_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // One local broker: topics the processes create get one replica.
            .env("SAGAFLOW_REPLICATION_FACTOR", "1")
            .env("SAGAFLOW_MIN_INSYNC_REPLICAS", "1")
            // tansu's group coordinator needs the engine's rejoin rules; Kafka runs without.
            .env(
                "SAGAFLOW_TANSU_WORKAROUNDS",
                (broker_kind() == BrokerKind::Tansu).to_string(),
            )
            // tansu's fetches wait the full fetch.wait.max.ms, even when records are ready
            // (unless the test run sets it).
            .envs(
                (broker_kind() == BrokerKind::Tansu
                    && std::env::var_os("SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS").is_none())
                .then_some(("SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS", "2")),
            )
            // Last, so that a test can override the defaults above (its own log level, say).
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sagaflow {name}: {e}"));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr.clone();
        let pipe = child.stderr.take().expect("piped stderr");
        let _ = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut tail = tail.lock().expect("stderr tail");
                if tail.len() == 200 {
                    let _ = tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        let _ = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            stderr,
            name: name.to_string(),
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "{}: no line starting with {prefix:?} within {timeout:?}",
                    self.name
                ),
            }
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for child")
    }

    /// Sends it `kill -<name>` (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.name);
    }

    /// The OS pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last 200 lines it wrote to stderr, once it has exited (all of them are read then).
    pub fn stderr_text(&mut self) -> String {
        let _ = self.child.wait();
        // The reader thread may still be copying the last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.stderr) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr_so_far()
    }

    /// The last 200 lines it has written to stderr so far, while it runs.
    pub fn stderr_so_far(&self) -> String {
        let tail = self.stderr.lock().expect("stderr tail");
        tail.iter().map(|l| format!("{l}\n")).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker of the test's kind, a registry of its own, and a codec for that registry: what
/// most tests start with. Bind them in this order, so that the registry stops before the broker.
pub fn broker_with_registry() -> (TestBroker, String, Proc, String, BlockingCodec) {
    let broker = Broker::for_test();
    let bootstrap = broker.bootstrap();
    let (registry, registry_url) = spawn_registry(&bootstrap);
    let codec = BlockingCodec::new(&RegistrySettings::new(registry_url.as_str())).expect("codec");
    (broker, bootstrap, registry, registry_url, codec)
}

/// A registry process.
pub fn spawn_registry(bootstrap: &str) -> (Proc, String) {
    spawn_registry_on(bootstrap, "127.0.0.1:0")
}

/// A registry process listening on `listen` (port 0 picks one).
pub fn spawn_registry_on(bootstrap: &str, listen: &str) -> (Proc, String) {
    let p = Proc::spawn(
        "registry",
        &[
            "registry".into(),
            "--bootstrap".into(),
            bootstrap.into(),
            "--listen".into(),
            listen.into(),
            // Its own store: registries of tests that share a broker never see each other. A
            // registry restarted on the same address finds its schemas again.
            "--topic".into(),
            match listen.rsplit_once(':') {
                Some((_, port)) if port != "0" => format!("_schemas-{port}"),
                _ => format!("_schemas-{:08x}", rand::random::<u32>()),
            },
        ],
    );
    let url = p.wait_line("registry:", Duration::from_secs(60));
    (p, url)
}

/// A loopback port that was free a moment ago, and never the same twice in one test binary.
///
/// Tests stop a broker, a registry or PostgreSQL and start it again on its port, so the port
/// must stay free meanwhile. The kernel takes the local ports of outgoing connections, and
/// `bind` to port 0, from its ephemeral range (`ip_local_port_range`), so the port is picked at
/// random below that range (as `scripts/lib.sh` does for the scripts' servers).
pub fn free_port() -> u16 {
    const FLOOR: u16 = 10_000;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().expect("ports lock");
    let bindable = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    if ephemeral_low > FLOOR + 1_000 {
        for _ in 0..1_000 {
            let port = rand::random_range(FLOOR..ephemeral_low);
            if !given.contains(&port) && bindable(port) {
                let _ = given.insert(port);
                return port;
            }
        }
    }
    // A range with no room below it: any free port, as before.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let _ = given.insert(port);
    port
}

/// Settings of an engine process.
#[derive(Debug, Clone)]
pub struct EngineOpts {
    /// Broker.
    pub bootstrap: String,
    /// Registry URL.
    pub registry_url: String,
    /// Engine group.
    pub group: String,
    /// RocksDB directory.
    pub state_dir: PathBuf,
    /// Definitions directory.
    pub definitions: PathBuf,
    /// Topic partitions.
    pub partitions: i32,
}

impl EngineOpts {
    /// The same engine settings on another state directory (another node).
    pub fn on_state_dir(&self, dir: &TempDir) -> Self {
        Self {
            state_dir: dir.path().to_path_buf(),
            ..self.clone()
        }
    }
}

/// An engine process; returns it with its metrics URL.
pub fn spawn_engine(name: &str, o: &EngineOpts) -> (Proc, String) {
    spawn_engine_env(name, o, &[])
}

/// An engine process with `env` added to its environment; returns it with its metrics URL.
pub fn spawn_engine_env(name: &str, o: &EngineOpts, env: &[(&str, &str)]) -> (Proc, String) {
    let p = Proc::spawn_env(name, &engine_args(o), env);
    let url = p.wait_line("metrics:", Duration::from_secs(60));
    (p, url)
}

/// The `sagaflow` arguments that run an engine with `o`.
pub fn engine_args(o: &EngineOpts) -> Vec<String> {
    vec![
        "engine".into(),
        "--bootstrap".into(),
        o.bootstrap.clone(),
        "--registry-url".into(),
        o.registry_url.clone(),
        "--group".into(),
        o.group.clone(),
        "--state-dir".into(),
        o.state_dir.display().to_string(),
        "--definitions".into(),
        o.definitions.display().to_string(),
        "--partitions".into(),
        o.partitions.to_string(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
    ]
}

/// A participant process.
pub fn spawn_participant(bootstrap: &str, registry_url: &str, role: &str, extra: &[&str]) -> Proc {
    spawn_participant_env(bootstrap, registry_url, role, extra, &[])
}

/// A participant process with `env` added to its environment.
pub fn spawn_participant_env(
    bootstrap: &str,
    registry_url: &str,
    role: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let mut args: Vec<String> = vec![
        "participant".into(),
        "--bootstrap".into(),
        bootstrap.into(),
        "--registry-url".into(),
        registry_url.into(),
        "--role".into(),
        role.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = Proc::spawn_env(role, &args, env);
    let _ = p.wait_line("participant", Duration::from_secs(60));
    p
}

/// One instance of each participant of the trip saga in `space`, with no injected failures.
pub fn trip_participants(space: &Space, bootstrap: &str, registry_url: &str) -> Vec<Proc> {
    ["payment", "flight", "hotel", "notify"]
        .iter()
        .map(|role| {
            let topic = space.role_topic(role);
            spawn_participant(bootstrap, registry_url, role, &["--topic", &topic])
        })
        .collect()
}

/// Reads a counter from a Prometheus text page (`name` with its labels, e.g.
/// `sagaflow_dead_letters_total{reason="unknown-saga"}`); 0 if absent.
pub fn metric(metrics_url: &str, name: &str) -> f64 {
    let body = http_get(metrics_url);
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A plain HTTP GET over a TCP socket (no client library needed for localhost pages).
pub fn http_get(url: &str) -> String {
    http_get_status(url).1
}

/// Like [`http_get`], with the status code (0 if the response had none).
pub fn http_get_status(url: &str) -> (u16, String) {
    let (status, _, body) = http_request("GET", url, &[], None);
    (status, body)
}

/// Waits until a GET of `url` answers `status`, and returns the body; fails the test with the
/// last answer after `within`.
pub fn wait_status(url: &str, status: u16, within: Duration) -> String {
    let mut answer = (0, String::new());
    assert!(
        eventually(within, || {
            answer = http_get_status(url);
            answer.0 == status
        }),
        "{url} never answered {status}; last: {answer:?}"
    );
    answer.1
}

/// An HTTP/1.0 request over a TCP socket: the status (0 if the response had none), the
/// response's header lines and its body.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).expect("write request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

/// Runs schemathesis (`scripts/schemathesis.sh`) against the OpenAPI document at `openapi_url`,
/// with `extra` arguments (e.g. an `Authorization` header); panics with its report when it finds
/// a problem, and prints the report otherwise.
pub fn schemathesis(openapi_url: &str, extra: &[&str]) {
    let out = Command::new(root().join("scripts/schemathesis.sh"))
        .arg(openapi_url)
        .args(extra)
        .output()
        .expect("run scripts/schemathesis.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    eprintln!("{text}");
}

/// The settings every test client uses: the engine's builder, with `SAGAFLOW_KAFKA_*` applied.
pub fn kafka_settings(bootstrap: &str) -> KafkaSettings {
    kafka_settings_with(bootstrap, &[])
}

/// [`kafka_settings`] with `KEY=VALUE` overrides, as a client's `--kafka` options give them.
pub fn kafka_settings_with(bootstrap: &str, overrides: &[&str]) -> KafkaSettings {
    let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    KafkaSettings::from_env_and(bootstrap, &overrides).expect("SAGAFLOW_KAFKA_* settings")
}

/// A client config from [`kafka_settings`].
pub fn client_config(bootstrap: &str) -> ClientConfig {
    kafka_settings(bootstrap).config("test", &[])
}

/// A test's producer: it keeps the records the broker never took, so that a test can tell a
/// start it failed to deliver from one the engine lost ([`flush_delivered`]).
pub type TestProducer = ThreadedProducer<Deliveries>;

/// The producer context of [`TestProducer`].
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
            self.failed
                .lock()
                .expect("deliveries lock")
                .push(format!("{} key {key}: {e}", m.topic()));
        }
    }
}

/// A producer partitioning by key like the engine.
pub fn producer(bootstrap: &str) -> TestProducer {
    kafka_settings(bootstrap)
        .producer_config("test", 2)
        .create_with_context(Deliveries::default())
        .expect("create producer")
}

/// Waits until everything `producer` was given is delivered, and fails the test if the broker
/// refused any of it.
pub fn flush_delivered(producer: &TestProducer, within: Duration) {
    producer.flush(within).expect("flush");
    let failed = producer.context().failed.lock().expect("deliveries lock");
    assert!(
        failed.is_empty(),
        "the test's producer could not deliver {} record(s): {failed:?}",
        failed.len()
    );
}

/// Creates `topic` with `partitions` partitions (an existing one is left alone).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(kafka_settings(bootstrap).ensure_topics(
            &[TopicSpec::partitioned(topic, partitions)],
            TopicPolicy::LOCAL,
        ))
        .unwrap_or_else(|e| panic!("cannot create {topic}: {e}"));
}

/// Deletes `topic` and waits until the broker says it is gone.
pub fn delete_topic(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().expect("admin client");
    let results = runtime
        .block_on(admin.delete_topics(&[topic], &AdminOptions::new()))
        .unwrap_or_else(|e| panic!("cannot delete {topic}: {e}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("cannot delete {name}: {code}");
        }
    }
}

/// Starts a saga `id` of the linear trip (`examples/trip.yaml`, trip@1) in `group`, with a
/// small valid input: the tests that check exact event sequences use it. The parallel trip
/// (trip@2, the latest) is what [`trips::trip_start`] starts.
pub fn start_trip(codec: &BlockingCodec, bootstrap: &str, group: &str, id: &str) {
    let input = serde_json::json!({"customer": {"id": "c", "email": "e"}, "amount": 1, "currency": "EUR",
        "flight": {"number": "F", "date": "d"}, "hotel": {"id": "h", "check_in": "d", "nights": 1}});
    let p = producer(bootstrap);
    start_saga_version(codec, &p, group, "trip", Some(1), id, &input);
    flush_delivered(&p, Duration::from_secs(30));
}

/// Enqueues a start of `definition` with saga id `id` on `producer` (flush it to wait).
pub fn start_saga(
    codec: &BlockingCodec,
    producer: &TestProducer,
    group: &str,
    definition: &str,
    id: &str,
    input: &serde_json::Value,
) {
    start_saga_version(codec, producer, group, definition, None, id, input);
}

/// Enqueues a start of `definition` at `version` (`None`: the latest).
pub fn start_saga_version(
    codec: &BlockingCodec,
    producer: &TestProducer,
    group: &str,
    definition: &str,
    version: Option<i32>,
    id: &str,
    input: &serde_json::Value,
) {
    let topic = format!("{group}.starts");
    let start = sagaflow_avro::StartSaga {
        request_id: id.into(),
        saga_id: id.into(),
        definition: definition.into(),
        version,
        input_json: input.to_string(),
        requested_at: 0,
    };
    let value = codec
        .encode(sagaflow_avro::Subject::Topic(&topic), &start)
        .expect("encode");
    producer
        .send(BaseRecord::to(&topic).key(id).payload(&value))
        .map_err(|(e, _)| e)
        .expect("enqueue start");
}

/// A participant's consumer of command topic `topic`, in the group `<topic>-participant`.
pub fn command_consumer(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", format!("{topic}-participant"))
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Answers `command` on its `reply_to` topic, as a participant: with output `Ok(JSON text)`, or
/// with the error.
pub fn answer(
    codec: &BlockingCodec,
    producer: &TestProducer,
    command: &sagaflow_avro::Command,
    result: Result<String, sagaflow_avro::ReplyError>,
) {
    let reply = sagaflow_avro::Reply::answering(command, result, 0);
    let value = codec
        .encode(sagaflow_avro::Subject::Topic(&command.reply_to), &reply)
        .expect("encode reply");
    while producer
        .send(
            BaseRecord::to(&command.reply_to)
                .key(&command.saga_id)
                .payload(&value),
        )
        .is_err()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends one record and waits for it.
pub fn send(producer: &TestProducer, topic: &str, key: &str, value: &[u8]) {
    producer
        .send(BaseRecord::to(topic).key(key).payload(value))
        .map_err(|(e, _)| e)
        .expect("enqueue record");
    flush_delivered(producer, Duration::from_secs(30));
}

/// The saga states in changelog `records`, in log order: each record under a saga's own key, and
/// each entry of a batch record (`__batch/…` keys), with the batch's key. Tombstones and the
/// engine's other reserved keys are left out.
pub fn changelog_states(records: &[Record]) -> Vec<ChangelogState> {
    let mut out = Vec::new();
    for r in records {
        let (Some(key), Some(value)) = (r.key.as_deref(), r.value.as_deref()) else {
            continue;
        };
        let key = String::from_utf8_lossy(key).into_owned();
        if key.starts_with("__batch/") {
            let batch: sagaflow_avro::ChangelogBatch = sagaflow_avro::internal::decode(value)
                .expect("a changelog batch in the engine's encoding")
                .expect("a readable changelog batch");
            out.extend(batch.entries.into_iter().map(|e| ChangelogState {
                saga_id: e.saga_id,
                state: e.state,
                batch: Some(key.clone()),
                record: r.clone(),
            }));
        } else if !key.starts_with("__") {
            out.push(ChangelogState {
                saga_id: key,
                state: value.to_vec(),
                batch: None,
                record: r.clone(),
            });
        }
    }
    out
}

/// A saga state read from the changelog (`changelog_states`).
#[derive(Debug, Clone)]
pub struct ChangelogState {
    /// Saga id.
    pub saga_id: String,
    /// Wire-format `SagaState`.
    pub state: Vec<u8>,
    /// Key of the batch record that held it, if any.
    pub batch: Option<String>,
    /// The record it was read from.
    pub record: Record,
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers.
    pub headers: HashMap<String, String>,
    /// Record timestamp (create time), epoch ms.
    pub timestamp: Option<i64>,
}

/// Every record currently in `topic` (all partitions).
///
/// Reads past the high watermarks until the topic stays quiet for a moment, or for two seconds
/// at most: tansu 0.6's memory storage reports a high watermark that leaves out all but the first
/// record of a partition's last batch.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_records(
        bootstrap,
        topic,
        Duration::from_millis(500),
        Duration::from_secs(2),
    )
}

/// The records of `topic` up to the high watermarks read when it starts, and no further: a quick
/// snapshot of a topic being written to (on tansu's memory storage it may miss the rest of each
/// partition's last batch).
pub fn read_to_watermarks(bootstrap: &str, topic: &str) -> Vec<Record> {
    read_records(bootstrap, topic, Duration::ZERO, Duration::ZERO)
}

/// The low and high watermarks of `topic`'s `partition`, asking again for a minute while the
/// broker answers with a transient error (a leader moving, a dropped connection).
fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return w,
            Err(e) if Instant::now() < deadline => {
                eprintln!("watermarks of {topic}[{partition}]: {e}; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("watermarks of {topic}[{partition}]: {e:?}"),
        }
    }
}

/// Reads `topic` up to its high watermarks, then on until it has been quiet for `quiet` or
/// `longest` has passed.
fn read_records(bootstrap: &str, topic: &str, quiet: Duration, longest: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set("group.id", "sagaflow-test-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("create reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = watermarks(&consumer, topic, p.id());
            let _ = ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .expect("tpl");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut reached: BTreeMap<i32, bool> = ends.iter().map(|(p, high)| (*p, *high == 0)).collect();
    let mut last_message = Instant::now();
    let mut all_reached_at = None;
    while Instant::now() < deadline {
        if reached.values().all(|r| *r) {
            // Past the watermarks, read until quiet, but not for long: a topic still being
            // written to never goes quiet, and this is a snapshot.
            let since = *all_reached_at.get_or_insert_with(Instant::now);
            if last_message.elapsed() >= quiet || since.elapsed() >= longest {
                break;
            }
        }
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match m {
            Ok(m) => m,
            // A broker busy on a loaded runner drops connections now and then; the client
            // reconnects and fetches on, as any consumer (the engine's included) does.
            Err(e) if sagaflow_kafka::is_transient(&e) => {
                eprintln!("reading {topic}: {e}; reading on");
                continue;
            }
            Err(e) => panic!("read record: {e:?}"),
        };
        last_message = Instant::now();
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if m.offset() + 1 >= ends[&m.partition()] {
            let _ = reached.insert(m.partition(), true);
        }
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        });
    }
    assert!(
        reached.values().all(|r| *r),
        "could not read {topic} up to its high watermarks within 120 s"
    );
    out
}

/// The event log of a group, by saga id and seq; checks that redelivered copies are identical.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Events by saga and seq.
    pub sagas: BTreeMap<String, BTreeMap<i64, SagaEvent>>,
    /// Redelivered identical copies.
    pub redelivered: usize,
    /// Different events sharing a (saga, seq).
    pub conflicts: Vec<String>,
}

impl EventLog {
    /// Reads `<group>.events` now.
    pub fn read(bootstrap: &str, codec: &BlockingCodec, group: &str) -> Self {
        Self::from_records(codec, read_all(bootstrap, &format!("{group}.events")))
    }

    /// Reads `<group>.events` up to its current high watermarks: quick, and possibly short of
    /// the newest events.
    pub fn snapshot(bootstrap: &str, codec: &BlockingCodec, group: &str) -> Self {
        Self::from_records(
            codec,
            read_to_watermarks(bootstrap, &format!("{group}.events")),
        )
    }

    fn from_records(codec: &BlockingCodec, records: Vec<Record>) -> Self {
        let mut log = Self::default();
        for r in records {
            let event: SagaEvent = codec
                .decode(r.value.as_deref().expect("event value"))
                .expect("decode event");
            let saga = log.sagas.entry(event.saga_id.clone()).or_default();
            match saga.get(&event.seq) {
                Some(e) if *e == event => log.redelivered += 1,
                Some(e) => log.conflicts.push(format!(
                    "{} seq {}: {:?} vs {:?}",
                    event.saga_id, event.seq, e.event_type, event.event_type
                )),
                None => {
                    let _ = saga.insert(event.seq, event);
                }
            }
        }
        log
    }

    /// Event types of one saga in seq order.
    pub fn types(&self, saga_id: &str) -> Vec<sagaflow_avro::EventType> {
        self.sagas
            .get(saga_id)
            .map(|s| s.values().map(|e| e.event_type).collect())
            .unwrap_or_default()
    }

    /// (type, step) of one saga in seq order.
    pub fn steps(&self, saga_id: &str) -> Vec<(sagaflow_avro::EventType, Option<String>)> {
        self.sagas
            .get(saga_id)
            .map(|s| s.values().map(|e| (e.event_type, e.step.clone())).collect())
            .unwrap_or_default()
    }

    /// The sagas of `ids` without a terminal event, with their events so far (for failure
    /// messages).
    pub fn unfinished(&self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .filter(|id| {
                !self
                    .sagas
                    .get(*id)
                    .is_some_and(|s| s.values().any(|e| e.event_type.settles()))
            })
            .map(|id| format!("{id}: {:?}", self.steps(id)))
            .collect()
    }

    /// Sagas with exactly one terminal event.
    pub fn finished(&self) -> usize {
        self.sagas
            .values()
            .filter(|s| s.values().filter(|e| e.event_type.settles()).count() == 1)
            .count()
    }
}

/// Polls `f` until it returns true or `timeout` passes; returns the last result.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A unique engine group name for one test.
pub fn group(name: &str) -> String {
    format!("t-{name}-{:08x}", rand::random::<u32>())
}
