//! `[[opcua]]` servers in the site model file: types and the parser.
//!
//! Like the Modbus devices, the TOML tree is walked by hand with spans so
//! that every problem is reported at once as `file:line:col: field: message
//! (hint: ...)` (a [`ModelError`]), the form `gantry check` prints.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use gantry_connectors::modbus::{ConfigErrors, Target};
use gantry_model::suggest::closest;
use gantry_model::toml_check::TomlChecker;
use gantry_model::{Equipment, ModelError, PlantModel, TagType, validate_segment};
use opcua::types::NodeId;
use toml::de::DeTable;

const SERVER_FIELDS: &[&str] = &[
    "name",
    "endpoint",
    "security_policy",
    "security_mode",
    "username",
    "password_env",
    "password_file",
    "equipment",
    "publishing_ms",
    "timeout_ms",
    "node",
    "browse",
];
const NODE_FIELDS: &[&str] = &["tag", "node_id", "sampling_ms", "queue_size", "deadband"];
const BROWSE_FIELDS: &[&str] = &[
    "folder",
    "tags_prefix",
    "rebrowse_s",
    "sampling_ms",
    "queue_size",
];
/// Accepted `security_policy` values.
pub const POLICIES: &[&str] = &[
    "None",
    "Basic256Sha256",
    "Aes128Sha256RsaOaep",
    "Aes256Sha256RsaPss",
];
/// Accepted `security_mode` values.
pub const MODES: &[&str] = &["None", "Sign", "SignAndEncrypt"];

/// Default OPC UA TCP port, when the endpoint URL has none.
pub const DEFAULT_PORT: u16 = 4840;

/// A supported security policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    None,
    Basic256Sha256,
    Aes128Sha256RsaOaep,
    Aes256Sha256RsaPss,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
            Policy::Aes128Sha256RsaOaep => "Aes128Sha256RsaOaep",
            Policy::Aes256Sha256RsaPss => "Aes256Sha256RsaPss",
        }
    }

    fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "None" => Policy::None,
            "Basic256Sha256" => Policy::Basic256Sha256,
            "Aes128Sha256RsaOaep" => Policy::Aes128Sha256RsaOaep,
            "Aes256Sha256RsaPss" => Policy::Aes256Sha256RsaPss,
            _ => return None,
        })
    }
}

/// Message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "None",
            Mode::Sign => "Sign",
            Mode::SignAndEncrypt => "SignAndEncrypt",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "None" => Mode::None,
            "Sign" => Mode::Sign,
            "SignAndEncrypt" => Mode::SignAndEncrypt,
            _ => return None,
        })
    }
}

/// Where a username's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The value of this environment variable (read at connect time).
    Env(String),
    /// The first line of this file (read at connect time).
    File(PathBuf),
}

impl PasswordSource {
    /// Reads the password now.
    pub fn read(&self) -> Result<String, String> {
        match self {
            PasswordSource::Env(var) => std::env::var(var)
                .map_err(|_| format!("environment variable {var} (password_env) is not set")),
            PasswordSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.lines().next().unwrap_or("").to_owned())
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display())),
        }
    }
}

/// One `[[opcua.node]]`: an explicit node id mapped to a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Tag path below the server's equipment.
    pub tag: String,
    /// `<equipment>/<tag>`.
    pub topic: String,
    /// The node id as written (it parses).
    pub node_id: String,
    /// `None`: the subscription's publishing interval.
    pub sampling: Option<Duration>,
    pub queue_size: u32,
    /// Absolute deadband, if any.
    pub deadband: Option<f64>,
    pub target: Target,
}

/// One `[[opcua.browse]]`: every Variable below `folder` maps to the tag
/// `tags_prefix + BrowseName` (nested folders add `name/`).
#[derive(Debug, Clone, PartialEq)]
pub struct BrowseConfig {
    pub folder: String,
    pub tags_prefix: String,
    /// `ZERO`: browse only at connect.
    pub rebrowse: Duration,
    /// `None`: the subscription's publishing interval.
    pub sampling: Option<Duration>,
    pub queue_size: u32,
}

/// One `[[opcua]]` server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Unique name, a valid topic segment; names the health topic.
    pub name: String,
    pub endpoint: String,
    pub policy: Policy,
    pub mode: Mode,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    pub equipment: String,
    pub enterprise: String,
    pub publishing: Duration,
    /// Connect and request timeout.
    pub timeout: Duration,
    pub nodes: Vec<NodeConfig>,
    pub browses: Vec<BrowseConfig>,
    /// Every tag of `equipment` with its contract target (for browse-mapped
    /// tags, which are found only at run time).
    pub tags: HashMap<String, Target>,
}

impl ServerConfig {
    /// `<enterprise>/_sys/connectors/opcua/<name>`.
    pub fn health_topic(&self) -> String {
        format!("{}/_sys/connectors/opcua/{}", self.enterprise, self.name)
    }
}

/// The contract target of a tag.
pub fn target_of(tag_type: &TagType) -> Target {
    match tag_type {
        TagType::Float => Target::Float,
        TagType::Int => Target::Int,
        TagType::Bool => Target::Bool,
        TagType::String => Target::String,
        TagType::Enum { values } => Target::Enum {
            values: values.clone(),
        },
    }
}

/// Parses the `[[opcua]]` servers of a site model file against `model` (the
/// plant model parsed from the same `src`). No `[[opcua]]` table: an empty
/// list.
pub fn parse_servers(
    src: &str,
    file: &str,
    model: &PlantModel,
) -> Result<Vec<ServerConfig>, ConfigErrors> {
    let mut p = Parser {
        checker: TomlChecker::new(src, file),
    };
    let servers = match DeTable::parse(src) {
        Ok(root) => p.servers(root.get_ref(), model),
        Err(e) => {
            p.error(e.span().map_or(0, |s| s.start), "", e.message(), None);
            Vec::new()
        }
    };
    if p.errors.is_empty() {
        Ok(servers)
    } else {
        p.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(p.checker.errors))
    }
}

/// Reads `path` and parses its `[[opcua]]` servers against `model`.
pub fn load_servers(
    path: &std::path::Path,
    model: &PlantModel,
) -> Result<Vec<ServerConfig>, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse_servers(&src, &file, model),
        Err(e) => Err(ConfigErrors(vec![ModelError {
            file,
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read site model: {e}"),
            hint: None,
        }])),
    }
}

/// Everything `gantry check` reports about the `[[opcua]]` servers of the
/// site file at `path` (already parsed as `model`), in file order.
pub fn check_file(path: &std::path::Path, model: &PlantModel) -> Vec<ModelError> {
    match load_servers(path, model) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(errors)) => errors,
    }
}

/// The `[[opcua]]` parser: the shared checks of [`TomlChecker`] (through
/// `Deref`) plus what only OPC UA needs.
struct Parser<'s> {
    checker: TomlChecker<'s>,
}

impl<'s> std::ops::Deref for Parser<'s> {
    type Target = TomlChecker<'s>;

    fn deref(&self) -> &Self::Target {
        &self.checker
    }
}

impl std::ops::DerefMut for Parser<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.checker
    }
}

impl Parser<'_> {
    /// A required string: reports a missing field at `at`.
    fn required<'t>(
        &mut self,
        table: &'t DeTable<'_>,
        key: &str,
        field: &str,
        at: usize,
        hint: &str,
    ) -> Option<(&'t str, usize)> {
        if !table.contains_key(key) {
            self.error(at, field, "missing required field", Some(hint.to_owned()));
            return None;
        }
        self.string(table, key, field)
    }

    /// An optional integer within `min..=max` (`default` when absent).
    fn integer(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Option<i64> {
        if !table.contains_key(key) {
            return Some(default);
        }
        self.checker
            .integer(table, key, field, min, max, None)
            .map(|(n, _)| n)
    }

    fn millis(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        default: u64,
    ) -> Option<Duration> {
        self.integer(
            table,
            key,
            field,
            1,
            3_600_000,
            i64::try_from(default).unwrap_or(1000),
        )
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
    }

    /// A finite, non-negative number (integer or float).
    fn non_negative(&mut self, table: &DeTable<'_>, key: &str, field: &str) -> Option<Option<f64>> {
        if !table.contains_key(key) {
            return Some(None);
        }
        let (n, at) = self.checker.number(table, key, field)?;
        if n < 0.0 {
            self.error(at, field, "must be a finite number >= 0", None);
            return None;
        }
        Some(Some(n))
    }

    fn choice<T>(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        what: &str,
        choices: &[&str],
        parse: fn(&str) -> Option<T>,
    ) -> Option<(T, usize)> {
        let (value, at) = self.string(table, key, field)?;
        if let Some(v) = parse(value) {
            return Some((v, at));
        }
        let folded = choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(value))
            .copied();
        let hint = match folded.or_else(|| closest(value, choices)) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => format!("one of {}", choices.join(", ")),
        };
        self.error_inside(at, field, format!("unknown {what} \"{value}\""), Some(hint));
        None
    }

    fn servers(&mut self, root: &DeTable<'_>, model: &PlantModel) -> Vec<ServerConfig> {
        let mut servers = Vec::new();
        let mut names: HashMap<String, (String, usize)> = HashMap::new();
        let mut topics: HashMap<String, (String, usize)> = HashMap::new();
        for (index, table, at) in self.array_of_tables(root, "opcua", "opcua") {
            let field = format!("opcua[{index}]");
            if let Some(server) = self.server(table, at, &field, model, &mut topics) {
                let name_at = table.get("name").map_or(at, |n| n.span().start);
                if let Some((first, line)) = names.get(&server.name) {
                    self.error_inside(
                        name_at,
                        &format!("{field}.name"),
                        format!(
                            "duplicate server name \"{}\", already used by {first} on line {line}",
                            server.name
                        ),
                        Some("give every [[opcua]] server its own name".to_owned()),
                    );
                    continue;
                }
                let line = self.line_of(name_at);
                names.insert(server.name.clone(), (field.clone(), line));
                servers.push(server);
            }
        }
        servers
    }

    fn server(
        &mut self,
        table: &DeTable<'_>,
        at: usize,
        field: &str,
        model: &PlantModel,
        topics: &mut HashMap<String, (String, usize)>,
    ) -> Option<ServerConfig> {
        self.unknown_fields(table, field, SERVER_FIELDS);
        let f = |key: &str| format!("{field}.{key}");

        let name = match self.required(table, "name", &f("name"), at, "name = \"mixer-server\"") {
            Some((name, offset)) => match validate_segment(name) {
                Ok(()) => Some(name.to_owned()),
                Err(e) => {
                    self.error_inside(offset, &f("name"), e.to_string(), e.hint());
                    None
                }
            },
            None => None,
        };
        let endpoint = match self.required(
            table,
            "endpoint",
            &f("endpoint"),
            at,
            "endpoint = \"opc.tcp://192.168.1.20:4840\"",
        ) {
            Some((url, offset)) => match check_endpoint(url) {
                Ok(()) => Some(url.to_owned()),
                Err((message, hint)) => {
                    self.error_inside(offset, &f("endpoint"), message, Some(hint));
                    None
                }
            },
            None => None,
        };
        let policy = if table.contains_key("security_policy") {
            self.choice(
                table,
                "security_policy",
                &f("security_policy"),
                "security policy",
                POLICIES,
                Policy::parse,
            )
        } else {
            Some((Policy::None, at))
        };
        let mode = if table.contains_key("security_mode") {
            self.choice(
                table,
                "security_mode",
                &f("security_mode"),
                "security mode",
                MODES,
                Mode::parse,
            )
        } else {
            // A secure policy defaults to SignAndEncrypt.
            match policy {
                Some((Policy::None, _)) | None => Some((Mode::None, at)),
                Some(_) => Some((Mode::SignAndEncrypt, at)),
            }
        };
        let mut security_ok = policy.is_some() && mode.is_some();
        if let (Some((p, p_at)), Some((m, m_at))) = (policy, mode) {
            if p == Policy::None && m != Mode::None {
                let at = if table.contains_key("security_mode") {
                    m_at
                } else {
                    p_at
                };
                self.error_inside(
                    at,
                    &f("security_mode"),
                    format!(
                        "security mode \"{}\" needs a security policy other than \"None\"",
                        m.name()
                    ),
                    Some("security_policy = \"Basic256Sha256\"".to_owned()),
                );
                security_ok = false;
            } else if p != Policy::None && m == Mode::None {
                self.error_inside(
                    m_at,
                    &f("security_mode"),
                    format!(
                        "security policy \"{}\" needs security mode \"Sign\" or \"SignAndEncrypt\"",
                        p.name()
                    ),
                    Some("security_mode = \"SignAndEncrypt\"".to_owned()),
                );
                security_ok = false;
            }
        }

        // Identity.
        let username = self.string(table, "username", &f("username"));
        let password_env = self.string(table, "password_env", &f("password_env"));
        let password_file = self.string(table, "password_file", &f("password_file"));
        let mut identity_ok = true;
        if let (Some(_), Some((_, file_at))) = (password_env, password_file) {
            self.error(
                file_at,
                &f("password_file"),
                "give either password_env or password_file, not both",
                None,
            );
            identity_ok = false;
        }
        if let Some((var, var_at)) = password_env
            && (var.is_empty() || var.contains('=') || var.contains('\0'))
        {
            self.error_inside(
                var_at,
                &f("password_env"),
                format!("\"{var}\" is not an environment variable name"),
                Some(
                    "the NAME of the variable holding the password, e.g. \"GANTRY_OPCUA_PASSWORD\""
                        .to_owned(),
                ),
            );
            identity_ok = false;
        }
        let password = match (password_env, password_file) {
            (Some((var, _)), _) => Some(PasswordSource::Env(var.to_owned())),
            (None, Some((path, _))) => Some(PasswordSource::File(PathBuf::from(path))),
            (None, None) => None,
        };
        match (username, &password) {
            (Some((user, user_at)), None) => {
                if user.is_empty() {
                    self.error_inside(user_at, &f("username"), "must not be empty", None);
                } else {
                    self.error(
                        user_at,
                        &f("username"),
                        format!("username \"{user}\" has no password source"),
                        Some(
                            "add password_env = \"VARIABLE\" or password_file = \"/path\""
                                .to_owned(),
                        ),
                    );
                }
                identity_ok = false;
            }
            (None, Some(_)) => {
                let (key, at) = match (password_env, password_file) {
                    (Some((_, a)), _) => ("password_env", a),
                    (_, Some((_, a))) => ("password_file", a),
                    _ => ("password_env", at),
                };
                self.error(
                    at,
                    &f(key),
                    "a password without a username",
                    Some(
                        "add username = \"...\" (or remove the password for anonymous login)"
                            .to_owned(),
                    ),
                );
                identity_ok = false;
            }
            _ => {}
        }
        if (table.contains_key("username") && username.is_none())
            || (table.contains_key("password_env") && password_env.is_none())
            || (table.contains_key("password_file") && password_file.is_none())
        {
            identity_ok = false;
        }

        let publishing = self.millis(table, "publishing_ms", &f("publishing_ms"), 1000);
        let timeout = self.millis(table, "timeout_ms", &f("timeout_ms"), 10_000);

        let equipment = match self.required(
            table,
            "equipment",
            &f("equipment"),
            at,
            "the equipment path whose tags the nodes feed",
        ) {
            Some((path, offset)) => {
                let at = self.inside(offset);
                self.model_equipment(model, path, at, &f("equipment"))
            }
            None => None,
        };

        let node_tables = self.array_of_tables(table, "node", &f("node"));
        let browse_tables = self.array_of_tables(table, "browse", &f("browse"));
        if !table.contains_key("node") && !table.contains_key("browse") {
            self.error(
                at,
                &f("node"),
                "server has no nodes",
                Some("add [[opcua.node]] or [[opcua.browse]] tables below the server".to_owned()),
            );
        }
        let mut nodes = Vec::new();
        let mut node_ids: HashMap<String, String> = HashMap::new();
        let mut nodes_ok = true;
        for (index, spec, node_at) in node_tables {
            let node_field = format!("{field}.node[{index}]");
            match self.node(
                spec,
                node_at,
                &node_field,
                equipment.map(|e| (model, e)),
                topics,
                &mut node_ids,
            ) {
                Some(node) => nodes.push(node),
                None => nodes_ok = false,
            }
        }
        let mut browses = Vec::new();
        let mut folders = HashSet::new();
        for (index, spec, browse_at) in browse_tables {
            let browse_field = format!("{field}.browse[{index}]");
            match self.browse(spec, browse_at, &browse_field) {
                Some(b) => {
                    if !folders.insert(b.folder.clone()) {
                        let offset = spec.get("folder").map_or(browse_at, |i| i.span().start);
                        self.error_inside(
                            offset,
                            &format!("{browse_field}.folder"),
                            format!("folder \"{}\" is browsed twice", b.folder),
                            None,
                        );
                        nodes_ok = false;
                    }
                    browses.push(b);
                }
                None => nodes_ok = false,
            }
        }

        let equipment = equipment?;
        let tags = equipment
            .tags
            .iter()
            .map(|t| (t.path.as_str().to_owned(), target_of(&t.tag_type)))
            .collect();
        if !(security_ok && identity_ok && nodes_ok) {
            return None;
        }
        Some(ServerConfig {
            name: name?,
            endpoint: endpoint?,
            policy: policy?.0,
            mode: mode?.0,
            username: username.map(|(u, _)| u.to_owned()),
            password,
            equipment: equipment.path.as_str().to_owned(),
            enterprise: model.enterprise().as_str().to_owned(),
            publishing: publishing?,
            timeout: timeout?,
            nodes,
            browses,
            tags,
        })
    }

    fn node(
        &mut self,
        spec: &DeTable<'_>,
        at: usize,
        field: &str,
        owner: Option<(&PlantModel, &Equipment)>,
        topics: &mut HashMap<String, (String, usize)>,
        node_ids: &mut HashMap<String, String>,
    ) -> Option<NodeConfig> {
        let equipment = owner.map(|(_, e)| e);
        self.unknown_fields(spec, field, NODE_FIELDS);
        let f = |key: &str| format!("{field}.{key}");
        let tag = self.required(
            spec,
            "tag",
            &f("tag"),
            at,
            "a tag path of the server's equipment, e.g. tag = \"temperature\"",
        );
        let node_id = match self.required(
            spec,
            "node_id",
            &f("node_id"),
            at,
            "node_id = \"ns=2;s=Mixer.Temperature\"",
        ) {
            Some((id, offset)) => match NodeId::from_str(id) {
                Ok(_) => {
                    if let Some(first) = node_ids.get(id) {
                        self.error_inside(
                            offset,
                            &f("node_id"),
                            format!("node \"{id}\" is already mapped by {first}"),
                            Some("map each node to one tag".to_owned()),
                        );
                        None
                    } else {
                        node_ids.insert(id.to_owned(), field.to_owned());
                        Some(id.to_owned())
                    }
                }
                Err(_) => {
                    self.error_inside(
                        offset,
                        &f("node_id"),
                        format!("\"{id}\" is not a node id"),
                        Some("ns=<index>;<i|s|g|b>=<identifier>, e.g. \"ns=2;s=Mixer.Temperature\" or \"i=2258\"".to_owned()),
                    );
                    None
                }
            },
            None => None,
        };
        let sampling = self.integer(spec, "sampling_ms", &f("sampling_ms"), 0, 3_600_000, -1);
        let queue_size = self.integer(spec, "queue_size", &f("queue_size"), 1, 10_000, 1);
        let deadband = self.non_negative(spec, "deadband", &f("deadband"));

        let tag_spec = match (tag, owner) {
            (Some((path, offset)), Some((model, equipment))) => {
                let at = self.inside(offset);
                self.equipment_tag(model, equipment, path, at, &f("tag"))
                    .map(|t| (t, offset))
            }
            _ => None,
        };
        let (tag_spec, tag_at) = tag_spec?;
        let topic = format!("{}/{}", equipment?.path.as_str(), tag_spec.path.as_str());
        if let Some((first, line)) = topics.get(&topic) {
            self.error_inside(
                tag_at,
                &f("tag"),
                format!(
                    "tag \"{}\" is already fed by {first} on line {line}",
                    tag_spec.path.as_str()
                ),
                Some("each tag has one source".to_owned()),
            );
            return None;
        }
        topics.insert(topic.clone(), (field.to_owned(), self.line_of(tag_at)));
        let target = target_of(&tag_spec.tag_type);
        if let (Some(Some(_)), Some(d)) = (deadband, spec.get("deadband"))
            && !matches!(target, Target::Float | Target::Int)
        {
            self.error(
                d.span().start,
                &f("deadband"),
                format!(
                    "a deadband needs a numeric tag; \"{}\" is not",
                    tag_spec.path.as_str()
                ),
                None,
            );
            return None;
        }
        Some(NodeConfig {
            tag: tag_spec.path.as_str().to_owned(),
            topic,
            node_id: node_id?,
            sampling: sampling
                .map(|s| (s >= 0).then(|| Duration::from_millis(s.unsigned_abs())))?,
            queue_size: u32::try_from(queue_size?).unwrap_or(1),
            deadband: deadband?.filter(|d| *d > 0.0),
            target,
        })
    }

    fn browse(&mut self, spec: &DeTable<'_>, at: usize, field: &str) -> Option<BrowseConfig> {
        self.unknown_fields(spec, field, BROWSE_FIELDS);
        let f = |key: &str| format!("{field}.{key}");
        let folder = match self.required(
            spec,
            "folder",
            &f("folder"),
            at,
            "folder = \"ns=2;s=Mixer.Counters\"",
        ) {
            Some((id, offset)) => {
                match NodeId::from_str(id) {
                    Ok(_) => Some(id.to_owned()),
                    Err(_) => {
                        self.error_inside(
                        offset,
                        &f("folder"),
                        format!("\"{id}\" is not a node id"),
                        Some("the node id of an Object or folder, e.g. \"ns=2;s=Mixer.Counters\"".to_owned()),
                    );
                        None
                    }
                }
            }
            None => None,
        };
        let prefix = match self.string(spec, "tags_prefix", &f("tags_prefix")) {
            Some((p, offset)) => {
                let trimmed = p.trim_end_matches('/');
                if !trimmed.is_empty() && trimmed.split('/').any(|s| validate_segment(s).is_err()) {
                    self.error_inside(
                        offset,
                        &f("tags_prefix"),
                        format!("\"{p}\" is not a tag path prefix"),
                        Some(
                            "segments of letters, digits, '-' and '_' separated by '/'".to_owned(),
                        ),
                    );
                    None
                } else {
                    Some(p.to_owned())
                }
            }
            None if spec.contains_key("tags_prefix") => None,
            None => Some(String::new()),
        };
        let rebrowse = self.integer(spec, "rebrowse_s", &f("rebrowse_s"), 0, 86_400, 60);
        let sampling = self.integer(spec, "sampling_ms", &f("sampling_ms"), 0, 3_600_000, -1);
        let queue_size = self.integer(spec, "queue_size", &f("queue_size"), 1, 10_000, 1);
        Some(BrowseConfig {
            folder: folder?,
            tags_prefix: prefix?,
            rebrowse: Duration::from_secs(rebrowse?.unsigned_abs()),
            sampling: sampling
                .map(|s| (s >= 0).then(|| Duration::from_millis(s.unsigned_abs())))?,
            queue_size: u32::try_from(queue_size?).unwrap_or(1),
        })
    }
}

/// `opc.tcp://host[:port][/path]`.
fn check_endpoint(url: &str) -> Result<(), (String, String)> {
    let hint = || "opc.tcp://HOST:PORT/PATH, e.g. \"opc.tcp://192.168.1.20:4840\"".to_owned();
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        let scheme = url.split("://").next().filter(|_| url.contains("://"));
        let message = match scheme {
            Some(s) => format!(
                "unsupported scheme \"{s}\" in endpoint \"{url}\" (only opc.tcp is supported)"
            ),
            None => format!("\"{url}\" is not an opc.tcp:// URL"),
        };
        return Err((message, hint()));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err((format!("unclosed '[' in endpoint \"{url}\""), hint())),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err((format!("endpoint \"{url}\" has no host"), hint()));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(p) if p > 0)
    {
        return Err((format!("bad port \"{port}\" in endpoint \"{url}\""), hint()));
    }
    Ok(())
}
