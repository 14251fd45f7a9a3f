//! W3C Trace Context (`traceparent`) on Sagaflow's Kafka records, so that a tracing backend can
//! follow a saga across the engine and its participants, in any language.
//!
//! Every saga is one trace: its trace id is derived from the engine group and the saga id, so
//! every command the engine sends for it, a re-send after a crash included, carries the same
//! trace id, and a trace can be found from a saga id without an index (two groups with the same
//! saga ids do not share traces). Each command's span id is derived from its
//! message id, so a re-sent command carries the same header. A participant continues the trace
//! with a child span of its own (the worker library does, see [`child`]); OpenTelemetry's Kafka
//! instrumentation in other languages reads and writes the same header.

/// The header name the W3C Trace Context specification gives.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`: version 00, trace id, parent span id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: u128,
    /// 8 bytes, never all zero.
    pub span_id: u64,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// The header value: `00-<32 hex>-<16 hex>-<2 hex>`.
    pub fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// Parses a header value; `None` for anything the specification says to ignore (a bad
    /// length or character, an all-zero id, version ff).
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, span, flags, ..] = parts.as_slice() else {
            return None;
        };
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        // Version 00 has exactly four fields; a later version may add more after them.
        if !hex(version, 2) || *version == "ff" || (*version == "00" && parts.len() != 4) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then(|| Self {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).unwrap_or(0),
        })
    }
}

/// The trace id of saga `saga_id` of engine group `group`, as 32 hex digits (what logs and
/// tracing backends show).
pub fn saga_trace_id(group: &str, saga_id: &str) -> String {
    format!("{:032x}", trace_id(group, saga_id))
}

/// The `traceparent` of the command with `message_id` of saga `saga_id` of engine group
/// `group`: the saga's trace, a span id of its own, sampled (the engine samples every saga; a
/// participant's sampler decides for its own spans).
pub fn command_traceparent(group: &str, saga_id: &str, message_id: &str) -> String {
    TraceParent {
        trace_id: trace_id(group, saga_id),
        span_id: span_id(message_id),
        flags: 1,
    }
    .header()
}

/// The `traceparent` of a reply (message id `message_id`) to a command whose header was
/// `parent`: version 00, the same trace and sampled flag (the other flag bits are cleared, as
/// the specification asks of a version it may not know), a span of its own. `None` when
/// `parent` is not a valid header (the reply then carries none, as the specification asks).
pub fn child(parent: &str, message_id: &str) -> Option<String> {
    let parent = TraceParent::parse(parent)?;
    Some(
        TraceParent {
            trace_id: parent.trace_id,
            span_id: span_id(message_id),
            flags: parent.flags & 0x01,
        }
        .header(),
    )
}

/// The trace id of saga `saga_id` of engine group `group`.
pub fn saga_trace(group: &str, saga_id: &str) -> u128 {
    trace_id(group, saga_id)
}

fn trace_id(group: &str, saga_id: &str) -> u128 {
    let high = hash(&[group, saga_id], 0);
    let low = hash(&[group, saga_id], 1);
    ((u128::from(high) << 64) | u128::from(low)).max(1)
}

fn span_id(message_id: &str) -> u64 {
    hash(&[message_id], 2).max(1)
}

/// FNV-1a over `seed` and `parts` (each ended by a 0 byte, so that ("ab", "c") and ("a", "bc")
/// differ), then splitmix64's finalizer, which spreads FNV's weak low bits (samplers read the
/// trace id's last bytes). Stable across builds and platforms: the ids must not change when the
/// engine is upgraded mid-saga. Not a secret: a saga id can be checked against a trace id.
pub(crate) fn hash(parts: &[&str], seed: u8) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = std::iter::once(seed).chain(parts.iter().flat_map(|p| p.bytes().chain([0])));
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_header_is_valid_w3c_and_stable() {
        let h = command_traceparent("shop", "order-42", "order-42/pay/forward/1");
        assert_eq!(h.len(), 55, "{h}");
        assert!(h.starts_with("00-") && h.ends_with("-01"), "{h}");
        let parsed = TraceParent::parse(&h).expect("valid");
        assert_eq!(
            format!("{:032x}", parsed.trace_id),
            saga_trace_id("shop", "order-42")
        );
        assert_eq!(
            h,
            command_traceparent("shop", "order-42", "order-42/pay/forward/1")
        );
        // Another command of the saga: same trace, another span.
        let other = TraceParent::parse(&command_traceparent(
            "shop",
            "order-42",
            "order-42/ship/forward/1",
        ))
        .expect("valid");
        assert_eq!(other.trace_id, parsed.trace_id);
        assert_ne!(other.span_id, parsed.span_id);
        // Another saga, or the same saga id in another group: another trace.
        assert_ne!(
            saga_trace_id("shop", "order-42"),
            saga_trace_id("shop", "order-43")
        );
        assert_ne!(
            saga_trace_id("shop", "order-42"),
            saga_trace_id("shop2", "order-42")
        );
        assert_ne!(saga_trace_id("ab", "c"), saga_trace_id("a", "bc"));
    }

    #[test]
    fn a_reply_continues_the_commands_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let reply = child(parent, "reply/x").expect("a child");
        assert!(
            reply.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{reply}"
        );
        assert!(reply.ends_with("-01"));
        assert_ne!(reply, parent);
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
            assert_eq!(child(bad, "reply/x"), None, "{bad}");
        }
        // A later version may carry more fields; the first four are read, and a child is a
        // version 00 header with only the sampled flag kept.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-x";
        assert!(TraceParent::parse(future).is_some());
        let reply = child(future, "reply/x").expect("a child");
        assert!(
            reply.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{reply}"
        );
        assert!(reply.ends_with("-01"), "{reply}");
    }
}
