//! Reads history from PostgreSQL over one synchronous connection with
//! prepared statements, with the same semantics as the SQLite reader.
//!
//! A reader does not reconnect: open a new one after the database restarted
//! (the historian opens one per query). Like every synchronous `postgres`
//! client it must not be used from inside a tokio async context.

use postgres::types::ToSql;
use postgres::{Client, Row, Statement};

use crate::config::PostgresConfig;
use crate::error::HistorianError;
use crate::point::{
    Gap, IdMap, PointRow, SeriesInfo, ValueType, quality_from_code, value_from_columns,
};
use crate::read::{FilterMatcher, HistoryRead, prefix_range};
use crate::rollup::{RollupLevel, RollupRow};

use super::Target;
use super::schema::{self, SCHEMA_VERSION};

/// Rows fetched at a time while visiting a range (so a visitor that stops
/// early does not pull the whole range over the network).
const FETCH_ROWS: i32 = 5_000;

struct Statements {
    series_exact: Statement,
    series_range: Statement,
    value_type: Statement,
    points: Statement,
    last_at_or_before: Statement,
    first_at_or_after: Statement,
    rollup_10s: Statement,
    rollup_1m: Statement,
    rollup_1h: Statement,
    snapshot: Statement,
    gaps: Statement,
    count: Statement,
}

/// [`HistoryRead`] over PostgreSQL.
pub struct PostgresReader {
    client: Client,
    target: Target,
    stmts: Statements,
    /// Series types, for decoding values.
    types: IdMap<ValueType>,
}

const ROLLUPS: &str = "SELECT bucket_ms, count, bad_count, min, max, sum, first_ms, first, last_ms, last FROM {s}.{table} \
     WHERE series_id = $1 AND bucket_ms >= $2 AND bucket_ms < $3 ORDER BY bucket_ms";

impl PostgresReader {
    /// Connects and checks that the schema holds history tables of a version
    /// this Gantry reads.
    pub fn connect(pg: &PostgresConfig) -> Result<PostgresReader, HistorianError> {
        let target = Target::new(pg)?;
        let mut client = target.connect()?;
        match schema::version(&mut client, &target)? {
            Some(SCHEMA_VERSION) => {}
            None => {
                return Err(HistorianError::Postgres(format!(
                    "{}: schema {} has no history tables yet (has Gantry run with the historian on?)",
                    target.describe(),
                    target.schema
                )));
            }
            Some(found) => {
                return Err(HistorianError::Postgres(format!(
                    "{}: schema {} has history schema version {found}; this Gantry reads version {SCHEMA_VERSION}",
                    target.describe(),
                    target.schema
                )));
            }
        }
        let stmts = Self::prepare(&mut client, &target)?;
        Ok(PostgresReader {
            client,
            target,
            stmts,
            types: IdMap::default(),
        })
    }

    fn prepare(client: &mut Client, target: &Target) -> Result<Statements, HistorianError> {
        let e = target.err("prepare the history queries");
        let mut prepare = |sql: &str| client.prepare(&target.sql(sql)).map_err(&e);
        Ok(Statements {
            series_exact: prepare(
                "SELECT id, topic, value_type, first_ms, last_ms FROM {s}.series WHERE topic = $1",
            )?,
            series_range: prepare(
                "SELECT id, topic, value_type, first_ms, last_ms FROM {s}.series \
                 WHERE topic COLLATE \"C\" >= $1 AND ($2::text IS NULL OR topic COLLATE \"C\" < $2) \
                 ORDER BY topic COLLATE \"C\"",
            )?,
            value_type: prepare("SELECT value_type FROM {s}.series WHERE id = $1")?,
            points: prepare(
                "SELECT ts_ms, num, txt, quality FROM {s}.points \
                 WHERE series_id = $1 AND ts_ms >= $2 AND ts_ms < $3 ORDER BY ts_ms",
            )?,
            last_at_or_before: prepare(
                "SELECT ts_ms, num, txt, quality FROM {s}.points \
                 WHERE series_id = $1 AND ts_ms <= $2 ORDER BY ts_ms DESC LIMIT 1",
            )?,
            first_at_or_after: prepare(
                "SELECT ts_ms, num, txt, quality FROM {s}.points \
                 WHERE series_id = $1 AND ts_ms >= $2 ORDER BY ts_ms LIMIT 1",
            )?,
            rollup_10s: prepare(&ROLLUPS.replace("{table}", RollupLevel::TenSeconds.table()))?,
            rollup_1m: prepare(&ROLLUPS.replace("{table}", RollupLevel::Minute.table()))?,
            rollup_1h: prepare(&ROLLUPS.replace("{table}", RollupLevel::Hour.table()))?,
            snapshot: prepare(
                "SELECT q.id, p.ts_ms, p.num, p.txt, p.quality, s.value_type \
                 FROM unnest($1::int8[]) WITH ORDINALITY AS q(id, ord) \
                 JOIN LATERAL (SELECT ts_ms, num, txt, quality FROM {s}.points \
                               WHERE series_id = q.id AND ts_ms <= $2 ORDER BY ts_ms DESC LIMIT 1) p ON true \
                 LEFT JOIN {s}.series s ON s.id = q.id \
                 ORDER BY q.ord",
            )?,
            gaps: prepare(
                "SELECT from_ms, to_ms, lost, reason FROM {s}.gaps WHERE to_ms >= $1 AND from_ms < $2 ORDER BY from_ms, id",
            )?,
            count: prepare(
                "SELECT count(*) FROM unnest($1::int8[]) AS q(id) \
                 JOIN {s}.points p ON p.series_id = q.id AND p.ts_ms >= $2 AND p.ts_ms < $3",
            )?,
        })
    }

    fn value_type(&mut self, series_id: i64) -> Result<ValueType, HistorianError> {
        if let Some(t) = self.types.get(&series_id) {
            return Ok(*t);
        }
        let e = self.target.err("read a series type");
        let t: Option<String> = match self
            .client
            .query_opt(&self.stmts.value_type, &[&series_id])
            .map_err(&e)?
        {
            Some(row) => row.try_get(0).map_err(&e)?,
            None => None,
        };
        let t = t
            .and_then(|t| ValueType::parse(&t))
            .unwrap_or(ValueType::Float);
        self.types.insert(series_id, t);
        Ok(t)
    }

    /// One point query returning at most one row.
    fn one_point(
        &mut self,
        series_id: i64,
        at_ms: i64,
        first_after: bool,
    ) -> Result<Option<PointRow>, HistorianError> {
        let value_type = self.value_type(series_id)?;
        let e = self.target.err("read history");
        let stmt = if first_after {
            &self.stmts.first_at_or_after
        } else {
            &self.stmts.last_at_or_before
        };
        match self
            .client
            .query_opt(stmt, &[&series_id, &at_ms])
            .map_err(&e)?
        {
            Some(row) => decode(&row, 0, value_type).map(Some).map_err(&e),
            None => Ok(None),
        }
    }
}

/// Decodes `ts_ms, num, txt, quality` starting at column `start`.
fn decode(row: &Row, start: usize, value_type: ValueType) -> Result<PointRow, postgres::Error> {
    let ts_ms: i64 = row.try_get(start)?;
    let num: Option<f64> = row.try_get(start + 1)?;
    let txt: Option<String> = row.try_get(start + 2)?;
    let quality: i16 = row.try_get(start + 3)?;
    Ok(PointRow {
        ts_ms,
        value: value_from_columns(value_type, num, None, txt),
        quality: quality_from_code(i64::from(quality)),
    })
}

fn series_row(row: &Row) -> Result<SeriesInfo, postgres::Error> {
    let t: String = row.try_get(2)?;
    Ok(SeriesInfo {
        id: row.try_get(0)?,
        topic: row.try_get(1)?,
        value_type: ValueType::parse(&t).unwrap_or(ValueType::Float),
        first_ms: row.try_get(3)?,
        last_ms: row.try_get(4)?,
    })
}

impl HistoryRead for PostgresReader {
    fn series_matching(&mut self, filter: &str) -> Result<Vec<SeriesInfo>, HistorianError> {
        let e = self.target.err("find series");
        let mut out = Vec::new();
        if !filter.contains(['+', '#']) {
            if let Some(row) = self
                .client
                .query_opt(&self.stmts.series_exact, &[&filter])
                .map_err(&e)?
            {
                out.push(series_row(&row).map_err(&e)?);
            }
        } else {
            let (lower, upper) = prefix_range(filter);
            let matcher = FilterMatcher::new(filter);
            for row in self
                .client
                .query(&self.stmts.series_range, &[&lower, &upper])
                .map_err(&e)?
            {
                let s = series_row(&row).map_err(&e)?;
                if matcher.matches(&s.topic) {
                    out.push(s);
                }
            }
        }
        for s in &out {
            self.types.insert(s.id, s.value_type);
        }
        Ok(out)
    }

    fn points(
        &mut self,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(PointRow) -> bool,
    ) -> Result<(), HistorianError> {
        let value_type = self.value_type(series_id)?;
        let e = self.target.err("read history");
        let mut tx = self
            .client
            .build_transaction()
            .read_only(true)
            .start()
            .map_err(&e)?;
        let portal = tx
            .bind(&self.stmts.points, &[&series_id, &from_ms, &to_ms])
            .map_err(&e)?;
        'fetch: loop {
            let rows = tx.query_portal(&portal, FETCH_ROWS).map_err(&e)?;
            let done = rows.len() < FETCH_ROWS as usize;
            for row in rows {
                if !visit(decode(&row, 0, value_type).map_err(&e)?) {
                    break 'fetch;
                }
            }
            if done {
                break;
            }
        }
        drop(portal);
        tx.commit().map_err(&e)
    }

    fn last_at_or_before(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        self.one_point(series_id, at_ms, false)
    }

    fn first_at_or_after(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        self.one_point(series_id, at_ms, true)
    }

    fn rollups(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RollupRow>, HistorianError> {
        let e = self.target.err("read rollups");
        let stmt = match level {
            RollupLevel::TenSeconds => &self.stmts.rollup_10s,
            RollupLevel::Minute => &self.stmts.rollup_1m,
            RollupLevel::Hour => &self.stmts.rollup_1h,
        };
        let rows = self
            .client
            .query(stmt, &[&series_id, &from_ms, &to_ms])
            .map_err(&e)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let decode = || -> Result<RollupRow, postgres::Error> {
                let mut row = RollupRow::empty(r.try_get(0)?);
                let count: i64 = r.try_get(1)?;
                row.count = count.max(0) as u64;
                row.bad_count = r.try_get::<_, i64>(2)?.max(0) as u64;
                if count > 0 {
                    row.min = r.try_get::<_, Option<f64>>(3)?.unwrap_or(row.min);
                    row.max = r.try_get::<_, Option<f64>>(4)?.unwrap_or(row.max);
                    row.sum = r.try_get::<_, Option<f64>>(5)?.unwrap_or(row.sum);
                    row.first_ms = r.try_get::<_, Option<i64>>(6)?.unwrap_or(row.first_ms);
                    row.first = r.try_get::<_, Option<f64>>(7)?.unwrap_or(row.first);
                    row.last_ms = r.try_get::<_, Option<i64>>(8)?.unwrap_or(row.last_ms);
                    row.last = r.try_get::<_, Option<f64>>(9)?.unwrap_or(row.last);
                }
                Ok(row)
            };
            out.push(decode().map_err(&e)?);
        }
        Ok(out)
    }

    /// One query for all series: the latest row at or before `at_ms` of
    /// each, in the order asked.
    fn snapshot(
        &mut self,
        series: &[i64],
        at_ms: i64,
    ) -> Result<Vec<(i64, PointRow)>, HistorianError> {
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let e = self.target.err("read a snapshot");
        let ids: Vec<i64> = series.to_vec();
        let params: [&(dyn ToSql + Sync); 2] = [&ids, &at_ms];
        let rows = self
            .client
            .query(&self.stmts.snapshot, &params)
            .map_err(&e)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get(0).map_err(&e)?;
            let value_type = match row.try_get::<_, Option<String>>(5).map_err(&e)? {
                Some(t) => ValueType::parse(&t).unwrap_or(ValueType::Float),
                None => ValueType::Float,
            };
            self.types.insert(id, value_type);
            out.push((id, decode(&row, 1, value_type).map_err(&e)?));
        }
        Ok(out)
    }

    fn gaps(&mut self, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, HistorianError> {
        let e = self.target.err("read gaps");
        let rows = self
            .client
            .query(&self.stmts.gaps, &[&from_ms, &to_ms])
            .map_err(&e)?;
        rows.iter()
            .map(|r| {
                Ok(Gap {
                    from_ms: r.try_get(0)?,
                    to_ms: r.try_get(1)?,
                    lost: r.try_get::<_, i64>(2)?.max(0) as u64,
                    reason: r.try_get(3)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(&e)
    }

    fn count_points(
        &mut self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, HistorianError> {
        if series.is_empty() {
            return Ok(0);
        }
        let e = self.target.err("count history");
        let ids: Vec<i64> = series.to_vec();
        let n: i64 = self
            .client
            .query_one(&self.stmts.count, &[&ids, &from_ms, &to_ms])
            .map_err(&e)?
            .try_get(0)
            .map_err(&e)?;
        Ok(n.max(0) as u64)
    }
}
