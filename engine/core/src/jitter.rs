//! Deterministic "randomness" for retry jitter: decisions must stay pure, so the jitter of an
//! attempt is derived from what identifies it. Replays and restarts compute the same delay.

use sagaflow_avro::Phase;

/// A number in [0, 1) derived from the attempt (FNV-1a, stable across platforms and versions).
pub(crate) fn unit(saga_id: &str, step: &str, phase: Phase, attempt: i32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let attempt = attempt.to_le_bytes();
    let parts: [&[u8]; 4] = [
        saga_id.as_bytes(),
        step.as_bytes(),
        phase.as_str().as_bytes(),
        &attempt,
    ];
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    // The top 53 bits give an exactly representable fraction below 1.
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_in_range_and_spread() {
        let a = unit("s-1", "pay", Phase::Forward, 1);
        assert_eq!(a, unit("s-1", "pay", Phase::Forward, 1));
        assert!((0.0..1.0).contains(&a));
        let values: Vec<f64> = (1..=200)
            .map(|i| unit(&format!("s-{i}"), "pay", Phase::Forward, 2))
            .collect();
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!(
            (60..=140).contains(&low),
            "poorly spread: {low}/200 below 0.5"
        );
    }
}
