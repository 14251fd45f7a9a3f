//! The decoders of every record the engine reads: starts, replies, signals, correlation
//! messages, and its own journal, state, checkpoint and parked records.
//!
//! The engine decodes Confluent wire format through a registry; past the 5-byte header and the
//! registry lookup, that is `sagaflow_avro::decode_body` with the writer's schema, which this
//! target calls with the embedded schemas. The engine's own records are in single-object
//! encoding and decode without the registry: with the record's own schema, the body also goes
//! through `sagaflow_avro::internal::decode`.
//!
//! Input: byte 0 picks the record type (its index in `sagaflow_avro::schemas::ALL`, modulo its
//! length). Byte 1 picks the writer's schema: below 0xF0, the record's own (the common case,
//! a writer of the same version); from 0xF0 on, `ALL[byte % len]`, to exercise resolving a
//! foreign writer to the reader. The rest is the Avro body. Seeds: one valid body per record type.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_avro::schemas::{SchemaFile, ALL};
use sagaflow_avro::{
    decode_body, Checkpoint, Command, Contract, Correlation, JournalRecord, Parked, Reply,
    SagaEvent, SagaState, Signal, StartSaga,
};

fn decode<T: Contract>(writer: Option<&SchemaFile>, body: &[u8]) {
    if writer.is_none() {
        // The engine's own records in single-object encoding with the current schema take the
        // direct path (serde from the bytes, no resolution): `internal::decode`.
        if let Ok(print) = T::SCHEMA.fingerprint() {
            let mut framed = vec![0xC3, 0x01];
            framed.extend_from_slice(&print);
            framed.extend_from_slice(body);
            let _ = sagaflow_avro::internal::decode::<T>(&framed);
        }
    }
    let writer = writer.unwrap_or(T::SCHEMA);
    if let Ok(schema) = writer.schema() {
        let _ = decode_body::<T>(schema, body);
    }
}

fuzz_target!(|data: &[u8]| {
    let [kind, writer, body @ ..] = data else {
        return;
    };
    let writer = (*writer >= 0xF0).then(|| ALL[usize::from(*writer) % ALL.len()]);
    // ALL holds schema files, not types: the name says which type decodes the body. A schema
    // added to ALL without a line here is skipped.
    match ALL[usize::from(*kind) % ALL.len()].full_name {
        "io.sagaflow.StartSaga" => decode::<StartSaga>(writer, body),
        "io.sagaflow.Command" => decode::<Command>(writer, body),
        "io.sagaflow.Reply" => decode::<Reply>(writer, body),
        "io.sagaflow.SagaEvent" => decode::<SagaEvent>(writer, body),
        "io.sagaflow.SagaState" => decode::<SagaState>(writer, body),
        "io.sagaflow.JournalRecord" => decode::<JournalRecord>(writer, body),
        "io.sagaflow.Checkpoint" => decode::<Checkpoint>(writer, body),
        "io.sagaflow.Signal" => decode::<Signal>(writer, body),
        "io.sagaflow.Parked" => decode::<Parked>(writer, body),
        "io.sagaflow.Correlation" => decode::<Correlation>(writer, body),
        _ => {}
    }
});
