//! Where standby copies go when each engine keeps fewer than all the others' partitions
//! (`standby-copies`).
//!
//! Kafka Streams places its standby tasks with an assignor of its own, which later gives a
//! partition to an instance holding its copy. The engines share partitions with librdkafka's
//! range assignor instead, which knows nothing of copies; but what it does is fixed: it sorts the
//! members (by `group.instance.id` when they are static, else by member id) and gives each a
//! contiguous run of partitions, the first `partitions % members` of them one more. When a member
//! leaves, the next assignment is the same rule over those left. So the engine that gets a
//! partition when its owner goes is known beforehand, and a copy kept there is taken over warm.
//!
//! With `standby-copies = n`, a partition is copied on the `n` engines that would own it as its
//! owners leave one after another. Another member leaving moves partitions too (the runs shift),
//! and such a move goes to the neighbour whose run grows: often the same engine, not always.
//! The order is read from the assignment the group holds now (the members in the order of their
//! runs), so this needs no knowledge of instance ids, and a layout the range rule does not
//! explain (another assignor, a group mid-rebalance) is refused rather than guessed at.

use std::collections::{BTreeMap, BTreeSet};

/// The index, among `members` sorted members, of the one the range assignor gives `partition`
/// of `partitions`.
fn owner_index(partition: i32, members: usize, partitions: i32) -> usize {
    let members = i32::try_from(members).unwrap_or(i32::MAX).max(1);
    let per = partitions / members;
    let extra = partitions % members;
    // The first `extra` members take `per + 1` each.
    let long_runs = extra * (per + 1);
    let index = if partition < long_runs {
        partition / (per + 1)
    } else {
        extra + (partition - long_runs) / per.max(1)
    };
    usize::try_from(index).unwrap_or(0)
}

/// The members in the range assignor's order, read from what each holds now; `None` when the
/// range rule over that order does not give exactly this assignment.
///
/// Members holding partitions come in the order of their runs. Members holding none (more
/// members than partitions) come last, by id: librdkafka sorts static members by instance id,
/// and Apache Kafka names a static member `<instance id>-<uuid>`, so the two orders agree for
/// every instance id that is not a prefix of another.
pub(crate) fn order(
    held: &BTreeMap<String, BTreeSet<i32>>,
    partitions: i32,
) -> Option<Vec<String>> {
    let mut runs: Vec<(i32, &String)> = Vec::new();
    let mut idle: Vec<&String> = Vec::new();
    for (member, parts) in held {
        match parts.first() {
            Some(&first) => runs.push((first, member)),
            None => idle.push(member),
        }
    }
    if runs.is_empty() {
        return None;
    }
    runs.sort();
    let order: Vec<String> = runs
        .into_iter()
        .map(|(_, m)| m.clone())
        .chain(idle.into_iter().cloned())
        .collect();
    let explained = (0..partitions).all(|p| {
        let owner = &order[owner_index(p, order.len(), partitions)];
        held[owner].contains(&p)
    });
    let counted: usize = held.values().map(BTreeSet::len).sum();
    (explained && counted == usize::try_from(partitions).ok()?).then_some(order)
}

/// The partitions `me` keeps a copy of: those it would own, for each partition, as the
/// partition's owners leave the group one after another, up to `copies` owners deep.
pub(crate) fn copies_for(
    me: &str,
    order: &[String],
    partitions: i32,
    copies: usize,
) -> BTreeSet<i32> {
    (0..partitions)
        .filter(|&p| {
            let mut left: Vec<&String> = order.iter().collect();
            for _ in 0..copies {
                if left.len() < 2 {
                    break;
                }
                let _ = left.remove(owner_index(p, left.len(), partitions));
                if left[owner_index(p, left.len(), partitions)] == me {
                    return true;
                }
            }
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(members: &[(&str, &[i32])]) -> BTreeMap<String, BTreeSet<i32>> {
        members
            .iter()
            .map(|(m, ps)| (m.to_string(), ps.iter().copied().collect()))
            .collect()
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_range_rule_gives_the_first_members_one_more() {
        let owners = |members, partitions| -> Vec<usize> {
            (0..partitions)
                .map(|p| owner_index(p, members, partitions))
                .collect()
        };
        assert_eq!(owners(3, 4), [0, 0, 1, 2]);
        assert_eq!(owners(2, 4), [0, 0, 1, 1]);
        assert_eq!(owners(3, 8), [0, 0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(owners(1, 3), [0, 0, 0]);
        assert_eq!(owners(5, 3), [0, 1, 2], "more members than partitions");
    }

    #[test]
    fn the_order_is_read_from_the_runs_and_a_layout_range_does_not_make_is_refused() {
        let now = held(&[("m-c", &[3]), ("m-a", &[2]), ("m-b", &[0, 1])]);
        assert_eq!(order(&now, 4), Some(ids(&["m-b", "m-a", "m-c"])));
        // Members without partitions come last, by id.
        let spare = held(&[("z", &[0]), ("y", &[]), ("x", &[1])]);
        assert_eq!(order(&spare, 2), Some(ids(&["z", "x", "y"])));
        // Round robin, or a run of the wrong length, or a partition nobody holds.
        assert_eq!(order(&held(&[("a", &[0, 2]), ("b", &[1, 3])]), 4), None);
        assert_eq!(order(&held(&[("a", &[0]), ("b", &[1, 2, 3])]), 4), None);
        assert_eq!(order(&held(&[("a", &[0, 1]), ("b", &[2])]), 4), None);
        assert_eq!(order(&held(&[("a", &[0, 1]), ("b", &[1, 2, 3])]), 4), None);
        assert_eq!(order(&BTreeMap::new(), 4), None);
    }

    #[test]
    fn one_copy_goes_where_the_partition_moves_when_its_owner_leaves() {
        // a: 0 1, b: 2, c: 3.
        let order = ids(&["a", "b", "c"]);
        // Without a: b takes 0 1, c takes 2 3. Without b: a 0 1, c 2 3. Without c: a 0 1, b 2 3.
        assert_eq!(copies_for("a", &order, 4, 1), BTreeSet::new());
        assert_eq!(copies_for("b", &order, 4, 1), BTreeSet::from([0, 1, 3]));
        assert_eq!(copies_for("c", &order, 4, 1), BTreeSet::from([2]));
        // Every partition has exactly one copy, never on its owner.
        let mut all: Vec<i32> = ["a", "b", "c"]
            .iter()
            .flat_map(|m| copies_for(m, &order, 4, 1))
            .collect();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3]);
    }

    #[test]
    fn more_copies_follow_the_owners_leaving_one_after_another() {
        let order = ids(&["a", "b", "c"]);
        // Partition 0: a, then b, then c owns it.
        assert_eq!(copies_for("c", &order, 4, 2), BTreeSet::from([0, 1, 2]));
        assert_eq!(copies_for("b", &order, 4, 2), BTreeSet::from([0, 1, 3]));
        assert_eq!(copies_for("a", &order, 4, 2), BTreeSet::from([2, 3]));
        // As many copies as there are other engines: every partition everywhere but its owner.
        for (m, owned) in [("a", vec![0, 1]), ("b", vec![2]), ("c", vec![3])] {
            let expected: BTreeSet<i32> = (0..4).filter(|p| !owned.contains(p)).collect();
            assert_eq!(copies_for(m, &order, 4, 2), expected, "{m}");
            assert_eq!(copies_for(m, &order, 4, 9), expected, "{m}");
        }
        // Two engines: each copies the other's partitions whatever the count.
        let pair = ids(&["a", "b"]);
        assert_eq!(copies_for("a", &pair, 4, 1), BTreeSet::from([2, 3]));
        assert_eq!(copies_for("b", &pair, 4, 1), BTreeSet::from([0, 1]));
        assert_eq!(copies_for("a", &ids(&["a"]), 4, 1), BTreeSet::new());
    }
}
