//! 1-minute and 1-hour rollups: per series and bucket the count, minimum,
//! maximum, sum (for the average), first and last value, maintained by the
//! writer as data arrives. Bad-quality values are counted separately and left
//! out of the aggregates. Text series have no rollups.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

/// A rollup table and its bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RollupLevel {
    /// 10 seconds: lets trend queries with any bucket width (a day in 1,000
    /// buckets is 86.4 s) read raw values only at the bucket edges.
    TenSeconds,
    Minute,
    Hour,
}

impl RollupLevel {
    pub const ALL: [RollupLevel; 3] = [
        RollupLevel::TenSeconds,
        RollupLevel::Minute,
        RollupLevel::Hour,
    ];

    pub const fn width_ms(self) -> i64 {
        match self {
            RollupLevel::TenSeconds => 10_000,
            RollupLevel::Minute => 60_000,
            RollupLevel::Hour => 3_600_000,
        }
    }

    pub const fn table(self) -> &'static str {
        match self {
            RollupLevel::TenSeconds => "rollup_10s",
            RollupLevel::Minute => "rollup_1m",
            RollupLevel::Hour => "rollup_1h",
        }
    }

    /// Start of the bucket holding `ts_ms` (buckets are aligned to the Unix
    /// epoch, so to whole UTC minutes and hours).
    pub const fn bucket_of(self, ts_ms: i64) -> i64 {
        // Saturating: a timestamp near i64::MIN must not overflow.
        ts_ms
            .div_euclid(self.width_ms())
            .saturating_mul(self.width_ms())
    }
}

/// One rollup bucket of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RollupRow {
    pub bucket_ms: i64,
    /// Good and uncertain values (the ones aggregated).
    pub count: u64,
    /// Bad-quality values, not aggregated.
    pub bad_count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub first_ms: i64,
    pub first: f64,
    pub last_ms: i64,
    pub last: f64,
}

impl RollupRow {
    pub fn empty(bucket_ms: i64) -> Self {
        Self {
            bucket_ms,
            count: 0,
            bad_count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            first_ms: i64::MAX,
            first: f64::NAN,
            last_ms: i64::MIN,
            last: f64::NAN,
        }
    }

    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Adds one value. Values may come in any order; first and last follow
    /// the timestamps, and a later value at the same timestamp wins.
    pub fn add(&mut self, ts_ms: i64, value: Option<f64>) {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            self.bad_count += 1;
            return;
        };
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        if ts_ms < self.first_ms {
            self.first_ms = ts_ms;
            self.first = v;
        }
        if ts_ms >= self.last_ms {
            self.last_ms = ts_ms;
            self.last = v;
        }
    }

    /// Combines two buckets' aggregates (for wider query buckets).
    pub fn merge(&mut self, other: &RollupRow) {
        self.bad_count += other.bad_count;
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if other.first_ms < self.first_ms {
            self.first_ms = other.first_ms;
            self.first = other.first;
        }
        if other.last_ms >= self.last_ms {
            self.last_ms = other.last_ms;
            self.last = other.last;
        }
    }
}

/// Tracks, per series and level, the open (latest) bucket so that values
/// arriving in order update it without reading the store back; anything else
/// (an older bucket, an out-of-order or repeated timestamp, a bucket not seen
/// since start) is marked for recomputation from the raw values.
#[derive(Debug, Default)]
pub struct RollupTracker {
    open: HashMap<(i64, RollupLevel), OpenBucket>,
    /// Open buckets that changed in the current batch (flag set on the
    /// bucket), in the order they first changed: written at commit.
    dirty: Vec<(i64, RollupLevel)>,
    /// Buckets changed in the current batch and then closed by a newer
    /// bucket of the same series in the same batch: written at commit too.
    closed: HashMap<(i64, RollupLevel, i64), RollupRow>,
    /// Buckets to recompute from raw values before writing.
    recompute: BTreeSet<(i64, RollupLevel, i64)>,
    /// Late values (older than the series' latest, at a new timestamp) for
    /// buckets that are neither open nor closed in this batch: merged into
    /// the stored row at commit.
    deltas: HashMap<(i64, RollupLevel, i64), RollupRow>,
}

#[derive(Debug, Clone, Copy)]
struct OpenBucket {
    row: RollupRow,
    dirty: bool,
}

impl RollupTracker {
    /// Accounts one value of a numeric series (`None` for a bad-quality
    /// value). `prior_last_ms` is the series' latest stored timestamp before
    /// this value; `replaced` says that a late value took the place of a
    /// stored one at the same timestamp (so the bucket must be recomputed;
    /// a late value at a new timestamp is merged instead).
    pub fn add(
        &mut self,
        series_id: i64,
        ts_ms: i64,
        value: Option<f64>,
        prior_last_ms: Option<i64>,
        replaced: bool,
    ) {
        let in_order = prior_last_ms.is_none_or(|last| ts_ms > last);
        for level in RollupLevel::ALL {
            let bucket = level.bucket_of(ts_ms);
            let key = (series_id, level, bucket);
            if !self.recompute.is_empty() && self.recompute.contains(&key) {
                continue;
            }
            match self.open.get_mut(&(series_id, level)) {
                Some(open) if open.row.bucket_ms == bucket && in_order => {
                    open.row.add(ts_ms, value);
                    if !open.dirty {
                        open.dirty = true;
                        self.dirty.push((series_id, level));
                    }
                }
                _ if in_order
                    && prior_last_ms.is_none_or(|last| level.bucket_of(last) < bucket) =>
                {
                    // A bucket newer than anything stored: it starts here.
                    let mut row = RollupRow::empty(bucket);
                    row.add(ts_ms, value);
                    self.replace_open(series_id, level, OpenBucket { row, dirty: true });
                }
                Some(open) if open.row.bucket_ms == bucket && !replaced => {
                    // A late value at a new timestamp: merges like any other.
                    open.row.add(ts_ms, value);
                    if !open.dirty {
                        open.dirty = true;
                        self.dirty.push((series_id, level));
                    }
                }
                open => {
                    if !replaced {
                        if let Some(row) = self.closed.get_mut(&key) {
                            row.add(ts_ms, value);
                        } else {
                            self.deltas
                                .entry(key)
                                .or_insert_with(|| RollupRow::empty(bucket))
                                .add(ts_ms, value);
                        }
                        continue;
                    }
                    if let Some(open) = open
                        && open.row.bucket_ms == bucket
                    {
                        // Recomputed at commit instead.
                        open.dirty = false;
                    }
                    self.recompute.insert(key);
                    self.closed.remove(&key);
                    self.deltas.remove(&key);
                }
            }
        }
    }

    /// Makes `new` the open bucket of a series and level; the one it replaces
    /// is still written at commit if it changed in this batch.
    fn replace_open(&mut self, series_id: i64, level: RollupLevel, new: OpenBucket) {
        let dirty = new.dirty;
        match self.open.insert((series_id, level), new) {
            Some(old) => {
                if old.dirty {
                    self.closed
                        .insert((series_id, level, old.row.bucket_ms), old.row);
                    // Its place in `dirty` now stands for the new bucket.
                } else if dirty {
                    self.dirty.push((series_id, level));
                }
            }
            None if dirty => self.dirty.push((series_id, level)),
            None => {}
        }
    }

    /// Late values to merge into stored rows: (series, level, delta).
    pub fn take_deltas(&mut self) -> Vec<(i64, RollupLevel, RollupRow)> {
        self.deltas
            .drain()
            .map(|((series, level, _), row)| (series, level, row))
            .collect()
    }

    /// A non-numeric value replaced a stored one at `ts_ms`: the buckets
    /// around it lose whatever that value contributed, so they are
    /// recomputed from the raw values (which leave text out).
    pub fn replaced_by_text(&mut self, series_id: i64, ts_ms: i64) {
        for level in RollupLevel::ALL {
            self.recompute
                .insert((series_id, level, level.bucket_of(ts_ms)));
        }
    }

    /// Buckets that must be recomputed from raw values, in order.
    pub fn take_recompute(&mut self) -> Vec<(i64, RollupLevel, i64)> {
        std::mem::take(&mut self.recompute).into_iter().collect()
    }

    /// Stores a recomputed bucket; it becomes the open one if it is the
    /// series' newest.
    pub fn recomputed(&mut self, series_id: i64, level: RollupLevel, row: RollupRow) {
        match self.open.get_mut(&(series_id, level)) {
            Some(open) if open.row.bucket_ms == row.bucket_ms => {
                open.row = row;
                open.dirty = false;
            }
            Some(open) if open.row.bucket_ms > row.bucket_ms => {}
            _ => self.replace_open(series_id, level, OpenBucket { row, dirty: false }),
        }
    }

    /// The rows to write at commit: the open buckets changed in this batch
    /// and the ones they replaced.
    pub fn take_dirty(&mut self) -> Vec<(i64, RollupLevel, RollupRow)> {
        let mut out: Vec<(i64, RollupLevel, RollupRow)> = self
            .closed
            .drain()
            .map(|((series, level, _), row)| (series, level, row))
            .collect();
        for key in std::mem::take(&mut self.dirty) {
            if let Some(open) = self.open.get_mut(&key)
                && open.dirty
            {
                open.dirty = false;
                out.push((key.0, key.1, open.row));
            }
        }
        out
    }

    /// Forgets everything (after a failed transaction: the store is the truth).
    pub fn reset(&mut self) {
        self.open.clear();
        self.dirty.clear();
        self.closed.clear();
        self.recompute.clear();
        self.deltas.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_align_to_the_epoch() {
        assert_eq!(RollupLevel::Minute.bucket_of(125_000), 120_000);
        assert_eq!(RollupLevel::Minute.bucket_of(-1), -60_000);
        assert_eq!(
            RollupLevel::Hour.bucket_of(3_600_000 * 5 + 1),
            3_600_000 * 5
        );
    }

    #[test]
    fn in_order_values_update_the_open_bucket_and_others_are_recomputed() {
        let mut t = RollupTracker::default();
        t.add(1, 1_000, Some(1.0), None, false);
        t.add(1, 2_000, Some(3.0), Some(1_000), false);
        t.add(1, 3_000, None, Some(2_000), false);
        let dirty = t.take_dirty();
        assert_eq!(dirty.len(), 3);
        let (_, _, m) = dirty[0];
        assert_eq!(
            (m.count, m.bad_count, m.min, m.max, m.first, m.last),
            (2, 1, 1.0, 3.0, 1.0, 3.0)
        );
        assert_eq!(m.avg(), Some(2.0));
        // Late, at a new timestamp, in the open buckets: merged.
        t.add(1, 1_500, Some(9.0), Some(3_000), false);
        let dirty = t.take_dirty();
        assert_eq!(dirty.len(), 3);
        let (_, _, m) = dirty[0];
        assert_eq!((m.count, m.max, m.first, m.last), (3, 9.0, 1.0, 3.0));
        // Late and replacing a stored value: recompute.
        t.add(1, 2_000, Some(0.5), Some(3_000), true);
        assert_eq!(t.take_recompute().len(), 3);
        assert!(t.take_dirty().is_empty());
        // A bucket not seen since start but not newer than the stored data:
        // the value is merged into the stored row at commit.
        let mut t = RollupTracker::default();
        t.add(1, 61_000, Some(1.0), Some(60_500), false);
        assert!(t.take_recompute().is_empty());
        let mut deltas: Vec<(RollupLevel, i64, u64)> = t
            .take_deltas()
            .into_iter()
            .map(|(_, level, row)| (level, row.bucket_ms, row.count))
            .collect();
        deltas.sort();
        assert_eq!(
            deltas,
            vec![
                (RollupLevel::TenSeconds, 60_000, 1),
                (RollupLevel::Minute, 60_000, 1),
                (RollupLevel::Hour, 0, 1)
            ]
        );
    }

    #[test]
    fn buckets_closed_within_a_batch_are_still_written() {
        let mut t = RollupTracker::default();
        // Minutes 0, 1 and 2 in one batch, in order.
        t.add(1, 1_000, Some(1.0), None, false);
        t.add(1, 61_000, Some(2.0), Some(1_000), false);
        t.add(1, 62_000, Some(3.0), Some(61_000), false);
        t.add(1, 121_000, Some(4.0), Some(62_000), false);
        let mut minutes: Vec<(i64, u64, f64)> = t
            .take_dirty()
            .into_iter()
            .filter(|(_, level, _)| *level == RollupLevel::Minute)
            .map(|(_, _, r)| (r.bucket_ms, r.count, r.sum))
            .collect();
        minutes.sort_by_key(|m| m.0);
        assert_eq!(
            minutes,
            vec![(0, 1, 1.0), (60_000, 2, 5.0), (120_000, 1, 4.0)]
        );
        // A written bucket that then gets a late value at a new timestamp
        // merges it into the stored row (a delta); one whose value is
        // replaced is recomputed instead.
        t.add(1, 181_000, Some(5.0), Some(121_000), false);
        t.add(1, 122_000, Some(6.0), Some(181_000), false);
        let deltas: Vec<(RollupLevel, i64, u64, f64)> = t
            .take_deltas()
            .into_iter()
            .filter(|(_, level, _)| *level == RollupLevel::Minute)
            .map(|(_, level, r)| (level, r.bucket_ms, r.count, r.sum))
            .collect();
        assert_eq!(deltas, vec![(RollupLevel::Minute, 120_000, 1, 6.0)]);
        t.take_dirty();
        t.add(1, 241_000, Some(5.0), Some(181_000), false);
        t.add(1, 182_000, Some(6.0), Some(241_000), false);
        t.add(1, 122_000, Some(7.0), Some(241_000), true);
        assert_eq!(
            t.take_recompute(),
            vec![
                (1, RollupLevel::TenSeconds, 120_000),
                (1, RollupLevel::Minute, 120_000),
                (1, RollupLevel::Hour, 0)
            ]
        );
        let written: Vec<i64> = t
            .take_dirty()
            .into_iter()
            .map(|(_, _, r)| r.bucket_ms)
            .collect();
        assert!(!written.contains(&120_000), "{written:?}");
        let deltas: Vec<(RollupLevel, i64)> = t
            .take_deltas()
            .into_iter()
            .map(|(_, level, r)| (level, r.bucket_ms))
            .collect();
        assert!(
            deltas.contains(&(RollupLevel::Minute, 180_000)),
            "{deltas:?}"
        );
    }

    #[test]
    fn merge_keeps_first_and_last_by_time() {
        let mut a = RollupRow::empty(0);
        a.add(10, Some(5.0));
        let mut b = RollupRow::empty(0);
        b.add(5, Some(1.0));
        b.add(20, Some(7.0));
        a.merge(&b);
        assert_eq!(
            (a.count, a.first, a.last, a.min, a.max),
            (3, 1.0, 7.0, 1.0, 7.0)
        );
    }
}
