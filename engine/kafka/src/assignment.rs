//! What DescribeGroups says a classic consumer group gave each member.

use std::collections::{BTreeMap, BTreeSet};

/// Decodes a classic consumer group member's assignment (Kafka's `ConsumerProtocolAssignment`,
/// which every version so far begins the same way): the partitions of each topic. Empty bytes,
/// which a member has while the group rebalances, decode to no topics; `None` means the bytes
/// are not such an assignment (another protocol type, or cut short).
pub fn member_assignment(bytes: &[u8]) -> Option<BTreeMap<String, BTreeSet<i32>>> {
    let mut out = BTreeMap::new();
    if bytes.is_empty() {
        return Some(out);
    }
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let topics = r.i32()?;
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        let count = r.i32()?;
        let mut partitions = BTreeSet::new();
        for _ in 0..count.max(0) {
            let _ = partitions.insert(r.i32()?);
        }
        out.entry(topic)
            .or_insert_with(BTreeSet::new)
            .extend(partitions);
    }
    // The user data and any later fields follow; nothing here needs them.
    Some(out)
}

/// Big-endian reads that fail rather than run past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment as the Java client and librdkafka encode it.
    fn encode(version: i16, topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        // Null user data.
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn an_assignment_decodes_to_each_topics_partitions() {
        let bytes = encode(3, &[("g.starts", &[2, 0]), ("g.replies", &[0, 2])]);
        let got = member_assignment(&bytes).expect("decodes");
        assert_eq!(got.len(), 2);
        assert_eq!(got["g.starts"], BTreeSet::from([0, 2]));
        assert_eq!(got["g.replies"], BTreeSet::from([0, 2]));
        assert!(!got.contains_key("g."), "a prefix is another topic");
    }

    #[test]
    fn empty_bytes_are_no_topics_and_cut_bytes_are_not_an_assignment() {
        assert_eq!(member_assignment(&[]), Some(BTreeMap::new()));
        let bytes = encode(0, &[("t.a", &[1, 2, 3])]);
        assert!(member_assignment(&bytes[..bytes.len() - 9]).is_none());
        assert!(member_assignment(&[0, 0, 0, 0, 0, 1, 0, 9, b't']).is_none());
    }
}
