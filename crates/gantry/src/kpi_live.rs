//! Live KPIs in the running broker: a publish observer hands every value of
//! a KPI input topic to the [`LiveEngine`] task, which seeds the current
//! shift from the historian at start, ticks every `publish_every`, and
//! publishes each unit's and roll-up's KPIs, retained, under
//! `<path>/_kpi/<name>`, where the historian records them like any tag.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gantry_broker::hooks::PublishObserver;
use gantry_broker::store::AckGate;
use gantry_broker::{Broker, Message};
use gantry_codec::QoS;
use gantry_historian::Historian;
use gantry_kpi::config::KpiConfig;
use gantry_kpi::live::LiveEngine;
use gantry_model::plant::BuildTopicHasher;
use gantry_model::{Sample, SampleRef};
use tokio::sync::mpsc;

/// The broker hook: forwards values of input topics to the engine.
pub struct KpiFeed {
    /// Checked for every routed message: the model's fast topic hash.
    inputs: HashSet<String, BuildTopicHasher>,
    tx: mpsc::UnboundedSender<(Arc<str>, Sample)>,
}

impl PublishObserver for KpiFeed {
    fn observe(&self, msg: &Arc<Message>) -> Option<AckGate> {
        if !self.inputs.contains(&*msg.topic) {
            return None;
        }
        let sample = SampleRef::parse_compact(&msg.payload)
            .map(|s| s.to_sample())
            .or_else(|| Sample::parse(&msg.payload, msg.received_at_ms as i64).ok())?;
        let _ = self.tx.send((msg.topic.clone(), sample));
        None
    }
}

/// The engine, shared with readers (the console, later).
pub type SharedEngine = Arc<Mutex<LiveEngine>>;

/// What `spawn` runs.
pub struct LiveKpis {
    engine: SharedEngine,
    rx: mpsc::UnboundedReceiver<(Arc<str>, Sample)>,
    every: Duration,
}

/// The feed to install as an observer, and the task to spawn once the
/// broker runs.
pub fn prepare(config: KpiConfig) -> (Arc<KpiFeed>, LiveKpis) {
    let every = Duration::from_millis(config.publish_every_ms.max(1_000) as u64);
    let engine = LiveEngine::new(config);
    let inputs: HashSet<String, BuildTopicHasher> =
        engine.input_topics().map(str::to_string).collect();
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Arc::new(KpiFeed { inputs, tx }),
        LiveKpis {
            engine: Arc::new(Mutex::new(engine)),
            rx,
            every,
        },
    )
}

fn now_ms() -> i64 {
    gantry_broker::message::now_ms() as i64
}

/// Seeds the current shifts from the historian, then ticks and publishes
/// until the broker shuts down.
pub fn spawn(live: LiveKpis, broker: &Broker, historian: Option<Arc<Historian>>) -> SharedEngine {
    let shared = live.engine.clone();
    let broker = broker.clone();
    let LiveKpis {
        engine,
        mut rx,
        every,
    } = live;
    tokio::spawn(async move {
        if let Some(h) = historian {
            let engine = engine.clone();
            let seeded = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                if let gantry_historian::recorder::StoreLocation::Sqlite(path) = h.location() {
                    gantry_historian::sqlite::settle(path)?;
                }
                let mut reader = h.reader()?;
                let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                e.seed(reader.as_mut(), now_ms())?;
                Ok(())
            })
            .await;
            match seeded {
                Ok(Ok(())) => tracing::info!("KPIs: current shifts loaded from the historian"),
                Ok(Err(e)) => tracing::warn!(
                    "KPIs: cannot load the current shifts from the historian ({e}); computing from live values only"
                ),
                Err(e) => tracing::warn!("KPIs: seeding failed ({e})"),
            }
        }
        let units = engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .config()
            .units
            .len();
        tracing::info!(
            units,
            "KPIs computed live, published under <path>/_kpi/ every {every:?}"
        );
        let mut shutdown = broker.shutdown_signal();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                Some((topic, sample)) = rx.recv() => {
                    let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                    e.observe(&topic, &sample);
                    // Drain what else is waiting under one lock.
                    while let Ok((topic, sample)) = rx.try_recv() {
                        e.observe(&topic, &sample);
                    }
                }
                _ = tick.tick() => {
                    let publications = engine.lock().unwrap_or_else(|p| p.into_inner()).tick(now_ms());
                    for p in publications {
                        let payload = Bytes::from(p.sample.to_json_bytes());
                        if let Err(e) = broker.publish("gantry-kpi", &p.topic, payload, QoS::AtMostOnce, true) {
                            tracing::warn!("KPIs: cannot publish {}: {e}", p.topic);
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    });
    shared
}
