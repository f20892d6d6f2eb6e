//! One Modbus TCP device as a [`Source`]: connect, poll the planned reads one
//! at a time, publish changed values with their quality, reconnect with
//! back-off, and publish the connector's health.
//!
//! The link rule: on any timeout or transport error the connection is
//! dropped (a late response would desynchronise the next transaction) and
//! every point of the device turns `bad`; a Modbus exception marks only the
//! points of the request that got it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gantry_model::{Quality, Sample, Value};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{Client, Context, tcp};
use tokio_modbus::{Request, Response, Slave};

use super::config::{DeviceConfig, Table};
use super::decode::{Raw, changed, decode};
use super::encode::Encoded;
use super::identify::{DeviceIdentity, read_identity};
use super::plan::{ReadRequest, plan};
use crate::source::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceMessage,
};

/// First reconnect delay; doubled after every failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A value not refreshed for this many poll intervals is `uncertain`.
pub const STALE_POLLS: u32 = 3;
/// Health is published at most this often (and on every link change).
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// A device that keeps failing is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the link to a device was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Transport(String),
}

/// How old a released write may be when the device can take it; an older
/// one is refused rather than applied late to a machine.
pub const WRITE_MAX_AGE: Duration = Duration::from_secs(10);

/// A write released by the write-back gate for one of the device's points.
#[derive(Debug, Clone)]
pub struct WriteCommand {
    /// The tag's topic (`<equipment>/<tag>`).
    pub topic: String,
    pub value: Value,
    /// Who asked (identity or client id), for the outcome record.
    pub requested_by: String,
    pub issued: Instant,
}

/// What became of a [`WriteCommand`].
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    pub device: String,
    pub topic: String,
    pub value: Value,
    pub requested_by: String,
    /// `Err` names why nothing (or not all) was written.
    pub result: Result<(), String>,
}

/// The write side of a device: released commands in, outcomes out. Cheap to
/// clone, so a restarted source takes over the same queue.
#[derive(Debug, Clone)]
pub struct WriteChannel {
    commands: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<WriteCommand>>>,
    outcomes: tokio::sync::mpsc::UnboundedSender<WriteOutcome>,
}

impl WriteChannel {
    /// A queue of at most `capacity` released writes for one device: the
    /// sender side and the channel to hand to [`ModbusSource::with_writes`].
    pub fn new(
        capacity: usize,
        outcomes: tokio::sync::mpsc::UnboundedSender<WriteOutcome>,
    ) -> (tokio::sync::mpsc::Sender<WriteCommand>, WriteChannel) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            tx,
            WriteChannel {
                commands: Arc::new(tokio::sync::Mutex::new(rx)),
                outcomes,
            },
        )
    }
}

/// Error counts by kind since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Connects and requests that got no answer within `timeout_ms`.
    pub timeout: u64,
    /// Refused or lost connections, unresolvable hosts, malformed responses.
    pub transport: u64,
    /// Modbus exception responses (e.g. illegal data address).
    pub exception: u64,
    /// Values that could not be decoded (not finite, not in the enum map,
    /// out of range for the tag).
    pub decode: u64,
}

/// The device's health and identity, as published on its health topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub device: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub connected: bool,
    /// Unix ms of the last poll that completed without a link error.
    pub last_success_ms: Option<u64>,
    /// Duration of the last completed poll.
    pub poll_duration_ms: Option<u64>,
    pub requests_per_poll: usize,
    pub points: usize,
    /// Points whose tag is currently `bad`.
    pub points_bad: usize,
    pub errors: ErrorCounts,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// From Read Device Identification, if the device supports it.
    pub identity: Option<DeviceIdentity>,
}

/// A shared view of a running device's [`DeviceStatus`] (for the asset
/// inventory and tests).
#[derive(Debug, Clone, Default)]
pub struct StatusHandle {
    inner: Arc<Mutex<DeviceStatus>>,
}

impl StatusHandle {
    fn lock(&self) -> MutexGuard<'_, DeviceStatus> {
        // A panic while holding the lock leaves plain data; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> DeviceStatus {
        self.lock().clone()
    }

    /// The device identification, once read.
    pub fn identity(&self) -> Option<DeviceIdentity> {
        self.lock().identity.clone()
    }
}

/// What the poller knows about one point.
#[derive(Debug, Default)]
struct PointState {
    /// The last value read, with its timestamp.
    value: Option<(Value, i64)>,
    /// Value and quality last delivered to the namespace.
    published: Option<(Value, Quality)>,
    /// When the value was last read successfully.
    refreshed: Option<Instant>,
    quality: Quality,
}

/// One `[[modbus]]` device as a data source.
pub struct ModbusSource {
    name: String,
    device: DeviceConfig,
    requests: Vec<ReadRequest>,
    states: Vec<PointState>,
    health: HealthHandle,
    status: StatusHandle,
    health_topic: String,
    last_health: Option<Instant>,
    /// Rate limit for link-failure warnings.
    warned: Option<Instant>,
    failures_since_warning: u64,
    failing: bool,
    writes: Option<WriteChannel>,
}

impl std::fmt::Debug for ModbusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModbusSource")
            .field("name", &self.name)
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

impl ModbusSource {
    pub fn new(device: DeviceConfig) -> Self {
        let requests = plan(&device.points, device.max_gap);
        let status = DeviceStatus {
            device: device.name.clone(),
            host: device.host.clone(),
            port: device.port,
            unit_id: device.unit_id,
            requests_per_poll: requests.len(),
            points: device.points.len(),
            ..DeviceStatus::default()
        };
        let states = device
            .points
            .iter()
            .map(|_| PointState::default())
            .collect();
        ModbusSource {
            name: format!("modbus:{}", device.name),
            health_topic: device.health_topic(),
            device,
            requests,
            states,
            health: HealthHandle::new(),
            status: StatusHandle {
                inner: Arc::new(Mutex::new(status)),
            },
            last_health: None,
            warned: None,
            failures_since_warning: 0,
            failing: false,
            writes: None,
        }
    }

    /// Lets the device execute released writes from `channel` (between
    /// polls, one request at a time like every read).
    pub fn with_writes(mut self, channel: WriteChannel) -> Self {
        self.writes = Some(channel);
        self
    }

    /// The planned reads of one poll.
    pub fn requests(&self) -> &[ReadRequest] {
        &self.requests
    }

    /// Health and identity, readable while the source runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    async fn run_loop(
        mut self,
        sink: Arc<dyn Sink>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let sink = sink.as_ref();
        let mut backoff = INITIAL_BACKOFF;
        let mut identify = true;
        let mut ever_connected = false;
        tracing::info!(
            device = %self.device.name,
            host = %self.device.host,
            port = self.device.port,
            points = self.device.points.len(),
            requests_per_poll = self.requests.len(),
            "modbus device configured"
        );
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let connected = tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                c = self.connect() => c,
            };
            let mut ctx = match connected {
                Ok(ctx) => ctx,
                Err(e) => {
                    self.link_failed(&e, sink)?;
                    if !sleep_or_shutdown(backoff, &mut shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            {
                let mut status = self.status.lock();
                status.connected = true;
                if ever_connected {
                    status.reconnects += 1;
                }
            }
            ever_connected = true;
            self.health.set_connected(true);
            tracing::debug!(device = %self.device.name, "modbus connected");

            if identify {
                // Once per run: a device that ignores the function must not
                // cost a reconnect on every connection.
                identify = false;
                match read_identity(&mut ctx, self.device.timeout).await {
                    Ok(identity) => {
                        if let Some(id) = &identity {
                            tracing::info!(device = %self.device.name, vendor = ?id.vendor_name, product = ?id.product_code, revision = ?id.revision, "modbus device identified");
                        }
                        self.status.lock().identity = identity;
                    }
                    Err(e) => {
                        drop(ctx);
                        self.link_failed(&e, sink)?;
                        if !sleep_or_shutdown(backoff, &mut shutdown).await {
                            break;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }

            let mut ticker = tokio::time::interval(self.device.poll);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let failure = loop {
                let write = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break None,
                    cmd = next_write(&self.writes) => Some(cmd),
                    _ = ticker.tick() => None,
                };
                if let Some(cmd) = write {
                    match self.execute_write(&mut ctx, cmd).await {
                        Ok(()) => continue,
                        Err(e) => break Some(e),
                    }
                }
                let polled = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break None,
                    r = self.poll_once(&mut ctx, sink) => r,
                };
                match polled {
                    Ok(Ok(())) => {
                        backoff = INITIAL_BACKOFF;
                        self.recovered();
                        self.publish_health(sink, false)?;
                    }
                    Ok(Err(e)) => break Some(e),
                    Err(e) => return Err(e),
                }
            };
            drop(ctx);
            let Some(e) = failure else { break };
            self.link_failed(&e, sink)?;
            if !sleep_or_shutdown(backoff, &mut shutdown).await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.health.set_connected(false);
        self.status.lock().connected = false;
        tracing::info!(device = %self.device.name, "modbus device stopped");
        Ok(())
    }

    /// Resolves the host and connects to the first address that answers.
    async fn connect(&self) -> Result<Context, LinkError> {
        let timeout = self.device.timeout;
        let target = (self.device.host.as_str(), self.device.port);
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(timeout, tokio::net::lookup_host(target)).await {
                Err(_) => return Err(LinkError::Timeout),
                Ok(Err(e)) => {
                    return Err(LinkError::Transport(format!(
                        "cannot resolve {}: {e}",
                        self.device.host
                    )));
                }
                Ok(Ok(addrs)) => addrs.collect(),
            };
        let mut last = LinkError::Transport(format!("{} resolves to no address", self.device.host));
        for addr in addrs {
            let slave = Slave(self.device.unit_id);
            match tokio::time::timeout(timeout, tcp::connect_slave(addr, slave)).await {
                Ok(Ok(ctx)) => return Ok(ctx),
                Ok(Err(e)) => last = LinkError::Transport(format!("connect to {addr}: {e}")),
                Err(_) => last = LinkError::Timeout,
            }
        }
        Err(last)
    }

    /// Runs every planned request once. The outer error is the sink's (fatal),
    /// the inner one a link failure.
    async fn poll_once(
        &mut self,
        ctx: &mut Context,
        sink: &dyn Sink,
    ) -> Result<Result<(), LinkError>, SourceError> {
        let started = Instant::now();
        for r in 0..self.requests.len() {
            let (table, address, count) = {
                let req = &self.requests[r];
                (req.table, req.address, req.count)
            };
            let request = match table {
                Table::Holding => Request::ReadHoldingRegisters(address, count),
                Table::Input => Request::ReadInputRegisters(address, count),
                Table::Coil => Request::ReadCoils(address, count),
                Table::Discrete => Request::ReadDiscreteInputs(address, count),
            };
            let response = match tokio::time::timeout(self.device.timeout, ctx.call(request)).await
            {
                Err(_) => return Ok(Err(LinkError::Timeout)),
                Ok(Err(e)) => return Ok(Err(LinkError::Transport(e.to_string()))),
                Ok(Ok(Err(exception))) => {
                    self.status.lock().errors.exception += 1;
                    self.health.record_errors(1);
                    let reason = format!(
                        "exception {exception:?} reading {table} {address}..{}",
                        u32::from(address) + u32::from(count) - 1
                    );
                    let newly_bad = self.mark_request_bad(r, sink)?;
                    if newly_bad > 0 {
                        tracing::warn!(device = %self.device.name, "{reason}: {newly_bad} point(s) bad");
                    }
                    self.status.lock().last_error = Some(reason);
                    continue;
                }
                Ok(Ok(Ok(response))) => response,
            };
            let now_ms = now_ms();
            match (&response, table) {
                (Response::ReadHoldingRegisters(words), Table::Holding)
                | (Response::ReadInputRegisters(words), Table::Input) => {
                    self.apply(r, Raw::Registers(words), now_ms, sink)?;
                }
                (Response::ReadCoils(bits), Table::Coil)
                | (Response::ReadDiscreteInputs(bits), Table::Discrete) => {
                    self.apply(r, Raw::Bits(bits), now_ms, sink)?;
                }
                (other, _) => {
                    return Ok(Err(LinkError::Transport(format!(
                        "unexpected response (function {}) to a {table} read",
                        other.function_code()
                    ))));
                }
            }
        }
        self.mark_stale(sink)?;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut status = self.status.lock();
        status.poll_duration_ms = Some(elapsed);
        status.last_success_ms = Some(now_ms());
        Ok(Ok(()))
    }

    /// Decodes and publishes the points of request `r` from its response.
    fn apply(
        &mut self,
        r: usize,
        raw: Raw<'_>,
        now_ms: u64,
        sink: &dyn Sink,
    ) -> Result<(), SourceError> {
        let now = Instant::now();
        let ts = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut decode_errors = 0;
        let mut published = 0;
        for planned in self.requests[r].points.clone() {
            let point = &self.device.points[planned.index];
            match decode(
                point,
                self.device.byte_order,
                self.device.word_order,
                raw,
                planned.offset,
            ) {
                Ok(value) => {
                    let state = &mut self.states[planned.index];
                    state.value = Some((value.clone(), ts));
                    state.refreshed = Some(now);
                    state.quality = Quality::Good;
                    let due = match &state.published {
                        None => true,
                        Some((last, quality)) => {
                            *quality != Quality::Good || changed(last, &value, point.deadband)
                        }
                    };
                    if due && self.publish(planned.index, Sample::new(ts, value), sink)? {
                        published += 1;
                    }
                }
                Err(e) => {
                    decode_errors += 1;
                    let was = self.states[planned.index].quality;
                    if was != Quality::Bad {
                        tracing::warn!(device = %self.device.name, topic = %point.topic, error = %e, "cannot decode point; tag is bad");
                    }
                    let msg = format!("{}: {e}", point.topic);
                    self.status.lock().last_error = Some(msg);
                    self.set_quality(planned.index, Quality::Bad, sink)?;
                }
            }
        }
        if decode_errors > 0 {
            self.status.lock().errors.decode += decode_errors;
            self.health.record_errors(decode_errors);
        }
        self.health.record_success(now_ms, published);
        Ok(())
    }

    /// Marks the points of request `r` bad; returns how many changed.
    fn mark_request_bad(&mut self, r: usize, sink: &dyn Sink) -> Result<usize, SourceError> {
        let mut newly = 0;
        for planned in self.requests[r].points.clone() {
            if self.states[planned.index].quality != Quality::Bad {
                newly += 1;
            }
            self.set_quality(planned.index, Quality::Bad, sink)?;
        }
        Ok(newly)
    }

    /// Good values older than [`STALE_POLLS`] intervals become uncertain.
    fn mark_stale(&mut self, sink: &dyn Sink) -> Result<(), SourceError> {
        let limit = self.device.poll * STALE_POLLS;
        let now = Instant::now();
        for index in 0..self.states.len() {
            let state = &self.states[index];
            let stale = state.quality == Quality::Good
                && state
                    .refreshed
                    .is_some_and(|at| now.duration_since(at) > limit);
            if stale {
                self.set_quality(index, Quality::Uncertain, sink)?;
            }
        }
        Ok(())
    }

    /// Sets a point's quality; a point with a value republishes it (stamped
    /// now) when the namespace shows another quality. Never-read points stay
    /// silent.
    fn set_quality(
        &mut self,
        index: usize,
        quality: Quality,
        sink: &dyn Sink,
    ) -> Result<(), SourceError> {
        let state = &mut self.states[index];
        state.quality = quality;
        let Some((value, _)) = state.value.clone() else {
            return Ok(());
        };
        if state.published.as_ref().is_some_and(|(_, q)| *q == quality) {
            return Ok(());
        }
        let ts = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        self.publish(index, Sample::new(ts, value).with_quality(quality), sink)?;
        Ok(())
    }

    /// Delivers one sample; `Ok(false)` when the sink refused it (it is
    /// retried on the next poll, since `published` is not updated).
    fn publish(
        &mut self,
        index: usize,
        sample: Sample,
        sink: &dyn Sink,
    ) -> Result<bool, SourceError> {
        let topic = self.device.points[index].topic.clone();
        let payload = sample.try_to_json_bytes()?;
        let msg = SourceMessage {
            topic,
            payload: Bytes::from(payload),
            retain: true,
            qos: 0,
        };
        match sink.publish(msg) {
            Ok(()) => {
                self.states[index].published = Some((sample.value, sample.quality));
                Ok(true)
            }
            Err(e) if e.is_fatal() => Err(e.into()),
            Err(e) => {
                self.health.record_errors(1);
                if !matches!(e, SinkError::Overloaded) {
                    tracing::debug!(device = %self.device.name, error = %e, "sample refused");
                }
                Ok(false)
            }
        }
    }

    /// After a link failure: count it, mark every point bad, publish health,
    /// warn (rate-limited).
    fn link_failed(&mut self, e: &LinkError, sink: &dyn Sink) -> Result<(), SourceError> {
        {
            let mut status = self.status.lock();
            status.connected = false;
            match e {
                LinkError::Timeout => status.errors.timeout += 1,
                LinkError::Transport(_) => status.errors.transport += 1,
            }
            status.last_error = Some(e.to_string());
        }
        self.health.set_connected(false);
        self.health.record_errors(1);
        for index in 0..self.states.len() {
            self.set_quality(index, Quality::Bad, sink)?;
        }
        let now = Instant::now();
        self.failures_since_warning += 1;
        if self
            .warned
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            tracing::warn!(
                device = %self.device.name,
                host = %self.device.host,
                port = self.device.port,
                error = %e,
                failures = self.failures_since_warning,
                "modbus device unreachable; its tags are bad, reconnecting with back-off"
            );
            self.warned = Some(now);
            self.failures_since_warning = 0;
        }
        self.failing = true;
        // Nothing waits for a device that is down: queued writes fail now.
        let mut refused = Vec::new();
        if let Some(w) = &self.writes
            && let Ok(mut commands) = w.commands.try_lock()
        {
            while let Ok(cmd) = commands.try_recv() {
                refused.push(cmd);
            }
        }
        for cmd in refused {
            self.report_write(cmd, Err(format!("device unreachable: {e}")));
        }
        self.publish_health(sink, true)
    }

    fn report_write(&self, cmd: WriteCommand, result: Result<(), String>) {
        match &result {
            Ok(()) => {
                tracing::info!(device = %self.device.name, topic = %cmd.topic, value = %cmd.value, by = %cmd.requested_by, "write executed")
            }
            Err(e) => {
                tracing::warn!(device = %self.device.name, topic = %cmd.topic, value = %cmd.value, by = %cmd.requested_by, "write failed: {e}")
            }
        }
        if let Some(w) = &self.writes {
            let _ = w.outcomes.send(WriteOutcome {
                device: self.device.name.clone(),
                topic: cmd.topic,
                value: cmd.value,
                requested_by: cmd.requested_by,
                result,
            });
        }
    }

    /// Performs one released write. A timeout or transport error drops the
    /// link (like a failed read); an exception or a value the point cannot
    /// hold fails only this write.
    async fn execute_write(
        &mut self,
        ctx: &mut Context,
        cmd: WriteCommand,
    ) -> Result<(), LinkError> {
        if cmd.issued.elapsed() > WRITE_MAX_AGE {
            let why = format!(
                "expired: released {} s ago, longer than {} s",
                cmd.issued.elapsed().as_secs(),
                WRITE_MAX_AGE.as_secs()
            );
            self.report_write(cmd, Err(why));
            return Ok(());
        }
        let Some(point) = self
            .device
            .points
            .iter()
            .find(|p| p.topic == cmd.topic)
            .cloned()
        else {
            let why = format!("no point of device {} maps {}", self.device.name, cmd.topic);
            self.report_write(cmd, Err(why));
            return Ok(());
        };
        let encoded = match super::encode::encode(
            &point,
            self.device.byte_order,
            self.device.word_order,
            &cmd.value,
        ) {
            Ok(e) => e,
            Err(e) => {
                self.report_write(cmd, Err(e.to_string()));
                return Ok(());
            }
        };
        let address = point.address;
        let request = match encoded {
            Encoded::Coil(on) => Request::WriteSingleCoil(address, on),
            Encoded::Registers(words) if words.len() == 1 => {
                Request::WriteSingleRegister(address, words[0])
            }
            Encoded::Registers(words) => Request::WriteMultipleRegisters(address, words.into()),
            Encoded::Bit { bit, on } => {
                // Read, change one bit, write back.
                let current = match self
                    .call(ctx, Request::ReadHoldingRegisters(address, 1))
                    .await?
                {
                    Ok(Response::ReadHoldingRegisters(words)) if words.len() == 1 => {
                        let fix = |w: u16| match self.device.byte_order {
                            super::config::Order::Big => w,
                            super::config::Order::Little => w.swap_bytes(),
                        };
                        fix(words[0])
                    }
                    Ok(_) => {
                        return Err(LinkError::Transport(
                            "unexpected response to a register read".into(),
                        ));
                    }
                    Err(why) => {
                        self.report_write(cmd, Err(why));
                        return Ok(());
                    }
                };
                let changed = if on {
                    current | (1 << bit)
                } else {
                    current & !(1 << bit)
                };
                let word = match self.device.byte_order {
                    super::config::Order::Big => changed,
                    super::config::Order::Little => changed.swap_bytes(),
                };
                Request::WriteSingleRegister(address, word)
            }
        };
        match self.call(ctx, request).await {
            Ok(Ok(_)) => {
                self.report_write(cmd, Ok(()));
                Ok(())
            }
            Ok(Err(why)) => {
                self.report_write(cmd, Err(why));
                Ok(())
            }
            Err(link) => {
                self.report_write(cmd, Err(format!("link lost: {link}")));
                Err(link)
            }
        }
    }

    /// One request with the device timeout: the outer error drops the link,
    /// the inner one is a Modbus exception.
    async fn call(
        &mut self,
        ctx: &mut Context,
        request: Request<'static>,
    ) -> Result<Result<Response, String>, LinkError> {
        match tokio::time::timeout(self.device.timeout, ctx.call(request)).await {
            Err(_) => Err(LinkError::Timeout),
            Ok(Err(e)) => Err(LinkError::Transport(e.to_string())),
            Ok(Ok(Err(exception))) => {
                self.status.lock().errors.exception += 1;
                Ok(Err(format!(
                    "the device answered with exception {exception:?}"
                )))
            }
            Ok(Ok(Ok(response))) => Ok(Ok(response)),
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            self.warned = None;
            self.failures_since_warning = 0;
            tracing::info!(device = %self.device.name, "modbus device reachable again");
        }
    }

    /// Publishes the health record (retained), at most once per
    /// [`HEALTH_EVERY`] unless `force`.
    fn publish_health(&mut self, sink: &dyn Sink, force: bool) -> Result<(), SourceError> {
        let now = Instant::now();
        if !force
            && self
                .last_health
                .is_some_and(|at| now.duration_since(at) < HEALTH_EVERY)
        {
            return Ok(());
        }
        let bad = self
            .states
            .iter()
            .filter(|s| s.quality == Quality::Bad)
            .count();
        let payload = {
            let mut status = self.status.lock();
            status.points_bad = bad;
            serde_json::to_vec(&*status).unwrap_or_default()
        };
        let msg = SourceMessage {
            topic: self.health_topic.clone(),
            payload: Bytes::from(payload),
            retain: true,
            qos: 0,
        };
        match sink.publish(msg) {
            Ok(()) => self.last_health = Some(now),
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(_) => {}
        }
        Ok(())
    }
}

impl Source for ModbusSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn health(&self) -> Option<HealthHandle> {
        Some(self.health.clone())
    }

    fn run(self: Box<Self>, sink: Arc<dyn Sink>, shutdown: watch::Receiver<bool>) -> SourceFuture {
        Box::pin((*self).run_loop(sink, shutdown))
    }
}

/// Sleeps for `delay`; `false` if shutdown was requested meanwhile.
/// The next released write, or never (no write channel, or it closed).
async fn next_write(writes: &Option<WriteChannel>) -> WriteCommand {
    if let Some(w) = writes
        && let Some(cmd) = w.commands.lock().await.recv().await
    {
        return cmd;
    }
    std::future::pending().await
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        biased;
        changed = shutdown.changed() => changed.is_ok() && !*shutdown.borrow_and_update(),
        _ = tokio::time::sleep(delay) => true,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
