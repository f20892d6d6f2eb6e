//! The embedded history store: one SQLite file in WAL mode, written by one
//! writer with group commit and read by any number of readers (including the
//! `sqlite3` command-line tool). The schema is documented in
//! `docs/historian.md`.

mod reader;
mod schema;
mod sink;

use std::path::{Path, PathBuf};

pub use reader::SqliteReader;
pub use schema::SCHEMA_VERSION;
pub use sink::SqliteSink;

/// `<data_dir>/history/history.sqlite`.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("history").join("history.sqlite")
}
