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

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::HistorianConfig;
use crate::error::HistorianError;
use crate::point::{Gap, Point};
use crate::writer::Sink;

mod codec;

/// Bumped when the spool's tables change incompatibly.
const SPOOL_VERSION: i64 = 2;

const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Values waiting to be drained, one row per group commit: values
-- first_seq..=last_seq in arrival order, encoded as `codec` describes.
CREATE TABLE IF NOT EXISTS batches (
    first_seq INTEGER PRIMARY KEY,
    last_seq  INTEGER NOT NULL,
    data      BLOB NOT NULL
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
    let conn = crate::sqlite::open_writable(path, fsync)?;
    // Freed pages are returned to the file system when the spool drains
    // (only takes effect on a new file).
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(|source| HistorianError::sqlite(path, source))?;
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
    /// The sequence number the next value gets.
    next_seq: i64,
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
        let pending = pending_values(&conn).map_err(e)?;
        if pending > 0 {
            tracing::info!(pending, spool = %path.display(), "history spool holds values from the previous run not yet in the store");
        }
        let last_seq = last_point_seq(&conn).map_err(e)?;
        let shared = Arc::new(Shared::default());
        shared.update(|s| s.spooled_seq = last_seq);
        Ok(SpoolSink {
            conn,
            path: path.to_path_buf(),
            next_seq: last_seq + 1,
            shared,
        })
    }

    /// The spool file.
    pub fn spool_path(&self) -> &Path {
        &self.path
    }

    /// Values in the spool, not yet drained.
    pub fn pending(&self) -> Result<u64, HistorianError> {
        pending_values(&self.conn).map_err(|source| HistorianError::sqlite(&self.path, source))
    }

    /// Appends the batch; returns the sequence number of its last value.
    fn write_batch(&mut self, points: &[Point], gaps: &[Gap]) -> rusqlite::Result<Option<i64>> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut last = None;
        if !points.is_empty() {
            let first = self.next_seq;
            let last_seq = first + points.len() as i64 - 1;
            tx.prepare_cached(
                "INSERT INTO batches (first_seq, last_seq, data) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![first, last_seq, codec::encode(points)])?;
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?1)")?
                .execute([last_seq.to_string()])?;
            last = Some(last_seq);
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for g in gaps {
                insert.execute(params![g.from_ms, g.to_ms, g.lost as i64, g.reason])?;
            }
        }
        tx.prepare_cached(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_commit_ms', ?1)",
        )?
        .execute([(gantry_broker::message::now_ms() as i64).to_string()])?;
        tx.commit()?;
        if let Some(l) = last {
            self.next_seq = l + 1;
        }
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

    /// The values after `after_seq`, in sequence order: whole batches until
    /// at least `limit` values (or the spool's end). A batch that cannot be
    /// decoded is removed and recorded as a gap of its values, so that one
    /// damaged row never stops the values behind it.
    pub(crate) fn points_after(
        &mut self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<SpooledPoint>, HistorianError> {
        let e = |source| HistorianError::sqlite(&self.path, source);
        let mut out = Vec::new();
        let mut damaged = None;
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT first_seq, last_seq, data FROM batches WHERE last_seq > ?1 ORDER BY first_seq",
                )
                .map_err(e)?;
            let mut rows = stmt.query([after_seq]).map_err(e)?;
            while let Some(r) = rows.next().map_err(e)? {
                let first: i64 = r.get(0).map_err(e)?;
                let last: i64 = r.get(1).map_err(e)?;
                let blob = r.get_ref(2).map_err(e)?.as_blob().unwrap_or(&[]);
                match codec::decode(blob, &mut self.topics) {
                    Ok(points) if points.len() as i64 == last - first + 1 => {
                        out.extend(
                            (first..)
                                .zip(points)
                                .filter(|(seq, _)| *seq > after_seq)
                                .map(|(seq, point)| SpooledPoint { seq, point }),
                        );
                    }
                    Ok(points) => {
                        damaged = Some((
                            first,
                            last,
                            format!("holds {} values, not {}", points.len(), last - first + 1),
                        ));
                        break;
                    }
                    Err(why) => {
                        damaged = Some((first, last, why.0.to_string()));
                        break;
                    }
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        if let Some((first, last, why)) = damaged {
            self.set_aside(first, last, &why)?;
        }
        Ok(out)
    }

    /// Removes an undecodable batch and records its values as lost.
    fn set_aside(&mut self, first: i64, last: i64, why: &str) -> Result<(), HistorianError> {
        let lost = (last - first + 1).max(0);
        tracing::error!(
            spool = %self.path.display(),
            first_seq = first,
            last_seq = last,
            "history spool batch cannot be read ({why}); its {lost} values are recorded as a gap"
        );
        let e = |source| HistorianError::sqlite(&self.path, source);
        let now = gantry_broker::message::now_ms() as i64;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(e)?;
        tx.execute(
            "INSERT INTO gaps (from_ms, to_ms, lost, reason) VALUES (?1, ?1, ?2, ?3)",
            params![
                now,
                lost,
                format!("values {first}..={last} of the history spool were damaged on disk and could not be read ({why})")
            ],
        )
        .map_err(e)?;
        tx.execute("DELETE FROM batches WHERE first_seq = ?1", [first])
            .map_err(e)?;
        tx.commit().map_err(e)
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
        tx.execute("DELETE FROM batches WHERE last_seq <= ?1", [points_seq])
            .map_err(e)?;
        tx.execute("DELETE FROM gaps WHERE seq <= ?1", [gaps_seq])
            .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// The latest sequence numbers spooled so far (values, gaps).
    pub(crate) fn last_seqs(&self) -> Result<(i64, i64), HistorianError> {
        let e = self.err();
        let p = last_point_seq(&self.conn).map_err(&e)?;
        let g: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM gaps", [], |r| r.get(0))
            .map_err(&e)?;
        Ok((p, g.unwrap_or(0)))
    }

    /// The sequence number before the first value still spooled (the last
    /// one appended when the spool is empty).
    pub(crate) fn drained_before(&self) -> Result<i64, HistorianError> {
        let first: Option<i64> = self
            .conn
            .query_row("SELECT min(first_seq) FROM batches", [], |r| r.get(0))
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
                "SELECT EXISTS (SELECT 1 FROM batches WHERE first_seq <= ?1) OR EXISTS (SELECT 1 FROM gaps WHERE seq <= ?2)",
                params![points_seq, gaps_seq],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Values still spooled.
    pub(crate) fn pending(&self) -> Result<u64, HistorianError> {
        pending_values(&self.conn).map_err(self.err())
    }

    /// Returns freed pages to the file system and trims the WAL (after the
    /// spool drained).
    pub(crate) fn compact(&self) {
        let _ = self.conn.execute_batch("PRAGMA incremental_vacuum;");
        let _ = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE");
    }
}

/// The sequence number of the last value ever appended (0 for a new spool).
pub(crate) fn last_point_seq(conn: &Connection) -> rusqlite::Result<i64> {
    let recorded: i64 = meta(conn, "last_seq")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let held: Option<i64> =
        conn.query_row("SELECT max(last_seq) FROM batches", [], |r| r.get(0))?;
    Ok(recorded.max(held.unwrap_or(0)))
}

/// Values held in the spool.
pub(crate) fn pending_values(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM batches",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
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
