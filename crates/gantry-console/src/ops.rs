//! Operations views: dead letters with their reasons, connector health,
//! broker, historian and contract statistics, and the connected clients.

use axum::Json;
use axum::extract::State;
use gantry_security::Action;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiQuery;
use crate::error::ApiResult;
use crate::state::SharedState;

/// Whether the caller may read anything under `<enterprise>/<below>` for
/// some enterprise of the model or the live namespace: an empty answer is
/// then "nothing there yet", not a refusal.
fn may_read_under_some_enterprise(state: &SharedState, caller: &Caller, below: &str) -> bool {
    let index = state.model_index();
    let modeled = index
        .children_after("", None)
        .map(|(name, _)| name.to_owned());
    let live = state
        .broker()
        .retained_children("", None, 1_000)
        .into_iter()
        .map(|c| c.name);
    modeled
        .chain(live)
        .any(|enterprise| caller.may_browse(state, &format!("{enterprise}/{below}")))
}

#[derive(Debug, Deserialize)]
pub struct DeadLetterParams {
    pub limit: Option<usize>,
    /// Only dead letters of topics at or below this path.
    pub path: Option<String>,
}

/// `GET /api/v1/dead-letters`: the last dead letter of every topic (the
/// retained records), newest first.
pub async fn dead_letters(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<DeadLetterParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = p.limit.unwrap_or(200).clamp(1, 10_000);
    let prefix = p
        .path
        .as_deref()
        .map(|p| p.trim().trim_matches('/'))
        .filter(|p| !p.is_empty());
    let readable: Vec<_> = state
        .broker()
        .retained_matching("+/_dlq/#")
        .into_iter()
        .filter(|m| caller.may(&state, Action::Subscribe, &m.topic))
        .collect();
    if readable.is_empty() && !may_read_under_some_enterprise(&state, &caller, "_dlq") {
        // Nothing readable: say so rather than answer an empty list that
        // looks like "no dead letters".
        caller.require(&state, Action::Subscribe, "+/_dlq/#")?;
    }
    let mut entries: Vec<serde_json::Value> = readable
        .iter()
        .filter_map(|m| {
            let mut record: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
            let topic = record.get("topic")?.as_str()?.to_owned();
            if let Some(prefix) = prefix
                && !(topic.starts_with(prefix)
                    && (topic.len() == prefix.len() || topic[prefix.len()..].starts_with('/')))
            {
                return None;
            }
            record
                .as_object_mut()?
                .insert("dlq_topic".into(), m.topic.as_ref().into());
            Some(record)
        })
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.get("received_ms").and_then(|v| v.as_u64())));
    let total = entries.len();
    entries.truncate(limit);
    let counters = state
        .deps
        .contracts
        .as_ref()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c.stats_json()).ok());
    Ok(Json(serde_json::json!({
        "entries": entries,
        "total": total,
        "counters": counters,
    })))
}

/// `GET /api/v1/connectors`: the health every connector publishes under
/// `<enterprise>/_sys/connectors/`.
pub async fn connectors(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let all = state.broker().retained_matching("+/_sys/connectors/#");
    if all.is_empty() && !may_read_under_some_enterprise(&state, &caller, "_sys/connectors") {
        caller.require(&state, Action::Subscribe, "+/_sys/connectors/#")?;
    }
    let mut denied = 0usize;
    let connectors: Vec<serde_json::Value> = all
        .iter()
        .filter(|m| {
            let ok = caller.may(&state, Action::Subscribe, &m.topic);
            denied += usize::from(!ok);
            ok
        })
        .map(|m| {
            let health = serde_json::from_slice::<serde_json::Value>(&m.payload)
                .unwrap_or_else(|_| String::from_utf8_lossy(&m.payload).into_owned().into());
            serde_json::json!({
                "topic": &*m.topic,
                "received_ms": m.received_at_ms,
                "health": health,
            })
        })
        .collect();
    if connectors.is_empty() && denied > 0 {
        caller.require(&state, Action::Subscribe, "+/_sys/connectors/#")?;
    }
    Ok(Json(serde_json::json!({ "connectors": connectors })))
}

/// `GET /api/v1/broker`.
pub async fn broker(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Subscribe, "$SYS/#")?;
    let s = state.broker().stats();
    let historian = state
        .deps
        .historian
        .as_ref()
        .and_then(|h| serde_json::to_value(h.status()).ok());
    let contracts = state
        .deps
        .contracts
        .as_ref()
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c.stats_json()).ok());
    let audit = state.security().audit().map(|a| {
        let h = a.health();
        serde_json::json!({
            "last_seq": h.last_seq,
            "pending": h.pending,
            "failing": h.failing,
            "last_error": h.last_error,
            "dropped": h.dropped,
        })
    });
    Ok(Json(serde_json::json!({
        "stats": {
            "uptime_secs": s.uptime_secs,
            "clients_connected": s.clients_connected,
            "sessions": s.sessions,
            "connections_total": s.connections_total,
            "messages_received": s.messages_received,
            "messages_sent": s.messages_sent,
            "messages_dropped": s.messages_dropped,
            "publishes_rejected": s.publishes_rejected,
            "bytes_received": s.bytes_received,
            "bytes_sent": s.bytes_sent,
            "retained": s.retained,
            "subscriptions": s.subscriptions,
            "protocol_errors": s.protocol_errors,
            "clients_throttled": s.clients_throttled,
            "connections_rate_limited": s.connections_rate_limited,
        },
        "historian": historian,
        "contracts": contracts,
        "audit": audit,
        "console": {
            "sessions": state.sessions.len(),
            "live": state.deps.live.stats(),
        },
    })))
}

/// `GET /api/v1/clients`.
pub async fn clients(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Subscribe, "$SYS/#")?;
    let clients: Vec<serde_json::Value> = state
        .broker()
        .clients()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "client_id": c.client_id,
                "connected": c.connected,
                "identity": c.identity,
                "peer": c.peer.map(|p| p.to_string()),
                "transport": c.transport,
                "protocol_version": c.protocol_version,
                "connected_since_ms": c.connected_since_ms,
                "subscriptions": c.subscriptions,
                "queued": c.queued,
                "inflight": c.inflight,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "clients": clients })))
}
