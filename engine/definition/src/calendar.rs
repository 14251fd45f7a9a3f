//! Calendar schedules in a time zone: `every Monday 09:00 Europe/Paris` or cron `0 9 * * MON Europe/Paris`.
//!
//! Everything here is pure: [`Calendar::next_after`] maps an instant to the next
//! firing instant using the IANA time zone database compiled into `chrono-tz`.

use std::fmt;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::{GapInfo, Tz, TZ_VARIANTS};

use crate::diagnostics::edit_distance;

/// How far [`Calendar::next_after`] looks ahead, in days (30 years).
const HORIZON_DAYS: u32 = 30 * 366;

const DAY_NAMES: [(&str, &str); 7] = [
    ("sunday", "sun"),
    ("monday", "mon"),
    ("tuesday", "tue"),
    ("wednesday", "wed"),
    ("thursday", "thu"),
    ("friday", "fri"),
    ("saturday", "sat"),
];

const MONTH_NAMES: [(&str, &str); 12] = [
    ("january", "jan"),
    ("february", "feb"),
    ("march", "mar"),
    ("april", "apr"),
    ("may", "may"),
    ("june", "jun"),
    ("july", "jul"),
    ("august", "aug"),
    ("september", "sep"),
    ("october", "oct"),
    ("november", "nov"),
    ("december", "dec"),
];

/// Days in each month, February counted as in a leap year.
const MONTH_DAYS: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// A recurring civil-time schedule in an IANA time zone.
///
/// Two forms are accepted (see [`Calendar::parse`]):
///
/// * `every <days> [at] HH:MM[:SS] <Zone>`, where `<days>` is `day`, `weekday`
///   (Monday to Friday), `weekend`, a weekday (`Monday` or `Mon`, any case) or a
///   comma list such as `Mon,Wed,Fri`;
/// * cron: `minute hour day-of-month month day-of-week <Zone>` with `*`, lists
///   (`1,15`), ranges (`1-5`), steps (`*/15`, `0-30/10`) and names (`MON`..`SUN`,
///   `JAN`..`DEC`); day of week 0 and 7 are Sunday. As in Vixie cron, when both
///   day-of-month and day-of-week are restricted (neither starts with `*`), a day
///   matching *either* fires; otherwise a day must match both.
///
/// The zone is an IANA name (`Europe/Paris`, `America/New_York`) or `UTC`.
///
/// # Daylight saving time
///
/// Times are wall-clock times in the zone, so `every Monday 09:00 Europe/Paris`
/// fires at 08:00 UTC in winter and 07:00 UTC in summer. Around transitions:
///
/// * a local time that does not exist (in the spring-forward gap, e.g. 02:30 on the
///   last Sunday of March in Europe/Paris) fires at the first instant after the gap,
///   i.e. the wall time shifted by the gap length: 02:30 fires at 03:30 CEST;
/// * a local time that exists twice (in the fall-back fold, e.g. 02:30 on the last
///   Sunday of October in Europe/Paris) fires once, at its first occurrence (02:30
///   CEST, the earlier, summer-time offset).
///
/// Two schedule times that land on the same instant (02:30 shifted to 03:30, and
/// 03:30 itself) fire once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// The normalized source text.
    text: String,
    zone: Tz,
    /// Bit `n` set: second `n` (0-59) fires.
    seconds: u64,
    /// Bit `n` set: minute `n` (0-59).
    minutes: u64,
    /// Bit `n` set: hour `n` (0-23).
    hours: u32,
    /// Bit `n` set: day of month `n` (1-31).
    days_of_month: u32,
    /// Bit `n` set: month `n` (1-12).
    months: u16,
    /// Bit `n` set: day of week `n` (0 = Sunday .. 6 = Saturday).
    days_of_week: u8,
    /// Whether the day-of-month field starts with `*` (Vixie cron's rule for combining days).
    dom_star: bool,
    /// Whether the day-of-week field starts with `*`.
    dow_star: bool,
}

impl Calendar {
    /// Parses a calendar expression; the error is a human sentence naming the problem.
    ///
    /// ```
    /// use sagaflow_definition::Calendar;
    ///
    /// let monday = Calendar::parse("every Monday 09:00 Europe/Paris").unwrap();
    /// assert_eq!(monday.zone(), "Europe/Paris");
    /// let cron = Calendar::parse("*/15 * * * * Asia/Tokyo").unwrap();
    /// assert_eq!(cron.to_string(), "*/15 * * * * Asia/Tokyo");
    /// assert_eq!(
    ///     Calendar::parse("every day 25:00 UTC").unwrap_err(),
    ///     "invalid time `25:00`: the hour must be between 00 and 23"
    /// );
    /// ```
    pub fn parse(text: &str) -> Result<Calendar, String> {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        match tokens.first() {
            None => Err("the calendar expression is empty".to_owned()),
            Some(first) if first.eq_ignore_ascii_case("every") => parse_every(&tokens),
            Some(_) => parse_cron(&tokens),
        }
    }

    /// First firing instant strictly after `after_ms` (epoch ms UTC), or None if there is none.
    ///
    /// The search looks 30 years ahead; every calendar accepted by [`Calendar::parse`]
    /// fires far more often than that except for contrived cron day combinations, and
    /// instants at the edge of the representable range (around year 262000) give `None`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
        let times = self.times();
        // A time on the previous local date can land after `after` when it is shifted
        // across midnight by a gap, so the search starts one day early.
        let mut date = after.with_timezone(&self.zone).date_naive().pred_opt()?;
        let mut best: Option<i64> = None;
        // Once something fires, the next date is checked too: a shifted time of one
        // date can come after an early time of the next.
        let mut last_date: Option<NaiveDate> = None;
        for _ in 0..HORIZON_DAYS {
            if last_date.is_some_and(|last| date > last) {
                break;
            }
            if self.matches_date(date) && !ends_before(date, after_ms) {
                if let Some(instant) = self.first_on(date, after_ms, &times) {
                    best = Some(best.map_or(instant, |best| best.min(instant)));
                    if last_date.is_none() {
                        last_date = date.succ_opt();
                    }
                }
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        best
    }

    /// The IANA name of the zone, e.g. `Europe/Paris` or `UTC`.
    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    /// The firing times of a day, ascending.
    fn times(&self) -> Vec<(u32, u32, u32)> {
        let mut times = Vec::new();
        for hour in bits(u64::from(self.hours), 0, 23) {
            for minute in bits(self.minutes, 0, 59) {
                for second in bits(self.seconds, 0, 59) {
                    times.push((hour, minute, second));
                }
            }
        }
        times
    }

    fn matches_date(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The earliest instant after `after_ms` among the firing times of `date`.
    fn first_on(&self, date: NaiveDate, after_ms: i64, times: &[(u32, u32, u32)]) -> Option<i64> {
        // Without an offset change nearby, instants grow with the wall time, so the
        // first one after `after_ms` is the answer; otherwise a shifted time may
        // overtake later ones and every time is considered.
        let monotonic = !self.offset_changes_near(date);
        let mut best: Option<i64> = None;
        for &(hour, minute, second) in times {
            let Some(local) = date.and_hms_opt(hour, minute, second) else {
                continue;
            };
            let Some(instant) = self.resolve(local) else {
                continue;
            };
            if instant > after_ms {
                best = Some(best.map_or(instant, |best| best.min(instant)));
                if monotonic {
                    break;
                }
            }
        }
        best
    }

    /// Whether the zone's offset changes within a day of `date`.
    fn offset_changes_near(&self, date: NaiveDate) -> bool {
        let offset_at = |days: i64| {
            let probe = date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() + days * 43_200;
            let instant = DateTime::<Utc>::from_timestamp(probe, 0)?;
            Some(
                self.zone
                    .offset_from_utc_datetime(&instant.naive_utc())
                    .fix()
                    .local_minus_utc(),
            )
        };
        let first = offset_at(-2);
        (-1..=4).any(|half_days| offset_at(half_days) != first)
    }

    /// The instant a local wall time fires at, following the DST rules of [`Calendar`].
    fn resolve(&self, local: NaiveDateTime) -> Option<i64> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(instant) => Some(instant.timestamp_millis()),
            LocalResult::Ambiguous(earliest, _) => Some(earliest.timestamp_millis()),
            LocalResult::None => {
                // In a gap: read the wall time with the offset in force before the
                // gap, which shifts it forward by the gap's length.
                let gap = GapInfo::new(&local, &self.zone)?;
                match gap.begin {
                    Some((_, before)) => {
                        let offset_ms = i64::from(before.fix().local_minus_utc()) * 1000;
                        Some(local.and_utc().timestamp_millis() - offset_ms)
                    }
                    None => gap.end.map(|end| end.timestamp_millis()),
                }
            }
        }
    }
}

impl fmt::Display for Calendar {
    /// The normalized source text: single spaces, the zone's canonical name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether every wall time of `date`, in any zone and however shifted by a gap, is
/// at or before `after_ms`: UTC offsets lie within ±14 hours and gaps last at most a
/// few hours, so 18 hours past the date's end (read as UTC) is a safe bound.
fn ends_before(date: NaiveDate, after_ms: i64) -> bool {
    date.succ_opt()
        .and_then(|next| next.and_hms_opt(0, 0, 0))
        .is_some_and(|end| end.and_utc().timestamp_millis() + 18 * 3_600_000 <= after_ms)
}

/// The set bits of `mask` between `low` and `high`, ascending.
fn bits(mask: u64, low: u32, high: u32) -> impl Iterator<Item = u32> {
    (low..=high).filter(move |bit| mask & (1 << bit) != 0)
}

/// A mask with bits `low..=high` set.
fn range_mask(low: u32, high: u32) -> u64 {
    (low..=high).fold(0, |mask, bit| mask | (1 << bit))
}

fn parse_every(tokens: &[&str]) -> Result<Calendar, String> {
    let format = "write e.g. `every Monday 09:00 Europe/Paris` or `every day at 08:30 UTC`";
    let Some(time_index) = tokens
        .iter()
        .position(|token| token.contains(':') && token.starts_with(|c: char| c.is_ascii_digit()))
    else {
        return Err(format!("missing the time of day (HH:MM); {format}"));
    };
    let mut day_tokens = &tokens[1..time_index];
    if let Some((last, rest)) = day_tokens.split_last() {
        if last.eq_ignore_ascii_case("at") {
            day_tokens = rest;
        }
    }
    if day_tokens.is_empty() {
        return Err(format!(
            "missing the days after `every`: use `day`, `weekday`, `weekend`, a weekday such as `Monday`, or a list like `Mon,Wed,Fri`; {format}"
        ));
    }
    let mut days_of_week = 0u8;
    for day in day_tokens.iter().flat_map(|token| token.split(',')) {
        if day.is_empty() {
            continue;
        }
        days_of_week |= every_days(day)?;
    }
    if days_of_week == 0 {
        return Err(format!("missing the days after `every`; {format}"));
    }
    let time = tokens[time_index];
    let (hour, minute, second) = parse_time(time)?;
    let zone = match &tokens[time_index + 1..] {
        [] => {
            return Err(format!(
                "missing the time zone after `{time}`; add an IANA zone such as `Europe/Paris` or `UTC`"
            ))
        }
        [zone] => parse_zone(zone)?,
        [zone, extra, ..] => {
            return Err(format!(
                "unexpected `{extra}` after the time zone `{zone}`; the zone comes last and one time per expression is supported"
            ))
        }
    };
    let mut words: Vec<&str> = tokens[..time_index].to_vec();
    words.push(time);
    words.push(zone.name());
    Ok(Calendar {
        text: words.join(" "),
        zone,
        seconds: 1 << second,
        minutes: 1 << minute,
        hours: 1 << hour,
        days_of_month: u32::try_from(range_mask(1, 31)).unwrap_or(u32::MAX),
        months: u16::try_from(range_mask(1, 12)).unwrap_or(u16::MAX),
        days_of_week,
        dom_star: true,
        dow_star: days_of_week == 0b111_1111,
    })
}

/// The weekdays one word of an `every` expression stands for, as a day-of-week mask.
fn every_days(word: &str) -> Result<u8, String> {
    let lower = word.to_ascii_lowercase();
    match lower.as_str() {
        "day" => return Ok(0b111_1111),
        "weekday" => return Ok(0b011_1110),
        "weekend" => return Ok(0b100_0001),
        _ => {}
    }
    if let Some(index) = DAY_NAMES
        .iter()
        .position(|(long, short)| lower == *long || lower == *short)
    {
        return Ok(1 << index);
    }
    let mut candidates: Vec<&str> = vec!["day", "weekday", "weekend"];
    candidates.extend(DAY_NAMES.iter().flat_map(|(long, short)| [*long, *short]));
    let suggestion = candidates
        .iter()
        .map(|candidate| (edit_distance(&lower, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| capitalize(candidate));
    let known = "use `day`, `weekday`, `weekend`, a weekday such as `Monday` or `Mon`, or a list like `Mon,Wed,Fri`";
    Err(match suggestion {
        Some(suggestion) => format!("unknown day `{word}`; did you mean `{suggestion}`?"),
        None => format!("unknown day `{word}`; {known}"),
    })
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_uppercase().to_string() + chars.as_str()
    })
}

/// `H:MM`, `HH:MM` or `HH:MM:SS`.
fn parse_time(text: &str) -> Result<(u32, u32, u32), String> {
    let malformed =
        || format!("invalid time `{text}`; write it as HH:MM or HH:MM:SS, e.g. `09:00`");
    let parts: Vec<&str> = text.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(malformed());
    }
    let number = |part: &str, max_len: usize| -> Result<u32, String> {
        if part.is_empty() || part.len() > max_len || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        part.parse().map_err(|_| malformed())
    };
    let hour = number(parts[0], 2)?;
    let minute = number(parts[1], 2)?;
    if parts[1].len() != 2 {
        return Err(malformed());
    }
    let second = match parts.get(2) {
        Some(part) if part.len() == 2 => number(part, 2)?,
        Some(_) => return Err(malformed()),
        None => 0,
    };
    if hour > 23 {
        return Err(format!(
            "invalid time `{text}`: the hour must be between 00 and 23"
        ));
    }
    if minute > 59 {
        return Err(format!(
            "invalid time `{text}`: the minute must be between 00 and 59"
        ));
    }
    if second > 59 {
        return Err(format!(
            "invalid time `{text}`: the second must be between 00 and 59"
        ));
    }
    Ok((hour, minute, second))
}

/// An IANA zone name; an exact match, else a case-insensitive one, else an error with a suggestion.
fn parse_zone(text: &str) -> Result<Tz, String> {
    if let Ok(zone) = text.parse::<Tz>() {
        return Ok(zone);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(zone) = TZ_VARIANTS
        .iter()
        .find(|zone| zone.name().to_ascii_lowercase() == lower)
    {
        return Ok(*zone);
    }
    if text.starts_with(['+', '-']) || text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a time zone; fixed offsets are not supported, use an IANA zone such as `Europe/Paris` or `UTC`"
        ));
    }
    let suggestion = TZ_VARIANTS
        .iter()
        .map(|zone| {
            (
                edit_distance(&lower, &zone.name().to_ascii_lowercase()),
                zone,
            )
        })
        .filter(|(distance, zone)| *distance <= (zone.name().len() / 4).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, zone)| zone.name());
    Err(match suggestion {
        Some(suggestion) => format!("unknown time zone `{text}`; did you mean `{suggestion}`?"),
        None => format!(
            "unknown time zone `{text}`; use an IANA zone name such as `Europe/Paris`, `America/New_York` or `UTC`"
        ),
    })
}

/// One field of a cron expression.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for values starting at `min` (months) or at 0 (days of week).
    names: &'static [(&'static str, &'static str)],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
};
/// Days of week are 0-7 where 7 is Sunday again; folded into 0 after parsing.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &DAY_NAMES,
};

fn parse_cron(tokens: &[&str]) -> Result<Calendar, String> {
    let format = "a cron expression is `minute hour day-of-month month day-of-week` followed by a time zone, e.g. `0 9 * * MON Europe/Paris`";
    if tokens.len() != 6 {
        if tokens.iter().any(|token| token.contains(':')) {
            return Err(format!(
                "`{}` is not a calendar expression; did you mean `every {}`?",
                tokens.join(" "),
                tokens.join(" ")
            ));
        }
        let ends_with_zone = tokens.last().is_some_and(|last| parse_zone(last).is_ok());
        if !ends_with_zone && tokens.len() == 5 {
            return Err(format!(
                "missing the time zone after the 5 cron fields; add an IANA zone such as `Europe/Paris` or `UTC`: {format}"
            ));
        }
        let found = if ends_with_zone {
            let fields = tokens.len() - 1;
            let extra = if fields > 5 {
                " (seconds and years are not supported)"
            } else {
                ""
            };
            format!(
                "found {fields} field{} before the zone{extra}",
                if fields == 1 { "" } else { "s" }
            )
        } else {
            format!("found {} words and no known zone at the end", tokens.len())
        };
        return Err(format!(
            "expected 5 cron fields and a time zone, {found}; {format}"
        ));
    }
    let (minutes, _) = parse_field(tokens[0], &MINUTE)?;
    let (hours, _) = parse_field(tokens[1], &HOUR)?;
    let (days_of_month, dom_star) = parse_field(tokens[2], &DAY_OF_MONTH)?;
    let (months, _) = parse_field(tokens[3], &MONTH)?;
    let (days_of_week, dow_star) = parse_field(tokens[4], &DAY_OF_WEEK)?;
    let zone = parse_zone(tokens[5])?;
    // Sunday is both 0 and 7.
    let days_of_week = (days_of_week | (days_of_week >> 7)) & 0x7f;
    let calendar = Calendar {
        text: format!("{} {}", tokens[..5].join(" "), zone.name()),
        zone,
        seconds: 1,
        minutes,
        hours: u32::try_from(hours).unwrap_or(u32::MAX),
        days_of_month: u32::try_from(days_of_month).unwrap_or(u32::MAX),
        months: u16::try_from(months).unwrap_or(u16::MAX),
        days_of_week: u8::try_from(days_of_week).unwrap_or(u8::MAX),
        dom_star,
        dow_star,
    };
    // With the "both must match" rule, a day of month that no selected month has
    // would never fire (e.g. `0 0 30 2 *`).
    if calendar.dom_star || calendar.dow_star {
        let possible = bits(u64::from(calendar.months), 1, 12).any(|month| {
            bits(u64::from(calendar.days_of_month), 1, 31)
                .any(|day| day <= MONTH_DAYS[month as usize - 1])
        });
        if !possible {
            return Err(format!(
                "`{}` never fires: none of the selected months has day {}",
                calendar.text, tokens[2]
            ));
        }
    }
    Ok(calendar)
}

/// A cron field as a bit mask, and whether it starts with `*`.
fn parse_field(text: &str, field: &Field) -> Result<(u64, bool), String> {
    let name = field.name;
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("empty item in the {name} field `{text}`"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|step| *step >= 1)
                    .ok_or_else(|| {
                        format!("invalid step `/{step}` in the {name} field; a step is a whole number of at least 1, e.g. `*/15`")
                    })?;
                (range, Some(step))
            }
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let low = field_value(low, field)?;
            let mut high = field_value(high, field)?;
            // `FRI-SUN`: Sunday as the end of a range is day 7.
            if field.name == DAY_OF_WEEK.name && high == 0 && low > 0 {
                high = 7;
            }
            if low > high {
                return Err(format!(
                    "the range `{range}` in the {name} field goes backwards; write the smaller value first or list the values"
                ));
            }
            (low, high)
        } else {
            let value = field_value(range, field)?;
            // `5/15` means from 5 to the end, every 15.
            (value, if step.is_some() { field.max } else { value })
        };
        let step = step.unwrap_or(1);
        let mut value = Some(low);
        while let Some(current) = value.filter(|value| *value <= high) {
            mask |= 1 << current;
            value = current.checked_add(step);
        }
    }
    Ok((mask, text.starts_with('*')))
}

/// A number or a name (for months and days of week) within the field's range.
fn field_value(text: &str, field: &Field) -> Result<u32, String> {
    let name = field.name;
    if text.is_empty() {
        return Err(format!("missing a value in a range of the {name} field"));
    }
    let range = format!("{}-{}", field.min, field.max);
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (field.min..=field.max).contains(&value) => Ok(value),
            _ => Err(format!(
                "`{text}` is out of range for the {name} field ({range})"
            )),
        };
    }
    let lower = text.to_ascii_lowercase();
    if let Some(index) = field
        .names
        .iter()
        .position(|(long, short)| lower == *long || lower == *short)
    {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        // Month names start at 1, day names at 0 (Sunday).
        return Ok(index + if field.min == 1 { 1 } else { 0 });
    }
    let help = match field.names.first() {
        Some(_) if field.min == 1 => format!("use {range} or JAN..DEC"),
        Some(_) => format!("use {range} (0 and 7 are Sunday) or SUN, MON, TUE, WED, THU, FRI, SAT"),
        None => format!("use a number in {range}"),
    };
    Err(format!("invalid {name} `{text}`; {help}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_masks() {
        assert_eq!(parse_field("*", &HOUR).unwrap(), (range_mask(0, 23), true));
        assert_eq!(
            parse_field("*/15", &MINUTE).unwrap().0,
            1 | 1 << 15 | 1 << 30 | 1 << 45
        );
        assert_eq!(
            parse_field("1-5", &DAY_OF_WEEK).unwrap(),
            (0b11_1110, false)
        );
        assert_eq!(parse_field("MON-FRI", &DAY_OF_WEEK).unwrap().0, 0b11_1110);
        assert_eq!(parse_field("FRI-SUN", &DAY_OF_WEEK).unwrap().0, 0b1110_0000);
        assert_eq!(
            parse_field("jan,Jul,DEC", &MONTH).unwrap().0,
            1 << 1 | 1 << 7 | 1 << 12
        );
        assert_eq!(
            parse_field("5/20", &MINUTE).unwrap().0,
            1 << 5 | 1 << 25 | 1 << 45
        );
        assert_eq!(
            parse_field("0-30/10,59", &MINUTE).unwrap().0,
            1 | 1 << 10 | 1 << 20 | 1 << 30 | 1 << 59
        );
    }

    #[test]
    fn times_are_sorted() {
        let calendar = Calendar::parse("30,0 9,8 * * * UTC").unwrap();
        assert_eq!(
            calendar.times(),
            [(8, 0, 0), (8, 30, 0), (9, 0, 0), (9, 30, 0)]
        );
    }

    #[test]
    fn zone_names_are_matched_leniently_and_suggested() {
        assert_eq!(parse_zone("europe/paris").unwrap().name(), "Europe/Paris");
        assert_eq!(parse_zone("utc").unwrap().name(), "UTC");
        assert_eq!(
            parse_zone("Europe/Pariss").unwrap_err(),
            "unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?"
        );
        assert!(parse_zone("+01:00").unwrap_err().contains("fixed offsets"));
        assert!(parse_zone("Mars/Olympus_Mons")
            .unwrap_err()
            .contains("IANA"));
    }
}
