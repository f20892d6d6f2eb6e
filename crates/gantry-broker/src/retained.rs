//! The retained store: the live state of the namespace, one message per topic.
//!
//! A sorted map lets a subscription with literal leading levels (`acme/dallas/#`)
//! scan only its own subtree instead of every retained topic.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use gantry_codec::topic::matches;

use crate::message::Message;

#[derive(Default)]
pub struct RetainedStore {
    by_topic: BTreeMap<Arc<str>, Arc<Message>>,
}

impl RetainedStore {
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Stores `msg` as the topic's state, or deletes the state when the payload
    /// is empty. Returns true when something changed.
    pub fn apply(&mut self, msg: Arc<Message>) -> bool {
        if msg.payload.is_empty() {
            self.by_topic.remove(&*msg.topic).is_some()
        } else {
            self.by_topic.insert(msg.topic.clone(), msg);
            true
        }
    }

    /// Deletes the topic's state; true when there was one.
    pub fn remove(&mut self, topic: &str) -> bool {
        self.by_topic.remove(topic).is_some()
    }

    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.by_topic.get(topic)
    }

    /// Retained messages whose topic matches `filter`, skipping expired ones.
    pub fn matching(&self, filter: &str, now_ms: u64) -> Vec<Arc<Message>> {
        let prefix = literal_prefix(filter);
        let range = self
            .by_topic
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(t, _)| t.starts_with(prefix));
        range
            .filter(|(t, m)| matches(filter, t) && !m.is_expired(now_ms))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Drops expired messages; returns how many.
    pub fn purge_expired(&mut self, now_ms: u64) -> usize {
        let before = self.by_topic.len();
        self.by_topic.retain(|_, m| !m.is_expired(now_ms));
        before - self.by_topic.len()
    }
}

/// The part of a filter before its first wildcard level, e.g. `acme/dallas/` for
/// `acme/dallas/+/x`: every matching topic starts with it.
fn literal_prefix(filter: &str) -> &str {
    let mut start: usize = 0;
    for level in filter.split('/') {
        match level {
            // "a/#" also matches the parent topic "a", which sorts before "a/".
            "#" => return &filter[..start.saturating_sub(1)],
            "+" => return &filter[..start],
            _ => start += level.len() + 1,
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_codec::QoS;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            topic,
            payload.as_bytes(),
            QoS::AtMostOnce,
            true,
        ))
    }

    #[test]
    fn prefix_stops_at_first_wildcard() {
        assert_eq!(literal_prefix("a/b/#"), "a/b");
        assert_eq!(literal_prefix("a/+/c"), "a/");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("+/x"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
    }

    #[test]
    fn set_replace_delete_and_match() {
        let mut s = RetainedStore::default();
        s.apply(msg("acme/a/x", "1"));
        s.apply(msg("acme/a/y", "2"));
        s.apply(msg("acme/b/x", "3"));
        s.apply(msg("acmex/a/x", "4"));
        s.apply(msg("acme/a/x", "5"));
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.get("acme/a/x").map(|m| m.payload.clone()),
            Some("5".into())
        );
        s.apply(msg("acme/a", "6"));
        let m: Vec<_> = s
            .matching("acme/a/#", 0)
            .iter()
            .map(|m| m.payload.clone())
            .collect();
        assert_eq!(m, vec!["6", "5", "2"]);
        assert_eq!(s.matching("acme/+/x", 0).len(), 2);
        assert_eq!(s.matching("#", 0).len(), 5);
        s.apply(msg("acme/a/x", ""));
        assert_eq!(s.len(), 4);
        assert!(s.get("acme/a/x").is_none());
    }
}
