//! What every handler reaches: the broker, security, contracts, historian and
//! KPI engine of the running Gantry, the console's settings, its sessions,
//! and the index of the plant model (rebuilt once per model generation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gantry_broker::Broker;
use gantry_contracts::ContractInspector;
use gantry_historian::Historian;
use gantry_kpi::config::KpiConfig;
use gantry_kpi::live::LiveEngine;
use gantry_security::service::Security;

use crate::auth::Sessions;
use crate::live::LiveHub;
use crate::model_index::ModelIndex;

/// The console's settings (`[console]` in the config file).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// A live value older than this is shown as stale.
    pub stale_after: Duration,
    /// The live feed sends at most one event per interval.
    pub live_interval: Duration,
    /// Session cookies are marked `Secure`; `serve` sets it from the
    /// listeners (HTTPS only).
    pub secure_cookies: bool,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            stale_after: Duration::from_secs(300),
            live_interval: Duration::from_millis(500),
            secure_cookies: false,
        }
    }
}

/// Where a tag's values come from, as the binary knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceRef {
    /// `modbus`, `opcua`, `sparkplug`, `simulator`.
    pub connector: String,
    /// The device or server name in the site model.
    pub name: String,
}

/// The KPI definitions and the live engine of the running site.
#[derive(Clone)]
pub struct KpiAccess {
    pub config: Arc<KpiConfig>,
    pub engine: Arc<Mutex<LiveEngine>>,
}

/// Everything the console serves from; built by the binary.
pub struct ConsoleDeps {
    pub broker: Broker,
    pub security: Arc<Security>,
    /// The security file behind `security` (for the users and roles views).
    pub security_store: gantry_security::SecurityStore,
    pub contracts: Option<Arc<ContractInspector>>,
    pub historian: Option<Arc<Historian>>,
    pub kpi: Option<KpiAccess>,
    /// Tag topic → its source.
    pub sources: HashMap<String, SourceRef>,
    /// The broker observer behind the live feed (installed before the broker started).
    pub live: Arc<LiveHub>,
    pub settings: ConsoleSettings,
}

/// Shared by every request.
pub struct AppState {
    pub deps: ConsoleDeps,
    pub sessions: Sessions,
    model_index: RwLock<Arc<ModelIndex>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn new(deps: ConsoleDeps) -> SharedState {
        Arc::new(AppState {
            sessions: Sessions::new(deps.settings.session_ttl),
            deps,
            model_index: RwLock::new(Arc::new(ModelIndex::default())),
        })
    }

    pub fn broker(&self) -> &Broker {
        &self.deps.broker
    }

    pub fn security(&self) -> &Security {
        &self.deps.security
    }

    /// The index of the plant model in force, rebuilt when the model was
    /// reloaded since the last call.
    pub fn model_index(&self) -> Arc<ModelIndex> {
        let Some(contracts) = &self.deps.contracts else {
            return self
                .model_index
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        };
        let current = self
            .model_index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let generation = contracts.with_model(|_, g| g);
        if current.generation == generation {
            return current;
        }
        let fresh = Arc::new(contracts.with_model(ModelIndex::build));
        *self.model_index.write().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        fresh
    }
}
