//! Topic paths: the ISA-95 [`HierarchyPath`], the [`TagPath`] below it, the
//! combined [`NamespacePath`], and validation of concrete MQTT topic names
//! ([`validate_topic_name`], [`is_system_topic`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::name::{NameError, SystemSubtree, validate_segment};

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 1024;
/// Deepest ISA-95 hierarchy: enterprise/site/area/line/cell/equipment.
pub const MAX_HIERARCHY_DEPTH: usize = 6;
/// Deepest tag path below an equipment (tag groups plus the tag).
pub const MAX_TAG_DEPTH: usize = 8;
/// Deepest data topic: a full hierarchy plus a full tag path.
pub const MAX_TOPIC_LEVELS: usize = MAX_HIERARCHY_DEPTH + MAX_TAG_DEPTH;

/// ISA-95 level of a hierarchy segment, by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Enterprise,
    Site,
    Area,
    Line,
    Cell,
    Equipment,
}

impl Level {
    pub const ALL: [Level; MAX_HIERARCHY_DEPTH] = [
        Level::Enterprise,
        Level::Site,
        Level::Area,
        Level::Line,
        Level::Cell,
        Level::Equipment,
    ];

    /// The level at a 0-based hierarchy position.
    pub fn from_index(index: usize) -> Option<Level> {
        Level::ALL.get(index).copied()
    }

    /// 0-based hierarchy position.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Enterprise => "enterprise",
            Level::Site => "site",
            Level::Area => "area",
            Level::Line => "line",
            Level::Cell => "cell",
            Level::Equipment => "equipment",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for [`Level::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown ISA-95 level \"{0}\"; expected one of enterprise, site, area, line, cell, equipment"
)]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|level| level.as_str() == s)
            .ok_or_else(|| UnknownLevel(s.chars().take(40).collect()))
    }
}

/// What is wrong with a path or topic name. Levels are 1-based positions in
/// the string that was validated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("empty topic path")]
    Empty,
    #[error("topic is {len} bytes long; the maximum is {MAX_TOPIC_LEN}")]
    TooLong { len: usize },
    #[error("topics starting with '$' are reserved for the broker")]
    BrokerReserved,
    #[error("level {level}: {error}")]
    Segment { level: usize, error: NameError },
    #[error(
        "hierarchy has {depth} levels; it must have 1 to {MAX_HIERARCHY_DEPTH} (enterprise/site/area/line/cell/equipment)"
    )]
    HierarchyDepth { depth: usize },
    #[error("tag path has {depth} levels; it must have 1 to {MAX_TAG_DEPTH}")]
    TagDepth { depth: usize },
    #[error(
        "topic has {levels} levels but the hierarchy alone takes {hierarchy_depth}; a tag must follow it"
    )]
    MissingTag {
        levels: usize,
        hierarchy_depth: usize,
    },
    #[error(
        "topic has {levels} levels; the maximum is {MAX_TOPIC_LEVELS} ({MAX_HIERARCHY_DEPTH} hierarchy + {MAX_TAG_DEPTH} tag)"
    )]
    TooManyLevels { levels: usize },
}

impl PathError {
    /// A corrected spelling to offer the user, when one can be derived.
    pub fn hint(&self) -> Option<String> {
        match self {
            PathError::Segment { error, .. } => error.hint(),
            _ => None,
        }
    }
}

/// Validates `/`-separated strict segments; `first_level` numbers errors
/// relative to an enclosing topic.
fn validate_segments(path: &str, first_level: usize) -> Result<usize, PathError> {
    if path.len() > MAX_TOPIC_LEN {
        return Err(PathError::TooLong { len: path.len() });
    }
    let mut depth = 0;
    for (index, segment) in path.split('/').enumerate() {
        validate_segment(segment).map_err(|error| PathError::Segment {
            level: first_level + index,
            error,
        })?;
        depth += 1;
    }
    Ok(depth)
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A validated ISA-95 hierarchy path, 1 to 6 segments, enterprise first,
/// e.g. `acme/dallas/packaging/line-1/filler`. Levels are positional.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HierarchyPath {
    path: String,
    depth: usize,
}

impl HierarchyPath {
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        Self::parse_at(path, 1)
    }

    fn parse_at(path: &str, first_level: usize) -> Result<Self, PathError> {
        let depth = validate_segments(path, first_level)?;
        if depth > MAX_HIERARCHY_DEPTH {
            return Err(PathError::HierarchyDepth { depth });
        }
        Ok(HierarchyPath {
            path: path.to_owned(),
            depth,
        })
    }

    /// Builds a path from individual segments (each validated).
    pub fn from_segments<I, S>(segments: I) -> Result<Self, PathError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse(&join_segments(segments)?)
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Number of levels, 1..=6.
    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/')
    }

    /// Each segment with its positional ISA-95 level.
    pub fn levels(&self) -> impl Iterator<Item = (Level, &str)> {
        Level::ALL.into_iter().zip(self.segments())
    }

    /// The segment at `level`, if the path is that deep.
    pub fn level(&self, level: Level) -> Option<&str> {
        self.segments().nth(level.index())
    }

    pub fn enterprise(&self) -> &str {
        self.path.split('/').next().unwrap_or(&self.path)
    }

    pub fn site(&self) -> Option<&str> {
        self.level(Level::Site)
    }

    /// The last segment (the node that owns tags in an equipment path).
    pub fn last(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// True when `self` equals `other` or is an ancestor of it.
    pub fn is_prefix_of(&self, other: &HierarchyPath) -> bool {
        other.path == self.path
            || (other.path.starts_with(&self.path)
                && other.path.as_bytes().get(self.path.len()) == Some(&b'/'))
    }
}

impl fmt::Display for HierarchyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl FromStr for HierarchyPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HierarchyPath::parse(s)
    }
}

string_serde!(HierarchyPath);

/// A validated tag path below an equipment, 1 to 8 segments; all but the last
/// are tag groups, e.g. `motor/current`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagPath {
    path: String,
    depth: usize,
}

impl TagPath {
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        Self::parse_at(path, 1)
    }

    fn parse_at(path: &str, first_level: usize) -> Result<Self, PathError> {
        let depth = validate_segments(path, first_level)?;
        if depth > MAX_TAG_DEPTH {
            return Err(PathError::TagDepth { depth });
        }
        Ok(TagPath {
            path: path.to_owned(),
            depth,
        })
    }

    pub fn from_segments<I, S>(segments: I) -> Result<Self, PathError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::parse(&join_segments(segments)?)
    }

    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// Number of levels, 1..=8.
    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/')
    }

    /// The tag's own name (last segment).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The tag groups above the name, e.g. `motor` for `motor/current`.
    pub fn group(&self) -> Option<&str> {
        self.path.rsplit_once('/').map(|(group, _)| group)
    }
}

impl fmt::Display for TagPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl FromStr for TagPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TagPath::parse(s)
    }
}

string_serde!(TagPath);

fn join_segments<I, S>(segments: I) -> Result<String, PathError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut joined = String::new();
    for (index, segment) in segments.into_iter().enumerate() {
        let segment = segment.as_ref();
        // A '/' inside one part would silently add a level; report it as the
        // part's own error instead.
        validate_segment(segment).map_err(|error| PathError::Segment {
            level: index + 1,
            error,
        })?;
        if index > 0 {
            joined.push('/');
        }
        joined.push_str(segment);
    }
    Ok(joined)
}

/// A data topic in the namespace: a hierarchy path followed by a tag path,
/// e.g. `acme/dallas/packaging/line-1/filler` + `motor/current`.
///
/// There is no `FromStr`: a topic alone does not say where the hierarchy ends,
/// so use [`NamespacePath::split`] with the hierarchy depth. For the same
/// reason serde uses `{"hierarchy": "...", "tag": "..."}` rather than one string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamespacePath {
    hierarchy: HierarchyPath,
    tag: TagPath,
}

impl NamespacePath {
    pub fn new(hierarchy: HierarchyPath, tag: TagPath) -> Self {
        NamespacePath { hierarchy, tag }
    }

    /// Builds a path from hierarchy segments and tag segments.
    pub fn from_parts<H, T, S1, S2>(hierarchy: H, tag: T) -> Result<Self, PathError>
    where
        H: IntoIterator<Item = S1>,
        T: IntoIterator<Item = S2>,
        S1: AsRef<str>,
        S2: AsRef<str>,
    {
        let hierarchy = HierarchyPath::from_segments(hierarchy)?;
        let tag = TagPath::from_segments(tag)?;
        Ok(NamespacePath { hierarchy, tag })
    }

    /// Splits `topic` after its first `hierarchy_depth` levels. Error levels
    /// are positions in `topic`.
    pub fn split(topic: &str, hierarchy_depth: usize) -> Result<Self, PathError> {
        if !(1..=MAX_HIERARCHY_DEPTH).contains(&hierarchy_depth) {
            return Err(PathError::HierarchyDepth {
                depth: hierarchy_depth,
            });
        }
        if topic.is_empty() {
            return Err(PathError::Empty);
        }
        if topic.len() > MAX_TOPIC_LEN {
            return Err(PathError::TooLong { len: topic.len() });
        }
        let split_at = topic
            .match_indices('/')
            .nth(hierarchy_depth - 1)
            .map(|(index, _)| index);
        let Some(split_at) = split_at else {
            let levels = topic.split('/').count();
            // Report a bad segment before the structural problem.
            HierarchyPath::parse_at(topic, 1)?;
            return Err(PathError::MissingTag {
                levels,
                hierarchy_depth,
            });
        };
        let hierarchy = HierarchyPath::parse_at(&topic[..split_at], 1)?;
        let tag = TagPath::parse_at(&topic[split_at + 1..], hierarchy_depth + 1)?;
        Ok(NamespacePath { hierarchy, tag })
    }

    pub fn hierarchy(&self) -> &HierarchyPath {
        &self.hierarchy
    }

    pub fn tag(&self) -> &TagPath {
        &self.tag
    }

    /// The hierarchy part as a topic (the equipment node owning the tag).
    pub fn equipment_topic(&self) -> &str {
        self.hierarchy.as_str()
    }

    /// The full topic: hierarchy and tag segments joined by `/`.
    pub fn to_topic(&self) -> String {
        let mut topic = String::with_capacity(self.hierarchy.path.len() + 1 + self.tag.path.len());
        topic.push_str(&self.hierarchy.path);
        topic.push('/');
        topic.push_str(&self.tag.path);
        topic
    }
}

impl fmt::Display for NamespacePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hierarchy, self.tag)
    }
}

/// Checks a segment after a system subtree: these mirror arbitrary topics
/// (a dead letter keeps the rejected topic), so only MQTT rules apply.
fn validate_system_tail_segment(segment: &str) -> Result<(), NameError> {
    if segment.is_empty() {
        return Err(NameError::Empty);
    }
    for (index, ch) in segment.chars().enumerate() {
        if ch == '+' || ch == '#' {
            return Err(NameError::ReservedChar {
                segment: segment.to_owned(),
                ch,
                position: index + 1,
            });
        }
        if ch.is_control() {
            return Err(NameError::InvalidChar {
                segment: segment.to_owned(),
                ch,
                position: index + 1,
            });
        }
    }
    Ok(())
}

/// Validates a concrete topic name a client publishes to.
///
/// A data topic has 2..=14 strictly valid segments (hierarchy plus tag). A
/// system topic has 1..=6 strict hierarchy segments, a [`SystemSubtree`]
/// segment, then any non-empty segments without wildcards or control
/// characters. No wildcards, at most 1024 bytes, and `$` topics belong to the
/// broker.
pub fn validate_topic_name(topic: &str) -> Result<(), PathError> {
    if topic.is_empty() {
        return Err(PathError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(PathError::TooLong { len: topic.len() });
    }
    if topic.starts_with('$') {
        return Err(PathError::BrokerReserved);
    }
    let mut segments = topic.split('/').enumerate();
    let mut levels = 0;
    for (index, segment) in segments.by_ref() {
        levels = index + 1;
        if index > 0 && SystemSubtree::parse(segment).is_some() {
            if index > MAX_HIERARCHY_DEPTH {
                return Err(PathError::HierarchyDepth { depth: index });
            }
            for (index, segment) in segments {
                validate_system_tail_segment(segment).map_err(|error| PathError::Segment {
                    level: index + 1,
                    error,
                })?;
            }
            return Ok(());
        }
        validate_segment(segment).map_err(|error| PathError::Segment {
            level: index + 1,
            error,
        })?;
    }
    if levels < 2 {
        return Err(PathError::MissingTag {
            levels,
            hierarchy_depth: levels,
        });
    }
    if levels > MAX_TOPIC_LEVELS {
        return Err(PathError::TooManyLevels { levels });
    }
    Ok(())
}

/// The system subtree a topic lies in, if any: the first reserved segment
/// after 1..=6 hierarchy levels.
pub fn system_subtree_of(topic: &str) -> Option<SystemSubtree> {
    // Every reserved segment starts with `_`: one scan turns away the
    // ordinary topics (this runs for every message routed).
    if !topic.contains("/_") {
        return None;
    }
    topic
        .split('/')
        .skip(1)
        .take(MAX_HIERARCHY_DEPTH)
        .find_map(SystemSubtree::parse)
}

/// True for broker topics (`$SYS/...` and any other `$` topic) and for topics
/// inside a Gantry system subtree (`acme/dallas/_dlq/...`).
pub fn is_system_topic(topic: &str) -> bool {
    topic.starts_with('$') || system_subtree_of(topic).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_positions_and_names() {
        assert_eq!(Level::from_index(0), Some(Level::Enterprise));
        assert_eq!(Level::from_index(5), Some(Level::Equipment));
        assert_eq!(Level::from_index(6), None);
        for level in Level::ALL {
            assert_eq!(Level::from_index(level.index()), Some(level));
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
        assert!("plant".parse::<Level>().is_err());
    }

    #[test]
    fn hierarchy_path_accessors() {
        let h = HierarchyPath::parse("acme/dallas/packaging/line-1/filler").unwrap();
        assert_eq!(h.depth(), 5);
        assert_eq!(h.enterprise(), "acme");
        assert_eq!(h.site(), Some("dallas"));
        assert_eq!(h.level(Level::Line), Some("line-1"));
        assert_eq!(h.level(Level::Equipment), None);
        assert_eq!(h.last(), "filler");
        let levels: Vec<_> = h.levels().collect();
        assert_eq!(levels[2], (Level::Area, "packaging"));
        assert_eq!(levels.len(), 5);
        let root = HierarchyPath::parse("acme").unwrap();
        assert_eq!(root.site(), None);
        assert_eq!(root.last(), "acme");
        assert!(root.is_prefix_of(&h));
        assert!(h.is_prefix_of(&h));
        assert!(!HierarchyPath::parse("ac").unwrap().is_prefix_of(&h));
        assert!(!h.is_prefix_of(&root));
    }

    #[test]
    fn hierarchy_depth_limits() {
        assert!(HierarchyPath::parse("a/b/c/d/e/f").is_ok());
        assert_eq!(
            HierarchyPath::parse("a/b/c/d/e/f/g"),
            Err(PathError::HierarchyDepth { depth: 7 })
        );
        assert_eq!(HierarchyPath::parse(""), Err(PathError::Empty));
    }

    #[test]
    fn hierarchy_reports_bad_level() {
        let err = HierarchyPath::parse("acme/Dallas").unwrap_err();
        assert!(matches!(err, PathError::Segment { level: 2, .. }));
        assert_eq!(
            err.to_string(),
            "level 2: segment \"Dallas\" contains uppercase 'D' at character 1"
        );
        assert_eq!(err.hint().as_deref(), Some("use \"dallas\""));
        assert!(matches!(
            HierarchyPath::parse("acme//x"),
            Err(PathError::Segment {
                level: 2,
                error: NameError::Empty
            })
        ));
    }

    #[test]
    fn tag_path_groups() {
        let t = TagPath::parse("motor/current").unwrap();
        assert_eq!(t.name(), "current");
        assert_eq!(t.group(), Some("motor"));
        assert_eq!(t.depth(), 2);
        let t = TagPath::parse("state").unwrap();
        assert_eq!(t.group(), None);
        assert!(TagPath::parse("a/b/c/d/e/f/g/h").is_ok());
        assert_eq!(
            TagPath::parse("a/b/c/d/e/f/g/h/i"),
            Err(PathError::TagDepth { depth: 9 })
        );
    }

    #[test]
    fn from_parts_validates_each_part() {
        let p =
            NamespacePath::from_parts(["acme", "dallas", "filler"], ["motor", "current"]).unwrap();
        assert_eq!(p.to_topic(), "acme/dallas/filler/motor/current");
        assert_eq!(p.to_string(), p.to_topic());
        assert_eq!(p.equipment_topic(), "acme/dallas/filler");
        assert_eq!(p.tag().as_str(), "motor/current");
        let err = NamespacePath::from_parts(["acme", "a/b"], ["x"]).unwrap_err();
        assert!(matches!(
            err,
            PathError::Segment {
                level: 2,
                error: NameError::ReservedChar { ch: '/', .. }
            }
        ));
        assert!(NamespacePath::from_parts(Vec::<&str>::new(), ["x"]).is_err());
        assert!(NamespacePath::from_parts(["acme"], Vec::<&str>::new()).is_err());
    }

    #[test]
    fn split_at_depth() {
        let p =
            NamespacePath::split("acme/dallas/packaging/line-1/filler/motor/current", 5).unwrap();
        assert_eq!(
            p.hierarchy().as_str(),
            "acme/dallas/packaging/line-1/filler"
        );
        assert_eq!(p.tag().as_str(), "motor/current");
        let p = NamespacePath::split("acme/state", 1).unwrap();
        assert_eq!(p.hierarchy().depth(), 1);
        assert_eq!(p.tag().as_str(), "state");
    }

    #[test]
    fn split_errors() {
        assert_eq!(
            NamespacePath::split("acme/dallas", 2),
            Err(PathError::MissingTag {
                levels: 2,
                hierarchy_depth: 2
            })
        );
        assert_eq!(
            NamespacePath::split("acme/x", 0),
            Err(PathError::HierarchyDepth { depth: 0 })
        );
        assert_eq!(
            NamespacePath::split("acme/x", 7),
            Err(PathError::HierarchyDepth { depth: 7 })
        );
        // Levels are numbered within the whole topic, including the tag part.
        let err = NamespacePath::split("acme/dallas/filler/Temp", 3).unwrap_err();
        assert!(matches!(err, PathError::Segment { level: 4, .. }), "{err}");
        let err = NamespacePath::split("acme/Dallas", 3).unwrap_err();
        assert!(matches!(err, PathError::Segment { level: 2, .. }), "{err}");
        assert!(matches!(
            NamespacePath::split("acme/dallas/", 2),
            Err(PathError::Segment {
                level: 3,
                error: NameError::Empty
            })
        ));
        assert_eq!(
            NamespacePath::split("a/b/c/d/e/f/g/h/i/j", 1),
            Err(PathError::TagDepth { depth: 9 })
        );
    }

    #[test]
    fn serde_forms() {
        let h = HierarchyPath::parse("acme/dallas").unwrap();
        assert_eq!(serde_json::to_string(&h).unwrap(), "\"acme/dallas\"");
        let back: HierarchyPath = serde_json::from_str("\"acme/dallas\"").unwrap();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<HierarchyPath>("\"acme/Dallas\"").is_err());
        let t: TagPath = serde_json::from_str("\"motor/current\"").unwrap();
        assert_eq!(t.depth(), 2);
        let p = NamespacePath::new(h, t);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"hierarchy":"acme/dallas","tag":"motor/current"}"#);
        assert_eq!(serde_json::from_str::<NamespacePath>(&json).unwrap(), p);
    }

    #[test]
    fn topic_names_accepted() {
        for ok in [
            "acme/state",
            "acme/dallas/packaging/line-1/filler/state",
            "acme/dallas/packaging/line-1/filler/motor/current",
            "acme/dallas/_dlq",
            "acme/_meta",
            "acme/dallas/_dlq/acme/Dallas/Bad Topic",
            "a/b/c/d/e/f/_health/opcua-1",
            "a/b/c/d/e/f/1/2/3/4/5/6/7/8",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn topic_names_rejected() {
        assert_eq!(validate_topic_name(""), Err(PathError::Empty));
        assert_eq!(
            validate_topic_name("$SYS/broker/uptime"),
            Err(PathError::BrokerReserved)
        );
        let long = format!("acme/{}", "a/".repeat(600));
        assert!(matches!(
            validate_topic_name(&long),
            Err(PathError::TooLong { .. })
        ));
        assert!(matches!(
            validate_topic_name("acme/+/state"),
            Err(PathError::Segment {
                level: 2,
                error: NameError::ReservedChar { ch: '+', .. }
            })
        ));
        assert!(matches!(
            validate_topic_name("acme/dallas/#"),
            Err(PathError::Segment {
                level: 3,
                error: NameError::ReservedChar { ch: '#', .. }
            })
        ));
        assert_eq!(
            validate_topic_name("acme"),
            Err(PathError::MissingTag {
                levels: 1,
                hierarchy_depth: 1
            })
        );
        assert_eq!(
            validate_topic_name("a/b/c/d/e/f/1/2/3/4/5/6/7/8/9"),
            Err(PathError::TooManyLevels { levels: 15 })
        );
        // A system segment must follow at least one hierarchy level...
        assert!(matches!(
            validate_topic_name("_dlq/acme/x"),
            Err(PathError::Segment {
                level: 1,
                error: NameError::ReservedPrefix { .. }
            })
        ));
        // ...and at most six.
        assert_eq!(
            validate_topic_name("a/b/c/d/e/f/g/_dlq"),
            Err(PathError::HierarchyDepth { depth: 7 })
        );
        // Unknown `_` segments are not system subtrees.
        assert!(matches!(
            validate_topic_name("acme/_private/x"),
            Err(PathError::Segment {
                level: 2,
                error: NameError::ReservedPrefix { .. }
            })
        ));
        // The tail of a system topic still rejects wildcards and empty levels.
        assert!(matches!(
            validate_topic_name("acme/_dlq/x/#"),
            Err(PathError::Segment { level: 4, .. })
        ));
        assert!(matches!(
            validate_topic_name("acme/_dlq//x"),
            Err(PathError::Segment {
                level: 3,
                error: NameError::Empty
            })
        ));
        assert!(validate_topic_name("acme/_dlq/a\u{0}b").is_err());
    }

    #[test]
    fn system_topic_detection() {
        assert!(is_system_topic("$SYS/broker/clients/connected"));
        assert!(is_system_topic("acme/dallas/_dlq/acme/x"));
        assert!(is_system_topic("acme/_kpi/oee"));
        assert_eq!(
            system_subtree_of("acme/dallas/packaging/_health/opcua"),
            Some(SystemSubtree::Health)
        );
        assert!(!is_system_topic(
            "acme/dallas/packaging/line-1/filler/state"
        ));
        assert!(!is_system_topic("_dlq/x"));
        assert!(!is_system_topic("a/b/c/d/e/f/g/_dlq"));
    }
}
