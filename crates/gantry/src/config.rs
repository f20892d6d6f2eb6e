//! The Gantry config file (`gantry run --config FILE`): where data lives, which
//! listeners to open, who may connect, broker limits, the plant model, the data
//! contracts and the sources. Errors name the file, line, column and field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gantry_broker::{BrokerConfig, Durability, Limits};
use gantry_contracts::{ContractSettings, UnmodeledPolicy};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GantryConfig {
    /// Directory for retained state, sessions and (later) history. Relative
    /// paths are resolved against the config file's directory.
    pub data_dir: PathBuf,
    /// Plant model file (TOML), relative to the config file.
    pub model: Option<PathBuf>,
    /// Enterprise standard the model must conform to (checked at start and
    /// on every reload), relative to the config file.
    pub standard: Option<PathBuf>,
    pub mqtt: Option<ListenerConfig>,
    pub websocket: Option<ListenerConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub durability: Durability,
    #[serde(default)]
    pub sys: SysConfig,
    #[serde(default)]
    pub contracts: ContractsConfig,
    pub simulator: Option<SimulatorSection>,
}

/// `[contracts]`: validation of every publish against the plant model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractsConfig {
    /// Install the contract inspector at all.
    pub enabled: bool,
    /// What happens to publishes on paths the model does not declare.
    pub unmodeled: UnmodeledSetting,
    /// Timestamps further ahead of the broker clock than this are refused.
    pub max_future_ms: u64,
    /// Timestamps before this (Unix milliseconds) are refused; 2000-01-01.
    pub min_timestamp_ms: i64,
}

impl Default for ContractsConfig {
    fn default() -> Self {
        let d = ContractSettings::default();
        Self {
            enabled: true,
            unmodeled: UnmodeledSetting::DeadLetter,
            max_future_ms: d.max_future_ms,
            min_timestamp_ms: d.min_timestamp_ms,
        }
    }
}

/// `unmodeled = "allow" | "dead-letter" | "reject"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnmodeledSetting {
    Allow,
    DeadLetter,
    Reject,
}

impl ContractsConfig {
    pub fn settings(&self) -> ContractSettings {
        ContractSettings {
            unmodeled: match self.unmodeled {
                UnmodeledSetting::Allow => UnmodeledPolicy::Allow,
                UnmodeledSetting::DeadLetter => UnmodeledPolicy::DeadLetter,
                UnmodeledSetting::Reject => UnmodeledPolicy::Reject,
            },
            max_future_ms: self.max_future_ms,
            min_timestamp_ms: self.min_timestamp_ms,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept clients without credentials. Off unless set: Gantry denies by default.
    #[serde(default)]
    pub allow_anonymous: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between `$SYS/broker/...` updates.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        Self { interval_secs: 5 }
    }
}

/// Runs the demo-plant simulator as a source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
}

fn default_true() -> bool {
    true
}

fn default_tick_ms() -> u64 {
    1000
}

/// A config error with its position, printed as `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl GantryConfig {
    pub fn load(path: &Path) -> Result<GantryConfig, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        })?;
        let mut config = Self::parse(&src, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if let Some(model) = &config.model
            && model.is_relative()
        {
            config.model = Some(base.join(model));
        }
        if let Some(standard) = &config.standard
            && standard.is_relative()
        {
            config.standard = Some(base.join(standard));
        }
        Ok(config)
    }

    pub fn parse(src: &str, file: &str) -> Result<GantryConfig, ConfigError> {
        toml::from_str::<GantryConfig>(src).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(src, s.start));
            ConfigError {
                file: file.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })
    }

    pub fn broker_config(&self) -> BrokerConfig {
        let mut b = BrokerConfig::new(&self.data_dir);
        b.mqtt_bind = self.mqtt.as_ref().map(|l| l.bind);
        b.websocket_bind = self.websocket.as_ref().map(|l| l.bind);
        b.limits = self.limits.clone();
        b.durability = self.durability.clone();
        b.sys_interval = std::time::Duration::from_secs(self.sys.interval_secs.max(1));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = GantryConfig::parse(
            r#"
data_dir = "data"
model = "plant.toml"
[mqtt]
bind = "127.0.0.1:1883"
[websocket]
bind = "127.0.0.1:8083"
[auth]
allow_anonymous = true
[limits]
max_queued_messages = 50
[durability]
sync = "fsync"
[simulator]
seed = 7
[contracts]
unmodeled = "reject"
max_future_ms = 1000
"#,
            "gantry.toml",
        )
        .unwrap();
        assert_eq!(c.limits.max_queued_messages, 50);
        assert!(c.auth.allow_anonymous);
        assert_eq!(c.simulator.map(|s| s.seed), Some(7));
        let s = c.contracts.settings();
        assert_eq!(s.unmodeled, UnmodeledPolicy::Reject);
        assert_eq!(s.max_future_ms, 1000);
        assert!(c.contracts.enabled);
        let d = GantryConfig::parse("data_dir = \"d\"", "x").unwrap();
        assert!(d.contracts.enabled);
        assert_eq!(d.contracts.settings(), ContractSettings::default());
        assert_eq!(
            d.contracts.settings().unmodeled,
            UnmodeledPolicy::DeadLetter
        );
        let b = d.broker_config();
        assert!(b.mqtt_bind.is_none());
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let src = "data_dir = \"d\"\n[mqtt]\nbind = \"127.0.0.1:1883\"\n[limits]\nmax_queued_mesages = 5\n";
        let e = GantryConfig::parse(src, "gantry.toml").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("gantry.toml", 5));
        assert!(e.message.contains("max_queued_mesages"), "{e}");
        let e = GantryConfig::parse("data_dir = \"d\"\n[mqtt]\nbind = \"localhost\"\n", "g.toml")
            .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("g.toml:3:"), "{e}");
        let e = GantryConfig::parse(
            "data_dir = \"d\"\n[contracts]\nunmodeled = \"drop\"\n",
            "g.toml",
        )
        .unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("dead-letter"), "{e}");
    }
}
