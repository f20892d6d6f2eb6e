//! What a history store answers: the primitive reads every query type is
//! built from. The SQLite and PostgreSQL stores implement it; [`crate::query`]
//! does the rest in one place, so both backends give the same answers.

use crate::error::HistorianError;
use crate::point::{Gap, PointRow, SeriesInfo};
use crate::rollup::{RollupLevel, RollupRow};

/// Read access to stored history. Time ranges are half-open `[from, to)` in
/// Unix milliseconds; rows come in ascending time order.
pub trait HistoryRead: Send {
    /// Starts one consistent read spanning the calls until [`end_read`]
    /// (SQLite: one read transaction, so the many small reads of a query
    /// neither pay for a transaction each nor see a commit half way).
    /// Calls nest; only the outermost pair counts.
    ///
    /// [`end_read`]: HistoryRead::end_read
    fn begin_read(&mut self) -> Result<(), HistorianError> {
        Ok(())
    }

    fn end_read(&mut self) {}

    /// Series whose topic matches the MQTT filter (`acme/dallas/#`, an exact
    /// topic, or with `+`), ordered by topic.
    fn series_matching(&mut self, filter: &str) -> Result<Vec<SeriesInfo>, HistorianError>;

    /// Raw values of one series in `[from, to)`, passed to `visit` in time
    /// order; `visit` returns false to stop early.
    fn points(
        &mut self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(PointRow) -> bool,
    ) -> Result<(), HistorianError>;

    /// Raw values of one series in each of `spans` (half-open, sorted and
    /// disjoint), in time order. An aggregate's cover asks for many short
    /// spans (its bucket edges); stores may answer them in fewer round trips
    /// than one [`points`](HistoryRead::points) call each, which is the
    /// default.
    fn points_in_spans(
        &mut self,
        series_id: i64,
        spans: &[(i64, i64)],
        visit: &mut dyn FnMut(PointRow),
    ) -> Result<(), HistorianError> {
        for &(from_ms, to_ms) in spans {
            self.points(series_id, from_ms, to_ms, &mut |p| {
                visit(p);
                true
            })?;
        }
        Ok(())
    }

    /// The latest value at or before `at_ms`.
    fn last_at_or_before(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError>;

    /// The first value at or after `at_ms`.
    fn first_at_or_after(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError>;

    /// Rollup rows of one series whose bucket starts in `[from, to)`.
    fn rollups(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RollupRow>, HistorianError>;

    /// Like [`rollups`](HistoryRead::rollups), for callers that need only
    /// count, bad_count, min, max and sum: a store may leave the first and
    /// last fields empty (first at `i64::MAX`, last at `i64::MIN`) and read
    /// fewer columns. Rows are passed to `visit` in bucket order.
    fn rollup_stats(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&RollupRow),
    ) -> Result<(), HistorianError> {
        for row in self.rollups(level, series_id, from_ms, to_ms)? {
            visit(&row);
        }
        Ok(())
    }

    /// The latest value at or before `at_ms` of each series in `series`
    /// (series with none are left out). Backends answer this in one pass.
    fn snapshot(
        &mut self,
        series: &[i64],
        at_ms: i64,
    ) -> Result<Vec<(i64, PointRow)>, HistorianError>;

    /// Recorded gaps overlapping `[from, to)`.
    fn gaps(&mut self, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, HistorianError>;

    /// Number of raw values in `[from, to)` over the given series (for export
    /// progress).
    fn count_points(
        &mut self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, HistorianError>;
}

/// For stores that list series by topic range: the literal part of a filter before its first wildcard, and the smallest
/// string greater than every string with that prefix. A trailing `/#` also
/// matches its parent level (`a/#` matches `a`), so its `/` is left out.
pub(crate) fn prefix_range(filter: &str) -> (String, Option<String>) {
    let end = filter.find(['+', '#']).unwrap_or(filter.len());
    let mut prefix = &filter[..end];
    if filter[end..].starts_with('#') {
        prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    }
    let prefix = prefix.to_owned();
    let mut upper = prefix.clone().into_bytes();
    while let Some(last) = upper.pop() {
        if last < 0x7f {
            upper.push(last + 1);
            return (prefix, String::from_utf8(upper).ok());
        }
    }
    (prefix, None)
}

/// An MQTT filter prepared for matching many topics: the common shapes (`#`,
/// `a/b/#`, an exact topic) without splitting either side into levels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FilterMatcher<'a> {
    /// `#`: every topic except `$…` ones.
    All,
    /// `P/#` with no wildcard in `P`: `P` itself and everything below it.
    Subtree(&'a str),
    /// No wildcard.
    Exact(&'a str),
    /// Anything else.
    General(&'a str),
}

impl<'a> FilterMatcher<'a> {
    pub(crate) fn new(filter: &'a str) -> Self {
        if filter == "#" {
            return FilterMatcher::All;
        }
        match filter.strip_suffix("/#") {
            Some(p) if !p.contains(['+', '#']) => FilterMatcher::Subtree(p),
            _ if !filter.contains(['+', '#']) => FilterMatcher::Exact(filter),
            _ => FilterMatcher::General(filter),
        }
    }

    pub(crate) fn matches(&self, topic: &str) -> bool {
        match *self {
            FilterMatcher::All => !topic.starts_with('$'),
            FilterMatcher::Subtree(p) => {
                topic.starts_with(p)
                    && (topic.len() == p.len() || topic.as_bytes()[p.len()] == b'/')
            }
            FilterMatcher::Exact(t) => topic == t,
            FilterMatcher::General(f) => gantry_codec::topic::matches(f, topic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FilterMatcher, prefix_range};

    #[test]
    fn prepared_filters_match_as_mqtt_filters_do() {
        let filters = [
            "#", "a/#", "a/b/#", "a/+/c", "a/b", "+/#", "a/+", "$SYS/#", "a/b/c/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/bc", "ab", "a/b/c/d", "b/b/c", "$SYS/x", "a//c", "",
        ];
        for f in filters {
            let m = FilterMatcher::new(f);
            for t in topics {
                assert_eq!(
                    m.matches(t),
                    gantry_codec::topic::matches(f, t),
                    "filter {f:?} topic {t:?}"
                );
            }
        }
    }

    #[test]
    fn prefix_ranges_include_the_parent_of_a_trailing_hash() {
        assert_eq!(
            prefix_range("acme/dallas/#"),
            ("acme/dallas".into(), Some("acme/dallat".into()))
        );
        assert_eq!(prefix_range("#"), (String::new(), None));
        assert_eq!(prefix_range("a/+/b"), ("a/".into(), Some("a0".into())));
        assert_eq!(prefix_range("a/b"), ("a/b".into(), Some("a/c".into())));
    }
}
