//! `gantry audit verify|tail|export`: check the audit log's hash chain and
//! signed checkpoints, show the latest records, export them. Read-only: these
//! commands work on a copy of the data directory and never take the lock.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_security::audit;
use serde_json::Value;

use crate::config::GantryConfig;

/// Which data directory's audit log (`<data_dir>/audit`).
#[derive(Args, Debug, Clone)]
pub struct AuditLocation {
    /// The config file whose `data_dir` to use.
    #[arg(long, short, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// The data directory itself.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl AuditLocation {
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match (&self.config, &self.data_dir) {
            (_, Some(dir)) => Ok(dir.clone()),
            (Some(config), None) => Ok(GantryConfig::load(config)?.data_dir),
            (None, None) => bail!("say which data directory: --config FILE or --data-dir DIR"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// One line per record for people.
    #[default]
    Text,
    /// A JSON array.
    Json,
    /// One JSON record per line.
    Jsonl,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A JSON array of the records.
    #[default]
    Json,
    /// The log's lines byte for byte (a copy that still verifies).
    Jsonl,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; name the first
    /// broken record. Exit status 1 when the log is broken.
    Verify {
        #[command(flatten)]
        location: AuditLocation,
        #[arg(long, value_enum, default_value_t)]
        format: VerifyFormat,
    },
    /// Show the latest records.
    Tail {
        #[command(flatten)]
        location: AuditLocation,
        /// How many records.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        lines: usize,
        #[arg(long, value_enum, default_value_t)]
        format: TailFormat,
    },
    /// Export every record (for a SIEM or an auditor).
    Export {
        #[command(flatten)]
        location: AuditLocation,
        #[arg(long, value_enum, default_value_t)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

impl AuditCommand {
    fn location(&self) -> &AuditLocation {
        match self {
            AuditCommand::Verify { location, .. }
            | AuditCommand::Tail { location, .. }
            | AuditCommand::Export { location, .. } => location,
        }
    }
}

/// Runs `cmd` on the data directory its `--config`/`--data-dir` names.
pub fn run_command(cmd: &AuditCommand) -> anyhow::Result<ExitCode> {
    let data_dir = cmd.location().data_dir()?;
    run(cmd, &data_dir)
}

/// Runs `cmd` on the audit log of `data_dir`.
pub fn run(cmd: &AuditCommand, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let dir = data_dir.join("audit");
    match cmd {
        AuditCommand::Verify { format, .. } => verify(&dir, *format),
        AuditCommand::Tail { lines, format, .. } => {
            let records = audit::tail_records(&dir, *lines)?;
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            match format {
                TailFormat::Text => {
                    for r in &records {
                        writeln!(out, "{}", text_line(r))?;
                    }
                }
                TailFormat::Json => write_array(&mut out, &records)?,
                TailFormat::Jsonl => {
                    for r in &records {
                        writeln!(out, "{r}")?;
                    }
                }
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export { format, output, .. } => {
            let mut out: Box<dyn Write> = match output {
                Some(path) => Box::new(BufWriter::new(
                    File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let count = match format {
                ExportFormat::Jsonl => audit::copy_lines(&dir, &mut out)?,
                ExportFormat::Json => {
                    let records = audit::read_records(&dir)?;
                    write_array(&mut out, &records)?;
                    records.len() as u64
                }
            };
            out.flush().context("cannot write the export")?;
            if let Some(path) = output {
                eprintln!("exported {count} audit records to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(dir: &Path, format: VerifyFormat) -> anyhow::Result<ExitCode> {
    let report = audit::verify(dir)?;
    match format {
        VerifyFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        VerifyFormat::Text => match &report.first_problem {
            None => {
                println!(
                    "audit log OK: {} records, {} checkpoints",
                    report.records, report.checkpoints
                );
                if report.last_seq > report.last_checkpoint_seq {
                    println!(
                        "note: records after {} are not yet covered by a signed checkpoint",
                        report.last_checkpoint_seq
                    );
                }
                if report.incomplete_tail {
                    println!(
                        "note: the log ends in an incomplete line (a write in progress, or a crash; cut at the next start)"
                    );
                }
            }
            Some(problem) => {
                println!("audit log BROKEN at {problem}");
                println!(
                    "({} records before it verified; {} valid checkpoints)",
                    report.records, report.checkpoints
                );
            }
        },
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_array(out: &mut dyn Write, records: &[Value]) -> std::io::Result<()> {
    writeln!(out, "[")?;
    for (i, r) in records.iter().enumerate() {
        let comma = if i + 1 < records.len() { "," } else { "" };
        writeln!(out, "{r}{comma}")?;
    }
    writeln!(out, "]")
}

/// `<ts_utc> #<seq> <event_id> <actor> [from <ip>] <action> [<target>] OK|FAILED[: reason]`
fn text_line(r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{} #{} {} {}",
        s(&r["ts_utc"]),
        r["seq"],
        s(&r["event_id"]),
        s(&r["actor"]["id"])
    );
    if let Some(ip) = r["source"]["ip"].as_str() {
        line.push_str(&format!(" from {ip}"));
    }
    line.push_str(&format!(" {}", s(&r["action"])));
    if let Some(target) = r["target"].as_str() {
        line.push_str(&format!(" {target}"));
    }
    let ok = r["outcome"]["success"].as_bool() == Some(true);
    line.push_str(if ok { " OK" } else { " FAILED" });
    if let Some(reason) = r["outcome"]["reason"].as_str() {
        line.push_str(&format!(": {reason}"));
    }
    line
}
