//! Deployed definition versions are immutable.
//!
//! Running sagas are pinned to their definition version, and their state is laid out by its
//! steps. Editing the YAML of a deployed version would make the decision apply inputs to the
//! wrong steps, so the first body deployed under each `name@version` is recorded (its
//! fingerprint) in the compacted `<group>.definitions` topic, and an engine whose YAML differs
//! refuses to start.

use std::collections::BTreeMap;

use rdkafka::message::Message as _;
use sagaflow_definition::Registry;
use sagaflow_kafka::KafkaSettings;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{Error, Result};

/// What the topic records per `name@version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deployed {
    fingerprint: String,
    deployed_at: i64,
    writer: String,
}

/// Records the definitions deployed for the first time, and refuses any whose body differs from
/// the one first deployed under the same name and version.
pub(crate) fn check_immutable(
    kafka: &KafkaSettings,
    topic: &str,
    definitions: &Registry,
    definitions_dir: &str,
) -> Result<()> {
    let reader = crate::kafka::reader(kafka)?;
    let (_, high) = crate::kafka::watermarks(&reader, topic, 0)?;
    // The first record of a key is the deployed body; a later different one can only come from
    // an engine that raced this check, and loses.
    let mut recorded: BTreeMap<String, Deployed> = BTreeMap::new();
    crate::kafka::read_range(&reader, topic, 0, 0, high, |m| {
        let offset = m.offset();
        let (Some(key), Some(value)) = (m.key(), m.payload()) else {
            return Ok(());
        };
        let key = String::from_utf8_lossy(key).into_owned();
        let deployed: Deployed = serde_json::from_slice(value).map_err(|e| Error::Journal {
            topic: topic.to_string(),
            partition: 0,
            offset,
            message: format!("unreadable definition record for {key}: {e}"),
        })?;
        let _ = recorded.entry(key).or_insert(deployed);
        Ok(())
    })?;

    let mut changed = Vec::new();
    let mut new = Vec::new();
    for def in definitions.iter() {
        match recorded.get(&def.key()) {
            Some(d) if d.fingerprint == def.fingerprint => {}
            Some(d) => changed.push(format!(
                "{} in {definitions_dir} differs from the body first deployed at {} (epoch ms) by {} (fingerprint {} now, {} deployed)",
                def.key(),
                d.deployed_at,
                d.writer,
                def.fingerprint,
                d.fingerprint
            )),
            None => new.push(def.clone()),
        }
    }
    if !changed.is_empty() {
        return Err(Error::Definitions(format!(
            "{}\na deployed definition version is immutable: sagas that run on it are laid out by its steps. Restore the deployed body, or deploy the change under a new version number (`version:`); running sagas keep their version",
            changed.join("\n")
        )));
    }
    if new.is_empty() {
        return Ok(());
    }
    let producer = crate::kafka::sync_producer(kafka)?;
    let writer = std::env::var("HOSTNAME").unwrap_or_else(|_| "engine".into());
    for def in new {
        let record = Deployed {
            fingerprint: def.fingerprint.clone(),
            deployed_at: sagaflow_avro::now_ms(),
            writer: format!("{writer}/{}", std::process::id()),
        };
        let value = serde_json::to_vec(&record).expect("a record of strings and numbers");
        let _ = crate::kafka::write_and_locate(
            &producer,
            topic,
            0,
            def.key().as_bytes(),
            Some(&value),
        )?;
        info!(definition = %def.key(), fingerprint = %def.fingerprint, "definition version deployed");
    }
    Ok(())
}
