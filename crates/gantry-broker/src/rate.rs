//! Per-client protection that slows an abusive client without touching the
//! others: token buckets for a connection's publish rate and bytes per
//! second, and the connection rate per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// A token bucket refilled at `rate` per second, holding at most one
/// second's worth (`burst = rate`). Amounts are in thousandths so that a rate
/// of one per second still refills smoothly.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: u64,
    /// Thousandths of a token; negative while in debt.
    level: i64,
    last_ms: u64,
}

impl Bucket {
    pub(crate) fn new(rate: u64, now_ms: u64) -> Self {
        Self {
            rate,
            level: i64::try_from(rate.saturating_mul(1000)).unwrap_or(i64::MAX),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = now_ms.max(self.last_ms);
        let cap = i64::try_from(self.rate.saturating_mul(1000)).unwrap_or(i64::MAX);
        let gained = i64::try_from(elapsed.saturating_mul(self.rate)).unwrap_or(i64::MAX);
        self.level = self.level.saturating_add(gained).min(cap);
    }

    /// Takes `amount` tokens (going into debt if needed) and returns how
    /// many milliseconds the client must wait until the debt is paid (0: no
    /// wait).
    pub(crate) fn take(&mut self, amount: u64, now_ms: u64) -> u64 {
        self.refill(now_ms);
        let cost = i64::try_from(amount.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.level = self.level.saturating_sub(cost);
        if self.level >= 0 || self.rate == 0 {
            0
        } else {
            // level is in thousandths of a token; rate tokens per second.
            self.level.unsigned_abs().div_ceil(self.rate)
        }
    }
}

/// One connection's publish limits.
#[derive(Debug, Clone)]
pub(crate) struct PublishLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl PublishLimiter {
    /// `None` when both limits are off (0).
    pub(crate) fn new(messages_per_s: u64, bytes_per_s: u64, now_ms: u64) -> Option<Self> {
        if messages_per_s == 0 && bytes_per_s == 0 {
            return None;
        }
        Some(Self {
            messages: (messages_per_s > 0).then(|| Bucket::new(messages_per_s, now_ms)),
            bytes: (bytes_per_s > 0).then(|| Bucket::new(bytes_per_s, now_ms)),
        })
    }

    /// Charges one publish of `bytes`; the wait in milliseconds before the
    /// client may send more (0: none).
    pub(crate) fn charge(&mut self, bytes: u64, now_ms: u64) -> u64 {
        let a = self.messages.as_mut().map_or(0, |b| b.take(1, now_ms));
        let b = self.bytes.as_mut().map_or(0, |b| b.take(bytes, now_ms));
        a.max(b)
    }
}

/// New connections per second per source address.
#[derive(Debug, Default)]
pub(crate) struct ConnectLimiter {
    per_address: Mutex<HashMap<IpAddr, Bucket>>,
}

impl ConnectLimiter {
    /// True when a connection from `ip` is within `rate` per second.
    pub(crate) fn allow(&self, ip: IpAddr, rate: u64, now_ms: u64) -> bool {
        if rate == 0 {
            return true;
        }
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            // Forget addresses that have been quiet for a minute.
            map.retain(|_, b| now_ms.saturating_sub(b.last_ms) < 60_000);
        }
        let bucket = map.entry(ip).or_insert_with(|| Bucket::new(rate, now_ms));
        if bucket.take(1, now_ms) == 0 {
            true
        } else {
            // A refused attempt does not deepen the debt.
            bucket.level = bucket.level.saturating_add(1000);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_paces() {
        let mut b = Bucket::new(10, 0);
        for _ in 0..10 {
            assert_eq!(b.take(1, 0), 0);
        }
        // The eleventh in the same millisecond waits a tenth of a second.
        assert_eq!(b.take(1, 0), 100);
        // After the wait the debt is paid and one more token has refilled.
        assert_eq!(b.take(1, 200), 0);
    }

    #[test]
    fn byte_limit_waits_in_proportion() {
        let mut l = PublishLimiter::new(0, 1000, 0).unwrap();
        assert_eq!(l.charge(1000, 0), 0);
        assert_eq!(l.charge(500, 0), 500);
        assert!(PublishLimiter::new(0, 0, 0).is_none());
    }

    #[test]
    fn connect_limiter_is_per_address() {
        let l = ConnectLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow(a, 2, 0));
        assert!(l.allow(a, 2, 0));
        assert!(!l.allow(a, 2, 0));
        assert!(!l.allow(a, 2, 100));
        assert!(l.allow(b, 2, 100), "another address is not affected");
        assert!(l.allow(a, 2, 600));
        assert!(l.allow(a, 0, 600), "0 means no limit");
    }
}
