//! Parking: records held on a partition until their time (delayed deliveries, buffered
//! signals, await subscriptions), staged like saga states and woken by the timer wheel.

use super::*;

impl Task {
    /// Stages a parked record (`None` deletes it).
    pub(super) fn stage_parked(&mut self, key: &str, value: Option<Parked>) -> Result<()> {
        let bytes = match &value {
            Some(p) => Some(sagaflow_avro::internal::encode(p)?),
            None => None,
        };
        if let Some(due) = value.as_ref().and_then(parked::due) {
            self.wheel
                .offer(due, Target::Parked(key.to_string()).encode());
        }
        if key.starts_with(parked::HELD) {
            self.count_held(key, value.is_some());
        }
        self.stage_entry(key.to_string(), bytes);
        let _ = self.parked.insert(
            key.to_string(),
            Cached {
                state: value,
                seq: self.next_seq,
            },
        );
        Ok(())
    }

    pub(super) fn parked(&mut self, env: &TaskEnv<'_>, key: &str) -> Result<Option<Parked>> {
        if let Some(c) = self.parked.get(key) {
            return Ok(c.state.clone());
        }
        match env.store.state(self.partition, key)? {
            Some(bytes) => Ok(Some(env.codec.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The first `limit` parked records under `prefix`, in key order, speculative changes
    /// included.
    pub(super) fn parked_with_prefix(
        &mut self,
        env: &TaskEnv<'_>,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Parked)>> {
        let speculative: Vec<(&String, &Cached<Option<Parked>>)> = self
            .parked
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .collect();
        // Each speculative deletion may hide one stored record among the first `limit`.
        let deleted = speculative
            .iter()
            .filter(|(_, c)| c.state.is_none())
            .count();
        let mut found: BTreeMap<String, Option<Parked>> = BTreeMap::new();
        for (key, bytes) in
            env.store
                .states_with_prefix(self.partition, prefix, limit.saturating_add(deleted))?
        {
            let _ = found.insert(key, Some(env.codec.decode(&bytes)?));
        }
        for (key, c) in speculative {
            let _ = found.insert(key.clone(), c.state.clone());
        }
        Ok(found
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .take(limit)
            .collect())
    }

    /// A parked record's time came (or, for a delayed record, is `ahead` ms away): deliver a
    /// delayed record, or dead-letter a signal no saga claimed. Returns whether anything
    /// changed.
    pub(super) fn fire_parked(
        &mut self,
        env: &TaskEnv<'_>,
        now: i64,
        ahead: i64,
        key: &str,
    ) -> Result<bool> {
        let Some(record) = self.parked(env, key)? else {
            return Ok(false);
        };
        let ready = match record.kind {
            sagaflow_avro::ParkedKind::Delayed => now.saturating_add(ahead),
            _ => now,
        };
        if parked::due(&record).is_none_or(|due| due > ready) {
            return Ok(false);
        }
        match record.kind {
            sagaflow_avro::ParkedKind::Delayed => {
                env.metrics
                    .delayed_delivered_total
                    .fetch_add(1, Ordering::Relaxed);
                self.push_output(parked::delivery(&record));
            }
            sagaflow_avro::ParkedKind::Signal if parked::is_delivered_signal(&record) => {}
            sagaflow_avro::ParkedKind::Signal => {
                env.metrics
                    .signals_expired_total
                    .fetch_add(1, Ordering::Relaxed);
                env.metrics.dead_letter("signal-expired");
                self.push_output(parked::expired_signal(
                    &record,
                    &env.topics.dlq,
                    self.partition,
                ));
            }
            sagaflow_avro::ParkedKind::Await
            | sagaflow_avro::ParkedKind::Held
            | sagaflow_avro::ParkedKind::Sent => return Ok(false),
        }
        self.stage_parked(key, None)?;
        Ok(true)
    }
}
