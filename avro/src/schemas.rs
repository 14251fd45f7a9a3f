//! The embedded `.avsc` files, parsed once.

use std::sync::OnceLock;

use apache_avro::Schema;

use crate::error::{Error, Result};

/// One embedded schema file.
#[derive(Debug)]
pub struct SchemaFile {
    /// File name under `avro/schemas/`.
    pub file: &'static str,
    /// Full record name, e.g. `io.sagaflow.Command`.
    pub full_name: &'static str,
    /// The JSON text.
    pub text: &'static str,
    parsed: OnceLock<Schema>,
}

impl SchemaFile {
    const fn new(file: &'static str, full_name: &'static str, text: &'static str) -> Self {
        Self {
            file,
            full_name,
            text,
            parsed: OnceLock::new(),
        }
    }

    /// The parsed schema.
    pub fn schema(&self) -> Result<&Schema> {
        if let Some(schema) = self.parsed.get() {
            return Ok(schema);
        }
        let schema = Schema::parse_str(self.text).map_err(|source| Error::Schema {
            name: self.file,
            source,
        })?;
        Ok(self.parsed.get_or_init(|| schema))
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
schema_file!(SIGNAL, "Signal.avsc", "io.sagaflow.Signal");
schema_file!(PARKED, "Parked.avsc", "io.sagaflow.Parked");
schema_file!(CORRELATION, "Correlation.avsc", "io.sagaflow.Correlation");

/// Every embedded schema.
pub static ALL: [&SchemaFile; 10] = [
    &START_SAGA,
    &COMMAND,
    &REPLY,
    &SAGA_EVENT,
    &SAGA_STATE,
    &JOURNAL_RECORD,
    &CHECKPOINT,
    &SIGNAL,
    &PARKED,
    &CORRELATION,
];

/// Older versions of the internal schemas (see `internal`), each with the file it is a version
/// of: `avro/schemas/history/<Name>.<fingerprint>.avsc`. Add the committed version here whenever
/// an internal schema changes; `tests/contracts.rs` names any that is missing.
pub static HISTORY: [(&SchemaFile, &str); 0] = [];

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
