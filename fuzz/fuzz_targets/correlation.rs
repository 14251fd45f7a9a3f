//! Signals and correlation messages as the runtime reads them off their topics.
//!
//! Input: byte 0 picks the topic: even, the correlations topic (the rest is the Avro body of a
//! `Correlation`); odd, the signals topic (the rest is the Avro body of a `Signal`). Seeds: one
//! message of each correlation kind, and signals with and without a payload.
//!
//! A correlation message is routed by its owner and, for DELIVER and RETURN, carries a signal in
//! wire format, decoded in turn (the registry lookup of its schema id aside). A signal is checked
//! as on arrival and, if valid, matched the way `sagaflow_core::correlate` matches it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sagaflow_avro::{decode_body, Awaiter, Contract, Correlation, CorrelationKind, Signal};
use sagaflow_core::correlate;
use sagaflow_core::signal_input::{check_signal, owner, route};

const NOW_MS: i64 = 1_767_225_600_000;
const SIGNAL_TTL_MS: i64 = 7 * 24 * 3_600_000;

fn signal(body: &[u8]) -> Option<Signal> {
    decode_body::<Signal>(Signal::SCHEMA.schema().ok()?, body).ok()
}

fn on_signal(signal: Signal) {
    if check_signal(&signal).is_err() {
        return;
    }
    let awaiter = Awaiter {
        saga_id: "trip-1".into(),
        step: "confirm".into(),
    };
    let _ = correlate::on_signal(&[], signal.clone(), NOW_MS, SIGNAL_TTL_MS);
    let _ = correlate::on_signal(&[awaiter.clone()], signal.clone(), NOW_MS, SIGNAL_TTL_MS);
    let _ = correlate::on_subscribe(&[], &[signal], awaiter);
}

fn on_correlation(message: Correlation) {
    let _ = owner(&message);
    let _ = route(&message, "s-1");
    let awaiter = Awaiter {
        saga_id: message.saga_id.clone(),
        step: message.step.clone(),
    };
    match message.kind {
        CorrelationKind::Deliver | CorrelationKind::Return => {
            // Wire format: magic byte 0, a 4-byte schema id, then the body; the registry client
            // takes anything shorter or with another magic byte for something else.
            if let Some([0, _, _, _, _, body @ ..]) = message.signal.as_deref() {
                if let Some(signal) = signal(body) {
                    on_signal(signal);
                }
            }
        }
        CorrelationKind::Subscribe => {
            let _ = correlate::on_subscribe(&[], &[], awaiter);
        }
        CorrelationKind::Unsubscribe => {
            let _ = correlate::on_unsubscribe(&[awaiter.clone()], &awaiter);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [topic, body @ ..] = data else {
        return;
    };
    if topic % 2 == 1 {
        if let Some(signal) = signal(body) {
            on_signal(signal);
        }
        return;
    }
    let Ok(schema) = Correlation::SCHEMA.schema() else {
        return;
    };
    if let Ok(message) = decode_body::<Correlation>(schema, body) {
        on_correlation(message);
    }
});
