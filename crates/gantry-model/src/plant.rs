//! The plant model: which equipment exists in the namespace and which tags
//! each one publishes, loaded from a TOML file and validated in full, plus
//! the topic lookups the broker uses.

mod error;
pub(crate) mod parse;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

pub use error::{LineIndex, ModelError, ModelErrors};

use crate::name::Segment;
use crate::path::{HierarchyPath, NamespacePath, TagPath};

/// The demo plant (`examples/demo-plant.toml`): acme / dallas / packaging,
/// two lines with a filler, capper and labeler each.
pub const DEMO_PLANT_TOML: &str = include_str!("../../../examples/demo-plant.toml");

/// A small multiply-rotate hash over 8-byte words: the tag index is looked up
/// for every publish the broker checks, with short keys from a file we loaded
/// ourselves, so a fast non-keyed hash beats SipHash's flooding resistance.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildTopicHasher;

impl std::hash::BuildHasher for BuildTopicHasher {
    type Hasher = TopicHasher;
    fn build_hasher(&self) -> TopicHasher {
        TopicHasher(0xcbf2_9ce4_8422_2325)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct TopicHasher(u64);

impl TopicHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl std::hash::Hasher for TopicHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    // Integer keys (the historian's series ids) take one mix, not the byte
    // loop.
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_i64(&mut self, n: i64) {
        self.mix(n as u64);
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ (rest.len() as u64) << 56);
        }
    }
}

/// A declared `[[site]]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Site {
    pub name: Segment,
    pub description: Option<String>,
}

/// Data type of a tag.
#[derive(Debug, Clone, PartialEq)]
pub enum TagType {
    Float,
    Int,
    Bool,
    String,
    /// A string restricted to the listed values (non-empty, no duplicates).
    Enum {
        values: Vec<String>,
    },
}

impl TagType {
    /// The spelling used in the model file.
    pub fn name(&self) -> &'static str {
        match self {
            TagType::Float => "float",
            TagType::Int => "int",
            TagType::Bool => "bool",
            TagType::String => "string",
            TagType::Enum { .. } => "enum",
        }
    }

    /// Units and ranges apply to numeric tags only.
    pub fn is_numeric(&self) -> bool {
        matches!(self, TagType::Float | TagType::Int)
    }

    /// The allowed values of an enum tag; empty for other types.
    pub fn enum_values(&self) -> &[String] {
        match self {
            TagType::Enum { values } => values,
            _ => &[],
        }
    }
}

/// One tag of an equipment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TagSpec {
    /// Path below the equipment, e.g. `state` or `motor/current`.
    pub path: TagPath,
    pub tag_type: TagType,
    /// Free-text unit (`degC`, `count`, ...); only on numeric tags.
    pub unit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub description: Option<String>,
    /// A site-specific tag outside the equipment's class (`extension = true`).
    pub extension: bool,
    /// Writes to the machine allowed for this tag (`write = { ... }` in the
    /// site model); `None`: read-only, the default for every tag.
    pub write: Option<WritePolicy>,
}

/// How a tag may be written back to its machine (the tag's entry in the
/// site's write allow-list).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WritePolicy {
    /// At most this many accepted writes per rolling minute.
    pub max_per_minute: Option<u32>,
    /// A second person (another identity with `command` permission) must
    /// approve each write before it reaches the machine.
    pub two_person: bool,
}

/// One `[[equipment]]`: a hierarchy node that owns tags.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Equipment {
    /// 2..=6 levels, starting with the enterprise and a declared site.
    pub path: HierarchyPath,
    /// The `class` field as written (free text, e.g. `filler@1`).
    pub class: Option<String>,
    /// `class` parsed as a versioned reference (`name@version`); `None` when
    /// the class is absent or written without a version.
    pub class_ref: Option<ClassRef>,
    pub description: Option<String>,
    /// In file order: class tags the site declares and extension tags.
    pub tags: Vec<TagSpec>,
}

impl Equipment {
    /// The tag at `path` (e.g. `"motor/current"`).
    pub fn tag(&self, path: &str) -> Option<&TagSpec> {
        self.tags.iter().find(|tag| tag.path.as_str() == path)
    }

    /// The full namespace path of one of this equipment's tags.
    pub fn tag_topic(&self, tag: &TagSpec) -> NamespacePath {
        NamespacePath::new(self.path.clone(), tag.path.clone())
    }
}

/// A reference to a versioned class of an enterprise standard, written
/// `name@version` (e.g. `filler@1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassRef {
    pub name: String,
    pub version: u32,
}

impl ClassRef {
    /// Parses `name@version`: a valid segment, `@`, and a positive integer.
    /// `None` for anything else.
    pub fn parse(text: &str) -> Option<ClassRef> {
        let (name, version) = text.split_once('@')?;
        crate::name::validate_segment(name).ok()?;
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let version: u32 = version.parse().ok().filter(|v| *v > 0)?;
        Some(ClassRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl fmt::Display for ClassRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// 1-based (line, column) in the file the model was read from.
pub(crate) type Pos = (usize, usize);

/// Where one tag's fields are in the site file, for conformance errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct TagLocation {
    pub(crate) field: String,
    pub(crate) key: Pos,
    pub(crate) type_: Option<Pos>,
    pub(crate) values: Option<Pos>,
    pub(crate) unit: Option<Pos>,
    pub(crate) min: Option<Pos>,
    pub(crate) max: Option<Pos>,
    pub(crate) extension: Option<Pos>,
}

/// Where one equipment's fields are in the site file.
#[derive(Debug, Clone, Default)]
pub(crate) struct EquipmentLocation {
    /// `equipment[N]`.
    pub(crate) field: String,
    /// Position of the first character of the path value (inside the quotes).
    pub(crate) path: Pos,
    /// True when `path` is the start of the literal path text, so segment
    /// columns can be computed by adding byte offsets (paths are ASCII).
    pub(crate) path_literal: bool,
    pub(crate) class: Option<Pos>,
    /// Parallel to `Equipment::tags`.
    pub(crate) tags: Vec<TagLocation>,
}

/// A validated plant model.
#[derive(Debug, Clone)]
pub struct PlantModel {
    enterprise: Segment,
    description: Option<String>,
    sites: Vec<Site>,
    equipment: Vec<Equipment>,
    /// Full tag topic -> (equipment index, tag index).
    tag_index: HashMap<String, (usize, usize), BuildTopicHasher>,
    /// File name the model was parsed as.
    file: String,
    /// Parallel to `equipment`.
    locations: Vec<EquipmentLocation>,
}

impl PlantModel {
    /// Reads and validates a plant model file.
    pub fn load(path: impl AsRef<Path>) -> Result<PlantModel, ModelErrors> {
        let path = path.as_ref();
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(src) => PlantModel::parse(&src, &file),
            Err(e) => Err(ModelErrors::new(vec![ModelError {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read plant model: {e}"),
                hint: None,
            }])),
        }
    }

    /// Validates a plant model from TOML source, reporting every problem.
    /// `file_name` only labels the errors.
    pub fn parse(src: &str, file_name: &str) -> Result<PlantModel, ModelErrors> {
        parse::parse_model(src, file_name)
    }

    /// The built-in demo plant ([`DEMO_PLANT_TOML`]).
    pub fn demo() -> PlantModel {
        // The demo file ships inside the crate and a test parses it, so a
        // failure here is a packaging bug, not bad input.
        PlantModel::parse(DEMO_PLANT_TOML, "demo-plant.toml").expect("demo plant is valid")
    }

    fn new(
        enterprise: Segment,
        description: Option<String>,
        sites: Vec<Site>,
        equipment: Vec<Equipment>,
        file: String,
        locations: Vec<EquipmentLocation>,
    ) -> PlantModel {
        let mut tag_index = HashMap::with_hasher(BuildTopicHasher);
        for (e, equipment) in equipment.iter().enumerate() {
            for (t, tag) in equipment.tags.iter().enumerate() {
                tag_index.insert(equipment.tag_topic(tag).to_topic(), (e, t));
            }
        }
        PlantModel {
            enterprise,
            description,
            sites,
            equipment,
            tag_index,
            file,
            locations,
        }
    }

    /// The file name the model was loaded or parsed as.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn location(&self, index: usize) -> Option<&EquipmentLocation> {
        self.locations.get(index)
    }

    pub fn enterprise(&self) -> &Segment {
        &self.enterprise
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// All equipment, in file order.
    pub fn equipment(&self) -> &[Equipment] {
        &self.equipment
    }

    /// The equipment whose path is exactly `path`.
    pub fn equipment_at(&self, path: &str) -> Option<&Equipment> {
        self.equipment.iter().find(|e| e.path.as_str() == path)
    }

    /// The equipment and tag a concrete topic belongs to.
    ///
    /// Equivalent to taking the longest equipment path that prefixes the
    /// topic and looking up the rest as its tag path (falling back to shorter
    /// prefixes): validation guarantees every tag topic is unique, so a
    /// single map lookup gives the same answer.
    pub fn tag_for_topic(&self, topic: &str) -> Option<(&Equipment, &TagSpec)> {
        let &(e, t) = self.tag_index.get(topic)?;
        let equipment = self.equipment.get(e)?;
        Some((equipment, equipment.tags.get(t)?))
    }

    /// Every tag topic of the model, in file order.
    pub fn all_tag_topics(&self) -> impl Iterator<Item = NamespacePath> + '_ {
        self.equipment
            .iter()
            .flat_map(|e| e.tags.iter().map(move |tag| e.tag_topic(tag)))
    }

    /// Number of tags across all equipment.
    pub fn tag_count(&self) -> usize {
        self.tag_index.len()
    }
}

#[cfg(test)]
mod tests;
