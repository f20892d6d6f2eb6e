//! Aggregate queries: per series and bucket the count, minimum, maximum,
//! average, first and last value, the time-weighted average and the time
//! spent in each state.
//!
//! Count, min, max, avg, first and last of numeric series come from the
//! rollups wherever whole rollup buckets fit in a query bucket and from raw
//! values for the rest (see [`super::cover`]); the time-weighted aggregates
//! need every value and read raw values in one pass, with the value in force
//! at the range start carried in.
//!
//! Semantics: bad-quality values are left out of count, min, max, avg, first
//! and last (and counted in `bad_count`). Time-weighted aggregates hold each
//! value from its timestamp until the next stored value (sample and hold);
//! a bad value holds "unknown": it is left out of the time-weighted average
//! and counts as `(bad)` in time in state; before the first known value the
//! state is `(no data)`; nothing is held past `min(to, now)`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use gantry_model::{Quality, Value};
use serde::Serialize;

use super::cover::{BucketGrid, CoverPlan};
use crate::access::ReadAccess;
use crate::error::HistorianError;
use crate::point::{Gap, PointRow, SeriesInfo, ValueType, numeric, serialize_value};
use crate::read::HistoryRead;
use crate::rollup::RollupRow;

/// At most this many buckets per series in one query.
pub const MAX_BUCKETS: i64 = 100_000;

/// One aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// Values that are not bad (always reported, with `bad_count`).
    Count,
    Min,
    Max,
    Avg,
    /// Earliest non-bad value in the bucket.
    First,
    /// Latest non-bad value in the bucket.
    Last,
    /// Time-weighted average (numeric series, booleans as 0/1).
    Twa,
    /// Milliseconds per state (string, bool and int series).
    TimeInState,
}

impl Aggregate {
    pub const ALL: [Aggregate; 8] = [
        Aggregate::Count,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
        Aggregate::First,
        Aggregate::Last,
        Aggregate::Twa,
        Aggregate::TimeInState,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Avg => "avg",
            Aggregate::First => "first",
            Aggregate::Last => "last",
            Aggregate::Twa => "twa",
            Aggregate::TimeInState => "time-in-state",
        }
    }

    /// A comma-separated list (`min,max,avg`).
    pub fn parse_list(text: &str) -> Result<Vec<Aggregate>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let a: Aggregate = part.parse()?;
            if !out.contains(&a) {
                out.push(a);
            }
        }
        if out.is_empty() {
            return Err(format!(
                "no aggregate given: expected one or more of {}",
                names()
            ));
        }
        Ok(out)
    }
}

fn names() -> String {
    Aggregate::ALL.map(Aggregate::name).join(", ")
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Aggregate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let want = s.trim().to_ascii_lowercase().replace('_', "-");
        Aggregate::ALL
            .into_iter()
            .find(|a| a.name() == want)
            .ok_or_else(|| format!("unknown aggregate {s:?}: expected one of {}", names()))
    }
}

/// Aggregates of the series matching `filter` in buckets of `bucket_ms`
/// starting at `from_ms` (the last one cut at `to_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateQuery {
    pub filter: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub aggregates: Vec<Aggregate>,
    /// The present: time-weighted aggregates hold no value past it.
    pub now_ms: i64,
}

/// One bucket of one series. `count` and `bad_count` are always given; the
/// other fields only when asked for and meaningful (`None` is left out when
/// serialized).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    pub end_ms: i64,
    pub count: u64,
    pub bad_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_value"
    )]
    pub first: Option<Value>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_opt_value"
    )]
    pub last: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twa: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_in_state: Option<BTreeMap<String, i64>>,
}

fn serialize_opt_value<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serialize_value(v, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesBuckets {
    pub topic: String,
    pub value_type: ValueType,
    /// The finest source used: `"raw"`, `"rollup_1m"` or `"rollup_1h"`.
    pub source: &'static str,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateResult {
    pub series: Vec<SeriesBuckets>,
    pub gaps: Vec<Gap>,
}

/// A bucket width for about `max_buckets` buckets over `span_ms` that the
/// rollups can serve: the smallest of 1, 2, 5, 10, 20, 50, 100, 200, 500 ms,
/// 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6, 12 h, 1 d and
/// whole weeks giving at most `max_buckets` (with a range starting on a
/// whole minute, widths of whole minutes are answered from rollups alone).
pub fn nice_bucket_ms(span_ms: i64, max_buckets: i64) -> i64 {
    const NICE: [i64; 27] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 10_800_000,
        21_600_000, 43_200_000, 86_400_000,
    ];
    let span = span_ms.max(1);
    let max = max_buckets.max(1);
    let min_width = span / max + i64::from(span % max != 0);
    if let Some(w) = NICE.iter().find(|w| **w >= min_width) {
        return *w;
    }
    let week = 604_800_000;
    let weeks = min_width / week + i64::from(min_width % week != 0);
    weeks.saturating_mul(week)
}

/// What was asked, as flags.
#[derive(Debug, Clone, Copy, Default)]
struct Wants {
    min: bool,
    max: bool,
    avg: bool,
    first: bool,
    last: bool,
    twa: bool,
    time_in_state: bool,
}

impl Wants {
    fn of(aggregates: &[Aggregate]) -> Wants {
        let mut w = Wants::default();
        for a in aggregates {
            match a {
                Aggregate::Count => {}
                Aggregate::Min => w.min = true,
                Aggregate::Max => w.max = true,
                Aggregate::Avg => w.avg = true,
                Aggregate::First => w.first = true,
                Aggregate::Last => w.last = true,
                Aggregate::Twa => w.twa = true,
                Aggregate::TimeInState => w.time_in_state = true,
            }
        }
        w
    }

    /// Whether this series needs the sample-and-hold pass over raw values.
    fn hold(&self, value_type: ValueType) -> bool {
        (self.twa && value_type.is_numeric()) || (self.time_in_state && value_type.is_discrete())
    }
}

/// How a series' buckets are computed: `Auto` picks; the others force a path
/// (for tests proving the paths agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Auto,
    Raw,
    Cover,
}

/// Runs an aggregate query.
pub fn aggregate(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    query: &AggregateQuery,
) -> Result<AggregateResult, HistorianError> {
    super::in_read(reader, |r| aggregate_with(r, access, query, Mode::Auto))
}

pub(crate) fn aggregate_with(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    query: &AggregateQuery,
    mode: Mode,
) -> Result<AggregateResult, HistorianError> {
    let grid = BucketGrid::new(query.from_ms, query.to_ms, query.bucket_ms, MAX_BUCKETS)?;
    if query.aggregates.is_empty() {
        return Err(HistorianError::Query(format!(
            "no aggregate asked for: give one or more of {}",
            names()
        )));
    }
    let wants = Wants::of(&query.aggregates);
    let infos = super::readable_series(reader, access, &query.filter)?;
    let mut series = Vec::with_capacity(infos.len());
    for info in infos {
        let (source, accs) = series_accs(reader, &info, &grid, wants, query.now_ms, mode)?;
        let mut buckets = Vec::with_capacity(accs.len());
        for (i, acc) in accs.into_iter().enumerate() {
            buckets.push(acc.finish(reader, &info, wants, grid.start(i), grid.end(i))?);
        }
        series.push(SeriesBuckets {
            topic: info.topic,
            value_type: info.value_type,
            source,
            buckets,
        });
    }
    let gaps = super::gaps_in(reader, query.from_ms, query.to_ms)?;
    Ok(AggregateResult { series, gaps })
}

/// A first or last value: exact from a raw value, or the rollup's number.
#[derive(Debug, Clone)]
enum Edge {
    Exact(Value),
    Rolled(f64),
}

/// One bucket being accumulated.
#[derive(Debug, Clone)]
struct Acc {
    /// count, bad_count, min, max and sum (its first/last are not used).
    stats: RollupRow,
    first: Option<(i64, Edge)>,
    last: Option<(i64, Edge)>,
    twa_sum: f64,
    twa_ms: i64,
    states: BTreeMap<String, i64>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            stats: RollupRow::empty(0),
            first: None,
            last: None,
            twa_sum: 0.0,
            twa_ms: 0,
            states: BTreeMap::new(),
        }
    }

    /// Adds one raw value.
    fn add_point(&mut self, p: &PointRow, numeric_series: bool) {
        if p.quality == Quality::Bad {
            self.stats.bad_count += 1;
            return;
        }
        if numeric_series {
            // Same rule as the rollups: no finite number counts as bad.
            let Some(v) = numeric(&p.value).filter(|v| v.is_finite()) else {
                self.stats.bad_count += 1;
                return;
            };
            self.stats.add(p.ts_ms, Some(v));
        } else {
            self.stats.count += 1;
        }
        if self.first.as_ref().is_none_or(|(t, _)| p.ts_ms < *t) {
            self.first = Some((p.ts_ms, Edge::Exact(p.value.clone())));
        }
        if self.last.as_ref().is_none_or(|(t, _)| p.ts_ms >= *t) {
            self.last = Some((p.ts_ms, Edge::Exact(p.value.clone())));
        }
    }

    /// Adds one whole rollup bucket.
    fn add_rollup(&mut self, row: &RollupRow) {
        self.stats.merge(row);
        if row.count == 0 {
            return;
        }
        if self.first.as_ref().is_none_or(|(t, _)| row.first_ms < *t) {
            self.first = Some((row.first_ms, Edge::Rolled(row.first)));
        }
        if self.last.as_ref().is_none_or(|(t, _)| row.last_ms >= *t) {
            self.last = Some((row.last_ms, Edge::Rolled(row.last)));
        }
    }

    fn finish(
        self,
        reader: &mut dyn HistoryRead,
        info: &SeriesInfo,
        wants: Wants,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Bucket, HistorianError> {
        let numeric_series = info.value_type.is_numeric();
        let has = self.stats.count > 0 && numeric_series;
        let edge = |reader: &mut dyn HistoryRead, want: bool, e: Option<(i64, Edge)>| match e
            .filter(|_| want)
        {
            Some((ts, edge)) => edge_value(reader, info, ts, edge).map(Some),
            None => Ok(None),
        };
        let first = edge(reader, wants.first, self.first)?;
        let last = edge(reader, wants.last, self.last)?;
        Ok(Bucket {
            start_ms,
            end_ms,
            count: self.stats.count,
            bad_count: self.stats.bad_count,
            min: (wants.min && has).then_some(self.stats.min),
            max: (wants.max && has).then_some(self.stats.max),
            avg: if wants.avg && has {
                self.stats.avg()
            } else {
                None
            },
            first,
            last,
            twa: (wants.twa && numeric_series && self.twa_ms > 0)
                .then(|| self.twa_sum / self.twa_ms as f64),
            time_in_state: (wants.time_in_state && info.value_type.is_discrete())
                .then_some(self.states),
        })
    }
}

/// Integers up to this magnitude survive the rollups' `f64` exactly.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A first/last value in the series' own type. A rollup's number is turned
/// back into an int or bool; an int too large for `f64` is read exactly.
fn edge_value(
    reader: &mut dyn HistoryRead,
    info: &SeriesInfo,
    ts_ms: i64,
    edge: Edge,
) -> Result<Value, HistorianError> {
    let f = match edge {
        Edge::Exact(v) => return Ok(v),
        Edge::Rolled(f) => f,
    };
    Ok(match info.value_type {
        ValueType::Int if f.abs() < EXACT_INT => Value::Int(f as i64),
        ValueType::Int => match reader.first_at_or_after(info.id, ts_ms)? {
            Some(p) if p.ts_ms == ts_ms => p.value,
            _ => Value::Int(f as i64),
        },
        ValueType::Bool => Value::Bool(f != 0.0),
        ValueType::Float | ValueType::String => Value::Float(f),
    })
}

/// The accumulated buckets of one series and the finest source used.
fn series_accs(
    reader: &mut dyn HistoryRead,
    info: &SeriesInfo,
    grid: &BucketGrid,
    wants: Wants,
    now_ms: i64,
    mode: Mode,
) -> Result<(&'static str, Vec<Acc>), HistorianError> {
    let mut accs = vec![Acc::new(); grid.len()];
    let numeric_series = info.value_type.is_numeric();
    if numeric_series && !wants.hold(info.value_type) && mode != Mode::Raw {
        let plan = CoverPlan::new(grid);
        // When most of the range would be read raw anyway, one raw pass is
        // cheaper than many calls.
        let span = i128::from(grid.to_ms) - i128::from(grid.from_ms);
        if mode == Mode::Cover || plan.raw_ms() * 2 < span {
            apply_cover(reader, info.id, grid, &plan, wants, &mut accs)?;
            return Ok((plan.finest(), accs));
        }
    }
    raw_pass(reader, info, grid, wants, now_ms, &mut accs)?;
    Ok(("raw", accs))
}

/// Fills the buckets from rollups and the raw remainder, as planned.
fn apply_cover(
    reader: &mut dyn HistoryRead,
    series_id: i64,
    grid: &BucketGrid,
    plan: &CoverPlan,
    wants: Wants,
    accs: &mut [Acc],
) -> Result<(), HistorianError> {
    for (level, spans) in &plan.levels {
        for fetch in CoverPlan::fetch_ranges(*level, spans) {
            if wants.first || wants.last {
                for row in reader.rollups(*level, series_id, fetch.start, fetch.end)? {
                    if CoverPlan::takes(spans, row.bucket_ms) {
                        accs[grid.index_of(row.bucket_ms)].add_rollup(&row);
                    }
                }
            } else {
                reader.rollup_stats(*level, series_id, fetch.start, fetch.end, &mut |row| {
                    if CoverPlan::takes(spans, row.bucket_ms) {
                        accs[grid.index_of(row.bucket_ms)].add_rollup(row);
                    }
                })?;
            }
        }
    }
    let spans: Vec<(i64, i64)> = plan.raw.iter().map(|s| (s.start, s.end)).collect();
    reader.points_in_spans(series_id, &spans, &mut |p| {
        accs[grid.index_of(p.ts_ms)].add_point(&p, true);
    })
}

/// The state held between values, for the time-weighted aggregates.
enum Held {
    /// No value at or before this time.
    NoData,
    /// A bad-quality value: unknown.
    Bad,
    /// A usable value: its number (for twa) and state name.
    Known { num: Option<f64>, state: String },
}

const NO_DATA: &str = "(no data)";
const BAD: &str = "(bad)";

struct Hold<'a> {
    grid: &'a BucketGrid,
    /// Nothing is held past this (`min(to, now)`).
    end_ms: i64,
    /// Time up to which the held state has been accounted.
    at_ms: i64,
    held: Held,
    twa: bool,
    states: bool,
}

impl Hold<'_> {
    fn held_of(&self, p: &PointRow) -> Held {
        if p.quality == Quality::Bad {
            return Held::Bad;
        }
        Held::Known {
            num: if self.twa {
                numeric(&p.value).filter(|v| v.is_finite())
            } else {
                None
            },
            state: if self.states {
                p.value.to_string()
            } else {
                String::new()
            },
        }
    }

    /// Accounts the held state up to `t` (split over the buckets it spans).
    fn advance(&mut self, accs: &mut [Acc], t: i64) {
        let until = t.min(self.end_ms);
        while self.at_ms < until {
            let i = self.grid.index_of(self.at_ms);
            let piece_end = until.min(self.grid.end(i));
            let len = piece_end - self.at_ms;
            let acc = &mut accs[i];
            let state = match &self.held {
                Held::NoData => NO_DATA,
                Held::Bad => BAD,
                Held::Known { num, state } => {
                    if let Some(v) = num {
                        acc.twa_sum += v * len as f64;
                        acc.twa_ms += len;
                    }
                    state.as_str()
                }
            };
            if self.states {
                match acc.states.get_mut(state) {
                    Some(ms) => *ms += len,
                    None => {
                        acc.states.insert(state.to_owned(), len);
                    }
                }
            }
            self.at_ms = piece_end;
        }
        self.at_ms = self.at_ms.max(t.min(self.end_ms));
    }
}

/// One pass over the raw values of the range: every aggregate, with the
/// value in force at the start carried in when time-weighted ones are asked.
fn raw_pass(
    reader: &mut dyn HistoryRead,
    info: &SeriesInfo,
    grid: &BucketGrid,
    wants: Wants,
    now_ms: i64,
    accs: &mut [Acc],
) -> Result<(), HistorianError> {
    let numeric_series = info.value_type.is_numeric();
    let mut hold = if wants.hold(info.value_type) {
        let mut hold = Hold {
            grid,
            end_ms: grid.to_ms.min(now_ms),
            at_ms: grid.from_ms,
            held: Held::NoData,
            twa: wants.twa && numeric_series,
            states: wants.time_in_state && info.value_type.is_discrete(),
        };
        if let Some(p) = reader.last_at_or_before(info.id, grid.from_ms)? {
            hold.held = hold.held_of(&p);
        }
        Some(hold)
    } else {
        None
    };
    reader.points(info.id, grid.from_ms, grid.to_ms, &mut |p| {
        if p.ts_ms < grid.from_ms || p.ts_ms >= grid.to_ms {
            return true;
        }
        if let Some(h) = hold.as_mut() {
            h.advance(accs, p.ts_ms);
            h.held = h.held_of(&p);
        }
        accs[grid.index_of(p.ts_ms)].add_point(&p, numeric_series);
        true
    })?;
    if let Some(h) = hold.as_mut() {
        h.advance(accs, grid.to_ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::FullAccess;
    use crate::query::mem::MemStore;
    use proptest::prelude::*;

    fn q(filter: &str, from: i64, to: i64, bucket: i64, aggs: &[Aggregate]) -> AggregateQuery {
        AggregateQuery {
            filter: filter.into(),
            from_ms: from,
            to_ms: to,
            bucket_ms: bucket,
            aggregates: aggs.to_vec(),
            now_ms: i64::MAX,
        }
    }

    const STATS: [Aggregate; 6] = [
        Aggregate::Count,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
        Aggregate::First,
        Aggregate::Last,
    ];

    #[test]
    fn aggregate_names_parse_and_errors_list_them() {
        for a in Aggregate::ALL {
            assert_eq!(a.name().parse::<Aggregate>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!(
            "TIME_IN_STATE".parse::<Aggregate>(),
            Ok(Aggregate::TimeInState)
        );
        let e = "mean".parse::<Aggregate>().expect_err("unknown");
        assert!(
            e.contains("\"mean\"")
                && e.contains("count, min, max, avg, first, last, twa, time-in-state"),
            "{e}"
        );
        assert_eq!(
            Aggregate::parse_list("min, max,avg,min"),
            Ok(vec![Aggregate::Min, Aggregate::Max, Aggregate::Avg])
        );
        assert!(Aggregate::parse_list(" , ").is_err());
    }

    #[test]
    fn nice_widths() {
        assert_eq!(nice_bucket_ms(86_400_000, 1_000), 120_000);
        assert_eq!(nice_bucket_ms(3_600_000, 60), 60_000);
        assert_eq!(nice_bucket_ms(10, 1_000), 1);
        // 36.5 days: six weeks.
        assert_eq!(nice_bucket_ms(365 * 86_400_000, 10), 6 * 604_800_000);
    }

    #[test]
    fn buckets_serialize_without_the_fields_not_asked() {
        let mut s = MemStore::default();
        s.push("t/a", 1_000, Value::Int(3), Quality::Good);
        s.push("t/a", 2_000, Value::Int(5), Quality::Good);
        let r = aggregate(
            &mut s,
            &FullAccess,
            &q("t/a", 0, 4_000, 4_000, &[Aggregate::Max, Aggregate::Last]),
        )
        .expect("aggregate");
        let json = serde_json::to_value(&r.series[0].buckets[0]).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"start_ms": 0, "end_ms": 4000, "count": 2, "bad_count": 0, "max": 5.0, "last": 5})
        );
    }

    #[test]
    fn edge_buckets_are_read_with_one_call_per_contiguous_raw_span() {
        const H: i64 = 3_600_000;
        let mut s = MemStore::default();
        for i in 0..(3 * 3_600) {
            s.push(
                "t/x",
                i * 1_000,
                Value::Float((i % 17) as f64),
                Quality::Good,
            );
        }
        // One-hour buckets starting at 00:00:30.5: the raw spans are the
        // first 9.5 s, the 10 s around 01:00:30's boundary and the last 0.5 s.
        let from = 30_500;
        let r = aggregate(
            &mut s,
            &FullAccess,
            &q("t/x", from, from + 2 * H, H, &STATS),
        )
        .expect("aggregate");
        assert_eq!(r.series[0].source, "raw");
        // Raw: [0:00:30.5, 0:00:40), [1:00:30, 1:00:40), [2:00:30, 2:00:30.5)
        // = 3 calls; the 10 s and minute spans take two calls per level (the
        // rows between a level's spans are not worth reading).
        assert_eq!(s.calls.points, 3);
        assert_eq!(s.calls.rollups, 4);
        assert_eq!(r.series[0].buckets[0].count, 3_600);
        // Aligned minutes: rollups only, one call.
        s.calls = Default::default();
        let r = aggregate(&mut s, &FullAccess, &q("t/x", 0, 3 * H, 120_000, &STATS))
            .expect("aggregate");
        assert_eq!(
            (r.series[0].source, s.calls.points, s.calls.rollups),
            ("rollup_1m", 0, 1)
        );
        // A whole day of hour buckets: hours only.
        s.calls = Default::default();
        let r = aggregate(&mut s, &FullAccess, &q("t/x", 0, 24 * H, H, &STATS)).expect("aggregate");
        assert_eq!(
            (r.series[0].source, s.calls.points, s.calls.rollups),
            ("rollup_1h", 0, 1)
        );
        // 86.4 s buckets: 10 s and minute rollups inside, raw values only in
        // the 10 s around each of the 120 boundaries not on a 10 s multiple.
        s.calls = Default::default();
        let r =
            aggregate(&mut s, &FullAccess, &q("t/x", 0, 3 * H, 86_400, &STATS)).expect("aggregate");
        assert_eq!(
            (r.series[0].source, s.calls.points, s.calls.rollups),
            ("raw", 120, 2)
        );
    }

    #[test]
    fn int_values_beyond_f64_precision_come_back_exact_from_rollups() {
        let big = (1i64 << 60) + 1;
        let mut s = MemStore::default();
        s.push("t/big", 0, Value::Int(big), Quality::Good);
        s.push("t/big", 1_000, Value::Int(big + 2), Quality::Good);
        let r = aggregate(&mut s, &FullAccess, &q("t/big", 0, 60_000, 60_000, &STATS))
            .expect("aggregate");
        assert_eq!(r.series[0].source, "rollup_1m");
        let b = &r.series[0].buckets[0];
        assert_eq!(
            (b.first.clone(), b.last.clone()),
            (Some(Value::Int(big)), Some(Value::Int(big + 2)))
        );
    }

    #[test]
    fn hold_aggregates_carry_in_and_stop_at_now() {
        let mut s = MemStore::default();
        // 10 from -5 s; bad at 2 s; 20 at 4 s; now = 7 s; range [0, 10 s), 5 s buckets.
        s.push("t/h", -5_000, Value::Int(10), Quality::Good);
        s.push("t/h", 2_000, Value::Int(99), Quality::Bad);
        s.push("t/h", 4_000, Value::Int(20), Quality::Good);
        let mut query = q(
            "t/h",
            0,
            10_000,
            5_000,
            &[Aggregate::Twa, Aggregate::TimeInState],
        );
        query.now_ms = 7_000;
        let r = aggregate(&mut s, &FullAccess, &query).expect("aggregate");
        let b = &r.series[0].buckets;
        // Bucket 0: 10 for 2 s, bad 2 s, 20 for 1 s: twa (20 + 20) / 3 s.
        assert_eq!(b[0].twa, Some(40.0 / 3.0));
        let st = |v: &[(&str, i64)]| Some(v.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect());
        assert_eq!(
            b[0].time_in_state,
            st(&[("10", 2_000), ("(bad)", 2_000), ("20", 1_000)])
        );
        // Bucket 1: 20 until now (7 s) only.
        assert_eq!(b[1].twa, Some(20.0));
        assert_eq!(b[1].time_in_state, st(&[("20", 2_000)]));
    }

    fn arb_points() -> impl Strategy<Value = Vec<(i64, i64, u8)>> {
        // (timestamp, integral value, quality code) over about 3 hours.
        prop::collection::vec((0i64..3 * 3_600_000, -1_000i64..1_000, 0u8..6), 0..400)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Rollups plus raw edges give exactly what one raw pass gives, for
        /// any bucket width and alignment. (Values are integral so sums do
        /// not depend on the order of addition.)
        #[test]
        fn rollup_cover_equals_raw(
            points in arb_points(),
            offset in -4_000_000i64..4_000_000,
            len in 1i64..4 * 3_600_000,
            width_pick in 0usize..8,
            width_any in 1i64..7_200_000,
            kind in 0u8..3,
        ) {
            let widths = [60_000, 120_000, 900_000, 3_600_000, 7_200_000, 90_000, 1_000, width_any];
            let width = widths[width_pick];
            let mut s = MemStore::default();
            for (ts, v, q) in &points {
                let quality = match q { 0 => Quality::Bad, 1 => Quality::Uncertain, _ => Quality::Good };
                let value = match kind {
                    0 => Value::Float(*v as f64 / 4.0),
                    1 => Value::Int(*v),
                    _ => Value::Bool(v % 2 == 0),
                };
                s.push("p/x", *ts, value, quality);
            }
            let query = q("p/x", offset, offset + len, width, &STATS);
            let grid = BucketGrid::new(query.from_ms, query.to_ms, width, MAX_BUCKETS);
            prop_assume!(grid.is_ok());
            let covered = aggregate_with(&mut s, &FullAccess, &query, Mode::Cover).expect("cover");
            let raw = aggregate_with(&mut s, &FullAccess, &query, Mode::Raw).expect("raw");
            let buckets = |r: &AggregateResult| r.series.iter().map(|s| s.buckets.clone()).collect::<Vec<_>>();
            prop_assert_eq!(covered.series.len(), usize::from(!points.is_empty()));
            prop_assert_eq!(buckets(&covered), buckets(&raw));
            let auto = aggregate(&mut s, &FullAccess, &query).expect("auto");
            prop_assert_eq!(buckets(&auto), buckets(&raw));
        }
    }
}

#[cfg(test)]
mod timing {
    //! Timings of the benchmark's query shapes on the embedded store:
    //! `cargo test --release -p gantry-historian --lib -- --ignored --nocapture timing`
    use super::*;
    use crate::access::FullAccess;
    use crate::config::HistorianConfig;
    use crate::point::Point;
    use crate::sqlite::{SqliteReader, SqliteSink};
    use crate::writer::Sink;
    use std::time::Instant;

    #[test]
    #[ignore = "timing; run in release"]
    fn timing_one_day_at_1_hz() {
        const DAY: i64 = 86_400_000;
        let base = 1_790_000_000_000i64 - 1_790_000_000_000i64 % DAY;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("h.sqlite");
        let mut sink = SqliteSink::open(&path, &HistorianConfig::default()).expect("sink");
        let topic: std::sync::Arc<str> = "bench/t0".into();
        let points: Vec<Point> = (0..86_400i64)
            .map(|k| Point {
                topic: topic.clone(),
                ts_ms: base + k * 1_000,
                value: Value::Float((k % 1_000) as f64 * 0.1),
                quality: Quality::Good,
            })
            .collect();
        for chunk in points.chunks(5_000) {
            sink.write(chunk, &[]).expect("write");
        }
        let mut reader = SqliteReader::open(&path).expect("reader");
        let id = reader.series_matching("bench/t0").expect("series")[0].id;
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let mut n = 0u64;
            reader
                .points(id, base, base + DAY, &mut |_| {
                    n += 1;
                    true
                })
                .expect("points");
            assert_eq!(n, 86_400);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "reading 86,400 values alone: median {:.2} ms",
            times[times.len() / 2]
        );
        for (label, width, mode) in [
            ("86.4 s auto", 86_400, Mode::Auto),
            ("86.4 s cover", 86_400, Mode::Cover),
            ("86.4 s raw", 86_400, Mode::Raw),
            ("120 s auto", 120_000, Mode::Auto),
            ("60 s auto", 60_000, Mode::Auto),
        ] {
            let q = AggregateQuery {
                filter: "bench/t0".into(),
                from_ms: base,
                to_ms: base + DAY,
                bucket_ms: width,
                aggregates: vec![
                    Aggregate::Count,
                    Aggregate::Min,
                    Aggregate::Max,
                    Aggregate::Avg,
                ],
                now_ms: base + 2 * DAY,
            };
            let mut times = Vec::new();
            let mut source = "";
            for _ in 0..15 {
                let t = Instant::now();
                let r = aggregate_with(&mut reader, &FullAccess, &q, mode).expect("aggregate");
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                source = r.series[0].source;
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{label}: median {:.2} ms ({source})",
                times[times.len() / 2]
            );
        }
        // A snapshot of 10,000 tags with 100 values each.
        let mut batch = Vec::new();
        for k in 0..100i64 {
            for tag in 0..10_000 {
                batch.push(Point {
                    topic: format!("bench/lab/t{tag}").into(),
                    ts_ms: base + DAY + k * 36_000 + tag,
                    value: Value::Float(k as f64),
                    quality: Quality::Good,
                });
            }
            if batch.len() >= 50_000 {
                sink.write(&batch, &[]).expect("write");
                batch.clear();
            }
        }
        sink.write(&batch, &[]).expect("write");
        let at = base + DAY + 50 * 36_000 + 17_000;
        let mut times = Vec::new();
        for _ in 0..15 {
            let t = Instant::now();
            let snap = crate::query::snapshot(&mut reader, &FullAccess, "bench/lab/#", at)
                .expect("snapshot");
            assert_eq!(snap.values.len(), 10_000);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "snapshot of 10,000 tags: median {:.2} ms",
            times[times.len() / 2]
        );
        let t = Instant::now();
        let series = reader.series_matching("bench/lab/#").expect("series");
        println!(
            "  series_matching: {:.2} ms",
            t.elapsed().as_secs_f64() * 1000.0
        );
        let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
        let t = Instant::now();
        let rows = reader.snapshot(&ids, at).expect("snapshot");
        println!(
            "  HistoryRead::snapshot: {:.2} ms ({} rows)",
            t.elapsed().as_secs_f64() * 1000.0,
            rows.len()
        );
    }
}
