//! The registry's REST request bodies, through its real request handling: body JSON, the
//! `schema` field, Avro schema parsing with references, compatibility checks between parsed
//! schemas, compatibility levels, and the `_schemas` topic records a restore reads.
//!
//! Input: a script of requests against one registry, separated by the byte 0xFF (which UTF-8
//! text never holds, so JSON bodies need no escaping). Each request is
//! `[op, subject, body...]`: `subject` picks one of a few subject names (so requests meet
//! earlier versions), `op` (modulo 12) picks the request:
//!
//! | op | request                                              | body                        |
//! |----|------------------------------------------------------|-----------------------------|
//! | 0  | `POST /subjects/{s}/versions`                        | schema body                 |
//! | 1  | `POST /subjects/{s}`                                 | schema body                 |
//! | 2  | `POST /compatibility/subjects/{s}/versions`          | schema body                 |
//! | 3  | `POST /compatibility/subjects/{s}/versions/latest`   | schema body                 |
//! | 4  | `PUT /config/{s}`                                    | config body                 |
//! | 5  | `PUT /config`                                        | config body                 |
//! | 6  | `DELETE /config/{s}`                                 | -                           |
//! | 7  | `DELETE /subjects/{s}`                               | -                           |
//! | 8  | `DELETE /subjects/{s}?permanent=true`                | -                           |
//! | 9  | `DELETE /subjects/{s}/versions/{body}`               | version text                |
//! | 10 | `DELETE /subjects/{s}/versions/{body}?permanent=true`| version text                |
//! | 11 | a `_schemas` record                                  | key, byte 0x00, value       |
//!
//! For op 11 the body is split at its first 0x00 into key and value; without one, the record
//! is a tombstone. After the script every subject is read back. Seeds: request bodies from the
//! registry's tests (`tests/tests/registry.rs`) in scripts that register, evolve, reference,
//! check and delete.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_registry::fuzzing::Harness;

const SUBJECTS: [&str; 4] = ["orders-value", "address-value", "customer-value", "a"];

fuzz_target!(|data: &[u8]| {
    let mut registry = Harness::new();
    for request in data.split(|b| *b == 0xFF) {
        let [op, subject, body @ ..] = request else {
            continue;
        };
        let subject = SUBJECTS[usize::from(*subject) % SUBJECTS.len()];
        let text = String::from_utf8_lossy(body);
        match op % 12 {
            0 => {
                let _ = registry.register(subject, body);
            }
            1 => {
                let _ = registry.lookup(subject, body, false);
            }
            2 => {
                let _ = registry.compatibility(subject, None, body);
            }
            3 => {
                let _ = registry.compatibility(subject, Some("latest"), body);
            }
            4 => {
                let _ = registry.set_config(Some(subject), body);
            }
            5 => {
                let _ = registry.set_config(None, body);
            }
            6 => {
                let _ = registry.delete_config(Some(subject));
            }
            7 => {
                let _ = registry.delete_subject(subject, false);
            }
            8 => {
                let _ = registry.delete_subject(subject, true);
            }
            9 => {
                let _ = registry.delete_version(subject, &text, false);
            }
            10 => {
                let _ = registry.delete_version(subject, &text, true);
            }
            _ => {
                let (key, value) = match body.iter().position(|b| *b == 0) {
                    Some(at) => (&body[..at], Some(&body[at + 1..])),
                    None => (body, None),
                };
                let _ = registry.restore(key, value);
            }
        }
    }
    let _ = registry.read_all();
});
