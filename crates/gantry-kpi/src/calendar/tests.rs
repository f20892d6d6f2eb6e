use super::*;

use proptest::prelude::*;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Unix milliseconds of an RFC 3339 instant.
fn ms(text: &str) -> i64 {
    text.parse::<Timestamp>()
        .expect("valid RFC 3339 instant")
        .as_millisecond()
}

fn time(text: &str) -> LocalTime {
    LocalTime::parse(text).expect("valid HH:MM")
}

fn days(items: &[&str]) -> Weekdays {
    Weekdays::parse_list(items.iter().copied()).expect("valid day list")
}

/// A shift; `breaks` are (start, end, reason).
fn shift(
    name: &str,
    start: &str,
    end: &str,
    days: Weekdays,
    breaks: &[(&str, &str, &str)],
) -> ShiftDef {
    ShiftDef {
        name: name.to_string(),
        start: time(start),
        end: time(end),
        days,
        breaks: breaks
            .iter()
            .map(|(start, end, reason)| BreakDef {
                start: time(start),
                end: time(end),
                reason: reason.to_string(),
            })
            .collect(),
    }
}

fn window(from: &str, to: &str, reason: &str) -> Window {
    Window {
        from_ms: ms(from),
        to_ms: ms(to),
        reason: reason.to_string(),
    }
}

fn calendar(time_zone: &str, shifts: Vec<ShiftDef>, windows: Vec<Window>) -> Calendar {
    Calendar::new("plant", time_zone, shifts, windows).expect("valid calendar")
}

/// Day shift 06:00-14:00 Monday to Friday with a 10:00-10:30 break.
fn chicago_day_shift() -> Calendar {
    calendar(
        "America/Chicago",
        vec![shift(
            "day",
            "06:00",
            "14:00",
            Weekdays::MON_FRI,
            &[("10:00", "10:30", "break")],
        )],
        vec![],
    )
}

/// Night shift 22:00-06:00 every day with a 02:00-02:30 meal break.
fn chicago_night_shift() -> Calendar {
    calendar(
        "America/Chicago",
        vec![shift(
            "night",
            "22:00",
            "06:00",
            Weekdays::ALL,
            &[("02:00", "02:30", "meal")],
        )],
        vec![],
    )
}

/// Three 8 h shifts covering every hour of the week.
fn chicago_three_shifts(windows: Vec<Window>) -> Calendar {
    calendar(
        "America/Chicago",
        vec![
            shift(
                "early",
                "06:00",
                "14:00",
                Weekdays::ALL,
                &[("10:00", "10:30", "lunch")],
            ),
            shift(
                "late",
                "14:00",
                "22:00",
                Weekdays::ALL,
                &[("18:00", "18:30", "dinner")],
            ),
            shift(
                "night",
                "22:00",
                "06:00",
                Weekdays::ALL,
                &[("02:00", "02:30", "meal")],
            ),
        ],
        windows,
    )
}

fn only_instance_starting(calendar: &Calendar, start: &str) -> ShiftInstance {
    let start_ms = ms(start);
    let instances = calendar.shifts_between(start_ms, start_ms + 1);
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0].start_ms, start_ms);
    instances[0].clone()
}

#[test]
fn local_time_parses_and_displays() {
    let six = time("06:00");
    assert_eq!((six.hour(), six.minute()), (6, 0));
    assert_eq!(six.to_string(), "06:00");
    assert_eq!(time("22:30"), LocalTime::new(22, 30).expect("valid"));
    assert_eq!(time("23:59").to_string(), "23:59");
    assert_eq!(time("00:00").to_string(), "00:00");
    assert!(time("05:59") < time("06:00"));
    assert_eq!(LocalTime::new(24, 0), None);
    assert_eq!(LocalTime::new(0, 60), None);
}

#[test]
fn local_time_rejects_malformed_text() {
    for text in [
        "24:00",
        "6:00",
        "06:0",
        "06-00",
        "ab:cd",
        "",
        " 06:00",
        "12:60",
        "06:00:00",
        "+6:00",
        "٠٦:٠٠",
    ] {
        let error = LocalTime::parse(text).expect_err(text);
        assert_eq!(
            error,
            CalendarError::InvalidTime {
                text: text.to_string()
            }
        );
        assert!(error.to_string().contains("\"HH:MM\""), "{error}");
    }
    let midnight_hint = LocalTime::parse("24:00").expect_err("24:00").hint();
    assert!(midnight_hint.is_some_and(|hint| hint.contains("\"00:00\"")));
    assert_eq!(
        LocalTime::parse("6:00")
            .expect_err("6:00")
            .hint()
            .as_deref(),
        Some("pad the hour with a zero: \"06:00\"")
    );
    assert_eq!(LocalTime::parse("12:60").expect_err("12:60").hint(), None);
}

#[test]
fn weekdays_parse_names_and_ranges() {
    assert_eq!(days(&["mon-fri"]), Weekdays::MON_FRI);
    assert_eq!(days(&["Monday-Friday"]), Weekdays::MON_FRI);
    assert_eq!(days(&[" mon - FRI "]), Weekdays::MON_FRI);
    assert_eq!(
        days(&["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
        Weekdays::ALL
    );
    assert_eq!(days(&["mon-fri", "sat-sun"]), Weekdays::ALL);
    assert_eq!(days(&["mon-sun"]), Weekdays::ALL);

    let weekend = days(&["Sat", "SUNDAY"]);
    assert_eq!(weekend, days(&["sat-sun"]));
    assert!(weekend.contains(Weekday::Saturday) && weekend.contains(Weekday::Sunday));
    assert!(!weekend.contains(Weekday::Friday));

    let wrapping = days(&["fri-mon"]);
    for day in [
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
        Weekday::Monday,
    ] {
        assert!(wrapping.contains(day), "{day:?}");
    }
    assert!(!wrapping.contains(Weekday::Tuesday));

    let single = days(&["wed", "wed"]);
    assert!(single.contains(Weekday::Wednesday));
    assert!(!single.contains(Weekday::Thursday));
    assert!(Weekdays::MON_FRI.contains(Weekday::Friday));
    assert!(!Weekdays::MON_FRI.contains(Weekday::Saturday));
}

#[test]
fn weekdays_reject_unknown_names() {
    let error = Weekdays::parse_list(["mon", "funday"]).expect_err("funday");
    assert_eq!(
        error,
        CalendarError::InvalidWeekday {
            text: "funday".to_string()
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("\"mon\"") && message.contains("\"mon-fri\""),
        "{message}"
    );

    for item in ["mon-", "-fri", "mon-fri-sat", "mo", ""] {
        assert!(
            matches!(
                Weekdays::parse_list([item]),
                Err(CalendarError::InvalidWeekday { .. })
            ),
            "{item:?}"
        );
    }
    assert_eq!(
        Weekdays::parse_list(std::iter::empty()),
        Err(CalendarError::NoWeekdays)
    );
    let hint = Weekdays::parse_list(["weekdays"])
        .expect_err("weekdays")
        .hint();
    assert_eq!(hint.as_deref(), Some("use the range \"mon-fri\""));
}

#[test]
fn day_shift_runs_monday_to_friday_with_its_break() {
    let calendar = chicago_day_shift();
    assert_eq!(calendar.name(), "plant");
    assert_eq!(calendar.time_zone_name(), "America/Chicago");
    assert_eq!(calendar.shifts().len(), 1);

    // Monday 2026-01-05 00:00 CST to Monday 2026-01-12 00:00 CST.
    let week = calendar.shifts_between(ms("2026-01-05T06:00:00Z"), ms("2026-01-12T06:00:00Z"));
    let labels: Vec<&str> = week
        .iter()
        .map(|instance| instance.label.as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "2026-01-05 day",
            "2026-01-06 day",
            "2026-01-07 day",
            "2026-01-08 day",
            "2026-01-09 day"
        ]
    );

    let monday = &week[0];
    assert_eq!(monday.shift, "day");
    assert_eq!(monday.start_ms, 1_767_614_400_000); // 2026-01-05T06:00:00-06:00
    assert_eq!(monday.end_ms, 1_767_643_200_000); // 2026-01-05T14:00:00-06:00
    assert_eq!(
        monday.planned_down,
        [Window {
            from_ms: 1_767_628_800_000, // 10:00 CST
            to_ms: 1_767_630_600_000,   // 10:30 CST
            reason: "break".to_string(),
        }]
    );
    assert_eq!(monday.planned_operation_ms(), 8 * HOUR_MS);
    assert_eq!(monday.planned_down_ms(), 30 * MINUTE_MS);
    for (index, instance) in week.iter().enumerate() {
        assert_eq!(instance.start_ms, monday.start_ms + index as i64 * DAY_MS);
    }

    // Saturday and Sunday have no shift.
    let weekend = calendar.shifts_between(ms("2026-01-10T06:00:00Z"), ms("2026-01-12T06:00:00Z"));
    assert_eq!(weekend, []);
}

#[test]
fn shifts_between_does_not_clip_and_handles_empty_ranges() {
    let calendar = chicago_day_shift();
    // 09:00-09:01 local on Monday 2026-01-05 lies inside the shift.
    let inside = calendar.shifts_between(ms("2026-01-05T15:00:00Z"), ms("2026-01-05T15:01:00Z"));
    assert_eq!(inside.len(), 1);
    assert_eq!(inside[0].start_ms, ms("2026-01-05T12:00:00Z"));
    assert_eq!(inside[0].end_ms, ms("2026-01-05T20:00:00Z"));

    // A range ending at the shift start or starting at its end misses it.
    assert_eq!(
        calendar.shifts_between(ms("2026-01-05T06:00:00Z"), ms("2026-01-05T12:00:00Z")),
        []
    );
    assert_eq!(
        calendar.shifts_between(ms("2026-01-05T20:00:00Z"), ms("2026-01-06T12:00:00Z")),
        []
    );
    assert_eq!(
        calendar.shifts_between(ms("2026-01-05T15:00:00Z"), ms("2026-01-05T15:00:00Z")),
        []
    );
    assert_eq!(
        calendar.shifts_between(ms("2026-01-06T15:00:00Z"), ms("2026-01-05T15:00:00Z")),
        []
    );
}

#[test]
fn shifts_between_spans_months() {
    let calendar = chicago_day_shift();
    let quarter = calendar.shifts_between(ms("2026-01-01T06:00:00Z"), ms("2026-04-01T05:00:00Z"));
    assert_eq!(quarter.len(), 64); // weekdays in January to March 2026
    assert_eq!(quarter[0].label, "2026-01-01 day");
    assert_eq!(quarter[63].label, "2026-03-31 day");
    // From the Monday after the change to summer time, shifts start at 11:00 UTC.
    let after_change = quarter
        .iter()
        .find(|instance| instance.label == "2026-03-09 day")
        .expect("shift on 2026-03-09");
    assert_eq!(after_change.start_ms, ms("2026-03-09T11:00:00Z"));
    assert_eq!(after_change.planned_operation_ms(), 8 * HOUR_MS);
}

#[test]
fn night_shift_crosses_midnight_with_break_after_midnight() {
    let calendar = chicago_night_shift();
    let night = only_instance_starting(&calendar, "2026-01-06T04:00:00Z");
    assert_eq!(night.label, "2026-01-05 night");
    assert_eq!(night.end_ms, ms("2026-01-06T12:00:00Z"));
    assert_eq!(
        night.planned_down,
        [window(
            "2026-01-06T08:00:00Z",
            "2026-01-06T08:30:00Z",
            "meal"
        )]
    );
    assert_eq!(night.planned_operation_ms(), 8 * HOUR_MS);
    assert_eq!(night.planned_down_ms(), 30 * MINUTE_MS);

    // 03:00 local on Tuesday belongs to Monday's night shift.
    let at_three = calendar
        .shift_at(ms("2026-01-06T09:00:00Z"))
        .expect("night shift");
    assert_eq!(at_three.label, "2026-01-05 night");
    // A range starting just after midnight finds the shift begun the day before.
    let after_midnight =
        calendar.shifts_between(ms("2026-01-06T06:00:00Z"), ms("2026-01-06T06:01:00Z"));
    assert_eq!(after_midnight, [night]);
}

#[test]
fn break_crossing_midnight_is_resolved_on_both_days() {
    let calendar = calendar(
        "America/Chicago",
        vec![shift(
            "night",
            "22:00",
            "06:00",
            Weekdays::ALL,
            &[
                ("23:45", "00:15", "midnight meal"),
                ("05:30", "06:00", "handover"),
            ],
        )],
        vec![],
    );
    let night = only_instance_starting(&calendar, "2026-01-06T04:00:00Z");
    assert_eq!(
        night.planned_down,
        [
            window(
                "2026-01-06T05:45:00Z",
                "2026-01-06T06:15:00Z",
                "midnight meal"
            ),
            window("2026-01-06T11:30:00Z", "2026-01-06T12:00:00Z", "handover"),
        ]
    );
    assert_eq!(night.planned_down_ms(), 60 * MINUTE_MS);
}

#[test]
fn three_eight_hour_shifts_cover_every_hour() {
    let calendar = chicago_three_shifts(vec![]);
    let week_start = ms("2026-01-05T06:00:00Z");
    let week_end = week_start + 7 * DAY_MS;
    let instances = calendar.shifts_between(week_start, week_end);
    // The Sunday night shift starting 2026-01-04 reaches into Monday.
    assert_eq!(instances.len(), 22);
    assert_eq!(instances[0].label, "2026-01-04 night");
    assert_eq!(instances[1].label, "2026-01-05 early");
    assert_eq!(instances[2].label, "2026-01-05 late");
    assert_eq!(instances[3].label, "2026-01-05 night");
    assert_eq!(instances[21].label, "2026-01-11 night");
    for pair in instances.windows(2) {
        assert_eq!(
            pair[0].end_ms, pair[1].start_ms,
            "{} -> {}",
            pair[0].label, pair[1].label
        );
    }
    for instance in &instances {
        assert_eq!(instance.planned_operation_ms(), 8 * HOUR_MS);
        assert_eq!(instance.planned_down_ms(), 30 * MINUTE_MS);
    }
    let mut t_ms = week_start;
    while t_ms < week_end {
        let current = calendar
            .shift_at(t_ms)
            .expect("every instant is in a shift");
        assert!(current.start_ms <= t_ms && t_ms < current.end_ms);
        t_ms += 15 * MINUTE_MS;
    }
}

#[test]
fn night_shift_into_spring_forward_lasts_seven_hours() {
    let calendar = chicago_night_shift();
    // Saturday 2026-03-07 22:00 CST; the clocks jump from 02:00 CST to 03:00 CDT.
    let night = only_instance_starting(&calendar, "2026-03-08T04:00:00Z");
    assert_eq!(night.start_ms, 1_772_942_400_000);
    assert_eq!(night.label, "2026-03-07 night");
    assert_eq!(night.end_ms, 1_772_967_600_000); // 06:00 CDT
    assert_eq!(night.planned_operation_ms(), 7 * HOUR_MS);
    // 02:00 and 02:30 do not exist that night: both move forward by the gap.
    assert_eq!(
        night.planned_down,
        [window(
            "2026-03-08T08:00:00Z",
            "2026-03-08T08:30:00Z",
            "meal"
        )]
    );
    assert_eq!(
        calendar.local_text(night.planned_down[0].from_ms),
        "2026-03-08T03:00:00-05:00"
    );
}

#[test]
fn night_shift_into_fall_back_lasts_nine_hours() {
    let calendar = chicago_night_shift();
    // Saturday 2026-10-31 22:00 CDT; the clocks fall back from 02:00 CDT to 01:00 CST.
    let night = only_instance_starting(&calendar, "2026-11-01T03:00:00Z");
    assert_eq!(night.start_ms, 1_793_502_000_000);
    assert_eq!(night.label, "2026-10-31 night");
    assert_eq!(night.end_ms, 1_793_534_400_000); // 06:00 CST
    assert_eq!(night.planned_operation_ms(), 9 * HOUR_MS);
    assert_eq!(
        night.planned_down,
        [window(
            "2026-11-01T08:00:00Z",
            "2026-11-01T08:30:00Z",
            "meal"
        )]
    );
}

#[test]
fn time_in_the_repeated_hour_takes_the_earlier_instant() {
    let calendar = calendar(
        "America/Chicago",
        vec![shift(
            "late",
            "17:00",
            "01:30",
            Weekdays::ALL,
            &[("01:00", "01:15", "wrap-up")],
        )],
        vec![],
    );
    let late = only_instance_starting(&calendar, "2026-10-31T22:00:00Z");
    assert_eq!(late.end_ms, ms("2026-11-01T06:30:00Z")); // 01:30 CDT, not 01:30 CST
    assert_eq!(
        late.planned_down,
        [window(
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:15:00Z",
            "wrap-up"
        )]
    );
}

#[test]
fn twenty_four_hour_shift_follows_the_clock_change() {
    let calendar = calendar(
        "America/Chicago",
        vec![shift(
            "round-the-clock",
            "06:00",
            "06:00",
            Weekdays::ALL,
            &[("05:30", "06:00", "handover")],
        )],
        vec![],
    );
    let ordinary = only_instance_starting(&calendar, "2026-01-05T12:00:00Z");
    assert_eq!(ordinary.planned_operation_ms(), 24 * HOUR_MS);
    assert_eq!(
        ordinary.planned_down,
        [window(
            "2026-01-06T11:30:00Z",
            "2026-01-06T12:00:00Z",
            "handover"
        )]
    );
    let spring = only_instance_starting(&calendar, "2026-03-07T12:00:00Z");
    assert_eq!(spring.planned_operation_ms(), 23 * HOUR_MS);
    let autumn = only_instance_starting(&calendar, "2026-10-31T11:00:00Z");
    assert_eq!(autumn.planned_operation_ms(), 25 * HOUR_MS);
}

#[test]
fn day_bounds_follow_local_midnight() {
    let calendar = chicago_day_shift();
    let ordinary = calendar.day_bounds(ms("2026-01-05T18:00:00Z"));
    assert_eq!(
        ordinary,
        (ms("2026-01-05T06:00:00Z"), ms("2026-01-06T06:00:00Z"))
    );

    let spring = calendar.day_bounds(ms("2026-03-08T18:00:00Z"));
    assert_eq!(
        spring,
        (ms("2026-03-08T06:00:00Z"), ms("2026-03-09T05:00:00Z"))
    );
    assert_eq!(spring.1 - spring.0, 23 * HOUR_MS);

    let autumn = calendar.day_bounds(ms("2026-11-01T18:00:00Z"));
    assert_eq!(
        autumn,
        (ms("2026-11-01T05:00:00Z"), ms("2026-11-02T06:00:00Z"))
    );
    assert_eq!(autumn.1 - autumn.0, 25 * HOUR_MS);

    // Start inclusive, end exclusive.
    assert_eq!(calendar.day_bounds(ordinary.0), ordinary);
    assert_eq!(calendar.day_bounds(ordinary.1 - 1), ordinary);
    assert_eq!(calendar.day_bounds(ordinary.1).0, ordinary.1);

    assert_eq!(calendar.day_of("2026-01-05"), Ok(ordinary));
    assert_eq!(calendar.day_of("2026-03-08"), Ok(spring));
    assert_eq!(calendar.day_of("2026-11-01"), Ok(autumn));
}

#[test]
fn day_of_rejects_malformed_dates() {
    let calendar = chicago_day_shift();
    for text in [
        "2026/03/08",
        "26-03-08",
        "2026-3-8",
        "2026-03-08T00:00",
        "",
        "2026-03",
        "20260308",
        "+2026-03-08",
    ] {
        let error = calendar.day_of(text).expect_err(text);
        assert!(error.to_string().contains("\"YYYY-MM-DD\""), "{error}");
    }
    for text in ["2026-02-29", "2026-13-01", "2026-00-10", "2026-04-31"] {
        let error = calendar.day_of(text).expect_err(text);
        assert!(error.to_string().contains("no such day"), "{error}");
    }
    assert!(calendar.day_of("2028-02-29").is_ok());
}

#[test]
fn week_bounds_run_monday_to_monday() {
    let calendar = chicago_day_shift();
    let week = (ms("2026-01-05T06:00:00Z"), ms("2026-01-12T06:00:00Z"));
    assert_eq!(calendar.week_bounds(ms("2026-01-07T18:00:00Z")), week);
    assert_eq!(calendar.week_bounds(week.0), week);
    assert_eq!(calendar.week_bounds(week.1 - 1), week); // Sunday 23:59:59.999
    assert_eq!(
        calendar.week_bounds(week.0 - 1),
        (ms("2025-12-29T06:00:00Z"), week.0)
    );

    // The week of the change to summer time is an hour short.
    let spring = calendar.week_bounds(ms("2026-03-08T18:00:00Z"));
    assert_eq!(
        spring,
        (ms("2026-03-02T06:00:00Z"), ms("2026-03-09T05:00:00Z"))
    );
    assert_eq!(spring.1 - spring.0, 7 * DAY_MS - HOUR_MS);
}

#[test]
fn windows_are_clipped_and_merged_with_breaks() {
    let calendar = calendar(
        "America/Chicago",
        vec![shift(
            "day",
            "06:00",
            "14:00",
            Weekdays::MON_FRI,
            &[("10:00", "10:30", "break")],
        )],
        vec![
            // Given out of order on purpose.
            window("2026-01-05T19:30:00Z", "2026-01-05T21:00:00Z", "cleaning"), // 13:30-15:00
            window(
                "2026-01-05T15:45:00Z",
                "2026-01-05T16:15:00Z",
                "maintenance",
            ), // 09:45-10:15
            window("2026-01-05T16:20:00Z", "2026-01-05T16:40:00Z", "break"),    // 10:20-10:40
            window("2026-01-05T11:00:00Z", "2026-01-05T12:30:00Z", "inspection"), // 05:00-06:30
            window(
                "2026-01-10T12:00:00Z",
                "2026-01-10T20:00:00Z",
                "weekend job",
            ),
        ],
    );
    let monday = only_instance_starting(&calendar, "2026-01-05T12:00:00Z");
    assert_eq!(
        monday.planned_down,
        [
            window("2026-01-05T12:00:00Z", "2026-01-05T12:30:00Z", "inspection"),
            window(
                "2026-01-05T15:45:00Z",
                "2026-01-05T16:40:00Z",
                "maintenance + break"
            ),
            window("2026-01-05T19:30:00Z", "2026-01-05T20:00:00Z", "cleaning"),
        ]
    );
    assert_eq!(monday.planned_down_ms(), (30 + 55 + 30) * MINUTE_MS);
    assert_eq!(monday.planned_operation_ms(), 8 * HOUR_MS);

    let tuesday = only_instance_starting(&calendar, "2026-01-06T12:00:00Z");
    assert_eq!(
        tuesday.planned_down,
        [window(
            "2026-01-06T16:00:00Z",
            "2026-01-06T16:30:00Z",
            "break"
        )]
    );
    assert_eq!(calendar.windows()[0].reason, "inspection");
}

#[test]
fn touching_windows_stay_apart_and_covering_windows_take_the_whole_shift() {
    let calendar = calendar(
        "UTC",
        vec![shift(
            "day",
            "08:00",
            "16:00",
            Weekdays::ALL,
            &[("12:00", "12:30", "lunch")],
        )],
        vec![
            window("2026-01-05T11:30:00Z", "2026-01-05T12:00:00Z", "briefing"),
            window("2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z", "shutdown"),
        ],
    );
    let monday = only_instance_starting(&calendar, "2026-01-05T08:00:00Z");
    assert_eq!(
        monday.planned_down,
        [
            window("2026-01-05T11:30:00Z", "2026-01-05T12:00:00Z", "briefing"),
            window("2026-01-05T12:00:00Z", "2026-01-05T12:30:00Z", "lunch"),
        ]
    );
    let tuesday = only_instance_starting(&calendar, "2026-01-06T08:00:00Z");
    assert_eq!(
        tuesday.planned_down,
        [window(
            "2026-01-06T08:00:00Z",
            "2026-01-06T16:00:00Z",
            "shutdown + lunch"
        )]
    );
    assert_eq!(tuesday.planned_down_ms(), tuesday.planned_operation_ms());
}

#[test]
fn merged_reasons_drop_duplicates_and_empty_reasons() {
    let merged = merge_overlapping(vec![
        Window {
            from_ms: 0,
            to_ms: 10,
            reason: "a".to_string(),
        },
        Window {
            from_ms: 5,
            to_ms: 20,
            reason: String::new(),
        },
        Window {
            from_ms: 8,
            to_ms: 12,
            reason: "b".to_string(),
        },
        Window {
            from_ms: 15,
            to_ms: 30,
            reason: "a".to_string(),
        },
        Window {
            from_ms: 30,
            to_ms: 31,
            reason: String::new(),
        },
    ]);
    assert_eq!(
        merged,
        [
            Window {
                from_ms: 0,
                to_ms: 30,
                reason: "a + b".to_string()
            },
            Window {
                from_ms: 30,
                to_ms: 31,
                reason: String::new()
            },
        ]
    );
}

#[test]
fn overlapping_shifts_are_rejected() {
    let error = Calendar::new(
        "plant",
        "America/Chicago",
        vec![
            shift("early", "06:00", "14:00", Weekdays::MON_FRI, &[]),
            shift("late", "13:00", "22:00", Weekdays::MON_FRI, &[]),
        ],
        vec![],
    )
    .expect_err("early and late overlap");
    assert_eq!(
        error,
        CalendarError::OverlappingShifts {
            first: "early".to_string(),
            second: "late".to_string(),
            first_end: "2026-01-05T14:00:00-06:00".to_string(),
            second_start: "2026-01-05T13:00:00-06:00".to_string(),
            on_dst_change: false,
        }
    );
    assert!(
        error.to_string().contains("\"early\" and \"late\" overlap"),
        "{error}"
    );
    assert!(error.hint().is_some_and(|hint| !hint.contains("daylight")));

    // A Friday night shift runs into a Saturday morning shift.
    let error = Calendar::new(
        "plant",
        "UTC",
        vec![
            shift("night", "22:00", "06:00", days(&["fri"]), &[]),
            shift("saturday", "05:00", "13:00", days(&["sat"]), &[]),
        ],
        vec![],
    )
    .expect_err("night runs into saturday");
    assert!(
        matches!(&error, CalendarError::OverlappingShifts { first, second, .. } if first == "night" && second == "saturday"),
        "{error:?}"
    );

    // Shifts that only touch are fine.
    assert!(
        Calendar::new(
            "plant",
            "UTC",
            vec![
                shift("night", "22:00", "06:00", days(&["fri"]), &[]),
                shift("saturday", "06:00", "14:00", days(&["sat"]), &[]),
            ],
            vec![],
        )
        .is_ok()
    );
}

#[test]
fn overlap_only_on_a_dst_change_day_is_rejected() {
    let shifts = vec![
        shift("night", "22:00", "02:30", Weekdays::ALL, &[]),
        shift("dawn", "03:00", "06:00", Weekdays::ALL, &[]),
    ];
    // On 2026-03-08 02:30 does not exist in Chicago and moves to 03:30 CDT.
    let error = Calendar::new("plant", "America/Chicago", shifts.clone(), vec![])
        .expect_err("night ends after dawn starts on 2026-03-08");
    assert_eq!(
        error,
        CalendarError::OverlappingShifts {
            first: "night".to_string(),
            second: "dawn".to_string(),
            first_end: "2026-03-08T03:30:00-05:00".to_string(),
            second_start: "2026-03-08T03:00:00-05:00".to_string(),
            on_dst_change: true,
        }
    );
    assert!(
        error
            .hint()
            .is_some_and(|hint| hint.contains("daylight-saving"))
    );
    assert!(Calendar::new("plant", "UTC", shifts, vec![]).is_ok());
}

#[test]
fn unknown_time_zone_is_rejected_with_a_suggestion() {
    let shifts = || vec![shift("day", "06:00", "14:00", Weekdays::MON_FRI, &[])];
    let error = Calendar::new("plant", "Europe/Berln", shifts(), vec![]).expect_err("typo");
    assert_eq!(
        error,
        CalendarError::UnknownTimeZone {
            name: "Europe/Berln".to_string(),
            suggestion: Some("Europe/Berlin".to_string()),
        }
    );
    assert_eq!(error.to_string(), "unknown time zone \"Europe/Berln\"");
    let hint = error.hint().expect("hint");
    assert!(
        hint.starts_with("did you mean \"Europe/Berlin\"?"),
        "{hint}"
    );
    assert!(hint.contains("IANA"), "{hint}");

    let by_city = Calendar::new("plant", "berlin", shifts(), vec![]).expect_err("city only");
    assert!(
        matches!(&by_city, CalendarError::UnknownTimeZone { suggestion: Some(name), .. } if name == "Europe/Berlin"),
        "{by_city:?}"
    );

    let far_off = Calendar::new("plant", "Mars/Olympus_Mons", shifts(), vec![]).expect_err("mars");
    assert!(
        matches!(
            &far_off,
            CalendarError::UnknownTimeZone {
                suggestion: None,
                ..
            }
        ),
        "{far_off:?}"
    );
    assert!(
        far_off
            .hint()
            .is_some_and(|hint| hint.contains("\"Europe/Berlin\""))
    );
    assert!(Calendar::new("plant", "", shifts(), vec![]).is_err());
}

#[test]
fn invalid_definitions_are_rejected() {
    let day = || shift("day", "06:00", "14:00", Weekdays::MON_FRI, &[]);
    let new = |shifts: Vec<ShiftDef>, windows: Vec<Window>| {
        Calendar::new("plant", "America/Chicago", shifts, windows)
    };

    assert_eq!(
        new(vec![], vec![]).expect_err("no shifts"),
        CalendarError::NoShifts {
            calendar: "plant".to_string()
        }
    );

    let unnamed = shift(" ", "06:00", "14:00", Weekdays::MON_FRI, &[]);
    assert_eq!(
        new(vec![day(), unnamed], vec![]).expect_err("empty name"),
        CalendarError::EmptyShiftName { position: 2 }
    );

    let twice = shift("day", "14:00", "22:00", Weekdays::MON_FRI, &[]);
    assert_eq!(
        new(vec![day(), twice], vec![]).expect_err("duplicate"),
        CalendarError::DuplicateShiftName {
            name: "day".to_string()
        }
    );

    let mut never = day();
    never.days = Weekdays(0);
    assert_eq!(
        new(vec![never], vec![]).expect_err("no days"),
        CalendarError::ShiftWithoutDays {
            shift: "day".to_string()
        }
    );

    let empty_break = shift(
        "day",
        "06:00",
        "14:00",
        Weekdays::MON_FRI,
        &[("10:00", "10:00", "nothing")],
    );
    assert_eq!(
        new(vec![empty_break], vec![]).expect_err("empty break"),
        CalendarError::EmptyBreak {
            shift: "day".to_string(),
            start: time("10:00"),
            end: time("10:00"),
        }
    );

    let window_error = new(
        vec![day()],
        vec![window(
            "2026-01-05T12:00:00Z",
            "2026-01-05T12:00:00Z",
            "nothing",
        )],
    )
    .expect_err("empty window");
    assert_eq!(
        window_error,
        CalendarError::InvalidWindow {
            reason: "nothing".to_string(),
            from_ms: ms("2026-01-05T12:00:00Z"),
            to_ms: ms("2026-01-05T12:00:00Z"),
        }
    );
    assert!(window_error.hint().is_some());
}

#[test]
fn breaks_must_lie_inside_their_shift() {
    let check = |start: &str, end: &str, breaks: &[(&str, &str, &str)]| {
        Calendar::new(
            "plant",
            "UTC",
            vec![shift("s", start, end, Weekdays::ALL, breaks)],
            vec![],
        )
    };
    // Inside, at the edges and after midnight of a night shift.
    assert!(
        check(
            "06:00",
            "14:00",
            &[("06:00", "06:30", "a"), ("13:30", "14:00", "b")]
        )
        .is_ok()
    );
    assert!(check("22:00", "06:00", &[("02:00", "02:30", "meal")]).is_ok());
    assert!(check("22:00", "06:00", &[("23:50", "00:10", "midnight")]).is_ok());
    assert!(check("06:00", "06:00", &[("05:30", "06:00", "handover")]).is_ok());

    for (start, end, break_start, break_end) in [
        ("06:00", "14:00", "14:00", "14:30"),
        ("06:00", "14:00", "05:30", "06:00"),
        ("06:00", "14:00", "13:45", "14:15"),
        ("06:00", "14:00", "10:30", "10:00"),
        ("22:00", "06:00", "21:00", "21:30"),
        ("22:00", "06:00", "05:45", "06:15"),
        ("22:00", "06:00", "12:00", "12:30"),
    ] {
        let error = check(start, end, &[(break_start, break_end, "x")]).expect_err(break_start);
        assert_eq!(
            error,
            CalendarError::BreakOutsideShift {
                shift: "s".to_string(),
                break_start: time(break_start),
                break_end: time(break_end),
                shift_start: time(start),
                shift_end: time(end),
            }
        );
        assert!(
            error
                .hint()
                .is_some_and(|hint| hint.contains("02:00-02:30"))
        );
    }
}

#[test]
fn shift_at_and_last_closed_shift_at_boundaries() {
    let calendar = chicago_day_shift();
    let monday_start = ms("2026-01-05T12:00:00Z");
    let monday_end = ms("2026-01-05T20:00:00Z");

    let at_start = calendar.shift_at(monday_start).expect("start is inclusive");
    assert_eq!(at_start.label, "2026-01-05 day");
    assert_eq!(
        calendar
            .shift_at(monday_end - 1)
            .map(|instance| instance.label),
        Some("2026-01-05 day".to_string())
    );
    assert_eq!(calendar.shift_at(monday_end), None);
    assert_eq!(calendar.shift_at(monday_start - 1), None);
    assert_eq!(calendar.shift_at(ms("2026-01-10T18:00:00Z")), None); // Saturday

    let label_of_last_closed = |t_ms: i64| {
        calendar
            .last_closed_shift(t_ms)
            .map(|instance| instance.label)
    };
    assert_eq!(
        label_of_last_closed(monday_end),
        Some("2026-01-05 day".to_string())
    );
    assert_eq!(
        label_of_last_closed(monday_end - 1),
        Some("2026-01-02 day".to_string())
    );
    assert_eq!(
        label_of_last_closed(monday_start),
        Some("2026-01-02 day".to_string())
    );
    assert_eq!(
        label_of_last_closed(ms("2026-01-11T18:00:00Z")),
        Some("2026-01-09 day".to_string())
    );
    assert_eq!(calendar.last_closed_shift(monday_end), Some(at_start));
}

#[test]
fn last_closed_shift_finds_a_weekly_shift() {
    let calendar = calendar(
        "UTC",
        vec![shift("weekly", "00:00", "01:00", days(&["mon"]), &[])],
        vec![],
    );
    let label_of_last_closed = |t: &str| {
        calendar
            .last_closed_shift(ms(t))
            .map(|instance| instance.label)
    };
    // Sunday evening, Monday during the shift and at its end.
    assert_eq!(
        label_of_last_closed("2026-01-11T23:59:00Z"),
        Some("2026-01-05 weekly".to_string())
    );
    assert_eq!(
        label_of_last_closed("2026-01-12T00:30:00Z"),
        Some("2026-01-05 weekly".to_string())
    );
    assert_eq!(
        label_of_last_closed("2026-01-12T01:00:00Z"),
        Some("2026-01-12 weekly".to_string())
    );
}

#[test]
fn utc_zone_works() {
    let calendar = calendar(
        "UTC",
        vec![shift(
            "all-day",
            "00:00",
            "00:00",
            Weekdays::ALL,
            &[("12:00", "12:30", "lunch")],
        )],
        vec![],
    );
    assert_eq!(calendar.time_zone_name(), "UTC");
    let instances = calendar.shifts_between(ms("2026-03-01T00:00:00Z"), ms("2026-04-01T00:00:00Z"));
    assert_eq!(instances.len(), 31);
    for instance in &instances {
        assert_eq!(instance.planned_operation_ms(), DAY_MS);
        assert_eq!(instance.planned_down_ms(), 30 * MINUTE_MS);
    }
    assert_eq!(instances[7].label, "2026-03-08 all-day");
    assert_eq!(instances[7].start_ms, ms("2026-03-08T00:00:00Z"));
    let t_ms = ms("2026-03-08T15:00:00Z");
    assert_eq!(
        calendar.day_bounds(t_ms),
        (ms("2026-03-08T00:00:00Z"), ms("2026-03-09T00:00:00Z"))
    );
    assert_eq!(
        calendar.week_bounds(t_ms),
        (ms("2026-03-02T00:00:00Z"), ms("2026-03-09T00:00:00Z"))
    );
    assert_eq!(calendar.local_text(t_ms), "2026-03-08T15:00:00+00:00");
}

#[test]
fn local_text_shows_the_local_offset() {
    let calendar = chicago_day_shift();
    assert_eq!(
        calendar.local_text(ms("2026-11-27T12:00:00Z")),
        "2026-11-27T06:00:00-06:00"
    );
    assert_eq!(
        calendar.local_text(ms("2026-07-01T11:00:00Z")),
        "2026-07-01T06:00:00-05:00"
    );
    assert_eq!(
        calendar.local_text(ms("2026-11-27T12:00:00.250Z")),
        "2026-11-27T06:00:00.25-06:00"
    );
}

#[test]
fn extreme_instants_do_not_panic() {
    let calendar = chicago_three_shifts(vec![]);
    for t_ms in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
        let _ = calendar.shift_at(t_ms);
        let _ = calendar.last_closed_shift(t_ms);
        let _ = calendar.day_bounds(t_ms);
        let _ = calendar.week_bounds(t_ms);
        let _ = calendar.local_text(t_ms);
    }
    let _ = calendar.shifts_between(i64::MAX - DAY_MS, i64::MAX);
    let _ = calendar.shifts_between(i64::MIN, i64::MIN + DAY_MS);
    assert_eq!(
        calendar.shift_at(0).map(|instance| instance.label),
        Some("1969-12-31 late".to_string())
    );
}

#[test]
fn instances_serialize_to_json() {
    let calendar = chicago_day_shift();
    let monday = only_instance_starting(&calendar, "2026-01-05T12:00:00Z");
    let json = serde_json::to_value(&monday).expect("serializable");
    assert_eq!(
        json,
        serde_json::json!({
            "shift": "day",
            "label": "2026-01-05 day",
            "start_ms": 1_767_614_400_000_i64,
            "end_ms": 1_767_643_200_000_i64,
            "planned_down": [
                {"from_ms": 1_767_628_800_000_i64, "to_ms": 1_767_630_600_000_i64, "reason": "break"}
            ],
        })
    );
}

fn proptest_calendar() -> Calendar {
    calendar(
        "America/Chicago",
        vec![
            shift(
                "early",
                "06:00",
                "14:00",
                Weekdays::MON_FRI,
                &[("10:00", "10:30", "lunch")],
            ),
            shift(
                "late",
                "14:00",
                "22:00",
                days(&["mon-sat"]),
                &[("18:00", "18:30", "dinner")],
            ),
            shift(
                "night",
                "22:00",
                "06:00",
                days(&["sun-thu"]),
                &[("02:00", "02:30", "meal")],
            ),
            shift(
                "weekend",
                "08:00",
                "20:00",
                days(&["sun"]),
                &[("12:00", "13:00", "lunch")],
            ),
        ],
        vec![
            window(
                "2026-03-08T00:00:00Z",
                "2026-03-08T12:00:00Z",
                "maintenance",
            ),
            window("2026-11-02T16:00:00Z", "2026-11-03T16:00:00Z", "audit"),
        ],
    )
}

proptest! {
    #[test]
    fn shifts_between_returns_ordered_disjoint_overlapping_instances(
        from_ms in ms("2025-01-01T00:00:00Z")..ms("2028-01-01T00:00:00Z"),
        length_ms in 0..45 * DAY_MS,
    ) {
        let calendar = proptest_calendar();
        let to_ms = from_ms + length_ms;
        let instances = calendar.shifts_between(from_ms, to_ms);
        for instance in &instances {
            prop_assert!(instance.start_ms < to_ms && instance.end_ms > from_ms, "{instance:?}");
            prop_assert!(instance.planned_operation_ms() > 0);
            let hours = instance.planned_operation_ms() / HOUR_MS;
            prop_assert!((7..=13).contains(&hours), "{instance:?}");
            let mut previous_end = instance.start_ms;
            for down in &instance.planned_down {
                prop_assert!(previous_end <= down.from_ms && down.from_ms < down.to_ms);
                prop_assert!(down.to_ms <= instance.end_ms);
                previous_end = down.to_ms;
            }
        }
        for pair in instances.windows(2) {
            prop_assert!(pair[0].end_ms <= pair[1].start_ms, "{pair:?}");
        }
    }

    #[test]
    fn shift_at_agrees_with_shifts_between(
        t_ms in ms("2025-01-01T00:00:00Z")..ms("2028-01-01T00:00:00Z"),
    ) {
        let calendar = proptest_calendar();
        let containing: Vec<ShiftInstance> = calendar
            .shifts_between(t_ms, t_ms + 1)
            .into_iter()
            .collect();
        prop_assert!(containing.len() <= 1);
        prop_assert_eq!(calendar.shift_at(t_ms), containing.first().cloned());
        if let Some(closed) = calendar.last_closed_shift(t_ms) {
            prop_assert!(closed.end_ms <= t_ms);
            // Nothing else closed between its end and t_ms.
            let later = calendar.shifts_between(closed.end_ms, t_ms.max(closed.end_ms + 1));
            prop_assert!(later.iter().all(|instance| instance.end_ms > t_ms || instance == &closed));
        } else {
            prop_assert!(false, "a shift runs every week");
        }
        let (day_start, day_end) = calendar.day_bounds(t_ms);
        prop_assert!(day_start <= t_ms && t_ms < day_end);
        prop_assert!([23, 24, 25].contains(&((day_end - day_start) / HOUR_MS)));
        let (week_start, week_end) = calendar.week_bounds(t_ms);
        prop_assert!(week_start <= day_start && day_end <= week_end);
    }
}
