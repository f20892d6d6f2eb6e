//! The connector abstraction: a [`Source`] produces [`SourceMessage`]s into a
//! [`Sink`] until told to shut down, and reports its [`SourceHealth`].
//!
//! Every data source (the simulator now; Modbus, OPC UA, Sparkplug later)
//! implements [`Source`]; the binary implements [`Sink`] over the broker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use gantry_model::payload::PayloadError;

/// A message a source wants published into the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
    /// MQTT QoS level, 0..=2.
    pub qos: u8,
}

/// Why a sink refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The receiving side is gone; nothing published from now on will arrive.
    #[error("sink is closed")]
    Closed,
    /// The sink is temporarily full; the message was dropped.
    #[error("sink is overloaded")]
    Overloaded,
    /// This particular message was refused (bad topic, ACL, oversize, ...).
    #[error("message for {topic} rejected: {reason}")]
    Rejected { topic: String, reason: String },
}

impl SinkError {
    /// Whether retrying later can never succeed, so the source should stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SinkError::Closed)
    }
}

/// Where sources deliver their messages.
pub trait Sink: Send + Sync + 'static {
    /// Publishes one message. Called from async tasks, so implementations
    /// must not block for long; report back-pressure as
    /// [`SinkError::Overloaded`] instead of waiting.
    fn publish(&self, msg: SourceMessage) -> Result<(), SinkError>;
}

/// A bounded channel is a ready-made sink: a full channel reports
/// [`SinkError::Overloaded`] rather than blocking the source.
impl Sink for mpsc::Sender<SourceMessage> {
    fn publish(&self, msg: SourceMessage) -> Result<(), SinkError> {
        self.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SinkError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
        })
    }
}

/// Why a source stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("sink failed: {0}")]
    Sink(#[from] SinkError),
    #[error("could not encode payload: {0}")]
    Payload(#[from] PayloadError),
}

/// The future returned by [`Source::run`].
pub type SourceFuture = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send + 'static>>;

/// A data source. Object safe, so the binary can hold `Vec<Box<dyn Source>>`.
pub trait Source: Send + 'static {
    /// Stable, human-readable name used in logs and health topics.
    fn name(&self) -> &str;

    /// A handle for observing this source's health while it runs, if it
    /// tracks any. Take it before calling [`Source::run`].
    fn health(&self) -> Option<HealthHandle> {
        None
    }

    /// Runs until `shutdown` becomes `true` (or its sender is dropped), or
    /// until an unrecoverable error. Returning `Ok(())` means a clean stop.
    fn run(self: Box<Self>, sink: Arc<dyn Sink>, shutdown: watch::Receiver<bool>) -> SourceFuture;
}

/// Point-in-time health of a source, suitable for publishing as JSON under
/// a system subtree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    /// Whether the source currently has a working link to its data.
    pub connected: bool,
    /// Unix ms of the last successful delivery, if any.
    pub last_success_ms: Option<u64>,
    /// Failed reads or publishes since start.
    pub error_count: u64,
    /// Messages delivered to the sink since start.
    pub message_count: u64,
}

/// Shared, lock-free health counters: the source updates them, anyone
/// holding a clone can take a [`SourceHealth`] snapshot.
#[derive(Debug, Clone, Default)]
pub struct HealthHandle {
    inner: Arc<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    connected: AtomicBool,
    // 0 means "never": no real delivery happens at the epoch.
    last_success_ms: AtomicU64,
    error_count: AtomicU64,
    message_count: AtomicU64,
}

impl HealthHandle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_connected(&self, connected: bool) {
        self.inner.connected.store(connected, Ordering::Relaxed);
    }

    /// Records `messages` successful deliveries at `now_ms`.
    pub fn record_success(&self, now_ms: u64, messages: u64) {
        self.inner
            .message_count
            .fetch_add(messages, Ordering::Relaxed);
        self.inner
            .last_success_ms
            .fetch_max(now_ms, Ordering::Relaxed);
    }

    pub fn record_errors(&self, errors: u64) {
        self.inner.error_count.fetch_add(errors, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SourceHealth {
        let last = self.inner.last_success_ms.load(Ordering::Relaxed);
        SourceHealth {
            connected: self.inner.connected.load(Ordering::Relaxed),
            last_success_ms: (last != 0).then_some(last),
            error_count: self.inner.error_count.load(Ordering::Relaxed),
            message_count: self.inner.message_count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str) -> SourceMessage {
        SourceMessage {
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            retain: true,
            qos: 0,
        }
    }

    #[test]
    fn channel_sink_maps_full_and_closed() {
        let (tx, mut rx) = mpsc::channel(1);
        let sink: Arc<dyn Sink> = Arc::new(tx);
        assert_eq!(sink.publish(msg("a")), Ok(()));
        assert_eq!(sink.publish(msg("b")), Err(SinkError::Overloaded));
        assert_eq!(rx.try_recv().map(|m| m.topic), Ok("a".to_owned()));
        drop(rx);
        assert_eq!(sink.publish(msg("c")), Err(SinkError::Closed));
    }

    #[test]
    fn only_closed_is_fatal() {
        assert!(SinkError::Closed.is_fatal());
        assert!(!SinkError::Overloaded.is_fatal());
        let rejected = SinkError::Rejected {
            topic: "t".into(),
            reason: "too big".into(),
        };
        assert!(!rejected.is_fatal());
    }

    #[test]
    fn health_handle_accumulates_and_serialises() {
        let health = HealthHandle::new();
        assert_eq!(health.snapshot(), SourceHealth::default());

        let observer = health.clone();
        health.set_connected(true);
        health.record_success(2_000, 7);
        health.record_success(1_000, 3); // out of order: keep the latest
        health.record_errors(2);

        let snap = observer.snapshot();
        assert_eq!(
            snap,
            SourceHealth {
                connected: true,
                last_success_ms: Some(2_000),
                error_count: 2,
                message_count: 10,
            }
        );
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "connected": true,
                "last_success_ms": 2000,
                "error_count": 2,
                "message_count": 10
            })
        );
    }
}
