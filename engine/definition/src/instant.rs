//! Instants written as RFC 3339 text (`2026-12-01T09:00:00+01:00`), as epoch milliseconds UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

/// Parses an RFC 3339 instant with its UTC offset into epoch milliseconds UTC
/// (sub-millisecond digits are truncated).
///
/// This is how `until: 2026-12-01T09:00:00+01:00` is read; engines can use it for
/// the value an `until: $.path` step finds in the saga context. The error is a
/// sentence naming the problem, e.g. a missing offset.
///
/// ```
/// use sagaflow_definition::parse_instant;
///
/// assert_eq!(parse_instant("1970-01-01T01:00:01+01:00"), Ok(1000));
/// assert!(parse_instant("2026-12-01T09:00:00").unwrap_err().contains("no UTC offset"));
/// ```
pub fn parse_instant(text: &str) -> Result<i64, String> {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(instant) => Ok(instant.timestamp_millis()),
        Err(error) => {
            let text = text.trim();
            let naive = [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .any(|format| NaiveDateTime::parse_from_str(text, format).is_ok());
            if naive {
                Err("it has no UTC offset; add `Z` or an offset such as `+01:00`".to_owned())
            } else if NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
                Err(format!(
                    "it has no time of day; write e.g. `{text}T00:00:00Z`"
                ))
            } else {
                Err(format!("it is not an RFC 3339 date and time ({error})"))
            }
        }
    }
}

/// An instant read from JSON (e.g. the saga context for `until: $.path`): an RFC 3339
/// string, or a whole number of epoch milliseconds UTC.
///
/// ```
/// use sagaflow_definition::instant_from_json;
/// use serde_json::json;
///
/// assert_eq!(instant_from_json(&json!("1970-01-01T00:00:02Z")), Ok(2000));
/// assert_eq!(instant_from_json(&json!(2000)), Ok(2000));
/// assert!(instant_from_json(&json!(true)).is_err());
/// ```
pub fn instant_from_json(value: &Value) -> Result<i64, String> {
    match value {
        Value::String(text) => parse_instant(text),
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| format!("`{number}` is not a whole number of epoch milliseconds")),
        Value::Null => Err("expected an instant, found null".to_owned()),
        Value::Bool(_) => Err(format!("expected an instant, found the boolean `{value}`")),
        Value::Array(_) => Err("expected an instant, found a list".to_owned()),
        Value::Object(_) => Err("expected an instant, found an object".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc3339_instants_with_offsets_parse() {
        assert_eq!(
            parse_instant("2026-12-01T09:00:00+01:00"),
            Ok(1_796_112_000_000)
        );
        assert_eq!(parse_instant("2026-12-01T08:00:00Z"), Ok(1_796_112_000_000));
        assert_eq!(
            parse_instant("2026-12-01t08:00:00.123456z"),
            Ok(1_796_112_000_123)
        );
        assert_eq!(parse_instant("1969-12-31T23:59:59Z"), Ok(-1000));
    }

    #[test]
    fn malformed_instants_say_why() {
        assert!(parse_instant("2026-12-01T09:00:00")
            .unwrap_err()
            .contains("no UTC offset"));
        assert!(parse_instant("2026-12-01 09:00:00.5")
            .unwrap_err()
            .contains("no UTC offset"));
        assert!(parse_instant("2026-12-01")
            .unwrap_err()
            .contains("no time of day"));
        assert!(parse_instant("2026-02-30T09:00:00Z")
            .unwrap_err()
            .starts_with("it is not an RFC 3339 date and time"));
        assert!(parse_instant("tomorrow").is_err());
    }

    #[test]
    fn json_instants_are_text_or_epoch_millis() {
        assert_eq!(
            instant_from_json(&json!("2026-12-01T08:00:00Z")),
            Ok(1_796_112_000_000)
        );
        assert_eq!(
            instant_from_json(&json!(1_796_112_000_000_i64)),
            Ok(1_796_112_000_000)
        );
        assert!(instant_from_json(&json!(1.5))
            .unwrap_err()
            .contains("whole number"));
        assert!(instant_from_json(&json!(u64::MAX)).is_err());
        assert!(instant_from_json(&json!(null)).is_err());
        assert!(instant_from_json(&json!({"at": 1})).is_err());
        assert!(instant_from_json(&json!("soon")).is_err());
    }
}
