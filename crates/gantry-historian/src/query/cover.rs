//! Planning an aggregate from rollups: the query's buckets ([`BucketGrid`]),
//! and which parts of each are read from which rollup level or from raw
//! values ([`CoverPlan`]).
//!
//! Each query bucket is covered with the widest whole rollup buckets that
//! fit inside it (hours, then minutes in what the hours leave), and raw
//! values for the remainder, so any bucket width and alignment works and
//! answers are exact. Spans of one kind are merged where they touch, across
//! query buckets, so the store is asked once per contiguous raw span and
//! about once per run of rollup buckets, never once per value.

use crate::error::HistorianError;
use crate::rollup::RollupLevel;

/// The query buckets: `[from + i*width, from + (i+1)*width)`, the last one
/// cut at `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketGrid {
    pub from_ms: i64,
    pub to_ms: i64,
    pub width_ms: i64,
    len: usize,
}

impl BucketGrid {
    /// A grid of at most `max` buckets, or an error naming the numbers.
    pub fn new(
        from_ms: i64,
        to_ms: i64,
        width_ms: i64,
        max: i64,
    ) -> Result<BucketGrid, HistorianError> {
        super::check_range(from_ms, to_ms)?;
        if width_ms <= 0 {
            return Err(HistorianError::Query(format!(
                "the bucket width must be longer than zero, got {width_ms} ms"
            )));
        }
        let span = i128::from(to_ms) - i128::from(from_ms);
        let width = i128::from(width_ms);
        let count = span / width + i128::from(span % width != 0);
        if count > i128::from(max) {
            let min_width = span / i128::from(max) + i128::from(span % i128::from(max) != 0);
            return Err(HistorianError::Query(format!(
                "{count} buckets of {width_ms} ms in a range of {span} ms; at most {max} per series: \
                 use a bucket of at least {min_width} ms or a shorter range"
            )));
        }
        if i64::try_from(span).is_err() {
            return Err(HistorianError::Query(format!(
                "the range {from_ms}..{to_ms} is too long"
            )));
        }
        Ok(BucketGrid {
            from_ms,
            to_ms,
            width_ms,
            len: count as usize,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn start(&self, i: usize) -> i64 {
        self.from_ms + i as i64 * self.width_ms
    }

    pub fn end(&self, i: usize) -> i64 {
        self.start(i).saturating_add(self.width_ms).min(self.to_ms)
    }

    /// The bucket holding `ts_ms` (which must be in `[from, to)`).
    pub fn index_of(&self, ts_ms: i64) -> usize {
        ((ts_ms - self.from_ms) / self.width_ms) as usize
    }
}

/// A half-open time span `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    fn len(&self) -> i64 {
        self.end - self.start
    }
}

/// Adds a span, merging it with the previous one when they touch.
fn push(spans: &mut Vec<Span>, start: i64, end: i64) {
    if start >= end {
        return;
    }
    match spans.last_mut() {
        Some(last) if last.end == start => last.end = end,
        _ => spans.push(Span { start, end }),
    }
}

fn floor_to(t: i64, w: i64) -> i64 {
    t.div_euclid(w) * w
}

fn ceil_to(t: i64, w: i64) -> i64 {
    let f = floor_to(t, w);
    if f == t { t } else { f.saturating_add(w) }
}

/// Rollup buckets of one level whose gap is at most this many buckets are
/// fetched in one call (a few unused rows cost less than a round trip).
const MERGE_GAP_BUCKETS: i64 = 16;

/// Which parts of the range come from which rollup level and which from raw
/// values. Spans are ascending, disjoint and together tile the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverPlan {
    /// Widest level first, with the spans it covers (whole buckets of it).
    pub levels: Vec<(RollupLevel, Vec<Span>)>,
    /// What no whole rollup bucket covers: read raw, one call per span.
    pub raw: Vec<Span>,
}

impl CoverPlan {
    pub fn new(grid: &BucketGrid) -> CoverPlan {
        let mut levels: Vec<RollupLevel> = RollupLevel::ALL.to_vec();
        levels.sort_by_key(|l| std::cmp::Reverse(l.width_ms()));
        let mut plan = CoverPlan {
            levels: levels.iter().map(|l| (*l, Vec::new())).collect(),
            raw: Vec::new(),
        };
        for i in 0..grid.len() {
            plan.cover(0, grid.start(i), grid.end(i));
        }
        plan
    }

    /// Covers `[start, end)` with whole buckets of level `depth` and finer.
    fn cover(&mut self, depth: usize, start: i64, end: i64) {
        if start >= end {
            return;
        }
        let Some((level, _)) = self.levels.get(depth) else {
            push(&mut self.raw, start, end);
            return;
        };
        let w = level.width_ms();
        let (a, b) = (ceil_to(start, w), floor_to(end, w));
        if a < b {
            self.cover(depth + 1, start, a);
            push(&mut self.levels[depth].1, a, b);
            self.cover(depth + 1, b, end);
        } else {
            self.cover(depth + 1, start, end);
        }
    }

    /// Milliseconds of the range read raw.
    pub fn raw_ms(&self) -> i128 {
        self.raw.iter().map(|s| i128::from(s.len())).sum()
    }

    /// The finest source used: `"raw"`, `"rollup_1m"` or `"rollup_1h"`.
    pub fn finest(&self) -> &'static str {
        if !self.raw.is_empty() {
            return "raw";
        }
        self.levels
            .iter()
            .filter(|(_, spans)| !spans.is_empty())
            .min_by_key(|(l, _)| l.width_ms())
            .map_or("raw", |(l, _)| l.table())
    }

    /// The ranges to ask the store for rows of `spans` (of one level):
    /// spans with small gaps between them are fetched together.
    pub fn fetch_ranges(level: RollupLevel, spans: &[Span]) -> Vec<Span> {
        let max_gap = level.width_ms() * MERGE_GAP_BUCKETS;
        let mut out: Vec<Span> = Vec::new();
        for s in spans {
            match out.last_mut() {
                Some(last) if s.start - last.end <= max_gap => last.end = s.end,
                _ => out.push(*s),
            }
        }
        out
    }

    /// True when the rollup bucket starting at `bucket_ms` is one this plan
    /// takes from `spans` (a level's spans).
    pub fn takes(spans: &[Span], bucket_ms: i64) -> bool {
        let i = spans.partition_point(|s| s.end <= bucket_ms);
        spans.get(i).is_some_and(|s| s.start <= bucket_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;
    const H: i64 = 3_600_000;

    fn spans(plan: &CoverPlan, level: RollupLevel) -> Vec<(i64, i64)> {
        plan.levels
            .iter()
            .find(|(l, _)| *l == level)
            .map(|(_, s)| s.iter().map(|s| (s.start, s.end)).collect())
            .unwrap_or_default()
    }

    #[test]
    fn grid_counts_and_cuts_the_last_bucket() {
        let g = BucketGrid::new(0, 250, 100, 10).expect("grid");
        assert_eq!(g.len(), 3);
        assert_eq!((g.start(2), g.end(2)), (200, 250));
        assert_eq!(g.index_of(199), 1);
        let e = BucketGrid::new(0, 86_400_000, 1, 100_000).expect_err("too many");
        let msg = e.to_string();
        assert!(
            msg.contains("86400000 buckets") && msg.contains("100000") && msg.contains("864 ms"),
            "{msg}"
        );
        assert!(BucketGrid::new(5, 5, 1, 10).is_err());
        assert!(BucketGrid::new(0, 5, 0, 10).is_err());
        assert!(BucketGrid::new(i64::MIN, i64::MAX, i64::MAX, 10).is_err());
        let g = BucketGrid::new(i64::MIN + 1, 0, i64::MAX / 2, 10).expect("grid");
        assert_eq!((g.len(), g.start(2), g.end(2)), (3, -1, 0));
    }

    #[test]
    fn aligned_buckets_come_from_the_widest_rollup() {
        // Two 1-hour buckets on the hour: hours only.
        let plan = CoverPlan::new(&BucketGrid::new(0, 2 * H, H, 10).expect("grid"));
        assert_eq!(spans(&plan, RollupLevel::Hour), vec![(0, 2 * H)]);
        assert!(spans(&plan, RollupLevel::Minute).is_empty() && plan.raw.is_empty());
        assert_eq!(plan.finest(), "rollup_1h");
        // 15-minute buckets: minutes, merged into one span.
        let plan = CoverPlan::new(&BucketGrid::new(0, 2 * H, 15 * M, 10).expect("grid"));
        assert_eq!(spans(&plan, RollupLevel::Minute), vec![(0, 2 * H)]);
        assert_eq!(plan.finest(), "rollup_1m");
    }

    #[test]
    fn unaligned_buckets_use_hours_minutes_ten_seconds_and_raw_edges() {
        // One-day buckets starting at 00:00:30.5.
        let from = 30_500;
        let plan =
            CoverPlan::new(&BucketGrid::new(from, from + 2 * 24 * H, 24 * H, 10).expect("grid"));
        assert_eq!(
            spans(&plan, RollupLevel::Hour),
            vec![(H, 24 * H), (25 * H, 48 * H)]
        );
        assert_eq!(
            spans(&plan, RollupLevel::Minute),
            vec![(M, H), (24 * H + M, 25 * H)]
        );
        assert_eq!(
            spans(&plan, RollupLevel::TenSeconds),
            vec![
                (40_000, M),
                (24 * H, 24 * H + 30_000),
                (24 * H + 40_000, 24 * H + M),
                (48 * H, 48 * H + 30_000)
            ]
        );
        // Raw edges: the start, the 10 s around the bucket boundary, the end.
        assert_eq!(
            plan.raw,
            vec![
                Span {
                    start: from,
                    end: 40_000
                },
                Span {
                    start: 24 * H + 30_000,
                    end: 24 * H + 40_000
                },
                Span {
                    start: 48 * H + 30_000,
                    end: 48 * H + from
                },
            ]
        );
        assert_eq!(plan.finest(), "raw");
        assert_eq!(plan.raw_ms(), 9_500 + 10_000 + 500);
        // Hour spans separated by one hour are fetched together.
        let hours = &plan
            .levels
            .iter()
            .find(|(l, _)| *l == RollupLevel::Hour)
            .expect("hour spans")
            .1;
        assert_eq!(
            CoverPlan::fetch_ranges(RollupLevel::Hour, hours),
            vec![Span {
                start: H,
                end: 48 * H
            }]
        );
        assert!(CoverPlan::takes(hours, H));
        assert!(!CoverPlan::takes(hours, 24 * H));
        assert!(CoverPlan::takes(hours, 47 * H));
        assert!(!CoverPlan::takes(hours, 48 * H));
    }

    #[test]
    fn tiles_the_range_exactly() {
        for (from, to, w) in [
            (-7_777, 10 * H + 5, 4_321_000),
            (13, 3 * H, 90_000),
            (0, H, 7),
        ] {
            let plan = CoverPlan::new(&BucketGrid::new(from, to, w, 1_000_000).expect("grid"));
            let mut all: Vec<(i64, i64)> = plan.raw.iter().map(|s| (s.start, s.end)).collect();
            for (_, s) in &plan.levels {
                all.extend(s.iter().map(|s| (s.start, s.end)));
            }
            all.sort();
            let mut at = from;
            for (s, e) in all {
                assert_eq!(s, at);
                at = e;
            }
            assert_eq!(at, to);
        }
    }
}
