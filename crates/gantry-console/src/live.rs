//! The live feed: a broker observer that keeps, for each open feed, the
//! latest message of every topic that changed below the paths it watches,
//! and the Server-Sent Events stream that sends those at most once per
//! interval. A browser never subscribes to `#`; the broker pays one atomic
//! load per message while no feed is open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use gantry_broker::Message;
use gantry_broker::hooks::PublishObserver;
use gantry_broker::store::AckGate;
use gantry_security::Action;
use serde::Serialize;

use crate::auth::{API_CLIENT_ID, Caller};
use crate::error::{ApiError, ApiResult};
use crate::namespace::{Live, clean_path, stale_after_ms};
use crate::state::SharedState;

/// Paths one feed may watch.
pub const MAX_WATCHED: usize = 16;
/// Distinct changed topics one event carries; more are counted as dropped.
pub const MAX_CHANGES_PER_EVENT: usize = 2_000;

#[derive(Default)]
struct Pending {
    latest: HashMap<Arc<str>, Arc<Message>>,
    dropped: u64,
}

struct Watcher {
    id: u64,
    /// Watched paths; a topic matches when it is one of them or below one.
    paths: Vec<String>,
    pending: Mutex<Pending>,
}

impl Watcher {
    fn watches(&self, topic: &str) -> bool {
        self.paths.iter().any(|p| {
            p.is_empty()
                || (topic.starts_with(p.as_str())
                    && (topic.len() == p.len() || topic.as_bytes()[p.len()] == b'/'))
        })
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LiveStats {
    pub feeds: usize,
    pub changes_sent: u64,
    pub changes_dropped: u64,
    pub events_sent: u64,
}

/// The observer behind every live feed.
#[derive(Default)]
pub struct LiveHub {
    feeds: AtomicUsize,
    next_id: AtomicU64,
    watchers: RwLock<Vec<Arc<Watcher>>>,
    changes_sent: AtomicU64,
    changes_dropped: AtomicU64,
    events_sent: AtomicU64,
}

impl PublishObserver for LiveHub {
    fn observe(&self, msg: &Arc<Message>) -> Option<AckGate> {
        if self.feeds.load(Ordering::Acquire) == 0 || msg.topic.starts_with('$') {
            return None;
        }
        let watchers = self.watchers.read().unwrap_or_else(|e| e.into_inner());
        for w in watchers.iter().filter(|w| w.watches(&msg.topic)) {
            let mut pending = w.pending.lock().unwrap_or_else(|e| e.into_inner());
            let len = pending.latest.len();
            match pending.latest.get_mut(&msg.topic) {
                Some(slot) => *slot = msg.clone(),
                None if len < MAX_CHANGES_PER_EVENT => {
                    pending.latest.insert(msg.topic.clone(), msg.clone());
                }
                None => pending.dropped += 1,
            }
        }
        None
    }
}

impl LiveHub {
    pub fn new() -> Arc<LiveHub> {
        Arc::new(LiveHub::default())
    }

    fn add(self: &Arc<Self>, paths: Vec<String>) -> FeedGuard {
        let watcher = Arc::new(Watcher {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            paths,
            pending: Mutex::new(Pending::default()),
        });
        let mut watchers = self.watchers.write().unwrap_or_else(|e| e.into_inner());
        watchers.push(watcher.clone());
        self.feeds.store(watchers.len(), Ordering::Release);
        FeedGuard {
            hub: self.clone(),
            watcher,
        }
    }

    pub fn stats(&self) -> LiveStats {
        LiveStats {
            feeds: self.feeds.load(Ordering::Relaxed),
            changes_sent: self.changes_sent.load(Ordering::Relaxed),
            changes_dropped: self.changes_dropped.load(Ordering::Relaxed),
            events_sent: self.events_sent.load(Ordering::Relaxed),
        }
    }
}

/// Removes its watcher when the feed's stream is dropped (the client left).
struct FeedGuard {
    hub: Arc<LiveHub>,
    watcher: Arc<Watcher>,
}

impl Drop for FeedGuard {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers.write().unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| w.id != self.watcher.id);
        self.hub.feeds.store(watchers.len(), Ordering::Release);
    }
}

impl FeedGuard {
    fn take(&self) -> Pending {
        std::mem::take(
            &mut *self
                .watcher
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }
}

/// Decodes `%XX` and `+` of a query component.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape at byte {i} of {text:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// The values of every `name=` parameter of a raw query string.
pub fn query_values(query: Option<&str>, name: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key)? == name {
            values.push(percent_decode(value)?);
        }
    }
    Ok(values)
}

/// One change as the feed sends it: a row
/// `[path, value, quality, timestamp_ms, received_ms]` (half the bytes of
/// an object per change; age and staleness follow from `now_ms`).
type ChangeRow = (String, serde_json::Value, &'static str, Option<i64>, u64);

#[derive(Serialize)]
struct ChangesEvent<'a> {
    now_ms: u64,
    changes: &'a [ChangeRow],
    dropped: u64,
}

fn change_row(msg: &Message, stale_after_ms: u64, now: u64) -> ChangeRow {
    let live = Live::of(msg, stale_after_ms, now);
    (
        msg.topic.to_string(),
        live.value,
        live.quality,
        live.timestamp_ms,
        live.received_ms,
    )
}

/// `GET /api/v1/live?path=P&path=Q`: Server-Sent Events.
pub async fn feed(
    State(state): State<SharedState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>> {
    let raw = query_values(query.as_deref(), "path").map_err(ApiError::BadRequest)?;
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "name at least one path to watch: /api/v1/live?path=acme/dallas".into(),
        ));
    }
    if raw.len() > MAX_WATCHED {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_WATCHED} paths per feed (got {}): watch their common parent",
            raw.len()
        )));
    }
    let mut paths = Vec::with_capacity(raw.len());
    for p in &raw {
        let path = clean_path(p, "path")?;
        if !caller.may_browse(&state, &path) {
            let reason = format!(
                "{:?} may read nothing at or below {path:?}",
                &*caller.identity
            );
            caller.audit_denial(&state, Action::Subscribe, &path, &reason);
            return Err(ApiError::Forbidden(reason));
        }
        paths.push(path);
    }
    let interval = state.deps.settings.live_interval;
    let hello = Event::default().event("hello").data(
        serde_json::json!({
            "interval_ms": interval.as_millis() as u64,
            "stale_after_ms": stale_after_ms(&state),
            "fields": ["path", "value", "quality", "timestamp_ms", "received_ms"],
            "watching": paths,
        })
        .to_string(),
    );
    let guard = state.deps.live.add(paths);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures_util::stream::unfold(
        (Some(hello), guard, ticker, state, caller),
        |(mut first, guard, mut ticker, state, caller)| async move {
            if let Some(hello) = first.take() {
                return Some((Ok(hello), (None, guard, ticker, state, caller)));
            }
            loop {
                ticker.tick().await;
                let pending = guard.take();
                if pending.latest.is_empty() && pending.dropped == 0 {
                    continue;
                }
                let now = gantry_broker::message::now_ms();
                let stale = stale_after_ms(&state);
                let policy = state.security().policy();
                let mut changes: Vec<ChangeRow> = pending
                    .latest
                    .into_values()
                    .filter(|m| {
                        policy
                            .check(
                                Some(&caller.identity),
                                API_CLIENT_ID,
                                Action::Subscribe,
                                &m.topic,
                            )
                            .allowed
                    })
                    .map(|m| change_row(&m, stale, now))
                    .collect();
                if changes.is_empty() && pending.dropped == 0 {
                    continue;
                }
                changes.sort_by(|a, b| a.0.cmp(&b.0));
                let hub = &state.deps.live;
                hub.changes_sent
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                hub.changes_dropped
                    .fetch_add(pending.dropped, Ordering::Relaxed);
                hub.events_sent.fetch_add(1, Ordering::Relaxed);
                // Serialized in one pass: no JSON tree of 2,000 changes.
                let data = serde_json::to_string(&ChangesEvent {
                    now_ms: now,
                    changes: &changes,
                    dropped: pending.dropped,
                })
                .unwrap_or_default();
                let event = Event::default().event("changes").data(data);
                return Some((Ok(event), (None, guard, ticker, state, caller)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_codec::QoS;

    fn msg(topic: &str, v: i64) -> Arc<Message> {
        Arc::new(Message::new(
            topic,
            format!(r#"{{"timestamp_ms":1,"value":{v}}}"#).as_bytes(),
            QoS::AtMostOnce,
            true,
        ))
    }

    #[test]
    fn a_feed_keeps_the_latest_value_of_each_watched_topic() {
        let hub = LiveHub::new();
        assert!(hub.observe(&msg("acme/a/x", 1)).is_none());
        let guard = hub.add(vec!["acme/a".into()]);
        hub.observe(&msg("acme/a/x", 1));
        hub.observe(&msg("acme/a/x", 2));
        hub.observe(&msg("acme/a", 3));
        hub.observe(&msg("acme/ab/x", 4));
        hub.observe(&msg("acme/b/x", 5));
        let pending = guard.take();
        assert_eq!(pending.latest.len(), 2);
        assert_eq!(
            &pending.latest["acme/a/x"].payload[..],
            br#"{"timestamp_ms":1,"value":2}"#
        );
        assert!(guard.take().latest.is_empty());
        drop(guard);
        assert_eq!(hub.stats().feeds, 0);
    }

    #[test]
    fn a_burst_beyond_the_cap_is_counted_not_kept() {
        let hub = LiveHub::new();
        let guard = hub.add(vec!["t".into()]);
        for i in 0..(MAX_CHANGES_PER_EVENT + 10) {
            hub.observe(&msg(&format!("t/{i}"), 1));
        }
        let pending = guard.take();
        assert_eq!(pending.latest.len(), MAX_CHANGES_PER_EVENT);
        assert_eq!(pending.dropped, 10);
    }

    #[test]
    fn query_parameters_repeat_and_decode() {
        let q = Some("path=acme%2Fdallas&x=1&path=a+b");
        assert_eq!(
            query_values(q, "path").ok(),
            Some(vec!["acme/dallas".to_string(), "a b".to_string()])
        );
        assert!(query_values(Some("path=%zz"), "path").is_err());
    }
}
