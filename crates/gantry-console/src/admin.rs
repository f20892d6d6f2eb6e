//! Administration views: identities and roles (for those who administer
//! them) and the tamper-evident audit log with its chain verification (for
//! the security role).

use axum::Json;
use axum::extract::{Query, State};
use gantry_security::role::{builtin_roles, resource};
use gantry_security::{Action, SecurityStore};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
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
    Query(p): Query<AuditParams>,
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
        // With a category filter, look further back for enough matches.
        let window = if category.is_some() {
            limit * 20
        } else {
            limit
        };
        let mut records = gantry_security::audit::tail_records(&dir, window)
            .map_err(|e| ApiError::internal("audit log", e))?;
        if let Some(c) = &category {
            records.retain(|r| r.get("category").and_then(|v| v.as_str()) == Some(c));
        }
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
