//! `$SYS/broker/...`: broker statistics published as retained messages at a
//! fixed interval, so any MQTT client can watch the broker's health.

use std::sync::Arc;

use bytes::Bytes;
use gantry_codec::QoS;

use crate::broker::Broker;
use crate::message::Message;

impl Broker {
    /// Publishes statistics every `sys_interval` until shutdown.
    pub fn spawn_sys_publisher(&self) {
        let broker = self.clone();
        let interval = self.config().sys_interval;
        tokio::spawn(async move {
            let mut shutdown = broker.shutdown_signal();
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => broker.publish_sys(),
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    fn publish_sys(&self) {
        self.purge_expired_retained();
        let s = self.stats();
        let values: [(&str, String); 16] = [
            ("version", format!("gantry {}", env!("CARGO_PKG_VERSION"))),
            ("uptime", format!("{} seconds", s.uptime_secs)),
            ("clients/connected", s.clients_connected.to_string()),
            ("clients/total", s.sessions.to_string()),
            ("connections/total", s.connections_total.to_string()),
            ("messages/received", s.messages_received.to_string()),
            ("messages/sent", s.messages_sent.to_string()),
            ("messages/dropped", s.messages_dropped.to_string()),
            ("messages/rejected", s.publishes_rejected.to_string()),
            ("clients/throttled", s.clients_throttled.to_string()),
            (
                "clients/rate-limited",
                s.connections_rate_limited.to_string(),
            ),
            ("bytes/received", s.bytes_received.to_string()),
            ("bytes/sent", s.bytes_sent.to_string()),
            ("retained messages/count", s.retained.to_string()),
            ("subscriptions/count", s.subscriptions.to_string()),
            ("protocol errors", s.protocol_errors.to_string()),
        ];
        for (name, value) in values {
            let topic = format!("$SYS/broker/{name}");
            let mut msg = Message::new(&topic, value.as_bytes(), QoS::AtMostOnce, true);
            msg.payload = Bytes::from(value);
            self.route(Arc::new(msg));
        }
    }
}
