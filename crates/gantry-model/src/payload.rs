//! Gantry's payload convention: UMH-compatible time-series JSON
//! (`{"timestamp_ms": .., "value": .., "quality": ..}`), the bare payload
//! forms accepted from simple publishers, and the canonical encoding.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::suggest::closest;

const KEYS: [&str; 3] = ["timestamp_ms", "value", "quality"];

/// The value of one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl Value {
    /// Numeric view of `Int` and `Float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(_) | Value::Text(_) => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
            Value::Text(_) => "string",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            // Debug keeps the decimal point on integral floats (`42.0`).
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// OPC UA-style quality of a sample; `Good` when the payload does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    #[default]
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    pub const fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }

    pub fn parse(s: &str) -> Option<Quality> {
        match s {
            "good" => Some(Quality::Good),
            "uncertain" => Some(Quality::Uncertain),
            "bad" => Some(Quality::Bad),
            _ => None,
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Quality {
    type Err = PayloadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quality::parse(s).ok_or_else(|| PayloadError::InvalidQuality { got: preview(s) })
    }
}

/// What is wrong with a payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayloadError {
    #[error("payload is empty")]
    Empty,
    #[error("payload is not UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("payload is not valid JSON: {message}")]
    Json { message: String },
    #[error("value must be a number, bool or string, got {got}")]
    ValueType { got: &'static str },
    #[error("missing key \"value\"")]
    MissingValue,
    #[error("unknown key \"{key}\"{}", did_you_mean(.suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<&'static str>,
    },
    #[error("timestamp_ms must be an integer, got {got}")]
    TimestampType { got: &'static str },
    #[error("timestamp_ms {got} does not fit in a signed 64-bit integer")]
    TimestampRange { got: String },
    #[error("quality must be a string, got {got}")]
    QualityType { got: &'static str },
    #[error("quality must be \"good\", \"uncertain\" or \"bad\", got \"{got}\"")]
    InvalidQuality { got: String },
    #[error("float value {got} is not finite and has no JSON number form")]
    NonFinite { got: &'static str },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => " (expected timestamp_ms, value or quality)".to_owned(),
    }
}

fn preview(s: &str) -> String {
    s.chars().take(64).collect()
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// One time-series sample as carried on a tag topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value: Value,
    pub quality: Quality,
}

impl Sample {
    /// A sample with `Good` quality.
    pub fn new(timestamp_ms: i64, value: Value) -> Self {
        Sample {
            timestamp_ms,
            value,
            quality: Quality::Good,
        }
    }

    pub fn with_quality(mut self, quality: Quality) -> Self {
        self.quality = quality;
        self
    }

    /// Parses any accepted payload form; `now_ms` fills a missing timestamp.
    ///
    /// Accepted: the JSON object form, bare JSON scalars (`42.1`, `7`, `true`,
    /// `"text"`), and raw unquoted UTF-8 text, which becomes `Value::Text`
    /// with surrounding whitespace trimmed. Input that starts like a JSON
    /// object, array or string but does not parse is a JSON error, not text.
    /// Integers outside the i64 range become floats.
    pub fn parse(bytes: &[u8], now_ms: i64) -> Result<Sample, PayloadError> {
        if let Some(sample) = Sample::parse_canonical(bytes) {
            return Ok(sample);
        }
        let text = std::str::from_utf8(bytes).map_err(|e| PayloadError::NotUtf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let text = text.trim();
        if text.is_empty() {
            return Err(PayloadError::Empty);
        }
        let json = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) => json,
            Err(e) if text.starts_with(['{', '[', '"']) => {
                return Err(PayloadError::Json {
                    message: e.to_string(),
                });
            }
            Err(_) => return Ok(Sample::new(now_ms, Value::Text(text.to_owned()))),
        };
        match json {
            serde_json::Value::Object(map) => Self::from_object(map, now_ms),
            other => Ok(Sample::new(now_ms, json_to_value(other)?)),
        }
    }

    fn from_object(
        mut map: serde_json::Map<String, serde_json::Value>,
        now_ms: i64,
    ) -> Result<Sample, PayloadError> {
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(PayloadError::UnknownKey {
                key: preview(key),
                suggestion: closest(key, &KEYS),
            });
        }
        let value = json_to_value(map.remove("value").ok_or(PayloadError::MissingValue)?)?;
        let timestamp_ms = match map.remove("timestamp_ms") {
            None => now_ms,
            Some(serde_json::Value::Number(n)) if !n.is_f64() => n
                .as_i64()
                .ok_or_else(|| PayloadError::TimestampRange { got: n.to_string() })?,
            Some(other) => {
                return Err(PayloadError::TimestampType {
                    got: json_kind(&other),
                });
            }
        };
        let quality = match map.remove("quality") {
            None => Quality::Good,
            Some(serde_json::Value::String(s)) => s.parse()?,
            Some(other) => {
                return Err(PayloadError::QualityType {
                    got: json_kind(&other),
                });
            }
        };
        Ok(Sample {
            timestamp_ms,
            value,
            quality,
        })
    }

    /// Canonical compact JSON: keys in the order `timestamp_ms`, `value`,
    /// `quality`, the latter only when not good. Floats always carry a
    /// decimal point or exponent so they parse back as floats; non-finite
    /// floats, which JSON cannot express, are written as the strings
    /// `"NaN"`, `"Infinity"` and `"-Infinity"` (and so read back as text).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut out = String::with_capacity(48);
        // Writing into a String cannot fail.
        let _ = write!(out, "{{\"timestamp_ms\":{},\"value\":", self.timestamp_ms);
        match &self.value {
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => push_json_string(&mut out, non_finite_name(*f)),
            },
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Text(s) => push_json_string(&mut out, s),
        }
        if self.quality != Quality::Good {
            out.push_str(",\"quality\":\"");
            out.push_str(self.quality.as_str());
            out.push('"');
        }
        out.push('}');
        out.into_bytes()
    }

    /// Parses `bytes` only if they are exactly the canonical encoding that
    /// [`Sample::to_json_bytes`] writes. `None` means "not canonical" (not
    /// necessarily invalid): use [`Sample::parse`] then.
    pub fn parse_canonical(bytes: &[u8]) -> Option<Sample> {
        SampleRef::parse_canonical(bytes).map(|s| s.to_sample())
    }

    /// Like [`Sample::to_json_bytes`], but refuses a non-finite float value
    /// instead of writing it as a string, for producers that must only
    /// publish numbers for numeric tags.
    pub fn try_to_json_bytes(&self) -> Result<Vec<u8>, PayloadError> {
        match self.value {
            Value::Float(f) if !f.is_finite() => Err(PayloadError::NonFinite {
                got: non_finite_name(f),
            }),
            _ => Ok(self.to_json_bytes()),
        }
    }
}

/// A value borrowed from a payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(&'a str),
}

/// A sample borrowed from a canonical payload: checking it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef<'a> {
    pub timestamp_ms: i64,
    pub value: ValueRef<'a>,
    pub quality: Quality,
}

impl<'a> SampleRef<'a> {
    /// Parses `bytes` only if they are exactly the canonical encoding that
    /// [`Sample::to_json_bytes`] writes; `None` otherwise. The broker's
    /// contract check takes this path for producers that already publish
    /// canonical JSON, and then forwards the bytes unchanged.
    pub fn parse_canonical(bytes: &'a [u8]) -> Option<SampleRef<'a>> {
        Self::parse_layout(bytes, true)
    }

    /// Like [`parse_canonical`](Self::parse_canonical), without checking that
    /// a float is written in its shortest form: for readers that want the
    /// value, not the bytes (the historian). Whatever both accept, they read
    /// identically.
    pub fn parse_compact(bytes: &'a [u8]) -> Option<SampleRef<'a>> {
        Self::parse_layout(bytes, false)
    }

    fn parse_layout(bytes: &'a [u8], shortest_floats: bool) -> Option<SampleRef<'a>> {
        let rest = bytes.strip_prefix(b"{\"timestamp_ms\":")?;
        let (timestamp_ms, rest) = split_int(rest)?;
        let rest = rest.strip_prefix(b",\"value\":")?;
        let (value, rest) = canonical_scalar(rest, shortest_floats)?;
        let (quality, rest) = match rest.strip_prefix(b",\"quality\":\"") {
            Some(q) => {
                let end = q.iter().position(|b| *b == b'"')?;
                let quality = match &q[..end] {
                    b"uncertain" => Quality::Uncertain,
                    b"bad" => Quality::Bad,
                    _ => return None,
                };
                (quality, &q[end + 1..])
            }
            None => (Quality::Good, rest),
        };
        (rest == b"}").then_some(SampleRef {
            timestamp_ms,
            value,
            quality,
        })
    }

    pub fn to_sample(&self) -> Sample {
        Sample {
            timestamp_ms: self.timestamp_ms,
            value: match self.value {
                ValueRef::Int(i) => Value::Int(i),
                ValueRef::Float(f) => Value::Float(f),
                ValueRef::Bool(b) => Value::Bool(b),
                ValueRef::Text(t) => Value::Text(t.to_owned()),
            },
            quality: self.quality,
        }
    }
}

/// An integer written as `i64`'s Display writes it (no sign, no leading zeros).
fn canonical_int(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, b),
    };
    if digits.is_empty() || (digits[0] == b'0' && b.len() > 1) {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses too.
    let mut n: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

/// Splits a canonical integer off the front of `b` (up to the first byte that
/// cannot belong to it).
fn split_int(b: &[u8]) -> Option<(i64, &[u8])> {
    let end = b
        .iter()
        .position(|c| !(c.is_ascii_digit() || *c == b'-'))
        .unwrap_or(b.len());
    Some((canonical_int(&b[..end])?, &b[end..]))
}

/// The canonical value and what follows it.
fn canonical_scalar(b: &[u8], shortest_floats: bool) -> Option<(ValueRef<'_>, &[u8])> {
    match *b.first()? {
        b't' => Some((ValueRef::Bool(true), b.strip_prefix(b"true")?)),
        b'f' => Some((ValueRef::Bool(false), b.strip_prefix(b"false")?)),
        b'"' => {
            let body = &b[1..];
            // Escapes and control characters take the full parser.
            let end = string_end(body)?;
            let text = std::str::from_utf8(&body[..end]).ok()?;
            if matches!(text, "NaN" | "Infinity" | "-Infinity") {
                return None;
            }
            Some((ValueRef::Text(text), &body[end + 1..]))
        }
        _ => {
            let end = b
                .iter()
                .position(|c| {
                    !(c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                })
                .unwrap_or(b.len());
            let (number, rest) = b.split_at(end);
            if number.iter().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                let text = std::str::from_utf8(number).ok()?;
                let f: f64 = text.parse().ok()?;
                if !shortest_floats {
                    return f.is_finite().then_some((ValueRef::Float(f), rest));
                }
                // Canonical only if writing it back gives the same bytes.
                let n = serde_json::Number::from_f64(f)?;
                let mut buf = StackText::default();
                std::fmt::Write::write_fmt(&mut buf, format_args!("{n}")).ok()?;
                (buf.as_bytes() == number).then_some((ValueRef::Float(f), rest))
            } else {
                Some((ValueRef::Int(canonical_int(number)?), rest))
            }
        }
    }
}

/// Index of the closing quote of a JSON string body without escapes, or
/// `None` at a backslash, a control character or the end of input. Scans
/// eight bytes per step: this loop is the larger part of the broker's
/// per-message contract check on text tags.
fn string_end(body: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // High bit set in every byte of `x` that is zero (exact when combined
    // with the `!x` mask below, which is what the per-byte fallback checks).
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut start = 0;
    let mut chunks = body.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let special = zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        if special != 0 {
            break;
        }
        start += 8;
    }
    for (i, &c) in body[start..].iter().enumerate() {
        if c == b'"' {
            return Some(start + i);
        }
        if c == b'\\' || c < 0x20 {
            return None;
        }
    }
    None
}

/// A small fixed buffer for formatting a number without allocating.
struct StackText {
    buf: [u8; 40],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The name a non-finite float is written as.
fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn json_to_value(json: serde_json::Value) -> Result<Value, PayloadError> {
    match json {
        serde_json::Value::Bool(b) => Ok(Value::Bool(b)),
        serde_json::Value::String(s) => Ok(Value::Text(s)),
        serde_json::Value::Number(n) => Ok(match n.as_i64() {
            Some(i) if !n.is_f64() => Value::Int(i),
            // Floats, and integers beyond i64 (which serde_json keeps as u64).
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        other => Err(PayloadError::ValueType {
            got: json_kind(&other),
        }),
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn canonical_fast_path_accepts_exactly_the_canonical_form() {
        for text in [
            r#"{"timestamp_ms":1700000000000,"value":42}"#,
            r#"{"timestamp_ms":1700000000000,"value":-3}"#,
            r#"{"timestamp_ms":1700000000000,"value":1500.0}"#,
            r#"{"timestamp_ms":1700000000000,"value":0.1}"#,
            r#"{"timestamp_ms":1700000000000,"value":true}"#,
            r#"{"timestamp_ms":1700000000000,"value":"running","quality":"bad"}"#,
        ] {
            let fast = Sample::parse_canonical(text.as_bytes()).expect(text);
            assert_eq!(fast.to_json_bytes(), text.as_bytes(), "{text}");
            assert_eq!(Ok(fast), parse(text), "{text}");
        }
        for text in [
            r#"{"timestamp_ms":1700000000000,"value":1.50}"#,
            r#"{"timestamp_ms":1700000000000,"value":007}"#,
            r#"{"timestamp_ms":1700000000000,"value":+7}"#,
            r#"{"timestamp_ms":1700000000000,"value":"a\"b"}"#,
            r#"{"timestamp_ms":1700000000000,"value":1,"quality":"good"}"#,
            r#"{"timestamp_ms":01,"value":1}"#,
            r#"{"value":1,"timestamp_ms":1700000000000}"#,
            r#"{"timestamp_ms":1700000000000, "value":1}"#,
            r#"{"timestamp_ms":1700000000000,"value":1} "#,
            "42",
        ] {
            assert!(Sample::parse_canonical(text.as_bytes()).is_none(), "{text}");
        }
    }

    fn parse(s: &str) -> Result<Sample, PayloadError> {
        Sample::parse(s.as_bytes(), NOW)
    }

    #[test]
    fn compact_parsing_reads_the_same_values_and_accepts_long_floats() {
        for text in [
            r#"{"timestamp_ms":1700000000000,"value":42}"#,
            r#"{"timestamp_ms":1700000000000,"value":0.1}"#,
            r#"{"timestamp_ms":1700000000000,"value":1500.0}"#,
            r#"{"timestamp_ms":1700000000000,"value":"running","quality":"bad"}"#,
            r#"{"timestamp_ms":1700000000000,"value":false,"quality":"uncertain"}"#,
        ] {
            assert_eq!(
                SampleRef::parse_compact(text.as_bytes()),
                SampleRef::parse_canonical(text.as_bytes()),
                "{text}"
            );
        }
        let long = br#"{"timestamp_ms":5,"value":1.50}"#;
        assert!(SampleRef::parse_canonical(long).is_none());
        let got = SampleRef::parse_compact(long).map(|s| s.to_sample());
        assert_eq!(got, Some(Sample::new(5, Value::Float(1.5))));
        for text in [
            r#"{"timestamp_ms":1700000000000,"value":007}"#,
            r#"{"timestamp_ms":1700000000000,"value":1e999}"#,
            r#"{"timestamp_ms":1700000000000,"value":1,"quality":"good"}"#,
        ] {
            assert!(
                SampleRef::parse_compact(text.as_bytes()).is_none(),
                "{text}"
            );
        }
    }

    #[test]
    fn object_form() {
        let s = parse(r#"{"timestamp_ms": 1700000000123, "value": 42.5}"#).unwrap();
        assert_eq!(s, Sample::new(1_700_000_000_123, Value::Float(42.5)));
        let s = parse(r#"{"value": 7, "quality": "uncertain"}"#).unwrap();
        assert_eq!(s.timestamp_ms, NOW);
        assert_eq!(s.value, Value::Int(7));
        assert_eq!(s.quality, Quality::Uncertain);
        let s = parse(r#"{"value": "running", "timestamp_ms": -5}"#).unwrap();
        assert_eq!(s.value, Value::Text("running".into()));
        assert_eq!(s.timestamp_ms, -5);
        let s = parse(r#"{"value": false, "quality": "bad"}"#).unwrap();
        assert_eq!(s.value, Value::Bool(false));
        assert_eq!(s.quality, Quality::Bad);
    }

    #[test]
    fn bare_forms() {
        assert_eq!(parse("42.1").unwrap().value, Value::Float(42.1));
        assert_eq!(parse("7").unwrap().value, Value::Int(7));
        assert_eq!(parse("-7").unwrap().value, Value::Int(-7));
        assert_eq!(parse("7.0").unwrap().value, Value::Float(7.0));
        assert_eq!(parse("1e3").unwrap().value, Value::Float(1000.0));
        assert_eq!(parse("true").unwrap().value, Value::Bool(true));
        assert_eq!(parse("\"idle\"").unwrap().value, Value::Text("idle".into()));
        let s = parse(" running\n").unwrap();
        assert_eq!(s, Sample::new(NOW, Value::Text("running".into())));
        assert_eq!(
            parse("12 apples").unwrap().value,
            Value::Text("12 apples".into())
        );
        assert_eq!(parse("True").unwrap().value, Value::Text("True".into()));
        assert_eq!(
            parse("Motor überhitzt").unwrap().value,
            Value::Text("Motor überhitzt".into())
        );
    }

    #[test]
    fn integers_beyond_i64_become_floats() {
        assert_eq!(
            parse("18446744073709551615").unwrap().value,
            Value::Float(18446744073709551615.0)
        );
        assert_eq!(
            parse("9223372036854775807").unwrap().value,
            Value::Int(i64::MAX)
        );
    }

    #[test]
    fn precise_errors() {
        let cases: [(&str, PayloadError, &str); 12] = [
            ("", PayloadError::Empty, "payload is empty"),
            ("  \n", PayloadError::Empty, "payload is empty"),
            (
                r#"{"timestamp_ms": "1700000000000", "value": 1}"#,
                PayloadError::TimestampType { got: "string" },
                "timestamp_ms must be an integer, got string",
            ),
            (
                r#"{"timestamp_ms": 1.5, "value": 1}"#,
                PayloadError::TimestampType { got: "float" },
                "timestamp_ms must be an integer, got float",
            ),
            (
                r#"{"timestamp_ms": 18446744073709551615, "value": 1}"#,
                PayloadError::TimestampRange {
                    got: "18446744073709551615".into(),
                },
                "timestamp_ms 18446744073709551615 does not fit in a signed 64-bit integer",
            ),
            (
                r#"{"timestamp_ms": 1, "vlaue": 1}"#,
                PayloadError::UnknownKey {
                    key: "vlaue".into(),
                    suggestion: Some("value"),
                },
                "unknown key \"vlaue\" (did you mean \"value\"?)",
            ),
            (
                r#"{"value": 1, "unit": "degC"}"#,
                PayloadError::UnknownKey {
                    key: "unit".into(),
                    suggestion: None,
                },
                "unknown key \"unit\" (expected timestamp_ms, value or quality)",
            ),
            (
                r#"{"value": {"a": 1}}"#,
                PayloadError::ValueType { got: "object" },
                "value must be a number, bool or string, got object",
            ),
            (
                "[1, 2]",
                PayloadError::ValueType { got: "array" },
                "value must be a number, bool or string, got array",
            ),
            (
                "null",
                PayloadError::ValueType { got: "null" },
                "value must be a number, bool or string, got null",
            ),
            (
                r#"{"timestamp_ms": 1}"#,
                PayloadError::MissingValue,
                "missing key \"value\"",
            ),
            (
                r#"{"value": 1, "quality": "ok"}"#,
                PayloadError::InvalidQuality { got: "ok".into() },
                "quality must be \"good\", \"uncertain\" or \"bad\", got \"ok\"",
            ),
        ];
        for (input, expected, message) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err, expected, "{input}");
            assert_eq!(err.to_string(), message, "{input}");
        }
        assert_eq!(
            parse(r#"{"value": 1, "quality": 2}"#).unwrap_err(),
            PayloadError::QualityType { got: "integer" }
        );
        assert_eq!(
            parse(r#"{"timestamp": 1, "value": 1}"#)
                .unwrap_err()
                .to_string(),
            "unknown key \"timestamp\" (did you mean \"timestamp_ms\"?)"
        );
    }

    #[test]
    fn broken_json_is_not_text() {
        for input in [r#"{"value": 1,}"#, "[1, 2", "\"unterminated"] {
            let err = parse(input).unwrap_err();
            assert!(matches!(err, PayloadError::Json { .. }), "{input}: {err}");
        }
        assert_eq!(
            parse(r#"{"value": 1,}"#).unwrap_err().to_string(),
            "payload is not valid JSON: trailing comma at line 1 column 13"
        );
    }

    #[test]
    fn not_utf8() {
        assert_eq!(
            Sample::parse(b"ab\xff", NOW),
            Err(PayloadError::NotUtf8 { valid_up_to: 2 })
        );
    }

    #[test]
    fn canonical_encoding() {
        let json = |s: Sample| String::from_utf8(s.to_json_bytes()).unwrap();
        assert_eq!(
            json(Sample::new(1, Value::Float(42.0))),
            r#"{"timestamp_ms":1,"value":42.0}"#
        );
        assert_eq!(
            json(Sample::new(1, Value::Int(42))),
            r#"{"timestamp_ms":1,"value":42}"#
        );
        assert_eq!(
            json(Sample::new(-1, Value::Bool(true)).with_quality(Quality::Bad)),
            r#"{"timestamp_ms":-1,"value":true,"quality":"bad"}"#
        );
        assert_eq!(
            json(Sample::new(1, Value::Text("a\"b\\c\n\u{1}é".into()))),
            r#"{"timestamp_ms":1,"value":"a\"b\\c\n\u0001é"}"#
        );
        assert_eq!(
            json(Sample::new(1, Value::Float(f64::NAN))),
            r#"{"timestamp_ms":1,"value":"NaN"}"#
        );
        assert_eq!(
            json(Sample::new(1, Value::Float(f64::NEG_INFINITY))),
            r#"{"timestamp_ms":1,"value":"-Infinity"}"#
        );
        let big = Sample::new(1, Value::Float(1e300));
        assert_eq!(Sample::parse(&big.to_json_bytes(), 0).unwrap(), big);
    }

    #[test]
    fn strict_encoding_refuses_non_finite_floats() {
        for (f, name) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ] {
            let err = Sample::new(1, Value::Float(f))
                .try_to_json_bytes()
                .unwrap_err();
            assert_eq!(err, PayloadError::NonFinite { got: name });
            assert_eq!(
                err.to_string(),
                format!("float value {name} is not finite and has no JSON number form")
            );
        }
        for sample in [
            Sample::new(1, Value::Float(600.0)),
            Sample::new(1, Value::Int(42)),
            Sample::new(1, Value::Text("idle".into())).with_quality(Quality::Bad),
        ] {
            assert_eq!(sample.try_to_json_bytes(), Ok(sample.to_json_bytes()));
        }
    }

    #[test]
    fn quality_and_value_helpers() {
        assert_eq!(Quality::default(), Quality::Good);
        for q in [Quality::Good, Quality::Uncertain, Quality::Bad] {
            assert_eq!(q.as_str().parse::<Quality>(), Ok(q));
        }
        assert!("Good".parse::<Quality>().is_err());
        assert_eq!(Value::Int(3).as_f64(), Some(3.0));
        assert_eq!(Value::Bool(true).as_f64(), None);
        assert_eq!(Value::Float(42.0).to_string(), "42.0");
        assert_eq!(Value::Text("x".into()).type_name(), "string");
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(Value::Float),
            any::<bool>().prop_map(Value::Bool),
            any::<String>().prop_map(Value::Text),
        ]
    }

    fn quality_strategy() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::Good),
            Just(Quality::Uncertain),
            Just(Quality::Bad)
        ]
    }

    /// What `string_end` computes, one byte at a time.
    fn string_end_bytewise(body: &[u8]) -> Option<usize> {
        for (i, &c) in body.iter().enumerate() {
            if c == b'"' {
                return Some(i);
            }
            if c == b'\\' || c < 0x20 {
                return None;
            }
        }
        None
    }

    proptest! {
        #[test]
        fn string_end_agrees_with_the_bytewise_scan(
            body in proptest::collection::vec(
                prop_oneof![
                    8 => b'a'..=b'z',
                    1 => Just(b'"'),
                    1 => Just(b'\\'),
                    1 => 0u8..0x21,
                    1 => 0x7eu8..=0xff,
                ],
                0..40,
            )
        ) {
            prop_assert_eq!(string_end(&body), string_end_bytewise(&body));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Sample::parse(&bytes, NOW);
        }

        #[test]
        fn parse_never_panics_on_json_like_text(
            s in "[{}\\[\\]\":,0-9a-z_ .eE+-]{0,64}"
        ) {
            let _ = Sample::parse(s.as_bytes(), NOW);
        }

        #[test]
        fn encoding_round_trips(
            timestamp_ms in any::<i64>(),
            value in value_strategy(),
            quality in quality_strategy(),
        ) {
            let sample = Sample { timestamp_ms, value, quality };
            let bytes = sample.to_json_bytes();
            prop_assert_eq!(sample.try_to_json_bytes(), Ok(bytes.clone()));
            prop_assert_eq!(Sample::parse(&bytes, 0), Ok(sample));
        }
    }
}
