//! Which stretch of time a KPI covers: the current shift (live), the last
//! closed shift, a named shift, a day, a week, or an explicit range, each
//! resolved on a unit's shift calendar.

use crate::calendar::{Calendar, ShiftInstance};
use crate::compute::Period;

/// A day's label and bounds.
fn day(calendar: &Calendar, (from, to): (i64, i64)) -> (String, i64, i64) {
    let date = calendar.local_text(from);
    (format!("day {}", &date[..date.len().min(10)]), from, to)
}

/// A period as asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum PeriodSpec {
    /// The shift running now, up to now.
    CurrentShift,
    /// The last shift that has ended.
    LastShift,
    /// A shift by the local date it started on and its name.
    Shift {
        date: String,
        name: String,
    },
    Today,
    Yesterday,
    /// A local date, `YYYY-MM-DD`.
    Day(String),
    ThisWeek,
    LastWeek,
    /// Instants (Unix ms).
    Range {
        from_ms: i64,
        to_ms: i64,
    },
}

/// The accepted spellings, for errors and help.
pub const PERIOD_FORMS: &str = "current-shift, last-shift, shift:YYYY-MM-DD/NAME, today, yesterday, day:YYYY-MM-DD, week, last-week, or FROM..TO (RFC 3339 instants)";

impl PeriodSpec {
    pub fn parse(text: &str) -> Result<PeriodSpec, String> {
        let t = text.trim();
        let spec = match t {
            "current-shift" | "shift" | "current" => PeriodSpec::CurrentShift,
            "last-shift" => PeriodSpec::LastShift,
            "today" => PeriodSpec::Today,
            "yesterday" => PeriodSpec::Yesterday,
            "week" | "this-week" => PeriodSpec::ThisWeek,
            "last-week" => PeriodSpec::LastWeek,
            _ => {
                if let Some(rest) = t.strip_prefix("shift:") {
                    let (date, name) = rest
                        .split_once('/')
                        .ok_or_else(|| format!("--period {t}: a shift is shift:YYYY-MM-DD/NAME"))?;
                    PeriodSpec::Shift {
                        date: date.to_string(),
                        name: name.to_string(),
                    }
                } else if let Some(date) = t.strip_prefix("day:") {
                    PeriodSpec::Day(date.to_string())
                } else if let Some((a, b)) = t.split_once("..") {
                    let parse = |s: &str| {
                        s.trim()
                            .parse::<jiff::Timestamp>()
                            .map(|ts| ts.as_millisecond())
                            .map_err(|e| {
                                format!("--period {t}: \"{s}\" is not an RFC 3339 instant ({e})")
                            })
                    };
                    let (from_ms, to_ms) = (parse(a)?, parse(b)?);
                    if from_ms >= to_ms {
                        return Err(format!("--period {t}: the start must be before the end"));
                    }
                    PeriodSpec::Range { from_ms, to_ms }
                } else {
                    return Err(format!("--period {t}: not a period; use {PERIOD_FORMS}"));
                }
            }
        };
        Ok(spec)
    }

    /// The period on `calendar` at `now_ms`, and the shifts overlapping it.
    /// A period that has not ended yet ends at `now_ms`.
    pub fn resolve(
        &self,
        calendar: &Calendar,
        now_ms: i64,
    ) -> Result<(Period, Vec<ShiftInstance>), String> {
        const DAY_MS: i64 = 86_400_000;
        let (label, from_ms, to_ms) = match self {
            PeriodSpec::CurrentShift => {
                let s = calendar.shift_at(now_ms).ok_or_else(|| {
                    format!(
                        "no shift of calendar {} is running now ({}); ask for last-shift or a day",
                        calendar.name(),
                        calendar.local_text(now_ms)
                    )
                })?;
                (format!("shift {} (so far)", s.label), s.start_ms, s.end_ms)
            }
            PeriodSpec::LastShift => {
                let s = calendar.last_closed_shift(now_ms).ok_or_else(|| {
                    format!("calendar {} has no shift that has ended", calendar.name())
                })?;
                (format!("shift {}", s.label), s.start_ms, s.end_ms)
            }
            PeriodSpec::Shift { date, name } => {
                let (day_from, day_to) = calendar.day_of(date).map_err(|e| e.to_string())?;
                let s = calendar
                    .shifts_between(day_from, day_to)
                    .into_iter()
                    .find(|s| s.shift == *name && s.start_ms >= day_from && s.start_ms < day_to)
                    .ok_or_else(|| {
                        let names: Vec<&str> =
                            calendar.shifts().iter().map(|s| s.name.as_str()).collect();
                        format!(
                            "calendar {} has no shift \"{name}\" starting on {date} (its shifts: {})",
                            calendar.name(),
                            names.join(", ")
                        )
                    })?;
                (format!("shift {}", s.label), s.start_ms, s.end_ms)
            }
            PeriodSpec::Today => day(calendar, calendar.day_bounds(now_ms)),
            PeriodSpec::Yesterday => {
                let (today, _) = calendar.day_bounds(now_ms);
                day(calendar, calendar.day_bounds(today - 1))
            }
            PeriodSpec::Day(date) => {
                day(calendar, calendar.day_of(date).map_err(|e| e.to_string())?)
            }
            PeriodSpec::ThisWeek | PeriodSpec::LastWeek => {
                let (mut from, mut to) = calendar.week_bounds(now_ms);
                if *self == PeriodSpec::LastWeek {
                    (from, to) = calendar.week_bounds(from - DAY_MS / 2);
                }
                let date = calendar.local_text(from);
                (format!("week of {}", &date[..date.len().min(10)]), from, to)
            }
            // The bounds are printed with every result: no need to repeat them.
            PeriodSpec::Range { from_ms, to_ms } => ("range".to_string(), *from_ms, *to_ms),
        };
        if from_ms > now_ms {
            return Err(format!("{label} has not started yet"));
        }
        let to_ms = to_ms.min(now_ms);
        let shifts = calendar.shifts_between(from_ms, to_ms);
        Ok((
            Period {
                label,
                from_ms,
                to_ms,
            },
            shifts,
        ))
    }
}
