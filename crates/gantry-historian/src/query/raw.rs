//! Raw range queries: the stored values of every readable series matching a
//! filter in `[from, to)`, with an optional per-series limit, and the gaps
//! recorded in the range.

use serde::Serialize;

use crate::access::ReadAccess;
use crate::error::HistorianError;
use crate::point::{Gap, PointRow, ValueType};
use crate::read::HistoryRead;

/// Stored values of the series matching `filter` (an exact topic or an MQTT
/// filter) in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawQuery {
    pub filter: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// At most this many values per series (the earliest ones); the series is
    /// then marked `truncated` if it has more.
    pub limit: Option<usize>,
}

/// One series' values in the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoints {
    pub topic: String,
    pub value_type: ValueType,
    pub points: Vec<PointRow>,
    /// More values exist in the range than the limit allowed.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawResult {
    /// By topic; series with no values in the range are included (empty).
    pub series: Vec<SeriesPoints>,
    /// Recorded gaps overlapping the range: values may be missing there.
    pub gaps: Vec<Gap>,
}

/// Runs a raw range query.
pub fn raw(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    query: &RawQuery,
) -> Result<RawResult, HistorianError> {
    super::in_read(reader, |r| raw_in(r, access, query))
}

fn raw_in(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    query: &RawQuery,
) -> Result<RawResult, HistorianError> {
    super::check_range(query.from_ms, query.to_ms)?;
    let infos = super::readable_series(reader, access, &query.filter)?;
    let mut series = Vec::with_capacity(infos.len());
    for info in infos {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut points = Vec::new();
        let mut truncated = false;
        reader.points(info.id, query.from_ms, query.to_ms, &mut |p| {
            if points.len() >= limit {
                truncated = true;
                return false;
            }
            points.push(p);
            true
        })?;
        series.push(SeriesPoints {
            topic: info.topic,
            value_type: info.value_type,
            points,
            truncated,
        });
    }
    let gaps = super::gaps_in(reader, query.from_ms, query.to_ms)?;
    Ok(RawResult { series, gaps })
}
