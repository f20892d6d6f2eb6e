//! [`AuditLog`]: the handle callers append through, and the one writer
//! thread per open log that hashes, writes and fsyncs everything queued in
//! one batch (group commit) and signs checkpoints.
//!
//! Callers get a *ticket* per queued record; the writer turns tickets into
//! sequence numbers when it writes. In one process the two correspond one to
//! one, so [`AuditLog::append`] can return the sequence number at once; when
//! another process (a CLI command next to the running broker) appends to the
//! same log in between, the writer notices under the directory lock, resumes
//! the chain after the other process's records and shifts the mapping.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gantry_broker::store::AckGate;
use tokio::sync::watch;

use super::files::{self, LogTail};
use super::record::{self, Hash};
use super::{
    Actor, AuditError, AuditEvent, AuditHealth, AuditOptions, Category, DURABLE_WAIT_LIMIT,
    MAX_QUEUED, io_err,
};

/// How long [`AuditLog::close`] waits for the writer to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long `open` waits for another process's append lock.
const OPEN_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a write attempt waits for it before it counts as failed.
const WRITER_LOCK_WAIT: Duration = Duration::from_secs(2);
/// Write attempts at shutdown before queued records are given up.
const SHUTDOWN_ATTEMPTS: u32 = 3;

struct Queued {
    ticket: u64,
    ts_ms: u64,
    event: AuditEvent,
}

/// What waiters watch: tickets durable, tickets covered by the last failed
/// attempt, and whether the writer is failing or gone.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    durable: u64,
    attempted: u64,
    failing: bool,
    stopped: bool,
}

impl Progress {
    fn settled(&self, ticket: u64) -> bool {
        self.durable >= ticket || (self.failing && self.attempted >= ticket) || self.stopped
    }
}

struct Inner {
    queue: Vec<Queued>,
    next_ticket: u64,
    /// ticket -> the sequence number it was written under; later tickets
    /// follow on. A new entry appears when another process appended.
    seq_base: BTreeMap<u64, u64>,
    /// ticket -> the sequence number `append` returned for it: the same as
    /// `seq_base` in one process; never decreasing, so a durable gate on a
    /// returned number opens exactly when that record is durable.
    issued_base: BTreeMap<u64, u64>,
    progress: Progress,
    last_seq: u64,
    records_written: u64,
    last_error: Option<String>,
    last_checkpoint_seq: u64,
    dropped: u64,
    dropped_reported: u64,
    /// No more appends: `close` ran or the last handle was dropped.
    closing: bool,
}

fn lookup(base: &BTreeMap<u64, u64>, ticket: u64) -> u64 {
    base.range(..=ticket)
        .next_back()
        .map_or(ticket, |(&t0, &s0)| s0 + (ticket - t0))
}

impl Inner {
    fn seq_for(&self, ticket: u64) -> u64 {
        lookup(&self.seq_base, ticket)
    }

    fn issued_seq(&self, ticket: u64) -> u64 {
        lookup(&self.issued_base, ticket)
    }

    fn push(&mut self, event: AuditEvent) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push(Queued {
            ticket,
            ts_ms: record::now_ms(),
            event,
        });
        ticket
    }
}

#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// The write fails before any byte reaches the file.
    BeforeWrite,
    /// Half the batch reaches the file, then the write fails.
    HalfWrite,
    /// The whole batch is written, then fsync fails.
    Fsync,
}

struct Shared {
    dir: PathBuf,
    log_path: PathBuf,
    inner: Mutex<Inner>,
    /// The writer waits here for work.
    wake: Condvar,
    /// Blocking waiters wait here for progress.
    progressed: Condvar,
    watch: watch::Sender<Progress>,
    /// The number `append` returned for the last durable record, for
    /// [`AuditLog::durable_gate`].
    durable_seq: watch::Sender<u64>,
    #[cfg(test)]
    fault: Mutex<Fault>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.watch.send_replace(inner.progress);
        let durable = inner.issued_seq(inner.progress.durable);
        self.durable_seq.send_if_modified(|d| {
            let advanced = durable > *d;
            *d = (*d).max(durable);
            advanced
        });
        self.progressed.notify_all();
    }

    /// Stops appends, queues the `log-closed` record and asks the writer to
    /// finish; waits (bounded) until it has.
    fn close(&self) {
        let mut inner = self.lock();
        if !inner.closing {
            inner.closing = true;
            inner.push(
                AuditEvent::new(
                    Category::Audit,
                    "log-closed",
                    Actor::system(),
                    "close",
                    true,
                )
                .details(serde_json::json!({ "pid": std::process::id() })),
            );
            self.wake.notify_all();
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        while !inner.progress.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(
                    dir = %self.dir.display(),
                    "the audit writer did not finish within {CLOSE_WAIT:?}; queued records may be lost"
                );
                return;
            }
            inner = self
                .progressed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

struct Enqueued {
    ticket: u64,
    /// The sequence number expected for it.
    seq: u64,
    /// The writer was failing when it was queued.
    failing: bool,
}

/// Closes the log when the last [`AuditLog`] handle is dropped.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Handle to an open audit log; cheap to clone. See [`crate::audit`] for the
/// format and the durability rules.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the audit log in `dir` (`<data_dir>/audit`, created if missing).
    /// The first open creates a random log id and the Ed25519 checkpoint key
    /// (private key file mode 0600) and its public key file. A re-open resumes
    /// the chain after the last record; an incomplete final line left by a
    /// crash is cut (only an unterminated last line, never a complete
    /// record). Starts the writer thread and appends `audit`/`log-opened`.
    pub fn open(dir: &Path, options: AuditOptions) -> Result<AuditLog, AuditError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (log_path, cp_path) = files::paths(dir);
        let lock_file = files::open_lock_file(dir)?;
        let (meta, tail, cp_seq) = {
            let _guard = files::lock(&lock_file, dir, OPEN_LOCK_WAIT)?;
            let meta = files::load_or_create_meta(dir)?;
            let tail = files::recover_log_tail(&log_path, &meta.log_id)?;
            let cp_seq = files::recover_checkpoint_tail(&cp_path)?;
            (meta, tail, cp_seq)
        };
        let log_file = files::open_append(&log_path)?;
        let cp_file = files::open_append(&cp_path)?;
        if meta.created {
            files::sync_dir(dir);
        }
        let size = log_file.metadata().map_err(io_err(&log_path))?.len();
        let cp_size = cp_file.metadata().map_err(io_err(&cp_path))?.len();
        let opened = opened_event(&log_path, &tail, cp_seq, meta.created);

        let mut seq_base = BTreeMap::new();
        seq_base.insert(1, tail.last_seq + 1);
        let issued_base = seq_base.clone();
        let inner = Inner {
            queue: Vec::new(),
            next_ticket: 1,
            seq_base,
            issued_base,
            progress: Progress::default(),
            last_seq: tail.last_seq,
            records_written: 0,
            last_error: None,
            last_checkpoint_seq: cp_seq,
            dropped: 0,
            dropped_reported: 0,
            closing: false,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            log_path,
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            progressed: Condvar::new(),
            watch: watch::channel(Progress::default()).0,
            durable_seq: watch::channel(0).0,
            #[cfg(test)]
            fault: Mutex::new(Fault::None),
        });
        let writer = Writer {
            shared: shared.clone(),
            lock_file: Arc::new(lock_file),
            log_file,
            cp_file,
            cp_path,
            key: meta.key,
            log_id: meta.log_id,
            options,
            size,
            cp_size,
            last_seq: tail.last_seq,
            last_hash: tail.last_hash,
            unwritten: Vec::new(),
            failed: None,
            unsynced: None,
            // After a cut, seal the records that follow it too.
            last_cp_seq: cp_seq.min(tail.last_seq),
            last_cp_at: Instant::now(),
            retry_at: None,
            backoff: FIRST_RETRY,
            cp_retry_at: None,
            cp_backoff: FIRST_RETRY,
            outage: None,
        };
        std::thread::Builder::new()
            .name("gantry-audit".into())
            .spawn(move || writer.run())
            .map_err(io_err(dir))?;
        let log = AuditLog {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        };
        log.append(opened);
        Ok(log)
    }

    /// Queues `event`; returns its sequence number, or 0 when the record was
    /// not queued (log closed, or queue full: counted in
    /// [`AuditHealth::dropped`]). Never waits on the disk. If another process
    /// appends to the same log before this record is written, the record is
    /// written after that process's records and its final number is higher
    /// ([`append_durable`](Self::append_durable) returns the final one).
    pub fn append(&self, event: AuditEvent) -> u64 {
        self.enqueue(event).map_or(0, |q| q.seq)
    }

    fn enqueue(&self, event: AuditEvent) -> Result<Enqueued, AuditError> {
        let mut inner = self.shared.lock();
        if inner.closing {
            drop(inner);
            tracing::warn!(
                event = %format!("{}.{}", event.category, event.event_type),
                "audit record after the log was closed; not written"
            );
            return Err(AuditError::Closed);
        }
        // Everything not yet durable: queued, and held by the writer.
        let waiting = (inner.next_ticket - 1).saturating_sub(inner.progress.durable);
        if waiting >= MAX_QUEUED as u64 {
            inner.dropped += 1;
            if inner.dropped.is_power_of_two() {
                tracing::error!(
                    dropped = inner.dropped,
                    "the audit queue is full (the disk is failing); audit records are being dropped"
                );
            }
            return Err(AuditError::QueueFull(MAX_QUEUED));
        }
        let ticket = inner.push(event);
        let queued = Enqueued {
            ticket,
            seq: inner.issued_seq(ticket),
            failing: inner.progress.failing,
        };
        drop(inner);
        self.shared.wake.notify_one();
        Ok(queued)
    }

    fn write_failed(&self) -> AuditError {
        AuditError::WriteFailed {
            path: self.shared.log_path.clone(),
            message: self
                .shared
                .lock()
                .last_error
                .clone()
                .unwrap_or_else(|| "write failed".into()),
        }
    }

    fn outcome(&self, ticket: u64, p: Progress) -> Result<u64, AuditError> {
        if p.durable >= ticket {
            Ok(self.shared.lock().seq_for(ticket))
        } else if p.failing {
            Err(self.write_failed())
        } else {
            Err(AuditError::Closed)
        }
    }

    /// Queues `event` and waits until it is written and fsynced (one fsync
    /// covers everything queued meanwhile). Returns an error promptly when
    /// the writer is failing, the attempt covering this record fails, or
    /// after [`DURABLE_WAIT_LIMIT`]; the record then stays queued and is
    /// retried, so it is not lost once the disk recovers. Needs a Tokio
    /// runtime with the time driver enabled.
    pub async fn append_durable(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let Enqueued {
            ticket, failing, ..
        } = self.enqueue(event)?;
        if failing {
            return Err(self.write_failed());
        }
        let mut rx = self.shared.watch.subscribe();
        let waited =
            tokio::time::timeout(DURABLE_WAIT_LIMIT, rx.wait_for(|p| p.settled(ticket))).await;
        match waited {
            Err(_) => Err(AuditError::Timeout(DURABLE_WAIT_LIMIT)),
            Ok(Err(_)) => Err(AuditError::Closed),
            Ok(Ok(p)) => {
                let p = *p;
                self.outcome(ticket, p)
            }
        }
    }

    /// [`append_durable`](Self::append_durable) for code without a runtime
    /// (CLI commands). Blocks the calling thread, at most [`DURABLE_WAIT_LIMIT`].
    pub fn append_durable_blocking(&self, event: AuditEvent) -> Result<u64, AuditError> {
        let Enqueued {
            ticket, failing, ..
        } = self.enqueue(event)?;
        if failing {
            return Err(self.write_failed());
        }
        let deadline = Instant::now() + DURABLE_WAIT_LIMIT;
        let mut inner = self.shared.lock();
        while !inner.progress.settled(ticket) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AuditError::Timeout(DURABLE_WAIT_LIMIT));
            }
            inner = self
                .shared
                .progressed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let p = inner.progress;
        drop(inner);
        self.outcome(ticket, p)
    }

    /// A gate that opens once the record `append` numbered `seq` is durable
    /// (written and fsynced), for holding a broker acknowledgement back
    /// ([`Verdict::AcceptAfter`](gantry_broker::hooks::Verdict)). While the
    /// disk fails the gate stays closed and the record is retried. `seq` 0
    /// (a record that was not queued) opens at once.
    pub fn durable_gate(&self, seq: u64) -> AckGate {
        AckGate::new(self.shared.durable_seq.subscribe(), seq)
    }

    /// The number `append` returned for the last durable record.
    pub fn durable_seq(&self) -> u64 {
        *self.shared.durable_seq.borrow()
    }

    pub fn health(&self) -> AuditHealth {
        let inner = self.shared.lock();
        AuditHealth {
            last_seq: inner.last_seq,
            records_written: inner.records_written,
            pending: (inner.next_ticket - 1).saturating_sub(inner.progress.durable),
            failing: inner.progress.failing,
            last_error: inner.last_error.clone(),
            last_checkpoint_seq: inner.last_checkpoint_seq,
            dropped: inner.dropped,
        }
    }

    /// Appends `audit`/`log-closed`, writes everything queued and a final
    /// checkpoint, and stops the writer thread. Waits at most 10 s (a hung
    /// disk). Later appends are refused. Dropping the last handle does the
    /// same.
    pub fn close(&self) {
        self.shared.close();
    }

    /// The audit directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    #[cfg(test)]
    pub(crate) fn inject_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
        self.shared.wake.notify_all();
    }
}

fn opened_event(log_path: &Path, tail: &LogTail, cp_seq: u64, created: bool) -> AuditEvent {
    let mut problems = Vec::new();
    if tail.cut_bytes > 0 {
        tracing::warn!(
            file = %log_path.display(),
            bytes = tail.cut_bytes,
            "cut an incomplete final audit record (a crash while it was written; it was never acknowledged)"
        );
        problems.push(format!(
            "cut {} bytes of an incomplete final line",
            tail.cut_bytes
        ));
    }
    if tail.completed_line {
        tracing::warn!(file = %log_path.display(), "completed the final audit record's missing newline");
    }
    if tail.damaged_lines > 0 {
        tracing::error!(
            file = %log_path.display(),
            lines = tail.damaged_lines,
            "the audit log ends with lines that are not records (damaged or tampered); `gantry audit verify` names them. The chain continues from the last good record."
        );
        problems.push(format!(
            "{} damaged line(s) at the end of the log",
            tail.damaged_lines
        ));
    }
    if cp_seq > tail.last_seq {
        tracing::error!(
            file = %log_path.display(),
            "the audit log ends at record {} but a checkpoint signed record {cp_seq}: it was truncated",
            tail.last_seq
        );
        problems.push(format!(
            "log ends at record {} but a checkpoint signed record {cp_seq} (truncated)",
            tail.last_seq
        ));
    }
    let mut event = AuditEvent::new(Category::Audit, "log-opened", Actor::system(), "open", true)
        .details(serde_json::json!({
            "created": created,
            "resumed_after_seq": tail.last_seq,
            "last_checkpoint_seq": cp_seq,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "repaired_bytes": tail.cut_bytes,
        }));
    if !problems.is_empty() {
        event = event.reason(problems.join("; "));
    }
    event
}

/// The bytes of a failed write attempt, to recognise which of its records
/// reached the file anyway.
struct Attempt {
    bytes: Vec<u8>,
    /// End offset of each line in `bytes`.
    ends: Vec<usize>,
    hashes: Vec<Hash>,
}

impl Attempt {
    /// The same attempt after its first `k` lines were accounted for.
    fn without_first(self, k: usize) -> Attempt {
        let cut = k.checked_sub(1).map_or(0, |i| self.ends[i]);
        Attempt {
            bytes: self.bytes[cut..].to_vec(),
            ends: self.ends[k..].iter().map(|e| e - cut).collect(),
            hashes: self.hashes[k..].to_vec(),
        }
    }
}

/// A period of failed writes, recorded once writing works again.
struct Outage {
    since_ms: u64,
    attempts: u64,
    first_error: String,
}

struct Writer {
    shared: Arc<Shared>,
    lock_file: Arc<File>,
    log_file: File,
    cp_file: File,
    cp_path: PathBuf,
    key: SigningKey,
    log_id: String,
    options: AuditOptions,
    /// Length of the log file up to our last known record.
    size: u64,
    cp_size: u64,
    last_seq: u64,
    last_hash: Hash,
    /// Taken from the queue, not yet in the file.
    unwritten: Vec<Queued>,
    failed: Option<Attempt>,
    /// Tickets (last one, count) in the file but not yet fsynced.
    unsynced: Option<(u64, u64)>,
    last_cp_seq: u64,
    last_cp_at: Instant,
    retry_at: Option<Instant>,
    backoff: Duration,
    cp_retry_at: Option<Instant>,
    cp_backoff: Duration,
    outage: Option<Outage>,
}

/// Marks the writer stopped however it ends (even by a panic), so waiters
/// and `close` never wait for a thread that is gone.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.progress.stopped = true;
        self.0.publish(&inner);
    }
}

impl Writer {
    fn run(mut self) {
        let _stopped = StoppedGuard(self.shared.clone());
        let mut shutdown_failures = 0;
        loop {
            let shutdown = self.wait_for_work();
            if self.has_write_work() {
                match self.attempt() {
                    Ok(()) => self.on_success(),
                    Err(e) => {
                        self.on_failure(e);
                        if shutdown {
                            shutdown_failures += 1;
                            if shutdown_failures >= SHUTDOWN_ATTEMPTS {
                                tracing::error!(
                                    dir = %self.shared.dir.display(),
                                    records = self.unwritten.len(),
                                    "closing the audit log with records that could not be written"
                                );
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        continue;
                    }
                }
            }
            let now = Instant::now();
            let final_checkpoint = shutdown && self.last_seq > self.last_cp_seq;
            if self.checkpoint_due(now) || final_checkpoint {
                self.checkpoint(now);
            }
            if shutdown && !self.has_write_work() && self.shared.lock().queue.is_empty() {
                return;
            }
        }
    }

    fn has_write_work(&self) -> bool {
        !self.unwritten.is_empty() || self.unsynced.is_some()
    }

    fn checkpoint_deadline(&self) -> Instant {
        let due = self.last_cp_at + self.options.checkpoint_every;
        self.cp_retry_at.map_or(due, |r| r.max(due))
    }

    fn checkpoint_due(&self, now: Instant) -> bool {
        self.last_seq > self.last_cp_seq
            && self.unsynced.is_none()
            && self.cp_retry_at.is_none_or(|r| now >= r)
            && (self.last_seq - self.last_cp_seq >= self.options.checkpoint_every_records
                || now >= self.last_cp_at + self.options.checkpoint_every)
    }

    /// Waits until there is something to write (and any retry back-off has
    /// passed), a checkpoint is due, or shutdown; moves the queue into
    /// `unwritten`. Returns whether the log is closing.
    fn wait_for_work(&mut self) -> bool {
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        loop {
            let now = Instant::now();
            let has_work = !inner.queue.is_empty() || self.has_write_work();
            let may_write = self.retry_at.is_none_or(|t| now >= t);
            if inner.closing || (has_work && may_write) || self.checkpoint_due(now) {
                self.unwritten.append(&mut inner.queue);
                return inner.closing;
            }
            let mut deadline = has_work.then_some(self.retry_at).flatten();
            // (With records awaiting their fsync no checkpoint can be due:
            // the write retry comes first.)
            if self.last_seq > self.last_cp_seq && self.unsynced.is_none() {
                let cp = self.checkpoint_deadline();
                deadline = Some(deadline.map_or(cp, |d| d.min(cp)));
            }
            inner = match deadline {
                Some(d) => {
                    shared
                        .wake
                        .wait_timeout(inner, d.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => shared.wake.wait(inner).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// One write: under the directory lock, catch up with the file, write
    /// every unwritten record in one call and fsync.
    fn attempt(&mut self) -> Result<(), String> {
        let dir = self.shared.dir.clone();
        let lock_file = self.lock_file.clone();
        let _guard = files::lock(&lock_file, &dir, WRITER_LOCK_WAIT).map_err(|e| e.to_string())?;
        self.catch_up()?;
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(self.unwritten.len());
        let mut hashes = Vec::with_capacity(self.unwritten.len());
        let mut prev = self.last_hash;
        for (i, q) in self.unwritten.iter().enumerate() {
            let seq = self.last_seq + 1 + i as u64;
            let enc = record::encode(seq, &self.log_id, q.ts_ms, &q.event, &prev);
            prev = enc.hash;
            bytes.extend_from_slice(enc.line.as_bytes());
            ends.push(bytes.len());
            hashes.push(enc.hash);
        }
        let result = self.write_and_sync(&bytes);
        let n = self.unwritten.len() as u64;
        if let Err(e) = result {
            if !bytes.is_empty() {
                self.failed = Some(Attempt {
                    bytes,
                    ends,
                    hashes,
                });
            }
            return Err(format!("{}: {e}", self.shared.log_path.display()));
        }
        self.size += bytes.len() as u64;
        self.last_seq += n;
        self.last_hash = prev;
        if let Some(last) = self.unwritten.last() {
            let (t, c) = self.unsynced.unwrap_or((0, 0));
            self.unsynced = Some((t.max(last.ticket), c + n));
        }
        self.unwritten.clear();
        Ok(())
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        {
            let fault = *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner());
            match fault {
                Fault::None => {}
                Fault::BeforeWrite => return Err(std::io::Error::other("injected write failure")),
                Fault::HalfWrite => {
                    self.log_file.write_all(&bytes[..bytes.len() / 2])?;
                    return Err(std::io::Error::other("injected partial write"));
                }
                Fault::Fsync => {
                    self.log_file.write_all(bytes)?;
                    return Err(std::io::Error::other("injected fsync failure"));
                }
            }
        }
        if !bytes.is_empty() {
            self.log_file.write_all(bytes)?;
        }
        if self.options.fsync {
            self.log_file.sync_data()?;
        }
        Ok(())
    }

    /// Brings `size`, `last_seq` and `last_hash` up to the file. Records of
    /// our own failed attempt that reached the file count as written (they
    /// still need the fsync); our own torn bytes are cut; anything else new is
    /// another process's records (or outside damage) and the chain resumes
    /// after them. Called with the directory lock held.
    fn catch_up(&mut self) -> Result<(), String> {
        let path = self.shared.log_path.clone();
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        let len = self.log_file.metadata().map_err(io)?.len();
        if len == self.size {
            self.failed = None;
            return Ok(());
        }
        if len > self.size
            && let Some(a) = self.failed.take()
        {
            let old_size = self.size;
            let after = (len - old_size) as usize;
            let mut found = vec![0u8; after.min(a.bytes.len())];
            if let Err(e) = read_at(&self.log_file, &mut found, old_size) {
                self.failed = Some(a); // still ours to recognise next time
                return Err(io(e));
            }
            let common = found
                .iter()
                .zip(&a.bytes)
                .take_while(|(x, y)| x == y)
                .count();
            let k = a.ends.iter().take_while(|&&end| end <= common).count();
            if k > 0 {
                self.size += a.ends[k - 1] as u64;
                self.last_seq += k as u64;
                self.last_hash = a.hashes[k - 1];
                let done: Vec<Queued> = self.unwritten.drain(..k).collect();
                if let Some(last) = done.last() {
                    let (t, c) = self.unsynced.unwrap_or((0, 0));
                    self.unsynced = Some((t.max(last.ticket), c + k as u64));
                }
            }
            // Nothing but our own bytes after `old_size`: what follows our
            // last complete line is the torn start of the next one. Cut it.
            if after <= a.bytes.len()
                && common == after
                && len > self.size
                && let Err(e) = self.log_file.set_len(self.size)
            {
                self.failed = Some(a.without_first(k));
                return Err(io(e));
            }
        }
        let len = self.log_file.metadata().map_err(io)?.len();
        if len == self.size {
            return Ok(());
        }
        let tail = files::recover_log_tail(&path, &self.log_id).map_err(|e| e.to_string())?;
        if tail.last_seq < self.last_seq {
            // Seal what follows, too (the old checkpoints expose the cut).
            self.last_cp_seq = self.last_cp_seq.min(tail.last_seq);
            tracing::error!(
                file = %path.display(),
                "the audit log was cut outside Gantry: it ended at record {} and now ends at record {}; `gantry audit verify` reports it",
                self.last_seq,
                tail.last_seq
            );
        } else {
            tracing::debug!(
                file = %path.display(),
                records = tail.last_seq - self.last_seq,
                "another process appended audit records; continuing the chain after them"
            );
        }
        self.size = tail.size;
        self.last_seq = tail.last_seq;
        self.last_hash = tail.last_hash;
        let mut inner = self.shared.lock();
        let first = self
            .unwritten
            .first()
            .or(inner.queue.first())
            .map_or(inner.next_ticket, |q| q.ticket);
        inner.seq_base.insert(first, self.last_seq + 1);
        while inner.seq_base.len() > 1024 {
            inner.seq_base.pop_first();
        }
        let next = inner.next_ticket;
        let actual = inner.seq_for(next);
        if actual > inner.issued_seq(next) {
            inner.issued_base.insert(next, actual);
            while inner.issued_base.len() > 1024 {
                inner.issued_base.pop_first();
            }
        }
        inner.last_seq = self.last_seq;
        Ok(())
    }

    fn on_success(&mut self) {
        let (ticket, count) = self.unsynced.take().unwrap_or((0, 0));
        self.retry_at = None;
        self.backoff = FIRST_RETRY;
        let mut inner = self.shared.lock();
        inner.progress.durable = inner.progress.durable.max(ticket);
        inner.progress.failing = false;
        inner.records_written += count;
        inner.last_seq = self.last_seq;
        if let Some(o) = self.outage.take() {
            tracing::info!(
                dir = %self.shared.dir.display(),
                attempts = o.attempts,
                "the audit log is writable again"
            );
            let last_error = inner.last_error.clone();
            inner.push(
                AuditEvent::new(
                    Category::Audit,
                    "write-failed",
                    Actor::system(),
                    "write",
                    false,
                )
                .reason(o.first_error)
                .details(serde_json::json!({
                    "failed_since": record::format_rfc3339_ms(o.since_ms),
                    "failed_since_ms": o.since_ms,
                    "recovered_ms": record::now_ms(),
                    "failed_attempts": o.attempts,
                    "last_error": last_error,
                })),
            );
        }
        if inner.dropped > inner.dropped_reported {
            let count = inner.dropped - inner.dropped_reported;
            inner.dropped_reported = inner.dropped;
            inner.push(
                AuditEvent::new(
                    Category::Audit,
                    "records-dropped",
                    Actor::system(),
                    "write",
                    false,
                )
                .reason(format!(
                    "{count} audit record(s) were dropped while the disk was failing (queue full)"
                ))
                .details(serde_json::json!({ "dropped": count })),
            );
        }
        self.shared.publish(&inner);
    }

    fn on_failure(&mut self, error: String) {
        let now = Instant::now();
        tracing::error!(
            error = %error,
            retry_in_ms = self.backoff.as_millis() as u64,
            "cannot write the audit log; records are held and retried"
        );
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
        match &mut self.outage {
            Some(o) => o.attempts += 1,
            None => {
                self.outage = Some(Outage {
                    since_ms: record::now_ms(),
                    attempts: 1,
                    first_error: error.clone(),
                });
            }
        }
        let attempted = self
            .unwritten
            .last()
            .map(|q| q.ticket)
            .into_iter()
            .chain(self.unsynced.map(|(t, _)| t))
            .max()
            .unwrap_or(0);
        let mut inner = self.shared.lock();
        inner.progress.failing = true;
        inner.progress.attempted = inner.progress.attempted.max(attempted);
        inner.last_error = Some(error);
        self.shared.publish(&inner);
    }

    /// Signs and appends a checkpoint for the last record in the file.
    fn checkpoint(&mut self, now: Instant) {
        match self.write_checkpoint() {
            Ok(()) => {
                self.last_cp_at = now;
                self.cp_retry_at = None;
                self.cp_backoff = FIRST_RETRY;
                let mut inner = self.shared.lock();
                inner.last_checkpoint_seq = self.last_cp_seq;
                inner.last_seq = inner.last_seq.max(self.last_seq);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write an audit checkpoint; retrying");
                self.cp_retry_at = Some(now + self.cp_backoff);
                self.cp_backoff = (self.cp_backoff * 2).min(MAX_RETRY);
            }
        }
    }

    fn write_checkpoint(&mut self) -> Result<(), String> {
        let dir = self.shared.dir.clone();
        let lock_file = self.lock_file.clone();
        let _guard = files::lock(&lock_file, &dir, WRITER_LOCK_WAIT).map_err(|e| e.to_string())?;
        self.catch_up()?;
        if self.unsynced.is_some() {
            return Err("the last records are not yet durable".into());
        }
        if self.last_seq <= self.last_cp_seq {
            return Ok(());
        }
        let cp_path = self.cp_path.clone();
        let io = |e: std::io::Error| format!("{}: {e}", cp_path.display());
        let len = self.cp_file.metadata().map_err(io)?.len();
        if len != self.cp_size {
            // Another process wrote checkpoints, or one of ours was torn.
            files::recover_checkpoint_tail(&cp_path).map_err(|e| e.to_string())?;
            self.cp_size = self.cp_file.metadata().map_err(io)?.len();
        }
        let line = super::checkpoint::encode(
            &self.key,
            &self.log_id,
            self.last_seq,
            &self.last_hash,
            record::now_ms(),
        );
        let result = self.cp_file.write_all(line.as_bytes()).and_then(|()| {
            if self.options.fsync {
                self.cp_file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Cut a partial line now, while we hold the lock.
            let _ = self.cp_file.set_len(self.cp_size);
            return Err(io(e));
        }
        self.cp_size += line.len() as u64;
        self.last_cp_seq = self.last_seq;
        Ok(())
    }
}

fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}
