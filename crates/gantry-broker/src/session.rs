//! Session state: what survives a client's connection — its subscriptions, the
//! messages queued for it and the QoS 1/2 exchanges in flight — and the signal
//! that wakes the connection currently serving it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use std::sync::{Arc, Mutex, MutexGuard};

use gantry_codec::{QoS, SubscriptionOptions};

use crate::hooks::ClientInfo;
use crate::message::Message;

pub type SessionId = u64;

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    /// min(message QoS, subscription QoS).
    pub qos: QoS,
    /// The retain flag as sent to this subscriber.
    pub retain: bool,
    /// Identifiers of the subscriptions that matched (5.0).
    pub sub_ids: Vec<u32>,
    /// Sequence number in the durable log for persistent sessions, else 0.
    pub qseq: u64,
}

/// What an in-flight outgoing message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum Stage {
    /// PUBLISH QoS 1 sent, waiting for PUBACK.
    WaitPubAck,
    /// PUBLISH QoS 2 sent, waiting for PUBREC.
    WaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    WaitPubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub stage: Stage,
    pub delivery: Delivery,
}

#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    pub options: SubscriptionOptions,
    pub sub_id: Option<u32>,
}

/// Wakes the connection task serving a session and tells it why. One small
/// atomic word and a waker instead of a channel: an idle connection waits on
/// it at the cost of a few bytes. Being the session's owner, it also says who
/// is connected.
pub struct ConnSignal {
    flags: AtomicU8,
    waker: AtomicWaker,
    /// Keep-alive window in milliseconds (1.5 x keep-alive); 0 disables.
    pub keep_alive_ms: u64,
    /// Milliseconds since broker start when the client last sent anything.
    pub last_seen_ms: AtomicU64,
    pub client: ClientInfo,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    pub protocol_level: u8,
    /// Unix milliseconds at which the client connected.
    pub connected_at_ms: u64,
}

/// Why a connection was woken; several may be set at once.
pub mod wake {
    /// New deliveries are queued.
    pub const DELIVERIES: u8 = 1;
    /// Another connection took the session over.
    pub const TAKEN_OVER: u8 = 2;
    /// The broker is shutting down.
    pub const SHUTDOWN: u8 = 4;
    /// Nothing arrived within the keep-alive window.
    pub const KEEP_ALIVE: u8 = 8;
}

impl ConnSignal {
    /// `clock_ms` is the broker clock (see `Broker::clock_ms`).
    pub fn new(keep_alive_ms: u64, clock_ms: u64, client: ClientInfo, protocol_level: u8) -> Self {
        Self {
            flags: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            keep_alive_ms,
            last_seen_ms: AtomicU64::new(clock_ms),
            client,
            protocol_level,
            connected_at_ms: crate::message::now_ms(),
        }
    }

    pub fn raise(&self, reason: u8) {
        self.flags.fetch_or(reason, Ordering::AcqRel);
        self.waker.wake();
    }

    pub fn notify(&self) {
        self.raise(wake::DELIVERIES);
    }

    pub fn kick(&self) {
        self.raise(wake::TAKEN_OVER);
    }

    /// Resolves with the raised reasons (and clears them).
    pub fn poll_wake(&self, cx: &mut Context<'_>) -> Poll<u8> {
        self.waker.register(cx.waker());
        match self.flags.swap(0, Ordering::AcqRel) {
            0 => Poll::Pending,
            f => Poll::Ready(f),
        }
    }
}

pub struct Session {
    pub id: SessionId,
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
}

#[derive(Default)]
pub struct SessionState {
    /// The connection serving this session, if any.
    pub owner: Option<Arc<ConnSignal>>,
    /// Incremented on every connect; delayed will and expiry tasks compare it.
    pub generation: u64,
    /// Session expiry interval in seconds; `u32::MAX` never expires.
    pub expiry_secs: u32,
    /// Subscriptions keyed by the raw filter, `$share/...` included.
    pub subscriptions: HashMap<String, SubscriptionRecord>,
    pub queue: VecDeque<Delivery>,
    pub inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// Packet identifiers of incoming QoS 2 messages awaiting PUBREL.
    pub incoming_qos2: HashSet<u16>,
    pub next_qseq: u64,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// Unix milliseconds of the last disconnect, for expiry after a restart.
    pub disconnected_at_ms: u64,
    /// True once the session has a record in the durable store.
    pub persisted: bool,
}

impl SessionState {
    /// True when the session outlives its connection and so is kept on disk.
    pub fn is_persistent(&self) -> bool {
        self.expiry_secs > 0
    }

    /// A packet identifier not used by any message in flight.
    pub fn allocate_packet_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= u16::MAX as usize - 1 {
            return None;
        }
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                return Some(id);
            }
        }
    }
}

impl Session {
    pub fn new(id: SessionId, client_id: Arc<str>) -> Self {
        Self {
            id,
            client_id,
            state: Mutex::new(SessionState::default()),
        }
    }

    /// Locks the session state. A poisoned lock (a panic while held) is
    /// recovered: session state stays usable for the other clients.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
