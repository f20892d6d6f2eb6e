//! The contract rules for one sample on a modeled tag: payload shape, type,
//! range, enum value and timestamp sanity, and the conversion of accepted
//! input (bare or JSON) into one canonical [`Sample`].

use std::fmt;
use std::str::FromStr;

use gantry_model::{Sample, SampleRef, TagSpec, TagType, Value, ValueRef};

use crate::PolicyError;

/// 2000-01-01T00:00:00Z in Unix milliseconds: older timestamps are refused.
pub const YEAR_2000_MS: i64 = 946_684_800_000;

/// What happens to a publish on a path the model does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmodeledPolicy {
    /// Routed unchanged; counted (`unmodeled_allowed`).
    Allow,
    /// Not routed; acknowledged normally and copied to the dead-letter subtree.
    #[default]
    DeadLetter,
    /// Not routed; refused with 0x90 (MQTT 5) and copied to the dead-letter subtree.
    Reject,
}

impl UnmodeledPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            UnmodeledPolicy::Allow => "allow",
            UnmodeledPolicy::DeadLetter => "dead-letter",
            UnmodeledPolicy::Reject => "reject",
        }
    }
}

impl fmt::Display for UnmodeledPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UnmodeledPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(UnmodeledPolicy::Allow),
            "dead-letter" => Ok(UnmodeledPolicy::DeadLetter),
            "reject" => Ok(UnmodeledPolicy::Reject),
            other => Err(PolicyError(other.chars().take(64).collect())),
        }
    }
}

/// Tunables of the contract layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractSettings {
    pub unmodeled: UnmodeledPolicy,
    /// A timestamp further than this ahead of the broker's clock is refused.
    pub max_future_ms: u64,
    /// A timestamp before this (Unix ms) is refused; default 2000-01-01.
    pub min_timestamp_ms: i64,
}

impl Default for ContractSettings {
    fn default() -> Self {
        Self {
            unmodeled: UnmodeledPolicy::default(),
            max_future_ms: 5 * 60 * 1000,
            min_timestamp_ms: YEAR_2000_MS,
        }
    }
}

/// Which rule a message broke; the `rule` field of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Not a payload at all: empty, not UTF-8, bad JSON, unknown keys.
    Shape,
    /// A value of the wrong type for the tag.
    Type,
    /// A number outside the tag's min/max.
    Range,
    /// A string that is not one of the enum's values.
    Enum,
    /// A timestamp too far in the future or before the configured minimum.
    Timestamp,
    /// A path the model does not declare.
    Unmodeled,
}

impl Rule {
    pub const ALL: [Rule; 6] = [
        Rule::Shape,
        Rule::Type,
        Rule::Range,
        Rule::Enum,
        Rule::Timestamp,
        Rule::Unmodeled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rule::Shape => "shape",
            Rule::Type => "type",
            Rule::Range => "range",
            Rule::Enum => "enum",
            Rule::Timestamp => "timestamp",
            Rule::Unmodeled => "unmodeled",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Rule::Shape => 0,
            Rule::Type => 1,
            Rule::Range => 2,
            Rule::Enum => 3,
            Rule::Timestamp => 4,
            Rule::Unmodeled => 5,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A broken rule and a human-readable description (without the topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub message: String,
}

impl Violation {
    fn new(rule: Rule, message: impl Into<String>) -> Self {
        Self {
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Shows a value in a reason string, cutting long text.
fn show(value: &Value) -> String {
    match value {
        Value::Text(s) if s.chars().count() > 64 => {
            format!("\"{}...\"", s.chars().take(64).collect::<String>())
        }
        Value::Text(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn type_error(tag: &TagType, value: &Value) -> Violation {
    Violation::new(
        Rule::Type,
        format!(
            "expected {}, got {} {}",
            tag.name(),
            value.type_name(),
            show(value)
        ),
    )
}

/// Largest magnitude at which every f64 is still exactly an i64.
const I64_EXACT: f64 = 9_007_199_254_740_992.0;

/// Checks one payload against a tag and returns the canonical sample
/// (`now_ms` fills a missing timestamp). Bare payloads (`42.1`, `true`,
/// `running`) and the JSON object form are both accepted. Conversions: an
/// int tag takes integral floats (`5.0` becomes `5`), a float tag takes
/// ints (`5` becomes `5.0`), and a bare number or bool sent to a string or
/// enum tag is taken as its text.
pub fn validate_sample(
    tag: &TagSpec,
    payload: &[u8],
    now_ms: i64,
    settings: &ContractSettings,
) -> Result<Sample, Violation> {
    match validate(tag, payload, now_ms, settings)? {
        Some(sample) => Ok(sample),
        None => {
            Sample::parse(payload, now_ms).map_err(|e| Violation::new(Rule::Shape, e.to_string()))
        }
    }
}

/// Checks `payload` against the tag's contract. `Ok(None)`: the payload is
/// valid and already canonical, forward it unchanged. `Ok(Some(sample))`:
/// valid, and `sample` is what to forward (in canonical form).
pub fn validate(
    tag: &TagSpec,
    payload: &[u8],
    now_ms: i64,
    settings: &ContractSettings,
) -> Result<Option<Sample>, Violation> {
    if canonical_and_valid(tag, payload, now_ms, settings) {
        return Ok(None);
    }
    let mut sample =
        Sample::parse(payload, now_ms).map_err(|e| Violation::new(Rule::Shape, e.to_string()))?;
    let bare = !payload.trim_ascii_start().starts_with(b"{");
    sample.value = check_type(&tag.tag_type, sample.value, bare, payload)?;
    check_range(tag, &sample.value)?;
    check_timestamp(sample.timestamp_ms, now_ms, settings)?;
    Ok(Some(sample))
}

/// The fast path: a canonical payload whose value already has the tag's type
/// and passes every rule is checked in place, allocating nothing. Anything
/// else (including every violation) takes the full path, which explains it.
fn canonical_and_valid(
    tag: &TagSpec,
    payload: &[u8],
    now_ms: i64,
    settings: &ContractSettings,
) -> bool {
    let Some(s) = SampleRef::parse_canonical(payload) else {
        return false;
    };
    let number = match (&tag.tag_type, s.value) {
        (TagType::Float, ValueRef::Float(f)) if f.is_finite() => Some(f),
        (TagType::Int, ValueRef::Int(i)) => Some(i as f64),
        (TagType::Bool, ValueRef::Bool(_)) | (TagType::String, ValueRef::Text(_)) => None,
        (TagType::Enum { values }, ValueRef::Text(t)) if values.iter().any(|v| v == t) => None,
        _ => return false,
    };
    if let Some(v) = number
        && (tag.min.is_some_and(|min| v < min) || tag.max.is_some_and(|max| v > max))
    {
        return false;
    }
    check_timestamp(s.timestamp_ms, now_ms, settings).is_ok()
}

fn check_type(tag: &TagType, value: Value, bare: bool, payload: &[u8]) -> Result<Value, Violation> {
    match (tag, value) {
        (TagType::Float, Value::Float(f)) if f.is_finite() => Ok(Value::Float(f)),
        (TagType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (TagType::Int, Value::Int(i)) => Ok(Value::Int(i)),
        (TagType::Int, Value::Float(f)) if f.fract() == 0.0 && f.abs() <= I64_EXACT => {
            Ok(Value::Int(f as i64))
        }
        (TagType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
        (TagType::String, Value::Text(s)) => Ok(Value::Text(s)),
        (TagType::Enum { values }, Value::Text(s)) => {
            if values.contains(&s) {
                Ok(Value::Text(s))
            } else {
                Err(Violation::new(
                    Rule::Enum,
                    format!(
                        "value {} is not one of {}",
                        show(&Value::Text(s)),
                        values.join(", ")
                    ),
                ))
            }
        }
        // A bare `42` or `true` on a text tag means that text.
        (
            TagType::String | TagType::Enum { .. },
            Value::Int(_) | Value::Float(_) | Value::Bool(_),
        ) if bare => {
            let text = std::str::from_utf8(payload)
                .map(|t| t.trim().to_owned())
                .unwrap_or_default();
            check_type(tag, Value::Text(text), false, payload)
        }
        (tag, value) => Err(type_error(tag, &value)),
    }
}

fn check_range(tag: &TagSpec, value: &Value) -> Result<(), Violation> {
    let Some(v) = value.as_f64() else {
        return Ok(());
    };
    if let Some(min) = tag.min
        && v < min
    {
        return Err(Violation::new(
            Rule::Range,
            format!("value {value} below min {min:?}"),
        ));
    }
    if let Some(max) = tag.max
        && v > max
    {
        return Err(Violation::new(
            Rule::Range,
            format!("value {value} above max {max:?}"),
        ));
    }
    Ok(())
}

fn check_timestamp(ts: i64, now_ms: i64, settings: &ContractSettings) -> Result<(), Violation> {
    let limit = i64::try_from(settings.max_future_ms).unwrap_or(i64::MAX);
    if ts.saturating_sub(now_ms) > limit {
        return Err(Violation::new(
            Rule::Timestamp,
            format!(
                "timestamp_ms {ts} is {} ms ahead of the broker clock (limit {limit} ms)",
                ts.saturating_sub(now_ms)
            ),
        ));
    }
    if ts < settings.min_timestamp_ms {
        return Err(Violation::new(
            Rule::Timestamp,
            format!(
                "timestamp_ms {ts} is before the earliest accepted {}",
                settings.min_timestamp_ms
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
