//! Reading a work unit's recorded values for a period from the historian:
//! the values in force at the period start and every value inside it, for
//! the state, reason, counter, product and energy tags, and the historian's
//! recorded gaps as time without data.

use gantry_historian::{HistorianError, HistoryRead, PointRow};
use gantry_model::{Quality, Value};

use crate::compute::{NoData, StateSample, UnitData};
use crate::counter::Reading;
use crate::unit::WorkUnit;

/// The values of one topic that `keep` turns into `T`: the last at or before
/// `from_ms`, then every one in `[from_ms, to_ms)`, in time order. A topic
/// with no history gives nothing. Values are converted as they stream, so
/// the bulk of a period (counter readings) never exists as rows.
fn series<T>(
    reader: &mut dyn HistoryRead,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
    keep: impl Fn(PointRow) -> Option<T>,
    ts_of: impl Fn(&T) -> i64,
) -> Result<Vec<T>, HistorianError> {
    let Some(info) = reader
        .series_matching(topic)?
        .into_iter()
        .find(|s| s.topic == topic)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(p) = reader.last_at_or_before(info.id, from_ms)? {
        out.extend(keep(p));
    }
    reader.points(info.id, from_ms, to_ms, &mut |p| {
        if let Some(v) = keep(p)
            && out.last().is_none_or(|l| ts_of(l) < ts_of(&v))
        {
            out.push(v);
        }
        true
    })?;
    Ok(out)
}

fn rows(
    reader: &mut dyn HistoryRead,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<PointRow>, HistorianError> {
    series(reader, topic, from_ms, to_ms, Some, |p| p.ts_ms)
}

fn counter_readings(
    reader: &mut dyn HistoryRead,
    topic: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Reading>, HistorianError> {
    series(reader, topic, from_ms, to_ms, |p| reading(&p), |r| r.ts_ms)
}

fn reading(p: &PointRow) -> Option<Reading> {
    if p.quality == Quality::Bad {
        return None;
    }
    let value = match &p.value {
        Value::Int(i) => *i as f64,
        Value::Float(f) if f.is_finite() => *f,
        _ => return None,
    };
    Some(Reading {
        ts_ms: p.ts_ms,
        value,
    })
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

/// Everything `compute` needs for `unit` over `[from_ms, to_ms)`.
pub fn unit_data(
    reader: &mut dyn HistoryRead,
    unit: &WorkUnit,
    from_ms: i64,
    to_ms: i64,
) -> Result<UnitData, HistorianError> {
    reader.begin_read()?;
    let result = unit_data_in(reader, unit, from_ms, to_ms);
    reader.end_read();
    result
}

fn unit_data_in(
    reader: &mut dyn HistoryRead,
    unit: &WorkUnit,
    from_ms: i64,
    to_ms: i64,
) -> Result<UnitData, HistorianError> {
    let states = rows(reader, &unit.topic(&unit.state_tag), from_ms, to_ms)?;
    let reasons = match &unit.reason_tag {
        Some(tag) => rows(reader, &unit.topic(tag), from_ms, to_ms)?,
        None => Vec::new(),
    };
    let mut data = UnitData {
        states: merge_state_and_reason(&states, &reasons),
        ..UnitData::default()
    };
    for tag in unit.counting.tags() {
        let readings = counter_readings(reader, &unit.topic(tag), from_ms, to_ms)?;
        data.counters.insert(tag.to_string(), readings);
    }
    if let Some(tag) = &unit.energy_tag {
        data.energy = counter_readings(reader, &unit.topic(tag), from_ms, to_ms)?;
    }
    if let Some(tag) = &unit.product_tag {
        let product =
            |p: PointRow| (p.quality != Quality::Bad).then(|| (p.ts_ms, text_of(&p.value)));
        data.products = series(reader, &unit.topic(tag), from_ms, to_ms, product, |p| p.0)?;
    }
    data.no_data = reader
        .gaps(from_ms, to_ms)?
        .into_iter()
        .map(|g| NoData {
            from_ms: g.from_ms,
            to_ms: g.to_ms,
            reason: g.reason,
        })
        .collect();
    Ok(data)
}

/// One sample per change of either the state or the reason, each carrying
/// both values in force then.
pub fn merge_state_and_reason(states: &[PointRow], reasons: &[PointRow]) -> Vec<StateSample> {
    let mut out: Vec<StateSample> = Vec::with_capacity(states.len());
    let (mut i, mut j) = (0, 0);
    let mut state: Option<Option<String>> = None;
    let mut reason: Option<String> = None;
    while i < states.len() || j < reasons.len() {
        let next_state = states.get(i).map(|p| p.ts_ms);
        let next_reason = reasons.get(j).map(|p| p.ts_ms);
        let ts = match (next_state, next_reason) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        while let Some(p) = states.get(i).filter(|p| p.ts_ms == ts) {
            state = Some((p.quality != Quality::Bad).then(|| text_of(&p.value)));
            i += 1;
        }
        while let Some(p) = reasons.get(j).filter(|p| p.ts_ms == ts) {
            reason = (p.quality != Quality::Bad)
                .then(|| text_of(&p.value))
                .filter(|r| !r.is_empty());
            j += 1;
        }
        // Before the first state value there is no state to carry a reason.
        let Some(state) = state.clone() else { continue };
        let sample = StateSample {
            ts_ms: ts,
            state,
            reason: reason.clone(),
        };
        match out.last() {
            Some(last) if last.state == sample.state && last.reason == sample.reason => {}
            _ => out.push(sample),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts_ms: i64, value: &str, quality: Quality) -> PointRow {
        PointRow {
            ts_ms,
            value: Value::Text(value.into()),
            quality,
        }
    }

    #[test]
    fn state_and_reason_merge_into_one_sample_per_change() {
        let g = Quality::Good;
        let states = [
            row(10, "running", g),
            row(20, "faulted", g),
            row(40, "faulted", g),
            row(50, "running", Quality::Bad),
        ];
        let reasons = [
            row(5, "stale", g),
            row(20, "jam", g),
            row(30, "low air", g),
            row(45, "", g),
        ];
        let merged = merge_state_and_reason(&states, &reasons);
        let got: Vec<(i64, Option<&str>, Option<&str>)> = merged
            .iter()
            .map(|s| (s.ts_ms, s.state.as_deref(), s.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (10, Some("running"), Some("stale")),
                (20, Some("faulted"), Some("jam")),
                (30, Some("faulted"), Some("low air")),
                (45, Some("faulted"), None),
                (50, None, None),
            ]
        );
    }
}
