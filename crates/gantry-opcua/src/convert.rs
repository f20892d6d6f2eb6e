//! OPC UA values to namespace samples: status codes to qualities, variants
//! to the tag's contract type, timestamps to Unix milliseconds.

use gantry_connectors::modbus::Target;
use gantry_model::{Quality, Value};
use opcua::types::{DataValue, DateTime, StatusCode, Variant};

/// Good → good, Uncertain → uncertain, Bad → bad. A missing status is Good
/// (OPC UA Part 4: an omitted StatusCode means Good).
pub fn quality_of(status: Option<StatusCode>) -> Quality {
    match status {
        None => Quality::Good,
        Some(s) if s.is_good() => Quality::Good,
        Some(s) if s.is_uncertain() => Quality::Uncertain,
        Some(_) => Quality::Bad,
    }
}

/// Unix ms of an OPC UA timestamp; `None` for a null (or pre-1970) one.
pub fn unix_ms(t: &DateTime) -> Option<i64> {
    if t.is_null() {
        return None;
    }
    let ms = t.as_chrono().timestamp_millis();
    (ms > 0).then_some(ms)
}

/// SourceTimestamp, else ServerTimestamp, else `now_ms`.
pub fn timestamp_of(dv: &DataValue, now_ms: i64) -> i64 {
    dv.source_timestamp
        .as_ref()
        .and_then(unix_ms)
        .or_else(|| dv.server_timestamp.as_ref().and_then(unix_ms))
        .unwrap_or(now_ms)
}

/// Why a value cannot become the tag's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("no value")]
    Empty,
    #[error("a {got} cannot be published as {want}")]
    Type {
        got: &'static str,
        want: &'static str,
    },
    #[error("{0} is not finite")]
    NonFinite(String),
    #[error("{0} is not an integer")]
    NotIntegral(String),
    #[error("{value} is not one of the enum values {values:?}")]
    NotInEnum { value: String, values: Vec<String> },
    #[error("enum index {index} is out of range (the tag has {len} values)")]
    EnumIndex { index: i64, len: usize },
}

fn target_name(t: &Target) -> &'static str {
    match t {
        Target::Float => "float",
        Target::Int => "int",
        Target::Bool => "bool",
        Target::String => "string",
        Target::Enum { .. } => "enum",
    }
}

/// The value of a numeric, boolean or text variant.
enum Scalar {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(String),
}

fn scalar(v: &Variant) -> Result<Scalar, ConvertError> {
    Ok(match v {
        Variant::Empty => return Err(ConvertError::Empty),
        Variant::Boolean(b) => Scalar::Bool(*b),
        Variant::SByte(i) => Scalar::Int(i128::from(*i)),
        Variant::Byte(i) => Scalar::Int(i128::from(*i)),
        Variant::Int16(i) => Scalar::Int(i128::from(*i)),
        Variant::UInt16(i) => Scalar::Int(i128::from(*i)),
        Variant::Int32(i) => Scalar::Int(i128::from(*i)),
        Variant::UInt32(i) => Scalar::Int(i128::from(*i)),
        Variant::Int64(i) => Scalar::Int(i128::from(*i)),
        Variant::UInt64(i) => Scalar::Int(i128::from(*i)),
        Variant::Float(f) => Scalar::Float(f64::from(*f)),
        Variant::Double(f) => Scalar::Float(*f),
        Variant::String(s) => Scalar::Text(s.as_ref().to_owned()),
        Variant::LocalizedText(t) => Scalar::Text(t.text.as_ref().to_owned()),
        Variant::QualifiedName(q) => Scalar::Text(q.name.as_ref().to_owned()),
        Variant::DateTime(d) => match unix_ms(d) {
            Some(ms) => Scalar::Int(i128::from(ms)),
            None => return Err(ConvertError::Empty),
        },
        other => {
            return Err(ConvertError::Type {
                got: variant_name(other),
                want: "a scalar",
            });
        }
    })
}

fn variant_name(v: &Variant) -> &'static str {
    match v {
        Variant::Array(_) => "array",
        Variant::ByteString(_) => "ByteString",
        Variant::Guid(_) => "Guid",
        Variant::NodeId(_) | Variant::ExpandedNodeId(_) => "NodeId",
        Variant::ExtensionObject(_) => "structure",
        Variant::StatusCode(_) => "StatusCode",
        Variant::XmlElement(_) => "XmlElement",
        Variant::DataValue(_) => "DataValue",
        Variant::Variant(_) => "Variant",
        Variant::DiagnosticInfo(_) => "DiagnosticInfo",
        _ => "value",
    }
}

/// Converts a variant to the tag's contract type:
///
/// - float: any number (booleans are not numbers);
/// - int: integers; floats only when integral;
/// - bool: Boolean, or the integers 0 and 1;
/// - string: text (String, LocalizedText, QualifiedName), numbers and
///   booleans as their decimal text;
/// - enum: text that is one of the values, or an integer used as a 0-based
///   index into the values.
pub fn convert(v: &Variant, target: &Target) -> Result<Value, ConvertError> {
    let s = scalar(v)?;
    let mismatch = |got: &'static str| ConvertError::Type {
        got,
        want: target_name(target),
    };
    Ok(match (target, s) {
        (Target::Float, Scalar::Float(f)) if f.is_finite() => Value::Float(f),
        (Target::Float, Scalar::Float(f)) => return Err(ConvertError::NonFinite(f.to_string())),
        (Target::Float, Scalar::Int(i)) => Value::Float(i as f64),
        (Target::Float, Scalar::Bool(_)) => return Err(mismatch("Boolean")),
        (Target::Float, Scalar::Text(_)) => return Err(mismatch("String")),
        (Target::Int, Scalar::Int(i)) => match i64::try_from(i) {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(ConvertError::NotIntegral(i.to_string())),
        },
        (Target::Int, Scalar::Float(f)) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::Int(f as i64)
            } else {
                return Err(ConvertError::NotIntegral(f.to_string()));
            }
        }
        (Target::Int, Scalar::Bool(_)) => return Err(mismatch("Boolean")),
        (Target::Int, Scalar::Text(_)) => return Err(mismatch("String")),
        (Target::Bool, Scalar::Bool(b)) => Value::Bool(b),
        (Target::Bool, Scalar::Int(0)) => Value::Bool(false),
        (Target::Bool, Scalar::Int(1)) => Value::Bool(true),
        (Target::Bool, Scalar::Int(_)) => return Err(mismatch("integer other than 0 or 1")),
        (Target::Bool, Scalar::Float(_)) => return Err(mismatch("Double")),
        (Target::Bool, Scalar::Text(_)) => return Err(mismatch("String")),
        (Target::String, Scalar::Text(t)) => Value::Text(t),
        (Target::String, Scalar::Int(i)) => Value::Text(i.to_string()),
        (Target::String, Scalar::Float(f)) => Value::Text(f.to_string()),
        (Target::String, Scalar::Bool(b)) => Value::Text(b.to_string()),
        (Target::Enum { values }, Scalar::Text(t)) => {
            if values.contains(&t) {
                Value::Text(t)
            } else {
                return Err(ConvertError::NotInEnum {
                    value: t,
                    values: values.clone(),
                });
            }
        }
        (Target::Enum { values }, Scalar::Int(i)) => {
            match usize::try_from(i).ok().and_then(|ix| values.get(ix)) {
                Some(v) => Value::Text(v.clone()),
                None => {
                    return Err(ConvertError::EnumIndex {
                        index: i64::try_from(i).unwrap_or(i64::MAX),
                        len: values.len(),
                    });
                }
            }
        }
        (Target::Enum { .. }, Scalar::Float(_)) => return Err(mismatch("Double")),
        (Target::Enum { .. }, Scalar::Bool(_)) => return Err(mismatch("Boolean")),
    })
}
