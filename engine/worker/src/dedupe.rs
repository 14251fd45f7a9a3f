//! Bounded memory of answered commands, keyed by idempotency key.

use std::collections::{HashMap, VecDeque};

use sagaflow_avro::Reply;

/// Remembers the replies to the last `capacity` commands.
#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    replies: HashMap<String, Reply>,
    order: VecDeque<String>,
}

impl Dedupe {
    /// A memory of `capacity` replies.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            replies: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The reply already given for `key`.
    pub fn get(&self, key: &str) -> Option<&Reply> {
        self.replies.get(key)
    }

    /// Remembers the reply for `key`, forgetting the oldest one when full.
    pub fn insert(&mut self, key: String, reply: Reply) {
        if self.replies.insert(key.clone(), reply).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                let _ = self.replies.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sagaflow_avro::{Phase, ReplyStatus};

    fn reply(id: &str) -> Reply {
        Reply {
            message_id: id.into(),
            saga_id: "s".into(),
            step: "a".into(),
            phase: Phase::Forward,
            attempt: 1,
            idempotency_key: id.into(),
            status: ReplyStatus::Success,
            output_json: None,
            error: None,
            replied_at: 0,
        }
    }

    #[test]
    fn forgets_the_oldest_when_full() {
        let mut d = Dedupe::new(2);
        d.insert("a".into(), reply("a"));
        d.insert("b".into(), reply("b"));
        d.insert("c".into(), reply("c"));
        assert!(d.get("a").is_none());
        assert_eq!(d.get("c").unwrap().message_id, "c");
    }
}
