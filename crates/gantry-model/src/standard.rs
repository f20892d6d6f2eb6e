//! The enterprise standard: versioned equipment classes (templates of tags)
//! and naming rules, loaded from a TOML file; the conformance check of site
//! models against it; and the compatibility check between two versions of a
//! standard. See `docs/standard.md`.

mod compat;
mod conform;
mod parse;
mod report;

use std::path::Path;

pub use compat::{Change, CompatReport, compat};
pub use conform::{Instance, SiteConformance};
pub use report::{CheckReport, FileReport, Matrix, MatrixRow, StandardInfo};

use crate::path::Level;
use crate::plant::{ClassRef, ModelError, ModelErrors, TagSpec};

/// A validated enterprise standard.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Standard {
    pub name: String,
    /// Free text, e.g. `1.0.0`.
    pub version: String,
    pub description: Option<String>,
    pub naming: NamingRules,
    /// In file order; `(name, version)` is unique.
    pub classes: Vec<ClassDef>,
    file: String,
}

/// One version of an equipment class.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClassDef {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// In file order.
    pub tags: Vec<ClassTag>,
}

/// One tag of a class: its contract and whether instances must have it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClassTag {
    pub spec: TagSpec,
    pub required: bool,
}

/// The `[naming]` rules of a standard.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct NamingRules {
    /// Maximum characters per segment (hierarchy levels and tag segments).
    pub max_segment_length: Option<usize>,
    /// Style of hierarchy segments.
    pub level_style: NameStyle,
    /// Style of tag and tag-group segments.
    pub tag_style: NameStyle,
    /// Per-level rules, in file order.
    pub levels: Vec<LevelRule>,
}

/// A case style on top of the namespace segment rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameStyle {
    /// Only the namespace segment rules.
    #[default]
    Any,
    /// Lowercase letters, digits and `-` (no `_`).
    KebabCase,
    /// Lowercase letters, digits and `_` (no `-`).
    SnakeCase,
}

impl NameStyle {
    pub const NAMES: &[&str] = &["any", "kebab-case", "snake_case"];

    /// The spelling used in the standard file.
    pub fn name(self) -> &'static str {
        match self {
            NameStyle::Any => "any",
            NameStyle::KebabCase => "kebab-case",
            NameStyle::SnakeCase => "snake_case",
        }
    }

    pub fn from_name(name: &str) -> Option<NameStyle> {
        match name {
            "any" => Some(NameStyle::Any),
            "kebab-case" => Some(NameStyle::KebabCase),
            "snake_case" => Some(NameStyle::SnakeCase),
            _ => None,
        }
    }

    fn forbidden(self) -> Option<char> {
        match self {
            NameStyle::Any => None,
            NameStyle::KebabCase => Some('_'),
            NameStyle::SnakeCase => Some('-'),
        }
    }

    /// The 1-based character position of the first character the style
    /// forbids in a (valid) segment.
    pub fn violation(self, segment: &str) -> Option<(usize, char)> {
        let bad = self.forbidden()?;
        segment
            .chars()
            .position(|c| c == bad)
            .map(|index| (index + 1, bad))
    }

    /// The segment rewritten in this style.
    pub fn fix(self, segment: &str) -> String {
        match self {
            NameStyle::Any => segment.to_owned(),
            NameStyle::KebabCase => segment.replace('_', "-"),
            NameStyle::SnakeCase => segment.replace('-', "_"),
        }
    }

    /// True when `other` accepts every name this style accepts.
    fn is_subset_of(self, other: NameStyle) -> bool {
        other == NameStyle::Any || self == other
    }
}

/// Rules for the segments at one hierarchy level.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LevelRule {
    pub level: Level,
    /// When non-empty, the only names allowed at this level.
    pub allowed: Vec<String>,
    /// A pattern every name must match: `#` stands for one or more digits,
    /// `*` for any (possibly empty) text, every other character for itself.
    pub pattern: Option<String>,
}

impl LevelRule {
    /// The first rule this segment breaks, as a message and a hint.
    fn violation(&self, segment: &str) -> Option<(String, String)> {
        let level = self.level.as_str();
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == segment) {
            return Some((
                format!("{level} \"{segment}\" is not in the standard's list of {level} names"),
                format!("use one of: {}", self.allowed.join(", ")),
            ));
        }
        if let Some(pattern) = &self.pattern
            && !matches_pattern(pattern, segment)
        {
            return Some((
                format!("{level} \"{segment}\" does not match the pattern \"{pattern}\""),
                "in a pattern '#' stands for digits and '*' for any text".to_owned(),
            ));
        }
        None
    }
}

/// Matches `text` against a pattern of literal characters, `#` (one or more
/// ASCII digits) and `*` (any text).
pub fn matches_pattern(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matched[i][j]: pattern[..i] matches text[..j]. Patterns and segments
    // are at most a few dozen characters, so the table is tiny.
    let mut matched = vec![vec![false; text.len() + 1]; pattern.len() + 1];
    matched[0][0] = true;
    for i in 1..=pattern.len() {
        for j in 0..=text.len() {
            matched[i][j] = match pattern[i - 1] {
                '*' => matched[i - 1][j] || (j > 0 && matched[i][j - 1]),
                '#' => {
                    j > 0
                        && text[j - 1].is_ascii_digit()
                        && (matched[i - 1][j - 1] || matched[i][j - 1])
                }
                c => j > 0 && text[j - 1] == c && matched[i - 1][j - 1],
            };
        }
    }
    matched[pattern.len()][text.len()]
}

impl ClassDef {
    pub fn class_ref(&self) -> ClassRef {
        ClassRef {
            name: self.name.clone(),
            version: self.version,
        }
    }

    /// The class tag at `path`.
    pub fn tag(&self, path: &str) -> Option<&ClassTag> {
        self.tags.iter().find(|t| t.spec.path.as_str() == path)
    }
}

impl Standard {
    /// Reads and validates a standard file.
    pub fn load(path: impl AsRef<Path>) -> Result<Standard, ModelErrors> {
        let path = path.as_ref();
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(src) => Standard::parse(&src, &file),
            Err(e) => Err(ModelErrors::new(vec![ModelError {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read standard: {e}"),
                hint: None,
            }])),
        }
    }

    /// Validates a standard from TOML source, reporting every problem.
    /// `file_name` only labels the errors.
    pub fn parse(src: &str, file_name: &str) -> Result<Standard, ModelErrors> {
        parse::parse_standard(src, file_name)
    }

    /// The file name the standard was loaded or parsed as.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The class `name@version`.
    pub fn class(&self, class: &ClassRef) -> Option<&ClassDef> {
        self.classes
            .iter()
            .find(|c| c.name == class.name && c.version == class.version)
    }

    /// Versions of the class `name`, ascending.
    pub fn versions_of(&self, name: &str) -> Vec<u32> {
        let mut versions: Vec<u32> = self
            .classes
            .iter()
            .filter(|c| c.name == name)
            .map(|c| c.version)
            .collect();
        versions.sort_unstable();
        versions
    }
}

#[cfg(test)]
mod tests;
