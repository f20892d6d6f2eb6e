//! Wiring the historian into the binary: start it before the broker (its
//! recorder is a broker hook), publish its status on `$SYS`, and stop it
//! after the broker so that every acknowledged value is written first.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gantry_broker::Broker;
use gantry_codec::QoS;
use gantry_contracts::ContractInspector;
use gantry_historian::recorder::StoreLocation;
use gantry_historian::{Historian, HistorianConfig};

/// Where the historian's counters are published (retained JSON).
pub const STATUS_TOPIC: &str = "$SYS/broker/historian";

/// Starts the historian when enabled. With contracts, only the model's tags
/// (and KPI results) are recorded, following model reloads.
pub fn start(
    config: &HistorianConfig,
    data_dir: &Path,
    inspector: Option<&Arc<ContractInspector>>,
) -> anyhow::Result<Option<Arc<Historian>>> {
    if !config.enabled {
        tracing::info!("historian disabled ([historian] enabled = false)");
        return Ok(None);
    }
    let modeled = inspector.map(|i| {
        let i = i.clone();
        Arc::new(move |topic: &str| i.is_modeled(topic)) as gantry_historian::recorder::ModeledCheck
    });
    let historian =
        Historian::start(config, data_dir, modeled).context("cannot start the historian")?;
    match historian.location() {
        StoreLocation::Sqlite(path) => {
            tracing::info!("historian recording into {}", path.display())
        }
        StoreLocation::Postgres(pg) => tracing::info!(
            schema = %pg.schema,
            "historian recording into PostgreSQL (spooled locally first)"
        ),
    }
    Ok(Some(Arc::new(historian)))
}

/// Publishes the historian's status retained on [`STATUS_TOPIC`] every `every`.
pub fn spawn_status(broker: &Broker, historian: &Arc<Historian>, every: Duration) {
    let broker = broker.clone();
    let historian = historian.clone();
    tokio::spawn(async move {
        let mut shutdown = broker.shutdown_signal();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let status = historian.status();
                    if let Some(e) = &status.last_error {
                        tracing::warn!("historian: {e}");
                    }
                    if let Some(e) = status.postgres.as_ref().and_then(|p| p.last_error.as_ref()) {
                        tracing::warn!("historian: PostgreSQL: {e} (values wait in the local spool)");
                    }
                    match serde_json::to_vec(&status) {
                        Ok(json) => {
                            let _ = broker.publish("gantry", STATUS_TOPIC, Bytes::from(json), QoS::AtMostOnce, true);
                        }
                        Err(e) => tracing::warn!("historian status: {e}"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Writes what is queued and closes the store cleanly.
pub async fn stop(historian: Option<Arc<Historian>>) {
    if let Some(h) = historian {
        let _ = tokio::task::spawn_blocking(move || h.shutdown()).await;
    }
}
