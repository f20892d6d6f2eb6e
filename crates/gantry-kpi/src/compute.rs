//! One work unit over one period: its state history cut into intervals on
//! the shift calendar, each booked to an ISO 22400 time bucket, its counters
//! read for quantities, and the KPIs computed from the resulting elements.
//! The same function serves the live current shift (fed from the broker)
//! and closed periods (fed from the historian).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::calendar::ShiftInstance;
use crate::counter::{self, CounterSpan, Reading};
use crate::elements::{Elements, TimeBucket};
use crate::formulas::{self, KpiValue};
use crate::unit::{Counting, WorkUnit};

/// One recorded value of the state tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateSample {
    pub ts_ms: i64,
    /// `None` when the value is unusable (bad quality).
    pub state: Option<String>,
    /// The reason tag's value in force at that time, if any.
    pub reason: Option<String>,
}

/// A stretch of time without recorded data (a recording gap, a source
/// that was offline).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoData {
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

/// Everything recorded for one unit that a period needs: values from before
/// the period start are the state and counter readings in force at it.
#[derive(Debug, Clone, Default)]
pub struct UnitData {
    /// In time order.
    pub states: Vec<StateSample>,
    /// Per counter tag (as named in the unit's [`Counting`]), in time order.
    pub counters: BTreeMap<String, Vec<Reading>>,
    pub energy: Vec<Reading>,
    /// Product tag values in time order.
    pub products: Vec<(i64, String)>,
    pub no_data: Vec<NoData>,
}

/// The period a result covers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    /// "shift 2026-11-27 day", "day 2026-11-27", "week 2026-W48".
    pub label: String,
    pub from_ms: i64,
    /// Exclusive; for the live shift, now.
    pub to_ms: i64,
}

/// A stretch of the period with one classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket: TimeBucket,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it is in this bucket (the state model's rule, the calendar's
    /// break, the recording gap).
    pub why: String,
    pub failure: bool,
}

impl Interval {
    pub fn ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }
}

/// Downtime of one reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Downtime {
    pub reason: String,
    pub bucket: TimeBucket,
    pub ms: i64,
    /// How many separate stretches.
    pub occurrences: u32,
}

/// The counters a result was computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterUse {
    /// The tag and what it counts (`good_count` as GQ).
    pub tag: String,
    pub role: &'static str,
    #[serde(flatten)]
    pub span: CounterSpan,
}

/// A unit's KPIs over a period, with everything they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitResult {
    pub path: String,
    pub period: Period,
    pub elements: Elements,
    pub kpis: Vec<KpiValue>,
    /// The whole period, in order, without gaps or overlaps.
    pub intervals: Vec<Interval>,
    pub counters: Vec<CounterUse>,
    /// ADOT, ADET and UNKNOWN time by reason, largest first.
    pub downtime: Vec<Downtime>,
    pub notes: Vec<String>,
}

/// Classification of one stretch before merging.
struct Piece {
    bucket: TimeBucket,
    state: Option<String>,
    reason: Option<String>,
    why: String,
    failure: bool,
    /// Index of the state sample in force (for failure episodes).
    sample: Option<usize>,
}

/// Computes one unit's KPIs over `period`, within the planned operation time
/// given by `shifts` (the calendar's occurrences overlapping the period).
pub fn compute(
    unit: &WorkUnit,
    data: &UnitData,
    shifts: &[ShiftInstance],
    period: &Period,
) -> UnitResult {
    let (from, to) = (period.from_ms, period.to_ms.max(period.from_ms));
    let mut notes = Vec::new();
    let mut cuts: Vec<i64> = vec![from, to];
    for s in shifts {
        cuts.extend([s.start_ms, s.end_ms]);
        for w in &s.planned_down {
            cuts.extend([w.from_ms, w.to_ms]);
        }
    }
    for g in &data.no_data {
        cuts.extend([g.from_ms, g.to_ms]);
    }
    cuts.extend(data.states.iter().map(|s| s.ts_ms));
    cuts.retain(|t| (from..=to).contains(t));
    cuts.sort_unstable();
    cuts.dedup();

    let episodes = failure_episodes(unit, &data.states);
    let mut elements = Elements::default();
    let mut intervals: Vec<Interval> = Vec::new();
    let mut counted_episodes = std::collections::BTreeSet::new();
    let mut ongoing_failure_noted = false;
    for pair in cuts.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b <= a {
            continue;
        }
        let piece = classify(unit, data, shifts, a);
        let ms = b - a;
        elements.add_time(piece.bucket, ms);
        if piece.failure && piece.bucket.in_busy_time() {
            elements.failure_ms += ms;
            if let Some(episode) = piece
                .sample
                .and_then(|i| episodes.get(i).copied().flatten())
                && counted_episodes.insert(episode)
            {
                if data.states[episode].ts_ms >= from {
                    elements.failures += 1;
                } else if !ongoing_failure_noted {
                    ongoing_failure_noted = true;
                    notes.push(format!(
                        "a failure already in progress at the period start (since {}) is counted as an event in the period it began; its time here counts toward TTR",
                        data.states[episode].ts_ms
                    ));
                }
            }
        }
        match intervals.last_mut() {
            Some(last)
                if last.to_ms == a
                    && last.bucket == piece.bucket
                    && last.state == piece.state
                    && last.reason == piece.reason
                    && last.why == piece.why =>
            {
                last.to_ms = b;
            }
            _ => intervals.push(Interval {
                from_ms: a,
                to_ms: b,
                bucket: piece.bucket,
                state: piece.state,
                reason: piece.reason,
                why: piece.why,
                failure: piece.failure,
            }),
        }
    }

    let counters = count(unit, data, from, to, &mut elements, &mut notes);
    if let Some(tag) = &unit.energy_tag {
        // An energy meter's drops are restarts (or a replaced meter).
        let span = counter::span(&data.energy, from, to, counter::DropRules::default());
        elements.energy_kwh = Some(span.increase);
        if let Some(n) = &span.note {
            notes.push(format!("energy meter {tag}: {n}"));
        }
    }
    let downtime = downtime_by_reason(&intervals);
    UnitResult {
        path: unit.path.clone(),
        period: period.clone(),
        kpis: formulas::compute(&elements),
        elements,
        intervals,
        counters,
        downtime,
        notes,
    }
}

/// For each state sample, the index of the first sample of the failure
/// episode it belongs to (consecutive samples of one failure state are one
/// episode), or `None` if it is not a failure.
fn failure_episodes(unit: &WorkUnit, states: &[StateSample]) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(states.len());
    let mut current: Option<(usize, &str)> = None;
    for (i, s) in states.iter().enumerate() {
        let failure = s.state.as_deref().filter(|state| {
            unit.state_model
                .classify(state, s.reason.as_deref())
                .failure
        });
        current = match (failure, current) {
            (Some(state), Some((start, prev))) if prev == state => Some((start, prev)),
            (Some(state), _) => Some((i, state)),
            (None, _) => None,
        };
        out.push(current.map(|(start, _)| start));
    }
    out
}

fn classify(unit: &WorkUnit, data: &UnitData, shifts: &[ShiftInstance], at: i64) -> Piece {
    let plain = |bucket, why: String| Piece {
        bucket,
        state: None,
        reason: None,
        why,
        failure: false,
        sample: None,
    };
    let Some(shift) = shifts.iter().find(|s| s.start_ms <= at && at < s.end_ms) else {
        return plain(TimeBucket::Outside, "outside the shift calendar".into());
    };
    if let Some(w) = shift
        .planned_down
        .iter()
        .find(|w| w.from_ms <= at && at < w.to_ms)
    {
        return plain(
            TimeBucket::Pdot,
            format!("planned in the calendar: {}", w.reason),
        );
    }
    if let Some(g) = data
        .no_data
        .iter()
        .find(|g| g.from_ms <= at && at < g.to_ms)
    {
        return plain(
            TimeBucket::Unknown,
            format!("no data recorded: {}", g.reason),
        );
    }
    let index = data.states.partition_point(|s| s.ts_ms <= at);
    let Some(i) = index.checked_sub(1) else {
        return plain(TimeBucket::Unknown, "no state recorded yet".into());
    };
    let sample = &data.states[i];
    let Some(state) = &sample.state else {
        return Piece {
            sample: Some(i),
            ..plain(
                TimeBucket::Unknown,
                "the state value was of bad quality".into(),
            )
        };
    };
    let c = unit.state_model.classify(state, sample.reason.as_deref());
    Piece {
        bucket: c.bucket,
        state: Some(state.clone()),
        reason: sample.reason.clone().filter(|r| !r.is_empty()),
        why: c.rule,
        failure: c.failure,
        sample: Some(i),
    }
}

/// Reads the counters into PQ, GQ, SQ and the ideal times.
fn count(
    unit: &WorkUnit,
    data: &UnitData,
    from: i64,
    to: i64,
    e: &mut Elements,
    notes: &mut Vec<String>,
) -> Vec<CounterUse> {
    let empty = Vec::new();
    // A counter can plausibly count at most twice the ideal rate of the
    // fastest product: a drop to more than that since the previous reading
    // is a restart, not a reset.
    let fastest_ms = unit
        .ideal_cycle_ms_by_product
        .values()
        .copied()
        .fold(unit.ideal_cycle_ms, f64::min);
    let rules = counter::DropRules {
        modulus: unit.counter_modulus,
        max_rate_per_ms: (fastest_ms > 0.0).then(|| 2.0 / fastest_ms),
    };
    let read = |tag: &str| counter::span(data.counters.get(tag).unwrap_or(&empty), from, to, rules);
    let product_at = |ts: i64| -> Option<&str> {
        let i = data.products.partition_point(|(t, _)| *t <= ts);
        i.checked_sub(1).map(|i| data.products[i].1.as_str())
    };
    // Σ PRI × increments, with the product in force at each increment.
    let ideal = |span: &CounterSpan| -> f64 {
        span.increments
            .iter()
            .map(|(ts, d)| d * unit.ideal_cycle_for(product_at(*ts)))
            .sum()
    };
    let mut uses = Vec::new();
    let mut used = |tag: &str, role: &'static str, span: CounterSpan| {
        if let Some(n) = &span.note {
            notes.push(format!("counter {tag}: {n}"));
        }
        uses.push(CounterUse {
            tag: tag.to_string(),
            role,
            span,
        });
    };
    match &unit.counting {
        Counting::GoodAndScrap { good, scrap } => {
            let (g, s) = (read(good), read(scrap));
            e.good = g.increase;
            e.scrap = s.increase;
            e.produced = g.increase + s.increase;
            e.ideal_good_ms = ideal(&g);
            e.ideal_produced_ms = e.ideal_good_ms + ideal(&s);
            used(good, "GQ", g);
            used(scrap, "SQ", s);
        }
        Counting::ProducedAndScrap { produced, scrap } => {
            let (p, s) = (read(produced), read(scrap));
            e.produced = p.increase;
            e.scrap = s.increase;
            e.good = (p.increase - s.increase).max(0.0);
            e.ideal_produced_ms = ideal(&p);
            e.ideal_good_ms = (e.ideal_produced_ms - ideal(&s)).max(0.0);
            used(produced, "PQ", p);
            used(scrap, "SQ", s);
        }
        Counting::ProducedAndGood { produced, good } => {
            let (p, g) = (read(produced), read(good));
            e.produced = p.increase;
            e.good = g.increase;
            e.scrap = (p.increase - g.increase).max(0.0);
            e.ideal_produced_ms = ideal(&p);
            e.ideal_good_ms = ideal(&g);
            used(produced, "PQ", p);
            used(good, "GQ", g);
        }
        Counting::Produced { produced } => {
            let p = read(produced);
            e.produced = p.increase;
            e.good = p.increase;
            e.ideal_produced_ms = ideal(&p);
            e.ideal_good_ms = e.ideal_produced_ms;
            used(produced, "PQ", p);
        }
    }
    if matches!(unit.counting, Counting::Produced { .. }) {
        notes.push("no scrap or good counter: every produced unit is counted good".into());
    }
    uses
}

fn downtime_by_reason(intervals: &[Interval]) -> Vec<Downtime> {
    let mut by: BTreeMap<(String, TimeBucket), Downtime> = BTreeMap::new();
    for i in intervals {
        if !matches!(
            i.bucket,
            TimeBucket::Adot | TimeBucket::Adet | TimeBucket::Unknown
        ) {
            continue;
        }
        let reason = i
            .reason
            .clone()
            .or_else(|| i.state.clone())
            .unwrap_or_else(|| "(no data)".to_string());
        let d = by.entry((reason.clone(), i.bucket)).or_insert(Downtime {
            reason,
            bucket: i.bucket,
            ms: 0,
            occurrences: 0,
        });
        d.ms += i.ms();
        d.occurrences += 1;
    }
    let mut out: Vec<Downtime> = by.into_values().collect();
    out.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| a.reason.cmp(&b.reason)));
    out
}
