//! KPIs for any path of the namespace over a period: one work unit, or a
//! line, area or site rolled up from its units' time and quantity elements
//! (never by averaging percentages); and the text that explains them.

use gantry_historian::{HistorianError, HistoryRead};
use serde::Serialize;

use crate::calendar::Calendar;
use crate::compute::{UnitResult, compute};
use crate::config::KpiConfig;
use crate::elements::{Elements, TimeBucket};
use crate::formulas::{self, Kpi, KpiValue};
use crate::period::PeriodSpec;

/// What went wrong computing a report.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    #[error("no work unit at or below \"{path}\"{hint}")]
    UnknownPath { path: String, hint: String },
    #[error("{0}")]
    Period(String),
    #[error("work unit {unit}: calendar \"{calendar}\" is not defined")]
    Calendar { unit: String, calendar: String },
    #[error(transparent)]
    History(#[from] HistorianError),
}

/// KPIs of a path over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub path: String,
    /// The period of the first unit (units on other calendars have their
    /// own, in `units`).
    pub period: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Summed over the units.
    pub elements: Elements,
    pub kpis: Vec<KpiValue>,
    pub units: Vec<UnitResult>,
}

impl Report {
    pub fn kpi(&self, kpi: Kpi) -> Option<&KpiValue> {
        self.kpis.iter().find(|v| v.kpi == kpi)
    }

    /// Whether this is one unit rather than a roll-up.
    pub fn is_unit(&self) -> bool {
        self.units.len() == 1 && self.units[0].path == self.path
    }
}

/// Computes the KPIs of `path` over `spec` at `now_ms` from the historian.
pub fn report(
    config: &KpiConfig,
    reader: &mut dyn HistoryRead,
    path: &str,
    spec: &PeriodSpec,
    now_ms: i64,
) -> Result<Report, KpiError> {
    let units = config.units_under(path);
    if units.is_empty() {
        let known: Vec<&str> = config.units.iter().map(|u| u.path.as_str()).collect();
        let hint = match gantry_model::suggest::closest(path, &known) {
            Some(s) => format!(" (did you mean \"{s}\"?)"),
            None if known.is_empty() => " (the site model defines no [[kpi.work_unit]])".into(),
            None => format!(" (work units: {})", known.join(", ")),
        };
        return Err(KpiError::UnknownPath {
            path: path.to_string(),
            hint,
        });
    }
    let mut results = Vec::with_capacity(units.len());
    for unit in units {
        let calendar = config
            .calendar(&unit.calendar)
            .ok_or_else(|| KpiError::Calendar {
                unit: unit.path.clone(),
                calendar: unit.calendar.clone(),
            })?;
        let (period, shifts) = spec.resolve(calendar, now_ms).map_err(KpiError::Period)?;
        let data = crate::history::unit_data(reader, unit, period.from_ms, period.to_ms)?;
        results.push(compute(unit, &data, &shifts, &period));
    }
    Ok(roll_up(path.trim_end_matches('/'), results))
}

/// Sums units' elements into a report for `path`.
pub fn roll_up(path: &str, units: Vec<UnitResult>) -> Report {
    let mut elements = Elements::default();
    for u in &units {
        elements.add(&u.elements);
    }
    let (period, from_ms, to_ms) = units
        .first()
        .map(|u| (u.period.label.clone(), u.period.from_ms, u.period.to_ms))
        .unwrap_or_default();
    Report {
        path: path.to_string(),
        period,
        from_ms,
        to_ms,
        kpis: formulas::compute(&elements),
        elements,
        units,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{:.1} %", v * 100.0))
}

fn min(ms: i64) -> String {
    format!("{:.1} min", ms as f64 / 60_000.0)
}

/// A KPI's value in its unit.
pub fn value_text(v: &KpiValue) -> String {
    match (v.value, v.unit) {
        (None, _) => "n/a".into(),
        (Some(x), "ratio") => format!("{:.1} %", x * 100.0),
        (Some(x), "units/h") => format!("{x:.1} units/h"),
        (Some(x), "min") => format!("{x:.1} min"),
        (Some(x), "kWh/unit") => format!("{x:.4} kWh/unit"),
        (Some(x), u) => format!("{x} {u}"),
    }
}

fn input_text(i: &formulas::Input) -> String {
    match i.unit {
        "ratio" => pct(Some(i.value)),
        "min" => format!("{:.1} min", i.value),
        "h" => format!("{:.2} h", i.value),
        "units" | "events" => format!("{} {}", trim_float(i.value), i.unit),
        u => format!("{} {u}", trim_float(i.value)),
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// `gantry kpi show`: the KPIs with their inputs, and per unit for a
/// roll-up.
pub fn show_text(r: &Report, calendar: Option<&Calendar>) -> String {
    let mut o = String::new();
    let when = |ms: i64| calendar.map_or(ms.to_string(), |c| c.local_text(ms));
    o.push_str(&format!(
        "{}  {}  ({} to {})\n",
        r.path,
        r.period,
        when(r.from_ms),
        when(r.to_ms)
    ));
    if !r.is_unit() {
        o.push_str(&format!(
            "rolled up from {} work units by adding their time and quantity elements\n",
            r.units.len()
        ));
    }
    o.push('\n');
    for v in &r.kpis {
        let inputs: Vec<String> = v
            .inputs
            .iter()
            .map(|i| format!("{} {}", i.name, input_text(i)))
            .collect();
        o.push_str(&format!(
            "  {:<22} {:>16}   {} = {}{}\n",
            v.kpi.name(),
            value_text(v),
            v.formula,
            inputs.join(", "),
            v.why
                .as_ref()
                .map(|w| format!("  ({w})"))
                .unwrap_or_default()
        ));
    }
    let e = &r.elements;
    o.push_str(&format!(
        "\n  POT {} = PDOT {} + PBT {};  PBT = APT {} + AUST {} + ADET {} + ADOT {} + UNKNOWN {}\n",
        min(e.pot_ms),
        min(e.pdot_ms),
        min(e.pbt_ms()),
        min(e.apt_ms),
        min(e.aust_ms),
        min(e.adet_ms),
        min(e.adot_ms),
        min(e.unknown_ms)
    ));
    o.push_str(&format!(
        "  PQ {}  GQ {}  SQ {}  FE {}{}\n",
        trim_float(e.produced),
        trim_float(e.good),
        trim_float(e.scrap),
        e.failures,
        e.energy_kwh
            .map(|k| format!("  energy {k:.3} kWh"))
            .unwrap_or_default()
    ));
    if !r.is_unit() {
        o.push_str("\n  unit                                         OEE    avail.   effect.  quality       PBT\n");
        for u in &r.units {
            let k = |kpi: Kpi| pct(u.kpis.iter().find(|v| v.kpi == kpi).and_then(|v| v.value));
            o.push_str(&format!(
                "  {:<40} {:>8} {:>8} {:>9} {:>8} {:>13}\n",
                u.path,
                k(Kpi::Oee),
                k(Kpi::Availability),
                k(Kpi::Effectiveness),
                k(Kpi::Quality),
                min(u.elements.pbt_ms())
            ));
        }
    }
    let downtime = r.units.iter().flat_map(|u| u.downtime.iter());
    let mut by: std::collections::BTreeMap<String, (i64, u32)> = Default::default();
    for d in downtime {
        let e = by
            .entry(format!("{} ({})", d.reason, d.bucket))
            .or_default();
        e.0 += d.ms;
        e.1 += d.occurrences;
    }
    if !by.is_empty() {
        let mut rows: Vec<_> = by.into_iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1.0));
        o.push_str("\n  downtime by reason:\n");
        for (reason, (ms, n)) in rows.iter().take(10) {
            o.push_str(&format!("    {:>10}  {n:>3}×  {reason}\n", min(*ms)));
        }
    }
    o
}

/// `gantry kpi explain`: the formula, every input, and for each unit the
/// intervals (accounting for every minute of the period) and counter
/// readings it was computed from.
pub fn explain_text(r: &Report, kpi: Kpi, calendar: Option<&Calendar>) -> String {
    let mut o = String::new();
    let when = |ms: i64| calendar.map_or(ms.to_string(), |c| c.local_text(ms));
    let clock = |ms: i64| {
        let t = when(ms);
        t.get(11..19).map(str::to_string).unwrap_or(t)
    };
    let v = formulas::compute_one(&r.elements, kpi);
    o.push_str(&format!(
        "{} of {}, {} ({} to {})\n\n",
        kpi.name(),
        r.path,
        r.period,
        when(r.from_ms),
        when(r.to_ms)
    ));
    o.push_str(&format!(
        "  {} = {} = {}\n",
        kpi.name(),
        v.formula,
        value_text(&v)
    ));
    for i in &v.inputs {
        o.push_str(&format!("    {} = {}\n", i.name, input_text(i)));
    }
    if kpi == Kpi::Oee {
        for part in [Kpi::Availability, Kpi::Effectiveness, Kpi::Quality] {
            let p = formulas::compute_one(&r.elements, part);
            let inputs: Vec<String> = p.inputs.iter().map(input_text).collect();
            o.push_str(&format!(
                "    {} = {} = {} = {}\n",
                part.name(),
                p.formula,
                inputs.join(" / "),
                value_text(&p)
            ));
        }
    }
    if let Some(why) = &v.why {
        o.push_str(&format!("    ({why})\n"));
    }
    let e = &r.elements;
    o.push_str(&format!(
        "\n  POT {} = PDOT {} + PBT {}\n  PBT {} = APT {} + AUST {} + ADET {} + ADOT {} + UNKNOWN {}\n",
        min(e.pot_ms),
        min(e.pdot_ms),
        min(e.pbt_ms()),
        min(e.pbt_ms()),
        min(e.apt_ms),
        min(e.aust_ms),
        min(e.adet_ms),
        min(e.adot_ms),
        min(e.unknown_ms)
    ));
    o.push_str(&format!(
        "  PRI × PQ {}, PRI × GQ {}; PQ {}, GQ {}, SQ {}; FE {}, TTR {}\n",
        min(e.ideal_produced_ms.round() as i64),
        min(e.ideal_good_ms.round() as i64),
        trim_float(e.produced),
        trim_float(e.good),
        trim_float(e.scrap),
        e.failures,
        min(e.failure_ms)
    ));
    for u in &r.units {
        o.push_str(&format!(
            "\n{}  {} ({} to {})\n",
            u.path,
            u.period.label,
            when(u.period.from_ms),
            when(u.period.to_ms)
        ));
        let mut totals = std::collections::BTreeMap::<TimeBucket, i64>::new();
        for i in &u.intervals {
            *totals.entry(i.bucket).or_default() += i.ms();
            let what = match (&i.state, &i.reason) {
                (Some(s), Some(r)) => format!("{s} ({r})"),
                (Some(s), None) => s.clone(),
                _ => String::new(),
            };
            o.push_str(&format!(
                "  {} - {}  {:>10}  {:<7} {:<32} {}\n",
                clock(i.from_ms),
                clock(i.to_ms),
                min(i.ms()),
                i.bucket.as_str(),
                what,
                i.why
            ));
        }
        let accounted: i64 = totals.values().sum();
        let parts: Vec<String> = totals
            .iter()
            .map(|(b, ms)| format!("{b} {}", min(*ms)))
            .collect();
        o.push_str(&format!(
            "  accounted: {} of {} ({})\n",
            min(accounted),
            min(u.period.to_ms - u.period.from_ms),
            parts.join(", ")
        ));
        for c in &u.counters {
            let s = &c.span;
            let reading = |r: Option<crate::counter::Reading>| {
                r.map_or("none".into(), |r| {
                    format!("{} at {}", trim_float(r.value), when(r.ts_ms))
                })
            };
            o.push_str(&format!(
                "  counter {} ({}): from {} to {}: +{}{}\n",
                c.tag,
                c.role,
                reading(s.baseline),
                reading(s.last),
                trim_float(s.increase),
                if s.drops.is_empty() {
                    String::new()
                } else {
                    format!(
                        " across {} drop(s) (reset, rollover or restart)",
                        s.drops.len()
                    )
                }
            ));
            for d in &s.drops {
                use crate::counter::Drop;
                let (kind, ts, before, after) = match *d {
                    Drop::Reset {
                        ts_ms,
                        before,
                        after,
                    } => ("reset", ts_ms, before, after),
                    Drop::Rollover {
                        ts_ms,
                        before,
                        after,
                    } => ("rollover", ts_ms, before, after),
                    Drop::Restart {
                        ts_ms,
                        before,
                        after,
                    } => ("restart (nothing added)", ts_ms, before, after),
                };
                o.push_str(&format!(
                    "    {kind} at {}: {} → {}\n",
                    when(ts),
                    trim_float(before),
                    trim_float(after)
                ));
            }
        }
        if let Some(k) = u.elements.energy_kwh {
            o.push_str(&format!("  energy: +{k:.3} kWh\n"));
        }
        for n in &u.notes {
            o.push_str(&format!("  note: {n}\n"));
        }
    }
    o
}
