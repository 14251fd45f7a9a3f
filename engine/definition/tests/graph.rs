//! Graph definitions: `when`, `parallel`, `choice`, `for_each` and `limits` land in the model
//! as written, with their defaults, and every rule about them is reported at its place.

use std::time::Duration;

use sagaflow_definition::{Action, Condition, Definition, Join, Limits, Path, Step};
use serde_json::json;

fn parse(yaml: &str) -> Definition {
    Definition::parse("g.yaml", yaml).unwrap_or_else(|problems| panic!("{problems}"))
}

/// Every problem of a document that must not parse, rendered as the CLI shows them.
#[track_caller]
fn problems(yaml: &str) -> String {
    match Definition::parse("g.yaml", yaml) {
        Ok(definition) => panic!("expected problems, parsed {definition:#?}"),
        Err(problems) => problems.to_string(),
    }
}

/// A saga named `g` with these steps (the first step line is line 4).
fn saga(steps: &str) -> String {
    format!("name: g\nversion: 1\nsteps:\n{steps}")
}

fn path(text: &str) -> Path {
    Path::parse(text).unwrap()
}

fn names(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|step| step.name.as_str()).collect()
}

// -----------------------------------------------------------------------------------------
// What lands in the model

#[test]
fn parallel_branches_keys_and_join() {
    let definition = parse(&saga(
        "  - name: book
    parallel:
      - name: flight
        steps:
          - name: flight_booking
            command: {topic: t.flight, type: book}
            output: {booking_id: $.id}
      - name: hotel
        key: hotel_booking
        steps:
          - {name: hotel_booking, command: {topic: t.hotel, type: book}}
          - {name: hotel_confirm, await: hotel_confirmed}
  - name: after
    wait: 1s
",
    ));
    let book = definition.step("book").unwrap();
    let Action::Parallel(parallel) = &book.action else {
        panic!("expected a parallel step, got {book:?}");
    };
    assert_eq!(parallel.join, Join::All);
    let branches: Vec<(&str, &str, Vec<&str>)> = parallel
        .branches
        .iter()
        .map(|b| (b.name.as_str(), b.key.as_str(), names(&b.steps)))
        .collect();
    assert_eq!(
        branches,
        [
            ("flight", "flight", vec!["flight_booking"]),
            (
                "hotel",
                "hotel_booking",
                vec!["hotel_booking", "hotel_confirm"]
            ),
        ]
    );
    // Container steps have no command-step settings of their own.
    assert_eq!(
        (
            &book.when,
            &book.compensation,
            &book.output,
            book.timeout,
            book.deadline
        ),
        (&None, &None, &Vec::new(), None, None)
    );
    assert_eq!(book.children().len(), 2);
    // Names find nested steps; `all_steps` is depth first in source order.
    assert_eq!(
        definition
            .all_steps()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        [
            "book",
            "flight_booking",
            "hotel_booking",
            "hotel_confirm",
            "after"
        ]
    );
    assert_eq!(
        definition.step("flight_booking").unwrap().output,
        [("booking_id".to_owned(), path("$.id"))]
    );
    assert_eq!(definition.step_index("after"), Some(1));
    assert_eq!(definition.step_index("flight_booking"), None);
    assert!(!definition.is_linear());
    assert_eq!(definition.limits, Limits::default());
    assert_eq!(definition.limits.for_each_items, 1000);

    let join = |join: &str| {
        let definition = parse(&saga(&format!(
            "  - name: p
    parallel:
      - {{name: a, steps: [{{name: a1, wait: 1s}}]}}
      - {{name: b, steps: [{{name: b1, wait: 1s}}]}}
      - {{name: c, steps: [{{name: c1, wait: 1s}}]}}
    join: {join}
"
        )));
        match &definition.steps[0].action {
            Action::Parallel(parallel) => parallel.join,
            other => panic!("expected a parallel step, got {other:?}"),
        }
    };
    assert_eq!(join("all"), Join::All);
    assert_eq!(join("any"), Join::Any);
    assert_eq!(join("{at_least: 2}"), Join::AtLeast(2));
    assert_eq!(join("{at_least: 3}"), Join::AtLeast(3));
    assert_eq!(Join::AtLeast(2).needed(3), 2);
}

#[test]
fn choice_branches_and_otherwise() {
    let definition = parse(&saga(
        "  - name: route
    choice:
      - when: $.country in ['FR', 'DE']
        steps: [{name: eu, command: {topic: t.eu, type: ship}}]
      - when: exists($.coupon)
        steps:
          - {name: coupon, command: {topic: t.coupon, type: apply}}
          - {name: coupon_wait, wait: 5s}
    otherwise:
      - {name: elsewhere, command: {topic: t.world, type: ship}}
  - name: maybe
    choice:
      - when: true
        steps: [{name: always, wait: 1s}]
",
    ));
    let Action::Choice(route) = &definition.steps[0].action else {
        panic!("expected a choice step");
    };
    let conditions: Vec<&str> = route
        .branches
        .iter()
        .map(|b| b.condition.source())
        .collect();
    assert_eq!(
        conditions,
        ["$.country in ['FR', 'DE']", "exists($.coupon)"]
    );
    assert_eq!(names(&route.branches[1].steps), ["coupon", "coupon_wait"]);
    assert_eq!(names(route.otherwise.as_deref().unwrap()), ["elsewhere"]);
    let de = json!({"country": "DE"});
    assert_eq!(route.branches[0].condition.eval(&de), Ok(true));
    assert_eq!(route.branches[1].condition.eval(&de), Ok(false));
    assert_eq!(route.branches[1].condition.paths(), [&path("$.coupon")]);
    // `otherwise` comes last among the children.
    assert_eq!(
        definition.steps[0]
            .children()
            .iter()
            .map(|steps| names(steps))
            .collect::<Vec<_>>(),
        [vec!["eu"], vec!["coupon", "coupon_wait"], vec!["elsewhere"]]
    );
    let Action::Choice(maybe) = &definition.steps[1].action else {
        panic!("expected a choice step");
    };
    assert_eq!(maybe.otherwise, None);
    assert_eq!(maybe.branches[0].condition.eval(&json!({})), Ok(true));
}

#[test]
fn for_each_defaults_and_settings() {
    let definition = parse(&saga(
        "  - name: ship
    for_each: $.warehouses
    steps:
      - name: ship_one
        command: {topic: t.ship, type: ship, payload: {warehouse: $.item, position: $.index}}
        output: {tracking: $.tracking}
  - name: notify
    for_each: $.order.lines
    max_concurrency: 5
    join: {at_least: 2}
    key: notices
    steps: [{name: notify_one, command: {topic: t.notify, type: send}}]
limits:
  for_each_items: 500
",
    ));
    let Action::ForEach(ship) = &definition.steps[0].action else {
        panic!("expected a for_each step");
    };
    assert_eq!(ship.items, path("$.warehouses"));
    assert_eq!(ship.key, "ship");
    assert_eq!(ship.max_concurrency, 10);
    assert_eq!(ship.join, Join::All);
    assert_eq!(names(&ship.steps), ["ship_one"]);
    let Action::ForEach(notify) = &definition.steps[1].action else {
        panic!("expected a for_each step");
    };
    assert_eq!(
        (
            &notify.items,
            notify.key.as_str(),
            notify.max_concurrency,
            notify.join
        ),
        (&path("$.order.lines"), "notices", 5, Join::AtLeast(2))
    );
    assert_eq!(definition.limits.for_each_items, 500);
    assert_eq!(definition.step("notify_one").unwrap().name, "notify_one");
}

#[test]
fn when_holds_a_condition_on_any_step() {
    let definition = parse(&saga(
        "  - name: screen
    when: $.customer.vip != true and $.amount > 100
    command: {topic: t, type: screen}
  - name: always
    when: true
    wait: 1s
  - name: never
    when: False
    wait: 1s
  - name: quoted
    when: \"$.country == 'FR'\"
    await: confirmed
  - name: group
    when: exists($.items)
    for_each: $.items
    steps:
      - name: inner
        when: $.item.qty > 0
        command: {topic: t, type: x}
",
    ));
    let when = |name: &str| definition.step(name).unwrap().when.clone();
    let screen = when("screen").unwrap();
    assert_eq!(
        screen.to_string(),
        "$.customer.vip != true and $.amount > 100"
    );
    assert_eq!(screen.eval(&json!({"amount": 120})), Ok(true));
    assert_eq!(
        screen.eval(&json!({"amount": 120, "customer": {"vip": true}})),
        Ok(false)
    );
    assert_eq!(when("always"), Some(Condition::parse("true").unwrap()));
    assert_eq!(when("never"), Some(Condition::parse("false").unwrap()));
    assert_eq!(when("quoted").unwrap().source(), "$.country == 'FR'");
    assert_eq!(when("group").unwrap().source(), "exists($.items)");
    assert_eq!(when("inner").unwrap().source(), "$.item.qty > 0");
    assert!(!definition.is_linear());
    // A definition without graph features is still linear.
    assert!(parse(&saga("  - {name: a, command: {topic: t, type: x}}\n")).is_linear());
}

#[test]
fn saga_defaults_apply_to_nested_command_steps() {
    let definition = parse(
        "name: g
version: 1
defaults:
  timeout: 30s
  retry: {max_attempts: 4}
  compensation_retry: {max_attempts: 9}
steps:
  - name: book
    parallel:
      - name: a
        steps:
          - name: a1
            command: {topic: t, type: x}
            compensation: {topic: t, type: undo}
      - name: b
        steps:
          - name: route
            choice:
              - when: $.x == 1
                steps:
                  - name: b1
                    command: {topic: t, type: x}
                    retry: {max_attempts: 2}
                    timeout: 5s
            otherwise:
              - name: each
                for_each: $.items
                steps: [{name: b2, command: {topic: t, type: x}}]
",
    );
    let a1 = definition.step("a1").unwrap();
    assert_eq!(a1.retry, definition.defaults.retry);
    assert_eq!(a1.retry.max_attempts, 4);
    assert_eq!(a1.compensation_retry.max_attempts, 9);
    assert_eq!(a1.timeout, Some(Duration::from_secs(30)));
    let b1 = definition.step("b1").unwrap();
    assert_eq!(
        (b1.retry.max_attempts, b1.timeout),
        (2, Some(Duration::from_secs(5)))
    );
    let b2 = definition.step("b2").unwrap();
    assert_eq!(
        (b2.retry.max_attempts, b2.timeout),
        (4, Some(Duration::from_secs(30)))
    );
    // Containers take no defaults.
    let book = definition.step("book").unwrap();
    assert_eq!((book.retry.max_attempts, book.timeout), (1, None));
    assert_eq!(
        definition
            .all_steps()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["book", "a1", "route", "b1", "each", "b2"]
    );
}

/// Paths that read a finished branch's or for_each's results by a key they write are fine,
/// as are reads of the same keys before or inside the step (the saga input may hold them).
#[test]
fn reads_of_results_that_are_written_are_accepted() {
    let definition = parse(&saga(
        "  - name: book
    when: $.flight.requested == true
    parallel:
      - name: flight
        steps:
          - name: flight_booking
            command: {topic: t, type: book, payload: {number: $.flight.number}}
            output: {booking_id: $.id}
          - name: seat
            parallel:
              - {name: window, steps: [{name: w, command: {topic: t, type: x}, output: {row: $.row}}]}
              - {name: aisle, steps: [{name: a, command: {topic: t, type: x}}]}
      - name: hotel
        key: stay
        steps:
          - name: hotel_booking
            command: {topic: t, type: book, payload: {other: $.flight.anything}}
            output: {booking_id: $.id}
          - name: extras
            choice:
              - when: $.x == 1
                steps: [{name: spa, command: {topic: t, type: x}, output: {spa_id: $.id}}]
  - name: ship
    for_each: $.items
    key: shipments
    steps: [{name: ship_one, command: {topic: t, type: x}, output: {tracking: $.t}}]
  - name: notify
    when: $.stay.spa_id != null and exists($.shipments.0.tracking)
    command:
      topic: t
      type: send
      payload:
        flight: $.flight.booking_id
        row: $.flight.window.row
        hotel: $.stay.booking_id
        spa: $.stay.spa_id
        window: $.flight.window
        shipments: $.shipments
        first: $.shipments.0
        tracking: \"$.shipments.2.tracking\"
        elsewhere: $.hotel.anything
",
    ));
    assert_eq!(definition.steps.len(), 3);
}

// -----------------------------------------------------------------------------------------
// Rules, each reported at its place with a hint

#[test]
fn a_condition_that_does_not_parse_is_reported_at_its_character() {
    assert_eq!(
        problems(&saga(
            "  - name: screen
    when: $.customer.vip != true adn $.amount > 100
    command: {topic: t, type: x}
"
        )),
        "g.yaml:5:34: error: invalid condition in the `when` of step `screen`: unknown word `adn`
  hint: did you mean `and`?"
    );
    // Quoted: one column further for the quote; `''` is one character of the text.
    assert_eq!(
        problems(&saga(
            "  - name: screen
    when: '$.name == ''it\\''s'' and $.amount =>'
    command: {topic: t, type: x}
"
        )),
        "g.yaml:5:46: error: invalid condition in the `when` of step `screen`: `=>` is not an operator
  hint: did you mean `>=`?"
    );
    // Over several lines: the problem is found on its own line.
    assert_eq!(
        problems(&saga(
            "  - name: route
    choice:
      - when: $.country == 'FR' and
          $.amount > 100 or
        steps: [{name: fr, wait: 1s}]
"
        )),
        "g.yaml:7:28: error: invalid condition in the `when` of branch #1 of step `route`: expected a value after `or`
  hint: a value is a path such as `$.amount`, a number, a quoted string, `true`, `false`, `null`, a list such as `['FR', 'DE']`, `exists($.path)` or a condition in parentheses"
    );
    assert_eq!(
        problems(&saga(
            "  - name: screen
    when:
    wait: 1s
  - name: listed
    when: [$.a]
    wait: 1s
"
        )),
        "g.yaml:8:11: error: the `when` of step `listed` must be a condition written as text, found a list
  hint: write a condition such as `$.amount > 100 and $.country in ['FR', 'DE']`; quote it if it starts with `[` or `{`, or contains `: ` or ` #`"
    );
}

#[test]
fn comparisons_of_literals_of_different_types_are_refused() {
    assert_eq!(
        problems(&saga(
            "  - name: screen
    when: \"$.amount > 100 and 'a' < 3\"
    wait: 1s
  - name: other
    when: $.vip == true or 'yes' == 1
    wait: 1s
"
        )),
        "g.yaml:5:35: error: invalid condition in the `when` of step `screen`: cannot compare a string with a number: `'a' < 3`
  hint: `<`, `<=`, `>` and `>=` compare two numbers or two strings
g.yaml:8:34: error: invalid condition in the `when` of step `other`: `'yes' == 1` compares a string with a number, so it is always false
  hint: compare a path with a value, e.g. `$.country == 'FR'`, or values of the same type"
    );
}

#[test]
fn a_step_does_one_of_seven_things() {
    assert_eq!(
        problems(&saga(
            "  - name: idle
    when: $.a == 1
  - name: both
    command: {topic: t, type: x}
    for_each: $.items
"
        )),
        "g.yaml:4:5: error: step `idle` does nothing: it needs one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`
  hint: add `command: {topic: ..., type: ...}` to call a participant, `wait: 10s` to pause, `until: <instant or calendar>` to wait for a time, `await: {event: ...}` to wait for an external event, `parallel: [<branches>]` to run branches at once, `choice: [<branches>]` to run the first branch whose `when` holds, or `for_each: $.items` with `steps:` to run steps once per element
g.yaml:8:5: error: step `both` has both `command` and `for_each`; a step does exactly one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`
  hint: split it into two steps, one for each"
    );
}

#[test]
fn container_fields_belong_to_their_kind_of_step() {
    assert_eq!(
        problems(&saga(
            "  - name: pay
    command: {topic: t, type: x}
    join: any
    key: payment
  - name: book
    parallel:
      - {name: a, steps: [{name: a1, wait: 1s}]}
      - {name: b, steps: [{name: b1, wait: 1s}]}
    otherwise: [{name: c1, wait: 1s}]
    max_concurrency: 2
    steps: [{name: d1, wait: 1s}]
  - name: route
    choice:
      - {when: true, steps: [{name: e1, wait: 1s}]}
    join: all
"
        )),
        "g.yaml:6:5: error: `join` is only allowed on `parallel` and `for_each` steps, but step `pay` is a command step
  hint: `join` says how many branches of a `parallel` or elements of a `for_each` must succeed; remove it
g.yaml:7:5: error: `key` is only allowed on `for_each` steps, but step `pay` is a command step
  hint: use `output:` to choose the context keys of the step's result
g.yaml:12:5: error: `otherwise` is only allowed on `choice` steps, but step `book` is a `parallel` step
  hint: `otherwise` lists the steps a `choice` runs when no branch matches; remove it
g.yaml:13:5: error: `max_concurrency` is only allowed on `for_each` steps, but step `book` is a `parallel` step
  hint: all branches of a `parallel` run at once; remove it
g.yaml:14:5: error: `steps` is only allowed on `for_each` steps, but step `book` is a `parallel` step
  hint: put the steps inside each branch: `parallel: [{name: a, steps: [...]}, {name: b, steps: [...]}]`
g.yaml:18:5: error: `join` is only allowed on `parallel` and `for_each` steps, but step `route` is a `choice` step
  hint: `join` says how many branches of a `parallel` or elements of a `for_each` must succeed; remove it"
    );
}

#[test]
fn container_steps_take_no_command_settings() {
    assert_eq!(
        problems(&saga(
            "  - name: book
    parallel:
      - {name: a, steps: [{name: a1, wait: 1s}]}
      - {name: b, steps: [{name: b1, wait: 1s}]}
    compensation: {topic: t, type: undo}
    timeout: 5s
  - name: route
    choice: [{when: true, steps: [{name: c1, wait: 1s}]}]
    retry: {max_attempts: 2}
    deadline: 1m
  - name: each
    for_each: $.items
    steps: [{name: d1, wait: 1s}]
    compensation_retry: {max_attempts: 2}
    output: {x: $.x}
"
        )),
        "g.yaml:8:5: error: `compensation` is only allowed on command steps, but step `book` is a `parallel` step
  hint: put `compensation` on the steps inside the branches
g.yaml:9:5: error: `timeout` is only allowed on command steps, but step `book` is a `parallel` step
  hint: put `timeout` on the steps inside the branches
g.yaml:12:5: error: `retry` is only allowed on command steps, but step `route` is a `choice` step
  hint: put `retry` on the steps inside the branches
g.yaml:13:5: error: `deadline` is only allowed on command and await steps, but step `route` is a `choice` step
  hint: put `deadline` on the steps inside the branches
g.yaml:17:5: error: `compensation_retry` is only allowed on command steps, but step `each` is a `for_each` step
  hint: put `compensation_retry` on the steps inside `steps:`
g.yaml:18:5: error: `output` is only allowed on command and await steps, but step `each` is a `for_each` step
  hint: put `output` on the steps inside `steps:`; their outputs land in the list under the step's `key`"
    );
}

#[test]
fn step_names_are_unique_across_the_whole_definition() {
    assert_eq!(
        problems(&saga(
            "  - name: pay
    command: {topic: t, type: x}
  - name: book
    parallel:
      - name: a
        steps: [{name: pay, wait: 1s}]
      - name: b
        steps:
          - name: inner
            for_each: $.items
            steps: [{name: book, wait: 1s}]
"
        )),
        "g.yaml:9:24: error: duplicate step name `pay` (first defined at line 4)
  hint: step names must be unique within a saga, nested steps included; rename one of the steps
g.yaml:14:28: error: duplicate step name `book` (first defined at line 6)
  hint: step names must be unique within a saga, nested steps included; rename one of the steps"
    );
}

#[test]
fn parallel_needs_two_uniquely_named_branches() {
    assert_eq!(
        problems(&saga(
            "  - name: solo
    parallel:
      - {name: a, steps: [{name: a1, wait: 1s}]}
  - name: twins
    parallel:
      - {name: b, steps: [{name: b1, wait: 1s}]}
      - {name: b, key: b2, steps: [{name: b2, wait: 1s}]}
  - name: broken
    parallel:
      - {name: Bad, steps: []}
      - {key: k, steps: [{name: c1, wait: 1s}]}
  - name: notalist
    parallel: {name: x}
"
        )),
        "g.yaml:6:7: error: `parallel` in step `solo` has one branch; it needs at least two
  hint: add another branch, or make the branch's steps plain steps of the saga
g.yaml:10:16: error: duplicate branch name `b` in step `twins` (first at line 9)
  hint: branch names must be unique within a `parallel`; rename one of them
g.yaml:13:16: error: invalid name `Bad` for branch `Bad` of step `broken`
  hint: step names use lowercase letters, digits, `_` and `-`, e.g. `bad`
g.yaml:13:28: error: branch `Bad` of step `broken` needs at least one step
  hint: add the steps the branch runs, or remove the branch
g.yaml:14:9: error: missing required field `name` in branch #2 of step `broken`
  hint: give the branch a name, e.g. `name: flight`
g.yaml:16:15: error: `parallel` in step `notalist` must be a list of branches, found a mapping
  hint: write each branch as a list item with a `name` and `steps`, e.g. `parallel: [{name: flight, steps: [...]}, {name: hotel, steps: [...]}]`"
    );
}

#[test]
fn sibling_branches_write_distinct_keys() {
    assert_eq!(
        problems(&saga(
            "  - name: book
    parallel:
      - name: flight
        steps: [{name: f, command: {topic: t, type: x}}]
      - name: hotel
        key: flight
        steps: [{name: h, command: {topic: t, type: x}}]
"
        )),
        "g.yaml:9:14: error: branches `flight` and `hotel` of step `book` both write context key `flight`
  hint: each branch writes its steps' outputs under its own key; give one of them another `key:`"
    );
}

#[test]
fn branch_keys_do_not_reuse_output_keys_of_enclosing_sequences() {
    assert_eq!(
        problems(&saga(
            "  - name: pay
    command: {topic: t, type: x}
    output: {payment_id: $.id}
  - name: book
    parallel:
      - name: payment_id
        steps: [{name: f, command: {topic: t, type: x}}]
      - name: hotel
        steps:
          - name: nested
            parallel:
              - {name: x, key: payment_id, steps: [{name: x1, wait: 1s}]}
              - {name: y, key: room, steps: [{name: y1, wait: 1s}]}
          - name: room_check
            command: {topic: t, type: x}
            output: {room: $.room}
  - name: notify
    command: {topic: t, type: x}
    output: {hotel: $.hotel}
"
        )),
        "g.yaml:9:15: error: branch `payment_id` of step `book` writes context key `payment_id`, which the `output` of step `pay` (line 6) also writes
  hint: a branch's step outputs land under its key; give the branch another `key:`, or rename the other key
g.yaml:11:15: error: branch `hotel` of step `book` writes context key `hotel`, which the `output` of step `notify` (line 22) also writes
  hint: a branch's step outputs land under its key; give the branch another `key:`, or rename the other key
g.yaml:15:32: error: branch `x` of step `nested` writes context key `payment_id`, which the `output` of step `pay` (line 6) also writes
  hint: a branch's step outputs land under its key; give the branch another `key:`, or rename the other key
g.yaml:16:32: error: branch `y` of step `nested` writes context key `room`, which the `output` of step `room_check` (line 19) also writes
  hint: a branch's step outputs land under its key; give the branch another `key:`, or rename the other key"
    );
}

#[test]
fn for_each_keys_do_not_reuse_other_keys() {
    assert_eq!(
        problems(&saga(
            "  - name: lines
    command: {topic: t, type: x}
    output: {lines: $.lines}
  - name: each
    for_each: $.items
    key: lines
    steps: [{name: one, wait: 1s}]
  - name: book
    parallel:
      - {name: ship, steps: [{name: s1, wait: 1s}]}
      - {name: other, steps: [{name: s2, wait: 1s}]}
  - name: ship
    for_each: $.items
    steps: [{name: two, wait: 1s}]
"
        )),
        "g.yaml:9:10: error: step `each` writes context key `lines`, which the `output` of step `lines` (line 6) also writes
  hint: a for_each's results land under its key; give the step another `key:`, or rename the other key
g.yaml:15:11: error: step `ship` writes context key `ship`, which branch `ship` of step `book` (line 13) also writes
  hint: a for_each's results land under its key; give the step another `key:`, or rename the other key"
    );
}

#[test]
fn reads_of_branch_results_must_name_what_the_branch_writes() {
    assert_eq!(
        problems(&saga(
            "  - name: book
    parallel:
      - name: flight
        steps:
          - name: flight_booking
            command: {topic: t, type: book}
            output: {booking_id: $.id, seat: $.seat}
      - name: hotel
        steps: [{name: hotel_booking, command: {topic: t, type: book}}]
  - name: notify
    when: $.hotel.confirmed == true
    command:
      topic: t
      type: send
      payload:
        flight: $.flight.bookng_id
        seat: \"$.flight.price\"
    compensation: {topic: t, type: x, payload: {booking: $.flight.booking_id.value}}
  - name: wait_flight
    until: $.flight.departure
  - name: confirm
    await: {event: confirmed, correlate: $.flight.bookingid}
"
        )),
        "g.yaml:14:11: error: `$.hotel.confirmed`: branch `hotel` of step `book` writes no `confirmed`
  hint: none of its steps has an `output`; add one, or read another path
g.yaml:19:17: error: `$.flight.bookng_id`: branch `flight` of step `book` writes no `bookng_id`
  hint: did you mean `$.flight.booking_id`? the branch writes `booking_id` and `seat`
g.yaml:20:16: error: `$.flight.price`: branch `flight` of step `book` writes no `price`
  hint: the branch writes `booking_id` and `seat`
g.yaml:23:12: error: `$.flight.departure`: branch `flight` of step `book` writes no `departure`
  hint: the branch writes `booking_id` and `seat`
g.yaml:25:42: error: `$.flight.bookingid`: branch `flight` of step `book` writes no `bookingid`
  hint: did you mean `$.flight.booking_id`? the branch writes `booking_id` and `seat`"
    );
}

#[test]
fn reads_of_for_each_results_must_name_what_its_steps_write() {
    assert_eq!(
        problems(&saga(
            "  - name: ship
    for_each: $.warehouses
    key: shipments
    steps:
      - name: ship_one
        command: {topic: t, type: ship}
        output: {tracking: $.tracking}
  - name: notify
    when: $.shipments.0.trackng != null or $.shipments.tracking == 'x'
    command: {topic: t, type: send, payload: {first: $.shipments.0.tracking}}
"
        )),
        "g.yaml:12:11: error: `$.shipments.0.trackng`: the steps of step `ship` write no `trackng`
  hint: did you mean `$.shipments.0.tracking`? each element of `$.shipments` holds `tracking`
g.yaml:12:44: error: `$.shipments.tracking`: `$.shipments` is the list of the results of step `ship`, one per element
  hint: read an element by its index, e.g. `$.shipments.0.tracking`"
    );
}

#[test]
fn joins_are_all_any_or_at_least_a_possible_count() {
    assert_eq!(
        problems(&saga(
            "  - name: p
    parallel:
      - {name: a, steps: [{name: a1, wait: 1s}]}
      - {name: b, steps: [{name: b1, wait: 1s}]}
    join: {at_least: 3}
  - name: q
    parallel:
      - {name: c, steps: [{name: c1, wait: 1s}]}
      - {name: d, steps: [{name: d1, wait: 1s}]}
    join: ayn
  - name: r
    for_each: $.items
    join: {at_least: 0}
    steps: [{name: r1, wait: 1s}]
  - name: s
    for_each: $.items
    join: 2
    steps: [{name: s1, wait: 1s}]
"
        )),
        "g.yaml:8:22: error: `at_least` in the `join` of step `p` is 3, but the step has only 2 branches
  hint: use at most 2; `join: all` waits for every branch
g.yaml:13:11: error: unknown join `ayn` in step `q`
  hint: did you mean `any`?
g.yaml:16:22: error: `at_least` in the `join` of step `r` must be at least 1, found 0
  hint: how many must succeed, e.g. `join: {at_least: 2}`
g.yaml:20:11: error: `join` in step `s` must be `all`, `any` or `{at_least: N}`, found the integer `2`
  hint: write `join: {at_least: 2}`"
    );
}

#[test]
fn choice_needs_branches_with_conditions_and_steps() {
    assert_eq!(
        problems(&saga(
            "  - name: none
    choice: []
  - name: route
    choice:
      - steps: [{name: a1, wait: 1s}]
      - when: $.x == 1
      - when: $.y == 1
        steps: []
        name: oops
    otherwise: []
"
        )),
        "g.yaml:5:13: error: `choice` in step `none` has no branches; it needs at least one
  hint: write each branch as a list item with a `when` and `steps`, e.g. `choice: [{when: \"$.country == 'FR'\", steps: [...]}]`
g.yaml:8:9: error: missing required field `when` in branch #1 of step `route`
  hint: add the condition under which this branch runs, e.g. `when: $.country == 'FR'`
g.yaml:9:9: error: missing required field `steps` in branch #2 of step `route`
  hint: add the branch's steps, e.g. `steps: [{name: ..., command: {topic: ..., type: ...}}]`
g.yaml:11:16: error: branch #3 of step `route` needs at least one step
  hint: add the steps the branch runs, or remove the branch
g.yaml:12:9: error: unknown field `name` in branch #3 of step `route`
  hint: known fields here are `when`, `steps`
g.yaml:13:16: error: `otherwise` of step `route` needs at least one step
  hint: add the steps to run when no branch matches, or remove `otherwise`"
    );
}

#[test]
fn for_each_runs_over_a_context_list_with_steps() {
    assert_eq!(
        problems(&saga(
            "  - name: whole
    for_each: $
    steps: [{name: a1, wait: 1s}]
  - name: bare
    for_each: items
    steps: [{name: b1, wait: 1s}]
  - name: literal
    for_each: [1, 2]
    steps: [{name: c1, wait: 1s}]
  - name: empty
    for_each: $.items
    max_concurrency: 0
    key: bad key
  - name: nobody
    for_each: $.items
    steps: []
"
        )),
        "g.yaml:5:15: error: `for_each` in step `whole` cannot run over the whole context `$`
  hint: the context is an object, not a list; name the list, e.g. `for_each: $.items`
g.yaml:8:15: error: `for_each` in step `bare` must be a context path to a list, found the string `items`
  hint: write `$.items` to run over that context list
g.yaml:11:15: error: `for_each` in step `literal` must be a context path to a list, found a list
  hint: put the list in the saga's input and name it, e.g. `for_each: $.items`
g.yaml:13:5: error: missing required field `steps` in step `empty`
  hint: add the steps to run for each element under `steps:`; they read the element as `$.item` and its position as `$.index`
g.yaml:15:22: error: `max_concurrency` in step `empty` must be at least 1, found 0
  hint: the most elements run at once, e.g. `max_concurrency: 5`
g.yaml:16:10: error: invalid context key `bad key` in the `key` of step `empty`
  hint: context keys are top-level field names made of letters, digits, `_` and `-`
g.yaml:19:12: error: the `steps` of step `nobody` needs at least one step
  hint: add the steps to run for each element; they read the element as `$.item` and its position as `$.index`"
    );
}

#[test]
fn limits_hold_positive_counts() {
    assert_eq!(
        problems(
            "name: g
version: 1
limits:
  for_each_items: 0
  max_items: 3
steps: [{name: a, wait: 1s}]
"
        ),
        "g.yaml:4:19: error: `for_each_items` in `limits` must be at least 1, found 0
  hint: the most elements a `for_each` may run over, e.g. `for_each_items: 500`
g.yaml:5:3: error: unknown field `max_items` in `limits`
  hint: did you mean `for_each_items`?"
    );
}

#[test]
fn typos_of_graph_fields_are_suggested() {
    assert_eq!(
        problems(&saga(
            "  - name: a
    if: $.x == 1
    wait: 1s
  - name: b
    foreach: $.items
    steps: [{name: b1, wait: 1s}]
  - name: c
    choice: [{when: true, steps: [{name: c1, wait: 1s}]}]
    otherwize: [{name: c2, wait: 1s}]
  - name: d
    parallel:
      - {name: x, stesp: [{name: d1, wait: 1s}]}
      - {name: y, steps: [{name: d2, wait: 1s}], when: $.x}
"
        )),
        "g.yaml:5:5: error: unknown field `if` in step `a`
  hint: did you mean `when`?
g.yaml:8:5: error: unknown field `foreach` in step `b`
  hint: did you mean `for_each`?
g.yaml:12:5: error: unknown field `otherwize` in step `c`
  hint: did you mean `otherwise`?
g.yaml:15:19: error: unknown field `stesp` in branch `x` of step `d`
  hint: did you mean `steps`?
g.yaml:16:50: error: unknown field `when` in branch `y` of step `d`
  hint: `when` belongs under an item of `steps:` or a branch of `choice:`"
    );
}

/// One pass reports the problems of every level at once.
#[test]
fn every_problem_is_reported_in_one_pass() {
    let text = problems(&saga(
        "  - name: book
    when: $.a ==
    parallel:
      - name: flight
        steps:
          - {name: f1, command: {topic: t, type: x}, retry: {max_attempts: 0}}
      - name: hotel
        steps:
          - name: route
            choice:
              - when: exists(x)
                steps: [{name: f1, wait: 1s}]
  - name: after
    command: {topic: t, type: x, payload: {b: $.flight.nothing}}
",
    ));
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("  hint")).collect();
    assert_eq!(
        lines,
        [
            "g.yaml:5:17: error: invalid condition in the `when` of step `book`: expected a value after `==`",
            "g.yaml:9:76: error: `max_attempts` in the `retry` of step `f1` must be at least 1, found 0",
            "g.yaml:14:30: error: invalid condition in the `when` of branch #1 of step `route`: unknown word `x`",
            "g.yaml:15:32: error: duplicate step name `f1` (first defined at line 9)",
            "g.yaml:17:47: error: `$.flight.nothing`: branch `flight` of step `book` writes no `nothing`",
        ]
    );
}

/// The graph example of the crate documentation is a valid definition.
#[test]
fn the_documented_example_parses() {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let section = &lib[lib.find("//! # Graphs").expect("the graph section")..];
    let yaml: String = section
        .lines()
        .skip_while(|line| *line != "//! ```yaml")
        .skip(1)
        .take_while(|line| *line != "//! ```")
        .map(|line| {
            format!(
                "{}\n",
                line.trim_start_matches("//!")
                    .strip_prefix(' ')
                    .unwrap_or("")
            )
        })
        .collect();
    let definition = parse(&yaml);
    assert_eq!(definition.key(), "order@2");
    assert_eq!(definition.limits.for_each_items, 500);
    assert_eq!(definition.all_steps().count(), 11);
}

// -----------------------------------------------------------------------------------------
// Business keys (`index:`)

#[test]
fn index_names_business_keys_by_context_path() {
    let definition = parse(
        "name: g\nversion: 1\nindex:\n  customer: $.customer.id\n  order: $.order_id\nsteps:\n  - {name: a, command: {topic: t, type: x}}\n",
    );
    assert_eq!(
        definition.index,
        vec![
            ("customer".to_string(), path("$.customer.id")),
            ("order".to_string(), path("$.order_id")),
        ]
    );
    assert!(
        parse(&saga("  - {name: a, command: {topic: t, type: x}}\n"))
            .index
            .is_empty()
    );
}

#[test]
fn a_bad_index_is_reported_where_it_is() {
    let text = problems(
        "name: g\nversion: 1\nindex:\n  bad key: $.a\n  whole: $\n  broken: $..x\n  number: 3\nsteps:\n  - {name: a, command: {topic: t, type: x}}\n",
    );
    assert!(
        text.contains("g.yaml:4:3") && text.contains("invalid business key name `bad key`"),
        "{text}"
    );
    assert!(
        text.contains("g.yaml:5:10")
            && text.contains("business key `whole` reads the whole context"),
        "{text}"
    );
    assert!(
        text.contains("g.yaml:6") && text.contains("invalid context path in business key `broken`"),
        "{text}"
    );
    assert!(
        text.contains("g.yaml:7:11")
            && text.contains("business key `number` in `index` must be a context path"),
        "{text}"
    );
    let text = problems(
        "name: g\nversion: 1\nindex: [a]\nsteps:\n  - {name: a, command: {topic: t, type: x}}\n",
    );
    assert!(
        text.contains("g.yaml:3:8") && text.contains("`index`"),
        "{text}"
    );
}
