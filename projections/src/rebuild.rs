//! `sagaflow projections rebuild`: project the whole log from offset 0 into fresh tables in a
//! side schema, then swap them in for the live ones in one transaction.
//!
//! The live projector may keep running: after the swap, its next batch finds offsets it did
//! not write (the fence), re-reads them and continues from where the rebuild stopped.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::BlockingCodec;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::projector::{collect_from, decode_batch, ProjectorConfig};
use crate::store::{connect, Store};

/// How long a rebuild reads on once it has reached the end offsets read at its start, when the
/// log never falls quiet (the engine writing all along): the live projector reads the rest.
const LIVE_SETTLE: Duration = Duration::from_secs(10);

/// How a rebuild went.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// Events projected.
    pub events: u64,
    /// Records skipped as not saga events.
    pub bad: u64,
    /// Seconds from the start to the last batch written (the quiet wait that proves the end,
    /// and the swap, excluded).
    pub seconds: f64,
}

/// Where a rebuild stands, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
    /// The last report: the rebuild has read the whole log.
    pub finished: bool,
}

impl Progress {
    /// `412000/1000000 events (41%), 35210/s, ETA 17 s`.
    pub fn line(&self) -> String {
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(0.001);
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 {
            format!("{:.0} s", left as f64 / rate)
        } else {
            "unknown".into()
        };
        let percent = if self.total == 0 {
            100.0
        } else {
            100.0 * self.done as f64 / self.total as f64
        };
        format!(
            "{}/{} events ({percent:.0}%), {rate:.0}/s, ETA {eta}",
            self.done, self.total
        )
    }
}

/// Prints progress on stderr: one updating line on a terminal, else a line every 5 s.
pub fn print_progress() -> impl FnMut(Progress) {
    let tty = std::io::stderr().is_terminal();
    let mut last: Option<Instant> = None;
    move |p: Progress| {
        let every = if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        let finished = p.finished;
        if !finished && last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        last = Some(Instant::now());
        if tty {
            eprint!("\rrebuild: {}   ", p.line());
            if finished {
                eprintln!();
            }
        } else {
            eprintln!("rebuild: {}", p.line());
        }
    }
}

/// Rebuilds `config.schema` from offset 0. Bad records are counted and skipped, not sent to
/// the dead-letter topic again (the live projector sent them when it met them).
pub fn rebuild(
    config: &ProjectorConfig,
    mut progress: impl FnMut(Progress),
) -> Result<RebuildReport> {
    let live = config.schema.clone();
    let side = format!("{live}_rebuild");
    // An earlier rebuild that stopped half way left its tables.
    crate::store::drop_schema(&config.database_url, &side)?;
    let mut store = Store::open(&config.database_url, &side, config.retention_days)?;

    let consumer: BaseConsumer = config
        .kafka
        .config("projector-rebuild", &[("fetch.wait.max.ms", "50")])
        .set("group.id", format!("{}.rebuild", config.consumer_group))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::kafka("creating the rebuild consumer", e))?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), Duration::from_secs(30))
        .map_err(|e| Error::kafka(format!("reading the metadata of {}", config.topic), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::NoTopic {
            topic: config.topic.clone(),
        });
    }
    let mut ends = BTreeMap::new();
    let mut total = 0u64;
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&config.topic, *p, Duration::from_secs(30))
            .map_err(|e| Error::kafka(format!("reading the end of {} [{p}]", config.topic), e))?;
        total += (high - low).max(0) as u64;
        let _ = ends.insert(*p, (low, high));
        list.add_partition_offset(&config.topic, *p, Offset::Beginning)
            .map_err(|e| Error::kafka("building the assignment", e))?;
    }
    tracing::info!(?ends, total, "rebuild: end offsets of the event log");
    consumer
        .assign(&list)
        .map_err(|e| Error::kafka("assigning the event log", e))?;
    let codec = BlockingCodec::new(&config.registry)
        .map_err(|e| Error::Config(format!("registry settings: {e}")))?;
    let metrics = Metrics::default();
    let never = AtomicBool::new(false);
    let started = Instant::now();
    let mut expected: BTreeMap<i32, Option<i64>> = partitions.iter().map(|p| (*p, None)).collect();
    let mut done = 0u64;
    let mut idle_since = Instant::now();
    // When the end offsets read at the start were first reached: on a log the engine keeps
    // writing, quiet never comes, and the live projector carries on from where this stops.
    let mut caught_up_at: Option<Instant> = None;
    // When the last batch was written: the quiet wait that proves the end is not work, and
    // counting it would understate the rate.
    let mut last_write = started;
    loop {
        // The end offsets read at the start bound the work, but some brokers (tansu 0.6)
        // report them low: the log has ended only once they are reached and nothing more
        // arrives for a few seconds.
        let caught_up = ends
            .iter()
            .all(|(p, (low, high))| expected[p].unwrap_or(*low) >= *high);
        let quiet = idle_since.elapsed();
        let settle = if done > 0 { 3 } else { 10 };
        if caught_up {
            let since = *caught_up_at.get_or_insert_with(Instant::now);
            if quiet >= Duration::from_secs(settle) || since.elapsed() >= LIVE_SETTLE {
                break;
            }
        }
        if quiet > Duration::from_secs(30) {
            tracing::warn!("nothing new for 30 s before the end offsets read at the start; finishing with what was read");
            break;
        }
        let fetched = collect_from(&consumer, config.batch_max, config.batch_wait, &never);
        if fetched.is_empty() {
            continue;
        }
        idle_since = Instant::now();
        done += fetched.len() as u64;
        let Some(batch) = decode_batch(&codec, None, config, fetched, &expected, &metrics, &never)
        else {
            continue;
        };
        let written = store.write(&config.topic, &batch)?;
        metrics.committed(
            written.applied,
            written.duplicates,
            written.gaps,
            written.expired,
            &[],
        );
        for (p, (_, next)) in &batch.ranges {
            let _ = expected.insert(*p, Some(*next));
        }
        last_write = Instant::now();
        total = total.max(done);
        progress(Progress {
            done,
            total,
            elapsed: started.elapsed(),
            finished: false,
        });
    }
    let seconds = (last_write - started).as_secs_f64();
    progress(Progress {
        done: total.max(done),
        total: total.max(done),
        elapsed: last_write - started,
        finished: true,
    });
    swap(&config.database_url, &live, &side)?;
    Ok(RebuildReport {
        events: metrics.events(),
        bad: metrics.bad_events(),
        seconds,
    })
}

/// Replaces the live schema by the rebuilt one in one transaction.
fn swap(url: &str, live: &str, side: &str) -> Result<()> {
    let mut client = connect(url)?;
    let mut tx = client
        .transaction()
        .map_err(|e| Error::sql("starting the swap", e))?;
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&live])
        .map_err(|e| Error::sql("looking up the live schema", e))?
        .is_some();
    let old = format!("{live}_replaced");
    if exists {
        // Waits for the live projector's batch in progress, and keeps the next one out until
        // the swap commits.
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {old} CASCADE;
             LOCK TABLE {live}.projection_offsets IN ACCESS EXCLUSIVE MODE;
             ALTER SCHEMA {live} RENAME TO {old};"
        ))
        .map_err(|e| Error::sql("moving the live tables aside", e))?;
    }
    tx.batch_execute(&format!("ALTER SCHEMA {side} RENAME TO {live}"))
        .map_err(|e| Error::sql("swapping the rebuilt tables in", e))?;
    if exists {
        tx.batch_execute(&format!("DROP SCHEMA {old} CASCADE"))
            .map_err(|e| Error::sql("dropping the replaced tables", e))?;
    }
    tx.commit()
        .map_err(|e| Error::sql("committing the swap", e))
}
