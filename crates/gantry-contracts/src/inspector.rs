//! [`ContractInspector`]: the broker's [`PublishInspector`] that enforces the
//! plant model on every publish, dead-letters what it refuses, swaps models
//! atomically on reload and publishes its counters.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use gantry_broker::hooks::{ClientInfo, DeadLetter, PublishInspector, Verdict};
use gantry_broker::{Broker, Message};
use gantry_codec::{QoS, ReasonCode};
use gantry_model::{Equipment, PlantModel, is_system_topic};

use crate::dead_letter::{dead_letter_payload, dead_letter_topic};
use crate::stats::{Counters, StatsSnapshot};
use crate::validate::{ContractSettings, Rule, UnmodeledPolicy, validate};

/// Retained JSON with the contract counters and the model in force.
pub const STATS_TOPIC: &str = "$SYS/broker/contracts";

/// The model in force and its generation (1 at start, +1 per reload).
struct Active {
    model: Option<PlantModel>,
    generation: u64,
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone)]
struct ReloadOutcome {
    ok: bool,
    generation: u64,
    errors: Vec<String>,
    at_ms: u64,
}

/// Validates publishes against the current plant model.
///
/// The hot path takes one read lock to clone an `Arc`, then one hash lookup
/// ([`PlantModel::tag_for_topic`]); only refusals touch a mutex (counters).
pub struct ContractInspector {
    settings: ContractSettings,
    active: RwLock<Arc<Active>>,
    next_generation: AtomicU64,
    last_reload: Mutex<Option<ReloadOutcome>>,
    counters: Counters,
    /// Dead-letter topics holding a retained record. Bounded: past
    /// [`MAX_RETAINED_DEAD_LETTERS`] distinct topics (a client spraying random
    /// bad topics) new ones are still published, but not retained, so the
    /// retained store and its log cannot grow without end.
    retained_dead_letters: Mutex<HashSet<String>>,
}

/// Distinct dead-letter topics that keep their last record retained.
pub const MAX_RETAINED_DEAD_LETTERS: usize = 10_000;

impl ContractInspector {
    /// An inspector enforcing `model`; with `None` every data path is
    /// unmodeled and `settings.unmodeled` decides.
    pub fn new(model: Option<PlantModel>, settings: ContractSettings) -> Self {
        Self {
            settings,
            active: RwLock::new(Arc::new(Active {
                model,
                generation: 1,
            })),
            next_generation: AtomicU64::new(2),
            last_reload: Mutex::new(None),
            counters: Counters::default(),
            retained_dead_letters: Mutex::new(HashSet::new()),
        }
    }

    pub fn settings(&self) -> &ContractSettings {
        &self.settings
    }

    fn current(&self) -> Arc<Active> {
        self.active_guard().clone()
    }

    /// The model in force, borrowed for the duration of one check (no
    /// reference-count traffic on the hot path).
    fn active_guard(&self) -> std::sync::RwLockReadGuard<'_, Arc<Active>> {
        self.active.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a new (already validated) model in force for every publish from
    /// now on; connections are untouched. Returns its generation.
    pub fn reload(&self, model: Option<PlantModel>) -> u64 {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let next = Arc::new(Active { model, generation });
        *self.active.write().unwrap_or_else(|e| e.into_inner()) = next;
        self.record_reload(true, generation, Vec::new());
        generation
    }

    /// Records a refused reload (the old model stays in force) so that it
    /// shows in the published statistics.
    pub fn refuse_reload(&self, errors: Vec<String>) {
        self.record_reload(false, self.generation(), errors);
    }

    fn record_reload(&self, ok: bool, generation: u64, errors: Vec<String>) {
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadOutcome {
            ok,
            generation,
            errors,
            at_ms: gantry_broker::message::now_ms(),
        });
    }

    /// Generation of the model in force.
    pub fn generation(&self) -> u64 {
        self.current().generation
    }

    /// Number of tags in the model in force (0 without a model).
    pub fn tag_count(&self) -> usize {
        self.current().model.as_ref().map_or(0, |m| m.tag_count())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.counters.snapshot()
    }

    /// The statistics as the JSON published on [`STATS_TOPIC`].
    pub fn stats_json(&self) -> Bytes {
        let s = self.stats();
        let active = self.current();
        let last = self
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let map = |m: std::collections::HashMap<String, u64>| {
            serde_json::Value::Object(m.into_iter().map(|(k, v)| (k, v.into())).collect())
        };
        let body = serde_json::json!({
            "unmodeled_policy": self.settings.unmodeled.as_str(),
            "model_generation": active.generation,
            "model_tags": active.model.as_ref().map_or(0, |m| m.tag_count()),
            "accepted": s.accepted,
            "invalid": s.invalid,
            "unmodeled_allowed": s.unmodeled_allowed,
            "unmodeled_refused": s.unmodeled_refused,
            "skipped_system": s.skipped_system,
            "by_rule": serde_json::Value::Object(
                s.by_rule.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect()
            ),
            "by_path": map(s.by_path),
            "by_client": map(s.by_client),
            "last_reload": last.map(|r| serde_json::json!({
                "ok": r.ok,
                "generation": r.generation,
                "errors": r.errors,
                "at_ms": r.at_ms,
            })),
        });
        Bytes::from(body.to_string())
    }

    /// Publishes [`ContractInspector::stats_json`] retained on [`STATS_TOPIC`].
    pub fn publish_stats(&self, broker: &Broker) {
        let mut msg = Message::new(STATS_TOPIC, b"", QoS::AtMostOnce, true);
        msg.payload = self.stats_json();
        broker.route(Arc::new(msg));
    }

    fn refuse(
        &self,
        client: &ClientInfo,
        msg: &Message,
        rule: Rule,
        reason_string: String,
        reason: ReasonCode,
        generation: u64,
    ) -> Verdict {
        self.counters.violation(rule, &msg.topic, &client.client_id);
        tracing::debug!(client_id = %client.client_id, rule = rule.as_str(), "dead-lettered: {reason_string}");
        let payload = dead_letter_payload(msg, &client.client_id, rule, &reason_string, generation);
        let topic = dead_letter_topic(&msg.topic);
        let retain = {
            let mut seen = self
                .retained_dead_letters
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            seen.contains(&topic)
                || (seen.len() < MAX_RETAINED_DEAD_LETTERS && seen.insert(topic.clone()))
        };
        Verdict::Reject {
            reason,
            reason_string,
            dead_letter: Some(DeadLetter {
                topic,
                payload,
                retain,
            }),
        }
    }
}

/// How a reason string names the contract: the equipment class (with its
/// version, e.g. `filler@1`) or, without a class, the equipment path.
fn contract_label(equipment: &Equipment) -> &str {
    equipment
        .class
        .as_deref()
        .unwrap_or(equipment.path.as_str())
}

impl PublishInspector for ContractInspector {
    fn inspect(&self, client: &ClientInfo, msg: &mut Message) -> Verdict {
        let active = self.active_guard();
        let found = active
            .model
            .as_ref()
            .and_then(|m| m.tag_for_topic(&msg.topic));
        // A modeled tag is never a system topic (the model's names forbid it),
        // so the system check runs only for the rest.
        let Some((equipment, tag)) = found else {
            if is_system_topic(&msg.topic) {
                Counters::add(&self.counters.skipped_system);
                return Verdict::Accept;
            }
            return self.unmodeled(client, msg, active.generation);
        };
        if msg.payload.is_empty() && msg.retain {
            // Clearing a tag's retained state is not a sample.
            Counters::add(&self.counters.accepted);
            return Verdict::Accept;
        }
        let now = i64::try_from(msg.received_at_ms).unwrap_or(i64::MAX);
        match validate(tag, &msg.payload, now, &self.settings) {
            Ok(rewritten) => {
                // Canonical input is forwarded as is; anything else is rewritten.
                if let Some(sample) = rewritten {
                    msg.payload = Bytes::from(sample.to_json_bytes());
                }
                Counters::add(&self.counters.accepted);
                Verdict::Accept
            }
            Err(v) => {
                let why = format!(
                    "{}: {} (contract {})",
                    msg.topic,
                    v.message,
                    contract_label(equipment)
                );
                self.refuse(
                    client,
                    msg,
                    v.rule,
                    why,
                    ReasonCode::PAYLOAD_FORMAT_INVALID,
                    active.generation,
                )
            }
        }
    }
}

impl ContractInspector {
    fn unmodeled(&self, client: &ClientInfo, msg: &Message, generation: u64) -> Verdict {
        let policy = self.settings.unmodeled;
        let reason = match policy {
            UnmodeledPolicy::Allow => {
                // Flagged by counting only: the message (and its properties)
                // reaches subscribers exactly as published.
                Counters::add(&self.counters.unmodeled_allowed);
                return Verdict::Accept;
            }
            UnmodeledPolicy::DeadLetter => ReasonCode::SUCCESS,
            UnmodeledPolicy::Reject => ReasonCode::TOPIC_NAME_INVALID,
        };
        let why = format!(
            "{}: path is not in the plant model (unmodeled policy {policy})",
            msg.topic
        );
        self.refuse(client, msg, Rule::Unmodeled, why, reason, generation)
    }
}

#[cfg(test)]
mod tests;
