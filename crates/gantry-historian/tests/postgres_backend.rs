//! The PostgreSQL backend against a real server: `GANTRY_TEST_PG` names it
//! (see `scripts/pg-test-env.sh`). Without it these tests say so loudly and
//! pass, unless `GANTRY_REQUIRE_PG=1`, when they fail. Each test works in a
//! fresh schema (`t_<random>`) dropped at the end.
//!
//! The restart test restarts the server with `GANTRY_TEST_PG_RESTART`; it
//! takes an exclusive lock so no other test of this binary runs meanwhile.

mod common;

use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use gantry_historian::postgres::{
    PostgresReader, PostgresSink, ShipMode, Shipper, ship_spooled, start_shipping,
};
use gantry_historian::sqlite::{SqliteReader, SqliteSink};
use gantry_historian::{
    Gap, HistorianConfig, HistoryRead, Point, PostgresConfig, RetentionRule, RollupLevel,
    RollupRow, Sink,
};
use gantry_model::{Quality, Value};

const SHIP_TIMEOUT: Duration = Duration::from_secs(60);

static SERVER: RwLock<()> = RwLock::new(());

/// Says why a test did nothing, past the test harness' output capture.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** {test}: SKIPPED: {why} ***\n");
}

/// The test server's connection string, or `None` (after a loud message)
/// when none is configured and none is required.
fn server_url(test: &str) -> Option<String> {
    match std::env::var("GANTRY_TEST_PG") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var("GANTRY_REQUIRE_PG").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: GANTRY_REQUIRE_PG=1 but GANTRY_TEST_PG is not set (eval \"$(scripts/pg-test-env.sh)\")"
            );
            skipped(
                test,
                "no PostgreSQL (set GANTRY_TEST_PG, e.g. eval \"$(sudo scripts/pg-test-env.sh)\")",
            );
            None
        }
    }
}

fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|p| p.into_inner())
}

/// A fresh schema on the test server, dropped on drop.
struct Db {
    url: String,
    schema: String,
}

impl Db {
    fn new(url: &str) -> Db {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        h.write_u32(std::process::id());
        Db {
            url: url.to_string(),
            schema: format!("t_{:016x}", h.finish()),
        }
    }

    fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: self.url.clone(),
            schema: self.schema.clone(),
            ca_file: None,
        }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test server")
    }

    fn count(&self, table: &str) -> i64 {
        self.client()
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".{table}", self.schema),
                &[],
            )
            .expect("count")
            .get(0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ));
        }
    }
}

fn point(topic: &str, ts_ms: i64, value: Value, quality: Quality) -> Point {
    Point {
        topic: Arc::from(topic),
        ts_ms,
        value,
        quality,
    }
}

/// A deterministic mix: four types, several series, minutes and hours, out of
/// order values, repeated timestamps, bad quality.
fn mixed_points(seed: u64, n: usize) -> Vec<Point> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let base = 1_700_000_000_000i64 - 1_700_000_000_000i64.rem_euclid(3_600_000);
    let mut out = Vec::with_capacity(n);
    let mut clock = base;
    for i in 0..n {
        let r = next();
        clock += (r % 20_000) as i64;
        // One value in eight goes back in time, one in sixteen repeats a timestamp.
        let ts = match r % 16 {
            0 => clock - (next() % 3_000_000) as i64,
            1 => clock,
            _ => clock,
        };
        let quality = match r % 13 {
            0 => Quality::Bad,
            1 => Quality::Uncertain,
            _ => Quality::Good,
        };
        let (topic, value) = match i % 5 {
            0 => (
                "acme/dallas/line-1/filler/speed",
                Value::Float((next() % 10_000) as f64 / 7.0),
            ),
            1 => (
                "acme/dallas/line-1/filler/count",
                Value::Int((next() % 1_000_000) as i64 - 1_000),
            ),
            2 => (
                "acme/dallas/line-1/filler/running",
                Value::Bool(next().is_multiple_of(2)),
            ),
            3 => (
                "acme/dallas/line-1/filler/state",
                Value::Text(format!("state-{}", next() % 4)),
            ),
            _ => (
                "acme/houston/line-2/oven/temp",
                Value::Float(150.0 + (next() % 1000) as f64 / 10.0),
            ),
        };
        let again = match &value {
            Value::Float(f) => Value::Float(f - 1.5),
            Value::Int(i) => Value::Int(i + 1),
            Value::Bool(b) => Value::Bool(!b),
            Value::Text(t) => Value::Text(format!("{t}!")),
        };
        out.push(point(topic, ts, value, quality));
        if r % 16 == 1 {
            // The same timestamp again: the later value replaces the first.
            out.push(point(topic, ts, again, Quality::Good));
        }
    }
    out
}

/// Everything a reader can see, without series ids (which differ between
/// stores), as text.
fn dump(r: &mut dyn HistoryRead) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let series = r.series_matching("#").expect("series");
    for s in &series {
        writeln!(
            out,
            "series {} {:?} {:?} {:?}",
            s.topic, s.value_type, s.first_ms, s.last_ms
        )
        .ok();
        r.points(s.id, i64::MIN, i64::MAX, &mut |p| {
            writeln!(out, "  {} {:?} {:?}", p.ts_ms, p.value, p.quality).ok();
            true
        })
        .expect("points");
        for level in RollupLevel::ALL {
            for row in r.rollups(level, s.id, i64::MIN, i64::MAX).expect("rollups") {
                writeln!(out, "  {level:?} {}", rollup_text(&row)).ok();
            }
        }
    }
    for g in r.gaps(i64::MIN, i64::MAX).expect("gaps") {
        writeln!(out, "gap {g:?}").ok();
    }
    out
}

/// Checks every stored rollup against the raw values it aggregates (folded
/// in time order, as a recomputation does), and that no bucket is missing.
fn check_rollups(r: &mut dyn HistoryRead) {
    use std::collections::BTreeMap;
    for s in r.series_matching("#").expect("series") {
        let mut expected: BTreeMap<(RollupLevel, i64), RollupRow> = BTreeMap::new();
        if s.value_type.is_numeric() {
            r.points(s.id, i64::MIN, i64::MAX, &mut |p| {
                let v = match (&p.value, p.quality) {
                    (_, Quality::Bad) => None,
                    (Value::Int(i), _) => Some(*i as f64),
                    (Value::Float(f), _) => Some(*f),
                    (Value::Bool(b), _) => Some(f64::from(u8::from(*b))),
                    (Value::Text(_), _) => return true,
                };
                for level in RollupLevel::ALL {
                    let bucket = level.bucket_of(p.ts_ms);
                    expected
                        .entry((level, bucket))
                        .or_insert_with(|| RollupRow::empty(bucket))
                        .add(p.ts_ms, v);
                }
                true
            })
            .expect("points");
        }
        let mut stored: BTreeMap<(RollupLevel, i64), RollupRow> = BTreeMap::new();
        for level in RollupLevel::ALL {
            for row in r.rollups(level, s.id, i64::MIN, i64::MAX).expect("rollups") {
                stored.insert((level, row.bucket_ms), row);
            }
        }
        let fmt = |m: &BTreeMap<(RollupLevel, i64), RollupRow>| {
            m.iter()
                .map(|(k, v)| format!("{k:?} {}", rollup_text(v)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_same(
            &fmt(&stored),
            &fmt(&expected),
            &format!("rollups of {} (stored vs recomputed)", s.topic),
        );
    }
}

/// A rollup row as text, its sum to 12 significant digits: a late value is
/// merged into a stored sum, so the last bits of a float sum depend on the
/// order in which values arrived (the other fields are exact).
fn rollup_text(r: &RollupRow) -> String {
    format!(
        "bucket {} count {} bad {} min {:?} max {:?} sum {:.11e} first {}@{:?} last {}@{:?}",
        r.bucket_ms,
        r.count,
        r.bad_count,
        r.min,
        r.max,
        r.sum,
        r.first_ms,
        r.first,
        r.last_ms,
        r.last
    )
}

/// Compares two dumps line by line, reporting the first difference only.
#[track_caller]
fn assert_same(a: &str, b: &str, what: &str) {
    if a == b {
        return;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    let ctx = |l: &[&str]| l[i.saturating_sub(3)..(i + 3).min(l.len())].join("\n");
    panic!(
        "{what}: first difference at line {i} ({} vs {} lines)\n--- left:\n{}\n--- right:\n{}",
        la.len(),
        lb.len(),
        ctx(&la),
        ctx(&lb)
    );
}

/// Writes `points` through the sink in batches of `batch`.
fn write_batches(sink: &mut dyn Sink, points: &[Point], gaps: &[Gap], batch: usize) {
    for (i, chunk) in points.chunks(batch).enumerate() {
        let g: &[Gap] = if i == 0 { gaps } else { &[] };
        sink.write(chunk, g).expect("spool write");
    }
}

/// What the SQLite store holds after the same writes.
fn sqlite_dump(points: &[Point], gaps: &[Gap], batch: usize) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("history.sqlite");
    let mut sink = SqliteSink::open(&path, &HistorianConfig::default()).expect("sqlite");
    write_batches(&mut sink, points, gaps, batch);
    sink.close().expect("close");
    let mut reader = SqliteReader::open(&path).expect("sqlite reader");
    dump(&mut reader)
}

fn some_gaps() -> Vec<Gap> {
    vec![Gap {
        from_ms: 1_700_000_100_000,
        to_ms: 1_700_000_200_000,
        lost: 12,
        reason: "historian queue full: QoS 0 values dropped while the store was behind".into(),
    }]
}

fn spool_in(dir: &Path) -> std::path::PathBuf {
    dir.join("history").join("pg-spool.sqlite")
}

#[test]
fn shipped_history_reads_back_like_sqlite() {
    let Some(url) = server_url("shipped_history_reads_back_like_sqlite") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistorianConfig::default();
    let (mut sink, shipper) =
        start_shipping(&db.config(), &spool_in(dir.path()), &config).expect("start");
    let points = mixed_points(7, 6_000);
    let gaps = some_gaps();
    write_batches(&mut sink, &points, &gaps, 700);
    shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
    assert_eq!(sink.pending().expect("pending"), 0);
    let mut reader = PostgresReader::connect(&db.config()).expect("reader");
    let pg = dump(&mut reader);
    let lite = sqlite_dump(&points, &gaps, 700);
    check_rollups(&mut reader);
    assert!(pg.lines().count() > 6_000, "{pg}");
    assert_same(&pg, &lite, "PostgreSQL vs SQLite");

    // The primitives one by one.
    let series = reader
        .series_matching("acme/dallas/+/filler/#")
        .expect("series");
    assert_eq!(series.len(), 4);
    assert!(series.windows(2).all(|w| w[0].topic < w[1].topic));
    assert_eq!(
        reader
            .series_matching("acme/houston/line-2/oven/temp")
            .expect("exact")
            .len(),
        1
    );
    assert!(
        reader
            .series_matching("acme/nowhere/#")
            .expect("none")
            .is_empty()
    );
    let speed = series
        .iter()
        .find(|s| s.topic.ends_with("/speed"))
        .expect("speed");
    let mid = (speed.first_ms.unwrap_or(0) + speed.last_ms.unwrap_or(0)) / 2;
    let before = reader
        .last_at_or_before(speed.id, mid)
        .expect("before")
        .expect("some");
    let after = reader
        .first_at_or_after(speed.id, mid)
        .expect("after")
        .expect("some");
    assert!(before.ts_ms <= mid && after.ts_ms >= mid);
    let mut visited = 0;
    reader
        .points(speed.id, i64::MIN, i64::MAX, &mut |_| {
            visited += 1;
            visited < 10
        })
        .expect("points stop early");
    assert_eq!(visited, 10);
    let ids: Vec<i64> = series.iter().map(|s| s.id).chain([999_999]).collect();
    let snap = reader.snapshot(&ids, mid).expect("snapshot");
    assert_eq!(snap.len(), 4, "unknown series left out");
    for (id, row) in &snap {
        assert_eq!(
            Some(row),
            reader.last_at_or_before(*id, mid).expect("last").as_ref()
        );
    }
    let total = reader
        .count_points(&ids, i64::MIN, i64::MAX)
        .expect("count");
    // The filler's series only (the oven's values are elsewhere).
    assert!(total > 0 && (total as i64) < db.count("points"));
    assert_eq!(
        reader
            .count_points(
                &series.iter().map(|s| s.id).collect::<Vec<_>>(),
                i64::MIN,
                i64::MAX
            )
            .expect("count"),
        series
            .iter()
            .map(|s| {
                let mut n = 0u64;
                reader
                    .points(s.id, i64::MIN, i64::MAX, &mut |_| {
                        n += 1;
                        true
                    })
                    .expect("points");
                n
            })
            .sum::<u64>()
    );
    assert_eq!(
        reader
            .gaps(1_700_000_150_000, 1_700_000_160_000)
            .expect("gaps")
            .len(),
        1
    );
    assert!(reader.gaps(0, 1_000).expect("gaps").is_empty());
    shipper.stop();
}

#[test]
fn values_spooled_while_unreachable_are_shipped_once_reachable() {
    let Some(url) = server_url("values_spooled_while_unreachable_are_shipped_once_reachable")
    else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let config = HistorianConfig::default();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let unreachable = PostgresConfig {
        url: format!(
            "host=127.0.0.1 port={closed_port} user=nobody password=secret-pw dbname=nothing connect_timeout=2"
        ),
        schema: db.schema.clone(),
        ca_file: None,
    };
    let (mut sink, shipper) =
        start_shipping(&unreachable, &spool, &config).expect("start against a closed port");
    let points = mixed_points(11, 3_000);
    write_batches(&mut sink, &points, &[], 500);
    let err = shipper
        .wait_shipped(Duration::from_millis(1_500))
        .expect_err("nothing can ship");
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{closed_port}")) && text.contains("database nothing"),
        "{text}"
    );
    assert!(!text.contains("secret-pw"), "{text}");
    let status = shipper.status();
    assert!(!status.connected && status.last_error.is_some());
    let stopping = Instant::now();
    shipper.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(sink.pending().expect("pending"), points.len() as u64);
    sink.close().expect("close");
    drop(sink);

    let (sink, shipper) = start_shipping(&db.config(), &spool, &config).expect("start");
    shipper
        .wait_shipped(SHIP_TIMEOUT)
        .expect("shipped once reachable");
    assert_eq!(sink.pending().expect("pending"), 0);
    let mut reader = PostgresReader::connect(&db.config()).expect("reader");
    assert_same(
        &dump(&mut reader),
        &sqlite_dump(&points, &[], 500),
        "PostgreSQL vs SQLite",
    );
    check_rollups(&mut reader);
}

#[test]
fn a_database_restart_during_ingest_loses_nothing() {
    let Some(url) = server_url("a_database_restart_during_ingest_loses_nothing") else {
        return;
    };
    let Ok(restart) = std::env::var("GANTRY_TEST_PG_RESTART") else {
        assert!(
            std::env::var("GANTRY_REQUIRE_PG").as_deref() != Ok("1"),
            "GANTRY_REQUIRE_PG=1 but GANTRY_TEST_PG_RESTART is not set"
        );
        skipped(
            "a_database_restart_during_ingest_loses_nothing",
            "GANTRY_TEST_PG_RESTART not set",
        );
        return;
    };
    let _server = exclusive();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistorianConfig::default();
    let (mut sink, shipper) =
        start_shipping(&db.config(), &spool_in(dir.path()), &config).expect("start");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("schema ready");

    // 20 series x 60 batches of 50 values, one batch every 50 ms, the server
    // restarted a second in.
    let base = 1_700_000_000_000i64;
    let mut expected: Vec<Point> = Vec::new();
    let mut saw_outage = false;
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_000));
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&restart)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "restart command failed: {restart}"
        );
    });
    for b in 0..60i64 {
        let batch: Vec<Point> = (0..50i64)
            .map(|i| {
                let n = b * 50 + i;
                let topic = format!("acme/plant/area/line/m{}/v", n % 20);
                let value = if n % 20 < 10 {
                    Value::Int(n * 3)
                } else {
                    Value::Float(n as f64 / 4.0)
                };
                point(&topic, base + n * 1_000, value, Quality::Good)
            })
            .collect();
        sink.write(&batch, &[])
            .expect("spool write never waits for the database");
        expected.extend(batch);
        std::thread::sleep(Duration::from_millis(50));
        let status = shipper.status();
        saw_outage |= !status.connected || status.last_error.is_some();
    }
    restarter.join().expect("restart thread");
    assert!(
        saw_outage,
        "the shipper never noticed the restart: the test proved nothing"
    );
    shipper
        .wait_shipped(SHIP_TIMEOUT)
        .expect("caught up after the restart");
    assert_eq!(db.count("points"), expected.len() as i64);
    let mut reader = PostgresReader::connect(&db.config()).expect("reader");
    let mut got: Vec<Point> = Vec::new();
    for s in reader.series_matching("#").expect("series") {
        reader
            .points(s.id, i64::MIN, i64::MAX, &mut |p| {
                got.push(point(&s.topic, p.ts_ms, p.value, p.quality));
                true
            })
            .expect("points");
    }
    got.sort_by_key(|p| p.ts_ms);
    assert_eq!(got, expected);
    assert_same(
        &dump(&mut reader),
        &sqlite_dump(&expected, &[], 50),
        "PostgreSQL vs SQLite",
    );
    check_rollups(&mut reader);
    shipper.stop();
}

#[test]
fn reshipping_the_same_spool_rows_is_idempotent() {
    let Some(url) = server_url("reshipping_the_same_spool_rows_is_idempotent") else {
        return;
    };
    let _server = shared();
    let config = HistorianConfig::default();
    let points = mixed_points(23, 5_000);
    let gaps = some_gaps();

    // Once, the normal way.
    let once = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let mut sink = PostgresSink::open(&spool, &config).expect("spool");
    write_batches(&mut sink, &points, &gaps, 1_000);
    sink.close().expect("close");
    drop(sink);
    assert_eq!(
        ship_spooled(&once.config(), &spool, &config, ShipMode::Delete).expect("ship"),
        points.len() as u64
    );

    // Twice: shipped and committed but left in the spool (a crash before the
    // delete), then shipped again by a fresh shipper.
    let twice = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let mut sink = PostgresSink::open(&spool, &config).expect("spool");
    write_batches(&mut sink, &points, &gaps, 1_000);
    sink.close().expect("close");
    drop(sink);
    ship_spooled(&twice.config(), &spool, &config, ShipMode::KeepSpooled)
        .expect("ship, keep spooled");
    let first = dump(&mut PostgresReader::connect(&twice.config()).expect("reader"));
    let (sink, shipper) = start_shipping(&twice.config(), &spool, &config).expect("start");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("re-shipped");
    assert_eq!(sink.pending().expect("pending"), 0);
    shipper.stop();

    let a = dump(&mut PostgresReader::connect(&once.config()).expect("reader"));
    let b = dump(&mut PostgresReader::connect(&twice.config()).expect("reader"));
    assert_same(&a, &first, "once vs shipped, kept spooled");
    assert_same(&a, &b, "once vs re-shipped");
    check_rollups(&mut PostgresReader::connect(&twice.config()).expect("reader"));
    for table in ["points", "series", "rollup_1m", "rollup_1h", "gaps"] {
        assert_eq!(once.count(table), twice.count(table), "{table}");
    }
    assert_eq!(once.count("gaps"), 1);
}

#[test]
fn the_spool_survives_a_sink_dropped_without_shipping() {
    let Some(url) = server_url("the_spool_survives_a_sink_dropped_without_shipping") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = spool_in(dir.path());
    let config = HistorianConfig::default();
    let points = mixed_points(31, 2_000);
    {
        let mut sink = PostgresSink::open(&spool, &config).expect("spool");
        write_batches(&mut sink, &points, &[], 300);
        // Dropped without close: as if Gantry were killed.
    }
    let (sink, shipper) = start_shipping(&db.config(), &spool, &config).expect("start");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
    assert_eq!(sink.pending().expect("pending"), 0);
    let mut reader = PostgresReader::connect(&db.config()).expect("reader");
    let pg = dump(&mut reader);
    let lite = sqlite_dump(&points, &[], 300);
    check_rollups(&mut reader);
    // Everything spooled arrived; the unclean stop is recorded as a gap.
    let strip_gaps = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("gap "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_same(&strip_gaps(&pg), &strip_gaps(&lite), "PostgreSQL vs SQLite");
    let gaps = reader.gaps(i64::MIN, i64::MAX).expect("gaps");
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0].reason.contains("without a clean shutdown"),
        "{gaps:?}"
    );
    shipper.stop();
}

#[test]
fn retention_deletes_old_rows_in_the_shipper() {
    let Some(url) = server_url("retention_deletes_old_rows_in_the_shipper") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistorianConfig {
        retention: vec![RetentionRule {
            subtree: gantry_historian::config::TopicFilter("acme/short/#".into()),
            raw: Some(Duration::from_secs(3_600)),
            minute: Some(Duration::from_secs(7_200)),
            hour: None,
        }],
        ..HistorianConfig::default()
    };
    let (mut sink, shipper) =
        start_shipping(&db.config(), &spool_in(dir.path()), &config).expect("start");
    let now = 1_800_000_000_000i64;
    let mut points = Vec::new();
    for h in 0..4i64 {
        points.push(point(
            "acme/short/x",
            now - h * 3_600_000 - 1_000,
            Value::Float(h as f64),
            Quality::Good,
        ));
        points.push(point(
            "acme/long/x",
            now - h * 3_600_000 - 1_000,
            Value::Float(h as f64),
            Quality::Good,
        ));
    }
    points.sort_by_key(|p| p.ts_ms);
    sink.write(&points, &[]).expect("write");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
    sink.maintain(now).expect("maintain");
    sink.write(
        &[point("acme/long/y", now, Value::Int(1), Quality::Good)],
        &[],
    )
    .expect("write");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
    let mut reader = PostgresReader::connect(&db.config()).expect("reader");
    let short = &reader.series_matching("acme/short/x").expect("series")[0];
    let long = &reader.series_matching("acme/long/x").expect("series")[0];
    let (short_id, long_id, short_first) = (short.id, long.id, short.first_ms);
    assert_eq!(
        reader
            .count_points(&[short_id], i64::MIN, i64::MAX)
            .expect("count"),
        1
    );
    assert_eq!(
        reader
            .count_points(&[long_id], i64::MIN, i64::MAX)
            .expect("count"),
        4
    );
    assert_eq!(short_first, Some(now - 1_000));
    assert_eq!(
        reader
            .rollups(RollupLevel::Minute, short_id, i64::MIN, i64::MAX)
            .expect("rollups")
            .len(),
        2
    );
    assert_eq!(
        reader
            .rollups(RollupLevel::Hour, short_id, i64::MIN, i64::MAX)
            .expect("rollups")
            .len(),
        4
    );
    shipper.stop();
}

#[test]
fn errors_name_the_server_and_never_the_password() {
    let Some(url) = server_url("errors_name_the_server_and_never_the_password") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    // No tables yet.
    let err = PostgresReader::connect(&db.config())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("no history tables") && err.contains(&db.schema),
        "{err}"
    );
    // A wrong password.
    let wrong = PostgresConfig {
        url: format!("{url} password=definitely-wrong-pw"),
        schema: db.schema.clone(),
        ca_file: None,
    };
    let err = PostgresReader::connect(&wrong)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("connect on PostgreSQL host") && err.contains("database"),
        "{err}"
    );
    assert!(!err.contains("definitely-wrong-pw"), "{err}");
    // An unsafe schema name is refused before anything is created.
    let bad = PostgresConfig {
        url: url.clone(),
        schema: "x\"; DROP TABLE y; --".into(),
        ca_file: None,
    };
    assert!(
        PostgresReader::connect(&bad)
            .err()
            .is_some_and(|e| e.to_string().contains("not a valid schema name"))
    );
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(start_shipping(&bad, &spool_in(dir.path()), &HistorianConfig::default()).is_err());
}

#[test]
fn schema_creation_is_idempotent_and_versioned() {
    let Some(url) = server_url("schema_creation_is_idempotent_and_versioned") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let config = HistorianConfig::default();
    for round in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sink, shipper) =
            start_shipping(&db.config(), &spool_in(dir.path()), &config).expect("start");
        sink.write(
            &[point(
                "a/b",
                1_000 + round,
                Value::Int(round),
                Quality::Good,
            )],
            &[],
        )
        .expect("write");
        shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
        shipper.stop();
    }
    let mut c = db.client();
    let v: String = c
        .query_one(
            &format!(
                "SELECT value FROM \"{}\".meta WHERE key = 'schema_version'",
                db.schema
            ),
            &[],
        )
        .expect("version")
        .get(0);
    assert_eq!(v, gantry_historian::postgres::SCHEMA_VERSION.to_string());
    assert_eq!(db.count("points"), 2);
    let view: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".history WHERE value IN ('0', '1')",
                db.schema
            ),
            &[],
        )
        .expect("view")
        .get(0);
    assert_eq!(view, 2);
    // A newer schema is refused by readers.
    c.execute(
        &format!(
            "UPDATE \"{}\".meta SET value = '99' WHERE key = 'schema_version'",
            db.schema
        ),
        &[],
    )
    .expect("bump");
    let err = PostgresReader::connect(&db.config())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("version 99"), "{err}");
}

/// The shared suite's store: writes go through the spool and return once
/// shipped; each store has its own schema and spool.
struct PgStore {
    // Fields drop in order: the shipper stops before the schema is dropped.
    shipper: Shipper,
    sink: PostgresSink,
    db: Db,
    _dir: tempfile::TempDir,
}

impl PgStore {
    fn new(url: &str) -> PgStore {
        let db = Db::new(url);
        let dir = tempfile::tempdir().expect("tempdir");
        let (sink, shipper) = start_shipping(
            &db.config(),
            &spool_in(dir.path()),
            &HistorianConfig::default(),
        )
        .expect("start");
        // The schema exists before any reader connects.
        shipper.wait_shipped(SHIP_TIMEOUT).expect("schema ready");
        PgStore {
            shipper,
            sink,
            db,
            _dir: dir,
        }
    }
}

impl common::TestStore for PgStore {
    fn write(&mut self, points: &[Point], gaps: &[Gap]) {
        self.sink.write(points, gaps).expect("spool write");
        self.shipper.wait_shipped(SHIP_TIMEOUT).expect("shipped");
    }

    fn reader(&mut self) -> Box<dyn HistoryRead> {
        Box::new(PostgresReader::connect(&self.db.config()).expect("reader"))
    }
}

/// Every case of the backend-independent suite (`tests/common`), each on a
/// fresh schema; failures are collected and reported by case name.
#[test]
fn shared_suite() {
    let Some(url) = server_url("shared_suite") else {
        return;
    };
    let _server = shared();
    let mut failed = Vec::new();
    let cases = common::all_cases();
    assert!(!cases.is_empty());
    for (name, case) in cases {
        let mut store = PgStore::new(&url);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut store)));
        if outcome.is_err() {
            eprintln!("shared suite case {name} FAILED on PostgreSQL");
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "shared suite cases failed on PostgreSQL: {failed:?}"
    );
}

#[test]
fn odd_values_do_not_block_the_spool() {
    let Some(url) = server_url("odd_values_do_not_block_the_spool") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sink, shipper) = start_shipping(
        &db.config(),
        &spool_in(dir.path()),
        &HistorianConfig::default(),
    )
    .expect("start");
    let t = "acme/odd/ünïcode/tag";
    let points = vec![
        point(t, i64::MIN, Value::Float(1.0), Quality::Good),
        point(t, i64::MIN + 59_999, Value::Float(2.0), Quality::Good),
        point(t, -1, Value::Float(f64::INFINITY), Quality::Good),
        point(t, 0, Value::Float(f64::NEG_INFINITY), Quality::Uncertain),
        point(t, i64::MAX, Value::Float(3.0), Quality::Good),
        point("acme/odd/int", 1, Value::Int(i64::MAX), Quality::Good),
        point("acme/odd/int", 2, Value::Int((1 << 53) + 1), Quality::Good),
        point("acme/odd/int", 3, Value::Int(-(1 << 53)), Quality::Good),
        point(
            "acme/odd/text",
            1,
            Value::Text("nul\0inside".into()),
            Quality::Bad,
        ),
        point(
            "acme/odd/text",
            2,
            Value::Text(String::new()),
            Quality::Good,
        ),
    ];
    sink.write(&points, &[]).expect("spool");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("odd values ship");
    let mut r = PostgresReader::connect(&db.config()).expect("reader");
    let series = r.series_matching("acme/odd/#").expect("series");
    assert_eq!(series.len(), 3);
    let rows = |r: &mut PostgresReader, topic: &str| {
        let id = series
            .iter()
            .find(|s| s.topic == topic)
            .map(|s| s.id)
            .expect("series");
        let mut out = Vec::new();
        r.points(id, i64::MIN, i64::MAX, &mut |p| {
            out.push((p.ts_ms, p.value));
            true
        })
        .expect("points");
        out
    };
    let floats = rows(&mut r, t);
    // `to` is exclusive, so i64::MAX itself is not in [MIN, MAX).
    assert_eq!(floats.len(), 4);
    assert_eq!(floats[0], (i64::MIN, Value::Float(1.0)));
    assert_eq!(floats[2], (-1, Value::Float(f64::INFINITY)));
    let id = series
        .iter()
        .find(|s| s.topic == t)
        .map(|s| s.id)
        .expect("series");
    let last = r
        .last_at_or_before(id, i64::MAX)
        .expect("last")
        .expect("a value");
    assert_eq!((last.ts_ms, last.value), (i64::MAX, Value::Float(3.0)));
    // Integers are exact up to 2^53 (stored as double precision).
    let ints = rows(&mut r, "acme/odd/int");
    assert_eq!(ints[0], (1, Value::Int(i64::MAX)));
    assert_eq!(ints[1], (2, Value::Int(1 << 53)));
    assert_eq!(ints[2], (3, Value::Int(-(1 << 53))));
    let texts = rows(&mut r, "acme/odd/text");
    assert_eq!(
        texts,
        vec![
            (1, Value::Text("nul\u{FFFD}inside".into())),
            (2, Value::Text(String::new()))
        ]
    );
    shipper.stop();
}

#[test]
fn the_historian_runs_on_postgres_end_to_end() {
    use gantry_broker::hooks::PublishObserver;
    let Some(url) = server_url("the_historian_runs_on_postgres_end_to_end") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistorianConfig {
        backend: gantry_historian::BackendKind::Postgres,
        postgres: Some(db.config()),
        ..HistorianConfig::default()
    };
    let historian = gantry_historian::Historian::start(&config, dir.path(), None).expect("start");
    let recorder = historian.recorder();
    let mut gates = Vec::new();
    for i in 0..100i64 {
        let payload = format!(
            r#"{{"timestamp_ms":{},"value":{}}}"#,
            1_700_000_000_000 + i * 1_000,
            i
        );
        let msg = Arc::new(gantry_broker::Message::new(
            "acme/e2e/line/m/count",
            payload.as_bytes(),
            gantry_codec::QoS::AtLeastOnce,
            false,
        ));
        gates.extend(recorder.observe(&msg));
    }
    assert_eq!(gates.len(), 100);
    // Acknowledgements wait only for the spool.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gates.iter().all(|g| g.is_open()) {
        assert!(
            Instant::now() < deadline,
            "QoS 1 values never became durable"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(spool_in(dir.path()).exists());
    // And the values reach PostgreSQL.
    let deadline = Instant::now() + SHIP_TIMEOUT;
    loop {
        let n = historian
            .reader()
            .ok()
            .and_then(|mut r| {
                let ids: Vec<i64> = r
                    .series_matching("acme/e2e/#")
                    .ok()?
                    .iter()
                    .map(|s| s.id)
                    .collect();
                r.count_points(&ids, i64::MIN, i64::MAX).ok()
            })
            .unwrap_or(0);
        if n == 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 100 values reached PostgreSQL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The historian's status shows the shipper.
    let status = historian.status();
    assert_eq!(status.backend, "postgres");
    let pg = status.postgres.expect("shipper status");
    assert!(
        pg.connected && pg.shipped >= 100 && pg.last_error.is_none(),
        "{pg:?}"
    );
    let stopping = Instant::now();
    historian.shutdown();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert_eq!(historian.status().backend, "postgres");
}

/// Shipping throughput (run by hand: `--ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let Some(url) = server_url("throughput") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut sink, shipper) = start_shipping(
        &db.config(),
        &spool_in(dir.path()),
        &HistorianConfig::default(),
    )
    .expect("start");
    shipper.wait_shipped(SHIP_TIMEOUT).expect("schema ready");
    let n = 200_000i64;
    let points: Vec<Point> = (0..n)
        .map(|i| {
            point(
                &format!("acme/bench/m{}/v", i % 100),
                1_700_000_000_000 + (i / 100) * 1_000,
                Value::Float(i as f64),
                Quality::Good,
            )
        })
        .collect();
    let start = Instant::now();
    write_batches(&mut sink, &points, &[], 5_000);
    let spooled = start.elapsed();
    shipper
        .wait_shipped(Duration::from_secs(600))
        .expect("shipped");
    let shipped = start.elapsed();
    eprintln!(
        "throughput: {n} values spooled in {spooled:?} ({:.0}/s), shipped in {shipped:?} ({:.0}/s)",
        n as f64 / spooled.as_secs_f64(),
        n as f64 / shipped.as_secs_f64()
    );
    assert_eq!(db.count("points"), n);
    shipper.stop();
}

/// The connection is encrypted whenever the server offers TLS (the test
/// server does: Debian enables it with its snakeoil certificate), so
/// `sslmode=require` works; a `ca_file` the server's certificate does not
/// chain to (or name the host in) is refused, and a missing one is named.
#[test]
fn connections_use_tls_and_verify_with_a_ca_file() {
    let Some(url) = server_url("connections_use_tls_and_verify_with_a_ca_file") else {
        return;
    };
    let _server = shared();
    let db = Db::new(&url);
    let mut plain = db.client();
    // Does this server speak TLS at all?
    let offers_tls: bool = plain
        .query_one("SHOW ssl", &[])
        .map(|r| r.get::<_, String>(0) == "on")
        .unwrap_or(false);
    if !offers_tls {
        skipped(
            "connections_use_tls_and_verify_with_a_ca_file",
            "the test server has ssl = off",
        );
        return;
    }
    // Ship through an encrypted connection (sslmode=require fails without TLS).
    let required = PostgresConfig {
        url: format!("{url} sslmode=require application_name=gantry-tls-test"),
        ..db.config()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = HistorianConfig::default();
    let (mut sink, shipper) = start_shipping(&required, &dir.path().join("spool.sqlite"), &config)
        .expect("start over TLS");
    sink.write(
        &[point("tls/a", 1_000, Value::Float(1.0), Quality::Good)],
        &[],
    )
    .expect("spool");
    shipper
        .wait_shipped(SHIP_TIMEOUT)
        .expect("shipped over TLS");
    let mut reader = PostgresReader::connect(&required).expect("reader over TLS");
    let encrypted: i64 = plain
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'gantry-tls-test' AND s.ssl",
            &[],
        )
        .map(|r| r.get(0))
        .expect("pg_stat_ssl");
    assert!(encrypted >= 1, "no encrypted connection from Gantry");
    assert_eq!(reader.series_matching("tls/#").expect("series").len(), 1);
    shipper.stop();

    // The server's self-signed certificate does not name 127.0.0.1: a CA
    // file makes that a refusal, not a silent downgrade.
    let snakeoil = std::path::Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    if snakeoil.exists() {
        let verified = PostgresConfig {
            ca_file: Some(snakeoil.to_path_buf()),
            ..required.clone()
        };
        let err = PostgresReader::connect(&verified)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("connect on PostgreSQL host"), "{err}");
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }
    let missing = PostgresConfig {
        ca_file: Some(dir.path().join("no-such-ca.pem")),
        ..required
    };
    let err = PostgresReader::connect(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("historian.postgres.ca_file") && err.contains("no-such-ca.pem"),
        "{err}"
    );
}
