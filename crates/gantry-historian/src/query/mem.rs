//! An in-memory [`HistoryRead`] for the query layer's unit tests: rollups are
//! folded from the raw values on demand (so they are right by construction),
//! and calls are counted.

use std::collections::BTreeMap;

use gantry_model::{Quality, Value};

use crate::error::HistorianError;
use crate::point::{Gap, PointRow, SeriesInfo, ValueType, numeric};
use crate::read::HistoryRead;
use crate::rollup::{RollupLevel, RollupRow};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Calls {
    pub points: usize,
    pub rollups: usize,
}

#[derive(Debug, Default)]
pub struct MemStore {
    /// Topic → id, in topic order.
    topics: BTreeMap<String, i64>,
    series: BTreeMap<i64, (ValueType, BTreeMap<i64, PointRow>)>,
    pub gaps: Vec<Gap>,
    pub calls: Calls,
}

impl MemStore {
    /// Stores a value; a repeated timestamp replaces the earlier value.
    pub fn push(&mut self, topic: &str, ts_ms: i64, value: Value, quality: Quality) {
        let next = self.topics.len() as i64 + 1;
        let id = *self.topics.entry(topic.to_owned()).or_insert(next);
        let entry = self
            .series
            .entry(id)
            .or_insert_with(|| (ValueType::of(&value), BTreeMap::new()));
        entry.0 = ValueType::of(&value);
        entry.1.insert(
            ts_ms,
            PointRow {
                ts_ms,
                value,
                quality,
            },
        );
    }

    fn rows(&self, id: i64) -> impl Iterator<Item = &PointRow> {
        self.series
            .get(&id)
            .into_iter()
            .flat_map(|(_, rows)| rows.values())
    }
}

impl HistoryRead for MemStore {
    fn series_matching(&mut self, filter: &str) -> Result<Vec<SeriesInfo>, HistorianError> {
        Ok(self
            .topics
            .iter()
            .filter(|(t, _)| gantry_codec::topic::matches(filter, t))
            .map(|(t, id)| {
                let (value_type, rows) = &self.series[id];
                SeriesInfo {
                    id: *id,
                    topic: t.clone(),
                    value_type: *value_type,
                    first_ms: rows.keys().next().copied(),
                    last_ms: rows.keys().next_back().copied(),
                }
            })
            .collect())
    }

    fn points(
        &mut self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(PointRow) -> bool,
    ) -> Result<(), HistorianError> {
        self.calls.points += 1;
        for p in self
            .rows(series_id)
            .filter(|p| p.ts_ms >= from_ms && p.ts_ms < to_ms)
        {
            if !visit(p.clone()) {
                break;
            }
        }
        Ok(())
    }

    fn last_at_or_before(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        Ok(self
            .rows(series_id)
            .filter(|p| p.ts_ms <= at_ms)
            .last()
            .cloned())
    }

    fn first_at_or_after(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        Ok(self.rows(series_id).find(|p| p.ts_ms >= at_ms).cloned())
    }

    fn rollups(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RollupRow>, HistorianError> {
        self.calls.rollups += 1;
        let mut out: BTreeMap<i64, RollupRow> = BTreeMap::new();
        for p in self.rows(series_id) {
            let bucket = level.bucket_of(p.ts_ms);
            if bucket < from_ms || bucket >= to_ms || matches!(p.value, Value::Text(_)) {
                continue;
            }
            let v = if p.quality == Quality::Bad {
                None
            } else {
                numeric(&p.value)
            };
            out.entry(bucket)
                .or_insert_with(|| RollupRow::empty(bucket))
                .add(p.ts_ms, v);
        }
        Ok(out.into_values().collect())
    }

    fn snapshot(
        &mut self,
        series: &[i64],
        at_ms: i64,
    ) -> Result<Vec<(i64, PointRow)>, HistorianError> {
        let mut out = Vec::new();
        for id in series {
            if let Some(p) = self.last_at_or_before(*id, at_ms)? {
                out.push((*id, p));
            }
        }
        Ok(out)
    }

    fn gaps(&mut self, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, HistorianError> {
        Ok(self
            .gaps
            .iter()
            .filter(|g| g.to_ms >= from_ms && g.from_ms < to_ms)
            .cloned()
            .collect())
    }

    fn count_points(
        &mut self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, HistorianError> {
        Ok(series
            .iter()
            .map(|id| {
                self.rows(*id)
                    .filter(|p| p.ts_ms >= from_ms && p.ts_ms < to_ms)
                    .count() as u64
            })
            .sum())
    }
}
