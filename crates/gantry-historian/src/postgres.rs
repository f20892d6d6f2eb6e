//! PostgreSQL / TimescaleDB store (being built).

use std::path::Path;

use crate::config::{HistorianConfig, PostgresConfig};
use crate::error::HistorianError;
use crate::point::{Gap, Point, PointRow, SeriesInfo};
use crate::read::HistoryRead;
use crate::rollup::{RollupLevel, RollupRow};
use crate::writer::Sink;

pub struct PostgresSink;

impl Sink for PostgresSink {
    fn write(&mut self, _points: &[Point], _gaps: &[Gap]) -> Result<(), HistorianError> {
        Err(HistorianError::Postgres("not built yet".into()))
    }
    fn maintain(&mut self, _now_ms: i64) -> Result<(), HistorianError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), HistorianError> {
        Ok(())
    }
}

pub fn start(
    _pg: &PostgresConfig,
    _data_dir: &Path,
    _config: &HistorianConfig,
) -> Result<(PostgresSink, Box<dyn FnOnce() + Send>), HistorianError> {
    Err(HistorianError::Postgres("not built yet".into()))
}

pub struct PostgresReader;

impl PostgresReader {
    pub fn connect(_pg: &PostgresConfig) -> Result<PostgresReader, HistorianError> {
        Err(HistorianError::Postgres("not built yet".into()))
    }
}

impl HistoryRead for PostgresReader {
    fn series_matching(&mut self, _filter: &str) -> Result<Vec<SeriesInfo>, HistorianError> {
        unimplemented!()
    }
    fn points(&mut self, _s: i64, _f: i64, _t: i64, _v: &mut dyn FnMut(PointRow) -> bool) -> Result<(), HistorianError> {
        unimplemented!()
    }
    fn last_at_or_before(&mut self, _s: i64, _a: i64) -> Result<Option<PointRow>, HistorianError> {
        unimplemented!()
    }
    fn first_at_or_after(&mut self, _s: i64, _a: i64) -> Result<Option<PointRow>, HistorianError> {
        unimplemented!()
    }
    fn rollups(&mut self, _l: RollupLevel, _s: i64, _f: i64, _t: i64) -> Result<Vec<RollupRow>, HistorianError> {
        unimplemented!()
    }
    fn snapshot(&mut self, _s: &[i64], _a: i64) -> Result<Vec<(i64, PointRow)>, HistorianError> {
        unimplemented!()
    }
    fn gaps(&mut self, _f: i64, _t: i64) -> Result<Vec<Gap>, HistorianError> {
        unimplemented!()
    }
    fn count_points(&mut self, _s: &[i64], _f: i64, _t: i64) -> Result<u64, HistorianError> {
        unimplemented!()
    }
}
