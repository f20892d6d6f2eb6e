//! [`TomlChecker`]: the error-collecting helpers every section parser of a
//! site model file shares (the Modbus devices, the OPC UA servers): typed
//! field reads that report a wrong type or range at the value's position,
//! unknown fields with a "did you mean", arrays of tables, and
//! `file:line:col` errors from a [`LineIndex`] built once per file.

use toml::de::{DeTable, DeValue};

use crate::plant::{Equipment, LineIndex, ModelError, PlantModel, TagSpec};
use crate::suggest::closest;

/// Collects [`ModelError`]s for one source file.
#[derive(Debug)]
pub struct TomlChecker<'s> {
    pub src: &'s str,
    pub file: &'s str,
    pub errors: Vec<ModelError>,
    lines: LineIndex,
}

impl<'s> TomlChecker<'s> {
    pub fn new(src: &'s str, file: &'s str) -> Self {
        Self {
            src,
            file,
            errors: Vec::new(),
            lines: LineIndex::new(src),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn pos(&self, offset: usize) -> (usize, usize) {
        self.lines.pos(self.src, offset)
    }

    pub fn line_of(&self, offset: usize) -> usize {
        self.pos(offset).0
    }

    pub fn error(
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

    /// Like [`Self::error`], at the first character inside the quoted string
    /// value starting at `offset` (so the column points at the text).
    pub fn error_inside(
        &mut self,
        offset: usize,
        field: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let at = self.inside(offset);
        self.error(at, field, message, hint);
    }

    /// The first character inside a quoted string value starting at `offset`.
    pub fn inside(&self, offset: usize) -> usize {
        match self.src.as_bytes().get(offset) {
            Some(b'"' | b'\'') => offset + 1,
            _ => offset,
        }
    }

    /// Reports every key of `table` not in `allowed`, with a hint.
    pub fn unknown_fields(&mut self, table: &DeTable<'_>, prefix: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
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
                &format!("{prefix}.{name}"),
                "unknown field",
                Some(hint),
            );
        }
    }

    /// An optional string field and where its value starts.
    pub fn string<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        key: &str,
        field: &str,
    ) -> Option<(&'t str, usize)> {
        let item = table.get(key)?;
        match item.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), item.span().start)),
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

    /// An optional integer field within `min..=max`.
    pub fn integer(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        min: i64,
        max: i64,
        hint: Option<&str>,
    ) -> Option<(i64, usize)> {
        let item = table.get(key)?;
        let at = item.span().start;
        let DeValue::Integer(i) = item.get_ref() else {
            self.error(
                at,
                field,
                format!("must be an integer, got {}", item.get_ref().type_str()),
                None,
            );
            return None;
        };
        match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some((n, at)),
            Ok(n) => {
                self.error(
                    at,
                    field,
                    format!("{n} is out of range {min}..={max}"),
                    hint.map(str::to_owned),
                );
                None
            }
            Err(_) => {
                self.error(at, field, "integer out of range", None);
                None
            }
        }
    }

    /// An optional finite number (integer or float).
    pub fn number(&mut self, table: &DeTable<'_>, key: &str, field: &str) -> Option<(f64, usize)> {
        let item = table.get(key)?;
        let at = item.span().start;
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|i| i as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                self.error(
                    at,
                    field,
                    format!("must be a number, got {}", other.type_str()),
                    None,
                );
                return None;
            }
        };
        match parsed {
            Some(n) if n.is_finite() => Some((n, at)),
            _ => {
                self.error(at, field, "must be a finite number", None);
                None
            }
        }
    }

    /// The model's equipment at `path`; otherwise an error at `at` with a
    /// did-you-mean among the declared equipment.
    pub fn model_equipment<'m>(
        &mut self,
        model: &'m PlantModel,
        path: &str,
        at: usize,
        field: &str,
    ) -> Option<&'m Equipment> {
        if let Some(e) = model.equipment_at(path) {
            return Some(e);
        }
        let candidates: Vec<&str> = model.equipment().iter().map(|e| e.path.as_str()).collect();
        let hint = closest(path, &candidates)
            .map(|s| format!("did you mean \"{s}\"?"))
            .unwrap_or_else(|| "an equipment path declared in [[equipment]]".to_owned());
        self.error(
            at,
            field,
            format!("no equipment \"{path}\" in the model"),
            Some(hint),
        );
        None
    }

    /// The tag `path` of `equipment` (looked up in the model's index, not
    /// by scanning); otherwise an error at `at` naming the nearest tags.
    pub fn equipment_tag<'m>(
        &mut self,
        model: &'m PlantModel,
        equipment: &Equipment,
        path: &str,
        at: usize,
        field: &str,
    ) -> Option<&'m TagSpec> {
        let topic = format!("{}/{path}", equipment.path.as_str());
        if let Some((owner, tag)) = model.tag_for_topic(&topic)
            && owner.path == equipment.path
        {
            return Some(tag);
        }
        let names: Vec<&str> = equipment.tags.iter().map(|t| t.path.as_str()).collect();
        let hint = match closest(path, &names) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None if names.is_empty() => "the equipment declares no tags".to_owned(),
            None => format!("tags of this equipment: {}", names.join(", ")),
        };
        self.error(
            at,
            field,
            format!(
                "no tag \"{path}\" under equipment \"{}\" in the model",
                equipment.path.as_str()
            ),
            Some(hint),
        );
        None
    }

    /// The tables of an array-of-tables field (`[[key]]`) with their index
    /// and position; anything else is reported.
    pub fn array_of_tables<'t, 'i>(
        &mut self,
        table: &'t DeTable<'i>,
        key: &str,
        field: &str,
    ) -> Vec<(usize, &'t DeTable<'i>, usize)> {
        let Some(item) = table.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(array) = item.get_ref() else {
            self.error(
                item.span().start,
                field,
                format!(
                    "must be an array of tables ([[{field}]]), got {}",
                    item.get_ref().type_str()
                ),
                None,
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(array.len());
        for (index, element) in array.iter().enumerate() {
            match element.get_ref() {
                DeValue::Table(t) => out.push((index, t, element.span().start)),
                other => self.error(
                    element.span().start,
                    &format!("{field}[{index}]"),
                    format!("must be a table, got {}", other.type_str()),
                    None,
                ),
            }
        }
        out
    }
}
