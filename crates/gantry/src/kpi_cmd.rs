//! `gantry kpi show|explain|list`: the harmonized KPIs of any work unit,
//! line, area or site, computed from the historian over a period with the
//! ISO 22400 definitions of `gantry-kpi`, and explained down to every
//! interval and counter reading. The site model (for its `[kpi]` section)
//! comes from `--config` (its `model` and `standard`), from `--model`, or
//! is the built-in demo plant.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use gantry_kpi::Kpi;
use gantry_kpi::config::KpiConfig;
use gantry_kpi::period::{PERIOD_FORMS, PeriodSpec};
use gantry_kpi::report::{self, Report};
use gantry_model::PlantModel;

use crate::config::GantryConfig;
use crate::history_cmd::{self, HistoryLocation};

#[derive(Args, Debug, Clone)]
pub struct KpiLocation {
    #[command(flatten)]
    pub history: HistoryLocation,
    /// The site model with the `[kpi]` section (default: the config's
    /// model, or the built-in demo plant with `--data-dir`).
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum KpiFormat {
    #[default]
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum KpiCommand {
    /// OEE with availability, effectiveness and quality, and every other
    /// KPI, with their inputs.
    Show {
        /// A work unit, or a line, area or site path (rolled up).
        path: String,
        /// current-shift (default), last-shift, shift:YYYY-MM-DD/NAME,
        /// today, yesterday, day:YYYY-MM-DD, week, last-week, FROM..TO.
        #[arg(long, default_value = "current-shift")]
        period: String,
        #[arg(long, value_enum, default_value_t)]
        format: KpiFormat,
    },
    /// How one KPI was obtained: the formula, every input, and the state
    /// intervals and counter readings behind them (every minute of the
    /// period accounted for).
    Explain {
        path: String,
        /// oee, availability, effectiveness, quality, throughput,
        /// scrap_ratio, technical_efficiency, mtbf, mttr,
        /// energy_per_good_unit.
        #[arg(long, default_value = "oee")]
        kpi: String,
        #[arg(long, default_value = "current-shift")]
        period: String,
        #[arg(long, value_enum, default_value_t)]
        format: KpiFormat,
    },
    /// The work units, their calendars and state models.
    List,
}

/// The site's KPI definitions for a location.
fn definitions(location: &KpiLocation) -> anyhow::Result<KpiConfig> {
    let (model_path, standard) = match (&location.model, &location.history.config) {
        (Some(m), _) => (Some(m.clone()), None),
        (None, Some(config)) => {
            let c = GantryConfig::load(config)?;
            match c.model {
                Some(m) => (Some(m), c.standard),
                None => bail!(
                    "{}: names no model, so there are no KPI definitions (add model = \"site.toml\" or pass --model)",
                    config.display()
                ),
            }
        }
        (None, None) => (None, None),
    };
    let parsed = match &model_path {
        Some(path) => {
            let model = PlantModel::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            gantry_kpi::config::load(path, &model, standard.as_deref())
        }
        None => {
            let model = PlantModel::demo();
            gantry_kpi::config::parse(
                gantry_model::DEMO_PLANT_TOML,
                "demo-plant.toml",
                &model,
                &[],
            )
        }
    };
    let file = model_path
        .as_ref()
        .map_or("the built-in demo plant".to_string(), |p| {
            p.display().to_string()
        });
    match parsed {
        Ok(Some(cfg)) => Ok(cfg),
        Ok(None) => {
            bail!("{file} has no [kpi] section: no work units are defined (see docs/kpi.md)")
        }
        Err(errors) => {
            let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            bail!(
                "{file}: KPI definitions have {} error(s):\n{}",
                errors.len(),
                text.join("\n")
            )
        }
    }
}

fn now_ms() -> i64 {
    gantry_broker::message::now_ms() as i64
}

fn compute(
    location: &KpiLocation,
    path: &str,
    period: &str,
) -> anyhow::Result<(KpiConfig, Report)> {
    let spec = PeriodSpec::parse(period).map_err(anyhow::Error::msg)?;
    let config = definitions(location)?;
    let (mut reader, access) = history_cmd::open(&location.history)?;
    // Computing a KPI reads its inputs: the caller must be allowed to.
    for unit in config.units_under(path) {
        if let Some(topic) = unit
            .input_topics()
            .into_iter()
            .find(|t| !access.can_read(t))
        {
            bail!(
                "{} may not read {topic}, an input of {}'s KPIs (no subscribe permission on it)",
                access.who(),
                unit.path
            );
        }
    }
    let report = report::report(&config, reader.as_mut(), path, &spec, now_ms())
        .with_context(|| format!("KPIs of {path} for {period}"))?;
    Ok((config, report))
}

pub fn run(location: &KpiLocation, cmd: &KpiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KpiCommand::Show {
            path,
            period,
            format,
        } => {
            let (config, report) = compute(location, path, period)?;
            match format {
                KpiFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                KpiFormat::Text => {
                    let calendar = config
                        .units_under(path)
                        .first()
                        .and_then(|u| config.calendar(&u.calendar));
                    print!("{}", report::show_text(&report, calendar));
                }
            }
        }
        KpiCommand::Explain {
            path,
            kpi,
            period,
            format,
        } => {
            let Some(kpi) = Kpi::parse(kpi) else {
                let names: Vec<&str> = Kpi::ALL.iter().map(|k| k.name()).collect();
                bail!("--kpi {kpi}: not a KPI; use one of {}", names.join(", "));
            };
            let (config, report) = compute(location, path, period)?;
            match format {
                KpiFormat::Json => {
                    let value = gantry_kpi::formulas::compute_one(&report.elements, kpi);
                    let out = serde_json::json!({ "kpi": value, "report": report });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
                KpiFormat::Text => {
                    let calendar = config
                        .units_under(path)
                        .first()
                        .and_then(|u| config.calendar(&u.calendar));
                    print!("{}", report::explain_text(&report, kpi, calendar));
                }
            }
        }
        KpiCommand::List => {
            let config = definitions(location)?;
            for c in &config.calendars {
                let shifts: Vec<String> = c
                    .shifts()
                    .iter()
                    .map(|s| format!("{} {}-{}", s.name, s.start, s.end))
                    .collect();
                println!(
                    "calendar {} ({}): {}",
                    c.name(),
                    c.time_zone_name(),
                    shifts.join(", ")
                );
            }
            for u in &config.units {
                println!(
                    "{}  calendar {}, state model {}, ideal {:.1} units/min",
                    u.path,
                    u.calendar,
                    u.state_model.name,
                    60_000.0 / u.ideal_cycle_ms
                );
            }
            println!("periods: {PERIOD_FORMS}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
