//! The Modbus poller against an in-process tokio-modbus TCP server on
//! 127.0.0.1: values reach the sink with the right types and scaling, an
//! exception marks only its request's points bad, and a server that goes
//! away turns every tag bad until it returns. All waits are bounded polls
//! of the received state; no test asserts how long anything took.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_connectors::modbus::{DeviceConfig, ModbusSource, StatusHandle, parse_devices};
use gantry_connectors::{Sink, Source, SourceMessage};
use gantry_model::{PlantModel, Quality, Sample, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_modbus::bytes::Bytes;
use tokio_modbus::prelude::{
    ConformityLevel, DeviceIdObject, ReadCode, ReadDeviceIdentificationResponse,
};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

const WAIT: Duration = Duration::from_secs(20);
const FILLER: &str = "acme/dallas/packaging/line-1/filler";

// ------------------------------------------------------------ the server --

#[derive(Default)]
struct Data {
    holding: HashMap<u16, u16>,
    input: HashMap<u16, u16>,
    coils: HashMap<u16, bool>,
    /// Holding reads touching 100..=109 answer "illegal data address".
    fail_100: bool,
}

#[derive(Clone)]
struct Device(Arc<Mutex<Data>>);

impl tokio_modbus::server::Service for Device {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let data = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let words = |map: &HashMap<u16, u16>, a: u16, n: u16| -> Vec<u16> {
            (a..a + n)
                .map(|i| map.get(&i).copied().unwrap_or(0))
                .collect()
        };
        ready(match req {
            Request::ReadHoldingRegisters(a, n) => {
                if data.fail_100 && a < 110 && a + n > 100 {
                    Err(ExceptionCode::IllegalDataAddress)
                } else {
                    Ok(Response::ReadHoldingRegisters(words(&data.holding, a, n)))
                }
            }
            Request::ReadInputRegisters(a, n) => {
                Ok(Response::ReadInputRegisters(words(&data.input, a, n)))
            }
            Request::ReadCoils(a, n) => Ok(Response::ReadCoils(
                (a..a + n)
                    .map(|i| data.coils.get(&i).copied().unwrap_or(false))
                    .collect(),
            )),
            Request::ReadDeviceIdentification(ReadCode::Basic, _) => Ok(
                Response::ReadDeviceIdentification(ReadDeviceIdentificationResponse {
                    read_code: ReadCode::Basic,
                    conformity_level: ConformityLevel::BasicIdentificationStreamOnly,
                    more_follows: false,
                    next_object_id: 0,
                    device_id_objects: vec![
                        DeviceIdObject {
                            id: 0,
                            value: Bytes::from_static(b"Gantry Test"),
                        },
                        DeviceIdObject {
                            id: 1,
                            value: Bytes::from_static(b"SIM-1"),
                        },
                        DeviceIdObject {
                            id: 2,
                            value: Bytes::from_static(b"1.2"),
                        },
                    ],
                }),
            ),
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// A running server; dropping the stop sender closes the listener and every
/// connection.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(WAIT, &mut self.task).await;
    }
}

async fn serve(addr: SocketAddr, data: Arc<Mutex<Data>>) -> (Running, SocketAddr) {
    let mut listener = None;
    // A just-closed port can take a moment to be bindable again.
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.unwrap_or_else(|| panic!("cannot bind {addr}"));
    let bound = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let device = Device(data);
        let on_connected = move |stream, socket_addr| {
            let device = device.clone();
            async move { accept_tcp_connection(stream, socket_addr, move |_| Ok(Some(device.clone()))) }
        };
        let abort = async move {
            let _ = rx.await;
        };
        let _ = Server::new(listener)
            .serve_until(&on_connected, |_e| {}, abort)
            .await;
    });
    (
        Running {
            stop: Some(tx),
            task,
        },
        bound,
    )
}

// ------------------------------------------------------------ the device --

fn site(port: u16) -> String {
    format!(
        r#"enterprise = "acme"

[[site]]
name = "dallas"

[[equipment]]
path = "{FILLER}"

[equipment.tags.speed]
type = "float"
[equipment.tags.count]
type = "int"
[equipment.tags.temperature]
type = "float"
[equipment.tags.running]
type = "bool"
[equipment.tags.alarm]
type = "bool"
[equipment.tags.state]
type = "enum"
values = ["stopped", "running", "faulted"]
[equipment.tags.batch]
type = "string"
[equipment.tags.pressure]
type = "float"

[[modbus]]
name = "filler-plc"
host = "127.0.0.1"
port = {port}
poll_ms = 100
timeout_ms = 300
equipment = "{FILLER}"

[[modbus.point]]
tag = "speed"
table = "holding"
address = 0
type = "float32"
scale = 0.5

[[modbus.point]]
tag = "count"
table = "holding"
address = 2
type = "uint32"
scale = 10

[[modbus.point]]
tag = "state"
table = "holding"
address = 4
type = "uint16"
enum = {{ 0 = "stopped", 1 = "running", 2 = "faulted" }}

[[modbus.point]]
tag = "batch"
table = "holding"
address = 5
type = "string"
length = 3

[[modbus.point]]
tag = "alarm"
table = "holding"
address = 8
type = "bit"
bit = 2

[[modbus.point]]
tag = "pressure"
table = "holding"
address = 100
type = "int16"
scale = 0.01

[[modbus.point]]
tag = "temperature"
table = "input"
address = 0
type = "int16"
scale = 0.1
offset = -40

[[modbus.point]]
tag = "running"
table = "coil"
address = 3
type = "bool"
"#
    )
}

fn device(port: u16) -> DeviceConfig {
    let src = site(port);
    let model = PlantModel::parse(&src, "site.toml").unwrap_or_else(|e| panic!("{e}"));
    let mut devices = parse_devices(&src, "site.toml", &model).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(devices.len(), 1);
    devices.remove(0)
}

fn fill(data: &Mutex<Data>) {
    let mut d = data.lock().unwrap_or_else(|e| e.into_inner());
    let speed = 1200.5f32.to_bits();
    d.holding.insert(0, (speed >> 16) as u16);
    d.holding.insert(1, speed as u16);
    d.holding.insert(2, 0x0001);
    d.holding.insert(3, 0x0002); // 65538
    d.holding.insert(4, 1); // running
    d.holding.insert(5, u16::from_be_bytes(*b"B-"));
    d.holding.insert(6, u16::from_be_bytes(*b"42"));
    d.holding.insert(7, 0);
    d.holding.insert(8, 0b100);
    d.holding.insert(100, 150); // 1.5
    d.input.insert(0, 653); // 25.3 degC
    d.coils.insert(3, true);
}

// ------------------------------------------------------------- the sink --

/// The namespace as the sink saw it: the latest sample per topic, and every
/// sample in order.
struct Namespace {
    rx: mpsc::Receiver<SourceMessage>,
    latest: HashMap<String, Sample>,
    history: Vec<(String, Sample)>,
    health: Option<serde_json::Value>,
}

impl Namespace {
    fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            assert!(msg.retain, "{}", msg.topic);
            if msg.topic.contains("/_sys/") {
                self.health = serde_json::from_slice(&msg.payload).ok();
                continue;
            }
            let sample = Sample::parse(&msg.payload, 0).unwrap_or_else(|e| panic!("{e}"));
            self.latest.insert(msg.topic.clone(), sample.clone());
            self.history.push((msg.topic, sample));
        }
    }

    fn get(&self, tag: &str) -> Option<&Sample> {
        self.latest.get(&format!("{FILLER}/{tag}"))
    }

    /// Waits (bounded) until `done` holds for the received state.
    async fn until(&mut self, what: &str, done: impl Fn(&Namespace) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.drain();
            if done(self) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; latest: {:#?}\nhealth: {:?}",
                    self.latest, self.health
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn quality_of(ns: &Namespace, tag: &str) -> Option<Quality> {
    ns.get(tag).map(|s| s.quality)
}

const READ_TAGS: [&str; 8] = [
    "speed",
    "count",
    "state",
    "batch",
    "alarm",
    "pressure",
    "temperature",
    "running",
];

fn start_source(device: DeviceConfig) -> (Namespace, StatusHandle, watch::Sender<bool>) {
    let (tx, rx) = mpsc::channel(10_000);
    let sink: Arc<dyn Sink> = Arc::new(tx);
    let source = ModbusSource::new(device);
    // speed+count+state+batch+alarm (0..9), pressure (100), input, coil.
    assert_eq!(source.requests().len(), 4);
    let status = source.status();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(Box::new(source).run(sink, stop_rx));
    (
        Namespace {
            rx,
            latest: HashMap::new(),
            history: Vec::new(),
            health: None,
        },
        status,
        stop_tx,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_with_types_scaling_and_quality() {
    let data = Arc::new(Mutex::new(Data::default()));
    fill(&data);
    let (server, addr) = serve(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        data.clone(),
    )
    .await;
    let (mut ns, status, stop) = start_source(device(addr.port()));

    ns.until("every tag good", |ns| {
        READ_TAGS
            .iter()
            .all(|t| quality_of(ns, t) == Some(Quality::Good))
    })
    .await;
    let value = |ns: &Namespace, tag: &str| ns.get(tag).map(|s| s.value.clone());
    assert_eq!(value(&ns, "speed"), Some(Value::Float(600.25)));
    assert_eq!(value(&ns, "count"), Some(Value::Int(655_380)));
    assert_eq!(value(&ns, "state"), Some(Value::Text("running".into())));
    assert_eq!(value(&ns, "batch"), Some(Value::Text("B-42".into())));
    assert_eq!(value(&ns, "alarm"), Some(Value::Bool(true)));
    assert_eq!(value(&ns, "pressure"), Some(Value::Float(1.5)));
    match value(&ns, "temperature") {
        Some(Value::Float(t)) => assert!((t - 25.3).abs() < 1e-9, "{t}"),
        other => panic!("temperature: {other:?}"),
    }
    assert_eq!(value(&ns, "running"), Some(Value::Bool(true)));

    // Unchanged values are not republished.
    let published = ns.history.len();
    ns.until("a health record", |ns| ns.health.is_some()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    ns.drain();
    assert_eq!(
        ns.history.len(),
        published,
        "{:#?}",
        &ns.history[published..]
    );

    // A change is.
    {
        let mut d = data.lock().unwrap_or_else(|e| e.into_inner());
        d.holding.insert(4, 2);
    }
    ns.until("state faulted", |ns| {
        ns.get("state").map(|s| &s.value) == Some(&Value::Text("faulted".into()))
    })
    .await;

    // Device identification was read and kept.
    let identity = status.identity().unwrap_or_else(|| panic!("no identity"));
    assert_eq!(identity.vendor_name.as_deref(), Some("Gantry Test"));
    assert_eq!(identity.product_code.as_deref(), Some("SIM-1"));
    assert_eq!(identity.revision.as_deref(), Some("1.2"));

    // An exception on the pressure request marks only pressure bad.
    let before = ns.history.len();
    data.lock().unwrap_or_else(|e| e.into_inner()).fail_100 = true;
    ns.until("pressure bad", |ns| {
        quality_of(ns, "pressure") == Some(Quality::Bad)
    })
    .await;
    let bad = ns
        .get("pressure")
        .cloned()
        .unwrap_or_else(|| unreachable!());
    assert_eq!(bad.value, Value::Float(1.5), "the last value is kept");
    tokio::time::sleep(Duration::from_millis(400)).await;
    ns.drain();
    for (topic, sample) in &ns.history[before..] {
        if !topic.ends_with("/pressure") {
            assert_eq!(sample.quality, Quality::Good, "{topic}: {sample:?}");
        }
    }
    assert!(status.snapshot().connected);
    assert!(status.snapshot().errors.exception >= 1);
    data.lock().unwrap_or_else(|e| e.into_inner()).fail_100 = false;
    ns.until("pressure good again", |ns| {
        quality_of(ns, "pressure") == Some(Quality::Good)
    })
    .await;

    // The server goes away: every tag turns bad and keeps its last value.
    server.stop().await;
    ns.until("every tag bad", |ns| {
        READ_TAGS
            .iter()
            .all(|t| quality_of(ns, t) == Some(Quality::Bad))
    })
    .await;
    assert_eq!(value(&ns, "speed"), Some(Value::Float(600.25)));
    ns.until("health says disconnected", |ns| {
        ns.health
            .as_ref()
            .is_some_and(|h| h["connected"] == serde_json::json!(false))
    })
    .await;
    assert!(!status.snapshot().connected);

    // It comes back: good again, on a new connection.
    let (server, _) = serve(addr, data.clone()).await;
    ns.until("every tag good again", |ns| {
        READ_TAGS
            .iter()
            .all(|t| quality_of(ns, t) == Some(Quality::Good))
    })
    .await;
    ns.until("health says connected after a reconnect", |ns| {
        ns.health.as_ref().is_some_and(|h| {
            h["connected"] == serde_json::json!(true)
                && h["reconnects"].as_u64().is_some_and(|n| n >= 1)
        })
    })
    .await;
    let health = ns.health.clone().unwrap_or_default();
    assert_eq!(health["device"], "filler-plc");
    assert_eq!(health["requests_per_poll"], 4);
    assert_eq!(health["points"], 8);
    assert_eq!(health["identity"]["vendor_name"], "Gantry Test");
    assert!(
        health["errors"]["exception"]
            .as_u64()
            .is_some_and(|n| n >= 1)
    );
    assert!(health["last_success_ms"].as_u64().is_some());
    assert!(health["poll_duration_ms"].as_u64().is_some());

    let _ = stop.send(true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_device_publishes_nothing_but_health() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or(1)
    };
    let (mut ns, status, stop) = start_source(device(port));
    ns.until("a failed connect in the health record", |ns| {
        ns.health.as_ref().is_some_and(|h| {
            h["connected"] == serde_json::json!(false)
                && h["errors"]["transport"].as_u64().is_some_and(|n| n >= 1)
        })
    })
    .await;
    // Points never read publish nothing: no made-up values.
    assert!(ns.latest.is_empty(), "{:?}", ns.latest);
    assert!(status.snapshot().last_error.is_some());
    let _ = stop.send(true);
}
