//! The application message as the broker holds it: one shared allocation per
//! publish, referenced by every subscriber queue, the retained store and the
//! durable log alike.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gantry_codec::{Properties, QoS};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// 5.0 properties forwarded to subscribers (payload format, content type,
    /// response topic, correlation data, user properties). Never holds a topic
    /// alias, subscription identifiers or the expiry interval: those are
    /// per-delivery and are computed when the message is sent.
    pub properties: Option<Box<Properties>>,
    /// Absolute expiry (Unix milliseconds), from the Message Expiry Interval.
    pub expires_at_ms: Option<u64>,
    /// Unix milliseconds at which the broker accepted the message.
    pub received_at_ms: u64,
    /// Client identifier of the publisher, for the no-local option.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// Builds a message from its parts; the payload is copied into its own
    /// allocation so that a long-lived message (retained, queued) never pins a
    /// connection's whole read buffer.
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Self {
        Self {
            topic: Arc::from(topic),
            payload: Bytes::copy_from_slice(payload),
            qos,
            retain,
            properties: None,
            expires_at_ms: None,
            received_at_ms: now_ms(),
            publisher: None,
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| t <= now_ms)
    }

    /// Remaining expiry interval in whole seconds (rounded up), for forwarding.
    pub fn remaining_expiry_secs(&self, now_ms: u64) -> Option<u32> {
        self.expires_at_ms
            .map(|t| (t.saturating_sub(now_ms).div_ceil(1000)).min(u64::from(u32::MAX)) as u32)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
