//! Gantry's embedded MQTT 3.1.1/5.0 broker: the Unified Namespace's transport.
//!
//! - [`Broker`] owns sessions, the subscription router, the retained store (the
//!   live state of the namespace) and the durable store.
//! - `connection` serves one client; `listener` accepts TCP and WebSocket;
//!   [`tls`] accepts MQTT over TLS and secure WebSocket (mutual TLS included).
//! - [`hooks`] are the extension points for authentication, authorization and
//!   publish inspection that the security and contract layers plug into.

mod broker;
pub mod config;
mod connection;
pub mod hooks;
mod listener;
pub mod message;
mod rate;
mod retained;
mod router;
mod session;
mod stats;
pub mod store;
mod sys;
pub mod tls;
mod transport;

pub use broker::{Broker, BrokerError, ClientSummary, PublishError, Routed, SessionInfo};
pub use config::{BrokerConfig, Durability, Limits, RateLimitAction, SyncPolicy};
pub use listener::BoundAddrs;
pub use message::Message;
pub use retained::RetainedChild;
pub use stats::StatsSnapshot;
