//! Extension points: authentication of each connection, authorization of each
//! publish and subscribe, and an inspector that can accept, transform or reject
//! each publish before it is routed. Later layers (security, data contracts,
//! historian) plug in here; the defaults allow everything.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use gantry_codec::ReasonCode;

use crate::message::Message;
use crate::store::AckGate;

/// Who is on the other end of a connection, as established at CONNECT.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    pub username: Option<Arc<str>>,
    /// The identity the authenticator established (by password or client
    /// certificate); `None` for anonymous clients and in-process sources.
    pub identity: Option<Arc<str>>,
    pub peer: Option<SocketAddr>,
    /// "tcp", "tls", "websocket", "wss" or "internal" for in-process sources.
    pub transport: &'static str,
}

/// The verified certificate a client presented during a mutual-TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The subject's common name, if the certificate has one.
    pub common_name: Option<String>,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

/// Where a connection comes from: address, transport and, over mutual TLS,
/// the client's verified certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    pub transport: &'static str,
    pub client_cert: Option<Arc<ClientCert>>,
}

impl Peer {
    pub fn new(addr: Option<SocketAddr>, transport: &'static str) -> Self {
        Self {
            addr,
            transport,
            client_cert: None,
        }
    }
}

/// What a connecting client presents.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub peer: Option<SocketAddr>,
    pub transport: &'static str,
    pub client_cert: Option<Arc<ClientCert>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthDecision {
    /// Admit the client without an identity (anonymous access).
    Allow,
    /// Admit the client as this identity; the authorizer sees it in
    /// [`ClientInfo::identity`].
    Authenticated(Arc<str>),
    /// Refuse with this reason code (CONNACK) and a log message.
    Deny(ReasonCode, String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision>;
}

pub trait Authorizer: Send + Sync + 'static {
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool;
    fn can_subscribe(&self, client: &ClientInfo, filter: &str) -> bool;
}

/// A message redirected to a dead-letter topic instead of (or besides) its own.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub payload: Bytes,
    /// Publish the dead letter retained, so the last violation per topic stays
    /// visible to a subscriber that arrives later.
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub enum Verdict {
    /// Route the (possibly modified) message.
    Accept,
    /// Route it, but hold the publisher's acknowledgement until the gate
    /// opens (e.g. until the audit record of a write command is durable).
    AcceptAfter(AckGate),
    /// Do not route it; answer with `reason` (5.0) and publish `dead_letter`.
    Reject {
        reason: ReasonCode,
        reason_string: String,
        dead_letter: Option<DeadLetter>,
    },
}

/// Inspects every publish before routing. May rewrite the message in place
/// (canonical payload form, timestamps) or reject it.
pub trait PublishInspector: Send + Sync + 'static {
    fn inspect(&self, client: &ClientInfo, msg: &mut Message) -> Verdict;
}

/// Sees every routed message after the broker accepted it. May return a gate
/// that the publisher's acknowledgement must wait for (for example until the
/// historian has made the value durable).
pub trait PublishObserver: Send + Sync + 'static {
    fn observe(&self, msg: &Arc<Message>) -> Option<AckGate>;
}

/// Allows every connection, publish and subscribe.
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate<'a>(&'a self, _request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision> {
        Box::pin(async { AuthDecision::Allow })
    }
}

impl Authorizer for AllowAll {
    fn can_publish(&self, _client: &ClientInfo, _topic: &str) -> bool {
        true
    }
    fn can_subscribe(&self, _client: &ClientInfo, _filter: &str) -> bool {
        true
    }
}

/// The set of hooks a broker runs with.
#[derive(Clone)]
pub struct Hooks {
    pub authenticator: Arc<dyn Authenticator>,
    pub authorizer: Arc<dyn Authorizer>,
    pub inspectors: Vec<Arc<dyn PublishInspector>>,
    pub observers: Vec<Arc<dyn PublishObserver>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            authenticator: Arc::new(AllowAll),
            authorizer: Arc::new(AllowAll),
            inspectors: Vec::new(),
            observers: Vec::new(),
        }
    }
}
