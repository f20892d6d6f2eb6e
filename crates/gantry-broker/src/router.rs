//! The subscription tree: topic filters stored level by level, so that matching
//! a topic costs one walk down the tree rather than a scan of every filter.
//! Shared subscriptions (`$share/<group>/<filter>`) hang off the same tree and
//! deliver each message to one member of the group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gantry_codec::{QoS, SubscriptionOptions};

use crate::session::{Session, SessionId};

#[derive(Clone)]
struct Subscriber {
    session: Arc<Session>,
    options: SubscriptionOptions,
    sub_id: Option<u32>,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Subscriptions whose filter ends at this node.
    exact: Vec<Subscriber>,
    /// Subscriptions with `#` right below this node (they also match this node).
    multi: Vec<Subscriber>,
    /// Shared groups, per position: (group, members).
    shared_exact: Vec<(Box<str>, Vec<Subscriber>)>,
    shared_multi: Vec<(Box<str>, Vec<Subscriber>)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.exact.is_empty()
            && self.multi.is_empty()
            && self.shared_exact.is_empty()
            && self.shared_multi.is_empty()
    }
}

/// One session's combined interest in a message after all of its matching
/// subscriptions have been merged.
pub struct Target {
    pub session: Arc<Session>,
    pub qos: QoS,
    pub retain_as_published: bool,
    pub sub_ids: Vec<u32>,
}

#[derive(Default)]
pub struct Router {
    root: Node,
    count: usize,
    round_robin: AtomicUsize,
}

fn upsert(list: &mut Vec<Subscriber>, sub: Subscriber) -> bool {
    if let Some(existing) = list.iter_mut().find(|s| s.session.id == sub.session.id) {
        *existing = sub;
        true
    } else {
        list.push(sub);
        false
    }
}

fn remove(list: &mut Vec<Subscriber>, session: SessionId) -> bool {
    let before = list.len();
    list.retain(|s| s.session.id != session);
    before != list.len()
}

impl Router {
    /// Number of (session, filter) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds or replaces a subscription; returns true when it already existed.
    pub fn subscribe(
        &mut self,
        session: &Arc<Session>,
        share_group: Option<&str>,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) -> bool {
        let sub = Subscriber {
            session: session.clone(),
            options,
            sub_id,
        };
        let mut node = &mut self.root;
        let mut multi = false;
        for level in filter.split('/') {
            if level == "#" {
                multi = true;
                break;
            }
            node = node.children.entry(level.into()).or_default();
        }
        let existed = match share_group {
            None if multi => upsert(&mut node.multi, sub),
            None => upsert(&mut node.exact, sub),
            Some(group) => {
                let groups = if multi {
                    &mut node.shared_multi
                } else {
                    &mut node.shared_exact
                };
                match groups.iter_mut().find(|(g, _)| &**g == group) {
                    Some((_, members)) => upsert(members, sub),
                    None => {
                        groups.push((group.into(), vec![sub]));
                        false
                    }
                }
            }
        };
        if !existed {
            self.count += 1;
        }
        existed
    }

    /// Removes a subscription; returns true when it existed.
    pub fn unsubscribe(
        &mut self,
        session: SessionId,
        share_group: Option<&str>,
        filter: &str,
    ) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, session, share_group);
        if removed {
            self.count -= 1;
        }
        removed
    }

    fn remove_at(
        node: &mut Node,
        levels: &[&str],
        session: SessionId,
        group: Option<&str>,
    ) -> bool {
        match levels.split_first() {
            Some((&"#", _)) | None => {
                let multi = !levels.is_empty();
                match group {
                    None if multi => remove(&mut node.multi, session),
                    None => remove(&mut node.exact, session),
                    Some(group) => {
                        let groups = if multi {
                            &mut node.shared_multi
                        } else {
                            &mut node.shared_exact
                        };
                        let mut removed = false;
                        for (g, members) in groups.iter_mut() {
                            if &**g == group {
                                removed = remove(members, session);
                            }
                        }
                        groups.retain(|(_, m)| !m.is_empty());
                        removed
                    }
                }
            }
            Some((level, rest)) => {
                let Some(child) = node.children.get_mut(*level) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, session, group);
                if child.is_empty() {
                    node.children.remove(*level);
                }
                removed
            }
        }
    }

    /// Every session interested in `topic`, one entry per session with the
    /// highest granted QoS and all matching subscription identifiers.
    /// `publisher` is the publishing client's identifier, for no-local.
    pub fn targets(&self, topic: &str, publisher: Option<&str>) -> Vec<Target> {
        let mut hits: Vec<&Subscriber> = Vec::new();
        let mut shared: Vec<&Vec<Subscriber>> = Vec::new();
        let dollar = topic.starts_with('$');
        let levels: Vec<&str> = topic.split('/').collect();
        Self::collect(&self.root, &levels, 0, dollar, &mut hits, &mut shared);

        // Sorting puts a session's overlapping subscriptions side by side, so
        // merging them is one pass even for a large fan-out.
        hits.sort_by_key(|s| s.session.id);
        let mut targets: Vec<Target> = Vec::with_capacity(hits.len() + shared.len());
        let add = |s: &Subscriber, targets: &mut Vec<Target>, adjacent_only: bool| {
            if s.options.no_local && publisher.is_some_and(|p| p == &*s.session.client_id) {
                return;
            }
            let existing = if adjacent_only {
                targets.last_mut().filter(|t| t.session.id == s.session.id)
            } else {
                targets.iter_mut().find(|t| t.session.id == s.session.id)
            };
            if let Some(t) = existing {
                t.qos = t.qos.max(s.options.qos);
                t.retain_as_published |= s.options.retain_as_published;
                t.sub_ids.extend(s.sub_id);
            } else {
                targets.push(Target {
                    session: s.session.clone(),
                    qos: s.options.qos,
                    retain_as_published: s.options.retain_as_published,
                    sub_ids: s.sub_id.into_iter().collect(),
                });
            }
        };
        for s in &hits {
            add(s, &mut targets, true);
        }
        for members in shared {
            if let Some(s) = self.pick(members) {
                add(s, &mut targets, false);
            }
        }
        targets
    }

    /// Round-robin over the group's members, preferring connected ones.
    fn pick<'a>(&self, members: &'a [Subscriber]) -> Option<&'a Subscriber> {
        if members.is_empty() {
            return None;
        }
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        (0..members.len())
            .map(|i| &members[(start + i) % members.len()])
            .find(|s| s.session.lock().owner.is_some())
            .or_else(|| members.get(start % members.len()))
    }

    fn collect<'a>(
        node: &'a Node,
        levels: &[&str],
        depth: usize,
        dollar: bool,
        hits: &mut Vec<&'a Subscriber>,
        shared: &mut Vec<&'a Vec<Subscriber>>,
    ) {
        // Wildcards at the first level never match `$` topics.
        let wildcards_ok = !(dollar && depth == 0);
        if wildcards_ok {
            hits.extend(node.multi.iter());
            shared.extend(node.shared_multi.iter().map(|(_, m)| m));
        }
        let Some((level, rest)) = levels.split_first() else {
            hits.extend(node.exact.iter());
            shared.extend(node.shared_exact.iter().map(|(_, m)| m));
            return;
        };
        if let Some(child) = node.children.get(*level) {
            Self::collect(child, rest, depth + 1, dollar, hits, shared);
        }
        if wildcards_ok && let Some(child) = node.children.get("+") {
            Self::collect(child, rest, depth + 1, dollar, hits, shared);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64, name: &str) -> Arc<Session> {
        Arc::new(Session::new(id, Arc::from(name)))
    }

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn ids(targets: &[Target]) -> Vec<u64> {
        let mut v: Vec<u64> = targets.iter().map(|t| t.session.id).collect();
        v.sort();
        v
    }

    #[test]
    fn matches_wildcards_and_merges_overlaps() {
        let mut r = Router::default();
        let a = session(1, "a");
        let b = session(2, "b");
        r.subscribe(&a, None, "acme/+/temp", opts(QoS::AtMostOnce), Some(7));
        r.subscribe(&a, None, "acme/#", opts(QoS::AtLeastOnce), Some(8));
        r.subscribe(&b, None, "acme/line1/temp", opts(QoS::ExactlyOnce), None);
        let t = r.targets("acme/line1/temp", None);
        assert_eq!(ids(&t), vec![1, 2]);
        let ta = t.iter().find(|t| t.session.id == 1).unwrap();
        assert_eq!(ta.qos, QoS::AtLeastOnce);
        let mut sids = ta.sub_ids.clone();
        sids.sort();
        assert_eq!(sids, vec![7, 8]);
        assert_eq!(ids(&r.targets("acme", None)), vec![1]);
        assert!(r.targets("other/x", None).is_empty());
        assert_eq!(r.len(), 3);
        assert!(r.unsubscribe(1, None, "acme/#"));
        assert!(!r.unsubscribe(1, None, "acme/#"));
        assert_eq!(ids(&r.targets("acme/line1/temp", None)), vec![1, 2]);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let mut r = Router::default();
        let a = session(1, "a");
        r.subscribe(&a, None, "#", opts(QoS::AtMostOnce), None);
        r.subscribe(&a, None, "+/broker/uptime", opts(QoS::AtMostOnce), None);
        assert!(r.targets("$SYS/broker/uptime", None).is_empty());
        r.subscribe(&a, None, "$SYS/#", opts(QoS::AtMostOnce), None);
        assert_eq!(r.targets("$SYS/broker/uptime", None).len(), 1);
    }

    #[test]
    fn no_local_skips_the_publisher() {
        let mut r = Router::default();
        let a = session(1, "a");
        let mut o = opts(QoS::AtMostOnce);
        o.no_local = true;
        r.subscribe(&a, None, "x", o, None);
        assert!(r.targets("x", Some("a")).is_empty());
        assert_eq!(r.targets("x", Some("b")).len(), 1);
    }

    #[test]
    fn shared_groups_deliver_to_one_member() {
        let mut r = Router::default();
        let a = session(1, "a");
        let b = session(2, "b");
        r.subscribe(&a, Some("g"), "jobs/#", opts(QoS::AtLeastOnce), None);
        r.subscribe(&b, Some("g"), "jobs/#", opts(QoS::AtLeastOnce), None);
        let mut counts = [0, 0];
        for _ in 0..10 {
            let t = r.targets("jobs/1", None);
            assert_eq!(t.len(), 1);
            counts[(t[0].session.id - 1) as usize] += 1;
        }
        assert_eq!(counts, [5, 5]);
        assert!(r.unsubscribe(1, Some("g"), "jobs/#"));
        assert_eq!(ids(&r.targets("jobs/1", None)), vec![2]);
    }
}
