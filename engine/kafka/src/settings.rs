//! Where Kafka is and which librdkafka properties every client gets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::config::ClientConfig;
use tracing::warn;

use crate::error::{Error, Result};

/// Prefix of the environment variables that set client properties.
pub const ENV_PREFIX: &str = "SAGAFLOW_KAFKA_";

/// `fetch.wait.max.ms` of the clients on Sagaflow's hot path (the engine's input consumer, the
/// participants, the event-log readers), unless the user sets the property. A complete broker
/// answers a fetch as soon as a record arrives, so a longer wait costs no latency and saves
/// the empty fetches that otherwise keep both sides busy (at 2 ms, Apache Kafka on two cores
/// spent most of them answering). tansu 0.6 always waits the full time, so set
/// `fetch.wait.max.ms` low there (`SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS=2`, as the local scripts
/// do).
pub const FETCH_WAIT_MAX_MS: u64 = 100;

/// The `client.id` prefix of every client Sagaflow creates, unless the user's properties set
/// `client.id`, which then takes its place.
const CLIENT_ID_PREFIX: &str = "sagaflow";

/// Properties Sagaflow sets itself, with the reason a user may not override them.
///
/// Each guarantee of the engine depends on one of these: the journal's offset check needs an
/// idempotent producer with `acks=all`; offsets are stored only after a decision is journaled;
/// group ids and static member ids are derived from the engine group and the instance.
pub const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use --bootstrap or SAGAFLOW_BOOTSTRAP"),
    (
        "metadata.broker.list",
        "use --bootstrap or SAGAFLOW_BOOTSTRAP",
    ),
    (
        "group.id",
        "derived from the engine group or the participant's topic",
    ),
    ("group.instance.id", "set the engine's instance-id instead"),
    (
        "enable.idempotence",
        "the journal's chain check relies on idempotent producers",
    ),
    ("acks", "the journal and the relay need acks=all"),
    (
        "enable.auto.commit",
        "offsets are committed only after a decision is journaled",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only after a decision is journaled",
    ),
    ("transactional.id", "Sagaflow does not use transactions"),
    (
        "partitioner",
        "saga ids are partitioned with murmur2, as Java clients do",
    ),
];

/// The group settings of the engine's and the projector's consumers, whatever the user's
/// properties say. The range assignor gives partition n of every topic of a subscription to one
/// member: the engine's state of partition n covers all its input topics. Eager rebalancing
/// revokes every partition at every rebalance, which the rebalance callbacks rely on: they
/// restore or re-seek the whole assignment, and the projector drops a half-collected batch.
/// The classic protocol is the one these options belong to (KIP-848's `consumer` protocol picks
/// its assignor on the broker and always rebalances incrementally).
const EAGER_RANGE: [(&str, &str); 2] = [
    ("partition.assignment.strategy", "range"),
    ("group.protocol", "classic"),
];

/// Kafka bootstrap servers plus the user's librdkafka properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSettings {
    bootstrap: String,
    properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings for `bootstrap` with no extra properties.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            properties: BTreeMap::new(),
        }
    }

    /// Settings for `bootstrap`, with the properties of the `SAGAFLOW_KAFKA_*` environment
    /// variables and then the `KEY=VALUE` overrides (command-line options) applied.
    pub fn from_env_and(bootstrap: impl Into<String>, overrides: &[String]) -> Result<Self> {
        let mut settings = Self::new(bootstrap);
        settings.apply_env()?;
        settings.apply_overrides(overrides)?;
        Ok(settings)
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Replaces the bootstrap servers.
    pub fn set_bootstrap(&mut self, bootstrap: impl Into<String>) {
        self.bootstrap = bootstrap.into();
    }

    /// The user's properties, by name.
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// Sets one property, refusing the ones Sagaflow owns ([`RESERVED`]).
    pub fn set(&mut self, key: &str, value: &str, source_name: &str) -> Result<()> {
        let key = key.trim();
        let refuse = |reason: String| Error::Property {
            key: key.to_string(),
            source_name: source_name.to_string(),
            reason,
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(refuse(
                "not a librdkafka property name (letters, digits, '.', '_' and '-')".into(),
            ));
        }
        if let Some((_, why)) = RESERVED.iter().find(|(k, _)| *k == key) {
            return Err(refuse(format!("Sagaflow sets this itself: {why}")));
        }
        // Checked here, once, so that a typo fails at start with its source named, rather than
        // at the first client a running engine creates.
        let mut probe = ClientConfig::new();
        let _ = probe.set(key, value);
        if let Err(e) = probe.create_native_config() {
            return Err(refuse(format!("librdkafka rejects it: {e}")));
        }
        let _ = self.properties.insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// Applies a `[kafka]` table read from `file` (strings, numbers and booleans).
    pub fn apply_table(&mut self, table: &toml::Table, file: &Path) -> Result<()> {
        for (key, value) in table {
            let source_name = format!("the [kafka] table of {}", file.display());
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(Error::Property {
                        key: key.clone(),
                        source_name,
                        reason: format!(
                            "expected a string, number or boolean, got a {}; quote dotted names: \
                             \"sasl.mechanism\" = \"PLAIN\"",
                            other.type_str()
                        ),
                    })
                }
            };
            self.set(key, &text, &source_name)?;
        }
        Ok(())
    }

    /// Applies every `SAGAFLOW_KAFKA_*` environment variable.
    pub fn apply_env(&mut self) -> Result<()> {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (name, value) in vars {
            let key = env_to_property(&name[ENV_PREFIX.len()..]);
            self.set(&key, &value, &format!("environment variable {name}"))?;
        }
        Ok(())
    }

    /// Applies `KEY=VALUE` pairs given on the command line.
    pub fn apply_overrides(&mut self, pairs: &[String]) -> Result<()> {
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(Error::Property {
                    key: pair.clone(),
                    source_name: "--kafka".into(),
                    reason: "expected KEY=VALUE, e.g. --kafka security.protocol=SASL_SSL".into(),
                });
            };
            self.set(key, value, &format!("--kafka {key}=..."))?;
        }
        Ok(())
    }

    /// The `client.id` of the client named `client`: `sagaflow-<client>`, or
    /// `<client.id>-<client>` when the user's properties set `client.id`. Each client then
    /// shows under its own name where brokers name clients (quotas, request metrics and logs,
    /// `kafka-consumer-groups.sh --describe`), and one deployment's prefix still covers all of
    /// them.
    pub fn client_id(&self, client: &str) -> String {
        let prefix = self
            .properties
            .get("client.id")
            .map_or(CLIENT_ID_PREFIX, String::as_str);
        format!("{prefix}-{client}")
    }

    /// A config for the client named `client` ([`KafkaSettings::client_id`]): the bootstrap
    /// servers, then `role`'s settings, then the user's properties, which override a role's
    /// tuning but can never touch a [`RESERVED`] property.
    pub fn config(&self, client: &str, role: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        // Errors only (3): librdkafka logs a warning for every reconnect to a restarting broker,
        // and every failure that matters reaches the caller as an error anyway.
        // Reconnect within a second of a broker's return (librdkafka backs off up to 10 s by
        // default, which kept restores failing long after a broker restart). An engine has a
        // handful of clients, so the retries stay cheap for the brokers.
        let _ = config
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3")
            .set("reconnect.backoff.max.ms", "1000");
        for (key, value) in role {
            let _ = config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            let _ = config.set(key, value);
        }
        let _ = config.set("client.id", self.client_id(client));
        config
    }

    /// A consumer of a group whose members rebalance eagerly with the range assignor: `role`'s
    /// settings and the user's properties as [`KafkaSettings::config`] gives them, then
    /// `partition.assignment.strategy=range` and `group.protocol=classic`, which no property
    /// overrides. `consumer` names it in the warning logged (once per process) when the user's
    /// properties set one of those keys otherwise, as a `SAGAFLOW_KAFKA_*` variable meant for
    /// the participants' workers would.
    pub fn eager_range_config(
        &self,
        client: &str,
        role: &[(&str, &str)],
        consumer: &str,
    ) -> ClientConfig {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let mut config = self.config(client, role);
        let mut ignored = Vec::new();
        for (key, value) in EAGER_RANGE {
            if let Some(theirs) = self
                .properties
                .get(key)
                .filter(|v| !v.eq_ignore_ascii_case(value))
            {
                ignored.push(format!("{key}={theirs} (uses {value})"));
            }
            let _ = config.set(key, value);
        }
        if !ignored.is_empty() && !WARNED.swap(true, Ordering::Relaxed) {
            let ignored = ignored.join(", ");
            warn!(
                "the {consumer} ignores {ignored} from the Kafka client settings: the engine's group and the projectors' group rebalance eagerly with the range assignor on the classic protocol (partition n of every engine input topic on one engine, every partition revoked at a rebalance). These keys are for participants' workers; leave them out of the engine's and the projector's settings (the [kafka] table, SAGAFLOW_KAFKA_* variables, --kafka options) to silence this"
            );
        }
        config
    }

    /// An idempotent producer (`acks=all`): retries keep per-partition order and never
    /// duplicate within one producer session.
    pub fn producer_config(&self, client: &str, linger_ms: u32) -> ClientConfig {
        let linger = linger_ms.to_string();
        self.producer(client, &[("linger.ms", &linger)])
    }

    /// A producer on a saga's path (the journal, the relay, starts sent by the CLI and the
    /// benchmark; participants' replies through [`KafkaSettings::reply_producer_config`]):
    /// [`KafkaSettings::producer_config`] with no linger and one request in flight per broker
    /// connection. A record then goes out at once when no request is out, and the records that
    /// come while one is out go together in the next: batches grow
    /// with load and cost no wait without it, as Nagle's algorithm does. A fixed linger waits
    /// even when idle, once per broker leg of every step (on Apache Kafka at a constant 50
    /// sagas/s, 4-step sagas took 42 / 58 ms at p50 / p99 with lingers of 1 and 2 ms, and
    /// 17 / 30 ms with these settings); no linger with five requests in flight sends many small
    /// requests under load, which cost the broker enough that the same machine fell behind at
    /// 600 sagas/s.
    pub fn hot_path_producer_config(&self, client: &str) -> ClientConfig {
        self.producer(
            client,
            &[
                ("linger.ms", "0"),
                ("max.in.flight.requests.per.connection", "1"),
            ],
        )
    }

    /// A participant's reply producer: [`KafkaSettings::hot_path_producer_config`] without
    /// idempotence, which a reply does not need: one request in flight keeps a partition's
    /// replies in order, and the engine ignores a reply it has already applied (so a copy that
    /// a produce retry writes only counts in `sagaflow_inputs_ignored_total`).
    ///
    /// With idempotence, librdkafka 2.12 sends nothing more to a partition while five of its
    /// *messages* are in flight (it holds them to a limit of five *requests*), and its broker
    /// thread polls in a loop, at a full core, until they are acknowledged. On a busy host that
    /// delays the acknowledgement it waits for: in `sagaflow bench` at half load, two
    /// participants' reply producers spun so for 2.5 s, and sagas waited up to 4 s.
    pub fn reply_producer_config(&self, client: &str) -> ClientConfig {
        let mut config = self.hot_path_producer_config(client);
        let _ = config.set("enable.idempotence", "false");
        config
    }

    /// An idempotent producer with `tuning`, which the user's properties override.
    fn producer(&self, client: &str, tuning: &[(&str, &str)]) -> ClientConfig {
        let mut role = vec![("compression.type", "none")];
        role.extend_from_slice(tuning);
        let mut config = self.config(client, &role);
        let _ = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random");
        config
    }
}

/// `SASL_MECHANISM` → `sasl.mechanism`; `__` → `_`; `___` → `-`.
fn env_to_property(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.extend(c.to_lowercase());
            continue;
        }
        let mut run = 1;
        while chars.peek() == Some(&'_') {
            let _ = chars.next();
            run += 1;
        }
        out.push_str(match run {
            1 => ".",
            2 => "_",
            _ => "-",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_like_confluent_images() {
        assert_eq!(env_to_property("SASL_MECHANISM"), "sasl.mechanism");
        assert_eq!(env_to_property("LOG__LEVEL"), "log_level");
        assert_eq!(
            env_to_property("SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"),
            "ssl.endpoint.identification.algorithm"
        );
        assert_eq!(env_to_property("CLIENT___ID"), "client-id");
    }

    #[test]
    fn reserved_properties_are_refused_with_the_reason() {
        let mut s = KafkaSettings::new("b:9092");
        let err = s.set("acks", "1", "test").unwrap_err().to_string();
        assert!(err.contains("acks=all"), "{err}");
        let err = s.set("group.id", "x", "test").unwrap_err().to_string();
        assert!(err.contains("derived"), "{err}");
    }

    #[test]
    fn unknown_properties_fail_with_their_source() {
        let mut s = KafkaSettings::new("b:9092");
        let err = s
            .set("sasl.mechansim", "PLAIN", "the [kafka] table of x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sasl.mechansim"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
    }

    #[test]
    fn user_properties_override_role_tuning_but_not_reserved_ones() {
        let mut s = KafkaSettings::new("b:9092");
        s.set("linger.ms", "20", "test").unwrap();
        s.set("security.protocol", "SASL_PLAINTEXT", "test")
            .unwrap();
        let c = s.producer_config("t", 2);
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("broker.address.family"), None, "nothing forces IPv4");
    }

    #[test]
    fn hot_path_producers_send_at_once_one_request_at_a_time_unless_the_user_says_otherwise() {
        let mut s = KafkaSettings::new("b:9092");
        let c = s.hot_path_producer_config("t");
        assert_eq!(c.get("linger.ms"), Some("0"));
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        s.set("linger.ms", "5", "test").unwrap();
        assert_eq!(s.hot_path_producer_config("t").get("linger.ms"), Some("5"));
    }

    #[test]
    fn reply_producers_are_hot_path_producers_without_idempotence() {
        let c = KafkaSettings::new("b:9092").reply_producer_config("t");
        assert_eq!(c.get("enable.idempotence"), Some("false"));
        assert_eq!(c.get("linger.ms"), Some("0"));
        // One request in flight is what keeps a partition's replies in order without it.
        assert_eq!(c.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn eager_range_groups_keep_their_assignor_and_protocol_whatever_the_user_sets() {
        let mut s = KafkaSettings::new("b:9092");
        s.set(
            "partition.assignment.strategy",
            "cooperative-sticky",
            "test",
        )
        .unwrap();
        s.set("group.protocol", "consumer", "test").unwrap();
        s.set("fetch.wait.max.ms", "7", "test").unwrap();
        let mut c = s.eager_range_config(
            "t",
            &[("session.timeout.ms", "10000"), ("fetch.wait.max.ms", "50")],
            "engine",
        );
        assert_eq!(c.get("partition.assignment.strategy"), Some("range"));
        assert_eq!(c.get("group.protocol"), Some("classic"));
        assert_eq!(c.get("session.timeout.ms"), Some("10000"));
        assert_eq!(
            c.get("fetch.wait.max.ms"),
            Some("7"),
            "other properties apply"
        );
        // librdkafka takes the combination: with group.protocol=consumer it refuses a
        // session.timeout.ms or an assignor set on the client.
        let _ = c.set("group.id", "g");
        let created: rdkafka::error::KafkaResult<rdkafka::consumer::BaseConsumer> = c.create();
        assert!(created.is_ok(), "{:?}", created.err());
        // Everything else takes the user's.
        assert_eq!(
            s.config("t", &[]).get("partition.assignment.strategy"),
            Some("cooperative-sticky")
        );
    }

    #[test]
    fn each_client_is_named_under_the_users_client_id_or_sagaflow() {
        let mut s = KafkaSettings::new("b:9092");
        assert_eq!(
            s.hot_path_producer_config("engine-journal")
                .get("client.id"),
            Some("sagaflow-engine-journal")
        );
        s.set("client.id", "payments", "test").unwrap();
        assert_eq!(
            s.config("registry", &[("client.id", "role")])
                .get("client.id"),
            Some("payments-registry"),
            "the user's client.id is the prefix, whatever a role says"
        );
        assert_eq!(
            s.eager_range_config("engine-input", &[], "engine")
                .get("client.id"),
            Some("payments-engine-input")
        );
    }

    #[test]
    fn overrides_need_key_equals_value() {
        let mut s = KafkaSettings::new("b:9092");
        let err = s
            .apply_overrides(&["client.id".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
        s.apply_overrides(&["client.id=a=b".into()]).unwrap();
        assert_eq!(s.properties()["client.id"], "a=b");
    }

    #[test]
    fn tables_take_scalars_and_refuse_nested_tables() {
        let table: toml::Table =
            "\"socket.keepalive.enable\" = true\n\"message.max.bytes\" = 2000000\n"
                .parse()
                .unwrap();
        let mut s = KafkaSettings::new("b:9092");
        s.apply_table(&table, Path::new("engine.toml")).unwrap();
        assert_eq!(s.properties()["message.max.bytes"], "2000000");
        assert_eq!(s.properties()["socket.keepalive.enable"], "true");
        // `sasl.mechanism = ...` unquoted is a nested table in TOML.
        let nested: toml::Table = "sasl.mechanism = \"PLAIN\"\n".parse().unwrap();
        let err = s
            .apply_table(&nested, Path::new("engine.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("quote dotted names") && err.contains("engine.toml"),
            "{err}"
        );
    }
}
