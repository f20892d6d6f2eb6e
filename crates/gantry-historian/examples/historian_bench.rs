//! The historian's benchmark, side by side with plain PostgreSQL in one run
//! (see `bench/historian.sh`, which also measures ingest through the broker):
//!
//! - `ingest`: the embedded store's own write rate (the writer's `Sink`, in
//!   batches as the writer forms them) and a plain binary `COPY` of the same
//!   rows into PostgreSQL (same columns and primary key) as the reference.
//! - `query`: one tag over one day at 1 Hz downsampled to 1,000 buckets, and
//!   a 10,000-tag snapshot as of a past time: Gantry's query API on the
//!   embedded store against the best plain SQL for the same answer on
//!   PostgreSQL (a `GROUP BY` over the bucket number; a `LATERAL` latest-row
//!   join and `DISTINCT ON`, whichever is faster).
//!
//! Prints one JSON line per measurement: medians (what `bench/historian.sh`
//! reports) and minimums of the runs.
//!
//! Options: `--dir DIR`, `--runs N`, `--reuse` (keep the loaded data of a
//! previous `--keep` run), `--keep` (leave the PostgreSQL schema), and
//! `--profile downsample|snapshot` (run only Gantry's side of one query, 500
//! times, for `perf record`).

use std::sync::Arc;
use std::time::Instant;

use gantry_historian::query::{self, Aggregate, AggregateQuery};
use gantry_historian::sqlite::{SqliteReader, SqliteSink};
use gantry_historian::{FullAccess, HistorianConfig, Point, Sink};
use gantry_model::{Quality, Value};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};

const DAY_MS: i64 = 86_400_000;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn num(name: &str, default: usize) -> usize {
    arg(name, &default.to_string()).parse().unwrap_or(default)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Value `k` of tag `tag`: a deterministic wavy signal.
fn value(tag: usize, k: usize) -> f64 {
    ((k as f64 * 0.01 + tag as f64).sin() * 100.0).round() / 10.0
}

fn rows(
    tags: usize,
    values: usize,
    base_ms: i64,
    step_ms: i64,
) -> impl Iterator<Item = (usize, i64, f64)> {
    (0..values).map(move |n| {
        let tag = n % tags;
        let k = n / tags;
        (tag, base_ms + k as i64 * step_ms, value(tag, k))
    })
}

fn pg_connect(url: &str) -> Result<Client, Box<dyn std::error::Error>> {
    Ok(Client::connect(url, NoTls)?)
}

fn pg_reset(pg: &mut Client, schema: &str) -> Result<(), Box<dyn std::error::Error>> {
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.series (id bigint PRIMARY KEY, topic text UNIQUE NOT NULL);
         CREATE TABLE {schema}.points (series_id bigint NOT NULL, ts_ms bigint NOT NULL,
             num double precision, txt text, quality smallint NOT NULL,
             PRIMARY KEY (series_id, ts_ms));"
    ))?;
    Ok(())
}

fn pg_copy(
    pg: &mut Client,
    schema: &str,
    tags: usize,
    it: impl Iterator<Item = (usize, i64, f64)>,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut tx = pg.transaction()?;
    {
        let sink = tx.copy_in(&format!(
            "COPY {schema}.series (id, topic) FROM STDIN BINARY"
        ))?;
        let mut w = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT]);
        for t in 0..tags {
            w.write(&[&(t as i64), &topic(t)])?;
        }
        w.finish()?;
    }
    let sink = tx.copy_in(&format!(
        "COPY {schema}.points (series_id, ts_ms, num, txt, quality) FROM STDIN BINARY"
    ))?;
    let mut w = BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::INT8, Type::FLOAT8, Type::TEXT, Type::INT2],
    );
    for (tag, ts, v) in it {
        w.write(&[&(tag as i64), &ts, &v, &None::<String>, &0i16])?;
    }
    let n = w.finish()?;
    tx.commit()?;
    Ok(n)
}

fn topic(tag: usize) -> String {
    format!("bench/lab/area/line/e{}/t{}", tag / 100, tag % 100)
}

fn sqlite_load(
    path: &std::path::Path,
    tags: usize,
    it: impl Iterator<Item = (usize, i64, f64)>,
) -> Result<u64, Box<dyn std::error::Error>> {
    let mut sink = SqliteSink::open(path, &HistorianConfig::default())?;
    let topics: Vec<Arc<str>> = (0..tags).map(|t| Arc::from(topic(t))).collect();
    let mut batch = Vec::with_capacity(50_000);
    let mut n = 0u64;
    for (tag, ts, v) in it {
        batch.push(Point {
            topic: topics[tag].clone(),
            ts_ms: ts,
            value: Value::Float(v),
            quality: Quality::Good,
        });
        if batch.len() == 50_000 {
            sink.write(&batch, &[])?;
            n += batch.len() as u64;
            batch.clear();
        }
    }
    sink.write(&batch, &[])?;
    n += batch.len() as u64;
    sink.close()?;
    Ok(n)
}

fn ingest(url: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let tags = num("--tags", 1000);
    let values = num("--values", 1_000_000);
    let base = 1_790_000_000_000i64;
    let path = dir.join("ingest.sqlite");
    let _ = std::fs::remove_file(&path);
    let started = Instant::now();
    let n = sqlite_load(&path, tags, rows(tags, values, base, 1000))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"measure\":\"ingest\",\"store\":\"gantry-embedded (writer sink)\",\"values\":{n},\"seconds\":{secs:.3},\"values_per_s\":{:.0}}}",
        n as f64 / secs
    );
    if std::env::args().any(|a| a == "--no-pg") {
        return Ok(());
    }
    let mut pg = pg_connect(url)?;
    pg_reset(&mut pg, "bench_copy")?;
    let started = Instant::now();
    let n = pg_copy(&mut pg, "bench_copy", tags, rows(tags, values, base, 1000))?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"measure\":\"ingest\",\"store\":\"postgresql plain binary COPY\",\"values\":{n},\"seconds\":{secs:.3},\"values_per_s\":{:.0}}}",
        n as f64 / secs
    );
    pg.batch_execute("DROP SCHEMA bench_copy CASCADE")?;
    Ok(())
}

fn queries(url: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let runs = num("--runs", 15);
    let snap_tags = num("--snapshot-tags", 10_000);
    let per_tag = num("--values-per-tag", 100);
    let base = 1_790_000_000_000i64 - 1_790_000_000_000i64 % DAY_MS;
    // Tag 0: one day at 1 Hz. Tags 0..snap_tags: `per_tag` values each, every
    // 36 s (one hour), for the snapshot. Same rows in both stores.
    let day = move || (0..86_400usize).map(move |k| (0usize, base + k as i64 * 1000, value(0, k)));
    let snap = move || {
        rows(snap_tags, snap_tags * per_tag, base + DAY_MS, 36_000).filter(|(t, _, _)| *t != 0)
    };
    let path = dir.join("query.sqlite");
    let mut pg = pg_connect(url)?;
    // `--reuse` keeps the data of the previous run (for profiling the queries).
    if !std::env::args().any(|a| a == "--reuse") {
        let _ = std::fs::remove_file(&path);
        sqlite_load(&path, snap_tags.max(1), day().chain(snap()))?;
        pg_reset(&mut pg, "bench_query")?;
        pg_copy(
            &mut pg,
            "bench_query",
            snap_tags.max(1),
            day().chain(snap()),
        )?;
        pg.batch_execute("ANALYZE bench_query.points; ANALYZE bench_query.series")?;
    }

    // 1. One day at 1 Hz to 1,000 buckets (86.4 s): count, min, max, avg.
    let mut reader = SqliteReader::open(&path)?;
    let q = AggregateQuery {
        filter: topic(0),
        from_ms: base,
        to_ms: base + DAY_MS,
        bucket_ms: DAY_MS / 1000,
        aggregates: vec![
            Aggregate::Count,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Avg,
        ],
        now_ms: base + 2 * DAY_MS,
    };
    let at = base + DAY_MS + (per_tag as i64 / 2) * 36_000 + 17_000;
    match arg("--profile", "").as_str() {
        "" => {}
        "downsample" => {
            for _ in 0..500 {
                std::hint::black_box(query::aggregate(&mut reader, &FullAccess, &q)?);
            }
            return Ok(());
        }
        "snapshot" => {
            for _ in 0..500 {
                std::hint::black_box(query::snapshot(
                    &mut reader,
                    &FullAccess,
                    "bench/lab/#",
                    at,
                )?);
            }
            return Ok(());
        }
        other => return Err(format!("--profile {other}: use downsample or snapshot").into()),
    }
    let ours = query::aggregate(&mut reader, &FullAccess, &q)?;
    let ours_buckets = &ours.series[0].buckets;
    let sql = "SELECT (ts_ms - $2) / $4 AS b, count(*), min(num), max(num), avg(num)
               FROM bench_query.points WHERE series_id = $1 AND ts_ms >= $2 AND ts_ms < $3
               GROUP BY b ORDER BY b";
    let stmt = pg.prepare(sql)?;
    let theirs = pg.query(&stmt, &[&0i64, &q.from_ms, &q.to_ms, &q.bucket_ms])?;
    // Same answer: bucket counts and averages agree.
    if theirs.len() != ours_buckets.len() {
        return Err(format!(
            "bucket count differs: {} vs {}",
            ours_buckets.len(),
            theirs.len()
        )
        .into());
    }
    for (o, t) in ours_buckets.iter().zip(&theirs) {
        let count: i64 = t.get(1);
        let avg: f64 = t.get(4);
        if o.count != count as u64 || o.avg.is_none_or(|a| (a - avg).abs() > 1e-6) {
            return Err(format!(
                "bucket at {} differs: ours {:?}/{:?}, plain SQL {count}/{avg}",
                o.start_ms, o.count, o.avg
            )
            .into());
        }
    }
    let mut ours_t = Vec::new();
    let mut theirs_t = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = query::aggregate(&mut reader, &FullAccess, &q)?;
        ours_t.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(r);
        let t = Instant::now();
        let r = pg.query(&stmt, &[&0i64, &q.from_ms, &q.to_ms, &q.bucket_ms])?;
        theirs_t.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(r);
    }
    let (o_min, t_min) = (min(&ours_t), min(&theirs_t));
    let (o, t) = (median(ours_t), median(theirs_t));
    println!(
        "{{\"measure\":\"downsample 1 day @1 Hz to 1000 buckets\",\"source\":\"{}\",\"gantry_ms\":{o:.3},\"postgresql_sql_ms\":{t:.3},\"speedup\":{:.1},\"gantry_min_ms\":{o_min:.3},\"postgresql_min_ms\":{t_min:.3}}}",
        ours.series[0].source,
        t / o
    );

    // 2. Snapshot of 10,000 tags as of a past time (middle of their hour).
    let snap_ours = query::snapshot(&mut reader, &FullAccess, "bench/lab/#", at)?;
    let lateral = pg.prepare(
        "SELECT s.topic, p.ts_ms, p.num FROM bench_query.series s
         CROSS JOIN LATERAL (SELECT ts_ms, num FROM bench_query.points
                             WHERE series_id = s.id AND ts_ms <= $1 ORDER BY ts_ms DESC LIMIT 1) p
         WHERE s.topic LIKE 'bench/lab/%'",
    )?;
    let distinct_on = pg.prepare(
        "SELECT DISTINCT ON (p.series_id) s.topic, p.ts_ms, p.num FROM bench_query.points p
         JOIN bench_query.series s ON s.id = p.series_id
         WHERE s.topic LIKE 'bench/lab/%' AND p.ts_ms <= $1
         ORDER BY p.series_id, p.ts_ms DESC",
    )?;
    let theirs = pg.query(&lateral, &[&at])?;
    if theirs.len() != snap_ours.values.len() {
        return Err(format!(
            "snapshot size differs: {} vs {}",
            snap_ours.values.len(),
            theirs.len()
        )
        .into());
    }
    let mut ours_t = Vec::new();
    let mut lat_t = Vec::new();
    let mut dis_t = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(query::snapshot(
            &mut reader,
            &FullAccess,
            "bench/lab/#",
            at,
        )?);
        ours_t.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::hint::black_box(pg.query(&lateral, &[&at])?);
        lat_t.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::hint::black_box(pg.query(&distinct_on, &[&at])?);
        dis_t.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (o_min, l_min) = (min(&ours_t), min(&lat_t));
    let (o, l, d) = (median(ours_t), median(lat_t), median(dis_t));
    let best = l.min(d);
    println!(
        "{{\"measure\":\"snapshot of {} tags as of T\",\"gantry_ms\":{o:.3},\"postgresql_lateral_ms\":{l:.3},\"postgresql_distinct_on_ms\":{d:.3},\"speedup_vs_best\":{:.1},\"gantry_min_ms\":{o_min:.3},\"postgresql_lateral_min_ms\":{l_min:.3}}}",
        snap_ours.values.len(),
        best / o
    );
    if !std::env::args().any(|a| a == "--keep") {
        pg.batch_execute("DROP SCHEMA bench_query CASCADE")?;
    }
    Ok(())
}

fn main() {
    let url = std::env::var("GANTRY_BENCH_PG").unwrap_or_else(|_| {
        "host=127.0.0.1 user=gantry_test password=gantry_test dbname=gantry_test".into()
    });
    let dir = std::path::PathBuf::from(arg("--dir", "/tmp/gantry-historian-bench"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let what = std::env::args().nth(1).unwrap_or_default();
    let result = match what.as_str() {
        "ingest" => ingest(&url, &dir),
        "query" => queries(&url, &dir),
        _ => {
            Err("usage: historian_bench ingest|query [--tags N --values N --runs N --dir D]".into())
        }
    };
    if let Err(e) = result {
        eprintln!("historian_bench: {e}");
        std::process::exit(1);
    }
}
