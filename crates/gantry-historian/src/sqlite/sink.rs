//! The SQLite writer: one transaction per batch, series ids cached, rollups
//! updated in the same transaction, retention between batches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gantry_model::{Quality, Value};
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::HistorianConfig;
use crate::error::HistorianError;
use crate::point::{Gap, Point, ValueType, numeric, quality_code};
use crate::rollup::{RollupLevel, RollupRow, RollupTracker};
use crate::writer::Sink;

use super::schema;

#[derive(Debug, Clone, Copy)]
struct SeriesMeta {
    id: i64,
    value_type: ValueType,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    /// Changed in the current batch (first/last written at commit).
    touched: bool,
}

pub struct SqliteSink {
    conn: Connection,
    path: PathBuf,
    /// Topic → index into `metas`.
    series: HashMap<Arc<str>, usize>,
    metas: Vec<SeriesMeta>,
    rollups: RollupTracker,
    config: HistorianConfig,
}

fn open_connection(path: &Path, fsync: bool) -> Result<Connection, HistorianError> {
    let conn = super::open_writable(path, fsync)?;
    let e = |source| HistorianError::sqlite(path, source);
    conn.pragma_update(None, "cache_size", -65_536).map_err(e)?;
    // Plans never depend on bound values: without this, SQLite re-plans a
    // statement each time a range bound is rebound (about 8 µs a call).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(e)?;
    Ok(conn)
}

impl SqliteSink {
    /// Opens or creates the store. An unclean previous stop (crash, `kill -9`)
    /// is recorded as a gap from the last commit to now.
    pub fn open(path: &Path, config: &HistorianConfig) -> Result<SqliteSink, HistorianError> {
        Self::open_with(path, config, true)
    }

    /// Opens the store behind a spool: the spool records an unclean stop
    /// itself, and that gap reaches the store through the applier.
    pub(crate) fn open_behind_spool(
        path: &Path,
        config: &HistorianConfig,
    ) -> Result<SqliteSink, HistorianError> {
        Self::open_with(path, config, false)
    }

    fn open_with(
        path: &Path,
        config: &HistorianConfig,
        record_crash_gap: bool,
    ) -> Result<SqliteSink, HistorianError> {
        let conn = open_connection(path, config.fsync)?;
        let e = |source| HistorianError::sqlite(path, source);
        let found = schema::version(&conn).map_err(e)?;
        if found > schema::SCHEMA_VERSION {
            return Err(HistorianError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: schema::SCHEMA_VERSION,
            });
        }
        conn.execute_batch(schema::CREATE).map_err(e)?;
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
            [schema::SCHEMA_VERSION.to_string()],
        )
        .map_err(e)?;
        let meta = |key: &str| -> Result<Option<String>, HistorianError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(e)
        };
        let was_open = meta("open")?.is_some_and(|v| v == "1");
        let now = gantry_broker::message::now_ms() as i64;
        if was_open && record_crash_gap {
            let last_commit: i64 = meta("last_commit_ms")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(now);
            conn.execute(
                "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?2, 0, ?3)",
                params![
                    last_commit,
                    now,
                    "Gantry stopped without a clean shutdown: QoS 0 values received after the last commit may be missing (QoS 1/2 values were acknowledged only once stored)"
                ],
            )
            .map_err(e)?;
            tracing::warn!(
                "history: the previous run did not stop cleanly; recorded a possible gap since the last commit"
            );
        }
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('open', '1')",
            [],
        )
        .map_err(e)?;
        Ok(SqliteSink {
            conn,
            path: path.to_path_buf(),
            series: HashMap::new(),
            metas: Vec::new(),
            rollups: RollupTracker::default(),
            config: config.clone(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> HistorianError + '_ {
        |source| HistorianError::sqlite(&self.path, source)
    }

    /// How far this store has applied the spool `spool_id` (values, gaps);
    /// (0, 0) for a spool it has not seen.
    pub(crate) fn applied(&self, spool_id: &str) -> Result<(i64, i64), HistorianError> {
        read_applied(&self.conn, spool_id).map_err(self.err())
    }

    /// Writes a batch taken from a spool and records, in the same
    /// transaction, that the spool is applied through `mark`.
    pub(crate) fn apply(
        &mut self,
        points: &[Point],
        gaps: &[Gap],
        mark: &AppliedMark<'_>,
    ) -> Result<(), HistorianError> {
        self.write_checked(points, gaps, Some(mark))
    }

    fn write_checked(
        &mut self,
        points: &[Point],
        gaps: &[Gap],
        mark: Option<&AppliedMark<'_>>,
    ) -> Result<(), HistorianError> {
        let result = self.write_batch(points, gaps, mark);
        if let Err(source) = result {
            // The transaction rolled back: forget what was cached from it.
            self.series.clear();
            self.metas.clear();
            self.rollups.reset();
            return Err(HistorianError::sqlite(&self.path, source));
        }
        Ok(())
    }

    fn write_batch(
        &mut self,
        points: &[Point],
        gaps: &[Gap],
        mark: Option<&AppliedMark<'_>>,
    ) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Resolve every point's series once, then insert in (series, time)
        // order: consecutive inserts land on the same B-tree leaf, and the
        // rollup tracker sees each series' values in time order. The sort is
        // stable, so of two values with the same timestamp the later wins.
        let mut order: Vec<(usize, u32)> = Vec::with_capacity(points.len());
        for (i, p) in points.iter().enumerate() {
            let slot = series_slot(&tx, &mut self.series, &mut self.metas, &p.topic, &p.value)?;
            order.push((slot, i as u32));
        }
        order.sort_by_key(|&(slot, i)| (self.metas[slot].id, points[i as usize].ts_ms));
        let mut touched: Vec<usize> = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO points (series_id, ts_ms, num, txt, quality) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut exists =
                tx.prepare_cached("SELECT 1 FROM points WHERE series_id = ?1 AND ts_ms = ?2")?;
            for &(slot, i) in &order {
                let p = &points[i as usize];
                let meta = &mut self.metas[slot];
                // A value at or before the series' latest may replace a
                // stored one; only then must its rollup buckets be recomputed.
                let late = meta.last_ms.is_some_and(|last| p.ts_ms <= last);
                let replaced = late && exists.exists(params![meta.id, p.ts_ms])?;
                bind_point(&mut insert, meta.id, p)?;
                insert.raw_execute()?;
                if ValueType::of(&p.value).is_numeric() {
                    let v = if p.quality == Quality::Bad {
                        None
                    } else {
                        numeric(&p.value)
                    };
                    self.rollups
                        .add(meta.id, p.ts_ms, v, meta.last_ms, replaced);
                } else if replaced {
                    self.rollups.replaced_by_text(meta.id, p.ts_ms);
                }
                meta.first_ms = Some(meta.first_ms.map_or(p.ts_ms, |f| f.min(p.ts_ms)));
                meta.last_ms = Some(meta.last_ms.map_or(p.ts_ms, |l| l.max(p.ts_ms)));
                if !meta.touched {
                    meta.touched = true;
                    touched.push(slot);
                }
            }
        }
        for (series_id, level, bucket) in self.rollups.take_recompute() {
            let row = recompute_bucket(&tx, series_id, level, bucket)?;
            self.rollups.recomputed(series_id, level, row);
            if row.count == 0 && row.bad_count == 0 {
                // Text replaced the bucket's last number: no row.
                tx.prepare_cached(&format!(
                    "DELETE FROM {} WHERE series_id = ?1 AND bucket_ms = ?2",
                    level.table()
                ))?
                .execute(params![series_id, bucket])?;
            } else {
                write_rollup(&tx, series_id, level, &row)?;
            }
        }
        for (series_id, level, row) in self.rollups.take_dirty() {
            write_rollup(&tx, series_id, level, &row)?;
        }
        for (series_id, level, delta) in self.rollups.take_deltas() {
            let mut row = stored_rollup(&tx, series_id, level, delta.bucket_ms)?
                .unwrap_or_else(|| RollupRow::empty(delta.bucket_ms));
            row.merge(&delta);
            write_rollup(&tx, series_id, level, &row)?;
        }
        {
            let mut update = tx.prepare_cached(
                "UPDATE series SET first_ms = ?2, last_ms = ?3, value_type = ?4 WHERE id = ?1",
            )?;
            for slot in touched {
                let m = &mut self.metas[slot];
                update.execute(params![m.id, m.first_ms, m.last_ms, m.value_type.as_str()])?;
                m.touched = false;
            }
        }
        for g in gaps {
            tx.execute(
                "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?2, ?3, ?4)",
                params![g.from_ms, g.to_ms, g.lost as i64, g.reason],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_commit_ms', ?1)",
            [(gantry_broker::message::now_ms() as i64).to_string()],
        )?;
        if let Some(mark) = mark {
            let mut set =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
            set.execute(params!["applied_spool_id", mark.spool_id])?;
            set.execute(params!["applied_points_seq", mark.points_seq.to_string()])?;
            set.execute(params!["applied_gaps_seq", mark.gaps_seq.to_string()])?;
        }
        tx.commit()
    }

    fn apply_retention(&mut self, now_ms: i64) -> rusqlite::Result<u64> {
        if self.config.retention.is_empty() {
            return Ok(0);
        }
        let all: Vec<(i64, String)> = {
            let mut stmt = self.conn.prepare("SELECT id, topic FROM series")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let tx = self.conn.transaction()?;
        let mut removed = 0u64;
        for (id, topic) in all {
            let Some(rule) = self.config.retention_for(&topic) else {
                continue;
            };
            // 10-second rollups are detail of the raw values: kept as long.
            for (table, keep) in [
                ("points", rule.raw),
                ("rollup_10s", rule.raw),
                ("rollup_1m", rule.minute),
                ("rollup_1h", rule.hour),
            ] {
                let Some(keep) = keep else { continue };
                let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
                let cutoff = now_ms.saturating_sub(keep_ms);
                let column = if table == "points" {
                    "ts_ms"
                } else {
                    "bucket_ms"
                };
                removed += tx.execute(
                    &format!("DELETE FROM {table} WHERE series_id = ?1 AND {column} < ?2"),
                    params![id, cutoff],
                )? as u64;
            }
            if rule.raw.is_some() {
                tx.execute(
                    "UPDATE series SET first_ms = (SELECT min(ts_ms) FROM points WHERE series_id = ?1) WHERE id = ?1",
                    [id],
                )?;
            }
        }
        tx.commit()?;
        // Cached first timestamps may now be stale: reload on next use.
        self.series.clear();
        self.metas.clear();
        Ok(removed)
    }
}

/// How far a spool has been applied: stored with the batch it ends.
pub(crate) struct AppliedMark<'a> {
    pub spool_id: &'a str,
    pub points_seq: i64,
    pub gaps_seq: i64,
}

/// The applied sequence numbers of `spool_id` recorded in the store's `meta`.
pub(crate) fn read_applied(conn: &Connection, spool_id: &str) -> rusqlite::Result<(i64, i64)> {
    let meta = |key: &str| -> rusqlite::Result<Option<String>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    };
    if meta("applied_spool_id")?.as_deref() != Some(spool_id) {
        return Ok((0, 0));
    }
    let seq = |key: &str| -> rusqlite::Result<i64> {
        Ok(meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
    };
    Ok((seq("applied_points_seq")?, seq("applied_gaps_seq")?))
}

/// Binds one point's five columns.
fn bind_point(
    stmt: &mut rusqlite::CachedStatement<'_>,
    series_id: i64,
    p: &Point,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(1, series_id)?;
    stmt.raw_bind_parameter(2, p.ts_ms)?;
    match &p.value {
        Value::Int(v) => {
            stmt.raw_bind_parameter(3, v)?;
            stmt.raw_bind_parameter(4, None::<&str>)?;
        }
        Value::Bool(b) => {
            stmt.raw_bind_parameter(3, i64::from(*b))?;
            stmt.raw_bind_parameter(4, None::<&str>)?;
        }
        Value::Float(f) => {
            stmt.raw_bind_parameter(3, f)?;
            stmt.raw_bind_parameter(4, None::<&str>)?;
        }
        Value::Text(t) => {
            stmt.raw_bind_parameter(3, None::<i64>)?;
            stmt.raw_bind_parameter(4, t.as_str())?;
        }
    }
    stmt.raw_bind_parameter(5, quality_code(p.quality))
}

/// Finds or creates the series of a topic and returns its slot in `metas`;
/// a value of a new type updates the series' type.
fn series_slot(
    tx: &rusqlite::Transaction<'_>,
    cache: &mut HashMap<Arc<str>, usize>,
    metas: &mut Vec<SeriesMeta>,
    topic: &Arc<str>,
    value: &Value,
) -> rusqlite::Result<usize> {
    let value_type = ValueType::of(value);
    if let Some(&slot) = cache.get(topic) {
        let m = &mut metas[slot];
        if m.value_type != value_type {
            m.value_type = value_type;
            // Written with first/last at commit (the series is touched).
        }
        return Ok(slot);
    }
    let existing = tx
        .prepare_cached("SELECT id, value_type, first_ms, last_ms FROM series WHERE topic = ?1")?
        .query_row([&**topic], |r| {
            Ok(SeriesMeta {
                id: r.get(0)?,
                value_type: r
                    .get::<_, String>(1)
                    .ok()
                    .and_then(|t| ValueType::parse(&t))
                    .unwrap_or(value_type),
                first_ms: r.get(2)?,
                last_ms: r.get(3)?,
                touched: false,
            })
        })
        .optional()?;
    let mut meta = match existing {
        Some(m) => m,
        None => {
            tx.prepare_cached("INSERT INTO series (topic, value_type) VALUES (?1, ?2)")?
                .execute(params![&**topic, value_type.as_str()])?;
            SeriesMeta {
                id: tx.last_insert_rowid(),
                value_type,
                first_ms: None,
                last_ms: None,
                touched: false,
            }
        }
    };
    meta.value_type = value_type;
    metas.push(meta);
    cache.insert(topic.clone(), metas.len() - 1);
    Ok(metas.len() - 1)
}

fn recompute_bucket(
    tx: &rusqlite::Transaction<'_>,
    series_id: i64,
    level: RollupLevel,
    bucket: i64,
) -> rusqlite::Result<RollupRow> {
    let mut stmt = tx.prepare_cached(
        "SELECT ts_ms, num, quality FROM points WHERE series_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 AND txt IS NULL",
    )?;
    let mut rows = stmt.query(params![
        series_id,
        bucket,
        bucket.saturating_add(level.width_ms())
    ])?;
    let mut row = RollupRow::empty(bucket);
    while let Some(r) = rows.next()? {
        let ts: i64 = r.get(0)?;
        let num: Option<f64> = r.get(1)?;
        let quality: i64 = r.get(2)?;
        row.add(ts, if quality >= 2 { None } else { num });
    }
    Ok(row)
}

/// The stored rollup row of one bucket.
fn stored_rollup(
    tx: &rusqlite::Transaction<'_>,
    series_id: i64,
    level: RollupLevel,
    bucket_ms: i64,
) -> rusqlite::Result<Option<RollupRow>> {
    let sql = format!(
        "SELECT count, bad_count, min, max, sum, first_ms, first, last_ms, last FROM {} \
         WHERE series_id = ?1 AND bucket_ms = ?2",
        level.table()
    );
    tx.prepare_cached(&sql)?
        .query_row(params![series_id, bucket_ms], |r| {
            let mut row = RollupRow::empty(bucket_ms);
            row.count = r.get::<_, i64>(0)? as u64;
            row.bad_count = r.get::<_, i64>(1)? as u64;
            if row.count > 0 {
                row.min = r.get(2)?;
                row.max = r.get(3)?;
                row.sum = r.get(4)?;
                row.first_ms = r.get(5)?;
                row.first = r.get(6)?;
                row.last_ms = r.get(7)?;
                row.last = r.get(8)?;
            }
            Ok(row)
        })
        .optional()
}

fn write_rollup(
    tx: &rusqlite::Transaction<'_>,
    series_id: i64,
    level: RollupLevel,
    row: &RollupRow,
) -> rusqlite::Result<()> {
    let sql = match level {
        RollupLevel::TenSeconds => {
            "INSERT OR REPLACE INTO rollup_10s VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        }
        RollupLevel::Minute => {
            "INSERT OR REPLACE INTO rollup_1m VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        }
        RollupLevel::Hour => {
            "INSERT OR REPLACE INTO rollup_1h VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        }
    };
    let has = row.count > 0;
    tx.prepare_cached(sql)?.execute(params![
        series_id,
        row.bucket_ms,
        row.count as i64,
        row.bad_count as i64,
        has.then_some(row.min),
        has.then_some(row.max),
        has.then_some(row.sum),
        has.then_some(row.first_ms),
        has.then_some(row.first),
        has.then_some(row.last_ms),
        has.then_some(row.last),
    ])?;
    Ok(())
}

impl Sink for SqliteSink {
    fn write(&mut self, points: &[Point], gaps: &[Gap]) -> Result<(), HistorianError> {
        self.write_checked(points, gaps, None)
    }

    fn maintain(&mut self, now_ms: i64) -> Result<(), HistorianError> {
        let removed = self.apply_retention(now_ms).map_err(self.err())?;
        if removed > 0 {
            tracing::info!(removed, "history retention removed old rows");
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), HistorianError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('open', '0')",
                [],
            )
            .map_err(self.err())?;
        let _ = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
        Ok(())
    }
}
