//! Broker counters, published under `$SYS/broker/` and exposed to the binary.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub clients_connected: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub publishes_rejected: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Times a client went over its publish limits and was slowed down.
    pub clients_throttled: AtomicU64,
    /// Connections refused for the connection rate of their address.
    pub connections_rate_limited: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A point-in-time copy of the counters and gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub uptime_secs: u64,
    pub clients_connected: u64,
    pub sessions: u64,
    pub connections_total: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub publishes_rejected: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub retained: u64,
    pub subscriptions: u64,
    pub protocol_errors: u64,
    pub clients_throttled: u64,
    pub connections_rate_limited: u64,
}
