//! Changelog batches: the states of many sagas from one flush in one changelog record.
//!
//! A changelog keyed by saga id costs a record per saga at least, for its final state, however
//! briefly it ran. A batch record holds every batchable state of a flush, under a reserved key
//! of its own (`__batch/<check_at>/<epoch>/<flush>/<n>`), so compaction cannot keep it for
//! any one saga: the owner deletes it (a tombstone) once it holds nothing that is not newer
//! elsewhere. Readers keep the newest state per saga by source offset, as they do for per-saga
//! records, so a batch and per-saga records mix freely.
//!
//! The owner indexes each batch it writes (or restores) by `check_at` with a fingerprint of
//! each member's state. From `check_at` on, at each flush, a member whose current state differs
//! has moved on (its newer state was flushed before, or goes out in this flush); one still
//! unchanged is carried: written again under its own key. The batch is deleted at the start of
//! the next flush, which begins only once this one is acknowledged, retries included. Running
//! states are checked [`CARRY_AFTER_MS`] after their flush, so only sagas
//! that run longer cost a per-saga record; a finished saga's full state, that long after its
//! first `Expire` timer (when it shrinks to a marker, which has its own key, as deletions do).
//!
//! A saga is deleted only as a marker, after the dedupe window; the batches that held its
//! earlier states must be gone by then, or the broker could drop the deletion's tombstone while
//! a batch still holds an old state. [`enabled`] asks for a window that long.

use sagaflow_avro::{BatchEntry, ChangelogBatch, SagaState, SagaStatus, TimerKind};

/// How long after its flush a running saga's batched state is checked, in ms.
pub(crate) const CARRY_AFTER_MS: i64 = 60_000;

/// Least time between a saga's full final state expiring and its marker's deletion (beyond two
/// checkpoint intervals) for batches to be used: every batch is then deleted well before any
/// of its sagas is.
const DELETION_MARGIN_MS: i64 = 10 * CARRY_AFTER_MS;

const PREFIX: &str = "__batch/";

/// A batch's members: saga ids with their states' fingerprints.
pub(crate) type Members = Vec<(String, u64)>;

/// A state that goes under its own key: saga id, source offset, state.
pub(crate) type Single = (String, i64, Vec<u8>);

/// Whether this engine's settings let it write batches (see the module comment).
pub(crate) fn enabled(
    configured: bool,
    finished_ms: i64,
    dedupe_ms: i64,
    checkpoint_interval_ms: u64,
) -> bool {
    let interval = i64::try_from(checkpoint_interval_ms).unwrap_or(i64::MAX / 4);
    configured
        && dedupe_ms.saturating_sub(finished_ms)
            >= DELETION_MARGIN_MS.saturating_add(interval.saturating_mul(2))
}

/// From when a saga's new state, if batched, is checked: `None` for a state that goes under its
/// own key (a marker, a state that never expires, a deletion, a parked record).
pub(crate) fn check_at(state: Option<&SagaState>, now: i64) -> Option<i64> {
    let state = state?;
    // A marker, or a saga waiting for an operator: likely to stay as it is for long.
    if state.compacted || state.status == SagaStatus::Incident {
        return None;
    }
    if !state.status.is_terminal() {
        return Some(now.saturating_add(CARRY_AFTER_MS));
    }
    state
        .timers
        .iter()
        .filter(|t| t.kind == TimerKind::Expire)
        .map(|t| t.due)
        .max()
        .map(|due| due.max(now).saturating_add(CARRY_AFTER_MS))
}

/// The key of a batch.
pub(crate) fn key(check_at: i64, epoch: i64, flush: u64, n: usize) -> String {
    format!("{PREFIX}{:020}/{epoch}/{flush}/{n}", check_at.max(0))
}

/// The check time a batch key names, if it is one.
pub(crate) fn parse(key: &str) -> Option<i64> {
    key.strip_prefix(PREFIX)?.split('/').next()?.parse().ok()
}

/// A stable fingerprint of a state (FNV-1a): it survives restarts and upgrades, as the index
/// does. Two different states that collide only make a member look unchanged, which carries it
/// once more; never the other way round.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One batch to write: its key, record and members.
#[derive(Debug)]
pub(crate) struct Packed {
    pub(crate) key: String,
    pub(crate) record: ChangelogBatch,
    /// Highest source offset among its entries.
    pub(crate) source: i64,
}

impl Packed {
    /// Members with their states' fingerprints, for the index.
    pub(crate) fn members(&self) -> Members {
        members(&self.record)
    }
}

/// Members of a batch record with their states' fingerprints.
pub(crate) fn members(record: &ChangelogBatch) -> Members {
    record
        .entries
        .iter()
        .map(|e| (e.saga_id.clone(), fingerprint(&e.state)))
        .collect()
}

/// Packs batchable states `(saga id, source, state, check_at)` into records of at most
/// `max_bytes` each, grouping close check times. A state too large for any batch is handed back
/// to go under its own key.
pub(crate) fn pack(
    mut states: Vec<(String, i64, Vec<u8>, i64)>,
    max_bytes: usize,
    epoch: i64,
    flush: u64,
) -> (Vec<Packed>, Vec<Single>) {
    // Room for the record's own framing and the header fields.
    let budget = max_bytes.saturating_sub(1_024);
    states.sort_by_key(|s| s.3);
    let mut packed: Vec<Packed> = Vec::new();
    let mut alone = Vec::new();
    let mut current: Vec<BatchEntry> = Vec::new();
    let (mut first, mut last, mut bytes, mut source) = (0i64, 0i64, 0usize, -1i64);
    let mut close = |entries: &mut Vec<BatchEntry>, last: i64, source: i64| {
        if entries.is_empty() {
            return;
        }
        let n = packed.len();
        packed.push(Packed {
            key: key(last, epoch, flush, n),
            record: ChangelogBatch {
                check_at: last,
                entries: std::mem::take(entries),
            },
            source,
        });
    };
    for (saga_id, src, state, at) in states {
        let size = saga_id.len() + state.len() + 24;
        if size > budget {
            alone.push((saga_id, src, state));
            continue;
        }
        if !current.is_empty() && (bytes + size > budget || at - first > CARRY_AFTER_MS) {
            close(&mut current, last, source);
            bytes = 0;
            source = -1;
        }
        if current.is_empty() {
            first = at;
        }
        last = at;
        bytes += size;
        source = source.max(src);
        current.push(BatchEntry {
            saga_id,
            source: src,
            state,
        });
    }
    close(&mut current, last, source);
    (packed, alone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keys_name_their_check_time_and_sort_by_it() {
        let a = key(1_700_000_000_000, 3, 7, 0);
        assert_eq!(parse(&a), Some(1_700_000_000_000));
        assert!(key(999, 9, 9, 9) < key(1_000, 1, 1, 1));
        assert_eq!(parse("__checkpoint"), None);
        assert_eq!(parse("order-1"), None);
    }

    #[test]
    fn packing_respects_the_size_and_keeps_check_times_apart() {
        let state = |n: usize| vec![7u8; n];
        let states = vec![
            ("a".into(), 1, state(400), 1_000),
            ("b".into(), 2, state(400), 2_000),
            ("c".into(), 3, state(400), 3_000),
            // A day later: a finished saga's state, not with the running ones.
            ("d".into(), 4, state(400), 86_400_000),
            ("huge".into(), 5, state(20_000), 1_000),
        ];
        let (packed, alone) = pack(states, 2_200, 5, 1);
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].0, "huge");
        let sizes: Vec<usize> = packed.iter().map(|p| p.record.entries.len()).collect();
        assert_eq!(sizes, [2, 1, 1]);
        assert_eq!(packed[0].record.check_at, 2_000);
        assert_eq!(packed[0].source, 2);
        assert_eq!(parse(&packed[2].key), Some(86_400_000));
        let keys: std::collections::BTreeSet<&str> =
            packed.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn batches_need_a_dedupe_window_well_past_the_finished_retention() {
        let day = 86_400_000;
        assert!(enabled(true, day, 7 * day, 1_000));
        assert!(!enabled(false, day, 7 * day, 1_000));
        assert!(!enabled(true, day, day, 1_000));
        assert!(!enabled(true, 1_000, 2_000, 1_000));
    }

    #[test]
    fn fingerprints_are_stable() {
        // FNV-1a's published test vector: the index outlives the binary that wrote it.
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fingerprint(b"ab"), fingerprint(b"ba"));
    }
}
