//! Logging in with the same identities as MQTT (the broker's authenticator,
//! with its back-off and audit records), the sessions that follow (a cookie
//! for the console, a bearer token for scripts), and the per-request
//! permission checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gantry_broker::hooks::{AuthDecision, Authenticator, ConnectRequest};
use gantry_codec::ReasonCode;
use gantry_security::Action;
use gantry_security::audit::{Actor, ActorKind, AuditEvent, Category, Source};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "gantry_session";
/// The client id the policy sees for API calls (`${client_id}` in patterns).
pub const API_CLIENT_ID: &str = "console";
/// At most one audited API denial per identity in this window.
pub const DENIAL_AUDIT_WINDOW_MS: u64 = 10_000;
/// More live sessions than this and the oldest are dropped.
const MAX_SESSIONS: usize = 10_000;

fn now_ms() -> u64 {
    gantry_broker::message::now_ms()
}

#[derive(Debug, Clone)]
struct Session {
    identity: Arc<str>,
    expires_ms: u64,
}

/// Live sessions, keyed by the SHA-256 of their token (the token itself is
/// only ever held by the client).
pub struct Sessions {
    ttl: Duration,
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    rng: SystemRandom,
    /// Per identity: when a denial was last audited, and how many since.
    denials: Mutex<HashMap<Arc<str>, (u64, u64)>>,
}

fn token_hash(token: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            by_hash: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
            denials: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `identity`: its token and expiry.
    pub fn create(&self, identity: Arc<str>) -> ApiResult<(String, u64)> {
        let mut raw = [0u8; 32];
        self.rng
            .fill(&mut raw)
            .map_err(|_| ApiError::Internal("no random numbers for a session token".into()))?;
        let token = hex(&raw);
        let now = now_ms();
        let expires_ms = now + self.ttl.as_millis() as u64;
        let mut sessions = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires_ms > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            token_hash(&token),
            Session {
                identity,
                expires_ms,
            },
        );
        Ok((token, expires_ms))
    }

    fn find(&self, token: &str) -> Option<Session> {
        let hash = token_hash(token);
        let mut sessions = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&hash) {
            Some(s) if s.expires_ms > now_ms() => Some(s.clone()),
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    fn end(&self, token: &str) -> Option<Arc<str>> {
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&token_hash(token))
            .map(|s| s.identity)
    }

    /// Whether a denial for `identity` is to be audited now; if so, how many
    /// were not recorded since the last one.
    fn denial_due(&self, identity: &Arc<str>) -> Option<u64> {
        let now = now_ms();
        let mut denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
        if denials.len() > 10_000 {
            denials.retain(|_, (last, _)| now.saturating_sub(*last) < DENIAL_AUDIT_WINDOW_MS);
        }
        let (last, suppressed) = denials.entry(identity.clone()).or_insert((0, 0));
        if now.saturating_sub(*last) < DENIAL_AUDIT_WINDOW_MS {
            *suppressed += 1;
            return None;
        }
        *last = now;
        Some(std::mem::take(suppressed))
    }

    pub fn len(&self) -> usize {
        self.by_hash.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The token a request carries: `Authorization: Bearer`, else the cookie.
fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

/// The logged-in identity behind a request. Extracting it answers 401 when
/// the request carries no live session.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Arc<str>,
    pub peer: Option<SocketAddr>,
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> ApiResult<Caller> {
        let token = request_token(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "log in first: POST /api/v1/login, then send the session cookie or `Authorization: Bearer <token>`"
                    .into(),
            )
        })?;
        let session = state.sessions.find(&token).ok_or_else(|| {
            ApiError::Unauthorized("the session has expired or was ended: log in again".into())
        })?;
        // A session ends with its identity: removed or disabled since login.
        let policy = state.security().policy();
        match policy.principal(&session.identity) {
            Some(p) if !p.disabled => {}
            Some(_) => {
                return Err(ApiError::Unauthorized(format!(
                    "identity {:?} is disabled",
                    &*session.identity
                )));
            }
            None => {
                return Err(ApiError::Unauthorized(format!(
                    "identity {:?} no longer exists",
                    &*session.identity
                )));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<crate::PeerAddr>>()
            .map(|c| c.0.0);
        Ok(Caller {
            identity: session.identity,
            peer,
        })
    }
}

impl Caller {
    /// Whether this caller may perform `action` on `target`.
    pub fn may(&self, state: &SharedState, action: Action, target: &str) -> bool {
        state
            .security()
            .check(Some(&self.identity), API_CLIENT_ID, action, target)
            .allowed
    }

    /// Answers 403 (and audits the denial) unless the caller may perform
    /// `action` on `target`.
    pub fn require(&self, state: &SharedState, action: Action, target: &str) -> ApiResult<()> {
        let decision = state
            .security()
            .check(Some(&self.identity), API_CLIENT_ID, action, target);
        if decision.allowed {
            return Ok(());
        }
        self.audit_denial(state, action, target, &decision.reason);
        Err(ApiError::Forbidden(decision.reason))
    }

    /// Whether the caller may see a namespace node at `path` (something at
    /// or below it is readable).
    pub fn may_browse(&self, state: &SharedState, path: &str) -> bool {
        state.security().may_read_below(Some(&self.identity), path)
    }

    /// Audits a denied request: at most one record per identity per
    /// [`DENIAL_AUDIT_WINDOW_MS`], the next one carrying the count in between
    /// (a console left open on a forbidden page must not flood the log).
    pub fn audit_denial(&self, state: &SharedState, action: Action, target: &str, reason: &str) {
        let Some(suppressed) = state.sessions.denial_due(&self.identity) else {
            return;
        };
        if let Some(audit) = state.security().audit() {
            audit.append(
                AuditEvent::new(
                    Category::Authorization,
                    &format!("api-{action}-denied"),
                    Actor::new(
                        self.identity.to_string(),
                        actor_kind(state, &self.identity),
                        Some("session"),
                    ),
                    action.as_str(),
                    false,
                )
                .source(source(self.peer))
                .target(target)
                .reason(reason.to_owned())
                .details(serde_json::json!({ "denials_not_recorded_since_last": suppressed })),
            );
        }
    }
}

/// The audit log's kind for an identity (a device denied is not a person).
fn actor_kind(state: &SharedState, identity: &str) -> ActorKind {
    match state
        .security()
        .policy()
        .principal(identity)
        .map(|p| p.kind)
    {
        Some(gantry_security::IdentityKind::Device) => ActorKind::Device,
        Some(gantry_security::IdentityKind::Service) => ActorKind::Service,
        _ => ActorKind::Human,
    }
}

fn source(peer: Option<SocketAddr>) -> Source {
    Source {
        ip: peer.map(|p| p.ip().to_string()),
        client_id: Some(API_CLIENT_ID.to_owned()),
        transport: Some("http".to_owned()),
    }
}

#[derive(Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

fn session_cookie(state: &SharedState, token: &str, max_age_s: u64) -> Option<HeaderValue> {
    let secure = if state.deps.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// `POST /api/v1/login`.
pub async fn login(
    State(state): State<SharedState>,
    peer: ConnectInfo<crate::PeerAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    require_json(&headers)?;
    let request: LoginRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"username\": \"...\", \"password\": \"...\"}}: {e}"
        ))
    })?;
    if request.username.is_empty() {
        return Err(ApiError::BadRequest("username is empty".into()));
    }
    let connect = ConnectRequest {
        client_id: API_CLIENT_ID.to_owned(),
        username: Some(request.username.clone()),
        password: Some(bytes::Bytes::from(request.password.into_bytes())),
        peer: Some(peer.0.0),
        transport: "http",
        client_cert: None,
    };
    let identity = match state.deps.security.authenticate(&connect).await {
        AuthDecision::Authenticated(identity) => identity,
        AuthDecision::Deny(code, why) if code == ReasonCode::CONNECTION_RATE_EXCEEDED => {
            let retry_after_s = why
                .split("retry in ")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            return Err(ApiError::TooManyRequests {
                message: why,
                retry_after_s,
            });
        }
        AuthDecision::Deny(_, why) => return Err(ApiError::Unauthorized(why)),
        AuthDecision::Allow => {
            return Err(ApiError::Unauthorized(
                "anonymous access does not open the console: log in with a user name and password"
                    .into(),
            ));
        }
    };
    let (token, expires_ms) = state.sessions.create(identity.clone())?;
    let roles = roles_of(&state, &identity);
    let mut response = Json(serde_json::json!({
        "token": token,
        "identity": &*identity,
        "roles": roles,
        "expires_ms": expires_ms,
    }))
    .into_response();
    let max_age = state.deps.settings.session_ttl.as_secs();
    if let Some(cookie) = session_cookie(&state, &token, max_age) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `POST /api/v1/logout`.
pub async fn logout(State(state): State<SharedState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = request_token(&headers) {
        state.sessions.end(&token);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = session_cookie(&state, "", 0) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    Ok(response)
}

fn roles_of(state: &SharedState, identity: &str) -> Vec<String> {
    state
        .security()
        .policy()
        .principal(identity)
        .map(|p| p.roles.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

/// `GET /api/v1/me`: who is logged in and which parts of the console apply.
pub async fn me(State(state): State<SharedState>, caller: Caller) -> Json<serde_json::Value> {
    let read = caller.may_browse(&state, "");
    Json(serde_json::json!({
        "identity": &*caller.identity,
        "roles": roles_of(&state, &caller.identity),
        "can": {
            "read": read,
            "command": any_command(&state, &caller),
            "sys": caller.may(&state, Action::Subscribe, "$SYS/#"),
            "users": caller.may(&state, Action::Admin, gantry_security::role::resource::USERS),
            "roles": caller.may(&state, Action::Admin, gantry_security::role::resource::ROLES),
            "audit": caller.may(&state, Action::Admin, gantry_security::role::resource::AUDIT),
        },
    }))
}

/// Whether any role of the caller grants `command` somewhere (the console
/// then offers writes; each is still checked on its tag).
fn any_command(state: &SharedState, caller: &Caller) -> bool {
    state
        .security()
        .policy()
        .principal(&caller.identity)
        .is_some_and(|p| {
            !p.disabled
                && p.roles
                    .iter()
                    .any(|r| r.permissions.iter().any(|x| x.action == Action::Command))
        })
}

/// POST bodies must say they are JSON: a cross-site form cannot, which
/// keeps session cookies from being used by other sites.
pub fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "send the request body as JSON with `Content-Type: application/json`".into(),
        ))
    }
}
