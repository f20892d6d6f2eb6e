//! `report`: turns the JSON result lines of a benchmark run (from `--json`, or
//! written by `bench/run.sh` itself) into a Markdown table with, per scenario
//! label and headline metric, the median of every broker's runs, the ratio of
//! the first broker to the second, and whether a target is met.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// A goal for one metric: ratios compare the first broker with the second,
/// `min`/`max` bound the first broker's own median.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub label: String,
    pub metric: String,
    #[serde(default)]
    pub ratio_min: Option<f64>,
    #[serde(default)]
    pub ratio_max: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

pub struct ReportSpec {
    pub inputs: Vec<PathBuf>,
    pub targets: Option<PathBuf>,
    /// Column order; the ratio is first / second.
    pub brokers: Vec<String>,
    pub title: String,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn thousands(v: f64) -> String {
    let neg = v < 0.0;
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg { format!("-{out}") } else { out }
}

fn format_value(metric: &str, v: f64) -> String {
    let mib = 1024.0 * 1024.0;
    if metric.ends_with("_bytes") {
        if v.abs() >= mib {
            format!("{:.1} MiB", v / mib)
        } else if v.abs() >= 1024.0 {
            format!("{:.1} KiB", v / 1024.0)
        } else {
            format!("{v:.0} B")
        }
    } else if metric.starts_with("bytes_per") {
        format!("{} B", thousands(v))
    } else if metric.ends_with("_us") || metric.ends_with("_ms") {
        let unit = if metric.ends_with("_us") { "µs" } else { "ms" };
        if v.abs() >= 100.0 {
            format!("{} {unit}", thousands(v))
        } else {
            format!("{v:.1} {unit}")
        }
    } else if metric.ends_with("_per_s") {
        format!("{}/s", thousands(v))
    } else if metric.ends_with("_pct") {
        format!("{v:.0} %")
    } else {
        thousands(v)
    }
}

/// Which way is better: ↑ for rates, nothing for utilisation (context, not a
/// score), ↓ for everything else.
fn direction(metric: &str) -> &'static str {
    if metric.ends_with("_per_s") {
        "↑"
    } else if metric.ends_with("_pct") {
        ""
    } else {
        "↓"
    }
}

/// Builds the Markdown report.
pub fn build(spec: &ReportSpec) -> Result<String> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut values: HashMap<(String, String, String), Vec<f64>> = HashMap::new();
    for path in &spec.inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || !line.starts_with('{') {
                continue;
            }
            let rec: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
            let label = rec["label"].as_str().unwrap_or("?").to_string();
            let broker = rec["broker"].as_str().unwrap_or("?").to_string();
            let Some(headline) = rec["headline"].as_array() else {
                continue;
            };
            for metric in headline.iter().filter_map(Value::as_str) {
                let row = (label.clone(), metric.to_string());
                if !rows.contains(&row) {
                    rows.push(row.clone());
                }
                if let Some(v) = rec[metric].as_f64() {
                    values
                        .entry((row.0, row.1, broker.clone()))
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    let targets: Vec<Target> = match &spec.targets {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("bad targets in {}", p.display()))?
        }
        None => Vec::new(),
    };

    let first = spec.brokers.first().map(String::as_str).unwrap_or("gantry");
    let second = spec
        .brokers
        .get(1)
        .map(String::as_str)
        .unwrap_or("mosquitto");
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n", spec.title);
    let mut header = String::from("| Scenario | Metric |");
    let mut rule = String::from("|---|---|");
    for b in &spec.brokers {
        let _ = write!(header, " {b} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(
        out,
        "{header} {first}/{second} | better | target | met |\n{rule}---:|:---:|---|:---:|"
    );
    let mut runs = Vec::new();
    for (label, metric) in &rows {
        let mut line = format!("| {label} | {metric} |");
        let mut medians = Vec::new();
        for b in &spec.brokers {
            let vs = values.get(&(label.clone(), metric.clone(), b.clone()));
            if let Some(vs) = vs {
                runs.push(vs.len());
            }
            let m = vs.and_then(|v| median(v));
            medians.push(m);
            let _ = write!(
                line,
                " {} |",
                m.map(|v| format_value(metric, v))
                    .unwrap_or_else(|| "n/a".into())
            );
        }
        let a = medians.first().copied().flatten();
        let b = medians.get(1).copied().flatten();
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        let _ = write!(
            line,
            " {} | {} |",
            ratio
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
            direction(metric)
        );
        let target = targets
            .iter()
            .find(|t| &t.label == label && &t.metric == metric);
        match target {
            None => line.push_str(" | |"),
            Some(t) => {
                let mut want = Vec::new();
                let mut met = true;
                let mut known = true;
                if let Some(x) = t.ratio_min {
                    want.push(format!("≥ {x}× {second}"));
                    match ratio {
                        Some(r) => met &= r >= x,
                        None => known = false,
                    }
                }
                if let Some(x) = t.ratio_max {
                    want.push(format!("≤ {x}× {second}"));
                    match (a, b) {
                        (Some(a), Some(b)) => met &= a <= x * b,
                        _ => known = false,
                    }
                }
                if let Some(x) = t.min {
                    want.push(format!("≥ {}", format_value(metric, x)));
                    match a {
                        Some(a) => met &= a >= x,
                        None => known = false,
                    }
                }
                if let Some(x) = t.max {
                    want.push(format!("≤ {}", format_value(metric, x)));
                    match a {
                        Some(a) => met &= a <= x,
                        None => known = false,
                    }
                }
                let verdict = if !known {
                    "n/a"
                } else if met {
                    "yes"
                } else {
                    "**no**"
                };
                let _ = write!(line, " {} | {verdict} |", want.join(", "));
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let (lo, hi) = (
        runs.iter().min().copied().unwrap_or(0),
        runs.iter().max().copied().unwrap_or(0),
    );
    let _ = writeln!(
        out,
        "\nEach cell is the median of {} run(s). Ratio = {first}/{second}; ↑ higher is better, ↓ lower is better.",
        if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        }
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(format_value("msgs_per_s", 12345.0), "12,345/s");
        assert_eq!(format_value("rss_delta_bytes", 3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(format_value("latency_p99_us", 42.25), "42.2 µs");
    }

    #[test]
    fn builds_table_with_targets() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("glg-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let input = dir.join("raw.jsonl");
        let lines = [
            r#"{"label":"p2p-qos1","broker":"gantry","msgs_per_s":300,"lost":0,"headline":["msgs_per_s","lost"]}"#,
            r#"{"label":"p2p-qos1","broker":"gantry","msgs_per_s":310,"lost":0,"headline":["msgs_per_s","lost"]}"#,
            r#"{"label":"p2p-qos1","broker":"gantry","msgs_per_s":290,"lost":0,"headline":["msgs_per_s","lost"]}"#,
            r#"{"label":"p2p-qos1","broker":"mosquitto","msgs_per_s":100,"lost":0,"headline":["msgs_per_s","lost"]}"#,
            "not json is skipped",
        ];
        std::fs::write(&input, lines.join("\n"))?;
        let targets = dir.join("targets.json");
        std::fs::write(
            &targets,
            r#"[{"label":"p2p-qos1","metric":"msgs_per_s","ratio_min":3.0}]"#,
        )?;
        let md = build(&ReportSpec {
            inputs: vec![input],
            targets: Some(targets),
            brokers: vec!["gantry".into(), "mosquitto".into()],
            title: "t".into(),
        })?;
        std::fs::remove_dir_all(&dir)?;
        assert!(
            md.contains(
                "| p2p-qos1 | msgs_per_s | 300/s | 100/s | 3.00× | ↑ | ≥ 3× mosquitto | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| p2p-qos1 | lost | 0 | 0 | – | ↓ | | |"),
            "{md}"
        );
        Ok(())
    }
}
