//! The query layer: the historian's four query types, built once on the
//! primitive reads of [`HistoryRead`] so that every backend gives the same
//! answers.
//!
//! - [`raw()`]: stored values of one or many series in a range
//!   ([module](mod@raw)).
//! - [`aggregate()`]: count, min, max, avg, first, last, time-weighted
//!   average and time in state per bucket, from rollups where they cover
//!   whole buckets and raw values for the rest ([module](mod@aggregate),
//!   [`cover`]).
//! - [`snapshot()`] and [`last()`]: the whole (sub)namespace as of an
//!   instant ([module](mod@snapshot)).
//! - [`export()`]: raw values streamed as CSV or JSON
//!   ([module](mod@export)).
//!
//! Every query takes the caller's [`ReadAccess`]: series the caller may not
//! subscribe to are left out of wildcard queries, and asking for one such
//! topic by name is [`HistorianError::Denied`]. Ranges are half-open
//! `[from, to)` in Unix milliseconds.

pub mod aggregate;
pub mod cover;
pub mod export;
pub mod raw;
pub mod snapshot;

#[cfg(test)]
pub(crate) mod mem;

pub use aggregate::{
    Aggregate, AggregateQuery, AggregateResult, Bucket, MAX_BUCKETS, SeriesBuckets, aggregate,
    nice_bucket_ms,
};
pub use export::{ExportFormat, export};
pub use raw::{RawQuery, RawResult, SeriesPoints, raw};
pub use snapshot::{Snapshot, SnapshotValue, last, snapshot};

use crate::access::ReadAccess;
use crate::error::HistorianError;
use crate::point::{Gap, SeriesInfo};
use crate::read::HistoryRead;

/// True when the filter names one topic (no `+` or `#`).
fn is_exact(filter: &str) -> bool {
    !filter.contains(['+', '#'])
}

/// The series a query covers: those matching the (validated) filter that the
/// caller may read, ordered by topic. An exact topic the caller may not read
/// is an error naming it (even when it has no history, so that refusals do
/// not reveal what is stored); refused series under a wildcard are left out.
pub(crate) fn readable_series(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    filter: &str,
) -> Result<Vec<SeriesInfo>, HistorianError> {
    gantry_codec::topic::validate_topic_filter(filter).map_err(HistorianError::Query)?;
    if is_exact(filter) && !access.can_read(filter) {
        return Err(HistorianError::Denied {
            topic: filter.to_owned(),
            who: access.who(),
        });
    }
    let mut series = reader.series_matching(filter)?;
    let matcher = crate::read::FilterMatcher::new(filter);
    series.retain(|s| matcher.matches(&s.topic) && access.can_read(&s.topic));
    if !series.is_sorted_by(|a, b| a.topic <= b.topic) {
        series.sort_by(|a, b| a.topic.cmp(&b.topic));
    }
    Ok(series)
}

/// Checks a half-open range.
pub(crate) fn check_range(from_ms: i64, to_ms: i64) -> Result<(), HistorianError> {
    if from_ms >= to_ms {
        return Err(HistorianError::Query(format!(
            "the range must start before it ends: from {} ({from_ms}) is not before to {} ({to_ms})",
            crate::timefmt::format_rfc3339_ms(from_ms),
            crate::timefmt::format_rfc3339_ms(to_ms),
        )));
    }
    Ok(())
}

/// The recorded gaps that matter for `[from, to)`: those overlapping it, and
/// zero-length ones (a restart) inside it, by start. Backends may return a
/// superset; the rule is applied here, once.
pub(crate) fn gaps_in(
    reader: &mut dyn HistoryRead,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Gap>, HistorianError> {
    let mut gaps = reader.gaps(from_ms, to_ms)?;
    gaps.retain(|g| g.from_ms < to_ms && (g.to_ms > from_ms || g.from_ms >= from_ms));
    gaps.sort_by_key(|g| (g.from_ms, g.to_ms));
    Ok(gaps)
}

/// Runs one query as one consistent read of the store.
pub(crate) fn in_read<T>(
    reader: &mut dyn HistoryRead,
    f: impl FnOnce(&mut dyn HistoryRead) -> Result<T, HistorianError>,
) -> Result<T, HistorianError> {
    reader.begin_read()?;
    let result = f(&mut *reader);
    reader.end_read();
    result
}
