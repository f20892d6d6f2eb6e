//! The durable store: an append-only log of state changes (retained messages,
//! persistent sessions, their subscriptions and queued messages) written by one
//! thread with group commit, periodically compacted into a snapshot.
//!
//! Files in `<data_dir>/broker/`: `snap-<g>` (a complete snapshot, written to a
//! temporary name and renamed) and `log-<g>`, `log-<g+1>`, ... appended after it.
//! Recovery loads the newest snapshot and replays the logs that follow. Each
//! record is `len u32 | crc32 u32 | kind u8 | body`; a torn or corrupt tail (a
//! crash in the middle of a write) ends the replay of that file.
//!
//! An acknowledgement that depends on a record waits for its sequence number to
//! become durable ([`AckGate`]); with [`SyncPolicy::Write`] that means written to
//! the operating system (survives `kill -9`), with [`SyncPolicy::Fsync`] synced to
//! disk (survives power loss).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gantry_codec::{Properties, PropertyContext, QoS, RetainHandling, SubscriptionOptions};
use tokio::sync::watch;

use crate::config::SyncPolicy;
use crate::message::Message;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// One durable state change.
#[derive(Debug, Clone)]
pub enum Record {
    RetainSet(Arc<Message>),
    RetainClear(Arc<str>),
    SessionOpen {
        client_id: Arc<str>,
        expiry_secs: u32,
    },
    SessionClosed {
        client_id: Arc<str>,
        at_ms: u64,
    },
    SessionDelete {
        client_id: Arc<str>,
    },
    Subscribe {
        client_id: Arc<str>,
        filter: String,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    },
    Unsubscribe {
        client_id: Arc<str>,
        filter: String,
    },
    Enqueue {
        client_id: Arc<str>,
        qseq: u64,
        qos: QoS,
        retain: bool,
        msg: Arc<Message>,
    },
    Ack {
        client_id: Arc<str>,
        qseq: u64,
    },
    /// A queued delivery went in flight under this packet identifier.
    Sent {
        client_id: Arc<str>,
        qseq: u64,
        packet_id: u16,
    },
    /// The client answered PUBREC for a QoS 2 delivery: only PUBREL remains.
    Released {
        client_id: Arc<str>,
        qseq: u64,
    },
    /// An incoming QoS 2 message was accepted; its PUBREL is awaited.
    Qos2Received {
        client_id: Arc<str>,
        packet_id: u16,
    },
    /// The incoming QoS 2 exchange completed.
    Qos2Completed {
        client_id: Arc<str>,
        packet_id: u16,
    },
}

mod kind {
    pub const RETAIN_SET: u8 = 1;
    pub const RETAIN_CLEAR: u8 = 2;
    pub const SESSION_OPEN: u8 = 3;
    pub const SESSION_CLOSED: u8 = 4;
    pub const SESSION_DELETE: u8 = 5;
    pub const SUBSCRIBE: u8 = 6;
    pub const UNSUBSCRIBE: u8 = 7;
    pub const ENQUEUE: u8 = 8;
    pub const ACK: u8 = 9;
    pub const SENT: u8 = 10;
    pub const RELEASED: u8 = 11;
    pub const QOS2_RECEIVED: u8 = 12;
    pub const QOS2_COMPLETED: u8 = 13;
}

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32_le(s.len() as u32);
    out.put_slice(s.as_bytes());
}

fn put_msg(out: &mut BytesMut, m: &Message) {
    put_str(out, &m.topic);
    out.put_u32_le(m.payload.len() as u32);
    out.put_slice(&m.payload);
    out.put_u8(m.qos as u8 | (u8::from(m.retain) << 2) | (u8::from(m.properties.is_some()) << 3));
    out.put_u64_le(m.expires_at_ms.unwrap_or(0));
    out.put_u64_le(m.received_at_ms);
    if let Some(p) = &m.properties {
        p.encode(out);
    }
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

impl Record {
    fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32_le(0);
        out.put_u32_le(0);
        match self {
            Record::RetainSet(m) => {
                out.put_u8(kind::RETAIN_SET);
                put_msg(out, m);
            }
            Record::RetainClear(t) => {
                out.put_u8(kind::RETAIN_CLEAR);
                put_str(out, t);
            }
            Record::SessionOpen {
                client_id,
                expiry_secs,
            } => {
                out.put_u8(kind::SESSION_OPEN);
                put_str(out, client_id);
                out.put_u32_le(*expiry_secs);
            }
            Record::SessionClosed { client_id, at_ms } => {
                out.put_u8(kind::SESSION_CLOSED);
                put_str(out, client_id);
                out.put_u64_le(*at_ms);
            }
            Record::SessionDelete { client_id } => {
                out.put_u8(kind::SESSION_DELETE);
                put_str(out, client_id);
            }
            Record::Subscribe {
                client_id,
                filter,
                options,
                sub_id,
            } => {
                out.put_u8(kind::SUBSCRIBE);
                put_str(out, client_id);
                put_str(out, filter);
                out.put_u8(options_byte(options));
                out.put_u32_le(sub_id.unwrap_or(0));
            }
            Record::Unsubscribe { client_id, filter } => {
                out.put_u8(kind::UNSUBSCRIBE);
                put_str(out, client_id);
                put_str(out, filter);
            }
            Record::Enqueue {
                client_id,
                qseq,
                qos,
                retain,
                msg,
            } => {
                out.put_u8(kind::ENQUEUE);
                put_str(out, client_id);
                out.put_u64_le(*qseq);
                out.put_u8(*qos as u8 | u8::from(*retain) << 2);
                put_msg(out, msg);
            }
            Record::Ack { client_id, qseq } => {
                out.put_u8(kind::ACK);
                put_str(out, client_id);
                out.put_u64_le(*qseq);
            }
            Record::Sent {
                client_id,
                qseq,
                packet_id,
            } => {
                out.put_u8(kind::SENT);
                put_str(out, client_id);
                out.put_u64_le(*qseq);
                out.put_u16_le(*packet_id);
            }
            Record::Released { client_id, qseq } => {
                out.put_u8(kind::RELEASED);
                put_str(out, client_id);
                out.put_u64_le(*qseq);
            }
            Record::Qos2Received {
                client_id,
                packet_id,
            } => {
                out.put_u8(kind::QOS2_RECEIVED);
                put_str(out, client_id);
                out.put_u16_le(*packet_id);
            }
            Record::Qos2Completed {
                client_id,
                packet_id,
            } => {
                out.put_u8(kind::QOS2_COMPLETED);
                put_str(out, client_id);
                out.put_u16_le(*packet_id);
            }
        }
        let body_len = out.len() - start - 8;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(mut b: Bytes) -> Option<Record> {
        fn need(b: &Bytes, n: usize) -> Option<()> {
            (b.remaining() >= n).then_some(())
        }
        fn s(b: &mut Bytes) -> Option<String> {
            need(b, 4)?;
            let n = b.get_u32_le() as usize;
            need(b, n)?;
            String::from_utf8(b.split_to(n).to_vec()).ok()
        }
        fn u8_(b: &mut Bytes) -> Option<u8> {
            need(b, 1)?;
            Some(b.get_u8())
        }
        fn u16_(b: &mut Bytes) -> Option<u16> {
            need(b, 2)?;
            Some(b.get_u16_le())
        }
        fn u32_(b: &mut Bytes) -> Option<u32> {
            need(b, 4)?;
            Some(b.get_u32_le())
        }
        fn u64_(b: &mut Bytes) -> Option<u64> {
            need(b, 8)?;
            Some(b.get_u64_le())
        }
        fn msg(b: &mut Bytes) -> Option<Arc<Message>> {
            let topic = s(b)?;
            let n = u32_(b)? as usize;
            need(b, n)?;
            let payload = Bytes::copy_from_slice(&b.split_to(n));
            let flags = u8_(b)?;
            let expires = u64_(b)?;
            let received = u64_(b)?;
            let properties = if flags & 0x08 != 0 {
                Some(Box::new(
                    Properties::decode(b, PropertyContext::Publish).ok()?,
                ))
            } else {
                None
            };
            Some(Arc::new(Message {
                topic: Arc::from(topic),
                payload,
                qos: QoS::from_u8(flags & 0x03)?,
                retain: flags & 0x04 != 0,
                properties,
                expires_at_ms: (expires != 0).then_some(expires),
                received_at_ms: received,
                publisher: None,
            }))
        }
        let k = u8_(&mut b)?;
        let rec = match k {
            kind::RETAIN_SET => Record::RetainSet(msg(&mut b)?),
            kind::RETAIN_CLEAR => Record::RetainClear(Arc::from(s(&mut b)?)),
            kind::SESSION_OPEN => Record::SessionOpen {
                client_id: Arc::from(s(&mut b)?),
                expiry_secs: u32_(&mut b)?,
            },
            kind::SESSION_CLOSED => Record::SessionClosed {
                client_id: Arc::from(s(&mut b)?),
                at_ms: u64_(&mut b)?,
            },
            kind::SESSION_DELETE => Record::SessionDelete {
                client_id: Arc::from(s(&mut b)?),
            },
            kind::SUBSCRIBE => {
                let client_id = Arc::from(s(&mut b)?);
                let filter = s(&mut b)?;
                let o = u8_(&mut b)?;
                let sub_id = u32_(&mut b)?;
                Record::Subscribe {
                    client_id,
                    filter,
                    options: SubscriptionOptions {
                        qos: QoS::from_u8(o & 0x03)?,
                        no_local: o & 0x04 != 0,
                        retain_as_published: o & 0x08 != 0,
                        retain_handling: match (o >> 4) & 0x03 {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendIfNew,
                            _ => RetainHandling::DoNotSend,
                        },
                    },
                    sub_id: (sub_id != 0).then_some(sub_id),
                }
            }
            kind::UNSUBSCRIBE => Record::Unsubscribe {
                client_id: Arc::from(s(&mut b)?),
                filter: s(&mut b)?,
            },
            kind::ENQUEUE => {
                let client_id = Arc::from(s(&mut b)?);
                let qseq = u64_(&mut b)?;
                let f = u8_(&mut b)?;
                Record::Enqueue {
                    client_id,
                    qseq,
                    qos: QoS::from_u8(f & 0x03)?,
                    retain: f & 0x04 != 0,
                    msg: msg(&mut b)?,
                }
            }
            kind::ACK => Record::Ack {
                client_id: Arc::from(s(&mut b)?),
                qseq: u64_(&mut b)?,
            },
            kind::SENT => Record::Sent {
                client_id: Arc::from(s(&mut b)?),
                qseq: u64_(&mut b)?,
                packet_id: u16_(&mut b)?,
            },
            kind::RELEASED => Record::Released {
                client_id: Arc::from(s(&mut b)?),
                qseq: u64_(&mut b)?,
            },
            kind::QOS2_RECEIVED => Record::Qos2Received {
                client_id: Arc::from(s(&mut b)?),
                packet_id: u16_(&mut b)?,
            },
            kind::QOS2_COMPLETED => Record::Qos2Completed {
                client_id: Arc::from(s(&mut b)?),
                packet_id: u16_(&mut b)?,
            },
            _ => return None,
        };
        Some(rec)
    }
}

/// A persistent session as recovered from disk.
#[derive(Debug, Default)]
pub struct StoredSession {
    pub expiry_secs: u32,
    pub disconnected_at_ms: u64,
    pub subscriptions: BTreeMap<String, (SubscriptionOptions, Option<u32>)>,
    /// Queued and in-flight messages by queue sequence.
    pub queue: BTreeMap<u64, StoredDelivery>,
    /// Incoming QoS 2 packet identifiers awaiting PUBREL.
    pub incoming_qos2: BTreeSet<u16>,
}

/// A message queued for a persistent session, and how far its delivery got.
#[derive(Debug)]
pub struct StoredDelivery {
    pub qos: QoS,
    pub retain: bool,
    pub msg: Arc<Message>,
    /// Set once it went in flight: redelivered with DUP under this identifier.
    pub packet_id: Option<u16>,
    /// QoS 2: PUBREC received, PUBREL (not the message) is what remains.
    pub released: bool,
}

/// Everything the log says, folded into its latest state.
#[derive(Debug, Default)]
pub struct State {
    pub retained: BTreeMap<Arc<str>, Arc<Message>>,
    pub sessions: HashMap<Arc<str>, StoredSession>,
}

impl State {
    fn apply(&mut self, rec: Record) {
        match rec {
            Record::RetainSet(m) => {
                self.retained.insert(m.topic.clone(), m);
            }
            Record::RetainClear(t) => {
                self.retained.remove(&t);
            }
            Record::SessionOpen {
                client_id,
                expiry_secs,
            } => {
                let s = self.sessions.entry(client_id).or_default();
                s.expiry_secs = expiry_secs;
                s.disconnected_at_ms = 0;
            }
            Record::SessionClosed { client_id, at_ms } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.disconnected_at_ms = at_ms;
                }
            }
            Record::SessionDelete { client_id } => {
                self.sessions.remove(&client_id);
            }
            Record::Subscribe {
                client_id,
                filter,
                options,
                sub_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.insert(filter, (options, sub_id));
                }
            }
            Record::Unsubscribe { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.subscriptions.remove(&filter);
                }
            }
            Record::Enqueue {
                client_id,
                qseq,
                qos,
                retain,
                msg,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.queue.insert(
                        qseq,
                        StoredDelivery {
                            qos,
                            retain,
                            msg,
                            packet_id: None,
                            released: false,
                        },
                    );
                }
            }
            Record::Ack { client_id, qseq } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.queue.remove(&qseq);
                }
            }
            Record::Sent {
                client_id,
                qseq,
                packet_id,
            } => {
                if let Some(d) = self
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|s| s.queue.get_mut(&qseq))
                {
                    d.packet_id = Some(packet_id);
                }
            }
            Record::Released { client_id, qseq } => {
                if let Some(d) = self
                    .sessions
                    .get_mut(&client_id)
                    .and_then(|s| s.queue.get_mut(&qseq))
                {
                    d.released = true;
                }
            }
            Record::Qos2Received {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.incoming_qos2.insert(packet_id);
                }
            }
            Record::Qos2Completed {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(&client_id) {
                    s.incoming_qos2.remove(&packet_id);
                }
            }
        }
    }

    /// Re-encodes the state as the records that rebuild it.
    fn encode(&self, out: &mut BytesMut) {
        for m in self.retained.values() {
            Record::RetainSet(m.clone()).encode(out);
        }
        for (id, s) in &self.sessions {
            Record::SessionOpen {
                client_id: id.clone(),
                expiry_secs: s.expiry_secs,
            }
            .encode(out);
            if s.disconnected_at_ms != 0 {
                Record::SessionClosed {
                    client_id: id.clone(),
                    at_ms: s.disconnected_at_ms,
                }
                .encode(out);
            }
            for (filter, (options, sub_id)) in &s.subscriptions {
                Record::Subscribe {
                    client_id: id.clone(),
                    filter: filter.clone(),
                    options: *options,
                    sub_id: *sub_id,
                }
                .encode(out);
            }
            for (qseq, d) in &s.queue {
                Record::Enqueue {
                    client_id: id.clone(),
                    qseq: *qseq,
                    qos: d.qos,
                    retain: d.retain,
                    msg: d.msg.clone(),
                }
                .encode(out);
                if let Some(packet_id) = d.packet_id {
                    Record::Sent {
                        client_id: id.clone(),
                        qseq: *qseq,
                        packet_id,
                    }
                    .encode(out);
                }
                if d.released {
                    Record::Released {
                        client_id: id.clone(),
                        qseq: *qseq,
                    }
                    .encode(out);
                }
            }
            for packet_id in &s.incoming_qos2 {
                Record::Qos2Received {
                    client_id: id.clone(),
                    packet_id: *packet_id,
                }
                .encode(out);
            }
        }
    }
}

/// Replays one file into `state`. Returns the number of valid bytes: anything
/// after them is a torn or corrupt tail.
fn replay(path: &Path, state: &mut State) -> Result<u64, StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err(path))?;
    let data = Bytes::from(data);
    let mut pos = 0usize;
    while data.len() - pos >= 8 {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let Some(end) = (pos + 8).checked_add(len).filter(|e| *e <= data.len()) else {
            break;
        };
        if crc32fast::hash(&data[pos + 8..end]) != crc {
            break;
        }
        let Some(rec) = Record::decode(data.slice(pos + 8..end)) else {
            break;
        };
        state.apply(rec);
        pos = end;
    }
    if pos != data.len() {
        tracing::warn!(
            file = %path.display(),
            valid_bytes = pos,
            dropped_bytes = data.len() - pos,
            "store file ends with a torn or corrupt record (a crash during a write); it is ignored"
        );
    }
    Ok(pos as u64)
}

fn generation(name: &str, prefix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

fn list(dir: &Path, prefix: &str) -> Result<Vec<u64>, StoreError> {
    let mut gens = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(g) = entry
            .file_name()
            .to_str()
            .and_then(|n| generation(n, prefix))
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

/// Loads snapshot `snap` (if any) and every log from `snap` up to and including `upto`.
fn load(dir: &Path, snap: Option<u64>, upto: u64) -> Result<State, StoreError> {
    let mut state = State::default();
    let from = snap.unwrap_or(0);
    if let Some(g) = snap {
        replay(&dir.join(format!("snap-{g}")), &mut state)?;
    }
    for g in list(dir, "log-")? {
        if g >= from && g <= upto {
            let path = dir.join(format!("log-{g}"));
            let valid = replay(&path, &mut state)?;
            // Cut a torn tail so that new records are not appended after garbage.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            if f.metadata().map_err(io_err(&path))?.len() != valid {
                f.set_len(valid).map_err(io_err(&path))?;
            }
        }
    }
    Ok(state)
}

struct Pending {
    buf: BytesMut,
    last_seq: u64,
    shutdown: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: watch::Sender<u64>,
}

/// Handle to the durable store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    durable_rx: watch::Receiver<u64>,
}

/// Waits until a store sequence number is durable. Acknowledgements that
/// promise durability hold one.
#[derive(Clone)]
pub struct AckGate {
    rx: watch::Receiver<u64>,
    seq: u64,
}

impl std::fmt::Debug for AckGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckGate")
            .field("seq", &self.seq)
            .field("durable", &*self.rx.borrow())
            .finish()
    }
}

impl AckGate {
    /// A gate over any durable sink that reports "durable through sequence N"
    /// on a watch channel (the broker's store now; the historian later).
    pub fn new(rx: watch::Receiver<u64>, seq: u64) -> Self {
        Self { rx, seq }
    }

    pub fn is_open(&self) -> bool {
        *self.rx.borrow() >= self.seq
    }

    pub async fn wait(&mut self) {
        let seq = self.seq;
        // An error means the sink is gone (shutdown): nothing more will become
        // durable, and the connection is about to close anyway.
        let _ = self.rx.wait_for(|d| *d >= seq).await;
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, recovers its state and
    /// starts the writer thread.
    pub fn open(
        dir: &Path,
        sync: SyncPolicy,
        compact_after: u64,
    ) -> Result<(Store, State), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Leftover temporary snapshot from a crash during compaction.
        let _ = fs::remove_file(dir.join("snap.tmp"));
        let snap = list(dir, "snap-")?.last().copied();
        let logs = list(dir, "log-")?;
        let current = logs.last().copied().unwrap_or(0).max(snap.unwrap_or(0));
        let state = load(dir, snap, current)?;
        let log_path = dir.join(format!("log-{current}"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let size = file.metadata().map_err(io_err(&log_path))?.len();
        let (durable, durable_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: BytesMut::new(),
                last_seq: 0,
                shutdown: false,
            }),
            wake: Condvar::new(),
            durable,
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            shared: shared.clone(),
            file,
            generation: current,
            size,
            sync,
            compact_after,
            snapshot: snap,
        };
        std::thread::Builder::new()
            .name("gantry-store".into())
            .spawn(move || writer.run())
            .map_err(io_err(dir))?;
        Ok((Store { shared, durable_rx }, state))
    }

    /// Queues a record; returns its sequence number.
    pub fn append(&self, rec: &Record) -> u64 {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        rec.encode(&mut p.buf);
        p.last_seq += 1;
        let seq = p.last_seq;
        drop(p);
        self.shared.wake.notify_one();
        seq
    }

    /// The sequence number of the last record queued so far.
    pub fn last_seq(&self) -> u64 {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_seq
    }

    pub fn gate(&self, seq: u64) -> AckGate {
        AckGate::new(self.durable_rx.clone(), seq)
    }

    /// Flushes what is queued and stops the writer.
    pub fn shutdown(&self) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        p.shutdown = true;
        drop(p);
        self.shared.wake.notify_one();
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable_rx.borrow()
    }
}

struct Writer {
    dir: PathBuf,
    shared: Arc<Shared>,
    file: File,
    generation: u64,
    size: u64,
    sync: SyncPolicy,
    compact_after: u64,
    snapshot: Option<u64>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = BytesMut::new();
        loop {
            let (seq, shutdown) = {
                let mut p = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                while p.buf.is_empty() && !p.shutdown {
                    p = self.shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::swap(&mut batch, &mut p.buf);
                (p.last_seq, p.shutdown)
            };
            if !batch.is_empty() {
                self.write_durably(&batch);
                self.size += batch.len() as u64;
                batch.clear();
                if batch.capacity() > 4 * 1024 * 1024 {
                    batch = BytesMut::new();
                }
            }
            self.shared.durable.send_replace(seq);
            if shutdown {
                return;
            }
            if self.size > self.compact_after {
                self.compact();
            }
        }
    }

    /// Writes until it succeeds: acknowledged data must never be dropped, so a
    /// full or failing disk holds acknowledgements back instead.
    fn write_durably(&mut self, batch: &[u8]) {
        let mut delay = Duration::from_millis(50);
        loop {
            let result = self.file.write_all(batch).and_then(|_| match self.sync {
                SyncPolicy::Fsync => self.file.sync_data(),
                SyncPolicy::Write => Ok(()),
            });
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(
                        dir = %self.dir.display(),
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot write the broker store; acknowledgements are held until it succeeds"
                    );
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    // A partial write may have left a torn record: cut back.
                    if let Ok(len) = self.file.metadata().map(|m| m.len())
                        && len > self.size
                    {
                        let _ = self.file.set_len(self.size);
                    }
                }
            }
        }
    }

    /// Rotates to a new log and folds the old snapshot and logs into a new
    /// snapshot. Runs on the writer thread: appends wait meanwhile, but the
    /// broker keeps routing and queueing.
    fn compact(&mut self) {
        let next = self.generation + 1;
        let path = self.dir.join(format!("log-{next}"));
        let file = match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot rotate the broker log");
                return;
            }
        };
        let old = self.generation;
        self.file = file;
        self.generation = next;
        self.size = 0;
        let result = (|| -> Result<(), StoreError> {
            let state = load(&self.dir, self.snapshot, old)?;
            let mut buf = BytesMut::new();
            state.encode(&mut buf);
            let tmp = self.dir.join("snap.tmp");
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&buf)
                .and_then(|_| f.sync_all())
                .map_err(io_err(&tmp))?;
            let snap = self.dir.join(format!("snap-{next}"));
            fs::rename(&tmp, &snap).map_err(io_err(&snap))?;
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            if let Some(g) = self.snapshot {
                let _ = fs::remove_file(self.dir.join(format!("snap-{g}")));
            }
            for g in list(&self.dir, "log-")? {
                if g <= old {
                    let _ = fs::remove_file(self.dir.join(format!("log-{g}")));
                }
            }
            self.snapshot = Some(next);
            tracing::info!(
                snapshot = next,
                bytes = buf.len(),
                "compacted the broker store"
            );
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "broker store compaction failed; the log keeps growing until it succeeds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            topic,
            payload.as_bytes(),
            QoS::AtLeastOnce,
            true,
        ))
    }

    async fn settle(store: &Store, seq: u64) {
        store.gate(seq).wait().await;
    }

    #[tokio::test]
    async fn state_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = Store::open(dir.path(), SyncPolicy::Write, 2_000).unwrap();
        assert!(state.retained.is_empty());
        let mut seq = 0;
        for i in 0..200 {
            seq = store.append(&Record::RetainSet(msg(
                &format!("a/{}", i % 50),
                &format!("v{i}"),
            )));
        }
        store.append(&Record::RetainClear(Arc::from("a/0")));
        let cid: Arc<str> = Arc::from("c1");
        store.append(&Record::SessionOpen {
            client_id: cid.clone(),
            expiry_secs: 60,
        });
        store.append(&Record::Subscribe {
            client_id: cid.clone(),
            filter: "a/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            sub_id: Some(4),
        });
        for q in 1..=5 {
            seq = store.append(&Record::Enqueue {
                client_id: cid.clone(),
                qseq: q,
                qos: QoS::AtLeastOnce,
                retain: false,
                msg: msg("a/1", "x"),
            });
        }
        seq = seq.max(store.append(&Record::Ack {
            client_id: cid.clone(),
            qseq: 2,
        }));
        settle(&store, seq).await;
        store.shutdown();
        std::thread::sleep(Duration::from_millis(50));
        let (_store2, state) = Store::open(dir.path(), SyncPolicy::Write, 2_000).unwrap();
        assert_eq!(state.retained.len(), 49);
        assert_eq!(
            state.retained.get("a/7").map(|m| m.payload.clone()),
            Some(Bytes::from("v157"))
        );
        let s = &state.sessions[&cid];
        assert_eq!(s.expiry_secs, 60);
        assert_eq!(s.subscriptions["a/#"].1, Some(4));
        assert_eq!(
            s.queue.keys().copied().collect::<Vec<_>>(),
            vec![1, 3, 4, 5]
        );
        assert!(
            list(dir.path(), "snap-").unwrap().len() == 1,
            "compaction wrote one snapshot"
        );
    }

    #[test]
    fn torn_tail_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = BytesMut::new();
        Record::RetainSet(msg("t/1", "one")).encode(&mut buf);
        let good = buf.len();
        Record::RetainSet(msg("t/2", "two")).encode(&mut buf);
        let torn = &buf[..good + 7];
        fs::write(dir.path().join("log-0"), torn).unwrap();
        let (store, state) = Store::open(dir.path(), SyncPolicy::Write, 1 << 20).unwrap();
        assert_eq!(state.retained.len(), 1);
        assert_eq!(
            fs::metadata(dir.path().join("log-0")).unwrap().len(),
            good as u64
        );
        store.shutdown();
    }
}
