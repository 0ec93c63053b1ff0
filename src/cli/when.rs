//! The times `--time` takes, as milliseconds since the Unix epoch (the
//! unit of record timestamps): a number of milliseconds; an RFC 3339 time
//! (`2026-03-01T12:00:00Z`, `2026-03-01T13:00:00.250+01:00`); a date
//! (`2026-03-01`, midnight UTC); or a time ago (`-15m`, `-2h`, `-30s`,
//! `-1d`). No time zone database: an offset is written out or it is UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// Parses an optional `--time` option, as a usage failure when it is wrong.
pub fn parse_option(text: Option<&str>) -> Result<Option<u64>, super::Failure> {
    text.map(parse).transpose().map_err(super::Failure::Usage)
}

/// Parses `text`, or says which forms are taken.
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let parsed = if let Some(ago) = text.strip_prefix('-') {
        parse_ago(ago)
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        parse_rfc3339(text)
    };
    parsed.ok_or_else(|| {
        format!(
            "--time {text:?}: give milliseconds since the Unix epoch (1767225600000), an RFC 3339 \
             time (2026-01-01T00:00:00Z), a date (2026-01-01) or a time ago (-15m, -2h, -30s, -1d)"
        )
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `15m` as 15 minutes before now.
fn parse_ago(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(now_ms().saturating_sub(number.checked_mul(unit_ms)?))
}

/// Latest year `--time` takes: RFC 3339 writes four digits, and the
/// milliseconds of year 9999 fit an i64 many times over, so no arithmetic
/// below can overflow.
const YEAR_MAX: i64 = 9999;

/// `YYYY-MM-DD[THH:MM:SS[.fff](Z|±HH:MM)]`, each field checked: a date
/// that does not exist (2026-02-31), an hour past 23 or an offset past
/// ±23:59 is refused, not rolled over.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let number = |s: &str, digits: std::ops::RangeInclusive<usize>| -> Option<i64> {
        (digits.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, rest) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (year, month, day) = (
        number(parts.next()?, 4..=4)?,
        number(parts.next()?, 2..=2)?,
        number(parts.next()?, 2..=2)?,
    );
    if parts.next().is_some()
        || !(1..=YEAR_MAX).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
    {
        return None;
    }
    let mut ms = days_from_civil(year, month, day).checked_mul(86_400_000)?;
    if let Some(rest) = rest {
        let (clock, offset_ms) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else {
            let at = rest.rfind(['+', '-'])?;
            let (clock, offset) = rest.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (hours, minutes) = offset.get(1..)?.split_once(':')?;
            let (hours, minutes) = (number(hours, 2..=2)?, number(minutes, 2..=2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            (clock, sign * (hours * 3_600_000 + minutes * 60_000))
        };
        let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let mut hms = whole.split(':');
        let (h, m, s) = (
            number(hms.next()?, 2..=2)?,
            number(hms.next()?, 2..=2)?,
            number(hms.next()?, 2..=2)?,
        );
        // 60: a leap second, as RFC 3339 allows.
        if hms.next().is_some() || h > 23 || m > 59 || s > 60 {
            return None;
        }
        let fraction_ms = if fraction.is_empty() {
            0
        } else {
            if !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
            number(&digits, 3..=3)?
        };
        let in_day = h * 3_600_000 + m * 60_000 + s * 1000 + fraction_ms;
        ms = ms.checked_add(in_day)?.checked_sub(offset_ms)?;
    }
    u64::try_from(ms).ok()
}

/// Days of a month of the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds since the epoch as `2026-03-01T12:00:00.250Z`.
pub fn format_utc(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses() {
        assert_eq!(parse("1767225600000"), Ok(1_767_225_600_000));
        assert_eq!(parse("2026-01-01"), Ok(1_767_225_600_000));
        assert_eq!(parse("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        assert_eq!(parse("2026-01-01T01:00:00.5+01:00"), Ok(1_767_225_600_500));
        assert_eq!(parse("2025-12-31T23:00:00-01:00"), Ok(1_767_225_600_000));
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(0));
        let ago = parse("-2h").expect("a time ago");
        let want = now_ms() - 7_200_000;
        assert!(ago.abs_diff(want) < 5_000, "{ago} vs {want}");
    }

    #[test]
    fn nonsense_is_refused_with_the_forms() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-01T25:00:00Z",
            "-5x",
            "12:00",
            "2026-01-01T00:00:00",
            // Dates that do not exist.
            "2026-02-29",
            "2026-02-31",
            "2026-04-31",
            "2026-00-10",
            // Years past four digits, or before the epoch.
            "99999-01-01",
            "0000-01-01",
            "1969-12-31T23:59:59Z",
            "922337203685477-01-01",
            // Offsets past ±23:59, fields of the wrong width.
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00-00:60",
            "2026-01-01T00:00:00+99999999999999:00",
            "2026-1-01",
            "2026-01-01T0:00:00Z",
            "2026-01-01T00:00:00.x5Z",
            // A time ago that overflows.
            "-99999999999999999999d",
            "-9999999999999999d",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn leap_days_and_the_extremes_parse() {
        assert_eq!(parse("2024-02-29"), Ok(1_709_164_800_000));
        assert_eq!(parse("2000-02-29"), Ok(951_782_400_000));
        assert!(parse("1900-02-29").is_err(), "1900 is no leap year");
        assert_eq!(parse("9999-12-31T23:59:59.999Z"), Ok(253_402_300_799_999));
        assert_eq!(parse("1970-01-01T00:00:00+00:00"), Ok(0));
        assert_eq!(parse("1970-01-01T23:59:00+23:59"), Ok(0));
        assert_eq!(parse("2016-12-31T23:59:60Z"), Ok(1_483_228_800_000));
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0, 951_782_400_000, 1_767_225_600_500, 4_102_444_799_999] {
            assert_eq!(parse(&format_utc(ms)), Ok(ms), "{}", format_utc(ms));
        }
        assert_eq!(format_utc(1_767_225_600_500), "2026-01-01T00:00:00.500Z");
    }
}
