//! KPIs over HTTP: the work units and roll-up paths, a path's report for a
//! period (computed from the historian, as `gantry kpi show` does; the live
//! engine answers the current shift when there is no historian), and one
//! KPI's explanation.

use axum::Json;
use axum::extract::State;
use gantry_kpi::formulas::{Kpi, compute_one};
use gantry_kpi::period::PeriodSpec;
use gantry_kpi::report::{self, KpiError, Report};
use gantry_security::Action;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiQuery;
use crate::error::{ApiError, ApiResult};
use crate::history::{history_error, now_ms, with_reader};
use crate::state::{KpiAccess, SharedState};

fn kpis(state: &SharedState) -> ApiResult<&KpiAccess> {
    state.deps.kpi.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "no KPIs are defined: the site model has no [kpi] section (see docs/kpi.md)".into(),
        )
    })
}

/// `GET /api/v1/kpi/units`.
pub async fn units(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let kpi = kpis(&state)?;
    let units: Vec<serde_json::Value> = kpi
        .config
        .units
        .iter()
        .filter(|u| caller.may_browse(&state, &u.path))
        .map(|u| {
            serde_json::json!({
                "path": u.path,
                "calendar": u.calendar,
                "state_model": u.state_model.name,
                "ideal_rate_per_min": 60_000.0 / u.ideal_cycle_ms,
            })
        })
        .collect();
    let paths: Vec<String> = kpi
        .engine
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .paths()
        .iter()
        .filter(|p| caller.may_browse(&state, p))
        .cloned()
        .collect();
    Ok(Json(serde_json::json!({ "units": units, "paths": paths })))
}

#[derive(Debug, Deserialize)]
pub struct KpiParams {
    pub path: Option<String>,
    pub period: Option<String>,
    pub kpi: Option<String>,
}

fn kpi_error(e: KpiError) -> ApiError {
    match e {
        e @ KpiError::UnknownPath { .. } => ApiError::NotFound(e.to_string()),
        KpiError::Period(m) => ApiError::BadRequest(m),
        e @ KpiError::Calendar { .. } => ApiError::internal("KPI definitions", e),
        KpiError::History(e) => history_error(e),
    }
}

/// The report of `path` over `period`, after checking that the caller may
/// read every input of every unit below it.
async fn compute(
    state: &SharedState,
    caller: &Caller,
    params: &KpiParams,
) -> ApiResult<(Report, String)> {
    let kpi = kpis(state)?.clone();
    let path = params
        .path
        .as_deref()
        .map(|p| p.trim().trim_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("path: name a work unit, line, area or site".into()))?;
    let period = params
        .period
        .clone()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "current-shift".into());
    let spec = PeriodSpec::parse(&period).map_err(|e| {
        // The parser speaks the command line's language.
        ApiError::BadRequest(format!("period: {}", e.replace("--period ", "")))
    })?;
    let units = kpi.config.units_under(&path);
    for unit in &units {
        for topic in unit.input_topics() {
            caller.require(state, Action::Subscribe, &topic).map_err(|_| {
                ApiError::Forbidden(format!(
                    "{:?} may not read {topic}, an input of {}'s KPIs (no subscribe permission on it)",
                    &*caller.identity, unit.path
                ))
            })?;
        }
    }
    // The historian answers every period, the current shift up to now
    // included; the live engine's last tick (up to `publish_every` old)
    // answers the current shift only when there is no historian.
    if matches!(spec, PeriodSpec::CurrentShift)
        && state.deps.historian.is_none()
        && let Some(report) = kpi
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current(&path)
    {
        return Ok((report, period));
    }
    let config = kpi.config.clone();
    let now = now_ms();
    let report = with_reader(state, move |r| {
        report::report(&config, r, &path, &spec, now).map_err(kpi_error)
    })
    .await?;
    Ok((report, period))
}

/// `GET /api/v1/kpi`.
pub async fn show(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<KpiParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let (report, _) = compute(&state, &caller, &p).await?;
    serde_json::to_value(report)
        .map(Json)
        .map_err(|e| ApiError::internal("KPI report", e))
}

/// `GET /api/v1/kpi/explain`.
pub async fn explain(
    State(state): State<SharedState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<KpiParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let name = p.kpi.as_deref().unwrap_or("oee");
    let Some(kpi) = Kpi::parse(name) else {
        let names: Vec<&str> = Kpi::ALL.iter().map(|k| k.name()).collect();
        return Err(ApiError::BadRequest(format!(
            "kpi={name:?}: not a KPI; use one of {}",
            names.join(", ")
        )));
    };
    let (report, _) = compute(&state, &caller, &p).await?;
    let config = &kpis(&state)?.config;
    let calendar = config
        .units_under(&report.path)
        .first()
        .and_then(|u| config.calendar(&u.calendar));
    let text = report::explain_text(&report, kpi, calendar);
    let value = compute_one(&report.elements, kpi);
    Ok(Json(
        serde_json::json!({ "kpi": value, "report": report, "text": text }),
    ))
}
