//! Conformance of a site model to a standard: every equipment instantiates a
//! known class, declares its required tags without changing their contract,
//! marks other tags as extensions, and follows the naming rules.

use super::parse::tag_segment_violation;
use super::{ClassDef, Standard};
use crate::path::Level;
use crate::plant::{
    ClassRef, Equipment, EquipmentLocation, ModelError, PlantModel, Pos, TagLocation, TagSpec,
    TagType,
};
use crate::suggest::closest;

/// One equipment counted in the conformance matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instance {
    /// `enterprise/site` of the equipment.
    pub site: String,
    pub path: String,
    /// The class as written (`filler@1`), or `-` when absent.
    pub class: String,
    /// True when no error concerns this equipment.
    pub conforming: bool,
}

/// Result of checking one site model against a standard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SiteConformance {
    /// In file order, positioned in the site file.
    pub errors: Vec<ModelError>,
    /// One per equipment, in file order.
    pub instances: Vec<Instance>,
}

struct Sink<'a> {
    file: &'a str,
    errors: Vec<ModelError>,
}

impl Sink<'_> {
    fn push(&mut self, pos: Pos, field: &str, message: String, hint: Option<String>) {
        self.errors.push(ModelError {
            file: self.file.to_owned(),
            line: pos.0,
            column: pos.1,
            field: field.to_owned(),
            message,
            hint,
        });
    }
}

impl Standard {
    /// Checks a (valid) site model against this standard.
    pub fn check_site(&self, model: &PlantModel) -> SiteConformance {
        let mut result = SiteConformance::default();
        for (index, equipment) in model.equipment().iter().enumerate() {
            let fallback = EquipmentLocation::default();
            let location = model.location(index).unwrap_or(&fallback);
            let mut sink = Sink {
                file: model.file(),
                errors: Vec::new(),
            };
            self.check_equipment(equipment, location, &mut sink);
            let path = &equipment.path;
            let site = match path.site() {
                Some(site) => format!("{}/{site}", path.enterprise()),
                None => path.enterprise().to_owned(),
            };
            result.instances.push(Instance {
                site,
                path: path.as_str().to_owned(),
                class: equipment.class.clone().unwrap_or_else(|| "-".to_owned()),
                conforming: sink.errors.is_empty(),
            });
            result.errors.append(&mut sink.errors);
        }
        result.errors.sort_by_key(|e| (e.line, e.column));
        result
    }

    fn check_equipment(&self, equipment: &Equipment, loc: &EquipmentLocation, sink: &mut Sink<'_>) {
        let path_field = format!("{}.path", loc.field);
        let mut byte = 0;
        for (index, segment) in equipment.path.segments().enumerate() {
            let pos = if loc.path_literal {
                (loc.path.0, loc.path.1 + byte)
            } else {
                loc.path
            };
            byte += segment.len() + 1;
            let Some(level) = Level::from_index(index) else {
                continue;
            };
            if let Some((message, hint)) = self.level_violation(level, segment) {
                sink.push(pos, &path_field, message, Some(hint));
            }
        }
        for (tag, tag_loc) in equipment.tags.iter().zip(&loc.tags) {
            for segment in tag.path.segments() {
                if let Some((message, hint)) = tag_segment_violation(&self.naming, segment) {
                    sink.push(tag_loc.key, &tag_loc.field, message, Some(hint));
                }
            }
        }
        let class_field = format!("{}.class", loc.field);
        let class_pos = loc.class.unwrap_or(loc.path);
        let Some(text) = equipment.class.as_deref() else {
            sink.push(
                loc.path,
                &class_field,
                "equipment has no class; the standard requires every equipment to instantiate one"
                    .to_owned(),
                Some(format!(
                    "add class = \"<name>@<version>\", one of: {}",
                    self.class_list()
                )),
            );
            return;
        };
        let Some(class_ref) = &equipment.class_ref else {
            if text.contains('@') {
                // An invalid reference was already reported by the plant parser.
                return;
            }
            let hint = match self.versions_of(text).last() {
                Some(version) => format!("use \"{text}@{version}\""),
                None => format!("use one of: {}", self.class_list()),
            };
            sink.push(
                class_pos,
                &class_field,
                format!("class \"{text}\" has no version"),
                Some(hint),
            );
            return;
        };
        let Some(class) = self.class(class_ref) else {
            self.unknown_class(class_ref, class_pos, &class_field, sink);
            return;
        };
        self.check_tags(equipment, loc, class, sink);
    }

    fn level_violation(&self, level: Level, segment: &str) -> Option<(String, String)> {
        let naming = &self.naming;
        let name = level.as_str();
        if let Some(max) = naming.max_segment_length {
            let length = segment.chars().count();
            if length > max {
                return Some((
                    format!(
                        "{name} \"{segment}\" has {length} characters; the standard allows {max}"
                    ),
                    "use a shorter name".to_owned(),
                ));
            }
        }
        if let Some((at, ch)) = naming.level_style.violation(segment) {
            return Some((
                format!(
                    "{name} \"{segment}\" is not {}: '{ch}' at character {at}",
                    naming.level_style.name()
                ),
                format!("use \"{}\"", naming.level_style.fix(segment)),
            ));
        }
        naming
            .levels
            .iter()
            .filter(|rule| rule.level == level)
            .find_map(|rule| rule.violation(segment))
    }

    fn class_list(&self) -> String {
        let names: Vec<String> = self
            .classes
            .iter()
            .map(|c| c.class_ref().to_string())
            .collect();
        names.join(", ")
    }

    fn unknown_class(&self, class_ref: &ClassRef, pos: Pos, field: &str, sink: &mut Sink<'_>) {
        let versions = self.versions_of(&class_ref.name);
        if let Some(latest) = versions.last() {
            let list: Vec<String> = versions
                .iter()
                .map(|v| format!("{}@{v}", class_ref.name))
                .collect();
            sink.push(
                pos,
                field,
                format!(
                    "unknown class version \"{class_ref}\"; the standard defines {}",
                    list.join(", ")
                ),
                Some(format!("use \"{}@{latest}\"", class_ref.name)),
            );
            return;
        }
        let mut names: Vec<&str> = self.classes.iter().map(|c| c.name.as_str()).collect();
        names.dedup();
        let hint = match closest(&class_ref.name, &names) {
            Some(name) => {
                let version = self.versions_of(name).last().copied().unwrap_or(1);
                format!("did you mean \"{name}@{version}\"?")
            }
            None => format!("classes in {}: {}", self.name, self.class_list()),
        };
        sink.push(
            pos,
            field,
            format!("unknown class \"{class_ref}\""),
            Some(hint),
        );
    }

    fn check_tags(
        &self,
        equipment: &Equipment,
        loc: &EquipmentLocation,
        class: &ClassDef,
        sink: &mut Sink<'_>,
    ) {
        let class_name = class.class_ref().to_string();
        let class_tag_names: Vec<&str> = class.tags.iter().map(|t| t.spec.path.as_str()).collect();
        for (tag, tag_loc) in equipment.tags.iter().zip(&loc.tags) {
            let name = tag.path.as_str();
            match class.tag(name) {
                Some(class_tag) => {
                    if tag.extension {
                        sink.push(
                            tag_loc.extension.unwrap_or(tag_loc.key),
                            &format!("{}.extension", tag_loc.field),
                            format!(
                                "tag \"{name}\" belongs to class {class_name} and cannot be an extension"
                            ),
                            Some(
                                "remove extension = true; a site may not redefine a class tag"
                                    .to_owned(),
                            ),
                        );
                        continue;
                    }
                    contract(&class_name, &class_tag.spec, tag, tag_loc, sink);
                }
                None if tag.extension => {}
                None => {
                    let hint = match closest(name, &class_tag_names) {
                        Some(s) => format!(
                            "did you mean \"{s}\"? A site-specific tag needs extension = true"
                        ),
                        None => "mark a site-specific tag with extension = true".to_owned(),
                    };
                    sink.push(
                        tag_loc.key,
                        &tag_loc.field,
                        format!("tag \"{name}\" is not part of class {class_name}"),
                        Some(hint),
                    );
                }
            }
        }
        for class_tag in class.tags.iter().filter(|t| t.required) {
            let name = class_tag.spec.path.as_str();
            if equipment.tag(name).is_none() {
                sink.push(
                    loc.path,
                    &format!("{}.tags", loc.field),
                    format!("missing required tag \"{name}\" of class {class_name}"),
                    Some(format!(
                        "add [equipment.tags.{}] with {}",
                        toml_key(name),
                        spec_summary(&class_tag.spec)
                    )),
                );
            }
        }
    }
}

/// Compares a site tag with the class tag it instantiates.
fn contract(class: &str, want: &TagSpec, have: &TagSpec, loc: &TagLocation, sink: &mut Sink<'_>) {
    let name = have.path.as_str();
    let field = |key: &str| format!("{}.{key}", loc.field);
    if want.tag_type.name() != have.tag_type.name() {
        sink.push(
            loc.type_.unwrap_or(loc.key),
            &field("type"),
            format!(
                "type conflict: class {class} declares \"{name}\" as {}, not {}",
                want.tag_type.name(),
                have.tag_type.name()
            ),
            Some(format!("use type = \"{}\"", want.tag_type.name())),
        );
        return;
    }
    if let (TagType::Enum { values: allowed }, TagType::Enum { values }) =
        (&want.tag_type, &have.tag_type)
    {
        let extra: Vec<String> = values
            .iter()
            .filter(|v| !allowed.contains(v))
            .map(|v| format!("\"{v}\""))
            .collect();
        if !extra.is_empty() {
            sink.push(
                loc.values.unwrap_or(loc.key),
                &field("values"),
                format!(
                    "enum value{} {} {} not in class {class}",
                    if extra.len() == 1 { "" } else { "s" },
                    extra.join(", "),
                    if extra.len() == 1 { "is" } else { "are" },
                ),
                Some(format!("the class allows: {}", allowed.join(", "))),
            );
        }
    }
    if want.unit != have.unit {
        let (message, hint) = match (&want.unit, &have.unit) {
            (Some(w), Some(h)) => (
                format!("unit conflict: class {class} declares \"{name}\" in \"{w}\", not \"{h}\""),
                format!("use unit = \"{w}\""),
            ),
            (Some(w), None) => (
                format!(
                    "unit conflict: class {class} declares \"{name}\" in \"{w}\"; the tag has no unit"
                ),
                format!("add unit = \"{w}\""),
            ),
            (None, _) => (
                format!("unit conflict: class {class} declares no unit for \"{name}\""),
                "remove unit".to_owned(),
            ),
        };
        sink.push(
            loc.unit.unwrap_or(loc.key),
            &field("unit"),
            message,
            Some(hint),
        );
    }
    bound(
        class,
        name,
        "min",
        want.min,
        have.min,
        loc.min.unwrap_or(loc.key),
        &field("min"),
        sink,
    );
    bound(
        class,
        name,
        "max",
        want.max,
        have.max,
        loc.max.unwrap_or(loc.key),
        &field("max"),
        sink,
    );
}

/// Reports a site bound that allows values the class does not.
#[allow(clippy::too_many_arguments)]
fn bound(
    class: &str,
    name: &str,
    key: &str,
    want: Option<f64>,
    have: Option<f64>,
    pos: Pos,
    field: &str,
    sink: &mut Sink<'_>,
) {
    let Some(want) = want else {
        return;
    };
    let is_min = key == "min";
    match have {
        None => sink.push(
            pos,
            field,
            format!(
                "range wider than class {class}: \"{name}\" has no {key}, the class's is {want}"
            ),
            Some(format!("add {key} = {}", float(want))),
        ),
        Some(have) if (is_min && have < want) || (!is_min && have > want) => sink.push(
            pos,
            field,
            format!(
                "range wider than class {class}: {key} {have} is {} the class's {want}",
                if is_min { "below" } else { "above" }
            ),
            Some(format!("use {key} = {} or narrower", float(want))),
        ),
        Some(_) => {}
    }
}

/// A float as TOML writes it (with a decimal point).
fn float(value: f64) -> String {
    let text = value.to_string();
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn toml_key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_owned()
    } else {
        format!("\"{name}\"")
    }
}

/// `type = "float", unit = "degC", min = 0.0, max = 150.0` for a hint.
pub(super) fn spec_summary(spec: &TagSpec) -> String {
    let mut parts = vec![format!("type = \"{}\"", spec.tag_type.name())];
    if let TagType::Enum { values } = &spec.tag_type {
        let quoted: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
        parts.push(format!("values = [{}]", quoted.join(", ")));
    }
    if let Some(unit) = &spec.unit {
        parts.push(format!("unit = \"{unit}\""));
    }
    if let Some(min) = spec.min {
        parts.push(format!("min = {}", float(min)));
    }
    if let Some(max) = spec.max {
        parts.push(format!("max = {}", float(max)));
    }
    parts.join(", ")
}
