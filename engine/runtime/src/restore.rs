//! Restoring a partition when it is assigned.
//!
//! 1. Local RocksDB metadata tells how far this engine had applied the journal, as the partition's
//!    owner before or as its standby copy (`standby.rs`, up to a checkpoint). Without it (a new
//!    node, or a journal that was reset), the partition is rebuilt from the changelog: the latest
//!    state per saga and the last checkpoint.
//! 2. The journal is replayed from the relay watermark: records already applied are recognised by
//!    their validity marks, newer ones go through the chain rule and into the store.
//! 3. Outputs of valid records after the watermark are handed back to the relay (they may not have
//!    been delivered: G2), and their states are marked for the next changelog flush.

use std::collections::{BTreeMap, HashMap};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::FutureProducer;
use sagaflow_avro::{
    BlockingCodec, ChangelogBatch, Checkpoint, InputPosition, JournalKind, JournalRecord, Outbound,
    Parked, SagaState,
};
use sagaflow_core::{Chain, ChainVerdict, JournalHeader};
use tracing::{error, info, warn};

use crate::batches;
use crate::error::{Error, Result};
use crate::kafka;
use crate::parked;
use crate::store::{ChainMeta, Meta, RelayMark, StateWrite, Store};
use crate::topics::Topics;
use crate::traffic::{message_bytes, record_bytes, Flow, Traffic};
use crate::wheel::Target;

/// Key of checkpoint records on the changelog.
pub(crate) const CHECKPOINT_KEY: &str = "__checkpoint";

/// Prefix of changelog keys that are not saga ids.
const RESERVED_PREFIX: &str = "__";

/// Key prefix of the changelog record an owner writes when it claims a partition, followed by
/// its epoch.
const OWNER_PREFIX: &str = "__owner/";

/// States per RocksDB write while restoring from the changelog.
const RESTORE_CHUNK: usize = 128;

/// Most claims one restore tries before giving up (each lost claim means another writer raced).
const CLAIM_ATTEMPTS: u32 = 20;

/// What to do about an engine record that cannot be read, which stops its partition's restore.
const FOREIGN_RECORD: &str = "only engines write these topics, so it was written by a newer Sagaflow (upgrade this engine) or by another program (remove that writer; the partition cannot be restored past the record, so ask for help before deleting anything)";

/// What a restore hands to the partition task.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) meta: Meta,
    /// Outputs of valid records after the relay watermark, in journal order.
    pub(crate) unrelayed: Vec<(i64, Vec<Outbound>)>,
    /// Latest state of sagas changed after the watermark, with the journal offset it came from
    /// (for the changelog).
    pub(crate) dirty: HashMap<String, (i64, Option<Vec<u8>>)>,
    /// Offset the next journal record of this owner must land at.
    pub(crate) journal_end: i64,
    /// Records skipped by the chain rule.
    pub(crate) fenced_records: u64,
    /// A newer owner claimed the partition (only on a resync): do not process it.
    pub(crate) fenced: bool,
    /// No usable local state (a new node, a partition without a standby): the partition was
    /// rebuilt from the whole changelog.
    pub(crate) from_changelog: bool,
}

/// Clients a restore uses.
pub(crate) struct RestoreClients<'a> {
    pub(crate) store: &'a Store,
    pub(crate) reader: &'a BaseConsumer,
    pub(crate) producer: &'a FutureProducer,
    pub(crate) codec: &'a BlockingCodec,
    pub(crate) topics: &'a Topics,
    pub(crate) writer: &'a str,
    pub(crate) traffic: &'a Traffic,
}

impl RestoreClients<'_> {
    /// [`kafka::read_range`], counting what it reads as restore traffic.
    fn read_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
        mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
    ) -> Result<()> {
        kafka::read_range(self.reader, topic, partition, from, until, |m| {
            self.traffic.count(Flow::Restore, message_bytes(m));
            f(m)
        })
    }

    /// [`kafka::write_and_locate`], counting the write as `flow`.
    fn write_and_locate(
        &self,
        flow: Flow,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<i64> {
        let at = kafka::write_and_locate(self.producer, topic, partition, key, value)?;
        self.traffic
            .count(flow, record_bytes(Some(key), value, std::iter::empty()));
        Ok(at)
    }
}

/// Applies journal records read during a restore.
struct Replay<'a> {
    c: &'a RestoreClients<'a>,
    partition: i32,
    chain: Chain,
    meta: Meta,
    applied_through: i64,
    unrelayed: Vec<(i64, Vec<Outbound>)>,
    dirty: HashMap<String, (i64, Option<Vec<u8>>)>,
    fenced_records: u64,
    /// The furthest relay watermark a counted record reports (`relayed_through`): the owner
    /// that wrote it had delivered every output and flushed every state up to there. Outputs
    /// are not handed to the relay again, so a clean hand-over re-sends nothing and a crash
    /// re-sends only what was in flight.
    relayed_hint: i64,
    /// The writer local state was built by; a claim by another one means the partition had
    /// another owner since, whose changelog batches the local index does not know.
    local_writer: Option<String>,
    foreign_claim: bool,
    /// In the bulk replay a foreign claim ends the replay, before the claim reaches the store:
    /// the restore starts over from the changelog, and a store that had applied it would take
    /// its writer for the local one and miss it on the next try (after a failed rebuild, say).
    stop_at_foreign_claim: bool,
}

impl Replay<'_> {
    /// Forgets the outputs an earlier owner reported as delivered. Its states are written to
    /// the changelog again all the same: the flush that wrote them may be one a restore ignores,
    /// a fenced owner's late batch (see `rebuild_from_changelog`).
    fn drop_relayed(&mut self) {
        let hint = self.relayed_hint;
        self.unrelayed.retain(|(offset, _)| *offset > hint);
    }

    fn record(&mut self, offset: i64, value: Option<&[u8]>) -> Result<()> {
        if self.stop_at_foreign_claim && self.foreign_claim {
            return Ok(());
        }
        let topic = &self.c.topics.journal;
        let journal_error = |message: String| Error::Journal {
            topic: topic.clone(),
            partition: self.partition,
            offset,
            message,
        };
        let bytes = value.ok_or_else(|| {
            journal_error(format!(
                "a record with no value, which no engine writes; {FOREIGN_RECORD}"
            ))
        })?;
        let record: JournalRecord = self
            .c
            .codec
            .decode(bytes)
            .map_err(|e| journal_error(format!("{e}; {FOREIGN_RECORD}")))?;
        let foreign_claim = record.kind == JournalKind::Claim
            && record.writer != self.c.writer
            && self
                .local_writer
                .as_ref()
                .is_some_and(|w| *w != record.writer);
        let valid = if offset <= self.applied_through {
            self.c.store.was_valid(self.partition, offset)?
        } else {
            let verdict = self.chain.apply(
                offset,
                JournalHeader {
                    kind: record.kind,
                    epoch: record.epoch,
                    writer: &record.writer,
                    base: record.base,
                },
            );
            if verdict == ChainVerdict::Valid && foreign_claim && self.stop_at_foreign_claim {
                self.foreign_claim = true;
                return Ok(());
            }
            if verdict == ChainVerdict::Valid {
                self.meta.chain = ChainMeta::from(&self.chain);
                for p in &record.positions {
                    let _ = self.meta.positions.insert(p.topic.clone(), p.offset);
                }
                let writes = state_writes(self.c.codec, &record)?;
                let borrowed: Vec<StateWrite<'_>> = writes
                    .iter()
                    .map(|(id, state, running, timers)| StateWrite {
                        saga_id: id,
                        state: state.as_deref(),
                        running: *running,
                        timers,
                    })
                    .collect();
                self.c
                    .store
                    .apply(self.partition, offset, &borrowed, &[], &self.meta)?;
            } else {
                // A claim that lost still raises the epoch every later record is judged by.
                self.meta.chain.max_epoch = self.chain.max_epoch;
                self.fenced_records += 1;
            }
            verdict == ChainVerdict::Valid
        };
        if valid {
            self.foreign_claim |= foreign_claim;
            self.relayed_hint = self.relayed_hint.max(record.relayed_through.min(offset));
            for entry in &record.states {
                let _ = self
                    .dirty
                    .insert(entry.saga_id.clone(), (offset, entry.state.clone()));
            }
            if !record.outputs.is_empty() {
                self.unrelayed.push((offset, record.outputs));
            }
        }
        Ok(())
    }
}

/// Restores `partition` and claims it.
///
/// `takeover` is true for a new assignment: the restore always ends with a claim. On a resync
/// (`takeover` false, `own_epoch` the epoch this engine claimed before) it claims again only if
/// no other writer claimed a higher epoch meanwhile; otherwise it reports `fenced`.
pub(crate) fn restore(
    c: &RestoreClients<'_>,
    partition: i32,
    takeover: bool,
    own_epoch: i64,
) -> Result<Restored> {
    restore_with(c, partition, takeover, own_epoch, false)
}

/// [`restore`], from the changelog whatever the store holds if `rebuild`.
fn restore_with(
    c: &RestoreClients<'_>,
    partition: i32,
    takeover: bool,
    own_epoch: i64,
    rebuild: bool,
) -> Result<Restored> {
    let (journal_low, journal_reported_end) =
        kafka::watermarks(c.reader, &c.topics.journal, partition)?;
    let local = c.store.meta(partition)?;
    let from_changelog = match &local {
        // A journal that ends before what local state was built from was created again (or lost
        // records): start over from the changelog, which the check below holds to the same rule.
        Some(meta) if meta.chain.last_valid >= journal_reported_end => {
            warn!(partition, local = meta.chain.last_valid, journal_end = journal_reported_end, "the journal ends before the record local state was built from (were the topics recreated?); rebuilding from the changelog");
            true
        }
        // Local state this old is past the journal's retention (an engine that was down long, or
        // a RocksDB directory restored from a backup): the changelog is newer.
        Some(meta) if meta.relayed.chain.last_valid + 1 < journal_low => {
            warn!(
                partition,
                local_watermark = meta.relayed.chain.last_valid,
                journal_start = journal_low,
                "the journal no longer holds what local state was built from; rebuilding from the changelog"
            );
            true
        }
        Some(_) => rebuild,
        None => true,
    };
    // Where this store's index of changelog batches is complete to: a rebuild reads to its
    // marker; a standby copy read to where it stood; an owner indexes what it writes itself.
    let (meta, batches_known) = match local {
        Some(meta) if !from_changelog => {
            let known = c.store.batches_known_to(partition)?;
            (meta, known.map_or(Known::Own, Known::From))
        }
        _ => {
            let (meta, marker) = rebuild_from_changelog(c, partition)?;
            (meta, Known::From(marker + 1))
        }
    };
    let local_writer = matches!(batches_known, Known::Own).then(|| meta.chain.writer.clone());
    if meta.chain.last_valid >= journal_reported_end {
        // Its offsets name records of another journal: replaying from them would skip or
        // misread this one's, and every output after them would count as already sent.
        return Err(Error::Journal {
            topic: c.topics.journal.clone(),
            partition,
            offset: journal_reported_end,
            message: format!(
                "the changelog's checkpoint covers the journal through offset {}, but the journal ends at {journal_reported_end}: it was deleted and created again, or lost records. The partition's sagas cannot be restored from these two; put the journal back, or, to start over without its sagas, delete and recreate {} as well",
                meta.chain.last_valid, c.topics.changelog
            ),
        });
    }
    let start = meta.relayed.chain.last_valid + 1;
    if start < journal_low {
        return Err(Error::Journal {
            topic: c.topics.journal.clone(),
            partition,
            offset: start,
            message: format!(
                "records from {start} were deleted (log start is {journal_low}) before the relay covered them; raise the journal's retention"
            ),
        });
    }
    let mut replay = Replay {
        c,
        partition,
        chain: Chain::from(&meta.chain),
        applied_through: meta.chain.last_valid,
        meta,
        unrelayed: Vec::new(),
        dirty: HashMap::new(),
        fenced_records: 0,
        relayed_hint: -1,
        local_writer,
        foreign_claim: false,
        stop_at_foreign_claim: true,
    };
    // Bulk of the journal up to the reported end; the claim below finds the exact end.
    let mut next = start;
    c.read_range(
        &c.topics.journal,
        partition,
        next,
        journal_reported_end,
        |m| {
            next = m.offset() + 1;
            replay.record(m.offset(), m.payload())
        },
    )?;
    next = next.max(journal_reported_end);
    if replay.foreign_claim {
        // Another engine owned the partition since this store was current. Its batches are
        // unknown here, and this engine's last flushes before it was fenced may be late batches,
        // which restores ignore, though its relay counted them as written: only a rebuild from
        // the changelog says what is there.
        info!(
            partition,
            "another engine owned this partition since local state was written; rebuilding from the changelog"
        );
        sagaflow_failpoints::hit(sagaflow_failpoints::TAKE_BACK_REBUILD);
        return restore_with(c, partition, takeover, own_epoch, true);
    }
    // From here on every record is applied: a claim racing this one is handled after it.
    replay.stop_at_foreign_claim = false;

    let mut fenced = false;
    let mut end = next;
    for attempt in 1..=CLAIM_ATTEMPTS + 1 {
        if !takeover && replay.chain.max_epoch > own_epoch {
            fenced = true;
            break;
        }
        if attempt > CLAIM_ATTEMPTS {
            return Err(Error::Journal {
                topic: c.topics.journal.clone(),
                partition,
                offset: end,
                message: format!("{CLAIM_ATTEMPTS} claims in a row lost a race with other writers: is a second set of engines running under the same `group`? Every engine of a group needs its own state directory (and instance-id, if set)"),
            });
        }
        let epoch = replay.chain.max_epoch + 1;
        let claim = JournalRecord {
            kind: JournalKind::Claim,
            epoch,
            writer: c.writer.to_string(),
            base: replay.chain.last_valid,
            positions: replay
                .meta
                .positions
                .iter()
                .map(|(topic, offset)| InputPosition {
                    topic: topic.clone(),
                    offset: *offset,
                })
                .collect(),
            relayed_through: replay.meta.relayed.chain.last_valid,
            states: Vec::new(),
            outputs: Vec::new(),
        };
        let bytes = sagaflow_avro::internal::encode(&claim)?;
        let at = c.write_and_locate(
            Flow::Journal,
            &c.topics.journal,
            partition,
            c.writer.as_bytes(),
            Some(&bytes),
        )?;
        sagaflow_failpoints::hit(sagaflow_failpoints::CLAIM_WRITTEN);
        c.read_range(&c.topics.journal, partition, next, at + 1, |m| {
            next = m.offset() + 1;
            replay.record(m.offset(), m.payload())
        })?;
        end = at + 1;
        if replay.chain.owned_by(epoch, c.writer) && replay.chain.last_valid == at {
            break;
        }
        warn!(
            partition,
            attempt, at, "claim lost a race with another writer; claiming again"
        );
    }
    if !fenced {
        // Marks where this owner's changelog writes begin: a state an older epoch writes after
        // this marker was written by a fenced owner (see `rebuild_from_changelog`). A value, not a
        // tombstone, and a key of its own, so compaction never removes it.
        let epoch = replay.chain.epoch;
        let marker = c.write_and_locate(
            Flow::Changelog,
            &c.topics.changelog,
            partition,
            format!("{OWNER_PREFIX}{epoch}").as_bytes(),
            Some(c.writer.as_bytes()),
        )?;
        // Every batch written before the marker is one this owner must delete in time: index
        // those it does not know yet. Later ones are a fenced owner's, which restores ignore.
        let from = match batches_known {
            Known::From(offset) => Some(offset),
            // Another writer claimed while this one was claiming (a race the bulk replay did
            // not see): it may have written batches before this claim's marker.
            Known::Own if replay.foreign_claim => Some(0),
            Known::Own => None,
        };
        if let Some(from) = from {
            index_batches(c, partition, from, marker)?;
        }
        c.store.set_batches_known_to(partition, None)?;
    }
    let before = replay.unrelayed.len();
    replay.drop_relayed();
    info!(
        partition,
        journal_end = end,
        relayed_by_the_last_owner = before - replay.unrelayed.len(),
        replayed = end - start,
        unrelayed = replay.unrelayed.len(),
        fenced_records = replay.fenced_records,
        fenced,
        "partition restored"
    );
    Ok(Restored {
        meta: replay.meta,
        unrelayed: replay.unrelayed,
        dirty: replay.dirty,
        journal_end: end,
        fenced_records: replay.fenced_records,
        fenced,
        from_changelog,
    })
}

/// A state from a journal record or the changelog: key, bytes, whether it is a running saga,
/// and its timer index entries.
type DecodedState = (String, Option<Vec<u8>>, bool, Vec<(i64, String)>);

/// Decodes a state to know whether it is a running saga and which timers it has.
fn decode_state(
    codec: &BlockingCodec,
    key: &str,
    state: Option<&[u8]>,
) -> Result<(bool, Vec<(i64, String)>)> {
    let Some(bytes) = state else {
        return Ok((false, Vec::new()));
    };
    if parked::is_parked_key(key) {
        let p: Parked = codec.decode(bytes)?;
        let timers = parked::due(&p)
            .map(|due| (due, Target::Parked(key.to_string()).encode()))
            .into_iter()
            .collect();
        return Ok((false, timers));
    }
    let saga: SagaState = codec.decode(bytes)?;
    let timers = saga
        .timers
        .iter()
        .map(|t| (t.due, Target::Saga(key.to_string(), t.id.clone()).encode()))
        .collect();
    Ok((!saga.status.is_terminal(), timers))
}

/// Decodes the states of a record to know which sagas are still running and their timers.
pub(crate) fn state_writes(
    codec: &BlockingCodec,
    record: &JournalRecord,
) -> Result<Vec<DecodedState>> {
    record
        .states
        .iter()
        .map(|entry| {
            let (running, timers) = decode_state(codec, &entry.saga_id, entry.state.as_deref())?;
            Ok((entry.saga_id.clone(), entry.state.clone(), running, timers))
        })
        .collect()
}

/// Whether a changelog key holds a saga state or a parked record (not a checkpoint, marker or
/// heartbeat).
pub(crate) fn is_state_key(key: &str) -> bool {
    !key.starts_with(RESERVED_PREFIX) || parked::is_parked_key(key)
}

/// The owner epoch of a changelog claim marker's key.
pub(crate) fn owner_marker_epoch(key: &str) -> Option<i64> {
    key.strip_prefix(OWNER_PREFIX)
        .map(|epoch| epoch.parse().unwrap_or(0))
}

/// Local metadata for a partition whose states were loaded from the changelog up to
/// `checkpoint`: the journal replay of a restore starts after it.
pub(crate) fn meta_at(checkpoint: Option<&Checkpoint>) -> Meta {
    let Some(cp) = checkpoint else {
        return Meta::empty();
    };
    let chain = ChainMeta {
        last_valid: cp.journal_offset,
        epoch: cp.epoch,
        writer: cp.writer.clone(),
        max_epoch: cp.epoch,
    };
    let positions: BTreeMap<String, i64> = cp
        .positions
        .iter()
        .map(|p| (p.topic.clone(), p.offset))
        .collect();
    Meta {
        chain: chain.clone(),
        positions: positions.clone(),
        relayed: RelayMark { chain, positions },
    }
}

/// Rebuilds `partition` from the changelog; returns its metadata and the offset of the marker
/// the read ended at.
fn rebuild_from_changelog(c: &RestoreClients<'_>, partition: i32) -> Result<(Meta, i64)> {
    c.store.clear(partition)?;
    let (low, _) = kafka::watermarks(c.reader, &c.topics.changelog, partition)?;
    // Our own marker record gives the exact end (see `kafka::write_and_locate`).
    let marker = format!("{RESERVED_PREFIX}restore/{}", c.writer);
    let end = c.write_and_locate(
        Flow::Changelog,
        &c.topics.changelog,
        partition,
        marker.as_bytes(),
        None,
    )?;
    // The newest state per key by the journal offset it came from, and the checkpoint that
    // covers the most of the journal, whatever order they were written in: a fenced owner that
    // wakes up (G3) can still flush older states and checkpoints after the new owner's. Among
    // records of equal source offset (older records without one), the last one written wins,
    // so a broker that does not compact is fine too.
    let mut latest: BTreeMap<String, Kept> = BTreeMap::new();
    let mut checkpoint: Option<Checkpoint> = None;
    let mut stale = 0u64;
    let mut ignored_late = 0u64;
    // Batches not deleted, with their members, for the new index.
    let mut seen_batches: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    // The newest owner epoch whose claim marker has been read so far.
    let mut newest_owner = 0i64;
    c.read_range(&c.topics.changelog, partition, low, end + 1, |m| {
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Ok(());
        };
        if key == CHECKPOINT_KEY {
            // Written by a fenced owner: it may count as written what only its late batches hold.
            if kafka::writer_epoch(m).is_some_and(|e| e < newest_owner) {
                ignored_late += 1;
                return Ok(());
            }
            if m.payload().is_some() {
                let cp: Checkpoint = decode_changelog(c, partition, m, "checkpoint")?;
                if checkpoint
                    .as_ref()
                    .is_some_and(|best| best.journal_offset > cp.journal_offset)
                {
                    stale += 1;
                } else {
                    checkpoint = Some(cp);
                }
            }
        } else if let Some(epoch) = owner_marker_epoch(&key) {
            newest_owner = newest_owner.max(epoch);
        } else if batches::parse(&key).is_some() {
            if m.payload().is_none() {
                // Deleted by its owner: everything it held is newer elsewhere.
                let _ = seen_batches.remove(&key);
                return Ok(());
            }
            let batch: ChangelogBatch = decode_changelog(c, partition, m, "changelog batch")?;
            let _ = seen_batches.insert(key, batches::members(&batch));
            // A fenced owner's late batch: the owner that fenced it flushed every state it
            // replayed again (`Replay::drop_relayed`), so it holds nothing newer, and no owner
            // that knew it deletes it in time, so it may hold states of sagas deleted since.
            if kafka::writer_epoch(m).is_some_and(|e| e < newest_owner) {
                ignored_late += 1;
                return Ok(());
            }
            for entry in batch.entries {
                stale += keep(
                    &mut latest,
                    entry.saga_id,
                    entry.source,
                    Some(entry.state),
                    false,
                );
            }
        } else if is_state_key(&key) {
            // Written by an owner after a newer one had claimed the partition.
            let late = kafka::writer_epoch(m).is_some_and(|e| e < newest_owner);
            let state = m.payload().map(<[u8]>::to_vec);
            stale += keep(&mut latest, key, kafka::source_offset(m), state, late);
        }
        Ok(())
    })?;
    if stale > 0 || ignored_late > 0 {
        warn!(
            partition,
            stale,
            late = ignored_late,
            "the changelog holds records older than ones written before them, or batches and checkpoints written after a newer owner's claim (a fenced owner's late flush); they were skipped"
        );
    }
    if let Some(cp) = &checkpoint {
        recheck_late_states(c, partition, cp.journal_offset, &mut latest)?;
    }
    let meta = meta_at(checkpoint.as_ref());
    let states: Vec<(String, Option<Vec<u8>>)> = latest
        .into_iter()
        .map(|(key, kept)| (key, kept.state))
        .collect();
    let mut chunks = states.chunks(RESTORE_CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        load_states(c.store, c.codec, partition, chunk)?;
        if chunks.peek().is_some() {
            sagaflow_failpoints::hit(sagaflow_failpoints::RESTORE_CHUNK);
        }
    }
    for (key, members) in &seen_batches {
        c.store.put_batch(partition, key, members)?;
    }
    // For a restore that stops before its claim marker and starts again from this state.
    c.store.set_batches_known_to(partition, Some(end + 1))?;
    // The metadata last: it says the partition is whole.
    c.store.apply(partition, -1, &[], &[], &meta)?;
    info!(partition, sagas = states.len(), batches = seen_batches.len(), checkpoint = ?checkpoint.as_ref().map(|c| c.journal_offset), "restored from the changelog");
    Ok((meta, end))
}

/// Decodes the engine's own changelog record `m` (a `what`).
fn decode_changelog<T: sagaflow_avro::Contract>(
    c: &RestoreClients<'_>,
    partition: i32,
    m: &BorrowedMessage<'_>,
    what: &str,
) -> Result<T> {
    c.codec
        .decode(m.payload().unwrap_or_default())
        .map_err(|e| Error::Journal {
            topic: c.topics.changelog.clone(),
            partition,
            offset: m.offset(),
            message: format!("an unreadable {what}: {e}; {FOREIGN_RECORD}"),
        })
}

/// How far this store's index of changelog batches is complete (see `restore`).
#[derive(Debug, Clone, Copy)]
enum Known {
    /// Up to the batches this engine wrote itself as the partition's last owner.
    Own,
    /// Up to this changelog offset.
    From(i64),
}

/// Indexes the changelog batches written (and forgets those deleted) in `[from, until)`, for
/// the store's states are current already.
fn index_batches(c: &RestoreClients<'_>, partition: i32, from: i64, until: i64) -> Result<()> {
    let (low, _) = kafka::watermarks(c.reader, &c.topics.changelog, partition)?;
    let from = from.max(low);
    if from >= until {
        return Ok(());
    }
    let (mut indexed, mut forgotten) = (0u64, 0u64);
    c.read_range(&c.topics.changelog, partition, from, until, |m| {
        let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Ok(());
        };
        if batches::parse(&key).is_none() {
            return Ok(());
        }
        if m.payload().is_none() {
            forgotten += 1;
            return c.store.forget_batch(partition, &key);
        }
        let batch: ChangelogBatch = decode_changelog(c, partition, m, "changelog batch")?;
        indexed += 1;
        c.store
            .put_batch(partition, &key, &batches::members(&batch))
    })?;
    info!(
        partition,
        from,
        until,
        indexed,
        forgotten,
        "indexed the changelog batches written since this engine last read them"
    );
    Ok(())
}

/// Writes changelog states (key, value or `None` for a tombstone) to the store without its
/// metadata, with what the store indexes: whether each saga runs, and its timers.
pub(crate) fn load_states(
    store: &Store,
    codec: &BlockingCodec,
    partition: i32,
    states: &[(String, Option<Vec<u8>>)],
) -> Result<()> {
    let decoded = states
        .iter()
        .map(|(key, state)| decode_state(codec, key, state.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    let writes: Vec<StateWrite<'_>> = states
        .iter()
        .zip(&decoded)
        .map(|((key, state), (running, timers))| StateWrite {
            saga_id: key,
            state: state.as_deref(),
            running: *running,
            timers,
        })
        .collect();
    store.load_states(partition, &writes)
}

/// Keeps a state unless one with a newer source is kept already; 1 if it was not (stale).
fn keep(
    latest: &mut BTreeMap<String, Kept>,
    key: String,
    source: i64,
    state: Option<Vec<u8>>,
    late: bool,
) -> u64 {
    match latest.get(&key) {
        Some(kept) if kept.source > source => 1,
        _ => {
            let _ = latest.insert(
                key,
                Kept {
                    source,
                    state,
                    late,
                },
            );
            0
        }
    }
}

/// The state a changelog restore keeps for a key.
#[derive(Debug)]
struct Kept {
    /// Journal offset the state came from.
    source: i64,
    state: Option<Vec<u8>>,
    /// Written by a fenced owner: a newer state may have been compacted away.
    late: bool,
}

/// Checks the states a fenced owner wrote late against the journal.
///
/// A zombie owner can flush an old state after the new owner flushed a newer one for the same
/// saga. A restore that sees both keeps the newer source; but the broker's compaction keeps only
/// the record written last, the zombie's, and the newer state is gone from the changelog. The
/// checkpoint may cover it, so replaying the journal from the checkpoint would not bring it
/// back either. Such a kept state is replaced by the newest one the journal holds between its
/// source and the checkpoint.
fn recheck_late_states(
    c: &RestoreClients<'_>,
    partition: i32,
    through: i64,
    latest: &mut BTreeMap<String, Kept>,
) -> Result<()> {
    let late: Vec<(String, i64)> = latest
        .iter()
        .filter(|(_, kept)| kept.late && kept.source >= 0 && kept.source < through)
        .map(|(key, kept)| (key.clone(), kept.source))
        .collect();
    let Some(from) = late.iter().map(|(_, source)| *source).min() else {
        return Ok(());
    };
    let (journal_low, _) = kafka::watermarks(c.reader, &c.topics.journal, partition)?;
    if from < journal_low {
        error!(
            partition,
            sagas = ?late.iter().map(|(k, _)| k).take(10).collect::<Vec<_>>(),
            journal_start = journal_low,
            from,
            "states a fenced owner wrote late may be older than the journal says, and the journal no longer holds what would tell; these sagas may repeat steps. Raise the journal's retention"
        );
        return Ok(());
    }
    let keys: std::collections::HashSet<&str> = late.iter().map(|(k, _)| k.as_str()).collect();
    // The record at `from` counted (its state was flushed, and owners flush only records that
    // counted), so the chain resumes there with that record's owner.
    let mut chain: Option<Chain> = None;
    c.read_range(&c.topics.journal, partition, from, through + 1, |m| {
        let offset = m.offset();
        let bytes = m.payload().ok_or_else(|| Error::Journal {
            topic: c.topics.journal.clone(),
            partition,
            offset,
            message: "empty journal record".into(),
        })?;
        let record: JournalRecord = c.codec.decode(bytes).map_err(|e| Error::Journal {
            topic: c.topics.journal.clone(),
            partition,
            offset,
            message: format!("{e}; {FOREIGN_RECORD}"),
        })?;
        let header = JournalHeader {
            kind: record.kind,
            epoch: record.epoch,
            writer: &record.writer,
            base: record.base,
        };
        let counts = match chain.as_mut() {
            Some(chain) => chain.apply(offset, header) == ChainVerdict::Valid,
            None => {
                chain = Some(Chain {
                    last_valid: offset,
                    epoch: record.epoch,
                    writer: record.writer.clone(),
                    max_epoch: record.epoch,
                });
                true
            }
        };
        if counts {
            for entry in &record.states {
                if let Some(kept) = keys
                    .contains(entry.saga_id.as_str())
                    .then(|| latest.get_mut(&entry.saga_id))
                    .flatten()
                {
                    if offset > kept.source {
                        kept.source = offset;
                        kept.state = entry.state.clone();
                    }
                }
            }
        }
        Ok(())
    })?;
    let replaced = late
        .iter()
        .filter(|(key, source)| latest.get(key).is_some_and(|kept| kept.source != *source))
        .count();
    warn!(
        partition,
        late = late.len(),
        replaced,
        "the changelog held states a fenced owner wrote late; checked them against the journal"
    );
    Ok(())
}

/// Encodes a checkpoint for the changelog.
pub(crate) fn encode_checkpoint(mark: &RelayMark) -> Result<Vec<u8>> {
    let cp = Checkpoint {
        journal_offset: mark.chain.last_valid,
        epoch: mark.chain.epoch,
        writer: mark.chain.writer.clone(),
        positions: mark
            .positions
            .iter()
            .map(|(topic, offset)| sagaflow_avro::CheckpointPosition {
                topic: topic.clone(),
                offset: *offset,
            })
            .collect(),
        relayed_through: mark.chain.last_valid,
    };
    Ok(sagaflow_avro::internal::encode(&cp)?)
}
