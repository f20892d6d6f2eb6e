//! Wiring the data contracts into the binary: building the inspector from the
//! config, publishing its counters on `$SYS`, and reloading the plant model
//! on SIGHUP (a bad model is refused and the old one stays in force).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_broker::Broker;
use gantry_broker::hooks::PublishInspector;
use gantry_contracts::{ContractInspector, ContractSettings, STATS_TOPIC};
use gantry_model::PlantModel;
use gantry_model::standard::Standard;
use gantry_security::audit::{Actor, AuditEvent, AuditLog, Category};
use gantry_security::writeback::WriteGate;

/// The inspector, and the model file that SIGHUP re-reads (if any).
#[derive(Clone)]
pub struct Contracts {
    pub inspector: Arc<ContractInspector>,
    pub model_file: Option<PathBuf>,
    /// The standard the model must conform to, re-read on reload too.
    pub standard_file: Option<PathBuf>,
    /// The write-back gate, whose allow-list comes from the same model.
    pub write_gate: Option<Arc<WriteGate>>,
    /// Where reloads (a configuration change) are recorded.
    pub audit: Option<AuditLog>,
}

impl Contracts {
    pub fn new(
        model: Option<PlantModel>,
        settings: ContractSettings,
        file: Option<PathBuf>,
    ) -> Self {
        Self {
            inspector: Arc::new(ContractInspector::new(model, settings)),
            model_file: file,
            standard_file: None,
            write_gate: None,
            audit: None,
        }
    }

    pub fn as_inspector(&self) -> Arc<dyn PublishInspector> {
        self.inspector.clone()
    }

    /// Logs what is enforced and publishes the counters every `every`.
    pub fn start(&self, broker: &Broker, every: Duration) {
        let inspector = self.inspector.clone();
        tracing::info!(
            tags = inspector.tag_count(),
            unmodeled = %inspector.settings().unmodeled,
            "data contracts enforced; violations go to <enterprise>/_dlq/..., counters to {STATS_TOPIC}"
        );
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut shutdown = broker.shutdown_signal();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => inspector.publish_stats(&broker),
                    _ = shutdown.changed() => return,
                }
            }
        });
    }

    /// Re-reads the model file; on success the new model is in force for the
    /// next publish, on failure every error is logged and nothing changes.
    pub fn reload(&self, broker: &Broker) {
        match &self.model_file {
            Some(path) => self.reload_from(broker, path),
            None => tracing::warn!("SIGHUP: no model file is configured; nothing to reload"),
        }
        self.inspector.publish_stats(broker);
    }
}

/// Loads a site model and, if a standard is given, requires the model to
/// conform to it. Every error comes back as `file:line:col: field: message`.
pub fn load_site(model: &Path, standard: Option<&Path>) -> Result<PlantModel, Vec<String>> {
    let site =
        PlantModel::load(model).map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    if let Some(path) = standard {
        let standard = Standard::load(path)
            .map_err(|e| e.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
        let conformance = standard.check_site(&site);
        if !conformance.errors.is_empty() {
            return Err(conformance.errors.iter().map(|e| e.to_string()).collect());
        }
    }
    Ok(site)
}

impl Contracts {
    fn reload_from(&self, broker: &Broker, path: &Path) {
        let inspector = &self.inspector;
        let outcome = match load_site(path, self.standard_file.as_deref()) {
            Ok(model) => {
                let tags = model.tag_count();
                if let Some(gate) = &self.write_gate {
                    gate.reload(Some(model.clone()));
                }
                let generation = inspector.reload(Some(model));
                tracing::info!(
                    generation,
                    tags,
                    "plant model reloaded from {}",
                    path.display()
                );
                let recheck = inspector.recheck_retained(broker);
                if recheck.dead_lettered > 0 {
                    tracing::warn!(
                        generation,
                        "{} retained value(s) break the new model: removed from the live state and moved to the dead-letter subtree",
                        recheck.dead_lettered
                    );
                }
                tracing::info!(
                    checked = recheck.checked,
                    rewritten = recheck.rewritten,
                    dead_lettered = recheck.dead_lettered,
                    "retained state re-judged against generation {generation}"
                );
                Ok(serde_json::json!({
                    "generation": generation,
                    "tags": tags,
                    "retained_checked": recheck.checked,
                    "retained_dead_lettered": recheck.dead_lettered,
                }))
            }
            Err(errors) => {
                for e in errors.iter() {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    "plant model reload refused: {} error(s) in {}; generation {} stays in force",
                    errors.len(),
                    path.display(),
                    inspector.generation()
                );
                let reason = errors.join("; ");
                inspector.refuse_reload(errors);
                Err(reason)
            }
        };
        if let Some(audit) = &self.audit {
            let (ok, event) = match &outcome {
                Ok(_) => (true, "model-reloaded"),
                Err(_) => (false, "model-reload-refused"),
            };
            let mut record =
                AuditEvent::new(Category::Config, event, Actor::system(), "reload", ok)
                    .target(path.display().to_string());
            record = match outcome {
                Ok(details) => record.details(details),
                Err(reason) => record.reason(reason),
            };
            audit.append(record);
        }
    }
}
