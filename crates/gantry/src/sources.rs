//! Wiring sources to the broker: the [`Sink`] that in-process sources publish
//! through, the simulator built from a plant model, the Modbus devices and
//! the OPC UA servers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gantry_broker::Broker;
use gantry_codec::QoS;
use gantry_connectors::modbus::{
    DeviceConfig, ModbusSource, WriteChannel, WriteCommand, WriteOutcome,
};
use gantry_connectors::simulator::{MachineKind, SimulatedMachine};
use gantry_connectors::{Sink, SinkError, Source, SourceMessage};
use gantry_model::PlantModel;

/// Publishes source messages into the broker, through the same inspection and
/// routing as an MQTT client's publish.
pub struct BrokerSink {
    broker: Broker,
    source: String,
}

impl BrokerSink {
    pub fn new(broker: Broker, source: &str) -> Self {
        Self {
            broker,
            source: format!("source:{source}"),
        }
    }
}

impl Sink for BrokerSink {
    fn publish(&self, msg: SourceMessage) -> Result<(), SinkError> {
        let qos = QoS::from_u8(msg.qos).unwrap_or(QoS::AtMostOnce);
        self.broker
            .publish(&self.source, &msg.topic, msg.payload, qos, msg.retain)
            .map(|_| ())
            .map_err(|e| SinkError::Rejected {
                topic: msg.topic,
                reason: e.to_string(),
            })
    }
}

/// Machines to simulate for a plant model: every equipment, with its class
/// deciding the behaviour (filler, capper, labeler, anything else generic).
pub fn simulated_machines(model: &PlantModel) -> Vec<SimulatedMachine> {
    model
        .equipment()
        .iter()
        .map(|e| {
            let class = e.class.as_deref().unwrap_or("");
            let kind = match class.split('@').next().unwrap_or("") {
                "filler" => MachineKind::Filler,
                "capper" => MachineKind::Capper,
                "labeler" => MachineKind::Labeler,
                _ => MachineKind::Generic,
            };
            SimulatedMachine::new(e.path.as_str(), kind)
        })
        .collect()
}

/// A Modbus device and, if it may be written, its write queue.
pub type DeviceWithWrites = (DeviceConfig, Option<WriteChannel>);

/// Starts one source per `[[modbus]]` device (with its write queue, if the
/// device may be written).
pub fn spawn_modbus(broker: &Broker, devices: Vec<DeviceWithWrites>) {
    for (device, writes) in devices {
        spawn_source(broker.clone(), move || {
            let mut source = ModbusSource::new(device.clone());
            if let Some(w) = &writes {
                source = source.with_writes(w.clone());
            }
            Ok(Box::new(source) as Box<dyn Source>)
        });
    }
}

/// Starts one source per `[[opcua]]` server, after creating the OPC UA
/// application instance certificate in `data_dir` if it is missing.
pub fn spawn_opcua(
    broker: &Broker,
    data_dir: &std::path::Path,
    servers: Vec<gantry_opcua::ServerConfig>,
) -> anyhow::Result<()> {
    if servers.is_empty() {
        return Ok(());
    }
    gantry_opcua::pki::ensure_instance_certificate(data_dir).map_err(anyhow::Error::msg)?;
    for server in servers {
        let data_dir = data_dir.to_path_buf();
        spawn_source(broker.clone(), move || {
            let source = gantry_opcua::OpcUaSource::new(server.clone(), &data_dir);
            Ok(Box::new(source) as Box<dyn Source>)
        });
    }
    Ok(())
}

/// Sends the writes the write-back gate released (`<equipment>/_cmd/<tag>`)
/// to the Modbus device that owns the tag. A broker observer: it sees a
/// `_cmd` message only after the gate let it through.
#[derive(Default)]
pub struct CommandRouter {
    by_tag: std::collections::HashMap<String, (String, tokio::sync::mpsc::Sender<WriteCommand>)>,
    outcomes: Option<tokio::sync::mpsc::UnboundedSender<WriteOutcome>>,
}

impl CommandRouter {
    /// Gives every device a write queue and returns the devices with their
    /// queues, the router, and where write outcomes arrive.
    pub fn for_devices(
        devices: Vec<DeviceConfig>,
    ) -> (
        Vec<DeviceWithWrites>,
        CommandRouter,
        tokio::sync::mpsc::UnboundedReceiver<WriteOutcome>,
    ) {
        let (outcome_tx, outcome_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut router = CommandRouter {
            outcomes: Some(outcome_tx.clone()),
            ..CommandRouter::default()
        };
        let with_queues = devices
            .into_iter()
            .map(|device| {
                let (tx, channel) = WriteChannel::new(16, outcome_tx.clone());
                for point in &device.points {
                    router
                        .by_tag
                        .insert(point.topic.clone(), (device.name.clone(), tx.clone()));
                }
                (device, Some(channel))
            })
            .collect();
        (with_queues, router, outcome_rx)
    }

    pub fn is_empty(&self) -> bool {
        self.by_tag.is_empty()
    }
}

impl gantry_broker::hooks::PublishObserver for CommandRouter {
    fn observe(&self, msg: &Arc<gantry_broker::Message>) -> Option<gantry_broker::store::AckGate> {
        let target = gantry_security::service::command_target(&msg.topic)?;
        let (device, tx) = self.by_tag.get(&target)?;
        let now = i64::try_from(msg.received_at_ms).unwrap_or(i64::MAX);
        let requested_by = msg.publisher.as_deref().unwrap_or("unknown").to_owned();
        let value = match gantry_model::Sample::parse(&msg.payload, now) {
            Ok(sample) => sample.value,
            Err(e) => {
                tracing::warn!(topic = %msg.topic, "released write without a usable value: {e}");
                return None;
            }
        };
        let command = WriteCommand {
            topic: target,
            value,
            requested_by,
            issued: tokio::time::Instant::now(),
        };
        if let Err(e) = tx.try_send(command) {
            let command = match e {
                tokio::sync::mpsc::error::TrySendError::Full(c)
                | tokio::sync::mpsc::error::TrySendError::Closed(c) => c,
            };
            if let Some(outcomes) = &self.outcomes {
                let _ = outcomes.send(WriteOutcome {
                    device: device.clone(),
                    topic: command.topic,
                    value: command.value,
                    requested_by: command.requested_by,
                    result: Err("the device's write queue is full or stopped".to_owned()),
                });
            }
        }
        None
    }
}

/// Records every write outcome in the audit log ("executed" or "failed").
pub fn spawn_write_auditor(
    mut outcomes: tokio::sync::mpsc::UnboundedReceiver<WriteOutcome>,
    audit: Option<gantry_security::audit::AuditLog>,
) {
    use gantry_security::audit::{Actor, AuditEvent, Category};
    tokio::spawn(async move {
        while let Some(o) = outcomes.recv().await {
            let Some(audit) = &audit else { continue };
            let ok = o.result.is_ok();
            let mut event = AuditEvent::new(
                Category::WriteCommand,
                if ok { "write-executed" } else { "write-failed" },
                Actor::system(),
                "write",
                ok,
            )
            .target(o.topic)
            .details(serde_json::json!({
                "device": o.device,
                "value": o.value.to_string(),
                "requested_by": o.requested_by,
            }));
            if let Err(why) = o.result {
                event = event.reason(why);
            }
            audit.append(event);
        }
    });
}

/// Runs a source until shutdown, restarting it with back-off if it fails.
pub fn spawn_source(
    broker: Broker,
    make: impl Fn() -> anyhow::Result<Box<dyn Source>> + Send + 'static,
) {
    tokio::spawn(async move {
        let mut shutdown = broker.shutdown_signal();
        let mut delay = Duration::from_secs(1);
        loop {
            let source = match make() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start source");
                    return;
                }
            };
            let name = source.name().to_owned();
            let sink: Arc<dyn Sink> = Arc::new(BrokerSink::new(broker.clone(), &name));
            tracing::info!(source = %name, "source started");
            match source.run(sink, shutdown.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "source failed; restarting in {delay:?}")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    });
}

/// The demo plant as simulated PLCs: one Modbus TCP server per machine on
/// 127.0.0.1, fed by the plant simulation. Device `i` listens on
/// `base_port + i` (any free port when `base_port` is 0) and its config is
/// pointed at the port actually bound, so the connector polls the servers
/// exactly as it would poll real PLCs.
pub async fn start_simulated_plcs(
    broker: &Broker,
    model: &gantry_model::PlantModel,
    devices: &mut [DeviceConfig],
    base_port: u16,
    seed: u64,
) -> anyhow::Result<()> {
    use gantry_connectors::simulator::plc::{PlcIdentity, PlcPlant, serve_plc};
    let machines = simulated_machines(model);
    let plant = PlcPlant::new(&machines, seed, Duration::from_secs(1));
    for (i, device) in devices.iter_mut().enumerate() {
        let Some(index) = machines
            .iter()
            .position(|m| m.equipment_topic == device.equipment)
        else {
            anyhow::bail!(
                "demo: Modbus device {:?} reads {}, which is not a simulated machine",
                device.name,
                device.equipment
            );
        };
        let port = if base_port == 0 {
            0
        } else {
            base_port.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| {
                format!(
                    "demo: cannot start the simulated PLC {:?} on 127.0.0.1:{port} (choose other ports with --modbus-base-port)",
                    device.name
                )
            })?;
        device.host = "127.0.0.1".to_owned();
        device.port = listener.local_addr()?.port();
        let identity = PlcIdentity {
            vendor: "Gantry simulated PLC".to_owned(),
            product_code: format!("{:?}", machines[index].kind).to_lowercase(),
            revision: env!("CARGO_PKG_VERSION").to_owned(),
        };
        tokio::spawn(serve_plc(
            listener,
            plant.banks()[index].clone(),
            identity,
            broker.shutdown_signal(),
        ));
    }
    // Registers hold values before the first poll.
    let mut plant = plant;
    plant.update(gantry_broker::message::now_ms());
    tokio::spawn(plant.run(broker.shutdown_signal()));
    Ok(())
}

/// Tags fed by both a Modbus device and an OPC UA server (explicit nodes;
/// browsed ones are known only at run time): a tag has one source. Each
/// conflict as an error located at the Modbus device.
pub fn conflicting_feeds(
    modbus: &[DeviceConfig],
    opcua: &[gantry_opcua::ServerConfig],
) -> Vec<gantry_model::ModelError> {
    let mut by_topic = std::collections::HashMap::new();
    for server in opcua {
        for node in &server.nodes {
            by_topic.insert(
                node.topic.as_str(),
                (server.name.as_str(), node.node_id.as_str()),
            );
        }
    }
    let mut errors = Vec::new();
    for device in modbus {
        for point in &device.points {
            if let Some((server, node)) = by_topic.get(point.topic.as_str()) {
                errors.push(gantry_model::ModelError {
                    file: device.origin.file.clone(),
                    line: device.origin.host_line,
                    column: device.origin.host_column,
                    field: device.origin.field.clone(),
                    message: format!(
                        "tag \"{}\" is read from Modbus device \"{}\" and from OPC UA server \"{server}\" (node {node})",
                        point.topic, device.name
                    ),
                    hint: Some("a tag has one source: map it in one of them".to_owned()),
                });
            }
        }
    }
    errors
}
