//! The timer wheel of one partition: near-term timers in memory, the rest in RocksDB.
//!
//! Every pending timer has an entry in the store's timer index (`w/<p>/<due>/<target>`), written
//! atomically with the journal record that scheduled it. Memory holds only the entries due
//! before `loaded_until` (now plus a horizon), so millions of far-off timers cost disk, not RAM.
//! The index is allowed to hold entries of timers that were cancelled or already fired: a
//! target is checked against the current state when it comes due, which is what makes a timer
//! fire at most once as seen by the saga, and index maintenance never needs the journal.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::store::Store;

/// What a timer index entry points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A saga timer: (saga id, timer id).
    Saga(String, String),
    /// A parked record under this state key (a delayed record or a buffered signal).
    Parked(String),
}

impl Target {
    /// The index form: `S|<timer id>|<saga id>` or `P|<key>` (timer ids never contain `|`).
    pub(crate) fn encode(&self) -> String {
        match self {
            Target::Saga(saga, timer) => format!("S|{timer}|{saga}"),
            Target::Parked(key) => format!("P|{key}"),
        }
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("S|") {
            let (timer, saga) = rest.split_once('|')?;
            return Some(Target::Saga(saga.to_string(), timer.to_string()));
        }
        text.strip_prefix("P|")
            .map(|key| Target::Parked(key.to_string()))
    }
}

#[derive(Debug)]
pub(crate) struct Wheel {
    due: BTreeSet<(i64, String)>,
    loaded_until: i64,
    horizon: i64,
}

impl Wheel {
    pub(crate) fn new(horizon_ms: i64) -> Self {
        Self {
            due: BTreeSet::new(),
            loaded_until: 0,
            horizon: horizon_ms.max(1),
        }
    }

    /// Loads index entries that came within the horizon.
    pub(crate) fn load(&mut self, store: &Store, partition: i32, now: i64) -> Result<()> {
        let until = now.saturating_add(self.horizon);
        if until <= self.loaded_until {
            return Ok(());
        }
        // Load in horizon-sized steps ahead of time rather than every loop turn.
        let until = until.saturating_add(self.horizon);
        for entry in store.timers_due(partition, self.loaded_until, until)? {
            let _ = self.due.insert(entry);
        }
        self.loaded_until = until;
        Ok(())
    }

    /// A timer just scheduled (or committed): kept in memory if it is within the loaded range;
    /// otherwise a later `load` finds it in the store.
    pub(crate) fn offer(&mut self, due: i64, target: String) {
        if due < self.loaded_until {
            let _ = self.due.insert((due, target));
        }
    }

    /// Takes up to `max` entries due at `now`, earliest first, plus those due within `ahead`
    /// ms for which `early` holds (work that may be prepared ahead of its time).
    pub(crate) fn take_due(
        &mut self,
        now: i64,
        ahead: i64,
        early: impl Fn(&str) -> bool,
        max: usize,
    ) -> Vec<(i64, String)> {
        let until = now.saturating_add(ahead.max(0));
        let taken: Vec<(i64, String)> = self
            .due
            .iter()
            .take_while(|(due, _)| *due <= until)
            .filter(|(due, target)| *due <= now || early(target))
            .take(max)
            .cloned()
            .collect();
        for entry in &taken {
            let _ = self.due.remove(entry);
        }
        taken
    }

    /// The earliest timer held in memory.
    pub(crate) fn next_due(&self) -> Option<i64> {
        self.due.first().map(|(due, _)| *due)
    }

    /// Timers held in memory.
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_roundtrip() {
        for t in [
            Target::Saga("a|b/c".into(), "Retry/4".into()),
            Target::Parked("__delay/t/0/5".into()),
        ] {
            assert_eq!(Target::decode(&t.encode()), Some(t));
        }
        assert_eq!(Target::decode("X|y"), None);
    }

    #[test]
    fn only_loaded_range_is_offered_and_due_entries_come_out_in_order() {
        let mut w = Wheel::new(1_000);
        w.loaded_until = 5_000;
        w.offer(4_000, "b".into());
        w.offer(3_000, "a".into());
        w.offer(6_000, "later".into());
        assert_eq!(w.len(), 2);
        assert!(w.take_due(2_999, 0, |_| true, 10).is_empty());
        assert_eq!(
            w.take_due(4_000, 0, |_| true, 10),
            vec![(3_000, "a".to_string()), (4_000, "b".to_string())]
        );
    }

    #[test]
    fn only_early_targets_come_out_ahead_of_time() {
        let mut w = Wheel::new(1_000);
        w.loaded_until = 10_000;
        w.offer(1_050, "P|__delay/x".into());
        w.offer(1_060, "S|Wait/2|s".into());
        w.offer(1_500, "P|__delay/y".into());
        let early = |t: &str| t.starts_with("P|__delay/");
        assert_eq!(
            w.take_due(1_000, 100, early, 10),
            vec![(1_050, "P|__delay/x".to_string())]
        );
        assert_eq!(w.next_due(), Some(1_060));
    }
}
