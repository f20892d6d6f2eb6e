//! The worked example of `kpi-iso22400.md` (one 8-hour shift, OEE 74.7 %)
//! reproduced from synthetic state and counter data, and the cases around
//! it: counter resets, missing data, planned downtime, changeover, roll-ups.

use std::collections::BTreeMap;

use gantry_kpi::calendar::{ShiftInstance, Window};
use gantry_kpi::counter::Reading;
use gantry_kpi::elements::Elements;
use gantry_kpi::{
    Counting, Kpi, Period, StateModel, StateSample, TimeBucket, UnitData, UnitResult, WorkUnit,
    compute,
};

const MIN: i64 = 60_000;
/// 2026-11-27T06:00:00Z.
const T0: i64 = 1_795_759_200_000;

fn unit() -> WorkUnit {
    WorkUnit {
        path: "acme/dallas/packaging/line-1/filler".into(),
        state_tag: "state".into(),
        reason_tag: Some("state_reason".into()),
        counting: Counting::GoodAndScrap {
            good: "good_count".into(),
            scrap: "reject_count".into(),
        },
        counter_modulus: None,
        // PRI 0.5 min/unit.
        ideal_cycle_ms: 30_000.0,
        product_tag: None,
        ideal_cycle_ms_by_product: BTreeMap::new(),
        energy_tag: Some("energy".into()),
        state_model: StateModel::builtin("gantry").expect("builtin"),
        calendar: "day".into(),
    }
}

/// 06:00-14:00 with a 30-minute break at 10:00 (PDOT 30 min).
fn shift() -> ShiftInstance {
    ShiftInstance {
        shift: "day".into(),
        label: "2026-11-27 day".into(),
        start_ms: T0,
        end_ms: T0 + 480 * MIN,
        planned_down: vec![Window {
            from_ms: T0 + 240 * MIN,
            to_ms: T0 + 270 * MIN,
            reason: "break".into(),
        }],
    }
}

fn st(minute: i64, state: &str, reason: &str) -> StateSample {
    StateSample {
        ts_ms: T0 + minute * MIN,
        state: Some(state.into()),
        reason: (!reason.is_empty()).then(|| reason.into()),
    }
}

/// The shift of the example: changeover 20 min, three breakdowns (10, 8
/// and 7 min), starved 15 min, running otherwise; the break is in the
/// calendar while the machine reports running.
fn example_states() -> Vec<StateSample> {
    vec![
        st(-30, "idle", ""),
        st(0, "changeover", "product change"),
        st(20, "running", ""),
        st(100, "faulted", "jam"),
        st(110, "running", ""),
        st(200, "faulted", "motor overload"),
        st(208, "running", ""),
        st(300, "starved", "no bottles"),
        st(315, "running", ""),
        st(400, "faulted", "jam"),
        st(407, "running", ""),
        st(500, "idle", ""),
    ]
}

/// Readings once a minute: 672 good and 28 scrap over the running minutes;
/// energy from 1,000 to 1,084 kWh.
fn example_data() -> UnitData {
    let states = example_states();
    let running: Vec<i64> = (0..480)
        .filter(|m| {
            let i = states.partition_point(|s| s.ts_ms <= T0 + m * MIN) - 1;
            states[i].state.as_deref() == Some("running") && !(240..270).contains(m)
        })
        .collect();
    assert_eq!(running.len(), 390);
    let (mut good, mut scrap) = (
        vec![Reading {
            ts_ms: T0 - MIN,
            value: 5_000.0,
        }],
        vec![Reading {
            ts_ms: T0 - MIN,
            value: 100.0,
        }],
    );
    let (mut g, mut s) = (5_000.0, 100.0);
    for (k, m) in running.iter().enumerate() {
        // 700 units over 390 minutes: spread evenly, every 25th is scrap.
        let total_before = (k * 700 / 390) as i64;
        let total_after = ((k + 1) * 700 / 390) as i64;
        for n in total_before..total_after {
            if n % 25 == 24 {
                s += 1.0;
            } else {
                g += 1.0;
            }
        }
        good.push(Reading {
            ts_ms: T0 + (m + 1) * MIN - 1,
            value: g,
        });
        scrap.push(Reading {
            ts_ms: T0 + (m + 1) * MIN - 1,
            value: s,
        });
    }
    let energy = vec![
        Reading {
            ts_ms: T0 - MIN,
            value: 1_000.0,
        },
        Reading {
            ts_ms: T0 + 240 * MIN,
            value: 1_042.0,
        },
        Reading {
            ts_ms: T0 + 479 * MIN,
            value: 1_084.0,
        },
        Reading {
            ts_ms: T0 + 480 * MIN,
            value: 1_090.0,
        },
    ];
    UnitData {
        states,
        counters: BTreeMap::from([("good_count".into(), good), ("reject_count".into(), scrap)]),
        energy,
        products: Vec::new(),
        no_data: Vec::new(),
    }
}

fn period() -> Period {
    Period {
        label: "shift 2026-11-27 day".into(),
        from_ms: T0,
        to_ms: T0 + 480 * MIN,
    }
}

fn kpi(r: &UnitResult, k: Kpi) -> f64 {
    r.kpis
        .iter()
        .find(|v| v.kpi == k)
        .and_then(|v| v.value)
        .unwrap_or_else(|| panic!("{k:?} has no value"))
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

#[test]
fn the_worked_example_is_reproduced_exactly() {
    let r = compute(&unit(), &example_data(), &[shift()], &period());
    let e = &r.elements;
    assert_eq!(e.pot_ms, 480 * MIN);
    assert_eq!(e.pdot_ms, 30 * MIN);
    assert_eq!(e.pbt_ms(), 450 * MIN);
    assert_eq!(e.aust_ms, 20 * MIN);
    assert_eq!(e.adot_ms, 25 * MIN);
    assert_eq!(e.adet_ms, 15 * MIN);
    assert_eq!(e.apt_ms, 390 * MIN);
    assert_eq!(e.unknown_ms, 0);
    assert_eq!((e.produced, e.good, e.scrap), (700.0, 672.0, 28.0));
    assert_eq!(e.failures, 3);
    assert_eq!(e.failure_ms, 25 * MIN);
    assert_eq!(e.energy_kwh, Some(84.0));

    close(kpi(&r, Kpi::Availability), 390.0 / 450.0, "availability");
    close(kpi(&r, Kpi::Effectiveness), 350.0 / 390.0, "effectiveness");
    close(kpi(&r, Kpi::Quality), 672.0 / 700.0, "quality");
    close(kpi(&r, Kpi::Oee), 336.0 / 450.0, "OEE");
    assert_eq!(format!("{:.1}", kpi(&r, Kpi::Oee) * 100.0), "74.7");
    close(kpi(&r, Kpi::ScrapRatio), 0.04, "scrap ratio");
    close(kpi(&r, Kpi::Throughput), 700.0 / 7.5, "throughput per hour");
    close(
        kpi(&r, Kpi::TechnicalEfficiency),
        390.0 / 405.0,
        "technical efficiency",
    );
    close(kpi(&r, Kpi::Mtbf), 130.0, "MTBF (min)");
    close(kpi(&r, Kpi::Mttr), 25.0 / 3.0, "MTTR (min)");
    close(
        kpi(&r, Kpi::EnergyPerGoodUnit),
        84.0 / 672.0,
        "energy per good unit",
    );

    // Every minute of the shift is accounted for, once.
    assert_eq!(r.intervals.first().map(|i| i.from_ms), Some(T0));
    assert_eq!(r.intervals.last().map(|i| i.to_ms), Some(T0 + 480 * MIN));
    assert!(r.intervals.windows(2).all(|w| w[0].to_ms == w[1].from_ms));
    for b in TimeBucket::ALL {
        let sum: i64 = r
            .intervals
            .iter()
            .filter(|i| i.bucket == b)
            .map(|i| i.ms())
            .sum();
        assert_eq!(sum, e.bucket_ms(b), "{b}");
    }
    // The break is planned downtime even though the machine said running.
    let brk = r
        .intervals
        .iter()
        .find(|i| i.bucket == TimeBucket::Pdot)
        .expect("break");
    assert_eq!((brk.from_ms, brk.to_ms), (T0 + 240 * MIN, T0 + 270 * MIN));
    assert!(brk.why.contains("break"), "{}", brk.why);

    // Downtime by reason: jam 17 min (two), motor overload 8, no bottles 15.
    let dt: Vec<(&str, i64, u32)> = r
        .downtime
        .iter()
        .map(|d| (d.reason.as_str(), d.ms / MIN, d.occurrences))
        .collect();
    assert_eq!(
        dt,
        vec![
            ("jam", 17, 2),
            ("no bottles", 15, 1),
            ("motor overload", 8, 1)
        ]
    );
}

#[test]
fn unknown_state_is_a_loss_not_excluded_time() {
    let mut data = example_data();
    // No state until 06:30, and a recording gap 12:00-12:10.
    data.states.retain(|s| s.ts_ms >= T0 + 30 * MIN);
    data.states.insert(0, st(30, "running", ""));
    data.no_data.push(gantry_kpi::compute::NoData {
        from_ms: T0 + 360 * MIN,
        to_ms: T0 + 370 * MIN,
        reason: "Gantry was not running".into(),
    });
    let r = compute(&unit(), &data, &[shift()], &period());
    let e = &r.elements;
    assert_eq!(e.unknown_ms, 40 * MIN);
    assert_eq!(
        e.pbt_ms(),
        450 * MIN,
        "unknown time stays in planned busy time"
    );
    assert_eq!(e.aust_ms, 0);
    assert_eq!(e.apt_ms, 390 * MIN - 10 * MIN - 10 * MIN);
    assert!(kpi(&r, Kpi::Availability) < 390.0 / 450.0);
    let unknown: Vec<&str> = r
        .intervals
        .iter()
        .filter(|i| i.bucket == TimeBucket::Unknown)
        .map(|i| i.why.as_str())
        .collect();
    assert_eq!(
        unknown,
        vec![
            "no state recorded yet",
            "no data recorded: Gantry was not running"
        ]
    );
    assert!(
        r.downtime
            .iter()
            .any(|d| d.reason == "(no data)" && d.ms == 40 * MIN)
    );
}

#[test]
fn counter_resets_inside_the_shift_lose_nothing() {
    let mut data = example_data();
    // The good counter is reset to 0 at 09:00 (a PLC restart).
    let good = data.counters.get_mut("good_count").expect("good");
    let at = T0 + 180 * MIN;
    let offset = good
        .iter()
        .rev()
        .find(|r| r.ts_ms < at)
        .map(|r| r.value)
        .unwrap_or(0.0);
    for r in good.iter_mut().filter(|r| r.ts_ms >= at) {
        r.value -= offset;
    }
    let r = compute(&unit(), &data, &[shift()], &period());
    assert_eq!(r.elements.good, 672.0);
    let used = r
        .counters
        .iter()
        .find(|c| c.tag == "good_count")
        .expect("good used");
    assert_eq!(used.span.drops.len(), 1);
}

#[test]
fn a_failure_spanning_a_break_is_one_event() {
    let mut data = example_data();
    // Faulted from 09:55 to 10:40, across the 10:00-10:30 break.
    data.states
        .retain(|s| !(235..=280).contains(&((s.ts_ms - T0) / MIN)));
    data.states.push(st(235, "faulted", "jam"));
    data.states.push(st(280, "running", ""));
    data.states.sort_by_key(|s| s.ts_ms);
    let r = compute(&unit(), &data, &[shift()], &period());
    assert_eq!(r.elements.failures, 4);
    assert_eq!(r.elements.failure_ms, 25 * MIN + 5 * MIN + 10 * MIN);
}

#[test]
fn line_roll_up_adds_elements_not_percentages() {
    let a = compute(&unit(), &example_data(), &[shift()], &period()).elements;
    // A second machine with a 4-hour plan that ran flat out: OEE 100 %.
    let b = Elements {
        pot_ms: 240 * MIN,
        apt_ms: 240 * MIN,
        produced: 480.0,
        good: 480.0,
        ideal_produced_ms: 480.0 * 30_000.0,
        ideal_good_ms: 480.0 * 30_000.0,
        ..Elements::default()
    };
    let oee = |e: &Elements| {
        gantry_kpi::formulas::compute_one(e, Kpi::Oee)
            .value
            .expect("oee")
    };
    close(oee(&b), 1.0, "machine b");
    let mut line = Elements::default();
    line.add(&a);
    line.add(&b);
    // From the summed elements: A = 630/690, E = 590/630, Q = 1152/1180.
    let want = (630.0 / 690.0) * (590.0 / 630.0) * (1152.0 / 1180.0);
    close(oee(&line), want, "line OEE");
    let averaged = (oee(&a) + oee(&b)) / 2.0;
    assert!(
        (oee(&line) - averaged).abs() > 0.03,
        "a weighted roll-up, not an average"
    );
}

/// The live engine, fed value by value as the broker would route them,
/// gives the worked example's figures at the end of the shift, keeps few
/// counter readings, and starts the next shift from the values in force.
#[test]
fn the_live_engine_reproduces_the_example_from_routed_values() {
    use gantry_kpi::calendar::{BreakDef, Calendar, LocalTime, ShiftDef, Weekdays};
    use gantry_kpi::config::KpiConfig;
    use gantry_kpi::live::LiveEngine;
    use gantry_model::{Sample, Value};

    let t = |h, m| LocalTime::new(h, m).expect("time");
    let calendar = Calendar::new(
        "day",
        "UTC",
        vec![ShiftDef {
            name: "day".into(),
            start: t(6, 0),
            end: t(14, 0),
            days: Weekdays::ALL,
            breaks: vec![BreakDef {
                start: t(10, 0),
                end: t(10, 30),
                reason: "break".into(),
            }],
        }],
        Vec::new(),
    )
    .expect("calendar");
    let config = KpiConfig {
        units: vec![unit()],
        calendars: vec![calendar],
        publish_every_ms: 10_000,
    };
    let mut engine = LiveEngine::new(config);
    let u = unit();
    assert!(engine.wants(&u.topic("good_count")) && !engine.wants(&u.topic("speed")));
    let data = example_data();
    // Everything in time order, as routed.
    let mut events: Vec<(i64, String, Value)> = Vec::new();
    for s in &data.states {
        events.push((
            s.ts_ms,
            u.topic("state"),
            Value::Text(s.state.clone().unwrap_or_default()),
        ));
        events.push((
            s.ts_ms,
            u.topic("state_reason"),
            Value::Text(s.reason.clone().unwrap_or_default()),
        ));
    }
    for (tag, readings) in &data.counters {
        for r in readings {
            events.push((r.ts_ms, u.topic(tag), Value::Int(r.value as i64)));
        }
    }
    for r in &data.energy {
        events.push((r.ts_ms, u.topic("energy"), Value::Float(r.value)));
    }
    events.sort_by_key(|e| e.0);
    let end = T0 + 480 * MIN;
    // Values before the shift, then the shift begins, then its values.
    for (ts, topic, value) in events.iter().filter(|e| e.0 < T0) {
        engine.observe(topic, &Sample::new(*ts, value.clone()));
    }
    engine.tick(T0);
    for (ts, topic, value) in events.iter().filter(|e| e.0 >= T0 && e.0 < end) {
        engine.observe(topic, &Sample::new(*ts, value.clone()));
    }
    let published = engine.tick(end - 1);
    // 1,000 counter readings were folded into their baselines and ends.
    assert!(
        engine.held_values() < 30,
        "{} values held",
        engine.held_values()
    );
    let value_of = |topic: &str| {
        published
            .iter()
            .find(|p| p.topic == topic)
            .map(|p| p.sample.value.clone())
    };
    assert_eq!(
        value_of("acme/dallas/packaging/line-1/filler/_kpi/oee"),
        Some(Value::Float(0.7467))
    );
    assert_eq!(
        value_of("acme/dallas/packaging/line-1/_kpi/oee"),
        Some(Value::Float(0.7467)),
        "the line rolls up its one unit"
    );
    assert!(value_of("acme/dallas/_kpi/quality").is_some(), "sites too");
    let report = engine
        .current("acme/dallas/packaging/line-1/filler")
        .expect("current");
    assert_eq!((report.elements.good, report.elements.scrap), (672.0, 28.0));
    assert_eq!(report.elements.failures, 3);
    assert_eq!(report.elements.energy_kwh, Some(84.0));

    // The next day's shift starts from the values in force.
    let next = T0 + 24 * 60 * MIN;
    engine.observe(
        &u.topic("good_count"),
        &Sample::new(next + MIN, Value::Int(5_672 + 10)),
    );
    let published = engine.tick(next + 2 * MIN);
    // The closed shift's final figures, stamped just before its end, then
    // the new shift's.
    let closed: Vec<&gantry_kpi::live::Publication> = published
        .iter()
        .filter(|p| p.topic.ends_with("/_kpi/oee") && p.sample.timestamp_ms == end - 1)
        .collect();
    assert_eq!(closed.len(), 4, "unit, line, area and site: {closed:?}");
    assert!(
        closed
            .iter()
            .all(|p| p.sample.value == Value::Float(0.7467))
    );
    let report = engine
        .current("acme/dallas/packaging/line-1/filler")
        .expect("current");
    assert_eq!(report.from_ms, next);
    assert_eq!(report.elements.good, 10.0);
    assert_eq!(
        report.units[0].intervals[0].state.as_deref(),
        Some("running")
    );
}

#[test]
fn a_restarted_energy_meter_adds_nothing_at_its_restart() {
    let mut data = example_data();
    // The meter is replaced at 10:00 and comes back at 500 kWh.
    data.energy = vec![
        Reading {
            ts_ms: T0 - MIN,
            value: 1_000.0,
        },
        Reading {
            ts_ms: T0 + 239 * MIN,
            value: 1_042.0,
        },
        Reading {
            ts_ms: T0 + 240 * MIN,
            value: 500.0,
        },
        Reading {
            ts_ms: T0 + 479 * MIN,
            value: 542.0,
        },
    ];
    let r = compute(&unit(), &data, &[shift()], &period());
    assert_eq!(r.elements.energy_kwh, Some(84.0));
}

/// A night shift crosses midnight, and on the night clocks go back in
/// America/Chicago it lasts 9 hours: the planned operation time follows.
#[test]
fn night_shifts_cross_midnight_and_follow_the_clock_change() {
    use gantry_kpi::calendar::{Calendar, LocalTime, ShiftDef, Weekdays};
    let t = |h, m| LocalTime::new(h, m).expect("time");
    let calendar = Calendar::new(
        "nights",
        "America/Chicago",
        vec![ShiftDef {
            name: "night".into(),
            start: t(22, 0),
            end: t(6, 0),
            days: Weekdays::ALL,
            breaks: Vec::new(),
        }],
        Vec::new(),
    )
    .expect("calendar");
    let spec = |date: &str| gantry_kpi::period::PeriodSpec::Shift {
        date: date.into(),
        name: "night".into(),
    };
    for (date, hours) in [("2026-10-30", 8), ("2026-10-31", 9), ("2026-03-07", 7)] {
        let (period, shifts) = spec(date)
            .resolve(&calendar, i64::MAX / 2)
            .expect("resolves");
        // Running the whole night.
        let data = UnitData {
            states: vec![StateSample {
                ts_ms: period.from_ms - MIN,
                state: Some("running".into()),
                reason: None,
            }],
            ..UnitData::default()
        };
        let r = compute(&unit(), &data, &shifts, &period);
        assert_eq!(r.elements.pot_ms, hours * 60 * MIN, "{date}");
        assert_eq!(r.elements.apt_ms, hours * 60 * MIN, "{date}");
        assert_eq!(r.intervals.len(), 1, "{date}: one interval across midnight");
    }
}
