//! Located errors from loading a plant model file.

use std::fmt;
use std::ops::Deref;

/// One problem in a plant model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// File name as given to [`PlantModel::parse`](super::PlantModel::parse).
    pub file: String,
    /// 1-based line; 0 when the error is not tied to a position (I/O).
    pub line: usize,
    /// 1-based column in characters; 0 when `line` is 0.
    pub column: usize,
    /// Dotted path of the offending field, e.g. `equipment[2].tags.temperature.max`;
    /// empty for TOML syntax errors and file-level errors.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

/// `file:line:column: field: message (hint: ...)`, leaving out what is absent.
impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelError {}

/// Every problem found in a plant model file, in file order. Never empty
/// when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelErrors(Vec<ModelError>);

/// One error per line.
impl fmt::Display for ModelErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelErrors {}

impl ModelErrors {
    pub(crate) fn new(errors: Vec<ModelError>) -> Self {
        ModelErrors(errors)
    }

    pub fn into_vec(self) -> Vec<ModelError> {
        self.0
    }
}

impl Deref for ModelErrors {
    type Target = [ModelError];

    fn deref(&self) -> &[ModelError] {
        &self.0
    }
}

impl IntoIterator for ModelErrors {
    type Item = ModelError;
    type IntoIter = std::vec::IntoIter<ModelError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ModelErrors {
    type Item = &'a ModelError;
    type IntoIter = std::slice::Iter<'a, ModelError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// 1-based line and character column of a byte offset (clamped to the source).
/// Line starts of a source text, so that many positions can be turned into
/// line and column without rescanning the text for each (a model with tens
/// of thousands of tags asks for one per field).
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Byte offset where each line starts; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            src.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self { starts }
    }

    /// 1-based line and column (in characters) of `offset` in `src`, the
    /// text this index was built from.
    pub fn pos(&self, src: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(src.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = 1 + src.as_bytes()[start..offset]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        (line, column)
    }
}

#[cfg(test)]
pub(crate) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let bytes = &src.as_bytes()[..offset.min(src.len())];
    let line_start = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = 1 + bytes.iter().filter(|&&b| b == b'\n').count();
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = 1 + bytes[line_start..]
        .iter()
        .filter(|&&b| b & 0xC0 != 0x80)
        .count();
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str, hint: Option<&str>) -> ModelError {
        ModelError {
            file: "plant.toml".into(),
            line,
            column: if line > 0 { 7 } else { 0 },
            field: field.into(),
            message: "bad".into(),
            hint: hint.map(str::to_owned),
        }
    }

    #[test]
    fn display_forms() {
        assert_eq!(
            error(14, "equipment[2].path", Some("use \"line-1\"")).to_string(),
            "plant.toml:14:7: equipment[2].path: bad (hint: use \"line-1\")"
        );
        assert_eq!(error(3, "", None).to_string(), "plant.toml:3:7: bad");
        assert_eq!(error(0, "", None).to_string(), "plant.toml: bad");
        let all = ModelErrors::new(vec![error(1, "a", None), error(2, "b", None)]);
        assert_eq!(
            all.to_string(),
            "plant.toml:1:7: a: bad\nplant.toml:2:7: b: bad"
        );
        assert_eq!(all.len(), 2);
        assert_eq!((&all).into_iter().count(), 2);
    }

    #[test]
    fn line_and_column() {
        let src = "ab\ncd\n\u{e9}x\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 1), (1, 2));
        assert_eq!(line_col(src, 3), (2, 1));
        assert_eq!(line_col(src, 4), (2, 2));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(src, 8), (3, 2));
        assert_eq!(line_col(src, 1000), (4, 1));
        assert_eq!(line_col("", 5), (1, 1));
        for offset in 0..src.len() + 3 {
            assert_eq!(LineIndex::new(src).pos(src, offset), line_col(src, offset));
        }
        assert_eq!(LineIndex::new("").pos("", 5), (1, 1));
    }
}
