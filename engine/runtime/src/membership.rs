//! Group membership: the engine's static member id, and when to leave and rejoin the group.
//!
//! Rejoining is a workaround for brokers whose coordinator strands partitions after a member
//! dies (tansu 0.6, see docs/operations.md): a new member can get an empty assignment for good,
//! and a survivor can get back only its old share. On a healthy broker both rules are rare and
//! cost one extra rebalance.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use sagaflow_kafka::KafkaSettings;
use tracing::info;

use crate::error::{Error, Result};
use crate::topics::Topics;

/// The `group.instance.id` to use, if static membership is configured.
///
/// Static membership is opt-in: it lets an engine restarted under the same id take its old place
/// at once, but a static member never leaves the group when it stops cleanly, and tansu 0.6 then
/// keeps its partitions from every other engine (see docs/operations.md).
pub(crate) fn instance_id(configured: &str) -> Option<String> {
    let id = configured.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// Removes a static member from an engine group (KIP-345), so that its partitions move to the
/// other engines at once instead of after the session timeout: the scale-down half of static
/// membership. Run it for an engine that has stopped for good; a running engine with this id is
/// fenced and stops.
///
/// librdkafka has no RemoveMembersFromConsumerGroup call, and its consumer never sends a
/// LeaveGroup when a static member closes. It does send one when a member unsubscribes while it
/// stays open, and a member that joins under a static id takes that member's place (the old one
/// is fenced). So the member is removed by joining under its id, then unsubscribing. With every client
/// setting of `kafka`, this works on a secured cluster as the engine does.
pub fn remove_static_member(
    kafka: &KafkaSettings,
    group: &str,
    instance: &str,
    timeout: Duration,
) -> Result<()> {
    let id = instance_id(instance).ok_or_else(|| {
        Error::Config("the instance id to remove is empty; pass the engine's instance-id".into())
    })?;
    remove_one(kafka, group, &id, timeout)?;
    info!(group, instance = %id, "static member removed from the group");
    Ok(())
}

fn remove_one(kafka: &KafkaSettings, group: &str, id: &str, timeout: Duration) -> Result<()> {
    let mut config = kafka.eager_range_config(
        "engine-membership",
        &[],
        "removal of a static engine member",
    );
    let _ = config
        .set("group.id", group)
        .set("group.instance.id", id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer<Departing> = config
        .create_with_context(Departing::default())
        .map_err(|e| Error::kafka("creating the consumer that removes a static member", e))?;
    let topics = Topics::new(group);
    // The engine's subscription and assignor: the member's place is taken without a rebalance.
    consumer
        .subscribe(&topics.inputs())
        .map_err(|e| Error::kafka(format!("joining group {group} as instance {id}"), e))?;
    let step = |phase: Phase, doing: &str| -> Result<()> {
        let deadline = Instant::now() + timeout;
        while consumer.context().phase() < phase {
            if Instant::now() >= deadline {
                return Err(Error::Config(format!(
                    "{doing} (group {group}, instance {id}) took longer than {timeout:?}; check that the broker is reachable with these client settings and try again"
                )));
            }
            if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                return Err(fatal(e, group, id));
            }
        }
        Ok(())
    };
    step(Phase::Joined, "joining the group in the member's place")?;
    consumer.unsubscribe();
    step(Phase::Left, "leaving the group")?;
    // Closing (on drop) waits for the LeaveGroup the unsubscribe sent to be answered.
    Ok(())
}

fn fatal(e: KafkaError, group: &str, id: &str) -> Error {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::FencedInstanceId) => Error::Config(format!(
            "another client joined group {group} as instance {id} while it was being removed: an engine with that instance-id is running. Stop it first"
        )),
        _ => Error::kafka(format!("removing instance {id} from group {group}"), e),
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    #[default]
    Joining,
    Joined,
    Left,
}

/// The removal consumer's progress, from its rebalance callbacks.
#[derive(Debug, Default)]
struct Departing(Mutex<Phase>);

impl Departing {
    fn phase(&self) -> Phase {
        *self.0.lock().expect("phase lock")
    }
}

impl ClientContext for Departing {}

impl ConsumerContext for Departing {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        _tpl: &mut TopicPartitionList,
    ) {
        let mut phase = self.0.lock().expect("phase lock");
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Hold the member's partitions without fetching them: nothing is read or
                // committed.
                let _ = consumer.assign(&TopicPartitionList::new());
                *phase = Phase::Joined;
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let _ = consumer.unassign();
                if *phase == Phase::Joined {
                    *phase = Phase::Left;
                }
            }
            _ => {}
        }
    }
}

/// Decides when to leave and rejoin the group.
#[derive(Debug)]
pub(crate) struct Rejoin {
    when_unassigned: Duration,
    when_same: Duration,
    partitions: usize,
    last_revoked: Option<BTreeSet<i32>>,
    last_same_rejoin: Option<Instant>,
    /// A same-set reassignment asked for a rejoin.
    same_due: bool,
    /// Since when the engine owns nothing, and the delay before the next rejoin.
    unowned: Option<(Instant, Duration)>,
}

impl Rejoin {
    pub(crate) fn new(when_unassigned: Duration, when_same: Duration, partitions: usize) -> Self {
        Self {
            when_unassigned,
            when_same,
            partitions,
            last_revoked: None,
            last_same_rejoin: None,
            same_due: false,
            unowned: None,
        }
    }

    pub(crate) fn revoked(&mut self, partitions: &BTreeSet<i32>) {
        self.last_revoked = Some(partitions.clone());
    }

    pub(crate) fn assigned(&mut self, partitions: &BTreeSet<i32>, now: Instant) {
        let revoked = self.last_revoked.take();
        if partitions.is_empty() {
            return;
        }
        let same = revoked.as_ref() == Some(partitions);
        let cooled = self
            .last_same_rejoin
            .is_none_or(|at| now.duration_since(at) >= self.when_same);
        if same && partitions.len() < self.partitions && !self.when_same.is_zero() && cooled {
            // A member left (that is why we were revoked) yet nothing moved to us.
            self.last_same_rejoin = Some(now);
            self.same_due = true;
        }
    }

    /// Whether to rejoin now, and after how long without partitions (zero for a same-set
    /// rejoin); `owned` is how many partitions the engine holds. An engine that owns nothing
    /// (no assignment yet, an empty one, or a rebalance that never finishes) rejoins after
    /// `when_unassigned`, then after doubling delays up to two minutes.
    pub(crate) fn take_due(&mut self, now: Instant, owned: usize) -> Option<Duration> {
        if std::mem::take(&mut self.same_due) && owned > 0 {
            return Some(Duration::ZERO);
        }
        if owned > 0 || self.when_unassigned.is_zero() {
            self.unowned = None;
            return None;
        }
        let (since, delay) = *self.unowned.get_or_insert((now, self.when_unassigned));
        if now.duration_since(since) < delay {
            return None;
        }
        self.unowned = Some((now, (delay * 2).min(Duration::from_secs(120))));
        Some(delay)
    }
}

/// Notices partitions that nobody owns: every owner writes a heartbeat to its changelog
/// partition every few seconds, so a changelog partition whose end stands still has no live
/// owner. The group cannot be asked who owns what (tansu 0.6 lists no members), so this is how a
/// survivor tells a partition stranded with a dead member from one a live engine owns.
#[derive(Debug, Default)]
pub(crate) struct OrphanWatch {
    /// Per partition: the changelog end last seen, and since when it has not moved.
    seen: BTreeMap<i32, (i64, Instant)>,
}

impl OrphanWatch {
    /// Records the changelog end of a partition this engine does not own; true once it has
    /// not moved for `patience`.
    pub(crate) fn observe(
        &mut self,
        partition: i32,
        changelog_end: i64,
        now: Instant,
        patience: Duration,
    ) -> bool {
        let entry = self.seen.entry(partition).or_insert((changelog_end, now));
        if entry.0 != changelog_end {
            *entry = (changelog_end, now);
        }
        now.duration_since(entry.1) >= patience
    }

    /// Forgets a partition (it is owned by this engine now, or was just looked after).
    pub(crate) fn forget(&mut self, partition: i32) {
        let _ = self.seen.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[i32]) -> BTreeSet<i32> {
        ps.iter().copied().collect()
    }

    #[test]
    fn owning_nothing_rejoins_with_backoff() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Rejoin::new(s(2), s(30), 4);
        r.assigned(&set(&[]), t0);
        assert_eq!(r.take_due(t0, 0), None);
        assert_eq!(r.take_due(t0 + s(2), 0), Some(s(2)));
        assert_eq!(r.take_due(t0 + s(3), 0), None);
        assert_eq!(r.take_due(t0 + s(6), 0), Some(s(4)));
        // Owning something resets the backoff.
        assert_eq!(r.take_due(t0 + s(7), 1), None);
        assert_eq!(r.take_due(t0 + s(60), 0), None);
        assert_eq!(r.take_due(t0 + s(62), 0), Some(s(2)));
    }

    #[test]
    fn same_partial_set_after_revoke_rejoins_once_per_cooldown() {
        let t0 = Instant::now();
        let mut r = Rejoin::new(Duration::from_secs(2), Duration::from_secs(30), 4);
        r.revoked(&set(&[0, 1]));
        r.assigned(&set(&[0, 1]), t0);
        assert!(r.take_due(t0, 2).is_some());
        assert_eq!(r.take_due(t0, 2), None);
        // Right after the rejoin the same thing again: within the cooldown, no loop.
        r.revoked(&set(&[0, 1]));
        r.assigned(&set(&[0, 1]), t0 + Duration::from_secs(1));
        assert_eq!(r.take_due(t0 + Duration::from_secs(1), 2), None);
        r.revoked(&set(&[0, 1]));
        r.assigned(&set(&[0, 1]), t0 + Duration::from_secs(31));
        assert!(r.take_due(t0 + Duration::from_secs(31), 2).is_some());
    }

    #[test]
    fn full_or_changed_sets_do_not_rejoin() {
        let t0 = Instant::now();
        let mut r = Rejoin::new(Duration::from_secs(2), Duration::from_secs(30), 4);
        r.revoked(&set(&[0, 1, 2, 3]));
        r.assigned(&set(&[0, 1, 2, 3]), t0);
        assert_eq!(r.take_due(t0, 4), None);
        r.revoked(&set(&[0, 1]));
        r.assigned(&set(&[0, 1, 2]), t0);
        assert_eq!(r.take_due(t0, 3), None);
        // A first assignment (nothing revoked before) is never "the same".
        r.assigned(&set(&[2, 3]), t0);
        assert_eq!(r.take_due(t0, 2), None);
    }

    #[test]
    fn a_partition_without_heartbeats_is_orphaned_after_the_patience() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = OrphanWatch::default();
        assert!(!w.observe(1, 10, t0, s(20)));
        // A live owner's heartbeats move the end.
        assert!(!w.observe(1, 11, t0 + s(15), s(20)));
        assert!(!w.observe(1, 12, t0 + s(30), s(20)));
        // They stop.
        assert!(!w.observe(1, 12, t0 + s(45), s(20)));
        assert!(w.observe(1, 12, t0 + s(50), s(20)));
        w.forget(1);
        assert!(!w.observe(1, 12, t0 + s(55), s(20)));
    }

    #[test]
    fn static_membership_is_opt_in() {
        assert_eq!(instance_id(""), None);
        assert_eq!(instance_id("  "), None);
        assert_eq!(instance_id("engine-a"), Some("engine-a".to_string()));
    }
}
