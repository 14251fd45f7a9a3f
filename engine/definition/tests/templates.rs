//! Payload templates and reply paths, as written in YAML definitions.

use sagaflow_definition::{Definition, Path, RenderError, Template};
use serde_json::json;

fn payload(yaml_payload: &str) -> Template {
    let yaml = format!(
        "name: t\nversion: 1\nsteps:\n  - name: a\n    command:\n      topic: t\n      type: do\n      payload:\n{yaml_payload}"
    );
    let definition = Definition::parse("t.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"));
    definition.steps[0].command().unwrap().payload.clone()
}

#[test]
fn references_escapes_and_literals_render() {
    let template = payload(
        "        amount: $.amount
        customer: $.customer.id
        everything: $
        escaped: $$.amount
        dollars: $$
        price: $5
        currency: EUR
        quoted_ref: \"$.amount\"
        nested: {list: [$.customer.id, 1, 2.5, true, null]}
",
    );
    let context = json!({"amount": 99, "customer": {"id": "c-1"}});
    assert_eq!(
        template.render(&context).unwrap(),
        json!({
            "amount": 99,
            "customer": "c-1",
            "everything": context.clone(),
            "escaped": "$.amount",
            "dollars": "$",
            "price": "$5",
            "currency": "EUR",
            "quoted_ref": 99,
            "nested": {"list": ["c-1", 1, 2.5, true, null]},
        })
    );
}

#[test]
fn a_missing_context_field_is_named() {
    let template = payload("        customer: $.customer.id\n");
    assert_eq!(
        template.render(&json!({"customer": {}})),
        Err(RenderError::Missing {
            path: Path::parse("$.customer.id").unwrap()
        })
    );
}

#[test]
fn payloads_without_references_are_literal() {
    let template = payload("        currency: EUR\n        count: 3\n");
    assert_eq!(
        template,
        Template::Literal(json!({"currency": "EUR", "count": 3}))
    );
}

#[test]
fn yaml_keys_stay_text() {
    // Plain-scalar keys keep their spelling: JSON object keys are strings.
    let template = payload("        1: one\n        true: yes\n        null: ~\n");
    assert_eq!(
        template.render(&json!({})).unwrap(),
        json!({"1": "one", "true": "yes", "null": null})
    );
}
