//! [`submit`]: one durable append from a short-lived process (`gantry user
//! ...`, `gantry role ...`) without a writer thread. It takes the directory
//! lock, continues the chain after whatever the running broker (or anyone
//! else) wrote, writes and fsyncs the record and seals it with a checkpoint.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::files;
use super::record;
use super::{AuditError, AuditEvent, io_err};

/// How long `submit` waits for a running broker's writer to release the lock.
const SUBMIT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Appends `event` to the audit log in `dir` (`<data_dir>/audit`, created if
/// missing) and returns once it is on disk, with its sequence number. Safe
/// while a broker has the same log open: appends from both are serialised
/// by the directory lock and chained in file order.
pub fn submit(dir: &Path, event: AuditEvent) -> Result<u64, AuditError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let lock_file = files::open_lock_file(dir)?;
    let _guard = files::lock(&lock_file, dir, SUBMIT_LOCK_WAIT)?;
    let meta = files::load_or_create_meta(dir)?;
    let (log_path, cp_path) = files::paths(dir);
    let tail = files::recover_log_tail(&log_path, &meta.log_id)?;
    if tail.cut_bytes > 0 {
        tracing::warn!(
            file = %log_path.display(),
            bytes = tail.cut_bytes,
            "cut an incomplete final audit record (a crash while it was written)"
        );
    }
    let seq = tail.last_seq + 1;
    let enc = record::encode(seq, &meta.log_id, record::now_ms(), &event, &tail.last_hash);
    let mut log = files::open_append(&log_path)?;
    if let Err(e) = log
        .write_all(enc.line.as_bytes())
        .and_then(|()| log.sync_data())
    {
        // Leave no torn line behind (we still hold the lock).
        let _ = log.set_len(tail.size);
        return Err(AuditError::WriteFailed {
            path: log_path,
            message: e.to_string(),
        });
    }
    if meta.created {
        files::sync_dir(dir);
    }
    // The record is durable; the checkpoint only seals it, so its failure is
    // a warning (the next checkpoint covers this record too).
    let sealed = files::recover_checkpoint_tail(&cp_path).and_then(|_| {
        let line =
            super::checkpoint::encode(&meta.key, &meta.log_id, seq, &enc.hash, record::now_ms());
        let mut cp = files::open_append(&cp_path)?;
        cp.write_all(line.as_bytes())
            .and_then(|()| cp.sync_data())
            .map_err(io_err(&cp_path))
    });
    if let Err(e) = sealed {
        tracing::warn!(error = %e, "audit record {seq} written, but its checkpoint was not");
    }
    Ok(seq)
}
