//! Calendar expressions: parsing, and next firing instants across DST, month ends and leap days.

use chrono::{DateTime, SecondsFormat, Utc};
use sagaflow_definition::Calendar;

fn calendar(text: &str) -> Calendar {
    Calendar::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Epoch ms of an RFC 3339 instant.
fn ms(instant: &str) -> i64 {
    DateTime::parse_from_rfc3339(instant)
        .unwrap_or_else(|e| panic!("{instant}: {e}"))
        .timestamp_millis()
}

/// An epoch ms instant in UTC, e.g. `2026-03-29T01:30:00Z`.
fn utc(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("in range")
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The next firing of `text` strictly after `after`, in UTC.
#[track_caller]
fn next(text: &str, after: &str) -> String {
    let calendar = calendar(text);
    utc(calendar
        .next_after(ms(after))
        .unwrap_or_else(|| panic!("{text} never fires after {after}")))
}

/// The first `count` firings of `text` after `after`, in UTC.
fn firings(text: &str, after: &str, count: usize) -> Vec<String> {
    let calendar = calendar(text);
    let mut at = ms(after);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        at = calendar
            .next_after(at)
            .unwrap_or_else(|| panic!("{text} stopped after {}", utc(at)));
        out.push(utc(at));
    }
    out
}

#[track_caller]
fn error(text: &str) -> String {
    match Calendar::parse(text) {
        Ok(calendar) => panic!("{text} parsed as {calendar:?}"),
        Err(error) => error,
    }
}

// Europe/Paris in 2026: CET (+01:00) until Sunday 29 March 02:00, which becomes
// 03:00 CEST (+02:00); back to CET on Sunday 25 October at 03:00 CEST -> 02:00 CET.

#[test]
fn paris_daily_0230_across_spring_forward_fires_after_the_gap() {
    assert_eq!(
        firings("every day 02:30 Europe/Paris", "2026-03-27T12:00:00Z", 4),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:30:00Z", // 02:30 does not exist: 03:30 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:30:00Z",
        ]
    );
    // The cron form behaves the same.
    assert_eq!(
        firings("30 2 * * * Europe/Paris", "2026-03-27T12:00:00Z", 3),
        firings("every day 02:30 Europe/Paris", "2026-03-27T12:00:00Z", 3)
    );
    // Asked just after the shifted firing's nominal time but before it.
    assert_eq!(
        next("every day 02:30 Europe/Paris", "2026-03-29T01:00:00Z"),
        "2026-03-29T01:30:00Z"
    );
}

#[test]
fn paris_daily_0230_across_fall_back_fires_once_at_the_first_occurrence() {
    assert_eq!(
        firings("every day 02:30 Europe/Paris", "2026-10-23T12:00:00Z", 4),
        [
            "2026-10-24T00:30:00Z", // 02:30 CEST
            "2026-10-25T00:30:00Z", // first 02:30, still CEST; not again at 01:30Z
            "2026-10-26T01:30:00Z", // 02:30 CET
            "2026-10-27T01:30:00Z",
        ]
    );
    // Between the two occurrences of 02:30, the next firing is the next day's.
    assert_eq!(
        next("every day 02:30 Europe/Paris", "2026-10-25T00:45:00Z"),
        "2026-10-26T01:30:00Z"
    );
    assert_eq!(
        next("every day 02:30 Europe/Paris", "2026-10-25T01:30:00Z"),
        "2026-10-26T01:30:00Z"
    );
}

#[test]
fn paris_weekly_monday_0900_is_0800_utc_in_winter_and_0700_in_summer() {
    let spring = [
        "2026-03-16T08:00:00Z",
        "2026-03-23T08:00:00Z",
        "2026-03-30T07:00:00Z",
        "2026-04-06T07:00:00Z",
    ];
    assert_eq!(
        firings("every Monday 09:00 Europe/Paris", "2026-03-10T00:00:00Z", 4),
        spring
    );
    assert_eq!(
        firings("0 9 * * MON Europe/Paris", "2026-03-10T00:00:00Z", 4),
        spring
    );
    assert_eq!(
        firings("every mon 09:00 Europe/Paris", "2026-10-13T00:00:00Z", 3),
        [
            "2026-10-19T07:00:00Z",
            "2026-10-26T08:00:00Z",
            "2026-11-02T08:00:00Z",
        ]
    );
}

#[test]
fn a_year_of_weekly_firings_stays_on_monday_0900_paris_time() {
    let calendar = calendar("every Monday 09:00 Europe/Paris");
    let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
    let mut at = ms("2026-01-01T00:00:00Z");
    for _ in 0..53 {
        let fired = calendar.next_after(at).unwrap();
        let local = DateTime::<Utc>::from_timestamp_millis(fired)
            .unwrap()
            .with_timezone(&paris);
        assert_eq!(
            local.format("%a %H:%M:%S").to_string(),
            "Mon 09:00:00",
            "{local}"
        );
        let gap_hours = (fired - at) / 3_600_000;
        if at != ms("2026-01-01T00:00:00Z") {
            assert!(
                (167..=169).contains(&gap_hours),
                "{gap_hours}h before {local}"
            );
        }
        at = fired;
    }
}

#[test]
fn cron_hourly_and_quarter_hourly_across_paris_transitions() {
    // Spring: local 02:00 does not exist, shifts to 03:00 CEST = 01:00Z, which is
    // also when 03:00 fires; the two coincide and fire once.
    assert_eq!(
        firings("0 * * * * Europe/Paris", "2026-03-28T23:30:00Z", 4),
        [
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T01:00:00Z", // 02:00 -> 03:00 CEST, and 03:00 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
            "2026-03-29T03:00:00Z",
        ]
    );
    assert_eq!(
        firings("*/15 2 * * * Europe/Paris", "2026-03-29T00:50:00Z", 4),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:15:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T01:45:00Z",
        ]
    );
    // Fall: the repeated hour 02:00-03:00 fires only in its first pass.
    assert_eq!(
        firings("0,30 * * * * Europe/Paris", "2026-10-24T23:50:00Z", 6),
        [
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T02:00:00Z", // 03:00 CET (02:00 and 02:30 CET skipped)
            "2026-10-25T02:30:00Z",
            "2026-10-25T03:00:00Z",
            "2026-10-25T03:30:00Z",
        ]
    );
}

// America/New_York in 2026: EDT from Sunday 8 March 02:00 EST (-05:00 -> -04:00),
// back to EST on Sunday 1 November 02:00 EDT -> 01:00 EST.

#[test]
fn new_york_gap_and_fold() {
    assert_eq!(
        firings(
            "every day 02:30 America/New_York",
            "2026-03-07T07:30:00Z",
            2
        ),
        [
            "2026-03-08T07:30:00Z", // 02:30 missing -> 03:30 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
    assert_eq!(
        firings(
            "every day 01:30 America/New_York",
            "2026-10-31T12:00:00Z",
            2
        ),
        [
            "2026-11-01T05:30:00Z", // first 01:30, EDT
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]
    );
    assert_eq!(
        firings(
            "every weekday at 09:00 America/New_York",
            "2026-03-05T15:00:00Z",
            3
        ),
        [
            "2026-03-06T14:00:00Z", // Friday, EST
            "2026-03-09T13:00:00Z", // Monday, EDT
            "2026-03-10T13:00:00Z",
        ]
    );
}

// Australia/Lord_Howe shifts by 30 minutes: +10:30 standard, +11:00 in summer
// (from the first Sunday of October at 02:00 -> 02:30, until the first Sunday of
// April at 02:00 -> 01:30).

#[test]
fn lord_howe_half_hour_gap_and_fold() {
    assert_eq!(
        firings(
            "every day 02:15 Australia/Lord_Howe",
            "2026-10-02T00:00:00Z",
            3
        ),
        [
            "2026-10-02T15:45:00Z", // Oct 3 02:15 +10:30
            "2026-10-03T15:45:00Z", // Oct 4 02:15 missing -> 02:45 +11:00
            "2026-10-04T15:15:00Z", // Oct 5 02:15 +11:00
        ]
    );
    assert_eq!(
        firings(
            "every day 01:45 Australia/Lord_Howe",
            "2026-04-03T00:00:00Z",
            3
        ),
        [
            "2026-04-03T14:45:00Z", // Apr 4 01:45 +11:00
            "2026-04-04T14:45:00Z", // Apr 5 01:45, first pass (+11:00), not again at 15:15Z
            "2026-04-05T15:15:00Z", // Apr 6 01:45 +10:30
        ]
    );
}

#[test]
fn zones_without_dst() {
    assert_eq!(
        firings("*/15 * * * * Asia/Tokyo", "2026-06-01T00:07:00Z", 3),
        [
            "2026-06-01T00:15:00Z",
            "2026-06-01T00:30:00Z",
            "2026-06-01T00:45:00Z",
        ]
    );
    assert_eq!(
        next("every day 09:00 Asia/Kolkata", "2026-01-01T00:00:00Z"),
        "2026-01-01T03:30:00Z"
    );
    assert_eq!(
        firings("30 8 1 * * UTC", "2026-01-15T00:00:00Z", 3),
        [
            "2026-02-01T08:30:00Z",
            "2026-03-01T08:30:00Z",
            "2026-04-01T08:30:00Z",
        ]
    );
}

#[test]
fn next_after_is_strictly_after() {
    for text in [
        "every day 09:00 UTC",
        "0 9 * * MON Europe/Paris",
        "*/15 * * * * Asia/Tokyo",
        "every day 02:30 Europe/Paris",
    ] {
        let calendar = calendar(text);
        let mut at = ms("2026-03-27T00:00:00Z");
        for _ in 0..20 {
            let fired = calendar.next_after(at).unwrap();
            assert!(fired > at, "{text}");
            // Asking at the firing instant gives the following one; a millisecond
            // before gives the firing itself.
            assert_eq!(calendar.next_after(fired - 1), Some(fired), "{text}");
            at = fired;
        }
    }
    assert_eq!(
        next("every day 09:00 UTC", "2026-05-01T09:00:00Z"),
        "2026-05-02T09:00:00Z"
    );
}

#[test]
fn month_ends_and_leap_days() {
    assert_eq!(
        firings("0 0 31 * * UTC", "2026-01-31T00:00:00Z", 6),
        [
            "2026-03-31T00:00:00Z",
            "2026-05-31T00:00:00Z",
            "2026-07-31T00:00:00Z",
            "2026-08-31T00:00:00Z",
            "2026-10-31T00:00:00Z",
            "2026-12-31T00:00:00Z",
        ]
    );
    assert_eq!(
        firings("0 0 29 2 * UTC", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
    // 2100 is not a leap year.
    assert_eq!(
        next("0 0 29 2 * UTC", "2096-03-01T00:00:00Z"),
        "2104-02-29T00:00:00Z"
    );
    assert_eq!(
        next("0 12 30 * * Europe/Paris", "2026-01-30T12:00:00Z"),
        "2026-03-30T10:00:00Z"
    );
}

#[test]
fn lists_ranges_steps_and_names() {
    assert_eq!(
        firings("0,30 9-10 * * MON-FRI UTC", "2026-06-05T09:45:00Z", 5),
        [
            "2026-06-05T10:00:00Z", // Friday
            "2026-06-05T10:30:00Z",
            "2026-06-08T09:00:00Z", // Monday
            "2026-06-08T09:30:00Z",
            "2026-06-08T10:00:00Z",
        ]
    );
    assert_eq!(
        firings("5/20 0 * * * UTC", "2026-06-01T00:00:00Z", 4),
        [
            "2026-06-01T00:05:00Z",
            "2026-06-01T00:25:00Z",
            "2026-06-01T00:45:00Z",
            "2026-06-02T00:05:00Z",
        ]
    );
    assert_eq!(
        firings("0 9 1 jan,Jul * UTC", "2026-02-01T00:00:00Z", 2),
        ["2026-07-01T09:00:00Z", "2027-01-01T09:00:00Z"]
    );
    // Day of week 7 and SUN are Sunday; FRI-SUN wraps to Sunday.
    assert_eq!(
        next("0 0 * * 7 UTC", "2026-06-01T00:00:00Z"),
        "2026-06-07T00:00:00Z"
    );
    assert_eq!(
        firings("0 0 * * FRI-SUN UTC", "2026-06-01T00:00:00Z", 3),
        [
            "2026-06-05T00:00:00Z",
            "2026-06-06T00:00:00Z",
            "2026-06-07T00:00:00Z",
        ]
    );
    assert_eq!(
        firings("every Mon,Wed,Fri 08:15:30 UTC", "2026-06-01T09:00:00Z", 3),
        [
            "2026-06-03T08:15:30Z",
            "2026-06-05T08:15:30Z",
            "2026-06-08T08:15:30Z",
        ]
    );
    assert_eq!(
        firings("every weekend 10:00 UTC", "2026-06-01T00:00:00Z", 3),
        [
            "2026-06-06T10:00:00Z",
            "2026-06-07T10:00:00Z",
            "2026-06-13T10:00:00Z",
        ]
    );
}

#[test]
fn day_of_month_and_day_of_week_combine_as_in_vixie_cron() {
    // Both restricted: either matches (the 13th, or any Friday).
    assert_eq!(
        firings("0 0 13 * FRI UTC", "2026-06-01T00:00:00Z", 4),
        [
            "2026-06-05T00:00:00Z", // Friday
            "2026-06-12T00:00:00Z", // Friday
            "2026-06-13T00:00:00Z", // the 13th, a Saturday
            "2026-06-19T00:00:00Z", // Friday
        ]
    );
    // A field starting with `*` is "unrestricted": both must match (1st, 11th,
    // 21st or 31st that is a Monday).
    assert_eq!(
        firings("0 0 */10 * MON UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-05-11T00:00:00Z", "2026-06-01T00:00:00Z"]
    );
}

#[test]
fn display_is_the_normalized_text_and_zone_is_canonical() {
    let calendar = calendar("  every   Monday  09:00   europe/paris ");
    assert_eq!(calendar.to_string(), "every Monday 09:00 Europe/Paris");
    assert_eq!(calendar.zone(), "Europe/Paris");
    assert_eq!(
        Calendar::parse("0  9 * * MON   utc").unwrap().to_string(),
        "0 9 * * MON UTC"
    );
    assert_eq!(
        Calendar::parse("every day at 09:00 UTC").unwrap().zone(),
        "UTC"
    );
    assert_eq!(
        calendar,
        Calendar::parse("every Monday 09:00 Europe/Paris").unwrap()
    );
}

#[test]
fn searches_are_bounded() {
    let daily = calendar("every day 09:00 UTC");
    assert_eq!(daily.next_after(i64::MAX), None);
    assert_eq!(daily.next_after(i64::MIN), None);
    // February 29th falling on a Sunday (day-of-week `*/7` = Sunday, combined with
    // "and"): 2088, then not before 2128, beyond the 30-year horizon.
    let rare = calendar("0 0 29 2 */7 UTC");
    assert_eq!(
        utc(rare.next_after(ms("2070-01-01T00:00:00Z")).unwrap()),
        "2088-02-29T00:00:00Z"
    );
    assert_eq!(rare.next_after(ms("2089-01-01T00:00:00Z")), None);
}

#[test]
fn bad_expressions_are_explained() {
    assert_eq!(error(""), "the calendar expression is empty");
    assert_eq!(
        error("every Monday 09:00 Mars/Olympus"),
        "unknown time zone `Mars/Olympus`; use an IANA zone name such as `Europe/Paris`, `America/New_York` or `UTC`"
    );
    assert_eq!(
        error("every Monday 09:00 Europe/Pariss"),
        "unknown time zone `Europe/Pariss`; did you mean `Europe/Paris`?"
    );
    assert_eq!(
        error("every day 25:00 UTC"),
        "invalid time `25:00`: the hour must be between 00 and 23"
    );
    assert_eq!(
        error("every day 09:60 UTC"),
        "invalid time `09:60`: the minute must be between 00 and 59"
    );
    assert!(error("every day 9:5 UTC").contains("HH:MM"));
    assert_eq!(
        error("every Mondya 09:00 UTC"),
        "unknown day `Mondya`; did you mean `Monday`?"
    );
    assert!(error("every fortnight 09:00 UTC").starts_with("unknown day `fortnight`; use `day`"));
    assert!(error("every Monday UTC").starts_with("missing the time of day"));
    assert!(error("every 09:00 UTC").starts_with("missing the days after `every`"));
    assert!(error("every Monday 09:00").starts_with("missing the time zone after `09:00`"));
    assert!(error("every Monday 09:00 UTC 17:00").starts_with("unexpected `17:00`"));
    assert!(error("every Monday 09:00 +01:00").contains("fixed offsets are not supported"));
    assert_eq!(
        error("Monday 09:00 UTC"),
        "`Monday 09:00 UTC` is not a calendar expression; did you mean `every Monday 09:00 UTC`?"
    );
    assert!(error("0 9 * * MON").starts_with("missing the time zone after the 5 cron fields"));
    assert!(error("0 9 * * UTC").contains("found 4 fields before the zone"));
    assert!(error("0 0 9 * * MON UTC").contains("seconds and years are not supported"));
    assert_eq!(
        error("61 * * * * UTC"),
        "`61` is out of range for the minute field (0-59)"
    );
    assert_eq!(
        error("0 24 * * * UTC"),
        "`24` is out of range for the hour field (0-23)"
    );
    assert_eq!(
        error("0 9 * * XYZ UTC"),
        "invalid day-of-week `XYZ`; use 0-7 (0 and 7 are Sunday) or SUN, MON, TUE, WED, THU, FRI, SAT"
    );
    assert_eq!(
        error("0 9 * FOO * UTC"),
        "invalid month `FOO`; use 1-12 or JAN..DEC"
    );
    assert!(error("0 9 0 * * UTC").contains("out of range for the day-of-month field (1-31)"));
    assert!(error("*/0 * * * * UTC").contains("invalid step `/0`"));
    assert!(error("5-2 * * * * UTC").contains("goes backwards"));
    assert!(error("1,,2 * * * * UTC").contains("empty item"));
    assert_eq!(
        error("0 0 30 2 * UTC"),
        "`0 0 30 2 * UTC` never fires: none of the selected months has day 30"
    );
    assert!(error("0 0 31 4,6,9,11 * UTC").contains("never fires"));
}

/// Every firing between `from` and `to`, computed the slow way: resolve every local
/// minute of every day in the zone and keep the matching ones.
fn brute_force(
    zone: &str,
    matches: impl Fn(u32, u32, u32) -> bool,
    from: &str,
    to: &str,
) -> Vec<i64> {
    use chrono::{Datelike, LocalResult, NaiveDate, Offset, TimeZone, Timelike};
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let (from, to) = (ms(from), ms(to));
    let first = DateTime::<Utc>::from_timestamp_millis(from)
        .unwrap()
        .date_naive();
    let last = DateTime::<Utc>::from_timestamp_millis(to)
        .unwrap()
        .date_naive();
    let mut instants = Vec::new();
    let mut date = first.pred_opt().unwrap().pred_opt().unwrap();
    while date <= last.succ_opt().unwrap().succ_opt().unwrap() {
        for minute_of_day in 0..24 * 60 {
            let local = NaiveDate::from_ymd_opt(date.year(), date.month(), date.day())
                .unwrap()
                .and_hms_opt(minute_of_day / 60, minute_of_day % 60, 0)
                .unwrap();
            if !matches(
                local.hour(),
                local.minute(),
                local.date().weekday().num_days_from_sunday(),
            ) {
                continue;
            }
            let instant = match tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
                LocalResult::None => {
                    // The offset a day before, i.e. before the gap.
                    let before = tz
                        .offset_from_utc_datetime(&(local - chrono::Duration::days(1)))
                        .fix()
                        .local_minus_utc();
                    local.and_utc().timestamp_millis() - i64::from(before) * 1000
                }
            };
            if instant > from && instant <= to {
                instants.push(instant);
            }
        }
        date = date.succ_opt().unwrap();
    }
    instants.sort_unstable();
    instants.dedup();
    instants
}

/// Every firing between `from` and `to` by iterating `next_after`.
fn iterated(text: &str, from: &str, to: &str) -> Vec<i64> {
    let calendar = calendar(text);
    let mut at = ms(from);
    let mut out = Vec::new();
    while let Some(next) = calendar.next_after(at).filter(|next| *next <= ms(to)) {
        out.push(next);
        at = next;
    }
    out
}

#[test]
fn next_after_agrees_with_a_brute_force_scan_around_transitions() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "Europe/Paris",
            "2026-03-27T00:00:00Z",
            "2026-04-01T00:00:00Z",
        ),
        (
            "Europe/Paris",
            "2026-10-23T00:00:00Z",
            "2026-10-28T00:00:00Z",
        ),
        (
            "America/New_York",
            "2026-03-06T00:00:00Z",
            "2026-03-10T00:00:00Z",
        ),
        (
            "America/New_York",
            "2026-10-30T00:00:00Z",
            "2026-11-03T00:00:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-04-03T00:00:00Z",
            "2026-04-07T00:00:00Z",
        ),
        (
            "Australia/Lord_Howe",
            "2026-10-02T00:00:00Z",
            "2026-10-06T00:00:00Z",
        ),
        // Transitions at midnight: the gap or fold crosses the date line.
        (
            "America/Santiago",
            "2026-04-03T00:00:00Z",
            "2026-04-07T00:00:00Z",
        ),
        (
            "America/Santiago",
            "2026-09-04T00:00:00Z",
            "2026-09-08T00:00:00Z",
        ),
        (
            "Asia/Beirut",
            "2026-03-27T00:00:00Z",
            "2026-03-31T00:00:00Z",
        ),
        ("Asia/Tokyo", "2026-03-27T00:00:00Z", "2026-03-30T00:00:00Z"),
    ];
    type Matcher = fn(u32, u32, u32) -> bool;
    let expressions: &[(&str, Matcher)] = &[
        ("*/15 * * * *", |_, m, _| m % 15 == 0),
        ("30 2 * * *", |h, m, _| h == 2 && m == 30),
        ("0 0,1,2,3,23 * * *", |h, m, _| {
            m == 0 && [0, 1, 2, 3, 23].contains(&h)
        }),
        ("10,50 0-3 * * SUN", |h, m, d| {
            d == 0 && h <= 3 && (m == 10 || m == 50)
        }),
        ("30 23 * * *", |h, m, _| h == 23 && m == 30),
    ];
    for (zone, from, to) in cases {
        // Each range (but Tokyo's) contains an offset change.
        let tz: chrono_tz::Tz = zone.parse().unwrap();
        let offset = |at: &str| {
            use chrono::Offset;
            DateTime::<Utc>::from_timestamp_millis(ms(at))
                .unwrap()
                .with_timezone(&tz)
                .offset()
                .fix()
        };
        assert_eq!(
            offset(from) == offset(to),
            *zone == "Asia/Tokyo",
            "{zone} {from}"
        );
        for (fields, matches) in expressions {
            let text = format!("{fields} {zone}");
            assert_eq!(
                iterated(&text, from, to)
                    .into_iter()
                    .map(utc)
                    .collect::<Vec<_>>(),
                brute_force(zone, matches, from, to)
                    .into_iter()
                    .map(utc)
                    .collect::<Vec<_>>(),
                "{text} from {from} to {to}"
            );
        }
    }
}

#[test]
fn odd_inputs_are_errors_not_panics() {
    for text in [
        "every",
        "every day",
        "every day 09:00 UTC UTC",
        "every ,,, 09:00 UTC",
        "every day 09:00:60 UTC",
        "every day 9:00:00:00 UTC",
        "every day :00 UTC",
        "every day 0ü:00 UTC",
        "every day 99999999999999999999:00 UTC",
        "* * * * * * *",
        "a-b * * * * UTC",
        "1-/2 * * * * UTC",
        "/ * * * * UTC",
        "*/ * * * * UTC",
        "*/99999999999 * * * * UTC",
        "60-70/5 * * * * UTC",
        "-1 * * * * UTC",
        "1- * * * * UTC",
        "0 0 * 13 * UTC",
        "0 0 * * 8 UTC",
        "0 0 * * MON-SUNDAY- UTC",
        "ü ü ü ü ü ü",
        "0 0 * * * Üτ©",
    ] {
        assert!(Calendar::parse(text).is_err(), "{text} parsed");
    }
    // Large steps are fine: only the first value fires.
    let hourly = calendar("0 */4000000000 * * * UTC");
    assert_eq!(
        utc(hourly.next_after(ms("2026-01-01T00:00:00Z")).unwrap()),
        "2026-01-02T00:00:00Z"
    );
}
