//! Every class of definition problem is reported at the offending node, with a hint.

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

/// A valid one-step definition with `step_extra` appended to the step (at 4 spaces).
fn with_step(step_extra: &str) -> String {
    format!(
        "name: trip\nversion: 1\nsteps:\n  - name: payment\n    command:\n      topic: trip.payment.commands\n      type: charge\n{step_extra}"
    )
}

#[test]
fn the_base_document_is_valid() {
    let definition = Definition::parse("t.yaml", &with_step("")).unwrap();
    assert_eq!(
        definition.steps[0].command().unwrap().command_type,
        "charge"
    );
}

#[test]
fn yaml_syntax_errors_carry_the_parser_position() {
    single(
        "name: trip\nversion: 1\nsteps:\n  - name: a\n    command: {topic: t, type: do\n",
        6,
        1,
        "invalid YAML",
        "indentation",
    );
    single("name: trip\n  version: 1\n", 2, 10, "invalid YAML", "quote");
    single(
        "name: trip\nversion: 1\nsteps:\n\t- name: a\n",
        4,
        2,
        "invalid YAML: tabs",
        "indent with spaces",
    );
}

#[test]
fn missing_required_fields_point_at_their_mapping() {
    single(
        "name: trip\nversion: 1\nsteps:\n  - name: payment\n",
        4,
        5,
        "step `payment` does nothing: it needs one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`",
        "`command: {topic: ..., type: ...}` to call a participant",
    );
    single(
        &with_step("    compensation:\n      topic: trip.payment.commands\n"),
        9,
        7,
        "missing required field `type` in the compensation of step `payment`",
        "type: charge",
    );
    single(
        "version: 1\nsteps:\n  - name: a\n    command: {topic: t, type: do}\n",
        1,
        1,
        "missing required field `name` in the saga definition",
        "name: trip",
    );
}

#[test]
fn wrong_types_name_what_was_found() {
    single(
        "name: trip\nversion: \"1\"\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        2,
        10,
        "`version` must be a number, found the string `1`",
        "remove the quotes: `version: 1`",
    );
    single(
        "name: trip\nversion: 1\nsteps: payment\n",
        3,
        8,
        "`steps` must be a list of steps, found the string `payment`",
        "- name:",
    );
    single(
        &with_step("    compensation: [refund]\n"),
        8,
        19,
        "the compensation of step `payment` must be a mapping, found a list",
        "`topic`, `type`",
    );
    single(
        "name: 42\nversion: 1\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        1,
        7,
        "the name of the saga must be a string, found the integer `42`",
        "quote the value",
    );
    single(
        "- name: trip\n",
        1,
        1,
        "the saga definition must be a mapping, found a list",
        "`name:`, `version:` and `steps:`",
    );
}

#[test]
fn unknown_fields_suggest_the_closest_known_one() {
    single(
        &with_step("    compensate:\n      topic: trip.payment.commands\n      type: refund\n"),
        8,
        5,
        "unknown field `compensate` in step `payment`",
        "did you mean `compensation`?",
    );
    // A typo in a required field is reported once, as the typo.
    single(
        "name: trip\nversion: 1\nsteps:\n  - name: a\n    comand: {topic: t, type: do}\n",
        5,
        5,
        "unknown field `comand` in step `a`",
        "did you mean `command`?",
    );
    single(
        &with_step("    retries: 3\n"),
        8,
        5,
        "unknown field `retries` in step `payment`",
        "did you mean `retry`?",
    );
    single(
        &with_step("    retrys: 3\n"),
        8,
        5,
        "unknown field `retrys` in step `payment`",
        "did you mean `retry`?",
    );
    single(
        &with_step("    bogus: 3\n"),
        8,
        5,
        "unknown field `bogus` in step `payment`",
        "known fields here are `name`, `when`, `command`, `wait`, `until`, `await`, `parallel`, `choice`, `for_each`, `compensation`, `retry`, `compensation_retry`, `timeout`, `deadline`, `output`, `join`, `otherwise`, `key`, `max_concurrency`, `steps`",
    );
    single(
        &with_step("    topic: x\n"),
        8,
        5,
        "unknown field `topic` in step `payment`",
        "`topic` belongs under `command:` or `compensation:`",
    );
}

#[test]
fn invalid_names_and_versions_are_reported() {
    single(
        "name: Trip Booking\nversion: 1\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        1,
        7,
        "invalid name `Trip Booking` for the saga",
        "e.g. `trip_booking`",
    );
    single(
        "name: trip\nversion: 1\nsteps: [{name: pay.ment, command: {topic: t, type: do}}]\n",
        3,
        16,
        "invalid name `pay.ment` for step `pay.ment`",
        "e.g. `pay_ment`",
    );
    single(
        "name: trip\nversion: -2\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        2,
        10,
        "`version` must be positive, found -2",
        "start at 1",
    );
    single(
        "name: trip\nversion: 1.5\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        2,
        10,
        "`version` must be a positive whole number, found the number `1.5`",
        "version: 1",
    );
    single(
        "name: trip\nversion: 4294967296\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        2,
        10,
        "`version` 4294967296 is too large",
        "4294967295",
    );
}

#[test]
fn a_saga_needs_steps() {
    single(
        "name: trip\nversion: 1\nsteps: []\n",
        3,
        8,
        "a saga needs at least one step",
        "add a step",
    );
}

#[test]
fn duplicate_step_names_point_at_the_second_and_mention_the_first() {
    single(
        "name: trip\nversion: 1\nsteps:\n  - name: a\n    command: {topic: t, type: do}\n  - name: b\n    command: {topic: t, type: do}\n  - name: a\n    command: {topic: t, type: do}\n",
        8,
        11,
        "duplicate step name `a` (first defined at line 4)",
        "unique",
    );
}

#[test]
fn invalid_topics_are_reported() {
    let step = |topic: &str| {
        format!("name: trip\nversion: 1\nsteps:\n  - name: a\n    command:\n      topic: {topic}\n      type: do\n")
    };
    single(
        &step("trip/payment"),
        6,
        14,
        "invalid topic name `trip/payment` in the command of step `a`: it contains '/'",
        "letters, digits, `.`, `_` and `-`",
    );
    single(
        &step("'..'"),
        6,
        14,
        "is reserved by Kafka",
        "e.g. `trip.payment.commands`",
    );
    single(
        &step(&"t".repeat(250)),
        6,
        14,
        "is longer than 249 characters",
        "1 to 249",
    );
    single(&step("''"), 6, 14, "is empty", "1 to 249");
    let longest = "t".repeat(249);
    let definition = Definition::parse("t.yaml", &step(&longest)).unwrap();
    assert_eq!(definition.steps[0].command().unwrap().topic, longest);
}

#[test]
fn empty_command_types_are_reported() {
    let step = |command_type: &str| {
        format!("name: trip\nversion: 1\nsteps:\n  - name: a\n    command:\n      topic: t\n      type: {command_type}\n")
    };
    // An empty value is located by the parser at the `:` before it.
    for (command_type, column) in [("\"\"", 13), ("'   '", 13), ("", 11)] {
        single(
            &step(command_type),
            7,
            column,
            "`type` in the command of step `a` is empty",
            "type: charge",
        );
    }
}

#[test]
fn bad_references_in_payloads_are_reported() {
    let payload = |value: &str| {
        with_step(&format!(
            "      payload:\n        lines:\n          - sku: {value}\n"
        ))
    };
    single(
        &payload("$.items..sku"),
        10,
        18,
        "invalid reference in the payload of the command of step `payment`: path `$.items..sku` has an empty segment",
        "$$.",
    );
    single(
        &payload("$."),
        10,
        18,
        "has an empty segment",
        "$.customer.id",
    );
    single(
        &payload("'$.total amount'"),
        10,
        18,
        "path `$.total amount` contains ' '",
        "$.customer.id",
    );
}

#[test]
fn output_values_must_be_paths() {
    single(
        &with_step("    output:\n      payment_id: payment_id\n"),
        9,
        19,
        "`payment_id` in the output of step `payment` must be a path into the reply output, found the string `payment_id`",
        "write `$.payment_id` to copy the reply field `payment_id`",
    );
    single(
        &with_step("    output:\n      payment_id: 7\n"),
        9,
        19,
        "must be a path into the reply output, found the integer `7`",
        "not fixed values",
    );
    single(
        &with_step("    output:\n      payment_id: $.ids[0]\n"),
        9,
        19,
        "invalid path for `payment_id` in the output of step `payment`: path `$.ids[0]` contains '['",
        "$.payment_id",
    );
    single(
        &with_step("    output:\n      payment.id: $.id\n"),
        9,
        7,
        "invalid context key `payment.id` in the output of step `payment`",
        "top-level field names",
    );
    single(
        &with_step("    output: [$.id]\n"),
        8,
        13,
        "the output of step `payment` must be a mapping, found a list",
        "payment_id: $.payment_id",
    );
}

#[test]
fn duplicate_keys_are_reported() {
    single(
        "name: trip\nversion: 1\nname: trip2\nsteps: [{name: a, command: {topic: t, type: do}}]\n",
        3,
        1,
        "`name` appears twice in the saga definition (first at line 1)",
        "remove one",
    );
    single(
        &with_step("      payload: {a: 1, b: 2, a: 3}\n"),
        8,
        29,
        "`a` appears twice in the payload of the command of step `payment`",
        "remove one",
    );
}

#[test]
fn tags_other_than_core_types_are_refused() {
    single(
        &with_step("      payload: {a: !secret xyz}\n"),
        8,
        20,
        "unsupported YAML tag `!secret`",
        "remove the tag",
    );
    let definition =
        Definition::parse("t.yaml", &with_step("      payload: {a: !!str 12}\n")).unwrap();
    assert_eq!(
        definition.steps[0]
            .command()
            .unwrap()
            .payload
            .render(&serde_json::json!({}))
            .unwrap(),
        serde_json::json!({"a": "12"})
    );
}

#[test]
fn empty_sources_are_reported() {
    single("", 1, 1, "contains no saga definition", "name:");
    single(
        "# only a comment\n",
        1,
        1,
        "contains no saga definition",
        "name:",
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let yaml = "\
name: Trip
version: 0
descripton: x
steps:
  - name: payment
    command:
      topic: bad topic
      type: ''
      payload: {amount: $.amount., currency: EUR}
    output:
      payment_id: id
  - name: payment
    command: {topic: t, typ: do}
";
    let problems = problems(yaml);
    let found: Vec<(usize, usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.column, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (1, 7, "invalid name `Trip` for the saga"),
            (2, 10, "`version` must be positive, found 0"),
            (3, 1, "unknown field `descripton` in the saga definition"),
            (7, 14, "invalid topic name `bad topic` in the command of step `payment`: it contains ' '"),
            (8, 13, "`type` in the command of step `payment` is empty"),
            (9, 25, "invalid reference in the payload of the command of step `payment`: path `$.amount.` has an empty segment"),
            (11, 19, "`payment_id` in the output of step `payment` must be a path into the reply output, found the string `id`"),
            (12, 11, "duplicate step name `payment` (first defined at line 5)"),
            (13, 25, "unknown field `typ` in the command of step `payment`"),
        ]
    );
    let hints: Vec<&str> = problems.iter().filter_map(|p| p.hint.as_deref()).collect();
    assert_eq!(hints[2], "did you mean `description`?");
    assert_eq!(hints[8], "did you mean `type`?");
}
