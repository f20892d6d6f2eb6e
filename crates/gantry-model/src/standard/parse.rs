//! Validation of a standard file, with the same located errors as the plant
//! model (it reuses the plant parser's `Checker`).

use std::collections::HashMap;

use toml::de::{DeTable, DeValue};

use super::{ClassDef, ClassTag, LevelRule, NameStyle, NamingRules, Standard};
use crate::name::{MAX_SEGMENT_LEN, validate_segment};
use crate::path::{Level, TagPath};
use crate::plant::ModelErrors;
use crate::plant::parse::{Checker, join, sorted};
use crate::suggest::closest;

/// `kpi` holds state models, checked by `gantry-kpi`.
const ROOT_FIELDS: &[&str] = &["name", "version", "description", "naming", "class", "kpi"];
const NAMING_FIELDS: &[&str] = &["max_segment_length", "level_style", "tag_style", "levels"];
const LEVEL_FIELDS: &[&str] = &["allowed", "pattern"];
const CLASS_FIELDS: &[&str] = &["name", "version", "description", "tags"];
const CLASS_TAG_FIELDS: &[&str] = &[
    "type",
    "values",
    "unit",
    "min",
    "max",
    "description",
    "required",
];
const LEVEL_NAMES: &[&str] = &["enterprise", "site", "area", "line", "cell", "equipment"];

pub(super) fn parse_standard(src: &str, file: &str) -> Result<Standard, ModelErrors> {
    let mut c = Checker::new(src, file);
    let (root, syntax_errors) = DeTable::parse_recoverable(src);
    if !syntax_errors.is_empty() {
        c.syntax(syntax_errors);
        return Err(c.into_errors());
    }
    let root = root.get_ref();
    c.unknown_fields(root, "", ROOT_FIELDS);
    let name = required_text(&mut c, root, "name", "e.g. name = \"acme-packaging\"");
    let version = required_text(&mut c, root, "version", "e.g. version = \"1.0.0\"");
    let description = c
        .string(root, "description", "description")
        .map(|(s, _)| s.to_owned());
    let naming = naming(&mut c, root);
    let classes = classes(&mut c, root, &naming);
    match (name, version) {
        (Some(name), Some(version)) if c.errors.is_empty() => Ok(Standard {
            name,
            version,
            description,
            naming,
            classes,
            file: file.to_owned(),
        }),
        _ => Err(c.into_errors()),
    }
}

fn required_text(
    c: &mut Checker<'_>,
    table: &DeTable<'_>,
    key: &str,
    hint: &str,
) -> Option<String> {
    if !table.contains_key(key) {
        c.missing(0, key, Some(hint.to_owned()));
        return None;
    }
    c.text(table, key, key, hint)
}

/// A non-negative integer field; reports a wrong type or sign.
fn integer(
    c: &mut Checker<'_>,
    table: &DeTable<'_>,
    key: &str,
    field: &str,
) -> Option<(u64, usize)> {
    let item = table.get(key)?;
    let at = item.span().start;
    let DeValue::Integer(i) = item.get_ref() else {
        c.error(
            at,
            field,
            format!("must be an integer, got {}", item.get_ref().type_str()),
            None,
        );
        return None;
    };
    match u64::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) => Some((n, at)),
        Err(_) => {
            c.error(at, field, "must be a positive integer", None);
            None
        }
    }
}

fn style(c: &mut Checker<'_>, table: &DeTable<'_>, key: &str) -> NameStyle {
    let field = join("naming", key);
    let Some((name, span)) = c.string(table, key, &field) else {
        return NameStyle::Any;
    };
    match NameStyle::from_name(name) {
        Some(style) => style,
        None => {
            let hint = match closest(name, NameStyle::NAMES) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => format!("one of {}", NameStyle::NAMES.join(", ")),
            };
            c.error(
                span.start,
                &field,
                format!("unknown naming style \"{name}\""),
                Some(hint),
            );
            NameStyle::Any
        }
    }
}

fn naming(c: &mut Checker<'_>, root: &DeTable<'_>) -> NamingRules {
    let mut rules = NamingRules::default();
    let Some(item) = root.get("naming") else {
        return rules;
    };
    let DeValue::Table(table) = item.get_ref() else {
        c.error(
            item.span().start,
            "naming",
            format!("must be a table, got {}", item.get_ref().type_str()),
            None,
        );
        return rules;
    };
    c.unknown_fields(table, "naming", NAMING_FIELDS);
    let max_field = "naming.max_segment_length";
    if let Some((max, at)) = integer(c, table, "max_segment_length", max_field) {
        if (1..=MAX_SEGMENT_LEN as u64).contains(&max) {
            rules.max_segment_length = Some(max as usize);
        } else {
            c.error(
                at,
                max_field,
                format!("must be between 1 and {MAX_SEGMENT_LEN}"),
                None,
            );
        }
    }
    rules.level_style = style(c, table, "level_style");
    rules.tag_style = style(c, table, "tag_style");
    let Some(levels) = table.get("levels") else {
        return rules;
    };
    let DeValue::Table(levels) = levels.get_ref() else {
        c.error(
            levels.span().start,
            "naming.levels",
            format!("must be a table, got {}", levels.get_ref().type_str()),
            Some("declare each level as [naming.levels.<level>]".to_owned()),
        );
        return rules;
    };
    for (key, value) in sorted(levels) {
        let name: &str = key.get_ref();
        let field = join("naming.levels", name);
        let Some(level) = Level::ALL.into_iter().find(|l| l.as_str() == name) else {
            let hint = match closest(name, LEVEL_NAMES) {
                Some(s) => format!("did you mean \"{s}\"?"),
                None => format!("one of {}", LEVEL_NAMES.join(", ")),
            };
            c.error(
                key.span().start,
                &field,
                "unknown hierarchy level",
                Some(hint),
            );
            continue;
        };
        let DeValue::Table(rule) = value.get_ref() else {
            c.error(
                value.span().start,
                &field,
                format!("must be a table, got {}", value.get_ref().type_str()),
                None,
            );
            continue;
        };
        c.unknown_fields(rule, &field, LEVEL_FIELDS);
        let mut allowed = Vec::new();
        if let Some(item) = rule.get("allowed") {
            let allowed_field = join(&field, "allowed");
            match item.get_ref() {
                DeValue::Array(array) => {
                    for (index, element) in array.iter().enumerate() {
                        let element_field = format!("{allowed_field}[{index}]");
                        match element.get_ref() {
                            DeValue::String(s) => match validate_segment(s) {
                                Ok(()) => allowed.push(s.to_string()),
                                Err(e) => c.error(
                                    element.span().start,
                                    &element_field,
                                    e.to_string(),
                                    e.hint(),
                                ),
                            },
                            other => c.error(
                                element.span().start,
                                &element_field,
                                format!("must be a string, got {}", other.type_str()),
                                None,
                            ),
                        }
                    }
                }
                other => c.error(
                    item.span().start,
                    &allowed_field,
                    format!("must be an array of strings, got {}", other.type_str()),
                    None,
                ),
            }
        }
        let pattern_field = join(&field, "pattern");
        let pattern = match c.string(rule, "pattern", &pattern_field) {
            Some((p, span)) => {
                let valid = !p.is_empty()
                    && p.chars().all(|ch| {
                        ch.is_ascii_lowercase()
                            || ch.is_ascii_digit()
                            || matches!(ch, '-' | '_' | '*' | '#')
                    });
                if valid {
                    Some(p.to_owned())
                } else {
                    c.error(
                        span.start,
                        &pattern_field,
                        format!("invalid pattern \"{p}\""),
                        Some(
                            "use lowercase letters, digits, '-', '_', '#' (digits) and '*' (any text)"
                                .to_owned(),
                        ),
                    );
                    None
                }
            }
            None => None,
        };
        rules.levels.push(LevelRule {
            level,
            allowed,
            pattern,
        });
    }
    rules
}

fn classes(c: &mut Checker<'_>, root: &DeTable<'_>, naming: &NamingRules) -> Vec<ClassDef> {
    let mut classes: Vec<ClassDef> = Vec::new();
    let mut first_line: HashMap<(String, u32), usize> = HashMap::new();
    for (index, table, span) in c.array_of_tables(root, "class") {
        let prefix = format!("class[{index}]");
        c.unknown_fields(table, &prefix, CLASS_FIELDS);
        let name_field = join(&prefix, "name");
        let name = if table.contains_key("name") {
            c.string(table, "name", &name_field)
                .and_then(|(name, span)| match validate_segment(name) {
                    Ok(()) => Some((name.to_owned(), span.start)),
                    Err(e) => {
                        c.error(span.start, &name_field, e.to_string(), e.hint());
                        None
                    }
                })
        } else {
            c.missing(
                span.start,
                &name_field,
                Some("e.g. name = \"filler\"".to_owned()),
            );
            None
        };
        let version_field = join(&prefix, "version");
        let version = if table.contains_key("version") {
            match integer(c, table, "version", &version_field) {
                Some((v, _)) if (1..=u64::from(u32::MAX)).contains(&v) => Some(v as u32),
                Some((_, at)) => {
                    c.error(at, &version_field, "must be between 1 and 4294967295", None);
                    None
                }
                None => None,
            }
        } else {
            c.missing(
                span.start,
                &version_field,
                Some("e.g. version = 1".to_owned()),
            );
            None
        };
        let description = c
            .string(table, "description", &join(&prefix, "description"))
            .map(|(s, _)| s.to_owned());
        let tags = class_tags(c, table, &prefix, naming);
        let (Some((name, name_at)), Some(version)) = (name, version) else {
            continue;
        };
        let key = (name.clone(), version);
        if let Some(line) = first_line.get(&key) {
            c.error(
                name_at,
                &name_field,
                format!("class {name}@{version} is already defined on line {line}"),
                Some("give the new definition the next version number".to_owned()),
            );
            continue;
        }
        first_line.insert(key, c.pos(name_at).0);
        classes.push(ClassDef {
            name,
            version,
            description,
            tags,
        });
    }
    classes
}

fn class_tags(
    c: &mut Checker<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    naming: &NamingRules,
) -> Vec<ClassTag> {
    let mut tags = Vec::new();
    let Some(item) = table.get("tags") else {
        return tags;
    };
    let tags_field = join(prefix, "tags");
    let DeValue::Table(entries) = item.get_ref() else {
        c.error(
            item.span().start,
            &tags_field,
            format!("must be a table of tags, got {}", item.get_ref().type_str()),
            Some("declare each tag as [class.tags.<name>]".to_owned()),
        );
        return tags;
    };
    for (key, value) in sorted(entries) {
        let name: &str = key.get_ref();
        let field = join(&tags_field, name);
        let key_span = key.span();
        let depth = c.segments(name, &key_span, &field);
        if depth.is_some() {
            for segment in name.split('/') {
                if let Some((message, hint)) = tag_segment_violation(naming, segment) {
                    c.error(key_span.start, &field, message, Some(hint));
                }
            }
        }
        let DeValue::Table(spec) = value.get_ref() else {
            c.error(
                value.span().start,
                &field,
                format!(
                    "a tag must be a table with a \"type\" field, got {}",
                    value.get_ref().type_str()
                ),
                None,
            );
            continue;
        };
        let path = TagPath::parse(name).ok();
        let required = c.boolean(spec, "required", &join(&field, "required"));
        if let Some(spec) = c.tag_spec(spec, value.span().start, &field, path, CLASS_TAG_FIELDS) {
            tags.push(ClassTag {
                spec,
                required: required.unwrap_or(false),
            });
        }
    }
    tags
}

/// A tag or tag-group segment that breaks the naming rules: (message, hint).
pub(super) fn tag_segment_violation(
    naming: &NamingRules,
    segment: &str,
) -> Option<(String, String)> {
    if let Some(max) = naming.max_segment_length {
        let length = segment.chars().count();
        if length > max {
            return Some((
                format!(
                    "tag segment \"{segment}\" has {length} characters; the standard allows {max}"
                ),
                "use a shorter name".to_owned(),
            ));
        }
    }
    let style = naming.tag_style;
    style.violation(segment).map(|(at, ch)| {
        (
            format!(
                "tag segment \"{segment}\" is not {}: '{ch}' at character {at}",
                style.name()
            ),
            format!("use \"{}\"", style.fix(segment)),
        )
    })
}
