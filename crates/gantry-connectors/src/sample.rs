//! Gantry's JSON time-series payload convention as produced by connectors:
//! `{"timestamp_ms":<int>,"value":<number|bool|string>}`.
//!
//! Integers are printed without a decimal point and floats always with one,
//! so a consumer can tell a counter from an analog value by the JSON alone.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A single tag value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The float, if this is a `Float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    /// The integer, if this is an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The string, if this is `Text`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

/// Errors from encoding or decoding a sample payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// JSON has no representation for NaN or infinities.
    #[error("float value {0} is not finite and cannot be encoded")]
    NonFinite(f64),
    #[error("invalid sample JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One timestamped value in the JSON time-series convention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub value: Value,
}

impl Sample {
    pub fn new(timestamp_ms: u64, value: impl Into<Value>) -> Self {
        Self {
            timestamp_ms,
            value: value.into(),
        }
    }

    /// Serialises to the wire payload.
    pub fn encode(&self) -> Result<Bytes, PayloadError> {
        if let Value::Float(v) = self.value
            && !v.is_finite()
        {
            // serde_json would silently write `null` here.
            return Err(PayloadError::NonFinite(v));
        }
        Ok(Bytes::from(serde_json::to_vec(self)?))
    }

    /// Parses a wire payload.
    pub fn decode(payload: &[u8]) -> Result<Self, PayloadError> {
        Ok(serde_json::from_slice(payload)?)
    }
}

/// Rounds to `decimals` places, normalising `-0.0` so it prints as `0.0`.
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sample: &Sample) -> String {
        let bytes = sample.encode().unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn floats_keep_a_decimal_point_and_ints_do_not() {
        assert_eq!(
            text(&Sample::new(1_700_000_000_123, 600.0)),
            r#"{"timestamp_ms":1700000000123,"value":600.0}"#
        );
        assert_eq!(
            text(&Sample::new(5, 12.35)),
            r#"{"timestamp_ms":5,"value":12.35}"#
        );
        assert_eq!(
            text(&Sample::new(5, 42i64)),
            r#"{"timestamp_ms":5,"value":42}"#
        );
        assert_eq!(
            text(&Sample::new(5, true)),
            r#"{"timestamp_ms":5,"value":true}"#
        );
        assert_eq!(
            text(&Sample::new(5, "jam at \"infeed\"")),
            r#"{"timestamp_ms":5,"value":"jam at \"infeed\""}"#
        );
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                Sample::new(1, v).encode(),
                Err(PayloadError::NonFinite(_))
            ));
        }
    }

    #[test]
    fn decode_round_trips_and_keeps_int_float_distinction() {
        for value in [
            Value::Int(-3),
            Value::Float(3.0),
            Value::Float(0.25),
            Value::Bool(false),
            Value::Text("faulted".into()),
        ] {
            let sample = Sample::new(99, value);
            let decoded = Sample::decode(&sample.encode().unwrap()).unwrap();
            assert_eq!(decoded, sample);
        }
    }

    #[test]
    fn decode_rejects_malformed_payloads() {
        assert!(Sample::decode(b"{\"value\":1}").is_err());
        assert!(Sample::decode(b"{\"timestamp_ms\":1.5,\"value\":1}").is_err());
        assert!(Sample::decode(b"not json").is_err());
    }

    #[test]
    fn round_to_behaves() {
        assert_eq!(round_to(12.3456, 2), 12.35);
        assert_eq!(round_to(0.0004, 3), 0.0);
        assert!(round_to(-0.0001, 2).is_sign_positive());
    }
}
