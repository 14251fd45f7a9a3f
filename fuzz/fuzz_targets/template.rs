//! The path syntax (`$.a.b`) and payload templates.
//!
//! Input: UTF-8 text (other bytes are skipped). The whole text is parsed as a path; if it is
//! JSON, it is also compiled as a payload template (every string in it is then read as a literal,
//! a `$` path or a `$$` escape) and rendered against a small saga context and against itself.
//! Seeds: paths and payloads from `examples/*.yaml`, as text and as JSON.
//!
//! Checked, because they hold by construction: a parsed path prints as text that parses back to
//! the same path, and a template renders if and only if every path it reads has a value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_definition::{Path, Template};
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = Path::parse(text) {
        let printed = path.to_string();
        assert_eq!(Path::parse(&printed), Ok(path), "{printed}");
    }
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Ok(template) = Template::compile(&value) else {
        return;
    };
    let context = json!({
        "amount": 1250,
        "currency": "EUR",
        "customer": {"id": "c-42", "email": "ada@example.com", "tags": ["a", "b"]},
        "flight": {"number": "AF1234", "date": "2026-07-01"},
        "none": null,
    });
    for context in [&context, &value] {
        let readable = template
            .references()
            .iter()
            .all(|path| path.get(context).is_some());
        assert_eq!(template.render(context).is_ok(), readable);
    }
});
