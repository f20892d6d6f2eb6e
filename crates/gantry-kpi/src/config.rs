//! The KPI definitions of a site model file (`[kpi]`: shift calendars and
//! work units) and the state models of an enterprise standard or a site
//! (`[[kpi.state_model]]`), parsed with every problem reported at its file,
//! line and field. See `docs/kpi.md` for the format.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use gantry_model::toml_check::TomlChecker;
use gantry_model::{ModelError, PlantModel, TagType};
use toml::de::{DeTable, DeValue};

use crate::calendar::{BreakDef, Calendar, LocalTime, ShiftDef, Weekdays, Window};
use crate::elements::TimeBucket;
use crate::state_model::{StateMatch, StateModel, StateRule};
use crate::unit::{Counting, WorkUnit};

const KPI_FIELDS: &[&str] = &[
    "default_state_model",
    "state_model",
    "publish_every",
    "calendar",
    "work_unit",
];
const STANDARD_KPI_FIELDS: &[&str] = &["state_model"];
const MODEL_FIELDS: &[&str] = &["name", "description", "state"];
const RULE_FIELDS: &[&str] = &[
    "name", "code", "codes", "reason", "bucket", "failure", "label",
];
const CALENDAR_FIELDS: &[&str] = &["name", "time_zone", "shift", "planned_downtime"];
const SHIFT_FIELDS: &[&str] = &["name", "start", "end", "days", "breaks"];
const BREAK_FIELDS: &[&str] = &["start", "end", "reason"];
const WINDOW_FIELDS: &[&str] = &["from", "to", "reason"];
const UNIT_FIELDS: &[&str] = &[
    "path",
    "calendar",
    "state",
    "reason",
    "produced",
    "good",
    "scrap",
    "counter_modulus",
    "ideal_cycle_time",
    "ideal_rate",
    "product",
    "ideal_cycle_time_by_product",
    "energy",
    "state_model",
];

/// Default interval between live KPI publications.
pub const DEFAULT_PUBLISH_EVERY_MS: i64 = 10_000;

/// The KPI definitions of one site.
#[derive(Debug, Clone)]
pub struct KpiConfig {
    pub units: Vec<WorkUnit>,
    pub calendars: Vec<Calendar>,
    /// Live results are published this often (ms).
    pub publish_every_ms: i64,
}

impl KpiConfig {
    pub fn calendar(&self, name: &str) -> Option<&Calendar> {
        self.calendars.iter().find(|c| c.name() == name)
    }

    pub fn unit(&self, path: &str) -> Option<&WorkUnit> {
        self.units.iter().find(|u| u.path == path)
    }

    /// The units at or below a path (a line, an area, a site), in file
    /// order.
    pub fn units_under(&self, path: &str) -> Vec<&WorkUnit> {
        let path = path.trim_end_matches('/');
        self.units
            .iter()
            .filter(|u| is_at_or_below(&u.path, path))
            .collect()
    }
}

/// Whether `path` is `ancestor` or lies below it in the namespace.
pub(crate) fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

/// Reads the state models a standard file defines (`[[kpi.state_model]]`).
pub fn standard_state_models(src: &str, file: &str) -> Result<Vec<StateModel>, Vec<ModelError>> {
    let mut c = TomlChecker::new(src, file);
    let root = match DeTable::parse(src) {
        Ok(root) => root,
        Err(e) => {
            c.error(e.span().map_or(0, |s| s.start), "", e.message(), None);
            return Err(c.errors);
        }
    };
    let mut models = Vec::new();
    if let Some(kpi) = sub_table(&mut c, root.get_ref(), "kpi", "kpi") {
        c.unknown_fields(kpi, "kpi", STANDARD_KPI_FIELDS);
        models = state_models(&mut c, kpi, &[]);
    }
    if c.errors.is_empty() {
        Ok(models)
    } else {
        Err(c.errors)
    }
}

/// Parses the `[kpi]` section of a site model file (`None` without one),
/// against the plant model parsed from the same source and the state models
/// of the enterprise standard.
pub fn parse(
    src: &str,
    file: &str,
    model: &PlantModel,
    standard_models: &[StateModel],
) -> Result<Option<KpiConfig>, Vec<ModelError>> {
    let mut c = TomlChecker::new(src, file);
    let root = match DeTable::parse(src) {
        Ok(root) => root,
        Err(e) => {
            c.error(e.span().map_or(0, |s| s.start), "", e.message(), None);
            return Err(c.errors);
        }
    };
    let Some(kpi) = sub_table(&mut c, root.get_ref(), "kpi", "kpi") else {
        return if c.errors.is_empty() {
            Ok(None)
        } else {
            Err(c.errors)
        };
    };
    c.unknown_fields(kpi, "kpi", KPI_FIELDS);
    let site_models = state_models(&mut c, kpi, standard_models);
    let mut known: Vec<StateModel> = site_models;
    known.extend(standard_models.iter().cloned());
    let default_model = match c.string(kpi, "default_state_model", "kpi.default_state_model") {
        Some((name, at)) => resolve_model(&mut c, &known, name, at, "kpi.default_state_model"),
        None => StateModel::builtin("gantry"),
    };
    let publish_every_ms = match c.string(kpi, "publish_every", "kpi.publish_every") {
        Some((text, at)) => match parse_duration_ms(text) {
            Some(ms) if (1_000.0..=3_600_000.0).contains(&ms) => ms as i64,
            _ => {
                c.error_inside(
                    at,
                    "kpi.publish_every",
                    format!("\"{text}\" is not a duration between 1s and 1h"),
                    Some("e.g. \"10s\" or \"1min\"".into()),
                );
                DEFAULT_PUBLISH_EVERY_MS
            }
        },
        None => DEFAULT_PUBLISH_EVERY_MS,
    };
    let calendars = calendars(&mut c, kpi);
    let units = units(
        &mut c,
        kpi,
        model,
        &known,
        default_model.as_ref(),
        &calendars,
    );
    if c.errors.is_empty() {
        Ok(Some(KpiConfig {
            units,
            calendars,
            publish_every_ms,
        }))
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(c.errors)
    }
}

/// Reads a site model file (and the standard's state models, if a standard
/// is given) and parses its `[kpi]` section.
pub fn load(
    path: &Path,
    model: &PlantModel,
    standard: Option<&Path>,
) -> Result<Option<KpiConfig>, Vec<ModelError>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| {
            vec![ModelError {
                file: p.display().to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read: {e}"),
                hint: None,
            }]
        })
    };
    let standard_models = match standard {
        Some(s) => standard_state_models(&read(s)?, &s.display().to_string())?,
        None => Vec::new(),
    };
    parse(
        &read(path)?,
        &path.display().to_string(),
        model,
        &standard_models,
    )
}

fn sub_table<'t, 'i>(
    c: &mut TomlChecker<'_>,
    table: &'t DeTable<'i>,
    key: &str,
    field: &str,
) -> Option<&'t DeTable<'i>> {
    let item = table.get(key)?;
    match item.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            c.error(
                item.span().start,
                field,
                format!("must be a table ([{field}]), got {}", other.type_str()),
                None,
            );
            None
        }
    }
}

fn required_string<'t>(
    c: &mut TomlChecker<'_>,
    table: &'t DeTable<'_>,
    key: &str,
    field: &str,
    at: usize,
    example: &str,
) -> Option<(&'t str, usize)> {
    let found = c.string(table, key, field);
    if found.is_none() && !table.contains_key(key) {
        c.error(
            at,
            field,
            "missing required field",
            Some(example.to_string()),
        );
    }
    found
}

fn bool_field(
    c: &mut TomlChecker<'_>,
    table: &DeTable<'_>,
    key: &str,
    field: &str,
) -> Option<bool> {
    let item = table.get(key)?;
    match item.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        other => {
            c.error(
                item.span().start,
                field,
                format!("must be true or false, got {}", other.type_str()),
                None,
            );
            None
        }
    }
}

fn resolve_model(
    c: &mut TomlChecker<'_>,
    known: &[StateModel],
    name: &str,
    at: usize,
    field: &str,
) -> Option<StateModel> {
    if let Some(m) = known.iter().find(|m| m.name == name) {
        return Some(m.clone());
    }
    if let Some(m) = StateModel::builtin(name) {
        return Some(m);
    }
    let mut names: Vec<&str> = known.iter().map(|m| m.name.as_str()).collect();
    names.extend(StateModel::BUILTIN);
    let hint = match gantry_model::suggest::closest(name, &names) {
        Some(s) => format!("did you mean \"{s}\"?"),
        None => format!("known state models: {}", names.join(", ")),
    };
    c.error_inside(
        at,
        field,
        format!("unknown state model \"{name}\""),
        Some(hint),
    );
    None
}

/// `[[kpi.state_model]]` tables; names must not repeat each other, the
/// built-in names or the standard's.
fn state_models(
    c: &mut TomlChecker<'_>,
    kpi: &DeTable<'_>,
    taken: &[StateModel],
) -> Vec<StateModel> {
    let mut out: Vec<StateModel> = Vec::new();
    for (index, table, at) in c.array_of_tables(kpi, "state_model", "kpi.state_model") {
        let field = format!("kpi.state_model[{index}]");
        c.unknown_fields(table, &field, MODEL_FIELDS);
        let Some((name, name_at)) = required_string(
            c,
            table,
            "name",
            &format!("{field}.name"),
            at,
            "name = \"acme-filler\"",
        ) else {
            continue;
        };
        if StateModel::BUILTIN.contains(&name) || out.iter().chain(taken).any(|m| m.name == name) {
            c.error_inside(
                name_at,
                &format!("{field}.name"),
                format!("state model \"{name}\" is already defined (or built in)"),
                Some("give the model its own name".into()),
            );
            continue;
        }
        let description = c
            .string(table, "description", &format!("{field}.description"))
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        let mut rules = Vec::new();
        for (k, rule_table, rule_at) in c.array_of_tables(table, "state", &format!("{field}.state"))
        {
            let rf = format!("{field}.state[{k}]");
            if let Some(rule) = state_rule(c, rule_table, rule_at, &rf) {
                rules.push(rule);
            }
        }
        if rules.is_empty() {
            c.error(
                at,
                &format!("{field}.state"),
                format!("state model \"{name}\" maps no states"),
                Some(
                    "add [[kpi.state_model.state]] tables: name = \"running\", bucket = \"APT\""
                        .into(),
                ),
            );
        }
        out.push(StateModel {
            name: name.to_string(),
            description,
            rules,
        });
    }
    out
}

fn state_rule(
    c: &mut TomlChecker<'_>,
    table: &DeTable<'_>,
    at: usize,
    field: &str,
) -> Option<StateRule> {
    c.unknown_fields(table, field, RULE_FIELDS);
    let name = c.string(table, "name", &format!("{field}.name"));
    let code = c.integer(
        table,
        "code",
        &format!("{field}.code"),
        i64::MIN,
        i64::MAX,
        None,
    );
    let codes = c.string(table, "codes", &format!("{field}.codes"));
    let matcher = match (name, code, codes) {
        (Some((n, _)), None, None) => StateMatch::Name(n.to_string()),
        (None, Some((code, _)), None) => StateMatch::Codes {
            from: code,
            to: code,
        },
        (None, None, Some((text, codes_at))) => match parse_code_range(text) {
            Some((from, to)) => StateMatch::Codes { from, to },
            None => {
                c.error_inside(
                    codes_at,
                    &format!("{field}.codes"),
                    format!("\"{text}\" is not a code range"),
                    Some("e.g. codes = \"180000-189999\"".into()),
                );
                return None;
            }
        },
        _ => {
            c.error(
                at,
                field,
                "give exactly one of name, code or codes",
                Some("name = \"running\", code = 10000 or codes = \"180000-189999\"".into()),
            );
            return None;
        }
    };
    let bucket = match required_string(
        c,
        table,
        "bucket",
        &format!("{field}.bucket"),
        at,
        "bucket = \"APT\"",
    ) {
        Some((text, bucket_at)) => match TimeBucket::parse(text) {
            Some(b) => b,
            None => {
                let names: Vec<&str> = TimeBucket::ALL.iter().map(|b| b.as_str()).collect();
                c.error_inside(
                    bucket_at,
                    &format!("{field}.bucket"),
                    format!("unknown time bucket \"{text}\""),
                    Some(format!("one of {}", names.join(", "))),
                );
                return None;
            }
        },
        None => return None,
    };
    let failure = bool_field(c, table, "failure", &format!("{field}.failure")).unwrap_or(false);
    if failure && !bucket.in_busy_time() {
        c.error(
            at,
            &format!("{field}.failure"),
            format!("a failure state must be in planned busy time, not {bucket}"),
            Some("failures are ADOT (breakdowns) or ADET".into()),
        );
    }
    Some(StateRule {
        state: matcher,
        reason: c
            .string(table, "reason", &format!("{field}.reason"))
            .map(|(r, _)| r.to_string()),
        bucket,
        failure,
        label: c
            .string(table, "label", &format!("{field}.label"))
            .map(|(l, _)| l.to_string()),
    })
}

fn parse_code_range(text: &str) -> Option<(i64, i64)> {
    let (a, b) = text.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// A duration: a number and a unit (`ms`, `s`, `min`, `h`), e.g. `"0.5min"`.
pub fn parse_duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let ms = n * scale;
    (ms.is_finite() && ms > 0.0).then_some(ms)
}

/// An ideal rate (`"120/h"`, `"10/min"`, `"2/s"`) as milliseconds per unit.
fn parse_rate_ms(text: &str) -> Option<f64> {
    let (n, per) = text.trim().split_once('/')?;
    let n: f64 = n.trim().parse().ok()?;
    let per_ms = parse_duration_ms(&format!("1{}", per.trim()))?;
    (n.is_finite() && n > 0.0).then(|| per_ms / n)
}

fn calendars(c: &mut TomlChecker<'_>, kpi: &DeTable<'_>) -> Vec<Calendar> {
    let mut out: Vec<Calendar> = Vec::new();
    for (index, table, at) in c.array_of_tables(kpi, "calendar", "kpi.calendar") {
        let field = format!("kpi.calendar[{index}]");
        c.unknown_fields(table, &field, CALENDAR_FIELDS);
        let name = required_string(
            c,
            table,
            "name",
            &format!("{field}.name"),
            at,
            "name = \"two-shift\"",
        );
        let zone = required_string(
            c,
            table,
            "time_zone",
            &format!("{field}.time_zone"),
            at,
            "time_zone = \"America/Chicago\"",
        );
        let mut shifts = Vec::new();
        let shift_tables = c.array_of_tables(table, "shift", &format!("{field}.shift"));
        if shift_tables.is_empty() && !table.contains_key("shift") {
            c.error(
                at,
                &format!("{field}.shift"),
                "a calendar needs at least one [[kpi.calendar.shift]]",
                Some(
                    "name = \"day\", start = \"06:00\", end = \"14:00\", days = [\"mon-fri\"]"
                        .into(),
                ),
            );
        }
        for (k, shift_table, shift_at) in shift_tables {
            if let Some(s) = shift(c, shift_table, shift_at, &format!("{field}.shift[{k}]")) {
                shifts.push(s);
            }
        }
        let mut windows = Vec::new();
        for (k, w, w_at) in c.array_of_tables(
            table,
            "planned_downtime",
            &format!("{field}.planned_downtime"),
        ) {
            let wf = format!("{field}.planned_downtime[{k}]");
            c.unknown_fields(w, &wf, WINDOW_FIELDS);
            let zone_name = zone.map(|(z, _)| z).unwrap_or("UTC");
            let from = required_string(
                c,
                w,
                "from",
                &format!("{wf}.from"),
                w_at,
                "from = \"2026-12-01T06:00\"",
            )
            .and_then(|(t, a)| instant(c, t, a, zone_name, &format!("{wf}.from")));
            let to = required_string(
                c,
                w,
                "to",
                &format!("{wf}.to"),
                w_at,
                "to = \"2026-12-01T10:00\"",
            )
            .and_then(|(t, a)| instant(c, t, a, zone_name, &format!("{wf}.to")));
            let reason = c
                .string(w, "reason", &format!("{wf}.reason"))
                .map(|(r, _)| r.to_string())
                .unwrap_or_else(|| "planned downtime".into());
            if let (Some(from_ms), Some(to_ms)) = (from, to) {
                windows.push(Window {
                    from_ms,
                    to_ms,
                    reason,
                });
            }
        }
        let (Some((name, name_at)), Some((zone, _))) = (name, zone) else {
            continue;
        };
        if out.iter().any(|cal| cal.name() == name) {
            c.error_inside(
                name_at,
                &format!("{field}.name"),
                format!("calendar \"{name}\" is defined twice"),
                None,
            );
            continue;
        }
        match Calendar::new(name, zone, shifts, windows) {
            Ok(cal) => out.push(cal),
            Err(e) => {
                let hint = e.hint();
                c.error(at, &field, e.to_string(), hint);
            }
        }
    }
    out
}

fn shift(c: &mut TomlChecker<'_>, table: &DeTable<'_>, at: usize, field: &str) -> Option<ShiftDef> {
    c.unknown_fields(table, field, SHIFT_FIELDS);
    let name = required_string(
        c,
        table,
        "name",
        &format!("{field}.name"),
        at,
        "name = \"day\"",
    );
    let start = required_string(
        c,
        table,
        "start",
        &format!("{field}.start"),
        at,
        "start = \"06:00\"",
    )
    .and_then(|(t, a)| local_time(c, t, a, &format!("{field}.start")));
    let end = required_string(
        c,
        table,
        "end",
        &format!("{field}.end"),
        at,
        "end = \"14:00\"",
    )
    .and_then(|(t, a)| local_time(c, t, a, &format!("{field}.end")));
    let days = match table.get("days") {
        None => Some(Weekdays::ALL),
        Some(item) => match item.get_ref() {
            DeValue::Array(items) => {
                let names: Vec<&str> = items
                    .iter()
                    .filter_map(|i| match i.get_ref() {
                        DeValue::String(s) => Some(s.as_ref()),
                        _ => None,
                    })
                    .collect();
                match Weekdays::parse_list(names) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        let hint = e.hint();
                        c.error(
                            item.span().start,
                            &format!("{field}.days"),
                            e.to_string(),
                            hint,
                        );
                        None
                    }
                }
            }
            other => {
                c.error(
                    item.span().start,
                    &format!("{field}.days"),
                    format!("must be an array of day names, got {}", other.type_str()),
                    Some("days = [\"mon-fri\"]".into()),
                );
                None
            }
        },
    };
    let mut breaks = Vec::new();
    if let Some(item) = table.get("breaks") {
        match item.get_ref() {
            DeValue::Array(items) => {
                for (k, b) in items.iter().enumerate() {
                    let bf = format!("{field}.breaks[{k}]");
                    let DeValue::Table(bt) = b.get_ref() else {
                        c.error(
                            b.span().start,
                            &bf,
                            "must be a table",
                            Some(
                                "{ start = \"10:00\", end = \"10:30\", reason = \"break\" }".into(),
                            ),
                        );
                        continue;
                    };
                    c.unknown_fields(bt, &bf, BREAK_FIELDS);
                    let bs = required_string(
                        c,
                        bt,
                        "start",
                        &format!("{bf}.start"),
                        b.span().start,
                        "start = \"10:00\"",
                    )
                    .and_then(|(t, a)| local_time(c, t, a, &format!("{bf}.start")));
                    let be = required_string(
                        c,
                        bt,
                        "end",
                        &format!("{bf}.end"),
                        b.span().start,
                        "end = \"10:30\"",
                    )
                    .and_then(|(t, a)| local_time(c, t, a, &format!("{bf}.end")));
                    let reason = c
                        .string(bt, "reason", &format!("{bf}.reason"))
                        .map(|(r, _)| r.to_string())
                        .unwrap_or_else(|| "break".into());
                    if let (Some(start), Some(end)) = (bs, be) {
                        breaks.push(BreakDef { start, end, reason });
                    }
                }
            }
            other => c.error(
                item.span().start,
                &format!("{field}.breaks"),
                format!("must be an array of tables, got {}", other.type_str()),
                None,
            ),
        }
    }
    Some(ShiftDef {
        name: name?.0.to_string(),
        start: start?,
        end: end?,
        days: days?,
        breaks,
    })
}

fn local_time(c: &mut TomlChecker<'_>, text: &str, at: usize, field: &str) -> Option<LocalTime> {
    match LocalTime::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            let hint = e.hint();
            c.error_inside(at, field, e.to_string(), hint);
            None
        }
    }
}

/// An instant: RFC 3339 with an offset, or a local date-time in `zone`.
fn instant(c: &mut TomlChecker<'_>, text: &str, at: usize, zone: &str, field: &str) -> Option<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_millisecond());
    }
    let local = text
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.in_tz(zone).ok());
    match local {
        Some(z) => Some(z.timestamp().as_millisecond()),
        None => {
            c.error_inside(
                at,
                field,
                format!("\"{text}\" is not a date and time"),
                Some(format!(
                    "\"2026-12-01T06:00\" (local time in {zone}) or \"2026-12-01T06:00:00-06:00\""
                )),
            );
            None
        }
    }
}

fn units(
    c: &mut TomlChecker<'_>,
    kpi: &DeTable<'_>,
    model: &PlantModel,
    known_models: &[StateModel],
    default_model: Option<&StateModel>,
    calendars: &[Calendar],
) -> Vec<WorkUnit> {
    let mut out: Vec<WorkUnit> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, table, at) in c.array_of_tables(kpi, "work_unit", "kpi.work_unit") {
        let field = format!("kpi.work_unit[{index}]");
        if let Some(unit) = unit(
            c,
            table,
            at,
            &field,
            model,
            known_models,
            default_model,
            calendars,
        ) {
            if let Some(line) = seen.get(&unit.path) {
                c.error(
                    table.get("path").map_or(at, |p| p.span().start),
                    &format!("{field}.path"),
                    format!(
                        "work unit \"{}\" is already defined on line {line}",
                        unit.path
                    ),
                    None,
                );
                continue;
            }
            seen.insert(unit.path.clone(), c.line_of(at));
            out.push(unit);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn unit(
    c: &mut TomlChecker<'_>,
    table: &DeTable<'_>,
    at: usize,
    field: &str,
    model: &PlantModel,
    known_models: &[StateModel],
    default_model: Option<&StateModel>,
    calendars: &[Calendar],
) -> Option<WorkUnit> {
    c.unknown_fields(table, field, UNIT_FIELDS);
    let f = |k: &str| format!("{field}.{k}");
    let (path, path_at) = required_string(
        c,
        table,
        "path",
        &f("path"),
        at,
        "path = \"acme/dallas/packaging/line-1/filler\"",
    )?;
    let equipment = c
        .model_equipment(model, path, c.inside(path_at), &f("path"))?
        .clone();
    // A tag of this equipment with one of the expected types.
    let tag = |c: &mut TomlChecker<'_>,
               key: &str,
               default: Option<&str>,
               accept: &[&str],
               what: &str|
     -> Option<(String, TagType)> {
        let (name, name_at) = match c.string(table, key, &f(key)) {
            Some((n, a)) => (n.to_string(), c.inside(a)),
            None => (default?.to_string(), at),
        };
        let spec = c.equipment_tag(model, &equipment, &name, name_at, &f(key))?;
        if !accept.contains(&spec.tag_type.name()) {
            c.error(
                name_at,
                &f(key),
                format!(
                    "tag \"{name}\" is {}, but {what} must be {}",
                    spec.tag_type.name(),
                    accept.join(" or ")
                ),
                None,
            );
            return None;
        }
        Some((name, spec.tag_type.clone()))
    };
    let state = tag(
        c,
        "state",
        Some("state"),
        &["enum", "string", "int"],
        "a state tag",
    );
    let reason = table
        .contains_key("reason")
        .then(|| {
            tag(
                c,
                "reason",
                None,
                &["string", "enum", "int"],
                "a reason tag",
            )
        })
        .flatten();
    let counter_types = &["int", "float"];
    let produced = table
        .contains_key("produced")
        .then(|| tag(c, "produced", None, counter_types, "a counter"))
        .flatten();
    let good = table
        .contains_key("good")
        .then(|| tag(c, "good", None, counter_types, "a counter"))
        .flatten();
    let scrap = table
        .contains_key("scrap")
        .then(|| tag(c, "scrap", None, counter_types, "a counter"))
        .flatten();
    let product = table
        .contains_key("product")
        .then(|| {
            tag(
                c,
                "product",
                None,
                &["string", "enum", "int"],
                "a product tag",
            )
        })
        .flatten();
    let energy = table
        .contains_key("energy")
        .then(|| tag(c, "energy", None, counter_types, "an energy meter"))
        .flatten();
    let counting = match (&produced, &good, &scrap) {
        (None, Some((g, _)), Some((s, _))) => Some(Counting::GoodAndScrap {
            good: g.clone(),
            scrap: s.clone(),
        }),
        (Some((p, _)), None, Some((s, _))) => Some(Counting::ProducedAndScrap {
            produced: p.clone(),
            scrap: s.clone(),
        }),
        (Some((p, _)), Some((g, _)), None) => Some(Counting::ProducedAndGood {
            produced: p.clone(),
            good: g.clone(),
        }),
        (Some((p, _)), None, None) => Some(Counting::Produced {
            produced: p.clone(),
        }),
        _ => {
            let given: Vec<&str> = ["produced", "good", "scrap"]
                .into_iter()
                .filter(|k| table.contains_key(*k))
                .collect();
            let problem = match given.as_slice() {
                [] => Some("no counters: the produced and good quantities come from counter tags"),
                [_, _, _] => Some("give two of produced, good and scrap, not all three"),
                ["good"] | ["scrap"] => {
                    Some("a good or scrap counter alone does not give the produced quantity")
                }
                // A named counter failed its own check, reported there.
                _ => None,
            };
            if let Some(problem) = problem {
                c.error(
                    at,
                    field,
                    problem,
                    Some("good = \"good_count\", scrap = \"reject_count\" (or produced with one of them, or produced alone)".into()),
                );
            }
            None
        }
    };
    let modulus = c
        .number(table, "counter_modulus", &f("counter_modulus"))
        .and_then(|(m, a)| {
            if m >= 2.0 {
                Some(m)
            } else {
                c.error(
                    a,
                    &f("counter_modulus"),
                    "must be at least 2",
                    Some("e.g. 65536".into()),
                );
                None
            }
        });
    let ideal = match (
        c.string(table, "ideal_cycle_time", &f("ideal_cycle_time")),
        c.string(table, "ideal_rate", &f("ideal_rate")),
    ) {
        (Some((t, a)), None) => parse_duration_ms(t).or_else(|| {
            c.error_inside(
                a,
                &f("ideal_cycle_time"),
                format!("\"{t}\" is not a positive duration"),
                Some("e.g. \"100ms\", \"0.5min\"".into()),
            );
            None
        }),
        (None, Some((t, a))) => parse_rate_ms(t).or_else(|| {
            c.error_inside(
                a,
                &f("ideal_rate"),
                format!("\"{t}\" is not a rate"),
                Some("units per time, e.g. \"600/min\" or \"120/h\"".into()),
            );
            None
        }),
        (Some(_), Some(_)) => {
            c.error(
                at,
                field,
                "give ideal_cycle_time or ideal_rate, not both",
                None,
            );
            None
        }
        (None, None) => {
            c.error(
                at,
                &f("ideal_cycle_time"),
                "missing: the planned run time per item (PRI) is needed for effectiveness and OEE",
                Some("ideal_cycle_time = \"100ms\" or ideal_rate = \"600/min\"".into()),
            );
            None
        }
    };
    let mut by_product = BTreeMap::new();
    if let Some(item) = table.get("ideal_cycle_time_by_product") {
        match item.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let key: &str = k.get_ref();
                    match v.get_ref() {
                        DeValue::String(s) => match parse_duration_ms(s) {
                            Some(ms) => {
                                by_product.insert(key.to_string(), ms);
                            }
                            None => c.error_inside(
                                v.span().start,
                                &format!("{}.{key}", f("ideal_cycle_time_by_product")),
                                format!("\"{s}\" is not a positive duration"),
                                Some("e.g. \"90ms\"".into()),
                            ),
                        },
                        other => c.error(
                            v.span().start,
                            &format!("{}.{key}", f("ideal_cycle_time_by_product")),
                            format!("must be a duration string, got {}", other.type_str()),
                            None,
                        ),
                    }
                }
                if !by_product.is_empty() && product.is_none() && !table.contains_key("product") {
                    c.error(
                        item.span().start,
                        &f("ideal_cycle_time_by_product"),
                        "per-product cycle times need the tag that names the product",
                        Some("product = \"product\"".into()),
                    );
                }
            }
            other => c.error(
                item.span().start,
                &f("ideal_cycle_time_by_product"),
                format!(
                    "must be a table of product = duration, got {}",
                    other.type_str()
                ),
                None,
            ),
        }
    }
    let state_model = match c.string(table, "state_model", &f("state_model")) {
        Some((name, a)) => resolve_model(c, known_models, name, a, &f("state_model")),
        None => default_model.cloned(),
    };
    let calendar = match c.string(table, "calendar", &f("calendar")) {
        Some((name, a)) => {
            if calendars.iter().any(|cal| cal.name() == name) {
                Some(name.to_string())
            } else {
                let names: Vec<&str> = calendars.iter().map(|cal| cal.name()).collect();
                let hint = match gantry_model::suggest::closest(name, &names) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None if names.is_empty() => "define it in [[kpi.calendar]]".to_string(),
                    None => format!("calendars: {}", names.join(", ")),
                };
                c.error_inside(
                    a,
                    &f("calendar"),
                    format!("unknown calendar \"{name}\""),
                    Some(hint),
                );
                None
            }
        }
        None => match calendars {
            [only] => Some(only.name().to_string()),
            [] => {
                c.error(
                    at,
                    &f("calendar"),
                    "no shift calendar: planned operation time comes from [[kpi.calendar]]",
                    Some("define a [[kpi.calendar]] with its shifts".into()),
                );
                None
            }
            _ => {
                c.error(
                    at,
                    &f("calendar"),
                    "several calendars are defined: say which this unit follows",
                    Some(format!("calendar = \"{}\"", calendars[0].name())),
                );
                None
            }
        },
    };
    // Every declared state value must be known to the state model, or it
    // would silently count as UNKNOWN.
    if let (Some((state_name, TagType::Enum { values })), Some(m)) = (&state, &state_model) {
        for v in values {
            let class = m.classify(v, None);
            if class.bucket == TimeBucket::Unknown && class.rule.contains("is not in state model") {
                let a = table.get("state").map_or(at, |s| s.span().start);
                c.error(
                    a,
                    &f("state"),
                    format!(
                        "state value \"{v}\" of tag \"{state_name}\" is not in state model \"{}\": it would count as UNKNOWN",
                        m.name
                    ),
                    Some("map it in a [[kpi.state_model]] or use a model that knows it".into()),
                );
            }
        }
    }
    Some(WorkUnit {
        path: path.to_string(),
        state_tag: state?.0,
        reason_tag: reason.map(|(r, _)| r),
        counting: counting?,
        counter_modulus: modulus,
        ideal_cycle_ms: ideal?,
        product_tag: product.map(|(p, _)| p),
        ideal_cycle_ms_by_product: by_product,
        energy_tag: energy.map(|(e, _)| e),
        state_model: state_model?,
        calendar: calendar?,
    })
}
