//! The audit directory: file names, the log's identity and signing key, the
//! inter-process append lock, and finding (and repairing) the end of the
//! record and checkpoint files after a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::record::{self, Hash};
use super::{AuditError, io_err};

pub(crate) const LOG_FILE: &str = "audit.jsonl";
pub(crate) const CHECKPOINT_FILE: &str = "checkpoints.jsonl";
pub(crate) const LOG_ID_FILE: &str = "log-id";
pub(crate) const KEY_FILE: &str = "signing-key";
pub(crate) const PUBLIC_KEY_FILE: &str = "signing-key.pub";
pub(crate) const LOCK_FILE: &str = "lock";

/// The log's identity and checkpoint key.
pub(crate) struct Meta {
    pub log_id: String,
    pub key: SigningKey,
    /// This open created the log.
    pub created: bool,
}

/// Reads a one-line hex file; `None` if it does not exist.
pub(crate) fn read_hex_file(path: &Path) -> Result<Option<String>, AuditError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn random_bytes<const N: usize>(path: &Path) -> Result<[u8; N], AuditError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| AuditError::Setup {
        path: path.to_path_buf(),
        message: format!("no operating-system randomness: {e}"),
    })?;
    Ok(b)
}

/// Writes `content` to `path` atomically (temporary file, fsync, rename),
/// with `mode` on Unix.
fn write_file_atomic(path: &Path, content: &str, mode: u32) -> Result<(), AuditError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp).map_err(io_err(&tmp))?;
    f.write_all(content.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err(path))
}

pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn setup(path: &Path, message: impl Into<String>) -> AuditError {
    AuditError::Setup {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn parse_key(path: &Path, hex_seed: &str) -> Result<SigningKey, AuditError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(hex_seed, &mut seed)
        .map_err(|e| setup(path, format!("not a 32-byte hex Ed25519 key: {e}")))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads the log's identity and key, creating them on first use. Call with
/// the directory lock held.
pub(crate) fn load_or_create_meta(dir: &Path) -> Result<Meta, AuditError> {
    let id_path = dir.join(LOG_ID_FILE);
    let key_path = dir.join(KEY_FILE);
    let pub_path = dir.join(PUBLIC_KEY_FILE);
    let log_id = read_hex_file(&id_path)?;
    let key_hex = read_hex_file(&key_path)?;
    let pub_hex = read_hex_file(&pub_path)?;
    match log_id {
        Some(log_id) => {
            if log_id.is_empty() || !log_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(setup(
                    &id_path,
                    "not a log identifier (expected hex digits)",
                ));
            }
            let Some(key_hex) = key_hex else {
                return Err(setup(
                    &key_path,
                    "the checkpoint signing key is missing; restore it from a backup (a new key would not match the existing checkpoints)",
                ));
            };
            let key = parse_key(&key_path, &key_hex)?;
            let expected = hex::encode(key.verifying_key().to_bytes());
            match pub_hex {
                Some(p) if p == expected => {}
                Some(_) => {
                    return Err(setup(
                        &pub_path,
                        format!("does not match the private key in {}", key_path.display()),
                    ));
                }
                None => {
                    tracing::warn!(file = %pub_path.display(), "audit public key file missing; recreating it from the private key");
                    write_file_atomic(&pub_path, &format!("{expected}\n"), 0o644)?;
                }
            }
            Ok(Meta {
                log_id,
                key,
                created: false,
            })
        }
        None => {
            let log_path = dir.join(LOG_FILE);
            if fs::metadata(&log_path).is_ok_and(|m| m.len() > 0) {
                return Err(setup(
                    &id_path,
                    format!(
                        "missing, but {} has records; restore it from a backup",
                        log_path.display()
                    ),
                ));
            }
            // A crash during creation may have left a key: keep using it.
            let key = match key_hex {
                Some(h) => parse_key(&key_path, &h)?,
                None => {
                    let key = SigningKey::from_bytes(&random_bytes::<32>(&key_path)?);
                    write_file_atomic(
                        &key_path,
                        &format!("{}\n", hex::encode(key.to_bytes())),
                        0o600,
                    )?;
                    key
                }
            };
            write_file_atomic(
                &pub_path,
                &format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
                0o644,
            )?;
            let log_id = hex::encode(random_bytes::<16>(&id_path)?);
            // Written last: its presence means the log is fully set up.
            write_file_atomic(&id_path, &format!("{log_id}\n"), 0o644)?;
            sync_dir(dir);
            Ok(Meta {
                log_id,
                key,
                created: true,
            })
        }
    }
}

/// Holds the directory's append lock (`flock`) until dropped. Separate
/// processes (the broker and a CLI command) take turns appending; each
/// re-reads the end of the log after taking it.
pub(crate) struct LockGuard<'a>(&'a File);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

pub(crate) fn open_lock_file(dir: &Path) -> Result<File, AuditError> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))
}

/// Takes the append lock, waiting at most `wait` for another process to
/// release it.
pub(crate) fn lock<'a>(
    file: &'a File,
    dir: &Path,
    wait: std::time::Duration,
) -> Result<LockGuard<'a>, AuditError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(LockGuard(file)),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(setup(
                    &dir.join(LOCK_FILE),
                    format!("another process has held the audit log's lock for over {wait:?}"),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&dir.join(LOCK_FILE))(e)),
        }
    }
}

/// The end of a file: the last complete line `accept` recognises, the
/// complete lines after it that it did not, and an unterminated final line.
struct TailScan<T> {
    last: Option<T>,
    /// Complete lines after `last` that `accept` rejected.
    damaged_after: u64,
    torn: Vec<u8>,
}

/// Reads backwards from the end of `file` (length `len`) in growing windows
/// until a complete line `accept` recognises is found or the file start is
/// reached.
fn scan_back<T>(
    file: &mut File,
    len: u64,
    accept: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<TailScan<T>> {
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        let last_nl = buf.iter().rposition(|&b| b == b'\n');
        let (complete, torn) = match last_nl {
            Some(i) => (&buf[..=i], &buf[i + 1..]),
            None if start == 0 => (&buf[..0], &buf[..]),
            None => {
                window = window.saturating_mul(4);
                continue;
            }
        };
        let mut lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
        lines.pop(); // the empty piece after the final '\n'
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // may begin mid-line
        }
        let mut damaged = 0;
        for line in lines.iter().rev() {
            if let Some(t) = accept(line) {
                return Ok(TailScan {
                    last: Some(t),
                    damaged_after: damaged,
                    torn: torn.to_vec(),
                });
            }
            damaged += 1;
        }
        if start == 0 {
            return Ok(TailScan {
                last: None,
                damaged_after: damaged,
                torn: torn.to_vec(),
            });
        }
        window = window.saturating_mul(4);
    }
}

/// The end of the record file, after any repair.
#[derive(Debug, Clone)]
pub(crate) struct LogTail {
    pub size: u64,
    pub last_seq: u64,
    pub last_hash: Hash,
    /// Bytes of an incomplete final line cut away.
    pub cut_bytes: u64,
    /// A complete final record whose newline was missing got one.
    pub completed_line: bool,
    /// Complete lines at the end that are not records (damage; `verify`
    /// reports them). The chain resumes from the last good record.
    pub damaged_lines: u64,
}

/// Finds the last record of `audit.jsonl` and repairs a torn final line: an
/// unterminated line that is a complete record continuing the chain gets
/// its newline; anything else unterminated (a crash mid-write) is cut.
/// Complete lines are never removed. Call with the directory lock held.
pub(crate) fn recover_log_tail(path: &Path, log_id: &str) -> Result<LogTail, AuditError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(LogTail {
                size: 0,
                last_seq: 0,
                last_hash: record::genesis(log_id),
                cut_bytes: 0,
                completed_line: false,
                damaged_lines: 0,
            });
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.metadata().map_err(io_err(path))?.len();
    let scan = scan_back(&mut file, len, |line| {
        let c = record::check_line(line).ok()?;
        Some((c.seq?, c.hash))
    })
    .map_err(io_err(path))?;
    let (mut last_seq, mut last_hash) = scan.last.unwrap_or((0, record::genesis(log_id)));
    let mut tail = LogTail {
        size: len,
        last_seq,
        last_hash,
        cut_bytes: 0,
        completed_line: false,
        damaged_lines: scan.damaged_after,
    };
    if !scan.torn.is_empty() {
        let continues = record::check_line(&scan.torn).ok().filter(|c| {
            c.self_consistent
                && c.seq == Some(last_seq + 1)
                && c.prev == Some(last_hash)
                && c.log_id.as_deref() == Some(log_id)
        });
        if let Some(c) = continues.filter(|_| scan.damaged_after == 0) {
            file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
            file.write_all(b"\n").map_err(io_err(path))?;
            last_seq += 1;
            last_hash = c.hash;
            tail.completed_line = true;
            tail.size = len + 1;
            tail.last_seq = last_seq;
            tail.last_hash = last_hash;
        } else {
            let keep = len - scan.torn.len() as u64;
            file.set_len(keep).map_err(io_err(path))?;
            tail.cut_bytes = scan.torn.len() as u64;
            tail.size = keep;
        }
        file.sync_data().map_err(io_err(path))?;
    }
    Ok(tail)
}

/// Finds the last checkpoint's `seq` in `checkpoints.jsonl` and cuts an
/// unterminated final line (a checkpoint is only trusted once complete; the
/// next one is written at the next trigger anyway). Call with the lock held.
pub(crate) fn recover_checkpoint_tail(path: &Path) -> Result<u64, AuditError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.metadata().map_err(io_err(path))?.len();
    let scan = scan_back(&mut file, len, |line| {
        serde_json::from_slice::<serde_json::Value>(line)
            .ok()?
            .get("seq")?
            .as_u64()
    })
    .map_err(io_err(path))?;
    if !scan.torn.is_empty() {
        tracing::warn!(file = %path.display(), bytes = scan.torn.len(), "cutting an incomplete final audit checkpoint (crash while writing it)");
        file.set_len(len - scan.torn.len() as u64)
            .map_err(io_err(path))?;
        file.sync_data().map_err(io_err(path))?;
    }
    Ok(scan.last.unwrap_or(0))
}

/// Opens a record or checkpoint file for appending (and reading back),
/// creating it readable by owner and group only.
pub(crate) fn open_append(path: &Path) -> Result<File, AuditError> {
    let mut opts = OpenOptions::new();
    opts.read(true).create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path).map_err(io_err(path))
}

pub(crate) fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(LOG_FILE), dir.join(CHECKPOINT_FILE))
}
