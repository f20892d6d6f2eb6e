//! As-of queries: the whole (sub)namespace as it stood at one instant (the
//! latest value at or before it of every readable series under a filter),
//! and the latest stored values.

use gantry_model::{Quality, Value};
use serde::Serialize;

use crate::access::ReadAccess;
use crate::error::HistorianError;
use crate::point::{serialize_quality, serialize_value};
use crate::read::HistoryRead;

/// The namespace as of `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub at_ms: i64,
    /// By topic; series with no value at or before `at_ms` are left out.
    pub values: Vec<SnapshotValue>,
}

/// One series' value in force at the snapshot instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotValue {
    pub topic: String,
    /// When the value was sampled (at or before the snapshot instant).
    pub ts_ms: i64,
    #[serde(serialize_with = "serialize_value")]
    pub value: Value,
    #[serde(serialize_with = "serialize_quality")]
    pub quality: Quality,
    /// How old the value was at the snapshot instant (`at_ms - ts_ms`).
    pub age_ms: i64,
}

/// The latest value at or before `at_ms` of every readable series matching
/// `filter`, read in one call to [`HistoryRead::snapshot`].
pub fn snapshot(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    filter: &str,
    at_ms: i64,
) -> Result<Snapshot, HistorianError> {
    super::in_read(reader, |r| snapshot_in(r, access, filter, at_ms))
}

fn snapshot_in(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    filter: &str,
    at_ms: i64,
) -> Result<Snapshot, HistorianError> {
    let series = super::readable_series(reader, access, filter)?;
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let rows = if ids.is_empty() {
        Vec::new()
    } else {
        reader.snapshot(&ids, at_ms)?
    };
    // Topics are moved, not copied, into the answer. Stores usually return
    // rows in the order asked, which pairs them with their series without a
    // lookup; otherwise by id.
    let in_order = {
        let mut j = 0;
        rows.iter().all(|(id, _)| {
            while j < series.len() && series[j].id != *id {
                j += 1;
            }
            j += 1;
            j <= series.len()
        })
    };
    let mut topics: Vec<(i64, Option<String>)> =
        series.into_iter().map(|s| (s.id, Some(s.topic))).collect();
    let slot: Option<crate::point::IdMap<usize>> = (!in_order).then(|| {
        topics
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect()
    });
    let mut cursor = 0;
    let mut values: Vec<SnapshotValue> = Vec::with_capacity(rows.len());
    for (id, p) in rows {
        let i = match &slot {
            Some(map) => map.get(&id).copied(),
            None => {
                while cursor < topics.len() && topics[cursor].0 != id {
                    cursor += 1;
                }
                (cursor < topics.len()).then_some(cursor)
            }
        };
        let Some(topic) = i.and_then(|i| topics[i].1.take()) else {
            continue;
        };
        if p.ts_ms > at_ms {
            continue;
        }
        values.push(SnapshotValue {
            topic,
            ts_ms: p.ts_ms,
            age_ms: at_ms.saturating_sub(p.ts_ms),
            value: p.value,
            quality: p.quality,
        });
    }
    if !values.is_sorted_by(|a, b| a.topic <= b.topic) {
        values.sort_by(|a, b| a.topic.cmp(&b.topic));
    }
    Ok(Snapshot { at_ms, values })
}

/// The latest stored value of every readable series matching `filter`.
/// `at_ms` is the newest of their timestamps (0 when there are none), and
/// each `age_ms` is relative to it.
pub fn last(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    filter: &str,
) -> Result<Snapshot, HistorianError> {
    let mut snap = snapshot(reader, access, filter, i64::MAX)?;
    snap.at_ms = snap.values.iter().map(|v| v.ts_ms).max().unwrap_or(0);
    for v in &mut snap.values {
        v.age_ms = snap.at_ms - v.ts_ms;
    }
    Ok(snap)
}
