//! Administration views: identities and roles (for those who administer
//! them) and the tamper-evident audit log with its chain verification (for
//! the security role).

use axum::Json;
use axum::extract::State;
use gantry_security::role::{builtin_roles, resource};
use gantry_security::{Action, SecurityStore};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::error::{ApiPath, ApiQuery};
use crate::state::SharedState;

fn store(state: &SharedState) -> SecurityStore {
    state.deps.security_store.clone()
}

/// `GET /api/v1/users`: identities without their password hashes.
pub async fn users(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Admin, resource::USERS)?;
    let file = store(&state)
        .load()
        .map_err(|e| ApiError::internal("security file", e))?;
    let users: Vec<serde_json::Value> = file
        .identities
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name,
                "kind": i.kind,
                "roles": i.roles,
                "disabled": i.disabled,
                "break_glass": i.break_glass,
                "certificate": i.certificate,
                "password": i.password.is_some(),
                "description": i.description,
                "created_ms": i.created_ms,
                "updated_ms": i.updated_ms,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "users": users })))
}

/// `GET /api/v1/roles`: built-in and site roles.
pub async fn roles(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Admin, resource::ROLES)?;
    let file = store(&state)
        .load()
        .map_err(|e| ApiError::internal("security file", e))?;
    let roles: Vec<serde_json::Value> = builtin_roles()
        .iter()
        .chain(file.roles.iter())
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "description": r.description,
                "permissions": r.permissions,
                "builtin": r.builtin,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "roles": roles })))
}

#[derive(Debug, Deserialize)]
pub struct AuditParams {
    pub limit: Option<usize>,
    /// Only records of this category (`authentication`, `authorization`, …).
    pub category: Option<String>,
    /// Verify the whole hash chain and checkpoints (default true).
    pub verify: Option<bool>,
}

/// `GET /api/v1/audit`: the newest records first, and the chain's state.
pub async fn audit(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Admin, resource::AUDIT)?;
    let Some(log) = state.security().audit() else {
        return Err(ApiError::Unavailable("the audit log is not open".into()));
    };
    let dir = log.dir().to_path_buf();
    let limit = p.limit.unwrap_or(200).clamp(1, 5_000);
    let category = p.category.clone().filter(|c| !c.is_empty());
    let verify = p.verify.unwrap_or(true);
    let (records, chain) = tokio::task::spawn_blocking(move || {
        // With a category filter, read further back until enough records
        // match or the whole log has been read.
        let mut window = if category.is_some() {
            limit * 20
        } else {
            limit
        };
        let mut records = loop {
            let mut tail = gantry_security::audit::tail_records(&dir, window)
                .map_err(|e| ApiError::internal("audit log", e))?;
            let whole_log = tail.len() < window;
            if let Some(c) = &category {
                tail.retain(|r| r.get("category").and_then(|v| v.as_str()) == Some(c));
            }
            if tail.len() >= limit || whole_log {
                break tail;
            }
            window = window.saturating_mul(4);
        };
        records.reverse();
        records.truncate(limit);
        let chain = if verify {
            let report = gantry_security::audit::verify(&dir)
                .map_err(|e| ApiError::internal("audit log", e))?;
            serde_json::json!({
                "ok": report.is_ok(),
                "records": report.records,
                "checkpoints": report.checkpoints,
                "last_seq": report.last_seq,
                "last_checkpoint_seq": report.last_checkpoint_seq,
                "problems": report.first_problem.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })
        } else {
            serde_json::Value::Null
        };
        Ok::<_, ApiError>((records, chain))
    })
    .await
    .map_err(|e| ApiError::internal("audit log", e))??;
    Ok(Json(
        serde_json::json!({ "records": records, "chain": chain }),
    ))
}

/// `POST /api/v1/users/{name}/disable` and `…/enable` body, and
/// `POST /api/v1/users/{name}/roles`.
#[derive(Debug, Deserialize)]
pub struct RoleChange {
    /// Give the identity this role.
    pub grant: Option<String>,
    /// Take this role from the identity.
    pub revoke: Option<String>,
}

/// Applies one change to an identity in the security file, audits it with
/// the caller as the actor, and puts the new policy in force at once.
fn change_identity(
    state: &SharedState,
    caller: &Caller,
    name: &str,
    event: (&str, &str),
    details: serde_json::Value,
    change: impl FnOnce(&mut gantry_security::Identity) -> Result<(), String>,
) -> ApiResult<()> {
    let now = gantry_broker::message::now_ms();
    store(state)
        .update(|f| {
            let identity = f.identity_mut(name).ok_or_else(|| {
                gantry_security::StoreError::Refused(format!("no identity {name:?}"))
            })?;
            change(identity).map_err(gantry_security::StoreError::Refused)?;
            identity.updated_ms = now;
            Ok(())
        })
        .map_err(|e| match e {
            gantry_security::StoreError::Refused(m) if m.starts_with("no identity") => {
                ApiError::NotFound(m)
            }
            gantry_security::StoreError::Refused(m) => ApiError::BadRequest(m),
            e => ApiError::internal("security file", e),
        })?;
    if let Some(audit) = state.security().audit() {
        audit.append(
            gantry_security::audit::AuditEvent::new(
                gantry_security::audit::Category::UserAdmin,
                event.0,
                gantry_security::audit::Actor::human(caller.identity.to_string(), "session"),
                event.1,
                true,
            )
            .target(name.to_owned())
            .details(details),
        );
    }
    state.security().refresh();
    Ok(())
}

/// `POST /api/v1/users/{name}/disable`.
pub async fn disable_user(
    State(state): State<SharedState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    set_disabled(&state, &caller, &name, true)
}

/// `POST /api/v1/users/{name}/enable`.
pub async fn enable_user(
    State(state): State<SharedState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<serde_json::Value>> {
    set_disabled(&state, &caller, &name, false)
}

fn set_disabled(
    state: &SharedState,
    caller: &Caller,
    name: &str,
    disable: bool,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(state, Action::Admin, resource::USERS)?;
    if disable && name == &*caller.identity {
        return Err(ApiError::BadRequest(
            "you cannot disable the identity you are logged in as".into(),
        ));
    }
    let event = if disable {
        ("user-disabled", "disable-user")
    } else {
        ("user-enabled", "enable-user")
    };
    change_identity(state, caller, name, event, serde_json::Value::Null, |i| {
        i.disabled = disable;
        Ok(())
    })?;
    Ok(Json(
        serde_json::json!({ "name": name, "disabled": disable }),
    ))
}

/// `POST /api/v1/users/{name}/roles` with `{"grant": "role"}` or
/// `{"revoke": "role"}`.
pub async fn change_roles(
    State(state): State<SharedState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&state, Action::Admin, resource::USERS)?;
    crate::auth::require_json(&headers)?;
    let change: RoleChange = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"grant\": \"ROLE\"}} or {{\"revoke\": \"ROLE\"}}: {e}"
        ))
    })?;
    let (role, grant) = match (change.grant, change.revoke) {
        (Some(r), None) => (r, true),
        (None, Some(r)) => (r, false),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of \"grant\" and \"revoke\"".into(),
            ));
        }
    };
    let known = builtin_roles().iter().any(|r| r.name == role)
        || store(&state)
            .load()
            .map_err(|e| ApiError::internal("security file", e))?
            .role_exists(&role);
    if grant && !known {
        return Err(ApiError::BadRequest(format!(
            "no role {role:?} (see GET /api/v1/roles)"
        )));
    }
    let event = if grant {
        ("role-granted", "grant-role")
    } else {
        ("role-revoked", "revoke-role")
    };
    let mut roles = Vec::new();
    change_identity(
        &state,
        &caller,
        &name,
        event,
        serde_json::json!({ "role": role }),
        |i| {
            if grant {
                if !i.roles.contains(&role) {
                    i.roles.push(role.clone());
                }
            } else {
                let before = i.roles.len();
                i.roles.retain(|r| r != &role);
                if i.roles.len() == before {
                    return Err(format!("identity {name:?} does not hold role {role:?}"));
                }
            }
            roles = i.roles.clone();
            Ok(())
        },
    )?;
    Ok(Json(serde_json::json!({ "name": name, "roles": roles })))
}
