//! The Gantry namespace model: topic segment and path rules for the ISA-95
//! Unified Namespace, the time-series payload convention, and the plant model
//! file that declares equipment and tags. Every other Gantry crate builds on
//! these types.

pub mod name;
pub mod path;
pub mod payload;
pub mod plant;
pub mod standard;
pub mod suggest;
pub mod toml_check;

pub use name::{NameError, Segment, SystemSubtree, validate_segment};
pub use path::{
    HierarchyPath, Level, NamespacePath, PathError, TagPath, is_system_topic, system_subtree_of,
    validate_topic_name,
};
pub use payload::{PayloadError, Quality, Sample, SampleRef, Value, ValueRef};
pub use plant::{
    ClassRef, DEMO_PLANT_TOML, Equipment, LineIndex, ModelError, ModelErrors, PlantModel, Site,
    TagSpec, TagType, WritePolicy,
};
