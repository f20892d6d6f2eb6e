//! Browsing the live namespace: the children of a path (retained topics and
//! the plant model merged, paged on the server), search, and one tag's
//! detail with its live value, contract, source and last dead letter.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use gantry_broker::Message;
use gantry_model::{Quality, Sample, SampleRef, Value};
use gantry_security::Action;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiQuery;
use crate::error::{ApiError, ApiResult};
use crate::model_index::{Contract, EquipmentInfo, NodeKind};
use crate::state::{AppState, SharedState, SourceRef};

pub const DEFAULT_PAGE: usize = 200;
pub const MAX_PAGE: usize = 1_000;

fn now_ms() -> u64 {
    gantry_broker::message::now_ms()
}

/// A tag's live value as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Live {
    pub value: serde_json::Value,
    pub quality: &'static str,
    pub timestamp_ms: Option<i64>,
    pub received_ms: u64,
    pub age_ms: u64,
    pub stale: bool,
    pub retained: bool,
}

pub fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Bool(b) => (*b).into(),
        Value::Text(t) => t.as_str().into(),
    }
}

impl Live {
    pub fn of(msg: &Message, stale_after_ms: u64, now: u64) -> Live {
        let sample = SampleRef::parse_compact(&msg.payload)
            .map(|s| s.to_sample())
            .or_else(|| Sample::parse(&msg.payload, msg.received_at_ms as i64).ok());
        let (value, quality, timestamp_ms) = match sample {
            Some(s) => (value_json(&s.value), s.quality, Some(s.timestamp_ms)),
            None => (
                String::from_utf8_lossy(&msg.payload).into_owned().into(),
                Quality::Good,
                None,
            ),
        };
        let basis = timestamp_ms
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(msg.received_at_ms);
        let age_ms = now.saturating_sub(basis);
        Live {
            value,
            quality: quality.as_str(),
            timestamp_ms,
            received_ms: msg.received_at_ms,
            age_ms,
            stale: age_ms > stale_after_ms,
            retained: msg.retain,
        }
    }
}

/// A live value for `msg` if the caller may read its topic.
fn live_for(state: &AppState, caller: &Caller, msg: Option<&Arc<Message>>) -> Option<Live> {
    let msg = msg?;
    let allowed = state
        .security()
        .check(
            Some(&caller.identity),
            crate::auth::API_CLIENT_ID,
            Action::Subscribe,
            &msg.topic,
        )
        .allowed;
    allowed.then(|| Live::of(msg, stale_after_ms(state), now_ms()))
}

pub fn stale_after_ms(state: &AppState) -> u64 {
    state.deps.settings.stale_after.as_millis() as u64
}

/// Rejects wildcards and empty levels in a path given to browse or detail.
pub fn clean_path(raw: &str, what: &str) -> ApiResult<String> {
    let path = raw.trim().trim_matches('/');
    if path.contains(['+', '#']) {
        return Err(ApiError::BadRequest(format!(
            "{what} {raw:?}: a namespace path, not a filter (no + or #)"
        )));
    }
    if path.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{what} contains a NUL character"
        )));
    }
    Ok(path.to_owned())
}

fn system_kind(path: &str) -> bool {
    path.split('/').any(|level| level.starts_with('_'))
}

#[derive(Debug, Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    pub path: String,
    pub limit: Option<usize>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub name: String,
    pub path: String,
    pub kind: NodeKind,
    pub has_children: bool,
    pub modeled: bool,
    pub live: Option<Live>,
    pub contract: Option<Contract>,
    pub source: Option<SourceRef>,
}

#[derive(Debug, Serialize)]
pub struct Browse {
    pub path: String,
    pub children: Vec<Node>,
    pub next_after: Option<String>,
}

/// `GET /api/v1/namespace`.
pub async fn browse(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<BrowseQuery>,
) -> ApiResult<Json<Browse>> {
    let path = clean_path(&q.path, "path")?;
    if path.starts_with('$') {
        return Err(ApiError::BadRequest(
            "`$` topics are broker statistics: see GET /api/v1/broker".into(),
        ));
    }
    if !path.is_empty() && !caller.may_browse(&state, &path) {
        let reason = format!(
            "{:?} may read nothing at or below {path:?} (no subscribe permission there)",
            &*caller.identity
        );
        caller.audit_denial(&state, Action::Subscribe, &path, &reason);
        return Err(ApiError::Forbidden(reason));
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    let index = state.model_index();
    let retained = state.broker().retained_children(&path, after, limit + 1);
    let modeled: Vec<(&str, NodeKind)> =
        index.children_after(&path, after).take(limit + 1).collect();
    // Merge two sorted lists by name.
    let mut merged: Vec<(
        String,
        Option<gantry_broker::RetainedChild>,
        Option<NodeKind>,
    )> = Vec::with_capacity(limit + 1);
    let (mut r, mut m) = (
        retained.into_iter().peekable(),
        modeled.into_iter().peekable(),
    );
    while merged.len() <= limit {
        let take = match (r.peek(), m.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(rc), Some((name, _))) => rc.name.as_str().cmp(name),
        };
        match take {
            std::cmp::Ordering::Less => {
                if let Some(rc) = r.next() {
                    merged.push((rc.name.clone(), Some(rc), None));
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some((name, kind)) = m.next() {
                    merged.push((name.to_owned(), None, Some(kind)));
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(rc), Some((_, kind))) = (r.next(), m.next()) {
                    merged.push((rc.name.clone(), Some(rc), Some(kind)));
                }
            }
        }
    }
    let next_after = (merged.len() > limit).then(|| merged[limit - 1].0.clone());
    merged.truncate(limit);
    let mut children = Vec::with_capacity(merged.len());
    for (name, retained, kind) in merged {
        let child_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}/{name}")
        };
        if !caller.may_browse(&state, &child_path) {
            continue;
        }
        let has_children =
            retained.as_ref().is_some_and(|r| r.has_children) || index.has_children(&child_path);
        let message = retained.as_ref().and_then(|r| r.message.as_ref());
        let kind = match kind {
            Some(k) => k,
            None if system_kind(&child_path) => NodeKind::System,
            None if message.is_some() && !has_children => NodeKind::Topic,
            None => NodeKind::Folder,
        };
        children.push(Node {
            live: live_for(&state, &caller, message),
            contract: index.tag(&child_path).map(|t| t.contract.clone()),
            source: state.deps.sources.get(&child_path).cloned(),
            modeled: index.kind(&child_path).is_some(),
            name,
            path: child_path,
            kind,
            has_children,
        });
    }
    Ok(Json(Browse {
        path,
        children,
        next_after,
    }))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct Hit {
    pub path: String,
    pub kind: NodeKind,
    pub live: Option<Live>,
    pub contract: Option<Contract>,
}

#[derive(Debug, Serialize)]
pub struct SearchResult {
    pub query: String,
    pub results: Vec<Hit>,
    pub truncated: bool,
}

/// Case-insensitive (ASCII) containment of every word (given in lower
/// case), without allocating: candidates are found with `memchr2` on the
/// word's first byte in either case, then compared.
fn contains_all(haystack: &str, words: &[Vec<u8>]) -> bool {
    let hay = haystack.as_bytes();
    words.iter().all(|w| contains_ci(hay, w))
}

fn contains_ci(hay: &[u8], word: &[u8]) -> bool {
    let Some(&first) = word.first() else {
        return true;
    };
    if word.len() > hay.len() {
        return false;
    }
    let last_start = hay.len() - word.len();
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, &hay[..=last_start])
        .any(|i| hay[i..i + word.len()].eq_ignore_ascii_case(word))
}

/// `GET /api/v1/namespace/search`.
pub async fn search(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<SearchResult>> {
    let words: Vec<Vec<u8>> =
        q.q.split(|c: char| c.is_whitespace() || c == '/')
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase().into_bytes())
            .collect();
    if words.is_empty() {
        return Err(ApiError::BadRequest(
            "q: give at least one word to search for".into(),
        ));
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    // A scan of the whole namespace: off the async workers.
    let (results, truncated) =
        tokio::task::spawn_blocking(move || search_blocking(&state, &caller, &words, limit))
            .await
            .map_err(|e| ApiError::internal("search", e))?;
    Ok(Json(SearchResult {
        query: q.q,
        results,
        truncated,
    }))
}

fn search_blocking(
    state: &SharedState,
    caller: &Caller,
    words: &[Vec<u8>],
    limit: usize,
) -> (Vec<Hit>, bool) {
    let index = state.model_index();
    // Retained topics (with values) first, then modeled nodes without one.
    let (messages, mut truncated) = state.broker().retained_search(limit * 4, |topic| {
        !topic.starts_with('$') && contains_all(topic, words)
    });
    let mut hits: Vec<Hit> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for msg in &messages {
        if !caller.may(state, Action::Subscribe, &msg.topic) {
            continue;
        }
        seen.insert(msg.topic.to_string());
        let kind = index
            .kind(&msg.topic)
            .unwrap_or(if system_kind(&msg.topic) {
                NodeKind::System
            } else {
                NodeKind::Topic
            });
        hits.push(Hit {
            path: msg.topic.to_string(),
            kind,
            live: Some(Live::of(msg, stale_after_ms(state), now_ms())),
            contract: index.tag(&msg.topic).map(|t| t.contract.clone()),
        });
    }
    for (path, kind) in index.nodes() {
        if hits.len() >= limit * 4 {
            truncated = true;
            break;
        }
        if seen.contains(path) || !contains_all(path, words) || !caller.may_browse(state, path) {
            continue;
        }
        hits.push(Hit {
            path: path.clone(),
            kind: *kind,
            live: None,
            contract: index.tag(path).map(|t| t.contract.clone()),
        });
    }
    // Shortest paths first: the node a person means before its descendants.
    hits.sort_by(|a, b| {
        a.path
            .split('/')
            .count()
            .cmp(&b.path.split('/').count())
            .then_with(|| a.path.cmp(&b.path))
    });
    if hits.len() > limit {
        hits.truncate(limit);
        truncated = true;
    }
    (hits, truncated)
}

#[derive(Debug, Deserialize)]
pub struct TagQuery {
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct TagDetail {
    pub path: String,
    pub kind: NodeKind,
    pub live: Option<Live>,
    pub contract: Option<Contract>,
    pub source: Option<SourceRef>,
    pub equipment: Option<EquipmentInfo>,
    pub dead_letter: Option<serde_json::Value>,
    pub kpi_unit: Option<String>,
    pub recorded: bool,
}

/// `GET /api/v1/tag`.
pub async fn tag(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TagQuery>,
) -> ApiResult<Json<TagDetail>> {
    let path = clean_path(&q.path, "path")?;
    if path.is_empty() {
        return Err(ApiError::BadRequest("path: name a tag".into()));
    }
    caller.require(&state, Action::Subscribe, &path)?;
    let index = state.model_index();
    let message = state.broker().retained(&path);
    let info = index.tag(&path);
    if message.is_none() && index.kind(&path).is_none() {
        return Err(ApiError::NotFound(format!(
            "{path}: no such tag (not in the plant model and no retained value)"
        )));
    }
    let dlq_topic = gantry_contracts::dead_letter::dead_letter_topic(&path);
    let dead_letter = caller
        .may(&state, Action::Subscribe, &dlq_topic)
        .then(|| state.broker().retained(&dlq_topic))
        .flatten()
        .and_then(|m| serde_json::from_slice(&m.payload).ok());
    let kpi_unit = state.deps.kpi.as_ref().and_then(|k| {
        k.config
            .units
            .iter()
            .find(|u| path.starts_with(&u.path) && path[u.path.len()..].starts_with('/'))
            .map(|u| u.path.clone())
    });
    let recorded = info.is_some() && state.deps.historian.is_some();
    Ok(Json(TagDetail {
        kind: index.kind(&path).unwrap_or(if system_kind(&path) {
            NodeKind::System
        } else {
            NodeKind::Topic
        }),
        live: message
            .as_ref()
            .map(|m| Live::of(m, stale_after_ms(&state), now_ms())),
        contract: info.map(|t| t.contract.clone()),
        equipment: info.map(|t| (*t.equipment).clone()),
        source: state.deps.sources.get(&path).cloned(),
        dead_letter,
        kpi_unit,
        recorded,
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_match_in_any_case_without_allocating() {
        let words = vec![b"line-2".to_vec(), b"capper".to_vec()];
        assert!(contains_all(
            "acme/dallas/packaging/LINE-2/Capper/state",
            &words
        ));
        assert!(!contains_all(
            "acme/dallas/packaging/line-1/capper/state",
            &words
        ));
        assert!(!contains_all("x", &words));
        assert!(contains_all("ab", &[b"b".to_vec()]));
        assert!(contains_all("AB", &[b"ab".to_vec()]));
        assert!(!contains_all("aab", &[b"abb".to_vec()]));
        assert!(contains_all(
            "acme/é/Speed",
            &[b"speed".to_vec(), b"acme".to_vec()]
        ));
    }

    #[test]
    fn a_payload_that_is_not_a_sample_is_shown_as_text() {
        let msg = Message::new("a/b", b"hello", gantry_codec::QoS::AtMostOnce, true);
        let live = Live::of(&msg, 1000, msg.received_at_ms + 10);
        assert_eq!(live.value, serde_json::Value::from("hello"));
        assert_eq!(live.quality, "good");
        assert_eq!(live.age_ms, 10);
        assert!(!live.stale);
        let msg = Message::new(
            "a/b",
            br#"{"timestamp_ms":1000,"value":2.5,"quality":"bad"}"#,
            gantry_codec::QoS::AtMostOnce,
            true,
        );
        let live = Live::of(&msg, 1000, 5000);
        assert_eq!(live.value, serde_json::json!(2.5));
        assert_eq!(live.quality, "bad");
        assert_eq!(live.timestamp_ms, Some(1000));
        assert!(live.stale);
    }

    #[test]
    fn filters_are_not_paths() {
        assert!(clean_path("acme/#", "path").is_err());
        assert_eq!(
            clean_path("/acme/dallas/", "path").ok().as_deref(),
            Some("acme/dallas")
        );
    }
}
