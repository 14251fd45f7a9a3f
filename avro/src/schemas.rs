//! The embedded `.avsc` files, parsed once.

use std::sync::OnceLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;

use crate::error::{Error, Result};

/// One embedded schema file.
pub struct SchemaFile {
    /// File name under `avro/schemas/`.
    pub file: &'static str,
    /// Full record name, e.g. `io.sagaflow.Command`.
    pub full_name: &'static str,
    /// The JSON text.
    pub text: &'static str,
    parsed: OnceLock<Schema>,
    /// Its CRC-64-AVRO fingerprint, computed once: every internal record carries it.
    fingerprint: OnceLock<[u8; 8]>,
    /// A writer and a reader for it, built once: building one resolves the whole schema, which
    /// cost more than encoding a record.
    writer: OnceLock<GenericDatumWriter<'static>>,
    reader: OnceLock<GenericDatumReader<'static>>,
}

impl std::fmt::Debug for SchemaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaFile")
            .field("file", &self.file)
            .field("full_name", &self.full_name)
            .finish_non_exhaustive()
    }
}

impl SchemaFile {
    const fn new(file: &'static str, full_name: &'static str, text: &'static str) -> Self {
        Self {
            file,
            full_name,
            text,
            parsed: OnceLock::new(),
            fingerprint: OnceLock::new(),
            writer: OnceLock::new(),
            reader: OnceLock::new(),
        }
    }

    /// The parsed schema.
    pub fn schema(&self) -> Result<&Schema> {
        if let Some(schema) = self.parsed.get() {
            return Ok(schema);
        }
        let schema = Schema::parse_str(self.text).map_err(|e| self.invalid(e))?;
        Ok(self.parsed.get_or_init(|| schema))
    }

    /// The fingerprint of the parsed schema, as single-object encoding writes it.
    pub fn fingerprint(&self) -> Result<[u8; 8]> {
        if let Some(print) = self.fingerprint.get() {
            return Ok(*print);
        }
        let print = crate::internal::fingerprint(self.schema()?);
        Ok(*self.fingerprint.get_or_init(|| print))
    }

    /// A datum writer for this schema.
    pub(crate) fn writer(&'static self) -> Result<&'static GenericDatumWriter<'static>> {
        if let Some(writer) = self.writer.get() {
            return Ok(writer);
        }
        let writer = GenericDatumWriter::builder(self.schema()?)
            .build()
            .map_err(|e| self.invalid(e))?;
        Ok(self.writer.get_or_init(|| writer))
    }

    /// A datum reader for records written with this very schema (no resolution).
    pub(crate) fn reader(&'static self) -> Result<&'static GenericDatumReader<'static>> {
        if let Some(reader) = self.reader.get() {
            return Ok(reader);
        }
        let reader = GenericDatumReader::builder(self.schema()?)
            .build()
            .map_err(|e| self.invalid(e))?;
        Ok(self.reader.get_or_init(|| reader))
    }

    fn invalid(&self, source: apache_avro::Error) -> Error {
        Error::Schema {
            name: self.file,
            source,
        }
    }
}

macro_rules! schema_file {
    ($ident:ident, $file:literal, $name:literal) => {
        #[doc = concat!("`avro/schemas/", $file, "`.")]
        pub static $ident: SchemaFile =
            SchemaFile::new($file, $name, include_str!(concat!("../schemas/", $file)));
    };
}

schema_file!(START_SAGA, "StartSaga.avsc", "io.sagaflow.StartSaga");
schema_file!(COMMAND, "Command.avsc", "io.sagaflow.Command");
schema_file!(REPLY, "Reply.avsc", "io.sagaflow.Reply");
schema_file!(SAGA_EVENT, "SagaEvent.avsc", "io.sagaflow.SagaEvent");
schema_file!(SAGA_STATE, "SagaState.avsc", "io.sagaflow.SagaState");
schema_file!(
    JOURNAL_RECORD,
    "JournalRecord.avsc",
    "io.sagaflow.JournalRecord"
);
schema_file!(CHECKPOINT, "Checkpoint.avsc", "io.sagaflow.Checkpoint");
schema_file!(
    CHANGELOG_BATCH,
    "ChangelogBatch.avsc",
    "io.sagaflow.ChangelogBatch"
);
schema_file!(SIGNAL, "Signal.avsc", "io.sagaflow.Signal");
schema_file!(PARKED, "Parked.avsc", "io.sagaflow.Parked");
schema_file!(CORRELATION, "Correlation.avsc", "io.sagaflow.Correlation");
schema_file!(
    ADMIN_COMMAND,
    "AdminCommand.avsc",
    "io.sagaflow.AdminCommand"
);
schema_file!(AUDIT_RECORD, "AuditRecord.avsc", "io.sagaflow.AuditRecord");
schema_file!(
    PARTICIPANT_CONTROL,
    "ParticipantControl.avsc",
    "io.sagaflow.ParticipantControl"
);

/// Every embedded schema.
pub static ALL: [&SchemaFile; 14] = [
    &START_SAGA,
    &COMMAND,
    &REPLY,
    &SAGA_EVENT,
    &SAGA_STATE,
    &JOURNAL_RECORD,
    &CHECKPOINT,
    &CHANGELOG_BATCH,
    &SIGNAL,
    &PARKED,
    &CORRELATION,
    &ADMIN_COMMAND,
    &AUDIT_RECORD,
    &PARTICIPANT_CONTROL,
];

/// Older versions of the internal schemas (see `internal`), each with the file it is a version
/// of: `avro/schemas/history/<Name>.<fingerprint>.avsc`. Add the committed version here whenever
/// an internal schema changes; `tests/contracts.rs` names any that is missing.
pub static HISTORY: [(&SchemaFile, &str); 5] = [
    (
        &SAGA_STATE,
        include_str!("../schemas/history/SagaState.3043bbe00852c042.avsc"),
    ),
    (
        &SAGA_STATE,
        include_str!("../schemas/history/SagaState.b206f32ff77e24a4.avsc"),
    ),
    (
        &SAGA_STATE,
        include_str!("../schemas/history/SagaState.9f37777138af0996.avsc"),
    ),
    (
        &PARKED,
        include_str!("../schemas/history/Parked.a847635373f4743e.avsc"),
    ),
    (
        &PARKED,
        include_str!("../schemas/history/Parked.80f80499018ba382.avsc"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_parses_and_is_named_as_declared() {
        for file in ALL {
            let schema = file.schema().unwrap();
            match schema {
                Schema::Record(record) => assert_eq!(record.name.fullname(None), file.full_name),
                other => panic!("{} is not a record: {other:?}", file.file),
            }
        }
    }
}
