//! The demo-plant simulator: configuration, validation, and the async
//! [`Source`] that ticks a [`PlantSim`] and publishes every tag of every
//! machine as retained QoS 0 JSON samples under `<equipment_topic>/<tag>`.
//!
//! The model itself ([`MachineSim`], [`PlantSim`]) is pure; this module only adds
//! the clock, encoding and delivery.

mod machine;
mod plant;
pub mod plc;
mod rng;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gantry_model::payload::{PayloadError, Sample};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

pub use machine::{MachineKind, MachineSim, MachineSnapshot, MachineState, Tag};
pub use plant::{LINE_BUFFER_MS, PlantSim};

use crate::source::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceMessage,
};

/// Publish interval used when none is configured.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);

/// MQTT's limit on topic length in bytes.
const MAX_TOPIC_LEN: usize = 65_535;

/// One simulated machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedMachine {
    /// Equipment path, e.g. `acme/dallas/packaging/line-1/filler`. Machines
    /// sharing a parent path form a line, upstream first in config order.
    pub equipment_topic: String,
    pub kind: MachineKind,
}

impl SimulatedMachine {
    pub fn new(equipment_topic: impl Into<String>, kind: MachineKind) -> Self {
        Self {
            equipment_topic: equipment_topic.into(),
            kind,
        }
    }
}

/// Simulator configuration. In serialised form the tick is `tick_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub machines: Vec<SimulatedMachine>,
    #[serde(rename = "tick_ms", with = "duration_ms", default = "default_tick")]
    pub tick: Duration,
    /// Same seed, same machines and same tick times give the same output.
    #[serde(default)]
    pub seed: u64,
}

fn default_tick() -> Duration {
    DEFAULT_TICK
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Why a [`SimulatorConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatorConfigError {
    #[error("tick must be at least 1 ms")]
    TickTooShort,
    #[error("no machines configured")]
    NoMachines,
    #[error("invalid equipment topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("equipment topic {0:?} is configured twice")]
    DuplicateTopic(String),
}

impl SimulatorConfig {
    /// Config with the default tick and seed 0.
    pub fn new(machines: Vec<SimulatedMachine>) -> Self {
        Self {
            machines,
            tick: DEFAULT_TICK,
            seed: 0,
        }
    }

    /// Two packaging lines of filler → capper → labeler at
    /// `acme/dallas/packaging/line-{1,2}`.
    pub fn demo_plant() -> Self {
        let mut machines = Vec::with_capacity(6);
        for line in 1..=2 {
            for (name, kind) in [
                ("filler", MachineKind::Filler),
                ("capper", MachineKind::Capper),
                ("labeler", MachineKind::Labeler),
            ] {
                machines.push(SimulatedMachine::new(
                    format!("acme/dallas/packaging/line-{line}/{name}"),
                    kind,
                ));
            }
        }
        Self::new(machines)
    }

    pub fn validate(&self) -> Result<(), SimulatorConfigError> {
        if self.tick < Duration::from_millis(1) {
            return Err(SimulatorConfigError::TickTooShort);
        }
        if self.machines.is_empty() {
            return Err(SimulatorConfigError::NoMachines);
        }
        let mut seen = HashSet::new();
        for machine in &self.machines {
            let topic = machine.equipment_topic.as_str();
            check_topic(topic)?;
            if !seen.insert(topic) {
                return Err(SimulatorConfigError::DuplicateTopic(topic.to_owned()));
            }
        }
        Ok(())
    }
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self::demo_plant()
    }
}

fn check_topic(topic: &str) -> Result<(), SimulatorConfigError> {
    let invalid = |reason| {
        Err(SimulatorConfigError::InvalidTopic {
            topic: topic.to_owned(),
            reason,
        })
    };
    let longest_tag = Tag::ALL.iter().map(|t| t.as_str().len()).max().unwrap_or(0);
    if topic.is_empty() {
        invalid("empty")
    } else if topic.split('/').any(str::is_empty) {
        invalid("empty path segment (leading, trailing or doubled '/')")
    } else if topic.contains(['+', '#']) {
        invalid("contains an MQTT wildcard")
    } else if topic.contains('\0') {
        invalid("contains NUL")
    } else if topic.starts_with('$') {
        invalid("'$' topics are reserved for the broker")
    } else if topic.len() + 1 + longest_tag > MAX_TOPIC_LEN {
        invalid("too long for MQTT")
    } else {
        Ok(())
    }
}

/// The demo-plant data source.
#[derive(Debug)]
pub struct Simulator {
    tick: Duration,
    plant: PlantSim,
    /// Full tag topics per machine, built once.
    topics: Vec<[String; 7]>,
    health: HealthHandle,
    degraded: bool,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Result<Self, SimulatorConfigError> {
        config.validate()?;
        let topics = config
            .machines
            .iter()
            .map(|m| Tag::ALL.map(|tag| format!("{}/{}", m.equipment_topic, tag.as_str())))
            .collect();
        Ok(Self {
            tick: config.tick,
            plant: PlantSim::new(&config.machines, config.seed),
            topics,
            health: HealthHandle::new(),
            degraded: false,
        })
    }

    /// Advances the plant to `now_ms` and encodes one message per tag per
    /// machine, in configuration then [`Tag::ALL`] order.
    pub(crate) fn batch(&mut self, now_ms: u64) -> Result<Vec<SourceMessage>, PayloadError> {
        let snapshots = self.plant.step(now_ms);
        let signed_ms = |ms: u64| {
            i64::try_from(ms).map_err(|_| PayloadError::TimestampRange {
                got: ms.to_string(),
            })
        };
        let mut out = Vec::with_capacity(snapshots.len() * Tag::ALL.len());
        for (snapshot, topics) in snapshots.iter().zip(&self.topics) {
            let timestamp_ms = signed_ms(snapshot.timestamp_ms)?;
            for ((_, value), topic) in snapshot.readings().into_iter().zip(topics) {
                // Strict: a non-finite reading is a model bug, not a string.
                let payload = Sample::new(timestamp_ms, value).try_to_json_bytes()?;
                out.push(SourceMessage {
                    topic: topic.clone(),
                    payload: Bytes::from(payload),
                    retain: true,
                    qos: 0,
                });
            }
        }
        Ok(out)
    }

    async fn run_loop(
        mut self,
        sink: Arc<dyn Sink>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        if *shutdown.borrow_and_update() {
            return Ok(());
        }
        let clock = Clock::start();
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.health.set_connected(true);
        tracing::info!(
            machines = self.topics.len(),
            tick_ms = self.tick.as_millis(),
            "simulator started"
        );

        let result = loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    // A dropped sender can never ask us to stop, so stop now.
                    if changed.is_err() || *shutdown.borrow_and_update() {
                        break Ok(());
                    }
                }
                _ = ticker.tick() => {
                    if let Err(e) = self.publish_tick(clock.now_ms(), sink.as_ref()) {
                        break Err(e);
                    }
                }
            }
        };

        self.health.set_connected(false);
        match &result {
            Ok(()) => tracing::info!("simulator stopped"),
            Err(e) => tracing::error!(error = %e, "simulator failed"),
        }
        result
    }

    fn publish_tick(&mut self, now_ms: u64, sink: &dyn Sink) -> Result<(), SourceError> {
        let mut sent = 0;
        let mut failed = 0;
        let mut first_error = None;
        for msg in self.batch(now_ms)? {
            match sink.publish(msg) {
                Ok(()) => sent += 1,
                Err(e) => {
                    failed += 1;
                    if e.is_fatal() {
                        self.health.record_errors(failed);
                        return Err(e.into());
                    }
                    let overloaded = e == SinkError::Overloaded;
                    first_error.get_or_insert(e);
                    // Everything is re-sent next tick, so shed the rest now.
                    if overloaded {
                        break;
                    }
                }
            }
        }
        if sent > 0 {
            self.health.record_success(now_ms, sent);
        }
        self.health.record_errors(failed);

        // Log transitions only; at 1 Hz a per-tick warning would flood.
        match first_error {
            Some(e) if !self.degraded => {
                self.degraded = true;
                tracing::warn!(error = %e, failed, "sink refusing simulator messages");
            }
            None if self.degraded => {
                self.degraded = false;
                tracing::info!("sink accepting simulator messages again");
            }
            _ => {}
        }
        Ok(())
    }
}

impl Source for Simulator {
    fn name(&self) -> &str {
        "simulator"
    }

    fn health(&self) -> Option<HealthHandle> {
        Some(self.health.clone())
    }

    fn run(self: Box<Self>, sink: Arc<dyn Sink>, shutdown: watch::Receiver<bool>) -> SourceFuture {
        Box::pin((*self).run_loop(sink, shutdown))
    }
}

/// Wall-clock time read from the monotonic clock after one anchoring read,
/// so wall-clock steps cannot make the model jump and tests can use paused
/// tokio time.
struct Clock {
    anchor_ms: u64,
    anchor: Instant,
}

impl Clock {
    fn start() -> Self {
        let anchor_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            anchor_ms,
            anchor: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.anchor_ms.saturating_add(elapsed)
    }
}
