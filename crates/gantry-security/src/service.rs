//! [`Security`]: the broker's authenticator and authorizer. It owns the policy
//! in force (reloaded when the security file changes), the failed-login
//! back-off per address, and writes every authentication result and
//! (rate-limited) authorization denial to the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use gantry_broker::hooks::{
    AuthDecision, Authenticator, Authorizer, BoxFuture, ClientInfo, ConnectRequest,
};
use gantry_codec::ReasonCode;
use gantry_model::{SystemSubtree, path::system_subtree_of};

use crate::audit::{Actor, ActorKind, AuditEvent, AuditLog, Category, Source};
use crate::password::verify_password;
use crate::policy::{AnonymousAccess, Policy, Principal};
use crate::role::Action;
use crate::store::{IdentityKind, SecurityStore, StoreError};

/// Failed logins from one address that cost nothing; each one after that
/// doubles the wait before the next attempt is considered.
pub const FREE_FAILURES: u32 = 3;
/// The first wait after the free failures.
pub const FIRST_BACKOFF_MS: u64 = 1_000;
/// The longest wait.
pub const MAX_BACKOFF_MS: u64 = 300_000;
/// How long an authentication waits for its audit record to be durable
/// before it proceeds anyway (security must never stop production; the
/// audit log's own health reports the failure).
const AUDIT_WAIT: Duration = Duration::from_secs(2);
/// At most one audited authorization denial per client in this window; the
/// next record carries the count of denials in between.
const DENIAL_AUDIT_WINDOW_MS: u64 = 10_000;

#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until_ms: u64,
    last_ms: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Denials {
    last_audited_ms: u64,
    suppressed: u64,
}

/// Authentication and authorization for the broker (and, through
/// [`Security::check`], for every other entry point).
pub struct Security {
    store: SecurityStore,
    anonymous: AnonymousAccess,
    policy: RwLock<Arc<Policy>>,
    loaded: Mutex<Option<SystemTime>>,
    audit: Option<AuditLog>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    denials: Mutex<HashMap<Arc<str>, Denials>>,
    /// A PHC string checked when the user name is unknown, so that unknown
    /// and known names take the same time to refuse.
    decoy: String,
}

fn now_ms() -> u64 {
    gantry_broker::message::now_ms()
}

impl Security {
    /// Loads the security file of `store` (an absent file means no
    /// identities) and puts it in force with the given anonymous access.
    pub fn open(
        store: SecurityStore,
        anonymous: AnonymousAccess,
        audit: Option<AuditLog>,
    ) -> Result<Self, StoreError> {
        let loaded = store.modified();
        let file = match store.load() {
            Ok(file) => {
                if let Err(e) = store.remember_good(&file) {
                    tracing::warn!("cannot keep a last-good copy of the security file: {e}");
                }
                file
            }
            // Security must not stop production: a broken hand edit falls
            // back on the last file that loaded cleanly, loudly.
            Err(e) => match store.load_last_good() {
                Ok(file) => {
                    tracing::error!(
                        "{e}; starting with the last good copy of the security file instead ({} identities): fix the file, it is re-read when it changes",
                        file.identities.len()
                    );
                    if let Some(audit) = &audit {
                        audit.append(
                            AuditEvent::new(
                                Category::Config,
                                "security-fallback",
                                Actor::system(),
                                "load",
                                false,
                            )
                            .target(store.path().display().to_string())
                            .reason(e.to_string()),
                        );
                    }
                    file
                }
                Err(_) => return Err(e),
            },
        };
        let policy = Policy::new(&file, anonymous.clone());
        Ok(Self {
            store,
            anonymous,
            policy: RwLock::new(Arc::new(policy)),
            loaded: Mutex::new(loaded),
            audit,
            failures: Mutex::new(HashMap::new()),
            denials: Mutex::new(HashMap::new()),
            decoy: crate::password::hash_password("decoy password never matches")
                .unwrap_or_default(),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    /// The access check shared by MQTT, write commands and the HTTP API.
    pub fn check(
        &self,
        identity: Option<&str>,
        client_id: &str,
        action: Action,
        target: &str,
    ) -> crate::policy::Decision {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .check(identity, client_id, action, target)
    }

    /// Whether `identity` may read anything at or below `path`, by the policy
    /// in force: see [`Policy::may_read_below`].
    pub fn may_read_below(&self, identity: Option<&str>, path: &str) -> bool {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .may_read_below(identity, path)
    }

    /// Re-reads the security file if it changed since it was loaded. A file
    /// that cannot be read or has problems is refused (logged and audited)
    /// and the policy in force stays. Returns true when a new policy is in
    /// force.
    pub fn refresh(&self) -> bool {
        let modified = self.store.modified();
        {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if *loaded == modified {
                return false;
            }
        }
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = modified;
        match self.store.load() {
            Ok(file) => {
                if let Err(e) = self.store.remember_good(&file) {
                    tracing::warn!("cannot keep a last-good copy of the security file: {e}");
                }
                let policy = Policy::new(&file, self.anonymous.clone());
                let identities = policy.identity_count();
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                tracing::info!(
                    identities,
                    "security file changed: identities and roles reloaded"
                );
                self.record(
                    AuditEvent::new(
                        Category::Config,
                        "security-reloaded",
                        Actor::system(),
                        "reload",
                        true,
                    )
                    .target(self.store.path().display().to_string())
                    .details(serde_json::json!({ "identities": identities })),
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    "security file refused, the previous identities and roles stay in force: {e}"
                );
                self.record(
                    AuditEvent::new(
                        Category::Config,
                        "security-reload-refused",
                        Actor::system(),
                        "reload",
                        false,
                    )
                    .target(self.store.path().display().to_string())
                    .reason(e.to_string()),
                );
                false
            }
        }
    }

    /// Checks the security file every `every` until the runtime stops.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                me.refresh();
            }
        });
    }

    fn record(&self, event: AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.append(event);
        }
    }

    async fn record_durably(&self, event: AuditEvent) {
        let Some(audit) = &self.audit else { return };
        match tokio::time::timeout(AUDIT_WAIT, audit.append_durable(event)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!("audit record not durable, proceeding: {e}"),
            Err(_) => tracing::error!(
                "audit record not durable after {AUDIT_WAIT:?}, proceeding (security must not stop production)"
            ),
        }
    }

    /// Remaining back-off for `ip`, in milliseconds (0: may try now).
    fn backoff_remaining(&self, ip: Option<IpAddr>, now: u64) -> u64 {
        let Some(ip) = ip else { return 0 };
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures
            .get(&ip)
            .map_or(0, |f| f.blocked_until_ms.saturating_sub(now))
    }

    fn login_failed(&self, ip: Option<IpAddr>, now: u64) -> u64 {
        let Some(ip) = ip else { return 0 };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            // Forget addresses quiet for 15 minutes rather than grow forever.
            failures.retain(|_, f| now.saturating_sub(f.last_ms) < 900_000);
        }
        let f = failures.entry(ip).or_default();
        f.count += 1;
        f.last_ms = now;
        if f.count > FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES - 1).min(20);
            let wait = FIRST_BACKOFF_MS
                .saturating_mul(1 << doublings)
                .min(MAX_BACKOFF_MS);
            f.blocked_until_ms = now + wait;
            return wait;
        }
        0
    }

    fn login_succeeded(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ip);
        }
    }

    async fn authenticate_request(&self, request: &ConnectRequest) -> AuthDecision {
        let policy = self.policy();
        let source = Source {
            ip: request.peer.map(|p| p.ip().to_string()),
            client_id: Some(request.client_id.clone()),
            transport: Some(request.transport.to_owned()),
        };
        let ip = request.peer.map(|p| p.ip());
        let now = now_ms();

        if let Some(cert) = &request.client_cert
            && let Some(cn) = &cert.common_name
            && let Some(principal) = policy.principal(cn)
            && principal.certificate
        {
            let actor = actor_for(principal, "client-certificate");
            let refusal = if principal.disabled {
                Some(format!("identity {cn:?} is disabled"))
            } else {
                request
                    .username
                    .as_ref()
                    .filter(|u| u.as_str() != cn.as_str())
                    .map(|u| {
                        format!("user name {u:?} does not match the certificate's identity {cn:?}")
                    })
            };
            return self
                .conclude(refusal, principal, actor, source, request, ip, &cert.sha256)
                .await;
        }

        if let Some(username) = &request.username {
            let principal = policy.principal(username);
            let break_glass = principal.is_some_and(|p| p.break_glass);
            let wait = self.backoff_remaining(ip, now);
            if wait > 0 && !break_glass {
                let why = format!(
                    "too many failed logins from {}: retry in {} s",
                    ip.map_or_else(|| "?".to_owned(), |i| i.to_string()),
                    wait.div_ceil(1000)
                );
                return self
                    .refuse_login(
                        "login-throttled",
                        username,
                        source,
                        why,
                        ReasonCode::CONNECTION_RATE_EXCEEDED,
                    )
                    .await;
            }
            let password = request.password.clone().unwrap_or_default();
            let stored = principal
                .and_then(|p| p.password.clone())
                .unwrap_or_else(|| self.decoy.clone());
            let matches = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
                .await
                .unwrap_or(false);
            let Some(principal) = principal.filter(|p| matches && p.password.is_some()) else {
                let wait = self.login_failed(ip, now);
                let mut why = format!("bad user name or password for {username:?}");
                if wait > 0 {
                    why.push_str(&format!(
                        "; next attempt from this address in {} s",
                        wait.div_ceil(1000)
                    ));
                }
                return self
                    .refuse_login(
                        "login-failed",
                        username,
                        source,
                        why,
                        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                    )
                    .await;
            };
            let method = if principal.break_glass {
                "break-glass"
            } else {
                "password"
            };
            let actor = actor_for(principal, method);
            let refusal = principal
                .disabled
                .then(|| format!("identity {username:?} is disabled"));
            return self
                .conclude(refusal, principal, actor, source, request, ip, "")
                .await;
        }

        if let Some(cert) = &request.client_cert {
            let why = format!(
                "client certificate {} is not mapped to an identity allowed to use certificates",
                cert.common_name
                    .as_deref()
                    .unwrap_or("without a common name")
            );
            self.record_durably(
                AuditEvent::new(
                    Category::Authentication,
                    "login-failed",
                    anonymous_actor(),
                    "connect",
                    false,
                )
                .source(source)
                .reason(why.clone())
                .details(serde_json::json!({ "certificate_sha256": cert.sha256 })),
            )
            .await;
            return AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED, why);
        }

        let anonymous = policy.anonymous();
        let refusal = if !anonymous.enabled() {
            Some(
                "anonymous access is not allowed: log in with a user name and password or a client certificate (create identities with `gantry user add`)"
                    .to_owned(),
            )
        } else if anonymous.loopback_only && !request.peer.is_none_or(|p| p.ip().is_loopback()) {
            Some("anonymous access is allowed from this machine (loopback) only".to_owned())
        } else {
            None
        };
        let ok = refusal.is_none();
        let mut event = AuditEvent::new(
            Category::Authentication,
            if ok { "login" } else { "login-refused" },
            anonymous_actor(),
            "connect",
            ok,
        )
        .source(source);
        if let Some(why) = &refusal {
            event = event.reason(why.clone());
        }
        self.record_durably(event).await;
        match refusal {
            Some(why) => AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED, why),
            None => AuthDecision::Allow,
        }
    }

    /// Audits a refused password login (durably) and answers it.
    async fn refuse_login(
        &self,
        event_type: &str,
        username: &str,
        source: Source,
        why: String,
        code: ReasonCode,
    ) -> AuthDecision {
        self.record_durably(
            AuditEvent::new(
                Category::Authentication,
                event_type,
                actor(username, ActorKind::Human, "password"),
                "connect",
                false,
            )
            .source(source)
            .reason(why.clone()),
        )
        .await;
        AuthDecision::Deny(code, why)
    }

    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &self,
        refusal: Option<String>,
        principal: &Principal,
        actor: Actor,
        source: Source,
        request: &ConnectRequest,
        ip: Option<IpAddr>,
        certificate: &str,
    ) -> AuthDecision {
        let ok = refusal.is_none();
        let mut event = AuditEvent::new(
            Category::Authentication,
            if ok { "login" } else { "login-refused" },
            actor,
            "connect",
            ok,
        )
        .source(source);
        if !certificate.is_empty() {
            event = event.details(serde_json::json!({ "certificate_sha256": certificate }));
        }
        if let Some(why) = &refusal {
            event = event.reason(why.clone());
        }
        if ok && principal.break_glass {
            tracing::warn!(identity = %principal.name, client_id = %request.client_id, "BREAK-GLASS account logged in");
        }
        self.record_durably(event).await;
        match refusal {
            Some(why) => AuthDecision::Deny(ReasonCode::NOT_AUTHORIZED, why),
            None => {
                self.login_succeeded(ip);
                AuthDecision::Authenticated(principal.name.clone())
            }
        }
    }

    /// Publish, subscribe and command checks from the broker; denials are
    /// logged and audited (at most one record per client per window).
    fn authorize(&self, client: &ClientInfo, action: Action, target: &str) -> bool {
        let decision = self.check(
            client.identity.as_deref(),
            &client.client_id,
            action,
            target,
        );
        if decision.allowed {
            return true;
        }
        let now = now_ms();
        let suppressed = {
            let mut denials = self.denials.lock().unwrap_or_else(|e| e.into_inner());
            if denials.len() > 100_000 {
                denials
                    .retain(|_, d| now.saturating_sub(d.last_audited_ms) < DENIAL_AUDIT_WINDOW_MS);
            }
            let d = denials.entry(client.client_id.clone()).or_default();
            if now.saturating_sub(d.last_audited_ms) < DENIAL_AUDIT_WINDOW_MS {
                d.suppressed += 1;
                None
            } else {
                d.last_audited_ms = now;
                Some(std::mem::take(&mut d.suppressed))
            }
        };
        if let Some(suppressed) = suppressed {
            tracing::warn!(client_id = %client.client_id, %action, target, "denied: {}", decision.reason);
            let actor = match &client.identity {
                Some(name) => {
                    let kind = self
                        .policy()
                        .principal(name)
                        .map_or(ActorKind::Human, |p| kind_of(p.kind));
                    actor(name, kind, "session")
                }
                None => anonymous_actor(),
            };
            self.record(
                AuditEvent::new(
                    Category::Authorization,
                    &format!("{action}-denied"),
                    actor,
                    action.as_str(),
                    false,
                )
                .source(Source {
                    ip: client.peer.map(|p| p.ip().to_string()),
                    client_id: Some(client.client_id.to_string()),
                    transport: Some(client.transport.to_owned()),
                })
                .target(target)
                .reason(decision.reason)
                .details(serde_json::json!({ "denials_not_recorded_since_last": suppressed })),
            );
        }
        false
    }
}

/// For a topic in a `_cmd` subtree (`<equipment>/_cmd/<tag>`), the tag the
/// command addresses (`<equipment>/<tag>`).
pub fn command_target(topic: &str) -> Option<String> {
    if system_subtree_of(topic) != Some(SystemSubtree::Cmd) {
        return None;
    }
    let (equipment, tag) = topic.split_once("/_cmd/")?;
    Some(format!("{equipment}/{tag}"))
}

fn kind_of(kind: IdentityKind) -> ActorKind {
    match kind {
        IdentityKind::Human => ActorKind::Human,
        IdentityKind::Service => ActorKind::Service,
        IdentityKind::Device => ActorKind::Device,
    }
}

fn actor(id: &str, kind: ActorKind, auth_method: &str) -> Actor {
    Actor {
        id: id.to_owned(),
        kind,
        auth_method: Some(auth_method.to_owned()),
    }
}

fn anonymous_actor() -> Actor {
    actor("anonymous", ActorKind::Anonymous, "anonymous")
}

fn actor_for(principal: &Principal, method: &str) -> Actor {
    actor(&principal.name, kind_of(principal.kind), method)
}

impl Authenticator for Security {
    fn authenticate<'a>(&'a self, request: &'a ConnectRequest) -> BoxFuture<'a, AuthDecision> {
        Box::pin(self.authenticate_request(request))
    }
}

impl Authorizer for Security {
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        // KPI results have one author, Gantry's KPI engine (an in-process
        // publisher that is not authorized here): no client may publish into
        // a `_kpi` subtree, whatever its permissions, so every reader sees
        // the one computed value.
        if system_subtree_of(topic) == Some(SystemSubtree::Kpi) {
            return false;
        }
        // A write to a machine needs `command` on the tag it addresses.
        match command_target(topic) {
            Some(tag) => self.authorize(client, Action::Command, &tag),
            None => self.authorize(client, Action::Publish, topic),
        }
    }

    fn can_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        // A shared subscription reads what its filter matches:
        // `$share/<group>/<filter>` needs the permission for `<filter>`.
        let filter = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
            .map_or(filter, |(_, f)| f);
        self.authorize(client, Action::Subscribe, filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Identity;

    #[test]
    fn a_broken_security_file_falls_back_on_the_last_good_one_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecurityStore::in_data_dir(dir.path());
        store
            .update(|f| {
                f.identities.push(Identity {
                    name: "otto".into(),
                    kind: IdentityKind::Human,
                    roles: vec!["ot-engineer".into()],
                    password: None,
                    certificate: false,
                    disabled: false,
                    break_glass: false,
                    description: String::new(),
                    created_ms: 0,
                    updated_ms: 0,
                });
                Ok(())
            })
            .unwrap();
        let first = Security::open(store.clone(), AnonymousAccess::default(), None).unwrap();
        assert!(first.policy().principal("otto").is_some());
        std::fs::write(store.path(), "{ not json").unwrap();
        let second = Security::open(store.clone(), AnonymousAccess::default(), None).unwrap();
        assert!(second.policy().principal("otto").is_some());
        // Without any good copy, a broken file is an error that names it.
        std::fs::remove_file(store.path().with_file_name("security.last-good.json")).unwrap();
        let err = Security::open(store, AnonymousAccess::default(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("security.json"), "{err}");
    }

    #[test]
    fn command_targets_map_to_their_tag() {
        assert_eq!(
            command_target("acme/dallas/packaging/line-1/filler/_cmd/speed").as_deref(),
            Some("acme/dallas/packaging/line-1/filler/speed")
        );
        assert_eq!(command_target("acme/dallas/x/speed"), None);
    }
}
