//! `gantry-loadgen`: measures an MQTT broker — throughput, loss and latency of
//! point-to-point, fan-in and fan-out flows at QoS 0 and 1, memory per idle
//! connection, and retained-message storage and serving — so that Gantry and
//! Mosquitto can be run through the same load (see `bench/run.sh`).
//!
//! Each subcommand prints a text summary, or one JSON line with `--json`; the
//! `report` subcommand turns collected JSON lines into a Markdown table.

mod client;
mod flow;
mod histogram;
mod history;
mod idle;
mod modbus;
mod outcome;
mod payload;
mod procfs;
mod report;
mod retained;
#[cfg(test)]
mod testbroker;
#[cfg(test)]
mod tests;
mod tracker;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gantry_codec::{ProtocolVersion, QoS};

use crate::client::ConnectOptions;
use crate::outcome::Outcome;

#[derive(Parser)]
#[command(
    name = "gantry-loadgen",
    version,
    about = "MQTT load generator: throughput, loss, latency and memory of a broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A Modbus TCP device whose holding registers 0..N all change every
    /// interval (for the Modbus connector benchmark).
    ModbusServer {
        #[arg(long, default_value_t = 15020)]
        port: u16,
        #[arg(long, default_value_t = 1000)]
        registers: usize,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Seconds to serve.
        #[arg(long, default_value_t = 30.0)]
        duration: f64,
    },
    /// One publisher, one subscriber on a unique topic.
    P2p {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        /// Topic to use instead of a unique `bench/p2p/...` one (e.g. a
        /// modeled tag, to measure contract enforcement).
        #[arg(long)]
        topic: Option<String>,
    },
    /// N publishers on `bench/fanin/<i>`, one subscriber to `bench/fanin/+`.
    FanIn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 10)]
        publishers: usize,
    },
    /// One publisher, N subscribers to the same topic (throughput counts deliveries).
    FanOut {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
    },
    /// Opens N idle connections, holds them, pings each, closes them.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Seconds to hold the connections open.
        #[arg(long, visible_alias = "duration", default_value_t = 10.0)]
        hold: f64,
        /// Keep-alive in CONNECT, seconds (0 = off).
        #[arg(long, default_value_t = 600)]
        keep_alive: u16,
        /// Connection attempts in progress at once.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
    },
    /// Publishes N retained messages, then times serving them to a `#` subscriber.
    Retained {
        #[command(flatten)]
        common: Common,
        #[arg(long, visible_alias = "count", default_value_t = 100_000)]
        topics: usize,
        #[arg(long, value_enum, default_value = "both")]
        phase: retained::Phase,
        /// QoS 1 messages in flight while publishing.
        #[arg(long, default_value_t = 100)]
        window: u16,
        /// QoS of the verifying subscription.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        sub_qos: u8,
        /// Retry the first connection for up to this many seconds (broker starting).
        #[arg(long, default_value_t = 0.0)]
        wait_ready: f64,
        /// Upper bound for each phase, seconds.
        #[arg(long, visible_alias = "duration", default_value_t = 120.0)]
        timeout: f64,
        /// Verification gives up after this many seconds without a message.
        #[arg(long, default_value_t = 5.0)]
        idle: f64,
    },
    /// Publishes N time-series values at QoS 1 to T tags, each value with its
    /// own timestamp, and times first publish to last PUBACK (the historian's
    /// ingest rate through the broker).
    HistoryIngest {
        #[command(flatten)]
        common: Common,
        /// Topics are `<prefix>/t<i>`; the broker's model must declare them.
        #[arg(long, default_value = "acme/bench/area/line/cell/eq")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        tags: usize,
        #[arg(long, default_value_t = 1_000_000)]
        values: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// QoS 1 values in flight per connection.
        #[arg(long, default_value_t = 1000)]
        window: u16,
        /// Timestamp of each tag's first value (Unix ms; default: a day ago).
        #[arg(long)]
        base_ms: Option<i64>,
        /// Milliseconds between a tag's consecutive values.
        #[arg(long, default_value_t = 1000)]
        step_ms: i64,
        #[arg(long, default_value_t = 600.0)]
        timeout: f64,
    },
    /// Builds a Markdown table (medians, ratios, targets) from JSON result lines.
    Report {
        /// Files of JSON lines (other lines are skipped).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// JSON list of targets: {label, metric, ratio_min|ratio_max|min|max}.
        #[arg(long)]
        targets: Option<PathBuf>,
        /// Broker columns in order; the ratio is the first over the second.
        #[arg(long, value_delimiter = ',', default_value = "gantry,mosquitto")]
        brokers: Vec<String>,
        #[arg(long, default_value = "Gantry vs Mosquitto")]
        title: String,
        /// Also write the table to this file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Options every measuring subcommand takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5 (5.0).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub version: u8,
    /// Print one machine-readable JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Label for the result (defaults to the scenario name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Name of the broker under test, copied into the result.
    #[arg(long, default_value = "")]
    pub broker: String,
    /// Seconds allowed for each TCP connect, CONNACK and SUBACK.
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Pid of the broker under test: its CPU use (flows), VmRSS per idle
    /// connection (idle) and VmRSS growth (retained) are read from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Runtime worker threads; 1 runs everything on the calling thread.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

impl Common {
    pub fn label_or(&self, scenario: &str) -> String {
        if self.label.is_empty() {
            scenario.to_string()
        } else {
            self.label.clone()
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        Ok(ConnectOptions {
            host: self.host.clone(),
            port: self.port,
            version: if self.version == 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            },
            client_id: String::new(),
            keep_alive: 0,
            clean_start: true,
            timeout: seconds(self.connect_timeout, "--connect-timeout")?,
        })
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PayloadFormat {
    Binary,
    Json,
}

/// Load shape shared by the flow subcommands.
#[derive(Args, Clone, Debug)]
struct Load {
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Total messages per second over all publishers (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Payload bytes (at least 28: sequence number and timestamp header).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// `json` sends Gantry time-series samples (for brokers that validate
    /// payloads against data contracts); `binary` the compact header.
    #[arg(long, value_enum, default_value_t = PayloadFormat::Binary)]
    payload_format: PayloadFormat,
    /// Seconds of publishing (always bounds the run, also with --count).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per publisher (stops earlier than --duration if reached).
    #[arg(long)]
    count: Option<u64>,
    /// QoS 1 messages in flight per publisher (capped by the broker's Receive Maximum).
    #[arg(long, default_value_t = 100)]
    window: u16,
    /// Sent-but-undelivered messages allowed before publishers pause (0 = no limit).
    #[arg(long, default_value_t = 1000)]
    max_outstanding: u64,
    /// Most seconds to wait for late deliveries and PUBACKs after publishing.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Most PUBLISH packets encoded into one write.
    #[arg(long, default_value_t = 256)]
    batch: usize,
}

fn seconds(v: f64, what: &str) -> Result<Duration> {
    if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
        bail!("{what} must be between 0 and 86400 seconds, got {v}");
    }
    Ok(Duration::from_secs_f64(v))
}

fn qos(v: u8) -> QoS {
    if v == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

impl Load {
    fn spec(
        &self,
        scenario: &'static str,
        pub_topics: Vec<String>,
        sub_filters: Vec<String>,
        broker_pid: Option<u32>,
    ) -> Result<flow::FlowSpec> {
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--rate must be a positive number of messages per second");
        }
        if self.payload > 16 * 1024 * 1024 {
            bail!("--payload must be at most 16 MiB");
        }
        if self.window == 0 || self.batch == 0 {
            bail!("--window and --batch must be at least 1");
        }
        Ok(flow::FlowSpec {
            scenario,
            pub_topics,
            sub_filters,
            qos: qos(self.qos),
            rate: self.rate,
            payload: self.payload,
            json_payload: self.payload_format == PayloadFormat::Json,
            duration: seconds(self.duration, "--duration")?,
            count: self.count,
            window: self.window,
            max_outstanding: self.max_outstanding,
            drain: seconds(self.drain, "--drain")?,
            batch: self.batch,
            broker_pid,
        })
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

async fn execute(command: Command, process_start: std::time::Instant) -> Result<(Outcome, Common)> {
    match command {
        Command::P2p {
            common,
            load,
            topic,
        } => {
            let topic = topic.unwrap_or_else(|| format!("bench/p2p/{}", unique_suffix()));
            let spec = load.spec("p2p", vec![topic.clone()], vec![topic], common.pid)?;
            let o = flow::run(&common.connect_options()?, spec).await?;
            Ok((o, common))
        }
        Command::FanIn {
            common,
            load,
            publishers,
        } => {
            if publishers == 0 {
                bail!("--publishers must be at least 1");
            }
            let topics = (0..publishers)
                .map(|i| format!("bench/fanin/{i}"))
                .collect();
            let spec = load.spec("fan-in", topics, vec!["bench/fanin/+".into()], common.pid)?;
            let o = flow::run(&common.connect_options()?, spec).await?;
            Ok((o, common))
        }
        Command::FanOut {
            common,
            load,
            subscribers,
        } => {
            if subscribers == 0 {
                bail!("--subscribers must be at least 1");
            }
            let topic = format!("bench/fanout/{}", unique_suffix());
            let spec = load.spec(
                "fan-out",
                vec![topic.clone()],
                vec![topic; subscribers],
                common.pid,
            )?;
            let o = flow::run(&common.connect_options()?, spec).await?;
            Ok((o, common))
        }
        Command::Idle {
            common,
            connections,
            hold,
            keep_alive,
            concurrency,
        } => {
            let spec = idle::IdleSpec {
                connections,
                hold: seconds(hold, "--hold")?,
                keep_alive,
                concurrency,
                pid: common.pid,
                settle: Duration::from_secs(1),
            };
            let o = idle::run(&common.connect_options()?, spec).await?;
            Ok((o, common))
        }
        Command::Retained {
            common,
            topics,
            phase,
            window,
            sub_qos,
            wait_ready,
            timeout,
            idle,
        } => {
            let spec = retained::RetainedSpec {
                topics,
                phase,
                window: window.max(1),
                sub_qos: qos(sub_qos),
                wait_ready: seconds(wait_ready, "--wait-ready")?,
                pid: common.pid,
                timeout: seconds(timeout, "--timeout")?,
                idle: seconds(idle, "--idle")?,
                settle: Duration::from_secs(1),
            };
            let o = retained::run(&common.connect_options()?, spec, process_start).await?;
            Ok((o, common))
        }
        Command::HistoryIngest {
            common,
            prefix,
            tags,
            values,
            connections,
            window,
            base_ms,
            step_ms,
            timeout,
        } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let spec = history::IngestSpec {
                prefix,
                tags,
                values,
                connections,
                window: window.max(1),
                base_ms: base_ms.unwrap_or(now_ms - 86_400_000),
                step_ms,
                timeout: seconds(timeout, "--timeout")?,
            };
            let o = history::run(&common.connect_options()?, spec).await?;
            Ok((o, common))
        }
        Command::Report { .. } | Command::ModbusServer { .. } => {
            bail!("report and modbus-server run without this runtime")
        }
    }
}

fn threads_of(command: &Command) -> usize {
    match command {
        Command::P2p { common, .. }
        | Command::FanIn { common, .. }
        | Command::FanOut { common, .. }
        | Command::Idle { common, .. }
        | Command::Retained { common, .. }
        | Command::HistoryIngest { common, .. } => common.threads,
        Command::Report { .. } | Command::ModbusServer { .. } => 1,
    }
}

fn main_inner() -> Result<i32> {
    let process_start = std::time::Instant::now();
    let cli = Cli::parse();
    if let Command::ModbusServer {
        port,
        registers,
        interval_ms,
        duration,
    } = cli.command
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(modbus::serve(
            port,
            registers,
            Duration::from_millis(interval_ms.max(1)),
            Duration::from_secs_f64(duration.max(0.0)),
        ))?;
        return Ok(0);
    }
    if let Command::Report {
        inputs,
        targets,
        brokers,
        title,
        output,
    } = cli.command
    {
        let md = report::build(&report::ReportSpec {
            inputs,
            targets,
            brokers,
            title,
        })?;
        print!("{md}");
        if let Some(path) = output {
            std::fs::write(&path, &md)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(0);
    }
    let threads = threads_of(&cli.command);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("cannot start the async runtime")?;
    let (outcome, common) = runtime.block_on(execute(cli.command, process_start))?;
    outcome.print(&common);
    Ok(outcome.exit_code)
}

fn main() {
    match main_inner() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("gantry-loadgen: error: {e:#}");
            std::process::exit(1);
        }
    }
}
