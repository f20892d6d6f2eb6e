//! Reads from the SQLite store over its own read-only connection; WAL mode
//! lets it read while the writer writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::HistorianError;
use crate::point::{Gap, PointRow, SeriesInfo, ValueType, quality_from_code, value_from_columns};
use crate::read::{HistoryRead, prefix_range};
use crate::rollup::{RollupLevel, RollupRow};

pub struct SqliteReader {
    conn: Connection,
    path: PathBuf,
    /// Series types, for decoding values.
    types: HashMap<i64, ValueType>,
    /// First and last stored timestamps of the series listed by
    /// `series_matching`, which let a snapshot skip series that are settled
    /// without reading their values.
    bounds: HashMap<i64, (Option<i64>, Option<i64>)>,
    /// Nesting depth of `begin_read`.
    read_depth: u32,
}

impl SqliteReader {
    pub fn open(path: &Path) -> Result<SqliteReader, HistorianError> {
        if !path.exists() {
            return Err(HistorianError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no history database here yet (has Gantry run with the historian on?)",
                ),
            });
        }
        let e = |source| HistorianError::sqlite(path, source);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(e)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(e)?;
        conn.pragma_update(None, "cache_size", -65_536).map_err(e)?;
        // Plans never depend on bound values: without this, SQLite re-plans a
        // statement each time a range bound is rebound (about 8 µs a call).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(e)?;
        // Read pages through a memory map: no system call and no copy per
        // page (the file is only ever replaced in place by SQLite itself).
        conn.pragma_update(None, "mmap_size", 1i64 << 32)
            .map_err(e)?;
        let found = super::schema::version(&conn).map_err(e)?;
        if found != super::SCHEMA_VERSION {
            return Err(HistorianError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: super::SCHEMA_VERSION,
            });
        }
        Ok(SqliteReader {
            conn,
            path: path.to_path_buf(),
            types: HashMap::new(),
            bounds: HashMap::new(),
            read_depth: 0,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistorianError + '_ {
        |source| HistorianError::sqlite(&self.path, source)
    }

    fn value_type(&mut self, series_id: i64) -> Result<ValueType, HistorianError> {
        if let Some(t) = self.types.get(&series_id) {
            return Ok(*t);
        }
        let t: Option<String> = self
            .conn
            .query_row(
                "SELECT value_type FROM series WHERE id = ?1",
                [series_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let t = t
            .and_then(|t| ValueType::parse(&t))
            .unwrap_or(ValueType::Float);
        self.types.insert(series_id, t);
        Ok(t)
    }
}

/// Decodes `num, txt, quality` at `start` of a row.
fn decode(
    row: &rusqlite::Row<'_>,
    start: usize,
    value_type: ValueType,
) -> rusqlite::Result<(gantry_model::Value, gantry_model::Quality)> {
    let (num, int) = match row.get_ref(start)? {
        SqlValue::Integer(i) => (None, Some(i)),
        SqlValue::Real(f) => (Some(f), None),
        _ => (None, None),
    };
    let txt: Option<String> = row.get(start + 1)?;
    let quality: i64 = row.get(start + 2)?;
    Ok((
        value_from_columns(value_type, num, int, txt),
        quality_from_code(quality),
    ))
}

fn series_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SeriesInfo> {
    let value_type = match r.get_ref(2)? {
        SqlValue::Text(t) => std::str::from_utf8(t).ok().and_then(ValueType::parse),
        _ => None,
    };
    Ok(SeriesInfo {
        id: r.get(0)?,
        topic: r.get(1)?,
        value_type: value_type.unwrap_or(ValueType::Float),
        first_ms: r.get(3)?,
        last_ms: r.get(4)?,
    })
}

impl SqliteReader {
    /// The value stored at exactly `ts_ms`.
    fn point_at(&mut self, series_id: i64, ts_ms: i64) -> Result<Option<PointRow>, HistorianError> {
        self.one_point(
            "SELECT ts_ms, num, txt, quality FROM points WHERE series_id = ?1 AND ts_ms = ?2",
            series_id,
            ts_ms,
        )
    }

    /// The one row (`ts_ms, num, txt, quality`) that `sql` selects for a
    /// series and a time, if any.
    fn one_point(
        &mut self,
        sql: &str,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        let value_type = self.value_type(series_id)?;
        let e = self.err();
        let mut stmt = self.conn.prepare_cached(sql).map_err(&e)?;
        stmt.query_row(params![series_id, at_ms], |r| {
            let (value, quality) = decode(r, 1, value_type)?;
            Ok(PointRow {
                ts_ms: r.get(0)?,
                value,
                quality,
            })
        })
        .optional()
        .map_err(&e)
    }
}

impl HistoryRead for SqliteReader {
    fn begin_read(&mut self) -> Result<(), HistorianError> {
        if self.read_depth == 0 {
            self.conn.execute_batch("BEGIN").map_err(self.err())?;
        }
        self.read_depth += 1;
        Ok(())
    }

    fn end_read(&mut self) {
        self.read_depth = self.read_depth.saturating_sub(1);
        if self.read_depth == 0 && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("COMMIT");
        }
    }

    fn series_matching(&mut self, filter: &str) -> Result<Vec<SeriesInfo>, HistorianError> {
        let e = self.err();
        let mut out = Vec::new();
        if !filter.contains(['+', '#']) {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, topic, value_type, first_ms, last_ms FROM series WHERE topic = ?1",
                )
                .map_err(&e)?;
            let row = stmt
                .query_row([filter], series_row)
                .optional()
                .map_err(&e)?;
            out.extend(row);
        } else {
            let (lower, upper) = prefix_range(filter);
            // Two statements rather than `?2 IS NULL OR ...`, so that the
            // upper bound limits the index range.
            let mut stmt = match upper {
                Some(_) => self.conn.prepare_cached(
                    "SELECT id, topic, value_type, first_ms, last_ms FROM series \
                     WHERE topic >= ?1 AND topic < ?2 ORDER BY topic",
                ),
                None => self.conn.prepare_cached(
                    "SELECT id, topic, value_type, first_ms, last_ms FROM series \
                     WHERE topic >= ?1 ORDER BY topic",
                ),
            }
            .map_err(&e)?;
            let rows = match &upper {
                Some(upper) => stmt.query_map(params![lower, upper], series_row),
                None => stmt.query_map(params![lower], series_row),
            }
            .map_err(&e)?;
            for r in rows {
                let s = r.map_err(&e)?;
                if gantry_codec::topic::matches(filter, &s.topic) {
                    out.push(s);
                }
            }
        }
        drop(e);
        for s in &out {
            self.types.insert(s.id, s.value_type);
            self.bounds.insert(s.id, (s.first_ms, s.last_ms));
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
        let e = self.err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT ts_ms, num, txt, quality FROM points WHERE series_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY ts_ms",
            )
            .map_err(&e)?;
        let mut rows = stmt.query(params![series_id, from_ms, to_ms]).map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            let ts_ms: i64 = r.get(0).map_err(&e)?;
            let (value, quality) = decode(r, 1, value_type).map_err(&e)?;
            if !visit(PointRow {
                ts_ms,
                value,
                quality,
            }) {
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
        self.one_point(
            "SELECT ts_ms, num, txt, quality FROM points WHERE series_id = ?1 AND ts_ms <= ?2 ORDER BY ts_ms DESC LIMIT 1",
            series_id,
            at_ms,
        )
    }

    fn first_at_or_after(
        &mut self,
        series_id: i64,
        at_ms: i64,
    ) -> Result<Option<PointRow>, HistorianError> {
        self.one_point(
            "SELECT ts_ms, num, txt, quality FROM points WHERE series_id = ?1 AND ts_ms >= ?2 ORDER BY ts_ms LIMIT 1",
            series_id,
            at_ms,
        )
    }

    fn rollups(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RollupRow>, HistorianError> {
        let e = self.err();
        let sql = format!(
            "SELECT bucket_ms, count, bad_count, min, max, sum, first_ms, first, last_ms, last FROM {} \
             WHERE series_id = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 ORDER BY bucket_ms",
            level.table()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&e)?;
        let rows = stmt
            .query_map(params![series_id, from_ms, to_ms], |r| {
                let bucket_ms: i64 = r.get(0)?;
                let count: i64 = r.get(1)?;
                let mut row = RollupRow::empty(bucket_ms);
                row.count = count as u64;
                row.bad_count = r.get::<_, i64>(2)? as u64;
                if count > 0 {
                    row.min = r.get(3)?;
                    row.max = r.get(4)?;
                    row.sum = r.get(5)?;
                    row.first_ms = r.get(6)?;
                    row.first = r.get(7)?;
                    row.last_ms = r.get(8)?;
                    row.last = r.get(9)?;
                }
                Ok(row)
            })
            .map_err(&e)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&e)
    }

    fn snapshot(
        &mut self,
        series: &[i64],
        at_ms: i64,
    ) -> Result<Vec<(i64, PointRow)>, HistorianError> {
        // Walk the time index backwards from T: the first row met for a
        // wanted series is its latest value at or before T. Series not met
        // within the scan budget (slow tags, far in the past) fall back to
        // one lookup each, so the cost stays bounded either way.
        let mut slot: HashMap<i64, usize> = HashMap::with_capacity(series.len());
        let mut settled: Vec<(usize, i64)> = Vec::new();
        for (i, &id) in series.iter().enumerate() {
            match self.bounds.get(&id) {
                // Nothing stored at or before T: absent.
                Some((Some(first), _)) if *first > at_ms => {}
                // Unchanged since T: its latest value is the answer.
                Some((_, Some(last))) if *last <= at_ms => settled.push((i, *last)),
                _ => {
                    slot.entry(id).or_insert(i);
                }
            }
        }
        let mut found: Vec<Option<PointRow>> = vec![None; series.len()];
        for (i, ts) in settled {
            found[i] = self.point_at(series[i], ts)?;
        }
        let mut text_rows: Vec<usize> = Vec::new();
        let mut missing = slot.len();
        let budget = 8 * missing + 10_000;
        {
            let e = self.err();
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT series_id, ts_ms, num, quality FROM points INDEXED BY points_by_time \
                     WHERE ts_ms <= ?1 ORDER BY ts_ms DESC",
                )
                .map_err(&e)?;
            let mut rows = stmt.query([at_ms]).map_err(&e)?;
            let mut scanned = 0usize;
            while missing > 0 && scanned < budget {
                let Some(r) = rows.next().map_err(&e)? else {
                    break;
                };
                scanned += 1;
                let id: i64 = r.get(0).map_err(&e)?;
                let Some(&i) = slot.get(&id) else { continue };
                if found[i].is_some() {
                    continue;
                }
                let (num, int) = match r.get_ref(2).map_err(&e)? {
                    SqlValue::Integer(v) => (None, Some(v)),
                    SqlValue::Real(v) => (Some(v), None),
                    _ => (None, None),
                };
                if num.is_none() && int.is_none() {
                    text_rows.push(i);
                }
                let quality: i64 = r.get(3).map_err(&e)?;
                let value_type = self.types.get(&id).copied().unwrap_or(ValueType::Float);
                found[i] = Some(PointRow {
                    ts_ms: r.get(1).map_err(&e)?,
                    value: value_from_columns(value_type, num, int, None),
                    quality: quality_from_code(quality),
                });
                missing -= 1;
            }
        }
        // String values are not in the time index: read them by key.
        for i in text_rows {
            let id = series[i];
            let Some(ts_ms) = found[i].as_ref().map(|r| r.ts_ms) else {
                continue;
            };
            let value_type = self.value_type(id)?;
            let e = self.err();
            let txt: Option<String> = self
                .conn
                .prepare_cached("SELECT txt FROM points WHERE series_id = ?1 AND ts_ms = ?2")
                .map_err(&e)?
                .query_row(params![id, ts_ms], |r| r.get(0))
                .optional()
                .map_err(&e)?
                .flatten();
            if let Some(row) = found[i].as_mut() {
                row.value = value_from_columns(value_type, None, None, txt);
            }
        }
        let mut out = Vec::with_capacity(series.len());
        for (i, &id) in series.iter().enumerate() {
            let scanned = slot.get(&id) == Some(&i);
            match found[i].take() {
                Some(p) => out.push((id, p)),
                None if scanned && missing > 0 => {
                    if let Some(p) = self.last_at_or_before(id, at_ms)? {
                        out.push((id, p));
                    }
                }
                None => {}
            }
        }
        Ok(out)
    }

    fn gaps(&mut self, from_ms: i64, to_ms: i64) -> Result<Vec<Gap>, HistorianError> {
        let e = self.err();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT from_ms, to_ms, lost, reason FROM gaps WHERE to_ms >= ?1 AND from_ms < ?2 ORDER BY from_ms")
            .map_err(&e)?;
        let rows = stmt
            .query_map(params![from_ms, to_ms], |r| {
                Ok(Gap {
                    from_ms: r.get(0)?,
                    to_ms: r.get(1)?,
                    lost: r.get::<_, i64>(2)? as u64,
                    reason: r.get(3)?,
                })
            })
            .map_err(&e)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(&e)
    }

    fn count_points(
        &mut self,
        series: &[i64],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<u64, HistorianError> {
        let e = self.err();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM points WHERE series_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3",
            )
            .map_err(&e)?;
        let mut total = 0u64;
        for &id in series {
            let n: i64 = stmt
                .query_row(params![id, from_ms, to_ms], |r| r.get(0))
                .map_err(&e)?;
            total += n as u64;
        }
        Ok(total)
    }
}
