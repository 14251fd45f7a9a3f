//! Owner heartbeats, and the eviction of static members whose heartbeats stopped.
//!
//! Every owner writes a heartbeat to each changelog partition it owns: a tombstone under the
//! reserved key `__heartbeat` (compaction keeps none, restores skip the key), with the owner's
//! instance-id in a header. They come from a thread of their own, so a long restore inside the
//! rebalance callback does not silence them. Two rules read them:
//!
//! - the tansu orphan rule (`membership::OrphanWatch`): a changelog end that stands still has no
//!   live owner;
//! - `evict-silent-peers-ms`: the broker notices a dead static member only when its session ends,
//!   and static members get long sessions so that a restart in place keeps its partitions. A
//!   survivor that keeps standby copies reads the other partitions' changelog anyway; when every
//!   partition an engine heartbeats on has had no record for that long while the group stood
//!   still, its process is gone (or frozen, or cut off from the broker), and the survivor
//!   removes that member from the group (`membership::remove_static_member`), as an operator
//!   would with `sagaflow group remove-members`. Its partitions then move at once instead of
//!   after the session.
//!
//! Who owns a partition is told by offsets, not clocks: only a heartbeat at or above the
//! partition's end when this engine's assignment settled names its owner, since one from before
//! may come from the owner a rebalance took the partition from. Heartbeats carry their period,
//! so an engine whose own wait is shorter than another's heartbeat period never mistakes the
//! gaps between them for silence.
//!
//! A removed engine that was alive after all finds its member unknown to the broker when it
//! comes back: it gives its partitions up as lost and joins again (or, back while the removal
//! is still joined in its place, is fenced and stops with an error that says why). Nothing it
//! wrote late counts (G3, docs/architecture.md). So an eviction can cost a rebalance or a
//! restart, never a wrong result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sagaflow_kafka::KafkaSettings;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::traffic::Flow;

/// Changelog key of owner heartbeats: tombstones (no value), so compaction keeps none of them,
/// and restores skip the reserved key.
pub(crate) const HEARTBEAT_KEY: &str = "__heartbeat";

/// Heartbeats when only the tansu orphan rule reads them (its patience is tens of seconds).
pub(crate) const ORPHAN_HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The partitions this engine owns, with their heartbeats written on a thread of their own.
pub(crate) struct Heartbeats {
    owned: Arc<Mutex<BTreeSet<i32>>>,
    /// Set when partitions were assigned: they get a heartbeat at once, not after a period.
    fresh: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeats {
    /// Writes a heartbeat to each owned partition of `changelog` every `every`; with `None`
    /// nothing reads them, and none are written.
    pub(crate) fn start(
        producer: FutureProducer,
        changelog: String,
        instance: Option<String>,
        every: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let owned = Arc::new(Mutex::new(BTreeSet::new()));
        let fresh = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match every {
            None => None,
            Some(every) => {
                let beating = Beating {
                    producer,
                    changelog,
                    instance,
                    every,
                    metrics,
                    owned: owned.clone(),
                    fresh: fresh.clone(),
                    stop: stop.clone(),
                };
                let handle = std::thread::Builder::new()
                    .name("sagaflow-heartbeats".into())
                    .spawn(move || beating.run())
                    .map_err(|source| Error::Io {
                        action: "spawning the heartbeat thread".into(),
                        source,
                    })?;
                Some(handle)
            }
        };
        Ok(Self {
            owned,
            fresh,
            stop,
            thread,
        })
    }

    /// The group gave this engine `partitions` (before their restores, which may take long).
    pub(crate) fn assigned(&self, partitions: &BTreeSet<i32>) {
        self.owned
            .lock()
            .expect("heartbeat lock")
            .extend(partitions.iter().copied());
        self.fresh.store(true, Ordering::SeqCst);
    }

    /// The group took `partitions` away.
    pub(crate) fn revoked(&self, partitions: &BTreeSet<i32>) {
        self.owned
            .lock()
            .expect("heartbeat lock")
            .retain(|p| !partitions.contains(p));
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The heartbeat thread.
struct Beating {
    producer: FutureProducer,
    changelog: String,
    instance: Option<String>,
    every: Duration,
    metrics: Arc<Metrics>,
    owned: Arc<Mutex<BTreeSet<i32>>>,
    fresh: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Beating {
    fn run(self) {
        let mut last = Instant::now();
        let every_ms = self.every.as_millis().to_string();
        while !self.stop.load(Ordering::SeqCst) {
            // Short naps, so that a stop or an assignment is not held up by a long period.
            std::thread::sleep(self.every.min(Duration::from_millis(50)));
            if !self.fresh.swap(false, Ordering::SeqCst) && last.elapsed() < self.every {
                continue;
            }
            last = Instant::now();
            let owned: Vec<i32> = self
                .owned
                .lock()
                .expect("heartbeat lock")
                .iter()
                .copied()
                .collect();
            for partition in owned {
                let mut record = FutureRecord::<str, [u8]>::to(&self.changelog)
                    .partition(partition)
                    .key(HEARTBEAT_KEY);
                if let Some(id) = &self.instance {
                    record = record.headers(
                        OwnedHeaders::new()
                            .insert(Header {
                                key: crate::kafka::INSTANCE_HEADER,
                                value: Some(id.as_str()),
                            })
                            .insert(Header {
                                key: crate::kafka::HEARTBEAT_EVERY_HEADER,
                                value: Some(every_ms.as_str()),
                            }),
                    );
                }
                // Nothing waits for the acknowledgement: a lost heartbeat is made up by the next.
                match self.producer.send_result(record) {
                    Ok(_) => self
                        .metrics
                        .traffic
                        .count(Flow::Heartbeat, HEARTBEAT_KEY.len()),
                    Err((e, _)) => warn!(partition, error = %e, "heartbeat not sent"),
                }
            }
        }
    }
}

/// A heartbeat read from a partition this engine does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beat {
    /// The instance-id of the engine that wrote it.
    pub(crate) instance: String,
    /// Its changelog offset.
    pub(crate) offset: i64,
    /// Its writer's heartbeat period.
    pub(crate) every: Duration,
}

/// Since when this engine holds its current assignment (set when the rebalance callback has
/// restored it); `None` while it holds none or a rebalance is under way. Read by the standby
/// thread.
pub(crate) type Settled = Arc<Mutex<Option<Instant>>>;

/// One look at a watched partition: its changelog end and when it was read (`None` if it could
/// not be), and the last heartbeat read from it.
pub(crate) type Look = (i32, Option<(i64, Instant)>, Option<Beat>);

/// Decides which static members to evict, from the changelog ends of the partitions this
/// engine does not own and the heartbeats read from them.
#[derive(Debug)]
pub(crate) struct SilenceWatch {
    after: Duration,
    /// This engine's instance-id: never evicted by itself.
    me: String,
    /// The assignment the floors belong to.
    generation: Option<Instant>,
    /// Per partition: its changelog end when the assignment settled (read after it did). Only a
    /// heartbeat at or above it names the partition's owner.
    floors: BTreeMap<i32, i64>,
    /// Per partition: its changelog end last seen, and since when it has not moved.
    ends: BTreeMap<i32, (i64, Instant)>,
    /// The instances picked within the last `after`: each is picked at most once per `after`.
    picked: BTreeMap<String, Instant>,
}

impl SilenceWatch {
    pub(crate) fn new(after: Duration, me: &str) -> Self {
        Self {
            after,
            me: me.to_string(),
            generation: None,
            floors: BTreeMap::new(),
            ends: BTreeMap::new(),
            picked: BTreeMap::new(),
        }
    }

    /// How long a partition must be silent.
    pub(crate) fn after(&self) -> Duration {
        self.after
    }

    /// One look at every watched partition (`settled` read before the ends were). Returns the
    /// instances to evict: an engine whose every partition with a heartbeat of it since the
    /// assignment has had no record for `after` (or four of its heartbeat periods, if longer),
    /// counted from the assignment at the earliest. Of the engines seen alive, the one with the
    /// lowest instance-id evicts; the others wait twice as long, in case it cannot.
    pub(crate) fn look(&mut self, settled: Option<Instant>, looks: &[Look]) -> Vec<String> {
        let watched: BTreeSet<i32> = looks.iter().map(|(p, _, _)| *p).collect();
        self.ends.retain(|p, _| watched.contains(p));
        self.floors.retain(|p, _| watched.contains(p));
        if settled != self.generation {
            self.generation = settled;
            self.floors.clear();
        }
        if settled.is_some() {
            // A partition watched since the assignment settled (`standby-copies` places copies
            // once the group's assignment can be read) is floored where it was first seen: a
            // heartbeat above that came after the settling too.
            for (p, end, _) in looks {
                if let Some((end, _)) = end {
                    let _ = self.floors.entry(*p).or_insert(*end);
                }
            }
        }
        let mut quiet: BTreeMap<&str, Duration> = BTreeMap::new();
        let mut alive: BTreeSet<&str> = BTreeSet::from([self.me.as_str()]);
        for (partition, end, beat) in looks {
            let Some((end, at)) = *end else {
                // An end that could not be read says nothing (the broker may be out of reach
                // from here): the partition's silence is counted again from the next one.
                let _ = self.ends.remove(partition);
                continue;
            };
            let entry = self.ends.entry(*partition).or_insert((end, at));
            if entry.0 != end {
                *entry = (end, at);
            }
            let Some(settled_at) = settled else { continue };
            let Some(floor) = self.floors.get(partition) else {
                continue;
            };
            let Some(beat) = beat.as_ref().filter(|b| b.offset >= *floor) else {
                continue;
            };
            let silent = at.saturating_duration_since(entry.1.max(settled_at));
            if beat.instance == self.me || silent < self.after.max(beat.every * 4) {
                let _ = alive.insert(&beat.instance);
                continue;
            }
            let shortest = quiet.entry(&beat.instance).or_insert(silent);
            *shortest = (*shortest).min(silent);
        }
        let now = Instant::now();
        self.picked
            .retain(|_, at| now.duration_since(*at) < self.after);
        let first = alive.first() == Some(&self.me.as_str());
        let mut evict = Vec::new();
        for (instance, silent) in quiet {
            if alive.contains(instance) {
                // It still heartbeats on another partition.
                continue;
            }
            if (!first && silent < self.after * 2) || self.picked.contains_key(instance) {
                continue;
            }
            let _ = self.picked.insert(instance.to_string(), now);
            evict.push(instance.to_string());
        }
        evict
    }
}

/// Removes silent static members from the group, each on a thread of its own (a removal joins
/// and leaves the group, which takes a broker round trip or several; two dead engines are
/// removed at once, or the rebalance after the first would wait for the second).
pub(crate) struct Evictor {
    kafka: KafkaSettings,
    group: String,
    metrics: Arc<Metrics>,
    pub(crate) watch: SilenceWatch,
    settled: Settled,
    running: BTreeMap<String, JoinHandle<()>>,
}

/// How long one removal may take (joining in the member's place, then leaving).
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(30);

impl Evictor {
    pub(crate) fn new(
        kafka: &KafkaSettings,
        group: &str,
        me: &str,
        after: Duration,
        settled: Settled,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            kafka: kafka.clone(),
            group: group.to_string(),
            metrics,
            watch: SilenceWatch::new(after, me),
            settled,
            running: BTreeMap::new(),
        }
    }

    pub(crate) fn settled(&self) -> Option<Instant> {
        *self.settled.lock().expect("settled lock")
    }

    /// Starts removing `instance`, unless its removal is still running.
    pub(crate) fn evict(&mut self, instance: String) {
        self.running.retain(|_, r| !r.is_finished());
        if self.running.contains_key(&instance) {
            return;
        }
        warn!(
            instance = %instance,
            after_ms = self.watch.after().as_millis() as u64,
            "an engine has written nothing to its changelog partitions for evict-silent-peers-ms; removing it from the group"
        );
        let (kafka, group, metrics) =
            (self.kafka.clone(), self.group.clone(), self.metrics.clone());
        let removing = instance.clone();
        let spawned = std::thread::Builder::new()
            .name("sagaflow-evict".into())
            .spawn(move || {
                match crate::membership::remove_static_member(
                    &kafka,
                    &group,
                    &removing,
                    REMOVAL_TIMEOUT,
                ) {
                    Ok(()) => {
                        let _ = metrics.peer_evictions_total.fetch_add(1, Ordering::Relaxed);
                        info!(instance = %removing, "silent engine removed from the group; its partitions move now");
                    }
                    Err(e) => {
                        warn!(instance = %removing, error = %e, "could not remove the silent engine; its partitions move when its session ends")
                    }
                }
            });
        match spawned {
            Ok(handle) => {
                let _ = self.running.insert(instance, handle);
            }
            Err(e) => warn!(error = %e, "cannot spawn the thread that removes a silent engine"),
        }
    }
}

impl Drop for Evictor {
    /// A removal under way is finished before the engine stops (at most `REMOVAL_TIMEOUT`):
    /// left half done, the dead engine's partitions would wait out its session after all, and
    /// the member joined in its place would linger until its own session ends.
    fn drop(&mut self) {
        for (instance, removal) in std::mem::take(&mut self.running) {
            if !removal.is_finished() {
                info!(instance = %instance, "stopping: waiting for the removal of a silent engine to finish");
            }
            let _ = removal.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn beat(instance: &str, offset: i64) -> Option<Beat> {
        Some(Beat {
            instance: instance.into(),
            offset,
            every: Duration::from_millis(500),
        })
    }

    fn at(t: Instant, end: i64) -> Option<(i64, Instant)> {
        Some((end, t))
    }

    #[test]
    fn an_engine_silent_for_the_whole_wait_is_evicted_once_per_wait() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(S(2), "b");
        let settled = Some(t0);
        // Floors at the ends read after the assignment settled.
        assert!(w.look(settled, &[(1, at(t0, 10), beat("a", 9))]).is_empty());
        // The owner's heartbeats move the end.
        assert!(w
            .look(settled, &[(1, at(t0 + S(1), 11), beat("a", 10))])
            .is_empty());
        assert!(w
            .look(settled, &[(1, at(t0 + S(2), 11), beat("a", 10))])
            .is_empty());
        assert_eq!(
            w.look(settled, &[(1, at(t0 + S(3), 11), beat("a", 10))]),
            ["a"]
        );
        assert!(w
            .look(settled, &[(1, at(t0 + S(3), 11), beat("a", 10))])
            .is_empty());
    }

    #[test]
    fn a_partition_first_watched_after_the_assignment_settled_is_floored_where_first_seen() {
        let t0 = Instant::now();
        let settled = Some(t0);
        let mut w = SilenceWatch::new(S(2), "b");
        assert!(w.look(settled, &[(1, at(t0, 10), beat("a", 9))]).is_empty());
        // Partition 2 joins the watch later (copies placed after the settling): its owner's
        // heartbeat at 19 is below where it was first seen, so it names nobody.
        let later = [(1, at(t0 + S(1), 11), beat("a", 10))];
        let with_2 = |t, end, beat| [later[0].clone(), (2, at(t, end), beat)];
        assert!(w
            .look(settled, &with_2(t0 + S(1), 20, beat("c", 19)))
            .is_empty());
        assert!(w
            .look(settled, &with_2(t0 + S(9), 20, beat("c", 19)))
            .is_empty());
        // A heartbeat above it does, and its silence then counts.
        assert!(w
            .look(settled, &with_2(t0 + S(10), 21, beat("c", 20)))
            .is_empty());
        // "a" is alive and evicts first; this engine backs it up after twice the wait.
        assert!(w
            .look(settled, &with_2(t0 + S(13), 21, beat("c", 20)))
            .is_empty());
        assert_eq!(
            w.look(settled, &with_2(t0 + S(14), 21, beat("c", 20))),
            ["c"]
        );
    }

    #[test]
    fn a_heartbeat_from_before_the_assignment_blames_nobody() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(S(2), "b");
        // The rebalance took the partition from "a" (alive), and its new owner never wrote.
        assert!(w
            .look(Some(t0), &[(1, at(t0, 10), beat("a", 9))])
            .is_empty());
        assert!(w
            .look(Some(t0), &[(1, at(t0 + S(10), 10), beat("a", 9))])
            .is_empty());
        assert!(w
            .look(Some(t0), &[(1, at(t0 + S(10), 10), None)])
            .is_empty());
    }

    #[test]
    fn nothing_is_evicted_during_a_rebalance_or_within_the_wait_after_one() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(S(2), "b");
        assert!(w.look(None, &[(1, at(t0, 10), beat("a", 10))]).is_empty());
        assert!(w
            .look(None, &[(1, at(t0 + S(9), 10), beat("a", 10))])
            .is_empty());
        // Settled a second before: new floors, and the silence counts from the settling.
        let settled = Some(t0 + S(8));
        assert!(w
            .look(settled, &[(1, at(t0 + S(9), 11), beat("a", 10))])
            .is_empty());
        assert!(w
            .look(settled, &[(1, at(t0 + S(10), 11), beat("a", 11))])
            .is_empty());
        assert_eq!(
            w.look(settled, &[(1, at(t0 + S(12), 11), beat("a", 11))]),
            ["a"]
        );
    }

    #[test]
    fn an_engine_alive_on_another_partition_or_itself_is_not_evicted() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(S(2), "b");
        let s = Some(t0);
        let first = [
            (1, at(t0, 10), beat("a", 10)),
            (2, at(t0, 20), beat("a", 20)),
        ];
        assert!(w.look(s, &first).is_empty());
        let later = [
            (1, at(t0 + S(5), 11), beat("a", 10)),
            (2, at(t0 + S(5), 25), beat("a", 24)),
        ];
        assert!(w.look(s, &later).is_empty());
        let mut w = SilenceWatch::new(S(2), "b");
        assert!(w.look(s, &[(1, at(t0, 10), beat("b", 10))]).is_empty());
        assert!(w
            .look(s, &[(1, at(t0 + S(9), 10), beat("b", 10))])
            .is_empty());
    }

    #[test]
    fn a_longer_heartbeat_period_of_the_owner_stretches_the_wait() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::new(S(2), "b");
        let slow = |offset| {
            Some(Beat {
                instance: "a".into(),
                offset,
                every: S(5),
            })
        };
        assert!(w.look(Some(t0), &[(1, at(t0, 10), slow(10))]).is_empty());
        assert!(w
            .look(Some(t0), &[(1, at(t0 + S(19), 10), slow(10))])
            .is_empty());
        assert_eq!(
            w.look(Some(t0), &[(1, at(t0 + S(20), 10), slow(10))]),
            ["a"]
        );
    }

    #[test]
    fn the_lowest_live_instance_evicts_and_the_others_back_it_up_later() {
        let t0 = Instant::now();
        let s = Some(t0);
        // "c" sees "a" go silent while "b" (lower than "c") still heartbeats on partition 2.
        let mut w = SilenceWatch::new(S(2), "c");
        let looks = |t: Instant, b_end: i64| {
            [
                (1, at(t, 10), beat("a", 10)),
                (2, at(t, b_end), beat("b", b_end - 1)),
            ]
        };
        assert!(w.look(s, &looks(t0, 20)).is_empty());
        assert!(w.look(s, &looks(t0 + S(3), 21)).is_empty());
        assert_eq!(w.look(s, &looks(t0 + S(4), 22)), ["a"]);
    }

    #[test]
    fn an_unreadable_end_starts_the_silence_over() {
        let t0 = Instant::now();
        let s = Some(t0);
        let mut w = SilenceWatch::new(S(2), "b");
        assert!(w.look(s, &[(1, at(t0, 10), beat("a", 10))]).is_empty());
        assert!(w.look(s, &[(1, None, beat("a", 10))]).is_empty());
        assert!(w
            .look(s, &[(1, at(t0 + S(3), 10), beat("a", 10))])
            .is_empty());
        assert_eq!(w.look(s, &[(1, at(t0 + S(5), 10), beat("a", 10))]), ["a"]);
    }
}
