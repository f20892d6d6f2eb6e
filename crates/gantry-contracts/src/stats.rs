//! Violation counters: totals, per rule, per path and per client. Per-key maps
//! are capped so that a client inventing topics cannot grow them without
//! bound; keys beyond the cap are counted under [`OTHER`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::validate::Rule;

/// Distinct paths (and, separately, clients) counted individually.
pub const MAX_KEYS: usize = 10_000;
/// The bucket for keys beyond [`MAX_KEYS`].
pub const OTHER: &str = "(other)";

#[derive(Default)]
struct Keyed {
    by_rule: [u64; Rule::ALL.len()],
    by_path: HashMap<String, u64>,
    by_client: HashMap<String, u64>,
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_KEYS {
        map.insert(key.to_owned(), 1);
    } else {
        *map.entry(OTHER.to_owned()).or_default() += 1;
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: AtomicU64,
    pub(crate) unmodeled_allowed: AtomicU64,
    pub(crate) skipped_system: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) unmodeled_refused: AtomicU64,
    keyed: Mutex<Keyed>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one dead-lettered message.
    pub(crate) fn violation(&self, rule: Rule, path: &str, client: &str) {
        Self::add(if rule == Rule::Unmodeled {
            &self.unmodeled_refused
        } else {
            &self.invalid
        });
        let mut k = self.keyed.lock().unwrap_or_else(|e| e.into_inner());
        k.by_rule[rule.index()] += 1;
        bump(&mut k.by_path, path);
        bump(&mut k.by_client, client);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let k = self.keyed.lock().unwrap_or_else(|e| e.into_inner());
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            unmodeled_allowed: self.unmodeled_allowed.load(Ordering::Relaxed),
            unmodeled_refused: self.unmodeled_refused.load(Ordering::Relaxed),
            skipped_system: self.skipped_system.load(Ordering::Relaxed),
            by_rule: Rule::ALL
                .iter()
                .map(|r| (r.as_str(), k.by_rule[r.index()]))
                .collect(),
            by_path: k.by_path.clone(),
            by_client: k.by_client.clone(),
        }
    }
}

/// A copy of the counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Messages on modeled paths that passed (and were canonicalised).
    pub accepted: u64,
    /// Messages on modeled paths that broke a rule.
    pub invalid: u64,
    /// Unmodeled messages routed under the `allow` policy.
    pub unmodeled_allowed: u64,
    /// Unmodeled messages dead-lettered (`dead-letter` or `reject`).
    pub unmodeled_refused: u64,
    /// System topics (`$SYS`, `_`-subtrees), not validated.
    pub skipped_system: u64,
    pub by_rule: Vec<(&'static str, u64)>,
    /// Dead-lettered messages per original topic.
    pub by_path: HashMap<String, u64>,
    /// Dead-lettered messages per publishing client.
    pub by_client: HashMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_capped_with_an_other_bucket() {
        let c = Counters::default();
        for i in 0..MAX_KEYS + 5 {
            c.violation(Rule::Range, &format!("p/{i}"), "one-client");
        }
        c.violation(Rule::Unmodeled, "p/0", "one-client");
        let s = c.snapshot();
        assert_eq!(s.by_path.len(), MAX_KEYS + 1);
        assert_eq!(s.by_path[OTHER], 5);
        assert_eq!(s.by_path["p/0"], 2);
        assert_eq!(s.by_client["one-client"], (MAX_KEYS + 6) as u64);
        assert_eq!(s.invalid, (MAX_KEYS + 5) as u64);
        assert_eq!(s.unmodeled_refused, 1);
        assert!(s.by_rule.contains(&("unmodeled", 1)));
    }
}
