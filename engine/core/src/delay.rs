//! Delayed delivery requests: a record on the delay topic names, in two headers, the topic it
//! goes to and when. Reading them is pure; the runtime parks the result under a reserved key and
//! delivers the record when its timer fires.

use sagaflow_avro::{Header, Parked, ParkedHeader, ParkedKind};

/// Header naming the topic a delayed record goes to.
pub const DELAY_TOPIC_HEADER: &str = "sagaflow-delay-topic";
/// Header with the delivery time: epoch milliseconds or an RFC 3339 time.
pub const DELAY_UNTIL_HEADER: &str = "sagaflow-delay-until";

/// A record of the delay topic, as consumed.
#[derive(Debug, Clone, Copy)]
pub struct DelayRecord<'a> {
    /// Its offset; with the topic and partition, it identifies the delivery.
    pub offset: i64,
    /// Record key, delivered unchanged.
    pub key: Option<&'a [u8]>,
    /// Record value, delivered unchanged.
    pub payload: Option<&'a [u8]>,
    /// Record headers in order, delivered unchanged.
    pub headers: &'a [Header],
}

/// Why a record of the delay topic cannot be delivered; the runtime dead-letters it with this
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelayError {
    /// No target topic header, or an empty one.
    #[error("the record has no {DELAY_TOPIC_HEADER} header naming the target topic")]
    NoTarget,
    /// The target is the delay topic: the record would come back forever.
    #[error("{DELAY_TOPIC_HEADER} names the delay topic itself")]
    TargetIsDelayTopic,
    /// No delivery time header.
    #[error("the record has no {DELAY_UNTIL_HEADER} header (epoch ms or RFC 3339)")]
    NoTime,
    /// The delivery time header does not parse.
    #[error("{DELAY_UNTIL_HEADER} = {until:?} is neither epoch ms nor RFC 3339: {reason}")]
    BadTime {
        /// The header's value, as text.
        until: String,
        /// Why it is not an RFC 3339 time.
        reason: String,
    },
}

/// Reads a delayed-delivery request from `record`, consumed from partition `partition` of the
/// delay topic `topic` at `now`.
///
/// When a header is repeated the last one counts, as Kafka clients read headers. Whether the
/// target topic exists is for the caller to check: it depends on the cluster.
pub fn delayed(
    topic: &str,
    partition: i32,
    record: DelayRecord<'_>,
    now: i64,
) -> Result<Parked, DelayError> {
    let header = |name: &str| {
        record
            .headers
            .iter()
            .rev()
            .find(|h| h.name == name)
            .map(|h| String::from_utf8_lossy(&h.value).into_owned())
    };
    let target = header(DELAY_TOPIC_HEADER)
        .filter(|t| !t.is_empty())
        .ok_or(DelayError::NoTarget)?;
    if target == topic {
        return Err(DelayError::TargetIsDelayTopic);
    }
    let until = header(DELAY_UNTIL_HEADER).ok_or(DelayError::NoTime)?;
    let due = match until.trim().parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => sagaflow_definition::parse_instant(until.trim()).map_err(|reason| {
            DelayError::BadTime {
                until: until.clone(),
                reason,
            }
        })?,
    };
    Ok(Parked {
        kind: ParkedKind::Delayed,
        id: format!("{topic}/{partition}/{}", record.offset),
        due,
        topic: Some(target),
        key: record.key.map(<[u8]>::to_vec),
        value: record.payload.map(<[u8]>::to_vec),
        headers: record
            .headers
            .iter()
            .map(|h| ParkedHeader {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect(),
        sagas: Vec::new(),
        received_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(n, v)| Header {
                name: (*n).into(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Parked, DelayError> {
        let headers = headers(pairs);
        let record = DelayRecord {
            offset: 7,
            key: Some(b"k"),
            payload: Some(b"v"),
            headers: &headers,
        };
        delayed("g.delay", 2, record, 5)
    }

    #[test]
    fn the_last_header_counts_and_every_header_is_kept() {
        let parked = read(&[
            (DELAY_TOPIC_HEADER, "first"),
            (DELAY_TOPIC_HEADER, "out"),
            (DELAY_UNTIL_HEADER, " 123 "),
        ])
        .unwrap();
        assert_eq!(parked.topic.as_deref(), Some("out"));
        assert_eq!(parked.due, 123);
        assert_eq!(parked.id, "g.delay/2/7");
        assert_eq!(parked.headers.len(), 3);
        assert_eq!(parked.received_at, 5);
    }

    #[test]
    fn errors_say_which_header_is_wrong() {
        assert_eq!(
            read(&[(DELAY_TOPIC_HEADER, ""), (DELAY_UNTIL_HEADER, "1")])
                .unwrap_err()
                .to_string(),
            "the record has no sagaflow-delay-topic header naming the target topic"
        );
        assert_eq!(
            read(&[(DELAY_TOPIC_HEADER, "g.delay"), (DELAY_UNTIL_HEADER, "1")]).unwrap_err(),
            DelayError::TargetIsDelayTopic
        );
        assert_eq!(
            read(&[(DELAY_TOPIC_HEADER, "out")])
                .unwrap_err()
                .to_string(),
            "the record has no sagaflow-delay-until header (epoch ms or RFC 3339)"
        );
        let bad = read(&[(DELAY_TOPIC_HEADER, "out"), (DELAY_UNTIL_HEADER, "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            bad.starts_with("sagaflow-delay-until = \"soon\" is neither epoch ms nor RFC 3339: "),
            "{bad}"
        );
    }
}
