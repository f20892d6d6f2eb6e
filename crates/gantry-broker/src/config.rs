//! Broker settings: listeners, TLS, limits and durability, with defaults that
//! suit a plant-floor server. Built from the `[mqtt]`, `[websocket]`, `[mqtts]`,
//! `[wss]`, `[tls]`, `[limits]` and `[durability]` tables of the Gantry config
//! file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where retained messages and persistent sessions are kept.
    pub data_dir: PathBuf,
    /// Plain MQTT over TCP.
    pub mqtt_bind: Option<SocketAddr>,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`).
    pub websocket_bind: Option<SocketAddr>,
    /// MQTT over TLS (usually port 8883); needs `tls`.
    pub mqtts_bind: Option<SocketAddr>,
    /// MQTT over secure WebSocket (`wss://`, path `/mqtt`); needs `tls`.
    pub wss_bind: Option<SocketAddr>,
    /// The TLS server configuration of the `mqtts` and `wss` listeners:
    /// certificate chain, key and, for mutual TLS, the client certificate
    /// verifier. Build it with the *ring* provider.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
    pub durability: Durability,
    /// How often `$SYS/broker/...` statistics are published.
    pub sys_interval: Duration,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            mqtt_bind: None,
            websocket_bind: None,
            mqtts_bind: None,
            wss_bind: None,
            tls: None,
            limits: Limits::default(),
            durability: Durability::default(),
            sys_interval: Duration::from_secs(5),
        }
    }
}

/// Resource limits. Every queue the broker keeps is bounded by one of these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent client connections; further connections get CONNACK "server busy".
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes.
    pub max_packet_size: usize,
    /// Messages queued for one session (online but slow, or offline) before new
    /// messages for that session are dropped and counted.
    pub max_queued_messages: usize,
    /// Unacknowledged QoS 1/2 messages in flight to one client (the client's own
    /// Receive Maximum lowers it further).
    pub max_inflight: u16,
    /// QoS 1/2 messages a client may have unacknowledged towards the broker
    /// (our Receive Maximum).
    pub receive_maximum: u16,
    /// Topic aliases a 5.0 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Longest keep-alive the broker accepts; 0 means no limit.
    pub max_keep_alive: u16,
    /// Seconds a new connection may take to send CONNECT.
    pub connect_timeout_secs: u64,
    /// PUBLISH packets per second one client may send; 0: no limit. One
    /// second's worth may come in a burst.
    pub max_publish_rate: u64,
    /// Payload bytes per second one client may publish; 0: no limit.
    pub max_publish_bytes_rate: u64,
    /// New connections per second from one address; 0: no limit. Further
    /// attempts get CONNACK 0x9F (connection rate exceeded).
    pub max_connect_rate_per_address: u64,
    /// What happens to a client over its publish limits.
    pub rate_limit_action: RateLimitAction,
}

/// What the broker does with a client publishing faster than its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitAction {
    /// Stop reading from the client until it is back within its limits
    /// (TCP back-pressure slows it; nothing is lost, no one else waits).
    #[default]
    Slow,
    /// Disconnect it (5.0: DISCONNECT 0x96, message rate too high).
    Disconnect,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            max_queued_messages: 10_000,
            max_inflight: 100,
            receive_maximum: 1024,
            topic_alias_maximum: 256,
            max_keep_alive: 0,
            connect_timeout_secs: 10,
            max_publish_rate: 0,
            max_publish_bytes_rate: 0,
            max_connect_rate_per_address: 0,
            rate_limit_action: RateLimitAction::Slow,
        }
    }
}

/// When an acknowledged write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// Written to the operating system before the acknowledgement: survives a
    /// crash or `kill -9` of Gantry, not a power loss of the machine.
    #[default]
    Write,
    /// `fdatasync` before the acknowledgement (group commit): survives power loss.
    Fsync,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Durability {
    pub sync: SyncPolicy,
    /// Compact the log once it grows past this many bytes.
    pub compact_after_bytes: u64,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::Write,
            compact_after_bytes: 64 * 1024 * 1024,
        }
    }
}
