//! The registry's in-memory state, a pure function of the `_schemas` records applied so far.
//!
//! Requests are answered from here. A mutation is first *planned* against the state (which
//! validates it and yields the records to write), the records are written to Kafka, and only
//! then *applied*. Restoring after a restart applies the same records in the same order, so
//! the state after a restart is the state before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use apache_avro::Schema;
use tracing::warn;

use crate::compat;
use crate::error::{Error, Result};
use crate::log::{ConfigValue, DeleteSubjectValue, Record, SchemaValue};
use crate::model::{CompatibilityLevel, SchemaReference, SubjectVersion, VersionSelector};
use crate::schema::{self, ParsedSchema};

/// A schema as submitted by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewSchema {
    pub(crate) schema: String,
    pub(crate) schema_type: String,
    pub(crate) references: Vec<SchemaReference>,
}

/// Which versions or subjects a listing includes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Include soft-deleted ones too.
    pub(crate) deleted: bool,
    /// Only soft-deleted ones.
    pub(crate) deleted_only: bool,
}

/// The outcome of planning a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Registration {
    /// The subject already has this schema as a live version.
    Existing { id: u32, version: u32 },
    /// A new version, to be written as `record`.
    New {
        id: u32,
        version: u32,
        record: Record,
    },
}

/// A schema looked up by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaById {
    pub(crate) schema: String,
    pub(crate) schema_type: String,
    pub(crate) references: Vec<SchemaReference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: u32,
    deleted: bool,
}

#[derive(Debug)]
struct Stored {
    text: String,
    schema_type: String,
    references: Vec<SchemaReference>,
    /// `None` until parsed (parsing waits until a restore has read every record, because
    /// with a compacted topic a referenced schema may come after its referrer).
    parsed: Option<Result<ParsedSchema, String>>,
    /// How many subject versions use this id.
    uses: usize,
}

/// Subjects, versions, schema ids and compatibility configuration.
#[derive(Debug, Default)]
pub(crate) struct State {
    subjects: BTreeMap<String, BTreeMap<u32, Entry>>,
    schemas: BTreeMap<u32, Stored>,
    by_fingerprint: HashMap<String, u32>,
    global_level: Option<CompatibilityLevel>,
    subject_levels: BTreeMap<String, CompatibilityLevel>,
    /// Highest id ever seen, including ids of hard-deleted schemas, so ids are not reused.
    max_id: u32,
    unparsed: BTreeSet<u32>,
}

impl State {
    // ---- queries ----

    /// Subject names, sorted.
    pub(crate) fn subjects(&self, listing: Listing, prefix: Option<&str>) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(name, _)| prefix.is_none_or(|p| name.starts_with(p)))
            .filter(|(_, versions)| {
                let live = versions.values().any(|e| !e.deleted);
                if listing.deleted_only {
                    !live
                } else {
                    live || listing.deleted
                }
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Version numbers of a subject, ascending.
    pub(crate) fn versions(&self, subject: &str, listing: Listing) -> Result<Vec<u32>> {
        let versions = self.visible(subject, listing.deleted || listing.deleted_only)?;
        Ok(versions
            .into_iter()
            .filter(|(_, e)| !listing.deleted_only || e.deleted)
            .map(|(v, _)| v)
            .collect())
    }

    /// One version of a subject.
    pub(crate) fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let versions = self.visible(subject, include_deleted)?;
        let found = match selector {
            VersionSelector::Latest => versions.last().copied(),
            VersionSelector::Number(n) => versions.iter().find(|(v, _)| *v == n).copied(),
        };
        let (version, entry) = found.ok_or_else(|| Error::VersionNotFound {
            subject: subject.to_owned(),
            version: selector.to_string(),
        })?;
        self.subject_version(subject, version, entry)
    }

    /// The schema with this id.
    pub(crate) fn schema_by_id(&self, id: u32) -> Result<SchemaById> {
        let stored = self.stored(id)?;
        Ok(SchemaById {
            schema: stored.text.clone(),
            schema_type: stored.schema_type.clone(),
            references: stored.references.clone(),
        })
    }

    /// Every `(subject, version)` that uses this id.
    pub(crate) fn usages(&self, id: u32, include_deleted: bool) -> Result<Vec<(String, u32)>> {
        self.stored(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |(_, e)| e.id == id && (include_deleted || !e.deleted))
                    .map(move |(v, _)| (subject.clone(), *v))
            })
            .collect())
    }

    /// Ids of the schemas that import this subject version.
    pub(crate) fn referenced_by(
        &self,
        subject: &str,
        selector: VersionSelector,
    ) -> Result<Vec<u32>> {
        let found = self.version(subject, selector, false)?;
        let mut ids: Vec<u32> = self
            .referrers(subject, found.version, true)
            .into_iter()
            .map(|(_, _, id)| id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// The version of `subject` that holds this schema.
    pub(crate) fn lookup(
        &self,
        subject: &str,
        new: &NewSchema,
        include_deleted: bool,
    ) -> Result<SubjectVersion> {
        let parsed = self.prepare(new)?;
        let versions = self.visible(subject, include_deleted)?;
        let id = self.by_fingerprint.get(&parsed.fingerprint);
        let (version, entry) = versions
            .into_iter()
            .rev()
            .find(|(_, e)| Some(&e.id) == id)
            .ok_or_else(|| Error::SchemaNotRegistered {
                subject: subject.to_owned(),
            })?;
        self.subject_version(subject, version, entry)
    }

    /// Checks `new` against one version, the latest, or (`None`) what the level asks for.
    ///
    /// Returns the level used and the failures (empty when compatible).
    pub(crate) fn test_compatibility(
        &self,
        subject: &str,
        selector: Option<VersionSelector>,
        new: &NewSchema,
    ) -> Result<(CompatibilityLevel, Vec<String>)> {
        let parsed = self.prepare(new)?;
        let level = self.effective_level(subject);
        let live = self.live(subject);
        let targets = match selector {
            None => live,
            Some(VersionSelector::Latest) => live.last().copied().into_iter().collect(),
            Some(VersionSelector::Number(n)) => {
                self.visible(subject, false)?;
                let found = live.iter().find(|(v, _)| *v == n).copied();
                vec![found.ok_or_else(|| Error::VersionNotFound {
                    subject: subject.to_owned(),
                    version: n.to_string(),
                })?]
            }
        };
        let previous = self.parsed_versions(subject, &targets)?;
        Ok((level, compat::check(level, &parsed.resolved, &previous)))
    }

    /// The global compatibility level.
    pub(crate) fn global_level(&self) -> CompatibilityLevel {
        self.global_level.unwrap_or_default()
    }

    /// The subject's own compatibility level, if it has one.
    pub(crate) fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    /// The level that applies to the subject.
    pub(crate) fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject)
            .unwrap_or_else(|| self.global_level())
    }

    // ---- planning ----

    /// Plans registering `new` under `subject`: validates it and checks compatibility.
    pub(crate) fn plan_register(&self, subject: &str, new: &NewSchema) -> Result<Registration> {
        let parsed = self.prepare(new)?;
        let existing_id = self.by_fingerprint.get(&parsed.fingerprint).copied();
        let live = self.live(subject);
        if let Some(id) = existing_id {
            if let Some((version, _)) = live.iter().rev().find(|(_, e)| e.id == id) {
                return Ok(Registration::Existing {
                    id,
                    version: *version,
                });
            }
        }
        let level = self.effective_level(subject);
        let previous = self.parsed_versions(subject, &live)?;
        let messages = compat::check(level, &parsed.resolved, &previous);
        if !messages.is_empty() {
            return Err(Error::Incompatible {
                subject: subject.to_owned(),
                level,
                messages,
            });
        }
        let (id, text) = match existing_id {
            // Reuse the stored text so that an id always maps to one exact schema string.
            Some(id) => (id, self.stored(id)?.text.clone()),
            None if self.max_id >= i32::MAX as u32 => return Err(Error::IdsExhausted),
            None => (self.max_id + 1, new.schema.clone()),
        };
        let version = self
            .subjects
            .get(subject)
            .and_then(|versions| versions.keys().next_back())
            .map_or(1, |v| v + 1);
        Ok(Registration::New {
            id,
            version,
            record: Record::Schema {
                subject: subject.to_owned(),
                version,
                value: Some(SchemaValue {
                    subject: subject.to_owned(),
                    version,
                    id,
                    schema: text,
                    schema_type: crate::model::AVRO.to_owned(),
                    references: new.references.clone(),
                    deleted: false,
                }),
            },
        })
    }

    /// Plans setting the global (`None`) or a subject's compatibility level.
    pub(crate) fn plan_set_level(subject: Option<&str>, level: CompatibilityLevel) -> Record {
        Record::Config {
            subject: subject.map(str::to_owned),
            value: Some(ConfigValue {
                compatibility_level: level,
            }),
        }
    }

    /// Plans removing a subject's level (or resetting the global one); returns the old level.
    pub(crate) fn plan_delete_level(
        &self,
        subject: Option<&str>,
    ) -> Result<(Record, CompatibilityLevel)> {
        let previous = match subject {
            None => self.global_level(),
            Some(s) => self
                .subject_level(s)
                .ok_or_else(|| Error::SubjectConfigNotFound {
                    subject: s.to_owned(),
                })?,
        };
        let record = Record::Config {
            subject: subject.map(str::to_owned),
            value: None,
        };
        Ok((record, previous))
    }

    /// Plans deleting a subject; returns the records and the versions deleted.
    ///
    /// A soft delete hides the live versions (one `DELETE_SUBJECT` record) and drops the
    /// subject's level; a permanent delete removes soft-deleted versions for good.
    pub(crate) fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<Record>, Vec<u32>)> {
        let all = self.visible(subject, true)?;
        let live: Vec<u32> = all
            .iter()
            .filter(|(_, e)| !e.deleted)
            .map(|(v, _)| *v)
            .collect();
        if permanent {
            if !live.is_empty() {
                return Err(Error::SubjectNotSoftDeleted {
                    subject: subject.to_owned(),
                });
            }
            let versions: Vec<u32> = all.iter().map(|(v, _)| *v).collect();
            for version in &versions {
                self.refuse_if_referenced(subject, *version, false)?;
            }
            let records = versions
                .iter()
                .map(|version| Record::Schema {
                    subject: subject.to_owned(),
                    version: *version,
                    value: None,
                })
                .collect();
            return Ok((records, versions));
        }
        let Some(&latest) = live.last() else {
            return Err(Error::SubjectSoftDeleted {
                subject: subject.to_owned(),
            });
        };
        for version in &live {
            self.refuse_if_referenced(subject, *version, true)?;
        }
        let mut records = vec![Record::DeleteSubject {
            subject: subject.to_owned(),
            value: Some(DeleteSubjectValue {
                subject: subject.to_owned(),
                version: latest,
            }),
        }];
        if self.subject_levels.contains_key(subject) {
            records.push(Record::Config {
                subject: Some(subject.to_owned()),
                value: None,
            });
        }
        Ok((records, live))
    }

    /// Plans deleting one version; returns the record and the version number.
    pub(crate) fn plan_delete_version(
        &self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<(Record, u32)> {
        let all = self.visible(subject, true)?;
        let found = match selector {
            VersionSelector::Latest if permanent => all.last().copied(),
            VersionSelector::Latest => {
                if all.iter().all(|(_, e)| e.deleted) {
                    return Err(Error::SubjectSoftDeleted {
                        subject: subject.to_owned(),
                    });
                }
                all.iter().rev().find(|(_, e)| !e.deleted).copied()
            }
            VersionSelector::Number(n) => all.iter().find(|(v, _)| *v == n).copied(),
        };
        let (version, entry) = found.ok_or_else(|| Error::VersionNotFound {
            subject: subject.to_owned(),
            version: selector.to_string(),
        })?;
        match (permanent, entry.deleted) {
            (false, true) => Err(Error::VersionSoftDeleted {
                subject: subject.to_owned(),
                version,
            }),
            (true, false) => Err(Error::VersionNotSoftDeleted {
                subject: subject.to_owned(),
                version,
            }),
            (false, false) => {
                self.refuse_if_referenced(subject, version, true)?;
                let stored = self.stored(entry.id)?;
                let record = Record::Schema {
                    subject: subject.to_owned(),
                    version,
                    value: Some(SchemaValue {
                        subject: subject.to_owned(),
                        version,
                        id: entry.id,
                        schema: stored.text.clone(),
                        schema_type: stored.schema_type.clone(),
                        references: stored.references.clone(),
                        deleted: true,
                    }),
                };
                Ok((record, version))
            }
            (true, true) => {
                self.refuse_if_referenced(subject, version, false)?;
                let record = Record::Schema {
                    subject: subject.to_owned(),
                    version,
                    value: None,
                };
                Ok((record, version))
            }
        }
    }

    // ---- applying ----

    /// Applies one record. Call [`State::parse_pending`] afterwards (once per batch).
    pub(crate) fn apply(&mut self, record: &Record) {
        match record {
            Record::Schema {
                subject,
                version,
                value: Some(value),
            } => self.put_version(subject, *version, value),
            Record::Schema {
                subject,
                version,
                value: None,
            } => self.remove_version(subject, *version),
            Record::Config {
                subject: None,
                value,
            } => self.global_level = value.as_ref().map(|v| v.compatibility_level),
            Record::Config {
                subject: Some(subject),
                value: Some(value),
            } => {
                self.subject_levels
                    .insert(subject.clone(), value.compatibility_level);
            }
            Record::Config {
                subject: Some(subject),
                value: None,
            } => {
                self.subject_levels.remove(subject);
            }
            Record::DeleteSubject {
                subject,
                value: Some(value),
            } => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    for (_, entry) in versions.range_mut(..=value.version) {
                        entry.deleted = true;
                    }
                }
            }
            // A removed deletion marker changes nothing: the versions it hid stay hidden.
            Record::DeleteSubject { value: None, .. } => {}
        }
    }

    /// Parses the schemas added since the last call.
    pub(crate) fn parse_pending(&mut self) {
        let pending = std::mem::take(&mut self.unparsed);
        for id in pending {
            let Some(stored) = self.schemas.get(&id) else {
                continue;
            };
            let result = self
                .imported_texts(&stored.references)
                .map_err(|reason| Error::InvalidSchema { reason })
                .and_then(|imported| schema::parse(&stored.text, &stored.references, &imported))
                .map_err(|e| e.to_string());
            match &result {
                Ok(parsed) => {
                    self.by_fingerprint
                        .entry(parsed.fingerprint.clone())
                        .or_insert(id);
                }
                Err(reason) => warn!(id, %reason, "stored schema cannot be parsed"),
            }
            if let Some(stored) = self.schemas.get_mut(&id) {
                stored.parsed = Some(result);
            }
        }
    }

    fn put_version(&mut self, subject: &str, version: u32, value: &SchemaValue) {
        if value.subject != subject || value.version != version {
            warn!(
                subject,
                version,
                value.subject,
                value.version,
                "schema record value disagrees with its key; the key wins"
            );
        }
        self.max_id = self.max_id.max(value.id);
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        let previous = versions.insert(
            version,
            Entry {
                id: value.id,
                deleted: value.deleted,
            },
        );
        match previous {
            Some(old) if old.id == value.id => {}
            Some(old) => {
                self.release(old.id);
                self.retain(value);
            }
            None => self.retain(value),
        }
    }

    fn remove_version(&mut self, subject: &str, version: u32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let removed = versions.remove(&version);
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        if let Some(entry) = removed {
            self.release(entry.id);
        }
    }

    fn retain(&mut self, value: &SchemaValue) {
        if let Some(stored) = self.schemas.get_mut(&value.id) {
            stored.uses += 1;
            if stored.text != value.schema {
                warn!(
                    id = value.id,
                    subject = value.subject,
                    version = value.version,
                    "schema record reuses an id with a different schema text; the first text wins"
                );
            }
            return;
        }
        self.schemas.insert(
            value.id,
            Stored {
                text: value.schema.clone(),
                schema_type: value.schema_type.clone(),
                references: value.references.clone(),
                parsed: None,
                uses: 1,
            },
        );
        self.unparsed.insert(value.id);
    }

    fn release(&mut self, id: u32) {
        let Some(stored) = self.schemas.get_mut(&id) else {
            return;
        };
        stored.uses = stored.uses.saturating_sub(1);
        if stored.uses > 0 {
            return;
        }
        if let Some(Some(Ok(parsed))) = self.schemas.remove(&id).map(|s| s.parsed) {
            if self.by_fingerprint.get(&parsed.fingerprint) == Some(&id) {
                self.by_fingerprint.remove(&parsed.fingerprint);
            }
        }
        self.unparsed.remove(&id);
    }

    // ---- helpers ----

    /// Validates and parses a submitted schema, resolving its references.
    fn prepare(&self, new: &NewSchema) -> Result<ParsedSchema> {
        schema::check_schema_type(&new.schema_type)?;
        let imported = self
            .imported_texts(&new.references)
            .map_err(|reason| Error::InvalidSchema { reason })?;
        schema::parse(&new.schema, &new.references, &imported)
    }

    /// The texts of every schema reachable through `references`.
    fn imported_texts(&self, references: &[SchemaReference]) -> Result<Vec<String>, String> {
        let mut seen = BTreeSet::new();
        let mut texts = Vec::new();
        let mut stack: Vec<&SchemaReference> = references.iter().collect();
        while let Some(reference) = stack.pop() {
            if !seen.insert((reference.subject.as_str(), reference.version)) {
                continue;
            }
            let stored = self
                .subjects
                .get(&reference.subject)
                .and_then(|versions| versions.get(&reference.version))
                .and_then(|entry| self.schemas.get(&entry.id))
                .ok_or_else(|| {
                    format!(
                        "reference '{}' points to subject '{}' version {}, which does not \
                         exist; register that schema first",
                        reference.name, reference.subject, reference.version
                    )
                })?;
            texts.push(stored.text.clone());
            stack.extend(stored.references.iter());
        }
        Ok(texts)
    }

    /// The subject's versions, ascending; 40401 when none is visible.
    fn visible(&self, subject: &str, include_deleted: bool) -> Result<Vec<(u32, Entry)>> {
        let versions: Vec<(u32, Entry)> = self
            .subjects
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|(_, e)| include_deleted || !e.deleted)
            .map(|(v, e)| (*v, *e))
            .collect();
        if versions.is_empty() {
            return Err(Error::SubjectNotFound {
                subject: subject.to_owned(),
            });
        }
        Ok(versions)
    }

    /// The subject's live versions, ascending (empty for an unknown subject).
    fn live(&self, subject: &str) -> Vec<(u32, Entry)> {
        self.visible(subject, false).unwrap_or_default()
    }

    fn stored(&self, id: u32) -> Result<&Stored> {
        self.schemas
            .get(&id)
            .ok_or_else(|| Error::SchemaIdNotFound { id: id.to_string() })
    }

    fn subject_version(&self, subject: &str, version: u32, entry: Entry) -> Result<SubjectVersion> {
        let stored = self.stored(entry.id)?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version,
            id: entry.id,
            schema: stored.text.clone(),
            references: stored.references.clone(),
            deleted: entry.deleted,
        })
    }

    fn parsed_versions(
        &self,
        subject: &str,
        versions: &[(u32, Entry)],
    ) -> Result<Vec<(u32, &Schema)>> {
        versions
            .iter()
            .map(|(version, entry)| {
                let stored = self.stored(entry.id)?;
                match &stored.parsed {
                    Some(Ok(parsed)) => Ok((*version, &parsed.resolved)),
                    Some(Err(reason)) => Err(Error::UnreadableVersion {
                        subject: subject.to_owned(),
                        version: *version,
                        reason: reason.clone(),
                    }),
                    None => Err(Error::UnreadableVersion {
                        subject: subject.to_owned(),
                        version: *version,
                        reason: "the schema has not been parsed yet".to_owned(),
                    }),
                }
            })
            .collect()
    }

    /// `(subject, version, id)` of the versions whose schema imports `subject` `version`.
    fn referrers(&self, subject: &str, version: u32, live_only: bool) -> Vec<(String, u32, u32)> {
        self.subjects
            .iter()
            .flat_map(|(s, versions)| versions.iter().map(move |(v, e)| (s, *v, *e)))
            .filter(|(_, _, e)| !live_only || !e.deleted)
            .filter(|(_, _, e)| {
                self.schemas.get(&e.id).is_some_and(|stored| {
                    stored
                        .references
                        .iter()
                        .any(|r| r.subject == subject && r.version == version)
                })
            })
            .map(|(s, v, e)| (s.clone(), v, e.id))
            .collect()
    }

    fn refuse_if_referenced(&self, subject: &str, version: u32, live_only: bool) -> Result<()> {
        let referrers = self.referrers(subject, version, live_only);
        if referrers.is_empty() {
            return Ok(());
        }
        Err(Error::ReferenceExists {
            subject: subject.to_owned(),
            version,
            referrers: referrers
                .into_iter()
                .map(|(s, v, _)| format!("subject '{s}' version {v}"))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests;
