//! The registry's request handling without Kafka or HTTP, for the fuzz targets in `fuzz/`.
//!
//! Each method takes what a REST request carries (path parameters and the raw body) and runs it
//! through the handlers' own body parsing, planning, compatibility checks and state. Planned
//! records are applied at once, one by one, as the store applies them once the broker has them.
//! Nothing here is used by the server.

use crate::api::{json_body, ConfigBody, SchemaBody};
use crate::error::Result;
use crate::log::Record;
use crate::model::{CompatibilityLevel, VersionSelector};
use crate::state::{Listing, Registration, State};

/// A registry state that requests change directly.
#[derive(Debug, Default)]
pub struct Harness {
    state: State,
}

impl Harness {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// `POST /subjects/{subject}/versions`: the schema's id.
    pub fn register(&mut self, subject: &str, body: &[u8]) -> Result<u32> {
        let new = json_body::<SchemaBody>(body)?.into_new_schema()?;
        match self.state.plan_register(subject, &new)? {
            Registration::Existing { id, .. } => Ok(id),
            Registration::New { id, record, .. } => {
                self.apply(&[record]);
                Ok(id)
            }
        }
    }

    /// `POST /subjects/{subject}`: the version that holds the schema.
    pub fn lookup(&self, subject: &str, body: &[u8], deleted: bool) -> Result<u32> {
        let new = json_body::<SchemaBody>(body)?.into_new_schema()?;
        Ok(self.state.lookup(subject, &new, deleted)?.version)
    }

    /// `POST /compatibility/subjects/{subject}/versions` (`version` `None`) or
    /// `.../versions/{version}`: the failed checks, empty when compatible.
    pub fn compatibility(
        &self,
        subject: &str,
        version: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<String>> {
        let selector = version.map(VersionSelector::parse).transpose()?;
        let new = json_body::<SchemaBody>(body)?.into_new_schema()?;
        let (_, messages) = self.state.test_compatibility(subject, selector, &new)?;
        Ok(messages)
    }

    /// `PUT /config` (`subject` `None`) or `PUT /config/{subject}`: the level set.
    pub fn set_config(&mut self, subject: Option<&str>, body: &[u8]) -> Result<CompatibilityLevel> {
        let level = json_body::<ConfigBody>(body)?.level()?;
        self.apply(&[State::plan_set_level(subject, level)]);
        Ok(level)
    }

    /// `DELETE /config` or `DELETE /config/{subject}`: the level that applied before.
    pub fn delete_config(&mut self, subject: Option<&str>) -> Result<CompatibilityLevel> {
        let (record, previous) = self.state.plan_delete_level(subject)?;
        self.apply(&[record]);
        Ok(previous)
    }

    /// `DELETE /subjects/{subject}`: the versions deleted.
    pub fn delete_subject(&mut self, subject: &str, permanent: bool) -> Result<Vec<u32>> {
        let (records, versions) = self.state.plan_delete_subject(subject, permanent)?;
        self.apply(&records);
        Ok(versions)
    }

    /// `DELETE /subjects/{subject}/versions/{version}`: the version deleted.
    pub fn delete_version(&mut self, subject: &str, version: &str, permanent: bool) -> Result<u32> {
        let selector = VersionSelector::parse(version)?;
        let (record, deleted) = self
            .state
            .plan_delete_version(subject, selector, permanent)?;
        self.apply(&[record]);
        Ok(deleted)
    }

    /// A record read from the `_schemas` topic (`value` `None` is a tombstone), applied as a
    /// restore applies it; `Err` for a record the store would skip.
    pub fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if let Some(record) = Record::decode(key, value)? {
            self.apply(&[record]);
        }
        Ok(())
    }

    /// Answers every read request about every subject and schema, as `GET`s would; returns how
    /// many answers were errors.
    pub fn read_all(&self) -> usize {
        let mut errors = 0;
        let mut count = |ok: bool| errors += usize::from(!ok);
        let listing = Listing {
            deleted: true,
            deleted_only: false,
        };
        for subject in self.state.subjects(listing, None) {
            let versions = self.state.versions(&subject, listing).unwrap_or_default();
            for version in versions {
                let selector = VersionSelector::Number(version);
                match self.state.version(&subject, selector, true) {
                    Ok(found) => {
                        count(self.state.schema_by_id(found.id).is_ok());
                        count(self.state.usages(found.id, true).is_ok());
                    }
                    Err(_) => count(false),
                }
                count(self.state.referenced_by(&subject, selector).is_ok());
            }
            count(
                self.state
                    .version(&subject, VersionSelector::Latest, false)
                    .is_ok(),
            );
            let _ = self.state.effective_level(&subject);
        }
        errors
    }

    fn apply(&mut self, records: &[Record]) {
        for record in records {
            self.state.apply(record);
            self.state.parse_pending();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"schema": "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"id\",\"type\":\"long\"}]}"}"#;

    #[test]
    fn requests_change_and_read_the_state() {
        let mut registry = Harness::new();
        assert_eq!(registry.register("r-value", V1.as_bytes()).unwrap(), 1);
        assert_eq!(registry.register("r-value", V1.as_bytes()).unwrap(), 1);
        assert_eq!(registry.lookup("r-value", V1.as_bytes(), false).unwrap(), 1);
        assert!(registry
            .compatibility("r-value", Some("latest"), V1.as_bytes())
            .unwrap()
            .is_empty());
        assert_eq!(
            registry
                .set_config(None, br#"{"compatibility": "full"}"#)
                .unwrap(),
            CompatibilityLevel::Full
        );
        assert!(registry.register("r-value", b"  ").is_err());
        assert_eq!(registry.read_all(), 0);
        assert_eq!(registry.delete_subject("r-value", false).unwrap(), vec![1]);
    }
}
