//! The live engine: the current shift of every work unit, kept up to date
//! from the values the broker routes, and the KPIs of every unit and of
//! every line, area and site above them, recomputed on each tick with the
//! same [`compute`] as closed periods.
//!
//! Memory stays bounded over a shift: state changes are few, and a
//! counter's readings are folded as they arrive (a reading that continues a
//! rise with the same product replaces the previous one; only drops and
//! product changes are kept).

use std::collections::{BTreeSet, HashMap};

use gantry_historian::{HistorianError, HistoryRead};
use gantry_model::{Quality, Sample, Value};

use crate::calendar::ShiftInstance;
use crate::compute::{Period, StateSample, UnitData, UnitResult, compute};
use crate::config::{KpiConfig, is_at_or_below};
use crate::counter::Reading;
use crate::elements::Elements;
use crate::formulas::Kpi;
use crate::report::{Report, roll_up};
use crate::unit::WorkUnit;

/// What a topic feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    State,
    Reason,
    Counter(String),
    Energy,
    Product,
}

struct LiveUnit {
    shift: Option<ShiftInstance>,
    data: UnitData,
    state: Option<(i64, Option<String>)>,
    reason: Option<String>,
    last: Option<UnitResult>,
}

/// One KPI value to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: String,
    pub sample: Sample,
}

/// The live KPIs of a site.
pub struct LiveEngine {
    config: KpiConfig,
    units: Vec<LiveUnit>,
    topics: HashMap<String, (usize, Role)>,
    /// Every path KPIs are published for: units, then their lines, areas
    /// and sites.
    paths: Vec<String>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// Appends a counter reading, folding a steady rise: `a ≤ b ≤ c` with the
/// same product at `b` and `c` adds up the same from `a` to `c` without `b`.
/// Only inside the current shift (`window`): the reading in force at a
/// shift's start is the next shift's baseline.
fn push_reading(
    readings: &mut Vec<Reading>,
    r: Reading,
    window: Option<(i64, i64)>,
    same_product: impl Fn(i64, i64) -> bool,
) {
    match readings.last() {
        Some(last) if r.ts_ms < last.ts_ms => {
            // Late: keep order (rare; nothing is folded around it).
            let i = readings.partition_point(|x| x.ts_ms <= r.ts_ms);
            if i == 0 || readings[i - 1].ts_ms != r.ts_ms {
                readings.insert(i, r);
            }
            return;
        }
        Some(last) if r.ts_ms == last.ts_ms => return,
        _ => {}
    }
    let n = readings.len();
    if n >= 2 {
        let (a, b) = (readings[n - 2], readings[n - 1]);
        let inside = |t: i64| window.is_some_and(|(from, to)| from < t && t < to);
        if a.value <= b.value
            && b.value <= r.value
            && inside(b.ts_ms)
            && inside(r.ts_ms)
            && same_product(b.ts_ms, r.ts_ms)
        {
            readings[n - 1] = r;
            return;
        }
    }
    readings.push(r);
}

impl LiveEngine {
    pub fn new(config: KpiConfig) -> LiveEngine {
        let mut topics = HashMap::new();
        let mut paths: Vec<String> = Vec::new();
        let mut parents = BTreeSet::new();
        for (i, u) in config.units.iter().enumerate() {
            topics.insert(u.topic(&u.state_tag), (i, Role::State));
            if let Some(t) = &u.reason_tag {
                topics.insert(u.topic(t), (i, Role::Reason));
            }
            for t in u.counting.tags() {
                topics.insert(u.topic(t), (i, Role::Counter(t.to_string())));
            }
            if let Some(t) = &u.energy_tag {
                topics.insert(u.topic(t), (i, Role::Energy));
            }
            if let Some(t) = &u.product_tag {
                topics.insert(u.topic(t), (i, Role::Product));
            }
            paths.push(u.path.clone());
            // Lines, areas and sites: every ancestor below the enterprise.
            let segments: Vec<&str> = u.path.split('/').collect();
            for depth in 2..segments.len() {
                parents.insert(segments[..depth].join("/"));
            }
        }
        paths.extend(
            parents
                .into_iter()
                .filter(|p| !config.units.iter().any(|u| &u.path == p)),
        );
        let units = config
            .units
            .iter()
            .map(|_| LiveUnit {
                shift: None,
                data: UnitData::default(),
                state: None,
                reason: None,
                last: None,
            })
            .collect();
        LiveEngine {
            config,
            units,
            topics,
            paths,
        }
    }

    pub fn config(&self) -> &KpiConfig {
        &self.config
    }

    /// Whether a topic feeds any unit (checked on the publish path).
    pub fn wants(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// Every topic the engine reads.
    pub fn input_topics(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }

    /// Loads each unit's current shift so far from the historian (after a
    /// start in the middle of a shift).
    pub fn seed(
        &mut self,
        reader: &mut dyn HistoryRead,
        now_ms: i64,
    ) -> Result<(), HistorianError> {
        for i in 0..self.units.len() {
            let unit = self.config.units[i].clone();
            let Some(shift) = self.shift_of(&unit, now_ms) else {
                continue;
            };
            let data = crate::history::unit_data(reader, &unit, shift.start_ms, now_ms)?;
            let live = &mut self.units[i];
            live.state = data.states.last().map(|s| (s.ts_ms, s.state.clone()));
            live.reason = data.states.last().and_then(|s| s.reason.clone());
            live.data = data;
            live.shift = Some(shift);
        }
        Ok(())
    }

    fn shift_of(&self, unit: &WorkUnit, t: i64) -> Option<ShiftInstance> {
        self.config.calendar(&unit.calendar)?.shift_at(t)
    }

    /// Takes one routed value of an input topic.
    pub fn observe(&mut self, topic: &str, sample: &Sample) {
        let Some((i, role)) = self.topics.get(topic).cloned() else {
            return;
        };
        let live = &mut self.units[i];
        let ts = sample.timestamp_ms;
        let usable = sample.quality != Quality::Bad;
        match role {
            Role::State | Role::Reason => {
                if role == Role::State {
                    live.state = Some((ts, usable.then(|| text_of(&sample.value))));
                } else {
                    live.reason = usable
                        .then(|| text_of(&sample.value))
                        .filter(|r| !r.is_empty());
                }
                let Some((_, state)) = live.state.clone() else {
                    return;
                };
                let s = StateSample {
                    ts_ms: ts,
                    state,
                    reason: live.reason.clone(),
                };
                let states = &mut live.data.states;
                match states.last() {
                    Some(last) if last.state == s.state && last.reason == s.reason => {}
                    Some(last) if last.ts_ms > ts => {
                        let at = states.partition_point(|x| x.ts_ms <= ts);
                        states.insert(at, s);
                    }
                    _ => states.push(s),
                }
            }
            Role::Counter(_) | Role::Energy => {
                let value = match &sample.value {
                    Value::Int(v) => *v as f64,
                    Value::Float(f) if f.is_finite() => *f,
                    _ => return,
                };
                if !usable {
                    return;
                }
                let products = &live.data.products;
                let product_at = |t: i64| {
                    let k = products.partition_point(|(pt, _)| *pt <= t);
                    k.checked_sub(1).map(|k| &products[k].1)
                };
                let same = |a: i64, b: i64| product_at(a) == product_at(b);
                let window = live.shift.as_ref().map(|s| (s.start_ms, s.end_ms));
                let reading = Reading { ts_ms: ts, value };
                match role {
                    Role::Counter(tag) => {
                        let mut readings = live.data.counters.remove(&tag).unwrap_or_default();
                        push_reading(&mut readings, reading, window, same);
                        live.data.counters.insert(tag, readings);
                    }
                    _ => {
                        let mut readings = std::mem::take(&mut live.data.energy);
                        push_reading(&mut readings, reading, window, |_, _| true);
                        live.data.energy = readings;
                    }
                }
            }
            Role::Product => {
                if usable {
                    let p = text_of(&sample.value);
                    if live.data.products.last().is_none_or(|(_, last)| *last != p) {
                        live.data.products.push((ts, p));
                    }
                }
            }
        }
    }

    /// Recomputes every unit's current shift at `now_ms` (starting a new
    /// shift where one has begun) and returns the KPI values to publish, for
    /// units and roll-ups, under `<path>/_kpi/<name>`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Publication> {
        // Shifts that ended since the last tick: their final figures are
        // published too, stamped just before the shift's end.
        let mut closed: Vec<UnitResult> = Vec::new();
        for i in 0..self.units.len() {
            let unit = &self.config.units[i];
            let shift = self
                .config
                .calendar(&unit.calendar)
                .and_then(|c| c.shift_at(now_ms));
            let live = &mut self.units[i];
            let changed = match (&live.shift, &shift) {
                (Some(a), Some(b)) => a.start_ms != b.start_ms,
                (None, None) => false,
                _ => true,
            };
            if changed {
                if let Some(old) = &live.shift {
                    let period = Period {
                        label: format!("shift {}", old.label),
                        from_ms: old.start_ms,
                        to_ms: old.end_ms,
                    };
                    closed.push(compute(
                        unit,
                        &live.data,
                        std::slice::from_ref(old),
                        &period,
                    ));
                }
                // Keep what the new shift needs: its values so far and the
                // ones in force at its start.
                if let Some(s) = &shift {
                    trim_before(&mut live.data, s.start_ms);
                }
                live.shift = shift;
            }
            live.last = live.shift.as_ref().map(|s| {
                // Up to now, or to the newest value if a device's clock runs
                // ahead of ours (a folded counter keeps only its newest
                // reading, which must not fall outside the period).
                let newest = newest_ts(&live.data).map_or(i64::MIN, |t| t.saturating_add(1));
                let period = Period {
                    label: format!("shift {} (so far)", s.label),
                    from_ms: s.start_ms,
                    to_ms: now_ms.max(newest).clamp(s.start_ms, s.end_ms),
                };
                trim_before(&mut live.data, s.start_ms);
                compute(unit, &live.data, std::slice::from_ref(s), &period)
            });
        }
        // Roll-ups publish from summed elements: no result is copied.
        let mut out = Vec::new();
        if !closed.is_empty() {
            for path in &self.paths {
                let under = closed.iter().filter(|r| is_at_or_below(&r.path, path));
                if let Some((elements, end)) = sum(under) {
                    publish(&mut out, path, &elements, end - 1);
                }
            }
        }
        for path in &self.paths {
            if let Some((elements, _)) = sum(self.results_under(path)) {
                publish(&mut out, path, &elements, now_ms);
            }
        }
        out
    }

    /// The last results of the units at or below `path`.
    fn results_under<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a UnitResult> {
        let path = path.trim_end_matches('/');
        self.config
            .units
            .iter()
            .zip(&self.units)
            .filter(move |(u, _)| is_at_or_below(&u.path, path))
            .filter_map(|(_, live)| live.last.as_ref())
    }

    /// The current shift's KPIs of a unit or a roll-up, as of the last tick.
    pub fn current(&self, path: &str) -> Option<Report> {
        let results: Vec<UnitResult> = self.results_under(path).cloned().collect();
        (!results.is_empty()).then(|| roll_up(path.trim_end_matches('/'), results))
    }

    /// Values held in memory for the current shifts (states and readings).
    pub fn held_values(&self) -> usize {
        self.units
            .iter()
            .map(|u| {
                u.data.states.len()
                    + u.data.counters.values().map(Vec::len).sum::<usize>()
                    + u.data.energy.len()
                    + u.data.products.len()
            })
            .sum()
    }

    /// Every path KPIs are published for.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

/// The summed elements of some results and the latest end of their periods.
fn sum<'a>(results: impl Iterator<Item = &'a UnitResult>) -> Option<(Elements, i64)> {
    let mut total: Option<(Elements, i64)> = None;
    for r in results {
        let (elements, end) = total.get_or_insert_with(|| (Elements::default(), i64::MIN));
        elements.add(&r.elements);
        *end = (*end).max(r.period.to_ms);
    }
    total
}

/// The KPIs of `elements` that have a value, as samples at `ts_ms`.
fn publish(out: &mut Vec<Publication>, path: &str, elements: &Elements, ts_ms: i64) {
    for v in crate::formulas::compute(elements) {
        let Some(value) = v.value.filter(|x| x.is_finite()) else {
            continue;
        };
        out.push(Publication {
            topic: format!("{path}/_kpi/{}", v.kpi.name()),
            sample: Sample::new(ts_ms, Value::Float(round(value, v.kpi))),
        });
    }
}

/// Ratios to 4 decimals (0.1 percentage point needs 3), times and rates to
/// 3: enough for people, stable for the historian.
fn round(v: f64, kpi: Kpi) -> f64 {
    let scale = match kpi.unit() {
        "ratio" => 10_000.0,
        "kWh/unit" => 1_000_000.0,
        _ => 1_000.0,
    };
    (v * scale).round() / scale
}

/// The timestamp of the newest value held.
fn newest_ts(data: &UnitData) -> Option<i64> {
    let states = data.states.last().map(|s| s.ts_ms);
    let counters = data
        .counters
        .values()
        .filter_map(|v| v.last().map(|r| r.ts_ms));
    let energy = data.energy.last().map(|r| r.ts_ms);
    states.into_iter().chain(counters).chain(energy).max()
}

/// Drops what lies before `from` except the values in force at it.
fn trim_before(data: &mut UnitData, from: i64) {
    fn keep_from<T>(v: &mut Vec<T>, ts: impl Fn(&T) -> i64, from: i64) {
        let first_inside = v.partition_point(|x| ts(x) <= from);
        if first_inside > 1 {
            v.drain(..first_inside - 1);
        }
    }
    keep_from(&mut data.states, |s| s.ts_ms, from);
    for readings in data.counters.values_mut() {
        keep_from(readings, |r| r.ts_ms, from);
    }
    keep_from(&mut data.energy, |r| r.ts_ms, from);
    keep_from(&mut data.products, |p| p.0, from);
    data.no_data.retain(|g| g.to_ms > from);
}
