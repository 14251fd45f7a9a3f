//! Random interleavings of replies (successes, failures, duplicates, stale ones), timers and
//! signals across branches, checked against what a saga must always do: end once with a gapless
//! log, undo exactly what it completed (in reverse within each branch, each step once), do
//! nothing after its end, and never end with an attempt unresolved.

mod common;

use common::{reply, start_of, Run};
use proptest::prelude::*;
use sagaflow_avro::{
    Command, EventType as E, SagaEvent, SagaStatus, Signal, StepStatus, TimerKind,
};
use sagaflow_core::Input;
use sagaflow_definition::Definition;
use serde_json::json;

const TRIP: &str = "
name: trip
version: 2
steps:
  - name: payment
    command: {topic: t.pay, type: charge}
    compensation: {topic: t.pay, type: refund}
    compensation_retry: {max_attempts: 3, backoff: 1s}
  - name: book
    parallel:
      - name: flight
        steps:
          - name: flight
            command: {topic: t.flight, type: book}
            compensation: {topic: t.flight, type: cancel}
            timeout: 10s
            retry: {max_attempts: 2, backoff: 1s}
      - name: hotel
        steps:
          - {name: hotel, command: {topic: t.hotel, type: book}, compensation: {topic: t.hotel, type: cancel}, timeout: 10s}
          - {name: breakfast, command: {topic: t.hotel, type: add}, compensation: {topic: t.hotel, type: remove}}
  - name: notify
    command: {topic: t.notify, type: send}
";

const NESTED: &str = "
name: nested
version: 1
steps:
  - name: race
    parallel:
      - name: a
        steps:
          - {name: a1, command: {topic: t.a, type: x}, compensation: {topic: t.a, type: u}, timeout: 5s}
          - {name: a2, command: {topic: t.a, type: y}, compensation: {topic: t.a, type: v}}
      - name: b
        steps:
          - {name: b1, command: {topic: t.b, type: x}, compensation: {topic: t.b, type: u}, timeout: 5s, retry: {max_attempts: 3, backoff: 1s}}
          - name: inner
            parallel:
              - name: x
                steps:
                  - {name: bx, command: {topic: t.b, type: bx}, compensation: {topic: t.b, type: ux}, timeout: 5s}
              - name: y
                steps:
                  - {name: by, await: {event: go, timeout: 1m}}
                  - {name: by2, command: {topic: t.b, type: by}, compensation: {topic: t.b, type: uy}}
            join: any
      - name: c
        steps:
          - {name: c1, wait: 30s}
          - {name: c2, command: {topic: t.c, type: x}, compensation: {topic: t.c, type: u}}
    join: {at_least: 2}
  - name: tail
    command: {topic: t.tail, type: x}
    compensation: {topic: t.tail, type: u}
  - name: last
    command: {topic: t.last, type: x}
";

const FAN: &str = "
name: fan
version: 1
steps:
  - name: first
    command: {topic: t.first, type: x}
    compensation: {topic: t.first, type: u}
  - name: fan
    for_each: $.items
    max_concurrency: 2
    join: {at_least: 2}
    steps:
      - {name: f1, command: {topic: t.f, type: x}, compensation: {topic: t.f, type: u}, timeout: 5s, retry: {max_attempts: 2, backoff: 1s}}
      - name: pick
        choice:
          - when: $.index < 2
            steps:
              - {name: f2, command: {topic: t.f, type: y}, compensation: {topic: t.f, type: v}}
        otherwise:
          - {name: f3, command: {topic: t.f, type: z}}
  - name: end
    command: {topic: t.end, type: x}
";

#[derive(Debug, Clone)]
enum Act {
    /// Answer an outstanding command.
    Answer {
        pick: usize,
        success: bool,
        retryable: bool,
    },
    /// Send a reply that was already applied again.
    Duplicate { pick: usize },
    /// Answer an older attempt of an outstanding command.
    Stale { pick: usize },
    /// Fire one of the saga's timers.
    Fire { pick: usize },
    /// Fire a timer id the saga never had or already fired.
    StaleTimer { pick: usize },
    /// Deliver the awaited event (again, maybe).
    Signal,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (any::<usize>(), prop::bool::weighted(0.75), any::<bool>())
            .prop_map(|(pick, success, retryable)| Act::Answer { pick, success, retryable }),
        1 => any::<usize>().prop_map(|pick| Act::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| Act::Stale { pick }),
        2 => any::<usize>().prop_map(|pick| Act::Fire { pick }),
        1 => any::<usize>().prop_map(|pick| Act::StaleTimer { pick }),
        1 => Just(Act::Signal),
    ]
}

struct Driver {
    run: Run,
    def: Definition,
    /// Commands sent and not answered yet.
    outstanding: Vec<Command>,
    /// Replies applied so far, to send again.
    answered: Vec<Input>,
    fired: Vec<String>,
}

impl Driver {
    fn new(yaml: &str, input: serde_json::Value) -> Self {
        let def = Definition::parse("p.yaml", yaml).expect("valid");
        let mut run = Run::with(vec![def.clone()]);
        run.feed(start_of(&def.name, "s", input));
        let outstanding = run.decisions[0]
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        Self {
            run,
            def,
            outstanding,
            answered: Vec::new(),
            fired: Vec::new(),
        }
    }

    fn feed(&mut self, input: Input) {
        let d = self.run.feed(input.clone());
        let sent: Vec<Command> = d.commands.iter().map(|(_, c)| c.clone()).collect();
        if matches!(input, Input::Reply(_)) && d.outcome == sagaflow_core::Outcome::Applied {
            self.answered.push(input);
        }
        self.outstanding.extend(sent);
    }

    /// Ended, or settled in INCIDENT: nothing more happens without an operator.
    fn ended(&self) -> bool {
        let status = self.run.status();
        status.is_terminal() || status == SagaStatus::Incident
    }

    fn step(&mut self, act: &Act) {
        match *act {
            Act::Answer {
                pick,
                success,
                retryable,
            } if !self.outstanding.is_empty() => {
                let c = self.outstanding.remove(pick % self.outstanding.len());
                let result = if success {
                    Ok(json!({"id": format!("{}-{}", c.step, c.attempt)}))
                } else {
                    Err(("BOOM", retryable))
                };
                self.feed(reply("s", &c.step, c.phase, c.attempt, result));
            }
            Act::Duplicate { pick } if !self.answered.is_empty() => {
                let again = self.answered[pick % self.answered.len()].clone();
                self.feed(again);
            }
            Act::Stale { pick } if !self.outstanding.is_empty() => {
                let c = self.outstanding[pick % self.outstanding.len()].clone();
                if c.attempt > 1 {
                    self.feed(reply("s", &c.step, c.phase, c.attempt - 1, Ok(json!({}))));
                }
            }
            Act::Fire { pick } => {
                let timers: Vec<_> = self
                    .run
                    .state
                    .as_ref()
                    .map(|s| {
                        s.timers
                            .iter()
                            .filter(|t| t.kind != TimerKind::Expire)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                if !timers.is_empty() {
                    let t = &timers[pick % timers.len()];
                    self.fired.push(t.id.clone());
                    let at = t.due.max(self.run.now);
                    self.run.feed_at(
                        Input::Timer {
                            saga_id: "s".into(),
                            timer_id: t.id.clone(),
                        },
                        at,
                    );
                    let sent: Vec<Command> = self
                        .run
                        .decisions
                        .last()
                        .unwrap()
                        .commands
                        .iter()
                        .map(|(_, c)| c.clone())
                        .collect();
                    self.outstanding.extend(sent);
                }
            }
            Act::StaleTimer { pick } => {
                let id = if self.fired.is_empty() || pick % 2 == 0 {
                    "Retry/999".to_string()
                } else {
                    self.fired[pick % self.fired.len()].clone()
                };
                self.feed(Input::Timer {
                    saga_id: "s".into(),
                    timer_id: id,
                });
            }
            Act::Signal => {
                let waiting = self.run.state.as_ref().and_then(|s| {
                    s.steps
                        .iter()
                        .find(|n| n.correlation.is_some())
                        .map(|n| (n.name.clone(), n.correlation.clone().unwrap()))
                });
                if let Some((step, correlation)) = waiting {
                    self.feed(Input::Signal {
                        saga_id: "s".into(),
                        step,
                        signal: Signal {
                            signal_id: "sig-1".into(),
                            event: "go".into(),
                            correlation,
                            payload_json: None,
                            sent_at: 0,
                            ttl_ms: None,
                        },
                    });
                }
            }
            _ => {}
        }
    }

    /// Answers and fires whatever is left, successfully, until the saga ends.
    fn drain(&mut self) {
        for _ in 0..2000 {
            if self.ended() {
                return;
            }
            if !self.outstanding.is_empty() {
                self.step(&Act::Answer {
                    pick: 0,
                    success: true,
                    retryable: false,
                });
            } else if self.run.state.as_ref().is_some_and(|s| {
                s.steps
                    .iter()
                    .any(|n| n.status == StepStatus::Waiting && n.correlation.is_some())
            }) {
                self.step(&Act::Signal);
            } else if self
                .run
                .state
                .as_ref()
                .is_some_and(|s| s.timers.iter().any(|t| t.kind != TimerKind::Expire))
            {
                self.step(&Act::Fire { pick: 0 });
            } else {
                panic!(
                    "the saga is stuck with nothing in flight: {:#?}",
                    self.run.state
                );
            }
        }
        panic!("the saga did not end: {:#?}", self.run.state);
    }
}

fn check(driver: &Driver) {
    let run = &driver.run;
    let events: Vec<SagaEvent> = run.all_events();
    // A gapless log.
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    // Exactly one end (or incident), and nothing after it.
    let ends: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.event_type,
                E::SagaCompleted | E::SagaCompensated | E::SagaIncident
            )
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ends, vec![events.len() - 1], "one end, last");
    let end_decision = run
        .decisions
        .iter()
        .position(|d| d.events.iter().any(|e| e.seq == events.len() as i64))
        .unwrap();
    for d in &run.decisions[end_decision + 1..] {
        assert!(d.commands.is_empty() && d.events.is_empty(), "{d:?}");
    }
    // Nothing unresolved at the end.
    let state = run.state.as_ref().unwrap();
    let leaf = |id: &str| {
        !id.contains('/')
            && driver
                .def
                .step(id.split('[').next().unwrap_or(id))
                .is_some_and(|s| s.children().is_empty())
    };
    for node in state.steps.iter().filter(|n| leaf(&n.name)) {
        assert!(
            !matches!(
                node.status,
                StepStatus::Running
                    | StepStatus::Cancelled
                    | StepStatus::Compensating
                    | StepStatus::Backoff
                    | StepStatus::Waiting
            ),
            "{} is {:?} at the end ({:?})",
            node.name,
            node.status,
            state.status
        );
    }
    // Compensations: each once, only of what completed (or may have), in reverse order.
    let problems = sagaflow_core::audit::compensation_problems(&driver.def, &events);
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        events
            .iter()
            .map(|e| format!(
                "{} {:?} {:?} {}",
                e.seq,
                e.event_type,
                e.step,
                e.detail_json.as_deref().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn scenario(yaml: &str, input: serde_json::Value, acts: &[Act]) {
    let mut driver = Driver::new(yaml, input);
    for act in acts {
        if driver.ended() {
            break;
        }
        driver.step(act);
    }
    driver.drain();
    // Inputs after the end change nothing.
    for act in acts.iter().take(5) {
        driver.step(act);
    }
    check(&driver);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_parallel_trip_under_any_interleaving(acts in prop::collection::vec(act(), 0..40)) {
        scenario(TRIP, json!({}), &acts);
    }

    #[test]
    fn nested_joins_under_any_interleaving(acts in prop::collection::vec(act(), 0..60)) {
        scenario(NESTED, json!({}), &acts);
    }

    #[test]
    fn a_for_each_with_choices_under_any_interleaving(
        acts in prop::collection::vec(act(), 0..60),
        items in 0usize..5,
    ) {
        scenario(FAN, json!({"items": (0..items).collect::<Vec<_>>()}), &acts);
    }
}
