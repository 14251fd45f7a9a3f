//! Bounded memory of answered commands, keyed by idempotency key.

use std::collections::{HashMap, HashSet, VecDeque};

use sagaflow_avro::Reply;

/// Remembers the replies to the last `capacity` commands, and which ones are being handled.
#[derive(Debug)]
pub struct Dedupe {
    capacity: usize,
    replies: HashMap<String, Reply>,
    order: VecDeque<String>,
    running: HashSet<String>,
}

/// What to do with a command, by its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Answered before: send this reply again.
    Answered(Reply),
    /// Another copy is being handled right now: wait for its reply.
    Running,
    /// New: handle it, then call [`Dedupe::finish`].
    Claimed,
}

impl Dedupe {
    /// A memory of `capacity` replies.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            replies: HashMap::new(),
            order: VecDeque::new(),
            running: HashSet::new(),
        }
    }

    /// The reply already given for `key`.
    pub fn get(&self, key: &str) -> Option<&Reply> {
        self.replies.get(key)
    }

    /// Claims `key` for handling unless it was answered or is being handled.
    pub fn claim(&mut self, key: &str) -> Claim {
        if let Some(reply) = self.replies.get(key) {
            return Claim::Answered(reply.clone());
        }
        if self.running.insert(key.to_string()) {
            Claim::Claimed
        } else {
            Claim::Running
        }
    }

    /// Ends the handling of a claimed `key`: `Some` remembers the reply, `None` (a retryable
    /// failure, which changed nothing) lets the next copy run again.
    pub fn finish(&mut self, key: &str, reply: Option<Reply>) {
        let _ = self.running.remove(key);
        if let Some(reply) = reply {
            self.insert(key.to_string(), reply);
        }
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

    #[test]
    fn a_copy_that_arrives_while_the_first_runs_waits_for_it() {
        let mut d = Dedupe::new(10);
        assert_eq!(d.claim("k"), Claim::Claimed);
        assert_eq!(d.claim("k"), Claim::Running);
        d.finish("k", Some(reply("k")));
        assert_eq!(d.claim("k"), Claim::Answered(reply("k")));
        // A retryable failure is not remembered: the next copy runs.
        assert_eq!(d.claim("r"), Claim::Claimed);
        d.finish("r", None);
        assert_eq!(d.claim("r"), Claim::Claimed);
    }
}
