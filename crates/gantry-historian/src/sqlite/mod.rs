//! The embedded history store: one SQLite file in WAL mode, read by any
//! number of readers (including the `sqlite3` command-line tool). The schema
//! is documented in `docs/historian.md`.
//!
//! The historian writes it in two steps: the writer thread appends each
//! group commit to a spool next to it (`history.spool.sqlite`, see
//! [`crate::spool`]), which is what an acknowledgement waits for, and the
//! `applier` thread moves the spooled values into the store in large
//! batches.
//!
//! - `sink`: [`SqliteSink`], the store's writer (series, points, rollups,
//!   gaps, retention).
//! - `applier`: the thread from spool to store, and [`wait_applied`] for
//!   readers that must see everything acknowledged.
//! - `reader`: [`SqliteReader`], the [`HistoryRead`](crate::read::HistoryRead).
//! - `schema`: the tables.

mod applier;
mod reader;
mod schema;
mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::HistorianConfig;
use crate::error::HistorianError;
use crate::spool::{Shared, SpoolSink};

pub use applier::{APPLY_BATCH, DRAIN_WAIT, wait_applied};
pub use reader::SqliteReader;
pub use schema::SCHEMA_VERSION;
pub use sink::SqliteSink;

/// `<data_dir>/history/history.sqlite`.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("history").join("history.sqlite")
}

/// Opens (creating it and its directory if needed) a SQLite file the
/// historian writes: WAL, `synchronous` NORMAL (FULL with `fsync`), a WAL
/// checkpoint every 64 MiB rather than 4 MiB (pages rewritten by many
/// batches are copied back once; a spool's are often freed before), and a
/// 5 s busy timeout. The store and the spools add their own settings.
pub(crate) fn open_writable(
    path: &Path,
    fsync: bool,
) -> Result<rusqlite::Connection, HistorianError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| HistorianError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let e = |source| HistorianError::sqlite(path, source);
    let conn = rusqlite::Connection::open(path).map_err(e)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(e)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "NORMAL" })
        .map_err(e)?;
    conn.pragma_update(None, "wal_autocheckpoint", 16_384)
        .map_err(e)?;
    Ok(conn)
}

/// The spool in front of a store: `history.sqlite` → `history.spool.sqlite`.
pub fn spool_path(store: &Path) -> PathBuf {
    let stem = store
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "history".into());
    store.with_file_name(format!("{stem}.spool.sqlite"))
}

/// Stops the applier (after it drained the spool, within [`DRAIN_WAIT`]).
pub(crate) type StopApplying = Box<dyn FnOnce() + Send>;

/// Opens the store and its spool and starts the applier: what the historian
/// runs with `backend = "sqlite"`. The writer thread writes into the returned
/// spool sink; the shared state reports the backlog.
pub(crate) fn start(
    store: &Path,
    config: &HistorianConfig,
) -> Result<(SpoolSink, StopApplying, Arc<Shared>), HistorianError> {
    let sink = SqliteSink::open_behind_spool(store, config)?;
    let spool = SpoolSink::open(&spool_path(store), config)?;
    let applier = applier::Applier::spawn(sink, &spool, config)?;
    let shared = spool.shared.clone();
    Ok((spool, Box::new(move || applier.stop()), shared))
}

/// Waits (briefly) until everything acknowledged before the call is in the
/// store at `store`: see [`wait_applied`]. Gives up after 2 s without
/// progress or 30 s in all, returning the values still waiting.
pub fn settle(store: &Path) -> Result<u64, HistorianError> {
    wait_applied(
        store,
        &spool_path(store),
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
}
