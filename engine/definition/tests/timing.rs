//! Durable-time features of definitions: retries, timeouts, deadlines, waits and awaits.

use std::time::Duration;

use sagaflow_definition::{
    Action, Await, Backoff, Calendar, Correlation, Definition, Jitter, OnTimeout, Path,
    RetryPolicy, StepDefaults, Wait,
};
use serde_json::json;

fn parse(yaml: &str) -> Definition {
    Definition::parse("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn path(text: &str) -> Path {
    Path::parse(text).unwrap()
}

/// The example of the crate documentation.
const ORDER: &str = r#"
name: order
version: 1
deadline: 10m
defaults:
  timeout: 30s
  retry: {max_attempts: 5, backoff: {type: exponential, initial: 200ms, multiplier: 2, max: 10s}, jitter: full, non_retryable: [CARD_DECLINED]}
  compensation_retry: {max_attempts: 10, backoff: {type: fixed, interval: 1s}}
steps:
  - name: reserve
    command: {topic: t, type: reserve}
    compensation: {topic: t, type: release}
  - name: payment
    command: {topic: t, type: charge, payload: {amount: $.amount}}
    compensation: {topic: t, type: refund}
    retry: {max_attempts: 3}
    timeout: 5s
    deadline: 2m
    output: {payment_id: $.payment_id}
  - name: cool_off
    wait: 10s
  - name: monday
    until: every Monday 09:00 Europe/Paris
  - name: at_time
    until: "2026-12-01T09:00:00+01:00"
  - name: at_ctx
    until: $.departure
  - name: confirm
    await: {event: customer_confirmed, correlate: $.order.id, timeout: 24h, on_timeout: {continue: {confirmed: false}}}
    deadline: 2d
    output: {confirmed: $.confirmed}
"#;

fn exponential_default() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        backoff: Backoff::Exponential {
            initial: ms(200),
            multiplier: 2.0,
            max: secs(10),
        },
        jitter: Jitter::Full,
        non_retryable: vec!["CARD_DECLINED".to_owned()],
    }
}

fn compensation_default() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        backoff: Backoff::Fixed { interval: secs(1) },
        jitter: Jitter::None,
        non_retryable: Vec::new(),
    }
}

#[test]
fn saga_deadline_and_defaults_are_parsed() {
    let order = parse(ORDER);
    assert_eq!(order.deadline, Some(secs(600)));
    assert_eq!(
        order.defaults,
        StepDefaults {
            retry: exponential_default(),
            timeout: Some(secs(30)),
            compensation_retry: compensation_default(),
        }
    );
}

#[test]
fn defaults_apply_to_command_steps_without_their_own_settings() {
    let order = parse(ORDER);
    let reserve = order.step("reserve").unwrap();
    assert_eq!(reserve.retry, exponential_default());
    assert_eq!(reserve.compensation_retry, compensation_default());
    assert_eq!(reserve.timeout, Some(secs(30)));
    assert_eq!(reserve.deadline, None);
    assert_eq!(reserve.command().unwrap().command_type, "reserve");
}

#[test]
fn a_step_retry_replaces_the_default_wholesale() {
    let order = parse(ORDER);
    let payment = order.step("payment").unwrap();
    // Only `max_attempts` was given: the rest is the policy default, not the saga default.
    assert_eq!(
        payment.retry,
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    );
    assert_eq!(payment.compensation_retry, compensation_default());
    assert_eq!(payment.timeout, Some(secs(5)));
    assert_eq!(payment.deadline, Some(secs(120)));
    assert_eq!(
        payment.output,
        [("payment_id".to_owned(), path("$.payment_id"))]
    );
}

#[test]
fn wait_steps_take_durations_instants_context_paths_and_calendars() {
    let order = parse(ORDER);
    let wait = |name: &str| order.step(name).unwrap().wait().cloned().unwrap();
    assert_eq!(wait("cool_off"), Wait::For(secs(10)));
    assert_eq!(
        wait("monday"),
        Wait::Calendar(Calendar::parse("every Monday 09:00 Europe/Paris").unwrap())
    );
    // 09:00 at +01:00 is 08:00 UTC.
    assert_eq!(wait("at_time"), Wait::UntilInstant(1_796_112_000_000));
    assert_eq!(wait("at_ctx"), Wait::UntilContext(path("$.departure")));
    for name in ["cool_off", "monday", "at_time", "at_ctx"] {
        let step = order.step(name).unwrap();
        assert!(step.command().is_none() && step.awaited().is_none());
        // Defaults are for commands: waits neither retry nor time out.
        assert_eq!(step.retry, RetryPolicy::default());
        assert_eq!(step.compensation_retry, RetryPolicy::default());
        assert_eq!((step.timeout, step.deadline), (None, None));
        assert!(step.compensation.is_none() && step.output.is_empty());
    }
}

#[test]
fn await_steps_are_parsed_with_correlation_timeout_and_default_result() {
    let order = parse(ORDER);
    let confirm = order.step("confirm").unwrap();
    assert_eq!(
        confirm.action,
        Action::Await(Await {
            event: "customer_confirmed".to_owned(),
            correlate: Correlation::Context(path("$.order.id")),
            timeout: Some(secs(86_400)),
            on_timeout: OnTimeout::Continue(json!({"confirmed": false})),
        })
    );
    assert_eq!(confirm.deadline, Some(secs(172_800)));
    assert_eq!(confirm.timeout, None);
    assert_eq!(confirm.retry, RetryPolicy::default());
    // On timeout, the output mapping reads the default result like an event payload.
    let Some(OnTimeout::Continue(result)) = confirm.awaited().map(|a| a.on_timeout.clone()) else {
        panic!("expected a continue result");
    };
    assert_eq!(
        serde_json::Value::Object(confirm.map_output(&result).unwrap()),
        json!({"confirmed": false})
    );
}

/// A one-step saga whose step is `step` (indented by 4).
fn one_step(step: &str) -> Definition {
    parse(&format!("name: t\nversion: 1\nsteps:\n  - name: s\n{step}"))
}

fn awaited(spec: &str) -> Await {
    one_step(&format!("    await: {spec}\n")).steps[0]
        .awaited()
        .cloned()
        .unwrap()
}

#[test]
fn await_defaults_and_shorthands() {
    let plain = Await {
        event: "paid".to_owned(),
        correlate: Correlation::SagaId,
        timeout: None,
        on_timeout: OnTimeout::Compensate,
    };
    assert_eq!(awaited("paid"), plain);
    assert_eq!(awaited("{event: paid}"), plain);
    assert_eq!(awaited("{event: paid, correlate: saga_id}"), plain);
    assert_eq!(
        awaited("{event: v1.order-paid_ok}").event,
        "v1.order-paid_ok"
    );
    let on_timeout = |action: &str| {
        awaited(&format!(
            "{{event: paid, timeout: 1h, on_timeout: {action}}}"
        ))
        .on_timeout
    };
    assert_eq!(on_timeout("fail"), OnTimeout::Fail);
    assert_eq!(on_timeout("compensate"), OnTimeout::Compensate);
    assert_eq!(on_timeout("continue"), OnTimeout::Continue(json!({})));
    assert_eq!(
        on_timeout("{continue: {a: [1, 2.5, true, null, text, $.not_a_ref]}}"),
        OnTimeout::Continue(json!({"a": [1, 2.5, true, null, "text", "$.not_a_ref"]}))
    );
    assert_eq!(on_timeout("{continue: 7}"), OnTimeout::Continue(json!(7)));
    assert_eq!(
        awaited("{event: paid, timeout: 1h}").on_timeout,
        OnTimeout::Compensate
    );
}

#[test]
fn retry_policies_take_every_backoff_and_jitter() {
    let retry = |spec: &str| {
        one_step(&format!(
            "    command: {{topic: t, type: x}}\n    retry: {spec}\n"
        ))
        .steps[0]
            .retry
            .clone()
    };
    assert_eq!(
        retry("{max_attempts: 4, backoff: 2s, jitter: equal, non_retryable: [402, CARD_DECLINED, 402]}"),
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff::Fixed { interval: secs(2) },
            jitter: Jitter::Equal,
            non_retryable: vec!["402".to_owned(), "CARD_DECLINED".to_owned()],
        }
    );
    assert_eq!(
        retry(
            "{max_attempts: 2, backoff: {type: exponential, initial: 1s, max: 1m}, jitter: none}"
        )
        .backoff,
        Backoff::Exponential {
            initial: secs(1),
            multiplier: 2.0,
            max: secs(60),
        }
    );
    assert_eq!(
        retry("{max_attempts: 2, backoff: {type: exponential, initial: 1s, multiplier: 1.5, max: 1s}}")
            .backoff,
        Backoff::Exponential {
            initial: secs(1),
            multiplier: 1.5,
            max: secs(1),
        }
    );
    assert_eq!(
        retry("{max_attempts: 1, backoff: {type: fixed, interval: 1m30s}}").backoff,
        Backoff::Fixed { interval: secs(90) }
    );
}

#[test]
fn compensation_retry_and_deadline_on_a_command_step() {
    let step = one_step(
        "    command: {topic: t, type: x}\n    compensation: {topic: t, type: undo}\n    compensation_retry: {max_attempts: 7}\n    deadline: 1h\n",
    )
    .steps
    .remove(0);
    assert_eq!(step.compensation_retry.max_attempts, 7);
    assert_eq!(step.retry, RetryPolicy::default());
    assert_eq!(step.deadline, Some(secs(3600)));
    assert_eq!(step.timeout, None);
}

#[test]
fn definitions_without_time_features_keep_their_meaning() {
    let definition =
        one_step("    command: {topic: t, type: x}\n    compensation: {topic: t, type: y}\n");
    assert_eq!(definition.deadline, None);
    assert_eq!(definition.defaults, StepDefaults::default());
    let step = &definition.steps[0];
    assert_eq!(step.retry.max_attempts, 1);
    assert_eq!(step.retry, RetryPolicy::default());
    assert_eq!(step.compensation_retry, RetryPolicy::default());
    assert_eq!((step.timeout, step.deadline), (None, None));
    assert!(matches!(step.action, Action::Command(_)));
}

#[test]
fn until_accepts_offsets_utc_and_cron_text() {
    let until = |value: &str| {
        one_step(&format!("    until: {value}\n")).steps[0]
            .wait()
            .cloned()
            .unwrap()
    };
    assert_eq!(
        until("2026-12-01T08:00:00Z"),
        Wait::UntilInstant(1_796_112_000_000)
    );
    assert_eq!(
        until("2026-12-01T08:00:00.250Z"),
        Wait::UntilInstant(1_796_112_000_250)
    );
    assert_eq!(
        until("'*/15 * * * * Asia/Tokyo'"),
        Wait::Calendar(Calendar::parse("*/15 * * * * Asia/Tokyo").unwrap())
    );
    assert_eq!(
        until("0 9 * * MON-FRI UTC"),
        Wait::Calendar(Calendar::parse("0 9 * * MON-FRI UTC").unwrap())
    );
    assert_eq!(
        until("every day at 07:30 America/New_York"),
        Wait::Calendar(Calendar::parse("every day at 07:30 America/New_York").unwrap())
    );
}
