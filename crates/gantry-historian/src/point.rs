//! The historian's records: one value of one series at one instant, the
//! series it belongs to, and the gaps where values may be missing.

use std::sync::Arc;

use gantry_model::{Quality, Value};
use serde::Serialize;

/// One value to store: the topic it was published on (its series), the
/// sample's own timestamp, the value and its quality.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub topic: Arc<str>,
    pub ts_ms: i64,
    pub value: Value,
    pub quality: Quality,
}

/// One stored value of a series, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointRow {
    pub ts_ms: i64,
    #[serde(serialize_with = "serialize_value")]
    pub value: Value,
    #[serde(serialize_with = "serialize_quality")]
    pub quality: Quality,
}

/// The type of a series' values, from its latest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Int,
    Float,
    Bool,
    String,
}

impl ValueType {
    pub fn of(value: &Value) -> ValueType {
        match value {
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Text(_) => ValueType::String,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::String => "string",
        }
    }

    pub fn parse(s: &str) -> Option<ValueType> {
        match s {
            "int" => Some(ValueType::Int),
            "float" => Some(ValueType::Float),
            "bool" => Some(ValueType::Bool),
            "string" => Some(ValueType::String),
            _ => None,
        }
    }

    /// Numeric series get rollups, averages and time-weighted averages;
    /// booleans count as 0/1.
    pub const fn is_numeric(self) -> bool {
        !matches!(self, ValueType::String)
    }

    /// Series whose values are states (time-in-state applies).
    pub const fn is_discrete(self) -> bool {
        matches!(self, ValueType::String | ValueType::Bool | ValueType::Int)
    }
}

/// A series: one topic's values over time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesInfo {
    pub id: i64,
    pub topic: String,
    pub value_type: ValueType,
    /// Earliest and latest stored timestamp, when any value is stored.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

/// A time range in which values may be missing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Values known to be lost (0 when only the possibility is known, as
    /// after a crash).
    pub lost: u64,
    pub reason: String,
}

/// The stored quality code: 0 good, 1 uncertain, 2 bad.
pub const fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
    }
}

pub const fn quality_from_code(code: i64) -> Quality {
    match code {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        _ => Quality::Bad,
    }
}

/// The numeric view used by aggregates: booleans as 0/1, text has none.
pub fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Text(_) => None,
    }
}

/// Rebuilds a value from its stored columns and the series type.
pub fn value_from_columns(
    value_type: ValueType,
    num: Option<f64>,
    int: Option<i64>,
    txt: Option<String>,
) -> Value {
    match value_type {
        ValueType::String => Value::Text(txt.unwrap_or_default()),
        ValueType::Bool => Value::Bool(
            int.map(|i| i != 0)
                .or(num.map(|n| n != 0.0))
                .unwrap_or(false),
        ),
        ValueType::Int => match (int, num) {
            (Some(i), _) => Value::Int(i),
            (None, Some(n)) => Value::Int(n as i64),
            (None, None) => Value::Text(txt.unwrap_or_default()),
        },
        ValueType::Float => match (num, int) {
            (Some(n), _) => Value::Float(n),
            (None, Some(i)) => Value::Float(i as f64),
            (None, None) => Value::Text(txt.unwrap_or_default()),
        },
    }
}

pub(crate) fn serialize_value<S: serde::Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Value::Int(i) => s.serialize_i64(*i),
        Value::Float(f) => s.serialize_f64(*f),
        Value::Bool(b) => s.serialize_bool(*b),
        Value::Text(t) => s.serialize_str(t),
    }
}

pub(crate) fn serialize_quality<S: serde::Serializer>(
    q: &Quality,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(q.as_str())
}

/// A map keyed by series id: store-assigned integers, never attacker-chosen,
/// hashed with the model's fast topic hasher (maps keyed by them sit in the
/// inner loops of snapshots).
pub type IdMap<V> = std::collections::HashMap<i64, V, gantry_model::plant::BuildTopicHasher>;
