//! `sagaflow def replay`: replays recorded sagas through a new version of their definition and
//! reports, per saga, where it would do something else.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sagaflow_avro::SagaEvent;
use sagaflow_core::replay::{replay_saga, Replayed};

use crate::eventlog;
use crate::Connection;

/// Replay options.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The new version's definition file.
    definition: PathBuf,
    /// The recorded history: a file of JSON lines written by `sagaflow events`, or the event
    /// log topic of an engine group (`<group>.events`, read from the broker).
    #[arg(long)]
    events: String,
    #[command(flatten)]
    connection: Connection,
    /// Reading a topic stops once nothing new has arrived for this long, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// How many divergent sagas to print in full (all are counted).
    #[arg(long, default_value_t = 20)]
    show: usize,
}

pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let definition = match sagaflow_definition::load_file(&args.definition) {
        Ok(d) => d,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            eprintln!("fix the definition, then replay again");
            return Ok(ExitCode::from(2));
        }
    };
    let sagas = if std::path::Path::new(&args.events).is_file() {
        read_file(&args.events)?
    } else {
        eprintln!("replay: reading topic {} from the beginning", args.events);
        let log = eventlog::read_all(
            &args.connection.kafka()?,
            &args.connection.registry()?,
            &args.events,
            Duration::from_millis(args.quiet_ms),
        )
        .await
        .with_context(|| {
            format!(
                "{} is neither a file nor a readable topic; pass a file written by `sagaflow events`, or a group's event topic such as sagaflow.events",
                args.events
            )
        })?;
        let log = log.lock().expect("event log lock");
        log.sagas
            .iter()
            .map(|(id, saga)| (id.clone(), saga.events.values().cloned().collect()))
            .collect()
    };
    let mine: Vec<(&String, &Vec<SagaEvent>)> = sagas
        .iter()
        .filter(|(_, events)| {
            events
                .first()
                .is_some_and(|e| e.definition == definition.name)
        })
        .collect();
    let others = sagas.len() - mine.len();
    if mine.is_empty() {
        eprintln!(
            "replay: none of the {} sagas read is of definition {}; nothing to replay",
            sagas.len(),
            definition.name
        );
        return Ok(ExitCode::from(2));
    }
    eprintln!(
        "replay: {} sagas of {} through {}",
        mine.len(),
        definition.name,
        definition.key()
    );
    let (mut same, mut diverged, mut unreplayable) = (0usize, 0usize, 0usize);
    let mut last_progress = Instant::now();
    for (done, (id, events)) in mine.iter().enumerate() {
        match replay_saga(&definition, events) {
            Replayed::Same => same += 1,
            Replayed::Diverged(d) => {
                diverged += 1;
                if diverged <= args.show {
                    println!(
                        "{id}: diverges at seq {} (v{} recorded)",
                        d.seq, events[0].version
                    );
                    println!("  input:       {}", d.input);
                    println!("  recorded:    {:?}", d.recorded);
                    println!("  new version: {:?}", d.replayed);
                }
            }
            Replayed::Unreplayable(why) => {
                unreplayable += 1;
                if unreplayable <= args.show {
                    println!("{id}: not replayable: {why}");
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "replay: {}/{} sagas ({:.0}%)",
                done + 1,
                mine.len(),
                (done + 1) as f64 * 100.0 / mine.len() as f64
            );
        }
    }
    println!(
        "replayed {} sagas of {}: {same} the same, {diverged} diverge, {unreplayable} not replayable; {others} sagas of other definitions skipped",
        mine.len(),
        definition.name
    );
    if same + diverged == 0 {
        eprintln!(
            "replay: no saga could be replayed; the log must come from an engine that records inputs (this version or later)"
        );
        return Ok(ExitCode::from(2));
    }
    Ok(if diverged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Sagas of a JSON-lines file, each in seq order.
fn read_file(path: &str) -> anyhow::Result<BTreeMap<String, Vec<SagaEvent>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let mut sagas: BTreeMap<String, BTreeMap<i64, SagaEvent>> = BTreeMap::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {path}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = sagaflow_avro::SagaEvent::from_json(&line).map_err(|e| {
            anyhow::anyhow!(
                "{path}:{}: not an event line ({e}); write the file with `sagaflow events > {path}`",
                number + 1
            )
        })?;
        let _ = sagas
            .entry(event.saga_id.clone())
            .or_default()
            .insert(event.seq, event);
    }
    Ok(sagas
        .into_iter()
        .map(|(id, events)| (id, events.into_values().collect()))
        .collect())
}
