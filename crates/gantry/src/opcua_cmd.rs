//! `gantry opcua trust|certs`: manage the OPC UA trust list in
//! `<data_dir>/opcua/pki` (server certificates the connector rejected land in
//! `rejected/`; trusting one moves it to `trusted/`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::GantryConfig;

/// Which data directory's PKI.
#[derive(Args, Debug, Clone)]
pub struct PkiLocation {
    /// The config file whose `data_dir` to use.
    #[arg(long, short, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// The data directory itself.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl PkiLocation {
    fn pki(&self) -> anyhow::Result<PathBuf> {
        let data_dir = match (&self.config, &self.data_dir) {
            (_, Some(dir)) => dir.clone(),
            (Some(config), None) => GantryConfig::load(config)?.data_dir,
            (None, None) => bail!("say which data directory: --config FILE or --data-dir DIR"),
        };
        Ok(gantry_opcua::pki::pki_dir(&data_dir))
    }
}

#[derive(Subcommand, Debug)]
pub enum OpcuaCommand {
    /// Trust rejected server certificates (move them from rejected/ to
    /// trusted/); the connector picks them up on its next connection attempt.
    Trust {
        #[command(flatten)]
        location: PkiLocation,
        /// A thumbprint (or its start), a file name part or a common name of
        /// a rejected certificate.
        #[arg(
            value_name = "NAME",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        name: Option<String>,
        /// Trust every rejected certificate.
        #[arg(long)]
        all: bool,
    },
    /// List trusted and rejected server certificates with their thumbprints,
    /// and Gantry's own application certificate.
    Certs {
        #[command(flatten)]
        location: PkiLocation,
    },
}

pub fn run(cmd: &OpcuaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OpcuaCommand::Trust {
            location,
            name,
            all,
        } => {
            let pki = location.pki()?;
            let which = if *all { None } else { name.as_deref() };
            let trusted = gantry_opcua::pki::trust(&pki, which).map_err(anyhow::Error::msg)?;
            if trusted.is_empty() {
                let rejected = gantry_opcua::pki::list(&pki, "rejected");
                if rejected.is_empty() {
                    bail!(
                        "no rejected certificates in {}",
                        pki.join("rejected").display()
                    );
                }
                bail!(
                    "no rejected certificate matches {:?}; rejected: {}",
                    name.as_deref().unwrap_or(""),
                    rejected
                        .iter()
                        .map(|c| c.thumbprint.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for cert in &trusted {
                println!(
                    "trusted {} ({})",
                    cert.thumbprint,
                    cert.common_name.as_deref().unwrap_or("no common name")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OpcuaCommand::Certs { location } => {
            let pki = location.pki()?;
            let own = pki.join(gantry_opcua::pki::OWN_CERT);
            println!("own: {}", own.display());
            for sub in ["trusted", "rejected"] {
                let certs = gantry_opcua::pki::list(&pki, sub);
                println!("{sub}: {}", certs.len());
                for c in certs {
                    println!(
                        "  {}  {}  expires {}  {}",
                        c.thumbprint,
                        c.common_name.as_deref().unwrap_or("-"),
                        c.not_after.as_deref().unwrap_or("?"),
                        c.file.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
