//! Durations as written in definitions: `500ms`, `10s`, `1m30s`, `24h`, `2d`.

use std::time::Duration;

/// The units, largest first, with their length in milliseconds.
const UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration such as `500ms`, `10s`, `1m30s`, `24h` or `2d`.
///
/// A duration is one or more `<whole number><unit>` parts with units `d`, `h`, `m`, `s`
/// and `ms`, written from the largest unit to the smallest, each at most once, without
/// spaces. `0s` parses to [`Duration::ZERO`]; callers that need a positive duration
/// (every duration in a definition) reject it themselves. Empty text, signs, fractions,
/// missing and unknown units are errors; the message is a sentence for a diagnostic.
///
/// ```
/// use std::time::Duration;
/// use sagaflow_definition::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the duration is empty".to_owned());
    }
    if trimmed.starts_with('-') {
        return Err("a duration cannot be negative".to_owned());
    }
    if trimmed.starts_with('+') {
        return Err("a duration takes no sign".to_owned());
    }
    let mut rest = trimmed;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit used, to enforce largest-to-smallest order.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            let found = rest.chars().next().unwrap_or(' ');
            return Err(if found == '.' {
                "fractions are not supported; use a smaller unit, e.g. `1500ms` for 1.5 seconds"
                    .to_owned()
            } else {
                format!("expected a number at `{rest}`")
            });
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                None => format!(
                    "`{number}` has no unit; add one of `ms`, `s`, `m`, `h`, `d`, e.g. `{number}s`"
                ),
                Some('.') => {
                    "fractions are not supported; use a smaller unit, e.g. `1500ms` for 1.5 seconds"
                        .to_owned()
                }
                Some(c) if c.is_whitespace() => {
                    "a duration has no spaces; write e.g. `1m30s`".to_owned()
                }
                Some(c) => format!("unexpected {c:?} after `{number}`"),
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!(
                "unknown unit `{unit}`; use `ms`, `s`, `m`, `h` or `d`"
            ));
        };
        if let Some(last) = last_unit {
            if index == last {
                return Err(format!("the unit `{unit}` appears twice"));
            }
            if index < last {
                return Err(format!(
                    "units go from the largest to the smallest, e.g. `1h30m`; `{unit}` comes too late"
                ));
            }
        }
        last_unit = Some(index);
        let too_long = || "the duration is too long".to_owned();
        let value: u64 = number.parse().map_err(|_| too_long())?;
        let millis = value.checked_mul(UNITS[index].1).ok_or_else(too_long)?;
        total = total.checked_add(millis).ok_or_else(too_long)?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

/// Writes a duration the way [`parse_duration`] reads it, e.g. `1m30s`, `500ms`.
pub(crate) fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, length) in UNITS {
        let length = u128::from(*length);
        let count = millis / length;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            millis -= count * length;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_unit_and_combinations() {
        let ok = |text: &str| parse_duration(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("24h"), Duration::from_secs(86_400));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        assert_eq!(ok("1d2h3m4s5ms"), Duration::from_millis(93_784_005));
        assert_eq!(ok(" 10s "), Duration::from_secs(10));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("90s"), Duration::from_secs(90));
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        let err = |text: &str| parse_duration(text).expect_err(text);
        assert_eq!(err(""), "the duration is empty");
        assert_eq!(err("   "), "the duration is empty");
        assert_eq!(err("-5s"), "a duration cannot be negative");
        assert_eq!(err("+5s"), "a duration takes no sign");
        assert!(err("10").contains("has no unit"));
        assert!(err("10").contains("`10s`"));
        assert!(err("10 s").contains("no spaces"));
        assert_eq!(
            err("3w"),
            "unknown unit `w`; use `ms`, `s`, `m`, `h` or `d`"
        );
        assert!(err("10sec").contains("unknown unit `sec`"));
        assert!(err("1.5s").contains("fractions"));
        assert!(err("s").contains("expected a number"));
        assert!(err("30s1m").contains("largest to the smallest"));
        assert!(err("1s1s").contains("appears twice"));
        assert!(err("99999999999999999999d").contains("too long"));
        assert!(err("213503982334602d").contains("too long"));
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["500ms", "10s", "1m30s", "23h", "2d", "1d2h3m4s5ms", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
