//! Reading the log back: [`verify`] recomputes the hash chain and checks the
//! signed checkpoints, naming the first problem; [`read_records`],
//! [`tail_records`] and [`copy_lines`] serve `gantry audit tail|export`.
//! All of it only reads, so it works on a copy or read-only media.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::checkpoint;
use super::files::{self, LOG_ID_FILE, PUBLIC_KEY_FILE};
use super::record::{self, Hash, LineError};
use super::{AuditError, io_err};

/// Which file a [`Problem`] is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditFile {
    /// `audit.jsonl`
    Log,
    /// `checkpoints.jsonl`
    Checkpoints,
    /// `log-id`, `signing-key.pub`
    Meta,
}

/// The first thing wrong with a log. `line` is 1-based in `file`; `seq` is
/// the record the problem is about, when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: AuditFile,
    pub line: u64,
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.file, self.seq) {
            (AuditFile::Log, Some(seq)) => {
                write!(f, "record {seq} (line {}): {}", self.line, self.what)
            }
            (AuditFile::Log, None) => write!(f, "line {}: {}", self.line, self.what),
            (AuditFile::Checkpoints, _) => write!(f, "checkpoint {}: {}", self.line, self.what),
            (AuditFile::Meta, _) => f.write_str(&self.what),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records whose hash and link were checked (up to the first problem).
    pub records: u64,
    /// Checkpoints with a valid signature.
    pub checkpoints: u64,
    pub first_problem: Option<Problem>,
    /// The last record checked.
    pub last_seq: u64,
    /// The highest record a valid checkpoint signed.
    pub last_checkpoint_seq: u64,
    /// The log ends in an unterminated line that is not a complete record: a
    /// write in progress, or a crash (the next open cuts it). Not a problem.
    pub incomplete_tail: bool,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

fn problem(file: AuditFile, line: u64, seq: Option<u64>, what: impl Into<String>) -> Problem {
    Problem {
        file,
        line,
        seq,
        what: what.into(),
    }
}

/// A problem and the record position it concerns, to find the first.
struct Candidate {
    at_seq: u64,
    /// Log problems win ties over checkpoint problems.
    rank: u8,
    problem: Problem,
}

fn earliest(a: Option<Candidate>, b: Candidate) -> Option<Candidate> {
    match a {
        Some(a) if (a.at_seq, a.rank) <= (b.at_seq, b.rank) => Some(a),
        _ => Some(b),
    }
}

/// Splits file content into complete lines (without `\n`) and an
/// unterminated rest.
fn split_lines(data: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let end = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines: Vec<&[u8]> = data[..end].split(|&b| b == b'\n').collect();
    lines.pop();
    (lines, &data[end..])
}

/// Verifies the audit log in `dir` (`<data_dir>/audit`): every record's
/// hash against its content, every `prev_hash` link and `seq` step from the
/// genesis hash, every checkpoint's signature (against `signing-key.pub`)
/// and that the log still holds, unchanged, every record a checkpoint
/// signed. Reports the first problem found; `Err` only when the files cannot
/// be read.
pub fn verify(dir: &Path) -> Result<VerifyReport, AuditError> {
    let (log_path, cp_path) = files::paths(dir);
    if !log_path.exists() && !cp_path.exists() {
        return Err(AuditError::NotFound(dir.to_path_buf()));
    }
    let mut report = VerifyReport {
        records: 0,
        checkpoints: 0,
        first_problem: None,
        last_seq: 0,
        last_checkpoint_seq: 0,
        incomplete_tail: false,
    };
    let Some(log_id) = files::read_hex_file(&dir.join(LOG_ID_FILE))? else {
        report.first_problem = Some(problem(
            AuditFile::Meta,
            0,
            None,
            format!(
                "{} is missing: the chain's genesis cannot be checked",
                dir.join(LOG_ID_FILE).display()
            ),
        ));
        return Ok(report);
    };
    let public_key = files::read_hex_file(&dir.join(PUBLIC_KEY_FILE))?;

    // Checkpoints first: a concurrent writer fsyncs records before it
    // checkpoints them, so every checkpoint read here is covered by the log
    // read next.
    let mut found: Option<Candidate> = None;
    let mut signed: BTreeMap<u64, Vec<(u64, Hash)>> = BTreeMap::new();
    let cp_data = match fs::read(&cp_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&cp_path)(e)),
    };
    let (cp_lines, _torn_checkpoint) = split_lines(&cp_data);
    let mut last_cp_seq = 0;
    for (i, line) in cp_lines.iter().enumerate() {
        let n = i as u64 + 1;
        let issue = match checkpoint::parse(line) {
            Err(what) => Some((last_cp_seq, None, what)),
            Ok(cp) => {
                last_cp_seq = cp.seq;
                let at = Some(cp.seq);
                if cp.log_id != log_id {
                    Some((
                        cp.seq,
                        at,
                        format!("belongs to log {}, not {log_id}", cp.log_id),
                    ))
                } else if public_key.is_none() {
                    Some((
                        0,
                        at,
                        format!(
                            "cannot be checked: {} is missing",
                            dir.join(PUBLIC_KEY_FILE).display()
                        ),
                    ))
                } else if public_key.as_deref() != Some(cp.public_key.as_str()) {
                    Some((
                        cp.seq,
                        at,
                        format!("signed by another key than {PUBLIC_KEY_FILE}"),
                    ))
                } else if !cp.signature_ok {
                    Some((cp.seq, at, "bad signature".to_owned()))
                } else {
                    report.checkpoints += 1;
                    report.last_checkpoint_seq = report.last_checkpoint_seq.max(cp.seq);
                    signed.entry(cp.seq).or_default().push((n, cp.hash));
                    None
                }
            }
        };
        if let Some((at_seq, seq, what)) = issue
            && found.is_none()
        {
            found = Some(Candidate {
                at_seq,
                rank: 1,
                problem: problem(AuditFile::Checkpoints, n, seq, what),
            });
        }
    }

    // The records, streamed.
    let file = match File::open(&log_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&log_path)(e)),
    };
    let mut prev_hash = record::genesis(&log_id);
    let mut prev_seq = 0u64;
    let mut log_problem: Option<Candidate> = None;
    if let Some(file) = file {
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(io_err(&log_path))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let terminated = buf.last() == Some(&b'\n');
            if terminated {
                buf.pop();
            }
            let at = prev_seq + 1;
            let bad = |seq: Option<u64>, what: String| Candidate {
                at_seq: seq.unwrap_or(at).min(at),
                rank: 0,
                problem: problem(AuditFile::Log, line_no, seq, what),
            };
            let c = match record::check_line(&buf) {
                Ok(c) => c,
                Err(_) if !terminated => {
                    report.incomplete_tail = true;
                    break;
                }
                Err(LineError::NotJson(what)) => {
                    log_problem = Some(bad(None, what));
                    break;
                }
                Err(LineError::Malformed(seq, what)) => {
                    log_problem = Some(bad(seq, what));
                    break;
                }
            };
            let Some(seq) = c.seq else {
                log_problem = Some(bad(None, "no `seq` field".into()));
                break;
            };
            let what = if c.prev.is_none() {
                Some("`prev_hash` is missing or not 64 hex digits".to_owned())
            } else if !c.self_consistent {
                Some("hash does not match its content (altered)".to_owned())
            } else if c.log_id.as_deref() != Some(log_id.as_str()) {
                Some(format!("belongs to another log than {log_id}"))
            } else if c.prev != Some(prev_hash) {
                Some(if prev_seq == 0 {
                    "prev_hash is not this log's genesis hash (records deleted from the start)"
                        .to_owned()
                } else {
                    format!("prev_hash does not link to record {prev_seq} (deleted or reordered)")
                })
            } else if seq != at {
                Some(format!(
                    "seq does not follow record {prev_seq} (deleted, inserted or reordered)"
                ))
            } else {
                None
            };
            if let Some(what) = what {
                if !terminated {
                    report.incomplete_tail = true;
                } else {
                    log_problem = Some(bad(Some(seq), what));
                }
                break;
            }
            if let Some(&(cp_line, _)) = signed
                .get(&seq)
                .and_then(|v| v.iter().find(|(_, h)| *h != c.hash))
            {
                found = earliest(
                    found,
                    Candidate {
                        at_seq: seq,
                        rank: 1,
                        problem: problem(
                            AuditFile::Checkpoints,
                            cp_line,
                            Some(seq),
                            format!(
                                "signed a different record {seq} than the log holds (log rewritten)"
                            ),
                        ),
                    },
                );
                break;
            }
            prev_hash = c.hash;
            prev_seq = seq;
            report.records += 1;
            report.last_seq = seq;
        }
    }
    if let Some(p) = log_problem {
        found = earliest(found, p);
    } else if let Some((&seq, cps)) = signed.range(prev_seq + 1..).next()
        && let Some(&(cp_line, _)) = cps.first()
    {
        found = earliest(
            found,
            Candidate {
                at_seq: prev_seq + 1,
                rank: 1,
                problem: problem(
                    AuditFile::Checkpoints,
                    cp_line,
                    Some(seq),
                    format!(
                        "signed record {seq} but the log ends at record {prev_seq} (truncated)"
                    ),
                ),
            },
        );
    }
    report.first_problem = found.map(|c| c.problem);
    Ok(report)
}

/// Every complete record of the log in `dir`, parsed, in order.
pub fn read_records(dir: &Path) -> Result<Vec<Value>, AuditError> {
    let (log_path, _) = files::paths(dir);
    let data = match fs::read(&log_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AuditError::NotFound(dir.to_path_buf()));
        }
        Err(e) => return Err(io_err(&log_path)(e)),
    };
    let (lines, _) = split_lines(&data);
    parse_lines(&log_path, &lines)
}

fn parse_lines(path: &Path, lines: &[&[u8]]) -> Result<Vec<Value>, AuditError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
                path: path.to_path_buf(),
                line: i as u64 + 1,
                message: format!("not a JSON record ({e}); run `gantry audit verify`"),
            })
        })
        .collect()
}

/// The last `n` complete records, read from the end of the file.
pub fn tail_records(dir: &Path, n: usize) -> Result<Vec<Value>, AuditError> {
    let (log_path, _) = files::paths(dir);
    let mut file = match File::open(&log_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AuditError::NotFound(dir.to_path_buf()));
        }
        Err(e) => return Err(io_err(&log_path)(e)),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.metadata().map_err(io_err(&log_path))?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = vec![0u8; (len - start) as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(io_err(&log_path))?;
        let (mut lines, _) = split_lines(&buf);
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // may begin mid-line
        }
        if lines.len() >= n || start == 0 {
            let last = &lines[lines.len().saturating_sub(n)..];
            // Line numbers are unknown when reading from the end: name the
            // line by its position from the end instead.
            let mut out = Vec::with_capacity(last.len());
            for (i, line) in last.iter().enumerate() {
                let v = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
                    path: log_path.clone(),
                    line: 0,
                    message: format!(
                        "line {} from the end is not a JSON record ({e}); run `gantry audit verify`",
                        last.len() - i
                    ),
                })?;
                out.push(v);
            }
            return Ok(out);
        }
        window = window.saturating_mul(4);
    }
}

/// Copies every complete record line, byte for byte (so the copy verifies
/// like the original), to `out`; returns the number of lines.
pub fn copy_lines(dir: &Path, out: &mut dyn Write) -> Result<u64, AuditError> {
    let (log_path, _) = files::paths(dir);
    let file = match File::open(&log_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AuditError::NotFound(dir.to_path_buf()));
        }
        Err(e) => return Err(io_err(&log_path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut count = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_err(&log_path))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Ok(count);
        }
        out.write_all(&buf).map_err(|error| AuditError::Io {
            path: "<output>".into(),
            error,
        })?;
        count += 1;
    }
}
