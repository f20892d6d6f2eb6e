//! The shipper: one thread that moves spooled rows to PostgreSQL.
//!
//! It connects (retrying with back-off, 0.5 s doubling to 10 s), creates the
//! schema if needed, then loops: read up to [`BATCH_ROWS`] spooled values in
//! sequence order, ship them in one PostgreSQL transaction, commit, then
//! delete them from the spool. Shipping a chunk:
//!
//! 1. topics resolve to series ids (`INSERT … ON CONFLICT (topic) DO UPDATE …
//!    RETURNING`, cached);
//! 2. the values go by binary `COPY` into a temporary staging table (a value
//!    repeated at one timestamp within the chunk keeps the last by spool
//!    sequence), then `INSERT … SELECT … ON CONFLICT DO UPDATE` into `points`:
//!    a later write replaces, as in SQLite;
//! 3. rollups follow [`RollupTracker`] exactly as the SQLite sink does:
//!    in-order values merge into the open bucket, anything else is recomputed
//!    from the raw rows in PostgreSQL within the same transaction;
//! 4. series first/last timestamps and types, and gaps, are updated.
//!
//! A crash between the commit and the spool delete re-ships the same rows;
//! every step above is idempotent (gaps by a per-spool high-water mark in
//! `meta`). Any error rolls back, forgets the caches and the tracker (the
//! database is the truth), and reconnects. Retention runs here too, between
//! shipments.
//!
//! The shipper assumes it is the only writer of its schema.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gantry_model::{Quality, Value};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, Statement};
use serde::Serialize;

use crate::config::{HistorianConfig, PostgresConfig};
use crate::error::HistorianError;
use crate::point::{ValueType, numeric, quality_code};
use crate::rollup::{RollupLevel, RollupRow, RollupTracker};

use super::Target;
use super::schema::{self, Flavor};
use crate::spool::{Shared, SpoolReader, SpoolSink, SpooledGap, SpooledPoint};

/// Most values shipped in one PostgreSQL transaction.
pub const BATCH_ROWS: usize = 20_000;
/// Most gaps shipped in one transaction.
const BATCH_GAPS: usize = 1_000;
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Idle wake-up when nothing signals new rows (another process's spool
/// writes, retention).
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long [`Shipper::stop`] waits for a busy shipper before leaving it.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// Shipped values after which a drained spool is compacted.
const COMPACT_AFTER: u64 = 200_000;

/// Whether shipped rows are deleted from the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipMode {
    /// The normal way: delete after the PostgreSQL commit.
    Delete,
    /// Leave them spooled, as after a crash between the commit and the
    /// delete: the next shipper ships them again (for tests and tools).
    KeepSpooled,
}

/// The shipper's state for health and tests.
#[derive(Debug, Clone, Serialize)]
pub struct ShipperStatus {
    pub connected: bool,
    /// Values shipped since start.
    pub shipped: u64,
    /// The last error, while it persists.
    pub last_error: Option<String>,
}

/// The running shipper thread.
pub struct Shipper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    spool: PathBuf,
    describe: String,
}

impl Shipper {
    /// Starts shipping what `sink` spools (and whatever an earlier run left).
    pub(crate) fn spawn(
        target: Target,
        sink: &SpoolSink,
        config: &HistorianConfig,
    ) -> Result<Shipper, HistorianError> {
        let shared = sink.shared.clone();
        let spool = sink.spool_path().to_path_buf();
        let describe = target.describe().to_string();
        let mut worker = Worker::new(target, &spool, config, shared.clone(), ShipMode::Delete);
        let thread = std::thread::Builder::new()
            .name("gantry-pg-shipper".into())
            .spawn(move || {
                let shared = worker.shared.clone();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                if run.is_err() {
                    tracing::error!(
                        "the history shipper failed unexpectedly; values stay in the spool and are shipped after a restart"
                    );
                }
                shared.update(|s| {
                    s.finished = true;
                    s.connected = false;
                });
            })
            .map_err(|e| {
                HistorianError::Postgres(format!(
                    "cannot start the shipper thread for {describe}: {e}"
                ))
            })?;
        Ok(Shipper {
            shared,
            thread: Some(thread),
            spool,
            describe: sink_describe(&sink.spool_path().display().to_string(), &describe),
        })
    }

    pub fn status(&self) -> ShipperStatus {
        let s = self.shared.lock();
        ShipperStatus {
            connected: s.connected,
            shipped: s.shipped,
            last_error: s.last_error.clone(),
        }
    }

    /// Waits until everything spooled before this call is in PostgreSQL (and
    /// the schema exists), or fails after `timeout` naming the last error.
    pub fn wait_shipped(&self, timeout: Duration) -> Result<(), HistorianError> {
        let deadline = Instant::now() + timeout;
        let spool = SpoolReader::open(&self.spool, false)?;
        let (points, gaps) = spool.last_seqs()?;
        loop {
            let (ready, finished) = {
                let s = self.shared.lock();
                (s.ready, s.finished)
            };
            if ready && !spool.holds_any_through(points, gaps)? {
                return Ok(());
            }
            if finished {
                return Err(HistorianError::Postgres(format!(
                    "{}: the shipper has stopped ({} values pending)",
                    self.describe,
                    spool.pending().unwrap_or(0)
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                let s = self.status();
                return Err(HistorianError::Postgres(format!(
                    "{}: spooled values not shipped within {timeout:?} ({} pending; last error: {})",
                    self.describe,
                    spool.pending().unwrap_or(0),
                    s.last_error.as_deref().unwrap_or("none")
                )));
            }
            let shipped = self.shared.lock().shipped;
            self.shared
                .wait_while((deadline - now).min(Duration::from_millis(100)), |s| {
                    s.shipped == shipped && !s.finished
                });
        }
    }

    /// Stops the thread promptly; unshipped rows stay in the spool.
    pub fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.update(|s| s.stop = true);
        let finished = self.shared.wait_while(STOP_WAIT, |s| !s.finished);
        if finished {
            if thread.join().is_err() {
                tracing::error!("the history shipper thread panicked");
            }
        } else {
            tracing::warn!(
                "{}: the history shipper is still busy after {STOP_WAIT:?}; leaving it to finish in the background (unshipped values stay spooled)",
                self.describe
            );
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn sink_describe(spool: &str, target: &str) -> String {
    format!("history spool {spool} -> {target}")
}

/// Ships everything spooled in `spool` on the calling thread and returns the
/// number of values shipped (for tools and tests; not while a [`Shipper`]
/// runs on the same spool). Errors are returned, not retried.
pub fn ship_spooled(
    pg: &PostgresConfig,
    spool: &Path,
    config: &HistorianConfig,
    mode: ShipMode,
) -> Result<u64, HistorianError> {
    let target = Target::new(pg)?;
    let mut worker = Worker::new(target, spool, config, Arc::new(Shared::default()), mode);
    let mut total = 0u64;
    loop {
        match worker.cycle()? {
            Cycle::Shipped(values) => total += values as u64,
            Cycle::Idle => return Ok(total),
        }
    }
}

enum Cycle {
    /// A chunk went out (this many values, perhaps 0 with gaps only).
    Shipped(usize),
    Idle,
}

/// The shipper's loop state.
struct Worker {
    target: Target,
    spool_path: PathBuf,
    config: HistorianConfig,
    shared: Arc<Shared>,
    mode: ShipMode,
    spool: Option<SpoolReader>,
    spool_id: Option<String>,
    session: Option<Session>,
    /// Spool sequences shipped and committed (values, gaps).
    shipped_through: (i64, i64),
    /// Shipped rows whose deletion from the spool has not succeeded yet.
    delete_pending: bool,
    flavor_logged: Option<Flavor>,
    since_compact: u64,
}

impl Worker {
    fn new(
        target: Target,
        spool: &Path,
        config: &HistorianConfig,
        shared: Arc<Shared>,
        mode: ShipMode,
    ) -> Worker {
        Worker {
            target,
            spool_path: spool.to_path_buf(),
            config: config.clone(),
            shared,
            mode,
            spool: None,
            spool_id: None,
            session: None,
            shipped_through: (0, 0),
            delete_pending: false,
            flavor_logged: None,
            since_compact: 0,
        }
    }

    fn run(&mut self) {
        let mut failures = 0u32;
        let mut backoff = BACKOFF_FIRST;
        loop {
            let (stop, spooled) = {
                let s = self.shared.lock();
                (s.stop, s.spooled)
            };
            if stop {
                return;
            }
            match self.cycle() {
                Ok(cycle) => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            "{}: shipping history again",
                            self.target.describe()
                        );
                        failures = 0;
                        backoff = BACKOFF_FIRST;
                        self.shared.update(|s| s.last_error = None);
                    }
                    if let Cycle::Idle = cycle {
                        self.shared.wait_while(IDLE_WAIT, |s| {
                            !s.stop && s.spooled == spooled && s.maintenance_due.is_none()
                        });
                    }
                }
                Err(e) => {
                    // Roll back happened with the failed transaction; the
                    // database is the truth: forget caches and reconnect.
                    self.session = None;
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(
                            failures,
                            "cannot ship history to PostgreSQL ({e}); values stay in the spool, retrying in {backoff:?}"
                        );
                    }
                    let text = e.to_string();
                    self.shared.update(|s| {
                        s.connected = false;
                        s.last_error = Some(text);
                    });
                    self.shared.wait_while(backoff, |s| !s.stop);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One step: connect if needed, finish a pending delete, run due
    /// retention, ship one chunk.
    fn cycle(&mut self) -> Result<Cycle, HistorianError> {
        if self.spool.is_none() {
            let spool = SpoolReader::open(&self.spool_path, self.config.fsync)?;
            self.spool_id = Some(spool.spool_id()?);
            let before = spool.drained_before()?;
            self.shared
                .update(|s| s.drained_seq = s.drained_seq.max(before));
            self.spool = Some(spool);
        }
        if self.session.is_none() {
            let (session, flavor) = Session::open(&self.target)?;
            if self.flavor_logged.as_ref() != Some(&flavor) {
                flavor.log(&self.target);
                self.flavor_logged = Some(flavor);
            }
            self.session = Some(session);
            self.shared.update(|s| {
                s.connected = true;
                s.ready = true;
            });
        }
        let (Some(spool), Some(session)) = (self.spool.as_mut(), self.session.as_mut()) else {
            return Err(HistorianError::Stopped);
        };
        if self.delete_pending {
            spool.delete_through(self.shipped_through.0, self.shipped_through.1)?;
            self.delete_pending = false;
        }
        let due = self.shared.lock().maintenance_due.take();
        if let Some(now_ms) = due {
            let removed = session.retention(&self.config, now_ms)?;
            if removed > 0 {
                tracing::info!(removed, "history retention removed old rows");
            }
        }
        let points = spool.points_after(self.shipped_through.0, BATCH_ROWS)?;
        let gaps = spool.gaps_after(self.shipped_through.1, BATCH_GAPS)?;
        if points.is_empty() && gaps.is_empty() {
            if self.since_compact >= COMPACT_AFTER && spool.pending()? == 0 {
                spool.compact();
                self.since_compact = 0;
            }
            return Ok(Cycle::Idle);
        }
        let spool_id = self.spool_id.as_deref().unwrap_or("unknown");
        session.ship(&points, &gaps, spool_id)?;
        if let Some(last) = points.last() {
            self.shipped_through.0 = last.seq;
        }
        if let Some(last) = gaps.last() {
            self.shipped_through.1 = last.seq;
        }
        if self.mode == ShipMode::Delete {
            self.delete_pending = true;
            spool.delete_through(self.shipped_through.0, self.shipped_through.1)?;
            self.delete_pending = false;
        }
        self.since_compact += points.len() as u64;
        let drained = self.shipped_through.0;
        self.shared.update(|s| {
            s.shipped += points.len() as u64;
            s.drained_seq = s.drained_seq.max(drained);
        });
        Ok(Cycle::Shipped(points.len()))
    }
}

#[derive(Debug, Clone, Copy)]
struct SeriesMeta {
    id: i64,
    value_type: ValueType,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    touched: bool,
}

/// A rollup row with its series id.
type SeriesRow<'a> = (i64, &'a RollupRow);

/// One value as it goes into the staging table.
struct Stage {
    series_id: i64,
    ts_ms: i64,
    num: Option<f64>,
    txt: Option<String>,
    quality: i16,
}

struct Statements {
    resolve: Statement,
    copy: Statement,
    insert_points: Statement,
    recompute: Statement,
    rollup_10s: Statement,
    rollup_1m: Statement,
    rollup_1h: Statement,
    update_series: Statement,
    get_meta: Statement,
    set_meta: Statement,
    insert_gaps: Statement,
}

/// A connection with its prepared statements, series cache and rollup
/// tracker; dropped on any error.
struct Session {
    client: Client,
    target: Target,
    stmts: Statements,
    series: HashMap<Arc<str>, SeriesMeta>,
    rollups: RollupTracker,
}

const ROLLUP_UPSERT: &str = "INSERT INTO {s}.{table} AS r \
    (series_id, bucket_ms, count, bad_count, min, max, sum, first_ms, first, last_ms, last) \
    SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::float8[], $6::float8[], \
                         $7::float8[], $8::int8[], $9::float8[], $10::int8[], $11::float8[]) \
    ON CONFLICT (series_id, bucket_ms) DO UPDATE SET count = EXCLUDED.count, bad_count = EXCLUDED.bad_count, \
        min = EXCLUDED.min, max = EXCLUDED.max, sum = EXCLUDED.sum, first_ms = EXCLUDED.first_ms, \
        first = EXCLUDED.first, last_ms = EXCLUDED.last_ms, last = EXCLUDED.last";

impl Session {
    fn open(target: &Target) -> Result<(Session, Flavor), HistorianError> {
        let mut client = target.connect()?;
        let flavor = schema::ensure(&mut client, target)?;
        let e = target.err("prepare the history shipper");
        client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS gantry_staging \
                 (series_id int8, ts_ms int8, num float8, txt text, quality int2) ON COMMIT DELETE ROWS",
            )
            .map_err(&e)?;
        let mut prepare = |sql: &str| client.prepare(&target.sql(sql)).map_err(&e);
        let stmts = Statements {
            resolve: prepare(
                "INSERT INTO {s}.series AS s (topic, value_type) SELECT * FROM unnest($1::text[], $2::text[]) \
                 ON CONFLICT (topic) DO UPDATE SET value_type = s.value_type \
                 RETURNING s.id, s.topic, s.value_type, s.first_ms, s.last_ms",
            )?,
            copy: prepare(
                "COPY pg_temp.gantry_staging (series_id, ts_ms, num, txt, quality) FROM STDIN BINARY",
            )?,
            insert_points: prepare(
                "INSERT INTO {s}.points AS p (series_id, ts_ms, num, txt, quality) \
                 SELECT series_id, ts_ms, num, txt, quality FROM pg_temp.gantry_staging \
                 ON CONFLICT (series_id, ts_ms) DO UPDATE SET num = EXCLUDED.num, txt = EXCLUDED.txt, quality = EXCLUDED.quality",
            )?,
            recompute: prepare(
                "SELECT b.ord, p.ts_ms, p.num, p.quality \
                 FROM unnest($1::int8[], $2::int8[], $3::int8[]) WITH ORDINALITY AS b(series_id, bucket_ms, end_ms, ord) \
                 JOIN {s}.points p ON p.series_id = b.series_id AND p.ts_ms >= b.bucket_ms \
                      AND p.ts_ms < b.end_ms AND p.txt IS NULL \
                 ORDER BY b.ord, p.ts_ms",
            )?,
            rollup_10s: prepare(
                &ROLLUP_UPSERT.replace("{table}", RollupLevel::TenSeconds.table()),
            )?,
            rollup_1m: prepare(&ROLLUP_UPSERT.replace("{table}", RollupLevel::Minute.table()))?,
            rollup_1h: prepare(&ROLLUP_UPSERT.replace("{table}", RollupLevel::Hour.table()))?,
            update_series: prepare(
                "UPDATE {s}.series AS s SET first_ms = u.first_ms, last_ms = u.last_ms, value_type = u.value_type \
                 FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[]) AS u(id, first_ms, last_ms, value_type) \
                 WHERE s.id = u.id",
            )?,
            get_meta: prepare("SELECT value FROM {s}.meta WHERE key = $1")?,
            set_meta: prepare(
                "INSERT INTO {s}.meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )?,
            insert_gaps: prepare(
                "INSERT INTO {s}.gaps (from_ms, to_ms, lost, reason) \
                 SELECT f, t, l, r FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[]) WITH ORDINALITY AS g(f, t, l, r, ord) \
                 ORDER BY ord",
            )?,
        };
        Ok((
            Session {
                client,
                target: target.clone(),
                stmts,
                series: HashMap::new(),
                rollups: RollupTracker::default(),
            },
            flavor,
        ))
    }

    /// Ships one chunk in one transaction. On error the transaction is rolled
    /// back (and the caller drops the session).
    fn ship(
        &mut self,
        points: &[SpooledPoint],
        gaps: &[SpooledGap],
        spool_id: &str,
    ) -> Result<(), HistorianError> {
        let result = self.ship_inner(points, gaps, spool_id);
        if result.is_err() {
            self.series.clear();
            self.rollups.reset();
        }
        result
    }

    fn ship_inner(
        &mut self,
        points: &[SpooledPoint],
        gaps: &[SpooledGap],
        spool_id: &str,
    ) -> Result<(), HistorianError> {
        let target = &self.target;
        let e = target.err("ship history");
        let stmts = &self.stmts;
        let mut tx = self.client.transaction().map_err(&e)?;

        // 1. Series of topics not cached yet, created or found in one statement.
        let mut new_topics: Vec<String> = Vec::new();
        let mut new_types: Vec<&str> = Vec::new();
        let mut originals: HashMap<String, Arc<str>> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for sp in points {
            let topic = &sp.point.topic;
            if !self.series.contains_key(topic) && seen.insert(topic) {
                let text = pg_text(topic).into_owned();
                originals.insert(text.clone(), topic.clone());
                new_topics.push(text);
                new_types.push(ValueType::of(&sp.point.value).as_str());
            }
        }
        if !new_topics.is_empty() {
            for row in tx
                .query(&stmts.resolve, &[&new_topics, &new_types])
                .map_err(&e)?
            {
                let topic: String = row.try_get(1).map_err(&e)?;
                let value_type: String = row.try_get(2).map_err(&e)?;
                let Some(original) = originals.get(&topic) else {
                    continue;
                };
                self.series.insert(
                    original.clone(),
                    SeriesMeta {
                        id: row.try_get(0).map_err(&e)?,
                        value_type: ValueType::parse(&value_type).unwrap_or(ValueType::Float),
                        first_ms: row.try_get(3).map_err(&e)?,
                        last_ms: row.try_get(4).map_err(&e)?,
                        touched: false,
                    },
                );
            }
        }

        // 2a. Late values (at or before their series' latest timestamp) may
        // replace a stored value: only those force a rollup recomputation;
        // the others merge into their buckets. Ask which already exist.
        let mut late_ids: Vec<i64> = Vec::new();
        let mut late_ts: Vec<i64> = Vec::new();
        {
            let mut last: HashMap<i64, i64> = HashMap::new();
            for sp in points {
                let Some(meta) = self.series.get(&sp.point.topic) else {
                    continue;
                };
                let l = last
                    .entry(meta.id)
                    .or_insert(meta.last_ms.unwrap_or(i64::MIN));
                if sp.point.ts_ms <= *l {
                    late_ids.push(meta.id);
                    late_ts.push(sp.point.ts_ms);
                }
                *l = (*l).max(sp.point.ts_ms);
            }
        }
        let mut stored: std::collections::HashSet<(i64, i64)> = std::collections::HashSet::new();
        if !late_ids.is_empty() {
            let sql = target.sql(
                "SELECT p.series_id, p.ts_ms FROM {s}.points p \
                 JOIN unnest($1::int8[], $2::int8[]) AS l(series_id, ts_ms) \
                   ON p.series_id = l.series_id AND p.ts_ms = l.ts_ms",
            );
            for row in tx.query(&sql, &[&late_ids, &late_ts]).map_err(&e)? {
                stored.insert((row.try_get(0).map_err(&e)?, row.try_get(1).map_err(&e)?));
            }
        }

        // 2. Values, in spool order: staging rows (the last at a timestamp
        // wins), series bounds and types, rollup accounting.
        let mut stage: Vec<Stage> = Vec::with_capacity(points.len());
        let mut at: HashMap<(i64, i64), usize> = HashMap::with_capacity(points.len());
        for sp in points {
            let p = &sp.point;
            let value_type = ValueType::of(&p.value);
            let Some(meta) = self.series.get_mut(&p.topic) else {
                return Err(HistorianError::Postgres(format!(
                    "ship history on {}: no series id for topic {}",
                    target.describe(),
                    p.topic
                )));
            };
            meta.value_type = value_type;
            let prior_last_ms = meta.last_ms;
            meta.first_ms = Some(meta.first_ms.map_or(p.ts_ms, |f| f.min(p.ts_ms)));
            meta.last_ms = Some(meta.last_ms.map_or(p.ts_ms, |l| l.max(p.ts_ms)));
            meta.touched = true;
            let series_id = meta.id;
            // Integers are stored as double precision: exact up to 2^53.
            let (num, txt) = match &p.value {
                Value::Int(i) => (Some(*i as f64), None),
                Value::Bool(b) => (Some(f64::from(u8::from(*b))), None),
                Value::Float(f) => (Some(*f), None),
                Value::Text(t) => (None, Some(pg_text(t).into_owned())),
            };
            let row = Stage {
                series_id,
                ts_ms: p.ts_ms,
                num,
                txt,
                quality: quality_code(p.quality) as i16,
            };
            let replaced =
                stored.contains(&(series_id, p.ts_ms)) || at.contains_key(&(series_id, p.ts_ms));
            match at.entry((series_id, p.ts_ms)) {
                std::collections::hash_map::Entry::Occupied(o) => stage[*o.get()] = row,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(stage.len());
                    stage.push(row);
                }
            }
            // Timestamps within an hour of the smallest i64 have no bucket
            // start (it would overflow): stored, but without rollups, and
            // never passed to the tracker as the series' latest either.
            let earliest = i64::MIN + RollupLevel::Hour.width_ms();
            let has_bucket = p.ts_ms >= earliest;
            let prior_last_ms = prior_last_ms.map(|l| l.max(earliest));
            if value_type.is_numeric() && has_bucket {
                let v = if p.quality == Quality::Bad {
                    None
                } else {
                    numeric(&p.value)
                };
                self.rollups
                    .add(series_id, p.ts_ms, v, prior_last_ms, replaced);
            } else if replaced && has_bucket {
                self.rollups.replaced_by_text(series_id, p.ts_ms);
            }
        }
        if !stage.is_empty() {
            let writer = tx.copy_in(&stmts.copy).map_err(&e)?;
            let mut writer = BinaryCopyInWriter::new(
                writer,
                &[Type::INT8, Type::INT8, Type::FLOAT8, Type::TEXT, Type::INT2],
            );
            for r in &stage {
                writer
                    .write(&[&r.series_id, &r.ts_ms, &r.num, &r.txt, &r.quality])
                    .map_err(&e)?;
            }
            writer.finish().map_err(&e)?;
            tx.execute(&stmts.insert_points, &[]).map_err(&e)?;
        }

        // 3. Rollups, as the SQLite sink does: recompute what the tracker
        // cannot follow from the raw values just written, then the buckets
        // it followed (including those closed within this chunk) override.
        let mut rollups: BTreeMap<(RollupLevel, i64, i64), RollupRow> = BTreeMap::new();
        let recompute = self.rollups.take_recompute();
        if !recompute.is_empty() {
            let ids: Vec<i64> = recompute.iter().map(|r| r.0).collect();
            let buckets: Vec<i64> = recompute.iter().map(|r| r.2).collect();
            // Bucket ends computed here, saturating: SQL arithmetic on
            // extreme timestamps would fail the chunk again and again.
            let ends: Vec<i64> = recompute
                .iter()
                .map(|r| r.2.saturating_add(r.1.width_ms()))
                .collect();
            let mut rows: Vec<RollupRow> =
                recompute.iter().map(|r| RollupRow::empty(r.2)).collect();
            let params: [&(dyn ToSql + Sync); 3] = [&ids, &buckets, &ends];
            let mut it = tx.query_raw(&stmts.recompute, params).map_err(&e)?;
            while let Some(r) = it.next().map_err(&e)? {
                let ord: i64 = r.try_get(0).map_err(&e)?;
                let ts_ms: i64 = r.try_get(1).map_err(&e)?;
                let num: Option<f64> = r.try_get(2).map_err(&e)?;
                let quality: i16 = r.try_get(3).map_err(&e)?;
                if let Some(row) = usize::try_from(ord - 1).ok().and_then(|i| rows.get_mut(i)) {
                    row.add(ts_ms, if quality >= 2 { None } else { num });
                }
            }
            drop(it);
            for ((series_id, level, bucket), row) in recompute.into_iter().zip(rows) {
                self.rollups.recomputed(series_id, level, row);
                rollups.insert((level, series_id, bucket), row);
            }
        }
        for (series_id, level, row) in self.rollups.take_dirty() {
            rollups.insert((level, series_id, row.bucket_ms), row);
        }
        // Late values at new timestamps: merged into the stored rows.
        let deltas = self.rollups.take_deltas();
        for level in RollupLevel::ALL {
            let mine: Vec<&(i64, RollupLevel, RollupRow)> =
                deltas.iter().filter(|d| d.1 == level).collect();
            if mine.is_empty() {
                continue;
            }
            let ids: Vec<i64> = mine.iter().map(|d| d.0).collect();
            let buckets: Vec<i64> = mine.iter().map(|d| d.2.bucket_ms).collect();
            let sql = target.sql(&format!(
                "SELECT r.series_id, r.bucket_ms, r.count, r.bad_count, r.min, r.max, r.sum, \
                        r.first_ms, r.first, r.last_ms, r.last \
                 FROM {{s}}.{} r JOIN unnest($1::int8[], $2::int8[]) AS k(series_id, bucket_ms) \
                   ON r.series_id = k.series_id AND r.bucket_ms = k.bucket_ms",
                level.table()
            ));
            let mut found: HashMap<(i64, i64), RollupRow> = HashMap::new();
            for r in tx.query(&sql, &[&ids, &buckets]).map_err(&e)? {
                let bucket: i64 = r.try_get(1).map_err(&e)?;
                let mut row = RollupRow::empty(bucket);
                row.count = r.try_get::<_, i64>(2).map_err(&e)? as u64;
                row.bad_count = r.try_get::<_, i64>(3).map_err(&e)? as u64;
                if row.count > 0 {
                    row.min = r.try_get(4).map_err(&e)?;
                    row.max = r.try_get(5).map_err(&e)?;
                    row.sum = r.try_get(6).map_err(&e)?;
                    row.first_ms = r.try_get(7).map_err(&e)?;
                    row.first = r.try_get(8).map_err(&e)?;
                    row.last_ms = r.try_get(9).map_err(&e)?;
                    row.last = r.try_get(10).map_err(&e)?;
                }
                found.insert((r.try_get(0).map_err(&e)?, bucket), row);
            }
            for (series_id, _, delta) in mine {
                let mut row = found
                    .remove(&(*series_id, delta.bucket_ms))
                    .unwrap_or_else(|| RollupRow::empty(delta.bucket_ms));
                row.merge(delta);
                rollups.insert((level, *series_id, delta.bucket_ms), row);
            }
        }
        for level in RollupLevel::ALL {
            // A recomputed bucket with no numeric value left (text replaced
            // its last number) has no row.
            let (empty, rows): (Vec<SeriesRow<'_>>, Vec<SeriesRow<'_>>) = rollups
                .iter()
                .filter(|((l, _, _), _)| *l == level)
                .map(|((_, series_id, _), row)| (*series_id, row))
                .partition(|(_, r)| r.count == 0 && r.bad_count == 0);
            if !empty.is_empty() {
                let ids: Vec<i64> = empty.iter().map(|(s, _)| *s).collect();
                let buckets: Vec<i64> = empty.iter().map(|(_, r)| r.bucket_ms).collect();
                let sql = target.sql(&format!(
                    "DELETE FROM {{s}}.{} r USING unnest($1::int8[], $2::int8[]) AS k(series_id, bucket_ms) \
                     WHERE r.series_id = k.series_id AND r.bucket_ms = k.bucket_ms",
                    level.table()
                ));
                tx.execute(&sql, &[&ids, &buckets]).map_err(&e)?;
            }
            if rows.is_empty() {
                continue;
            }
            let has = |r: &RollupRow| r.count > 0;
            let series_ids: Vec<i64> = rows.iter().map(|(s, _)| *s).collect();
            let buckets: Vec<i64> = rows.iter().map(|(_, r)| r.bucket_ms).collect();
            let counts: Vec<i64> = rows.iter().map(|(_, r)| r.count as i64).collect();
            let bad: Vec<i64> = rows.iter().map(|(_, r)| r.bad_count as i64).collect();
            let min: Vec<Option<f64>> = rows.iter().map(|(_, r)| has(r).then_some(r.min)).collect();
            let max: Vec<Option<f64>> = rows.iter().map(|(_, r)| has(r).then_some(r.max)).collect();
            let sum: Vec<Option<f64>> = rows.iter().map(|(_, r)| has(r).then_some(r.sum)).collect();
            let first_ms: Vec<Option<i64>> = rows
                .iter()
                .map(|(_, r)| has(r).then_some(r.first_ms))
                .collect();
            let first: Vec<Option<f64>> = rows
                .iter()
                .map(|(_, r)| has(r).then_some(r.first))
                .collect();
            let last_ms: Vec<Option<i64>> = rows
                .iter()
                .map(|(_, r)| has(r).then_some(r.last_ms))
                .collect();
            let last: Vec<Option<f64>> =
                rows.iter().map(|(_, r)| has(r).then_some(r.last)).collect();
            let stmt = match level {
                RollupLevel::TenSeconds => &stmts.rollup_10s,
                RollupLevel::Minute => &stmts.rollup_1m,
                RollupLevel::Hour => &stmts.rollup_1h,
            };
            tx.execute(
                stmt,
                &[
                    &series_ids,
                    &buckets,
                    &counts,
                    &bad,
                    &min,
                    &max,
                    &sum,
                    &first_ms,
                    &first,
                    &last_ms,
                    &last,
                ],
            )
            .map_err(&e)?;
        }

        // 4. Series bounds and types.
        let touched: Vec<SeriesMeta> = self
            .series
            .values()
            .filter(|m| m.touched)
            .copied()
            .collect();
        if !touched.is_empty() {
            let ids: Vec<i64> = touched.iter().map(|m| m.id).collect();
            let firsts: Vec<Option<i64>> = touched.iter().map(|m| m.first_ms).collect();
            let lasts: Vec<Option<i64>> = touched.iter().map(|m| m.last_ms).collect();
            let types: Vec<&str> = touched.iter().map(|m| m.value_type.as_str()).collect();
            tx.execute(&stmts.update_series, &[&ids, &firsts, &lasts, &types])
                .map_err(&e)?;
        }

        // 5. Gaps, once per spool sequence.
        if let Some(last) = gaps.last() {
            let key = format!("spool_gaps_shipped:{spool_id}");
            let mark: i64 = match tx.query_opt(&stmts.get_meta, &[&key]).map_err(&e)? {
                Some(row) => row
                    .try_get::<_, String>(0)
                    .map_err(&e)?
                    .parse()
                    .unwrap_or(0),
                None => 0,
            };
            let fresh: Vec<&SpooledGap> = gaps.iter().filter(|g| g.seq > mark).collect();
            if !fresh.is_empty() {
                let from: Vec<i64> = fresh.iter().map(|g| g.gap.from_ms).collect();
                let to: Vec<i64> = fresh.iter().map(|g| g.gap.to_ms).collect();
                let lost: Vec<i64> = fresh
                    .iter()
                    .map(|g| i64::try_from(g.gap.lost).unwrap_or(i64::MAX))
                    .collect();
                let reason: Vec<String> = fresh
                    .iter()
                    .map(|g| pg_text(&g.gap.reason).into_owned())
                    .collect();
                tx.execute(&stmts.insert_gaps, &[&from, &to, &lost, &reason])
                    .map_err(&e)?;
            }
            tx.execute(&stmts.set_meta, &[&key, &mark.max(last.seq).to_string()])
                .map_err(&e)?;
        }

        tx.commit().map_err(&e)?;
        for m in self.series.values_mut() {
            m.touched = false;
        }
        Ok(())
    }

    /// Deletes what the retention rules no longer keep, like the SQLite sink.
    fn retention(&mut self, config: &HistorianConfig, now_ms: i64) -> Result<u64, HistorianError> {
        if config.retention.is_empty() {
            return Ok(0);
        }
        let target = &self.target;
        let e = target.err("apply history retention");
        let mut tx = self.client.transaction().map_err(&e)?;
        let series = tx
            .query(&target.sql("SELECT id, topic FROM {s}.series"), &[])
            .map_err(&e)?;
        // Per table: series ids and their cutoffs.
        let mut cutoffs: [(Vec<i64>, Vec<i64>); 4] = Default::default();
        let mut raw_ids: Vec<i64> = Vec::new();
        for row in series {
            let id: i64 = row.try_get(0).map_err(&e)?;
            let topic: String = row.try_get(1).map_err(&e)?;
            let Some(rule) = config.retention_for(&topic) else {
                continue;
            };
            // 10-second rollups are detail of the raw values: kept as long.
            for (i, keep) in [rule.raw, rule.raw, rule.minute, rule.hour]
                .into_iter()
                .enumerate()
            {
                if let Some(keep) = keep {
                    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
                    cutoffs[i].0.push(id);
                    cutoffs[i].1.push(now_ms.saturating_sub(keep_ms));
                }
            }
            if rule.raw.is_some() {
                raw_ids.push(id);
            }
        }
        let mut removed = 0u64;
        for ((table, column), (ids, cut)) in [
            ("points", "ts_ms"),
            ("rollup_10s", "bucket_ms"),
            ("rollup_1m", "bucket_ms"),
            ("rollup_1h", "bucket_ms"),
        ]
        .into_iter()
        .zip(&cutoffs)
        {
            if ids.is_empty() {
                continue;
            }
            let sql = target.sql(&format!(
                "DELETE FROM {{s}}.{table} t USING unnest($1::int8[], $2::int8[]) AS c(id, cutoff) \
                 WHERE t.series_id = c.id AND t.{column} < c.cutoff"
            ));
            removed += tx.execute(&sql, &[ids, cut]).map_err(&e)?;
        }
        if !raw_ids.is_empty() {
            tx.execute(
                &target.sql(
                    "UPDATE {s}.series s SET first_ms = (SELECT min(ts_ms) FROM {s}.points p WHERE p.series_id = s.id) \
                     WHERE s.id = ANY($1)",
                ),
                &[&raw_ids],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        // Cached first timestamps may now be stale.
        self.series.clear();
        Ok(removed)
    }
}

/// PostgreSQL text cannot hold NUL characters; they become U+FFFD rather
/// than blocking the spool forever.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}
