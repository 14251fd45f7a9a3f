//! Restoring a partition when it is assigned.
//!
//! 1. Local RocksDB metadata tells how far this engine had applied the journal. Without it (a new
//!    node, or a journal that was reset), the partition is rebuilt from the changelog: the latest
//!    state per saga and the last checkpoint.
//! 2. The journal is replayed from the relay watermark: records already applied are recognised by
//!    their validity marks, newer ones go through the chain rule and into the store.
//! 3. Outputs of valid records after the watermark are handed back to the relay (they may not have
//!    been delivered: G2), and their states are marked for the next changelog flush.

use std::collections::{BTreeMap, HashMap};

use rdkafka::consumer::BaseConsumer;
use sagaflow_avro::{BlockingCodec, Checkpoint, JournalRecord, Outbound, SagaState, Subject};
use sagaflow_core::{Chain, ChainVerdict, JournalHeader};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::kafka;
use crate::store::{ChainMeta, Meta, RelayMark, StateWrite, Store};
use crate::topics::Topics;

/// Key of checkpoint records on the changelog.
pub(crate) const CHECKPOINT_KEY: &str = "__checkpoint";

/// What a restore hands to the partition task.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) meta: Meta,
    /// Outputs of valid records after the relay watermark, in journal order.
    pub(crate) unrelayed: Vec<(i64, Vec<Outbound>)>,
    /// Latest state bytes of sagas changed after the watermark (for the changelog).
    pub(crate) dirty: HashMap<String, Option<Vec<u8>>>,
    /// Journal high watermark at the end of the restore.
    pub(crate) journal_end: i64,
    /// Records skipped by the chain rule.
    pub(crate) fenced_records: u64,
}

pub(crate) fn restore(
    store: &Store,
    reader: &BaseConsumer,
    codec: &BlockingCodec,
    topics: &Topics,
    partition: i32,
) -> Result<Restored> {
    let (journal_low, journal_end) = kafka::watermarks(reader, &topics.journal, partition)?;
    let mut meta = match store.meta(partition)? {
        Some(meta) if meta.chain.last_valid < journal_end => meta,
        Some(meta) => {
            warn!(partition, local = meta.chain.last_valid, journal_end, "local state is ahead of the journal (was the topic recreated?); rebuilding from the changelog");
            store.clear(partition)?;
            from_changelog(store, reader, codec, topics, partition)?
        }
        None => from_changelog(store, reader, codec, topics, partition)?,
    };
    let start = meta.relayed.chain.last_valid + 1;
    if start < journal_low {
        return Err(Error::Journal {
            topic: topics.journal.clone(),
            partition,
            offset: start,
            message: format!(
                "records from {start} were deleted (log start is {journal_low}) before the relay covered them; raise the journal's retention"
            ),
        });
    }
    let applied_through = meta.chain.last_valid;
    let mut chain = Chain::from(&meta.chain);
    let mut unrelayed = Vec::new();
    let mut dirty = HashMap::new();
    let mut fenced_records = 0u64;
    kafka::read_range(reader, &topics.journal, partition, start, journal_end, |offset, _, value| {
        let bytes = value.ok_or_else(|| Error::Journal {
            topic: topics.journal.clone(),
            partition,
            offset,
            message: "empty journal record".into(),
        })?;
        let record: JournalRecord = codec.decode(bytes).map_err(|e| Error::Journal {
            topic: topics.journal.clone(),
            partition,
            offset,
            message: e.to_string(),
        })?;
        let valid = if offset <= applied_through {
            store.was_valid(partition, offset)?
        } else {
            let verdict = chain.apply(
                offset,
                JournalHeader {
                    kind: record.kind,
                    epoch: record.epoch,
                    writer: &record.writer,
                    base: record.base,
                },
            );
            if verdict == ChainVerdict::Valid {
                meta.chain = ChainMeta::from(&chain);
                for p in &record.positions {
                    let _ = meta.positions.insert(p.topic.clone(), p.offset);
                }
                let writes = state_writes(codec, &record)?;
                let borrowed: Vec<StateWrite<'_>> = writes
                    .iter()
                    .map(|(id, state, running)| StateWrite {
                        saga_id: id,
                        state: state.as_deref(),
                        running: *running,
                    })
                    .collect();
                store.apply(partition, offset, &borrowed, &meta)?;
            } else {
                // The chain may have moved on (a later claim): keep max_epoch current.
                meta.chain.max_epoch = chain.max_epoch;
                fenced_records += 1;
            }
            verdict == ChainVerdict::Valid
        };
        if valid {
            for entry in &record.states {
                let _ = dirty.insert(entry.saga_id.clone(), entry.state.clone());
            }
            if !record.outputs.is_empty() {
                unrelayed.push((offset, record.outputs));
            }
        }
        Ok(())
    })?;
    info!(
        partition,
        journal_end,
        replayed = journal_end - start,
        unrelayed = unrelayed.len(),
        fenced_records,
        "partition restored"
    );
    Ok(Restored {
        meta,
        unrelayed,
        dirty,
        journal_end,
        fenced_records,
    })
}

/// Decodes the states of a record to know which sagas are still running.
pub(crate) fn state_writes(
    codec: &BlockingCodec,
    record: &JournalRecord,
) -> Result<Vec<(String, Option<Vec<u8>>, bool)>> {
    record
        .states
        .iter()
        .map(|entry| {
            let running = match &entry.state {
                Some(bytes) => !codec.decode::<SagaState>(bytes)?.status.is_terminal(),
                None => false,
            };
            Ok((entry.saga_id.clone(), entry.state.clone(), running))
        })
        .collect()
}

fn from_changelog(
    store: &Store,
    reader: &BaseConsumer,
    codec: &BlockingCodec,
    topics: &Topics,
    partition: i32,
) -> Result<Meta> {
    let (low, high) = kafka::watermarks(reader, &topics.changelog, partition)?;
    // The broker may not compact: keep the last record per key ourselves.
    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    let mut checkpoint: Option<Checkpoint> = None;
    kafka::read_range(reader, &topics.changelog, partition, low, high, |offset, key, value| {
        let Some(key) = key.map(|k| String::from_utf8_lossy(k).into_owned()) else {
            return Ok(());
        };
        if key == CHECKPOINT_KEY {
            if let Some(bytes) = value {
                checkpoint = Some(codec.decode(bytes).map_err(|e| Error::Journal {
                    topic: topics.changelog.clone(),
                    partition,
                    offset,
                    message: e.to_string(),
                })?);
            }
        } else {
            let _ = latest.insert(key, value.map(<[u8]>::to_vec));
        }
        Ok(())
    })?;
    let mut meta = Meta::empty();
    if let Some(cp) = &checkpoint {
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
        meta = Meta {
            chain: chain.clone(),
            positions: positions.clone(),
            relayed: RelayMark { chain, positions },
        };
    }
    let mut writes = Vec::with_capacity(latest.len());
    for (saga_id, state) in &latest {
        let running = match state {
            Some(bytes) => !codec.decode::<SagaState>(bytes)?.status.is_terminal(),
            None => false,
        };
        writes.push(StateWrite {
            saga_id,
            state: state.as_deref(),
            running,
        });
    }
    for chunk in writes.chunks(1000) {
        store.apply(partition, -1, chunk, &meta)?;
    }
    if writes.is_empty() {
        store.apply(partition, -1, &[], &meta)?;
    }
    info!(partition, sagas = latest.len(), checkpoint = ?checkpoint.as_ref().map(|c| c.journal_offset), "restored from the changelog");
    Ok(meta)
}

/// Encodes a checkpoint for the changelog.
pub(crate) fn encode_checkpoint(
    codec: &BlockingCodec,
    topics: &Topics,
    mark: &RelayMark,
) -> Result<Vec<u8>> {
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
    Ok(codec.encode(Subject::TopicRecord(&topics.changelog), &cp)?)
}
