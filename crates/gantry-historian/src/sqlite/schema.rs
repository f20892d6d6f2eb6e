//! The tables, shared in meaning with the PostgreSQL store: `series` (one row
//! per topic), `points` (one row per value), `rollup_1m` and `rollup_1h`
//! (aggregates per bucket), `gaps` (where values may be missing), `meta`, and
//! the `history` view for people reading the file by hand.

use rusqlite::Connection;

/// Bumped whenever the tables change in a way an older Gantry cannot read.
pub const SCHEMA_VERSION: i64 = 1;

pub(crate) const CREATE: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id         INTEGER PRIMARY KEY,
    topic      TEXT NOT NULL UNIQUE,
    value_type TEXT NOT NULL,          -- int | float | bool | string
    first_ms   INTEGER,                -- earliest stored timestamp
    last_ms    INTEGER                 -- latest stored timestamp
);
-- One row per value. `num` holds int and bool values exactly (as INTEGER)
-- and floats as REAL; `txt` holds string values. quality: 0 good,
-- 1 uncertain, 2 bad. A second value at the same timestamp replaces the first.
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    ts_ms     INTEGER NOT NULL,        -- Unix milliseconds (the sample's own timestamp)
    num,
    txt       TEXT,
    quality   INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;
-- The same values in time order (with the series id, as the primary key's
-- columns ride along), so that "every tag as of T" is one backward scan
-- instead of one lookup per tag.
CREATE INDEX IF NOT EXISTS points_by_time ON points (ts_ms, num, quality);
-- Aggregates of good and uncertain values per bucket; bad values only counted.
CREATE TABLE IF NOT EXISTS rollup_10s (
    series_id INTEGER NOT NULL,
    bucket_ms INTEGER NOT NULL,        -- start of the 10-second bucket
    count     INTEGER NOT NULL,
    bad_count INTEGER NOT NULL,
    min REAL, max REAL, sum REAL,
    first_ms INTEGER, first REAL,
    last_ms  INTEGER, last  REAL,
    PRIMARY KEY (series_id, bucket_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    series_id INTEGER NOT NULL,
    bucket_ms INTEGER NOT NULL,        -- start of the UTC minute
    count     INTEGER NOT NULL,
    bad_count INTEGER NOT NULL,
    min REAL, max REAL, sum REAL,
    first_ms INTEGER, first REAL,
    last_ms  INTEGER, last  REAL,
    PRIMARY KEY (series_id, bucket_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
    series_id INTEGER NOT NULL,
    bucket_ms INTEGER NOT NULL,        -- start of the UTC hour
    count     INTEGER NOT NULL,
    bad_count INTEGER NOT NULL,
    min REAL, max REAL, sum REAL,
    first_ms INTEGER, first REAL,
    last_ms  INTEGER, last  REAL,
    PRIMARY KEY (series_id, bucket_ms)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    id      INTEGER PRIMARY KEY,
    from_ms INTEGER NOT NULL,
    to_ms   INTEGER NOT NULL,
    lost    INTEGER NOT NULL,          -- values known lost; 0 = possibly some
    reason  TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS history AS
    SELECT s.topic,
           p.ts_ms,
           strftime('%Y-%m-%dT%H:%M:%fZ', p.ts_ms / 1000.0, 'unixepoch') AS time,
           coalesce(p.txt, p.num) AS value,
           CASE p.quality WHEN 0 THEN 'good' WHEN 1 THEN 'uncertain' ELSE 'bad' END AS quality
    FROM points p JOIN series s ON s.id = p.series_id;
"#;

/// Reads the schema version (0 for a new, empty file).
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
}
