//! The historian's errors.

use std::path::PathBuf;

/// What went wrong in the historian, naming the store and the operation.
#[derive(Debug, thiserror::Error)]
pub enum HistorianError {
    #[error("history database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the history directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("PostgreSQL history store: {0}")]
    Postgres(String),
    #[error(
        "history database {path} has schema version {found}; this Gantry reads version {expected}"
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("invalid query: {0}")]
    Query(String),
    /// The caller may not read (subscribe to) this exact topic.
    #[error("{who} may not read the history of {topic} (no subscribe permission on it)")]
    Denied { topic: String, who: String },
    /// Writing query output (an export) failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error("the historian has stopped")]
    Stopped,
}

impl HistorianError {
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> Self {
        HistorianError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}
