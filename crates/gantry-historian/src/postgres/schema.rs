//! The PostgreSQL tables, in the configured schema: the same tables and
//! columns as the SQLite store (`meta`, `series`, `points`, `rollup_1m`,
//! `rollup_1h`, `gaps`, and the `history` view), so queries and people read
//! both alike. When the `timescaledb` extension is available, `points`
//! becomes a hypertable on `ts_ms` (integer time: one-day chunks, compressed
//! after seven days); otherwise the tables stay plain.
//!
//! `num` is `double precision` for every numeric type: integers are exact up
//! to 2^53, booleans are 0/1; the series' `value_type` tells readers which
//! type to rebuild ([`crate::point::value_from_columns`]).

use postgres::{Client, Transaction};

use crate::error::HistorianError;

use super::{Target, chain};

/// Bumped whenever the tables change in a way an older Gantry cannot read.
pub const SCHEMA_VERSION: i64 = 1;

/// `{s}` is replaced by the quoted schema name.
const CREATE: &str = r#"
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
-- Topics compare byte-wise (COLLATE "C"), as MQTT filters and SQLite do.
CREATE TABLE IF NOT EXISTS {s}.series (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic      text COLLATE "C" NOT NULL UNIQUE,
    value_type text NOT NULL,            -- int | float | bool | string
    first_ms   bigint,                   -- earliest stored timestamp
    last_ms    bigint                    -- latest stored timestamp
);
-- One row per value. `num` holds every numeric value as double precision
-- (integers exact up to 2^53, booleans 0/1); `txt` holds string values.
-- quality: 0 good, 1 uncertain, 2 bad. A second value at the same timestamp
-- replaces the first.
CREATE TABLE IF NOT EXISTS {s}.points (
    series_id bigint NOT NULL,
    ts_ms     bigint NOT NULL,           -- Unix milliseconds (the sample's own timestamp)
    num       double precision,
    txt       text,
    quality   smallint NOT NULL,
    PRIMARY KEY (series_id, ts_ms)
);
-- Aggregates of good and uncertain values per bucket; bad values only counted.
CREATE TABLE IF NOT EXISTS {s}.rollup_10s (
    series_id bigint NOT NULL,
    bucket_ms bigint NOT NULL,           -- start of the 10-second bucket
    count     bigint NOT NULL,
    bad_count bigint NOT NULL,
    min double precision, max double precision, sum double precision,
    first_ms bigint, first double precision,
    last_ms  bigint, last  double precision,
    PRIMARY KEY (series_id, bucket_ms)
);
CREATE TABLE IF NOT EXISTS {s}.rollup_1m (
    series_id bigint NOT NULL,
    bucket_ms bigint NOT NULL,           -- start of the UTC minute
    count     bigint NOT NULL,
    bad_count bigint NOT NULL,
    min double precision, max double precision, sum double precision,
    first_ms bigint, first double precision,
    last_ms  bigint, last  double precision,
    PRIMARY KEY (series_id, bucket_ms)
);
CREATE TABLE IF NOT EXISTS {s}.rollup_1h (
    series_id bigint NOT NULL,
    bucket_ms bigint NOT NULL,           -- start of the UTC hour
    count     bigint NOT NULL,
    bad_count bigint NOT NULL,
    min double precision, max double precision, sum double precision,
    first_ms bigint, first double precision,
    last_ms  bigint, last  double precision,
    PRIMARY KEY (series_id, bucket_ms)
);
CREATE TABLE IF NOT EXISTS {s}.gaps (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_ms bigint NOT NULL,
    to_ms   bigint NOT NULL,
    lost    bigint NOT NULL,             -- values known lost; 0 = possibly some
    reason  text NOT NULL
);
CREATE OR REPLACE VIEW {s}.history AS
    SELECT s.topic,
           p.ts_ms,
           to_timestamp(p.ts_ms / 1000.0) AS time,
           coalesce(p.txt, p.num::text) AS value,
           CASE p.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality
    FROM {s}.points p JOIN {s}.series s ON s.id = p.series_id;
"#;

/// How `points` is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flavor {
    Plain,
    Timescale,
    /// A hypertable, but compression could not be set up (why), as with
    /// the Apache-2-only build of TimescaleDB.
    TimescaleUncompressed(String),
    /// The extension is installed but could not be used (why).
    TimescaleUnusable(String),
}

impl Flavor {
    /// Logs which flavor is in use.
    pub(crate) fn log(&self, target: &Target) {
        match self {
            Flavor::Plain => tracing::info!(
                "{}: TimescaleDB not available: plain tables",
                target.describe()
            ),
            Flavor::Timescale => tracing::info!(
                "{}: TimescaleDB: points is a hypertable (one-day chunks, compressed after 7 days)",
                target.describe()
            ),
            Flavor::TimescaleUncompressed(why) => tracing::warn!(
                "{}: TimescaleDB: points is a hypertable (one-day chunks), but not compressed ({why})",
                target.describe()
            ),
            Flavor::TimescaleUnusable(why) => tracing::warn!(
                "{}: TimescaleDB is available but could not be used ({why}): plain tables",
                target.describe()
            ),
        }
    }
}

/// The schema version recorded in the target schema; `None` when it has no
/// history tables.
pub(crate) fn version(client: &mut Client, target: &Target) -> Result<Option<i64>, HistorianError> {
    read_version(client, target).map_err(target.err("read the history schema version"))
}

fn read_version<C: postgres::GenericClient>(
    client: &mut C,
    target: &Target,
) -> Result<Option<i64>, postgres::Error> {
    let meta = target.sql("{s}.meta");
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&meta])?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let v = client.query_opt(
        &target.sql("SELECT value FROM {s}.meta WHERE key = 'schema_version'"),
        &[],
    )?;
    let v: Option<String> = match v {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Ok(Some(v.and_then(|v| v.parse().ok()).unwrap_or(0)))
}

/// Creates the schema and tables when missing (serialised between
/// concurrent starters by an advisory lock) and records the version.
pub(crate) fn ensure(client: &mut Client, target: &Target) -> Result<Flavor, HistorianError> {
    let e = target.err("create the history tables");
    let mut tx = client.transaction().map_err(&e)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("gantry-historian:{}", target.schema)],
    )
    .map_err(&e)?;
    match read_version(&mut tx, target).map_err(&e)? {
        // Already there: no DDL, so a role without CREATE rights on the
        // database can write into a schema prepared for it.
        Some(SCHEMA_VERSION) => {}
        Some(found) if found > SCHEMA_VERSION => {
            return Err(HistorianError::Postgres(format!(
                "{}: schema {} has history schema version {found}; this Gantry writes version {SCHEMA_VERSION}",
                target.describe(),
                target.schema
            )));
        }
        _ => {
            tx.batch_execute(&target.sql(CREATE)).map_err(&e)?;
            tx.execute(
                &target.sql(
                    "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                ),
                &[&SCHEMA_VERSION.to_string()],
            )
            .map_err(&e)?;
        }
    }
    let flavor = timescale(&mut tx, target).map_err(&e)?;
    tx.commit().map_err(&e)?;
    Ok(flavor)
}

/// Makes `points` a hypertable when TimescaleDB is available; anything that
/// fails there is rolled back to plain tables.
fn timescale(tx: &mut Transaction<'_>, target: &Target) -> Result<Flavor, postgres::Error> {
    let available: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )?
        .try_get(0)?;
    if !available {
        return Ok(Flavor::Plain);
    }
    let mut savepoint = tx.savepoint("gantry_timescaledb")?;
    match hypertable(&mut savepoint, target) {
        Ok(flavor) => {
            savepoint.commit()?;
            Ok(flavor)
        }
        Err(why) => {
            savepoint.rollback()?;
            Ok(Flavor::TimescaleUnusable(chain(&why)))
        }
    }
}

/// Makes `points` a hypertable (unless it is one), then adds compression in
/// its own savepoint.
fn hypertable(tx: &mut Transaction<'_>, target: &Target) -> Result<Flavor, postgres::Error> {
    tx.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")?;
    let is_hypertable: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables \
             WHERE hypertable_schema = $1 AND hypertable_name = 'points')",
            &[&target.schema],
        )?
        .try_get(0)?;
    if is_hypertable {
        return Ok(Flavor::Timescale);
    }
    let points = target.sql("{s}.points");
    // Integer time needs a "now" in the same unit for the compression policy.
    tx.batch_execute(&target.sql(
        "CREATE OR REPLACE FUNCTION {s}.now_ms() RETURNS bigint LANGUAGE sql STABLE \
         AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$",
    ))?;
    tx.execute(
        "SELECT create_hypertable($1::text::regclass, 'ts_ms', chunk_time_interval => 86400000::bigint, migrate_data => true)",
        &[&points],
    )?;
    tx.execute(
        "SELECT set_integer_now_func($1::text::regclass, $2::text::regproc)",
        &[&points, &target.sql("{s}.now_ms")],
    )?;
    let mut savepoint = tx.savepoint("gantry_timescaledb_compression")?;
    let compression = savepoint
        .batch_execute(&target.sql(
            "ALTER TABLE {s}.points SET (timescaledb.compress, \
             timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'ts_ms')",
        ))
        .and_then(|()| {
            // Seven days, in the column's unit (needs the integer "now" above).
            savepoint.execute(
                "SELECT add_compression_policy($1::text::regclass, \
                 compress_after => 604800000::bigint, if_not_exists => true)",
                &[&points],
            )
        });
    match compression {
        Ok(_) => {
            savepoint.commit()?;
            Ok(Flavor::Timescale)
        }
        Err(why) => {
            savepoint.rollback()?;
            Ok(Flavor::TimescaleUncompressed(chain(&why)))
        }
    }
}
