//! The `gantry` command: run a plant's Unified Namespace from a config file,
//! run the demo plant, or check a plant model.

mod admin_cmd;
mod audit_cmd;
mod cert;
mod check;
mod config;
mod console;
mod contracts;
mod history;
mod history_cmd;
mod kpi_cmd;
mod kpi_live;
mod opcua_cmd;
mod sources;
mod tls_config;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry_broker::hooks::{Hooks, PublishInspector};
use gantry_broker::{Broker, BrokerConfig};
use gantry_connectors::{Simulator, SimulatorConfig, Source};
use gantry_contracts::{ContractSettings, UnmodeledPolicy};
use gantry_model::PlantModel;

use gantry_security::audit::{AuditLog, AuditOptions};
use gantry_security::service::Security;
use gantry_security::writeback::WriteGate;
use gantry_security::{AnonymousAccess, SecurityStore};

use crate::config::GantryConfig;
use crate::contracts::Contracts;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "The Unified Namespace for a plant, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Gantry from a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the demo plant on 127.0.0.1 with embedded defaults.
    Demo {
        /// Where the demo keeps its retained state and sessions.
        #[arg(long, default_value = "gantry-demo-data")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1883)]
        mqtt_port: u16,
        #[arg(long, default_value_t = 8083)]
        ws_port: u16,
        /// First port of the simulated PLCs (one per machine, Modbus TCP on
        /// 127.0.0.1); 0 picks free ports.
        #[arg(long, default_value_t = 5020)]
        modbus_base_port: u16,
        /// Simulator seed: the same seed replays the same plant.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The web console and HTTP API (HTTP on 127.0.0.1); 0 picks a free port.
        #[arg(long, default_value_t = 8080)]
        console_port: u16,
    },
    /// Check site models (optionally against an enterprise standard), or
    /// compare two versions of a standard with --compat.
    Check(check::CheckArgs),
    /// Create a local CA and server and client certificates for TLS trials.
    Cert(cert::CertArgs),
    /// Manage identities: people, services and devices that may connect.
    User {
        #[command(subcommand)]
        cmd: admin_cmd::UserCommand,
    },
    /// Manage roles: named permissions on namespace patterns.
    Role {
        #[command(subcommand)]
        cmd: admin_cmd::RoleCommand,
    },
    /// Check, show and export the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: audit_cmd::AuditCommand,
    },
    /// Query the historian: raw values, aggregates, snapshots, exports.
    History {
        #[command(flatten)]
        location: history_cmd::HistoryLocation,
        #[command(subcommand)]
        cmd: history_cmd::HistoryCommand,
    },
    /// Harmonized KPIs (ISO 22400): show OEE and its factors for a unit,
    /// line or site over a period, and explain how each was obtained.
    Kpi {
        #[command(flatten)]
        location: kpi_cmd::KpiLocation,
        #[command(subcommand)]
        cmd: kpi_cmd::KpiCommand,
    },
    /// OPC UA client certificates: trust server certificates, list them.
    Opcua {
        #[command(subcommand)]
        cmd: opcua_cmd::OpcuaCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check(args) => return check::run(&args),
        Command::Cert(args) => return exit_code(cert::run(&args).map(|()| ExitCode::SUCCESS)),
        Command::User { cmd } => return exit_code(admin_cmd::run_user(&cmd)),
        Command::Role { cmd } => return exit_code(admin_cmd::run_role(&cmd)),
        Command::Audit { cmd } => return exit_code(audit_cmd::run_command(&cmd)),
        Command::Opcua { cmd } => return exit_code(opcua_cmd::run(&cmd)),
        Command::History { location, cmd } => return exit_code(history_cmd::run(&location, &cmd)),
        Command::Kpi { location, cmd } => return exit_code(kpi_cmd::run(&location, &cmd)),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(&config))),
        Command::Demo {
            data_dir,
            mqtt_port,
            ws_port,
            modbus_base_port,
            seed,
            console_port,
        } => runtime().and_then(|rt| {
            rt.block_on(demo(DemoPorts {
                data_dir,
                mqtt_port,
                ws_port,
                modbus_base_port,
                seed,
                console_port,
            }))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints an error the way every subcommand does.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("gantry: {e:#}");
        ExitCode::FAILURE
    })
}

fn init_logging() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // rustls warns about every client's harmless protocol quirks (an IP
    // address sent as SNI, as Mosquitto's clients do); Gantry logs each failed
    // handshake itself. `GANTRY_LOG=rustls=debug` still shows them.
    if !std::env::var("GANTRY_LOG").is_ok_and(|v| v.contains("rustls"))
        && let Ok(quiet) = "rustls=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gantry")
        .build()
        .context("cannot start the async runtime")
}

async fn start(
    config: BrokerConfig,
    hooks: Hooks,
) -> anyhow::Result<(Broker, gantry_broker::BoundAddrs)> {
    let data_dir = config.data_dir.clone();
    let broker = Broker::open(config, hooks)
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let bound = broker.listen().await?;
    broker.spawn_sys_publisher();
    Ok((broker, bound))
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = GantryConfig::load(path)?;
    let model = match &config.model {
        Some(m) => Some(
            contracts::load_site(m, config.standard.as_deref())
                .map_err(|e| anyhow::anyhow!("invalid plant model:\n{}", e.join("\n")))?,
        ),
        None if config.standard.is_some() => {
            anyhow::bail!(
                "{}: `standard` is set but no `model` to check against it",
                path.display()
            )
        }
        None => None,
    };
    // `[[modbus]]` devices in the site model; a bad one aborts the start.
    let modbus_devices = match (&config.model, &model) {
        (Some(path), Some(m)) => gantry_connectors::modbus::load_devices(path, m)
            .map_err(|e| anyhow::anyhow!("invalid Modbus configuration:\n{e}"))?,
        _ => Vec::new(),
    };
    // `[[opcua]]` servers in the site model; a bad one aborts the start.
    let opcua_servers = match (&config.model, &model) {
        (Some(path), Some(m)) => gantry_opcua::load_servers(path, m)
            .map_err(|e| anyhow::anyhow!("invalid OPC UA configuration:\n{e}"))?,
        _ => Vec::new(),
    };
    // `[kpi]` work units and calendars; a bad definition aborts the start.
    let kpi_config = match (&config.model, &model) {
        (Some(path), Some(m)) => gantry_kpi::config::load(path, m, config.standard.as_deref())
            .map_err(|e| {
                let lines: Vec<String> = e.iter().map(|e| e.to_string()).collect();
                anyhow::anyhow!("invalid KPI definitions:\n{}", lines.join("\n"))
            })?,
        _ => None,
    };
    let conflicts = sources::conflicting_feeds(&modbus_devices, &opcua_servers);
    if !conflicts.is_empty() {
        let lines: Vec<String> = conflicts.iter().map(|e| e.to_string()).collect();
        anyhow::bail!("tags with two sources:\n{}", lines.join("\n"));
    }
    if config.mqtt.is_none()
        && config.websocket.is_none()
        && config.mqtts.is_none()
        && config.wss.is_none()
    {
        anyhow::bail!(
            "{}: no listener configured: add [tls] and [mqtts] bind = \"0.0.0.0:8883\" (or, insecure, [mqtt] bind = \"127.0.0.1:1883\")",
            path.display()
        );
    }
    let tls = tls_config::from_config(&config, path)?;
    let security = open_security(&config.data_dir, config.auth.anonymous_access())?;
    let simulating = config.simulator.as_ref().is_some_and(|s| s.enabled);
    let contracts = config.contracts.enabled.then(|| {
        // Without a model the simulator plays the demo plant, so that is the
        // model its data is checked against.
        let enforced = match (&model, simulating) {
            (Some(m), _) => Some(m.clone()),
            (None, true) => Some(PlantModel::demo()),
            (None, false) => None,
        };
        if enforced.is_none() {
            tracing::warn!(
                "no plant model configured: every data topic is unmodeled ([contracts] unmodeled = \"{}\")",
                config.contracts.settings().unmodeled
            );
        }
        let mut c = Contracts::new(enforced, config.contracts.settings(), config.model.clone());
        c.standard_file.clone_from(&config.standard);
        c
    });
    // Writes to machines are gated by the same model's write allow-list.
    let gated_model = match (&model, simulating) {
        (Some(m), _) => Some(m.clone()),
        (None, true) => Some(PlantModel::demo()),
        (None, false) => None,
    };
    let write_gate = Arc::new(WriteGate::new(
        gated_model,
        config.contracts.settings(),
        security.audit().cloned(),
    ));
    let contracts = contracts.map(|mut c| {
        c.write_gate = Some(write_gate.clone());
        c.audit = security.audit().cloned();
        c
    });
    let mut inspectors: Vec<Arc<dyn PublishInspector>> =
        contracts.iter().map(Contracts::as_inspector).collect();
    inspectors.push(write_gate);
    let tag_sources = console::tag_sources(&modbus_devices, &opcua_servers);
    // Released writes reach the Modbus device that owns the tag.
    let (modbus_devices, command_router, write_outcomes) =
        sources::CommandRouter::for_devices(modbus_devices);
    let mut observers: Vec<Arc<dyn gantry_broker::hooks::PublishObserver>> = Vec::new();
    if !command_router.is_empty() {
        observers.push(Arc::new(command_router));
    }
    let historian = history::start(
        &config.historian,
        &config.data_dir,
        contracts.as_ref().map(|c| &c.inspector),
    )?;
    if let Some(h) = &historian {
        observers.push(h.recorder());
    }
    let kpi_definitions = kpi_config.clone().map(Arc::new);
    let live_kpis = kpi_config.map(kpi_live::prepare).map(|(feed, live)| {
        observers.push(feed);
        live
    });
    let live_hub = config.console.as_ref().map(|_| {
        let hub = gantry_console::LiveHub::new();
        observers.push(hub.clone());
        hub
    });
    let hooks = Hooks {
        authenticator: security.clone(),
        authorizer: security.clone(),
        inspectors,
        observers,
    };
    let console_https = match config.console.as_ref().and_then(|c| c.https_bind) {
        Some(addr) => match &tls {
            Some(tls) => Some((addr, tls.clone())),
            None => anyhow::bail!(
                "{}: [console] https_bind needs a [tls] section with the server's `cert` and `key`",
                path.display()
            ),
        },
        None => None,
    };
    let mut broker_config = config.broker_config();
    broker_config.tls = tls;
    let sys_interval = broker_config.sys_interval;
    let (broker, bound) = start(broker_config, hooks).await?;
    log_listeners(&bound);
    warn_plain_listeners(&bound);
    if let Some(c) = &contracts {
        c.start(&broker, sys_interval);
    }
    if let Some(h) = &historian {
        history::spawn_status(&broker, h, sys_interval);
    }
    let kpi_engine = live_kpis.map(|live| kpi_live::spawn(live, &broker, historian.clone()));
    if let (Some(console_config), Some(live)) = (&config.console, live_hub) {
        if console_config.bind.is_none() && console_https.is_none() {
            anyhow::bail!(
                "{}: [console] needs `https_bind` (with [tls]) or `bind` (plain HTTP)",
                path.display()
            );
        }
        let parts = console::Parts {
            live,
            security: security.clone(),
            security_store: SecurityStore::in_data_dir(&config.data_dir),
            contracts: contracts.as_ref().map(|c| c.inspector.clone()),
            historian: historian.clone(),
            kpi: kpi_definitions
                .zip(kpi_engine)
                .map(|(config, engine)| gantry_console::KpiAccess { config, engine }),
            sources: tag_sources,
            settings: console_config.settings(),
        };
        let listeners = gantry_console::Listeners {
            http: console_config.bind,
            https: console_https,
        };
        console::start(&broker, parts, listeners).await?;
    }
    if let Some(sim) = config.simulator.as_ref().filter(|s| s.enabled) {
        let machines = match &model {
            Some(m) => sources::simulated_machines(m),
            None => SimulatorConfig::demo_plant().machines,
        };
        let mut sim_config = SimulatorConfig::new(machines);
        sim_config.seed = sim.seed;
        sim_config.tick = Duration::from_millis(sim.tick_ms.max(1));
        spawn_simulator(&broker, sim_config);
    }
    sources::spawn_write_auditor(write_outcomes, security.audit().cloned());
    sources::spawn_modbus(&broker, modbus_devices);
    sources::spawn_opcua(&broker, &config.data_dir, opcua_servers)?;
    let result = wait_for_shutdown(&broker, contracts.as_ref()).await;
    history::stop(historian).await;
    result
}

/// Opens the audit log and the security file of `data_dir` and says at start
/// who can get in.
fn open_security(
    data_dir: &std::path::Path,
    anonymous: AnonymousAccess,
) -> anyhow::Result<Arc<Security>> {
    let audit_dir = data_dir.join("audit");
    let audit = AuditLog::open(&audit_dir, AuditOptions::default())
        .with_context(|| format!("cannot open the audit log in {}", audit_dir.display()))?;
    let store = SecurityStore::in_data_dir(data_dir);
    let security = Security::open(store.clone(), anonymous.clone(), Some(audit))
        .context("cannot load identities and roles")?;
    let identities = security.policy().identity_count();
    if anonymous.enabled() {
        let grants: Vec<String> = anonymous
            .permissions
            .iter()
            .map(|p| p.to_string())
            .collect();
        tracing::warn!(
            "anonymous clients are allowed{}: {} (insecure outside trials)",
            if anonymous.loopback_only {
                " from 127.0.0.1 only"
            } else {
                ""
            },
            grants.join(", ")
        );
    }
    if identities == 0 && !anonymous.enabled() {
        tracing::warn!(
            "no identities in {} and anonymous access is off: every client is refused until one is created with `gantry user add`",
            store.path().display()
        );
    } else {
        tracing::info!(
            identities,
            "identities and roles loaded from {}",
            store.path().display()
        );
    }
    let security = Arc::new(security);
    security.spawn_refresher(Duration::from_secs(1));
    Ok(security)
}

fn spawn_simulator(broker: &Broker, config: SimulatorConfig) {
    sources::spawn_source(broker.clone(), move || {
        let sim = Simulator::new(config.clone()).context("invalid simulator configuration")?;
        Ok(Box::new(sim) as Box<dyn Source>)
    });
}

fn log_listeners(bound: &gantry_broker::BoundAddrs) {
    if let Some(a) = bound.mqtt {
        tracing::info!("MQTT listening on {a} (plain TCP)");
    }
    if let Some(a) = bound.websocket {
        tracing::info!("MQTT over WebSocket listening on ws://{a}/mqtt");
    }
    if let Some(a) = bound.mqtts {
        tracing::info!("MQTT over TLS listening on {a}");
    }
    if let Some(a) = bound.wss {
        tracing::info!("MQTT over secure WebSocket listening on wss://{a}/mqtt");
    }
}

/// Plain listeners are opt-in; each one is named as insecure at start.
fn warn_plain_listeners(bound: &gantry_broker::BoundAddrs) {
    if let Some(a) = bound.mqtt {
        tracing::warn!(
            "plain MQTT listener on {a} is insecure (no TLS); configure [tls] and [mqtts]"
        );
    }
    if let Some(a) = bound.websocket {
        tracing::warn!(
            "plain WebSocket listener on {a} is insecure (no TLS); configure [tls] and [wss]"
        );
    }
}

/// The demo's command-line settings.
struct DemoPorts {
    data_dir: PathBuf,
    mqtt_port: u16,
    ws_port: u16,
    modbus_base_port: u16,
    seed: u64,
    console_port: u16,
}

async fn demo(ports: DemoPorts) -> anyhow::Result<()> {
    let DemoPorts {
        data_dir,
        mqtt_port,
        ws_port,
        modbus_base_port,
        seed,
        console_port,
    } = ports;
    let model = PlantModel::demo();
    let logins = console::demo_logins(&data_dir)?;
    let mut config = BrokerConfig::new(&data_dir);
    config.mqtt_bind = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, mqtt_port)));
    config.websocket_bind = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, ws_port)));
    let contracts = Contracts::new(
        Some(model.clone()),
        ContractSettings {
            unmodeled: UnmodeledPolicy::Allow,
            ..ContractSettings::default()
        },
        None,
    );
    let security = open_security(
        &data_dir,
        AnonymousAccess {
            permissions: ["publish:#", "subscribe:#", "subscribe:$SYS/#"]
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect(),
            loopback_only: true,
        },
    )?;
    let write_gate = Arc::new(WriteGate::new(
        Some(model.clone()),
        contracts.inspector.settings().clone(),
        security.audit().cloned(),
    ));
    let historian = history::start(
        &gantry_historian::HistorianConfig::default(),
        &data_dir,
        Some(&contracts.inspector),
    )?;
    let kpi_config = gantry_kpi::config::parse(
        gantry_model::DEMO_PLANT_TOML,
        "demo-plant.toml",
        &model,
        &[],
    )
    .map_err(|e| {
        let lines: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("the demo plant's KPI definitions:\n{}", lines.join("\n"))
    })?;
    let mut observers: Vec<Arc<dyn gantry_broker::hooks::PublishObserver>> = historian
        .iter()
        .map(|h| h.recorder() as Arc<dyn gantry_broker::hooks::PublishObserver>)
        .collect();
    let kpi_definitions = kpi_config.clone().map(Arc::new);
    let live_kpis = kpi_config.map(kpi_live::prepare).map(|(feed, live)| {
        observers.push(feed);
        live
    });
    let live_hub = gantry_console::LiveHub::new();
    observers.push(live_hub.clone());
    let hooks = Hooks {
        authenticator: security.clone(),
        authorizer: security.clone(),
        inspectors: vec![contracts.as_inspector(), write_gate],
        observers,
    };
    tracing::warn!(
        "DEMO MODE: anonymous clients are allowed, from 127.0.0.1 only. Use `gantry run --config FILE` in production."
    );
    let sys_interval = config.sys_interval;
    let (broker, bound) = start(config, hooks).await?;
    log_listeners(&bound);
    contracts.start(&broker, sys_interval);
    if let Some(h) = &historian {
        history::spawn_status(&broker, h, sys_interval);
    }
    let kpi_engine = live_kpis.map(|live| kpi_live::spawn(live, &broker, historian.clone()));
    // The machines are simulated PLCs on Modbus TCP, polled by the Modbus
    // connector with the `[[modbus]]` devices of the demo plant file.
    let mut devices = gantry_connectors::modbus::parse_devices(
        gantry_model::DEMO_PLANT_TOML,
        "demo-plant.toml",
        &model,
    )
    .map_err(|e| anyhow::anyhow!("the demo plant's Modbus devices:\n{e}"))?;
    let parts = console::Parts {
        live: live_hub,
        security: security.clone(),
        security_store: SecurityStore::in_data_dir(&data_dir),
        contracts: Some(contracts.inspector.clone()),
        historian: historian.clone(),
        kpi: kpi_definitions
            .zip(kpi_engine)
            .map(|(config, engine)| gantry_console::KpiAccess { config, engine }),
        sources: console::tag_sources(&devices, &[]),
        settings: gantry_console::ConsoleSettings::default(),
    };
    // A busy default port must not stop the demo: the console moves to a
    // free port and says so.
    let on = |port: u16| gantry_console::Listeners {
        http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        https: None,
    };
    let console_bound = match console::start(&broker, parts.clone(), on(console_port)).await {
        Ok(bound) => bound,
        Err(e) if console_port != 0 => {
            tracing::warn!(
                "{e:#}; the console takes a free port instead (--console-port sets one)"
            );
            console::start(&broker, parts, on(0))
                .await
                .context("the demo's console")?
        }
        Err(e) => return Err(e.context("the demo's console")),
    };
    let console_url = console_bound
        .http
        .map_or_else(|| "(not running)".to_owned(), |a| format!("http://{a}/"));
    let login_lines: Vec<String> = logins
        .iter()
        .map(|(user, role, password)| match password {
            Some(p) => format!("  user {user:<9} password {p}   ({role})"),
            None => format!("  user {user:<9} (password set outside the demo)   ({role})"),
        })
        .collect();
    sources::start_simulated_plcs(&broker, &model, &mut devices, modbus_base_port, seed).await?;
    let plc_ports: Vec<String> = devices.iter().map(|d| d.port.to_string()).collect();
    sources::spawn_modbus(&broker, devices.into_iter().map(|d| (d, None)).collect());
    println!(
        "\nGantry demo plant is running: enterprise {}, {} machines, {} tags, data in {}.\n\n\
         Open the console: {console_url}\n\
         Log in with one of (kept in {data}/console-logins.txt):\n{logins}\n\n\
         The machines are simulated PLCs on Modbus TCP (127.0.0.1 ports {}), polled by the\n\
         Modbus connector (register map: docs/demo-plant.md).\n\
         Next, in another terminal:\n  \
         mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'acme/#' -v          # watch the plant\n  \
         mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t '$SYS/#' -v          # broker statistics\n  \
         mosquitto_pub -h 127.0.0.1 -p {mqtt_port} -t acme/dallas/note -m hi -r   # write retained state\n  \
         mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'acme/_dlq/#' -v     # messages that broke a data contract\n  \
         mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -t 'acme/+/+/+/_kpi/#' -v   # live OEE of each line\n  \
         gantry kpi show acme/dallas/packaging/line-1 --data-dir {data}      # OEE and its inputs\n  \
         gantry kpi explain acme/dallas/packaging/line-1/filler --data-dir {data}   # every minute of the shift\n\
         Press Ctrl-C to stop.\n",
        model.enterprise(),
        model.equipment().len(),
        model.tag_count(),
        data_dir.display(),
        plc_ports.join(", "),
        data = data_dir.display(),
        logins = login_lines.join("\n"),
    );
    let result = wait_for_shutdown(&broker, Some(&contracts)).await;
    history::stop(historian).await;
    result
}

/// Waits for Ctrl-C or SIGTERM; SIGHUP reloads the plant model (when
/// `contracts` has a model file) and keeps running.
async fn wait_for_shutdown(broker: &Broker, contracts: Option<&Contracts>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => match contracts {
                Some(c) => c.reload(broker),
                None => tracing::warn!("SIGHUP: data contracts are disabled; nothing to reload"),
            },
        }
    }
    tracing::info!("shutting down");
    broker.shutdown().await;
    Ok(())
}
