//! Shift calendars: this module owns the planned operation time (POT) and the
//! planned downtime (PDOT: breaks and planned maintenance windows) that the
//! ISO 22400 KPIs are measured against.
//!
//! Shifts and breaks are defined in local civil time of an IANA time zone;
//! every occurrence is resolved to absolute Unix-millisecond instants, so
//! shifts on daylight-saving change days are an hour shorter or longer.
//! A local time that does not exist (skipped by the clocks) moves forward by
//! the length of the gap, and a local time that exists twice takes the
//! earlier instant (the "compatible" disambiguation of RFC 5545/Temporal).

use std::fmt;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;

#[cfg(test)]
mod tests;

const MINUTES_PER_DAY: u16 = 24 * 60;

/// Local midnight, the start of a calendar day.
const MIDNIGHT: LocalTime = LocalTime { hour: 0, minute: 0 };

/// The Monday starting the two representative weeks that [`Calendar::new`]
/// generates to check that no two shifts overlap.
const REFERENCE_MONDAY: Date = Date::constant(2026, 1, 5);

/// How many days after [`REFERENCE_MONDAY`] [`Calendar::new`] looks for
/// daylight-saving changes to check as well.
const DST_CHECK_HORIZON_DAYS: i64 = 366;

/// A wall-clock time of day, minute precision ("06:00", "22:30"; "24:00" is
/// not allowed, use "00:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime {
    hour: u8,
    minute: u8,
}

impl LocalTime {
    /// The time `hour:minute`, or `None` unless `hour` is 0-23 and `minute`
    /// is 0-59.
    pub fn new(hour: u8, minute: u8) -> Option<LocalTime> {
        (hour < 24 && minute < 60).then_some(LocalTime { hour, minute })
    }

    /// Parses "HH:MM" (two-digit hour 00-23, two-digit minute 00-59).
    pub fn parse(text: &str) -> Result<LocalTime, CalendarError> {
        let invalid = || CalendarError::InvalidTime {
            text: text.to_string(),
        };
        let [hour_tens, hour_ones, b':', minute_tens, minute_ones] = text.as_bytes() else {
            return Err(invalid());
        };
        let hour = two_digit_number(*hour_tens, *hour_ones).ok_or_else(invalid)?;
        let minute = two_digit_number(*minute_tens, *minute_ones).ok_or_else(invalid)?;
        LocalTime::new(hour, minute).ok_or_else(invalid)
    }

    /// The hour, 0-23.
    pub fn hour(self) -> u8 {
        self.hour
    }

    /// The minute, 0-59.
    pub fn minute(self) -> u8 {
        self.minute
    }

    fn minutes_since_midnight(self) -> u16 {
        u16::from(self.hour) * 60 + u16::from(self.minute)
    }

    fn to_civil(self) -> Option<Time> {
        // Both values are < 60, so the conversions to i8 cannot fail.
        let hour = i8::try_from(self.hour).ok()?;
        let minute = i8::try_from(self.minute).ok()?;
        Time::new(hour, minute, 0, 0).ok()
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:02}:{:02}", self.hour, self.minute)
    }
}

fn two_digit_number(tens: u8, ones: u8) -> Option<u8> {
    (tens.is_ascii_digit() && ones.is_ascii_digit()).then(|| (tens - b'0') * 10 + (ones - b'0'))
}

/// Minutes from `from` forward to `to` on a 24 h clock face (0 when equal).
fn minutes_forward(from: LocalTime, to: LocalTime) -> u16 {
    (to.minutes_since_midnight() + MINUTES_PER_DAY - from.minutes_since_midnight())
        % MINUTES_PER_DAY
}

/// Days of the week a shift starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

const DAY_NAMES: [(&str, &str, Weekday); 7] = [
    ("mon", "monday", Weekday::Monday),
    ("tue", "tuesday", Weekday::Tuesday),
    ("wed", "wednesday", Weekday::Wednesday),
    ("thu", "thursday", Weekday::Thursday),
    ("fri", "friday", Weekday::Friday),
    ("sat", "saturday", Weekday::Saturday),
    ("sun", "sunday", Weekday::Sunday),
];

impl Weekdays {
    /// Every day of the week.
    pub const ALL: Weekdays = Weekdays(0b111_1111);
    /// Monday to Friday.
    pub const MON_FRI: Weekdays = Weekdays(0b001_1111);

    /// Parses a list of day names ("mon", "tue", "wed", "thu", "fri", "sat",
    /// "sun" or the full names "monday" ..., any case) and ranges of two
    /// names ("mon-fri", "sat-sun"; a range may wrap around the week end,
    /// "fri-mon" is Friday to Monday). An empty list is an error.
    pub fn parse_list<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Weekdays, CalendarError> {
        let mut days = Weekdays(0);
        for item in items {
            let item = item.trim();
            let invalid = || CalendarError::InvalidWeekday {
                text: item.to_string(),
            };
            match item.split_once('-') {
                Some((first, last)) => {
                    let first = parse_day_name(first).ok_or_else(invalid)?;
                    let last = parse_day_name(last).ok_or_else(invalid)?;
                    let mut day = first;
                    days = days.with(day);
                    while day != last {
                        day = day.next();
                        days = days.with(day);
                    }
                }
                None => days = days.with(parse_day_name(item).ok_or_else(invalid)?),
            }
        }
        if days.is_empty() {
            return Err(CalendarError::NoWeekdays);
        }
        Ok(days)
    }

    /// Whether `day` is one of these days.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    /// Whether no day is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn with(self, day: Weekday) -> Weekdays {
        Weekdays(self.0 | Self::bit(day))
    }

    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }
}

fn parse_day_name(text: &str) -> Option<Weekday> {
    let text = text.trim();
    DAY_NAMES
        .iter()
        .find(|(short, long, _)| {
            text.eq_ignore_ascii_case(short) || text.eq_ignore_ascii_case(long)
        })
        .map(|(_, _, day)| *day)
}

/// A break inside a shift, in local time (planned downtime, PDOT).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakDef {
    /// Local start time of the break.
    pub start: LocalTime,
    /// Local end time of the break (exclusive); at or before `start` means
    /// the break crosses midnight.
    pub end: LocalTime,
    /// Why production is planned to stop, e.g. "lunch".
    pub reason: String,
}

/// One recurring shift.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftDef {
    /// Unique, non-empty name, e.g. "night".
    pub name: String,
    /// Local start time.
    pub start: LocalTime,
    /// end <= start means the shift ends the next day (e.g. 22:00-06:00).
    /// start == end means a 24 h shift.
    pub end: LocalTime,
    /// Days of the week the shift starts on.
    pub days: Weekdays,
    /// Breaks inside the shift, in local time.
    pub breaks: Vec<BreakDef>,
}

impl ShiftDef {
    /// Length of the shift on a day without a clock change, in minutes.
    fn nominal_minutes(&self) -> u16 {
        match minutes_forward(self.start, self.end) {
            0 => MINUTES_PER_DAY,
            minutes => minutes,
        }
    }

    fn contains_break(&self, planned_break: &BreakDef) -> bool {
        let offset = minutes_forward(self.start, planned_break.start);
        let length = minutes_forward(planned_break.start, planned_break.end);
        offset + length <= self.nominal_minutes()
    }
}

/// A one-off planned downtime window (planned maintenance), absolute instants.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    /// Start, Unix milliseconds (inclusive).
    pub from_ms: i64,
    /// End, Unix milliseconds (exclusive).
    pub to_ms: i64,
    /// Why production is planned to stop, e.g. "planned maintenance".
    pub reason: String,
}

/// One occurrence of a shift.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShiftInstance {
    /// Name of the shift.
    pub shift: String,
    /// e.g. "2026-11-27 night": the local date the shift starts on, then the
    /// shift name.
    pub label: String,
    /// Start, Unix milliseconds (inclusive).
    pub start_ms: i64,
    /// End, Unix milliseconds (exclusive).
    pub end_ms: i64,
    /// Planned downtime inside [start_ms, end_ms): breaks of this occurrence
    /// and the calendar's windows, clipped to the shift, sorted, overlapping
    /// ones merged (merged reasons joined with " + " in order, duplicates
    /// removed).
    pub planned_down: Vec<Window>,
}

impl ShiftInstance {
    /// Planned operation time (POT) of the occurrence: its length in
    /// milliseconds, planned downtime included.
    pub fn planned_operation_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }

    /// Planned downtime (PDOT) inside the occurrence, in milliseconds.
    pub fn planned_down_ms(&self) -> i64 {
        self.planned_down
            .iter()
            .map(|window| window.to_ms - window.from_ms)
            .sum()
    }
}

/// A validated shift calendar in one time zone.
#[derive(Debug, Clone)]
pub struct Calendar {
    name: String,
    time_zone_name: String,
    time_zone: TimeZone,
    shifts: Vec<ShiftDef>,
    /// Sorted by start.
    windows: Vec<Window>,
}

impl Calendar {
    /// Validates and builds a calendar: the time zone exists; there is at
    /// least one shift; shift names are unique and non-empty; every shift
    /// has at least one day; every break is non-empty and lies within its
    /// shift's local span (a break of a night shift may be after midnight);
    /// no two shift occurrences overlap (checked concretely over the 14 days
    /// from Monday 2026-01-05 and around the zone's daylight-saving changes in
    /// the following year); windows end after they start.
    pub fn new(
        name: &str,
        time_zone: &str,
        shifts: Vec<ShiftDef>,
        windows: Vec<Window>,
    ) -> Result<Calendar, CalendarError> {
        let zone = TimeZone::get(time_zone).map_err(|_| CalendarError::UnknownTimeZone {
            name: time_zone.to_string(),
            suggestion: closest_time_zone_name(time_zone),
        })?;
        validate_shifts(name, &shifts)?;
        if let Some(window) = windows.iter().find(|window| window.from_ms >= window.to_ms) {
            return Err(CalendarError::InvalidWindow {
                reason: window.reason.clone(),
                from_ms: window.from_ms,
                to_ms: window.to_ms,
            });
        }
        let mut windows = windows;
        windows.sort_by_key(|window| (window.from_ms, window.to_ms));
        let calendar = Calendar {
            name: name.to_string(),
            time_zone_name: zone.iana_name().unwrap_or(time_zone).to_string(),
            time_zone: zone,
            shifts,
            windows,
        };
        calendar.check_shifts_do_not_overlap()?;
        Ok(calendar)
    }

    /// The calendar's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IANA name of the calendar's time zone, e.g. "America/Chicago".
    pub fn time_zone_name(&self) -> &str {
        &self.time_zone_name
    }

    /// The shifts, in the order given.
    pub fn shifts(&self) -> &[ShiftDef] {
        &self.shifts
    }

    /// The one-off planned downtime windows, sorted by start.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Every shift occurrence overlapping [from_ms, to_ms), in start order,
    /// not clipped to the range. The cost is proportional to the number of
    /// local days in the range.
    pub fn shifts_between(&self, from_ms: i64, to_ms: i64) -> Vec<ShiftInstance> {
        if from_ms >= to_ms {
            return Vec::new();
        }
        // An occurrence lasts at most about a day, so one that overlaps the
        // range starts at the earliest on the local day before `from_ms`.
        let first_day = self.local_date(from_ms);
        let first_day = first_day.yesterday().unwrap_or(first_day);
        let last_day = self.local_date(to_ms);
        self.instances_starting_on(first_day, last_day, |start_ms, end_ms| {
            start_ms < to_ms && end_ms > from_ms
        })
    }

    /// The occurrence containing `t_ms` (start inclusive, end exclusive), if
    /// any.
    pub fn shift_at(&self, t_ms: i64) -> Option<ShiftInstance> {
        self.shifts_between(t_ms, t_ms.saturating_add(1))
            .into_iter()
            .find(|instance| instance.start_ms <= t_ms && t_ms < instance.end_ms)
    }

    /// The most recent occurrence that ended at or before `t_ms` ("the last
    /// closed shift").
    pub fn last_closed_shift(&self, t_ms: i64) -> Option<ShiftInstance> {
        // Every shift starts at least once in any 7 consecutive days, and
        // occurrences starting two or more days before the day of `t_ms` have
        // ended by then, so the days [D-8, D-2] hold a closed occurrence of
        // every shift that is later than any occurrence starting before D-8.
        let last_day = self.local_date(t_ms);
        let first_day = add_days(last_day, -8).unwrap_or(Date::MIN);
        self.instances_starting_on(first_day, last_day, |_, end_ms| end_ms <= t_ms)
            .into_iter()
            .max_by_key(|instance| (instance.end_ms, instance.start_ms))
    }

    /// The local calendar day containing `t_ms`: [local midnight, next local
    /// midnight) as instants (23 h or 25 h on daylight-saving change days).
    pub fn day_bounds(&self, t_ms: i64) -> (i64, i64) {
        let day = self.local_date(t_ms);
        self.bounds_of_days(day, 1).unwrap_or((t_ms, t_ms))
    }

    /// The ISO week (Monday 00:00 local to the next Monday 00:00 local)
    /// containing `t_ms`.
    pub fn week_bounds(&self, t_ms: i64) -> (i64, i64) {
        let day = self.local_date(t_ms);
        let days_since_monday = i64::from(day.weekday().to_monday_zero_offset());
        add_days(day, -days_since_monday)
            .and_then(|monday| self.bounds_of_days(monday, 7))
            .unwrap_or((t_ms, t_ms))
    }

    /// Parses a local date "2026-11-27" to that day's bounds in this
    /// calendar's zone.
    pub fn day_of(&self, date: &str) -> Result<(i64, i64), CalendarError> {
        let day = parse_date(date)?;
        self.bounds_of_days(day, 1)
            .ok_or_else(|| CalendarError::InvalidDate {
                text: date.to_string(),
                problem: "the day is outside the supported range of years".to_string(),
            })
    }

    /// Formats an instant as local RFC 3339 with offset, e.g.
    /// "2026-11-27T06:00:00-06:00" (milliseconds are shown when not zero).
    pub fn local_text(&self, t_ms: i64) -> String {
        let zoned = timestamp_saturating(t_ms).to_zoned(self.time_zone.clone());
        jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%S%.f%:z", &zoned)
            .unwrap_or_else(|_| format!("{t_ms} ms"))
    }

    fn local_date(&self, t_ms: i64) -> Date {
        self.time_zone
            .to_datetime(timestamp_saturating(t_ms))
            .date()
    }

    /// The instant of local `time` on local `day`, resolved "compatibly": a
    /// time skipped by the clocks moves forward by the gap, a repeated time
    /// takes the earlier instant.
    fn resolve(&self, day: Date, time: LocalTime) -> Option<i64> {
        let civil = day.to_datetime(time.to_civil()?);
        let instant = self
            .time_zone
            .to_ambiguous_timestamp(civil)
            .compatible()
            .ok()?;
        Some(instant.as_millisecond())
    }

    /// From local midnight of `first_day` to local midnight `days` days later.
    fn bounds_of_days(&self, first_day: Date, days: i64) -> Option<(i64, i64)> {
        let start_ms = self.resolve(first_day, MIDNIGHT)?;
        let end_ms = self.resolve(add_days(first_day, days)?, MIDNIGHT)?;
        Some((start_ms, end_ms))
    }

    /// The occurrences of all shifts starting on the local days
    /// [first_day, last_day] for which `keep(start_ms, end_ms)` holds, sorted
    /// by start.
    fn instances_starting_on(
        &self,
        first_day: Date,
        last_day: Date,
        keep: impl Fn(i64, i64) -> bool,
    ) -> Vec<ShiftInstance> {
        let mut instances = Vec::new();
        let mut day = first_day;
        while day <= last_day {
            for shift in &self.shifts {
                if let Some((start_ms, end_ms)) = self.occurrence_span(shift, day)
                    && keep(start_ms, end_ms)
                {
                    instances.push(self.instance(shift, day, start_ms, end_ms));
                }
            }
            match day.tomorrow() {
                Ok(next_day) => day = next_day,
                Err(_) => break,
            }
        }
        instances.sort_by_key(|instance| (instance.start_ms, instance.end_ms));
        instances
    }

    /// Start and end of the occurrence of `shift` starting on local `day`, if
    /// the shift runs that day.
    fn occurrence_span(&self, shift: &ShiftDef, day: Date) -> Option<(i64, i64)> {
        if !shift.days.contains(day.weekday()) {
            return None;
        }
        let start_ms = self.resolve(day, shift.start)?;
        let end_day = if shift.end <= shift.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        let end_ms = self.resolve(end_day, shift.end)?;
        (start_ms < end_ms).then_some((start_ms, end_ms))
    }

    fn instance(&self, shift: &ShiftDef, day: Date, start_ms: i64, end_ms: i64) -> ShiftInstance {
        let clip = |from_ms: i64, to_ms: i64, reason: &str| {
            let from_ms = from_ms.max(start_ms);
            let to_ms = to_ms.min(end_ms);
            (from_ms < to_ms).then(|| Window {
                from_ms,
                to_ms,
                reason: reason.to_string(),
            })
        };
        let breaks = shift.breaks.iter().filter_map(|planned_break| {
            let (from_ms, to_ms) = self.break_span(shift, planned_break, day)?;
            clip(from_ms, to_ms, &planned_break.reason)
        });
        let windows = self
            .windows
            .iter()
            .take_while(|window| window.from_ms < end_ms)
            .filter_map(|window| clip(window.from_ms, window.to_ms, &window.reason));
        ShiftInstance {
            shift: shift.name.clone(),
            label: format!("{day} {}", shift.name),
            start_ms,
            end_ms,
            planned_down: merge_overlapping(breaks.chain(windows).collect()),
        }
    }

    /// The instants of `planned_break` in the occurrence of `shift` starting
    /// on local `day`.
    fn break_span(
        &self,
        shift: &ShiftDef,
        planned_break: &BreakDef,
        day: Date,
    ) -> Option<(i64, i64)> {
        // A break earlier on the clock than the shift start belongs to the
        // part of the shift after midnight.
        let start_day = if planned_break.start >= shift.start {
            day
        } else {
            day.tomorrow().ok()?
        };
        let end_day = if planned_break.end <= planned_break.start {
            start_day.tomorrow().ok()?
        } else {
            start_day
        };
        Some((
            self.resolve(start_day, planned_break.start)?,
            self.resolve(end_day, planned_break.end)?,
        ))
    }

    fn check_shifts_do_not_overlap(&self) -> Result<(), CalendarError> {
        for (first_day, last_day, on_dst_change) in self.overlap_check_periods() {
            let instances = self.instances_starting_on(first_day, last_day, |_, _| true);
            if let Some((earlier, later)) = first_overlap(&instances) {
                return Err(CalendarError::OverlappingShifts {
                    first: earlier.shift.clone(),
                    second: later.shift.clone(),
                    first_end: self.local_text(earlier.end_ms),
                    second_start: self.local_text(later.start_ms),
                    on_dst_change,
                });
            }
        }
        Ok(())
    }

    /// The local days (first, last, whether around a daylight-saving change)
    /// whose shift occurrences [`Calendar::new`] checks for overlaps: two
    /// ordinary weeks, and the days around each clock change in the year
    /// after, where a boundary inside the skipped hour can make occurrences
    /// overlap that never do on ordinary days.
    fn overlap_check_periods(&self) -> Vec<(Date, Date, bool)> {
        let mut periods = Vec::new();
        if let Some(last_day) = add_days(REFERENCE_MONDAY, 13) {
            periods.push((REFERENCE_MONDAY, last_day, false));
        }
        let horizon = (
            self.resolve(REFERENCE_MONDAY, MIDNIGHT),
            add_days(REFERENCE_MONDAY, DST_CHECK_HORIZON_DAYS)
                .and_then(|day| self.resolve(day, MIDNIGHT)),
        );
        let (Some(from_ms), Some(until_ms)) = horizon else {
            return periods;
        };
        let transitions = self
            .time_zone
            .following(timestamp_saturating(from_ms))
            .take_while(|transition| transition.timestamp().as_millisecond() < until_ms)
            .take(8);
        for transition in transitions {
            let day = self.time_zone.to_datetime(transition.timestamp()).date();
            if let (Ok(before), Ok(after)) = (day.yesterday(), day.tomorrow()) {
                periods.push((before, after, true));
            }
        }
        periods
    }
}

/// The first pair of overlapping occurrences in `instances` (sorted by start).
fn first_overlap(instances: &[ShiftInstance]) -> Option<(&ShiftInstance, &ShiftInstance)> {
    let mut latest_ending: Option<&ShiftInstance> = None;
    for instance in instances {
        if let Some(earlier) = latest_ending
            && earlier.end_ms > instance.start_ms
        {
            return Some((earlier, instance));
        }
        if latest_ending.is_none_or(|earlier| instance.end_ms > earlier.end_ms) {
            latest_ending = Some(instance);
        }
    }
    None
}

fn validate_shifts(calendar: &str, shifts: &[ShiftDef]) -> Result<(), CalendarError> {
    if shifts.is_empty() {
        return Err(CalendarError::NoShifts {
            calendar: calendar.to_string(),
        });
    }
    for (index, shift) in shifts.iter().enumerate() {
        if shift.name.trim().is_empty() {
            return Err(CalendarError::EmptyShiftName {
                position: index + 1,
            });
        }
        if shifts[..index].iter().any(|other| other.name == shift.name) {
            return Err(CalendarError::DuplicateShiftName {
                name: shift.name.clone(),
            });
        }
        if shift.days.is_empty() {
            return Err(CalendarError::ShiftWithoutDays {
                shift: shift.name.clone(),
            });
        }
        for planned_break in &shift.breaks {
            if planned_break.start == planned_break.end {
                return Err(CalendarError::EmptyBreak {
                    shift: shift.name.clone(),
                    start: planned_break.start,
                    end: planned_break.end,
                });
            }
            if !shift.contains_break(planned_break) {
                return Err(CalendarError::BreakOutsideShift {
                    shift: shift.name.clone(),
                    break_start: planned_break.start,
                    break_end: planned_break.end,
                    shift_start: shift.start,
                    shift_end: shift.end,
                });
            }
        }
    }
    Ok(())
}

/// Sorts planned downtime windows and merges overlapping ones; merged reasons
/// are joined with " + " in order, without duplicates.
fn merge_overlapping(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by_key(|window| (window.from_ms, window.to_ms));
    let mut merged: Vec<(Window, Vec<String>)> = Vec::with_capacity(windows.len());
    for window in windows {
        match merged.last_mut() {
            Some((current, reasons)) if window.from_ms < current.to_ms => {
                current.to_ms = current.to_ms.max(window.to_ms);
                if !window.reason.is_empty() && !reasons.contains(&window.reason) {
                    reasons.push(window.reason);
                }
            }
            _ => {
                let reasons = if window.reason.is_empty() {
                    Vec::new()
                } else {
                    vec![window.reason.clone()]
                };
                merged.push((window, reasons));
            }
        }
    }
    merged
        .into_iter()
        .map(|(window, reasons)| Window {
            reason: reasons.join(" + "),
            ..window
        })
        .collect()
}

/// Parses exactly "YYYY-MM-DD".
fn parse_date(text: &str) -> Result<Date, CalendarError> {
    let invalid = |problem: &str| CalendarError::InvalidDate {
        text: text.to_string(),
        problem: problem.to_string(),
    };
    let malformed = || invalid("expected \"YYYY-MM-DD\", e.g. \"2026-11-27\"");
    let mut parts = text.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let number = |digits: &str, width: usize| {
        (digits.len() == width && digits.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| digits.parse::<i16>().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (number(year, 4), number(month, 2), number(day, 2))
    else {
        return Err(malformed());
    };
    let (Ok(month), Ok(day)) = (i8::try_from(month), i8::try_from(day)) else {
        return Err(malformed());
    };
    Date::new(year, month, day)
        .map_err(|_| invalid("no such day (month 01-12, day within the month)"))
}

fn add_days(day: Date, days: i64) -> Option<Date> {
    let span = jiff::Span::new().try_days(days).ok()?;
    day.checked_add(span).ok()
}

/// The instant `t_ms`, clamped to the range jiff supports (years -9999 to
/// 9999).
fn timestamp_saturating(t_ms: i64) -> Timestamp {
    let clamped = t_ms.clamp(
        Timestamp::MIN.as_millisecond(),
        Timestamp::MAX.as_millisecond(),
    );
    Timestamp::from_millisecond(clamped).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A known time zone name close to a mistyped one ("Europe/Berln" ->
/// "Europe/Berlin", "berlin" -> "Europe/Berlin").
fn closest_time_zone_name(unknown: &str) -> Option<String> {
    let wanted = unknown.trim().to_ascii_lowercase();
    if wanted.len() < 3 {
        return None;
    }
    let names: Vec<String> = jiff::tz::db()
        .available()
        .map(|name| name.as_str().to_string())
        .collect();
    let same_city = names.iter().find(|name| {
        name.rsplit('/').next().is_some_and(|city| {
            city.eq_ignore_ascii_case(&wanted)
                || city.eq_ignore_ascii_case(&wanted.replace(' ', "_"))
        })
    });
    if let Some(name) = same_city {
        return Some(name.clone());
    }
    let max_distance = if wanted.len() < 6 { 1 } else { 3 };
    names
        .iter()
        .map(|name| (edit_distance(&wanted, &name.to_ascii_lowercase()), name))
        .filter(|(distance, _)| *distance <= max_distance)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name.clone())
}

/// Levenshtein distance between two strings, by characters.
fn edit_distance(left: &str, right: &str) -> usize {
    let right: Vec<char> = right.chars().collect();
    let mut previous_row: Vec<usize> = (0..=right.len()).collect();
    for (row, left_char) in left.chars().enumerate() {
        let mut current_row = Vec::with_capacity(right.len() + 1);
        current_row.push(row + 1);
        for (column, right_char) in right.iter().enumerate() {
            let substitution = previous_row[column] + usize::from(left_char != *right_char);
            let deletion = previous_row[column + 1] + 1;
            let insertion = current_row[column] + 1;
            current_row.push(substitution.min(deletion).min(insertion));
        }
        previous_row = current_row;
    }
    previous_row[right.len()]
}

/// Why a calendar, time, day list or date was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalendarError {
    /// A time of day is not "HH:MM".
    #[error(
        "invalid time of day \"{text}\": expected \"HH:MM\" with a two-digit hour 00-23 and a two-digit minute 00-59, e.g. \"06:00\" or \"22:30\""
    )]
    InvalidTime {
        /// The rejected text.
        text: String,
    },
    /// A day list item is neither a day name nor a range of two.
    #[error(
        "unknown day \"{text}\": expected a day name (\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\" or the full name such as \"monday\", any case) or a range of two such as \"mon-fri\" or \"sat-sun\""
    )]
    InvalidWeekday {
        /// The rejected item.
        text: String,
    },
    /// A day list is empty.
    #[error("no days given: list at least one day or range, e.g. [\"mon-fri\"]")]
    NoWeekdays,
    /// The time zone is not in the IANA time zone database.
    #[error("unknown time zone \"{name}\"")]
    UnknownTimeZone {
        /// The rejected name.
        name: String,
        /// A known name close to it, if any.
        suggestion: Option<String>,
    },
    /// The calendar defines no shift.
    #[error("calendar \"{calendar}\" has no shifts: define at least one")]
    NoShifts {
        /// The calendar's name.
        calendar: String,
    },
    /// A shift's name is empty.
    #[error("shift #{position} has an empty name")]
    EmptyShiftName {
        /// 1-based position of the shift in the list.
        position: usize,
    },
    /// Two shifts have the same name.
    #[error("shift name \"{name}\" is used more than once")]
    DuplicateShiftName {
        /// The repeated name.
        name: String,
    },
    /// A shift runs on no day of the week.
    #[error("shift \"{shift}\" has no days to start on")]
    ShiftWithoutDays {
        /// The shift's name.
        shift: String,
    },
    /// A break ends when it starts.
    #[error("break {start}-{end} of shift \"{shift}\" is empty: a break must end after it starts")]
    EmptyBreak {
        /// The shift's name.
        shift: String,
        /// The break's start.
        start: LocalTime,
        /// The break's end.
        end: LocalTime,
    },
    /// A break is not inside its shift.
    #[error(
        "break {break_start}-{break_end} of shift \"{shift}\" is not inside the shift ({shift_start}-{shift_end})"
    )]
    BreakOutsideShift {
        /// The shift's name.
        shift: String,
        /// The break's start.
        break_start: LocalTime,
        /// The break's end.
        break_end: LocalTime,
        /// The shift's start.
        shift_start: LocalTime,
        /// The shift's end.
        shift_end: LocalTime,
    },
    /// Two shift occurrences overlap in time.
    #[error(
        "shifts \"{first}\" and \"{second}\" overlap: \"{first}\" runs until {first_end} but \"{second}\" starts at {second_start}"
    )]
    OverlappingShifts {
        /// The shift that starts first.
        first: String,
        /// The shift that starts while the first still runs.
        second: String,
        /// Local end of the first occurrence.
        first_end: String,
        /// Local start of the second occurrence.
        second_start: String,
        /// Whether the overlap only shows on a daylight-saving change day.
        on_dst_change: bool,
    },
    /// A planned downtime window does not end after it starts.
    #[error(
        "planned downtime window \"{reason}\" does not end after it starts (from {from_ms} ms to {to_ms} ms)"
    )]
    InvalidWindow {
        /// The window's reason.
        reason: String,
        /// The window's start.
        from_ms: i64,
        /// The window's end.
        to_ms: i64,
    },
    /// A date is not "YYYY-MM-DD" or does not exist.
    #[error("invalid date \"{text}\": {problem}")]
    InvalidDate {
        /// The rejected text.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl CalendarError {
    /// A suggestion how to fix the error, where there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            CalendarError::InvalidTime { text } if text.trim() == "24:00" => Some(
                "write midnight as \"00:00\"; a shift or break whose end is at or before its start ends on the next day"
                    .to_string(),
            ),
            CalendarError::InvalidTime { text } => match text.trim().split_once(':') {
                Some((hour, minute)) if hour.len() == 1 && minute.len() == 2 => {
                    Some(format!("pad the hour with a zero: \"0{}\"", text.trim()))
                }
                _ => None,
            },
            CalendarError::InvalidWeekday { text } => {
                let range = match text.to_ascii_lowercase().as_str() {
                    "weekdays" | "workdays" => "mon-fri",
                    "weekend" | "weekends" => "sat-sun",
                    "daily" | "all" | "every day" | "everyday" => "mon-sun",
                    _ => return None,
                };
                Some(format!("use the range \"{range}\""))
            }
            CalendarError::UnknownTimeZone { suggestion, .. } => {
                let generic = "use an IANA time zone name such as \"Europe/Berlin\" or \"America/Chicago\"";
                Some(match suggestion {
                    Some(name) => format!("did you mean \"{name}\"? {generic}"),
                    None => generic.to_string(),
                })
            }
            CalendarError::EmptyShiftName { .. } => {
                Some("give every shift a name, e.g. \"early\", \"late\" or \"night\"".to_string())
            }
            CalendarError::DuplicateShiftName { .. } => Some(
                "shift names label the occurrences (\"2026-11-27 night\"), rename one of them"
                    .to_string(),
            ),
            CalendarError::ShiftWithoutDays { .. } => {
                Some("list the days the shift starts on, e.g. [\"mon-fri\"]".to_string())
            }
            CalendarError::BreakOutsideShift { .. } => Some(
                "break times are local times inside the shift; for a shift crossing midnight such as 22:00-06:00 a break after midnight such as 02:00-02:30 is inside"
                    .to_string(),
            ),
            CalendarError::OverlappingShifts { on_dst_change, .. } => {
                let mut hint = "let each shift end at or before the next one starts (ends are exclusive: 06:00-14:00 and 14:00-22:00 do not overlap)".to_string();
                if *on_dst_change {
                    hint.push_str(
                        "; this overlap only happens on a daylight-saving change day, where a time the clocks skip moves forward by the length of the gap: put shift boundaries on times that always exist, e.g. whole hours outside the change",
                    );
                }
                Some(hint)
            }
            CalendarError::InvalidWindow { .. } => Some(
                "give the window a positive length: \"from\" must be before \"to\"".to_string(),
            ),
            CalendarError::NoWeekdays
            | CalendarError::NoShifts { .. }
            | CalendarError::EmptyBreak { .. }
            | CalendarError::InvalidDate { .. } => None,
        }
    }
}
