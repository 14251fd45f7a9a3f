//! The definition parser and validator, on any text.
//!
//! Input: the YAML text of a definition file (bytes that are not UTF-8 are skipped, as
//! `load_file` refuses them before parsing). Seeds: `examples/*.yaml`.
//!
//! A definition that parses is then used the way the engine uses one: its templates render,
//! its output mappings read a reply, its retry policies give delays, its calendars fire, and it
//! goes into a registry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_definition::{Action, Correlation, Definition, Registry, Wait};
use serde_json::json;

/// 2026-01-01T00:00:00Z: calendars and instants are computed from here.
const NOW_MS: i64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let Ok(yaml) = std::str::from_utf8(data) else {
        return;
    };
    let definition = match Definition::parse("fuzz.yaml", yaml) {
        Ok(definition) => definition,
        Err(problems) => {
            // Diagnostics quote the source: rendering them must not panic either.
            let _ = problems.to_string();
            return;
        }
    };
    let context = json!({
        "amount": 1250,
        "customer": {"id": "c-42", "email": "ada@example.com"},
        "items": [{"sku": "x"}],
        "departure": "2026-07-01T09:00:00+02:00",
        "order": {"id": "o-1"},
    });
    for step in &definition.steps {
        let _ = definition.step_index(&step.name);
        let _ = step.map_output(&context);
        if let Some(compensation) = &step.compensation {
            let _ = compensation.payload.render(&context);
        }
        for attempt in [0, 1, 2, 17, u32::MAX] {
            for policy in [&step.retry, &step.compensation_retry] {
                let _ = policy.delay(attempt, 0.5);
                let _ = policy.delay_bounds(attempt);
                let _ = policy.allows_attempt_after(attempt);
            }
        }
        match &step.action {
            Action::Command(command) => {
                let _ = command.payload.render(&context);
                let _ = command.payload.references();
            }
            Action::Wait(Wait::Calendar(calendar)) => {
                let _ = calendar.next_after(NOW_MS);
                let _ = calendar.to_string();
            }
            Action::Wait(Wait::UntilContext(path)) => {
                if let Some(value) = path.get(&context) {
                    let _ = sagaflow_definition::instant_from_json(value);
                }
            }
            Action::Wait(_) => {}
            Action::Await(awaited) => {
                if let Correlation::Context(path) = &awaited.correlate {
                    let _ = path.get(&context);
                }
            }
        }
    }
    let mut registry = Registry::new();
    let _ = registry.insert(definition.clone());
    // The same content again is not a conflict; whatever it is, it must not panic.
    let _ = registry.insert(definition);
});
