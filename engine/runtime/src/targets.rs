//! Which topics exist, for delayed records: the relay retries a delivery until the broker takes
//! it, so a record aimed at a missing topic would hold up its partition for good. Requests are
//! checked when they arrive instead, and dead-lettered if their target does not exist.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::warn;

/// How long a "missing" answer is trusted before the broker is asked again.
const RECHECK_MISSING: Duration = Duration::from_secs(5);

/// Topic existence, cached.
pub(crate) struct Targets {
    reader: BaseConsumer,
    known: RefCell<HashMap<String, Option<Instant>>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets").finish_non_exhaustive()
    }
}

impl Targets {
    pub(crate) fn new(reader: BaseConsumer) -> Self {
        Self {
            reader,
            known: RefCell::new(HashMap::new()),
        }
    }

    /// Whether `topic` exists. An existing topic is remembered for good; a missing one for a
    /// few seconds. When the broker cannot be asked, the topic is assumed to exist (the relay
    /// then retries as for any other output) rather than dead-lettering a good request.
    pub(crate) fn exists(&self, topic: &str) -> bool {
        match self.known.borrow().get(topic) {
            Some(None) => return true,
            Some(Some(checked)) if checked.elapsed() < RECHECK_MISSING => return false,
            _ => {}
        }
        let exists = match self
            .reader
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(metadata) => metadata
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()),
            Err(e) => {
                warn!(topic, error = %e, "cannot check whether a delay target exists; assuming it does");
                return true;
            }
        };
        let _ = self
            .known
            .borrow_mut()
            .insert(topic.to_string(), (!exists).then(Instant::now));
        exists
    }
}
