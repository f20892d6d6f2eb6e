//! Reads from the SQLite store over its own read-only connection; WAL mode
//! lets it read while the writer writes.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::error::HistorianError;
use crate::point::{
    Gap, IdMap, PointRow, SeriesInfo, ValueType, quality_from_code, value_from_columns,
};
use crate::read::{FilterMatcher, HistoryRead, prefix_range};
use crate::rollup::{RollupLevel, RollupRow};

/// What the reader remembers of a series: its type (for decoding values)
/// and, once listed by `series_matching`, its first and last stored
/// timestamps, which let a snapshot skip series that are settled without
/// reading their values.
#[derive(Debug, Clone, Copy)]
struct KnownSeries {
    value_type: ValueType,
    bounds: Option<(Option<i64>, Option<i64>)>,
}

pub struct SqliteReader {
    conn: Connection,
    path: PathBuf,
    /// Series seen so far (see [`KnownSeries`]).
    types: IdMap<KnownSeries>,
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
            types: IdMap::default(),
            read_depth: 0,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistorianError + '_ {
        |source| HistorianError::sqlite(&self.path, source)
    }

    fn value_type(&mut self, series_id: i64) -> Result<ValueType, HistorianError> {
        if let Some(k) = self.types.get(&series_id) {
            return Ok(k.value_type);
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
        self.types.insert(
            series_id,
            KnownSeries {
                value_type: t,
                bounds: None,
            },
        );
        Ok(t)
    }
}

/// Series id → position in a snapshot request. Store-assigned ids are dense
/// (1, 2, 3, …), so a plain array usually serves, without hashing in the
/// scan loop; scattered ids fall back to a map.
enum SlotIndex {
    Dense {
        base: i64,
        slots: Vec<u32>,
        len: usize,
    },
    Sparse(IdMap<usize>),
}

impl SlotIndex {
    /// From `(series id, position)` pairs; the first position of an id wins.
    fn new(pairs: &[(i64, usize)]) -> SlotIndex {
        let (min, max) = pairs
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &(id, _)| {
                (lo.min(id), hi.max(id))
            });
        let span = i128::from(max) - i128::from(min) + 1;
        if !pairs.is_empty() && span <= 8 * pairs.len() as i128 + 4096 {
            let mut slots = vec![u32::MAX; span as usize];
            let mut len = 0;
            for &(id, i) in pairs {
                let s = &mut slots[(id - min) as usize];
                if *s == u32::MAX {
                    *s = i as u32;
                    len += 1;
                }
            }
            return SlotIndex::Dense {
                base: min,
                slots,
                len,
            };
        }
        let mut map = IdMap::with_capacity_and_hasher(pairs.len(), Default::default());
        for &(id, i) in pairs {
            map.entry(id).or_insert(i);
        }
        SlotIndex::Sparse(map)
    }

    fn get(&self, id: i64) -> Option<usize> {
        match self {
            SlotIndex::Dense { base, slots, .. } => {
                let k = usize::try_from(id.checked_sub(*base)?).ok()?;
                slots
                    .get(k)
                    .filter(|s| **s != u32::MAX)
                    .map(|s| *s as usize)
            }
            SlotIndex::Sparse(map) => map.get(&id).copied(),
        }
    }

    fn len(&self) -> usize {
        match self {
            SlotIndex::Dense { len, .. } => *len,
            SlotIndex::Sparse(map) => map.len(),
        }
    }
}

/// Ranges read by one statement in `points_in_spans`.
const SPANS_PER_READ: usize = 16;

/// `SPANS_PER_READ` range reads of one series, in order (`UNION ALL` runs its
/// parts one after the other).
fn spans_sql() -> String {
    (0..SPANS_PER_READ)
        .map(|k| {
            format!(
                "SELECT ts_ms, num, txt, quality FROM points WHERE series_id = ?1 AND ts_ms >= ?{} AND ts_ms < ?{}",
                2 + 2 * k,
                3 + 2 * k
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
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
            let matcher = FilterMatcher::new(filter);
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
                if matcher.matches(&s.topic) {
                    out.push(s);
                }
            }
        }
        drop(e);
        for s in &out {
            self.types.insert(
                s.id,
                KnownSeries {
                    value_type: s.value_type,
                    bounds: Some((s.first_ms, s.last_ms)),
                },
            );
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

    fn points_in_spans(
        &mut self,
        series_id: i64,
        spans: &[(i64, i64)],
        visit: &mut dyn FnMut(PointRow),
    ) -> Result<(), HistorianError> {
        if spans.len() < 2 {
            for &(from_ms, to_ms) in spans {
                self.points(series_id, from_ms, to_ms, &mut |p| {
                    visit(p);
                    true
                })?;
            }
            return Ok(());
        }
        let value_type = self.value_type(series_id)?;
        let e = self.err();
        // SPANS_PER_READ ranges per statement: one reset and bind per group
        // instead of per span. Unused ranges are bound empty.
        let mut stmt = self.conn.prepare_cached(&spans_sql()).map_err(&e)?;
        for group in spans.chunks(SPANS_PER_READ) {
            stmt.raw_bind_parameter(1, series_id).map_err(&e)?;
            for k in 0..SPANS_PER_READ {
                let (from_ms, to_ms) = group.get(k).copied().unwrap_or((0, 0));
                stmt.raw_bind_parameter(2 + 2 * k, from_ms).map_err(&e)?;
                stmt.raw_bind_parameter(3 + 2 * k, to_ms).map_err(&e)?;
            }
            let mut rows = stmt.raw_query();
            while let Some(r) = rows.next().map_err(&e)? {
                let ts_ms: i64 = r.get(0).map_err(&e)?;
                let (value, quality) = decode(r, 1, value_type).map_err(&e)?;
                visit(PointRow {
                    ts_ms,
                    value,
                    quality,
                });
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

    fn rollup_stats(
        &mut self,
        level: RollupLevel,
        series_id: i64,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(&RollupRow),
    ) -> Result<(), HistorianError> {
        let e = self.err();
        let sql = format!(
            "SELECT bucket_ms, count, bad_count, min, max, sum FROM {} \
             WHERE series_id = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 ORDER BY bucket_ms",
            level.table()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&e)?;
        let mut rows = stmt.query(params![series_id, from_ms, to_ms]).map_err(&e)?;
        let int = |v: SqlValue<'_>| match v {
            SqlValue::Integer(i) => i,
            SqlValue::Real(f) => f as i64,
            _ => 0,
        };
        let real = |v: SqlValue<'_>, empty: f64| match v {
            SqlValue::Real(f) => f,
            SqlValue::Integer(i) => i as f64,
            _ => empty,
        };
        while let Some(r) = rows.next().map_err(&e)? {
            let mut row = RollupRow::empty(int(r.get_ref(0).map_err(&e)?));
            row.count = int(r.get_ref(1).map_err(&e)?).max(0) as u64;
            row.bad_count = int(r.get_ref(2).map_err(&e)?).max(0) as u64;
            if row.count > 0 {
                row.min = real(r.get_ref(3).map_err(&e)?, f64::INFINITY);
                row.max = real(r.get_ref(4).map_err(&e)?, f64::NEG_INFINITY);
                row.sum = real(r.get_ref(5).map_err(&e)?, 0.0);
            }
            visit(&row);
        }
        Ok(())
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
        let mut scan: Vec<(i64, usize)> = Vec::with_capacity(series.len());
        let mut settled: Vec<(usize, i64)> = Vec::new();
        let mut kinds: Vec<ValueType> = Vec::with_capacity(series.len());
        for (i, &id) in series.iter().enumerate() {
            let known = self.types.get(&id).copied();
            kinds.push(known.map_or(ValueType::Float, |k| k.value_type));
            match known.and_then(|k| k.bounds) {
                // Nothing stored at or before T: absent.
                Some((Some(first), _)) if first > at_ms => {}
                // Unchanged since T: its latest value is the answer.
                Some((_, Some(last))) if last <= at_ms => settled.push((i, last)),
                _ => scan.push((id, i)),
            }
        }
        let slot = SlotIndex::new(&scan);
        let mut found: Vec<Option<PointRow>> = vec![None; series.len()];
        for (i, ts) in settled {
            found[i] = self.point_at(series[i], ts)?;
        }
        let mut text_rows: Vec<usize> = Vec::new();
        let mut missing = slot.len();
        let budget = 8 * missing + 10_000;
        let mut scanned_slot = vec![false; series.len()];
        for &(_, i) in &scan {
            scanned_slot[i] = true;
        }
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
                let Some(i) = slot.get(id) else { continue };
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
                let value_type = kinds[i];
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
            let scanned = scanned_slot[i];
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
