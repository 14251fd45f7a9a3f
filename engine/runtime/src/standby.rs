//! Standby replicas: a warm copy of the partitions this engine does not own.
//!
//! Kafka Streams' standby tasks, in this engine's terms. With `standby = true` the engine tails
//! the changelog of every partition it does not own into its RocksDB store, the way a restore
//! from the changelog loads it, and records the partition's metadata at each checkpoint it
//! reads. When the partition moves here, `restore` finds that metadata and replays only the
//! journal after the checkpoint instead of reading the whole changelog.
//!
//! The metadata is recorded only while it is true: every state the checkpoint covers is loaded.
//! An owner writes a checkpoint once the states it covers are acknowledged, so they come before
//! it in the partition; but compaction may have removed such a state because a newer one of the
//! same saga comes after the checkpoint. So after the first record, and after any gap in the
//! offsets (compaction's doing), no checkpoint is trusted until the read reaches the end the
//! partition had then: by there, every state that replaced a removed one has been read.
//!
//! A state that a fenced owner wrote late (its epoch is below a newer claim marker's) has to be
//! checked against the journal (`restore::rebuild_from_changelog` does). The standby gives such a
//! partition up and deletes its copy, so a takeover reads the changelog in full. The partition is
//! still read, for its owner's heartbeats only (`liveness`), so a given-up copy never hides a
//! dead owner from eviction. A new copy would give up at the same record, so the next assignment
//! first reads only the offset of that late state: while the record is there the copy stays given
//! up, and only once compaction or retention has removed it does a new copy read the changelog
//! from the beginning.
//!
//! Copies are read on a thread of their own, so that they never hold decisions up. Records are
//! applied under a lock that the rebalance callback takes to hand a partition over before its
//! restore reads the store: once handed over, a copy never changes under the restore.
//!
//! Where each copy stands is saved in the store after the states it read, so an engine that
//! restarts resumes its copies instead of reading every other partition's changelog again, as
//! Kafka Streams keeps its standby tasks' offsets in a checkpoint file. Reading on from a saved
//! position is the same as a copy that fell behind: compaction meanwhile shows as a gap, unless
//! it also dropped tombstones the copy never read, which only a long stop allows: a copy saved
//! more than `RESUME_WITHIN_MS` ago starts again from the beginning. The hand-over forgets the
//! position before the restore writes as owner, so a copy never resumes over an owner's writes.

use std::collections::{btree_map::Entry, BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sagaflow_avro::{BlockingCodec, ChangelogBatch, Checkpoint};
use sagaflow_kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::error::{Error, Result};
use crate::liveness::{Beat, Evictor, Look, HEARTBEAT_KEY};
use crate::metrics::Metrics;
use crate::placement;
use crate::restore::{self, CHECKPOINT_KEY};
use crate::store::Store;
use crate::topics::Topics;
use crate::traffic::{message_bytes, Flow};

/// Most changelog records applied under one hold of the lock.
const RECORDS_PER_BATCH: usize = 512;

/// How long a placement of copies by the group's assignment is retried (a rebalance settling,
/// a coordinator moving) before the copies fall back to every partition another engine owns.
const PLACE_FOR: Duration = Duration::from_secs(30);

/// How long one read of the group's assignment may take: the same thread looks for silent
/// owners, whose evictions it would hold up.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often, at most, a copy that met a gap asks for its partition's end (`ends_to_settle`).
const ASK_END_EVERY: Duration = Duration::from_millis(200);

/// How often the standby gauges are updated (each update asks the broker for watermarks), and
/// silent owners looked for (more often with a short `evict-silent-peers-ms`).
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How old a saved copy may be and still be resumed. A broker compacting the changelog drops a
/// tombstone `delete.retention.ms` after cleaning it (24 h by Kafka's default): a copy that
/// stopped reading longer ago may never see the tombstone of a saga deleted meanwhile, and
/// would bring that saga back at a takeover. Half the default leaves room.
const RESUME_WITHIN_MS: i64 = 12 * 3600 * 1000;

/// How often a copy's position is saved again though nothing changed, so that its age tells
/// when the engine stopped reading, not when the partition was last written.
const RESAVE_EVERY_MS: i64 = 10 * 60 * 1000;

/// This engine's standby copies; reading stops when it is dropped.
pub(crate) struct Standby {
    copies: Arc<Mutex<Copies>>,
    store: Arc<Store>,
    /// Engines that keep a copy of each partition (`standby-copies`); 0 for all but its owner.
    count: usize,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

/// The copies, shared between the engine thread (which says which partitions to copy) and the
/// reading thread.
#[derive(Default)]
struct Copies {
    parts: BTreeMap<i32, Replica>,
    /// Per partition, the offset of the fenced owner's late state that gave its last copy up.
    late: BTreeMap<i32, i64>,
    /// Bumped when `parts` changes: the reader then reassigns its consumer, and drops records
    /// fetched under the previous assignment.
    generation: u64,
    /// An assignment whose copies the reading thread has yet to place (`standby-copies` > 0).
    placing: Option<Placing>,
    /// Numbers the placings, so that one worked out for an assignment since replaced is dropped.
    placings: u64,
    /// The evictor reads every partition another engine owns, those not copied for heartbeats
    /// only.
    evicting: bool,
}

/// This engine's assignment, to place copies by once the group's is read.
struct Placing {
    number: u64,
    owned: BTreeSet<i32>,
    partitions: i32,
    since: Instant,
    next_try: Instant,
}

/// One partition's copy; what is saved in the store (`Store::set_copy_position`) is its JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Replica {
    /// The next changelog offset to read; `None` before the first record.
    next: Option<i64>,
    /// The offset the read must reach before checkpoints are trusted (see the module comment);
    /// `None`: not known yet, after the start or a gap.
    settle_at: Option<i64>,
    /// The newest owner epoch whose claim marker was read.
    newest_owner: i64,
    /// The checkpoint covering the most of the journal read so far.
    best: Option<Checkpoint>,
    /// The journal offset of the checkpoint recorded in the store; -1 for none.
    recorded: i64,
    /// Changed since it was last saved.
    #[serde(skip)]
    unsaved: bool,
    /// When it was last saved (epoch ms; 0 in a position saved before this was kept).
    #[serde(default)]
    saved_at_ms: i64,
    /// Resumed from a saved position and no record read since: the first one must not lie
    /// below it.
    #[serde(skip)]
    resumed: bool,
    /// The last heartbeat read that names its writer's instance-id.
    #[serde(skip)]
    beat: Option<Beat>,
    /// Given up (its states deleted, nothing saved): the partition is read on only for its
    /// owner's heartbeats, which `evict-silent-peers-ms` watches, until the next assignment
    /// looks again (`probe`).
    #[serde(skip)]
    watch_only: bool,
    /// A copy of a partition whose last copy a late state at this offset gave up: it reads that
    /// offset first. The same record there gives it up again at once; a later one (that record
    /// compacted or deleted since) starts it again from the beginning.
    #[serde(skip)]
    probe: Option<i64>,
}

/// A saga state (or parked record) to load: its key and value, `None` for a tombstone.
type Loaded = (String, Option<Vec<u8>>);

/// What one changelog record asks of a copy.
enum Step {
    Load(String, Option<Vec<u8>>),
    /// A changelog batch: its states load, and it is indexed for the owner to be (`batches.rs`).
    Batch(String, ChangelogBatch),
    /// A changelog batch deleted by its owner.
    Unbatch(String),
    /// A fenced owner's late batch: indexed, for the owner to be to delete it, but not loaded.
    LateBatch(String, crate::batches::Members),
    GiveUp(String),
    /// A state a fenced owner wrote late, at this offset: the copy is given up.
    Late(i64, String),
    /// The probed late state is gone: copy from the beginning.
    Restart,
    Nothing,
}

impl Standby {
    /// Standby copies read on a thread of their own, kept by `copies_of_each` engines per
    /// partition (`Some(0)`: all but its owner; `None`: no copies, no thread). With an
    /// `evictor`, the thread also removes the owners that fall silent from the group.
    pub(crate) fn start(
        kafka: &KafkaSettings,
        topics: &Topics,
        copies_of_each: Option<u32>,
        evictor: Option<Evictor>,
        store: Arc<Store>,
        codec: Arc<BlockingCodec>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let copies = Arc::new(Mutex::new(Copies {
            evicting: evictor.is_some(),
            ..Copies::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let count = copies_of_each.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let reader = if copies_of_each.is_some() {
            let reading = Reader {
                consumer: crate::kafka::reader(kafka)?,
                changelog: topics.changelog.clone(),
                group: topics.group.clone(),
                starts: topics.starts.clone(),
                count,
                copies: copies.clone(),
                store: store.clone(),
                codec,
                metrics,
                stop: stop.clone(),
                evictor,
                asked: BTreeMap::new(),
            };
            let handle = std::thread::Builder::new()
                .name("sagaflow-standby".into())
                .spawn(move || reading.run())
                .map_err(|source| Error::Io {
                    action: "spawning the standby thread".into(),
                    source,
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(Self {
            copies,
            store,
            count,
            stop,
            reader,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Copies> {
        self.copies.lock().expect("standby copies lock")
    }

    /// The group gave this engine `owned` of `partitions`: copies every other partition, or
    /// with a `standby-copies` count has the reading thread place the copies by the group's
    /// assignment (`placement`). Until then it keeps the copies it has.
    pub(crate) fn assigned(&self, owned: &BTreeSet<i32>, partitions: i32) {
        if self.reader.is_none() {
            return;
        }
        let mut copies = self.lock();
        let others: BTreeSet<i32> = (0..partitions).filter(|p| !owned.contains(p)).collect();
        if self.count == 0 {
            follow(&mut copies, &self.store, &others, &others);
            return;
        }
        let now = Instant::now();
        copies.placings += 1;
        copies.placing = Some(Placing {
            number: copies.placings,
            owned: owned.clone(),
            partitions,
            since: now,
            next_try: now,
        });
        if copies.evicting {
            // Watched from this assignment on, so the evictor's floors are the ends at its
            // settling, not at the placement: an owner that dies in between is still seen.
            let kept: BTreeSet<i32> = copies
                .parts
                .iter()
                .filter(|(p, c)| !c.watch_only && others.contains(p))
                .map(|(&p, _)| p)
                .collect();
            follow(&mut copies, &self.store, &kept, &others);
        }
    }

    /// Keeps copies of exactly `partitions`, as with no `standby-copies` count.
    #[cfg(test)]
    fn follow(&self, partitions: &BTreeSet<i32>) {
        follow(&mut self.lock(), &self.store, partitions, partitions);
    }

    /// Stops copying `partitions` (they are about to be restored here): the store keeps what
    /// was copied, and its recorded checkpoint, for the restore. Their saved positions are
    /// forgotten, also those of an earlier run, whose copies this run has not resumed.
    pub(crate) fn release(&self, partitions: &BTreeSet<i32>) {
        let mut copies = self.lock();
        // Worked out for the assignment before this one, it could copy (and clear the store of)
        // a partition being restored here now.
        copies.placing = None;
        for partition in partitions {
            // The copy indexed the changelog's batches up to where it read; the restore reads the
            // rest for theirs (`batches.rs`). Nothing to say without a copy.
            let known = match copies.parts.get(partition) {
                Some(copy) if !copy.watch_only => Some(copy.next.unwrap_or(0)),
                Some(_) => None,
                // Saved by an earlier run and not resumed by this one.
                None => match self.store.copy_position(*partition) {
                    Ok(Some(bytes)) => Some(
                        serde_json::from_slice::<Replica>(&bytes)
                            .ok()
                            .and_then(|c| c.next)
                            .unwrap_or(0),
                    ),
                    Ok(None) => None,
                    Err(_) => Some(0),
                },
            };
            if let Some(offset) = known {
                if let Err(e) = self.store.set_batches_known_to(*partition, Some(offset)) {
                    error!(partition, error = %e, "cannot record where the standby copy read the changelog to; the restore reads all of it for its batches");
                    let _ = self.store.set_batches_known_to(*partition, Some(0));
                }
            }
            if let Err(e) = self.store.forget_copy_position(*partition) {
                error!(partition, error = %e, "cannot forget the standby copy's position; a later copy of this partition could resume over this engine's writes as owner");
            }
            let Some(copy) = copies.parts.remove(partition) else {
                continue;
            };
            copies.generation += 1;
            if copy.watch_only {
                info!(
                    partition,
                    "standby copy taken over after it was given up: the restore reads the changelog"
                );
            } else if copy.recorded >= 0 {
                info!(
                    partition,
                    checkpoint = copy.recorded,
                    "standby copy taken over: the restore replays the journal after its checkpoint"
                );
            } else {
                info!(
                    partition,
                    "standby copy taken over before it had a checkpoint: the restore reads the changelog"
                );
            }
        }
    }
}

/// Keeps copies of exactly `copy`, and with an evictor reads the rest of `others` (the
/// partitions other engines own) only for their owners' heartbeats: new copies resume where an
/// earlier run saved them, or start from an empty store partition and the beginning of the
/// changelog; a heartbeat-only read starts at the end.
fn follow(copies: &mut Copies, store: &Store, copy: &BTreeSet<i32>, others: &BTreeSet<i32>) {
    let watch: BTreeSet<i32> = if copies.evicting {
        others.difference(copy).copied().collect()
    } else {
        BTreeSet::new()
    };
    let watch = &watch;
    // A given-up copy starts again, as a new one.
    let before: BTreeSet<i32> = copies
        .parts
        .iter()
        .filter(|(_, c)| !c.watch_only)
        .map(|(&p, _)| p)
        .collect();
    let watched: BTreeSet<i32> = copies
        .parts
        .iter()
        .filter(|(p, c)| c.watch_only && !before.contains(p))
        .map(|(&p, _)| p)
        .collect();
    if before == *copy && watched == *watch {
        return;
    }
    copies
        .parts
        .retain(|p, c| copy.contains(p) || (c.watch_only && watch.contains(p)));
    for &partition in copy.difference(&before) {
        if let Some(saved) = saved(store, partition) {
            info!(
                partition,
                next = saved.next,
                checkpoint = saved.recorded,
                "standby copy resumed where it stood"
            );
            let _ = copies.parts.insert(partition, saved);
            continue;
        }
        // What the store holds of it (an earlier ownership) is not a copy of the
        // changelog, and nothing says which of it is stale.
        if let Err(e) = store.clear(partition) {
            warn!(partition, error = %e, "cannot clear the store for a standby copy; no standby for this partition");
            continue;
        }
        let fresh = Replica {
            probe: copies.late.get(&partition).copied(),
            ..Replica::new()
        };
        let _ = copies.parts.insert(partition, fresh);
    }
    for &partition in watch {
        let _ = copies
            .parts
            .entry(partition)
            .or_insert_with(Replica::watching);
    }
    copies.generation += 1;
    info!(
        copies = ?copies.parts.iter().filter(|(_, c)| !c.watch_only).map(|(p, _)| p).collect::<Vec<_>>(),
        heartbeats_only = ?copies.parts.iter().filter(|(_, c)| c.watch_only).map(|(p, _)| p).collect::<Vec<_>>(),
        "standby copies"
    );
}

/// Deletes the copies of `partitions` from the store, also an earlier run's (before
/// `standby-copies` was set): their disk is what a count saves. A partition this engine once
/// owned has no saved copy position and keeps its state, as without standby copies, for a
/// restore in place.
fn delete_copies<'a>(store: &Store, partitions: impl Iterator<Item = &'a i32>) {
    for &partition in partitions {
        if !matches!(store.copy_position(partition), Ok(Some(_))) {
            continue;
        }
        // With its saved position.
        match store.clear(partition) {
            Ok(()) => info!(
                partition,
                "standby copy no longer kept here; its states deleted"
            ),
            Err(e) => {
                warn!(partition, error = %e, "cannot delete a standby copy no longer kept here; it stays on disk until a copy of this partition starts here again")
            }
        }
    }
}

/// The copy of `partition` an earlier run saved, if any and readable.
fn saved(store: &Store, partition: i32) -> Option<Replica> {
    let bytes = match store.copy_position(partition) {
        Ok(bytes) => bytes?,
        Err(e) => {
            warn!(partition, error = %e, "cannot read the standby copy's saved position; copying again from the start");
            return None;
        }
    };
    match serde_json::from_slice::<Replica>(&bytes) {
        Ok(copy) if sagaflow_avro::now_ms() - copy.saved_at_ms > RESUME_WITHIN_MS => {
            warn!(
                partition,
                saved_at_ms = copy.saved_at_ms,
                "the standby copy saved here is more than 12 h old: compaction may have dropped tombstones it never read, so it is copied again from the start"
            );
            None
        }
        Ok(copy) => Some(Replica {
            resumed: true,
            ..copy
        }),
        Err(e) => {
            warn!(partition, error = %e, "unreadable standby copy position in the store; copying again from the start");
            None
        }
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reading thread.
struct Reader {
    consumer: BaseConsumer,
    changelog: String,
    /// The engine group, whose assignment places the copies with a `standby-copies` count.
    group: String,
    /// The input topic whose partitions the group's assignment is read for.
    starts: String,
    count: usize,
    copies: Arc<Mutex<Copies>>,
    store: Arc<Store>,
    codec: Arc<BlockingCodec>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    evictor: Option<Evictor>,
    /// When each partition's end was last asked for (`ends_to_settle`).
    asked: BTreeMap<i32, Instant>,
}

impl Reader {
    fn run(mut self) {
        let mut assigned = 0u64;
        let mut reported = Instant::now();
        let every = self
            .evictor
            .as_ref()
            .map_or(REPORT_EVERY, |e| (e.watch.after() / 4).min(REPORT_EVERY));
        while !self.stop.load(Ordering::SeqCst) {
            let generation = {
                let copies = self.lock();
                if copies.generation != assigned && self.assign(&copies) {
                    assigned = copies.generation;
                }
                copies.generation
            };
            self.place_if_due();
            let batch = self.fetch();
            let ends = self.ends_to_settle();
            self.apply(generation, batch, &ends);
            if reported.elapsed() >= every {
                reported = Instant::now();
                // Read before the ends: an end read after the assignment settled is above every
                // heartbeat of the partition's owner before the rebalance.
                let settled = self.evictor.as_ref().and_then(Evictor::settled);
                let looks = self.report();
                if let Some(evictor) = &mut self.evictor {
                    for instance in evictor.watch.look(settled, &looks) {
                        evictor.evict(instance);
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Copies> {
        self.copies.lock().expect("standby copies lock")
    }

    /// Places the copies of a new assignment once the group's assignment can be read (see
    /// `placement`); falls back to every other partition if it cannot within `PLACE_FOR`.
    fn place_if_due(&self) {
        let due = {
            let copies = self.lock();
            copies
                .placing
                .as_ref()
                .filter(|p| p.next_try <= Instant::now())
                .map(|p| (p.number, p.owned.clone(), p.partitions, p.since))
        };
        let Some((number, owned, partitions, since)) = due else {
            return;
        };
        // Asked without the lock, which a rebalance may be waiting for.
        let placed = self.place(&owned, partitions);
        let mut guard = self.lock();
        let copies = &mut *guard;
        if copies.placing.as_ref().is_none_or(|p| p.number != number) {
            // A rebalance came meanwhile (`release` dropped this placing, which may copy a
            // partition now restoring here); the new assignment is placed next.
            return;
        }
        let others: BTreeSet<i32> = (0..partitions).filter(|p| !owned.contains(p)).collect();
        let copy = match placed {
            Ok(copy) => {
                info!(
                    copies = ?copy,
                    standby_copies = self.count,
                    "standby copies placed where the group would move each partition if its owners left"
                );
                copy
            }
            Err(why) if since.elapsed() < PLACE_FOR => {
                debug!(reason = %why, "standby copies not placed yet; trying again");
                if let Some(p) = copies.placing.as_mut() {
                    p.next_try = Instant::now() + Duration::from_secs(1);
                }
                return;
            }
            Err(why) => {
                warn!(
                    reason = %why,
                    group = %self.group,
                    "cannot place standby copies by the group's assignment; keeping a copy of every partition another engine owns until the next rebalance. On a broker that does not describe groups (tansu 0.6) set standby-copies = 0; otherwise check that every engine of the group runs this version with the same partitions"
                );
                others.clone()
            }
        };
        copies.placing = None;
        follow(copies, &self.store, &copy, &others);
        delete_copies(&self.store, others.difference(&copy));
    }

    /// The partitions this engine copies, from the group's assignment, in which it holds
    /// `owned` (which names its member: no two members hold the same partition).
    fn place(
        &self,
        owned: &BTreeSet<i32>,
        partitions: i32,
    ) -> std::result::Result<BTreeSet<i32>, String> {
        if owned.is_empty() {
            // Its place among the members without partitions cannot be told from the
            // assignment; it copies nothing until the group gives it a partition.
            info!("this engine owns no partition, so it keeps no standby copy until it owns one");
            return Ok(BTreeSet::new());
        }
        let list = self
            .consumer
            .fetch_group_list(Some(&self.group), DESCRIBE_TIMEOUT)
            .map_err(|e| format!("describing the group failed: {e}"))?;
        let group = list
            .groups()
            .iter()
            .find(|g| g.name() == self.group)
            .ok_or("the broker did not describe the group")?;
        if group.state() != "Stable" {
            return Err(format!("the group is {}, not Stable", group.state()));
        }
        let held: BTreeMap<String, BTreeSet<i32>> = group
            .members()
            .iter()
            .map(|m| {
                let parts = m
                    .assignment()
                    .and_then(sagaflow_kafka::member_assignment)
                    .and_then(|mut a| a.remove(&self.starts))
                    .unwrap_or_default();
                (m.id().to_string(), parts)
            })
            .collect();
        let me = held
            .iter()
            .find(|(_, parts)| *parts == owned)
            .map(|(member, _)| member.clone())
            .ok_or_else(|| {
                format!("no member holds exactly this engine's partitions {owned:?} (the group has moved on)")
            })?;
        let order = placement::order(&held, partitions).ok_or_else(|| {
            format!(
                "the group's assignment of {} ({held:?}) is not the range assignor's",
                self.starts
            )
        })?;
        Ok(placement::copies_for(&me, &order, partitions, self.count))
    }

    /// Assigns the copies' partitions to the reading consumer; false (after a pause, to be
    /// tried again) if the client refused.
    fn assign(&self, copies: &Copies) -> bool {
        let mut tpl = TopicPartitionList::new();
        for (&partition, copy) in &copies.parts {
            let start = if copy.watch_only {
                // Heartbeats only: the next one will do.
                Offset::End
            } else {
                Offset::Beginning
            };
            let offset = copy.probe.or(copy.next).map_or(start, Offset::Offset);
            if let Err(e) = tpl.add_partition_offset(&self.changelog, partition, offset) {
                warn!(partition, error = %e, "cannot build the standby assignment");
            }
        }
        match self.consumer.assign(&tpl) {
            Ok(()) => true,
            Err(e) => {
                let partitions: Vec<i32> = copies.parts.keys().copied().collect();
                warn!(error = %e, topic = %self.changelog, ?partitions, "cannot assign the standby copies' changelog partitions; trying again in a second (the copies and the evictor's heartbeat reads wait meanwhile)");
                std::thread::sleep(Duration::from_secs(1));
                false
            }
        }
    }

    /// Up to a batch of records: waits a little for the first, not for the others.
    fn fetch(&self) -> Vec<OwnedMessage> {
        let mut batch = Vec::new();
        let mut wait = Duration::from_millis(100);
        while batch.len() < RECORDS_PER_BATCH {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(e)) => {
                    // The client reconnects by itself; a copy only falls behind meanwhile.
                    debug!(error = %e, "standby read failed; retrying");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        batch
    }

    /// The end of each partition whose copy does not know it yet, asked after its
    /// records were fetched: any record that replaced one compaction removed before the fetch
    /// is below it. Asked without the lock, which a rebalance may be waiting for, and at most
    /// every `ASK_END_EVERY` per partition: a copy catching up on a compacted changelog meets
    /// a gap in nearly every batch, and a round trip each would slow its reading down.
    fn ends_to_settle(&mut self) -> BTreeMap<i32, i64> {
        let untrusted: Vec<i32> = {
            let copies = self.lock();
            copies
                .parts
                .iter()
                .filter(|(_, c)| c.settle_at.is_none() && !c.watch_only)
                .map(|(&p, _)| p)
                .collect()
        };
        let now = Instant::now();
        self.asked
            .retain(|_, at| now.duration_since(*at) < ASK_END_EVERY);
        let due: Vec<i32> = untrusted
            .into_iter()
            .filter(|p| !self.asked.contains_key(p))
            .collect();
        for &p in &due {
            let _ = self.asked.insert(p, now);
        }
        due.into_iter()
            .filter_map(|p| {
                match crate::kafka::watermarks_once(&self.consumer, &self.changelog, p) {
                    Ok((_, high)) => Some((p, high)),
                    Err(e) => {
                        debug!(partition = p, error = %e, "standby: no watermarks yet");
                        None
                    }
                }
            })
            .collect()
    }

    /// Applies a batch fetched under assignment `generation`.
    fn apply(&self, generation: u64, batch: Vec<OwnedMessage>, ends: &BTreeMap<i32, i64>) {
        let mut guard = self.lock();
        // One borrow of the guard, so that a copy and the other fields can be borrowed apart.
        let copies = &mut *guard;
        if copies.generation != generation {
            // Fetched for an assignment that has changed: a copy started again would take
            // them for its beginning. The next assignment fetches them again where needed.
            return;
        }
        // Counted here, not when fetched: a batch dropped above is read again.
        for m in &batch {
            self.metrics.traffic.count(Flow::Standby, message_bytes(m));
        }
        let mut loads: BTreeMap<i32, Vec<Loaded>> = BTreeMap::new();
        // Per partition, in log order: a batch indexed (with its members) or forgotten (`None`).
        let mut index: BTreeMap<i32, Vec<(String, Option<crate::batches::Members>)>> =
            BTreeMap::new();
        let mut give_up: BTreeMap<i32, String> = BTreeMap::new();
        let mut restart = BTreeSet::new();
        for m in &batch {
            let partition = m.partition();
            if restart.contains(&partition) {
                continue;
            }
            let Some(copy) = copies.parts.get_mut(&partition) else {
                continue;
            };
            match copy.read(m, &self.codec) {
                Step::Load(key, state) => loads.entry(partition).or_default().push((key, state)),
                Step::Batch(key, batch) => {
                    let members = Some(crate::batches::members(&batch));
                    index.entry(partition).or_default().push((key, members));
                    loads.entry(partition).or_default().extend(
                        batch
                            .entries
                            .into_iter()
                            .map(|e| (e.saga_id, Some(e.state))),
                    );
                }
                Step::Unbatch(key) => index.entry(partition).or_default().push((key, None)),
                // Indexed only: its states are not loaded.
                Step::LateBatch(key, members) => {
                    index
                        .entry(partition)
                        .or_default()
                        .push((key, Some(members)));
                }
                Step::GiveUp(why) => {
                    let _ = give_up.entry(partition).or_insert(why);
                }
                Step::Late(offset, why) => {
                    if let Entry::Vacant(reason) = give_up.entry(partition) {
                        let _ = copies.late.insert(partition, offset);
                        let _ = reason.insert(why);
                    }
                }
                Step::Restart => {
                    let _ = restart.insert(partition);
                }
                Step::Nothing => {}
            }
        }
        for partition in restart {
            info!(
                partition,
                "the late state that gave up this partition's standby copy is gone from the changelog; copying it again from the beginning"
            );
            let _ = copies.late.remove(&partition);
            let _ = copies.parts.insert(partition, Replica::new());
            // Reassigned at the beginning; what this batch holds of it is dropped.
            copies.generation += 1;
        }
        for (partition, states) in loads {
            if give_up.contains_key(&partition) {
                continue;
            }
            if let Err(e) = restore::load_states(&self.store, &self.codec, partition, &states) {
                let _ = give_up.insert(partition, format!("loading states failed: {e}"));
            }
        }
        for (partition, ops) in index {
            if give_up.contains_key(&partition) {
                continue;
            }
            let indexed = ops.iter().try_for_each(|(key, members)| match members {
                Some(members) => self.store.put_batch(partition, key, members),
                None => self.store.forget_batch(partition, key),
            });
            if let Err(e) = indexed {
                let _ =
                    give_up.insert(partition, format!("indexing changelog batches failed: {e}"));
            }
        }
        for (&partition, copy) in &mut copies.parts {
            if copy.watch_only || give_up.contains_key(&partition) {
                continue;
            }
            if let Err(e) = copy.settle(ends.get(&partition).copied(), partition, &self.store) {
                let _ = give_up.insert(partition, format!("recording a checkpoint failed: {e}"));
                continue;
            }
            // After the states it covers, so a saved position never runs ahead of the store.
            if let Err(e) = copy.save(partition, &self.store) {
                let _ = give_up.insert(partition, format!("saving its position failed: {e}"));
            }
        }
        for (partition, why) in &give_up {
            warn!(partition, reason = %why, "standby copy given up; a takeover of this partition will read the changelog in full, and the next assignment copies it again unless the reason is a late state still in the changelog");
            // Still read, for its owner's heartbeats: dropping the partition from the watch
            // would keep a dead owner of it in the group for its whole session.
            if let Some(copy) = copies.parts.get_mut(partition) {
                copy.give_up();
            }
            if let Err(e) = self.store.clear(*partition) {
                warn!(partition, error = %e, "cannot delete the given-up standby copy");
            }
        }
    }

    /// Sets the standby gauges; returns each copied partition's changelog end and when it was
    /// read (none if it could not be), with the last heartbeat read from it.
    fn report(&self) -> Vec<Look> {
        // Per watched partition: where its copy stands (`None` if given up), its last heartbeat.
        type Position = (i32, Option<i64>, Option<Beat>);
        let (positions, ready): (Vec<Position>, usize) = {
            let copies = self.lock();
            (
                copies
                    .parts
                    .iter()
                    .map(|(&p, c)| {
                        let next = (!c.watch_only).then(|| c.next.unwrap_or(0));
                        (p, next, c.beat.clone())
                    })
                    .collect(),
                copies.parts.values().filter(|c| c.recorded >= 0).count(),
            )
        };
        let looks: Vec<Look> = positions
            .iter()
            .map(|(p, _, beat)| {
                let high = crate::kafka::watermarks_once(&self.consumer, &self.changelog, *p)
                    .ok()
                    .map(|(_, high)| (high, Instant::now()));
                (*p, high, beat.clone())
            })
            .collect();
        let lag: i64 = positions
            .iter()
            .zip(&looks)
            .filter_map(|((_, next, _), (_, high, _))| Some((high.as_ref()?.0 - (*next)?).max(0)))
            .sum();
        let copied = positions
            .iter()
            .filter(|(_, next, _)| next.is_some())
            .count();
        let metrics = &self.metrics;
        metrics
            .standby_partitions
            .store(copied as i64, Ordering::Relaxed);
        metrics
            .standby_partitions_ready
            .store(ready as i64, Ordering::Relaxed);
        metrics.standby_lag_records.store(lag, Ordering::Relaxed);
        looks
    }
}

impl Replica {
    fn new() -> Self {
        Self {
            next: None,
            settle_at: None,
            newest_owner: 0,
            best: None,
            recorded: -1,
            unsaved: false,
            saved_at_ms: 0,
            resumed: false,
            beat: None,
            watch_only: false,
            probe: None,
        }
    }

    /// A partition read only for its owner's heartbeats (the evictor's), from the end.
    fn watching() -> Self {
        Self {
            watch_only: true,
            ..Self::new()
        }
    }

    /// Gives the copy up: its states are deleted by the caller, and the read goes on only for
    /// heartbeats.
    fn give_up(&mut self) {
        self.watch_only = true;
        self.best = None;
        self.recorded = -1;
        self.unsaved = false;
    }

    fn read(&mut self, m: &OwnedMessage, codec: &BlockingCodec) -> Step {
        let offset = m.offset();
        if let Some(late) = self.probe.take() {
            if offset != late {
                // Removed since (or the topic is new: the read started below it).
                return Step::Restart;
            }
            // An offset names one record for good, so this is the same late state. (A topic
            // deleted and created again since could hold another record here: the copy then
            // stays given up, which costs a takeover the full read and is never wrong.)
            self.next = Some(offset + 1);
            return Step::Late(
                offset,
                format!("the state a fenced owner wrote late at offset {offset}, which gave up the last copy, is still in the changelog"),
            );
        }
        if std::mem::take(&mut self.resumed) {
            if let Some(next) = self.next.filter(|&next| offset < next) {
                // The consumer was reset to the beginning: the saved position lies beyond the
                // partition's end, so this log is not the one the copy read. Its offsets mean
                // nothing here, so the heartbeats read on after giving up are not skipped.
                self.next = None;
                return Step::GiveUp(format!(
                    "the changelog ends below the saved position {next} (it resumed at offset {offset}): was the topic deleted and created again?"
                ));
            }
        }
        match self.next {
            Some(next) if offset < next => return Step::Nothing,
            Some(next) if offset > next => {
                // Compaction removed records in between (see the module comment).
                self.settle_at = None;
            }
            _ => {}
        }
        self.next = Some(offset + 1);
        self.unsaved = true;
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Step::Nothing;
        };
        if key == HEARTBEAT_KEY {
            if let Some(instance) = crate::kafka::writer_instance(m) {
                let every = crate::kafka::heartbeat_every(m).unwrap_or_default();
                self.beat = Some(Beat {
                    instance,
                    offset,
                    every,
                });
            }
            return Step::Nothing;
        }
        if self.watch_only {
            return Step::Nothing;
        }
        if key == CHECKPOINT_KEY {
            let Some(bytes) = m.payload() else {
                return Step::Nothing;
            };
            // A fenced owner's: it may count as written what only its late batches hold.
            if crate::kafka::writer_epoch(m).is_some_and(|e| e < self.newest_owner) {
                return Step::Nothing;
            }
            return match codec.decode::<Checkpoint>(bytes) {
                Ok(cp) => {
                    if self
                        .best
                        .as_ref()
                        .is_none_or(|best| cp.journal_offset >= best.journal_offset)
                    {
                        self.best = Some(cp);
                    }
                    Step::Nothing
                }
                Err(e) => Step::GiveUp(format!("undecodable checkpoint at offset {offset}: {e}")),
            };
        }
        if let Some(epoch) = restore::owner_marker_epoch(&key) {
            self.newest_owner = self.newest_owner.max(epoch);
            return Step::Nothing;
        }
        let batch = crate::batches::parse(&key).is_some();
        if !batch && !restore::is_state_key(&key) {
            return Step::Nothing;
        }
        if batch && m.payload().is_none() {
            return Step::Unbatch(key);
        }
        let late = crate::kafka::writer_epoch(m).is_some_and(|e| e < self.newest_owner);
        if late && !batch {
            return Step::Late(
                offset,
                format!("a fenced owner wrote saga {key}'s state late, at offset {offset}"),
            );
        }
        // Log order is newest-last without a per-saga record of sources (which would grow with
        // every saga id the copy ever saw): an owner flushes again only once its last flush is
        // acknowledged, a new owner flushes the states of the records its restore replayed (none
        // older than the old owner's last flush), and an older state written after a newer
        // owner's claim marker is the late write above (a late batch is skipped below).
        if batch {
            return match codec.decode::<ChangelogBatch>(m.payload().unwrap_or_default()) {
                // Ignored as restores ignore it (`restore::rebuild_from_changelog`): the owner
                // that fenced its writer flushed every state it holds again.
                Ok(batch) if late => Step::LateBatch(key, crate::batches::members(&batch)),
                Ok(batch) => Step::Batch(key, batch),
                Err(e) => Step::GiveUp(format!(
                    "undecodable changelog batch {key} at offset {offset}: {e}"
                )),
            };
        }
        Step::Load(key, m.payload().map(<[u8]>::to_vec))
    }

    /// Records the best checkpoint if checkpoints are trusted: the read has reached the end
    /// (`end`, asked after the records read so far were fetched, if not known yet). The read only
    /// moves on, so it stays trusted until a gap.
    fn settle(&mut self, end: Option<i64>, partition: i32, store: &Store) -> Result<()> {
        if self.settle_at.is_none() && end.is_some() {
            self.settle_at = end;
            self.unsaved = true;
        }
        if self
            .settle_at
            .is_none_or(|end| self.next.unwrap_or(0) < end)
        {
            return Ok(());
        }
        let Some(best) = &self.best else {
            return Ok(());
        };
        if best.journal_offset <= self.recorded {
            return Ok(());
        }
        store.apply(partition, -1, &[], &[], &restore::meta_at(Some(best)))?;
        self.recorded = best.journal_offset;
        self.unsaved = true;
        Ok(())
    }

    /// Saves where the copy stands, if that changed.
    fn save(&mut self, partition: i32, store: &Store) -> Result<()> {
        let now = sagaflow_avro::now_ms();
        if !self.unsaved && now - self.saved_at_ms < RESAVE_EVERY_MS {
            return Ok(());
        }
        self.saved_at_ms = now;
        let json = serde_json::to_vec(self).expect("a standby copy serialises");
        store.set_copy_position(partition, &json)?;
        self.unsaved = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_store, ChainMeta, RelayMark};
    use rdkafka::message::{Header, OwnedHeaders, Timestamp};

    fn codec() -> BlockingCodec {
        // Checkpoints use the internal encoding, and the states here are tombstones: nothing
        // asks the registry.
        BlockingCodec::new(&sagaflow_avro::RegistrySettings::new("http://127.0.0.1:9"))
            .expect("codec")
    }

    fn record(offset: i64, key: &str, value: Option<Vec<u8>>, epoch: Option<i64>) -> OwnedMessage {
        let headers = epoch.map(|e| {
            let e = e.to_string();
            OwnedHeaders::new().insert(Header {
                key: crate::kafka::EPOCH_HEADER,
                value: Some(e.as_str()),
            })
        });
        OwnedMessage::new(
            value,
            Some(key.as_bytes().to_vec()),
            "g.changelog".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            headers,
        )
    }

    fn checkpoint(journal_offset: i64) -> Option<Vec<u8>> {
        let chain = ChainMeta {
            last_valid: journal_offset,
            epoch: 1,
            writer: "w".into(),
            max_epoch: 1,
        };
        let mark = RelayMark {
            chain,
            positions: BTreeMap::new(),
        };
        Some(restore::encode_checkpoint(&mark).expect("checkpoint"))
    }

    fn recorded(store: &Store) -> Option<i64> {
        store.meta(0).expect("meta").map(|m| m.chain.last_valid)
    }

    #[test]
    fn a_checkpoint_is_recorded_once_the_copy_has_read_to_the_end_the_partition_had() {
        let (codec, store) = (codec(), temp_store("settle"));
        let mut copy = Replica::new();
        assert!(matches!(
            copy.read(&record(0, CHECKPOINT_KEY, checkpoint(5), None), &codec),
            Step::Nothing
        ));
        copy.settle(Some(3), 0, &store).expect("settle");
        assert_eq!(
            recorded(&store),
            None,
            "records 1 and 2 may replace states it covers"
        );
        for offset in 1..3 {
            assert!(matches!(
                copy.read(&record(offset, "saga-a", None, Some(1)), &codec),
                Step::Load(..)
            ));
        }
        copy.settle(None, 0, &store).expect("settle");
        assert_eq!(recorded(&store), Some(5));
    }

    #[test]
    fn after_an_offset_gap_no_checkpoint_is_recorded_until_the_end_after_it() {
        let (codec, store) = (codec(), temp_store("gap"));
        let mut copy = Replica::new();
        let _ = copy.read(&record(0, CHECKPOINT_KEY, checkpoint(5), None), &codec);
        copy.settle(Some(1), 0, &store).expect("settle");
        assert_eq!(recorded(&store), Some(5));
        // Offsets 1 to 9 were compacted away; their newer states come after the checkpoint.
        let _ = copy.read(&record(10, CHECKPOINT_KEY, checkpoint(9), None), &codec);
        copy.settle(Some(20), 0, &store).expect("settle");
        assert_eq!(recorded(&store), Some(5), "the older checkpoint stays");
        for offset in 11..20 {
            let _ = copy.read(&record(offset, "saga-b", None, Some(1)), &codec);
        }
        copy.settle(None, 0, &store).expect("settle");
        assert_eq!(recorded(&store), Some(9));
        // A record read again (a reassignment) changes nothing.
        assert!(matches!(
            copy.read(&record(12, "saga-b", None, Some(1)), &codec),
            Step::Nothing
        ));
    }

    /// A standby without a reading thread, over `store`.
    fn idle_standby(store: Store) -> Standby {
        Standby {
            copies: Arc::default(),
            store: Arc::new(store),
            count: 0,
            stop: Arc::default(),
            reader: None,
        }
    }

    #[test]
    fn a_saved_copy_resumes_where_it_stood_and_a_hand_over_forgets_it() {
        let (codec, store) = (codec(), temp_store("resume"));
        let mut copy = Replica::new();
        let _ = copy.read(&record(0, "__owner/3", Some(b"w3".to_vec()), None), &codec);
        let _ = copy.read(&record(1, CHECKPOINT_KEY, checkpoint(5), None), &codec);
        copy.settle(Some(2), 0, &store).expect("settle");
        copy.save(0, &store).expect("save");
        assert!(!copy.unsaved);
        copy.save(0, &store)
            .expect("an unchanged copy is not written again");

        let standby = idle_standby(store);
        let mut resumed = saved(&standby.store, 0).expect("a saved position");
        assert_eq!(
            (
                resumed.next,
                resumed.settle_at,
                resumed.newest_owner,
                resumed.recorded
            ),
            (Some(2), Some(2), 3, 5)
        );
        assert_eq!(resumed.best.as_ref().map(|b| b.journal_offset), Some(5));
        // It still knows the newest owner: a fenced owner's late state gives it up.
        assert!(matches!(
            resumed.read(&record(2, "saga-a", None, Some(2)), &codec),
            Step::Late(2, _)
        ));
        let mut resumed = saved(&standby.store, 0).expect("a saved position");
        assert!(matches!(
            resumed.read(&record(2, "saga-a", None, Some(3)), &codec),
            Step::Load(..)
        ));

        standby.release(&BTreeSet::from([0]));
        assert!(
            saved(&standby.store, 0).is_none(),
            "the restore writes as owner from here"
        );
    }

    #[test]
    fn a_copy_saved_too_long_ago_is_not_resumed_and_an_idle_one_is_saved_again() {
        let store = temp_store("stale");
        let hour = 3600 * 1000;
        let mut copy = Replica::new();
        copy.next = Some(7);
        copy.unsaved = true;
        copy.save(0, &store).expect("save");
        let saved_at = copy.saved_at_ms;
        assert!(saved_at > 0);
        // Unchanged: saved again only once RESAVE_EVERY_MS has passed.
        copy.save(0, &store).expect("save");
        assert_eq!(copy.saved_at_ms, saved_at);
        copy.saved_at_ms -= RESAVE_EVERY_MS + 1;
        copy.save(0, &store).expect("save");
        assert!(
            copy.saved_at_ms >= saved_at,
            "an idle copy's age is refreshed"
        );

        let stored = |age_ms: i64| {
            let aged = Replica {
                saved_at_ms: sagaflow_avro::now_ms() - age_ms,
                ..Replica::new()
            };
            store
                .set_copy_position(0, &serde_json::to_vec(&aged).expect("json"))
                .expect("store");
        };
        stored(11 * hour);
        assert!(saved(&store, 0).is_some(), "11 h old: resumed");
        stored(13 * hour);
        assert!(
            saved(&store, 0).is_none(),
            "13 h old: tombstones may be gone, so it is copied again from the start"
        );
        // A position saved before the age was kept has none: copied again too.
        store
            .set_copy_position(
                0,
                br#"{"next":7,"settle_at":null,"newest_owner":0,"best":null,"recorded":-1}"#,
            )
            .expect("store");
        assert!(saved(&store, 0).is_none());
    }

    #[test]
    fn a_copy_resumed_beyond_the_changelog_end_gives_up() {
        let (codec, store) = (codec(), temp_store("recreated"));
        let mut copy = Replica::new();
        for offset in 0..10 {
            let _ = copy.read(&record(offset, "saga-a", None, Some(1)), &codec);
        }
        copy.save(0, &store).expect("save");
        let mut resumed = saved(&idle_standby(store).store, 0).expect("a saved position");
        // The consumer was reset to the beginning of a topic created again.
        assert!(matches!(
            resumed.read(&record(0, "saga-a", None, Some(1)), &codec),
            Step::GiveUp(_)
        ));
        // Given up, it still reads the new topic's heartbeats, below the old position.
        resumed.give_up();
        let _ = resumed.read(&heartbeat(1), &codec);
        assert_eq!(resumed.beat.as_ref().map(|b| b.offset), Some(1));
    }

    #[test]
    fn a_fenced_owners_late_batch_and_checkpoint_are_skipped_and_the_batch_indexed() {
        let codec = codec();
        let mut copy = Replica::new();
        let batch = |state: &[u8]| {
            let record = ChangelogBatch {
                check_at: 5,
                entries: vec![sagaflow_avro::BatchEntry {
                    saga_id: "saga-a".into(),
                    source: 9,
                    state: state.to_vec(),
                }],
            };
            Some(sagaflow_avro::internal::encode(&record).unwrap())
        };
        let key = crate::batches::key(5, 1, 1, 0);
        assert!(matches!(
            copy.read(&record(0, &key, batch(b"a1"), Some(1)), &codec),
            Step::Batch(..)
        ));
        let _ = copy.read(&record(1, "__owner/2", Some(b"w2".to_vec()), None), &codec);
        let late = crate::batches::key(5, 1, 2, 0);
        match copy.read(&record(2, &late, batch(b"a2"), Some(1)), &codec) {
            Step::LateBatch(k, members) => {
                assert_eq!(k, late);
                assert_eq!(
                    members,
                    [("saga-a".to_string(), crate::batches::fingerprint(b"a2"))]
                );
            }
            _ => panic!("a late batch is indexed, not loaded, and gives nothing up"),
        }
        let _ = copy.read(&record(3, CHECKPOINT_KEY, checkpoint(9), Some(1)), &codec);
        assert!(copy.best.is_none(), "a late checkpoint was kept");
        let _ = copy.read(&record(4, CHECKPOINT_KEY, checkpoint(7), Some(2)), &codec);
        assert_eq!(copy.best.as_ref().map(|c| c.journal_offset), Some(7));
        assert!(matches!(
            copy.read(&record(5, &key, None, None), &codec),
            Step::Unbatch(k) if k == key
        ));
    }

    #[test]
    fn a_state_a_fenced_owner_wrote_late_gives_the_copy_up() {
        let codec = codec();
        let mut copy = Replica::new();
        let _ = copy.read(&record(0, "__owner/2", Some(b"w2".to_vec()), None), &codec);
        assert!(matches!(
            copy.read(&record(1, "saga-a", None, Some(2)), &codec),
            Step::Load(..)
        ));
        assert!(matches!(
            copy.read(&record(2, "saga-a", None, Some(1)), &codec),
            Step::Late(2, _)
        ));
        // Given up, it loads nothing more but still reads its owner's heartbeats.
        copy.give_up();
        assert!(matches!(
            copy.read(&record(3, "saga-b", None, Some(2)), &codec),
            Step::Nothing
        ));
        assert!(matches!(copy.read(&heartbeat(4), &codec), Step::Nothing));
        assert_eq!(
            copy.beat.as_ref().map(|b| (b.instance.as_str(), b.offset)),
            Some(("engine-a", 4))
        );
        assert_eq!((copy.next, copy.recorded), (Some(5), -1));
    }

    /// Engine a's heartbeat at `offset`.
    fn heartbeat(offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            Some(HEARTBEAT_KEY.as_bytes().to_vec()),
            "g.changelog".into(),
            Timestamp::NotAvailable,
            0,
            offset,
            Some(OwnedHeaders::new().insert(Header {
                key: crate::kafka::INSTANCE_HEADER,
                value: Some("engine-a"),
            })),
        )
    }

    /// A standby whose reading thread is not started: `apply` is driven by the test.
    fn reader(standby: &Standby) -> Reader {
        let kafka = KafkaSettings::new("127.0.0.1:9");
        Reader {
            consumer: crate::kafka::reader(&kafka).expect("consumer"),
            changelog: "g.changelog".into(),
            group: "g".into(),
            starts: "g.starts".into(),
            count: 0,
            copies: standby.copies.clone(),
            store: standby.store.clone(),
            codec: Arc::new(codec()),
            metrics: Arc::default(),
            stop: Arc::default(),
            evictor: None,
            asked: BTreeMap::new(),
        }
    }

    #[test]
    fn a_copy_moved_to_heartbeats_only_reads_from_the_end_and_comes_back_as_a_copy() {
        /// Follows `copy`, and `watch` for heartbeats only; the generation then, and each partition's kind and
        /// position.
        fn place(
            copies: &mut Copies,
            store: &Store,
            copy: &[i32],
            watch: &[i32],
        ) -> (u64, Vec<(i32, bool, Option<i64>)>) {
            let set = |ps: &[i32]| ps.iter().copied().collect::<BTreeSet<i32>>();
            let others = &set(copy) | &set(watch);
            follow(copies, store, &set(copy), &others);
            let kinds = copies
                .parts
                .iter()
                .map(|(&p, c)| (p, c.watch_only, c.next))
                .collect();
            (copies.generation, kinds)
        }
        let store = temp_store("moves");
        let mut copies = Copies {
            evicting: true,
            ..Copies::default()
        };
        let (first, _) = place(&mut copies, &store, &[1, 2], &[]);
        copies.parts.get_mut(&2).expect("copied").next = Some(40);
        let (moved, kinds) = place(&mut copies, &store, &[1], &[2, 3]);
        assert!(moved > first, "reassigned");
        assert_eq!(
            kinds,
            [(1, false, None), (2, true, None), (3, true, None)],
            "2 and 3 read for heartbeats only, from the end (2 no longer from its copy's 40)"
        );
        let (again, _) = place(&mut copies, &store, &[1], &[2, 3]);
        assert_eq!(again, moved, "the same sets again change nothing");
        let (_, kinds) = place(&mut copies, &store, &[1, 2], &[]);
        assert_eq!(
            kinds,
            [(1, false, None), (2, false, None)],
            "2 copied again, 3 dropped"
        );
    }

    #[test]
    fn copies_no_longer_placed_here_are_deleted_and_an_owners_old_state_is_kept() {
        let store = temp_store("drop");
        let meta = restore::meta_at(None);
        // Partition 1: a copy with a saved position; partition 2: state from owning it.
        for p in [1, 2] {
            store.apply(p, -1, &[], &[], &meta).expect("meta");
        }
        store.set_copy_position(1, b"{}").expect("position");
        delete_copies(&store, [1, 2].iter());
        assert!(
            store.meta(1).expect("read").is_none(),
            "the copy is deleted"
        );
        assert!(store.copy_position(1).expect("read").is_none());
        assert!(
            store.meta(2).expect("read").is_some(),
            "the owner's state is kept"
        );
    }

    #[test]
    fn after_a_late_state_the_next_copy_reads_only_its_offset_while_it_is_there() {
        // `follow` needs a reading thread; this one ends at once and the test reads instead.
        let mut standby = idle_standby(temp_store("probe"));
        standby.reader = Some(std::thread::spawn(|| {}));
        let reader = reader(&standby);
        let only_0 = BTreeSet::from([0]);
        let generation = |s: &Standby| s.lock().generation;
        standby.follow(&only_0);
        reader.apply(
            generation(&standby),
            vec![
                record(0, "__owner/2", Some(b"w2".to_vec()), None),
                record(1, "saga-a", None, Some(2)),
                record(2, "saga-b", None, Some(1)),
                record(3, "saga-c", None, Some(2)),
            ],
            &BTreeMap::new(),
        );
        {
            let copies = standby.lock();
            assert_eq!(copies.late.get(&0), Some(&2));
            let copy = &copies.parts[&0];
            assert!(
                copy.watch_only,
                "the late state at offset 2 gives the copy up"
            );
            assert_eq!(copy.next, Some(4), "read on for heartbeats");
        }

        // The next assignment: a new copy starts at the late state's offset, not the beginning.
        standby.follow(&only_0);
        {
            let copies = standby.lock();
            let copy = &copies.parts[&0];
            assert_eq!((copy.probe, copy.watch_only), (Some(2), false));
        }
        reader.apply(
            generation(&standby),
            vec![
                record(2, "saga-b", None, Some(1)),
                record(3, "saga-c", None, Some(2)),
            ],
            &BTreeMap::new(),
        );
        {
            let copies = standby.lock();
            let copy = &copies.parts[&0];
            assert!(copy.watch_only, "the same late state: given up at once");
            assert_eq!((copy.next, copies.late.get(&0)), (Some(4), Some(&2)));
        }

        // Once compaction has removed it, the copy reads the changelog from the beginning.
        standby.follow(&only_0);
        let before = generation(&standby);
        reader.apply(
            before,
            vec![
                record(3, "saga-c", None, Some(2)),
                record(4, "saga-d", None, Some(2)),
            ],
            &BTreeMap::new(),
        );
        let copies = standby.lock();
        let copy = &copies.parts[&0];
        assert!(copies.generation > before, "reassigned");
        assert!(copies.late.is_empty());
        assert_eq!(
            (copy.next, copy.probe, copy.watch_only),
            (None, None, false),
            "a new copy from the beginning, nothing of the probed batch applied"
        );
    }

    #[test]
    fn a_probe_below_the_late_offset_means_a_new_log_and_starts_again() {
        let codec = codec();
        let mut copy = Replica {
            probe: Some(7),
            ..Replica::new()
        };
        assert!(matches!(
            copy.read(&record(0, "saga-a", None, Some(1)), &codec),
            Step::Restart
        ));
    }
}
