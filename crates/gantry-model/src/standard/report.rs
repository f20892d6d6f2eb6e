//! The result of `gantry check` over one or many site models: every error,
//! a per-file summary and the site × class conformance matrix, as text or
//! JSON.

use std::collections::HashMap;
use std::fmt;

use super::{Instance, Standard};
use crate::plant::{ModelError, ModelErrors, PlantModel};

/// Which standard the sites were checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StandardInfo {
    pub file: String,
    pub name: String,
    pub version: String,
}

/// The outcome for one site model file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileReport {
    pub file: String,
    /// 0 when the file did not parse.
    pub equipment: usize,
    pub tags: usize,
    /// In file order.
    pub errors: Vec<ModelError>,
    /// Empty when the file did not parse or no standard was given.
    pub instances: Vec<Instance>,
}

impl FileReport {
    /// Instances without errors.
    pub fn conforming(&self) -> usize {
        self.instances.iter().filter(|i| i.conforming).count()
    }
}

/// The outcome of checking site models (optionally against a standard).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    pub standard: Option<StandardInfo>,
    pub files: Vec<FileReport>,
}

/// One row of the conformance matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MatrixRow {
    /// `enterprise/site`.
    pub site: String,
    /// Parallel to [`Matrix::classes`]: (conforming, total), `None` when the
    /// site has no instance of the class.
    pub cells: Vec<Option<(usize, usize)>>,
}

/// Site × class: conforming instances / total instances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Matrix {
    /// Classes as written in the site models, in order of first appearance.
    pub classes: Vec<String>,
    /// Sites in order of first appearance.
    pub rows: Vec<MatrixRow>,
}

/// A table: a header line, then one line per site; cells `conforming/total`
/// or `-`.
impl fmt::Display for Matrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cell = |c: &Option<(usize, usize)>| match c {
            Some((ok, total)) => format!("{ok}/{total}"),
            None => "-".to_owned(),
        };
        let first = self
            .rows
            .iter()
            .map(|r| r.site.len())
            .chain(["site".len()])
            .max()
            .unwrap_or(4);
        let widths: Vec<usize> = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, class)| {
                self.rows
                    .iter()
                    .filter_map(|r| r.cells.get(i))
                    .map(|c| cell(c).len())
                    .chain([class.len()])
                    .max()
                    .unwrap_or(1)
            })
            .collect();
        let mut line = format!("{:<first$}", "site");
        for (class, width) in self.classes.iter().zip(&widths) {
            line.push_str(&format!("  {class:<width$}"));
        }
        writeln!(f, "{}", line.trim_end())?;
        for row in &self.rows {
            let mut line = format!("{:<first$}", row.site);
            for (c, width) in row.cells.iter().zip(&widths) {
                line.push_str(&format!("  {:<width$}", cell(c)));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

impl CheckReport {
    /// Checks each parsed site model against `standard` (if any) and across
    /// files for equipment paths declared twice.
    pub fn build(
        standard: Option<&Standard>,
        sites: Vec<(String, Result<PlantModel, ModelErrors>)>,
    ) -> CheckReport {
        let mut files = Vec::with_capacity(sites.len());
        // Equipment path -> (file, line) of its first declaration.
        let mut seen: HashMap<String, (String, usize)> = HashMap::new();
        for (file, result) in sites {
            let model = match result {
                Ok(model) => model,
                Err(errors) => {
                    files.push(FileReport {
                        file,
                        equipment: 0,
                        tags: 0,
                        errors: errors.into_vec(),
                        instances: Vec::new(),
                    });
                    continue;
                }
            };
            let (mut errors, mut instances) = match standard {
                Some(standard) => {
                    let result = standard.check_site(&model);
                    (result.errors, result.instances)
                }
                None => (Vec::new(), Vec::new()),
            };
            for (index, equipment) in model.equipment().iter().enumerate() {
                let path = equipment.path.as_str();
                let Some(location) = model.location(index) else {
                    continue;
                };
                if let Some((first_file, first_line)) = seen.get(path) {
                    errors.push(ModelError {
                        file: model.file().to_owned(),
                        line: location.path.0,
                        column: location.path.1,
                        field: format!("{}.path", location.field),
                        message: format!(
                            "duplicate equipment path \"{path}\", already declared in {first_file} on line {first_line}"
                        ),
                        hint: Some("each equipment belongs to exactly one site model".to_owned()),
                    });
                    if let Some(instance) = instances.get_mut(index) {
                        instance.conforming = false;
                    }
                } else {
                    seen.insert(path.to_owned(), (model.file().to_owned(), location.path.0));
                }
            }
            errors.sort_by_key(|e| (e.line, e.column));
            files.push(FileReport {
                file,
                equipment: model.equipment().len(),
                tags: model.tag_count(),
                errors,
                instances,
            });
        }
        CheckReport {
            standard: standard.map(|s| StandardInfo {
                file: s.file().to_owned(),
                name: s.name.clone(),
                version: s.version.clone(),
            }),
            files,
        }
    }

    pub fn error_count(&self) -> usize {
        self.files.iter().map(|f| f.errors.len()).sum()
    }

    pub fn is_ok(&self) -> bool {
        self.error_count() == 0
    }

    /// The conformance matrix over every instance of every file.
    pub fn matrix(&self) -> Matrix {
        let mut matrix = Matrix::default();
        for instance in self.files.iter().flat_map(|f| &f.instances) {
            let column = match matrix.classes.iter().position(|c| *c == instance.class) {
                Some(column) => column,
                None => {
                    matrix.classes.push(instance.class.clone());
                    for row in &mut matrix.rows {
                        row.cells.push(None);
                    }
                    matrix.classes.len() - 1
                }
            };
            let row = match matrix.rows.iter().position(|r| r.site == instance.site) {
                Some(row) => row,
                None => {
                    matrix.rows.push(MatrixRow {
                        site: instance.site.clone(),
                        cells: vec![None; matrix.classes.len()],
                    });
                    matrix.rows.len() - 1
                }
            };
            if let Some(cell) = matrix
                .rows
                .get_mut(row)
                .and_then(|r| r.cells.get_mut(column))
            {
                let (ok, total) = cell.unwrap_or((0, 0));
                *cell = Some((ok + usize::from(instance.conforming), total + 1));
            }
        }
        matrix
    }

    /// The report as one JSON document (see `docs/standard.md`).
    pub fn to_json(&self) -> String {
        use serde_json::{Map, Value, json};
        let errors: Vec<Value> = self
            .files
            .iter()
            .flat_map(|f| &f.errors)
            .map(|e| {
                json!({
                    "file": e.file,
                    "line": e.line,
                    "column": e.column,
                    "field": e.field,
                    "message": e.message,
                    "hint": e.hint,
                })
            })
            .collect();
        let sites: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "file": f.file,
                    "ok": f.errors.is_empty(),
                    "equipment": f.equipment,
                    "tags": f.tags,
                    "errors": f.errors.len(),
                    "instances": f.instances.len(),
                    "conforming": f.conforming(),
                })
            })
            .collect();
        let matrix = self.matrix();
        let rows: Vec<Value> = matrix
            .rows
            .iter()
            .map(|row| {
                let mut cells = Map::new();
                for (class, cell) in matrix.classes.iter().zip(&row.cells) {
                    if let Some((ok, total)) = cell {
                        cells.insert(class.clone(), json!({"conforming": ok, "total": total}));
                    }
                }
                json!({"site": row.site, "classes": cells})
            })
            .collect();
        json!({
            "ok": self.is_ok(),
            "standard": self.standard.as_ref().map(|s| json!({
                "file": s.file,
                "name": s.name,
                "version": s.version,
            })),
            "errors": errors,
            "sites": sites,
            "matrix": {"classes": matrix.classes, "rows": rows},
        })
        .to_string()
    }
}
