//! Prometheus metrics derived from the event log as it is projected, plus the projector's own.
//!
//! Counters restart from zero with the process, as Prometheus counters do; `rate()` and
//! `increase()` handle that. Gauges of open sagas and incidents are read from the read models
//! instead, so every projector instance reports the whole picture.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::fold::Observation;

/// Upper bounds of the step duration histogram, in seconds.
const STEP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; STEP_BUCKETS.len()];
        }
        for (i, bound) in STEP_BUCKETS.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Lag of one partition.
#[derive(Debug, Default, Clone, Copy)]
pub struct Lag {
    /// Events in the log not projected yet.
    pub events: i64,
    /// How long ago the oldest unprojected event was written, seconds (0 when caught up).
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Inner {
    started: BTreeMap<String, u64>,
    ended: BTreeMap<(String, String), u64>,
    steps: BTreeMap<(String, String, &'static str, &'static str), Histogram>,
    retries: BTreeMap<(String, String), u64>,
    timeouts: BTreeMap<(String, String), u64>,
    events: u64,
    duplicates: u64,
    gaps: u64,
    expired: u64,
    batches: u64,
    fenced: u64,
    bad: BTreeMap<&'static str, u64>,
    lag: BTreeMap<i32, Lag>,
    /// `(definition, status)` → sagas, for the statuses that are not ended, read from the
    /// database.
    live: Vec<(String, String, i64)>,
    /// Why the projector is not making progress, if it is not.
    failing: Option<String>,
}

/// The projector's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("metrics lock"))
    }

    /// Counts what a committed batch did.
    pub fn committed(
        &self,
        events: u64,
        duplicates: u64,
        gaps: u64,
        expired: u64,
        seen: &[Observation],
    ) {
        self.with(|m| {
            m.batches += 1;
            m.events += events;
            m.duplicates += duplicates;
            m.gaps += gaps;
            m.expired += expired;
            m.failing = None;
            for o in seen {
                match o {
                    Observation::SagaStarted { definition } => {
                        *m.started.entry(definition.clone()).or_default() += 1;
                    }
                    Observation::SagaEnded { definition, status } => {
                        *m.ended
                            .entry((definition.clone(), status.clone()))
                            .or_default() += 1;
                    }
                    Observation::StepEnded {
                        definition,
                        node,
                        phase,
                        status,
                        seconds,
                    } => m
                        .steps
                        .entry((definition.clone(), node.clone(), phase, status))
                        .or_default()
                        .observe(*seconds),
                    Observation::Retry { definition, node } => {
                        *m.retries
                            .entry((definition.clone(), node.clone()))
                            .or_default() += 1;
                    }
                    Observation::Timeout { definition, node } => {
                        *m.timeouts
                            .entry((definition.clone(), node.clone()))
                            .or_default() += 1;
                    }
                }
            }
        });
    }

    /// A batch was dropped because another projector moved its partition on.
    pub fn fenced(&self) {
        self.with(|m| m.fenced += 1);
    }

    /// A record that is not a saga event went to the dead-letter topic.
    pub fn bad_event(&self, reason: &'static str) {
        self.with(|m| *m.bad.entry(reason).or_default() += 1);
    }

    /// Bad events so far, by reason.
    pub fn bad_events(&self) -> u64 {
        self.with(|m| m.bad.values().sum())
    }

    /// Events projected so far.
    pub fn events(&self) -> u64 {
        self.with(|m| m.events)
    }

    /// The lag of the partitions this instance owns (replacing the previous set).
    pub fn set_lag(&self, lag: BTreeMap<i32, Lag>) {
        self.with(|m| m.lag = lag);
    }

    /// Total lag in events, and the largest in seconds.
    pub fn lag(&self) -> (i64, f64) {
        self.with(|m| {
            (
                m.lag.values().map(|l| l.events).sum(),
                m.lag.values().map(|l| l.seconds).fold(0.0, f64::max),
            )
        })
    }

    /// The open sagas by definition and status, as the read models hold them.
    pub fn set_live(&self, live: Vec<(String, String, i64)>) {
        self.with(|m| m.live = live);
    }

    /// The projector is stuck on `reason` (a database outage, say), or `None` once it is not.
    pub fn set_failing(&self, reason: Option<String>) {
        self.with(|m| m.failing = reason);
    }

    /// Why the projector is not making progress, if it is not.
    pub fn failing(&self) -> Option<String> {
        self.with(|m| m.failing.clone())
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            let head = |out: &mut String, name: &str, kind: &str, help: &str| {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
            };
            head(&mut out, "sagaflow_projected_sagas_started_total", "counter", "Sagas started, by definition, as projected from the event log.");
            for (d, n) in &m.started {
                let _ = writeln!(out, "sagaflow_projected_sagas_started_total{{definition=\"{}\"}} {n}", escape(d));
            }
            head(&mut out, "sagaflow_projected_sagas_ended_total", "counter", "Sagas ended, by definition and status (COMPLETED, COMPENSATED, FAILED, ABORTED).");
            for ((d, s), n) in &m.ended {
                let _ = writeln!(out, "sagaflow_projected_sagas_ended_total{{definition=\"{}\",status=\"{}\"}} {n}", escape(d), escape(s));
            }
            head(&mut out, "sagaflow_projected_sagas_open", "gauge", "Sagas not ended, by definition and status, from the read models.");
            for (d, s, n) in &m.live {
                let _ = writeln!(out, "sagaflow_projected_sagas_open{{definition=\"{}\",status=\"{}\"}} {n}", escape(d), escape(s));
            }
            head(&mut out, "sagaflow_incidents_open", "gauge", "Sagas in INCIDENT, waiting for an operator, by definition.");
            for (d, s, n) in &m.live {
                if s == "INCIDENT" {
                    let _ = writeln!(out, "sagaflow_incidents_open{{definition=\"{}\"}} {n}", escape(d));
                }
            }
            head(&mut out, "sagaflow_step_duration_seconds", "histogram", "Time from a step's start (its dispatch, for a command) to its end, by definition, step, phase and outcome.");
            for ((d, node, phase, status), h) in &m.steps {
                let labels = format!("definition=\"{}\",step=\"{}\",phase=\"{phase}\",outcome=\"{status}\"", escape(d), escape(node));
                for (bound, n) in STEP_BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(out, "sagaflow_step_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
                }
                let _ = writeln!(out, "sagaflow_step_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "sagaflow_step_duration_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "sagaflow_step_duration_seconds_count{{{labels}}} {}", h.count);
            }
            head(&mut out, "sagaflow_step_retries_total", "counter", "Step and compensation retries scheduled, by definition and step.");
            for ((d, node), n) in &m.retries {
                let _ = writeln!(out, "sagaflow_step_retries_total{{definition=\"{}\",step=\"{}\"}} {n}", escape(d), escape(node));
            }
            head(&mut out, "sagaflow_step_timeouts_total", "counter", "Attempt and await timeouts, by definition and step.");
            for ((d, node), n) in &m.timeouts {
                let _ = writeln!(out, "sagaflow_step_timeouts_total{{definition=\"{}\",step=\"{}\"}} {n}", escape(d), escape(node));
            }
            let counters: [(&str, &str, u64); 6] = [
                ("sagaflow_projection_events_total", "Events projected into the read models.", m.events),
                ("sagaflow_projection_duplicates_total", "Redelivered events recognised by (saga id, seq) and skipped.", m.duplicates),
                ("sagaflow_projection_gaps_total", "Events applied after a gap in their saga's seq (the log began after the saga started, or lost records).", m.gaps),
                ("sagaflow_projection_expired_total", "Events older than the event retention, projected into sagas and steps but not kept in events.", m.expired),
                ("sagaflow_projection_batches_total", "Batches committed.", m.batches),
                ("sagaflow_projection_fenced_total", "Batches dropped because another projector had moved their partition on.", m.fenced),
            ];
            for (name, help, value) in counters {
                head(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {value}");
            }
            head(&mut out, "sagaflow_projection_bad_events_total", "counter", "Records that are not saga events, sent to the dead-letter topic, by reason.");
            for (reason, n) in &m.bad {
                let _ = writeln!(out, "sagaflow_projection_bad_events_total{{reason=\"{reason}\"}} {n}");
            }
            head(&mut out, "sagaflow_projection_lag_events", "gauge", "Events in the log not projected yet, by partition.");
            for (p, lag) in &m.lag {
                let _ = writeln!(out, "sagaflow_projection_lag_events{{partition=\"{p}\"}} {}", lag.events);
            }
            head(&mut out, "sagaflow_projection_lag_seconds", "gauge", "An upper bound on the age of the oldest event not projected yet, by partition: the time since the last projected one was written (0 when caught up).");
            for (p, lag) in &m.lag {
                let _ = writeln!(out, "sagaflow_projection_lag_seconds{{partition=\"{p}\"}} {}", lag.seconds);
            }
            head(&mut out, "sagaflow_projection_up", "gauge", "1 while the projector makes progress, 0 while an error stops it.");
            let _ = writeln!(out, "sagaflow_projection_up {}", u8::from(m.failing.is_none()));
            out
        })
    }
}
