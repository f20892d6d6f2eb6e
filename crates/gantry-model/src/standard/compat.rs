//! Compatibility between two versions of a standard: which changes can break
//! a site model that conformed to the old one, and which cannot.

use std::fmt;

use super::{ClassDef, ClassTag, NamingRules, Standard};
use crate::plant::TagType;

/// One difference between two standards.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// `filler@1`, or `naming` for the naming rules.
    pub subject: String,
    /// The tag concerned, if any.
    pub tag: Option<String>,
    pub message: String,
}

/// `filler@1: tag speed: range narrowed: max 1200 -> 1000`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.subject)?;
        if let Some(tag) = &self.tag {
            write!(f, "tag {tag}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every difference between two standards, split by whether it can break
/// a conforming site model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CompatReport {
    pub breaking: Vec<Change>,
    pub non_breaking: Vec<Change>,
}

impl CompatReport {
    fn push(&mut self, breaking: bool, subject: &str, tag: Option<&str>, message: String) {
        let change = Change {
            subject: subject.to_owned(),
            tag: tag.map(str::to_owned),
            message,
        };
        if breaking {
            self.breaking.push(change);
        } else {
            self.non_breaking.push(change);
        }
    }

    /// The report as a JSON document: `{"breaking": [...], "non_breaking": [...]}`.
    pub fn to_json(&self) -> String {
        let list = |changes: &[Change]| -> Vec<serde_json::Value> {
            changes
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "subject": c.subject,
                        "tag": c.tag,
                        "message": c.message,
                    })
                })
                .collect()
        };
        serde_json::json!({
            "breaking": list(&self.breaking),
            "non_breaking": list(&self.non_breaking),
        })
        .to_string()
    }
}

/// Compares `old` with `new`: classes by name and version, tags by path.
pub fn compat(old: &Standard, new: &Standard) -> CompatReport {
    let mut report = CompatReport::default();
    naming(&old.naming, &new.naming, &mut report);
    for old_class in &old.classes {
        let subject = old_class.class_ref().to_string();
        match new.class(&old_class.class_ref()) {
            Some(new_class) => class(&subject, old_class, new_class, &mut report),
            None => report.push(true, &subject, None, "class version removed".to_owned()),
        }
    }
    for new_class in &new.classes {
        if old.class(&new_class.class_ref()).is_none() {
            let subject = new_class.class_ref().to_string();
            let message = if old.versions_of(&new_class.name).is_empty() {
                "class added"
            } else {
                "class version added"
            };
            report.push(false, &subject, None, message.to_owned());
        }
    }
    report
}

fn naming(old: &NamingRules, new: &NamingRules, report: &mut CompatReport) {
    let subject = "naming";
    match (old.max_segment_length, new.max_segment_length) {
        (a, b) if a == b => {}
        (Some(a), Some(b)) => report.push(
            b < a,
            subject,
            None,
            format!("max_segment_length changed from {a} to {b}"),
        ),
        (None, Some(b)) => {
            report.push(true, subject, None, format!("max_segment_length {b} added"))
        }
        (Some(a), None) => report.push(
            false,
            subject,
            None,
            format!("max_segment_length {a} removed"),
        ),
        (None, None) => {}
    }
    for (key, a, b) in [
        ("level_style", old.level_style, new.level_style),
        ("tag_style", old.tag_style, new.tag_style),
    ] {
        if a != b {
            report.push(
                !a.is_subset_of(b),
                subject,
                None,
                format!("{key} changed from {} to {}", a.name(), b.name()),
            );
        }
    }
    for level in crate::path::Level::ALL {
        let rule = |rules: &NamingRules| {
            rules
                .levels
                .iter()
                .find(|r| r.level == level)
                .map(|r| (r.allowed.clone(), r.pattern.clone()))
                .unwrap_or_default()
        };
        let (old_allowed, old_pattern) = rule(old);
        let (new_allowed, new_pattern) = rule(new);
        let name = level.as_str();
        if old_allowed != new_allowed {
            let removed: Vec<&String> = old_allowed
                .iter()
                .filter(|a| !new_allowed.contains(a))
                .collect();
            // An empty list allows everything.
            let narrowed =
                !new_allowed.is_empty() && (old_allowed.is_empty() || !removed.is_empty());
            report.push(
                narrowed,
                subject,
                None,
                format!(
                    "allowed {name} names changed from [{}] to [{}]",
                    old_allowed.join(", "),
                    new_allowed.join(", ")
                ),
            );
        }
        if old_pattern != new_pattern {
            report.push(
                new_pattern.is_some(),
                subject,
                None,
                format!(
                    "{name} pattern changed from {} to {}",
                    old_pattern.as_deref().unwrap_or("none"),
                    new_pattern.as_deref().unwrap_or("none")
                ),
            );
        }
    }
}

fn class(subject: &str, old: &ClassDef, new: &ClassDef, report: &mut CompatReport) {
    for old_tag in &old.tags {
        let name = old_tag.spec.path.as_str();
        match new.tag(name) {
            Some(new_tag) => tag(subject, name, old_tag, new_tag, report),
            None => report.push(true, subject, Some(name), "tag removed".to_owned()),
        }
    }
    for new_tag in &new.tags {
        let name = new_tag.spec.path.as_str();
        if old.tag(name).is_none() {
            if new_tag.required {
                report.push(true, subject, Some(name), "required tag added".to_owned());
            } else {
                report.push(false, subject, Some(name), "optional tag added".to_owned());
            }
        }
    }
}

fn tag(subject: &str, name: &str, old: &ClassTag, new: &ClassTag, report: &mut CompatReport) {
    let (o, n) = (&old.spec, &new.spec);
    let mut push =
        |breaking: bool, message: String| report.push(breaking, subject, Some(name), message);
    if o.tag_type.name() != n.tag_type.name() {
        push(
            true,
            format!(
                "type changed from {} to {}",
                o.tag_type.name(),
                n.tag_type.name()
            ),
        );
    } else if let (TagType::Enum { values: ov }, TagType::Enum { values: nv }) =
        (&o.tag_type, &n.tag_type)
    {
        for value in ov.iter().filter(|v| !nv.contains(v)) {
            push(true, format!("enum value \"{value}\" removed"));
        }
        for value in nv.iter().filter(|v| !ov.contains(v)) {
            push(false, format!("enum value \"{value}\" added"));
        }
    }
    if o.unit != n.unit {
        let show = |u: &Option<String>| {
            u.as_deref()
                .map_or("none".to_owned(), |u| format!("\"{u}\""))
        };
        push(
            true,
            format!("unit changed from {} to {}", show(&o.unit), show(&n.unit)),
        );
    }
    let show = |b: Option<f64>| b.map_or("none".to_owned(), |b| b.to_string());
    // A bound narrows when it appears or moves inwards.
    let min_narrowed = match (o.min, n.min) {
        (None, Some(_)) => Some(true),
        (Some(_), None) => Some(false),
        (Some(a), Some(b)) if a != b => Some(b > a),
        _ => None,
    };
    let max_narrowed = match (o.max, n.max) {
        (None, Some(_)) => Some(true),
        (Some(_), None) => Some(false),
        (Some(a), Some(b)) if a != b => Some(b < a),
        _ => None,
    };
    for (key, narrowed, a, b) in [
        ("min", min_narrowed, o.min, n.min),
        ("max", max_narrowed, o.max, n.max),
    ] {
        if let Some(narrowed) = narrowed {
            let what = if narrowed { "narrowed" } else { "widened" };
            push(
                narrowed,
                format!("range {what}: {key} {} -> {}", show(a), show(b)),
            );
        }
    }
    match (old.required, new.required) {
        (false, true) => push(true, "optional tag became required".to_owned()),
        (true, false) => push(false, "required tag became optional".to_owned()),
        _ => {}
    }
}
