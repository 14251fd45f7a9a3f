//! The headers of a delayed-delivery request (`sagaflow_core::delay::delayed`, which the
//! runtime calls for every record of the delay topic).
//!
//! Input: the record's headers, one per line (`\n`), each `name=value` split at the first `=`
//! (a line without `=` is a header with an empty value). Names are read as UTF-8 with
//! replacement, as Kafka header names are strings; values are raw bytes. The whole input is
//! also the record's value, as a payload is carried along unread. Seeds: headers as producers
//! send them, e.g.
//!
//! ```text
//! sagaflow-delay-topic=trip.payment.commands
//! sagaflow-delay-until=2026-07-01T09:00:00+02:00
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_avro::Header;
use sagaflow_core::delay::{delayed, DelayRecord};

fuzz_target!(|data: &[u8]| {
    let headers: Vec<Header> = data
        .split(|b| *b == b'\n')
        .map(|line| {
            let (name, value) = match line.iter().position(|b| *b == b'=') {
                Some(at) => (&line[..at], &line[at + 1..]),
                None => (line, &[][..]),
            };
            Header {
                name: String::from_utf8_lossy(name).into_owned(),
                value: value.to_vec(),
            }
        })
        .collect();
    let record = DelayRecord {
        offset: 42,
        key: Some(b"saga-1"),
        payload: Some(data),
        headers: &headers,
    };
    match delayed("g.delay", 3, record, 1_767_225_600_000) {
        // Delivered as it came: every header passes through.
        Ok(parked) => assert_eq!(parked.headers.len(), headers.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
