//! Export: the raw values of every readable series matching a filter in a
//! range, streamed series by series as CSV or as one JSON array, with
//! progress. Nothing but the current row is held in memory.
//!
//! Both formats have the same fields: `topic`, `ts_ms`, `time` (RFC 3339
//! UTC with milliseconds), `value` and `quality`. CSV fields are quoted
//! when they contain a comma, a quote, a line break or surrounding spaces.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use gantry_model::{Quality, Value};
use serde::Serialize;

use crate::access::ReadAccess;
use crate::error::HistorianError;
use crate::point::{PointRow, serialize_quality, serialize_value};
use crate::read::HistoryRead;
use crate::timefmt::format_rfc3339_ms;

/// How often (in rows) progress is reported.
pub const PROGRESS_EVERY: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// `topic,ts_ms,time,value,quality` with a header line.
    Csv,
    /// One JSON array of `{"topic", "ts_ms", "time", "value", "quality"}`.
    Json,
}

impl ExportFormat {
    pub const fn name(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "csv" => Ok(ExportFormat::Csv),
            "json" => Ok(ExportFormat::Json),
            _ => Err(format!("unknown export format {s:?}: expected csv or json")),
        }
    }
}

/// One exported row, as JSON.
#[derive(Serialize)]
struct JsonRow<'a> {
    topic: &'a str,
    ts_ms: i64,
    time: String,
    #[serde(serialize_with = "value_ref")]
    value: &'a Value,
    #[serde(serialize_with = "quality_ref")]
    quality: &'a Quality,
}

fn value_ref<S: serde::Serializer>(v: &&Value, s: S) -> Result<S::Ok, S::Error> {
    serialize_value(v, s)
}

fn quality_ref<S: serde::Serializer>(q: &&Quality, s: S) -> Result<S::Ok, S::Error> {
    serialize_quality(q, s)
}

/// Writes the raw values of the readable series matching `filter` in
/// `[from_ms, to_ms)` to `out`, series by series (by topic) in time order.
/// `progress(done, total)` is called every [`PROGRESS_EVERY`] rows and once
/// at the end; `total` is counted up front. Returns the rows written.
#[allow(clippy::too_many_arguments)]
pub fn export(
    reader: &mut dyn HistoryRead,
    access: &dyn ReadAccess,
    filter: &str,
    from_ms: i64,
    to_ms: i64,
    format: ExportFormat,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, HistorianError> {
    super::check_range(from_ms, to_ms)?;
    let series = super::readable_series(reader, access, filter)?;
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let mut total = if ids.is_empty() {
        0
    } else {
        reader.count_points(&ids, from_ms, to_ms)?
    };
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut done = 0u64;
    let mut failed: Option<std::io::Error> = None;
    match format {
        ExportFormat::Csv => w.write_all(b"topic,ts_ms,time,value,quality\n"),
        ExportFormat::Json => w.write_all(b"["),
    }
    .map_err(HistorianError::Output)?;
    for s in &series {
        let topic_csv = csv_field(&s.topic);
        reader.points(s.id, from_ms, to_ms, &mut |p: PointRow| {
            let written = match format {
                ExportFormat::Csv => write_csv_row(&mut w, &topic_csv, &p),
                ExportFormat::Json => write_json_row(&mut w, &s.topic, &p, done == 0),
            };
            if let Err(e) = written {
                failed = Some(e);
                return false;
            }
            done += 1;
            if done.is_multiple_of(PROGRESS_EVERY) {
                progress(done, total.max(done));
            }
            true
        })?;
        if let Some(e) = failed.take() {
            return Err(HistorianError::Output(e));
        }
    }
    match format {
        ExportFormat::Csv => Ok(()),
        ExportFormat::Json if done == 0 => w.write_all(b"]\n"),
        ExportFormat::Json => w.write_all(b"\n]\n"),
    }
    .and_then(|()| w.flush())
    .map_err(HistorianError::Output)?;
    total = total.max(done);
    progress(done, total);
    Ok(done)
}

fn write_csv_row(w: &mut dyn Write, topic: &str, p: &PointRow) -> std::io::Result<()> {
    let time = format_rfc3339_ms(p.ts_ms);
    let quality = p.quality.as_str();
    match &p.value {
        Value::Text(t) => writeln!(w, "{topic},{},{time},{},{quality}", p.ts_ms, csv_field(t)),
        v => writeln!(w, "{topic},{},{time},{v},{quality}", p.ts_ms),
    }
}

fn write_json_row(
    w: &mut dyn Write,
    topic: &str,
    p: &PointRow,
    first: bool,
) -> std::io::Result<()> {
    w.write_all(if first { b"\n" } else { b",\n" })?;
    let row = JsonRow {
        topic,
        ts_ms: p.ts_ms,
        time: format_rfc3339_ms(p.ts_ms),
        value: &p.value,
        quality: &p.quality,
    };
    serde_json::to_writer(w, &row).map_err(std::io::Error::from)
}

/// A CSV field, quoted (with quotes doubled) when it needs to be.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    let needs = s.contains([',', '"', '\n', '\r'])
        || s.starts_with([' ', '\t'])
        || s.ends_with([' ', '\t']);
    if needs {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::FullAccess;
    use crate::query::mem::MemStore;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("CSV".parse::<ExportFormat>(), Ok(ExportFormat::Csv));
        assert_eq!("json".parse::<ExportFormat>(), Ok(ExportFormat::Json));
        assert!(
            "xml"
                .parse::<ExportFormat>()
                .unwrap_err()
                .contains("csv or json")
        );
    }

    #[test]
    fn progress_every_ten_thousand_rows_and_at_the_end() {
        let mut s = MemStore::default();
        for i in 0..25_000 {
            s.push("e/x", i, Value::Int(i), Quality::Good);
        }
        let mut calls = Vec::new();
        let mut out = Vec::new();
        let n = export(
            &mut s,
            &FullAccess,
            "e/#",
            0,
            1_000_000,
            ExportFormat::Json,
            &mut out,
            &mut |d, t| calls.push((d, t)),
        )
        .expect("export");
        assert_eq!(n, 25_000);
        assert_eq!(
            calls,
            vec![(10_000, 25_000), (20_000, 25_000), (25_000, 25_000)]
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(parsed.as_array().map(Vec::len), Some(25_000));
    }

    #[test]
    fn an_empty_export_is_valid() {
        let mut s = MemStore::default();
        for format in [ExportFormat::Csv, ExportFormat::Json] {
            let mut out = Vec::new();
            let n = export(
                &mut s,
                &FullAccess,
                "none/#",
                0,
                10,
                format,
                &mut out,
                &mut |_, _| {},
            )
            .expect("export");
            assert_eq!(n, 0);
            let text = String::from_utf8(out).expect("utf8");
            match format {
                ExportFormat::Csv => assert_eq!(text, "topic,ts_ms,time,value,quality\n"),
                ExportFormat::Json => assert_eq!(text, "[]\n"),
            }
        }
    }

    /// A writer that fails after some bytes.
    struct Failing(usize);
    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_reported() {
        let mut s = MemStore::default();
        for i in 0..100_000 {
            s.push("e/x", i, Value::Int(i), Quality::Good);
        }
        let e = export(
            &mut s,
            &FullAccess,
            "e/x",
            0,
            1_000_000,
            ExportFormat::Csv,
            &mut Failing(1_000),
            &mut |_, _| {},
        )
        .expect_err("fails");
        assert!(matches!(e, HistorianError::Output(_)), "{e}");
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
