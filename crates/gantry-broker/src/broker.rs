//! The broker: owns the session table, the subscription router, the retained
//! store and the durable store, and routes every accepted message. Connection
//! tasks (see `connection`) and in-process sources both publish through
//! [`Broker::route`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gantry_codec::topic::parse_filter;
use gantry_codec::{QoS, RetainHandling, SubscriptionOptions};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::hooks::{ClientInfo, Hooks, Verdict};
use crate::message::{Message, now_ms};
use crate::retained::{RetainedChild, RetainedStore};
use crate::router::Router;
use crate::session::{
    Delivery, Inflight, Session, SessionId, SessionState, Stage, SubscriptionRecord, wake,
};
use crate::stats::{Stats, StatsSnapshot};
use crate::store::{AckGate, Record, State, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    // The I/O error is part of the message rather than a `source`, so that
    // printing the error chain does not repeat it.
    #[error("cannot listen for {what} on {addr}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Why an in-process publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("publish to {topic:?} rejected: {reason}")]
    Rejected { topic: String, reason: String },
}

/// A snapshot of one client's session, for operators.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Raw filter, options and subscription identifier of each subscription.
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    pub queued: usize,
    pub inflight: usize,
    pub connected: bool,
}

/// A client known to the broker: connected, or a persistent session waiting
/// for its client. Connection details are `None` while disconnected.
#[derive(Debug, Clone)]
pub struct ClientSummary {
    pub client_id: String,
    pub connected: bool,
    /// The identity the authenticator established (None: anonymous or not connected).
    pub identity: Option<String>,
    pub peer: Option<SocketAddr>,
    /// "tcp", "tls", "websocket" or "wss", as in [`ClientInfo::transport`].
    pub transport: Option<&'static str>,
    /// 4 (3.1.1) or 5.
    pub protocol_version: Option<u8>,
    /// Unix milliseconds at which the current connection was accepted.
    pub connected_since_ms: Option<u64>,
    /// Raw filters, sorted.
    pub subscriptions: Vec<String>,
    pub queued: usize,
    pub inflight: usize,
}

/// The result of routing one message.
#[derive(Debug)]
pub struct Routed {
    /// Sessions the message was queued for.
    pub matched: usize,
    /// What the publisher's acknowledgement must wait for.
    pub gates: Vec<AckGate>,
}

pub(crate) struct Inner {
    pub config: BrokerConfig,
    pub hooks: Hooks,
    pub stats: Stats,
    pub store: Store,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    router: RwLock<Router>,
    retained: RwLock<RetainedStore>,
    next_session_id: AtomicU64,
    pub connections: AtomicUsize,
    pub connect_limiter: crate::rate::ConnectLimiter,
    pub shutdown: watch::Sender<bool>,
    started: Instant,
}

/// Handle to a running broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    pub(crate) inner: Arc<Inner>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Retained topics one stretch of [`Broker::retained_search`] looks at
/// under the store's read lock.
pub const SEARCH_STRETCH: usize = 4_096;

impl Broker {
    /// Opens the data directory, recovers retained messages and persistent
    /// sessions, and returns a broker with no listeners yet. Must run inside a
    /// Tokio runtime (session expiry timers are spawned).
    pub fn open(config: BrokerConfig, hooks: Hooks) -> Result<Broker, BrokerError> {
        let started = Instant::now();
        let (store, state) = Store::open(
            &config.data_dir.join("broker"),
            config.durability.sync,
            config.durability.compact_after_bytes,
        )?;
        let (shutdown, _) = watch::channel(false);
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                hooks,
                stats: Stats::default(),
                store,
                sessions: Mutex::new(HashMap::new()),
                router: RwLock::new(Router::default()),
                retained: RwLock::new(RetainedStore::default()),
                next_session_id: AtomicU64::new(1),
                connections: AtomicUsize::new(0),
                connect_limiter: crate::rate::ConnectLimiter::default(),
                shutdown,
                started,
            }),
        };
        broker.restore(state);
        broker.spawn_keep_alive_sweeper();
        Ok(broker)
    }

    fn restore(&self, state: State) {
        let now = now_ms();
        let mut retained = write(&self.inner.retained);
        let mut restored_retained = 0;
        for (_, msg) in state.retained {
            if !msg.is_expired(now) {
                retained.apply(msg);
                restored_retained += 1;
            }
        }
        drop(retained);
        let mut restored_sessions = 0;
        for (client_id, stored) in state.sessions {
            let expired = stored.expiry_secs != u32::MAX
                && stored.disconnected_at_ms != 0
                && stored.disconnected_at_ms + u64::from(stored.expiry_secs) * 1000 <= now;
            if expired {
                self.inner
                    .store
                    .append(&Record::SessionDelete { client_id });
                continue;
            }
            let session = self.new_session(client_id.clone());
            {
                let mut st = session.lock();
                st.expiry_secs = stored.expiry_secs;
                st.persisted = true;
                st.disconnected_at_ms = if stored.disconnected_at_ms == 0 {
                    now
                } else {
                    stored.disconnected_at_ms
                };
                st.next_qseq = stored.queue.keys().last().copied().unwrap_or(0);
                st.incoming_qos2 = stored.incoming_qos2.into_iter().collect();
                for (qseq, d) in stored.queue {
                    let delivery = Delivery {
                        msg: d.msg,
                        qos: d.qos,
                        retain: d.retain,
                        sub_ids: Vec::new(),
                        qseq,
                    };
                    // In flight before the restart: redelivered with DUP under
                    // the same packet identifier on reconnect.
                    match d.packet_id {
                        Some(packet_id) => {
                            let stage = match (d.qos, d.released) {
                                (QoS::ExactlyOnce, true) => Stage::WaitPubComp,
                                (QoS::ExactlyOnce, false) => Stage::WaitPubRec,
                                _ => Stage::WaitPubAck,
                            };
                            st.inflight.push_back(Inflight {
                                packet_id,
                                stage,
                                delivery,
                            });
                        }
                        None if delivery.msg.is_expired(now) => {}
                        None => st.queue.push_back(delivery),
                    }
                }
            }
            let mut router = write(&self.inner.router);
            for (raw, (options, sub_id)) in stored.subscriptions {
                if let Ok(spec) = parse_filter(&raw) {
                    router.subscribe(&session, spec.share_group, spec.filter, options, sub_id);
                    session
                        .lock()
                        .subscriptions
                        .insert(raw.clone(), SubscriptionRecord { options, sub_id });
                }
            }
            drop(router);
            let remaining_ms = stored
                .disconnected_at_ms
                .max(1)
                .saturating_add(u64::from(stored.expiry_secs) * 1000)
                .saturating_sub(now);
            self.sessions().insert(client_id, session.clone());
            if stored.expiry_secs != u32::MAX {
                self.schedule_expiry(session, 0, Duration::from_millis(remaining_ms.max(1)));
            }
            restored_sessions += 1;
        }
        tracing::info!(
            retained = restored_retained,
            sessions = restored_sessions,
            elapsed_ms = self.inner.started.elapsed().as_millis() as u64,
            "restored broker state from the data directory"
        );
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn new_session(&self, client_id: Arc<str>) -> Arc<Session> {
        let id: SessionId = self.inner.next_session_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Session::new(id, client_id))
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Subscribes a session to a raw filter (`$share/...` allowed). Returns
    /// whether the subscription already existed.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        raw: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> bool {
        let Ok(spec) = parse_filter(raw) else {
            return false;
        };
        let existed = write(&self.inner.router).subscribe(
            session,
            spec.share_group,
            spec.filter,
            options,
            sub_id,
        );
        let mut st = session.lock();
        st.subscriptions
            .insert(raw.to_owned(), SubscriptionRecord { options, sub_id });
        if st.is_persistent() {
            self.inner.store.append(&Record::Subscribe {
                client_id: session.client_id.clone(),
                filter: raw.to_owned(),
                options,
                sub_id,
            });
        }
        existed
    }

    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, raw: &str) -> bool {
        let Ok(spec) = parse_filter(raw) else {
            return false;
        };
        let existed =
            write(&self.inner.router).unsubscribe(session.id, spec.share_group, spec.filter);
        let mut st = session.lock();
        st.subscriptions.remove(raw);
        if existed && st.is_persistent() {
            self.inner.store.append(&Record::Unsubscribe {
                client_id: session.client_id.clone(),
                filter: raw.to_owned(),
            });
        }
        existed
    }

    /// Retained messages for a new subscription, as deliveries.
    pub(crate) fn retained_for(
        &self,
        filter: &str,
        options: SubscriptionOptions,
        existed: bool,
        sub_id: Option<u32>,
    ) -> Vec<Delivery> {
        let send = match options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !existed,
            RetainHandling::DoNotSend => false,
        };
        let Ok(spec) = parse_filter(filter) else {
            return Vec::new();
        };
        // Shared subscriptions never receive retained messages on subscribe.
        if !send || spec.share_group.is_some() {
            return Vec::new();
        }
        read(&self.inner.retained)
            .matching(spec.filter, now_ms())
            .into_iter()
            .map(|msg| Delivery {
                qos: msg.qos.min(options.qos),
                msg,
                retain: true,
                sub_ids: sub_id.into_iter().collect(),
                qseq: 0,
            })
            .collect()
    }

    /// Removes a session entirely: its subscriptions, its queue and its record
    /// on disk. The caller has already taken it out of the session table.
    pub(crate) fn discard_session(&self, session: &Arc<Session>) {
        let (filters, persistent) = {
            let mut st = session.lock();
            let filters: Vec<String> = st.subscriptions.drain().map(|(f, _)| f).collect();
            st.queue.clear();
            st.inflight.clear();
            st.incoming_qos2.clear();
            (filters, std::mem::take(&mut st.persisted))
        };
        let mut router = write(&self.inner.router);
        for raw in &filters {
            if let Ok(spec) = parse_filter(raw) {
                router.unsubscribe(session.id, spec.share_group, spec.filter);
            }
        }
        drop(router);
        if persistent {
            self.inner.store.append(&Record::SessionDelete {
                client_id: session.client_id.clone(),
            });
        }
    }

    /// Expires a disconnected session after `delay` unless it reconnects first.
    pub(crate) fn schedule_expiry(&self, session: Arc<Session>, generation: u64, delay: Duration) {
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut sessions = broker.sessions();
            let still_idle = {
                let st = session.lock();
                st.owner.is_none() && st.generation == generation
            };
            let is_current = sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, &session));
            if still_idle && is_current {
                sessions.remove(&session.client_id);
                drop(sessions);
                broker.discard_session(&session);
                tracing::debug!(client_id = %session.client_id, "session expired");
            }
        });
    }

    /// Runs the inspectors on a message. Rejected messages go to their dead
    /// letter topic, if the inspector named one. `Ok` carries the gates the
    /// publisher's acknowledgement must wait for; `Err` the rejection.
    pub(crate) fn inspect(
        &self,
        client: &ClientInfo,
        msg: &mut Message,
    ) -> Result<Vec<AckGate>, Verdict> {
        let mut gates = Vec::new();
        for inspector in &self.inner.hooks.inspectors {
            let verdict = inspector.inspect(client, msg);
            if let Verdict::AcceptAfter(gate) = verdict {
                gates.push(gate);
                continue;
            }
            if let v @ Verdict::Reject { .. } = verdict {
                Stats::add(&self.inner.stats.publishes_rejected, 1);
                if let Verdict::Reject {
                    dead_letter: Some(dl),
                    ..
                } = &v
                {
                    let mut dead =
                        Message::new(&dl.topic, &dl.payload, QoS::AtLeastOnce, dl.retain);
                    dead.publisher = Some(client.client_id.clone());
                    self.route(Arc::new(dead));
                }
                return Err(v);
            }
        }
        Ok(gates)
    }

    /// Routes an accepted message: updates the retained state, queues it for
    /// every matching session and tells the observers.
    pub fn route(&self, msg: Arc<Message>) -> Routed {
        let mut gates = Vec::new();
        let mut seq = 0;
        if msg.retain {
            let changed = write(&self.inner.retained).apply(msg.clone());
            // `$` topics ($SYS) are regenerated at start and are not persisted.
            if changed && !msg.topic.starts_with('$') {
                seq = if msg.payload.is_empty() {
                    self.inner
                        .store
                        .append(&Record::RetainClear(msg.topic.clone()))
                } else {
                    self.inner.store.append(&Record::RetainSet(msg.clone()))
                };
            }
        }
        let targets = read(&self.inner.router).targets(&msg.topic, msg.publisher.as_deref());
        let matched = targets.len();
        for t in targets {
            let qos = msg.qos.min(t.qos);
            let delivery = Delivery {
                msg: msg.clone(),
                qos,
                retain: msg.retain && t.retain_as_published,
                sub_ids: t.sub_ids,
                qseq: 0,
            };
            seq = seq.max(self.enqueue(&t.session, delivery));
        }
        if seq > 0 {
            gates.push(self.inner.store.gate(seq));
        }
        for observer in &self.inner.hooks.observers {
            gates.extend(observer.observe(&msg));
        }
        Routed { matched, gates }
    }

    /// Queues a delivery for a session, logging it first if the session is
    /// persistent. Returns the store sequence number to wait for, or 0.
    pub(crate) fn enqueue(&self, session: &Session, mut delivery: Delivery) -> u64 {
        let mut st = session.lock();
        let online = st.owner.is_some();
        if !online && delivery.qos == QoS::AtMostOnce {
            // QoS 0 is not queued for offline sessions.
            return 0;
        }
        if st.queue.len() >= self.inner.config.limits.max_queued_messages {
            st.dropped += 1;
            Stats::add(&self.inner.stats.messages_dropped, 1);
            if st.dropped == 1 || st.dropped.is_multiple_of(1000) {
                tracing::warn!(
                    client_id = %session.client_id,
                    dropped = st.dropped,
                    limit = self.inner.config.limits.max_queued_messages,
                    "session queue full: dropping new messages for this slow or offline client"
                );
            }
            return 0;
        }
        let mut seq = 0;
        if st.is_persistent() && delivery.qos != QoS::AtMostOnce {
            st.next_qseq += 1;
            delivery.qseq = st.next_qseq;
            seq = self.inner.store.append(&Record::Enqueue {
                client_id: session.client_id.clone(),
                qseq: delivery.qseq,
                qos: delivery.qos,
                retain: delivery.retain,
                msg: delivery.msg.clone(),
            });
        }
        st.queue.push_back(delivery);
        if let Some(owner) = &st.owner {
            owner.notify();
        }
        seq
    }

    /// Publishes a message from inside the process (a source such as the
    /// simulator or a connector). It passes the same inspectors as a client's
    /// publish and is routed the same way.
    pub fn publish(
        &self,
        source: &str,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Result<Routed, PublishError> {
        gantry_codec::topic::validate_topic_name(topic).map_err(|reason| {
            PublishError::InvalidTopic {
                topic: topic.to_owned(),
                reason,
            }
        })?;
        let client = ClientInfo {
            client_id: Arc::from(source),
            username: None,
            identity: None,
            peer: None,
            transport: "internal",
        };
        let mut msg = Message {
            topic: Arc::from(topic),
            payload,
            qos,
            retain,
            properties: None,
            expires_at_ms: None,
            received_at_ms: now_ms(),
            publisher: Some(client.client_id.clone()),
        };
        let gates = match self.inspect(&client, &mut msg) {
            Ok(gates) => gates,
            Err(Verdict::Reject { reason_string, .. }) => {
                return Err(PublishError::Rejected {
                    topic: topic.to_owned(),
                    reason: reason_string,
                });
            }
            Err(_) => Vec::new(),
        };
        Stats::add(&self.inner.stats.messages_received, 1);
        let mut routed = self.route(Arc::new(msg));
        routed.gates.extend(gates);
        Ok(routed)
    }

    /// A client's session: its subscriptions (raw filter, options, subscription
    /// identifier) and the number of messages queued for it.
    pub fn session_info(&self, client_id: &str) -> Option<SessionInfo> {
        let session = self.sessions().get(client_id).cloned()?;
        let st = session.lock();
        let mut subs: Vec<_> = st
            .subscriptions
            .iter()
            .map(|(f, r)| (f.clone(), r.options, r.sub_id))
            .collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        Some(SessionInfo {
            subscriptions: subs,
            queued: st.queue.len(),
            inflight: st.inflight.len(),
            connected: st.owner.is_some(),
        })
    }

    /// Every session's client, connected or not, sorted by client id.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        let mut clients: Vec<ClientSummary> = sessions
            .iter()
            .map(|session| {
                let st = session.lock();
                let owner = st.owner.as_deref();
                let mut subscriptions: Vec<String> = st.subscriptions.keys().cloned().collect();
                subscriptions.sort_unstable();
                ClientSummary {
                    client_id: session.client_id.to_string(),
                    connected: owner.is_some(),
                    identity: owner.and_then(|o| o.client.identity.as_deref().map(str::to_owned)),
                    peer: owner.and_then(|o| o.client.peer),
                    transport: owner.map(|o| o.client.transport),
                    protocol_version: owner.map(|o| o.protocol_level),
                    connected_since_ms: owner.map(|o| o.connected_at_ms),
                    subscriptions,
                    queued: st.queue.len(),
                    inflight: st.inflight.len(),
                }
            })
            .collect();
        clients.sort_unstable_by(|a, b| a.client_id.cmp(&b.client_id));
        clients
    }

    /// The retained message on `topic`, if any.
    pub fn retained(&self, topic: &str) -> Option<Arc<Message>> {
        read(&self.inner.retained).get(topic).cloned()
    }

    /// Replaces the retained state of `current.topic` with `next` (`None`
    /// clears it) if `current` is still that state: a publish that arrived in
    /// between wins. Nothing is delivered to subscribers; the change is
    /// logged like any other retained change. Used when a reloaded plant
    /// model re-judges the live state. Returns true when it was replaced.
    pub fn replace_retained(&self, current: &Arc<Message>, next: Option<Arc<Message>>) -> bool {
        let mut retained = write(&self.inner.retained);
        let still_current = retained
            .get(&current.topic)
            .is_some_and(|m| Arc::ptr_eq(m, current));
        if !still_current {
            return false;
        }
        let record = match next {
            Some(msg) if !msg.payload.is_empty() && msg.topic == current.topic => {
                retained.apply(msg.clone());
                Record::RetainSet(msg)
            }
            _ => {
                retained.remove(&current.topic);
                Record::RetainClear(current.topic.clone())
            }
        };
        if !current.topic.starts_with('$') {
            self.inner.store.append(&record);
        }
        true
    }

    /// Retained messages matching `filter`.
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<Message>> {
        read(&self.inner.retained).matching(filter, now_ms())
    }

    /// One level of the retained namespace below `prefix` ("" = the top
    /// level, without `$` topics): see [`RetainedChild`].
    pub fn retained_children(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<RetainedChild> {
        read(&self.inner.retained).children(prefix, after, limit, now_ms())
    }

    /// Up to `limit` retained messages (in topic order) whose topic satisfies
    /// `pred`, and whether more matched. Walks the store in stretches of
    /// [`SEARCH_STRETCH`] topics, taking the read lock once per stretch, so a
    /// search of a large namespace never holds back retained publishes for
    /// long.
    pub fn retained_search(
        &self,
        limit: usize,
        mut pred: impl FnMut(&str) -> bool,
    ) -> (Vec<Arc<Message>>, bool) {
        let mut found = Vec::new();
        let mut resume: Option<String> = None;
        loop {
            let (more, next) = read(&self.inner.retained).search_chunk(
                resume.as_deref(),
                SEARCH_STRETCH,
                limit,
                now_ms(),
                &mut found,
                &mut pred,
            );
            match next {
                Some(n) if !more => resume = Some(n),
                _ => return (found, more),
            }
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        StatsSnapshot {
            uptime_secs: self.inner.started.elapsed().as_secs(),
            clients_connected: Stats::get(&s.clients_connected),
            sessions: self.sessions().len() as u64,
            connections_total: Stats::get(&s.connections_total),
            messages_received: Stats::get(&s.messages_received),
            messages_sent: Stats::get(&s.messages_sent),
            messages_dropped: Stats::get(&s.messages_dropped),
            publishes_rejected: Stats::get(&s.publishes_rejected),
            clients_throttled: Stats::get(&s.clients_throttled),
            connections_rate_limited: Stats::get(&s.connections_rate_limited),
            bytes_received: Stats::get(&s.bytes_received),
            bytes_sent: Stats::get(&s.bytes_sent),
            retained: read(&self.inner.retained).len() as u64,
            subscriptions: read(&self.inner.router).len() as u64,
            protocol_errors: Stats::get(&s.protocol_errors),
        }
    }

    /// A receiver that turns true when the broker shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Asks every connection to close (5.0 clients get "server shutting down")
    /// and flushes the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for session in self.sessions().values() {
            if let Some(owner) = &session.lock().owner {
                owner.raise(wake::SHUTDOWN);
            }
        }
        // Give connection tasks a moment to send DISCONNECT and record state.
        for _ in 0..50 {
            if self.inner.connections.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut gate = self.inner.store.gate(self.inner.store.last_seq());
        let _ = tokio::time::timeout(Duration::from_secs(5), gate.wait()).await;
        self.inner.store.shutdown();
    }

    /// Milliseconds since the broker started: the clock of keep-alive checks.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// Closes connections that sent nothing within 1.5 x their keep-alive. One
    /// sweep for all connections keeps a timer out of every idle connection.
    fn spawn_keep_alive_sweeper(&self) {
        let broker = self.clone();
        tokio::spawn(async move {
            let mut shutdown = broker.shutdown_signal();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let now = broker.clock_ms();
                let owners: Vec<Arc<crate::session::ConnSignal>> = broker
                    .sessions()
                    .values()
                    .filter_map(|s| s.lock().owner.clone())
                    .collect();
                for o in owners {
                    if o.keep_alive_ms > 0
                        && now.saturating_sub(o.last_seen_ms.load(Ordering::Relaxed))
                            > o.keep_alive_ms
                    {
                        o.raise(wake::KEEP_ALIVE);
                    }
                }
            }
        });
    }

    pub(crate) fn purge_expired_retained(&self) {
        let n = write(&self.inner.retained).purge_expired(now_ms());
        if n > 0 {
            tracing::debug!(purged = n, "expired retained messages removed");
        }
    }
}

impl SessionState {
    pub(crate) fn take_owner_if(&mut self, signal: &Arc<crate::session::ConnSignal>) -> bool {
        match &self.owner {
            Some(o) if Arc::ptr_eq(o, signal) => {
                self.owner = None;
                true
            }
            _ => false,
        }
    }
}
