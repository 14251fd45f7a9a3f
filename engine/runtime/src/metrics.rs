//! Engine counters, exposed in the Prometheus text format on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use sagaflow_kafka::hops::Histogram;

use crate::requests::KafkaRequests;
use crate::spans::Spans;
use crate::traffic::Traffic;

macro_rules! counters {
    ($($name:ident => $help:literal),* $(,)?) => {
        /// Engine counters and gauges. All fields are monotonic counters unless named `_gauge`.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $name: AtomicU64,)*
            /// Partitions owned right now.
            pub partitions_owned: AtomicI64,
            /// Other engines' partitions this engine keeps a standby copy of.
            pub standby_partitions: AtomicI64,
            /// Standby copies with a checkpoint a takeover can start from.
            pub standby_partitions_ready: AtomicI64,
            /// Changelog records the standby copies have not read yet.
            pub standby_lag_records: AtomicI64,
            /// Timers held in memory by the timer wheels right now.
            pub timers_in_memory: AtomicI64,
            /// Sum over fired timers of how late they fired, in milliseconds (exposed in
            /// seconds).
            pub timer_lateness_ms: AtomicU64,
            /// Ignored inputs by reason.
            ignored: Mutex<Vec<(&'static str, u64)>>,
            /// Dead letters by reason.
            dead_letters: Mutex<Vec<(&'static str, u64)>>,
            /// Partitions stopped by an error, with the error, until they restore again.
            failing: Mutex<std::collections::BTreeMap<i32, String>>,
            /// Per command topic that is paused or holds commands: whether it is paused, the
            /// commands held for it and those in flight to it (if it has a limit) on the owned
            /// partitions.
            held: Mutex<std::collections::BTreeMap<String, (bool, u64, u64)>>,
            /// Latency of each hop an input and its outputs take through the engine.
            pub hops: Hops,
            /// Records and bytes read from and written to the broker, by kind.
            pub traffic: Traffic,
            /// Requests the hot path's Kafka clients sent, when librdkafka reports them.
            pub requests: KafkaRequests,
            /// Spans of the same hops, when exported.
            pub(crate) spans: Spans,
        }

        impl Metrics {
            /// Prometheus text exposition.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP sagaflow_{} {}", stringify!($name), $help);
                    let _ = writeln!(out, "# TYPE sagaflow_{} counter", stringify!($name));
                    let _ = writeln!(out, "sagaflow_{} {}", stringify!($name), self.$name.load(Ordering::Relaxed));
                )*
                let gauges = [
                    ("partitions_owned", "Input partitions this engine owns.", &self.partitions_owned),
                    ("standby_partitions", "Other engines' partitions this engine keeps a standby copy of (standby = true).", &self.standby_partitions),
                    ("standby_partitions_ready", "Standby copies with a checkpoint, from which a takeover replays only the journal.", &self.standby_partitions_ready),
                    ("standby_lag_records", "Changelog records the standby copies have not read yet.", &self.standby_lag_records),
                    ("timers_in_memory", "Near-term timers held in memory by the timer wheels.", &self.timers_in_memory),
                ];
                for (name, help, value) in gauges {
                    let _ = writeln!(out, "# HELP sagaflow_{name} {help}");
                    let _ = writeln!(out, "# TYPE sagaflow_{name} gauge");
                    let _ = writeln!(out, "sagaflow_{name} {}", value.load(Ordering::Relaxed));
                }
                let _ = writeln!(out, "# HELP sagaflow_timer_lateness_seconds_total Sum over fired timers of how late they fired; divide by sagaflow_timers_fired_total for the mean.");
                let _ = writeln!(out, "# TYPE sagaflow_timer_lateness_seconds_total counter");
                let _ = writeln!(out, "sagaflow_timer_lateness_seconds_total {:.3}", self.timer_lateness_ms.load(Ordering::Relaxed) as f64 / 1000.0);
                let failing = self.failing.lock().expect("metrics lock").len();
                let _ = writeln!(out, "# HELP sagaflow_partitions_failing Owned partitions stopped by an error (a registry or broker outage, say), waiting to restore again.");
                let _ = writeln!(out, "# TYPE sagaflow_partitions_failing gauge");
                let _ = writeln!(out, "sagaflow_partitions_failing {failing}");
                let _ = writeln!(out, "# HELP sagaflow_inputs_ignored_total Duplicate or stale inputs recognised and not applied.");
                let _ = writeln!(out, "# TYPE sagaflow_inputs_ignored_total counter");
                for (reason, n) in self.ignored.lock().expect("metrics lock").iter() {
                    let _ = writeln!(out, "sagaflow_inputs_ignored_total{{reason=\"{reason}\"}} {n}");
                }
                let _ = writeln!(out, "# HELP sagaflow_dead_letters_total Inputs sent to the dead-letter topic.");
                let _ = writeln!(out, "# TYPE sagaflow_dead_letters_total counter");
                for (reason, n) in self.dead_letters.lock().expect("metrics lock").iter() {
                    let _ = writeln!(out, "sagaflow_dead_letters_total{{reason=\"{reason}\"}} {n}");
                }
                let held = self.held.lock().expect("metrics lock");
                let _ = writeln!(out, "# HELP sagaflow_participant_paused 1 while the participant's command topic is paused (<group>.control).");
                let _ = writeln!(out, "# TYPE sagaflow_participant_paused gauge");
                for (topic, _) in held.iter().filter(|(_, (paused, _, _))| *paused) {
                    let _ = writeln!(out, "sagaflow_participant_paused{{topic=\"{topic}\"}} 1");
                }
                let _ = writeln!(out, "# HELP sagaflow_held_commands Commands held for a participant (paused, or at a limit) on this engine's partitions, not sent yet.");
                let _ = writeln!(out, "# TYPE sagaflow_held_commands gauge");
                for (topic, (_, n, _)) in held.iter() {
                    let _ = writeln!(out, "sagaflow_held_commands{{topic=\"{topic}\"}} {n}");
                }
                let _ = writeln!(out, "# HELP sagaflow_commands_in_flight Commands this engine's partitions sent to a participant with a max_in_flight limit and still await.");
                let _ = writeln!(out, "# TYPE sagaflow_commands_in_flight gauge");
                for (topic, (_, _, n)) in held.iter() {
                    let _ = writeln!(out, "sagaflow_commands_in_flight{{topic=\"{topic}\"}} {n}");
                }
                self.hops.render(&mut out);
                self.traffic.render(&mut out);
                self.requests.render(&mut out);
                if let Some(stats) = self.spans.stats() {
                    stats.render(&mut out, "sagaflow");
                }
                out
            }
        }
    };
}

counters! {
    inputs_total => "Input records consumed (replays of already applied inputs excluded).",
    input_offsets_skipped_total => "Input offsets never delivered between two consumed records of a partition (lost by the broker, deleted by retention, or transaction markers).",
    decisions_total => "Inputs applied to a saga.",
    sagas_started_total => "Sagas started.",
    sagas_completed_total => "Sagas that completed every step.",
    sagas_compensated_total => "Sagas fully compensated.",
    incidents_total => "Sagas that entered INCIDENT (a compensation failed for good, or an await timed out with on_timeout: fail).",
    sagas_aborted_total => "Sagas an operator ended without compensating (admin abort).",
    admin_commands_applied_total => "Admin commands applied to a saga (ADMIN_COMMAND_APPLIED events).",
    admin_commands_rejected_total => "Admin commands that did not apply to their saga's state (ADMIN_COMMAND_REJECTED events).",
    journal_records_total => "Journal records written and confirmed valid.",
    journal_conflicts_total => "Journal writes that found another writer and forced a resync.",
    fenced_records_total => "Journal records ignored by the chain rule during restores.",
    relayed_messages_total => "Outbound messages delivered by the relay.",
    relay_redeliveries_total => "Outbound messages delivered again after a restore.",
    forwarded_inputs_total => "Inputs that arrived on the wrong partition and were forwarded.",
    restores_total => "Partition restores.",
    changelog_restores_total => "Partition restores that read the whole changelog: no usable local state (a new node, a partition whose standby copy was not ready, a partition taken back after another engine owned it).",
    changelog_batches_written_total => "Changelog batch records acknowledged, each holding the states of many sagas (docs/architecture.md, Changelog batches).",
    changelog_batch_carries_total => "Sagas whose state a changelog batch still held at its check time, written again under their own key so that the batch can be deleted.",
    changelog_batches_deleted_total => "Changelog batch records deleted: tombstones acknowledged, once every saga in them had moved on or been carried.",
    timers_scheduled_total => "Saga timers scheduled by decisions (retries, timeouts, deadlines, waits, awaits); delayed records count in delayed_scheduled_total.",
    timers_fired_total => "Timers that came due and changed something (stale index entries excluded).",
    delayed_scheduled_total => "Records accepted for delayed delivery.",
    delayed_delivered_total => "Delayed records handed to the relay at their time (first deliveries).",
    signals_received_total => "External events consumed.",
    signals_buffered_total => "External events buffered until a saga awaits them.",
    signals_expired_total => "Buffered external events that no saga claimed in time (dead-lettered).",
    peer_evictions_total => "Silent static members this engine removed from the group (evict-silent-peers-ms).",
    relay_retries_total => "Messages the relay's producer refused (other than a full queue) or failed to deliver, offered again a second later.",
    partition_failures_total => "Times a partition stopped on an error and was scheduled to restore after a backoff.",
    finished_sagas_compacted_total => "Finished sagas past finished-retention-ms whose state shrank to a dedupe marker.",
    finished_sagas_deleted_total => "Dedupe markers deleted after dedupe-window-ms (a tombstone in the changelog); the id may start a new saga.",
    commands_held_total => "Commands held instead of sent because their participant was paused or at a limit (COMMAND_HELD events).",
    commands_released_total => "Held commands sent once their participant was resumed or below its limits (COMMAND_RELEASED events).",
    held_commands_dropped_total => "Held commands dropped on release because their saga no longer awaited them (skipped, aborted or ended while held).",
}

/// The hops of the engine's hot path, each a histogram on `/metrics` (`sagaflow bench` prints
/// their p50/p99). In order: an input waits at the broker, is decided, its decision is journaled
/// (produce until acknowledged), applied to RocksDB, and its outputs are relayed (send until
/// acknowledged).
#[derive(Debug, Default)]
pub struct Hops {
    /// From an input's record timestamp (set by its producer) until this engine fetched it.
    pub input_wait: Histogram,
    /// Deciding one input of a saga (a start, a reply, a timer, a signal, an admin command...):
    /// reading the saga's state, the decision, encoding and staging its outputs.
    pub decision: Histogram,
    /// From a journal record's first produce until the broker acknowledged it.
    pub journal_ack: Histogram,
    /// Applying an acknowledged journal record to RocksDB.
    pub state_apply: Histogram,
    /// From an output's first send (a command, an event, ...) until the broker acknowledged it.
    pub relay_ack: Histogram,
}

impl Hops {
    /// Each hop's name on `/metrics`, with its help text.
    pub const NAMES: [(&'static str, &'static str); 5] = [
        ("sagaflow_input_wait_seconds", "From an input's record timestamp (set by its producer) until the engine fetched it: the broker hop, plus the engine's own backlog."),
        ("sagaflow_decision_seconds", "Deciding one input of a saga (a start, a reply, a timer...): reading its state, the decision, encoding and staging its outputs."),
        ("sagaflow_journal_ack_seconds", "From a journal record's first produce (waits for room in the producer's queue included) until the broker acknowledged it: the batch's decisions are durable then."),
        ("sagaflow_state_apply_seconds", "Applying an acknowledged journal record to RocksDB."),
        ("sagaflow_relay_ack_seconds", "From an output's first send (a command, an event, a dead letter, a delayed record...; not changelog writes) until the broker acknowledged it, retries included."),
    ];

    fn render(&self, out: &mut String) {
        let hops = [
            &self.input_wait,
            &self.decision,
            &self.journal_ack,
            &self.state_apply,
            &self.relay_ack,
        ];
        for (h, (name, help)) in hops.iter().zip(Self::NAMES) {
            h.render(out, name, help);
        }
    }
}

impl Metrics {
    /// Counters that start at zero, with `spans` recording the hops' spans.
    pub(crate) fn with_spans(spans: Spans) -> Self {
        Self {
            spans,
            ..Self::default()
        }
    }

    /// Sets, per command topic, whether it is paused, the commands held for it and those in
    /// flight to it under a limit.
    pub(crate) fn set_held(&self, held: std::collections::BTreeMap<String, (bool, u64, u64)>) {
        *self.held.lock().expect("metrics lock") = held;
    }

    fn bump(list: &Mutex<Vec<(&'static str, u64)>>, label: &'static str) {
        let mut list = list.lock().expect("metrics lock");
        match list.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => list.push((label, 1)),
        }
    }

    /// Counts an ignored input.
    pub fn ignored(&self, reason: &'static str) {
        Self::bump(&self.ignored, reason);
    }

    /// Counts a dead letter.
    pub fn dead_letter(&self, reason: &'static str) {
        Self::bump(&self.dead_letters, reason);
    }

    /// Records that `partition` stopped on `error`.
    pub fn partition_failed(&self, partition: i32, error: String) {
        self.partition_failures_total
            .fetch_add(1, Ordering::Relaxed);
        let _ = self
            .failing
            .lock()
            .expect("metrics lock")
            .insert(partition, error);
    }

    /// Records that `partition` is healthy again (restored) or no longer owned.
    pub fn partition_recovered(&self, partition: i32) {
        let _ = self
            .failing
            .lock()
            .expect("metrics lock")
            .remove(&partition);
    }

    /// The failing partitions with their errors (empty when healthy).
    pub fn failing(&self) -> Vec<(i32, String)> {
        self.failing
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(p, e)| (*p, e.clone()))
            .collect()
    }

    /// Total ignored inputs.
    pub fn ignored_total(&self) -> u64 {
        self.ignored
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// Total dead letters.
    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::Metrics;

    /// OpenMetrics names a counter's family without its `_total`, so a gauge `x` beside a
    /// counter `x_total` is one family declared twice, which OpenMetrics scrapers reject.
    #[test]
    fn metric_families_are_unique_and_counters_end_in_total() {
        let metrics = Metrics::default();
        metrics.set_held(BTreeMap::from([("orders".to_string(), (true, 2, 1))]));
        metrics.ignored("duplicate");
        metrics.dead_letter("undecodable");
        metrics.partition_failed(0, "down".to_string());
        let text = metrics.render();
        let mut families = HashSet::new();
        for line in text.lines() {
            let Some(declared) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
            let family = match kind {
                "counter" => name
                    .strip_suffix("_total")
                    .unwrap_or_else(|| panic!("counter {name} does not end in _total")),
                _ => name,
            };
            assert!(families.insert(family), "family {family} is declared twice");
        }
        assert!(
            families.contains("sagaflow_held_commands")
                && families.contains("sagaflow_commands_held"),
            "{text}"
        );
    }
}
