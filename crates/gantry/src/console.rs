//! Wiring the web console and HTTP API into the running Gantry: its
//! `[console]` settings, the live-feed observer (installed before the
//! broker starts), where each tag's values come from, and the demo's logins.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gantry_broker::Broker;
use gantry_connectors::modbus::DeviceConfig;
use gantry_console::{ConsoleDeps, ConsoleSettings, KpiAccess, LiveHub, SourceRef};
use gantry_contracts::ContractInspector;
use gantry_historian::Historian;
use gantry_security::audit::{Actor, ActorKind, AuditEvent, Category};
use gantry_security::password::{generate_password, hash_password};
use gantry_security::service::Security;
use gantry_security::{Identity, IdentityKind, SecurityStore, StoreError};
use serde::Deserialize;

/// `[console]`: the web console and HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Plain HTTP (insecure outside loopback: opt-in, logged as such).
    pub bind: Option<SocketAddr>,
    /// HTTPS with the `[tls]` certificate.
    pub https_bind: Option<SocketAddr>,
    /// How long a login lasts, in hours.
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// A live value older than this many seconds is shown as stale.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u64,
    /// The live feed sends at most one event per this many milliseconds.
    #[serde(default = "default_live_interval_ms")]
    pub live_interval_ms: u64,
}

fn default_session_hours() -> u64 {
    12
}
fn default_stale_after_s() -> u64 {
    300
}
fn default_live_interval_ms() -> u64 {
    500
}

impl ConsoleConfig {
    pub fn settings(&self) -> ConsoleSettings {
        ConsoleSettings {
            session_ttl: Duration::from_secs(self.session_hours.clamp(1, 24 * 30) * 3600),
            stale_after: Duration::from_secs(self.stale_after_s.max(1)),
            live_interval: Duration::from_millis(self.live_interval_ms.clamp(100, 60_000)),
            secure_cookies: false,
        }
    }
}

/// Which connector feeds each tag.
pub fn tag_sources(
    modbus: &[DeviceConfig],
    opcua: &[gantry_opcua::ServerConfig],
) -> HashMap<String, SourceRef> {
    let mut sources = HashMap::new();
    for device in modbus {
        for point in &device.points {
            sources.insert(
                point.topic.clone(),
                SourceRef {
                    connector: "modbus".into(),
                    name: device.name.clone(),
                },
            );
        }
    }
    for server in opcua {
        for node in &server.nodes {
            sources.insert(
                node.topic.clone(),
                SourceRef {
                    connector: "opcua".into(),
                    name: server.name.clone(),
                },
            );
        }
    }
    sources
}

/// What the console serves from, gathered by `run` and `demo`.
#[derive(Clone)]
pub struct Parts {
    pub live: Arc<LiveHub>,
    pub security: Arc<Security>,
    pub security_store: SecurityStore,
    pub contracts: Option<Arc<ContractInspector>>,
    pub historian: Option<Arc<Historian>>,
    pub kpi: Option<KpiAccess>,
    pub sources: HashMap<String, SourceRef>,
    pub settings: ConsoleSettings,
}

/// Starts the console on `listeners`; returns the bound addresses.
pub async fn start(
    broker: &Broker,
    parts: Parts,
    listeners: gantry_console::Listeners,
) -> anyhow::Result<gantry_console::BoundConsole> {
    let deps = ConsoleDeps {
        broker: broker.clone(),
        security: parts.security,
        security_store: parts.security_store,
        contracts: parts.contracts,
        historian: parts.historian,
        kpi: parts.kpi,
        sources: parts.sources,
        live: parts.live,
        settings: parts.settings,
    };
    let bound = gantry_console::serve(deps, listeners, broker.shutdown_signal()).await?;
    if let Some(a) = bound.http {
        tracing::info!("console and API on http://{a}/");
        if !a.ip().is_loopback() {
            tracing::warn!(
                "the console on {a} is plain HTTP: passwords and sessions cross the network unencrypted; use [console] https_bind"
            );
        }
    }
    if let Some(a) = bound.https {
        tracing::info!("console and API on https://{a}/");
    }
    Ok(bound)
}

/// The demo's console logins, one per built-in role people use.
pub const DEMO_LOGINS: [(&str, &str); 4] = [
    ("admin", "admin"),
    ("operator", "ot-engineer"),
    ("analyst", "it-analyst"),
    ("officer", "security-officer"),
];

/// The file keeping the demo's generated passwords (mode 0600).
const DEMO_LOGINS_FILE: &str = "console-logins.txt";

/// Makes sure the demo's logins exist in `data_dir`, generating passwords
/// once and keeping them in `console-logins.txt`; returns (user, role,
/// password) for each, the password `None` when the identity was made by
/// someone else (its password is theirs).
pub fn demo_logins(data_dir: &Path) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let file = data_dir.join(DEMO_LOGINS_FILE);
    let mut known: HashMap<String, String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, p)| (u.to_owned(), p.trim().to_owned()))
        .collect();
    let store = SecurityStore::in_data_dir(data_dir);
    let existing = store.load().context("the demo's security file")?;
    let mut added = Vec::new();
    let mut out = Vec::new();
    for (user, role) in DEMO_LOGINS {
        if existing.identity(user).is_some() {
            out.push((user.to_owned(), role.to_owned(), known.get(user).cloned()));
            continue;
        }
        let password = generate_password().context("a demo password")?;
        let hash = hash_password(&password).context("a demo password")?;
        added.push((user, role, hash));
        known.insert(user.to_owned(), password.clone());
        out.push((user.to_owned(), role.to_owned(), Some(password)));
    }
    if !added.is_empty() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let text: String = DEMO_LOGINS
            .iter()
            .filter_map(|(u, _)| known.get(*u).map(|p| format!("{u} {p}\n")))
            .collect();
        write_private(&file, &text)?;
        let now = gantry_broker::message::now_ms();
        store.update(|f| {
            for (user, role, hash) in &added {
                if f.identity(user).is_some() {
                    return Err(StoreError::Refused(format!(
                        "identity {user:?} already exists"
                    )));
                }
                f.identities.push(Identity {
                    name: (*user).to_owned(),
                    kind: IdentityKind::Human,
                    roles: vec![(*role).to_owned()],
                    password: Some(hash.clone()),
                    certificate: false,
                    disabled: false,
                    break_glass: false,
                    description: "demo login (console-logins.txt)".to_owned(),
                    created_ms: now,
                    updated_ms: now,
                });
            }
            Ok(())
        })?;
        for (user, role, _) in &added {
            gantry_security::audit::submit(
                &data_dir.join("audit"),
                AuditEvent::new(
                    Category::UserAdmin,
                    "user-added",
                    Actor::new("gantry-demo", ActorKind::System, None),
                    "add-user",
                    true,
                )
                .target((*user).to_owned())
                .details(serde_json::json!({ "roles": [role], "kind": "human", "password": true })),
            )
            .context("the demo login was made but could not be written to the audit log")?;
        }
    }
    Ok(out)
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
