//! Wiring sources to the broker: the [`Sink`] that in-process sources publish
//! through, the simulator built from a plant model, and the Modbus devices.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gantry_broker::Broker;
use gantry_codec::QoS;
use gantry_connectors::modbus::{DeviceConfig, ModbusSource};
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

/// Starts one source per `[[modbus]]` device.
pub fn spawn_modbus(broker: &Broker, devices: Vec<DeviceConfig>) {
    for device in devices {
        spawn_source(broker.clone(), move || {
            Ok(Box::new(ModbusSource::new(device.clone())) as Box<dyn Source>)
        });
    }
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
