//! KPI recomputation cost: `UNITS` work units (1,000) over one week of state
//! data at 1-second resolution (recorded on change, as the historian stores
//! it) and counters read once a minute, on a 24/7 three-shift calendar with
//! three 30-minute breaks a day.
//!
//! - Gantry: `gantry_kpi::report` over the embedded history store (the
//!   historian's own SQLite tables, loaded through its writer), for the
//!   whole site: every unit's intervals, elements and KPIs.
//! - Reference: the same figures by plain SQL over the same rows in
//!   PostgreSQL (state intervals with `LEAD`, minus the break windows, booked
//!   by state; counter increases with `LAG`; failures counted), one query
//!   for all units.
//!
//! Both answers are compared per unit (APT, PBT, ADOT, ADET, AUST, GQ, SQ,
//! FE) before timing. Prints one JSON line. `bench/kpi.sh` runs it.
//!
//! Options: `--units N` (1000), `--days N` (7), `--runs N` (3), `--dir DIR`,
//! `--reuse` (keep the data of a previous run), `--keep` (leave the
//! PostgreSQL schema); `GANTRY_BENCH_PG` is the PostgreSQL connection.

use std::sync::Arc;
use std::time::Instant;

use gantry_historian::sqlite::{SqliteReader, SqliteSink};
use gantry_historian::{HistorianConfig, Point, Sink};
use gantry_kpi::calendar::{BreakDef, Calendar, LocalTime, ShiftDef, Weekdays};
use gantry_kpi::config::KpiConfig;
use gantry_kpi::period::PeriodSpec;
use gantry_kpi::{Counting, StateModel, WorkUnit};
use gantry_model::{Quality, Value};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, NoTls};

type Error = Box<dyn std::error::Error>;

const MIN: i64 = 60_000;
/// 2026-11-02T00:00:00Z, a Monday.
const FROM: i64 = 1_793_577_600_000;
/// Units per second while running (PRI = 1/10 s: effectiveness 0.9).
const RATE_PER_S: f64 = 9.0;
const PRI_MS: f64 = 100.0;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn num(name: &str, default: usize) -> usize {
    arg(name, &default.to_string()).parse().unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// xorshift64*: deterministic data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

fn unit_path(u: usize) -> String {
    format!(
        "acme/bench/area-{}/line-{}/m{}",
        u / 100,
        (u / 10) % 10,
        u % 10
    )
}

/// One unit's state changes (1-second timestamps) over `[from, to)`.
fn states(u: usize, from: i64, to: i64) -> Vec<(i64, &'static str)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (u as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    let mut out = Vec::new();
    let mut t = from;
    let mut state = "running";
    while t < to {
        out.push((t, state));
        let dwell_s = match state {
            "running" => rng.range(180, 1_200),
            "faulted" => rng.range(15, 240),
            "starved" | "blocked" => rng.range(10, 90),
            "idle" => rng.range(30, 300),
            "changeover" => rng.range(900, 2_400),
            _ => rng.range(600, 1_800),
        };
        t += dwell_s * 1_000;
        state = if state == "running" {
            match rng.next() % 100 {
                0..35 => "faulted",
                35..55 => "starved",
                55..75 => "blocked",
                75..90 => "idle",
                90..95 => "changeover",
                _ => "planned-stop",
            }
        } else {
            "running"
        };
    }
    out
}

/// Good and scrap counters read at the end of every minute in `[from, to)`
/// (and one reading at the very start), carrying the produced total.
fn counters(
    states: &[(i64, &str)],
    from: i64,
    to: i64,
    produced: &mut f64,
) -> Vec<(i64, i64, i64)> {
    let reading = |produced: f64, ts: i64| {
        // One in a hundred is scrap.
        let total = produced.floor() as i64;
        let scrap = total / 100;
        (ts, total - scrap, scrap)
    };
    let mut out = Vec::new();
    if from == FROM {
        out.push(reading(*produced, from));
    }
    let mut i = states.partition_point(|s| s.0 <= from).saturating_sub(1);
    let mut m = from;
    while m < to {
        let end = m + MIN;
        // Running milliseconds in [m, end).
        while i + 1 < states.len() && states[i + 1].0 <= m {
            i += 1;
        }
        let mut run_ms = 0;
        let mut k = i;
        while k < states.len() && states[k].0 < end {
            let a = states[k].0.max(m);
            let b = states.get(k + 1).map_or(i64::MAX, |s| s.0).min(end);
            if states[k].1 == "running" && b > a {
                run_ms += b - a;
            }
            k += 1;
        }
        *produced += run_ms as f64 / 1_000.0 * RATE_PER_S;
        out.push(reading(*produced, end));
        m = end;
    }
    out
}

fn calendar() -> Result<Calendar, Error> {
    let t = |h, m| LocalTime::new(h, m).ok_or("time");
    let shift = |name: &str, start, end, brk: (u8, u8)| -> Result<ShiftDef, Error> {
        Ok(ShiftDef {
            name: name.into(),
            start: t(start, 0)?,
            end: t(end, 0)?,
            days: Weekdays::ALL,
            breaks: vec![BreakDef {
                start: t(brk.0, brk.1)?,
                end: t(brk.0, brk.1 + 30)?,
                reason: "meal break".into(),
            }],
        })
    };
    Ok(Calendar::new(
        "three-shift",
        "UTC",
        vec![
            shift("early", 6, 14, (10, 0))?,
            shift("late", 14, 22, (18, 0))?,
            shift("night", 22, 6, (2, 0))?,
        ],
        Vec::new(),
    )?)
}

fn config(units: usize) -> Result<KpiConfig, Error> {
    let model = StateModel::builtin("gantry").ok_or("state model")?;
    Ok(KpiConfig {
        units: (0..units)
            .map(|u| WorkUnit {
                path: unit_path(u),
                state_tag: "state".into(),
                reason_tag: None,
                counting: Counting::GoodAndScrap {
                    good: "good".into(),
                    scrap: "scrap".into(),
                },
                counter_modulus: None,
                ideal_cycle_ms: PRI_MS,
                product_tag: None,
                ideal_cycle_ms_by_product: Default::default(),
                energy_tag: None,
                state_model: model.clone(),
                calendar: "three-shift".into(),
            })
            .collect(),
        calendars: vec![calendar()?],
        publish_every_ms: 10_000,
    })
}

/// (series id, topic) of a unit's three tags.
fn series_of(u: usize) -> [(i64, String); 3] {
    let p = unit_path(u);
    let base = u as i64 * 3;
    [
        (base + 1, format!("{p}/state")),
        (base + 2, format!("{p}/good")),
        (base + 3, format!("{p}/scrap")),
    ]
}

fn load(units: usize, to: i64, path: &std::path::Path, pg: &mut Client) -> Result<u64, Error> {
    let _ = std::fs::remove_file(path);
    let mut sink = SqliteSink::open(path, &HistorianConfig::default())?;
    pg.batch_execute(
        "DROP SCHEMA IF EXISTS bench_kpi CASCADE; CREATE SCHEMA bench_kpi;
         CREATE TABLE bench_kpi.series (id bigint PRIMARY KEY, topic text UNIQUE NOT NULL);
         CREATE TABLE bench_kpi.points (series_id bigint NOT NULL, ts_ms bigint NOT NULL,
             num double precision, txt text, quality smallint NOT NULL,
             PRIMARY KEY (series_id, ts_ms));",
    )?;
    let mut tx = pg.transaction()?;
    {
        let w = tx.copy_in("COPY bench_kpi.series (id, topic) FROM STDIN BINARY")?;
        let mut w = BinaryCopyInWriter::new(w, &[Type::INT8, Type::TEXT]);
        for u in 0..units {
            for (id, topic) in series_of(u) {
                w.write(&[&id, &topic])?;
            }
        }
        w.finish()?;
    }
    let w = tx
        .copy_in("COPY bench_kpi.points (series_id, ts_ms, num, txt, quality) FROM STDIN BINARY")?;
    let mut w = BinaryCopyInWriter::new(
        w,
        &[Type::INT8, Type::INT8, Type::FLOAT8, Type::TEXT, Type::INT2],
    );
    let mut n = 0u64;
    let mut batch = Vec::with_capacity(60_000);
    // Day by day, every unit's values of that day: the order values reach
    // a historian in (time first), which keeps index inserts local.
    let all_states: Vec<Vec<(i64, &str)>> = (0..units).map(|u| states(u, FROM, to)).collect();
    let mut produced = vec![0f64; units];
    let mut day = FROM;
    while day < to {
        let day_end = (day + 86_400_000).min(to);
        for u in 0..units {
            let s = &all_states[u];
            let c = counters(s, day, day_end, &mut produced[u]);
            let [(sid, st), (gid, gt), (cid, ct)] = series_of(u);
            let (st, gt, ct): (Arc<str>, Arc<str>, Arc<str>) = (st.into(), gt.into(), ct.into());
            let first = s.partition_point(|x| x.0 < day);
            let last = s.partition_point(|x| x.0 < day_end);
            for (ts, state) in &s[first..last] {
                w.write(&[&sid, ts, &None::<f64>, &Some(*state), &0i16])?;
                batch.push(Point {
                    topic: st.clone(),
                    ts_ms: *ts,
                    value: Value::Text((*state).into()),
                    quality: Quality::Good,
                });
            }
            for (ts, good, scrap) in &c {
                w.write(&[&gid, ts, &Some(*good as f64), &None::<&str>, &0i16])?;
                w.write(&[&cid, ts, &Some(*scrap as f64), &None::<&str>, &0i16])?;
                for (topic, v) in [(&gt, *good), (&ct, *scrap)] {
                    batch.push(Point {
                        topic: topic.clone(),
                        ts_ms: *ts,
                        value: Value::Int(v),
                        quality: Quality::Good,
                    });
                }
            }
            if batch.len() >= 50_000 {
                n += batch.len() as u64;
                sink.write(&batch, &[])?;
                batch.clear();
            }
        }
        day = day_end;
    }
    n += batch.len() as u64;
    sink.write(&batch, &[])?;
    sink.close()?;
    w.finish()?;
    tx.commit()?;
    pg.batch_execute("ANALYZE bench_kpi.points; ANALYZE bench_kpi.series")?;
    Ok(n)
}

/// The reference: every unit's elements by plain SQL. Breaks are the three
/// 30-minute windows a day; planned-stop states outside them are PDOT too.
const SQL: &str = "
WITH breaks AS (
    SELECT d + h AS lo, d + h + 1800000 AS hi
    FROM generate_series($1::bigint, $2::bigint - 1, 86400000) AS d,
         (VALUES (36000000::bigint), (64800000::bigint), (7200000::bigint)) AS b(h)
),
st AS (
    SELECT s.topic, p.series_id, p.ts_ms AS a,
           LEAD(p.ts_ms, 1, $2::bigint) OVER (PARTITION BY p.series_id ORDER BY p.ts_ms) AS b,
           p.txt AS state
    FROM bench_kpi.points p JOIN bench_kpi.series s ON s.id = p.series_id
    WHERE s.topic LIKE '%/state' AND p.ts_ms < $2
),
iv AS (
    SELECT st.topic, st.state, GREATEST(st.a, $1) AS a, LEAST(st.b, $2) AS b,
           (SELECT COALESCE(SUM(GREATEST(0, LEAST(st.b, $2, k.hi) - GREATEST(st.a, $1, k.lo))), 0)
            FROM breaks k WHERE k.lo < st.b AND k.hi > st.a) AS in_break
    FROM st WHERE st.b > $1
),
el AS (
    SELECT left(topic, length(topic) - 6) AS unit,
           SUM(b - a - in_break) FILTER (WHERE state = 'running') AS apt,
           SUM(b - a - in_break) FILTER (WHERE state = 'changeover') AS aust,
           SUM(b - a - in_break) FILTER (WHERE state IN ('starved', 'blocked')) AS adet,
           SUM(b - a - in_break) FILTER (WHERE state IN ('faulted', 'idle')) AS adot,
           SUM(b - a - in_break) FILTER (WHERE state = 'planned-stop') AS pdot_states,
           SUM(in_break) AS pdot_breaks,
           COUNT(*) FILTER (WHERE state = 'faulted' AND b - a - in_break > 0) AS fe
    FROM iv GROUP BY 1
),
cnt AS (
    SELECT s.topic, p.ts_ms, p.num,
           p.num - LAG(p.num) OVER (PARTITION BY p.series_id ORDER BY p.ts_ms) AS d
    FROM bench_kpi.points p JOIN bench_kpi.series s ON s.id = p.series_id
    WHERE (s.topic LIKE '%/good' OR s.topic LIKE '%/scrap') AND p.ts_ms >= $1 AND p.ts_ms < $2
),
q AS (
    SELECT regexp_replace(topic, '/(good|scrap)$', '') AS unit,
           SUM(CASE WHEN d >= 0 THEN d ELSE num END) FILTER (WHERE topic LIKE '%/good') AS gq,
           SUM(CASE WHEN d >= 0 THEN d ELSE num END) FILTER (WHERE topic LIKE '%/scrap') AS sq
    FROM cnt WHERE d IS NOT NULL GROUP BY 1
)
SELECT el.unit, COALESCE(apt, 0)::bigint, COALESCE(aust, 0)::bigint, COALESCE(adet, 0)::bigint,
       COALESCE(adot, 0)::bigint,
       (COALESCE(pdot_states, 0) + COALESCE(pdot_breaks, 0))::bigint AS pdot,
       (($2::bigint - $1::bigint) - (COALESCE(pdot_states, 0) + COALESCE(pdot_breaks, 0)))::bigint AS pbt,
       COALESCE(gq, 0), COALESCE(sq, 0), fe,
       COALESCE(apt, 0)::float8 / NULLIF(($2::bigint - $1::bigint) - COALESCE(pdot_states, 0) - COALESCE(pdot_breaks, 0), 0) AS availability,
       $3::float8 * (COALESCE(gq, 0) + COALESCE(sq, 0)) / NULLIF(COALESCE(apt, 0), 0) AS effectiveness,
       COALESCE(gq, 0)::float8 / NULLIF(COALESCE(gq, 0) + COALESCE(sq, 0), 0) AS quality
FROM el LEFT JOIN q ON q.unit = el.unit ORDER BY el.unit COLLATE \"C\"";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kpi_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let units = num("--units", 1_000);
    let days = num("--days", 7) as i64;
    let runs = num("--runs", 3).max(1);
    let dir = std::path::PathBuf::from(arg("--dir", "/tmp/gantry-kpi-bench"));
    std::fs::create_dir_all(&dir)?;
    let url = std::env::var("GANTRY_BENCH_PG")
        .map_err(|_| "set GANTRY_BENCH_PG to a PostgreSQL connection string")?;
    let to = FROM + days * 86_400_000;
    let path = dir.join("history.sqlite");
    let mut pg = Client::connect(&url, NoTls)?;
    let rows = if flag("--reuse") && path.exists() {
        0
    } else {
        let t = Instant::now();
        let n = load(units, to, &path, &mut pg)?;
        eprintln!(
            "loaded {n} values into both stores in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        n
    };
    let config = config(units)?;
    let spec = PeriodSpec::Range {
        from_ms: FROM,
        to_ms: to,
    };
    let stmt = pg.prepare(SQL)?;

    // Same answer first.
    let mut reader = SqliteReader::open(&path)?;
    let ours = gantry_kpi::report::report(&config, &mut reader, "acme/bench", &spec, to)?;
    let theirs = pg.query(&stmt, &[&FROM, &to, &PRI_MS])?;
    if theirs.len() != ours.units.len() {
        return Err(format!(
            "{} units by SQL, {} by Gantry",
            theirs.len(),
            ours.units.len()
        )
        .into());
    }
    let mut by_path: Vec<&gantry_kpi::UnitResult> = ours.units.iter().collect();
    by_path.sort_by(|a, b| a.path.cmp(&b.path));
    for (u, row) in by_path.iter().zip(&theirs) {
        let unit: String = row.get(0);
        let e = &u.elements;
        let sql: [i64; 6] = [
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
            row.get(6),
        ];
        let ours_t = [
            e.apt_ms,
            e.aust_ms,
            e.adet_ms,
            e.adot_ms,
            e.pdot_ms,
            e.pbt_ms(),
        ];
        let (gq, sq): (f64, f64) = (row.get(7), row.get(8));
        let fe: i64 = row.get(9);
        if unit != u.path
            || sql != ours_t
            || gq != e.good
            || sq != e.scrap
            || fe as u64 != e.failures
        {
            return Err(format!(
                "{unit} differs: SQL {sql:?} GQ {gq} SQ {sq} FE {fe}; Gantry {} {ours_t:?} GQ {} SQ {} FE {}",
                u.path, e.good, e.scrap, e.failures
            )
            .into());
        }
    }

    let (mut g, mut p) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let mut reader = SqliteReader::open(&path)?;
        let r = gantry_kpi::report::report(&config, &mut reader, "acme/bench", &spec, to)?;
        g.push(t.elapsed().as_secs_f64() * 1_000.0);
        std::hint::black_box(r);
        let t = Instant::now();
        std::hint::black_box(pg.query(&stmt, &[&FROM, &to, &PRI_MS])?);
        p.push(t.elapsed().as_secs_f64() * 1_000.0);
    }
    let states: usize = (0..units).map(|u| states(u, FROM, to).len()).sum();
    let (g, p) = (median(g), median(p));
    println!(
        "{{\"measure\":\"kpi recomputation\",\"units\":{units},\"days\":{days},\"state_changes\":{states},\"values_loaded\":{rows},\"gantry_ms\":{g:.1},\"postgresql_sql_ms\":{p:.1},\"speedup\":{:.1},\"site_oee\":{:.4}}}",
        p / g,
        ours.kpi(gantry_kpi::Kpi::Oee)
            .and_then(|v| v.value)
            .unwrap_or(f64::NAN)
    );
    if !flag("--keep") {
        pg.batch_execute("DROP SCHEMA bench_kpi CASCADE")?;
    }
    Ok(())
}
