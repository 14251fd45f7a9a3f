//! Everything the engine reads from and writes to the broker, by kind, in records and bytes.
//!
//! A saga's contract costs what any design would pay: its start, its commands, the replies, and
//! its event log. Everything else (the journal, the changelog, heartbeats, outputs delivered
//! again after a restore, inputs forwarded to their partition, restores) is the price of this
//! engine's design, and is counted apart so that it can be held to a budget.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::message::{Headers as _, Message};

/// One kind of broker traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Start requests read.
    Start,
    /// Participant replies read.
    Reply,
    /// Signals, admin commands and delay requests read.
    OtherInput,
    /// Commands written to participants (first deliveries).
    Command,
    /// Saga events written to the event log (first deliveries).
    Event,
    /// Dead letters written.
    DeadLetter,
    /// Delayed records written to their target at their time (first deliveries).
    Delayed,
    /// Journal records written (decisions and claims).
    Journal,
    /// Changelog records written: saga states, checkpoints and owner markers.
    Changelog,
    /// Owner heartbeats written to the changelog.
    Heartbeat,
    /// Outputs written again after a restore (at least once, G2).
    Resend,
    /// Inputs that arrived on the wrong partition, written to their saga's.
    Forward,
    /// Await subscriptions and signal deliveries between partitions, written.
    Correlation,
    /// Await subscriptions and signal deliveries between partitions, read.
    CorrelationIn,
    /// Journal and changelog records read to restore a partition.
    Restore,
    /// Changelog records read to keep standby copies of other engines' partitions.
    Standby,
}

impl Flow {
    /// Every kind, in the order of `/metrics`.
    pub const ALL: [Flow; 16] = [
        Flow::Start,
        Flow::Reply,
        Flow::OtherInput,
        Flow::Command,
        Flow::Event,
        Flow::DeadLetter,
        Flow::Delayed,
        Flow::Journal,
        Flow::Changelog,
        Flow::Heartbeat,
        Flow::Resend,
        Flow::Forward,
        Flow::Correlation,
        Flow::CorrelationIn,
        Flow::Restore,
        Flow::Standby,
    ];

    /// Its `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Flow::Start => "start",
            Flow::Reply => "reply",
            Flow::OtherInput => "other_input",
            Flow::Command => "command",
            Flow::Event => "event",
            Flow::DeadLetter => "dead_letter",
            Flow::Delayed => "delayed",
            Flow::Journal => "journal",
            Flow::Changelog => "changelog",
            Flow::Heartbeat => "heartbeat",
            Flow::Resend => "resend",
            Flow::Forward => "forward",
            Flow::Correlation | Flow::CorrelationIn => "correlation",
            Flow::Restore => "restore",
            Flow::Standby => "standby",
        }
    }

    /// Its `direction` label: whether the engine reads or writes these records.
    pub fn direction(self) -> &'static str {
        match self {
            Flow::Start
            | Flow::Reply
            | Flow::OtherInput
            | Flow::CorrelationIn
            | Flow::Restore
            | Flow::Standby => "read",
            Flow::Command
            | Flow::Event
            | Flow::DeadLetter
            | Flow::Delayed
            | Flow::Journal
            | Flow::Changelog
            | Flow::Heartbeat
            | Flow::Resend
            | Flow::Forward
            | Flow::Correlation => "write",
        }
    }

    /// Whether the saga contract itself asks for this traffic (any engine would pay it), as
    /// opposed to this engine's overhead.
    pub fn contract(self) -> bool {
        matches!(
            self,
            Flow::Start
                | Flow::Reply
                | Flow::OtherInput
                | Flow::Command
                | Flow::Event
                | Flow::DeadLetter
                | Flow::Delayed
        )
    }

    /// Its slot in [`Traffic`]: the variants are declared in the order of [`Flow::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Records and bytes per [`Flow`], since the engine started.
#[derive(Debug, Default)]
pub struct Traffic {
    records: [AtomicU64; Flow::ALL.len()],
    bytes: [AtomicU64; Flow::ALL.len()],
}

/// What one record costs on the wire, roughly: its key, value and headers.
pub(crate) fn record_bytes(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl IntoIterator<Item = usize>,
) -> usize {
    key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + headers.into_iter().sum::<usize>()
}

/// [`record_bytes`] of a record read.
pub(crate) fn message_bytes(m: &impl Message) -> usize {
    record_bytes(
        m.key(),
        m.payload(),
        m.headers()
            .into_iter()
            .flat_map(|hs| hs.iter())
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)),
    )
}

impl Traffic {
    /// Counts one record of `bytes` (key, value and headers).
    pub fn count(&self, flow: Flow, bytes: usize) {
        let i = flow.index();
        self.records[i].fetch_add(1, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Records and bytes of `flow` so far.
    pub fn get(&self, flow: Flow) -> (u64, u64) {
        let i = flow.index();
        (
            self.records[i].load(Ordering::Relaxed),
            self.bytes[i].load(Ordering::Relaxed),
        )
    }

    pub(crate) fn render(&self, out: &mut String) {
        let metrics = [
            ("sagaflow_broker_records_total", "Records the engine read from or wrote to the broker (writes once acknowledged), by kind; part=\"contract\" is what the saga contract itself needs, part=\"overhead\" the engine's own cost.", &self.records),
            ("sagaflow_broker_bytes_total", "Bytes (keys, values and headers) of sagaflow_broker_records_total.", &self.bytes),
        ];
        for (name, help, counters) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for flow in Flow::ALL {
                let part = if flow.contract() {
                    "contract"
                } else {
                    "overhead"
                };
                let _ = writeln!(
                    out,
                    "{name}{{direction=\"{}\",kind=\"{}\",part=\"{part}\"}} {}",
                    flow.direction(),
                    flow.label(),
                    counters[flow.index()].load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_per_kind_with_their_part() {
        let t = Traffic::default();
        t.count(Flow::Command, 100);
        t.count(Flow::Command, 50);
        t.count(Flow::Journal, 1000);
        assert_eq!(t.get(Flow::Command), (2, 150));
        assert_eq!(t.get(Flow::Reply), (0, 0));
        let mut out = String::new();
        t.render(&mut out);
        assert!(out.contains(
            "sagaflow_broker_records_total{direction=\"write\",kind=\"command\",part=\"contract\"} 2"
        ));
        assert!(out.contains(
            "sagaflow_broker_bytes_total{direction=\"write\",kind=\"journal\",part=\"overhead\"} 1000"
        ));
        assert!(out.contains(
            "sagaflow_broker_records_total{direction=\"read\",kind=\"start\",part=\"contract\"} 0"
        ));
        // Standby copies read the other engines' changelog; they write nothing.
        assert!(out.contains(
            "sagaflow_broker_records_total{direction=\"read\",kind=\"standby\",part=\"overhead\"} 0"
        ));
    }

    #[test]
    fn every_flow_has_its_own_slot() {
        for (i, flow) in Flow::ALL.iter().enumerate() {
            assert_eq!(flow.index(), i);
        }
    }
}
