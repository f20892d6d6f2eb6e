//! Validation of a single topic segment (one level between `/`), the
//! [`Segment`] newtype that proves a segment is valid, and the reserved
//! [`SystemSubtree`] segments.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest allowed segment, in bytes (segments are ASCII, so also in characters).
pub const MAX_SEGMENT_LEN: usize = 64;

/// Longest segment text kept inside a [`NameError`], so that an error about a
/// huge input does not carry the whole input around.
const PREVIEW_LEN: usize = 80;

/// What is wrong with a topic segment. Positions are 1-based character positions.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("segment is empty")]
    Empty,
    #[error("segment \"{segment}\" is {len} bytes long; the maximum is {MAX_SEGMENT_LEN}")]
    TooLong { segment: String, len: usize },
    #[error("segment \"{segment}\" contains uppercase {ch:?} at character {position}")]
    Uppercase {
        segment: String,
        ch: char,
        position: usize,
    },
    #[error("segment \"{segment}\" contains {} at character {position}", describe_whitespace(*.ch))]
    Whitespace {
        segment: String,
        ch: char,
        position: usize,
    },
    #[error("segment \"{segment}\" contains {ch:?} at character {position}; {}", reserved_reason(*.ch))]
    ReservedChar {
        segment: String,
        ch: char,
        position: usize,
    },
    #[error("segment \"{segment}\" starts with '_', which is reserved for system subtrees")]
    ReservedPrefix { segment: String },
    #[error("segment \"{segment}\" must start with a letter or digit, not {ch:?}")]
    InvalidStart { segment: String, ch: char },
    #[error(
        "segment \"{segment}\" contains invalid character {ch:?} at character {position}; only a-z, 0-9, '-' and '_' are allowed"
    )]
    InvalidChar {
        segment: String,
        ch: char,
        position: usize,
    },
}

impl NameError {
    /// A corrected spelling to offer the user, when one can be derived.
    pub fn hint(&self) -> Option<String> {
        let segment = match self {
            NameError::Empty => return None,
            NameError::ReservedPrefix { segment } => {
                if let Some(system) = SystemSubtree::parse(segment) {
                    return Some(format!(
                        "\"{}\" is a system subtree managed by Gantry; pick another name",
                        system.as_str()
                    ));
                }
                segment
            }
            NameError::TooLong { segment, .. }
            | NameError::Uppercase { segment, .. }
            | NameError::Whitespace { segment, .. }
            | NameError::ReservedChar { segment, .. }
            | NameError::InvalidStart { segment, .. }
            | NameError::InvalidChar { segment, .. } => segment,
        };
        let suggestion = suggest_segment(segment)?;
        Some(format!("use \"{suggestion}\""))
    }
}

fn describe_whitespace(ch: char) -> String {
    match ch {
        ' ' => "a space".to_owned(),
        '\t' => "a tab".to_owned(),
        '\n' => "a newline".to_owned(),
        '\r' => "a carriage return".to_owned(),
        other => format!("whitespace U+{:04X}", u32::from(other)),
    }
}

fn reserved_reason(ch: char) -> &'static str {
    match ch {
        '/' => "'/' separates topic levels",
        '+' | '#' => "it is an MQTT wildcard",
        '$' => "'$' is reserved for broker topics",
        _ => "it is reserved",
    }
}

fn preview(segment: &str) -> String {
    match segment.char_indices().nth(PREVIEW_LEN) {
        Some((cut, _)) => format!("{}...", &segment[..cut]),
        None => segment.to_owned(),
    }
}

/// Checks one hierarchy or tag segment against the naming rules.
///
/// Structural problems (reserved characters, whitespace, other invalid
/// characters) are reported before uppercase letters, so `"Line 1"` is
/// reported as containing a space, with `line-1` as the hint.
pub fn validate_segment(segment: &str) -> Result<(), NameError> {
    if segment.is_empty() {
        return Err(NameError::Empty);
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(NameError::TooLong {
            segment: preview(segment),
            len: segment.len(),
        });
    }
    let mut first_upper = None;
    for (index, ch) in segment.chars().enumerate() {
        let position = index + 1;
        match ch {
            'a'..='z' | '0'..='9' => {}
            '_' if index == 0 => {
                return Err(NameError::ReservedPrefix {
                    segment: segment.to_owned(),
                });
            }
            '-' if index == 0 => {
                return Err(NameError::InvalidStart {
                    segment: segment.to_owned(),
                    ch,
                });
            }
            '-' | '_' => {}
            'A'..='Z' => {
                first_upper.get_or_insert((ch, position));
            }
            '/' | '+' | '#' | '$' => {
                return Err(NameError::ReservedChar {
                    segment: segment.to_owned(),
                    ch,
                    position,
                });
            }
            c if c.is_whitespace() => {
                return Err(NameError::Whitespace {
                    segment: segment.to_owned(),
                    ch,
                    position,
                });
            }
            _ => {
                return Err(NameError::InvalidChar {
                    segment: segment.to_owned(),
                    ch,
                    position,
                });
            }
        }
    }
    match first_upper {
        Some((ch, position)) => Err(NameError::Uppercase {
            segment: segment.to_owned(),
            ch,
            position,
        }),
        None => Ok(()),
    }
}

/// Derives a valid segment from an invalid one: lowercase, runs of invalid
/// characters collapsed to a single `-`, leading `-`/`_` removed.
fn suggest_segment(segment: &str) -> Option<String> {
    let mut out = String::with_capacity(segment.len().min(MAX_SEGMENT_LEN));
    for ch in segment.chars() {
        let mapped = match ch {
            'a'..='z' | '0'..='9' | '_' => ch,
            'A'..='Z' => ch.to_ascii_lowercase(),
            _ => '-',
        };
        if mapped == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        if mapped == '_' && out.is_empty() {
            continue;
        }
        out.push(mapped);
        if out.len() >= MAX_SEGMENT_LEN {
            break;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    (out != segment && validate_segment(&out).is_ok()).then_some(out)
}

/// A validated hierarchy or tag segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment(String);

impl Segment {
    pub fn new(segment: impl Into<String>) -> Result<Self, NameError> {
        let segment = segment.into();
        validate_segment(&segment)?;
        Ok(Segment(segment))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Segment {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Segment {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Segment::new(s)
    }
}

impl TryFrom<String> for Segment {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Segment::new(value)
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Segment::new(raw).map_err(serde::de::Error::custom)
    }
}

/// The reserved `_`-prefixed subtrees that Gantry itself publishes under,
/// placed directly after a hierarchy path (e.g. `acme/dallas/_dlq/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemSubtree {
    /// Dead letters: messages that failed validation, with the reason.
    Dlq,
    /// KPI results computed by Gantry (OEE, availability, ...).
    Kpi,
    /// Write-back commands towards equipment.
    Cmd,
    /// Model metadata (tag specs, units, descriptions).
    Meta,
    /// Connector and system status.
    Sys,
    /// Connector health.
    Health,
}

impl SystemSubtree {
    pub const ALL: [SystemSubtree; 6] = [
        SystemSubtree::Dlq,
        SystemSubtree::Kpi,
        SystemSubtree::Cmd,
        SystemSubtree::Meta,
        SystemSubtree::Sys,
        SystemSubtree::Health,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SystemSubtree::Dlq => "_dlq",
            SystemSubtree::Kpi => "_kpi",
            SystemSubtree::Cmd => "_cmd",
            SystemSubtree::Meta => "_meta",
            SystemSubtree::Sys => "_sys",
            SystemSubtree::Health => "_health",
        }
    }

    /// Recognises the segment exactly as it appears in a topic (with the `_`).
    pub fn parse(segment: &str) -> Option<SystemSubtree> {
        SystemSubtree::ALL
            .into_iter()
            .find(|system| system.as_str() == segment)
    }
}

impl fmt::Display for SystemSubtree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for [`SystemSubtree::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown system subtree \"{0}\"; expected one of _dlq, _kpi, _cmd, _meta, _sys, _health")]
pub struct UnknownSystemSubtree(pub String);

impl FromStr for SystemSubtree {
    type Err = UnknownSystemSubtree;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SystemSubtree::parse(s).ok_or_else(|| UnknownSystemSubtree(preview(s)))
    }
}

impl Serialize for SystemSubtree {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SystemSubtree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_segments() {
        for ok in ["acme", "line-1", "good_count", "0", "a", "9lives", "x-_y"] {
            assert_eq!(validate_segment(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_segment(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn rejects_empty_and_too_long() {
        assert_eq!(validate_segment(""), Err(NameError::Empty));
        let long = "a".repeat(65);
        let err = validate_segment(&long).unwrap_err();
        assert!(matches!(err, NameError::TooLong { len: 65, .. }));
        assert_eq!(
            err.to_string(),
            format!("segment \"{long}\" is 65 bytes long; the maximum is 64")
        );
        // The hint is cut to the maximum length.
        assert_eq!(err.hint(), Some(format!("use \"{}\"", "a".repeat(64))));
    }

    #[test]
    fn too_long_error_does_not_keep_the_whole_input() {
        let huge = "B".repeat(10_000);
        let NameError::TooLong { segment, len } = validate_segment(&huge).unwrap_err() else {
            panic!("expected TooLong");
        };
        assert_eq!(len, 10_000);
        assert!(segment.len() < 100);
    }

    #[test]
    fn uppercase_reports_position_and_lowercase_hint() {
        let err = validate_segment("Filler").unwrap_err();
        assert_eq!(
            err,
            NameError::Uppercase {
                segment: "Filler".into(),
                ch: 'F',
                position: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "segment \"Filler\" contains uppercase 'F' at character 1"
        );
        assert_eq!(err.hint().as_deref(), Some("use \"filler\""));
    }

    #[test]
    fn whitespace_is_reported_before_uppercase() {
        let err = validate_segment("Line 1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "segment \"Line 1\" contains a space at character 5"
        );
        assert_eq!(err.hint().as_deref(), Some("use \"line-1\""));
        let err = validate_segment("a\tb").unwrap_err();
        assert_eq!(
            err.to_string(),
            "segment \"a\tb\" contains a tab at character 2"
        );
        let err = validate_segment("a\u{a0}b").unwrap_err();
        assert!(err.to_string().contains("whitespace U+00A0 at character 2"));
    }

    #[test]
    fn reserved_characters_name_the_reason() {
        let cases = [
            ("a/b", '/', 2, "separates topic levels"),
            ("ab+", '+', 3, "MQTT wildcard"),
            ("#", '#', 1, "MQTT wildcard"),
            ("$sys", '$', 1, "reserved for broker topics"),
        ];
        for (input, ch, position, reason) in cases {
            let err = validate_segment(input).unwrap_err();
            assert_eq!(
                err,
                NameError::ReservedChar {
                    segment: input.into(),
                    ch,
                    position
                }
            );
            assert!(err.to_string().contains(reason), "{err}");
        }
    }

    #[test]
    fn leading_underscore_and_dash() {
        let err = validate_segment("_private").unwrap_err();
        assert_eq!(
            err,
            NameError::ReservedPrefix {
                segment: "_private".into()
            }
        );
        assert_eq!(err.hint().as_deref(), Some("use \"private\""));
        let err = validate_segment("_dlq").unwrap_err();
        assert!(err.hint().is_some_and(|h| h.contains("system subtree")));
        let err = validate_segment("-x").unwrap_err();
        assert_eq!(
            err,
            NameError::InvalidStart {
                segment: "-x".into(),
                ch: '-'
            }
        );
        assert_eq!(err.hint().as_deref(), Some("use \"x\""));
    }

    #[test]
    fn other_characters_are_invalid_with_position() {
        let err = validate_segment("f\u{fc}ller").unwrap_err();
        assert_eq!(
            err,
            NameError::InvalidChar {
                segment: "f\u{fc}ller".into(),
                ch: '\u{fc}',
                position: 2
            }
        );
        let err = validate_segment("v1.2").unwrap_err();
        assert!(err.to_string().contains("'.' at character 3"));
        assert_eq!(err.hint().as_deref(), Some("use \"v1-2\""));
        assert!(validate_segment("a\0").is_err());
    }

    #[test]
    fn no_hint_when_nothing_usable_remains() {
        assert_eq!(validate_segment("***").unwrap_err().hint(), None);
        assert_eq!(validate_segment("__").unwrap_err().hint(), None);
    }

    #[test]
    fn segment_newtype_validates_and_serdes_as_string() {
        let seg: Segment = "line-1".parse().unwrap();
        assert_eq!(seg.as_str(), "line-1");
        assert_eq!(seg.to_string(), "line-1");
        assert!("Line-1".parse::<Segment>().is_err());
        assert_eq!(serde_json::to_string(&seg).unwrap(), "\"line-1\"");
        let back: Segment = serde_json::from_str("\"line-1\"").unwrap();
        assert_eq!(back, seg);
        assert!(serde_json::from_str::<Segment>("\"Line 1\"").is_err());
    }

    #[test]
    fn system_subtrees_round_trip() {
        for system in SystemSubtree::ALL {
            assert_eq!(SystemSubtree::parse(system.as_str()), Some(system));
            assert_eq!(system.as_str().parse::<SystemSubtree>(), Ok(system));
            assert!(system.as_str().starts_with('_'));
            assert!(validate_segment(system.as_str()).is_err());
        }
        assert_eq!(SystemSubtree::parse("dlq"), None);
        assert_eq!(SystemSubtree::parse("_DLQ"), None);
        assert!("_foo".parse::<SystemSubtree>().is_err());
        assert_eq!(
            serde_json::to_string(&SystemSubtree::Health).unwrap(),
            "\"_health\""
        );
    }
}
