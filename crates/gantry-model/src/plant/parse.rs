//! Validation of a plant model file: walks the span-annotated TOML tree by
//! hand (rather than through serde) so that every problem is collected with
//! its exact position, not just the first one.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{LineIndex, ModelError, ModelErrors};
use super::{
    ClassRef, Equipment, EquipmentLocation, PlantModel, Site, TagLocation, TagSpec, TagType,
    WritePolicy,
};
use crate::name::{NameError, Segment, validate_segment};
use crate::path::{HierarchyPath, MAX_HIERARCHY_DEPTH, MAX_TAG_DEPTH, TagPath};
use crate::suggest::closest;

pub(crate) type Key<'i> = Spanned<Cow<'i, str>>;
pub(crate) type Item<'i> = Spanned<DeValue<'i>>;

const ROOT_FIELDS: &[&str] = &[
    "enterprise",
    "description",
    "site",
    "equipment",
    "modbus",
    "opcua",
    "kpi",
];
const SITE_FIELDS: &[&str] = &["name", "description"];
const EQUIPMENT_FIELDS: &[&str] = &["path", "class", "description", "tags"];
const SITE_TAG_FIELDS: &[&str] = &[
    "type",
    "values",
    "unit",
    "min",
    "max",
    "description",
    "extension",
    "write",
];
const WRITE_FIELDS: &[&str] = &["max_per_minute", "approval"];
pub(crate) const TAG_TYPES: &[&str] = &["float", "int", "bool", "string", "enum"];
const MIN_EQUIPMENT_DEPTH: usize = 2;

pub(super) fn parse_model(src: &str, file: &str) -> Result<PlantModel, ModelErrors> {
    let mut checker = Checker::new(src, file);
    let (root, syntax_errors) = DeTable::parse_recoverable(src);
    // The tree recovered from a syntax error is a guess; checking it would
    // report problems the user never wrote.
    if !syntax_errors.is_empty() {
        checker.syntax(syntax_errors);
        return Err(checker.into_errors());
    }
    let model = checker.model(root.get_ref());
    match model {
        Some(model) if checker.errors.is_empty() => Ok(model),
        _ => Err(checker.into_errors()),
    }
}

/// A parsed equipment with what the cross-equipment checks need to report.
struct Draft {
    equipment: Equipment,
    field: String,
    path_offset: usize,
    /// (field, key offset) of each entry in `equipment.tags`.
    tag_locations: Vec<(String, usize)>,
    location: EquipmentLocation,
}

/// Collects located errors while walking a TOML document; shared with the
/// standard file parser.
pub(crate) struct Checker<'s> {
    pub(crate) src: &'s str,
    pub(crate) file: &'s str,
    pub(crate) errors: Vec<ModelError>,
    lines: LineIndex,
}

impl<'s> Checker<'s> {
    pub(crate) fn new(src: &'s str, file: &'s str) -> Checker<'s> {
        Checker {
            src,
            file,
            errors: Vec::new(),
            lines: LineIndex::new(src),
        }
    }

    pub(crate) fn pos(&self, offset: usize) -> (usize, usize) {
        self.lines.pos(self.src, offset)
    }

    pub(crate) fn error(
        &mut self,
        offset: usize,
        field: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.pos(offset);
        self.errors.push(ModelError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn into_errors(mut self) -> ModelErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        ModelErrors::new(self.errors)
    }

    pub(crate) fn syntax(&mut self, mut errors: Vec<toml::de::Error>) {
        errors.sort_by_key(|e| e.span().map_or(0, |s| s.start));
        let mut reported_lines = HashSet::new();
        let mut duplicate_table_at: Option<usize> = None;
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            let offset = span.start;
            let (line, _) = self.pos(offset);
            // Later errors on the same line are almost always fallout of the first.
            if !reported_lines.insert(line) {
                continue;
            }
            if e.message() != "duplicate key" {
                self.error(offset, "", e.message(), None);
                continue;
            }
            let line_text = self.line_text(offset);
            if line_text.starts_with('[') {
                duplicate_table_at = Some(offset);
                let hint = if line_text.contains(".tags.") {
                    "a tag can be declared only once per equipment"
                } else {
                    "merge the two tables"
                };
                self.error(
                    offset,
                    "",
                    format!("table {line_text} is declared twice"),
                    Some(hint.to_owned()),
                );
            } else if duplicate_table_at.is_some_and(|at| !self.header_between(at, offset)) {
                // The keys of a repeated table all collide with the first one.
            } else {
                let key = self
                    .src
                    .get(span)
                    .unwrap_or_default()
                    .trim_matches(['"', '\'']);
                self.error(
                    offset,
                    "",
                    format!("duplicate key \"{key}\""),
                    Some("each key may appear only once per table".to_owned()),
                );
            }
        }
    }

    /// The trimmed source line holding `offset`, without a trailing comment
    /// after a table header.
    fn line_text(&self, offset: usize) -> &str {
        let bytes = self.src.as_bytes();
        let offset = offset.min(bytes.len());
        let start = bytes[..offset]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| offset + i);
        // Both ends sit next to a '\n' (or the ends of the source), so they
        // are character boundaries.
        let line = self.src.get(start..end).unwrap_or_default().trim();
        let head = line
            .split_once('#')
            .map_or(line, |(head, _)| head.trim_end());
        if head.starts_with('[') && head.ends_with(']') {
            head
        } else {
            line
        }
    }

    /// True if a table header line starts after the line holding `from` and
    /// before `to`.
    fn header_between(&self, from: usize, to: usize) -> bool {
        self.src
            .get(from..to)
            .is_some_and(|s| s.lines().skip(1).any(|l| l.trim_start().starts_with('[')))
    }

    /// Byte offset of `byte` within a string value or key, looking through
    /// the quotes when the source spells the value literally.
    pub(crate) fn offset_in(&self, span: &Range<usize>, value: &str, byte: usize) -> usize {
        match self.src.get(span.clone()) {
            Some(raw) if raw == value => span.start + byte,
            Some(raw)
                if raw.len() == value.len() + 2 && raw.get(1..raw.len() - 1) == Some(value) =>
            {
                span.start + 1 + byte
            }
            _ => span.start,
        }
    }

    fn model(&mut self, root: &DeTable<'_>) -> Option<PlantModel> {
        self.unknown_fields(root, "", ROOT_FIELDS);
        let enterprise = self.enterprise(root);
        let description = self.string(root, "description", "description");
        let (sites, sites_complete) = self.sites(root);
        let drafts = self.equipment_list(root, enterprise.as_ref(), &sites, sites_complete);
        self.duplicates(&drafts);
        let (equipment, locations) = drafts
            .into_iter()
            .map(|d| (d.equipment, d.location))
            .unzip();
        Some(PlantModel::new(
            enterprise?,
            description.map(|(s, _)| s.to_owned()),
            sites,
            equipment,
            self.file.to_owned(),
            locations,
        ))
    }

    pub(crate) fn unknown_fields(&mut self, table: &DeTable<'_>, prefix: &str, allowed: &[&str]) {
        for (key, _) in sorted(table) {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = match closest(name, allowed) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => format!("expected one of: {}", allowed.join(", ")),
            };
            self.error(
                key.span().start,
                &join(prefix, name),
                "unknown field",
                Some(hint),
            );
        }
    }

    pub(crate) fn missing(&mut self, offset: usize, field: &str, hint: Option<String>) {
        self.error(offset, field, "missing required field", hint);
    }

    /// A string field; reports a wrong type. `None` when absent or not a string.
    pub(crate) fn string<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        key: &str,
        field: &str,
    ) -> Option<(&'t str, Range<usize>)> {
        let item = table.get(key)?;
        match item.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), item.span())),
            other => {
                self.error(
                    item.span().start,
                    field,
                    format!("must be a string, got {}", other.type_str()),
                    None,
                );
                None
            }
        }
    }

    /// A numeric field (integer or float, finite); reports a wrong type.
    pub(crate) fn number(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
    ) -> Option<(f64, usize)> {
        let item = table.get(key)?;
        let offset = item.span().start;
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|i| i as f64),
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            other => {
                self.error(
                    offset,
                    field,
                    format!("must be a number, got {}", other.type_str()),
                    None,
                );
                return None;
            }
        };
        match parsed {
            Some(n) if n.is_finite() => Some((n, offset)),
            _ => {
                self.error(offset, field, "must be a finite number", None);
                None
            }
        }
    }

    /// An optional free-text field that must not be blank when present.
    pub(crate) fn text(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        hint: &str,
    ) -> Option<String> {
        let (value, span) = self.string(table, key, field)?;
        if value.trim().is_empty() {
            self.error(
                span.start,
                field,
                "must not be empty",
                Some(hint.to_owned()),
            );
            return None;
        }
        Some(value.to_owned())
    }

    /// Reports every invalid `/`-separated segment of a path or tag key, at
    /// the segment's own column. Returns the level count if all are valid.
    pub(crate) fn segments(
        &mut self,
        value: &str,
        span: &Range<usize>,
        field: &str,
    ) -> Option<usize> {
        let mut valid = true;
        let mut byte = 0;
        let mut depth = 0;
        for segment in value.split('/') {
            depth += 1;
            if let Err(e) = validate_segment(segment) {
                valid = false;
                let message = match e {
                    NameError::Empty => format!("level {depth} is empty"),
                    ref other => other.to_string(),
                };
                let hint = match e {
                    NameError::Empty => Some("remove the extra '/'".to_owned()),
                    ref other => other.hint(),
                };
                self.error(self.offset_in(span, value, byte), field, message, hint);
            }
            byte += segment.len() + 1;
        }
        valid.then_some(depth)
    }

    fn enterprise(&mut self, root: &DeTable<'_>) -> Option<Segment> {
        if !root.contains_key("enterprise") {
            self.missing(
                0,
                "enterprise",
                Some("add enterprise = \"<name>\" at the top of the file".to_owned()),
            );
            return None;
        }
        let (value, span) = self.string(root, "enterprise", "enterprise")?;
        match Segment::new(value) {
            Ok(segment) => Some(segment),
            Err(e) => {
                self.error(
                    self.offset_in(&span, value, 0),
                    "enterprise",
                    e.to_string(),
                    e.hint(),
                );
                None
            }
        }
    }

    /// The tables of an array of tables (`[[key]]`), with their indexes.
    pub(crate) fn array_of_tables<'t, 'i>(
        &mut self,
        root: &'t DeTable<'i>,
        key: &str,
    ) -> Vec<(usize, &'t DeTable<'i>, Range<usize>)> {
        let Some(item) = root.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(array) = item.get_ref() else {
            self.error(
                item.span().start,
                key,
                format!(
                    "must be an array of tables ([[{key}]]), got {}",
                    item.get_ref().type_str()
                ),
                None,
            );
            return Vec::new();
        };
        let mut tables = Vec::with_capacity(array.len());
        for (index, element) in array.iter().enumerate() {
            match element.get_ref() {
                DeValue::Table(table) => tables.push((index, table, element.span())),
                other => self.error(
                    element.span().start,
                    &format!("{key}[{index}]"),
                    format!("must be a table, got {}", other.type_str()),
                    None,
                ),
            }
        }
        tables
    }

    /// Declared sites, and whether every `[[site]]` had a valid name (if not,
    /// undeclared-site errors on equipment would only repeat the problem).
    fn sites(&mut self, root: &DeTable<'_>) -> (Vec<Site>, bool) {
        let mut sites: Vec<Site> = Vec::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut complete = true;
        for (index, table, span) in self.array_of_tables(root, "site") {
            let prefix = format!("site[{index}]");
            self.unknown_fields(table, &prefix, SITE_FIELDS);
            let description = self.string(table, "description", &join(&prefix, "description"));
            let field = join(&prefix, "name");
            if !table.contains_key("name") {
                self.missing(span.start, &field, None);
                complete = false;
                continue;
            }
            let Some((name, name_span)) = self.string(table, "name", &field) else {
                complete = false;
                continue;
            };
            let segment = match Segment::new(name) {
                Ok(segment) => segment,
                Err(e) => {
                    self.error(
                        self.offset_in(&name_span, name, 0),
                        &field,
                        e.to_string(),
                        e.hint(),
                    );
                    complete = false;
                    continue;
                }
            };
            if let Some(line) = first_line.get(name) {
                self.error(
                    name_span.start,
                    &field,
                    format!("site \"{name}\" is already declared on line {line}"),
                    None,
                );
                continue;
            }
            first_line.insert(name.to_owned(), self.pos(name_span.start).0);
            sites.push(Site {
                name: segment,
                description: description.map(|(s, _)| s.to_owned()),
            });
        }
        (sites, complete)
    }

    fn equipment_list(
        &mut self,
        root: &DeTable<'_>,
        enterprise: Option<&Segment>,
        sites: &[Site],
        sites_complete: bool,
    ) -> Vec<Draft> {
        let mut drafts = Vec::new();
        for (index, table, span) in self.array_of_tables(root, "equipment") {
            let prefix = format!("equipment[{index}]");
            self.unknown_fields(table, &prefix, EQUIPMENT_FIELDS);
            let class_field = join(&prefix, "class");
            let class = self.text(
                table,
                "class",
                &class_field,
                "remove the field or name the class, e.g. \"filler\"",
            );
            let class_at = table.get("class").map(|item| item.span().start);
            let class_ref = match (&class, class_at) {
                (Some(text), Some(at)) if text.contains('@') => {
                    let parsed = ClassRef::parse(text);
                    if parsed.is_none() {
                        let name = text.split('@').next().unwrap_or_default();
                        self.error(
                            at,
                            &class_field,
                            format!("invalid class reference \"{text}\""),
                            Some(format!(
                                "write name@version with a positive version, e.g. \"{name}@1\""
                            )),
                        );
                    }
                    parsed
                }
                _ => None,
            };
            let description = self
                .string(table, "description", &join(&prefix, "description"))
                .map(|(s, _)| s.to_owned());
            let path_field = join(&prefix, "path");
            let path = if table.contains_key("path") {
                self.string(table, "path", &path_field)
                    .and_then(|(value, span)| {
                        let path = self.equipment_path(
                            value,
                            &span,
                            &path_field,
                            enterprise,
                            sites,
                            sites_complete,
                        )?;
                        Some((path, span.start))
                    })
            } else {
                self.missing(
                    span.start,
                    &path_field,
                    Some("e.g. path = \"acme/dallas/packaging/line-1/filler\"".to_owned()),
                );
                None
            };
            let (tags, tag_locations, tag_details) = self.tags(table, &prefix);
            if let Some((path, path_offset)) = path {
                let (path_literal, path_at) = table
                    .get("path")
                    .and_then(|item| match item.get_ref() {
                        DeValue::String(value) => {
                            let at = self.offset_in(&item.span(), value, 0);
                            Some((at != item.span().start, at))
                        }
                        _ => None,
                    })
                    .unwrap_or((false, path_offset));
                let location = EquipmentLocation {
                    field: prefix.clone(),
                    path: self.pos(path_at),
                    path_literal,
                    class: class_at.map(|at| self.pos(at)),
                    tags: tag_details,
                };
                drafts.push(Draft {
                    equipment: Equipment {
                        path,
                        class,
                        class_ref,
                        description,
                        tags,
                    },
                    field: prefix,
                    path_offset,
                    tag_locations,
                    location,
                });
            }
        }
        drafts
    }

    fn equipment_path(
        &mut self,
        value: &str,
        span: &Range<usize>,
        field: &str,
        enterprise: Option<&Segment>,
        sites: &[Site],
        sites_complete: bool,
    ) -> Option<HierarchyPath> {
        let valid = self.segments(value, span, field);
        let depth = value.split('/').count();
        if !(MIN_EQUIPMENT_DEPTH..=MAX_HIERARCHY_DEPTH).contains(&depth) {
            self.error(
                span.start,
                field,
                format!(
                    "path has {depth} level{}; equipment needs {MIN_EQUIPMENT_DEPTH} to {MAX_HIERARCHY_DEPTH} (enterprise/site/area/line/cell/equipment)",
                    if depth == 1 { "" } else { "s" }
                ),
                None,
            );
            return None;
        }
        valid?;
        let path = HierarchyPath::parse(value).ok()?;
        if let Some(enterprise) = enterprise
            && path.enterprise() != enterprise.as_str()
        {
            let rest = value.split_once('/').map_or("", |(_, rest)| rest);
            self.error(
                self.offset_in(span, value, 0),
                field,
                format!(
                    "path must start with the enterprise \"{enterprise}\", not \"{}\"",
                    path.enterprise()
                ),
                Some(format!("use \"{enterprise}/{rest}\"")),
            );
        }
        if let Some(site) = path.site()
            && sites_complete
            && !sites.iter().any(|s| s.name.as_str() == site)
        {
            let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
            let hint = match closest(site, &names) {
                Some(name) => format!("did you mean \"{name}\"?"),
                None => format!("add a [[site]] with name = \"{site}\""),
            };
            let site_byte = path.enterprise().len() + 1;
            self.error(
                self.offset_in(span, value, site_byte),
                field,
                format!("site \"{site}\" is not declared"),
                Some(hint),
            );
        }
        Some(path)
    }

    #[allow(clippy::type_complexity)]
    fn tags(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
    ) -> (Vec<TagSpec>, Vec<(String, usize)>, Vec<TagLocation>) {
        let mut tags = Vec::new();
        let mut locations = Vec::new();
        let mut details = Vec::new();
        let Some(item) = table.get("tags") else {
            return (tags, locations, details);
        };
        let tags_field = join(prefix, "tags");
        let DeValue::Table(entries) = item.get_ref() else {
            self.error(
                item.span().start,
                &tags_field,
                format!("must be a table of tags, got {}", item.get_ref().type_str()),
                Some("declare each tag as [equipment.tags.<name>]".to_owned()),
            );
            return (tags, locations, details);
        };
        for (key, value) in sorted(entries) {
            let name: &str = key.get_ref();
            let field = join(&tags_field, name);
            let key_span = key.span();
            let depth = self.segments(name, &key_span, &field);
            if let Some(depth) = depth
                && depth > MAX_TAG_DEPTH
            {
                self.error(
                    key_span.start,
                    &field,
                    format!("tag path has {depth} levels; the maximum is {MAX_TAG_DEPTH}"),
                    None,
                );
            }
            let DeValue::Table(spec) = value.get_ref() else {
                self.error(
                    value.span().start,
                    &field,
                    format!(
                        "a tag must be a table with a \"type\" field, got {}",
                        value.get_ref().type_str()
                    ),
                    Some(format!(
                        "write [equipment.tags.{}] with type = \"...\"",
                        bare_or_quoted(name)
                    )),
                );
                continue;
            };
            let path = TagPath::parse(name).ok();
            let extension = self.boolean(spec, "extension", &join(&field, "extension"));
            let tag = self.tag_spec(spec, value.span().start, &field, path, SITE_TAG_FIELDS);
            let write = self.write_policy(spec, &join(&field, "write"));
            if let Some(mut tag) = tag {
                tag.extension = extension.unwrap_or(false);
                tag.write = write;
                details.push(self.tag_location(spec, &field, key_span.start));
                tags.push(tag);
                locations.push((field, key_span.start));
            }
        }
        (tags, locations, details)
    }

    /// Positions of a tag table's fields.
    pub(crate) fn tag_location(&self, spec: &DeTable<'_>, field: &str, key: usize) -> TagLocation {
        let at = |name: &str| spec.get(name).map(|item| self.pos(item.span().start));
        TagLocation {
            field: field.to_owned(),
            key: self.pos(key),
            type_: at("type"),
            values: at("values"),
            unit: at("unit"),
            min: at("min"),
            max: at("max"),
            extension: at("extension"),
        }
    }

    /// A tag's `write` field: `true`, or a table with `max_per_minute` and
    /// `approval = "none" | "two-person"`. Absent or `false`: read-only.
    fn write_policy(&mut self, spec: &DeTable<'_>, field: &str) -> Option<WritePolicy> {
        let item = spec.get("write")?;
        let table = match item.get_ref() {
            DeValue::Boolean(true) => return Some(WritePolicy::default()),
            DeValue::Boolean(false) => return None,
            DeValue::Table(t) => t,
            other => {
                self.error(
                    item.span().start,
                    field,
                    format!("must be true, false or a table, got {}", other.type_str()),
                    Some("write = { max_per_minute = 6, approval = \"two-person\" }".to_owned()),
                );
                return None;
            }
        };
        self.unknown_fields(table, field, WRITE_FIELDS);
        let rate_field = join(field, "max_per_minute");
        let max_per_minute = match self.number(table, "max_per_minute", &rate_field) {
            Some((n, _)) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
                Some(n as u32)
            }
            Some((n, at)) => {
                self.error(
                    at,
                    &rate_field,
                    format!("must be a whole number of at least 1, got {n}"),
                    None,
                );
                None
            }
            None => None,
        };
        let approval_field = join(field, "approval");
        let two_person = match self.string(table, "approval", &approval_field) {
            None | Some(("none", _)) => false,
            Some(("two-person", _)) => true,
            Some((other, span)) => {
                self.error(
                    span.start,
                    &approval_field,
                    format!("unknown approval \"{other}\""),
                    Some("\"none\" or \"two-person\"".to_owned()),
                );
                false
            }
        };
        Some(WritePolicy {
            max_per_minute,
            two_person,
        })
    }

    /// An optional boolean field; reports a wrong type.
    pub(crate) fn boolean(&mut self, table: &DeTable<'_>, key: &str, field: &str) -> Option<bool> {
        let item = table.get(key)?;
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    item.span().start,
                    field,
                    format!("must be true or false, got {}", other.type_str()),
                    None,
                );
                None
            }
        }
    }

    /// Checks every field of a tag table. `path` is `None` when the tag key
    /// was invalid (already reported); then no spec is built.
    pub(crate) fn tag_spec(
        &mut self,
        spec: &DeTable<'_>,
        offset: usize,
        field: &str,
        path: Option<TagPath>,
        allowed: &[&str],
    ) -> Option<TagSpec> {
        self.unknown_fields(spec, field, allowed);
        let type_field = join(field, "type");
        let type_hint = || format!("one of {}", TAG_TYPES.join(", "));
        let kind = if spec.contains_key("type") {
            match self.string(spec, "type", &type_field) {
                Some((kind, _)) if TAG_TYPES.contains(&kind) => Some(kind),
                Some((kind, span)) => {
                    let hint = match synonym(kind).or_else(|| closest(kind, TAG_TYPES)) {
                        Some(s) => format!("did you mean \"{s}\"?"),
                        None => type_hint(),
                    };
                    self.error(
                        span.start,
                        &type_field,
                        format!("unknown tag type \"{kind}\""),
                        Some(hint),
                    );
                    None
                }
                None => None,
            }
        } else {
            self.missing(offset, &type_field, Some(type_hint()));
            None
        };
        let numeric = kind.map(|k| k == "float" || k == "int");

        let values_field = join(field, "values");
        let values = spec
            .get("values")
            .map(|item| (self.enum_values(item, &values_field), item.span().start));
        let mut values_ok = true;
        match (kind, &values) {
            (Some("enum"), None) => {
                self.missing(
                    offset,
                    &values_field,
                    Some(
                        "enum tags list their values, e.g. values = [\"running\", \"idle\"]"
                            .to_owned(),
                    ),
                );
                values_ok = false;
            }
            (Some("enum"), Some((Some(list), at))) if list.is_empty() => {
                self.error(*at, &values_field, "enum tag has no values", None);
                values_ok = false;
            }
            (Some(kind), Some((_, at))) if kind != "enum" => {
                self.error(
                    *at,
                    &values_field,
                    format!("only enum tags take values; this tag is \"{kind}\""),
                    Some("remove values, or set type = \"enum\"".to_owned()),
                );
            }
            _ => {}
        }

        let unit_field = join(field, "unit");
        let unit = self.text(
            spec,
            "unit",
            &unit_field,
            "remove unit, or give one such as \"degC\"",
        );
        if numeric == Some(false) && spec.contains_key("unit") {
            let at = spec.get("unit").map_or(offset, |u| u.span().start);
            self.error(
                at,
                &unit_field,
                format!(
                    "only float and int tags take a unit; this tag is \"{}\"",
                    kind.unwrap_or_default()
                ),
                None,
            );
        }
        let mut range = [None, None];
        for (slot, key) in range.iter_mut().zip(["min", "max"]) {
            let key_field = join(field, key);
            *slot = self.number(spec, key, &key_field);
            if numeric == Some(false) && spec.contains_key(key) {
                let at = spec.get(key).map_or(offset, |v| v.span().start);
                self.error(
                    at,
                    &key_field,
                    format!(
                        "only float and int tags take {key}; this tag is \"{}\"",
                        kind.unwrap_or_default()
                    ),
                    None,
                );
            }
        }
        let [min, max] = range;
        if let (Some((min, _)), Some((max, at))) = (min, max)
            && min > max
        {
            self.error(
                at,
                &join(field, "max"),
                format!("min ({min}) is greater than max ({max})"),
                Some("swap min and max".to_owned()),
            );
        }
        let description = self
            .string(spec, "description", &join(field, "description"))
            .map(|(s, _)| s.to_owned());

        let tag_type = match kind? {
            "float" => TagType::Float,
            "int" => TagType::Int,
            "bool" => TagType::Bool,
            "string" => TagType::String,
            _ => {
                let values = values.and_then(|(list, _)| list)?;
                if !values_ok {
                    return None;
                }
                TagType::Enum { values }
            }
        };
        Some(TagSpec {
            path: path?,
            tag_type,
            unit,
            min: min.map(|(m, _)| m),
            max: max.map(|(m, _)| m),
            description,
            extension: false,
            write: None,
        })
    }

    /// The strings of a `values` array; `None` if any entry is unusable.
    pub(crate) fn enum_values(&mut self, item: &Item<'_>, field: &str) -> Option<Vec<String>> {
        let DeValue::Array(array) = item.get_ref() else {
            self.error(
                item.span().start,
                field,
                format!(
                    "must be an array of strings, got {}",
                    item.get_ref().type_str()
                ),
                None,
            );
            return None;
        };
        let mut values: Vec<String> = Vec::with_capacity(array.len());
        let mut valid = true;
        for (index, element) in array.iter().enumerate() {
            let element_field = format!("{field}[{index}]");
            let at = element.span().start;
            match element.get_ref() {
                DeValue::String(s) if s.trim().is_empty() => {
                    self.error(at, &element_field, "enum value must not be empty", None);
                    valid = false;
                }
                DeValue::String(s) if values.iter().any(|v| v == s.as_ref()) => {
                    self.error(
                        at,
                        &element_field,
                        format!("duplicate enum value \"{s}\""),
                        None,
                    );
                    valid = false;
                }
                DeValue::String(s) => values.push(s.to_string()),
                other => {
                    self.error(
                        at,
                        &element_field,
                        format!("must be a string, got {}", other.type_str()),
                        None,
                    );
                    valid = false;
                }
            }
        }
        valid.then_some(values)
    }

    fn duplicates(&mut self, drafts: &[Draft]) {
        let mut paths: HashMap<&str, &Draft> = HashMap::new();
        let mut topics: HashMap<String, (&str, usize)> = HashMap::new();
        for draft in drafts {
            let path = draft.equipment.path.as_str();
            if let Some(first) = paths.get(path) {
                let line = self.pos(first.path_offset).0;
                self.error(
                    draft.path_offset,
                    &join(&draft.field, "path"),
                    format!(
                        "duplicate equipment path \"{path}\", already used by {} on line {line}",
                        first.field
                    ),
                    Some("merge the two [[equipment]] entries".to_owned()),
                );
                continue;
            }
            paths.insert(path, draft);
            for (tag, (field, offset)) in draft.equipment.tags.iter().zip(&draft.tag_locations) {
                let topic = draft.equipment.tag_topic(tag).to_topic();
                if let Some((first_field, first_offset)) = topics.get(&topic) {
                    let line = self.pos(*first_offset).0;
                    self.error(
                        *offset,
                        field,
                        format!("duplicate tag: topic \"{topic}\" is already declared by {first_field} on line {line}"),
                        None,
                    );
                    continue;
                }
                topics.insert(topic, (field, *offset));
            }
        }
    }
}

/// Table entries in file order (the TOML map itself is sorted by key).
pub(crate) fn sorted<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Item<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Dotted field path, quoting keys that are not bare TOML keys.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        bare_or_quoted(key)
    } else {
        format!("{prefix}.{}", bare_or_quoted(key))
    }
}

/// Common spellings of tag types from other systems.
pub(crate) fn synonym(kind: &str) -> Option<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "double" | "real" | "number" | "f64" | "f32" | "decimal" => Some("float"),
        "integer" | "long" | "i64" | "i32" | "counter" => Some("int"),
        "boolean" => Some("bool"),
        "str" | "text" => Some("string"),
        "enumeration" => Some("enum"),
        lower if TAG_TYPES.contains(&lower) => TAG_TYPES.iter().copied().find(|t| *t == lower),
        _ => None,
    }
}
