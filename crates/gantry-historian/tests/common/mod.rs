//! The backend-independent historian suite: every case writes through a
//! store's [`Sink`](gantry_historian::Sink), reads back through its
//! [`HistoryRead`] and the query layer, and checks exact, hand-computed
//! answers. A backend's test file implements [`TestStore`] and runs each of
//! [`all_cases`] on a fresh store (see `tests/sqlite_backend.rs`).
//!
//! Cases use only the public API, their own topics, and never assume series
//! ids or anything about a store's tables.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_historian::query::{
    self, Aggregate, AggregateQuery, AggregateResult, Bucket, ExportFormat, RawQuery,
};
use gantry_historian::{
    FullAccess, Gap, HistorianError, HistoryRead, Point, PointRow, ReadAccess, RollupLevel,
    RollupRow, ValueType,
};
use gantry_model::{Quality, Value};

/// A store under test.
pub trait TestStore {
    /// Writes through the backend's Sink and returns once the values are readable.
    fn write(&mut self, points: &[Point], gaps: &[Gap]);
    fn reader(&mut self) -> Box<dyn HistoryRead>;
}

/// 2026-01-01T00:00:00Z, on a whole hour.
pub const T0: i64 = 1_767_225_600_000;
const S: i64 = 1_000;
const M: i64 = 60_000;
const H: i64 = 3_600_000;

/// Every case, by name, for a backend's test file.
/// A named case of the suite.
pub type Case = (&'static str, fn(&mut dyn TestStore));

pub fn all_cases() -> Vec<Case> {
    vec![
        ("case_raw_one_tag", case_raw_one_tag),
        ("case_raw_many_tags", case_raw_many_tags),
        ("case_hash_matches_parent", case_hash_matches_parent),
        ("case_gaps_reported", case_gaps_reported),
        (
            "case_out_of_order_and_duplicates_raw",
            case_out_of_order_and_duplicates_raw,
        ),
        (
            "case_out_of_order_and_duplicates_rollups",
            case_out_of_order_and_duplicates_rollups,
        ),
        ("case_quality", case_quality),
        ("case_every_aggregate_float", case_every_aggregate_float),
        ("case_time_in_state", case_time_in_state),
        ("case_int_and_bool_series", case_int_and_bool_series),
        ("case_rollups_equal_raw", case_rollups_equal_raw),
        ("case_snapshot_subtree", case_snapshot_subtree),
        ("case_snapshot_mixed_rates", case_snapshot_mixed_rates),
        ("case_last", case_last),
        ("case_export_csv", case_export_csv),
        ("case_export_json", case_export_json),
        ("case_permissions", case_permissions),
        ("case_validation", case_validation),
        (
            "case_exact_topic_without_history",
            case_exact_topic_without_history,
        ),
        (
            "case_rollups_match_recomputation",
            case_rollups_match_recomputation,
        ),
        ("case_batched_reads_agree", case_batched_reads_agree),
        (
            "case_text_replacing_a_number_leaves_the_rollups",
            case_text_replacing_a_number_leaves_the_rollups,
        ),
    ]
}

// ---------------------------------------------------------------- helpers

pub trait IntoValue {
    fn into_value(self) -> Value;
}
impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::Float(self)
    }
}
impl IntoValue for i64 {
    fn into_value(self) -> Value {
        Value::Int(self)
    }
}
impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}
impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::Text(self.to_owned())
    }
}

/// A good value.
pub fn pt(topic: &str, ts_ms: i64, value: impl IntoValue) -> Point {
    ptq(topic, ts_ms, value, Quality::Good)
}

pub fn ptq(topic: &str, ts_ms: i64, value: impl IntoValue, quality: Quality) -> Point {
    Point {
        topic: Arc::from(topic),
        ts_ms,
        value: value.into_value(),
        quality,
    }
}

fn row(ts_ms: i64, value: impl IntoValue, quality: Quality) -> PointRow {
    PointRow {
        ts_ms,
        value: value.into_value(),
        quality,
    }
}

fn raw_q(filter: &str, from_ms: i64, to_ms: i64) -> RawQuery {
    RawQuery {
        filter: filter.into(),
        from_ms,
        to_ms,
        limit: None,
    }
}

fn agg_q(
    filter: &str,
    from_ms: i64,
    to_ms: i64,
    bucket_ms: i64,
    aggregates: &[Aggregate],
) -> AggregateQuery {
    AggregateQuery {
        filter: filter.into(),
        from_ms,
        to_ms,
        bucket_ms,
        aggregates: aggregates.to_vec(),
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

fn raw(store: &mut dyn TestStore, q: &RawQuery) -> query::RawResult {
    query::raw(store.reader().as_mut(), &FullAccess, q).expect("raw query")
}

fn agg(store: &mut dyn TestStore, q: &AggregateQuery) -> AggregateResult {
    query::aggregate(store.reader().as_mut(), &FullAccess, q).expect("aggregate query")
}

fn topics(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// A bucket with only count and bad count set.
fn bucket(start_ms: i64, end_ms: i64, count: u64, bad_count: u64) -> Bucket {
    Bucket {
        start_ms,
        end_ms,
        count,
        bad_count,
        min: None,
        max: None,
        avg: None,
        first: None,
        last: None,
        twa: None,
        time_in_state: None,
    }
}

/// A bucket with count, bad count, min, max, avg, first and last.
#[allow(clippy::too_many_arguments)]
fn stats_bucket(
    start_ms: i64,
    end_ms: i64,
    count: u64,
    bad_count: u64,
    min: f64,
    max: f64,
    avg: f64,
    first: Value,
    last: Value,
) -> Bucket {
    Bucket {
        min: Some(min),
        max: Some(max),
        avg: Some(avg),
        first: Some(first),
        last: Some(last),
        ..bucket(start_ms, end_ms, count, bad_count)
    }
}

fn states(pairs: &[(&str, i64)]) -> Option<BTreeMap<String, i64>> {
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
}

fn id_of(reader: &mut dyn HistoryRead, topic: &str) -> i64 {
    let series = reader.series_matching(topic).expect("series");
    assert_eq!(series.len(), 1, "one series for {topic}");
    series[0].id
}

/// Reads only `acme/a` and below.
struct OnlyA;

impl ReadAccess for OnlyA {
    fn can_read(&self, topic: &str) -> bool {
        topic == "acme/a" || topic.starts_with("acme/a/")
    }
    fn who(&self) -> String {
        "user carol".into()
    }
}

/// A small deterministic generator (no dependency, same on every backend).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- raw

/// One tag: the range is half-open, the limit truncates and says so.
pub fn case_raw_one_tag(store: &mut dyn TestStore) {
    let t = "acme/raw1/line/temp";
    store.write(
        &[
            pt(t, T0, 1.5),
            pt(t, T0 + S, 2.5),
            pt(t, T0 + 2 * S, 3.5),
            pt(t, T0 + 3 * S, 4.5),
        ],
        &[],
    );
    // [T0+1s, T0+3s): the values at 1 s and 2 s; 3 s is the excluded end.
    let r = raw(store, &raw_q(t, T0 + S, T0 + 3 * S));
    assert_eq!(r.series.len(), 1);
    let s = &r.series[0];
    assert_eq!(
        (s.topic.as_str(), s.value_type, s.truncated),
        (t, ValueType::Float, false)
    );
    assert_eq!(
        s.points,
        vec![
            row(T0 + S, 2.5, Quality::Good),
            row(T0 + 2 * S, 3.5, Quality::Good)
        ]
    );
    assert!(r.gaps.is_empty());
    // A limit of 1 over everything: the earliest, truncated.
    let mut q = raw_q(t, T0, T0 + H);
    q.limit = Some(1);
    let r = raw(store, &q);
    assert_eq!(r.series[0].points, vec![row(T0, 1.5, Quality::Good)]);
    assert!(r.series[0].truncated);
    // A limit equal to the number of values is not truncation.
    q.limit = Some(4);
    let r = raw(store, &q);
    assert_eq!(r.series[0].points.len(), 4);
    assert!(!r.series[0].truncated);
}

/// Many tags through `+` and `#`, of every type, ordered by topic; a matching
/// series without values in the range is listed empty.
pub fn case_raw_many_tags(store: &mut dyn TestStore) {
    store.write(
        &[
            pt("acme/raw2/l2/temp", T0 + S, true),
            pt("acme/raw2/l1/temp", T0, 20i64),
            pt("acme/raw2/l1/temp", T0 + 2 * S, 21i64),
            pt("acme/raw2/l2/speed", T0, 3.25),
            pt("acme/raw2/l3/temp", T0 - H, "cold"),
            pt("other/raw2/l1/temp", T0, 1i64),
        ],
        &[],
    );
    let r = raw(store, &raw_q("acme/raw2/+/temp", T0, T0 + M));
    let names: Vec<&str> = r.series.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme/raw2/l1/temp",
            "acme/raw2/l2/temp",
            "acme/raw2/l3/temp"
        ]
    );
    assert_eq!(r.series[0].value_type, ValueType::Int);
    assert_eq!(
        r.series[0].points,
        vec![
            row(T0, 20i64, Quality::Good),
            row(T0 + 2 * S, 21i64, Quality::Good)
        ]
    );
    assert_eq!(r.series[1].value_type, ValueType::Bool);
    assert_eq!(r.series[1].points, vec![row(T0 + S, true, Quality::Good)]);
    assert_eq!(r.series[2].value_type, ValueType::String);
    assert!(r.series[2].points.is_empty());
    // The string value is there before the range.
    let r = raw(store, &raw_q("acme/raw2/l3/temp", T0 - H, T0));
    assert_eq!(r.series[0].points, vec![row(T0 - H, "cold", Quality::Good)]);
    // `#` takes the whole subtree.
    let r = raw(store, &raw_q("acme/raw2/#", T0, T0 + M));
    let names: Vec<&str> = r.series.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(
        names,
        [
            "acme/raw2/l1/temp",
            "acme/raw2/l2/speed",
            "acme/raw2/l2/temp",
            "acme/raw2/l3/temp"
        ]
    );
    assert_eq!(r.series[1].points, vec![row(T0, 3.25, Quality::Good)]);
}

/// `a/#` matches `a` itself (MQTT), not `ab`.
pub fn case_hash_matches_parent(store: &mut dyn TestStore) {
    store.write(
        &[
            pt("acme/par", T0, 1i64),
            pt("acme/par/x", T0, 2i64),
            pt("acme/parx", T0, 3i64),
            pt("acme/par/x/y", T0, 4i64),
        ],
        &[],
    );
    let r = raw(store, &raw_q("acme/par/#", T0, T0 + 1));
    let names: Vec<&str> = r.series.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(names, ["acme/par", "acme/par/x", "acme/par/x/y"]);
    let snap =
        query::snapshot(store.reader().as_mut(), &FullAccess, "acme/par/#", T0).expect("snapshot");
    assert_eq!(snap.values.len(), 3);
    // `+` needs a level there.
    let r = raw(store, &raw_q("acme/par/+", T0, T0 + 1));
    let names: Vec<&str> = r.series.iter().map(|s| s.topic.as_str()).collect();
    assert_eq!(names, ["acme/par/x"]);
}

/// Gaps overlapping the range are reported with raw and aggregate results;
/// one ending where the range starts or starting where it ends is not.
pub fn case_gaps_reported(store: &mut dyn TestStore) {
    let t = "acme/gaps/v";
    let lost = Gap {
        from_ms: T0 + S,
        to_ms: T0 + 2 * S,
        lost: 5,
        reason: "queue overflow".into(),
    };
    let restart = Gap {
        from_ms: T0 + 3 * S,
        to_ms: T0 + 3 * S,
        lost: 0,
        reason: "restart".into(),
    };
    let straddling = Gap {
        from_ms: T0 + 4 * S,
        to_ms: T0 + 9 * S,
        lost: 0,
        reason: "straddling".into(),
    };
    let before = Gap {
        from_ms: T0 - 5 * S,
        to_ms: T0,
        lost: 1,
        reason: "before".into(),
    };
    let after = Gap {
        from_ms: T0 + 5 * S,
        to_ms: T0 + 6 * S,
        lost: 1,
        reason: "after".into(),
    };
    store.write(&[pt(t, T0, 1.0)], &[lost.clone(), before]);
    store.write(
        &[pt(t, T0 + 4 * S, 2.0)],
        &[after, straddling.clone(), restart.clone()],
    );
    // [T0, T0+5s): lost, restart (inside, zero length) and straddling.
    let expected = vec![lost, restart, straddling];
    let r = raw(store, &raw_q(t, T0, T0 + 5 * S));
    assert_eq!(r.gaps, expected);
    let a = agg(store, &agg_q(t, T0, T0 + 5 * S, 5 * S, &STATS));
    assert_eq!(a.gaps, expected);
    // Even with no series matched, the gaps of the range are reported.
    let r = raw(store, &raw_q("acme/gaps/none", T0, T0 + 5 * S));
    assert!(r.series.is_empty());
    assert_eq!(r.gaps, expected);
}

// ---------------------------------------------------------------- late data

/// Values arriving late (older timestamps in a later batch) take their place
/// in time; a repeated timestamp replaces the earlier value, across batches
/// and within one.
pub fn case_out_of_order_and_duplicates_raw(store: &mut dyn TestStore) {
    let t = "acme/ooo/raw";
    store.write(
        &[
            pt(t, T0 + 10 * S, 1.0),
            pt(t, T0 + 20 * S, 2.0),
            pt(t, T0 + 30 * S, 3.0),
        ],
        &[],
    );
    store.write(
        &[
            pt(t, T0 + 5 * S, 0.5),
            pt(t, T0 + 20 * S, 22.0),
            pt(t, T0 + 15 * S, 1.5),
        ],
        &[],
    );
    store.write(
        &[
            pt(t, T0 + 40 * S, 4.0),
            ptq(t, T0 + 40 * S, 44.0, Quality::Uncertain),
        ],
        &[],
    );
    let r = raw(store, &raw_q(t, T0, T0 + M));
    assert_eq!(
        r.series[0].points,
        vec![
            row(T0 + 5 * S, 0.5, Quality::Good),
            row(T0 + 10 * S, 1.0, Quality::Good),
            row(T0 + 15 * S, 1.5, Quality::Good),
            row(T0 + 20 * S, 22.0, Quality::Good),
            row(T0 + 30 * S, 3.0, Quality::Good),
            row(T0 + 40 * S, 44.0, Quality::Uncertain),
        ]
    );
}

/// The same for rollup-based aggregates: the rollups are corrected.
pub fn case_out_of_order_and_duplicates_rollups(store: &mut dyn TestStore) {
    let t = "acme/ooo/agg";
    // In order.
    store.write(
        &[
            pt(t, T0, 10.0),
            pt(t, T0 + 30 * S, 20.0),
            pt(t, T0 + 60 * S, 30.0),
            pt(t, T0 + 90 * S, 40.0),
            pt(t, T0 + 120 * S, 50.0),
        ],
        &[],
    );
    // Late into minutes 0 and 1, a replacement in minute 0, a bad value.
    store.write(
        &[
            pt(t, T0 + 45 * S, 5.0),
            pt(t, T0 + 30 * S, 26.0),
            ptq(t, T0 + 61 * S, 99.0, Quality::Bad),
        ],
        &[],
    );
    // In order into minute 2, then a replacement of its first value.
    store.write(&[pt(t, T0 + 150 * S, 60.0), pt(t, T0 + 120 * S, 55.0)], &[]);
    // Minute 0: 10 (0 s), 26 (30 s), 5 (45 s).
    // Minute 1: 30 (60 s), bad (61 s), 40 (90 s).
    // Minute 2: 55 (120 s), 60 (150 s).
    let a = agg(store, &agg_q(t, T0, T0 + 3 * M, M, &STATS));
    assert_eq!(a.series[0].source, "rollup_1m");
    assert_eq!(
        a.series[0].buckets,
        vec![
            stats_bucket(
                T0,
                T0 + M,
                3,
                0,
                5.0,
                26.0,
                41.0 / 3.0,
                Value::Float(10.0),
                Value::Float(5.0)
            ),
            stats_bucket(
                T0 + M,
                T0 + 2 * M,
                2,
                1,
                30.0,
                40.0,
                35.0,
                Value::Float(30.0),
                Value::Float(40.0)
            ),
            stats_bucket(
                T0 + 2 * M,
                T0 + 3 * M,
                2,
                0,
                55.0,
                60.0,
                57.5,
                Value::Float(55.0),
                Value::Float(60.0)
            ),
        ]
    );
    // The hour: sum 10+26+5+30+40+55+60 = 226 over 7 values.
    let a = agg(store, &agg_q(t, T0, T0 + H, H, &STATS));
    assert_eq!(a.series[0].source, "rollup_1h");
    assert_eq!(
        a.series[0].buckets,
        vec![stats_bucket(
            T0,
            T0 + H,
            7,
            1,
            5.0,
            60.0,
            226.0 / 7.0,
            Value::Float(10.0),
            Value::Float(60.0)
        )]
    );
}

// ---------------------------------------------------------------- aggregates

/// Bad values are out of count/min/max/avg/first/last (counted in
/// bad_count), break the time-weighted hold, and count as "(bad)" in time
/// in state; uncertain values count as values.
pub fn case_quality(store: &mut dyn TestStore) {
    let f = "acme/q/flow";
    store.write(
        &[
            ptq(f, T0, 1000.0, Quality::Bad),
            pt(f, T0 + 5 * S, 10.0),
            ptq(f, T0 + 10 * S, 20.0, Quality::Uncertain),
            ptq(f, T0 + 20 * S, 2000.0, Quality::Bad),
            pt(f, T0 + 30 * S, 40.0),
            ptq(f, T0 + 35 * S, 3000.0, Quality::Bad),
        ],
        &[],
    );
    // One 40 s bucket: values 10, 20, 40; bad 3.
    // twa: bad [0,5) unknown; 10 for 5 s; 20 for 10 s; bad [20,30) unknown;
    // 40 for 5 s; bad [35,40) unknown: (50 + 200 + 200) / 20 s = 22.5.
    let a = agg(store, &agg_q(f, T0, T0 + 40 * S, 40 * S, &Aggregate::ALL));
    assert_eq!(a.series[0].source, "raw");
    assert_eq!(
        a.series[0].buckets,
        vec![Bucket {
            twa: Some(22.5),
            ..stats_bucket(
                T0,
                T0 + 40 * S,
                3,
                3,
                10.0,
                40.0,
                70.0 / 3.0,
                Value::Float(10.0),
                Value::Float(40.0)
            )
        }]
    );
    // The same from the minute rollup (no twa asked).
    let a = agg(store, &agg_q(f, T0, T0 + M, M, &STATS));
    assert_eq!(a.series[0].source, "rollup_1m");
    assert_eq!(
        a.series[0].buckets,
        vec![stats_bucket(
            T0,
            T0 + M,
            3,
            3,
            10.0,
            40.0,
            70.0 / 3.0,
            Value::Float(10.0),
            Value::Float(40.0)
        )]
    );
    // A discrete series: 1 for 5 s, bad for 15 s, 3 (uncertain) for 20 s.
    let st = "acme/q/state";
    store.write(
        &[
            pt(st, T0, 1i64),
            ptq(st, T0 + 5 * S, 2i64, Quality::Bad),
            ptq(st, T0 + 20 * S, 3i64, Quality::Uncertain),
        ],
        &[],
    );
    let a = agg(
        store,
        &agg_q(
            st,
            T0,
            T0 + 40 * S,
            40 * S,
            &[
                Aggregate::TimeInState,
                Aggregate::First,
                Aggregate::Last,
                Aggregate::Twa,
            ],
        ),
    );
    assert_eq!(
        a.series[0].buckets,
        vec![Bucket {
            first: Some(Value::Int(1)),
            last: Some(Value::Int(3)),
            // (1*5 + 3*20) / 25 s
            twa: Some(65.0 / 25.0),
            time_in_state: states(&[("1", 5_000), ("(bad)", 15_000), ("3", 20_000)]),
            ..bucket(T0, T0 + 40 * S, 2, 1)
        }]
    );
}

/// Every aggregate with known values on a float series, with the value in
/// force before the range carried into the first bucket and across an empty
/// last bucket, and the hold stopping at now.
pub fn case_every_aggregate_float(store: &mut dyn TestStore) {
    let t = "acme/agg/temp";
    store.write(
        &[
            pt(t, T0 - 10 * S, 4.0),
            pt(t, T0 + 5 * S, 8.0),
            pt(t, T0 + 25 * S, 2.0),
            pt(t, T0 + 35 * S, 6.0),
        ],
        &[],
    );
    // Buckets of 20 s over [T0, T0+50s): [0,20), [20,40), [40,50).
    // 0: value 8; twa = (4 for 5 s + 8 for 15 s) / 20 = (20 + 120) / 20 = 7.
    // 1: values 2, 6; twa = (8*5 + 2*10 + 6*5) / 20 = 90 / 20 = 4.5.
    // 2: no values; 6 holds for 10 s: twa 6.
    let a = agg(store, &agg_q(t, T0, T0 + 50 * S, 20 * S, &Aggregate::ALL));
    let s = &a.series[0];
    assert_eq!(
        (s.topic.as_str(), s.value_type, s.source),
        (t, ValueType::Float, "raw")
    );
    assert_eq!(
        s.buckets,
        vec![
            Bucket {
                twa: Some(7.0),
                ..stats_bucket(
                    T0,
                    T0 + 20 * S,
                    1,
                    0,
                    8.0,
                    8.0,
                    8.0,
                    Value::Float(8.0),
                    Value::Float(8.0)
                )
            },
            Bucket {
                twa: Some(4.5),
                ..stats_bucket(
                    T0 + 20 * S,
                    T0 + 40 * S,
                    2,
                    0,
                    2.0,
                    6.0,
                    4.0,
                    Value::Float(2.0),
                    Value::Float(6.0)
                )
            },
            // Floats have no time in state.
            Bucket {
                twa: Some(6.0),
                ..bucket(T0 + 40 * S, T0 + 50 * S, 0, 0)
            },
        ]
    );
    // Each aggregate alone gives just its field.
    let only = |store: &mut dyn TestStore, a: Aggregate| {
        agg(store, &agg_q(t, T0, T0 + 50 * S, 20 * S, &[a])).series[0].buckets[1].clone()
    };
    let b = only(store, Aggregate::Count);
    assert_eq!(b, bucket(T0 + 20 * S, T0 + 40 * S, 2, 0));
    assert_eq!(only(store, Aggregate::Min).min, Some(2.0));
    assert_eq!(only(store, Aggregate::Max).max, Some(6.0));
    assert_eq!(only(store, Aggregate::Avg).avg, Some(4.0));
    assert_eq!(only(store, Aggregate::First).first, Some(Value::Float(2.0)));
    assert_eq!(only(store, Aggregate::Last).last, Some(Value::Float(6.0)));
    let b = only(store, Aggregate::Twa);
    assert_eq!((b.twa, b.min, b.first), (Some(4.5), None, None));
    assert_eq!(only(store, Aggregate::TimeInState).time_in_state, None);
    // Now at T0+30s: bucket 1 holds 8 for 5 s, 2 for 5 s: 5; bucket 2 nothing.
    let mut q = agg_q(t, T0, T0 + 50 * S, 20 * S, &[Aggregate::Twa]);
    q.now_ms = T0 + 30 * S;
    let a = agg(store, &q);
    let twa: Vec<Option<f64>> = a.series[0].buckets.iter().map(|b| b.twa).collect();
    assert_eq!(twa, [Some(7.0), Some(5.0), None]);
    // Now before the range: nothing is held.
    q.now_ms = T0 - 1;
    let a = agg(store, &q);
    assert!(a.series[0].buckets.iter().all(|b| b.twa.is_none()));
    // Values after now still count for the value aggregates.
    let mut q = agg_q(
        t,
        T0,
        T0 + 50 * S,
        20 * S,
        &[Aggregate::Count, Aggregate::Twa],
    );
    q.now_ms = T0;
    let a = agg(store, &q);
    let counts: Vec<u64> = a.series[0].buckets.iter().map(|b| b.count).collect();
    assert_eq!(counts, [1, 2, 0]);
}

/// Time in state sums to the covered length of each bucket, with "(no
/// data)" before the first value, "(bad)" under bad values and nothing after
/// now. Text series have no min/max/avg/twa even when asked.
pub fn case_time_in_state(store: &mut dyn TestStore) {
    let t = "acme/tis/mode";
    store.write(
        &[
            pt(t, T0 + 10 * S, "RUN"),
            pt(t, T0 + 30 * S, "IDLE"),
            pt(t, T0 + 45 * S, "RUN"),
            ptq(t, T0 + 50 * S, "FAULT", Quality::Bad),
        ],
        &[],
    );
    let mut q = agg_q(
        t,
        T0,
        T0 + M,
        30 * S,
        &[
            Aggregate::TimeInState,
            Aggregate::Count,
            Aggregate::First,
            Aggregate::Last,
            Aggregate::Min,
            Aggregate::Twa,
        ],
    );
    q.now_ms = T0 + 55 * S;
    let a = agg(store, &q);
    assert_eq!(a.series[0].value_type, ValueType::String);
    // 0 [0,30): no data 10 s, RUN 20 s.
    // 1 [30,55) (now 55 s): IDLE 15 s, RUN 5 s, bad 5 s.
    assert_eq!(
        a.series[0].buckets,
        vec![
            Bucket {
                first: Some(Value::Text("RUN".into())),
                last: Some(Value::Text("RUN".into())),
                time_in_state: states(&[("(no data)", 10_000), ("RUN", 20_000)]),
                ..bucket(T0, T0 + 30 * S, 1, 0)
            },
            Bucket {
                first: Some(Value::Text("IDLE".into())),
                last: Some(Value::Text("RUN".into())),
                time_in_state: states(&[("IDLE", 15_000), ("RUN", 5_000), ("(bad)", 5_000)]),
                ..bucket(T0 + 30 * S, T0 + M, 2, 1)
            },
        ]
    );
    for b in &a.series[0].buckets {
        let covered = b.end_ms.min(q.now_ms) - b.start_ms;
        assert_eq!(
            b.time_in_state.as_ref().map(|m| m.values().sum::<i64>()),
            Some(covered)
        );
    }
    // Over the whole minute (now later): the bad value holds to the end.
    q.bucket_ms = M;
    q.now_ms = i64::MAX;
    let a = agg(store, &q);
    assert_eq!(
        a.series[0].buckets[0].time_in_state,
        states(&[
            ("(no data)", 10_000),
            ("RUN", 25_000),
            ("IDLE", 15_000),
            ("(bad)", 10_000)
        ])
    );
    // A range entirely before the first value: all "(no data)".
    q.from_ms = T0 - M;
    q.to_ms = T0;
    let a = agg(store, &q);
    assert_eq!(
        a.series[0].buckets[0].time_in_state,
        states(&[("(no data)", 60_000)])
    );
    assert_eq!(a.series[0].buckets[0].first, None);
}

/// Int and bool series: first/last keep their type (from raw and from
/// rollups), bool averages as 0/1, states named by their text.
pub fn case_int_and_bool_series(store: &mut dyn TestStore) {
    let n = "acme/ib/count";
    let b = "acme/ib/running";
    store.write(
        &[
            pt(n, T0, 3i64),
            pt(b, T0, true),
            pt(b, T0 + 15 * S, false),
            pt(n, T0 + 20 * S, 7i64),
            pt(n, T0 + 40 * S, 5i64),
            pt(b, T0 + 45 * S, true),
        ],
        &[],
    );
    let a = agg(store, &agg_q("acme/ib/+", T0, T0 + M, M, &Aggregate::ALL));
    assert_eq!(a.series.len(), 2);
    let (count, running) = (&a.series[0], &a.series[1]);
    assert_eq!(
        (count.topic.as_str(), count.value_type),
        (n, ValueType::Int)
    );
    // 3, 7, 5 for 20 s each.
    assert_eq!(
        count.buckets,
        vec![Bucket {
            twa: Some(5.0),
            time_in_state: states(&[("3", 20_000), ("7", 20_000), ("5", 20_000)]),
            ..stats_bucket(
                T0,
                T0 + M,
                3,
                0,
                3.0,
                7.0,
                5.0,
                Value::Int(3),
                Value::Int(5)
            )
        }]
    );
    assert_eq!(
        (running.topic.as_str(), running.value_type),
        (b, ValueType::Bool)
    );
    // true 15 s, false 30 s, true 15 s.
    assert_eq!(
        running.buckets,
        vec![Bucket {
            twa: Some(0.5),
            time_in_state: states(&[("true", 30_000), ("false", 30_000)]),
            ..stats_bucket(
                T0,
                T0 + M,
                3,
                0,
                0.0,
                1.0,
                2.0 / 3.0,
                Value::Bool(true),
                Value::Bool(true)
            )
        }]
    );
    // From the rollups: the same values, the same types.
    let a = agg(store, &agg_q("acme/ib/+", T0, T0 + M, M, &STATS));
    assert_eq!(a.series[0].source, "rollup_1m");
    assert_eq!(
        a.series[0].buckets,
        vec![stats_bucket(
            T0,
            T0 + M,
            3,
            0,
            3.0,
            7.0,
            5.0,
            Value::Int(3),
            Value::Int(5)
        )]
    );
    assert_eq!(a.series[1].source, "rollup_1m");
    assert_eq!(
        a.series[1].buckets,
        vec![stats_bucket(
            T0,
            T0 + M,
            3,
            0,
            0.0,
            1.0,
            2.0 / 3.0,
            Value::Bool(true),
            Value::Bool(true)
        )]
    );
}

/// Folds raw values into the value aggregates of buckets (the reference).
fn fold_raw(points: &[PointRow], from_ms: i64, to_ms: i64, width: i64) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut start = from_ms;
    while start < to_ms {
        let end = (start + width).min(to_ms);
        let mut b = bucket(start, end, 0, 0);
        let mut sum = 0.0;
        for p in points.iter().filter(|p| p.ts_ms >= start && p.ts_ms < end) {
            if p.quality == Quality::Bad {
                b.bad_count += 1;
                continue;
            }
            let Value::Float(v) = p.value else {
                panic!("float series")
            };
            b.count += 1;
            sum += v;
            b.min = Some(b.min.map_or(v, |m| m.min(v)));
            b.max = Some(b.max.map_or(v, |m| m.max(v)));
            b.first = b.first.or(Some(p.value.clone()));
            b.last = Some(p.value.clone());
        }
        b.avg = (b.count > 0).then(|| sum / b.count as f64);
        out.push(b);
        start = end;
    }
    out
}

/// Aggregates from rollups equal the same aggregates from raw values: an
/// aligned query (rollups) against the same query with a time-weighted
/// aggregate added (one raw pass) and against a fold of the raw values, and
/// an unaligned query (rollups plus raw edges) against the fold.
pub fn case_rollups_equal_raw(store: &mut dyn TestStore) {
    let t = "acme/cmp/power";
    // Three hours, a value every 7 s (multiples of 0.5, so sums are exact),
    // every 11th bad, written in batches of 500.
    let points: Vec<Point> = (0..(3 * H / (7 * S)))
        .map(|i| {
            let q = if i % 11 == 5 {
                Quality::Bad
            } else {
                Quality::Good
            };
            ptq(t, T0 + i * 7 * S, (i % 13) as f64 * 0.5, q)
        })
        .collect();
    for chunk in points.chunks(500) {
        store.write(chunk, &[]);
    }
    let raw_points = raw(store, &raw_q(t, T0 - H, T0 + 4 * H))
        .series
        .remove(0)
        .points;
    assert_eq!(raw_points.len(), points.len());
    let strip_twa = |mut r: AggregateResult| {
        for b in &mut r.series[0].buckets {
            b.twa = None;
        }
        r.series.remove(0)
    };
    for (from, to, width, source) in [
        (T0, T0 + 3 * H, H, "rollup_1h"),
        (T0, T0 + 3 * H, 5 * M, "rollup_1m"),
        (T0 - H, T0 + 4 * H, 2 * H, "rollup_1h"),
        (T0 + 37 * S, T0 + 3 * H - 11 * S, 17 * M, "raw"),
        (T0 + 30 * M + 1, T0 + 2 * H + 30 * M, 90 * M, "raw"),
    ] {
        let by_rollup = agg(store, &agg_q(t, from, to, width, &STATS))
            .series
            .remove(0);
        assert_eq!(by_rollup.source, source, "{from} {to} {width}");
        let mut with_twa = STATS.to_vec();
        with_twa.push(Aggregate::Twa);
        let by_raw = strip_twa(agg(store, &agg_q(t, from, to, width, &with_twa)));
        assert_eq!(by_raw.source, "raw");
        assert_eq!(by_rollup.buckets, by_raw.buckets, "{from} {to} {width}");
        assert_eq!(
            by_rollup.buckets,
            fold_raw(&raw_points, from, to, width),
            "{from} {to} {width}"
        );
    }
}

// ---------------------------------------------------------------- as-of

/// The subtree as of T: a value at exactly T is in, after T is out, a tag
/// with no value by T is absent; ages are relative to T.
/// A snapshot over tags of very different rates: a fast tag with 30,000
/// values between a slow tag's last change and T (more than a backward time
/// scan would read), a string tag, a tag settled long before T, and a tag
/// whose first value comes after T. Every answer must equal the latest value
/// at or before T.
pub fn case_snapshot_mixed_rates(store: &mut dyn TestStore) {
    let at = T0 + 10 * H;
    let mut points = vec![
        pt("acme/mix/slow", T0, 1.5),
        pt("acme/mix/slow", at + H, 2.5),
        pt("acme/mix/state", T0 + S, "running"),
        pt("acme/mix/state", at - 3 * S, "idle"),
        pt("acme/mix/state", at + S, "faulted"),
        pt("acme/mix/settled", T0 + 2 * S, 7i64),
        pt("acme/mix/future", at + 1, 1i64),
    ];
    for k in 0..30_000 {
        points.push(pt("acme/mix/fast", at - 30_000 * S / 10 + k * S / 10, k));
    }
    points.push(pt("acme/mix/fast", at + 1, -1i64));
    store.write(&points, &[]);
    let snap =
        query::snapshot(store.reader().as_mut(), &FullAccess, "acme/mix/#", at).expect("snapshot");
    let got: Vec<(&str, i64, Value)> = snap
        .values
        .iter()
        .map(|v| (v.topic.as_str(), v.ts_ms, v.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("acme/mix/fast", at - S / 10, Value::Int(29_999)),
            ("acme/mix/settled", T0 + 2 * S, Value::Int(7)),
            ("acme/mix/slow", T0, Value::Float(1.5)),
            ("acme/mix/state", at - 3 * S, Value::Text("idle".into())),
        ]
    );
}

pub fn case_snapshot_subtree(store: &mut dyn TestStore) {
    let at = T0 + 100 * S;
    store.write(
        &[
            pt("acme/snap/a", at - 10 * S, 1i64),
            pt("acme/snap/a", at, 2i64),
            pt("acme/snap/a", at + 10 * S, 3i64),
            pt("acme/snap/b", at + 5 * S, "late"),
            ptq("acme/snap/c/deep", at - 100 * S, true, Quality::Uncertain),
            pt("acme/snapx/other", at - 1, 9.5),
        ],
        &[],
    );
    let snap =
        query::snapshot(store.reader().as_mut(), &FullAccess, "acme/snap/#", at).expect("snapshot");
    assert_eq!(snap.at_ms, at);
    let got: Vec<(&str, i64, Value, Quality, i64)> = snap
        .values
        .iter()
        .map(|v| {
            (
                v.topic.as_str(),
                v.ts_ms,
                v.value.clone(),
                v.quality,
                v.age_ms,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("acme/snap/a", at, Value::Int(2), Quality::Good, 0),
            (
                "acme/snap/c/deep",
                at - 100 * S,
                Value::Bool(true),
                Quality::Uncertain,
                100_000
            ),
        ]
    );
    // One level only.
    let snap = query::snapshot(store.reader().as_mut(), &FullAccess, "acme/snap/+", at - 1)
        .expect("snapshot");
    let got: Vec<(&str, i64, i64)> = snap
        .values
        .iter()
        .map(|v| (v.topic.as_str(), v.ts_ms, v.age_ms))
        .collect();
    assert_eq!(got, [("acme/snap/a", at - 10 * S, 9_999)]);
    // Later, b is there too.
    let snap = query::snapshot(store.reader().as_mut(), &FullAccess, "acme/snap/+", at + M)
        .expect("snapshot");
    let got: Vec<(&str, Value)> = snap
        .values
        .iter()
        .map(|v| (v.topic.as_str(), v.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("acme/snap/a", Value::Int(3)),
            ("acme/snap/b", Value::Text("late".into()))
        ]
    );
}

/// The latest stored values, with `at_ms` the newest timestamp.
pub fn case_last(store: &mut dyn TestStore) {
    store.write(
        &[
            pt("acme/last/x", T0, 1i64),
            pt("acme/last/y", T0 + 9 * S, "on"),
            pt("acme/lastx", T0 + H, 0i64),
        ],
        &[],
    );
    // Late value older than the latest: the latest stays.
    store.write(
        &[
            pt("acme/last/x", T0 + 5 * S, 2i64),
            pt("acme/last/x", T0 + 2 * S, 7i64),
        ],
        &[],
    );
    let snap = query::last(store.reader().as_mut(), &FullAccess, "acme/last/#").expect("last");
    assert_eq!(snap.at_ms, T0 + 9 * S);
    let got: Vec<(&str, i64, Value, i64)> = snap
        .values
        .iter()
        .map(|v| (v.topic.as_str(), v.ts_ms, v.value.clone(), v.age_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            ("acme/last/x", T0 + 5 * S, Value::Int(2), 4_000),
            ("acme/last/y", T0 + 9 * S, Value::Text("on".into()), 0),
        ]
    );
}

// ---------------------------------------------------------------- export

fn export_data(store: &mut dyn TestStore) {
    store.write(
        &[
            pt("acme/exp/a", T0, 1.5),
            ptq("acme/exp/b", T0 + 500, "say \"hi\", ok", Quality::Bad),
            ptq("acme/exp/a", T0 + S, 2.0, Quality::Uncertain),
            pt("acme/exp/d", T0 + 1_500, -42i64),
            pt("acme/exp/c", T0 + 2 * S, true),
            pt("acme/exp/c", T0 + 1_999, false),
            pt("acme/expx", T0, 0i64),
        ],
        &[],
    );
}

fn run_export(store: &mut dyn TestStore, format: ExportFormat) -> (String, u64, Vec<(u64, u64)>) {
    let mut out = Vec::new();
    let mut calls = Vec::new();
    let n = query::export(
        store.reader().as_mut(),
        &FullAccess,
        "acme/exp/#",
        T0,
        T0 + 2 * S,
        format,
        &mut out,
        &mut |done, total| calls.push((done, total)),
    )
    .expect("export");
    (String::from_utf8(out).expect("utf-8"), n, calls)
}

/// CSV: header, series by topic, values in time order, quoted when needed.
pub fn case_export_csv(store: &mut dyn TestStore) {
    export_data(store);
    let (text, n, calls) = run_export(store, ExportFormat::Csv);
    assert_eq!(
        text,
        "topic,ts_ms,time,value,quality\n\
         acme/exp/a,1767225600000,2026-01-01T00:00:00.000Z,1.5,good\n\
         acme/exp/a,1767225601000,2026-01-01T00:00:01.000Z,2.0,uncertain\n\
         acme/exp/b,1767225600500,2026-01-01T00:00:00.500Z,\"say \"\"hi\"\", ok\",bad\n\
         acme/exp/c,1767225601999,2026-01-01T00:00:01.999Z,false,good\n\
         acme/exp/d,1767225601500,2026-01-01T00:00:01.500Z,-42,good\n"
    );
    assert_eq!(n, 5);
    assert_eq!(calls, [(5, 5)]);
}

/// JSON: one array of objects with the same fields.
pub fn case_export_json(store: &mut dyn TestStore) {
    export_data(store);
    let (text, n, calls) = run_export(store, ExportFormat::Json);
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(
        parsed,
        serde_json::json!([
            {"topic": "acme/exp/a", "ts_ms": 1767225600000i64, "time": "2026-01-01T00:00:00.000Z", "value": 1.5, "quality": "good"},
            {"topic": "acme/exp/a", "ts_ms": 1767225601000i64, "time": "2026-01-01T00:00:01.000Z", "value": 2.0, "quality": "uncertain"},
            {"topic": "acme/exp/b", "ts_ms": 1767225600500i64, "time": "2026-01-01T00:00:00.500Z", "value": "say \"hi\", ok", "quality": "bad"},
            {"topic": "acme/exp/c", "ts_ms": 1767225601999i64, "time": "2026-01-01T00:00:01.999Z", "value": false, "quality": "good"},
            {"topic": "acme/exp/d", "ts_ms": 1767225601500i64, "time": "2026-01-01T00:00:01.500Z", "value": -42, "quality": "good"},
        ])
    );
    // Types survive: the float 2.0 stays a float, -42 an integer.
    assert!(parsed[1]["value"].is_f64() && parsed[4]["value"].is_i64());
    assert_eq!(n, 5);
    assert_eq!(calls, [(5, 5)]);
}

// ---------------------------------------------------------------- access

/// A caller allowed only `acme/a/#` sees only those series under wildcards,
/// and is refused an exact topic outside them, by name.
pub fn case_permissions(store: &mut dyn TestStore) {
    store.write(
        &[
            pt("acme/a", T0, 0i64),
            pt("acme/a/x", T0, 1i64),
            pt("acme/a/y/z", T0, 2i64),
            pt("acme/ab/x", T0, 3i64),
            pt("acme/b/x", T0, 4i64),
        ],
        &[],
    );
    let allowed = ["acme/a", "acme/a/x", "acme/a/y/z"];
    let mut r = store.reader();
    let reader = r.as_mut();
    let got = query::raw(reader, &OnlyA, &raw_q("acme/#", T0, T0 + S)).expect("raw");
    assert_eq!(
        got.series
            .iter()
            .map(|s| s.topic.as_str())
            .collect::<Vec<_>>(),
        allowed
    );
    let got =
        query::aggregate(reader, &OnlyA, &agg_q("#", T0, T0 + S, S, &STATS)).expect("aggregate");
    assert_eq!(
        got.series
            .iter()
            .map(|s| s.topic.as_str())
            .collect::<Vec<_>>(),
        allowed
    );
    let got = query::snapshot(reader, &OnlyA, "acme/+/x", T0).expect("snapshot");
    assert_eq!(
        got.values
            .iter()
            .map(|v| v.topic.as_str())
            .collect::<Vec<_>>(),
        ["acme/a/x"]
    );
    let got = query::last(reader, &OnlyA, "#").expect("last");
    assert_eq!(
        got.values
            .iter()
            .map(|v| v.topic.as_str())
            .collect::<Vec<_>>(),
        allowed
    );
    let mut out = Vec::new();
    let n = query::export(
        reader,
        &OnlyA,
        "acme/#",
        T0,
        T0 + S,
        ExportFormat::Csv,
        &mut out,
        &mut |_, _| {},
    )
    .expect("export");
    assert_eq!(n, 3);
    assert!(
        !String::from_utf8_lossy(&out).contains("acme/b")
            && !String::from_utf8_lossy(&out).contains("acme/ab")
    );
    // An exact topic outside: refused, naming the topic and the caller, for
    // every query type, whether or not it has history.
    let denied = |e: HistorianError, topic: &str| {
        let msg = e.to_string();
        assert!(
            matches!(&e, HistorianError::Denied { topic: t, .. } if t == topic),
            "{msg}"
        );
        assert!(msg.contains(topic) && msg.contains("user carol"), "{msg}");
    };
    denied(
        query::raw(reader, &OnlyA, &raw_q("acme/b/x", T0, T0 + S)).expect_err("denied"),
        "acme/b/x",
    );
    denied(
        query::raw(reader, &OnlyA, &raw_q("acme/zz", T0, T0 + S)).expect_err("denied"),
        "acme/zz",
    );
    denied(
        query::aggregate(reader, &OnlyA, &agg_q("acme/ab/x", T0, T0 + S, S, &STATS))
            .expect_err("denied"),
        "acme/ab/x",
    );
    denied(
        query::snapshot(reader, &OnlyA, "acme/b/x", T0).expect_err("denied"),
        "acme/b/x",
    );
    denied(
        query::last(reader, &OnlyA, "acme/b/x").expect_err("denied"),
        "acme/b/x",
    );
    denied(
        query::export(
            reader,
            &OnlyA,
            "acme/b/x",
            T0,
            T0 + S,
            ExportFormat::Json,
            &mut Vec::new(),
            &mut |_, _| {},
        )
        .expect_err("denied"),
        "acme/b/x",
    );
    // A wildcard matching only refused series: empty, not an error.
    let got = query::raw(reader, &OnlyA, &raw_q("acme/b/#", T0, T0 + S)).expect("raw");
    assert!(got.series.is_empty());
    // An allowed exact topic without history: empty.
    let got = query::raw(reader, &OnlyA, &raw_q("acme/a/none", T0, T0 + S)).expect("raw");
    assert!(got.series.is_empty());
}

// ---------------------------------------------------------------- errors

/// Invalid queries fail with messages naming what is wrong.
pub fn case_validation(store: &mut dyn TestStore) {
    store.write(&[pt("acme/val/x", T0, 1.0)], &[]);
    let mut r = store.reader();
    let reader = r.as_mut();
    let query_err = |e: HistorianError| match e {
        HistorianError::Query(msg) => msg,
        other => panic!("expected a query error, got {other}"),
    };
    let msg = query_err(
        query::raw(reader, &FullAccess, &raw_q("acme/val/x", T0, T0)).expect_err("empty range"),
    );
    assert!(msg.contains("before"), "{msg}");
    let msg = query_err(
        query::aggregate(
            reader,
            &FullAccess,
            &agg_q("acme/val/x", T0 + 1, T0, M, &STATS),
        )
        .expect_err("reversed"),
    );
    assert!(msg.contains("before"), "{msg}");
    let msg = query_err(
        query::aggregate(
            reader,
            &FullAccess,
            &agg_q("acme/val/x", T0, T0 + M, 0, &STATS),
        )
        .expect_err("zero bucket"),
    );
    assert!(msg.contains("bucket"), "{msg}");
    // A day in 1 ms buckets: 86,400,000 buckets.
    let msg = query_err(
        query::aggregate(
            reader,
            &FullAccess,
            &agg_q("acme/val/x", T0, T0 + 24 * H, 1, &STATS),
        )
        .expect_err("too many"),
    );
    assert!(msg.contains("86400000") && msg.contains("100000"), "{msg}");
    let msg = query_err(
        query::aggregate(
            reader,
            &FullAccess,
            &agg_q("acme/val/x", T0, T0 + M, M, &[]),
        )
        .expect_err("no aggregates"),
    );
    assert!(
        msg.contains("count") && msg.contains("time-in-state"),
        "{msg}"
    );
    for bad in ["acme/#/x", "acme/va+/x", ""] {
        let msg = query_err(
            query::raw(reader, &FullAccess, &raw_q(bad, T0, T0 + M)).expect_err("bad filter"),
        );
        assert!(msg.contains("filter"), "{bad}: {msg}");
        assert!(query::snapshot(reader, &FullAccess, bad, T0).is_err());
    }
    let msg = query_err(
        query::export(
            reader,
            &FullAccess,
            "acme/val/x",
            T0,
            T0 - 1,
            ExportFormat::Csv,
            &mut Vec::new(),
            &mut |_, _| {},
        )
        .expect_err("reversed"),
    );
    assert!(msg.contains("before"), "{msg}");
}

/// An exact topic with no history is an empty answer, not an error.
pub fn case_exact_topic_without_history(store: &mut dyn TestStore) {
    store.write(&[pt("acme/hist/x", T0, 1.0)], &[]);
    let mut r = store.reader();
    let reader = r.as_mut();
    assert!(
        query::raw(reader, &FullAccess, &raw_q("acme/hist/none", T0, T0 + M))
            .expect("raw")
            .series
            .is_empty()
    );
    let a = query::aggregate(
        reader,
        &FullAccess,
        &agg_q("acme/hist/none", T0, T0 + M, M, &Aggregate::ALL),
    )
    .expect("aggregate");
    assert!(a.series.is_empty());
    assert!(
        query::snapshot(reader, &FullAccess, "acme/hist/none", T0)
            .expect("snapshot")
            .values
            .is_empty()
    );
    let last = query::last(reader, &FullAccess, "acme/hist/none").expect("last");
    assert!(last.values.is_empty());
    let mut out = Vec::new();
    let n = query::export(
        reader,
        &FullAccess,
        "acme/hist/none",
        T0,
        T0 + M,
        ExportFormat::Csv,
        &mut out,
        &mut |_, _| {},
    )
    .expect("export");
    assert_eq!(
        (n, out.as_slice()),
        (0, b"topic,ts_ms,time,value,quality\n".as_slice())
    );
    // And a stored tag with nothing in the range is listed, empty.
    let r = query::raw(
        reader,
        &FullAccess,
        &raw_q("acme/hist/x", T0 + M, T0 + 2 * M),
    )
    .expect("raw");
    assert_eq!(
        topics(&r.series.iter().map(|s| s.topic.clone()).collect::<Vec<_>>()),
        ["acme/hist/x"]
    );
    assert!(r.series[0].points.is_empty());
}

// ---------------------------------------------------------------- rollups

/// Rollup rows after a mix of in-order data, late data, repeated timestamps
/// and bad values, across minute and hour boundaries, equal a recomputation
/// from the raw values.
pub fn case_rollups_match_recomputation(store: &mut dyn TestStore) {
    let topics = ["acme/roll/v", "acme/roll/n", "acme/roll/b"];
    let mut rng = Lcg(7);
    let mut next_ts = [T0 + 55 * M; 3];
    for _batch in 0..40 {
        let mut batch = Vec::new();
        for _ in 0..30 {
            let k = rng.below(3) as usize;
            let ts = match rng.below(10) {
                // Late: up to 20 minutes back (often into the previous hour).
                0 | 1 => next_ts[k] - 1 - rng.below(20 * M as u64) as i64,
                // Repeated: exactly the latest timestamp again.
                2 => next_ts[k],
                _ => {
                    next_ts[k] += 1 + rng.below(15 * S as u64) as i64;
                    next_ts[k]
                }
            };
            let quality = match rng.below(10) {
                0 => Quality::Bad,
                1 => Quality::Uncertain,
                _ => Quality::Good,
            };
            let v = rng.below(200) as i64 - 100;
            let value = match k {
                0 => Value::Float(v as f64 * 0.25),
                1 => Value::Int(v),
                _ => Value::Bool(v > 0),
            };
            batch.push(Point {
                topic: Arc::from(topics[k]),
                ts_ms: ts,
                value,
                quality,
            });
        }
        store.write(&batch, &[]);
    }
    let mut r = store.reader();
    let reader = r.as_mut();
    let (from, to) = (T0 - 2 * H, T0 + 4 * H);
    for topic in topics {
        let id = id_of(reader, topic);
        let mut raw = Vec::new();
        reader
            .points(id, from, to, &mut |p| {
                raw.push(p);
                true
            })
            .expect("points");
        assert!(raw.len() > 200, "{topic}: {} values", raw.len());
        for level in [RollupLevel::Minute, RollupLevel::Hour] {
            let mut expected: BTreeMap<i64, RollupRow> = BTreeMap::new();
            for p in &raw {
                let b = level.bucket_of(p.ts_ms);
                let v = match (&p.value, p.quality) {
                    (_, Quality::Bad) => None,
                    (Value::Float(f), _) => Some(*f),
                    (Value::Int(i), _) => Some(*i as f64),
                    (Value::Bool(b), _) => Some(f64::from(u8::from(*b))),
                    (Value::Text(_), _) => panic!("numeric series"),
                };
                expected
                    .entry(b)
                    .or_insert_with(|| RollupRow::empty(b))
                    .add(p.ts_ms, v);
            }
            let got = reader.rollups(level, id, from, to).expect("rollups");
            let got_buckets: Vec<i64> = got.iter().map(|r| r.bucket_ms).collect();
            let want_buckets: Vec<i64> = expected.keys().copied().collect();
            assert_eq!(got_buckets, want_buckets, "{topic} {level:?}");
            for g in &got {
                let e = &expected[&g.bucket_ms];
                let what = format!("{topic} {level:?} bucket {}", g.bucket_ms);
                assert_eq!((g.count, g.bad_count), (e.count, e.bad_count), "{what}");
                if e.count > 0 {
                    assert_eq!(
                        (g.min, g.max, g.sum, g.first_ms, g.first, g.last_ms, g.last),
                        (e.min, e.max, e.sum, e.first_ms, e.first, e.last_ms, e.last),
                        "{what}"
                    );
                }
            }
        }
    }
}

/// The batched reads a store may specialise (`points_in_spans`,
/// `rollup_stats`) give what the plain reads give.
pub fn case_batched_reads_agree(store: &mut dyn TestStore) {
    let topic = "case/batched/t";
    let points: Vec<Point> = (0..3_000)
        .map(|k| {
            let q = if k % 97 == 0 {
                Quality::Bad
            } else {
                Quality::Good
            };
            ptq(topic, T0 + k * 1_300, (k % 50) as f64 * 0.5, q)
        })
        .collect();
    store.write(&points, &[]);
    let mut r = store.reader();
    let reader = r.as_mut();
    let id = id_of(reader, topic);
    // Many short spans (as bucket edges are), some empty, one past the data.
    let spans: Vec<(i64, i64)> = (0..40)
        .map(|k| (T0 + k * 100_000 - 3_000, T0 + k * 100_000 + 7_000))
        .chain([(T0 + 9 * H, T0 + 10 * H)])
        .collect();
    let mut batched = Vec::new();
    reader
        .points_in_spans(id, &spans, &mut |p| batched.push(p))
        .expect("points_in_spans");
    let mut one_by_one = Vec::new();
    for &(from, to) in &spans {
        reader
            .points(id, from, to, &mut |p| {
                one_by_one.push(p);
                true
            })
            .expect("points");
    }
    assert!(batched.len() > 100, "{} values", batched.len());
    assert_eq!(batched, one_by_one);
    for level in [
        RollupLevel::TenSeconds,
        RollupLevel::Minute,
        RollupLevel::Hour,
    ] {
        let (from, to) = (T0 - H, T0 + 3 * H);
        let full = reader.rollups(level, id, from, to).expect("rollups");
        let mut stats = Vec::new();
        reader
            .rollup_stats(level, id, from, to, &mut |row| stats.push(*row))
            .expect("rollup_stats");
        assert_eq!(full.len(), stats.len(), "{level:?}");
        for (f, s) in full.iter().zip(&stats) {
            assert_eq!(
                (f.bucket_ms, f.count, f.bad_count),
                (s.bucket_ms, s.count, s.bad_count),
                "{level:?}"
            );
            if f.count > 0 {
                assert_eq!((f.min, f.max, f.sum), (s.min, s.max, s.sum), "{level:?}");
            }
        }
    }
}

/// A text value written over a stored number at the same timestamp (a
/// mis-typed tag corrected, a replay) takes that number out of the rollups.
pub fn case_text_replacing_a_number_leaves_the_rollups(store: &mut dyn TestStore) {
    let topic = "case/retyped/t";
    store.write(
        &[
            pt(topic, T0, 1.0),
            pt(topic, T0 + S, 5.0),
            pt(topic, T0 + 2 * S, 9.0),
        ],
        &[],
    );
    store.write(&[pt(topic, T0 + S, "oops")], &[]);
    let mut r = store.reader();
    let reader = r.as_mut();
    let id = id_of(reader, topic);
    for level in [
        RollupLevel::TenSeconds,
        RollupLevel::Minute,
        RollupLevel::Hour,
    ] {
        let rows = reader.rollups(level, id, T0 - H, T0 + H).expect("rollups");
        assert_eq!(rows.len(), 1, "{level:?}");
        let row = &rows[0];
        assert_eq!(
            (row.count, row.sum, row.min, row.max),
            (2, 10.0, 1.0, 9.0),
            "{level:?}"
        );
    }
}
