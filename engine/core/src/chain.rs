//! Which journal records count.
//!
//! Without Kafka transactions, two engines may both believe they own a partition for a while
//! (a zombie that missed its revocation, or a rebalance in flight). Both may append to the
//! journal. Every reader applies the same rule to the same log, so all agree on one linear
//! history: a record counts only if it builds on the last record that counted (`base`), and it
//! was written by the current owner. A new owner takes over with a CLAIM carrying a higher epoch;
//! as soon as any CLAIM with a higher epoch is in the log, the previous owner's later records stop
//! counting, even if that CLAIM itself lost a race and does not count.

use sagaflow_avro::JournalKind;

/// The fields of a journal record the chain rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct JournalHeader<'a> {
    /// Claim or decisions.
    pub kind: JournalKind,
    /// Writer epoch.
    pub epoch: i64,
    /// Writer incarnation id.
    pub writer: &'a str,
    /// Offset of the record it builds on.
    pub base: i64,
}

/// Verdict on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainVerdict {
    /// The record counts: apply it.
    Valid,
    /// It does not build on the last valid record.
    BrokenChain,
    /// Its writer is not (or no longer) the owner.
    Fenced,
}

/// Chain state of one journal partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Offset of the last valid record, -1 before any.
    pub last_valid: i64,
    /// Epoch of the current owner.
    pub epoch: i64,
    /// Writer id of the current owner.
    pub writer: String,
    /// Highest epoch any CLAIM in the log has carried, valid or not.
    pub max_epoch: i64,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            last_valid: -1,
            epoch: 0,
            writer: String::new(),
            max_epoch: 0,
        }
    }
}

impl Chain {
    /// Applies the record at `offset` and says whether it counts.
    pub fn apply(&mut self, offset: i64, header: JournalHeader<'_>) -> ChainVerdict {
        let verdict = self.judge(header);
        if header.kind == JournalKind::Claim {
            self.max_epoch = self.max_epoch.max(header.epoch);
        }
        if verdict == ChainVerdict::Valid {
            self.last_valid = offset;
            if header.kind == JournalKind::Claim {
                self.epoch = header.epoch;
                self.writer = header.writer.to_string();
            }
        }
        verdict
    }

    fn judge(&self, header: JournalHeader<'_>) -> ChainVerdict {
        match header.kind {
            JournalKind::Claim if header.epoch <= self.max_epoch => ChainVerdict::Fenced,
            JournalKind::Decisions
                if header.epoch != self.epoch
                    || header.writer != self.writer
                    || self.epoch < self.max_epoch =>
            {
                ChainVerdict::Fenced
            }
            _ if header.base != self.last_valid => ChainVerdict::BrokenChain,
            _ => ChainVerdict::Valid,
        }
    }

    /// Whether `writer` at `epoch` may still write.
    pub fn owned_by(&self, epoch: i64, writer: &str) -> bool {
        self.epoch == epoch && self.writer == writer && self.epoch >= self.max_epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(epoch: i64, writer: &str, base: i64) -> JournalHeader<'_> {
        JournalHeader {
            kind: JournalKind::Claim,
            epoch,
            writer,
            base,
        }
    }

    fn decisions(epoch: i64, writer: &str, base: i64) -> JournalHeader<'_> {
        JournalHeader {
            kind: JournalKind::Decisions,
            epoch,
            writer,
            base,
        }
    }

    #[test]
    fn owner_chain_is_valid() {
        let mut chain = Chain::default();
        assert_eq!(chain.apply(0, claim(1, "a", -1)), ChainVerdict::Valid);
        assert_eq!(chain.apply(1, decisions(1, "a", 0)), ChainVerdict::Valid);
        assert_eq!(chain.apply(2, decisions(1, "a", 1)), ChainVerdict::Valid);
        assert_eq!(chain.last_valid, 2);
        assert!(chain.owned_by(1, "a"));
    }

    #[test]
    fn zombie_write_after_new_claim_is_fenced() {
        let mut chain = Chain::default();
        chain.apply(0, claim(1, "a", -1));
        chain.apply(1, decisions(1, "a", 0));
        assert_eq!(chain.apply(2, claim(2, "b", 1)), ChainVerdict::Valid);
        // "a" still believes it owns the partition and builds on its own last record.
        assert_eq!(chain.apply(3, decisions(1, "a", 1)), ChainVerdict::Fenced);
        assert_eq!(chain.apply(4, decisions(2, "b", 2)), ChainVerdict::Valid);
        assert!(!chain.owned_by(1, "a"));
    }

    #[test]
    fn a_claim_that_lost_the_race_still_fences_the_old_owner() {
        let mut chain = Chain::default();
        chain.apply(0, claim(1, "a", -1));
        // "a" and "b" both build on offset 0; "a" lands first.
        assert_eq!(chain.apply(1, decisions(1, "a", 0)), ChainVerdict::Valid);
        assert_eq!(chain.apply(2, claim(2, "b", 0)), ChainVerdict::BrokenChain);
        // From now on "a" no longer counts, and "b" claims again on top of the real chain.
        assert_eq!(chain.apply(3, decisions(1, "a", 1)), ChainVerdict::Fenced);
        assert_eq!(chain.apply(4, claim(2, "b", 1)), ChainVerdict::Fenced);
        assert_eq!(chain.apply(5, claim(3, "b", 1)), ChainVerdict::Valid);
        assert_eq!(chain.apply(6, decisions(3, "b", 5)), ChainVerdict::Valid);
        assert_eq!(chain.last_valid, 6);
    }

    #[test]
    fn a_record_not_building_on_the_last_valid_one_is_ignored() {
        let mut chain = Chain::default();
        chain.apply(0, claim(1, "a", -1));
        chain.apply(1, decisions(1, "a", 0));
        // A pipelined record that assumed offset 1 would be someone else's.
        assert_eq!(
            chain.apply(2, decisions(1, "a", 0)),
            ChainVerdict::BrokenChain
        );
        assert_eq!(chain.last_valid, 1);
    }
}
