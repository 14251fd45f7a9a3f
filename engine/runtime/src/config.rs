//! Layered engine configuration: built-in defaults (`default.toml`), a TOML file, environment
//! variables `SAGAFLOW_*`, then explicit overrides (command-line flags), then [`EngineConfig::validate`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use sagaflow_avro::RegistrySettings;
use sagaflow_definition::did_you_mean;
use sagaflow_kafka::{KafkaSettings, TopicPolicy};
use serde::Deserialize;

use crate::error::{Error, Result};

const DEFAULTS: &str = include_str!("default.toml");

/// Engine keys that existed once, with what to set instead: an old config file or environment
/// gets told, rather than refused as unknown or silently ignored.
const REMOVED_KEYS: &[(&str, &str)] = &[(
    "fetch-wait-max-ms",
    "the fetch wait is the consumer's own property now: set `\"fetch.wait.max.ms\" = N` under [kafka] or SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS=N (the default is 100; tansu wants 2)",
)];

/// The environment variable of engine key `key`: `SAGAFLOW_` and the key in upper snake case.
fn env_var(key: &str) -> String {
    format!("SAGAFLOW_{}", key.to_uppercase().replace('-', "_"))
}

/// Engine configuration. Field docs are in `default.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EngineConfig {
    /// Kafka bootstrap servers (the `bootstrap` key) and the `[kafka]` client properties.
    #[serde(skip)]
    pub kafka: KafkaSettings,
    /// Schema Registry URL.
    pub registry_url: String,
    /// Schema Registry basic auth, `user:password`; empty for none.
    pub registry_basic_auth: String,
    /// Schema Registry bearer token; empty for none.
    pub registry_bearer_token: String,
    /// PEM file of CA certificates for the Schema Registry; empty for the system's only.
    pub registry_ca_file: String,
    /// Engine group id and topic prefix.
    pub group: String,
    /// Partitions of engine topics.
    pub partitions: i32,
    /// RocksDB directory.
    pub state_dir: PathBuf,
    /// Definitions directory.
    pub definitions_dir: PathBuf,
    /// Most decisions per journal record.
    pub max_batch_decisions: usize,
    /// Most bytes per journal record.
    pub max_batch_bytes: usize,
    /// Changelog checkpoint interval.
    pub checkpoint_interval_ms: u64,
    /// Whether changelog records may hold many sagas' states.
    pub changelog_batches: bool,
    /// HTTP listen address, empty to disable.
    pub http_listen: String,
    /// OTLP/HTTP collector for spans, empty for none.
    pub otlp_endpoint: String,
    /// Whether the rejoin-when-* rules (tansu 0.6 workarounds) apply.
    pub tansu_workarounds: bool,
    /// Rejoin delay after an empty assignment, 0 to disable.
    pub rejoin_when_unassigned_ms: u64,
    /// Static group member id; empty for dynamic membership.
    pub instance_id: String,
    /// Least time between rejoins after a same-set reassignment, 0 to disable.
    pub rejoin_when_same_ms: u64,
    /// Rejoin after input waits this long on a partition nobody journals, 0 to disable.
    pub rejoin_when_orphaned_ms: u64,
    /// How long a finished saga keeps its whole state.
    pub finished_retention_ms: i64,
    /// How long after its end a saga id is still recognised.
    pub dedupe_window_ms: i64,
    /// Most bytes of one saga's state.
    pub max_state_bytes: usize,
    /// Whether a finished saga's id may start a new saga after the window.
    pub id_reuse: String,
    /// Consumer session timeout.
    pub session_timeout_ms: u64,
    /// Whether to keep standby copies of the partitions other engines own.
    pub standby: bool,
    /// Engines that keep a copy of each partition; 0 for every engine but its owner.
    pub standby_copies: u32,
    /// Removes a static member whose partitions have had no record this long; 0 never.
    pub evict_silent_peers_ms: u64,
    /// How far ahead timers are kept in memory.
    pub timer_horizon_ms: i64,
    /// Most committed saga states each partition keeps decoded in memory.
    pub state_cache_sagas: usize,
    /// How early delayed deliveries are decided (and held by the relay until due).
    pub timer_lookahead_ms: i64,
    /// Default time to live of buffered signals.
    pub signal_ttl_ms: i64,
    /// Replication factor of the topics the engine creates.
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics the engine creates.
    pub min_insync_replicas: i32,
}

impl EngineConfig {
    /// Defaults, overlaid by `file` (if any) and the environment (`SAGAFLOW_<KEY>` for keys,
    /// `SAGAFLOW_KAFKA_*` for client properties).
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut kafka_table = toml::Table::new();
        let mut table: toml::Table = DEFAULTS
            .parse()
            .map_err(|e| Error::Config(format!("built-in defaults: {e}")))?;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                action: format!("reading config file {}", file.display()),
                source,
            })?;
            let overlay: toml::Table = text
                .parse()
                .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
            for (key, value) in overlay {
                if key == "kafka" {
                    kafka_table = match value {
                        toml::Value::Table(t) => t,
                        other => {
                            return Err(Error::Config(format!(
                                "{}: `kafka` must be a table of librdkafka properties, like [kafka] \"security.protocol\" = \"SASL_SSL\", got a {}",
                                file.display(),
                                other.type_str()
                            )))
                        }
                    };
                    continue;
                }
                if let Some((_, instead)) = REMOVED_KEYS.iter().find(|(k, _)| *k == key) {
                    return Err(Error::Config(format!(
                        "{}: key `{key}` was removed; {instead}",
                        file.display()
                    )));
                }
                if !table.contains_key(&key) {
                    let keys: Vec<&str> = table.keys().map(String::as_str).collect();
                    let hint = match did_you_mean(&key, &keys) {
                        Some(near) => format!("did you mean `{near}`? Otherwise see"),
                        None => "see".into(),
                    };
                    return Err(Error::Config(format!(
                        "{}: unknown key `{key}`; {hint} the keys of engine/runtime/src/default.toml",
                        file.display()
                    )));
                }
                let _ = table.insert(key, value);
            }
        }
        for (key, instead) in REMOVED_KEYS {
            let var = env_var(key);
            if std::env::var_os(&var).is_some() {
                return Err(Error::Config(format!(
                    "{var} is set, but engine key `{key}` was removed; {instead}"
                )));
            }
        }
        let keys: Vec<String> = table.keys().cloned().collect();
        misspelt_env(
            std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
            &keys,
        )?;
        for key in keys {
            let var = env_var(&key);
            if let Ok(raw) = std::env::var(&var) {
                let value = typed_like(&table[&key], &raw)
                    .map_err(|e| Error::Config(format!("{var}={raw:?}: {e}")))?;
                let _ = table.insert(key, value);
            }
        }
        let bootstrap = match table.remove("bootstrap") {
            Some(toml::Value::String(b)) => b,
            other => {
                return Err(Error::Config(format!(
                    "bootstrap must be a string, got {other:?}"
                )))
            }
        };
        let mut config: EngineConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e| Error::Config(e.to_string()))?;
        config.kafka = KafkaSettings::new(bootstrap);
        if let Some(file) = file {
            config.kafka.apply_table(&kafka_table, file)?;
        }
        config.kafka.apply_env()?;
        Ok(config)
    }

    /// How to reach the Schema Registry.
    pub fn registry(&self) -> RegistrySettings {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        RegistrySettings {
            url: self.registry_url.clone(),
            basic_auth: non_empty(&self.registry_basic_auth),
            bearer_token: non_empty(&self.registry_bearer_token),
            ca_file: non_empty(&self.registry_ca_file).map(PathBuf::from),
        }
    }

    /// Replication of the topics the engine creates.
    pub fn topic_policy(&self) -> TopicPolicy {
        TopicPolicy {
            replication_factor: self.replication_factor,
            min_insync_replicas: self.min_insync_replicas,
        }
    }

    /// Retention of finished sagas and the id-reuse policy.
    pub fn retention(&self) -> Result<sagaflow_core::Retention> {
        let reuse = sagaflow_core::IdReuse::parse(&self.id_reuse).ok_or_else(|| {
            Error::Config(format!(
                "id-reuse {:?} is not a policy; use \"after-window\", \"compensated-only\" or \"never\"",
                self.id_reuse
            ))
        })?;
        if self.finished_retention_ms < 0 || self.dedupe_window_ms < self.finished_retention_ms {
            return Err(Error::Config(format!(
                "finished-retention-ms must be at least 0 and dedupe-window-ms at least finished-retention-ms, got {} and {}",
                self.finished_retention_ms, self.dedupe_window_ms
            )));
        }
        Ok(sagaflow_core::Retention {
            finished_ms: self.finished_retention_ms,
            dedupe_ms: self.dedupe_window_ms,
            reuse,
        })
    }

    /// The rejoin-when-* delays in force, in milliseconds (unassigned, same, orphaned): the
    /// configured ones with `tansu-workarounds` on, all zero (off) without.
    pub(crate) fn rejoin_rules_ms(&self) -> [u64; 3] {
        if self.tansu_workarounds {
            [
                self.rejoin_when_unassigned_ms,
                self.rejoin_when_same_ms,
                self.rejoin_when_orphaned_ms,
            ]
        } else {
            [0; 3]
        }
    }

    /// How often owners write heartbeats (see `liveness`): often enough for a silent peer to be
    /// told apart within `evict-silent-peers-ms`, every 5 s for the tansu orphan rule alone;
    /// `None` when nothing reads them.
    pub(crate) fn heartbeat_every(&self) -> Option<Duration> {
        let orphans = self.rejoin_rules_ms()[2] > 0;
        match self.evict_silent_peers_ms {
            0 if orphans => Some(crate::liveness::ORPHAN_HEARTBEAT_EVERY),
            0 => None,
            ms => Some(Duration::from_millis(ms / 4).min(crate::liveness::ORPHAN_HEARTBEAT_EVERY)),
        }
    }

    /// Checks invariants the engine relies on.
    pub fn validate(&self) -> Result<()> {
        self.registry().validate()?;
        if self.kafka.bootstrap().trim().is_empty() {
            return Err(Error::Config(
                "bootstrap is empty; set it to host:port of one or more brokers (--bootstrap, SAGAFLOW_BOOTSTRAP)".into(),
            ));
        }
        if self.replication_factor < 1
            || !(1..=self.replication_factor).contains(&self.min_insync_replicas)
        {
            return Err(Error::Config(format!(
                "replication-factor must be at least 1 and min-insync-replicas between 1 and it, got {} and {}",
                self.replication_factor, self.min_insync_replicas
            )));
        }
        if self.partitions < 1 {
            return Err(Error::Config(format!(
                "partitions must be at least 1, got {}",
                self.partitions
            )));
        }
        if self.group.is_empty()
            || !self
                .group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Error::Config(format!(
                "group {:?} must be non-empty and use only letters, digits, '.', '_' and '-' (it prefixes topic names)",
                self.group
            )));
        }
        if self.timer_horizon_ms < 100
            || self.signal_ttl_ms < 0
            || !(0..=self.timer_horizon_ms).contains(&self.timer_lookahead_ms)
        {
            return Err(Error::Config(
                "timer-horizon-ms must be at least 100, signal-ttl-ms at least 0, and timer-lookahead-ms between 0 and timer-horizon-ms".into(),
            ));
        }
        self.retention()?;
        if self.state_cache_sagas == 0 {
            return Err(Error::Config(
                "state-cache-sagas must be at least 1 (it is per partition; 10000 by default)"
                    .into(),
            ));
        }
        if self.checkpoint_interval_ms == 0 {
            return Err(Error::Config(
                "checkpoint-interval-ms must be at least 1 (1000 by default): it is how often the changelog is written".into(),
            ));
        }
        if self.max_batch_decisions == 0 || self.max_batch_bytes < 10_000 {
            return Err(Error::Config(
                "max-batch-decisions must be > 0 and max-batch-bytes at least 10000".into(),
            ));
        }
        if self.standby_copies > 0 && !self.standby {
            return Err(Error::Config(format!(
                "standby-copies = {} needs standby = true: it says how many engines keep a copy of each partition. Set SAGAFLOW_STANDBY=true, or standby-copies = 0",
                self.standby_copies
            )));
        }
        if self.standby_copies > 0 && self.kafka.properties().contains_key("client.rack") {
            return Err(Error::Config(format!(
                "standby-copies = {} places copies by the range assignor's plain rule, but with client.rack set the assignor also weighs racks, and partitions would move elsewhere. Set standby-copies = 0 (a copy on every engine), or remove client.rack from the engines' Kafka settings",
                self.standby_copies
            )));
        }
        self.check_eviction()
    }

    /// Evictions read other partitions' heartbeats through the standby copies, and remove a
    /// static member by its instance-id, which the heartbeats name.
    fn check_eviction(&self) -> Result<()> {
        let ms = self.evict_silent_peers_ms;
        if ms == 0 {
            return Ok(());
        }
        if !self.standby || self.instance_id.trim().is_empty() {
            return Err(Error::Config(format!(
                "evict-silent-peers-ms = {ms} needs standby = true and an instance-id on this engine (every engine of the group, each with its own id): the standby copies are where the other engines' heartbeats are read, and a silent engine is removed by its instance-id. Set SAGAFLOW_STANDBY=true and SAGAFLOW_INSTANCE_ID, or evict-silent-peers-ms = 0"
            )));
        }
        if self.tansu_workarounds {
            return Err(Error::Config(format!(
                "evict-silent-peers-ms = {ms} is for Apache Kafka (static membership), not with tansu-workarounds: tansu 0.6 keeps a stopped static member's partitions from the other engines. Set evict-silent-peers-ms = 0 on tansu"
            )));
        }
        if ms < 1000 || ms >= self.session_timeout_ms {
            return Err(Error::Config(format!(
                "evict-silent-peers-ms = {ms} must be at least 1000 and below session-timeout-ms ({}): below 1 s a busy machine looks silent, and at or above the session the broker drops the member first",
                self.session_timeout_ms
            )));
        }
        Ok(())
    }
}

/// Refuses a `SAGAFLOW_` variable a letter or two away from an engine key's (`SAGAFLOW_PARTITONS`):
/// the engine reads only the variables of its keys, so a typo would leave the key at its default
/// without a word, as an unknown key in the config file would not.
fn misspelt_env(vars: impl IntoIterator<Item = String>, keys: &[String]) -> Result<()> {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for var in vars {
        let Some(rest) = var.strip_prefix("SAGAFLOW_") else {
            continue;
        };
        // Client properties have their own check (KafkaSettings::apply_env).
        if rest.starts_with("KAFKA_") || keys.iter().any(|k| env_var(k) == var) {
            continue;
        }
        // What Kubernetes sets for a Service named `sagaflow-<name>` in the namespace
        // (`SAGAFLOW_REGISTRY_PORT`, `..._SERVICE_HOST`, `..._PORT_8081_TCP_ADDR`), as Docker
        // links do: nobody's typo.
        if rest == "PORT"
            || rest.ends_with("_PORT")
            || rest.contains("_PORT_")
            || rest.starts_with("SERVICE_")
            || rest.contains("_SERVICE_")
        {
            continue;
        }
        let like_a_key = rest.to_lowercase().replace('_', "-");
        if let Some(near) = did_you_mean(&like_a_key, &keys) {
            return Err(Error::Config(format!(
                "{var} is set, but the engine has no key `{like_a_key}`, so it would be ignored; did you mean {} (key `{near}`)? Rename or unset it",
                env_var(near)
            )));
        }
    }
    Ok(())
}

/// Parses an environment value with the type of the default it replaces.
fn typed_like(default: &toml::Value, raw: &str) -> std::result::Result<toml::Value, String> {
    Ok(match default {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.parse().map_err(|_| "expected an integer".to_string())?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.parse()
                .map_err(|_| "expected true or false".to_string())?,
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_a_letter_or_two_from_a_key_is_refused_and_the_others_are_not() {
        let keys: Vec<String> = toml::from_str::<toml::Table>(DEFAULTS)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let check = |var: &str| misspelt_env([var.to_string()], &keys);
        let err = check("SAGAFLOW_PARTITONS").unwrap_err().to_string();
        assert!(err.contains("did you mean SAGAFLOW_PARTITIONS"), "{err}");
        let err = check("SAGAFLOW_STANDBY_COPYS").unwrap_err().to_string();
        assert!(err.contains("SAGAFLOW_STANDBY_COPIES"), "{err}");
        // The keys' own variables, client properties, and every other variable Sagaflow's
        // commands, scripts and chart read, which an engine's environment may share.
        let others = [
            "SAGAFLOW_PARTITIONS",
            "SAGAFLOW_STANDBY",
            "SAGAFLOW_KAFKA_SASL_MECHANISM",
            "SAGAFLOW_CONFIG",
            "SAGAFLOW_LOG",
            "SAGAFLOW_FAILPOINTS",
            "SAGAFLOW_CACHE",
            "SAGAFLOW_TEST_BROKER",
            "SAGAFLOW_TEST_BROKERS",
            "SAGAFLOW_BIN",
            "SAGAFLOW_BINARY",
            "SAGAFLOW_DATABASE_URL",
            "SAGAFLOW_QUERY_URL",
            "SAGAFLOW_ADMIN_URL",
            "SAGAFLOW_ADMIN_LISTEN",
            "SAGAFLOW_ADMIN_TOKEN",
            "SAGAFLOW_ADMIN_AUTH_FILE",
            "SAGAFLOW_ACTOR",
            "SAGAFLOW_PROJECTIONS_SCHEMA",
            "SAGAFLOW_PROJECTIONS_HTTP_LISTEN",
            "SAGAFLOW_PROJECTIONS_CONSUMER_GROUP",
            "SAGAFLOW_EVENTS_RETENTION_DAYS",
            "SAGAFLOW_BROKER_OWNER",
            "SAGAFLOW_POSTGRES_OWNER",
            "SAGAFLOW_CONNECT_OWNER",
            "SAGAFLOW_UI_URL",
            "SAGAFLOW_UI_SAGA",
            "SAGAFLOW_UI_PARTICIPANT",
            "SAGAFLOW_UI_VIEWER_TOKEN",
            "SAGAFLOW_UI_OPERATOR_TOKEN",
            "SAGAFLOW_UI_SCREENSHOTS",
            "PATH",
            "RUST_LOG",
            // Kubernetes service links of a Service named sagaflow-registry.
            "SAGAFLOW_REGISTRY_PORT",
            "SAGAFLOW_REGISTRY_SERVICE_HOST",
            "SAGAFLOW_REGISTRY_SERVICE_PORT",
            "SAGAFLOW_REGISTRY_PORT_8081_TCP_ADDR",
        ];
        for var in others {
            check(var).unwrap_or_else(|e| panic!("{var}: {e}"));
        }
    }

    #[test]
    fn a_checkpoint_interval_of_0_is_refused() {
        let mut config = EngineConfig::load(None).unwrap();
        config.checkpoint_interval_ms = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("checkpoint-interval-ms must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn defaults_load_and_validate() {
        let config = EngineConfig::load(None).unwrap();
        config.validate().unwrap();
        assert_eq!(config.group, "sagaflow");
    }

    #[test]
    fn the_rejoin_rules_apply_only_with_the_tansu_workarounds() {
        let mut config = EngineConfig::load(None).unwrap();
        // The built-in default suits a broker with a complete group coordinator.
        assert!(!config.tansu_workarounds);
        assert_eq!(config.rejoin_rules_ms(), [0, 0, 0]);
        config.tansu_workarounds = true;
        assert_eq!(config.rejoin_rules_ms(), [10_000, 30_000, 20_000]);
    }

    #[test]
    fn evictions_need_standby_copies_an_instance_id_and_a_wait_within_the_session() {
        let mut config = EngineConfig::load(None).unwrap();
        assert_eq!(config.heartbeat_every(), None);
        config.evict_silent_peers_ms = 2000;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("needs standby = true and an instance-id"),
            "{err}"
        );
        config.standby = true;
        config.instance_id = "engine-0".into();
        config.validate().unwrap();
        assert_eq!(config.heartbeat_every(), Some(Duration::from_millis(500)));
        config.evict_silent_peers_ms = config.session_timeout_ms;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("below session-timeout-ms (10000)"), "{err}");
        config.evict_silent_peers_ms = 999;
        assert!(config.validate().is_err());
        config.evict_silent_peers_ms = 2000;
        config.tansu_workarounds = true;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("not with tansu-workarounds"), "{err}");
        // The tansu orphan rule alone reads heartbeats every 5 s.
        config.evict_silent_peers_ms = 0;
        assert_eq!(config.heartbeat_every(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn a_standby_count_needs_standby_copies_on_and_the_plain_range_rule() {
        let mut config = EngineConfig::load(None).unwrap();
        assert_eq!(config.standby_copies, 0, "every other engine by default");
        config.standby_copies = 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("standby-copies = 1 needs standby = true"),
            "{err}"
        );
        config.standby = true;
        config.validate().unwrap();
        config.kafka.set("client.rack", "eu-1a", "test").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("with client.rack set"), "{err}");
    }

    /// The error of loading a config file holding `text`, from a directory of its own (`name`).
    fn file_error(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("sagaflow-cfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("engine.toml");
        std::fs::write(&file, text).unwrap();
        let err = EngineConfig::load(Some(&file)).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        err
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let err = file_error("unknown", "partitons = 3\n");
        assert!(err.contains("unknown key `partitons`"), "{err}");
    }

    #[test]
    fn a_removed_file_key_says_what_replaced_it() {
        let err = file_error("removed", "fetch-wait-max-ms = 2\n");
        assert!(err.contains("`fetch-wait-max-ms` was removed"), "{err}");
        assert!(err.contains("SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS"), "{err}");
    }

    #[test]
    fn retention_settings_are_checked_and_say_what_to_use() {
        let mut config = EngineConfig::load(None).unwrap();
        assert_eq!(
            config.retention().unwrap(),
            sagaflow_core::Retention::default()
        );
        config.id_reuse = "sometimes".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("\"after-window\""), "{err}");
        config.id_reuse = "never".into();
        config.dedupe_window_ms = config.finished_retention_ms - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("dedupe-window-ms at least finished-retention-ms"),
            "{err}"
        );
    }

    #[test]
    fn kafka_table_reaches_the_client_settings() {
        let dir = std::env::temp_dir().join(format!("sagaflow-cfg-k-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("engine.toml");
        std::fs::write(
            &file,
            "bootstrap = \"kafka-1:9093\"\n[kafka]\n\"security.protocol\" = \"SASL_SSL\"\nsasl.mechanism = \"PLAIN\"\n",
        )
        .unwrap();
        let err = EngineConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("quote dotted names"), "{err}");
        std::fs::write(
            &file,
            "bootstrap = \"kafka-1:9093\"\n[kafka]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"PLAIN\"\n",
        )
        .unwrap();
        let config = EngineConfig::load(Some(&file)).unwrap();
        let client = config.kafka.producer_config("test", 1);
        assert_eq!(client.get("bootstrap.servers"), Some("kafka-1:9093"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanism"), Some("PLAIN"));
        std::fs::write(&file, "[kafka]\nacks = \"1\"\n").unwrap();
        let err = EngineConfig::load(Some(&file)).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("engine.toml") && err.contains("acks"), "{err}");
    }
}
