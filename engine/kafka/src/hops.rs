//! Latency histograms of the hops a saga's messages take (a fetch, a decision, a produce until
//! the broker acknowledges it), in the Prometheus text format, so that an operator can see where
//! a slow saga waits without a tracing backend, and the benchmark can print each hop's p50/p99.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from half a millisecond (a decision) to ten seconds
/// (a broker outage), dense where the latency targets are (1 to 100 ms).
pub const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// A Prometheus histogram of durations, safe to record from any thread.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative), and the ones above the last bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds (u64 holds 584 years of them).
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records a duration in milliseconds (negative, from clocks apart, counts as zero).
    pub fn observe_ms(&self, ms: i64) {
        self.observe(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Writes the histogram as `name` with `help` in the Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum:.9}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// The observation count of histogram `name` in a Prometheus text page (0 if absent).
pub fn count(page: &str, name: &str) -> f64 {
    let prefix = format!("{name}_count ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The `q` quantile (0..1) of histogram `name` in a Prometheus text page, in seconds,
/// interpolated linearly within its bucket as Prometheus' `histogram_quantile` does; `None` when
/// the page has no observation of it. `before` (an earlier page of the same process, or `None`)
/// is subtracted first, to get the quantile of what happened between two scrapes; across a
/// restart (counters back to zero) the difference means nothing.
pub fn quantile(page: &str, before: Option<&str>, name: &str, q: f64) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let (le, value) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, value.trim().parse().ok()?))
            })
            .collect()
    };
    let mut now = buckets(page);
    if let Some(before) = before {
        let then = buckets(before);
        for (bucket, (le, count)) in now.iter_mut().zip(then) {
            if bucket.0 == le {
                bucket.1 -= count;
            }
        }
    }
    let total = now.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, cumulative) in now {
        if cumulative >= rank {
            if le.is_infinite() {
                // Above the last bound: all one can say is "more than it".
                return Some(lower.0);
            }
            let within = cumulative - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, cumulative);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_and_reads_quantiles_back() {
        let h = Histogram::default();
        for ms in [1, 1, 2, 3, 4, 8, 15, 30, 60, 900] {
            h.observe(Duration::from_millis(ms));
        }
        let mut page = String::new();
        h.render(&mut page, "x_seconds", "test");
        assert!(page.contains("x_seconds_bucket{le=\"0.001\"} 2"), "{page}");
        assert!(page.contains("x_seconds_bucket{le=\"+Inf\"} 10"), "{page}");
        assert!(page.contains("x_seconds_count 10"), "{page}");
        assert!(page.contains("x_seconds_sum 1.024000000"), "{page}");
        let p50 = quantile(&page, None, "x_seconds", 0.5).expect("p50");
        assert!((0.002..=0.005).contains(&p50), "{p50}");
        let p99 = quantile(&page, None, "x_seconds", 0.99).expect("p99");
        assert!((0.5..=1.0).contains(&p99), "{p99}");
        assert_eq!(quantile(&page, Some(&page), "x_seconds", 0.5), None);
        assert_eq!(count(&page, "x_seconds"), 10.0);
        assert_eq!(count(&page, "y_seconds"), 0.0);
        assert_eq!(quantile(&page, None, "y_seconds", 0.5), None);
    }

    #[test]
    fn a_quantile_between_two_scrapes_counts_only_what_came_between() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(Duration::from_secs(2));
        }
        let mut before = String::new();
        h.render(&mut before, "x_seconds", "test");
        for _ in 0..10 {
            h.observe(Duration::from_millis(3));
        }
        let mut after = String::new();
        h.render(&mut after, "x_seconds", "test");
        let p99 = quantile(&after, Some(&before), "x_seconds", 0.99).expect("p99");
        assert!(p99 <= 0.005, "{p99}");
    }
}
