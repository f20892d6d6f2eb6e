//! The applier: one thread that moves spooled values into the embedded store
//! in large batches.
//!
//! Acknowledgements wait only for the spool's small append-only commit; the
//! store's own commits rewrite a B-tree leaf per tag and per rollup table, so
//! they are cheapest when each carries many values per tag. The applier reads
//! up to [`APPLY_BATCH`] values in spool order, writes them with
//! [`SqliteSink::apply`] (which records in the same transaction how far the
//! spool is applied, so a crash never applies a value twice or skips one),
//! then deletes them from the spool. At a low rate a batch is whatever
//! arrived since the last one, so values reach the store within a commit or
//! two of their acknowledgement.
//!
//! On a clean stop it drains the spool first (for at most [`DRAIN_WAIT`]);
//! anything left is applied on the next start, before new values.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::config::HistorianConfig;
use crate::error::HistorianError;
use crate::point::{Gap, Point};
use crate::spool::{Shared, SpoolReader, SpoolSink};
use crate::writer::Sink;

use super::sink::{AppliedMark, SqliteSink, read_applied};

/// Most values applied in one store transaction.
pub const APPLY_BATCH: usize = 50_000;
const APPLY_GAPS: usize = 1_000;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long a clean stop keeps applying what is spooled.
pub const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// Applied values after which a drained spool is compacted.
const COMPACT_AFTER: u64 = 500_000;

/// The running applier thread.
pub(crate) struct Applier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Applier {
    /// Starts applying what `spool` holds (and whatever an earlier run left)
    /// into `store`.
    pub(crate) fn spawn(
        store: SqliteSink,
        spool: &SpoolSink,
        config: &HistorianConfig,
    ) -> Result<Applier, HistorianError> {
        let shared = spool.shared.clone();
        let mut worker = Worker {
            store,
            spool_path: spool.spool_path().to_path_buf(),
            fsync: config.fsync,
            shared: shared.clone(),
            reader: None,
            spool_id: String::new(),
            through: (0, 0),
            since_compact: 0,
        };
        let thread = std::thread::Builder::new()
            .name("gantry-history-apply".into())
            .spawn(move || {
                yield_to_acknowledgements();
                let shared = worker.shared.clone();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                if run.is_err() {
                    tracing::error!(
                        "the history applier failed unexpectedly; values stay in the spool and are applied after a restart"
                    );
                }
                shared.update(|s| s.finished = true);
            })
            .map_err(|e| HistorianError::Io {
                path: spool.spool_path().to_path_buf(),
                source: e,
            })?;
        Ok(Applier {
            shared,
            thread: Some(thread),
        })
    }

    /// Applies what is spooled (within [`DRAIN_WAIT`]), closes the store and
    /// stops.
    pub(crate) fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.update(|s| s.stop = true);
        if thread.join().is_err() {
            tracing::error!("the history applier thread panicked");
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Lowers this thread's scheduling priority (nice 10): when the broker, the
/// spool writer and the applier compete for a core, acknowledgements go
/// first and the applier catches up in the slack. Nothing is lost by it:
/// what waits is already durable in the spool.
fn yield_to_acknowledgements() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no
        // memory is shared with the kernel.
        let ok = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) == 0
        };
        if !ok {
            tracing::debug!("could not lower the history applier's priority");
        }
    }
}

enum Cycle {
    Applied,
    Idle,
}

struct Worker {
    store: SqliteSink,
    spool_path: PathBuf,
    fsync: bool,
    shared: Arc<Shared>,
    reader: Option<SpoolReader>,
    spool_id: String,
    /// Spool sequences applied and committed in the store (values, gaps).
    through: (i64, i64),
    since_compact: u64,
}

impl Worker {
    fn run(&mut self) {
        let mut failures = 0u32;
        let mut backoff = BACKOFF_FIRST;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            let (stop, spooled) = {
                let s = self.shared.lock();
                (s.stop, s.spooled)
            };
            if stop && drain_deadline.is_none() {
                drain_deadline = Some(Instant::now() + DRAIN_WAIT);
            }
            if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    backlog = self.shared.backlog(),
                    "stopping before the history spool is applied; the rest is applied on the next start"
                );
                break;
            }
            match self.cycle() {
                Ok(cycle) => {
                    if failures > 0 {
                        tracing::info!(failures, "history store writable again");
                        failures = 0;
                        backoff = BACKOFF_FIRST;
                        self.shared.update(|s| s.last_error = None);
                    }
                    if let Cycle::Idle = cycle {
                        if stop {
                            break;
                        }
                        self.shared.wait_while(IDLE_WAIT, |s| {
                            !s.stop && s.spooled == spooled && s.maintenance_due.is_none()
                        });
                    }
                }
                Err(e) => {
                    // The store rolled back; start over from what it recorded.
                    self.reader = None;
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(
                            failures,
                            "cannot apply history to the store ({e}); values stay in the spool, retrying in {backoff:?}"
                        );
                    }
                    let text = e.to_string();
                    self.shared.update(|s| s.last_error = Some(text));
                    if stop && failures >= 3 {
                        break;
                    }
                    self.shared.wait_while(backoff, |s| !s.stop);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Err(e) = Sink::close(&mut self.store) {
            tracing::warn!("history store did not close cleanly: {e}");
        }
    }

    /// One step: open the spool if needed, run due retention, apply one batch.
    fn cycle(&mut self) -> Result<Cycle, HistorianError> {
        if self.reader.is_none() {
            let mut reader = SpoolReader::open(&self.spool_path, self.fsync)?;
            self.spool_id = reader.spool_id()?;
            self.through = self.store.applied(&self.spool_id)?;
            // A crash between the store's commit and the spool's delete
            // leaves applied rows behind: they go now.
            reader.delete_through(self.through.0, self.through.1)?;
            let before = reader.drained_before()?;
            self.shared
                .update(|s| s.drained_seq = s.drained_seq.max(before));
            self.reader = Some(reader);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(HistorianError::Stopped);
        };
        let due = self.shared.lock().maintenance_due.take();
        if let Some(now_ms) = due {
            Sink::maintain(&mut self.store, now_ms)?;
        }
        let spooled = reader.points_after(self.through.0, APPLY_BATCH)?;
        let spooled_gaps = reader.gaps_after(self.through.1, APPLY_GAPS)?;
        if spooled.is_empty() && spooled_gaps.is_empty() {
            if self.since_compact >= COMPACT_AFTER && reader.pending()? == 0 {
                reader.compact();
                self.since_compact = 0;
            }
            return Ok(Cycle::Idle);
        }
        let mark = AppliedMark {
            spool_id: &self.spool_id,
            points_seq: spooled.last().map_or(self.through.0, |p| p.seq),
            gaps_seq: spooled_gaps.last().map_or(self.through.1, |g| g.seq),
        };
        let through = (mark.points_seq, mark.gaps_seq);
        let count = spooled.len();
        let points: Vec<Point> = spooled.into_iter().map(|p| p.point).collect();
        let gaps: Vec<Gap> = spooled_gaps.into_iter().map(|g| g.gap).collect();
        self.store.apply(&points, &gaps, &mark)?;
        self.through = through;
        reader.delete_through(through.0, through.1)?;
        self.since_compact += count as u64;
        self.shared.update(|s| {
            s.shipped += count as u64;
            s.drained_seq = s.drained_seq.max(through.0);
        });
        Ok(Cycle::Applied)
    }
}

/// Waits until every value appended to `spool` before this call is applied
/// to `store`, so that a query sees everything acknowledged before it
/// started. Returns the values still not applied: more than 0 when the
/// applier made no progress for `idle_limit` (Gantry is not running, or the
/// store is failing) or `max_wait` passed. No spool file means nothing waits.
pub fn wait_applied(
    store: &Path,
    spool: &Path,
    idle_limit: Duration,
    max_wait: Duration,
) -> Result<u64, HistorianError> {
    if !spool.exists() || !store.exists() {
        return Ok(0);
    }
    let open = |path: &Path| {
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(c)
        })
        .map_err(|source| HistorianError::sqlite(path, source))
    };
    let spool_conn = open(spool)?;
    let e = |source| HistorianError::sqlite(spool, source);
    let target = crate::spool::last_point_seq(&spool_conn).map_err(e)?;
    let spool_id: Option<String> = spool_conn
        .query_row("SELECT value FROM meta WHERE key = 'spool_id'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(e)?;
    let Some(spool_id) = spool_id else {
        return Ok(0);
    };
    let store_conn = open(store)?;
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_applied = None;
    loop {
        let (applied, _) = read_applied(&store_conn, &spool_id)
            .map_err(|source| HistorianError::sqlite(store, source))?;
        if applied >= target {
            return Ok(0);
        }
        let pending: i64 = spool_conn
            .query_row(
                "SELECT coalesce(sum(last_seq - max(first_seq, ?1 + 1) + 1), 0) FROM batches \
                 WHERE last_seq > ?1 AND first_seq <= ?2",
                [applied, target],
                |r| r.get(0),
            )
            .map_err(e)?;
        if pending == 0 {
            return Ok(0);
        }
        if last_applied != Some(applied) {
            last_applied = Some(applied);
            last_progress = Instant::now();
        }
        if last_progress.elapsed() >= idle_limit || started.elapsed() >= max_wait {
            return Ok(pending as u64);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use gantry_model::{Quality, Value};

    use super::*;
    use crate::sqlite::{settle, spool_path, start};

    fn point(topic: &str, ts_ms: i64, v: f64) -> Point {
        Point {
            topic: topic.into(),
            ts_ms,
            value: Value::Float(v),
            quality: Quality::Good,
        }
    }

    /// (points, rollup_1m count sum) for a topic, read straight from the file.
    fn stored(store: &Path, topic: &str) -> (i64, i64) {
        let conn = Connection::open(store).expect("open store");
        conn.query_row(
            "SELECT (SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id WHERE s.topic = ?1),
                    (SELECT coalesce(sum(r.count), 0) FROM rollup_1m r JOIN series s ON s.id = r.series_id WHERE s.topic = ?1)",
            [topic],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count")
    }

    fn spooled(spool: &Path) -> u64 {
        let conn = Connection::open(spool).expect("open spool");
        crate::spool::pending_values(&conn).expect("count")
    }

    #[test]
    fn spooled_values_reach_the_store_and_leave_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("history.sqlite");
        let config = HistorianConfig::default();
        let (mut sink, stop, shared) = start(&store, &config).expect("start");
        for batch in 0..20 {
            let points: Vec<Point> = (0..500)
                .map(|i| point("a/b", batch * 500 + i, i as f64))
                .collect();
            sink.write(&points, &[]).expect("spool");
        }
        assert_eq!(settle(&store).expect("settle"), 0);
        assert_eq!(stored(&store, "a/b"), (10_000, 10_000));
        assert_eq!(shared.backlog(), 0);
        sink.close().expect("close spool");
        stop();
        assert_eq!(spooled(&spool_path(&store)), 0);
    }

    #[test]
    fn a_crash_after_the_store_commit_applies_nothing_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("history.sqlite");
        let spool = spool_path(&store);
        let config = HistorianConfig::default();
        let points: Vec<Point> = (0..1000).map(|i| point("a/b", i * 10, 1.0)).collect();
        {
            // The state a crash leaves between the store's commit and the
            // spool's delete: applied and recorded, still spooled.
            let mut sink = SpoolSink::open(&spool, &config).expect("spool");
            sink.write(&points, &[]).expect("spool");
            let reader = SpoolReader::open(&spool, false).expect("reader");
            let id = reader.spool_id().expect("id");
            let mut target = SqliteSink::open_behind_spool(&store, &config).expect("store");
            target
                .apply(
                    &points[..600],
                    &[],
                    &AppliedMark {
                        spool_id: &id,
                        points_seq: 600,
                        gaps_seq: 0,
                    },
                )
                .expect("apply");
        }
        assert_eq!(spooled(&spool), 1000);
        let (mut sink, stop, _) = start(&store, &config).expect("restart");
        assert_eq!(settle(&store).expect("settle"), 0);
        // Rollups would count the first 600 twice if they were re-applied.
        assert_eq!(stored(&store, "a/b"), (1000, 1000));
        // The unclean stop is recorded once, by the spool.
        let gaps: i64 = Connection::open(&store)
            .expect("open")
            .query_row("SELECT count(*) FROM gaps", [], |r| r.get(0))
            .expect("gaps");
        assert_eq!(gaps, 1);
        sink.close().expect("close");
        stop();
        assert_eq!(spooled(&spool), 0);
    }

    #[test]
    fn a_new_spool_file_is_applied_from_its_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("history.sqlite");
        let config = HistorianConfig::default();
        for round in 0..2 {
            let (mut sink, stop, _) = start(&store, &config).expect("start");
            let points: Vec<Point> = (0..100)
                .map(|i| point("a/b", round * 1000 + i, 2.0))
                .collect();
            sink.write(&points, &[]).expect("spool");
            assert_eq!(settle(&store).expect("settle"), 0);
            sink.close().expect("close");
            stop();
            // The next round's spool restarts its sequence at 1.
            std::fs::remove_file(spool_path(&store)).expect("remove spool");
        }
        assert_eq!(stored(&store, "a/b"), (200, 200));
    }

    #[test]
    fn a_clean_stop_applies_everything_spooled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("history.sqlite");
        let config = HistorianConfig::default();
        let (mut sink, stop, _) = start(&store, &config).expect("start");
        for batch in 0..50 {
            let points: Vec<Point> = (0..2000)
                .map(|i| point(&format!("t/{}", i % 100), batch * 2000 + i, 1.0))
                .collect();
            sink.write(&points, &[]).expect("spool");
        }
        sink.close().expect("close");
        stop();
        let conn = Connection::open(&store).expect("open");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM points", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 100_000);
        let open: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'open'", [], |r| {
                r.get(0)
            })
            .expect("open flag");
        assert_eq!(open, "0");
    }

    #[test]
    fn a_damaged_spool_batch_becomes_a_gap_and_the_rest_is_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("history.sqlite");
        let spool = spool_path(&store);
        let config = HistorianConfig::default();
        {
            let mut sink = SpoolSink::open(&spool, &config).expect("spool");
            for batch in 0..3 {
                let points: Vec<Point> =
                    (0..10).map(|i| point("a/b", batch * 10 + i, 1.0)).collect();
                sink.write(&points, &[]).expect("spool");
            }
            sink.close().expect("close");
            Connection::open(&spool)
                .expect("open")
                .execute(
                    "UPDATE batches SET data = x'01ffffff' WHERE first_seq = 11",
                    [],
                )
                .expect("damage");
        }
        let (mut sink, stop, _) = start(&store, &config).expect("start");
        assert_eq!(settle(&store).expect("settle"), 0);
        assert_eq!(stored(&store, "a/b"), (20, 20));
        let (lost, reason): (i64, String) = Connection::open(&store)
            .expect("open")
            .query_row("SELECT lost, reason FROM gaps", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("one gap");
        assert_eq!(lost, 10);
        assert!(
            reason.contains("values 11..=20") && reason.contains("damaged"),
            "{reason}"
        );
        sink.close().expect("close");
        stop();
    }
}
