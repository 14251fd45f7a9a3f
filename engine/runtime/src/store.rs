//! Per-partition saga state in RocksDB.
//!
//! Only journal records that count (see `sagaflow_core::Chain`) reach the store, each in one
//! atomic write batch with the partition's metadata, so the store is always a consistent prefix
//! of the valid journal. Key layout (partition zero-padded so prefixes sort):
//! - `s/<p>/<saga id>`: wire-format `SagaState`; reserved keys (`__delay/…`, `__signal/…`,
//!   `__await/…`) hold wire-format `Parked` records instead;
//! - `r/<p>/<saga id>`: present while the saga is not terminal (counted when a partition starts);
//! - `w/<p>/<due>/<target>`: the timer index, every pending timer by due time (see `wheel`);
//!   entries of fired or cancelled timers may linger and are ignored when they come due;
//! - `v/<p>/<journal offset>`: valid journal records not yet covered by the relay watermark;
//! - `b/<p>/<batch key>`: each changelog batch of the partition not yet deleted, by check time
//!   (the key starts with it), with its members and their states' fingerprints (`batches.rs`);
//! - `k/<p>`: where a standby copy taken over here had read the changelog to, until the restore
//!   has read the rest for its batches;
//! - `m/<p>`: [`Meta`];
//! - `c/<p>`: where this engine's standby copy of the partition stands (`standby.rs`), so that a
//!   restart resumes the copy; deleted when the partition is assigned here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, DB};
use sagaflow_core::Chain;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Chain state in a serialisable form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChainMeta {
    pub(crate) last_valid: i64,
    pub(crate) epoch: i64,
    pub(crate) writer: String,
    pub(crate) max_epoch: i64,
}

impl From<&Chain> for ChainMeta {
    fn from(c: &Chain) -> Self {
        Self {
            last_valid: c.last_valid,
            epoch: c.epoch,
            writer: c.writer.clone(),
            max_epoch: c.max_epoch,
        }
    }
}

impl From<&ChainMeta> for Chain {
    fn from(m: &ChainMeta) -> Self {
        Chain {
            last_valid: m.last_valid,
            epoch: m.epoch,
            writer: m.writer.clone(),
            max_epoch: m.max_epoch,
        }
    }
}

/// Where the relay stands: everything valid at or below `chain.last_valid` is delivered and in
/// the changelog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RelayMark {
    pub(crate) chain: ChainMeta,
    pub(crate) positions: BTreeMap<String, i64>,
}

/// Metadata of one partition, written with every applied journal record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Chain after the last applied record.
    pub(crate) chain: ChainMeta,
    /// Input positions after the last applied record.
    pub(crate) positions: BTreeMap<String, i64>,
    /// Relay watermark.
    pub(crate) relayed: RelayMark,
}

impl Meta {
    pub(crate) fn empty() -> Self {
        let chain = ChainMeta {
            last_valid: -1,
            ..ChainMeta::default()
        };
        Self {
            chain: chain.clone(),
            positions: BTreeMap::new(),
            relayed: RelayMark {
                chain,
                positions: BTreeMap::new(),
            },
        }
    }
}

/// One saga state change to apply.
#[derive(Debug)]
pub(crate) struct StateWrite<'a> {
    pub(crate) saga_id: &'a str,
    pub(crate) state: Option<&'a [u8]>,
    pub(crate) running: bool,
    /// Timers of the new state, as timer index entries (due, target).
    pub(crate) timers: &'a [(i64, String)],
}

/// A changelog batch in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedBatch {
    pub(crate) key: String,
    /// Saga ids with their states' fingerprints.
    pub(crate) members: Vec<(String, u64)>,
}

fn index_key(partition: i32, due: i64, target: &str) -> Vec<u8> {
    // Due times are non-negative epoch ms; clamping keeps the zero-padded order intact.
    key('w', partition, &format!("{:020}/{target}", due.max(0)))
}

/// The RocksDB store shared by every partition of this engine.
#[derive(Debug)]
pub(crate) struct Store {
    db: DB,
    path: PathBuf,
}

fn key(kind: char, partition: i32, rest: &str) -> Vec<u8> {
    format!("{kind}/{partition:05}/{rest}").into_bytes()
}

impl Store {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::Io {
            action: format!("creating state directory {}", path.display()),
            source,
        })?;
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let db = DB::open(&options, path).map_err(|e| store_error(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        store_error(&self.path, e)
    }

    pub(crate) fn meta(&self, partition: i32) -> Result<Option<Meta>> {
        match self
            .db
            .get(key('m', partition, ""))
            .map_err(|e| self.err(e))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Config(format!(
                    "corrupt metadata of partition {partition} in {}: {e}; stop the engine and delete that directory: the next start rebuilds every partition from the changelog",
                    self.path.display()
                ))
            }),
        }
    }

    /// Where the standby copy of `partition` stood, as `standby.rs` wrote it.
    pub(crate) fn copy_position(&self, partition: i32) -> Result<Option<Vec<u8>>> {
        self.db
            .get(key('c', partition, ""))
            .map_err(|e| self.err(e))
    }

    /// Records where the standby copy of `partition` stands, after the states it read.
    pub(crate) fn set_copy_position(&self, partition: i32, position: &[u8]) -> Result<()> {
        self.db
            .put(key('c', partition, ""), position)
            .map_err(|e| self.err(e))
    }

    /// Forgets the standby copy's position: the partition is about to be restored here, and
    /// from then on its store holds an owner's writes, which a copy must not resume over.
    pub(crate) fn forget_copy_position(&self, partition: i32) -> Result<()> {
        self.db
            .delete(key('c', partition, ""))
            .map_err(|e| self.err(e))
    }

    pub(crate) fn state(&self, partition: i32, saga_id: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get(key('s', partition, saga_id))
            .map_err(|e| self.err(e))
    }

    /// How many of the partition's sagas are not terminal (a scan of keys, no state is read).
    pub(crate) fn running_count(&self, partition: i32) -> Result<usize> {
        let prefix = key('r', partition, "");
        let mut count = 0;
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, _) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    /// Whether the valid journal record at `offset` was applied (and not yet relay-covered).
    pub(crate) fn was_valid(&self, partition: i32, offset: i64) -> Result<bool> {
        Ok(self
            .db
            .get(key('v', partition, &format!("{offset:020}")))
            .map_err(|e| self.err(e))?
            .is_some())
    }

    /// States under keys starting with `prefix`, in key order.
    pub(crate) fn states_with_prefix(
        &self,
        partition: i32,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let start = key('s', partition, prefix);
        let base = key('s', partition, "").len();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&start) || out.len() >= limit {
                break;
            }
            out.push((String::from_utf8_lossy(&k[base..]).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    /// How many committed states of `partition` have a key under `prefix`, by `group(key)`;
    /// keys only, no value is read.
    pub(crate) fn count_states_with_prefix(
        &self,
        partition: i32,
        prefix: &str,
        group: impl Fn(&str) -> Option<&str>,
    ) -> Result<BTreeMap<String, usize>> {
        let start = key('s', partition, prefix);
        let base = key('s', partition, "").len();
        let mut counts = BTreeMap::new();
        let mut iter = self.db.raw_iterator();
        iter.seek(&start);
        while let Some(k) = iter.key() {
            if !k.starts_with(&start) {
                break;
            }
            if let Some(g) = std::str::from_utf8(&k[base..]).ok().and_then(&group) {
                *counts.entry(g.to_string()).or_insert(0) += 1;
            }
            iter.next();
        }
        iter.status().map_err(|e| self.err(e))?;
        Ok(counts)
    }

    /// Timer index entries due in `[from, to)`, earliest first.
    pub(crate) fn timers_due(
        &self,
        partition: i32,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String)>> {
        let start = index_key(partition, from, "");
        let end = index_key(partition, to, "");
        let base = key('w', partition, "").len();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (k, _) = item.map_err(|e| self.err(e))?;
            if k.as_ref() >= end.as_slice() || !k.starts_with(&key('w', partition, "")) {
                break;
            }
            let rest = String::from_utf8_lossy(&k[base..]).into_owned();
            if let Some((due, target)) = rest.split_once('/') {
                if let Ok(due) = due.parse() {
                    out.push((due, target.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Forgets timer index entries (of fired or cancelled timers).
    pub(crate) fn forget_timers(&self, partition: i32, entries: &[(i64, String)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (due, target) in entries {
            batch.delete(index_key(partition, *due, target));
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Writes states without touching the metadata (a restore from the changelog, in chunks):
    /// until [`Store::apply`] writes the metadata last, a restart sees no metadata and restores
    /// the partition again instead of trusting a part of it.
    pub(crate) fn load_states(&self, partition: i32, writes: &[StateWrite<'_>]) -> Result<()> {
        let mut batch = WriteBatch::default();
        Self::put_states(&mut batch, partition, writes);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    fn put_states(batch: &mut WriteBatch, partition: i32, writes: &[StateWrite<'_>]) {
        for w in writes {
            for (due, target) in w.timers {
                batch.put(index_key(partition, *due, target), b"");
            }
            match w.state {
                Some(bytes) => batch.put(key('s', partition, w.saga_id), bytes),
                None => batch.delete(key('s', partition, w.saga_id)),
            }
            if w.running {
                batch.put(key('r', partition, w.saga_id), b"");
            } else {
                batch.delete(key('r', partition, w.saga_id));
            }
        }
    }

    /// Applies one valid journal record atomically, with the timer index entries it fired.
    pub(crate) fn apply(
        &self,
        partition: i32,
        offset: i64,
        writes: &[StateWrite<'_>],
        fired: &[(i64, String)],
        meta: &Meta,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for (due, target) in fired {
            batch.delete(index_key(partition, *due, target));
        }
        Self::put_states(&mut batch, partition, writes);
        if offset >= 0 {
            batch.put(key('v', partition, &format!("{offset:020}")), b"");
        }
        self.put_meta(&mut batch, partition, meta);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Records a new relay watermark and forgets validity marks it covers.
    pub(crate) fn set_relayed(&self, partition: i32, meta: &Meta) -> Result<()> {
        let mut batch = WriteBatch::default();
        let upto = meta.relayed.chain.last_valid;
        batch.delete_range(
            key('v', partition, &format!("{:020}", 0)),
            key('v', partition, &format!("{:020}", upto.max(-1) + 1)),
        );
        self.put_meta(&mut batch, partition, meta);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    fn put_meta(&self, batch: &mut WriteBatch, partition: i32, meta: &Meta) {
        let bytes = serde_json::to_vec(meta).expect("metadata serialises");
        batch.put(key('m', partition, ""), bytes);
    }

    /// Where the batches of `partition`'s changelog are indexed to, if a standby copy taken over
    /// here said so (`standby.rs`); `Some(0)` if it could not tell.
    pub(crate) fn batches_known_to(&self, partition: i32) -> Result<Option<i64>> {
        let bytes = self
            .db
            .get(key('k', partition, ""))
            .map_err(|e| self.err(e))?;
        Ok(bytes.map(|b| {
            std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        }))
    }

    /// Records (or, with `None`, forgets) where the batches of `partition` are indexed to.
    pub(crate) fn set_batches_known_to(&self, partition: i32, offset: Option<i64>) -> Result<()> {
        let k = key('k', partition, "");
        match offset {
            Some(offset) => self.db.put(k, offset.to_string()),
            None => self.db.delete(k),
        }
        .map_err(|e| self.err(e))
    }

    /// Indexes a changelog batch of `partition` with its members (saga id, fingerprint).
    pub(crate) fn put_batch(
        &self,
        partition: i32,
        batch_key: &str,
        members: &[(String, u64)],
    ) -> Result<()> {
        let bytes = serde_json::to_vec(members).expect("batch members serialise");
        self.db
            .put(key('b', partition, batch_key), bytes)
            .map_err(|e| self.err(e))
    }

    /// Forgets a changelog batch (deleted from the changelog).
    pub(crate) fn forget_batch(&self, partition: i32, batch_key: &str) -> Result<()> {
        self.db
            .delete(key('b', partition, batch_key))
            .map_err(|e| self.err(e))
    }

    /// Indexed batches of `partition` whose check time is at or before `now`, earliest first.
    pub(crate) fn batches_due(&self, partition: i32, now: i64) -> Result<Vec<IndexedBatch>> {
        let prefix = key('b', partition, "");
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let batch_key = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            match crate::batches::parse(&batch_key) {
                Some(at) if at <= now => {}
                _ => break,
            }
            let members = serde_json::from_slice(&v).map_err(|e| {
                Error::Config(format!(
                    "corrupt changelog batch index entry {batch_key} of partition {partition} in {}: {e}; stop the engine and delete that directory: the next start rebuilds every partition from the changelog",
                    self.path.display()
                ))
            })?;
            out.push(IndexedBatch {
                key: batch_key,
                members,
            });
        }
        Ok(out)
    }

    /// Removes everything of `partition` (before a restore from Kafka).
    pub(crate) fn clear(&self, partition: i32) -> Result<()> {
        let mut batch = WriteBatch::default();
        for kind in ['s', 'r', 'v', 'm', 'w', 'c', 'b', 'k'] {
            let from = key(kind, partition, "");
            let mut to = from.clone();
            *to.last_mut().expect("non-empty key") = b'/' + 1;
            batch.delete_range(from, to);
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }
}

fn store_error(path: &Path, source: rocksdb::Error) -> Error {
    Error::Store {
        path: path.display().to_string(),
        source,
    }
}

/// A new store in the temp directory, for unit tests (`name` keeps tests apart).
#[cfg(test)]
pub(crate) fn temp_store(name: &str) -> Store {
    let dir = std::env::temp_dir().join(format!("sagaflow-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Store::open(&dir).expect("store")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_tracks_running_sagas_and_validity_marks() {
        let store = temp_store("apply");
        let mut meta = Meta::empty();
        meta.chain.last_valid = 7;
        let writes = [
            StateWrite {
                saga_id: "a",
                state: Some(b"A"),
                running: true,
                timers: &[],
            },
            StateWrite {
                saga_id: "b",
                state: Some(b"B"),
                running: false,
                timers: &[],
            },
        ];
        store.apply(3, 7, &writes, &[], &meta).unwrap();
        assert_eq!(store.meta(3).unwrap().unwrap(), meta);
        assert_eq!(store.running_count(3).unwrap(), 1);
        assert_eq!(store.state(3, "b").unwrap().as_deref(), Some(&b"B"[..]));
        assert!(store.was_valid(3, 7).unwrap());
        assert!(store.meta(4).unwrap().is_none());

        meta.relayed.chain.last_valid = 7;
        store.set_relayed(3, &meta).unwrap();
        assert!(!store.was_valid(3, 7).unwrap());

        store.set_copy_position(3, b"{}").unwrap();
        store.clear(3).unwrap();
        assert!(store.meta(3).unwrap().is_none());
        assert!(store.state(3, "b").unwrap().is_none());
        assert!(store.copy_position(3).unwrap().is_none());
    }

    #[test]
    fn the_timer_index_is_ordered_by_due_time_per_partition() {
        let store = temp_store("timers");
        let meta = Meta::empty();
        let timers = [
            (2_000, "S|Wait/3|x".to_string()),
            (900, "P|__delay/a".to_string()),
        ];
        let other = [(1_000, "S|Wait/1|y".to_string())];
        let writes = [StateWrite {
            saga_id: "x",
            state: Some(b"X"),
            running: true,
            timers: &timers,
        }];
        store.apply(1, 0, &writes, &[], &meta).unwrap();
        let writes = [StateWrite {
            saga_id: "y",
            state: Some(b"Y"),
            running: true,
            timers: &other,
        }];
        store.apply(2, 0, &writes, &[], &meta).unwrap();
        assert_eq!(
            store.timers_due(1, 0, 10_000).unwrap(),
            vec![timers[1].clone(), timers[0].clone()]
        );
        assert_eq!(store.timers_due(1, 901, 2_000).unwrap(), vec![]);
        // Firing removes an entry in the same write as the record that fired it.
        store.apply(1, 1, &[], &[timers[1].clone()], &meta).unwrap();
        assert_eq!(
            store.timers_due(1, 0, 10_000).unwrap(),
            vec![timers[0].clone()]
        );
        store.forget_timers(1, &[timers[0].clone()]).unwrap();
        assert!(store.timers_due(1, 0, i64::MAX).unwrap().is_empty());
        assert_eq!(store.timers_due(2, 0, i64::MAX).unwrap(), other.to_vec());
        assert_eq!(
            store.states_with_prefix(2, "y", usize::MAX).unwrap(),
            vec![("y".to_string(), b"Y".to_vec())]
        );
    }
}
