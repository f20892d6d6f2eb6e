//! History over HTTP: raw values, aggregates and snapshots from the
//! historian, limited to the series the caller may subscribe to. Queries run
//! on the blocking pool with their own reader.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use gantry_historian::query::{self, Aggregate, AggregateQuery, RawQuery};
use gantry_historian::timefmt::{parse_duration_ms, parse_time};
use gantry_historian::{HistorianError, HistoryRead, ReadAccess};
use gantry_security::Action;
use serde::Deserialize;

use crate::auth::{API_CLIENT_ID, Caller};
use crate::error::ApiQuery;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

/// Values one raw query returns per series at most.
pub const MAX_RAW_LIMIT: usize = 100_000;
/// Buckets one aggregate query returns per series at most.
pub const MAX_BUCKETS: i64 = 10_000;

/// The caller's subscribe permission, as the historian asks it.
pub struct CallerAccess {
    state: SharedState,
    identity: Arc<str>,
}

impl CallerAccess {
    pub fn new(state: &SharedState, caller: &Caller) -> CallerAccess {
        CallerAccess {
            state: state.clone(),
            identity: caller.identity.clone(),
        }
    }
}

impl ReadAccess for CallerAccess {
    fn can_read(&self, topic: &str) -> bool {
        self.state
            .security()
            .check(
                Some(&self.identity),
                API_CLIENT_ID,
                Action::Subscribe,
                topic,
            )
            .allowed
    }
    fn who(&self) -> String {
        format!("user {:?}", &*self.identity)
    }
}

pub fn history_error(e: HistorianError) -> ApiError {
    match e {
        HistorianError::Query(m) => ApiError::BadRequest(m),
        e @ HistorianError::Denied { .. } => ApiError::Forbidden(e.to_string()),
        e @ HistorianError::Stopped => ApiError::Unavailable(e.to_string()),
        e => ApiError::internal("history", e),
    }
}

/// Runs `f` with a fresh reader on the blocking pool.
pub async fn with_reader<T: Send + 'static>(
    state: &SharedState,
    f: impl FnOnce(&mut dyn HistoryRead) -> Result<T, ApiError> + Send + 'static,
) -> ApiResult<T> {
    let historian = state.deps.historian.clone().ok_or_else(|| {
        ApiError::Unavailable("the historian is disabled ([historian] enabled = false)".into())
    })?;
    tokio::task::spawn_blocking(move || {
        let mut reader = historian.reader().map_err(history_error)?;
        f(reader.as_mut())
    })
    .await
    .map_err(|e| ApiError::internal("history query", e))?
}

pub fn now_ms() -> i64 {
    gantry_broker::message::now_ms() as i64
}

fn time(text: Option<&str>, default: &str, field: &str, now: i64) -> ApiResult<i64> {
    let text = text.filter(|t| !t.trim().is_empty()).unwrap_or(default);
    parse_time(text, now).map_err(|e| ApiError::BadRequest(format!("{field}={text:?}: {e}")))
}

/// A filter the caller names: an exact topic must be readable (403
/// otherwise); a wildcard filter is narrowed to readable series.
fn checked_filter(state: &SharedState, caller: &Caller, path: Option<&str>) -> ApiResult<String> {
    let filter = path
        .map(|p| p.trim().trim_matches('/'))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("path: name a tag or a filter".into()))?
        .to_owned();
    if !filter.contains(['+', '#']) {
        caller.require(state, Action::Subscribe, &filter)?;
    }
    Ok(filter)
}

#[derive(Debug, Deserialize)]
pub struct RawParams {
    pub path: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/history/raw`.
pub async fn raw(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<RawParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = checked_filter(&state, &caller, p.path.as_deref())?;
    let now = now_ms();
    let q = RawQuery {
        filter,
        from_ms: time(p.from.as_deref(), "-1h", "from", now)?,
        to_ms: time(p.to.as_deref(), "now", "to", now)?,
        limit: Some(p.limit.unwrap_or(10_000).clamp(1, MAX_RAW_LIMIT)),
    };
    let access = CallerAccess::new(&state, &caller);
    let result = with_reader(&state, move |r| {
        query::raw(r, &access, &q).map_err(history_error)
    })
    .await?;
    serde_json::to_value(result)
        .map(Json)
        .map_err(|e| ApiError::internal("history", e))
}

#[derive(Debug, Deserialize)]
pub struct AggregateParams {
    pub path: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub bucket: Option<String>,
    pub agg: Option<String>,
    pub max_buckets: Option<i64>,
}

/// `GET /api/v1/history/aggregate`.
pub async fn aggregate(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<AggregateParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = checked_filter(&state, &caller, p.path.as_deref())?;
    let now = now_ms();
    let from_ms = time(p.from.as_deref(), "-1h", "from", now)?;
    let to_ms = time(p.to.as_deref(), "now", "to", now)?;
    if to_ms <= from_ms {
        return Err(ApiError::BadRequest(format!(
            "from must be before to (from {from_ms}, to {to_ms})"
        )));
    }
    let max_buckets = p.max_buckets.unwrap_or(600).clamp(1, MAX_BUCKETS);
    let bucket_ms = match p.bucket.as_deref().map(str::trim) {
        None | Some("") | Some("auto") => query::nice_bucket_ms(to_ms - from_ms, max_buckets),
        Some(b) => {
            parse_duration_ms(b).map_err(|e| ApiError::BadRequest(format!("bucket={b:?}: {e}")))?
        }
    };
    if bucket_ms <= 0 {
        return Err(ApiError::BadRequest("bucket must be positive".into()));
    }
    if (to_ms - from_ms) / bucket_ms > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{} buckets asked for; at most {MAX_BUCKETS} per query (use a wider bucket or bucket=auto)",
            (to_ms - from_ms) / bucket_ms
        )));
    }
    let aggregates = Aggregate::parse_list(p.agg.as_deref().unwrap_or("min,max,avg"))
        .map_err(|e| ApiError::BadRequest(format!("agg: {e}")))?;
    let q = AggregateQuery {
        filter,
        from_ms,
        to_ms,
        bucket_ms,
        aggregates,
        now_ms: now,
    };
    let access = CallerAccess::new(&state, &caller);
    let result = with_reader(&state, move |r| {
        query::aggregate(r, &access, &q).map_err(history_error)
    })
    .await?;
    let mut body = serde_json::to_value(result).map_err(|e| ApiError::internal("history", e))?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("bucket_ms".into(), bucket_ms.into());
        obj.insert("from_ms".into(), from_ms.into());
        obj.insert("to_ms".into(), to_ms.into());
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
pub struct SnapshotParams {
    pub path: Option<String>,
    pub at: Option<String>,
}

/// `GET /api/v1/history/snapshot`.
pub async fn snapshot(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<SnapshotParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let filter = checked_filter(&state, &caller, p.path.as_deref())?;
    let at_ms = time(p.at.as_deref(), "now", "at", now_ms())?;
    let access = CallerAccess::new(&state, &caller);
    let result = with_reader(&state, move |r| {
        query::snapshot(r, &access, &filter, at_ms).map_err(history_error)
    })
    .await?;
    serde_json::to_value(result)
        .map(Json)
        .map_err(|e| ApiError::internal("history", e))
}
