//! Requests the engine's Kafka clients send to the brokers, read from librdkafka's statistics.
//!
//! Every request costs the broker CPU whatever it carries, and on the hot path the clients send
//! the next one as soon as the last is answered, so the request rate, more than the record rate,
//! is what a loaded broker spends its time on (README, Performance). librdkafka reports its
//! counts only when `statistics.interval.ms` is set (a Kafka client property, such as
//! `SAGAFLOW_KAFKA_STATISTICS_INTERVAL_MS=10000`); without it this stays empty.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Request type (or `role/request type`) → count.
pub(crate) type Counts = BTreeMap<String, u64>;

/// The newest statistics report of each client.
#[derive(Debug, Default)]
pub struct KafkaRequests {
    next_instance: AtomicU64,
    /// (role, client instance) → its newest report, as librdkafka wrote it. Parsed when read,
    /// on the thread that scrapes, not on the client's (the input consumer's is the engine
    /// thread). Kept per instance so that a client created anew adds to the totals instead of
    /// resetting them.
    reports: Mutex<BTreeMap<(&'static str, u64), Vec<u8>>>,
}

impl KafkaRequests {
    /// A number of its own for a new client, to record its reports under.
    pub(crate) fn instance(&self) -> u64 {
        self.next_instance.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps the newest statistics report of `instance`, the client playing `role` (`input`,
    /// `journal`, `relay`).
    pub(crate) fn record(&self, role: &'static str, instance: u64, raw: &[u8]) {
        let _ = self
            .reports
            .lock()
            .expect("requests lock")
            .insert((role, instance), raw.to_vec());
    }

    /// Requests sent so far, by `role/request type` (`relay/Produce`), over every instance.
    pub fn totals(&self) -> Counts {
        let reports = self.reports.lock().expect("requests lock").clone();
        let mut totals = Counts::new();
        for ((role, _), raw) in reports {
            for (kind, n) in requests_of(&raw) {
                *totals.entry(format!("{role}/{kind}")).or_default() += n;
            }
        }
        totals
    }

    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP sagaflow_kafka_requests_total Requests the engine's input consumer, journal producer and relay producer sent to the brokers, by Kafka request type; reported by librdkafka only when statistics.interval.ms is set.");
        let _ = writeln!(out, "# TYPE sagaflow_kafka_requests_total counter");
        for (name, n) in self.totals() {
            let (role, kind) = name.split_once('/').expect("role/request");
            let _ = writeln!(
                out,
                "sagaflow_kafka_requests_total{{client=\"{role}\",request=\"{kind}\"}} {n}"
            );
        }
    }
}

/// The requests counted in one report, by type. A report that does not parse counts nothing:
/// these are diagnostics, never worth an error.
fn requests_of(raw: &[u8]) -> Counts {
    let mut counts = Counts::new();
    let Ok(report) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return counts;
    };
    // Requests go to real and logical brokers (the group coordinator's connection is one of
    // its own); all of them reach a broker.
    let brokers = report.get("brokers").and_then(|b| b.as_object());
    for broker in brokers.into_iter().flat_map(|b| b.values()) {
        let requests = broker.get("req").and_then(|r| r.as_object());
        for (kind, n) in requests.into_iter().flatten() {
            if let Some(n) = n.as_u64().filter(|n| *n > 0) {
                *counts.entry(kind.clone()).or_default() += n;
            }
        }
    }
    counts
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
        let (first, second, journal) = (
            requests.instance(),
            requests.instance(),
            requests.instance(),
        );
        requests.record("relay", first, report("rdkafka#producer-1", 10).as_bytes());
        // A newer report of the same instance replaces its counts.
        requests.record("relay", first, report("rdkafka#producer-1", 15).as_bytes());
        // A second instance of the same role adds to them.
        requests.record("relay", second, report("rdkafka#producer-7", 4).as_bytes());
        requests.record("journal", journal, b"not json");
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
