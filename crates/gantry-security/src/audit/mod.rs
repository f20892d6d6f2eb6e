//! The tamper-evident audit log: every authentication result, authorization
//! denial, user/role/config change, write command and audit-log event, as
//! one JSON line per record, linked by a SHA-256 hash chain and sealed by
//! periodic Ed25519-signed checkpoints.
//!
//! Submodules: `record` owns the line format, canonical JSON, hashing and
//! timestamps; `files` the directory layout, identity and key files, the
//! inter-process lock and torn-tail repair; `checkpoint` the signed
//! checkpoints; `writer` the [`AuditLog`] handle and its group-commit writer
//! thread; `submit` the one-shot [`submit`] for short-lived commands;
//! `verify` [`verify`], [`read_records`], [`tail_records`] and [`copy_lines`].
//!
//! # Files
//!
//! In `<data_dir>/audit/`:
//!
//! | file | content |
//! |---|---|
//! | `audit.jsonl` | the records, one JSON object per line, `\n`-terminated (created mode 0640) |
//! | `checkpoints.jsonl` | the signed checkpoints, one JSON object per line (0640) |
//! | `log-id` | the log's random identifier (32 hex digits) |
//! | `signing-key` | the Ed25519 private key seed, 64 hex digits, mode 0600 |
//! | `signing-key.pub` | the Ed25519 public key, 64 hex digits |
//! | `lock` | empty; locked (`flock`) while a process appends, so a CLI command and the running broker can share one log |
//!
//! # Records
//!
//! ```text
//! { seq, log_id, ts_utc, ts_ms, category, type, event_id,
//!   actor {id, kind, auth_method}, source {ip, client_id, transport},
//!   target, action, outcome {success, reason}, correlation_id, details,
//!   prev_hash, hash }
//! ```
//!
//! `seq` starts at 1 and grows by one per record. `ts_utc` is RFC 3339 UTC
//! with milliseconds (`2023-11-14T22:13:20.000Z`), `ts_ms` the same instant in
//! Unix milliseconds. `event_id` is `<category>.<type>`. Absent optional
//! values are `null`; `details` is `null` when there are none. Hashes are
//! lower-case hex.
//!
//! # Hash chain
//!
//! - Genesis: `h0 = SHA-256("audit-v1" || log_id)` (ASCII bytes, no separator).
//! - Record n: `h_n = SHA-256(0x00 || h_{n-1} || canonical_json(record_n
//!   without its "hash" field))`, where `h_{n-1}` is the 32 raw bytes; the
//!   record stores `prev_hash = hex(h_{n-1})` and `hash = hex(h_n)`.
//! - **Canonical JSON**: compact (no whitespace at all); object keys sorted
//!   by their UTF-8 bytes at every level; strings escape `"` and `\` with a
//!   backslash, U+0008/U+000C/U+000A/U+000D/U+0009 as `\b \f \n \r \t`, every
//!   other control character below U+0020 as `\u00xx` (lower-case hex), and
//!   nothing else (non-ASCII is raw UTF-8, `/` is not escaped); integers in
//!   decimal, floats in their shortest round-trip form (as serde_json and
//!   ryu print them); `true`, `false`, `null`. This is what
//!   `serde_json::to_string` prints for a `serde_json::Value` with sorted
//!   maps, and what Python's `json.dumps(v, sort_keys=True,
//!   separators=(",", ":"), ensure_ascii=False)` prints for integer/string data.
//! - **Line layout**: a record line is exactly the canonical JSON of the
//!   record without `hash`, with `,"hash":"<64 hex>"` inserted before its
//!   final `}`. So a verifier can take the line, cut the trailing 75 bytes
//!   `,"hash":"<64 hex>"}`, append `}`, and hash those bytes; re-serialising
//!   the parsed record canonically gives the same bytes.
//!
//! Any change to a record breaks its own hash; deleting or reordering
//! records breaks the next record's `prev_hash` link and the `seq` sequence.
//!
//! # Checkpoints
//!
//! Every [`AuditOptions::checkpoint_every_records`] records, every
//! [`AuditOptions::checkpoint_every`] (when there are new records) and at
//! close, the writer appends to `checkpoints.jsonl`:
//! `{hash, log_id, public_key, seq, signature, ts_ms}` (canonical JSON),
//! where `seq`/`hash` are the last record's, `public_key` and `signature` are
//! hex, and `signature` is Ed25519 over the ASCII string
//! `audit-v1 checkpoint <log_id> <seq> <hash hex> <ts_ms>` (single spaces,
//! decimal numbers, no trailing newline). A checkpoint proves the log had at
//! least `seq` records ending in `hash`: truncating the log, or rewriting it
//! without the private key, is detected. Copy checkpoints off the machine (a
//! SIEM, WORM storage) to also detect a rewrite by someone holding the key.
//!
//! # Durability and failure
//!
//! [`AuditLog::append`] only queues (it never waits on the disk); one writer
//! thread writes everything queued in one `write` and one `fsync` (group
//! commit). [`AuditLog::append_durable`] waits for that fsync, so an action
//! is acknowledged only after its record is on disk. A failing disk never
//! blocks callers for long: `append_durable` returns an error at once when
//! the writer is already failing, or when the attempt that covered its
//! record fails, or after [`DURABLE_WAIT_LIMIT`]; the record stays queued
//! and is retried (with back-off) until the disk recovers. The writer then
//! records an `audit`/`write-failed` event naming the outage. The queue is
//! bounded ([`MAX_QUEUED`]); beyond it records are dropped, counted in
//! [`AuditHealth::dropped`] and reported in an `audit`/`records-dropped`
//! event once writing works again.
//!
//! # Several processes
//!
//! A CLI command may append ([`submit`], or its own [`AuditLog`]) while the
//! broker has the log open: every batch is written under the directory's
//! `flock`, after re-reading the end of the file, so records from both chain
//! in file order. [`AuditLog::append`] then returns the number the record is
//! expected to get; if another process's records land first, the record is
//! written under a higher number, which [`AuditLog::append_durable`]
//! returns.

mod checkpoint;
mod files;
mod record;
mod submit;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use record::format_rfc3339_ms;
pub use submit::submit;
pub use verify::{
    AuditFile, Problem, VerifyReport, copy_lines, read_records, tail_records, verify,
};
pub use writer::AuditLog;

/// How long [`AuditLog::append_durable`] waits for the disk before it gives
/// up and returns [`AuditError::Timeout`] (the record stays queued).
pub const DURABLE_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// Records queued beyond this (a disk failing for a long time) are dropped
/// and counted instead of growing memory without bound.
pub const MAX_QUEUED: usize = 100_000;

/// What kind of event a record is (IEC 62443-3-3 SR 2.8 categories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Authentication,
    Authorization,
    UserAdmin,
    RoleAdmin,
    Config,
    WriteCommand,
    Audit,
    System,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Authentication => "authentication",
            Category::Authorization => "authorization",
            Category::UserAdmin => "user-admin",
            Category::RoleAdmin => "role-admin",
            Category::Config => "config",
            Category::WriteCommand => "write-command",
            Category::Audit => "audit",
            Category::System => "system",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorKind {
    Human,
    Service,
    Device,
    Anonymous,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Human => "human",
            ActorKind::Service => "service",
            ActorKind::Device => "device",
            ActorKind::Anonymous => "anonymous",
            ActorKind::System => "system",
        }
    }
}

/// The subject of an event: an identity and how it authenticated
/// (`"password"`, `"client-certificate"`, `"anonymous"`, `"local-cli"`,
/// `"break-glass"`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    pub kind: ActorKind,
    pub auth_method: Option<String>,
}

impl Actor {
    pub fn new(id: impl Into<String>, kind: ActorKind, auth_method: Option<&str>) -> Actor {
        Actor {
            id: id.into(),
            kind,
            auth_method: auth_method.map(str::to_owned),
        }
    }

    /// Gantry itself (startup, shutdown, the audit log's own events).
    pub fn system() -> Actor {
        Actor::new("gantry", ActorKind::System, None)
    }

    pub fn human(id: impl Into<String>, auth_method: &str) -> Actor {
        Actor::new(id, ActorKind::Human, Some(auth_method))
    }

    pub fn service(id: impl Into<String>, auth_method: &str) -> Actor {
        Actor::new(id, ActorKind::Service, Some(auth_method))
    }

    pub fn device(id: impl Into<String>, auth_method: &str) -> Actor {
        Actor::new(id, ActorKind::Device, Some(auth_method))
    }

    pub fn anonymous() -> Actor {
        Actor::new("anonymous", ActorKind::Anonymous, Some("anonymous"))
    }

    /// An operator at the machine's shell running a `gantry` command, named
    /// by the OS user when known.
    pub fn local_cli() -> Actor {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Actor::new(user, ActorKind::Human, Some("local-cli"))
    }
}

/// Where the request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub ip: Option<String>,
    pub client_id: Option<String>,
    /// `"mqtt"`, `"websocket"`, `"http"`, `"cli"`, ...
    pub transport: Option<String>,
}

impl Source {
    pub fn new(ip: Option<String>, client_id: Option<String>, transport: Option<&str>) -> Source {
        Source {
            ip,
            client_id,
            transport: transport.map(str::to_owned),
        }
    }

    /// A command run on this machine.
    pub fn local_cli() -> Source {
        Source::new(None, None, Some("cli"))
    }
}

/// One event to record. Build it with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub category: Category,
    /// e.g. `"login"`, `"publish-denied"`, `"user-added"`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub actor: Actor,
    pub source: Source,
    /// ISA-95 path, topic, user name, ...
    pub target: Option<String>,
    /// e.g. `"connect"`, `"publish"`, `"subscribe"`, `"add-user"`.
    pub action: String,
    pub success: bool,
    pub reason: Option<String>,
    pub correlation_id: Option<String>,
    /// `Null` when none.
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(
        category: Category,
        event_type: &str,
        actor: Actor,
        action: &str,
        success: bool,
    ) -> Self {
        AuditEvent {
            category,
            event_type: event_type.to_owned(),
            actor,
            source: Source::default(),
            target: None,
            action: action.to_owned(),
            success,
            reason: None,
            correlation_id: None,
            details: serde_json::Value::Null,
        }
    }

    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
}

/// Tuning for [`AuditLog::open`].
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Sign a checkpoint after this many records (default 1000).
    pub checkpoint_every_records: u64,
    /// ... or after this long when there are new records (default 5 min).
    pub checkpoint_every: Duration,
    /// fsync every batch (default true). Off only for tests and benchmarks.
    pub fsync: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(300),
            fsync: true,
        }
    }
}

/// The writer's state, for `$SYS`, health checks and the admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditHealth {
    /// Sequence number of the last record written to the file.
    pub last_seq: u64,
    /// Records this handle's writer wrote since open.
    pub records_written: u64,
    /// Records queued but not yet durable.
    pub pending: u64,
    /// The last write or fsync failed; records are held and retried.
    pub failing: bool,
    pub last_error: Option<String>,
    pub last_checkpoint_seq: u64,
    /// Records dropped because the queue was full ([`MAX_QUEUED`]).
    pub dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot use {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("{path}:{line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Setup { path: PathBuf, message: String },
    #[error("no audit log in {0}")]
    NotFound(PathBuf),
    #[error(
        "cannot write the audit log {path}: {message} (the record stays queued and is retried)"
    )]
    WriteFailed { path: PathBuf, message: String },
    #[error(
        "the audit log did not confirm the write within {0:?} (slow or failing disk); the record stays queued"
    )]
    Timeout(Duration),
    #[error("the audit log is closed; the record was not written")]
    Closed,
    #[error("the audit queue is full ({0} records waiting for the disk); the record was dropped")]
    QueueFull(usize),
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |error| AuditError::Io {
        path: path.to_path_buf(),
        error,
    }
}
