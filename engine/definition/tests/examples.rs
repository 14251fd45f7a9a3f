//! The definitions shipped in `examples/` parse (or, for `broken/`, fail) as documented.

use std::fs;
use std::path::PathBuf;

use std::time::Duration;

use sagaflow_definition::{
    load_dir, load_file, Action, Backoff, Calendar, CommandSpec, Correlation, Definition, Jitter,
    Join, OnTimeout, Path, Step, Template, Wait,
};
use serde_json::json;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn trip() -> Definition {
    load_file(&examples().join("trip.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn trip_has_four_steps_with_compensations_except_notify() {
    let trip = trip();
    assert_eq!(trip.key(), "trip@1");
    assert!(trip.description.is_some());
    let summary: Vec<(&str, &str, &str, Option<&str>)> = trip
        .steps
        .iter()
        .map(|step| {
            (
                step.name.as_str(),
                step.command().unwrap().topic.as_str(),
                step.command().unwrap().command_type.as_str(),
                step.compensation.as_ref().map(|c| c.command_type.as_str()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("payment", "trip.payment.commands", "charge", Some("refund")),
            ("flight", "trip.flight.commands", "book", Some("cancel")),
            ("hotel", "trip.hotel.commands", "book", Some("cancel")),
            ("notify", "trip.notify.commands", "send", None),
        ]
    );
    for step in &trip.steps {
        if let Some(compensation) = &step.compensation {
            assert_eq!(compensation.topic, step.command().unwrap().topic);
        }
    }
    assert_eq!(trip.step_index("hotel"), Some(2));
}

#[test]
fn trip_outputs_feed_compensations() {
    let trip = trip();
    let payment = trip.step("payment").unwrap();
    assert_eq!(
        payment.output,
        [(
            "payment_id".to_owned(),
            Path::parse("$.payment_id").unwrap()
        )]
    );
    let context = payment
        .map_output(&json!({"payment_id": "p-1", "status": "ok"}))
        .unwrap();
    let mut context = serde_json::Value::Object(context);
    context["amount"] = json!(1250);
    let refund = payment.compensation.as_ref().unwrap();
    assert_eq!(
        refund.payload.render(&context).unwrap(),
        json!({"payment_id": "p-1", "amount": 1250})
    );

    let flight = trip.step("flight").unwrap();
    let booked = flight.map_output(&json!({"booking_id": "f-9"})).unwrap();
    assert_eq!(booked.get("flight_booking_id"), Some(&json!("f-9")));
    let hotel = trip.step("hotel").unwrap();
    let booked = hotel.map_output(&json!({"booking_id": "h-3"})).unwrap();
    assert_eq!(booked.get("hotel_booking_id"), Some(&json!("h-3")));
}

#[test]
fn trip_charge_payload_renders_from_the_start_request() {
    let trip = trip();
    let context = json!({
        "customer": {"id": "c-42", "email": "ada@example.com"},
        "amount": 1250,
        "currency": "EUR",
    });
    let charge = trip.step("payment").unwrap().command().unwrap();
    assert_eq!(
        charge.payload.render(&context).unwrap(),
        json!({"amount": 1250, "currency": "EUR", "customer": "c-42"})
    );
    let flight = trip.step("flight").unwrap().command().unwrap();
    assert_eq!(
        flight.payload.render(&context).unwrap_err().to_string(),
        "nothing at `$.flight.number`"
    );
}

fn parallel_trip() -> Definition {
    load_file(&examples().join("parallel-trip.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// A command's topic, type and payload field names: what a participant sees.
type Shape = (String, String, Vec<String>);

fn shape(command: &CommandSpec) -> Shape {
    let mut fields: Vec<String> = match &command.payload {
        Template::Map(entries) => entries.iter().map(|(key, _)| key.clone()).collect(),
        Template::Literal(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        other => panic!("expected a mapping payload, got {other:?}"),
    };
    fields.sort();
    (command.topic.clone(), command.command_type.clone(), fields)
}

/// The step's command and compensation, as participants see them.
fn shapes(step: &Step) -> (Shape, Option<Shape>) {
    (
        shape(step.command().unwrap()),
        step.compensation.as_ref().map(shape),
    )
}

#[test]
fn parallel_trip_books_flight_and_hotel_at_once_with_the_v1_commands() {
    let v2 = parallel_trip();
    assert_eq!(v2.key(), "trip@2");
    assert_eq!(
        v2.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["payment", "book", "notify"]
    );
    let Action::Parallel(book) = &v2.steps[1].action else {
        panic!("expected `book` to be a parallel step");
    };
    assert_eq!(book.join, Join::All);
    let branches: Vec<(&str, &str, Vec<&str>)> = book
        .branches
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.key.as_str(),
                b.steps.iter().map(|s| s.name.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        branches,
        [
            ("flight", "flight", vec!["flight"]),
            ("hotel", "hotel", vec!["hotel"])
        ]
    );
    // The same participants serve both versions: same topics, types and payload fields.
    let v1 = trip();
    for name in ["payment", "flight", "hotel", "notify"] {
        assert_eq!(
            shapes(v2.step(name).unwrap()),
            shapes(v1.step(name).unwrap()),
            "{name}"
        );
    }
    // After `book`, each branch's outputs are under its key, next to the request's fields.
    let context = json!({
        "customer": {"id": "c-42", "email": "ada@example.com"},
        "payment_id": "p-1",
        "flight": {"number": "AF1234", "date": "2026-07-01", "flight_booking_id": "f-9"},
        "hotel": {"id": "h-7", "check_in": "2026-07-01", "nights": 3, "hotel_booking_id": "h-3"},
    });
    assert_eq!(
        v2.step("notify")
            .unwrap()
            .command()
            .unwrap()
            .payload
            .render(&context)
            .unwrap(),
        json!({
            "to": "ada@example.com",
            "template": "trip-confirmed",
            "payment_id": "p-1",
            "flight_booking_id": "f-9",
            "hotel_booking_id": "h-3",
        })
    );
    let flight = v2.step("flight").unwrap();
    assert_eq!(
        flight
            .map_output(&json!({"booking_id": "f-9"}))
            .unwrap()
            .get("flight_booking_id"),
        Some(&json!("f-9"))
    );
    assert_eq!(
        flight
            .compensation
            .as_ref()
            .unwrap()
            .payload
            .render(&context)
            .unwrap(),
        json!({"booking_id": "f-9"})
    );
}

#[test]
fn choice_ships_with_the_carrier_of_the_destination() {
    let shipping = load_file(&examples().join("choice.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shipping.key(), "shipping@1");
    let Action::Choice(route) = &shipping.step("route").unwrap().action else {
        panic!("expected `route` to be a choice step");
    };
    // The first branch whose condition holds runs; `otherwise` when none does.
    let branch = |order: serde_json::Value| {
        let context = json!({ "order": order });
        route
            .branches
            .iter()
            .position(|b| b.condition.eval(&context).unwrap())
            .map_or("otherwise".to_owned(), |i| {
                route.branches[i].steps[0].name.clone()
            })
    };
    assert_eq!(
        branch(json!({"country": "FR", "weight_kg": 50})),
        "ship_domestic"
    );
    assert_eq!(
        branch(json!({"country": "DE", "weight_kg": 12})),
        "ship_parcel"
    );
    assert_eq!(
        branch(json!({"country": "DE", "weight_kg": 31})),
        "otherwise"
    );
    assert_eq!(
        branch(json!({"country": "US", "weight_kg": 1})),
        "otherwise"
    );
    assert_eq!(route.otherwise.as_ref().unwrap()[0].name, "ship_freight");
    let wrap = shipping.step("gift_wrap").unwrap().when.as_ref().unwrap();
    assert!(wrap
        .eval(&json!({"order": {"gift": {"wrap": true}}}))
        .unwrap());
    assert!(!wrap
        .eval(&json!({"order": {"gift": {"wrap": false}}}))
        .unwrap());
    assert!(!wrap.eval(&json!({"order": {}})).unwrap());
}

#[test]
fn for_each_adds_a_line_per_item_five_at_a_time() {
    let restock = load_file(&examples().join("for-each.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restock.key(), "restock@1");
    assert_eq!(restock.limits.for_each_items, 200);
    let Action::ForEach(lines) = &restock.step("lines").unwrap().action else {
        panic!("expected `lines` to be a for_each step");
    };
    assert_eq!(
        (
            &lines.items,
            lines.key.as_str(),
            lines.max_concurrency,
            lines.join
        ),
        (&Path::parse("$.items").unwrap(), "lines", 5, Join::All)
    );
    let add = &lines.steps[0];
    assert_eq!(add.name, "add_line");
    assert_eq!(
        add.command()
            .unwrap()
            .payload
            .render(&json!({
                "order_id": "po-1", "item": {"sku": "A-1", "quantity": 12}, "index": 0
            }))
            .unwrap(),
        json!({"order_id": "po-1", "sku": "A-1", "quantity": 12, "position": 0})
    );
}

#[test]
fn any_join_stops_at_the_first_delivery() {
    let alert = load_file(&examples().join("any-join.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alert.key(), "alert@1");
    let Action::Parallel(tell) = &alert.step("tell").unwrap().action else {
        panic!("expected `tell` to be a parallel step");
    };
    assert_eq!(tell.join, Join::Any);
    assert_eq!(tell.join.needed(tell.branches.len()), 1);
    let keys: Vec<&str> = tell.branches.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(keys, ["email", "sms", "push"]);
}

#[test]
fn bench_has_four_do_undo_steps() {
    let bench = load_file(&examples().join("bench4.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bench.key(), "bench@1");
    assert_eq!(bench.steps.len(), 4);
    for (i, step) in bench.steps.iter().enumerate() {
        let n = i + 1;
        assert_eq!(step.name, format!("s{n}"));
        assert_eq!(
            step.command().unwrap().topic,
            format!("bench.s{n}.commands")
        );
        assert_eq!(step.command().unwrap().command_type, "do");
        let undo = step.compensation.as_ref().unwrap();
        assert_eq!(
            (undo.topic.as_str(), undo.command_type.as_str()),
            (step.command().unwrap().topic.as_str(), "undo")
        );
        assert_eq!(
            step.command()
                .unwrap()
                .payload
                .render(&json!({"id": 7}))
                .unwrap(),
            json!({"id": 7})
        );
    }
}

#[test]
fn broken_trip_reports_each_mistake() {
    let problems = load_file(&examples().join("broken/trip-broken.yaml")).unwrap_err();
    let found: Vec<(usize, usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.column, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (4, 10, "`version` must be positive, found 0"),
            (12, 19, "invalid reference in the payload of the command of step `payment`: path `$.customer..id` has an empty segment"),
            (13, 5, "unknown field `compensate` in step `payment`"),
            (17, 19, "`payment_id` in the output of step `payment` must be a path into the reply output, found the string `payment_id`"),
            (20, 14, "invalid topic name `trip flight commands` in the command of step `flight`: it contains ' '"),
            (22, 11, "duplicate step name `payment` (first defined at line 6)"),
            (25, 13, "`type` in the command of step `payment` is empty"),
        ]
    );
    assert!(problems
        .iter()
        .all(|p| p.source.ends_with("trip-broken.yaml")));
    let text = problems.to_string();
    assert!(
        text.contains("trip-broken.yaml:13:5: error: unknown field `compensate` in step `payment`\n  hint: did you mean `compensation`?"),
        "{text}"
    );
}

#[test]
fn trip_and_bench_have_only_command_steps_without_time_limits() {
    let bench = load_file(&examples().join("bench4.yaml")).unwrap_or_else(|e| panic!("{e}"));
    for definition in [trip(), bench] {
        assert_eq!(definition.deadline, None);
        assert_eq!(definition.defaults, Default::default());
        for step in &definition.steps {
            assert!(matches!(step.action, Action::Command(_)), "{}", step.name);
            assert_eq!(step.retry.max_attempts, 1);
            assert_eq!((step.timeout, step.deadline), (None, None));
        }
    }
}

fn timed() -> Definition {
    load_file(&examples().join("timed.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn timed_order_uses_every_time_feature() {
    let order = timed();
    assert_eq!(order.key(), "order@1");
    assert_eq!(order.deadline, Some(Duration::from_secs(30 * 86_400)));
    let kinds: Vec<(&str, &str)> = order
        .steps
        .iter()
        .map(|step| {
            let kind = match &step.action {
                Action::Command(_) => "command",
                Action::Wait(Wait::For(_)) => "wait",
                Action::Wait(Wait::Calendar(_)) => "calendar",
                Action::Wait(_) => "until",
                Action::Await(_) => "await",
                Action::Parallel(_) | Action::Choice(_) | Action::ForEach(_) => "container",
            };
            (step.name.as_str(), kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("reserve", "command"),
            ("payment", "command"),
            ("confirm", "await"),
            ("cool_off", "wait"),
            ("next_batch", "calendar"),
            ("ship", "command"),
        ]
    );

    // `reserve` and `ship` take the saga defaults; `payment` has its own.
    let reserve = order.step("reserve").unwrap();
    assert_eq!(reserve.retry, order.defaults.retry);
    assert_eq!(reserve.retry.max_attempts, 5);
    assert_eq!(reserve.retry.jitter, Jitter::Full);
    assert_eq!(reserve.timeout, Some(Duration::from_secs(30)));
    assert_eq!(reserve.compensation_retry.max_attempts, 10);
    let payment = order.step("payment").unwrap();
    assert_eq!(payment.retry.max_attempts, 3);
    assert_eq!(
        payment.retry.backoff,
        Backoff::Exponential {
            initial: Duration::from_millis(500),
            multiplier: 3.0,
            max: Duration::from_secs(5),
        }
    );
    assert!(!payment.retry.retries_code("CARD_DECLINED"));
    assert!(payment.retry.retries_code("GATEWAY_TIMEOUT"));
    assert_eq!(payment.timeout, Some(Duration::from_secs(5)));
    assert_eq!(payment.deadline, Some(Duration::from_secs(120)));

    let confirm = order.step("confirm").unwrap().awaited().unwrap();
    assert_eq!(confirm.event, "customer_confirmed");
    assert_eq!(
        confirm.correlate,
        Correlation::Context(Path::parse("$.order.id").unwrap())
    );
    assert_eq!(confirm.timeout, Some(Duration::from_secs(86_400)));
    assert_eq!(
        confirm.on_timeout,
        OnTimeout::Continue(json!({"confirmed": false}))
    );
    assert_eq!(
        order.step("cool_off").unwrap().wait(),
        Some(&Wait::For(Duration::from_secs(600)))
    );
    let Some(Wait::Calendar(batch)) = order.step("next_batch").unwrap().wait() else {
        panic!("expected a calendar wait");
    };
    assert_eq!(
        *batch,
        Calendar::parse("every Monday 09:00 Europe/Paris").unwrap()
    );
    assert_eq!(order.step("ship").unwrap().retry, order.defaults.retry);
}

#[test]
fn broken_timed_reports_each_mistake() {
    let problems = load_file(&examples().join("broken/timed-broken.yaml")).unwrap_err();
    let found: Vec<(usize, usize, &str)> = problems
        .iter()
        .map(|p| (p.line, p.column, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (6, 11, "the saga's `deadline` must be longer than zero"),
            (8, 12, "`timeout` in `defaults` must be a duration with a unit, found the number `30`"),
            (9, 25, "`max_attempts` in the `retry` of `defaults` must be at least 1, found 0"),
            (15, 45, "`initial` (20s) is longer than `max` (10s) in the backoff in the `retry` of step `payment`"),
            (15, 62, "`multiplier` in the backoff in the `retry` of step `payment` must be a number of at least 1, found `0.5`"),
            (16, 15, "unknown jitter `ful` in the `retry` of step `payment`"),
            (17, 5, "`compensation_retry` in step `payment` has no `compensation` to retry"),
            (20, 5, "`timeout` is only allowed on command steps, but step `cool_off` is a `wait` step"),
            (22, 12, "invalid calendar `every Monday 25:00 Europe/Paris` in the `until` of step `monday`: invalid time `25:00`: the hour must be between 00 and 23"),
            (24, 12, "invalid calendar `0 9 * * MON Europe/Pariss` in the `until` of step `batch`: unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?"),
            (26, 12, "invalid instant `2026-12-01T09:00:00` in the `until` of step `at_time`: it has no UTC offset; add `Z` or an offset such as `+01:00`"),
            (28, 20, "invalid event name `customer confirmed` in the `await` of step `confirm`: it contains ' '"),
            (28, 40, "`on_timeout` in the `await` of step `confirm` has no effect without `timeout`"),
            (29, 5, "`compensation` is only allowed on command steps, but step `confirm` is an `await` step"),
            (32, 5, "step `both` has both `wait` and `command`; a step does exactly one of `command`, `wait`, `until`, `await`, `parallel`, `choice` or `for_each`"),
        ]
    );
    assert!(problems.iter().all(|p| p.hint.is_some()));
    let text = problems.to_string();
    assert!(
        text.contains("timed-broken.yaml:16:15: error: unknown jitter `ful` in the `retry` of step `payment`\n  hint: did you mean `full`?"),
        "{text}"
    );
    assert!(
        text.contains("timed-broken.yaml:22:12: error: invalid calendar")
            && text.contains("hint: calendars are `every <day|weekday|weekend|Monday|Mon,Wed,Fri> [at] HH:MM[:SS] <Zone>`"),
        "{text}"
    );
}

#[test]
fn load_dir_reads_the_examples_but_not_subdirectories() {
    let registry = load_dir(&examples()).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = registry.iter().map(|d| d.key()).collect();
    assert_eq!(
        keys,
        [
            "alert@1",
            "bench@1",
            "order@1",
            "restock@1",
            "shipping@1",
            "sleepers@1",
            "trip@1",
            "trip@2"
        ]
    );
    assert_eq!(*registry.get("trip", 1).unwrap().as_ref(), trip());
    assert_eq!(*registry.latest("trip").unwrap().as_ref(), parallel_trip());
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("sagaflow-definition-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, file: &str, content: &str) {
        fs::write(self.0.join(file), content).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const ONE_STEP: &str =
    "name: trip\nversion: 2\nsteps:\n  - name: a\n    command: {topic: t, type: do}\n";

#[test]
fn load_dir_reports_problems_of_all_files_and_conflicting_versions() {
    let dir = TempDir::new("conflicts");
    dir.write("a.yaml", ONE_STEP);
    dir.write("b.yml", &ONE_STEP.replace("type: do", "type: redo"));
    dir.write("c.yaml", ONE_STEP); // identical to a.yaml: accepted
    dir.write("d.yaml", "name: other\nversion: 1\nsteps: []\n");
    dir.write("notes.txt", "not a definition");
    let problems = load_dir(&dir.0).unwrap_err();
    let found: Vec<(String, usize, usize, &str)> = problems
        .iter()
        .map(|p| {
            let file = std::path::Path::new(&p.source)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (file, p.line, p.column, p.message.as_str())
        })
        .collect();
    let a = dir.0.join("a.yaml").display().to_string();
    let conflict = format!("definition `trip@2` is also defined in {a} with different content");
    assert_eq!(
        found,
        [
            ("b.yml".to_owned(), 1, 7, conflict.as_str()),
            ("d.yaml".to_owned(), 3, 8, "a saga needs at least one step"),
        ]
    );
    assert!(problems.0[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("new `version`"));
}

#[test]
fn load_dir_and_load_file_report_io_problems() {
    let missing = examples().join("does-not-exist");
    let problems = load_dir(&missing).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!((problems.0[0].line, problems.0[0].column), (0, 0));
    assert!(
        problems.0[0]
            .message
            .starts_with("cannot list definition directory"),
        "{problems}"
    );

    let problems = load_file(&missing.join("x.yaml")).unwrap_err();
    assert!(
        problems.0[0]
            .message
            .starts_with("cannot read definition file"),
        "{problems}"
    );

    let empty = TempDir::new("empty");
    assert!(load_dir(&empty.0).unwrap().is_empty());
}

/// The fingerprint that makes a deployed version immutable ignores comments, quoting and layout,
/// and changes with any key or value.
#[test]
fn the_fingerprint_follows_content_not_formatting() {
    let yaml = std::fs::read_to_string(examples().join("trip.yaml")).expect("trip.yaml");
    let original = trip().fingerprint;
    assert_eq!(original.len(), 16, "{original}");
    let reformatted = format!(
        "# a comment\n{}",
        yaml.replace("name: trip", "name: \"trip\"   # quoted")
    );
    assert_eq!(
        Definition::parse("trip.yaml", &reformatted)
            .expect("valid")
            .fingerprint,
        original
    );
    let edited = yaml.replacen("type: book", "type: reserve", 1);
    assert_ne!(edited, yaml, "the example changed: pick another edit");
    assert_ne!(
        Definition::parse("trip.yaml", &edited)
            .expect("valid")
            .fingerprint,
        original
    );
}
