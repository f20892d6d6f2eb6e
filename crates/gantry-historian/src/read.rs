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

#[cfg(test)]
mod tests {
    use super::prefix_range;

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
