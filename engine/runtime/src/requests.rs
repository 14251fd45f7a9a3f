//! Requests the engine's Kafka clients send to the brokers, read from librdkafka's statistics.
//!
//! Every request costs the broker CPU whatever it carries, and on the hot path the clients send
//! the next one as soon as the last is answered, so the request rate, more than the record rate,
//! is what a loaded broker spends its time on (README, Performance). librdkafka reports its
//! counts only when `statistics.interval.ms` is set (a Kafka client property, such as
//! `SAGAFLOW_KAFKA_STATISTICS_INTERVAL_MS=10000`); without it this stays empty.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Request type → count.
type Counts = BTreeMap<String, u64>;

/// The newest counts of each client, by the engine's name for it.
#[derive(Debug, Default)]
pub struct KafkaRequests {
    /// (role, librdkafka's name of the client instance) → request type → count since the
    /// instance was created. Kept per instance so that a client created anew (after a
    /// rebalance, say) adds to the totals instead of resetting them.
    seen: Mutex<BTreeMap<(&'static str, String), Counts>>,
}

impl KafkaRequests {
    /// Takes one statistics report of the client playing `role` (`input`, `journal`, `relay`).
    /// A report that does not parse is ignored: the counts are diagnostics, never worth an
    /// error on the client's thread.
    pub(crate) fn record(&self, role: &'static str, raw: &[u8]) {
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(raw) else {
            return;
        };
        let Some(name) = report.get("name").and_then(|n| n.as_str()) else {
            return;
        };
        // Requests go to real and logical brokers (the group coordinator's connection is one
        // of its own); all of them reach a broker.
        let mut counts = Counts::new();
        let brokers = report.get("brokers").and_then(|b| b.as_object());
        for broker in brokers.into_iter().flat_map(|b| b.values()) {
            let requests = broker.get("req").and_then(|r| r.as_object());
            for (kind, n) in requests.into_iter().flatten() {
                if let Some(n) = n.as_u64().filter(|n| *n > 0) {
                    *counts.entry(kind.clone()).or_default() += n;
                }
            }
        }
        let _ = self
            .seen
            .lock()
            .expect("requests lock")
            .insert((role, name.to_string()), counts);
    }

    pub(crate) fn render(&self, out: &mut String) {
        let mut totals: BTreeMap<(&'static str, &str), u64> = BTreeMap::new();
        let seen = self.seen.lock().expect("requests lock");
        for ((role, _), counts) in seen.iter() {
            for (kind, n) in counts {
                *totals.entry((role, kind.as_str())).or_default() += n;
            }
        }
        let _ = writeln!(out, "# HELP sagaflow_kafka_requests_total Requests the engine's input consumer, journal producer and relay producer sent to the brokers, by Kafka request type; reported by librdkafka only when statistics.interval.ms is set.");
        let _ = writeln!(out, "# TYPE sagaflow_kafka_requests_total counter");
        for ((role, kind), n) in totals {
            let _ = writeln!(
                out,
                "sagaflow_kafka_requests_total{{client=\"{role}\",request=\"{kind}\"}} {n}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_over_brokers_and_client_instances() {
        let requests = KafkaRequests::default();
        let report = |name: &str, produce: u64| {
            format!(
                r#"{{"name":"{name}","brokers":{{
                    "127.0.0.1:9092/1":{{"req":{{"Produce":{produce},"Metadata":2,"Fetch":0}}}},
                    "GroupCoordinator":{{"req":{{"Produce":0,"Heartbeat":3}}}}}}}}"#
            )
        };
        requests.record("relay", report("rdkafka#producer-1", 10).as_bytes());
        // A newer report of the same instance replaces its counts.
        requests.record("relay", report("rdkafka#producer-1", 15).as_bytes());
        // A second instance of the same role adds to them.
        requests.record("relay", report("rdkafka#producer-7", 4).as_bytes());
        requests.record("journal", b"not json");
        let mut out = String::new();
        requests.render(&mut out);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "sagaflow_kafka_requests_total{client=\"relay\",request=\"Heartbeat\"} 6",
                "sagaflow_kafka_requests_total{client=\"relay\",request=\"Metadata\"} 4",
                "sagaflow_kafka_requests_total{client=\"relay\",request=\"Produce\"} 19",
            ]
        );
    }
}
