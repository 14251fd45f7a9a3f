//! Span export over OTLP/HTTP with JSON encoding (`POST <endpoint>/v1/traces`), the protocol
//! every OpenTelemetry collector and most tracing backends accept on port 4318.
//!
//! Spans are handed to a bounded queue and sent in batches by a thread of their own, so a slow
//! or absent collector never slows a decision: when the queue is full, spans are dropped and
//! counted. A batch the collector refuses or cannot take is dropped too, with a warning at most
//! once a minute; traces are diagnostics, not data.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::trace;

/// Spans waiting to be sent, at most; more are dropped (and counted).
const QUEUE: usize = 65_536;
/// Spans per request, at most.
const BATCH: usize = 2_048;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);

/// OTLP's span kinds (the `kind` field's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside one process.
    Internal = 1,
    /// Sending a message.
    Producer = 4,
    /// Receiving a message.
    Consumer = 5,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: u128,
    /// Its own id (never 0).
    pub span_id: u64,
    /// Its parent's id, if it has one.
    pub parent_id: Option<u64>,
    /// What it measures (`input_wait`, `decision`, ...).
    pub name: &'static str,
    /// How it relates to messaging.
    pub kind: SpanKind,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes: `(key, value)`, string values.
    pub attributes: Vec<(&'static str, String)>,
}

impl Span {
    /// A span of `name` in the trace of `traceparent`'s header value, as its child; `None` when
    /// the header is not valid (no trace to join).
    pub fn child_of(
        traceparent: &str,
        span_id: u64,
        name: &'static str,
        kind: SpanKind,
        start: SystemTime,
        end: SystemTime,
    ) -> Option<Self> {
        let parent = trace::TraceParent::parse(traceparent)?;
        Some(Self {
            trace_id: parent.trace_id,
            span_id,
            parent_id: Some(parent.span_id),
            name,
            kind,
            start,
            end,
            attributes: Vec::new(),
        })
    }

    /// The same span with one more attribute.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.attributes.push((key, value.to_string()));
        self
    }
}

/// Counts of what an [`Exporter`] did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped: the queue was full, or the collector refused or could not be reached.
    pub dropped: AtomicU64,
}

impl ExportStats {
    /// The counters in the Prometheus text format, named with `prefix` (`sagaflow`, say).
    pub fn render(&self, out: &mut String, prefix: &str) {
        for (name, help, value) in [
            (
                "otlp_spans_exported_total",
                "Spans the OTLP collector accepted.",
                &self.exported,
            ),
            (
                "otlp_spans_dropped_total",
                "Spans dropped: the export queue was full, or the OTLP collector refused the batch or could not be reached.",
                &self.dropped,
            ),
        ] {
            let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
            let _ = writeln!(out, "# TYPE {prefix}_{name} counter");
            let _ = writeln!(out, "{prefix}_{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

/// Sends spans to an OTLP/HTTP collector from a thread of its own.
#[derive(Debug, Clone)]
pub struct Exporter {
    queue: SyncSender<Span>,
    stats: Arc<ExportStats>,
}

/// Why an exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an http(s) URL.
    #[error("otlp-endpoint {endpoint:?} is not an http:// or https:// URL; give the collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318")]
    Endpoint {
        /// What was given.
        endpoint: String,
    },
    /// The HTTP client could not be built (TLS set-up, say).
    #[error("building the OTLP/HTTP client for {endpoint}: {source}")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: reqwest::Error,
    },
}

impl Exporter {
    /// Starts exporting to `endpoint` (the collector's base URL; `/v1/traces` is appended
    /// unless it is already there) as service `service`.
    pub fn start(endpoint: &str, service: &str) -> Result<Self, ExportError> {
        let trimmed = endpoint.trim().trim_end_matches('/');
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(ExportError::Endpoint {
                endpoint: endpoint.to_string(),
            });
        }
        let url = if trimmed.ends_with("/v1/traces") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1/traces")
        };
        let (queue, spans) = sync_channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let (built, client) = std::sync::mpsc::channel();
        let thread_stats = stats.clone();
        let service = service.to_string();
        // The blocking client is built, used and dropped on its own thread: it runs a runtime
        // of its own, which must not live inside the caller's async context.
        let _ = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let client = match reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                {
                    Ok(client) => {
                        let _ = built.send(Ok(()));
                        client
                    }
                    Err(source) => {
                        let _ = built.send(Err(ExportError::Client {
                            endpoint: url,
                            source,
                        }));
                        return;
                    }
                };
                Sender {
                    client,
                    url,
                    service,
                    stats: thread_stats,
                    warned: None,
                }
                .run(&spans);
            })
            .expect("spawning the OTLP export thread");
        client.recv().expect("the OTLP export thread answers")?;
        Ok(Self { queue, stats })
    }

    /// Queues `span` for export; drops it (counted) when the queue is full.
    pub fn record(&self, span: Span) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(span)
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What it exported and dropped so far.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

struct Sender {
    client: reqwest::blocking::Client,
    url: String,
    service: String,
    stats: Arc<ExportStats>,
    warned: Option<Instant>,
}

impl Sender {
    /// Sends batches until every [`Exporter`] is dropped.
    fn run(mut self, spans: &Receiver<Span>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = match spans.recv() {
                Ok(span) => span,
                Err(_) => return,
            };
            batch.push(first);
            let deadline = Instant::now() + LINGER;
            let mut open = true;
            while batch.len() < BATCH {
                match spans.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(span) => batch.push(span),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.send(&batch);
            batch.clear();
            if !open {
                return;
            }
        }
    }

    fn send(&mut self, batch: &[Span]) {
        let body = encode(&self.service, batch);
        let outcome = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.status().is_success() {
                    Ok(())
                } else {
                    let status = r.status();
                    let text = r.text().unwrap_or_default();
                    Err(format!(
                        "HTTP {status}: {}",
                        text.chars().take(300).collect::<String>()
                    ))
                }
            });
        let n = batch.len() as u64;
        match outcome {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                if self
                    .warned
                    .is_none_or(|at| at.elapsed() >= Duration::from_secs(60))
                {
                    self.warned = Some(Instant::now());
                    tracing::warn!(url = %self.url, %error, spans = n, "OTLP collector did not take a batch of spans; they are dropped (check otlp-endpoint and the collector; this warning repeats at most once a minute)");
                }
            }
        }
    }
}

/// A batch as an OTLP `ExportTraceServiceRequest` in JSON: ids in hex, times as decimal strings
/// of nanoseconds, as the OTLP specification's JSON encoding asks.
pub fn encode(service: &str, spans: &[Span]) -> String {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_string()
    };
    let attribute =
        |key: &str, value: &str| serde_json::json!({"key": key, "value": {"stringValue": value}});
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|s| {
            let mut span = serde_json::json!({
                "traceId": format!("{:032x}", s.trace_id),
                "spanId": format!("{:016x}", s.span_id),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end.max(s.start)),
                "attributes": s.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = s.parent_id {
                span["parentSpanId"] = format!("{parent:016x}").into();
            }
            span
        })
        .collect();
    serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [attribute("service.name", service)]},
            "scopeSpans": [{
                "scope": {"name": "sagaflow", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
    .to_string()
}

/// A span id derived from `parts` (stable, never 0): the same input or output always gets the
/// same span, so that other spans can name it as their parent without carrying it along.
pub fn span_id(parts: &[&str]) -> u64 {
    trace::hash(parts, 3).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_encodes_as_otlp_json() {
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let span = Span {
            trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
            span_id: 0x00f0_67aa_0ba9_02b7,
            parent_id: Some(1),
            name: "decision",
            kind: SpanKind::Internal,
            start,
            end: start + Duration::from_micros(250),
            attributes: vec![("saga.id", "order-1".into())],
        };
        let json: serde_json::Value =
            serde_json::from_str(&encode("sagaflow-engine", &[span])).expect("json");
        let s = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "00f067aa0ba902b7");
        assert_eq!(s["parentSpanId"], "0000000000000001");
        assert_eq!(s["kind"], 1);
        assert_eq!(s["startTimeUnixNano"], "1700000000123000000");
        assert_eq!(s["endTimeUnixNano"], "1700000000123250000");
        assert_eq!(s["attributes"][0]["value"]["stringValue"], "order-1");
        assert_eq!(
            json["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "sagaflow-engine"
        );
    }

    #[test]
    fn a_bad_endpoint_is_refused_with_an_example() {
        let e = Exporter::start("collector:4318", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://otel-collector:4318"), "{e}");
    }
}
