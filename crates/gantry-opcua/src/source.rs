//! One OPC UA server as a [`Source`]: connect to the configured endpoint
//! (policy, mode, identity), subscribe to the mapped nodes, publish their
//! values with qualities, reconnect with back-off, publish health.
//!
//! Reconnection is Gantry's own: the library's automatic reconnect is off,
//! and every new connection builds a fresh session with one subscription
//! and one monitored item per tag, so nothing is ever duplicated. While the
//! link is down every tag with a value shows it with quality `bad`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gantry_connectors::modbus::Target;
use gantry_connectors::{
    HealthHandle, Sink, SinkError, Source, SourceError, SourceFuture, SourceMessage,
};
use gantry_model::{Quality, Sample, Value};
use opcua::client::{Client, DataChangeCallback, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataChangeFilter,
    DataChangeTrigger, DataValue, DeadbandType, EndpointDescription, ExtensionObject,
    MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters,
    NodeClass, NodeId, ReadValueId, ReferenceTypeId, StatusCode, TimestampsToReturn, VariableId,
    Variant,
};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{Mode, Policy, ServerConfig};
use crate::convert::{ConvertError, convert, quality_of, timestamp_of};

/// First reconnect delay; doubled after every failure up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
const HEALTH_EVERY: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(60);
/// How deep a browse mapping descends below its folder.
const BROWSE_DEPTH: usize = 8;

/// Error counts by kind since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Failed connects (endpoints, channel, session, login, certificate).
    pub connect: u64,
    /// Lost sessions.
    pub link: u64,
    /// Subscription, monitored item and browse failures.
    pub subscription: u64,
    /// Values that could not become the tag's type.
    pub conversion: u64,
}

/// `BuildInfo` of the server (`Server/ServerStatus/BuildInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub product_name: Option<String>,
    pub manufacturer_name: Option<String>,
    pub software_version: Option<String>,
    pub build_number: Option<String>,
}

/// What the server says about itself, for the asset inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    pub application_uri: Option<String>,
    pub product_uri: Option<String>,
    pub application_name: Option<String>,
    pub build_info: BuildInfo,
    /// Security policies the server's endpoints offer.
    pub offered_policies: Vec<String>,
    /// The server offers SecurityPolicy None only.
    pub only_insecure: bool,
}

/// The server's health and identity, as published on its health topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerStatus {
    pub name: String,
    pub endpoint: String,
    pub security_policy: String,
    pub security_mode: String,
    pub connected: bool,
    /// The session uses SecurityPolicy None.
    pub insecure: bool,
    pub last_success_ms: Option<u64>,
    pub errors: ErrorCounts,
    pub reconnects: u64,
    /// Monitored items of the current (or last) session.
    pub items: usize,
    /// Tags currently `bad`.
    pub items_bad: usize,
    pub last_error: Option<String>,
    pub server: Option<ServerInfo>,
}

/// A shared view of a running server's [`ServerStatus`].
#[derive(Debug, Clone, Default)]
pub struct StatusHandle {
    inner: Arc<Mutex<ServerStatus>>,
}

impl StatusHandle {
    fn lock(&self) -> MutexGuard<'_, ServerStatus> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> ServerStatus {
        self.lock().clone()
    }

    /// Identity and build information, once connected.
    pub fn server(&self) -> Option<ServerInfo> {
        self.lock().server.clone()
    }
}

/// One monitored node.
#[derive(Debug, Clone)]
struct Item {
    topic: String,
    node_id: NodeId,
    target: Target,
    sampling: Option<Duration>,
    queue_size: u32,
    deadband: Option<f64>,
}

#[derive(Debug, Default)]
struct TagState {
    value: Option<Value>,
    published: Option<(Value, Quality)>,
    quality: Quality,
    /// A conversion problem was already logged.
    warned: bool,
}

enum Outcome {
    Stop,
    Failed(String, FailKind),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Connect,
    Link,
}

/// One `[[opcua]]` server as a data source.
pub struct OpcUaSource {
    name: String,
    cfg: ServerConfig,
    pki: PathBuf,
    data_dir: PathBuf,
    health: HealthHandle,
    status: StatusHandle,
    health_topic: String,
    last_health: Option<Instant>,
    warned: Option<Instant>,
    states: HashMap<String, TagState>,
    /// Browsed variables without a model tag, reported once.
    unknown: HashSet<String>,
}

impl std::fmt::Debug for OpcUaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl OpcUaSource {
    /// A source for `cfg`, with its PKI under `<data_dir>/opcua/pki` (see
    /// [`crate::pki::ensure_instance_certificate`]).
    pub fn new(cfg: ServerConfig, data_dir: &std::path::Path) -> Self {
        let status = ServerStatus {
            name: cfg.name.clone(),
            endpoint: cfg.endpoint.clone(),
            security_policy: cfg.policy.name().to_owned(),
            security_mode: cfg.mode.name().to_owned(),
            insecure: cfg.policy == Policy::None,
            ..ServerStatus::default()
        };
        OpcUaSource {
            name: format!("opcua:{}", cfg.name),
            health_topic: cfg.health_topic(),
            pki: crate::pki::pki_dir(data_dir),
            data_dir: data_dir.to_path_buf(),
            cfg,
            health: HealthHandle::new(),
            status: StatusHandle {
                inner: Arc::new(Mutex::new(status)),
            },
            last_health: None,
            warned: None,
            states: HashMap::new(),
            unknown: HashSet::new(),
        }
    }

    /// Health and server identity, readable while the source runs.
    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    async fn run_loop(
        mut self,
        sink: Arc<dyn Sink>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let sink = sink.as_ref();
        let built = crate::pki::client_builder(&self.pki)
            .session_retry_limit(0)
            .request_timeout(self.cfg.timeout)
            .session_name(format!("gantry:{}", self.cfg.name))
            .client();
        let mut client = match built {
            Ok(c) => c,
            Err(e) => {
                let why = format!("invalid OPC UA client settings: {}", e.join("; "));
                tracing::error!(server = %self.cfg.name, "{why}");
                self.status.lock().last_error = Some(why);
                self.publish_health(sink, true)?;
                let _ = shutdown.wait_for(|s| *s).await;
                return Ok(());
            }
        };
        tracing::info!(
            server = %self.cfg.name,
            endpoint = %self.cfg.endpoint,
            policy = self.cfg.policy.name(),
            mode = self.cfg.mode.name(),
            nodes = self.cfg.nodes.len(),
            browse = self.cfg.browses.len(),
            "opcua server configured"
        );
        let mut backoff = INITIAL_BACKOFF;
        let mut ever_connected = false;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            match self
                .session(
                    &mut client,
                    sink,
                    &mut shutdown,
                    &mut backoff,
                    &mut ever_connected,
                )
                .await?
            {
                Outcome::Stop => break,
                Outcome::Failed(reason, kind) => {
                    self.link_failed(&reason, kind, sink)?;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.health.set_connected(false);
        self.status.lock().connected = false;
        tracing::info!(server = %self.cfg.name, "opcua server stopped");
        Ok(())
    }

    fn security(&self) -> (SecurityPolicy, MessageSecurityMode) {
        let policy =
            SecurityPolicy::from_str(self.cfg.policy.name()).unwrap_or(SecurityPolicy::None);
        let mode = match self.cfg.mode {
            Mode::None => MessageSecurityMode::None,
            Mode::Sign => MessageSecurityMode::Sign,
            Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        };
        (policy, mode)
    }

    /// Picks the configured endpoint from the server's list.
    async fn endpoint(&mut self, client: &Client) -> Result<EndpointDescription, String> {
        let url = self.cfg.endpoint.clone();
        let endpoints = match tokio::time::timeout(
            self.cfg.timeout,
            client.get_server_endpoints_from_url(url.as_str()),
        )
        .await
        {
            Err(_) => {
                return Err(format!(
                    "no answer from {url} within {} ms",
                    self.cfg.timeout.as_millis()
                ));
            }
            Ok(Err(e)) => return Err(format!("cannot get endpoints from {url}: {e}")),
            Ok(Ok(e)) => e,
        };
        let offered: Vec<String> = {
            let mut v: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        SecurityPolicy::from_uri(e.security_policy_uri.as_ref()).to_str(),
                        e.security_mode
                    )
                })
                .collect();
            v.dedup();
            v
        };
        let only_insecure = !endpoints.is_empty()
            && endpoints.iter().all(|e| {
                SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == SecurityPolicy::None
            });
        let (policy, mode) = self.security();
        let Some(endpoint) = Client::find_matching_endpoint(&endpoints, &url, policy, mode) else {
            return Err(format!(
                "the server offers no endpoint with security policy {} and mode {} (it offers: {})",
                self.cfg.policy.name(),
                self.cfg.mode.name(),
                offered.join(", ")
            ));
        };
        let text = |s: &opcua::types::UAString| {
            (!s.is_null() && !s.is_empty()).then(|| s.as_ref().to_owned())
        };
        let mut policies: Vec<String> = endpoints
            .iter()
            .map(|e| {
                SecurityPolicy::from_uri(e.security_policy_uri.as_ref())
                    .to_str()
                    .to_owned()
            })
            .collect();
        policies.sort();
        policies.dedup();
        let info = ServerInfo {
            application_uri: text(&endpoint.server.application_uri),
            product_uri: text(&endpoint.server.product_uri),
            application_name: text(&endpoint.server.application_name.text),
            build_info: BuildInfo::default(),
            offered_policies: policies,
            only_insecure,
        };
        if only_insecure {
            tracing::warn!(server = %self.cfg.name, endpoint = %url, "the OPC UA server offers SecurityPolicy None only (no signing or encryption)");
        }
        self.status.lock().server = Some(info);
        Ok(endpoint)
    }

    fn identity(&self) -> Result<IdentityToken, String> {
        match (&self.cfg.username, &self.cfg.password) {
            (Some(user), Some(source)) => {
                Ok(IdentityToken::new_user_name(user.clone(), source.read()?))
            }
            _ => Ok(IdentityToken::Anonymous),
        }
    }

    /// Why a connection attempt ended with `code`.
    fn explain(&self, code: StatusCode, connecting: bool) -> String {
        let untrusted = matches!(
            code,
            StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed
        ) && self.cfg.policy != Policy::None;
        if untrusted && connecting {
            return format!(
                "server certificate not trusted: run `gantry opcua trust --data-dir {} --all` (or name its thumbprint; see `gantry opcua certs --data-dir {}`); it was saved in {}",
                self.data_dir.display(),
                self.data_dir.display(),
                self.pki.join("rejected").display()
            );
        }
        if matches!(
            code,
            StatusCode::BadUserAccessDenied
                | StatusCode::BadIdentityTokenInvalid
                | StatusCode::BadIdentityTokenRejected
        ) {
            let who = self.cfg.username.as_deref().unwrap_or("anonymous");
            return format!("the server refused the login of {who}: {code}");
        }
        if connecting {
            format!("cannot connect to {}: {code}", self.cfg.endpoint)
        } else {
            format!("connection to {} lost: {code}", self.cfg.endpoint)
        }
    }

    async fn session(
        &mut self,
        client: &mut Client,
        sink: &dyn Sink,
        shutdown: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
        ever_connected: &mut bool,
    ) -> Result<Outcome, SourceError> {
        let endpoint = tokio::select! {
            _ = shutdown.changed() => return Ok(Outcome::Stop),
            e = self.endpoint(client) => e,
        };
        let endpoint = match endpoint {
            Ok(e) => e,
            Err(why) => return Ok(Outcome::Failed(why, FailKind::Connect)),
        };
        let identity = match self.identity() {
            Ok(i) => i,
            Err(why) => return Ok(Outcome::Failed(why, FailKind::Connect)),
        };
        let (session, event_loop) = match client.connect_to_endpoint_directly(endpoint, identity) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Outcome::Failed(
                    format!("cannot start a session: {e}"),
                    FailKind::Connect,
                ));
            }
        };
        session.disable_reconnects();
        let mut handle = event_loop.spawn();
        let connected = tokio::select! {
            _ = shutdown.changed() => {
                handle.abort();
                return Ok(Outcome::Stop);
            }
            r = &mut handle => {
                let code = r.unwrap_or(StatusCode::BadUnexpectedError);
                return Ok(Outcome::Failed(self.explain(code, true), FailKind::Connect));
            }
            _ = tokio::time::sleep(self.cfg.timeout) => false,
            c = session.wait_for_connection() => c,
        };
        if !connected {
            handle.abort();
            return Ok(Outcome::Failed(
                format!(
                    "no session with {} within {} ms",
                    self.cfg.endpoint,
                    self.cfg.timeout.as_millis()
                ),
                FailKind::Connect,
            ));
        }
        // Connected.
        *backoff = INITIAL_BACKOFF;
        {
            let mut status = self.status.lock();
            status.connected = true;
            if *ever_connected {
                status.reconnects += 1;
            }
            status.last_success_ms = Some(now_ms());
        }
        *ever_connected = true;
        self.health.set_connected(true);
        if self.cfg.policy == Policy::None {
            tracing::warn!(server = %self.cfg.name, endpoint = %self.cfg.endpoint, "OPC UA session without security (SecurityPolicy None): traffic is neither signed nor encrypted");
        } else {
            tracing::info!(server = %self.cfg.name, policy = self.cfg.policy.name(), mode = self.cfg.mode.name(), "opcua session established");
        }
        self.read_build_info(&session).await;

        let outcome = self.subscribed(&session, &mut handle, sink, shutdown).await;
        if matches!(outcome, Ok(Outcome::Stop) | Err(_)) {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
        }
        handle.abort();
        outcome
    }

    async fn read_build_info(&mut self, session: &Session) {
        let ids = [
            VariableId::Server_ServerStatus_BuildInfo_ProductName,
            VariableId::Server_ServerStatus_BuildInfo_ManufacturerName,
            VariableId::Server_ServerStatus_BuildInfo_SoftwareVersion,
            VariableId::Server_ServerStatus_BuildInfo_BuildNumber,
            VariableId::Server_ServerStatus_BuildInfo_ProductUri,
        ];
        let nodes: Vec<ReadValueId> = ids
            .iter()
            .map(|id| ReadValueId::from(NodeId::from(*id)))
            .collect();
        let read = tokio::time::timeout(
            self.cfg.timeout,
            session.read(&nodes, TimestampsToReturn::Neither, 0.0),
        )
        .await;
        let values = match read {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::debug!(server = %self.cfg.name, "cannot read BuildInfo: {e}");
                return;
            }
            Err(_) => return,
        };
        let text = |i: usize| match values.get(i).and_then(|v| v.value.as_ref()) {
            Some(Variant::String(s)) if !s.is_null() => Some(s.as_ref().to_owned()),
            _ => None,
        };
        let build = BuildInfo {
            product_name: text(0),
            manufacturer_name: text(1),
            software_version: text(2),
            build_number: text(3),
        };
        tracing::info!(server = %self.cfg.name, product = ?build.product_name, manufacturer = ?build.manufacturer_name, version = ?build.software_version, "opcua server identified");
        let mut status = self.status.lock();
        let server = status.server.get_or_insert_with(ServerInfo::default);
        if server.product_uri.is_none() {
            server.product_uri = text(4);
        }
        server.build_info = build;
    }

    /// Creates the subscription and its items, then relays values until the
    /// link is lost or shutdown.
    async fn subscribed(
        &mut self,
        session: &Arc<Session>,
        handle: &mut tokio::task::JoinHandle<StatusCode>,
        sink: &dyn Sink,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Outcome, SourceError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u32, DataValue)>();
        let created = session
            .create_subscription(
                self.cfg.publishing,
                60,
                10,
                0,
                0,
                true,
                DataChangeCallback::new(move |dv, item| {
                    let _ = tx.send((item.client_handle(), dv));
                }),
            )
            .await;
        let subscription = match created {
            Ok(id) => id,
            Err(e) => {
                self.status.lock().errors.subscription += 1;
                return Ok(Outcome::Failed(
                    format!("cannot create a subscription: {e}"),
                    FailKind::Link,
                ));
            }
        };
        let mut items: Vec<Item> = self
            .cfg
            .nodes
            .iter()
            .filter_map(|n| {
                Some(Item {
                    topic: n.topic.clone(),
                    node_id: NodeId::from_str(&n.node_id).ok()?,
                    target: n.target.clone(),
                    sampling: n.sampling,
                    queue_size: n.queue_size,
                    deadband: n.deadband,
                })
            })
            .collect();
        if let Err(why) = self
            .create_items(session, subscription, &items, 0, sink)
            .await?
        {
            return Ok(Outcome::Failed(why, FailKind::Link));
        }
        let browse_every = self
            .cfg
            .browses
            .iter()
            .map(|b| b.rebrowse)
            .filter(|d| !d.is_zero())
            .min();
        if !self.cfg.browses.is_empty()
            && let Err(why) = self
                .browse_and_add(session, subscription, &mut items, sink)
                .await?
        {
            return Ok(Outcome::Failed(why, FailKind::Link));
        }
        self.status.lock().items = items.len();
        self.publish_health(sink, true)?;

        let mut health_tick = tokio::time::interval(HEALTH_EVERY);
        let mut rebrowse = tokio::time::interval(browse_every.unwrap_or(Duration::from_secs(3600)));
        rebrowse.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(Outcome::Stop),
                r = &mut *handle => {
                    let code = r.unwrap_or(StatusCode::BadUnexpectedError);
                    return Ok(Outcome::Failed(self.explain(code, false), FailKind::Link));
                }
                Some((client_handle, dv)) = rx.recv() => {
                    let index = client_handle.wrapping_sub(1) as usize;
                    if let Some(item) = items.get(index).cloned() {
                        self.on_value(&item, dv, sink)?;
                    }
                }
                _ = rebrowse.tick(), if browse_every.is_some() => {
                    if let Err(why) = self.browse_and_add(session, subscription, &mut items, sink).await? {
                        return Ok(Outcome::Failed(why, FailKind::Link));
                    }
                    self.status.lock().items = items.len();
                }
                _ = health_tick.tick() => self.publish_health(sink, false)?,
            }
        }
    }

    /// Creates monitored items for `items[first..]` (client handle = index + 1).
    /// The inner error is a failure of the whole request (the link drops).
    async fn create_items(
        &mut self,
        session: &Session,
        subscription: u32,
        items: &[Item],
        first: usize,
        sink: &dyn Sink,
    ) -> Result<Result<(), String>, SourceError> {
        if items.len() <= first {
            return Ok(Ok(()));
        }
        let requests: Vec<MonitoredItemCreateRequest> = items[first..]
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let filter = match item.deadband {
                    Some(d) => ExtensionObject::from_message(DataChangeFilter {
                        trigger: DataChangeTrigger::StatusValue,
                        deadband_type: DeadbandType::Absolute as u32,
                        deadband_value: d,
                    }),
                    None => ExtensionObject::null(),
                };
                MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId {
                        node_id: item.node_id.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..ReadValueId::default()
                    },
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        client_handle: u32::try_from(first + i + 1).unwrap_or(u32::MAX),
                        sampling_interval: item.sampling.map_or(-1.0, |d| d.as_secs_f64() * 1000.0),
                        filter,
                        queue_size: item.queue_size,
                        discard_oldest: true,
                    },
                }
            })
            .collect();
        let results = match session
            .create_monitored_items(subscription, TimestampsToReturn::Both, requests)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.status.lock().errors.subscription += 1;
                return Ok(Err(format!("cannot create monitored items: {e}")));
            }
        };
        for (item, result) in items[first..].iter().zip(results) {
            if result.result.status_code.is_bad() {
                let why = format!(
                    "node {} ({}): {}",
                    item.node_id, item.topic, result.result.status_code
                );
                tracing::warn!(server = %self.cfg.name, "cannot monitor {why}; the tag is bad");
                {
                    let mut status = self.status.lock();
                    status.errors.subscription += 1;
                    status.last_error = Some(why);
                }
                self.health.record_errors(1);
                self.set_quality(&item.topic, Quality::Bad, sink)?;
            }
        }
        Ok(Ok(()))
    }

    /// Browses every configured folder and monitors newly found variables
    /// that map to model tags.
    async fn browse_and_add(
        &mut self,
        session: &Session,
        subscription: u32,
        items: &mut Vec<Item>,
        sink: &dyn Sink,
    ) -> Result<Result<(), String>, SourceError> {
        let first = items.len();
        let mut known_topics: HashSet<String> = items.iter().map(|i| i.topic.clone()).collect();
        let mut known_nodes: HashSet<NodeId> = items.iter().map(|i| i.node_id.clone()).collect();
        for browse in self.cfg.browses.clone() {
            let Ok(folder) = NodeId::from_str(&browse.folder) else {
                continue;
            };
            let found = match self.browse_folder(session, folder).await {
                Ok(found) => found,
                Err(why) => {
                    let why = format!("browsing {}: {why}", browse.folder);
                    tracing::warn!(server = %self.cfg.name, "{why}");
                    let mut status = self.status.lock();
                    status.errors.subscription += 1;
                    status.last_error = Some(why);
                    continue;
                }
            };
            for (path, node_id) in found {
                let tag = format!("{}{}", browse.tags_prefix, path);
                let Some(target) = self.cfg.tags.get(&tag).cloned() else {
                    if self.unknown.insert(tag.clone()) {
                        tracing::warn!(server = %self.cfg.name, node = %node_id, tag = %tag, equipment = %self.cfg.equipment, "browsed variable has no tag in the model; not published");
                    }
                    continue;
                };
                let topic = format!("{}/{}", self.cfg.equipment, tag);
                if known_nodes.contains(&node_id) || known_topics.contains(&topic) {
                    continue;
                }
                known_nodes.insert(node_id.clone());
                known_topics.insert(topic.clone());
                tracing::info!(server = %self.cfg.name, node = %node_id, topic = %topic, "browsed variable mapped");
                items.push(Item {
                    topic,
                    node_id,
                    target,
                    sampling: browse.sampling,
                    queue_size: browse.queue_size,
                    deadband: None,
                });
            }
        }
        self.create_items(session, subscription, items, first, sink)
            .await
    }

    /// Variables below `folder` (objects are descended into), with their
    /// BrowseName paths relative to it.
    async fn browse_folder(
        &self,
        session: &Session,
        folder: NodeId,
    ) -> Result<Vec<(String, NodeId)>, String> {
        let mut out = Vec::new();
        let mut queue = vec![(folder, String::new(), 0usize)];
        let mut seen = HashSet::new();
        while let Some((node, prefix, depth)) = queue.pop() {
            if !seen.insert(node.clone()) {
                continue;
            }
            let description = BrowseDescription {
                node_id: node,
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: NodeClass::Object as u32 | NodeClass::Variable as u32,
                result_mask: BrowseResultMask::All as u32,
            };
            let mut results =
                tokio::time::timeout(self.cfg.timeout, session.browse(&[description], 0, None))
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
            let mut refs = Vec::new();
            while let Some(result) = results.pop() {
                if result.status_code.is_bad() {
                    return Err(result.status_code.to_string());
                }
                refs.extend(result.references.unwrap_or_default());
                if result.continuation_point.is_null() {
                    break;
                }
                results = session
                    .browse_next(false, &[result.continuation_point])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let has_property: NodeId = ReferenceTypeId::HasProperty.into();
            for r in refs {
                if r.reference_type_id == has_property || !r.node_id.namespace_uri.is_null() {
                    continue;
                }
                let name = segment_of(r.browse_name.name.as_ref());
                let path = format!("{prefix}{name}");
                match r.node_class {
                    NodeClass::Variable => out.push((path, r.node_id.node_id)),
                    NodeClass::Object if depth + 1 < BROWSE_DEPTH => {
                        queue.push((r.node_id.node_id, format!("{path}/"), depth + 1));
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn on_value(&mut self, item: &Item, dv: DataValue, sink: &dyn Sink) -> Result<(), SourceError> {
        let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        let quality = quality_of(dv.status);
        let ts = timestamp_of(&dv, now);
        let converted = match &dv.value {
            Some(v) => convert(v, &item.target),
            None => Err(ConvertError::Empty),
        };
        match converted {
            Ok(value) => {
                let state = self.states.entry(item.topic.clone()).or_default();
                state.value = Some(value.clone());
                state.quality = quality;
                state.warned = false;
                let sample = Sample::new(ts, value).with_quality(quality);
                self.publish(&item.topic, sample, sink)?;
                self.status.lock().last_success_ms = Some(now_ms());
            }
            Err(ConvertError::Empty) => {
                // A status without a value: keep the last value, show the status.
                let q = if quality == Quality::Good {
                    Quality::Bad
                } else {
                    quality
                };
                self.set_quality(&item.topic, q, sink)?;
            }
            Err(e) => {
                let state = self.states.entry(item.topic.clone()).or_default();
                if !state.warned {
                    state.warned = true;
                    tracing::warn!(server = %self.cfg.name, topic = %item.topic, node = %item.node_id, error = %e, "cannot convert value; tag is bad");
                }
                {
                    let mut status = self.status.lock();
                    status.errors.conversion += 1;
                    status.last_error = Some(format!("{}: {e}", item.topic));
                }
                self.health.record_errors(1);
                self.set_quality(&item.topic, Quality::Bad, sink)?;
            }
        }
        Ok(())
    }

    /// Republishes a tag's last value with `quality` (stamped now) if the
    /// namespace shows another one. Never-read tags stay silent.
    fn set_quality(
        &mut self,
        topic: &str,
        quality: Quality,
        sink: &dyn Sink,
    ) -> Result<(), SourceError> {
        let state = self.states.entry(topic.to_owned()).or_default();
        state.quality = quality;
        let Some(value) = state.value.clone() else {
            return Ok(());
        };
        if state.published.as_ref().is_some_and(|(_, q)| *q == quality) {
            return Ok(());
        }
        let ts = i64::try_from(now_ms()).unwrap_or(i64::MAX);
        self.publish(topic, Sample::new(ts, value).with_quality(quality), sink)
    }

    fn publish(&mut self, topic: &str, sample: Sample, sink: &dyn Sink) -> Result<(), SourceError> {
        let payload = sample.try_to_json_bytes()?;
        let msg = SourceMessage {
            topic: topic.to_owned(),
            payload: Bytes::from(payload),
            retain: true,
            qos: 0,
        };
        match sink.publish(msg) {
            Ok(()) => {
                self.health.record_success(now_ms(), 1);
                if let Some(state) = self.states.get_mut(topic) {
                    state.published = Some((sample.value, sample.quality));
                }
                Ok(())
            }
            Err(e) if e.is_fatal() => Err(e.into()),
            Err(e) => {
                self.health.record_errors(1);
                if !matches!(e, SinkError::Overloaded) {
                    tracing::debug!(server = %self.cfg.name, error = %e, "sample refused");
                }
                Ok(())
            }
        }
    }

    fn link_failed(
        &mut self,
        why: &str,
        kind: FailKind,
        sink: &dyn Sink,
    ) -> Result<(), SourceError> {
        {
            let mut status = self.status.lock();
            status.connected = false;
            match kind {
                FailKind::Connect => status.errors.connect += 1,
                FailKind::Link => status.errors.link += 1,
            }
            status.last_error = Some(why.to_owned());
        }
        self.health.set_connected(false);
        self.health.record_errors(1);
        let topics: Vec<String> = self.states.keys().cloned().collect();
        for topic in topics {
            self.set_quality(&topic, Quality::Bad, sink)?;
        }
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            tracing::warn!(server = %self.cfg.name, endpoint = %self.cfg.endpoint, "{why}; tags are bad, reconnecting with back-off");
            self.warned = Some(now);
        }
        self.publish_health(sink, true)
    }

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
            .values()
            .filter(|s| s.quality == Quality::Bad)
            .count();
        let snapshot = {
            let mut status = self.status.lock();
            status.items_bad = bad;
            status.clone()
        };
        let payload = serde_json::to_vec(&snapshot).unwrap_or_default();
        let msg = SourceMessage {
            topic: self.health_topic.clone(),
            payload: Bytes::from(payload),
            retain: true,
            qos: 0,
        };
        match sink.publish(msg) {
            Ok(()) => self.last_health = Some(now),
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) => tracing::debug!(server = %self.cfg.name, error = %e, "health refused"),
        }
        Ok(())
    }
}

impl Source for OpcUaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn health(&self) -> Option<HealthHandle> {
        Some(self.health.clone())
    }

    fn run(self: Box<Self>, sink: Arc<dyn Sink>, shutdown: watch::Receiver<bool>) -> SourceFuture {
        Box::pin(self.run_loop(sink, shutdown))
    }
}

/// A BrowseName as a topic segment: lower-case, with every character that
/// is not a letter, digit, `-` or `_` replaced by `-`.
pub fn segment_of(browse_name: &str) -> String {
    browse_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
