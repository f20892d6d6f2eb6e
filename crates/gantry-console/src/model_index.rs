//! The plant model seen as a tree: children per node with their kind, and
//! each tag's contract and equipment, built once per model generation so
//! that browsing and search never walk the model per request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gantry_model::PlantModel;
use gantry_model::plant::{Equipment, TagSpec};
use serde::Serialize;

/// What a node of the namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Enterprise,
    Site,
    Area,
    Line,
    Cell,
    Equipment,
    Tag,
    /// A reserved `_` subtree (`_sys`, `_dlq`, `_kpi`, `_cmd`) or below one.
    System,
    /// A level between named ones (a tag group, or an unmodeled prefix).
    Folder,
    /// An unmodeled topic holding a value.
    Topic,
}

impl NodeKind {
    /// The ISA-95 level at a hierarchy depth (1 = enterprise).
    fn of_depth(depth: usize) -> NodeKind {
        match depth {
            1 => NodeKind::Enterprise,
            2 => NodeKind::Site,
            3 => NodeKind::Area,
            4 => NodeKind::Line,
            5 => NodeKind::Cell,
            _ => NodeKind::Equipment,
        }
    }
}

/// A tag's data contract as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contract {
    #[serde(rename = "type")]
    pub tag_type: &'static str,
    pub unit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(rename = "enum")]
    pub enum_values: Vec<String>,
    pub description: Option<String>,
    /// Writes to the machine are allowed (the tag is on the write allow-list).
    pub writable: bool,
    pub two_person: bool,
    pub max_writes_per_minute: Option<u32>,
    /// A site-specific tag outside its equipment's class.
    pub extension: bool,
}

impl Contract {
    fn of(tag: &TagSpec) -> Contract {
        Contract {
            tag_type: tag.tag_type.name(),
            unit: tag.unit.clone(),
            min: tag.min,
            max: tag.max,
            enum_values: tag.tag_type.enum_values().to_vec(),
            description: tag.description.clone(),
            writable: tag.write.is_some(),
            two_person: tag.write.as_ref().is_some_and(|w| w.two_person),
            max_writes_per_minute: tag.write.as_ref().and_then(|w| w.max_per_minute),
            extension: tag.extension,
        }
    }
}

/// The equipment a tag belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EquipmentInfo {
    pub path: String,
    pub class: Option<String>,
    pub description: Option<String>,
}

impl EquipmentInfo {
    fn of(e: &Equipment) -> EquipmentInfo {
        EquipmentInfo {
            path: e.path.to_string(),
            class: e.class.clone(),
            description: e.description.clone(),
        }
    }
}

/// One modeled tag.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub contract: Contract,
    pub equipment: Arc<EquipmentInfo>,
}

/// The model as a tree.
#[derive(Debug, Default)]
pub struct ModelIndex {
    pub generation: u64,
    /// Parent path ("" for the root) → child name → kind.
    children: HashMap<String, BTreeMap<String, NodeKind>>,
    tags: HashMap<String, TagInfo>,
    /// Every node path with its kind, in order (for search), derived from
    /// `children` at the end of `build`.
    nodes: Vec<(String, NodeKind)>,
}

impl ModelIndex {
    pub fn build(model: Option<&PlantModel>, generation: u64) -> ModelIndex {
        let mut index = ModelIndex {
            generation,
            ..ModelIndex::default()
        };
        let Some(model) = model else { return index };
        index.add(model.enterprise().as_ref(), NodeKind::Enterprise);
        for site in model.sites() {
            index.add(
                &format!("{}/{}", model.enterprise(), site.name),
                NodeKind::Site,
            );
        }
        for equipment in model.equipment() {
            let path = equipment.path.to_string();
            let segments: Vec<&str> = path.split('/').collect();
            for depth in 1..segments.len() {
                index.add(&segments[..depth].join("/"), NodeKind::of_depth(depth));
            }
            index.add(&path, NodeKind::Equipment);
            let info = Arc::new(EquipmentInfo::of(equipment));
            for tag in &equipment.tags {
                let topic = equipment.tag_topic(tag).to_string();
                let tag_segments: Vec<&str> = tag.path.as_str().split('/').collect();
                for depth in 1..tag_segments.len() {
                    index.add(
                        &format!("{path}/{}", tag_segments[..depth].join("/")),
                        NodeKind::Folder,
                    );
                }
                index.add(&topic, NodeKind::Tag);
                index.tags.insert(
                    topic,
                    TagInfo {
                        contract: Contract::of(tag),
                        equipment: info.clone(),
                    },
                );
            }
        }
        // Derived once from the tree, after the kinds are final.
        index.nodes = index
            .children
            .iter()
            .flat_map(|(parent, names)| {
                names.iter().map(move |(name, kind)| {
                    let path = if parent.is_empty() {
                        name.clone()
                    } else {
                        format!("{parent}/{name}")
                    };
                    (path, *kind)
                })
            })
            .collect();
        index.nodes.sort_by(|a, b| a.0.cmp(&b.0));
        index
    }

    fn add(&mut self, path: &str, kind: NodeKind) {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", path),
        };
        let siblings = self.children.entry(parent.to_owned()).or_default();
        if let Some(existing) = siblings.get_mut(name) {
            // Equipment and tags win over the level a prefix implies.
            if matches!(kind, NodeKind::Equipment | NodeKind::Tag) {
                *existing = kind;
            }
            return;
        }
        siblings.insert(name.to_owned(), kind);
    }

    /// Modeled children of `parent` after `after`, in order.
    pub fn children_after<'a>(
        &'a self,
        parent: &str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, NodeKind)> + 'a {
        self.children.get(parent).into_iter().flat_map(move |map| {
            let range: Box<dyn Iterator<Item = (&String, &NodeKind)>> = match after {
                Some(after) => Box::new(map.range::<str, _>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(map.iter()),
            };
            range.map(|(name, kind)| (name.as_str(), *kind))
        })
    }

    pub fn has_children(&self, path: &str) -> bool {
        self.children.get(path).is_some_and(|c| !c.is_empty())
    }

    pub fn kind(&self, path: &str) -> Option<NodeKind> {
        let (parent, name) = match path.rsplit_once('/') {
            Some((parent, name)) => (parent, name),
            None => ("", path),
        };
        self.children.get(parent)?.get(name).copied()
    }

    pub fn tag(&self, topic: &str) -> Option<&TagInfo> {
        self.tags.get(topic)
    }

    pub fn nodes(&self) -> &[(String, NodeKind)] {
        &self.nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_plant_is_a_tree_of_isa95_levels() {
        let model = PlantModel::demo();
        let index = ModelIndex::build(Some(&model), 7);
        assert_eq!(index.generation, 7);
        let roots: Vec<_> = index.children_after("", None).collect();
        assert_eq!(roots, vec![("acme", NodeKind::Enterprise)]);
        assert_eq!(index.kind("acme/dallas"), Some(NodeKind::Site));
        assert_eq!(index.kind("acme/dallas/packaging"), Some(NodeKind::Area));
        assert_eq!(
            index.kind("acme/dallas/packaging/line-1"),
            Some(NodeKind::Line)
        );
        assert_eq!(
            index.kind("acme/dallas/packaging/line-1/filler"),
            Some(NodeKind::Equipment)
        );
        let speed = "acme/dallas/packaging/line-1/filler/speed";
        assert_eq!(index.kind(speed), Some(NodeKind::Tag));
        let tag = index.tag(speed).expect("speed is modeled");
        assert_eq!(tag.contract.tag_type, "float");
        assert_eq!(tag.equipment.path, "acme/dallas/packaging/line-1/filler");
        let lines: Vec<_> = index
            .children_after("acme/dallas/packaging", Some("line-1"))
            .map(|(n, _)| n)
            .collect();
        assert_eq!(lines, vec!["line-2"]);
        assert!(!index.has_children(speed));
        assert_eq!(
            index.nodes().len(),
            index.nodes().iter().filter(|(p, _)| !p.is_empty()).count()
        );
    }
}
