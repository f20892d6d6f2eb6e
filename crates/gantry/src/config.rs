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
    /// Plain MQTT over TCP (insecure: opt-in, logged as such).
    pub mqtt: Option<ListenerConfig>,
    /// Plain MQTT over WebSocket (insecure: opt-in, logged as such).
    pub websocket: Option<ListenerConfig>,
    /// The server certificate and key of the TLS listeners, and the CA of
    /// client certificates (mutual TLS).
    pub tls: Option<TlsConfig>,
    /// MQTT over TLS (8883); needs `[tls]`.
    pub mqtts: Option<ListenerConfig>,
    /// MQTT over secure WebSocket (`wss://HOST:PORT/mqtt`); needs `[tls]`.
    pub wss: Option<ListenerConfig>,
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
    /// Every accepted value of the modeled tags, stored (embedded SQLite by
    /// default, or PostgreSQL).
    #[serde(default)]
    pub historian: gantry_historian::HistorianConfig,
    /// The web console and HTTP API (off unless configured).
    pub console: Option<crate::console::ConsoleConfig>,
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

/// `[tls]`: PEM files, relative to the config file's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (server certificate first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates client certificates must be issued by; enables mutual
    /// TLS (a client certificate's common name is its identity).
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate at the handshake.
    #[serde(default)]
    pub require_client_cert: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Shorthand for trials: anonymous clients may publish and subscribe
    /// everywhere and read `$SYS`. Off unless set; logged as insecure.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Anonymous access limited to named subtrees.
    pub anonymous: Option<AnonymousConfig>,
}

/// `[auth.anonymous]`: what clients without credentials may do, and where.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnonymousConfig {
    /// MQTT filters naming the subtrees, e.g. `["acme/dallas/public/#"]`.
    pub subtrees: Vec<SubtreeSetting>,
    /// `"subscribe"` (the default) and/or `"publish"`.
    #[serde(default = "subscribe_only")]
    pub actions: Vec<AnonymousAction>,
    /// Only from loopback addresses.
    #[serde(default)]
    pub loopback_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousAction {
    Publish,
    Subscribe,
}

fn subscribe_only() -> Vec<AnonymousAction> {
    vec![AnonymousAction::Subscribe]
}

/// An ACL pattern, checked while the config is parsed (so a bad one is
/// reported with its line).
#[derive(Debug, Clone)]
pub struct SubtreeSetting(pub gantry_security::AclPattern);

impl<'de> Deserialize<'de> for SubtreeSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        gantry_security::AclPattern::parse(&text)
            .map(SubtreeSetting)
            .map_err(serde::de::Error::custom)
    }
}

impl AuthConfig {
    /// What anonymous clients may do under this config.
    pub fn anonymous_access(&self) -> gantry_security::AnonymousAccess {
        use gantry_security::{Action, Permission};
        let mut access = gantry_security::AnonymousAccess::default();
        if self.allow_anonymous {
            access.permissions = ["publish:#", "subscribe:#", "subscribe:$SYS/#"]
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect();
        }
        if let Some(anonymous) = &self.anonymous {
            access.loopback_only = anonymous.loopback_only;
            for subtree in &anonymous.subtrees {
                for action in &anonymous.actions {
                    access.permissions.push(Permission {
                        action: match action {
                            AnonymousAction::Publish => Action::Publish,
                            AnonymousAction::Subscribe => Action::Subscribe,
                        },
                        pattern: subtree.0.clone(),
                    });
                }
            }
        }
        access
    }
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
        if let Err(message) = config.historian.validate() {
            let offset = src.find("[historian").unwrap_or(0);
            let (line, column) = line_col(&src, offset);
            return Err(ConfigError {
                file,
                line,
                column,
                message,
            });
        }
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
        if let Some(path) = &config.historian.path
            && path.is_relative()
        {
            config.historian.path = Some(base.join(path));
        }
        if config.durability.sync == gantry_broker::SyncPolicy::Fsync {
            config.historian.fsync = true;
        }
        if let Some(tls) = &mut config.tls {
            for path in [&mut tls.cert, &mut tls.key]
                .into_iter()
                .chain(tls.client_ca.as_mut())
            {
                if path.is_relative() {
                    *path = base.join(&*path);
                }
            }
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
        b.mqtts_bind = self.mqtts.as_ref().map(|l| l.bind);
        b.wss_bind = self.wss.as_ref().map(|l| l.bind);
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
