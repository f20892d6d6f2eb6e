//! `gantry check`: validate plant (site) models (with their `[[modbus]]`
//! devices and `[[opcua]]` servers), alone or against an enterprise standard, and compare two
//! versions of a standard.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use gantry_model::PlantModel;
use gantry_model::standard::{CheckReport, Standard, compat};

/// Arguments of `gantry check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Site model files to check.
    #[arg(value_name = "SITE", required_unless_present = "compat")]
    pub sites: Vec<PathBuf>,
    /// Check the sites against this enterprise standard.
    #[arg(long, value_name = "STANDARD")]
    pub standard: Option<PathBuf>,
    /// Report breaking and non-breaking changes between two standard files.
    #[arg(
        long,
        num_args = 2,
        value_names = ["OLD", "NEW"],
        conflicts_with_all = ["sites", "standard"]
    )]
    pub compat: Option<Vec<PathBuf>>,
    /// Also try a TCP connection to every `[[modbus]]` device (each bounded
    /// by its `timeout_ms`) and report the unreachable ones as errors.
    #[arg(long)]
    pub probe: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Output format of `gantry check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Errors on stderr, summaries and the matrix on stdout.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Runs `gantry check`; the exit status is non-zero on any error or
/// breaking change.
pub fn run(args: &CheckArgs) -> ExitCode {
    if let Some([old, new]) = args.compat.as_deref() {
        return run_compat(old, new, args.format);
    }
    let standard = match &args.standard {
        Some(path) => match Standard::load(path) {
            Ok(standard) => Some(standard),
            Err(errors) => {
                for e in errors.iter() {
                    eprintln!("{e}");
                }
                eprintln!(
                    "{}: {} error(s) in the standard",
                    path.display(),
                    errors.len()
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let sites: Vec<_> = args
        .sites
        .iter()
        .map(|path| (path.display().to_string(), PlantModel::load(path)))
        .collect();
    // `[[modbus]]` devices are checked against each model that parsed.
    let modbus: Vec<_> = args
        .sites
        .iter()
        .zip(&sites)
        .map(|(path, (_, model))| match model {
            Ok(model) => {
                let mut errors = gantry_connectors::modbus::check_file(path, model, args.probe);
                errors.extend(gantry_opcua::check_file(path, model));
                // `[kpi]`: calendars, work units, state models (the
                // standard's too).
                if let Err(kpi) = gantry_kpi::config::load(path, model, args.standard.as_deref()) {
                    errors.extend(kpi);
                }
                // A tag has one source, whichever protocol feeds it.
                if let (Ok(modbus), Ok(opcua)) = (
                    gantry_connectors::modbus::load_devices(path, model),
                    gantry_opcua::load_servers(path, model),
                ) {
                    errors.extend(crate::sources::conflicting_feeds(&modbus, &opcua));
                }
                errors
            }
            Err(_) => Vec::new(),
        })
        .collect();
    let mut report = CheckReport::build(standard.as_ref(), sites);
    for (file, errors) in report.files.iter_mut().zip(modbus) {
        file.errors.extend(errors);
        file.errors.sort_by_key(|e| (e.line, e.column));
    }
    match args.format {
        Format::Json => println!("{}", report.to_json()),
        Format::Text => print_text(&report),
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_text(report: &CheckReport) {
    for file in &report.files {
        for e in &file.errors {
            eprintln!("{e}");
        }
        let conformance = match &report.standard {
            Some(standard) if !file.instances.is_empty() => format!(
                "; {}/{} equipment conform to {} {}",
                file.conforming(),
                file.instances.len(),
                standard.name,
                standard.version
            ),
            _ => String::new(),
        };
        if file.errors.is_empty() {
            println!(
                "{}: ok ({} equipment, {} tags{conformance})",
                file.file, file.equipment, file.tags
            );
        } else {
            eprintln!("{}: {} error(s){conformance}", file.file, file.errors.len());
        }
    }
    let matrix = report.matrix();
    if report.standard.is_some() && (report.files.len() > 1 || matrix.rows.len() > 1) {
        println!("\nconformance (conforming/total equipment per class):");
        print!("{matrix}");
    }
}

fn run_compat(old: &Path, new: &Path, format: Format) -> ExitCode {
    let load = |path: &Path| match Standard::load(path) {
        Ok(standard) => Some(standard),
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            None
        }
    };
    let (old, new) = (load(old), load(new));
    let (Some(old), Some(new)) = (old, new) else {
        return ExitCode::FAILURE;
    };
    let report = compat(&old, &new);
    match format {
        Format::Json => println!("{}", report.to_json()),
        Format::Text => {
            println!(
                "{} {} -> {} {}: {} breaking, {} non-breaking change(s)",
                old.name,
                old.version,
                new.name,
                new.version,
                report.breaking.len(),
                report.non_breaking.len()
            );
            for change in &report.breaking {
                println!("breaking: {change}");
            }
            for change in &report.non_breaking {
                println!("non-breaking: {change}");
            }
        }
    }
    if report.breaking.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
