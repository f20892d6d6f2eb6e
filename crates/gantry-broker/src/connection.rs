//! One client connection: the CONNECT handshake, then a loop that reads and
//! handles packets, writes queued messages in batches, releases
//! acknowledgements once what they promise is durable, and enforces keep-alive.
//! When it ends it hands the session back (or discards it) and schedules the
//! will message.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use gantry_codec::topic::parse_filter;
use gantry_codec::{
    ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    PubResponse, QoS, ReasonCode, SubAck, UnsubAck, decode, encode, encode_publish,
};
use std::future::{Future, poll_fn};
use std::task::Poll;

use tokio::time::timeout;

use crate::broker::Broker;
use crate::config::{Limits, RateLimitAction};
use crate::hooks::{AuthDecision, ClientInfo, ConnectRequest, Peer, Verdict};
use crate::message::{Message, now_ms};
use crate::rate::PublishLimiter;
use crate::session::{ConnSignal, Delivery, Inflight, Session, Stage, wake};
use crate::stats::Stats;
use crate::store::{AckGate, Record};
use crate::transport::{Transport, read_some, write_all};

/// Stop encoding queued messages once this much is waiting to be written: a
/// slow reader then keeps its backlog in its (bounded) session queue.
const WRITE_HIGH_WATER: usize = 64 * 1024;
const MIN_READ: usize = 512;
const MAX_READ: usize = 64 * 1024;

static EMPTY_PROPS: Properties = Properties::EMPTY;
static ASSIGNED_IDS: AtomicU64 = AtomicU64::new(1);

/// How a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT; 5.0 reason 0x04 asks for the will anyway.
    Graceful {
        publish_will: bool,
    },
    /// The client closed the socket or it failed.
    Closed,
    /// We close it with this reason (5.0 clients get DISCONNECT with it).
    Error(ReasonCode, String),
    TakenOver,
    Shutdown,
    KeepAliveTimeout,
}

struct PendingAck {
    packet: Packet,
    gates: Vec<AckGate>,
    /// Messages to queue right after this acknowledgement (retained messages
    /// follow their SUBACK).
    then_enqueue: Vec<Delivery>,
    /// Whether sending it frees a slot of the client's inbound window.
    releases_window: bool,
}

#[derive(Default)]
struct Aliases {
    outbound: HashMap<Arc<str>, u16>,
    inbound: HashMap<u16, Arc<str>>,
}

struct Conn {
    broker: Broker,
    session: Arc<Session>,
    signal: Arc<ConnSignal>,
    info: ClientInfo,
    version: ProtocolVersion,
    generation: u64,
    /// Our outbound window: min(client Receive Maximum, configured inflight).
    window: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    /// Topic aliases in both directions (5.0), allocated on first use.
    aliases: Option<Box<Aliases>>,
    pending: VecDeque<PendingAck>,
    inbound_inflight: usize,
    will: Option<Box<LastWill>>,
    problem_info: bool,
    /// Per-client publish limits (`None`: unlimited, the default).
    limiter: Option<Box<PublishLimiter>>,
    /// While set (broker clock, ms), the client is over its limits and its
    /// socket is not read.
    paused_until_ms: u64,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<S: Transport>(broker: Broker, stream: S, peer: Peer) {
    // The handshake runs boxed: its state is freed once the client is in,
    // instead of enlarging every idle connection's task for its lifetime.
    let Some((conn, rbuf, wbuf)) = Box::pin(handshake(&broker, &stream, &peer)).await else {
        return;
    };
    broker.inner.connections.fetch_add(1, Ordering::AcqRel);
    Stats::add(&broker.inner.stats.clients_connected, 1);
    Stats::add(&broker.inner.stats.connections_total, 1);
    run(conn, &stream, rbuf, wbuf).await;
    broker
        .inner
        .stats
        .clients_connected
        .fetch_sub(1, Ordering::Relaxed);
    broker.inner.connections.fetch_sub(1, Ordering::AcqRel);
}

/// Reads CONNECT, answers CONNACK (into the returned write buffer) or refuses.
async fn handshake<S: Transport>(
    broker: &Broker,
    stream: &S,
    from: &Peer,
) -> Option<(Conn, BytesMut, BytesMut)> {
    let (peer, transport) = (from.addr, from.transport);
    let limits = &broker.config().limits;
    let mut rbuf = BytesMut::with_capacity(MIN_READ);
    let connect_wait = Duration::from_secs(limits.connect_timeout_secs);
    let connect = match timeout(
        connect_wait,
        read_connect(stream, &mut rbuf, limits.max_packet_size),
    )
    .await
    {
        Err(_) => {
            tracing::debug!(
                ?peer,
                transport,
                "no CONNECT within {}s; closing",
                limits.connect_timeout_secs
            );
            return None;
        }
        Ok(Err(ConnectFailure::Io)) => return None,
        Ok(Err(ConnectFailure::Decode(e))) => {
            Stats::add(&broker.inner.stats.protocol_errors, 1);
            tracing::warn!(?peer, transport, error = %e, "bad CONNECT; closing the connection");
            if let DecodeError::UnsupportedProtocolVersion(level) = e {
                // 3.1.1-style CONNACK for older levels, 5.0-style for newer ones.
                let reply: &[u8] = if level < 4 {
                    &[0x20, 0x02, 0x00, 0x01]
                } else {
                    &[0x20, 0x03, 0x00, 0x84, 0x00]
                };
                let _ = timeout(Duration::from_secs(1), write_all(stream, reply)).await;
            }
            return None;
        }
        Ok(Ok(c)) => c,
    };
    let version = connect.version;
    let mut wbuf = BytesMut::new();
    match accept(broker, *connect, from, limits).await {
        Ok((conn, connack)) => {
            encode(&Packet::ConnAck(connack), version, &mut wbuf);
            tracing::debug!(client_id = %conn.info.client_id, ?peer, transport, ?version, "client connected");
            Some((conn, rbuf, wbuf))
        }
        Err((connack, why)) => {
            tracing::warn!(?peer, transport, reason = %connack.reason, "connection refused: {why}");
            encode(&Packet::ConnAck(connack), version, &mut wbuf);
            let _ = timeout(Duration::from_secs(1), write_all(stream, &wbuf)).await;
            None
        }
    }
}

enum ConnectFailure {
    Io,
    Decode(DecodeError),
}

async fn read_connect<T: Transport>(
    stream: &T,
    rbuf: &mut BytesMut,
    max_packet: usize,
) -> Result<Box<Connect>, ConnectFailure> {
    loop {
        match decode(rbuf, None, max_packet) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(other)) => {
                return Err(ConnectFailure::Decode(DecodeError::Protocol(format!(
                    "expected CONNECT, got {}",
                    other.kind()
                ))));
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectFailure::Decode(e)),
        }
        match read_some(stream, rbuf, MIN_READ).await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Io),
            Ok(_) => {}
        }
    }
}

fn refuse(reason: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        reason,
        properties: Properties::default(),
    }
}

/// Validates and authenticates CONNECT, attaches the session and builds CONNACK.
async fn accept(
    broker: &Broker,
    c: Connect,
    from: &Peer,
    limits: &Limits,
) -> Result<(Conn, ConnAck), (ConnAck, String)> {
    let (peer, transport) = (from.addr, from.transport);
    let v5 = c.version == ProtocolVersion::V5;
    if c.properties.authentication_method.is_some() {
        return Err((
            refuse(ReasonCode::BAD_AUTHENTICATION_METHOD),
            "enhanced authentication is not supported".into(),
        ));
    }
    let mut assigned = None;
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            return Err((
                refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
                "empty client identifier with clean session 0".into(),
            ));
        }
        let id = format!(
            "gantry-{:x}-{}",
            now_ms(),
            ASSIGNED_IDS.fetch_add(1, Ordering::Relaxed)
        );
        if v5 {
            assigned = Some(id.clone());
        }
        Arc::from(id)
    } else {
        Arc::from(c.client_id.as_str())
    };
    if let Some(ip) = peer.map(|p| p.ip())
        && !broker.inner.connect_limiter.allow(
            ip,
            limits.max_connect_rate_per_address,
            broker.clock_ms(),
        )
    {
        Stats::add(&broker.inner.stats.connections_rate_limited, 1);
        return Err((
            refuse(ReasonCode::CONNECTION_RATE_EXCEEDED),
            format!(
                "more than {} connections per second from {ip}",
                limits.max_connect_rate_per_address
            ),
        ));
    }
    if broker.inner.connections.load(Ordering::Acquire) >= limits.max_connections {
        return Err((
            refuse(ReasonCode::SERVER_BUSY),
            format!("connection limit of {} reached", limits.max_connections),
        ));
    }
    let request = ConnectRequest {
        client_id: client_id.to_string(),
        username: c.username.clone(),
        password: c.password.clone(),
        peer,
        transport,
        client_cert: from.client_cert.clone(),
    };
    let identity = match broker
        .inner
        .hooks
        .authenticator
        .authenticate(&request)
        .await
    {
        AuthDecision::Deny(reason, why) => return Err((refuse(reason), why)),
        AuthDecision::Allow => None,
        AuthDecision::Authenticated(identity) => Some(identity),
    };
    let info = ClientInfo {
        client_id: client_id.clone(),
        username: c.username.as_deref().map(Arc::from),
        identity,
        peer,
        transport,
    };
    if let Some(w) = &c.will
        && !broker.inner.hooks.authorizer.can_publish(&info, &w.topic)
    {
        return Err((
            refuse(ReasonCode::NOT_AUTHORIZED),
            format!("not authorized to publish the will topic {:?}", w.topic),
        ));
    }

    let expiry = if v5 {
        c.properties.session_expiry_interval.unwrap_or(0)
    } else if c.clean_start {
        0
    } else {
        u32::MAX
    };
    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if v5 && limits.max_keep_alive > 0 && (keep_alive == 0 || keep_alive > limits.max_keep_alive) {
        keep_alive = limits.max_keep_alive;
        server_keep_alive = Some(keep_alive);
    }
    let signal = Arc::new(ConnSignal::new(
        u64::from(keep_alive) * 1500,
        broker.clock_ms(),
        info.clone(),
        c.version.level(),
    ));
    let store = &broker.inner.store;
    let (session, present, generation, discarded) = {
        let mut sessions = broker.sessions();
        let existing = sessions.get(&client_id).cloned();
        match existing {
            Some(s) if !c.clean_start => {
                let mut st = s.lock();
                if let Some(old) = st.owner.replace(signal.clone()) {
                    old.kick();
                }
                st.generation += 1;
                st.expiry_secs = expiry;
                if expiry > 0 {
                    store.append(&Record::SessionOpen {
                        client_id: client_id.clone(),
                        expiry_secs: expiry,
                    });
                    st.persisted = true;
                } else if st.persisted {
                    store.append(&Record::SessionDelete {
                        client_id: client_id.clone(),
                    });
                    st.persisted = false;
                }
                let generation = st.generation;
                drop(st);
                (s, true, generation, None)
            }
            other => {
                if let Some(old) = &other {
                    sessions.remove(&client_id);
                    if let Some(owner) = old.lock().owner.take() {
                        owner.kick();
                    }
                }
                let s = broker.new_session(client_id.clone());
                {
                    let mut st = s.lock();
                    st.owner = Some(signal.clone());
                    st.generation = 1;
                    st.expiry_secs = expiry;
                    if expiry > 0 {
                        store.append(&Record::SessionOpen {
                            client_id: client_id.clone(),
                            expiry_secs: expiry,
                        });
                        st.persisted = true;
                    }
                }
                sessions.insert(client_id.clone(), s.clone());
                (s, false, 1, other)
            }
        }
    };
    if let Some(old) = discarded {
        broker.discard_session(&old);
    }

    let mut props = Properties::default();
    if v5 {
        props.receive_maximum = Some(limits.receive_maximum);
        props.maximum_packet_size = u32::try_from(limits.max_packet_size).ok();
        props.topic_alias_maximum = Some(limits.topic_alias_maximum);
        props.assigned_client_identifier = assigned;
        props.server_keep_alive = server_keep_alive;
    }
    let connack = ConnAck {
        session_present: present,
        reason: ReasonCode::SUCCESS,
        properties: props,
    };
    let client_receive_max = c.properties.receive_maximum.unwrap_or(u16::MAX);
    let conn = Conn {
        broker: broker.clone(),
        session,
        signal,
        info,
        version: c.version,
        generation,
        window: usize::from(client_receive_max.min(limits.max_inflight.max(1))),
        client_max_packet: c
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        client_alias_max: c.properties.topic_alias_maximum.unwrap_or(0),
        aliases: None,
        pending: VecDeque::new(),
        inbound_inflight: 0,
        will: c.will.map(Box::new),
        problem_info: c.properties.request_problem_information != Some(0),
        limiter: PublishLimiter::new(
            limits.max_publish_rate,
            limits.max_publish_bytes_rate,
            broker.clock_ms(),
        )
        .map(Box::new),
        paused_until_ms: 0,
    };
    Ok((conn, connack))
}

async fn run<T: Transport>(mut conn: Conn, stream: &T, mut rbuf: BytesMut, mut wbuf: BytesMut) {
    let signal = conn.signal.clone();
    let broker = conn.broker.clone();
    let stats = broker.inner.stats_ref();
    let mut read_size = MIN_READ;
    conn.resend_inflight(&mut wbuf);
    if rbuf.is_empty() {
        rbuf = BytesMut::new();
    }

    let exit = 'conn: loop {
        // Back within its limits: handle what it sent meanwhile first.
        if conn.paused_until_ms != 0 && broker.clock_ms() >= conn.paused_until_ms {
            conn.paused_until_ms = 0;
            if let Some(exit) = conn.drain(&mut rbuf, &mut wbuf) {
                break 'conn exit;
            }
        }
        conn.flush_acks(&mut wbuf);
        if wbuf.len() < WRITE_HIGH_WATER {
            conn.pump(&mut wbuf);
        }
        // Boxed: only connections with acknowledgements pending pay for it.
        let mut durable = conn
            .pending_gate()
            .map(|mut g| Box::pin(async move { g.wait().await }));
        // Boxed too: only a throttled client holds a timer.
        let paused = conn.paused_until_ms != 0;
        let mut resume = paused.then(|| {
            let wait = conn.paused_until_ms.saturating_sub(broker.clock_ms());
            Box::pin(tokio::time::sleep(Duration::from_millis(wait.max(1))))
        });
        // One poll over readiness kept in the socket, the signal and the gate,
        // so a waiting connection holds no timers or waiter nodes.
        let event = poll_fn(|cx| {
            if let Poll::Ready(flags) = signal.poll_wake(cx) {
                return Poll::Ready(Event::Woken(flags));
            }
            if let Some(r) = resume.as_mut() {
                if r.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Resume);
                }
            } else if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                return Poll::Ready(Event::Readable(r));
            }
            if !wbuf.is_empty()
                && let Poll::Ready(r) = stream.poll_write_ready(cx)
            {
                return Poll::Ready(Event::Writable(r));
            }
            if let Some(d) = durable.as_mut()
                && d.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Event::Durable);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Durable | Event::Resume => {}
            Event::Woken(flags) => {
                if flags & wake::TAKEN_OVER != 0 {
                    break 'conn Exit::TakenOver;
                }
                if flags & wake::SHUTDOWN != 0 {
                    break 'conn Exit::Shutdown;
                }
                if flags & wake::KEEP_ALIVE != 0 {
                    break 'conn Exit::KeepAliveTimeout;
                }
            }
            Event::Readable(r) => {
                let read = r.and_then(|_| {
                    rbuf.reserve(read_size);
                    stream.try_read_buf(&mut rbuf)
                });
                match read {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // Spurious readiness: give the buffer back while idle.
                        if rbuf.is_empty() {
                            rbuf = BytesMut::new();
                        }
                    }
                    Ok(0) | Err(_) => break 'conn Exit::Closed,
                    Ok(n) => {
                        Stats::add(&stats.bytes_received, n as u64);
                        signal
                            .last_seen_ms
                            .store(broker.clock_ms(), Ordering::Relaxed);
                        read_size = if n >= read_size {
                            (read_size * 2).min(MAX_READ)
                        } else if n < read_size / 4 {
                            (read_size / 2).max(MIN_READ)
                        } else {
                            read_size
                        };
                        if let Some(exit) = conn.drain(&mut rbuf, &mut wbuf) {
                            break 'conn exit;
                        }
                    }
                }
            }
            Event::Writable(r) => match r.and_then(|_| stream.try_write(&wbuf)) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => break 'conn Exit::Closed,
                Ok(n) => {
                    Stats::add(&stats.bytes_sent, n as u64);
                    wbuf.advance(n);
                    if wbuf.is_empty() {
                        wbuf = BytesMut::new();
                    }
                }
            },
        }
    };
    Box::pin(conn.finish(exit, stream, wbuf)).await;
}

enum Event {
    /// Acknowledgements waiting for durability may now go out.
    Durable,
    /// A throttled client may be read again.
    Resume,
    Woken(u8),
    Readable(std::io::Result<()>),
    Writable(std::io::Result<()>),
}

impl crate::broker::Inner {
    pub(crate) fn stats_ref(&self) -> &Stats {
        &self.stats
    }
}

impl Conn {
    /// Decodes and handles every complete packet in `rbuf`, stopping early
    /// if the client went over its publish limits (the rest waits in
    /// `rbuf` until it is back within them).
    fn drain(&mut self, rbuf: &mut BytesMut, wbuf: &mut BytesMut) -> Option<Exit> {
        let max_packet = self.broker.config().limits.max_packet_size;
        while self.paused_until_ms == 0 {
            match decode(rbuf, Some(self.version), max_packet) {
                Ok(Some(packet)) => {
                    if let Some(exit) = self.handle(packet, wbuf) {
                        return Some(exit);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Stats::add(&self.broker.inner.stats.protocol_errors, 1);
                    return Some(Exit::Error(e.reason_code(), e.to_string()));
                }
            }
        }
        // An idle client holds no read buffer between packets.
        if rbuf.is_empty() {
            *rbuf = BytesMut::new();
        }
        None
    }

    /// Charges one PUBLISH to the client's limits; over them, the client is
    /// paused or (per config) disconnected.
    fn charge_publish(&mut self, bytes: usize) -> Option<Exit> {
        let limiter = self.limiter.as_mut()?;
        let now = self.broker.clock_ms();
        let wait = limiter.charge(bytes as u64, now);
        if wait == 0 {
            return None;
        }
        let limits = &self.broker.config().limits;
        match limits.rate_limit_action {
            RateLimitAction::Slow => {
                if self.paused_until_ms == 0 {
                    Stats::add(&self.broker.inner.stats.clients_throttled, 1);
                    tracing::debug!(client_id = %self.info.client_id, wait_ms = wait, "over its publish limits: slowed down");
                }
                self.paused_until_ms = now + wait;
                None
            }
            RateLimitAction::Disconnect => Some(Exit::Error(
                ReasonCode::MESSAGE_RATE_TOO_HIGH,
                format!(
                    "publishing faster than allowed ({} messages/s, {} bytes/s)",
                    limits.max_publish_rate, limits.max_publish_bytes_rate
                ),
            )),
        }
    }

    fn v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    fn reason_props(&self, why: &str) -> Properties {
        let mut p = Properties::default();
        if self.v5() && self.problem_info && !why.is_empty() {
            p.reason_string = Some(why.to_owned());
        }
        p
    }

    fn push_ack(&mut self, packet: Packet, gates: Vec<AckGate>, releases_window: bool) {
        self.pending.push_back(PendingAck {
            packet,
            gates,
            then_enqueue: Vec::new(),
            releases_window,
        });
    }

    /// Writes every acknowledgement whose gates are open, in order.
    fn flush_acks(&mut self, wbuf: &mut BytesMut) {
        while let Some(front) = self.pending.front() {
            if !front.gates.iter().all(AckGate::is_open) {
                break;
            }
            let Some(ack) = self.pending.pop_front() else {
                break;
            };
            encode(&ack.packet, self.version, wbuf);
            if ack.releases_window {
                self.inbound_inflight = self.inbound_inflight.saturating_sub(1);
            }
            for d in ack.then_enqueue {
                self.broker.enqueue_replay(&self.session, d);
            }
        }
    }

    /// The gate the oldest pending acknowledgement waits for. If it opened
    /// since `flush_acks` looked, an open gate is returned: waiting on it
    /// resolves at once, so the loop flushes again instead of missing it.
    fn pending_gate(&self) -> Option<AckGate> {
        let front = self.pending.front()?;
        front
            .gates
            .iter()
            .find(|g| !g.is_open())
            .or_else(|| front.gates.first())
            .cloned()
    }

    /// Moves queued deliveries into the write buffer, within the window.
    fn pump(&mut self, wbuf: &mut BytesMut) {
        let session = self.session.clone();
        let mut st = session.lock();
        if st.queue.is_empty() {
            return;
        }
        let now = now_ms();
        let mut sent = 0u64;
        while wbuf.len() < WRITE_HIGH_WATER {
            let Some(front) = st.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= self.window {
                break;
            }
            let Some(d) = st.queue.pop_front() else {
                break;
            };
            if d.msg.is_expired(now) {
                self.done(&d);
                continue;
            }
            let packet_id = if d.qos == QoS::AtMostOnce {
                0
            } else {
                match st.allocate_packet_id() {
                    Some(id) => id,
                    None => {
                        st.queue.push_front(d);
                        break;
                    }
                }
            };
            if self.encode_delivery(&d, packet_id, false, now, wbuf) == 0 {
                Stats::add(&self.broker.inner.stats.messages_dropped, 1);
                self.done(&d);
                continue;
            }
            sent += 1;
            if d.qseq > 0 {
                self.broker.inner.store.append(&Record::Sent {
                    client_id: self.session.client_id.clone(),
                    qseq: d.qseq,
                    packet_id,
                });
            }
            if d.qos != QoS::AtMostOnce {
                let stage = if d.qos == QoS::AtLeastOnce {
                    Stage::WaitPubAck
                } else {
                    Stage::WaitPubRec
                };
                st.inflight.push_back(Inflight {
                    packet_id,
                    stage,
                    delivery: d,
                });
            }
        }
        Stats::add(&self.broker.inner.stats.messages_sent, sent);
    }

    /// A persistent delivery is finished (acknowledged, expired or dropped).
    fn done(&self, d: &Delivery) {
        if d.qseq > 0 {
            self.broker.inner.store.append(&Record::Ack {
                client_id: self.session.client_id.clone(),
                qseq: d.qseq,
            });
        }
    }

    /// Encodes one PUBLISH for this client. Returns 0 (and writes nothing) when
    /// it exceeds the client's maximum packet size.
    fn encode_delivery(
        &mut self,
        d: &Delivery,
        packet_id: u16,
        dup: bool,
        now: u64,
        wbuf: &mut BytesMut,
    ) -> usize {
        let msg = &d.msg;
        let start = wbuf.len();
        if !self.v5() {
            return encode_publish(
                self.version,
                dup,
                d.qos,
                d.retain,
                &msg.topic,
                packet_id,
                &EMPTY_PROPS,
                &msg.payload,
                wbuf,
            );
        }
        let out = self.aliases.as_ref().map(|a| &a.outbound);
        let assigned = out.map_or(0, |o| o.len());
        let (alias, known) = match out.and_then(|o| o.get(&msg.topic)) {
            Some(a) => (Some(*a), true),
            None if assigned < usize::from(self.client_alias_max) => {
                (Some(assigned as u16 + 1), false)
            }
            None => (None, false),
        };
        let expiry = msg.remaining_expiry_secs(now);
        let needs_props = msg.properties.is_some()
            || expiry.is_some()
            || !d.sub_ids.is_empty()
            || alias.is_some();
        let custom;
        let props = if needs_props {
            let mut p = msg.properties.as_deref().cloned().unwrap_or_default();
            p.message_expiry_interval = expiry;
            p.subscription_identifiers.clone_from(&d.sub_ids);
            p.topic_alias = alias;
            custom = p;
            &custom
        } else {
            &EMPTY_PROPS
        };
        let topic = if known { "" } else { &msg.topic };
        let written = encode_publish(
            self.version,
            dup,
            d.qos,
            d.retain,
            topic,
            packet_id,
            props,
            &msg.payload,
            wbuf,
        );
        if written > self.client_max_packet {
            wbuf.truncate(start);
            tracing::debug!(client_id = %self.info.client_id, topic = %msg.topic, size = written, max = self.client_max_packet,
                "message larger than the client's maximum packet size; not delivered to it");
            return 0;
        }
        if let (Some(a), false) = (alias, known) {
            self.aliases
                .get_or_insert_default()
                .outbound
                .insert(msg.topic.clone(), a);
        }
        written
    }

    /// After a reconnect: resend unacknowledged PUBLISH (with DUP) and PUBREL.
    fn resend_inflight(&mut self, wbuf: &mut BytesMut) {
        let session = self.session.clone();
        let inflight: Vec<Inflight> = session.lock().inflight.iter().cloned().collect();
        let now = now_ms();
        for e in inflight {
            match e.stage {
                Stage::WaitPubAck | Stage::WaitPubRec => {
                    self.encode_delivery(&e.delivery, e.packet_id, true, now, wbuf);
                }
                Stage::WaitPubComp => {
                    encode(
                        &Packet::PubRel(PubResponse {
                            packet_id: e.packet_id,
                            ..PubResponse::default()
                        }),
                        self.version,
                        wbuf,
                    );
                }
            }
        }
    }

    /// Ends an outgoing exchange waiting at `stage` (unknown ids are ignored).
    fn retire(&self, packet_id: u16, stage: Stage) {
        let mut st = self.session.lock();
        if let Some(pos) = st
            .inflight
            .iter()
            .position(|i| i.packet_id == packet_id && i.stage == stage)
            && let Some(e) = st.inflight.remove(pos)
        {
            drop(st);
            self.done(&e.delivery);
        }
    }

    fn handle(&mut self, packet: Packet, wbuf: &mut BytesMut) -> Option<Exit> {
        match packet {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(r) => {
                self.retire(r.packet_id, Stage::WaitPubAck);
            }
            Packet::PubRec(r) => {
                let session = self.session.clone();
                let mut st = session.lock();
                let pos = st
                    .inflight
                    .iter()
                    .position(|i| i.packet_id == r.packet_id && i.stage == Stage::WaitPubRec);
                match pos {
                    Some(_) if r.reason.is_error() => {
                        drop(st);
                        self.retire(r.packet_id, Stage::WaitPubRec);
                    }
                    Some(pos) => {
                        if let Some(e) = st.inflight.get_mut(pos) {
                            e.stage = Stage::WaitPubComp;
                            if e.delivery.qseq > 0 {
                                self.broker.inner.store.append(&Record::Released {
                                    client_id: self.session.client_id.clone(),
                                    qseq: e.delivery.qseq,
                                });
                            }
                        }
                        encode(
                            &Packet::PubRel(PubResponse {
                                packet_id: r.packet_id,
                                ..PubResponse::default()
                            }),
                            self.version,
                            wbuf,
                        );
                    }
                    None => {
                        let reason = if self.v5() {
                            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                        } else {
                            ReasonCode::SUCCESS
                        };
                        encode(
                            &Packet::PubRel(PubResponse {
                                packet_id: r.packet_id,
                                reason,
                                properties: Properties::default(),
                            }),
                            self.version,
                            wbuf,
                        );
                    }
                }
            }
            Packet::PubComp(r) => {
                self.retire(r.packet_id, Stage::WaitPubComp);
            }
            Packet::PubRel(r) => {
                let had = {
                    let mut st = self.session.lock();
                    let had = st.incoming_qos2.remove(&r.packet_id);
                    if had && st.persisted {
                        self.broker.inner.store.append(&Record::Qos2Completed {
                            client_id: self.session.client_id.clone(),
                            packet_id: r.packet_id,
                        });
                    }
                    had
                };
                let reason = if had || !self.v5() {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.push_ack(
                    Packet::PubComp(PubResponse {
                        packet_id: r.packet_id,
                        reason,
                        properties: Properties::default(),
                    }),
                    Vec::new(),
                    had,
                );
            }
            Packet::Subscribe(s) => return self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                let mut reasons = Vec::with_capacity(u.filters.len());
                let mut persisted = false;
                for f in &u.filters {
                    let existed = self.broker.unsubscribe(&self.session, f);
                    persisted |= existed && self.session.lock().persisted;
                    reasons.push(if existed {
                        ReasonCode::SUCCESS
                    } else {
                        ReasonCode::NO_SUBSCRIPTION_EXISTED
                    });
                }
                let gates = self.store_gate_if(persisted);
                self.push_ack(
                    Packet::UnsubAck(UnsubAck {
                        packet_id: u.packet_id,
                        reasons,
                        properties: Properties::default(),
                    }),
                    gates,
                    false,
                );
            }
            Packet::PingReq => self.push_ack(Packet::PingResp, Vec::new(), false),
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    let mut st = self.session.lock();
                    if st.expiry_secs == 0 && expiry > 0 {
                        return Some(Exit::Error(
                            ReasonCode::PROTOCOL_ERROR,
                            "DISCONNECT sets a session expiry although CONNECT set none".into(),
                        ));
                    }
                    st.expiry_secs = expiry;
                }
                return Some(Exit::Graceful {
                    publish_will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
                });
            }
            Packet::Auth(_) => {
                return Some(Exit::Error(
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH without an authentication method".into(),
                ));
            }
            other => {
                return Some(Exit::Error(
                    ReasonCode::PROTOCOL_ERROR,
                    format!("a client must not send {}", other.kind()),
                ));
            }
        }
        None
    }

    fn store_gate_if(&self, needed: bool) -> Vec<AckGate> {
        if needed {
            let store = &self.broker.inner.store;
            vec![store.gate(store.last_seq())]
        } else {
            Vec::new()
        }
    }

    fn ack_publish(
        &mut self,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        why: &str,
        gates: Vec<AckGate>,
    ) {
        let reason = if self.v5() {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        // A success can carry a reason string too (e.g. "held for approval").
        let properties = if reason.is_error() || !why.is_empty() {
            self.reason_props(why)
        } else {
            Properties::default()
        };
        let r = PubResponse {
            packet_id,
            reason,
            properties,
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.push_ack(Packet::PubAck(r), gates, true),
            QoS::ExactlyOnce => {
                // A refused QoS 2 message ends with PUBREC in 5.0; in 3.1.1 the
                // flow must complete, so the identifier waits for PUBREL.
                let completes = !reason.is_error();
                let mut gates = gates;
                if completes {
                    let mut st = self.session.lock();
                    st.incoming_qos2.insert(packet_id);
                    if st.persisted {
                        // Exactly once across a restart: a retransmitted PUBLISH
                        // must still be recognised as a duplicate.
                        let store = &self.broker.inner.store;
                        let seq = store.append(&Record::Qos2Received {
                            client_id: self.session.client_id.clone(),
                            packet_id,
                        });
                        gates.push(store.gate(seq));
                    }
                }
                self.push_ack(Packet::PubRec(r), gates, !completes);
            }
        }
    }

    fn on_publish(&mut self, p: gantry_codec::Publish) -> Option<Exit> {
        if let Some(exit) = self.charge_publish(p.payload.len()) {
            return Some(exit);
        }
        let gantry_codec::Publish {
            qos,
            retain,
            topic,
            packet_id,
            mut properties,
            payload,
            ..
        } = p;
        let topic: Arc<str> = match properties.topic_alias.take() {
            Some(alias) if self.v5() => {
                if alias == 0 || alias > self.broker.config().limits.topic_alias_maximum {
                    return Some(Exit::Error(
                        ReasonCode::TOPIC_ALIAS_INVALID,
                        format!(
                            "topic alias {alias} is outside 1..={}",
                            self.broker.config().limits.topic_alias_maximum
                        ),
                    ));
                }
                if topic.is_empty() {
                    match self.aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
                        Some(t) => t.clone(),
                        None => {
                            return Some(Exit::Error(
                                ReasonCode::PROTOCOL_ERROR,
                                format!("topic alias {alias} was never set"),
                            ));
                        }
                    }
                } else {
                    let t: Arc<str> = Arc::from(topic);
                    self.aliases
                        .get_or_insert_default()
                        .inbound
                        .insert(alias, t.clone());
                    t
                }
            }
            _ => Arc::from(topic),
        };
        if qos != QoS::AtMostOnce {
            if self.inbound_inflight >= usize::from(self.broker.config().limits.receive_maximum) {
                return Some(Exit::Error(
                    ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                    format!(
                        "more than {} unacknowledged QoS 1/2 publishes",
                        self.broker.config().limits.receive_maximum
                    ),
                ));
            }
            self.inbound_inflight += 1;
        }
        if qos == QoS::ExactlyOnce && self.session.lock().incoming_qos2.contains(&packet_id) {
            // A retransmission of a message we already own: acknowledge again only.
            self.push_ack(
                Packet::PubRec(PubResponse {
                    packet_id,
                    ..PubResponse::default()
                }),
                Vec::new(),
                false,
            );
            self.inbound_inflight -= 1;
            return None;
        }
        if properties.payload_format_indicator == Some(1) && std::str::from_utf8(&payload).is_err()
        {
            self.ack_publish(
                qos,
                packet_id,
                ReasonCode::PAYLOAD_FORMAT_INVALID,
                "payload format indicator says UTF-8 but the payload is not",
                Vec::new(),
            );
            return None;
        }
        if !self
            .broker
            .inner
            .hooks
            .authorizer
            .can_publish(&self.info, &topic)
        {
            tracing::warn!(client_id = %self.info.client_id, topic = %topic, "publish not authorized; dropped");
            Stats::add(&self.broker.inner.stats.publishes_rejected, 1);
            self.ack_publish(
                qos,
                packet_id,
                ReasonCode::NOT_AUTHORIZED,
                "not authorized to publish to this topic",
                Vec::new(),
            );
            return None;
        }
        let now = now_ms();
        let expires_at_ms = properties
            .message_expiry_interval
            .map(|s| now + u64::from(s) * 1000);
        properties.message_expiry_interval = None;
        properties.subscription_identifiers.clear();
        let forwarded = (!properties.is_empty()).then(|| Box::new(properties));
        let mut msg = Message {
            topic,
            payload: Bytes::copy_from_slice(&payload),
            qos,
            retain,
            properties: forwarded,
            expires_at_ms,
            received_at_ms: now,
            publisher: Some(self.info.client_id.clone()),
        };
        let gates = match self.broker.inspect(&self.info, &mut msg) {
            Ok(gates) => gates,
            Err(rejected) => {
                let (reason, reason_string) = match rejected {
                    Verdict::Reject {
                        reason,
                        reason_string,
                        ..
                    } => (reason, reason_string),
                    _ => (ReasonCode::UNSPECIFIED_ERROR, String::new()),
                };
                tracing::debug!(client_id = %self.info.client_id, topic = %msg.topic, %reason, "publish rejected: {reason_string}");
                self.ack_publish(qos, packet_id, reason, &reason_string, Vec::new());
                return None;
            }
        };
        Stats::add(&self.broker.inner.stats.messages_received, 1);
        let mut routed = self.broker.route(Arc::new(msg));
        routed.gates.extend(gates);
        let reason = if routed.matched == 0 && self.v5() {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        };
        self.ack_publish(qos, packet_id, reason, "", routed.gates);
        None
    }

    fn on_subscribe(&mut self, s: gantry_codec::Subscribe) -> Option<Exit> {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut why = String::new();
        for (raw, options) in &s.filters {
            let spec = match parse_filter(raw) {
                Ok(spec) => spec,
                Err(e) => {
                    why = e;
                    reasons.push(if self.v5() {
                        ReasonCode::TOPIC_FILTER_INVALID
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            };
            if spec.share_group.is_some() && options.no_local {
                return Some(Exit::Error(
                    ReasonCode::PROTOCOL_ERROR,
                    format!("no-local on the shared subscription {raw:?}"),
                ));
            }
            if !self
                .broker
                .inner
                .hooks
                .authorizer
                .can_subscribe(&self.info, raw)
            {
                tracing::warn!(client_id = %self.info.client_id, filter = %raw, "subscribe not authorized");
                why = format!("not authorized to subscribe to {raw:?}");
                reasons.push(if self.v5() {
                    ReasonCode::NOT_AUTHORIZED
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let existed = self.broker.subscribe(&self.session, raw, *options, sub_id);
            retained.extend(self.broker.retained_for(raw, *options, existed, sub_id));
            reasons.push(ReasonCode(options.qos as u8));
        }
        let persisted = self.session.lock().persisted;
        let gates = self.store_gate_if(persisted);
        let properties = if why.is_empty() {
            Properties::default()
        } else {
            self.reason_props(&why)
        };
        self.pending.push_back(PendingAck {
            packet: Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reasons,
                properties,
            }),
            gates,
            then_enqueue: retained,
            releases_window: false,
        });
        None
    }

    /// Sends the final DISCONNECT, returns the session and schedules the will.
    async fn finish<T: Transport>(mut self, exit: Exit, stream: &T, mut wbuf: BytesMut) {
        let client_id = self.info.client_id.clone();
        let (reason, why) = match &exit {
            Exit::Error(code, why) => (Some(*code), why.clone()),
            Exit::TakenOver => (
                Some(ReasonCode::SESSION_TAKEN_OVER),
                "another connection took over the session".into(),
            ),
            Exit::Shutdown => (
                Some(ReasonCode::SERVER_SHUTTING_DOWN),
                "broker shutting down".into(),
            ),
            Exit::KeepAliveTimeout => (
                Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
                "nothing received within 1.5 x keep-alive".into(),
            ),
            _ => (None, String::new()),
        };
        match &exit {
            Exit::Error(code, why) => {
                tracing::warn!(client_id = %client_id, reason = %code, "closing connection: {why}")
            }
            other => tracing::debug!(client_id = %client_id, ?other, "connection closed"),
        }
        if let Some(code) = reason {
            // Flush acknowledgements that are ready before saying goodbye.
            self.flush_acks(&mut wbuf);
            if self.v5() {
                let properties = self.reason_props(&why);
                encode(
                    &Packet::Disconnect(Disconnect {
                        reason: code,
                        properties,
                    }),
                    self.version,
                    &mut wbuf,
                );
            }
        }
        if !wbuf.is_empty() {
            let _ = timeout(Duration::from_secs(1), write_all(stream, &wbuf)).await;
        }
        if matches!(exit, Exit::Error(..)) {
            // Closing a socket with unread input resets it, and a reset can
            // destroy the DISCONNECT (and its reason) before the client reads
            // it: discard what the client still sends, briefly, first.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            let mut sink = BytesMut::new();
            let mut discarded = 0usize;
            while discarded < 4 * 1024 * 1024 {
                sink.clear();
                match tokio::time::timeout_at(deadline, read_some(stream, &mut sink, 16 * 1024))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => discarded += n,
                    _ => break,
                }
            }
        }

        let publish_will = match exit {
            Exit::Graceful { publish_will } => publish_will,
            _ => true,
        };
        let broker = self.broker.clone();
        let session = self.session.clone();
        let (owned, expiry, generation) = {
            let mut st = session.lock();
            let owned = st.take_owner_if(&self.signal);
            if owned {
                st.disconnected_at_ms = now_ms();
                st.queue.retain(|d| d.qos != QoS::AtMostOnce);
            }
            (owned, st.expiry_secs, st.generation)
        };
        if owned {
            if expiry == 0 {
                let removed = {
                    let mut sessions = broker.sessions();
                    let current = sessions
                        .get(&client_id)
                        .is_some_and(|s| Arc::ptr_eq(s, &session));
                    if current {
                        sessions.remove(&client_id);
                    }
                    current
                };
                if removed {
                    broker.discard_session(&session);
                }
            } else {
                if session.lock().persisted {
                    broker.inner.store.append(&Record::SessionClosed {
                        client_id: client_id.clone(),
                        at_ms: now_ms(),
                    });
                }
                if expiry != u32::MAX {
                    broker.schedule_expiry(
                        session.clone(),
                        generation,
                        Duration::from_secs(u64::from(expiry)),
                    );
                }
            }
        }
        if let Some(will) = self.will.take().filter(|_| publish_will) {
            let delay = will
                .properties
                .will_delay_interval
                .unwrap_or(0)
                .min(if owned { expiry } else { u32::MAX });
            schedule_will(
                broker,
                session,
                self.generation,
                self.info.clone(),
                *will,
                delay,
            );
        }
    }
}

impl Broker {
    /// Queues a retained message replayed for a new subscription. Replays may
    /// exceed the queue limit: a subscriber to a whole plant must see all of it.
    pub(crate) fn enqueue_replay(&self, session: &Session, delivery: Delivery) {
        let mut st = session.lock();
        if st.is_persistent() && delivery.qos != QoS::AtMostOnce {
            drop(st);
            self.enqueue(session, delivery);
            return;
        }
        st.queue.push_back(delivery);
        if let Some(owner) = &st.owner {
            owner.notify();
        }
    }
}

fn will_message(client: &ClientInfo, will: LastWill) -> Message {
    let now = now_ms();
    let mut props = will.properties;
    let expires_at_ms = props
        .message_expiry_interval
        .take()
        .map(|s| now + u64::from(s) * 1000);
    props.will_delay_interval = None;
    Message {
        topic: Arc::from(will.topic),
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        properties: (!props.is_empty()).then(|| Box::new(props)),
        expires_at_ms,
        received_at_ms: now,
        publisher: Some(client.client_id.clone()),
    }
}

/// Publishes the will after `delay_secs`, unless the session was resumed by a
/// new connection in the meantime.
fn schedule_will(
    broker: Broker,
    session: Arc<Session>,
    generation: u64,
    client: ClientInfo,
    will: LastWill,
    delay_secs: u32,
) {
    let publish = move |broker: &Broker| {
        let mut msg = will_message(&client, will);
        if broker.inspect(&client, &mut msg).is_ok() {
            Stats::add(&broker.inner.stats.messages_received, 1);
            broker.route(Arc::new(msg));
        }
    };
    if delay_secs == 0 {
        publish(&broker);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(delay_secs))).await;
        let resumed = {
            let st = session.lock();
            st.generation != generation || st.owner.is_some()
        };
        if !resumed {
            publish(&broker);
        }
    });
}

#[cfg(test)]
mod tests {
    /// An idle connection's memory is dominated by its task, whose size is the
    /// `serve` future's. Guard it so that the 2 kB-per-idle-connection budget
    /// (see BENCHMARKS.md) does not erode unnoticed.
    #[test]
    fn idle_connection_task_stays_small() {
        fn future_size<F: std::future::Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let broker = crate::Broker::open(
                crate::BrokerConfig::new(dir.path()),
                crate::hooks::Hooks::default(),
            )
            .expect("broker");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let serve = super::serve(broker.clone(), stream, super::Peer::new(None, "tcp"));
            let size = future_size(&serve);
            // Debug builds lay futures out less tightly than release builds.
            let budget = if cfg!(debug_assertions) { 1400 } else { 1024 };
            assert!(
                size <= budget,
                "connection task grew to {size} bytes (budget {budget})"
            );
            assert!(std::mem::size_of::<super::Conn>() <= 256);
            drop(serve);
            broker.shutdown().await;
        });
    }
}
