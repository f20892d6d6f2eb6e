//! The local spool: a SQLite file in WAL mode that every recorded value
//! passes through. The writer thread's [`SpoolSink`] appends each batch in one
//! transaction (`synchronous` NORMAL, FULL with `historian.fsync`) and
//! returns, so an acknowledgement waits for one small append-only commit,
//! never for the store. A drainer then moves the rows on in large batches,
//! in sequence order, over its own connection, and deletes them once they are
//! committed there:
//!
//! - the embedded store's applier (`<data_dir>/history/spool.sqlite` into
//!   `history.sqlite`, see [`crate::sqlite`]);
//! - the PostgreSQL shipper (`<data_dir>/history/pg-spool.sqlite`, see
//!   [`crate::postgres`]).
//!
//! Values keep their exact type here (integers as SQLite integers). An
//! unclean stop is recorded as a gap when the spool is next opened, and that
//! gap travels to the store like any other row.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use gantry_model::Value;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};

use crate::config::HistorianConfig;
use crate::error::HistorianError;
use crate::point::{Gap, Point, ValueType, quality_code, quality_from_code};
use crate::writer::Sink;

/// Bumped when the spool's tables change incompatibly.
const SPOOL_VERSION: i64 = 1;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Values waiting to be shipped, in arrival order. `num` holds int and bool
-- values as INTEGER and floats as REAL; `txt` string values.
CREATE TABLE IF NOT EXISTS points (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    value_type TEXT NOT NULL,
    num,
    txt        TEXT,
    quality    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gaps (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    from_ms INTEGER NOT NULL,
    to_ms   INTEGER NOT NULL,
    lost    INTEGER NOT NULL,
    reason  TEXT NOT NULL
);
"#;

const CRASH_GAP_REASON: &str = "Gantry stopped without a clean shutdown: QoS 0 values received after the last commit may be missing (QoS 1/2 values were acknowledged only once stored)";

fn open_connection(path: &Path, fsync: bool) -> Result<Connection, HistorianError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| HistorianError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let e = |source| HistorianError::sqlite(path, source);
    let conn = Connection::open(path).map_err(e)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(e)?;
    // Freed pages are returned to the file system when the spool drains
    // (only takes effect on a new file).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(e)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })
        .map_err(e)?;
    Ok(conn)
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// The writer thread's [`Sink`]: makes each batch durable in the spool and
/// wakes the drainer.
pub struct SpoolSink {
    conn: Connection,
    path: PathBuf,
    pub(crate) shared: Arc<Shared>,
}

impl SpoolSink {
    /// Opens or creates the spool. Rows left by an earlier run stay and are
    /// drained by the next drainer; an unclean earlier stop is recorded as a
    /// gap.
    pub fn open(path: &Path, config: &HistorianConfig) -> Result<SpoolSink, HistorianError> {
        let conn = open_connection(path, config.fsync)?;
        let e = |source| HistorianError::sqlite(path, source);
        conn.execute_batch(CREATE).map_err(e)?;
        let found: i64 = meta(&conn, "spool_version")
            .map_err(e)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(SPOOL_VERSION);
        if found != SPOOL_VERSION {
            return Err(HistorianError::SchemaVersion {
                path: path.to_path_buf(),
                found,
                expected: SPOOL_VERSION,
            });
        }
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('spool_version', ?1)",
            [SPOOL_VERSION.to_string()],
        )
        .map_err(e)?;
        if meta(&conn, "spool_id").map_err(e)?.is_none() {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('spool_id', ?1)",
                [new_spool_id()],
            )
            .map_err(e)?;
        }
        let now = gantry_broker::message::now_ms() as i64;
        if meta(&conn, "open").map_err(e)?.is_some_and(|v| v == "1") {
            let last_commit: i64 = meta(&conn, "last_commit_ms")
                .map_err(e)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(now);
            conn.execute(
                "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?2, 0, ?3)",
                params![last_commit, now, CRASH_GAP_REASON],
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
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get(0))
            .map_err(e)?;
        if pending > 0 {
            tracing::info!(pending, spool = %path.display(), "history spool holds values from the previous run not yet in the store");
        }
        let last_seq = last_point_seq(&conn).map_err(e)?;
        let shared = Arc::new(Shared::default());
        shared.update(|s| s.spooled_seq = last_seq);
        Ok(SpoolSink {
            conn,
            path: path.to_path_buf(),
            shared,
        })
    }

    /// The spool file.
    pub fn spool_path(&self) -> &Path {
        &self.path
    }

    /// Values in the spool, not yet shipped.
    pub fn pending(&self) -> Result<u64, HistorianError> {
        self.conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|source| HistorianError::sqlite(&self.path, source))
    }

    /// Returns the sequence number of the last value appended.
    fn write_batch(&mut self, points: &[Point], gaps: &[Gap]) -> rusqlite::Result<Option<i64>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut last = None;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO points (topic, ts_ms, value_type, num, txt, quality) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for p in points {
                let value_type = ValueType::of(&p.value).as_str();
                let q = quality_code(p.quality);
                match &p.value {
                    Value::Int(i) => insert.execute(params![
                        &*p.topic,
                        p.ts_ms,
                        value_type,
                        i,
                        None::<String>,
                        q
                    ])?,
                    Value::Bool(b) => insert.execute(params![
                        &*p.topic,
                        p.ts_ms,
                        value_type,
                        i64::from(*b),
                        None::<String>,
                        q
                    ])?,
                    Value::Float(f) => insert.execute(params![
                        &*p.topic,
                        p.ts_ms,
                        value_type,
                        f,
                        None::<String>,
                        q
                    ])?,
                    Value::Text(t) => insert.execute(params![
                        &*p.topic,
                        p.ts_ms,
                        value_type,
                        None::<i64>,
                        t,
                        q
                    ])?,
                };
            }
            if !points.is_empty() {
                last = Some(tx.last_insert_rowid());
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for g in gaps {
                insert.execute(params![g.from_ms, g.to_ms, g.lost as i64, g.reason])?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_commit_ms', ?1)",
            [(gantry_broker::message::now_ms() as i64).to_string()],
        )?;
        tx.commit()?;
        Ok(last)
    }
}

impl Sink for SpoolSink {
    fn write(&mut self, points: &[Point], gaps: &[Gap]) -> Result<(), HistorianError> {
        if points.is_empty() && gaps.is_empty() {
            return Ok(());
        }
        let last = self
            .write_batch(points, gaps)
            .map_err(|source| HistorianError::sqlite(&self.path, source))?;
        self.shared.spooled(last);
        Ok(())
    }

    /// Retention runs in the drainer's thread, between batches.
    fn maintain(&mut self, now_ms: i64) -> Result<(), HistorianError> {
        self.shared.request_maintenance(now_ms);
        Ok(())
    }

    fn close(&mut self) -> Result<(), HistorianError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('open', '0')",
                [],
            )
            .map_err(|source| HistorianError::sqlite(&self.path, source))?;
        Ok(())
    }
}

/// A random-enough identity for a spool file, so that PostgreSQL can tell
/// which spool's gaps it has already received.
fn new_spool_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// One spooled value.
#[derive(Debug, Clone)]
pub(crate) struct SpooledPoint {
    pub seq: i64,
    pub point: Point,
}

/// One spooled gap.
#[derive(Debug, Clone)]
pub(crate) struct SpooledGap {
    pub seq: i64,
    pub gap: Gap,
}

/// The drainer's side of the spool: reads in sequence order, deletes what
/// the store has committed.
pub(crate) struct SpoolReader {
    conn: Connection,
    path: PathBuf,
    /// Topics seen, shared between rows.
    topics: std::collections::HashMap<String, Arc<str>>,
}

impl SpoolReader {
    pub(crate) fn open(path: &Path, fsync: bool) -> Result<SpoolReader, HistorianError> {
        let conn = open_connection(path, fsync)?;
        Ok(SpoolReader {
            conn,
            path: path.to_path_buf(),
            topics: Default::default(),
        })
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> HistorianError + '_ {
        |source| HistorianError::sqlite(&self.path, source)
    }

    /// The spool's identity: the store records how far it has drained this
    /// spool under it (so a new spool file starts from the beginning).
    pub(crate) fn spool_id(&self) -> Result<String, HistorianError> {
        Ok(meta(&self.conn, "spool_id")
            .map_err(self.err())?
            .unwrap_or_else(|| "unknown".to_string()))
    }

    /// Up to `limit` values after `after_seq`, in sequence order.
    pub(crate) fn points_after(
        &mut self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<SpooledPoint>, HistorianError> {
        let e = |source| HistorianError::sqlite(&self.path, source);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, topic, ts_ms, value_type, num, txt, quality FROM points WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(e)?;
        let mut rows = stmt.query(params![after_seq, limit as i64]).map_err(e)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(e)? {
            let topic_text: String = r.get(1).map_err(e)?;
            let topic = match self.topics.get(&topic_text) {
                Some(t) => t.clone(),
                None => {
                    let t: Arc<str> = topic_text.as_str().into();
                    if self.topics.len() > 100_000 {
                        self.topics.clear();
                    }
                    self.topics.insert(topic_text, t.clone());
                    t
                }
            };
            let value_type: String = r.get(3).map_err(e)?;
            let num = r.get_ref(4).map_err(e)?;
            let txt: Option<String> = r.get(5).map_err(e)?;
            let value = match (ValueType::parse(&value_type), num) {
                (Some(ValueType::Int), ValueRef::Integer(i)) => Value::Int(i),
                (Some(ValueType::Int), ValueRef::Real(f)) => Value::Int(f as i64),
                (Some(ValueType::Bool), ValueRef::Integer(i)) => Value::Bool(i != 0),
                (Some(ValueType::Bool), ValueRef::Real(f)) => Value::Bool(f != 0.0),
                (Some(ValueType::Float), ValueRef::Real(f)) => Value::Float(f),
                (Some(ValueType::Float), ValueRef::Integer(i)) => Value::Float(i as f64),
                // SQLite stores NaN as NULL.
                (Some(ValueType::Float), _) => Value::Float(f64::NAN),
                _ => Value::Text(txt.unwrap_or_default()),
            };
            out.push(SpooledPoint {
                seq: r.get(0).map_err(e)?,
                point: Point {
                    topic,
                    ts_ms: r.get(2).map_err(e)?,
                    value,
                    quality: quality_from_code(r.get(6).map_err(e)?),
                },
            });
        }
        Ok(out)
    }

    /// Up to `limit` gaps after `after_seq`, in sequence order.
    pub(crate) fn gaps_after(
        &mut self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<SpooledGap>, HistorianError> {
        let e = |source| HistorianError::sqlite(&self.path, source);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, from_ms, to_ms, lost, reason FROM gaps WHERE seq > ?1 ORDER BY seq LIMIT ?2")
            .map_err(e)?;
        let rows = stmt
            .query_map(params![after_seq, limit as i64], |r| {
                Ok(SpooledGap {
                    seq: r.get(0)?,
                    gap: Gap {
                        from_ms: r.get(1)?,
                        to_ms: r.get(2)?,
                        lost: r.get::<_, i64>(3)?.max(0) as u64,
                        reason: r.get(4)?,
                    },
                })
            })
            .map_err(e)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(e)
    }

    /// Deletes what the store has committed.
    pub(crate) fn delete_through(
        &mut self,
        points_seq: i64,
        gaps_seq: i64,
    ) -> Result<(), HistorianError> {
        let e = |source| HistorianError::sqlite(&self.path, source);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.execute("DELETE FROM points WHERE seq <= ?1", [points_seq])
            .map_err(e)?;
        tx.execute("DELETE FROM gaps WHERE seq <= ?1", [gaps_seq])
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// The latest sequence numbers spooled so far (values, gaps).
    pub(crate) fn last_seqs(&self) -> Result<(i64, i64), HistorianError> {
        let e = self.err();
        let p: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM points", [], |r| r.get(0))
            .map_err(&e)?;
        let g: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM gaps", [], |r| r.get(0))
            .map_err(&e)?;
        Ok((p.unwrap_or(0), g.unwrap_or(0)))
    }

    /// The sequence number before the first value still spooled (the last
    /// one appended when the spool is empty).
    pub(crate) fn drained_before(&self) -> Result<i64, HistorianError> {
        let first: Option<i64> = self
            .conn
            .query_row("SELECT min(seq) FROM points", [], |r| r.get(0))
            .map_err(self.err())?;
        match first {
            Some(seq) => Ok(seq - 1),
            None => last_point_seq(&self.conn).map_err(self.err()),
        }
    }

    /// Whether any value or gap up to these sequence numbers is still spooled.
    pub(crate) fn holds_any_through(
        &self,
        points_seq: i64,
        gaps_seq: i64,
    ) -> Result<bool, HistorianError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM points WHERE seq <= ?1) OR EXISTS (SELECT 1 FROM gaps WHERE seq <= ?2)",
                params![points_seq, gaps_seq],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Values still spooled.
    pub(crate) fn pending(&self) -> Result<u64, HistorianError> {
        self.conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err())
    }

    /// Returns freed pages to the file system and trims the WAL (after the
    /// spool drained).
    pub(crate) fn compact(&self) {
        let _ = self.conn.execute_batch("PRAGMA incremental_vacuum;");
        let _ = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    }
}

/// The sequence number of the last value ever appended (0 for a new spool).
fn last_point_seq(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'points'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// What the sink and the drainer share: wake-ups, stop, status.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) stop: bool,
    pub(crate) finished: bool,
    /// Bumped on every spool write.
    pub(crate) spooled: u64,
    /// The sequence number of the last value appended to the spool.
    pub(crate) spooled_seq: i64,
    /// The sequence number of the last value committed to the store.
    pub(crate) drained_seq: i64,
    pub(crate) maintenance_due: Option<i64>,
    pub(crate) connected: bool,
    /// The schema exists (the shipper connected at least once).
    pub(crate) ready: bool,
    pub(crate) shipped: u64,
    pub(crate) last_error: Option<String>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// New rows are in the spool, the last value at `last_seq`.
    pub(crate) fn spooled(&self, last_seq: Option<i64>) {
        self.update(|s| {
            s.spooled += 1;
            if let Some(seq) = last_seq {
                s.spooled_seq = s.spooled_seq.max(seq);
            }
        });
    }

    /// Values in the spool not yet committed to the store.
    pub(crate) fn backlog(&self) -> u64 {
        let s = self.lock();
        (s.spooled_seq - s.drained_seq).max(0) as u64
    }

    /// Retention is due (from [`crate::writer::Sink::maintain`]).
    pub(crate) fn request_maintenance(&self, now_ms: i64) {
        self.update(|s| s.maintenance_due = Some(now_ms));
    }

    /// Waits until `cond` holds or `timeout` passes; returns the last state check.
    pub(crate) fn wait_while(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&State) -> bool,
    ) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |s| cond(s))
            .unwrap_or_else(|p| p.into_inner());
        cond(&guard)
    }
}
