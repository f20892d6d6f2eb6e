//! Governed write-back: the gate every write to a machine passes. A write is
//! a publish to `<equipment>/_cmd/<tag>`; it reaches the connectors (which
//! subscribe to `_cmd`) only if
//!
//! 1. the writer holds `command` on `<equipment>/<tag>` (checked by the
//!    authorizer, see [`crate::service`]),
//! 2. the tag is on the site model's write allow-list (`write = ...`; no tag
//!    is writable by default),
//! 3. the value satisfies the tag's contract (type, range, enum),
//! 4. the tag's rate limit (`max_per_minute`) has room, and
//! 5. for `approval = "two-person"` tags, a second identity with `command`
//!    on the tag approved it within [`APPROVAL_TTL_MS`].
//!
//! Every request, approval, release and refusal is audited; a released
//! write is acknowledged only once its audit record is durable. Refused
//! writes are answered with a reason (MQTT 5) and copied to the dead-letter
//! subtree, never dropped silently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use gantry_broker::Message;
use gantry_broker::hooks::{ClientInfo, DeadLetter, PublishInspector, Verdict};
use gantry_codec::ReasonCode;
use gantry_contracts::dead_letter::dead_letter_topic;
use gantry_contracts::{ContractSettings, validate_sample};
use gantry_model::{PlantModel, TagSpec};

use crate::audit::{Actor, ActorKind, AuditEvent, AuditLog, Category, Source};
use crate::service::command_target;

/// How long a two-person write waits for its approval.
pub const APPROVAL_TTL_MS: u64 = 5 * 60 * 1000;
/// Pending approvals kept at most (oldest dropped, audited as expired).
const MAX_PENDING: usize = 1_000;

/// A write waiting for its second person.
#[derive(Debug, Clone)]
pub struct PendingWrite {
    pub id: String,
    /// The tag (`<equipment>/<tag>`).
    pub target: String,
    /// The `_cmd` topic the write was published to.
    pub command_topic: String,
    pub requested_by: String,
    pub requested_ms: u64,
    /// The canonical sample to release.
    pub payload: Bytes,
}

/// Why a write was refused: the dead letter's `rule` and the reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRefusal {
    UnknownTag,
    NotWritable,
    Contract,
    RateLimited,
    Approval,
}

impl WriteRefusal {
    pub const fn rule(self) -> &'static str {
        match self {
            WriteRefusal::UnknownTag => "write-unknown-tag",
            WriteRefusal::NotWritable => "write-not-allowed",
            WriteRefusal::Contract => "write-contract",
            WriteRefusal::RateLimited => "write-rate-limit",
            WriteRefusal::Approval => "write-approval",
        }
    }

    const fn reason_code(self) -> ReasonCode {
        match self {
            WriteRefusal::Contract => ReasonCode::PAYLOAD_FORMAT_INVALID,
            WriteRefusal::RateLimited => ReasonCode::QUOTA_EXCEEDED,
            _ => ReasonCode::NOT_AUTHORIZED,
        }
    }
}

/// The write-back gate: a publish inspector for `_cmd` topics.
pub struct WriteGate {
    model: RwLock<Option<Arc<PlantModel>>>,
    settings: ContractSettings,
    audit: Option<AuditLog>,
    recent: Mutex<HashMap<String, VecDeque<u64>>>,
    pending: Mutex<HashMap<String, PendingWrite>>,
}

impl WriteGate {
    pub fn new(
        model: Option<PlantModel>,
        settings: ContractSettings,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            model: RwLock::new(model.map(Arc::new)),
            settings,
            audit,
            recent: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Puts a reloaded plant model (and its write allow-list) in force.
    pub fn reload(&self, model: Option<PlantModel>) {
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = model.map(Arc::new);
    }

    /// Writes waiting for a second person, oldest first.
    pub fn pending(&self) -> Vec<PendingWrite> {
        let mut list: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by_key(|p| p.requested_ms);
        list
    }

    fn audit_event(&self, event: AuditEvent) -> Option<u64> {
        self.audit.as_ref().map(|a| a.append(event))
    }

    /// Accepts a released write, holding the acknowledgement until its
    /// audit record is durable.
    fn release(&self, seq: Option<u64>) -> Verdict {
        match (self.audit.as_ref(), seq) {
            (Some(audit), Some(seq)) => Verdict::AcceptAfter(audit.durable_gate(seq)),
            _ => Verdict::Accept,
        }
    }

    fn refuse(
        &self,
        client: &ClientInfo,
        msg: &Message,
        target: &str,
        kind: WriteRefusal,
        why: String,
    ) -> Verdict {
        tracing::warn!(client_id = %client.client_id, target, "write refused: {why}");
        self.audit_event(
            event(client, "write-refused", "write", false)
                .target(target)
                .reason(why.clone())
                .details(serde_json::json!({
                    "rule": kind.rule(),
                    "command_topic": msg.topic.as_ref(),
                    "payload": String::from_utf8_lossy(&msg.payload),
                })),
        );
        let body = serde_json::json!({
            "topic": msg.topic.as_ref(),
            "reason": why,
            "rule": kind.rule(),
            "client_id": client.client_id.as_ref(),
            "identity": client.identity.as_deref(),
            "received_ms": msg.received_at_ms,
            "qos": msg.qos as u8,
            "retain": msg.retain,
            "payload": String::from_utf8_lossy(&msg.payload),
        });
        Verdict::Reject {
            reason: kind.reason_code(),
            reason_string: why,
            dead_letter: Some(DeadLetter {
                topic: dead_letter_topic(&msg.topic),
                payload: Bytes::from(body.to_string()),
                retain: false,
            }),
        }
    }

    /// True (and the slot taken) when the tag may be written once more now.
    fn take_rate_slot(&self, target: &str, limit: Option<u32>, now: u64) -> bool {
        let Some(limit) = limit else { return true };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let window = recent.entry(target.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= 60_000)
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return false;
        }
        window.push_back(now);
        true
    }

    fn decide(&self, client: &ClientInfo, msg: &mut Message, target: &str) -> Verdict {
        let model = self.model.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tag) = model
            .as_ref()
            .and_then(|m| m.tag_for_topic(target))
            .map(|(_, tag)| tag.clone())
        else {
            return self.refuse(
                client,
                msg,
                target,
                WriteRefusal::UnknownTag,
                format!("{target}: no such tag in the plant model; nothing to write"),
            );
        };
        let Some(policy) = tag.write.clone() else {
            return self.refuse(
                client,
                msg,
                target,
                WriteRefusal::NotWritable,
                format!(
                    "{target}: tag is read-only (not on the site's write allow-list; add `write = ...` to the tag in the site model)"
                ),
            );
        };
        let now = msg.received_at_ms;
        if let Some(decision) = self.approval_message(client, msg, target, &policy, now) {
            return decision;
        }
        let sample = match validate_sample(
            &tag,
            &msg.payload,
            i64::try_from(now).unwrap_or(i64::MAX),
            &self.settings,
        ) {
            Ok(sample) => sample,
            Err(v) => {
                return self.refuse(
                    client,
                    msg,
                    target,
                    WriteRefusal::Contract,
                    format!("{target}: {v}"),
                );
            }
        };
        let payload = Bytes::from(sample.to_json_bytes());
        let requester = who(client);
        if policy.two_person {
            let id = request_id();
            let pending = PendingWrite {
                id: id.clone(),
                target: target.to_owned(),
                command_topic: msg.topic.to_string(),
                requested_by: requester.clone(),
                requested_ms: now,
                payload: payload.clone(),
            };
            {
                let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                all.retain(|_, p| now.saturating_sub(p.requested_ms) < APPROVAL_TTL_MS);
                if all.len() >= MAX_PENDING
                    && let Some(oldest) = all
                        .values()
                        .min_by_key(|p| p.requested_ms)
                        .map(|p| p.id.clone())
                {
                    all.remove(&oldest);
                }
                all.insert(id.clone(), pending);
            }
            self.audit_event(
                event(client, "write-requested", "write", true)
                    .target(target)
                    .correlation(id.clone())
                    .reason("held for a second person's approval")
                    .details(serde_json::json!({ "value": String::from_utf8_lossy(&payload) })),
            );
            let why = format!(
                "{target}: held for a second person's approval: publish {{\"approve\":\"{id}\"}} to {} within {} minutes",
                msg.topic,
                APPROVAL_TTL_MS / 60_000
            );
            // Accepted (success) but not routed: nothing reaches the machine yet.
            return Verdict::Reject {
                reason: ReasonCode::SUCCESS,
                reason_string: why,
                dead_letter: None,
            };
        }
        if !self.take_rate_slot(target, policy.max_per_minute, now) {
            return self.refuse(
                client,
                msg,
                target,
                WriteRefusal::RateLimited,
                format!(
                    "{target}: write rate limit of {} per minute reached",
                    policy.max_per_minute.unwrap_or_default()
                ),
            );
        }
        let seq = self.audit_event(
            event(client, "write-released", "write", true)
                .target(target)
                .details(serde_json::json!({ "value": String::from_utf8_lossy(&payload) })),
        );
        msg.payload = payload;
        self.release(seq)
    }

    /// Handles `{"approve": ID}` and `{"reject": ID}` payloads; `None` when
    /// the payload is a value, not an approval.
    fn approval_message(
        &self,
        client: &ClientInfo,
        msg: &mut Message,
        target: &str,
        policy: &gantry_model::WritePolicy,
        now: u64,
    ) -> Option<Verdict> {
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).ok()?;
        let (approve, id) = match (body.get("approve"), body.get("reject")) {
            (Some(id), None) => (true, id.as_str()?.to_owned()),
            (None, Some(id)) => (false, id.as_str()?.to_owned()),
            _ => return None,
        };
        let approver = who(client);
        let pending = {
            let mut all = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match all.get(&id) {
                None => None,
                Some(p) if p.target != target => None,
                Some(p) if now.saturating_sub(p.requested_ms) >= APPROVAL_TTL_MS => {
                    all.remove(&id);
                    None
                }
                Some(p) if approve && (client.identity.is_none() || p.requested_by == approver) => {
                    let why = format!(
                        "{target}: write {id} needs a second person: {approver} requested it"
                    );
                    drop(all);
                    return Some(self.refuse(client, msg, target, WriteRefusal::Approval, why));
                }
                Some(_) => all.remove(&id),
            }
        };
        let Some(pending) = pending else {
            let why =
                format!("{target}: no pending write {id:?} (unknown, expired or for another tag)");
            return Some(self.refuse(client, msg, target, WriteRefusal::Approval, why));
        };
        if !approve {
            self.audit_event(
                event(client, "write-rejected", "reject-write", true)
                    .target(target)
                    .correlation(id.clone())
                    .details(serde_json::json!({ "requested_by": pending.requested_by })),
            );
            return Some(Verdict::Reject {
                reason: ReasonCode::SUCCESS,
                reason_string: format!("{target}: write {id} rejected; nothing was written"),
                dead_letter: None,
            });
        }
        if !self.take_rate_slot(target, policy.max_per_minute, now) {
            // Put it back: it can be approved again once the rate allows.
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), pending);
            let why = format!(
                "{target}: write rate limit of {} per minute reached; approve again later",
                policy.max_per_minute.unwrap_or_default()
            );
            return Some(self.refuse(client, msg, target, WriteRefusal::RateLimited, why));
        }
        let seq = self.audit_event(
            event(client, "write-approved", "approve-write", true)
                .target(target)
                .correlation(id.clone())
                .details(serde_json::json!({
                    "requested_by": pending.requested_by,
                    "value": String::from_utf8_lossy(&pending.payload),
                })),
        );
        msg.payload = pending.payload;
        Some(self.release(seq))
    }
}

/// Who is writing, as recorded in pending writes and the audit log.
fn who(client: &ClientInfo) -> String {
    match &client.identity {
        Some(identity) => identity.to_string(),
        None => format!("anonymous:{}", client.client_id),
    }
}

fn event(client: &ClientInfo, event_type: &str, action: &str, success: bool) -> AuditEvent {
    let actor = match &client.identity {
        Some(identity) => Actor {
            id: identity.to_string(),
            kind: ActorKind::Human,
            auth_method: Some("session".to_owned()),
        },
        None => Actor {
            id: format!("anonymous:{}", client.client_id),
            kind: ActorKind::Anonymous,
            auth_method: Some("anonymous".to_owned()),
        },
    };
    AuditEvent::new(Category::WriteCommand, event_type, actor, action, success).source(Source {
        ip: client.peer.map(|p| p.ip().to_string()),
        client_id: Some(client.client_id.to_string()),
        transport: Some(client.transport.to_owned()),
    })
}

fn request_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without system randomness, fall back on the clock: ids only need
        // to be unique among a few pending writes.
        bytes = gantry_broker::message::now_ms().to_be_bytes();
    }
    hex::encode(bytes)
}

impl PublishInspector for WriteGate {
    fn inspect(&self, client: &ClientInfo, msg: &mut Message) -> Verdict {
        match command_target(&msg.topic) {
            Some(target) => self.decide(client, msg, &target),
            None => Verdict::Accept,
        }
    }
}

/// A tag's write policy, for display (console, `gantry check`).
pub fn describe(tag: &TagSpec) -> String {
    match &tag.write {
        None => "read-only".to_owned(),
        Some(p) => {
            let mut parts = vec!["writable".to_owned()];
            if let Some(n) = p.max_per_minute {
                parts.push(format!("at most {n}/min"));
            }
            if p.two_person {
                parts.push("two-person approval".to_owned());
            }
            parts.join(", ")
        }
    }
}
