//! Times as people write them, shared by the CLI and the HTTP API: RFC 3339
//! output with milliseconds, and the accepted input forms for query ranges
//! (RFC 3339, a bare date, `now`, relative `-15m`, Unix milliseconds) and
//! for bucket widths (`500ms`, `86.4s`, `5m`, `1h`, `1d`).
//!
//! All arithmetic is on the proleptic Gregorian calendar in UTC (days from
//! civil dates and back, after Howard Hinnant), so it is exact for negative
//! and far-away instants and needs no date library.

const MS_PER_DAY: i64 = 86_400_000;

/// What a time may look like, for error messages.
const TIME_FORMS: &str = "an RFC 3339 time such as 2026-11-27T10:00:00Z or 2026-11-27T10:00:00.5+01:00, \
     a date such as 2026-11-27 (midnight UTC), now, a time relative to now such as -15m, -2h, -7d, -30s or -1w, \
     or Unix milliseconds such as 1795773600000";

const DURATION_FORMS: &str = "a duration such as 500ms, 1s, 86.4s, 1m, 5m, 1h, 1d or 1w";

/// Days since 1970-01-01 of a civil date (month 1..=12, day 1..=31).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// `2026-11-27T10:00:00.123Z`: UTC with milliseconds. Years outside
/// 0000..=9999 are written with a sign (`-0044-03-15...`, `+12345-...`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1_000, rest % 1_000);
    let year = if (0..=9999).contains(&year) {
        format!("{year:04}")
    } else if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("+{year}")
    };
    format!("{year}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Parses a query time; `now_ms` resolves `now` and relative times.
///
/// Accepted: RFC 3339 with `Z` or an `±hh:mm` offset, with or without
/// fractional seconds (`2026-11-27T10:00:00Z`, `2026-11-27T10:00:00.5+01:00`;
/// a space may replace the `T`, and seconds may be left out); a date
/// (`2026-11-27`, midnight UTC); `now`; a time relative to now (`-15m`,
/// `-2h`, `-7d`, `-30s`, `-1w`, also `now-15m` and `+5m`); Unix milliseconds
/// (all digits, at least 11 of them, optionally negative).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || format!("cannot read the time {t:?}: expected {TIME_FORMS}");
    if t.is_empty() {
        return Err(bad());
    }
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    let relative = t
        .get(..3)
        .filter(|head| head.eq_ignore_ascii_case("now"))
        .map(|_| &t[3..]);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if relative.is_none() {
        let unsigned = t.strip_prefix('-').unwrap_or(t);
        if digits(unsigned) {
            if unsigned.len() < 11 {
                return Err(format!(
                    "cannot read the time {t:?}: Unix times are taken in milliseconds and have at least 11 digits \
                     (e.g. 1795773600000); for seconds append 000. Or give {TIME_FORMS}"
                ));
            }
            return t
                .parse::<i64>()
                .map_err(|_| format!("the Unix millisecond time {t:?} is out of range"));
        }
    }
    let offset = relative.unwrap_or(t);
    if let Some(sign) = offset.chars().next().filter(|c| *c == '-' || *c == '+') {
        let dur = parse_duration_ms(&offset[1..]).map_err(|_| {
            format!(
                "cannot read the relative time {t:?}: expected a sign and {DURATION_FORMS}, e.g. -15m (15 minutes ago)"
            )
        })?;
        let at = if sign == '-' {
            now_ms.checked_sub(dur)
        } else {
            now_ms.checked_add(dur)
        };
        return at.ok_or_else(|| format!("the relative time {t:?} is out of range"));
    }
    if relative.is_some() {
        return Err(bad());
    }
    parse_calendar(t).ok_or_else(bad)?
}

/// A date or RFC 3339 date-time; `None` when the text is not shaped like
/// one, `Some(Err)` when it is but a field is out of range.
fn parse_calendar(t: &str) -> Option<Result<i64, String>> {
    let mut c = Cursor {
        s: t.as_bytes(),
        i: 0,
    };
    let year = c.number(4)?;
    c.expect(b'-')?;
    let month = c.number(2)? as u32;
    c.expect(b'-')?;
    let day = c.number(2)? as u32;
    if !(1..=12).contains(&month) {
        return Some(Err(format!("{t:?}: month {month} is not 1..12")));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Some(Err(format!("{t:?}: {year:04}-{month:02} has no day {day}")));
    }
    let date_ms = days_from_civil(year, month, day) * MS_PER_DAY;
    if c.done() {
        return Some(Ok(date_ms));
    }
    match c.next()? {
        b'T' | b't' | b' ' => {}
        _ => return None,
    }
    let hour = c.number(2)?;
    c.expect(b':')?;
    let minute = c.number(2)?;
    let mut second = 0;
    let mut milli = 0;
    if c.peek() == Some(b':') {
        c.next();
        second = c.number(2)?;
        if c.peek() == Some(b'.') || c.peek() == Some(b',') {
            c.next();
            let start = c.i;
            while c.peek().is_some_and(|b| b.is_ascii_digit()) {
                c.next();
            }
            let frac = &t[start..c.i];
            if frac.is_empty() {
                return None;
            }
            // Milliseconds, truncated: ".5" is 500, ".123456" is 123.
            let mut padded = frac.chars().take(3).collect::<String>();
            while padded.len() < 3 {
                padded.push('0');
            }
            milli = padded.parse::<i64>().ok()?;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Some(Err(format!(
            "{t:?}: {hour:02}:{minute:02}:{second:02} is not a time of day"
        )));
    }
    let offset_ms = match c.next() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let oh = c.number(2)?;
            if c.peek() == Some(b':') {
                c.next();
            }
            let om = c.number(2)?;
            if oh > 23 || om > 59 {
                return Some(Err(format!("{t:?}: the offset is not a valid ±hh:mm")));
            }
            let off = (oh * 60 + om) * 60_000;
            if sign == b'+' { off } else { -off }
        }
        None => {
            return Some(Err(format!(
                "{t:?} has no time zone: add Z for UTC (e.g. 2026-11-27T10:00:00Z) or an offset such as +01:00"
            )));
        }
        Some(_) => return None,
    };
    if !c.done() {
        return None;
    }
    Some(Ok(date_ms
        + ((hour * 60 + minute) * 60 + second) * 1_000
        + milli
        - offset_ms))
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }
    fn done(&self) -> bool {
        self.i == self.s.len()
    }
    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }
    /// Exactly `n` ASCII digits.
    fn number(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let b = self.next()?;
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
        }
        Some(v)
    }
}

/// Parses a bucket width or relative offset: a number (decimals allowed)
/// and a unit `ms`, `s`, `m` (or `min`), `h`, `d`, `w`: `1s`, `500ms`,
/// `86.4s`, `5m`, `1h`, `1d`. The result is a positive whole number of
/// milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let bad = || format!("cannot read the duration {t:?}: expected {DURATION_FORMS}");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let unit_ms: i128 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(bad()),
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || whole.len() > 18
    {
        return Err(bad());
    }
    let scale = 10i128.pow(frac.len() as u32);
    let whole_v: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_v: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scaled = (whole_v * scale + frac_v) * unit_ms;
    if scaled % scale != 0 {
        return Err(format!(
            "the duration {t:?} is not a whole number of milliseconds"
        ));
    }
    let ms = scaled / scale;
    if ms <= 0 {
        return Err(format!("the duration {t:?} must be longer than zero"));
    }
    i64::try_from(ms).map_err(|_| format!("the duration {t:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_epoch_values() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_ms(-86_400_000 * 365),
            "1969-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(1_795_773_600_123),
            "2026-11-27T10:00:00.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(4_102_444_800_000),
            "2100-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(-62_135_596_800_000),
            "0001-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339_ms(253_402_300_800_000),
            "+10000-01-01T00:00:00.000Z"
        );
        // Extremes do not panic.
        assert!(format_rfc3339_ms(i64::MAX).starts_with('+'));
        assert!(format_rfc3339_ms(i64::MIN).starts_with('-'));
    }

    #[test]
    fn civil_days_round_trip() {
        for days in (-1_000_000..1_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(1900, 3, 1) - days_from_civil(1900, 2, 28),
            1
        );
    }

    #[test]
    fn format_then_parse_round_trips() {
        for ms in [
            0,
            -1,
            951_782_400_000,
            1_795_773_600_123,
            -2_208_988_800_001,
            4_102_444_799_999,
        ] {
            assert_eq!(parse_time(&format_rfc3339_ms(ms), 0), Ok(ms), "{ms}");
        }
    }

    #[test]
    fn parses_every_accepted_form() {
        let now = 1_795_773_600_000; // 2026-11-27T10:00:00Z
        assert_eq!(parse_time("2026-11-27T10:00:00Z", 0), Ok(now));
        assert_eq!(parse_time("2026-11-27t10:00:00z", 0), Ok(now));
        assert_eq!(parse_time("2026-11-27 10:00:00Z", 0), Ok(now));
        assert_eq!(parse_time("2026-11-27T10:00Z", 0), Ok(now));
        assert_eq!(
            parse_time("2026-11-27T10:00:00.5+01:00", 0),
            Ok(now - 3_600_000 + 500)
        );
        assert_eq!(
            parse_time("2026-11-27T10:00:00.123456-05:30", 0),
            Ok(now + 19_800_000 + 123)
        );
        assert_eq!(parse_time("2026-11-27", 0), Ok(now - 10 * 3_600_000));
        assert_eq!(parse_time(" now ", now), Ok(now));
        assert_eq!(parse_time("-15m", now), Ok(now - 900_000));
        assert_eq!(parse_time("-2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("-7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("-30s", now), Ok(now - 30_000));
        assert_eq!(parse_time("-1w", now), Ok(now - 604_800_000));
        assert_eq!(parse_time("now-1h", now), Ok(now - 3_600_000));
        assert_eq!(parse_time("+5m", now), Ok(now + 300_000));
        assert_eq!(parse_time("1795773600000", 0), Ok(now));
        assert_eq!(parse_time("-10000000000", 0), Ok(-10_000_000_000));
    }

    #[test]
    fn rejects_with_what_was_expected() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-11-27T25:00:00Z",
            "2026-11-27T10:00:00",
            "2026-11-27T10:00:00Zjunk",
            "-15",
            "-15x",
            "now+",
            "12345",
            "99999999999999999999",
        ] {
            let e = parse_time(bad, 0).expect_err(bad);
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
        let e = parse_time("yesterday", 0).unwrap_err();
        assert!(
            e.contains("2026-11-27T10:00:00Z") && e.contains("-15m"),
            "{e}"
        );
        let e = parse_time("1795773600", 0).unwrap_err();
        assert!(e.contains("milliseconds"), "{e}");
        let e = parse_time("2026-11-27T10:00:00", 0).unwrap_err();
        assert!(e.contains("time zone"), "{e}");
        assert!(parse_time("2024-02-29", 0).is_ok());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_ms("1s"), Ok(1_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("86.4s"), Ok(86_400));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("5min"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms(".5s"), Ok(500));
        for bad in [
            "",
            "5",
            "s",
            "0s",
            "1.5ms",
            "5y",
            "-5m",
            "1..5s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
        assert!(parse_duration_ms("5y").unwrap_err().contains("86.4s"));
    }
}
