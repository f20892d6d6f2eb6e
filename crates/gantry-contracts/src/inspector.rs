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

    /// True when the model in force declares `topic` as a tag (false without
    /// a model). The historian uses it to record modeled tags only.
    pub fn is_modeled(&self, topic: &str) -> bool {
        self.active_guard()
            .model
            .as_ref()
            .is_some_and(|m| m.tag_for_topic(topic).is_some())
    }

    /// Runs `f` with the model in force (`None` without a model) and its
    /// generation, under the read lock: readers such as the console index
    /// it once per generation instead of copying it.
    pub fn with_model<R>(&self, f: impl FnOnce(Option<&PlantModel>, u64) -> R) -> R {
        let active = self.active_guard();
        f(active.model.as_ref(), active.generation)
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

/// What the model in force says about one message.
enum Judgement {
    /// Valid; `Some(bytes)` is the canonical form to forward instead.
    Valid(Option<Bytes>),
    /// A `$` or system-subtree topic: not the contracts' business.
    System,
    /// Not modeled, and the policy lets it through.
    UnmodeledAllowed,
    /// Refused: the rule, the reason string and the MQTT 5 reason code.
    Refused {
        rule: Rule,
        why: String,
        reason: ReasonCode,
    },
}

impl ContractInspector {
    fn judge(&self, model: Option<&PlantModel>, msg: &Message) -> Judgement {
        let found = model.and_then(|m| m.tag_for_topic(&msg.topic));
        // A modeled tag is never a system topic (the model's names forbid it),
        // so the system check runs only for the rest.
        let Some((equipment, tag)) = found else {
            if is_system_topic(&msg.topic) {
                return Judgement::System;
            }
            let policy = self.settings.unmodeled;
            let reason = match policy {
                // Flagged by counting only: the message (and its properties)
                // reaches subscribers exactly as published.
                UnmodeledPolicy::Allow => return Judgement::UnmodeledAllowed,
                UnmodeledPolicy::DeadLetter => ReasonCode::SUCCESS,
                UnmodeledPolicy::Reject => ReasonCode::TOPIC_NAME_INVALID,
            };
            return Judgement::Refused {
                rule: Rule::Unmodeled,
                why: format!(
                    "{}: path is not in the plant model (unmodeled policy {policy})",
                    msg.topic
                ),
                reason,
            };
        };
        if msg.payload.is_empty() && msg.retain {
            // Clearing a tag's retained state is not a sample.
            return Judgement::Valid(None);
        }
        let now = i64::try_from(msg.received_at_ms).unwrap_or(i64::MAX);
        match validate(tag, &msg.payload, now, &self.settings) {
            // Canonical input is forwarded as is; anything else is rewritten.
            Ok(rewritten) => Judgement::Valid(rewritten.map(|s| Bytes::from(s.to_json_bytes()))),
            Err(v) => Judgement::Refused {
                rule: v.rule,
                why: format!(
                    "{}: {} (contract {})",
                    msg.topic,
                    v.message,
                    contract_label(equipment)
                ),
                reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
            },
        }
    }
}

impl PublishInspector for ContractInspector {
    fn inspect(&self, client: &ClientInfo, msg: &mut Message) -> Verdict {
        let active = self.active_guard();
        match self.judge(active.model.as_ref(), msg) {
            Judgement::Valid(rewritten) => {
                if let Some(bytes) = rewritten {
                    msg.payload = bytes;
                }
                Counters::add(&self.counters.accepted);
                Verdict::Accept
            }
            Judgement::System => {
                Counters::add(&self.counters.skipped_system);
                Verdict::Accept
            }
            Judgement::UnmodeledAllowed => {
                Counters::add(&self.counters.unmodeled_allowed);
                Verdict::Accept
            }
            Judgement::Refused { rule, why, reason } => {
                self.refuse(client, msg, rule, why, reason, active.generation)
            }
        }
    }
}

/// What re-judging the retained state after a reload did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedRecheck {
    /// Retained data topics judged against the new model.
    pub checked: usize,
    /// Values the new model refuses: moved to the dead-letter subtree and
    /// removed from the live state.
    pub dead_lettered: usize,
    /// Values the new model accepts in another form (e.g. a bare `42` on a
    /// path that is now a modeled float): rewritten in canonical form.
    pub rewritten: usize,
}

impl ContractInspector {
    /// Judges every retained data value against the model in force, so that
    /// the live state never holds a value the current contracts refuse: a
    /// refused value leaves the live state and goes to the dead-letter
    /// subtree with its reason (nothing is silently dropped); a value that
    /// is valid in another form is rewritten in canonical form. Subscribers
    /// are not sent anything for the live paths. Run after a reload.
    pub fn recheck_retained(&self, broker: &Broker) -> RetainedRecheck {
        let active = self.current();
        let mut outcome = RetainedRecheck::default();
        for msg in broker.retained_matching("#") {
            let judgement = self.judge(active.model.as_ref(), &msg);
            if matches!(judgement, Judgement::System) {
                continue;
            }
            outcome.checked += 1;
            match judgement {
                Judgement::Valid(Some(bytes)) => {
                    let mut next = (*msg).clone();
                    next.payload = bytes;
                    if broker.replace_retained(&msg, Some(Arc::new(next))) {
                        outcome.rewritten += 1;
                    }
                }
                Judgement::Refused { rule, why, .. } => {
                    if !broker.replace_retained(&msg, None) {
                        continue; // A newer publish replaced it meanwhile.
                    }
                    outcome.dead_lettered += 1;
                    let publisher = msg.publisher.as_deref().unwrap_or("unknown");
                    let why = format!(
                        "{why}; retained value removed from the live state when model generation {} came into force",
                        active.generation
                    );
                    let client = ClientInfo {
                        client_id: Arc::from(publisher),
                        username: None,
                        identity: None,
                        peer: None,
                        transport: "internal",
                    };
                    if let Verdict::Reject {
                        dead_letter: Some(dl),
                        ..
                    } = self.refuse(
                        &client,
                        &msg,
                        rule,
                        why,
                        ReasonCode::SUCCESS,
                        active.generation,
                    ) {
                        let mut dead =
                            Message::new(&dl.topic, &dl.payload, QoS::AtLeastOnce, dl.retain);
                        dead.publisher = Some(Arc::from("gantry-contracts"));
                        broker.route(Arc::new(dead));
                    }
                }
                Judgement::Valid(None) | Judgement::UnmodeledAllowed | Judgement::System => {}
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
