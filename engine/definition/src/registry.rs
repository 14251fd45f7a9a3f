//! Definitions by name and version.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::Definition;
use crate::{Error, Result};

/// Every known definition, by name and then version.
///
/// Definitions are shared behind `Arc` because running instances keep using
/// the version they started with.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_name: BTreeMap<String, BTreeMap<u32, Arc<Definition>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a definition. Re-adding an identical one is a no-op; a different
    /// definition under an existing `name@version` is refused, because instances
    /// pinned to that version would silently change behaviour.
    pub fn insert(&mut self, definition: Definition) -> Result<()> {
        let versions = self.by_name.entry(definition.name.clone()).or_default();
        match versions.get(&definition.version) {
            Some(existing) if **existing == definition => Ok(()),
            Some(_) => Err(Error::Conflict {
                key: definition.key(),
            }),
            None => {
                let _ = versions.insert(definition.version, Arc::new(definition));
                Ok(())
            }
        }
    }

    /// The definition `name@version`.
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<Definition>> {
        self.by_name.get(name)?.get(&version)
    }

    /// The highest version of `name`, which new instances start on.
    pub fn latest(&self, name: &str) -> Option<&Arc<Definition>> {
        self.by_name.get(name)?.values().next_back()
    }

    /// All definitions, ordered by name and then version.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Definition>> + '_ {
        self.by_name.values().flat_map(BTreeMap::values)
    }

    /// Number of definitions (all versions counted).
    pub fn len(&self) -> usize {
        self.by_name.values().map(BTreeMap::len).sum()
    }

    /// Whether the registry holds no definition.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every participant command topic a step's command or compensation names, sorted.
    pub fn command_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .iter()
            .flat_map(|d| {
                d.all_steps().flat_map(|s| {
                    s.command()
                        .map(|c| c.topic.clone())
                        .into_iter()
                        .chain(s.compensation.as_ref().map(|c| c.topic.clone()))
                })
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(name: &str, version: u32, topic: &str) -> Definition {
        let yaml = format!(
            "name: {name}\nversion: {version}\nsteps:\n  - name: a\n    command: {{topic: {topic}, type: do}}\n"
        );
        Definition::parse("test.yaml", &yaml).unwrap()
    }

    #[test]
    fn versions_are_kept_apart_and_latest_is_highest() {
        let mut registry = Registry::new();
        assert!(registry.is_empty());
        registry.insert(definition("trip", 2, "t2")).unwrap();
        registry.insert(definition("trip", 10, "t10")).unwrap();
        registry.insert(definition("trip", 1, "t1")).unwrap();
        registry.insert(definition("bench", 1, "b1")).unwrap();
        assert_eq!(registry.len(), 4);
        assert_eq!(registry.command_topics(), ["b1", "t1", "t10", "t2"]);
        assert_eq!(
            registry.get("trip", 2).unwrap().steps[0]
                .command()
                .unwrap()
                .topic,
            "t2"
        );
        assert!(registry.get("trip", 3).is_none());
        assert!(registry.get("nope", 1).is_none());
        assert_eq!(registry.latest("trip").unwrap().version, 10);
        assert!(registry.latest("nope").is_none());
        let keys: Vec<String> = registry.iter().map(|d| d.key()).collect();
        assert_eq!(keys, ["bench@1", "trip@1", "trip@2", "trip@10"]);
    }

    #[test]
    fn identical_duplicates_are_accepted_and_different_ones_refused() {
        let mut registry = Registry::new();
        registry.insert(definition("trip", 1, "a")).unwrap();
        registry.insert(definition("trip", 1, "a")).unwrap();
        assert_eq!(registry.len(), 1);
        let error = registry.insert(definition("trip", 1, "b")).unwrap_err();
        assert!(
            matches!(&error, Error::Conflict { key } if key == "trip@1"),
            "{error:?}"
        );
        // The original stays in place.
        assert_eq!(
            registry.get("trip", 1).unwrap().steps[0]
                .command()
                .unwrap()
                .topic,
            "a"
        );
    }
}
