//! Problems with retries, timeouts, deadlines, waits and awaits are reported at
//! the offending node, with a hint.

use sagaflow_definition::{Definition, Diagnostic};

/// All problems of a document that must not parse.
fn problems(yaml: &str) -> Vec<Diagnostic> {
    match Definition::parse("t.yaml", yaml) {
        Ok(definition) => panic!("expected problems, parsed {definition:#?}"),
        Err(diagnostics) => {
            for diagnostic in &diagnostics {
                assert_eq!(diagnostic.source, "t.yaml");
                assert!(
                    diagnostic.hint.as_deref().is_some_and(|h| !h.is_empty()),
                    "no hint: {diagnostic}"
                );
                assert!(diagnostic.line > 0 && diagnostic.column > 0, "{diagnostic}");
            }
            diagnostics.0
        }
    }
}

/// The single problem of a document, checked for position and wording.
#[track_caller]
fn single(yaml: &str, line: usize, column: usize, message: &str, hint: &str) {
    let problems = problems(yaml);
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    let problem = &problems[0];
    assert_eq!((problem.line, problem.column), (line, column), "{problem}");
    assert!(problem.message.contains(message), "message of: {problem}");
    let actual_hint = problem.hint.as_deref().unwrap_or_default();
    assert!(actual_hint.contains(hint), "hint of: {problem}");
}

/// A valid one-step command saga with `extra` appended to the step (at 4 spaces);
/// the first extra line is line 6.
fn command(extra: &str) -> String {
    format!("name: t\nversion: 1\nsteps:\n  - name: pay\n    command: {{topic: t, type: charge}}\n{extra}")
}

/// A one-step saga whose step `s` is `body` (at 4 spaces); the first body line is line 5.
fn step(body: &str) -> String {
    format!("name: t\nversion: 1\nsteps:\n  - name: s\n{body}")
}

/// A valid top level followed by `extra` and a one-step saga; the first extra line is line 3.
fn top(extra: &str) -> String {
    format!("name: t\nversion: 1\n{extra}steps:\n  - name: a\n    command: {{topic: t, type: x}}\n")
}

#[test]
fn a_step_does_exactly_one_thing() {
    single(
        &step("    wait: 10s\n    await: paid\n"),
        6,
        5,
        "step `s` has both `wait` and `await`; a step does exactly one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`",
        "split it into two steps",
    );
    let found = problems(&step(
        "    command: {topic: t, type: x}\n    until: every day 09:00 UTC\n    wait: 1s\n",
    ));
    let found: Vec<(usize, usize, &str)> = found
        .iter()
        .map(|p| (p.line, p.column, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (6, 5, "step `s` has both `command` and `until`; a step does exactly one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`"),
            (7, 5, "step `s` has both `command` and `wait`; a step does exactly one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`"),
        ]
    );
    single(
        &step("    output: {a: $.a}\n"),
        4,
        5,
        "step `s` does nothing: it needs one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`",
        "`wait: 10s` to pause",
    );
    // A typo of an action is reported once, as the typo.
    single(
        &step("    wiat: 10s\n"),
        5,
        5,
        "unknown field `wiat` in step `s`",
        "did you mean `wait`?",
    );
    single(
        &step("    sleep: 10s\n"),
        5,
        5,
        "unknown field `sleep` in step `s`",
        "did you mean `wait`?",
    );
}

#[test]
fn command_only_fields_are_refused_on_other_steps() {
    single(
        &step("    wait: 10s\n    compensation: {topic: t, type: undo}\n"),
        6,
        5,
        "`compensation` is only allowed on command steps, but step `s` is a `wait` step",
        "only a command's effect can be undone",
    );
    single(
        &step("    await: paid\n    retry: {max_attempts: 3}\n"),
        6,
        5,
        "`retry` is only allowed on command steps, but step `s` is an `await` step",
        "give `await:` a `timeout` and an `on_timeout`",
    );
    single(
        &step("    await: paid\n    timeout: 1h\n"),
        6,
        5,
        "`timeout` is only allowed on command steps, but step `s` is an `await` step",
        "put the timeout inside `await:`",
    );
    single(
        &step("    until: every day 09:00 UTC\n    timeout: 1h\n"),
        6,
        5,
        "`timeout` is only allowed on command steps, but step `s` is an `until` step",
        "remove `timeout`",
    );
    single(
        &step("    wait: 1h\n    deadline: 2h\n"),
        6,
        5,
        "`deadline` is only allowed on command and await steps, but step `s` is a `wait` step",
        "remove `deadline`",
    );
    single(
        &step("    wait: 1h\n    output: {a: $.a}\n"),
        6,
        5,
        "`output` is only allowed on command and await steps, but step `s` is a `wait` step",
        "has no result to copy",
    );
    single(
        &step("    await: paid\n    compensation_retry: {max_attempts: 3}\n"),
        6,
        5,
        "`compensation_retry` is only allowed on command steps, but step `s` is an `await` step",
        "only a command's effect can be undone",
    );
    single(
        &command("    compensation_retry: {max_attempts: 3}\n"),
        6,
        5,
        "`compensation_retry` in step `pay` has no `compensation` to retry",
        "add a `compensation:` command",
    );
}

#[test]
fn durations_are_positive_with_a_unit() {
    single(
        &command("    timeout: 30\n"),
        6,
        14,
        "`timeout` in step `pay` must be a duration with a unit, found the number `30`",
        "add a unit, e.g. `30s`",
    );
    single(
        &command("    timeout: 0s\n"),
        6,
        14,
        "`timeout` in step `pay` must be longer than zero",
        "positive duration",
    );
    single(
        &command("    deadline: 1.5s\n"),
        6,
        15,
        "invalid duration `1.5s` for `deadline` in step `pay`: fractions are not supported",
        "`500ms`, `10s`, `1m30s`, `24h`, `2d`",
    );
    single(
        &command("    timeout: -5s\n"),
        6,
        14,
        "invalid duration `-5s` for `timeout` in step `pay`: a duration cannot be negative",
        "whole numbers with a unit",
    );
    single(
        &command("    timeout: 5 minutes\n"),
        6,
        14,
        "invalid duration `5 minutes` for `timeout` in step `pay`: a duration has no spaces",
        "`1m30s`",
    );
    single(
        &step("    wait: 3w\n"),
        5,
        11,
        "invalid duration `3w` for `wait` in step `s`: unknown unit `w`; use `ms`, `s`, `m`, `h` or `d`",
        "`2d`",
    );
    single(
        &step("    wait: [10s]\n"),
        5,
        11,
        "`wait` in step `s` must be a duration such as `10s`, found a list",
        "`10s`",
    );
    single(
        &top("deadline: soon\n"),
        3,
        11,
        "invalid duration `soon` for the saga's `deadline`: expected a number at `soon`",
        "`24h`",
    );
    single(
        &top("deadline: 0ms\n"),
        3,
        11,
        "the saga's `deadline` must be longer than zero",
        "remove it",
    );
}

#[test]
fn retry_policies_are_validated() {
    single(
        &command("    retry: {backoff: 1s}\n"),
        6,
        12,
        "missing required field `max_attempts` in the `retry` of step `pay`",
        "counts the first attempt",
    );
    single(
        &command("    retry: {max_attempts: 0}\n"),
        6,
        27,
        "`max_attempts` in the `retry` of step `pay` must be at least 1, found 0",
        "`max_attempts: 1` never retries",
    );
    single(
        &command("    retry: {max_attempts: \"3\"}\n"),
        6,
        27,
        "`max_attempts` in the `retry` of step `pay` must be a number, found the string `3`",
        "remove the quotes: `max_attempts: 3`",
    );
    single(
        &command("    retry: {max_attempts: 2.5}\n"),
        6,
        27,
        "must be a whole number, found the number `2.5`",
        "counts the first attempt",
    );
    single(
        &command("    retry: {max_attempts: 99999999999}\n"),
        6,
        27,
        "`max_attempts` in the `retry` of step `pay` is too large",
        "4294967295",
    );
    single(
        &command("    retry: {max_attempt: 3}\n"),
        6,
        13,
        "unknown field `max_attempt` in the `retry` of step `pay`",
        "did you mean `max_attempts`?",
    );
    single(
        &command("    retry: 3\n"),
        6,
        12,
        "the `retry` of step `pay` must be a mapping, found the integer `3`",
        "`max_attempts`",
    );
    single(
        &command("    retry: {max_attempts: 3, jitter: ful}\n"),
        6,
        38,
        "unknown jitter `ful` in the `retry` of step `pay`",
        "did you mean `full`?",
    );
    single(
        &command("    retry: {max_attempts: 3, jitter: random}\n"),
        6,
        38,
        "unknown jitter `random`",
        "`none`, `full`",
    );
    single(
        &command("    retry: {max_attempts: 3, non_retryable: CARD_DECLINED}\n"),
        6,
        45,
        "`non_retryable` in the `retry` of step `pay` must be a list of error codes, found the string `CARD_DECLINED`",
        "non_retryable: [CARD_DECLINED",
    );
    single(
        &command("    retry: {max_attempts: 3, non_retryable: [A, {b: 1}]}\n"),
        6,
        49,
        "error codes in `non_retryable` in the `retry` of step `pay` must be text, found a mapping",
        "list the error codes",
    );
}

#[test]
fn backoffs_are_validated() {
    let backoff = |spec: &str| {
        command(&format!(
            "    retry:\n      max_attempts: 3\n      backoff: {spec}\n"
        ))
    };
    // The backoff value starts at line 8, column 16.
    single(
        &backoff("{type: expo, initial: 1s, max: 2s}"),
        8,
        23,
        "unknown backoff type `expo` in the backoff in the `retry` of step `pay`",
        "did you mean `exponential`?",
    );
    single(
        &backoff("{type: linear, interval: 1s}"),
        8,
        23,
        "unknown backoff type `linear`",
        "`fixed` and `exponential`",
    );
    single(
        &backoff("{initial: 1s, max: 2s}"),
        8,
        16,
        "missing required field `type` in the backoff in the `retry` of step `pay`",
        "`type: exponential`",
    );
    single(
        &backoff("{type: exponential, initial: 1s, interval: 1s, max: 2s}"),
        8,
        49,
        "`interval` does not apply to exponential backoff in the backoff in the `retry` of step `pay`",
        "takes `initial`, `multiplier` and `max`",
    );
    single(
        &backoff("{type: fixed, interval: 1s, max: 2s}"),
        8,
        44,
        "`max` does not apply to fixed backoff",
        "fixed backoff takes only `interval`",
    );
    single(
        &backoff("{type: fixed}"),
        8,
        16,
        "missing required field `interval` in the backoff in the `retry` of step `pay`",
        "interval: 1s",
    );
    single(
        &backoff("{type: exponential, initial: 1s}"),
        8,
        16,
        "missing required field `max` in the backoff",
        "max: 10s",
    );
    single(
        &backoff("{type: exponential, initial: 1s, multiplier: 0.5, max: 2s}"),
        8,
        61,
        "`multiplier` in the backoff in the `retry` of step `pay` must be a number of at least 1, found `0.5`",
        "`2` to double",
    );
    single(
        &backoff("{type: exponential, initial: 1s, multiplier: two, max: 2s}"),
        8,
        61,
        "`multiplier` in the backoff in the `retry` of step `pay` must be a number, found the string `two`",
        "`2` to double",
    );
    single(
        &backoff("{type: exponential, initial: 20s, max: 10s}"),
        8,
        45,
        "`initial` (20s) is longer than `max` (10s) in the backoff in the `retry` of step `pay`",
        "make it at least `initial`",
    );
    single(
        &backoff("{type: exponential, initial: 0s, max: 10s}"),
        8,
        45,
        "`initial` in the backoff in the `retry` of step `pay` must be longer than zero",
        "positive",
    );
    single(
        &backoff("0s"),
        8,
        16,
        "`backoff` in the `retry` of step `pay` must be longer than zero",
        "positive",
    );
}

#[test]
fn until_values_are_validated() {
    single(
        &step("    until: 2026-12-01T09:00:00\n"),
        5,
        12,
        "invalid instant `2026-12-01T09:00:00` in the `until` of step `s`: it has no UTC offset; add `Z` or an offset such as `+01:00`",
        "2026-12-01T09:00:00+01:00",
    );
    single(
        &step("    until: 2026-12-01\n"),
        5,
        12,
        "it has no time of day; write e.g. `2026-12-01T00:00:00Z`",
        "RFC 3339",
    );
    single(
        &step("    until: 2026-13-01T09:00:00Z\n"),
        5,
        12,
        "invalid instant `2026-13-01T09:00:00Z` in the `until` of step `s`: it is not an RFC 3339 date and time",
        "RFC 3339",
    );
    single(
        &step("    until: every Monday 25:00 Europe/Paris\n"),
        5,
        12,
        "invalid calendar `every Monday 25:00 Europe/Paris` in the `until` of step `s`: invalid time `25:00`: the hour must be between 00 and 23",
        "`every Monday 09:00 Europe/Paris` or `0 9 * * MON Europe/Paris`",
    );
    single(
        &step("    until: every Mondays 09:00 Europe/Paris\n"),
        5,
        12,
        "unknown day `Mondays`; did you mean `Monday`?",
        "every <day|weekday|weekend|Monday|Mon,Wed,Fri> [at] HH:MM[:SS] <Zone>",
    );
    single(
        &step("    until: 0 9 * * MON Europe/Lyon\n"),
        5,
        12,
        "invalid calendar `0 9 * * MON Europe/Lyon` in the `until` of step `s`: unknown time zone `Europe/Lyon`",
        "IANA names",
    );
    single(
        &step("    until: tomorrow\n"),
        5,
        12,
        "invalid calendar `tomorrow` in the `until` of step `s`",
        "cron",
    );
    single(
        &step("    until: $.departure..time\n"),
        5,
        12,
        "invalid context path in the `until` of step `s`: path `$.departure..time` has an empty segment",
        "`$.departure`",
    );
    single(
        &step("    until: $\n"),
        5,
        12,
        "the `until` of step `s` cannot use the whole context `$`",
        "`$.departure`",
    );
    single(
        &step("    until: 1796112000000\n"),
        5,
        12,
        "the `until` of step `s` must be a string, found the integer `1796112000000`",
        "quote the value",
    );
}

#[test]
fn awaits_are_validated() {
    single(
        &step("    await: {correlate: saga_id}\n"),
        5,
        12,
        "missing required field `event` in the `await` of step `s`",
        "event: customer_confirmed",
    );
    single(
        &step("    await: {event: customer confirmed}\n"),
        5,
        20,
        "invalid event name `customer confirmed` in the `await` of step `s`: it contains ' '",
        "letters, digits, `_`, `.` and `-`",
    );
    single(
        &step("    await: ''\n"),
        5,
        12,
        "invalid event name `` in the `await` of step `s`: it is empty",
        "customer_confirmed",
    );
    single(
        &step("    await: {event: paid, correlate: order.id}\n"),
        5,
        37,
        "`correlate` in the `await` of step `s` must be `saga_id` or a context path, found `order.id`",
        "write `$.order.id` to correlate on that context field",
    );
    single(
        &step("    await: {event: paid, correlate: $}\n"),
        5,
        37,
        "`correlate` in the `await` of step `s` cannot use the whole context `$`",
        "$.order.id",
    );
    single(
        &step("    await: {event: paid, on_timeout: fail}\n"),
        5,
        26,
        "`on_timeout` in the `await` of step `s` has no effect without `timeout`",
        "timeout: 24h",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: contine}\n"),
        5,
        51,
        "unknown action `contine` for `on_timeout` in the `await` of step `s`",
        "did you mean `continue`?",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: abort}\n"),
        5,
        51,
        "unknown action `abort`",
        "`fail`, `compensate`, or `{continue: <result>}`",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: [fail]}\n"),
        5,
        51,
        "`on_timeout` in the `await` of step `s` must be `fail`, `compensate` or `{continue: ...}`, found a list",
        "carry on",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: {proceed: {}}}\n"),
        5,
        52,
        "unknown field `proceed` in `on_timeout` in the `await` of step `s`",
        "known fields here are `continue`",
    );
    single(
        &step("    await: {event: paid, timout: 1h}\n"),
        5,
        26,
        "unknown field `timout` in the `await` of step `s`",
        "did you mean `timeout`?",
    );
    single(
        &step("    await: {event: paid, timeout: 0s}\n"),
        5,
        35,
        "`timeout` in the `await` of step `s` must be longer than zero",
        "positive",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: {continue: {ok: false}}}\n    output: {confirmed: $.confirmed, ok: $.ok}\n"),
        5,
        62,
        "the `continue` result of step `s` has nothing at `$.confirmed`, which `output` copies into `confirmed`",
        "on_timeout: {continue: {confirmed: false}}",
    );
    single(
        &step("    await: {event: paid, timeout: 1h, on_timeout: continue}\n    output: {confirmed: $.confirmed}\n"),
        5,
        51,
        "the `continue` result of step `s` has nothing at `$.confirmed`",
        "add the field to the `continue:` value",
    );
}

#[test]
fn defaults_are_validated_and_misplaced_fields_point_home() {
    single(
        &top("defaults:\n  retries: {max_attempts: 3}\n"),
        4,
        3,
        "unknown field `retries` in `defaults`",
        "did you mean `retry`?",
    );
    single(
        &top("defaults:\n  timeout: 0s\n"),
        4,
        12,
        "`timeout` in `defaults` must be longer than zero",
        "positive",
    );
    single(
        &top("defaults:\n  retry: {max_attempts: 0}\n"),
        4,
        25,
        "`max_attempts` in the `retry` of `defaults` must be at least 1, found 0",
        "never retries",
    );
    single(
        &top("defaults:\n  deadline: 1h\n"),
        4,
        3,
        "unknown field `deadline` in `defaults`",
        "`deadline` belongs under an item of `steps:` or the top level of the file",
    );
    single(
        &top("timeout: 5s\n"),
        3,
        1,
        "unknown field `timeout` in the saga definition",
        "`timeout` belongs under an item of `steps:`, `defaults:` or `await:`",
    );
    single(
        &top("defaults: [timeout]\n"),
        3,
        11,
        "`defaults` must be a mapping, found a list",
        "`timeout`, `retry` and `compensation_retry`",
    );
    single(
        &command("    max_attempts: 3\n"),
        6,
        5,
        "unknown field `max_attempts` in step `pay`",
        "`max_attempts` belongs under `retry:` or `compensation_retry:`",
    );
}

#[test]
fn broken_defaults_do_not_hide_step_problems() {
    let yaml = "\
name: t
version: 1
defaults:
  retry: {max_attempts: 0}
steps:
  - name: a
    wait: 0s
  - name: b
    command: {topic: t, type: x}
    timeout: 10
";
    let found: Vec<(usize, usize, String)> = problems(yaml)
        .into_iter()
        .map(|p| (p.line, p.column, p.message))
        .collect();
    assert_eq!(
        found,
        [
            (
                4,
                25,
                "`max_attempts` in the `retry` of `defaults` must be at least 1, found 0"
                    .to_owned()
            ),
            (
                7,
                11,
                "`wait` in step `a` must be longer than zero".to_owned()
            ),
            (
                10,
                14,
                "`timeout` in step `b` must be a duration with a unit, found the number `10`"
                    .to_owned()
            ),
        ]
    );
}
