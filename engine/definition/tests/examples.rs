//! The definitions shipped in `examples/` parse (or, for `broken/`, fail) as documented.

use std::fs;
use std::path::PathBuf;

use sagaflow_definition::{load_dir, load_file, Definition, Path};
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
                step.command.topic.as_str(),
                step.command.command_type.as_str(),
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
            assert_eq!(compensation.topic, step.command.topic);
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
    let charge = &trip.step("payment").unwrap().command;
    assert_eq!(
        charge.payload.render(&context).unwrap(),
        json!({"amount": 1250, "currency": "EUR", "customer": "c-42"})
    );
    let flight = &trip.step("flight").unwrap().command;
    assert_eq!(
        flight.payload.render(&context).unwrap_err().to_string(),
        "nothing at `$.flight.number`"
    );
}

#[test]
fn bench_has_four_do_undo_steps() {
    let bench = load_file(&examples().join("bench4.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bench.key(), "bench@1");
    assert_eq!(bench.steps.len(), 4);
    for (i, step) in bench.steps.iter().enumerate() {
        let n = i + 1;
        assert_eq!(step.name, format!("s{n}"));
        assert_eq!(step.command.topic, format!("bench.s{n}.commands"));
        assert_eq!(step.command.command_type, "do");
        let undo = step.compensation.as_ref().unwrap();
        assert_eq!(
            (undo.topic.as_str(), undo.command_type.as_str()),
            (step.command.topic.as_str(), "undo")
        );
        assert_eq!(
            step.command.payload.render(&json!({"id": 7})).unwrap(),
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
fn load_dir_reads_the_examples_but_not_subdirectories() {
    let registry = load_dir(&examples()).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = registry.iter().map(|d| d.key()).collect();
    assert_eq!(keys, ["bench@1", "trip@1"]);
    assert_eq!(*registry.latest("trip").unwrap().as_ref(), trip());
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
