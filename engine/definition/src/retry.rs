//! Retry policies: how often a failed command is tried again, and how long to wait in between.

use std::time::Duration;

/// How a failed command is retried: up to `max_attempts` attempts in total, with a
/// [`Backoff`] between them, spread by [`Jitter`], never for error codes in `non_retryable`.
///
/// The default is a single attempt (no retry).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included; at least 1 (1 means "never retry").
    pub max_attempts: u32,
    /// The delay before each retry, before jitter.
    pub backoff: Backoff,
    /// How the delay is randomised to spread retries of many sagas.
    pub jitter: Jitter,
    /// Error codes reported by participants that are never retried (the step fails at once).
    pub non_retryable: Vec<String>,
}

/// The delay before a retry, as a function of how many attempts failed so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        interval: Duration,
    },
    /// `min(max, initial * multiplier^(n-1))` after the `n`-th failed attempt.
    Exponential {
        /// The delay after the first failed attempt.
        initial: Duration,
        /// Growth factor per failed attempt, at least 1.
        multiplier: f64,
        /// The cap; never exceeded.
        max: Duration,
    },
}

/// How a backoff delay `base` is randomised, from a number `unit` in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Exactly `base`.
    #[default]
    None,
    /// `unit * base`: anywhere between zero and `base`.
    Full,
    /// `base/2 + unit * base/2`: between half of `base` and `base`.
    Equal,
}

impl Default for RetryPolicy {
    /// One attempt (no retry), fixed 1s backoff, no jitter, every code retryable.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed {
                interval: Duration::from_secs(1),
            },
            jitter: Jitter::None,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `failed_attempt + 1` after attempt `failed_attempt` (1-based) failed.
    ///
    /// `unit` is a number in [0, 1) the caller derives deterministically (e.g. from a hash)
    /// so decisions stay pure. Values outside that range are clamped (NaN counts as 0).
    /// `failed_attempt` 0 is treated as 1. Whether another attempt is allowed at all is
    /// [`RetryPolicy::allows_attempt_after`] and [`RetryPolicy::retries_code`].
    pub fn delay(&self, failed_attempt: u32, unit: f64) -> Duration {
        let base = self.backoff.base(failed_attempt);
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => scale(base, unit),
            Jitter::Equal => {
                let half = base / 2;
                half + scale(base - half, unit)
            }
        }
    }

    /// Bounds [min, max] the delay can take for this attempt over all `unit` values (used by tests).
    ///
    /// With jitter the upper bound is approached as `unit` nears 1; it is reached exactly
    /// only without jitter.
    pub fn delay_bounds(&self, failed_attempt: u32) -> (Duration, Duration) {
        let base = self.backoff.base(failed_attempt);
        match self.jitter {
            Jitter::None => (base, base),
            Jitter::Full => (Duration::ZERO, base),
            Jitter::Equal => (base / 2, base),
        }
    }

    /// Whether a failure with this error code may be retried at all by the policy (code not in non_retryable).
    pub fn retries_code(&self, code: &str) -> bool {
        !self.non_retryable.iter().any(|listed| listed == code)
    }

    /// Whether the policy allows another attempt after attempt `failed_attempt` (1-based) failed,
    /// i.e. `failed_attempt < max_attempts`.
    pub fn allows_attempt_after(&self, failed_attempt: u32) -> bool {
        failed_attempt < self.max_attempts
    }
}

impl Backoff {
    /// The delay after the `failed_attempt`-th failure (1-based; 0 counts as 1), before jitter.
    pub fn base(&self, failed_attempt: u32) -> Duration {
        match *self {
            Backoff::Fixed { interval } => interval,
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                // Past a few thousand doublings the factor is infinite anyway.
                let exponent = i32::try_from(failed_attempt.max(1) - 1)
                    .unwrap_or(i32::MAX)
                    .min(10_000);
                let factor = if multiplier.is_finite() && multiplier >= 1.0 {
                    multiplier.powi(exponent)
                } else {
                    1.0
                };
                // Exact for delays below 2^53 ns (104 days), close enough beyond.
                let nanos = (initial.as_nanos() as f64 * factor).round();
                let cap = max.as_nanos() as f64;
                if !nanos.is_finite() || nanos >= cap {
                    max
                } else {
                    from_nanos_f64(nanos).map_or(max, |delay| delay.min(max))
                }
            }
        }
    }
}

/// `duration * factor` for a factor in [0, 1], rounded down to the nanosecond, so it never exceeds `duration`.
fn scale(duration: Duration, factor: f64) -> Duration {
    let nanos = (duration.as_nanos() as f64 * factor).floor();
    from_nanos_f64(nanos).map_or(duration, |scaled| scaled.min(duration))
}

/// A non-negative, finite number of nanoseconds as a duration.
fn from_nanos_f64(nanos: f64) -> Option<Duration> {
    if !nanos.is_finite() || nanos < 0.0 {
        return None;
    }
    if nanos < u64::MAX as f64 {
        return Some(Duration::from_nanos(nanos as u64));
    }
    Duration::try_from_secs_f64(nanos / 1e9).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn exponential(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            backoff: Backoff::Exponential {
                initial: ms(200),
                multiplier: 2.0,
                max: ms(10_000),
            },
            jitter,
            non_retryable: vec!["CARD_DECLINED".to_owned()],
        }
    }

    const UNITS: [f64; 7] = [0.0, 0.1, 0.25, 0.5, 0.75, 0.999, 0.999_999_999];

    #[test]
    fn default_is_a_single_attempt() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 1);
        assert!(!policy.allows_attempt_after(1));
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(policy.jitter, Jitter::None);
        assert!(policy.retries_code("ANYTHING"));
    }

    #[test]
    fn fixed_backoff_is_constant() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Fixed { interval: ms(1500) },
            ..RetryPolicy::default()
        };
        for attempt in [0, 1, 2, 3, 100, u32::MAX] {
            assert_eq!(policy.delay(attempt, 0.7), ms(1500));
            assert_eq!(policy.delay_bounds(attempt), (ms(1500), ms(1500)));
        }
        assert!(policy.allows_attempt_after(2));
        assert!(!policy.allows_attempt_after(3));
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let policy = exponential(Jitter::None);
        let delays: Vec<Duration> = (1..=9).map(|n| policy.delay(n, 0.3)).collect();
        assert_eq!(
            delays,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(10_000),
                ms(10_000),
                ms(10_000)
            ]
        );
        // Attempt 0 is attempt 1; enormous attempt numbers saturate at the cap.
        assert_eq!(policy.delay(0, 0.0), ms(200));
        assert_eq!(policy.delay(u32::MAX, 0.0), ms(10_000));
    }

    #[test]
    fn fractional_multipliers_are_exact_enough() {
        let policy = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff::Exponential {
                initial: ms(100),
                multiplier: 1.5,
                max: Duration::from_secs(60),
            },
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(1, 0.0), ms(100));
        assert_eq!(policy.delay(2, 0.0), ms(150));
        assert_eq!(policy.delay(3, 0.0), ms(225));
        assert_eq!(policy.delay(4, 0.0), Duration::from_micros(337_500));
        // A multiplier of 1 is a fixed backoff.
        let flat = RetryPolicy {
            backoff: Backoff::Exponential {
                initial: ms(100),
                multiplier: 1.0,
                max: Duration::from_secs(60),
            },
            ..policy
        };
        assert_eq!(flat.delay(50, 0.0), ms(100));
    }

    #[test]
    fn full_jitter_stays_between_zero_and_base() {
        let policy = exponential(Jitter::Full);
        for attempt in 1..=10 {
            let base = exponential(Jitter::None).delay(attempt, 0.0);
            assert_eq!(policy.delay_bounds(attempt), (Duration::ZERO, base));
            for unit in UNITS {
                let delay = policy.delay(attempt, unit);
                assert!(delay <= base, "{attempt} {unit}: {delay:?} > {base:?}");
            }
            assert_eq!(policy.delay(attempt, 0.0), Duration::ZERO);
        }
        assert_eq!(policy.delay(2, 0.5), ms(200));
        assert_eq!(policy.delay(2, 0.25), ms(100));
    }

    #[test]
    fn equal_jitter_stays_between_half_and_base() {
        let policy = exponential(Jitter::Equal);
        for attempt in 1..=10 {
            let base = exponential(Jitter::None).delay(attempt, 0.0);
            assert_eq!(policy.delay_bounds(attempt), (base / 2, base));
            for unit in UNITS {
                let delay = policy.delay(attempt, unit);
                assert!(
                    delay >= base / 2 && delay <= base,
                    "{attempt} {unit}: {delay:?}"
                );
            }
        }
        assert_eq!(policy.delay(3, 0.0), ms(400));
        assert_eq!(policy.delay(3, 0.5), ms(600));
    }

    #[test]
    fn delays_are_monotonic_in_unit_and_within_bounds() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
            let policy = exponential(jitter);
            for attempt in 1..=12 {
                let (low, high) = policy.delay_bounds(attempt);
                assert!(low <= high);
                let mut previous = Duration::ZERO;
                for step in 0..100 {
                    let unit = f64::from(step) / 100.0;
                    let delay = policy.delay(attempt, unit);
                    assert!(low <= delay && delay <= high, "{jitter:?} {attempt} {unit}");
                    assert!(delay >= previous, "{jitter:?} {attempt} {unit}");
                    previous = delay;
                }
                assert_eq!(policy.delay(attempt, 0.0), low);
            }
        }
    }

    #[test]
    fn out_of_range_units_are_clamped() {
        let policy = exponential(Jitter::Full);
        assert_eq!(policy.delay(1, -3.0), Duration::ZERO);
        assert_eq!(policy.delay(1, f64::NAN), Duration::ZERO);
        assert_eq!(policy.delay(1, 7.0), ms(200));
        assert_eq!(policy.delay(1, f64::INFINITY), ms(200));
    }

    #[test]
    fn non_retryable_codes_are_not_retried() {
        let policy = exponential(Jitter::None);
        assert!(!policy.retries_code("CARD_DECLINED"));
        assert!(policy.retries_code("card_declined"));
        assert!(policy.retries_code("TIMEOUT"));
        assert!(policy.retries_code(""));
    }
}
