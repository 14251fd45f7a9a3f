//! Declarative, versioned saga definitions: parsing, validation and payload templates.
//!
//! A definition is YAML written by a saga author. [`Definition::parse`] turns it
//! into typed form or reports *every* problem at once, each with a line, a
//! column and a hint, so an author can fix a file in one pass:
//!
//! ```
//! use sagaflow_definition::Definition;
//!
//! let yaml = "
//! name: trip
//! version: 1
//! steps:
//!   - name: payment
//!     command: {topic: trip.payment.commands, type: charge}
//!     compensate: {topic: trip.payment.commands, type: refund}
//! ";
//! let problems = Definition::parse("trip.yaml", yaml).unwrap_err();
//! assert_eq!(
//!     problems.to_string(),
//!     "trip.yaml:7:5: error: unknown field `compensate` in step `payment`\n  hint: did you mean `compensation`?"
//! );
//! ```
//!
//! Payload templates read the saga context: a string `$.a.b` is replaced by the
//! context's field `a.b`, `$` by the whole context, and `$$…` escapes a literal `$`.
//! Parsing is pure; [`load_file`] and [`load_dir`] are the only I/O.
//!
//! # Durable time: retries, timeouts, deadlines, waits and awaits
//!
//! ```yaml
//! name: order
//! version: 1
//! deadline: 10m                 # optional: the whole saga must end within 10 minutes, else it compensates
//! defaults:                     # optional: for command steps that do not set their own
//!   timeout: 30s
//!   retry: {max_attempts: 5, backoff: {type: exponential, initial: 200ms, multiplier: 2, max: 10s}, jitter: full, non_retryable: [CARD_DECLINED]}
//!   compensation_retry: {max_attempts: 10, backoff: {type: fixed, interval: 1s}}
//! steps:
//!   - name: payment
//!     command: {topic: order.payment.commands, type: charge, payload: {amount: $.amount}}
//!     compensation: {topic: order.payment.commands, type: refund}
//!     retry: {max_attempts: 3}  # replaces `defaults.retry` wholesale
//!     timeout: 5s               # per attempt; no reply in time = a retryable failure
//!     deadline: 2m              # across all attempts, from the first dispatch
//!     output: {payment_id: $.payment_id}
//!   - name: cool_off
//!     wait: 10s
//!   - name: monday
//!     until: every Monday 09:00 Europe/Paris
//!   - name: at_time
//!     until: "2026-12-01T09:00:00+01:00"
//!   - name: at_ctx
//!     until: $.departure
//!   - name: confirm
//!     await: {event: customer_confirmed, correlate: $.order.id, timeout: 24h, on_timeout: {continue: {confirmed: false}}}
//!     output: {confirmed: $.confirmed}
//! ```
//!
//! * A step does exactly one of `command` (send a command, [`Action::Command`]),
//!   `wait` (pause for a duration), `until` (pause until a time; both are
//!   [`Action::Wait`]) or `await` (wait for an external event, [`Action::Await`]).
//! * `compensation`, `retry`, `compensation_retry` and `timeout` are only allowed on
//!   command steps, and `compensation_retry` only next to a `compensation`;
//!   `deadline` and `output` on command and await steps.
//! * Durations are whole numbers with a unit, largest first: `500ms`, `10s`,
//!   `1m30s`, `24h`, `2d` ([`parse_duration`]); every duration must be positive.
//! * A retry policy ([`RetryPolicy`]) has `max_attempts` (required, at least 1; it
//!   counts the first attempt), `backoff` (`{type: fixed, interval}`,
//!   `{type: exponential, initial, multiplier (default 2, at least 1), max}` with
//!   `initial <= max`, or a duration as a shorthand for fixed; default fixed 1s),
//!   `jitter` (`none` (default), `full` or `equal`) and `non_retryable` (error codes
//!   never retried). Saga `defaults` are merged into each command step by the
//!   parser: a step's own `retry`, `compensation_retry` or `timeout` replaces the
//!   default as a whole.
//! * `until` takes an RFC 3339 instant with an offset ([`Wait::UntilInstant`]), a
//!   path into the saga context holding one ([`Wait::UntilContext`]), or a calendar
//!   expression ([`Wait::Calendar`], see [`Calendar`]): `every <day | weekday |
//!   weekend | Monday | Mon,Wed,Fri> [at] HH:MM[:SS] <Zone>` or cron `minute hour
//!   day-of-month month day-of-week <Zone>`. Quote cron text that starts with `*`,
//!   which YAML reads as an alias: `until: "*/15 * * * * UTC"`.
//! * `await` takes `event` (`[A-Za-z0-9_.-]+`, required), `correlate` (`saga_id`,
//!   the default, or a context path such as `$.order.id`), `timeout`, and
//!   `on_timeout` (`fail`, `compensate` (the default) or `{continue: <result>}`, the
//!   result the step's `output` then reads; `continue` alone is `{}`). `on_timeout`
//!   needs a `timeout`. `await: <event>` is short for `await: {event: <event>}`.
//!
//! Calendars follow wall-clock time in their IANA zone across daylight saving
//! changes: a local time skipped by a spring-forward gap fires at the wall time
//! shifted by the gap (02:30 in Europe/Paris on the last Sunday of March fires at
//! 03:30 CEST); a local time repeated by a fall-back fold fires once, at its first
//! (summer-time) occurrence. [`Calendar::next_after`] is pure.

mod calendar;
mod diagnostics;
mod duration;
mod instant;
mod load;
mod model;
mod parse;
mod registry;
mod retry;
mod template;
mod yaml;

pub use calendar::Calendar;
pub use diagnostics::{Diagnostic, Diagnostics};
pub use duration::parse_duration;
pub use instant::{instant_from_json, parse_instant};
pub use load::{load_dir, load_file};
pub use model::{
    Action, Await, CommandSpec, Correlation, Definition, OnTimeout, Step, StepDefaults, Wait,
};
pub use registry::Registry;
pub use retry::{Backoff, Jitter, RetryPolicy};
pub use template::{Path, PathError, RenderError, Template};

/// Errors of this crate other than definition problems (which are [`Diagnostics`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A different definition is already registered under the same `name@version`.
    #[error("definition `{key}` is already registered with different content; publish the change under a new version")]
    Conflict {
        /// The `name@version` key.
        key: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
