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
//!   [`Action::Wait`]) or `await` (wait for an external event, [`Action::Await`]),
//!   or holds other steps: `parallel`, `choice` or `for_each` (see
//!   [below](#graphs-conditions-parallel-branches-choices-and-loops)).
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
//!
//! # Graphs: conditions, parallel branches, choices and loops
//!
//! ```yaml
//! name: order
//! version: 2
//! limits:                        # optional
//!   for_each_items: 500          # most elements a `for_each` may run over (default 1000)
//! steps:
//!   - name: screen
//!     when: $.customer.vip != true and $.amount > 100   # any step; skipped unless it holds
//!     command: {topic: order.risk.commands, type: screen}
//!   - name: book
//!     parallel:                  # two branches or more, run at the same time
//!       - name: flight           # `[a-z0-9_-]+`, unique within the step
//!         steps:                 # one step or more, of any kind (nesting allowed)
//!           - {name: flight_booking, command: {topic: order.flight.commands, type: book}, output: {booking_id: $.id}}
//!       - name: hotel
//!         key: stay              # where the branch's outputs land (default: the branch name)
//!         steps:
//!           - {name: hotel_booking, command: {topic: order.hotel.commands, type: book}, output: {booking_id: $.id}}
//!     join: any                  # `all` (the default), `any` or `{at_least: N}`
//!   - name: route
//!     choice:                    # one branch or more; the first whose `when` holds runs
//!       - when: $.country in ['FR', 'DE']
//!         steps: [{name: ship_eu, command: {topic: order.eu.commands, type: ship}}]
//!       - when: exists($.coupon)
//!         steps: [{name: ship_promo, command: {topic: order.promo.commands, type: ship}}]
//!     otherwise:                 # optional; without it, no match skips the step
//!       - {name: ship_world, command: {topic: order.world.commands, type: ship}}
//!   - name: ship
//!     for_each: $.warehouses     # a list in the context
//!     max_concurrency: 5         # elements in flight at once (default 10)
//!     join: {at_least: 2}        # `all` (the default), `any` or `{at_least: N}`
//!     key: shipments             # where the results land (default: the step name)
//!     steps:                     # one step or more; they read `$.item` and `$.index`
//!       - {name: ship_one, command: {topic: order.ship.commands, type: ship, payload: {warehouse: $.item}}, output: {tracking: $.tracking}}
//!   - name: notify
//!     command: {topic: order.notify.commands, type: send, payload: {flight: $.flight.booking_id, hotel: $.stay.booking_id, first: $.shipments.0.tracking}}
//! ```
//!
//! * `when` ([`Step::when`], a [`Condition`]) may be on any step, nested ones included.
//!   A YAML boolean is the literal (`when: true`); quote a condition that starts with `[`
//!   or `{` or contains `: ` or ` #`, which YAML would read otherwise.
//! * `parallel` ([`Action::Parallel`]) runs its branches ([`Branch`]) at once; `join`
//!   ([`Join`]) says when the step is done (`at_least` is 1 to the number of branches).
//!   `choice` ([`Action::Choice`]) runs the first branch ([`ChoiceBranch`]) whose `when`
//!   holds, else `otherwise`. `for_each` ([`Action::ForEach`]) runs its `steps` once per
//!   element of a context path (not `$` itself: the context is an object); `join` and
//!   `max_concurrency` (at least 1) are optional.
//! * The step fields `join` (parallel and for_each), `otherwise` (choice), `key`,
//!   `max_concurrency` and `steps` (for_each) belong to their kind of step. Container
//!   steps take no `compensation`, `compensation_retry`, `retry`, `timeout`, `deadline`
//!   or `output`: put them on the steps inside.
//! * Step names are unique across the whole definition, nested steps included
//!   ([`Definition::step`] finds any step). Saga `defaults` apply to nested command
//!   steps as to top-level ones.
//! * Where results land: the outputs of a branch's steps under the branch's key
//!   (`$.stay.booking_id`); a for_each's as a list under its key, one object per element
//!   with the outputs of its steps (`$.shipments.0.tracking`); a choice branch's steps
//!   write like any step. Two branches of a step must not share a key, and a branch or
//!   for_each key must not be an `output` key of a step of the same sequence or of an
//!   enclosing one.
//! * A path read after a parallel or for_each step (in a `when`, a choice condition, a
//!   payload, `correlate`, `until` or `for_each`) that starts with its key must name
//!   something its steps write: `$.flight.bookng_id` is refused with the keys the branch
//!   does write. Reads before or inside the step are not checked, since the saga's input
//!   may use the same key (as `examples/parallel-trip.yaml` does).
//!
//! ## Conditions
//!
//! ```text
//! expr  := or
//! or    := and ('or' and)*
//! and   := not ('and' not)*
//! not   := 'not' not | cmp
//! cmp   := value (('==' | '!=' | '<' | '<=' | '>' | '>=' | 'in') value)?
//! value := path | number | string | 'true' | 'false' | 'null'
//!        | '[' (value (',' value)*)? ']' | 'exists' '(' path ')' | '(' expr ')'
//! ```
//!
//! Paths are those of payloads (`$.a.b`, `$.lines.0`); numbers are integers or decimals
//! with an optional `-` (`100`, `-3`, `12.5`); strings take single or double quotes, `\`
//! escaping a quote or itself. Keywords are lower case. On the saga context:
//!
//! * a missing path is `null`; `exists($.path)` is true when the path is present, even
//!   holding `null`;
//! * `==` and `!=` compare JSON values, numbers by value (`1 == 1.0`); `<`, `<=`, `>`,
//!   `>=` compare two numbers or two strings; `a in b` is membership in a list, a
//!   substring of a string, or a key of an object;
//! * `and`, `or` and `not` short-circuit and take booleans, `null` counting as false,
//!   as does the whole condition. Anything else fails the evaluation with an
//!   [`EvalError`] that names the operand and its value.
//!
//! Mistakes visible in the text are refused when parsing, at their character: syntax,
//! comparisons of literals of different types (`'a' < 3`), non-boolean literals where a
//! boolean is needed (`$.vip and 'yes'`).
//!
//! ```
//! use sagaflow_definition::{Condition, Definition};
//! use serde_json::json;
//!
//! let condition = Condition::parse("$.country in ['FR', 'DE'] and $.amount >= 100").unwrap();
//! assert_eq!(condition.eval(&json!({"country": "FR", "amount": 120})), Ok(true));
//! assert_eq!(
//!     condition.eval(&json!({"country": "FR", "amount": "120"})).unwrap_err().to_string(),
//!     "condition `$.country in ['FR', 'DE'] and $.amount >= 100`: cannot compare a string with a number: `$.amount` is \"120\""
//! );
//!
//! let yaml = "
//! name: order
//! version: 1
//! steps:
//!   - name: screen
//!     when: $.amount > 100 adn $.vip
//!     command: {topic: order.risk.commands, type: screen}
//! ";
//! assert_eq!(
//!     Definition::parse("order.yaml", yaml).unwrap_err().to_string(),
//!     "order.yaml:6:26: error: invalid condition in the `when` of step `screen`: unknown word `adn`\n  hint: did you mean `and`?"
//! );
//! ```

mod calendar;
mod diagnostics;
mod duration;
mod expr;
mod instant;
mod load;
mod model;
mod parse;
mod registry;
mod retry;
mod scope;
mod template;
mod yaml;

pub use calendar::Calendar;
pub use diagnostics::{did_you_mean, Diagnostic, Diagnostics};
pub use duration::parse_duration;
pub use expr::{Condition, EvalError, ExprError};
pub use instant::{instant_from_json, parse_instant};
pub use load::{load_dir, load_file};
pub use model::{
    Action, Await, Branch, Choice, ChoiceBranch, CommandSpec, Correlation, Definition, ForEach,
    Join, Limits, OnTimeout, Parallel, Step, StepDefaults, Wait,
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
