//! Decisions whose journal record the broker refuses as too large.
//!
//! A journal record holds a batch of decisions. When the broker (or the producer) refuses one as
//! larger than `message.max.bytes`, retrying the same batch would fail forever and stall the
//! partition. So the inputs of that batch are decided again one record each; an input whose own
//! record is still too large can never be journaled, and is dead-lettered instead. The
//! knowledge survives the resync that follows a failed write, not an engine restart: after a
//! restart the same input fails once more and is found again.

use std::collections::BTreeMap;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Why a journal record was not written.
#[derive(Debug)]
pub(crate) struct JournalFailure {
    pub(crate) message: String,
    /// The broker or the producer refused it as larger than `message.max.bytes`: the same
    /// record will never be written.
    pub(crate) too_large: bool,
}

impl JournalFailure {
    pub(crate) fn from_kafka(e: &KafkaError) -> Self {
        let too_large = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize)
        );
        Self {
            message: e.to_string(),
            too_large,
        }
    }
}

/// What one partition learned from journal records refused as too large.
#[derive(Debug, Default)]
pub(crate) struct Oversize {
    /// Decide one input per record until each topic's position reaches this offset.
    split_through: BTreeMap<String, i64>,
    /// Inputs whose own record was refused, and how many times.
    refused: BTreeMap<(String, i64), u32>,
}

impl Oversize {
    /// A record with the decisions of `inputs` (topic, offset) was refused as too large.
    pub(crate) fn refused(&mut self, inputs: &[(String, i64)]) {
        match inputs {
            [] => {}
            [single] => *self.refused.entry(single.clone()).or_insert(0) += 1,
            many => {
                for (topic, offset) in many {
                    let through = self.split_through.entry(topic.clone()).or_insert(*offset);
                    *through = (*through).max(*offset);
                }
            }
        }
    }

    /// How often this input's own record was refused (0: never).
    pub(crate) fn refusals(&self, topic: &str, offset: i64) -> u32 {
        self.refused
            .get(&(topic.to_string(), offset))
            .copied()
            .unwrap_or(0)
    }

    /// Whether inputs are still decided one per record, given the positions applied so far.
    pub(crate) fn splitting(&mut self, positions: &BTreeMap<String, i64>) -> bool {
        self.split_through
            .retain(|topic, through| positions.get(topic).is_none_or(|p| p < through));
        !self.split_through.is_empty()
    }

    /// Forgets refused inputs at or below the positions applied: they are dead-lettered.
    pub(crate) fn settle(&mut self, positions: &BTreeMap<String, i64>) {
        self.refused
            .retain(|(topic, offset), _| positions.get(topic).is_none_or(|p| p < offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_batch_is_split_then_its_single_culprit_is_found() {
        let mut o = Oversize::default();
        let batch = vec![
            ("s".to_string(), 10),
            ("s".to_string(), 11),
            ("r".to_string(), 4),
        ];
        o.refused(&batch);
        let mut at = BTreeMap::from([("s".to_string(), 9), ("r".to_string(), 3)]);
        assert!(o.splitting(&at));
        o.refused(&[("s".to_string(), 11)]);
        assert_eq!(o.refusals("s", 11), 1);
        assert_eq!(o.refusals("s", 10), 0);
        at.insert("s".into(), 11);
        at.insert("r".into(), 4);
        assert!(!o.splitting(&at), "past the refused batch");
        o.settle(&at);
        assert_eq!(o.refusals("s", 11), 0);
    }
}
