//! The retained store: the live state of the namespace, one message per topic.
//!
//! A sorted map lets a subscription with literal leading levels (`acme/dallas/#`)
//! scan only its own subtree, and lets a browser list one level of the tree
//! with a few seeks per child instead of walking the subtree.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use gantry_codec::topic::matches;

use crate::message::Message;

/// One child level below a prefix in the retained namespace.
#[derive(Debug, Clone)]
pub struct RetainedChild {
    /// The child's level name (one topic level, no '/').
    pub name: String,
    /// The retained message on exactly `<prefix>/<name>`, if any (not expired).
    pub message: Option<Arc<Message>>,
    /// Whether any retained topic lies below `<prefix>/<name>/`.
    pub has_children: bool,
}

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

    /// The distinct child levels below `prefix` ("" = the top level) in byte
    /// order, starting after `after` (exclusive) when given, at most `limit`.
    ///
    /// At the top level, `$` topics (`$SYS`) are left out. A child whose only
    /// topic is an expired message is left out too; expired topics deeper down
    /// are not looked for (they are purged periodically).
    pub fn children(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<RetainedChild> {
        let base = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let top = prefix.is_empty();
        let mut out = Vec::new();
        let mut lo = after.map(str::to_owned);
        while out.len() < limit {
            let Some(name) = self.next_child(&base, top, lo.as_deref()) else {
                break;
            };
            let topic = format!("{base}{name}");
            let message = self
                .by_topic
                .get(topic.as_str())
                .filter(|m| !m.is_expired(now_ms))
                .cloned();
            let has_children = self.any_below(&topic);
            if message.is_some() || has_children {
                out.push(RetainedChild {
                    name: name.clone(),
                    message,
                    has_children,
                });
            }
            lo = Some(name);
        }
        out
    }

    /// The smallest child name below `base` (empty, or a prefix ending in '/')
    /// greater than `lo`, without walking any child's subtree.
    ///
    /// Keys do not sort like their child names: bytes below '/' (such as '-',
    /// '.', '!', ' ') put `p/c-x` between `p/c` and `p/c/...`, so the names met
    /// in key order are `c`, `c-x`, `c` again. Two rules restore name order:
    /// a name at or below `lo` met again through its subtree is skipped past
    /// that subtree, and a name is only taken once no shorter name it starts
    /// with (followed there by a byte below '/') still has a subtree ahead.
    fn next_child(&self, base: &str, top: bool, lo: Option<&str>) -> Option<String> {
        // Invariant: every key of every name greater than `lo` is at or after
        // `from`.
        let mut from = match lo {
            Some(lo) => Bound::Excluded(format!("{base}{lo}")),
            None => Bound::Included(base.to_owned()),
        };
        loop {
            let key = self.first_key(from.as_ref().map(String::as_str))?;
            let rest = key.strip_prefix(base)?;
            let name = rest.split('/').next().unwrap_or(rest);
            let above_lo = lo.is_none_or(|lo| name > lo);
            let hidden = top && name.starts_with('$');
            if above_lo {
                // A shorter name `n` with `name` = n + byte below '/' + ...
                // sorts first; its exact key (before `key`) cannot be one of
                // ours, but its subtree can lie ahead of `key`.
                let shorter = name
                    .bytes()
                    .enumerate()
                    .filter(|&(_, b)| b < b'/')
                    .map(|(i, _)| &name[..i])
                    .find(|n| {
                        lo.is_none_or(|lo| *n > lo)
                            && !(top && n.starts_with('$'))
                            && self.any_below(&format!("{base}{n}"))
                    });
                if let Some(n) = shorter {
                    return Some(n.to_owned());
                }
                if !hidden {
                    return Some(name.to_owned());
                }
            }
            from = if hidden {
                // All top-level `$` names: the keys from "$" up to "%".
                Bound::Included("%".to_owned())
            } else {
                // `name` <= lo and `key` is in its subtree: every key from
                // here up to `base/name0` ('0' follows '/') is in it too.
                Bound::Included(format!("{base}{name}0"))
            };
        }
    }

    fn first_key(&self, from: Bound<&str>) -> Option<&str> {
        self.by_topic
            .range::<str, _>((from, Bound::Unbounded))
            .next()
            .map(|(k, _)| &**k)
    }

    /// True when some key starts with `topic/`.
    fn any_below(&self, topic: &str) -> bool {
        let below = format!("{topic}/");
        self.first_key(Bound::Included(&below))
            .is_some_and(|k| k.starts_with(&below))
    }

    /// Up to `limit` topics (in order) for which `pred(topic)` is true, and
    /// whether more matched, in one pass. Skips expired messages.
    #[cfg(test)]
    pub fn search(
        &self,
        limit: usize,
        now_ms: u64,
        mut pred: impl FnMut(&str) -> bool,
    ) -> (Vec<Arc<Message>>, bool) {
        let mut found = Vec::new();
        let mut resume = None;
        loop {
            let (more, next) = self.search_chunk(
                resume.as_deref(),
                usize::MAX,
                limit,
                now_ms,
                &mut found,
                &mut pred,
            );
            match next {
                Some(n) if !more => resume = Some(n),
                _ => return (found, more),
            }
        }
    }

    /// One stretch of a search: looks at up to `max_scan` topics after
    /// `after` (from the start with `None`), adding matches to `found` until
    /// it holds `limit`. Returns whether a match beyond `limit` was seen, and
    /// the last topic looked at when the store goes on past this stretch.
    pub fn search_chunk(
        &self,
        after: Option<&str>,
        max_scan: usize,
        limit: usize,
        now_ms: u64,
        found: &mut Vec<Arc<Message>>,
        mut pred: impl FnMut(&str) -> bool,
    ) -> (bool, Option<String>) {
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut last: Option<&str> = None;
        let range = self.by_topic.range::<str, _>((start, Bound::Unbounded));
        for (scanned, (topic, msg)) in range.enumerate() {
            if scanned == max_scan.max(1) {
                return (false, last.map(str::to_owned));
            }
            last = Some(topic);
            // The topic test first: it reads the key, which the walk has
            // in cache; the message's expiry costs a miss per topic.
            if !pred(topic) || msg.is_expired(now_ms) {
                continue;
            }
            if found.len() == limit {
                return (true, None);
            }
            found.push(msg.clone());
        }
        (false, None)
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

    fn store(topics: &[&str]) -> RetainedStore {
        let mut s = RetainedStore::default();
        for t in topics {
            s.apply(msg(t, t));
        }
        s
    }

    /// (name, payload of the exact topic, has_children) of each child.
    fn listing(children: &[RetainedChild]) -> Vec<(String, Option<String>, bool)> {
        children
            .iter()
            .map(|c| {
                let payload = c
                    .message
                    .as_ref()
                    .map(|m| String::from_utf8_lossy(&m.payload).into_owned());
                (c.name.clone(), payload, c.has_children)
            })
            .collect()
    }

    fn names(children: &[RetainedChild]) -> Vec<&str> {
        children.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn children_are_in_name_order_despite_bytes_below_the_separator() {
        let s = store(&[
            "acme",
            "acme/dallas",
            "acme/dallas/x",
            "acme/dallas!",
            "acme/dallas-2/y",
            "acme/dallas.old",
            "acme/dallas /z",
            "acme//b",
            "acme/é",
            "acme/z",
            "acmex/a",
            "$SYS/broker/uptime",
            "/lead",
            "other",
        ]);
        let all = s.children("acme", None, usize::MAX, 0);
        let some = |t: &str| Some(t.to_owned());
        assert_eq!(
            listing(&all),
            vec![
                ("".into(), None, true),
                ("dallas".into(), some("acme/dallas"), true),
                ("dallas ".into(), None, true),
                ("dallas!".into(), some("acme/dallas!"), false),
                ("dallas-2".into(), None, true),
                ("dallas.old".into(), some("acme/dallas.old"), false),
                ("z".into(), some("acme/z"), false),
                ("é".into(), some("acme/é"), false),
            ]
        );
        // `$` topics only appear below a `$` prefix.
        assert_eq!(
            names(&s.children("", None, usize::MAX, 0)),
            ["", "acme", "acmex", "other"]
        );
        assert_eq!(
            listing(&s.children("$SYS", None, usize::MAX, 0)),
            vec![("broker".into(), None, true)]
        );
        assert_eq!(names(&s.children("acme/dallas", None, 10, 0)), ["x"]);
        assert!(s.children("acme/z", None, 10, 0).is_empty());
        assert!(s.children("nowhere", None, 10, 0).is_empty());
        assert!(s.children("acme", None, 0, 0).is_empty());
    }

    #[test]
    fn children_page_with_after() {
        let s = store(&[
            "p/c/1", "p/c!x", "p/c-x/2", "p/c.x", "p/c0", "p/d", "p/c-/3",
        ]);
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.children("p", after.as_deref(), 2, 0);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|c| c.name.clone());
            pages.push(names(&page).join(","));
        }
        assert_eq!(pages, ["c,c!x", "c-,c-x", "c.x,c0", "d"]);
        // `after` need not be a child itself.
        assert_eq!(names(&s.children("p", Some("c+"), 2, 0)), ["c-", "c-x"]);
        assert_eq!(names(&s.children("p", Some("b"), 1, 0)), ["c"]);
        assert!(s.children("p", Some("d"), 5, 0).is_empty());
    }

    #[test]
    fn expired_messages_are_not_shown() {
        let mut s = store(&["a/live", "a/parent/x"]);
        for topic in ["a/gone", "a/parent"] {
            let mut m = Message::new(topic, b"old", QoS::AtMostOnce, true);
            m.expires_at_ms = Some(1_000);
            s.apply(Arc::new(m));
        }
        let now = 2_000;
        assert_eq!(
            listing(&s.children("a", None, 10, now)),
            vec![
                ("live".into(), Some("a/live".into()), false),
                ("parent".into(), None, true),
            ]
        );
        assert_eq!(s.children("a", None, 10, 0).len(), 3);
        let (found, more) = s.search(10, now, |_| true);
        assert_eq!(found.len(), 2);
        assert!(!more);
    }

    #[test]
    fn a_search_in_stretches_finds_what_one_pass_finds() {
        let mut s = RetainedStore::default();
        for i in 0..50 {
            s.apply(msg(&format!("p/{i:02}/x"), "1"));
        }
        for limit in [1, 7, 30, 100] {
            let (whole, more) = s.search(limit, 0, |t| t.contains('3') || t.contains('7'));
            let mut found = Vec::new();
            let mut resume: Option<String> = None;
            let stretched_more = loop {
                let (m, next) = s.search_chunk(resume.as_deref(), 3, limit, 0, &mut found, |t| {
                    t.contains('3') || t.contains('7')
                });
                match next {
                    Some(n) if !m => resume = Some(n),
                    _ => break m,
                }
            };
            let a: Vec<&str> = whole.iter().map(|m| &*m.topic).collect();
            let b: Vec<&str> = found.iter().map(|m| &*m.topic).collect();
            assert_eq!(a, b, "limit {limit}");
            assert_eq!(more, stretched_more, "limit {limit}");
        }
    }

    #[test]
    fn search_stops_at_the_limit_and_says_whether_more_matched() {
        let s = store(&["a/1", "a/2", "b/1", "b/2", "b/3"]);
        let topics = |found: &[Arc<Message>]| -> Vec<String> {
            found.iter().map(|m| m.topic.to_string()).collect()
        };
        let (found, more) = s.search(2, 0, |t| t.starts_with("b/"));
        assert_eq!(topics(&found), ["b/1", "b/2"]);
        assert!(more);
        let (found, more) = s.search(3, 0, |t| t.starts_with("b/"));
        assert_eq!(topics(&found), ["b/1", "b/2", "b/3"]);
        assert!(!more);
        let (found, more) = s.search(0, 0, |t| t.ends_with("/1"));
        assert!(found.is_empty());
        assert!(more);
    }

    /// The definition `children` must agree with: one pass over every topic.
    fn naive_children(
        s: &RetainedStore,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> Vec<(String, Option<String>, bool)> {
        let mut by_name: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
        for (topic, m) in &s.by_topic {
            let rest = if prefix.is_empty() {
                Some(&**topic)
            } else {
                topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
            };
            let Some(rest) = rest else { continue };
            let (name, below) = match rest.split_once('/') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            };
            if prefix.is_empty() && name.starts_with('$') {
                continue;
            }
            let entry = by_name.entry(name.to_owned()).or_default();
            if below {
                entry.1 = true;
            } else if !m.is_expired(now_ms) {
                entry.0 = Some(String::from_utf8_lossy(&m.payload).into_owned());
            }
        }
        by_name
            .into_iter()
            .filter(|(name, (m, below))| {
                after.is_none_or(|a| name.as_str() > a) && (m.is_some() || *below)
            })
            .take(limit)
            .map(|(name, (m, below))| (name, m, below))
            .collect()
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        /// Levels rich in the bytes that sort below '/'.
        fn level() -> impl Strategy<Value = &'static str> {
            proptest::sample::select(vec![
                "", "a", "ab", "a-", "a-b", "a.", "a.b", "a!", "a ", "a0", "b", "é", "$SYS", "$",
                "-",
            ])
        }

        fn path(max: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(level(), 0..=max).prop_map(|l| l.join("/"))
        }

        proptest! {
            #[test]
            fn children_agree_with_the_naive_listing(
                topics in proptest::collection::vec((path(4), any::<bool>()), 0..40),
                prefix in path(2),
                after in proptest::option::of(level()),
                page in 1usize..5,
            ) {
                let mut s = RetainedStore::default();
                for (topic, expired) in topics.iter().filter(|(t, _)| !t.is_empty()) {
                    let mut m = Message::new(topic, topic.as_bytes(), QoS::AtMostOnce, true);
                    if *expired {
                        m.expires_at_ms = Some(1);
                    }
                    s.apply(Arc::new(m));
                }
                let now = 10;
                let expected = naive_children(&s, &prefix, after, usize::MAX, now);
                prop_assert_eq!(
                    listing(&s.children(&prefix, after, usize::MAX, now)),
                    expected.clone()
                );
                // Page through with `after`, `page` children at a time.
                let mut paged = Vec::new();
                let mut cursor = after.map(str::to_owned);
                loop {
                    let got = s.children(&prefix, cursor.as_deref(), page, now);
                    prop_assert_eq!(
                        listing(&got),
                        naive_children(&s, &prefix, cursor.as_deref(), page, now)
                    );
                    let Some(last) = got.last() else { break };
                    cursor = Some(last.name.clone());
                    paged.extend(listing(&got));
                }
                prop_assert_eq!(paged, expected);
            }
        }
    }
}
