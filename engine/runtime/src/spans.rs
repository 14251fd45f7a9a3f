//! OpenTelemetry spans of the engine's hops, exported over OTLP when `otlp-endpoint` is set.
//!
//! Each saga is one trace (its id derived from the group and the saga id, as in the commands'
//! `traceparent`). An input's spans chain up: `input_wait` (the broker hop, a child of the
//! participant's reply span when the input carries a `traceparent`), then `decision`, then
//! `journal_ack` and `state_apply` for the journal record that made it durable. The relay's
//! `relay_ack` span of a command has the span id of the command's `traceparent`, so the
//! participant's spans are its children. Span ids derive from what they describe (an input's
//! topic, partition and offset; an output's message id), so no id has to travel with the data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sagaflow_avro::Outbound;
use sagaflow_kafka::otlp::{self, ExportStats, Exporter, Span, SpanKind};
use sagaflow_kafka::trace;

use crate::error::{Error, Result};
use crate::traffic::Flow;

/// The engine's span recorder; off (recording nothing) without an endpoint.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    exporter: Option<Exporter>,
    group: String,
}

/// The input a decision was made on, for its span's parent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputRef<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Whether the processor recorded an `input_wait` span for it (starts and replies), which
    /// is then the decision's parent.
    pub(crate) waited: bool,
}

impl InputRef<'_> {
    fn span_id(&self, what: &str) -> u64 {
        otlp::span_id(&[
            self.topic,
            &self.partition.to_string(),
            &self.offset.to_string(),
            what,
        ])
    }
}

/// A traced decision waiting for its journal record: its saga's trace and its span.
pub(crate) type Traced = (u128, u64);

impl Spans {
    /// Records spans for engine group `group` and exports them to `endpoint`; records nothing
    /// when `endpoint` is empty.
    pub(crate) fn new(endpoint: &str, group: &str) -> Result<Self> {
        if endpoint.trim().is_empty() {
            return Ok(Self::default());
        }
        let exporter = Exporter::start(endpoint, "sagaflow-engine")
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self {
            exporter: Some(exporter),
            group: group.to_string(),
        })
    }

    /// Whether spans are recorded.
    pub(crate) fn on(&self) -> bool {
        self.exporter.is_some()
    }

    fn record(&self, span: Span) {
        if let Some(e) = &self.exporter {
            e.record(span);
        }
    }

    /// An input of saga `saga_id` fetched at `fetched`, produced at `produced_ms` (its
    /// CreateTime), carrying `traceparent` if its producer set one.
    pub(crate) fn input(
        &self,
        saga_id: &str,
        input: InputRef<'_>,
        produced_ms: i64,
        fetched: SystemTime,
        traceparent: Option<&str>,
    ) {
        if !self.on() {
            return;
        }
        let trace_id = trace::saga_trace(&self.group, saga_id);
        // A parent only from the saga's own trace: a start may carry its caller's trace, which
        // this saga's trace (keyed by its id) is not part of.
        let parent = traceparent
            .and_then(trace::TraceParent::parse)
            .filter(|p| p.trace_id == trace_id)
            .map(|p| p.span_id);
        let start = UNIX_EPOCH + Duration::from_millis(u64::try_from(produced_ms).unwrap_or(0));
        self.record(Span {
            trace_id,
            span_id: input.span_id("input"),
            parent_id: parent,
            name: "input_wait",
            kind: SpanKind::Consumer,
            start: start.min(fetched),
            end: fetched,
            attributes: vec![
                ("saga.id", saga_id.to_string()),
                ("messaging.destination.name", input.topic.to_string()),
                (
                    "messaging.destination.partition.id",
                    input.partition.to_string(),
                ),
                ("messaging.kafka.offset", input.offset.to_string()),
            ],
        });
    }

    /// A decision on an input of saga `saga_id` (`input`, or a timer), from `start` to `end`;
    /// returns it for the journal record's spans.
    pub(crate) fn decision(
        &self,
        saga_id: &str,
        input: Option<InputRef<'_>>,
        start: SystemTime,
        end: SystemTime,
    ) -> Option<Traced> {
        if !self.on() {
            return None;
        }
        let trace_id = trace::saga_trace(&self.group, saga_id);
        let span_id = match input {
            Some(i) => i.span_id("decision"),
            None => {
                let nanos = start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
                otlp::span_id(&[saga_id, &nanos.to_string(), "timer"])
            }
        };
        self.record(Span {
            trace_id,
            span_id,
            parent_id: input.filter(|i| i.waited).map(|i| i.span_id("input")),
            name: "decision",
            kind: SpanKind::Internal,
            start,
            end,
            attributes: vec![("saga.id", saga_id.to_string())],
        });
        Some((trace_id, span_id))
    }

    /// `name` (`journal_ack`, `state_apply`) of the journal record at `offset` of `partition`,
    /// once in the trace of each decision it holds.
    pub(crate) fn journal(
        &self,
        name: &'static str,
        traced: &[Traced],
        partition: i32,
        offset: i64,
        start: SystemTime,
        end: SystemTime,
    ) {
        if !self.on() {
            return;
        }
        for (trace_id, decision) in traced {
            self.record(Span {
                trace_id: *trace_id,
                span_id: otlp::span_id(&[
                    name,
                    &partition.to_string(),
                    &offset.to_string(),
                    &decision.to_string(),
                ]),
                parent_id: Some(*decision),
                name,
                kind: SpanKind::Internal,
                start,
                end,
                attributes: vec![
                    ("sagaflow.journal.partition", partition.to_string()),
                    ("sagaflow.journal.offset", offset.to_string()),
                ],
            });
        }
    }

    /// The relay's send of `message` until the broker acknowledged it. Only commands and events
    /// are keyed by their saga's id, so only they belong to a saga's trace. A command's span is
    /// the one its `traceparent` names; other outputs (forwards, dead letters, delayed
    /// deliveries) carry headers copied from their input, whose span ids are not theirs.
    pub(crate) fn output(
        &self,
        flow: Flow,
        message: &Outbound,
        start: SystemTime,
        end: SystemTime,
    ) {
        if !self.on() || !matches!(flow, Flow::Command | Flow::Event) {
            return;
        }
        let Some(saga_id) = message
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        else {
            return;
        };
        let trace_id = trace::saga_trace(&self.group, saga_id);
        let named = message
            .headers
            .iter()
            .find(|h| h.name == trace::TRACEPARENT)
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .and_then(trace::TraceParent::parse)
            .filter(|p| p.trace_id == trace_id);
        let span_id = match named {
            Some(p) => p.span_id,
            None => otlp::span_id(&[&message.id, "output"]),
        };
        self.record(Span {
            trace_id,
            span_id,
            parent_id: None,
            name: "relay_ack",
            kind: SpanKind::Producer,
            start,
            end,
            attributes: vec![
                ("messaging.destination.name", message.topic.clone()),
                ("messaging.message.id", message.id.clone()),
            ],
        });
    }

    /// The exporter's counters, for `/metrics` (nothing when off).
    pub(crate) fn stats(&self) -> Option<&ExportStats> {
        self.exporter.as_ref().map(Exporter::stats)
    }
}

/// `SystemTime` of an `Instant` taken `ago` before now.
pub(crate) fn wall(ago: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
