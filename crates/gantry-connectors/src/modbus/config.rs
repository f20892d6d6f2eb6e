//! `[[modbus]]` devices in the site model file: types and the parser.
//!
//! The TOML tree is walked by hand with spans (like the plant model itself),
//! so every problem is reported at once as `file:line:col: field: message
//! (hint: ...)`, in the same [`ModelError`] form `gantry check` prints for
//! the model.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use gantry_model::suggest::closest;
use gantry_model::toml_check::TomlChecker;
use gantry_model::{Equipment, ModelError, PlantModel, TagSpec, TagType, validate_segment};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Default Modbus TCP port.
pub const DEFAULT_PORT: u16 = 502;
/// Largest register count of one read (function codes 3 and 4).
pub const MAX_REGISTERS_PER_REQUEST: u16 = 125;
/// Largest bit count of one read (function codes 1 and 2).
pub const MAX_BITS_PER_REQUEST: u16 = 2000;
/// Highest unit id of a single device (248..=255 are reserved).
pub const MAX_UNIT_ID: u8 = 247;

const DEVICE_FIELDS: &[&str] = &[
    "name",
    "host",
    "port",
    "unit_id",
    "poll_ms",
    "timeout_ms",
    "byte_order",
    "word_order",
    "max_gap",
    "equipment",
    "point",
];
const POINT_FIELDS: &[&str] = &[
    "tag", "table", "address", "type", "length", "bit", "scale", "offset", "deadband", "enum",
];
const TABLES: &[&str] = &["holding", "input", "coil", "discrete"];
const TYPES: &[&str] = &[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64", "string", "bit",
];
const ORDERS: &[&str] = &["big", "little"];

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Holding registers (read with function code 3).
    Holding,
    /// Input registers (function code 4).
    Input,
    /// Coils (function code 1).
    Coil,
    /// Discrete inputs (function code 2).
    Discrete,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }

    /// Coils and discrete inputs hold bits; the others 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The most items one read request may cover.
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            MAX_BITS_PER_REQUEST
        } else {
            MAX_REGISTERS_PER_REQUEST
        }
    }

    fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "holding" => Table::Holding,
            "input" => Table::Input,
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            _ => return None,
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte order within a register, or register order within a 32/64-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Most significant first (the Modbus standard).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

/// How a point's raw data is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointType {
    /// One coil or discrete input.
    Bool,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Float32,
    Float64,
    /// ASCII/UTF-8 text in `registers` registers, two bytes each; trailing
    /// NULs and spaces are removed.
    String {
        registers: u16,
    },
    /// One bit (0 = least significant) of a register.
    Bit {
        bit: u8,
    },
}

impl PointType {
    pub fn name(self) -> &'static str {
        match self {
            PointType::Bool => "bool",
            PointType::Int16 => "int16",
            PointType::Uint16 => "uint16",
            PointType::Int32 => "int32",
            PointType::Uint32 => "uint32",
            PointType::Int64 => "int64",
            PointType::Float32 => "float32",
            PointType::Float64 => "float64",
            PointType::String { .. } => "string",
            PointType::Bit { .. } => "bit",
        }
    }

    /// Registers (or bits, for `Bool`) the point occupies.
    pub fn width(self) -> u16 {
        match self {
            PointType::Bool | PointType::Int16 | PointType::Uint16 | PointType::Bit { .. } => 1,
            PointType::Int32 | PointType::Uint32 | PointType::Float32 => 2,
            PointType::Int64 | PointType::Float64 => 4,
            PointType::String { registers } => registers,
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(
            self,
            PointType::Int16
                | PointType::Uint16
                | PointType::Int32
                | PointType::Uint32
                | PointType::Int64
        )
    }

    pub fn is_float(self) -> bool {
        matches!(self, PointType::Float32 | PointType::Float64)
    }

    /// Bool, bit: a truth value.
    pub fn is_boolean(self) -> bool {
        matches!(self, PointType::Bool | PointType::Bit { .. })
    }
}

/// What a point publishes, from the contract type of its tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Float,
    Int,
    Bool,
    String,
    /// Raw integers mapped through the point's `enum` table (or text read
    /// from a string point, which must be one of `values`).
    Enum {
        values: Vec<String>,
    },
}

impl Target {
    fn of(tag: &TagSpec) -> Target {
        match &tag.tag_type {
            TagType::Float => Target::Float,
            TagType::Int => Target::Int,
            TagType::Bool => Target::Bool,
            TagType::String => Target::String,
            TagType::Enum { values } => Target::Enum {
                values: values.clone(),
            },
        }
    }
}

/// One `[[modbus.point]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PointConfig {
    /// Tag path below the device's equipment.
    pub tag: String,
    /// Full namespace topic: `<equipment>/<tag>`.
    pub topic: String,
    pub table: Table,
    /// 0-based protocol address.
    pub address: u16,
    pub kind: PointType,
    /// Published value = raw * scale + offset.
    pub scale: f64,
    pub offset: f64,
    /// Publish a numeric change only when |new - last| > deadband.
    pub deadband: f64,
    /// Raw integer -> enum value, for enum tags.
    pub enum_map: Vec<(i64, String)>,
    pub target: Target,
}

impl PointConfig {
    /// The protocol address range the point occupies (registers or bits).
    pub fn range(&self) -> Range<u32> {
        let start = u32::from(self.address);
        start..start + u32::from(self.kind.width())
    }
}

/// One `[[modbus]]` device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Unique name, a valid topic segment; names the health topic.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub poll: Duration,
    pub timeout: Duration,
    pub byte_order: Order,
    pub word_order: Order,
    /// Unused registers (or bits) a read may bridge to join two points.
    pub max_gap: u16,
    /// Equipment path the points' tags belong to.
    pub equipment: String,
    /// The model's enterprise: health goes to `<enterprise>/_sys/...`.
    pub enterprise: String,
    pub points: Vec<PointConfig>,
    /// Where the device is declared, for errors found later (host lookups).
    pub origin: Origin,
}

impl DeviceConfig {
    /// `<enterprise>/_sys/connectors/modbus/<name>`.
    pub fn health_topic(&self) -> String {
        format!("{}/_sys/connectors/modbus/{}", self.enterprise, self.name)
    }
}

/// Where a device is declared in the site file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    /// `modbus[N]`.
    pub field: String,
    /// 1-based position of the `host` value.
    pub host_line: usize,
    pub host_column: usize,
}

impl Origin {
    /// An error located at the device's `host` field.
    pub fn host_error(&self, message: String, hint: Option<String>) -> ModelError {
        ModelError {
            file: self.file.clone(),
            line: self.host_line,
            column: self.host_column,
            field: format!("{}.host", self.field),
            message,
            hint,
        }
    }
}

/// Every problem found in the `[[modbus]]` tables, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ModelError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses the `[[modbus]]` devices of a site model file. `model` is the
/// plant model parsed from the same `src`; points are checked against its
/// equipment and tag contracts. No `[[modbus]]` table: an empty list.
pub fn parse_devices(
    src: &str,
    file: &str,
    model: &PlantModel,
) -> Result<Vec<DeviceConfig>, ConfigErrors> {
    let (devices, errors, _) = parse_all(src, file, model);
    if errors.is_empty() {
        Ok(devices)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The valid devices, every error (sorted), and every (host, port) found.
fn parse_all(
    src: &str,
    file: &str,
    model: &PlantModel,
) -> (Vec<DeviceConfig>, Vec<ModelError>, Vec<HostRef>) {
    let mut p = Parser {
        checker: TomlChecker::new(src, file),
        hosts: Vec::new(),
    };
    let devices = match DeTable::parse(src) {
        Ok(root) => p.devices(root.get_ref(), model),
        Err(e) => {
            p.error(e.span().map_or(0, |s| s.start), "", e.message(), None);
            Vec::new()
        }
    };
    p.errors.sort_by_key(|e| (e.line, e.column));
    (devices, p.checker.errors, p.hosts)
}

/// Reads `path` and parses its `[[modbus]]` devices against `model`.
pub fn load_devices(
    path: &std::path::Path,
    model: &PlantModel,
) -> Result<Vec<DeviceConfig>, ConfigErrors> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse_devices(&src, &file, model),
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

/// Everything `gantry check` reports about the `[[modbus]]` devices of the
/// site file at `path` (already parsed as `model`): configuration errors,
/// host names that do not resolve, and with `probe`, devices that do not
/// accept a TCP connection. In file order.
pub fn check_file(
    path: &std::path::Path,
    model: &PlantModel,
    probe_devices: bool,
) -> Vec<ModelError> {
    let file = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(src) => src,
        Err(e) => {
            return vec![ModelError {
                file,
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read site model: {e}"),
                hint: None,
            }];
        }
    };
    let (devices, mut errors, hosts) = parse_all(&src, &file, model);
    errors.extend(resolve_hosts(&hosts));
    if probe_devices {
        errors.extend(probe(&devices));
    }
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

/// Resolves every device's host name (without connecting); one error per
/// host that does not resolve.
pub fn check_hosts(devices: &[DeviceConfig]) -> Vec<ModelError> {
    let hosts: Vec<HostRef> = devices
        .iter()
        .map(|d| (d.host.clone(), d.port, d.origin.clone()))
        .collect();
    resolve_hosts(&hosts)
}

fn resolve_hosts(hosts: &[HostRef]) -> Vec<ModelError> {
    use std::net::ToSocketAddrs;
    let mut errors = Vec::new();
    for (host, port, origin) in hosts {
        match (host.as_str(), *port).to_socket_addrs().map(|a| a.len()) {
            Ok(n) if n > 0 => {}
            Ok(_) => errors
                .push(origin.host_error(format!("host \"{host}\" resolves to no address"), None)),
            Err(e) => errors.push(origin.host_error(
                format!("cannot resolve host \"{host}\": {e}"),
                Some("use an IP address or a name this machine can resolve".to_owned()),
            )),
        }
    }
    errors
}

/// Tries a TCP connection to every device (in parallel, each bounded by its
/// `timeout_ms`); one error per device that cannot be reached.
pub fn probe(devices: &[DeviceConfig]) -> Vec<ModelError> {
    use std::net::{TcpStream, ToSocketAddrs};
    let results: Vec<Option<ModelError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|device| {
                scope.spawn(move || {
                    let target = format!("{}:{}", device.host, device.port);
                    let addrs: Vec<_> = match (device.host.as_str(), device.port).to_socket_addrs()
                    {
                        Ok(addrs) => addrs.collect(),
                        // check_hosts reports names that do not resolve.
                        Err(_) => return None,
                    };
                    let mut last = None;
                    for addr in addrs {
                        match TcpStream::connect_timeout(&addr, device.timeout) {
                            Ok(_) => return None,
                            Err(e) => last = Some(e),
                        }
                    }
                    let reason = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
                    Some(device.origin.host_error(
                        format!(
                            "device \"{}\" is unreachable at {target}: {reason}",
                            device.name
                        ),
                        Some(format!(
                            "is the device on and listening for Modbus TCP? (timeout {} ms)",
                            device.timeout.as_millis()
                        )),
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    results.into_iter().flatten().collect()
}

type Item<'i> = Spanned<DeValue<'i>>;

/// A device's host and port, and where they are declared.
type HostRef = (String, u16, Origin);

/// The `[[modbus]]` parser: the shared checks of [`TomlChecker`] (through
/// `Deref`) plus what only Modbus needs.
struct Parser<'s> {
    checker: TomlChecker<'s>,
    /// Every device's host and port that parsed, even in an otherwise bad
    /// device, so `gantry check` can resolve them all.
    hosts: Vec<HostRef>,
}

/// A point's occupied range, for overlap errors.
struct Occupied {
    range: Range<u32>,
    bit: Option<u8>,
    field: String,
    tag: String,
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

impl<'s> Parser<'s> {
    /// One of `choices`; unknown values get a did-you-mean hint.
    fn choice<'c>(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        field: &str,
        what: &str,
        choices: &[&'c str],
        synonym: fn(&str) -> Option<&'static str>,
    ) -> Option<(&'c str, usize)> {
        let (value, at) = self.string(table, key, field)?;
        if let Some(found) = choices.iter().find(|c| **c == value) {
            return Some((found, at));
        }
        let hint = match synonym(value).or_else(|| closest(value, choices)) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => format!("one of {}", choices.join(", ")),
        };
        self.error(at, field, format!("unknown {what} \"{value}\""), Some(hint));
        None
    }

    fn devices(&mut self, root: &DeTable<'_>, model: &PlantModel) -> Vec<DeviceConfig> {
        let mut devices = Vec::new();
        // Device name -> (field, line) of its first use.
        let mut names: HashMap<String, (String, usize)> = HashMap::new();
        // Topic -> (field, line) of the point that maps it.
        let mut topics: HashMap<String, (String, usize)> = HashMap::new();
        for (index, table, at) in self.array_of_tables(root, "modbus", "modbus") {
            let field = format!("modbus[{index}]");
            if let Some(device) = self.device(table, at, &field, model, &mut topics) {
                if let Some((first, line)) = names.get(&device.name) {
                    let offset = table.get("name").map_or(at, |n| n.span().start);
                    self.error(
                        offset,
                        &format!("{field}.name"),
                        format!(
                            "duplicate device name \"{}\", already used by {first} on line {line}",
                            device.name
                        ),
                        Some("give every [[modbus]] device its own name".to_owned()),
                    );
                    continue;
                }
                let line = self.line_of(table.get("name").map_or(at, |n| n.span().start));
                names.insert(device.name.clone(), (field.clone(), line));
                devices.push(device);
            }
        }
        devices
    }

    fn device(
        &mut self,
        table: &DeTable<'_>,
        at: usize,
        field: &str,
        model: &PlantModel,
        topics: &mut HashMap<String, (String, usize)>,
    ) -> Option<DeviceConfig> {
        self.unknown_fields(table, field, DEVICE_FIELDS);
        let f = |key: &str| format!("{field}.{key}");

        let name = match self.string(table, "name", &f("name")) {
            Some((name, offset)) => match validate_segment(name) {
                Ok(()) => Some(name.to_owned()),
                Err(e) => {
                    let at = self.inside(offset);
                    self.error(at, &f("name"), e.to_string(), e.hint());
                    None
                }
            },
            None => {
                if !table.contains_key("name") {
                    self.error(
                        at,
                        &f("name"),
                        "missing required field",
                        Some("name = \"filler-plc\"".to_owned()),
                    );
                }
                None
            }
        };
        let host = match self.string(table, "host", &f("host")) {
            Some((host, offset)) if host.trim().is_empty() => {
                self.error(offset, &f("host"), "must not be empty", None);
                None
            }
            Some((host, offset)) => Some((host.to_owned(), offset)),
            None => {
                if !table.contains_key("host") {
                    self.error(
                        at,
                        &f("host"),
                        "missing required field",
                        Some("host = \"192.168.1.10\"".to_owned()),
                    );
                }
                None
            }
        };
        let port = self
            .integer(table, "port", &f("port"), 1, 65_535, None)
            .map_or(Some(DEFAULT_PORT), |(p, _)| u16::try_from(p).ok());
        let unit_id = self
            .integer(
                table,
                "unit_id",
                &f("unit_id"),
                0,
                i64::from(MAX_UNIT_ID),
                Some("unit ids 248..=255 are reserved; a device behind no gateway usually answers to 1"),
            )
            .map(|(u, _)| u8::try_from(u).unwrap_or(1));
        let unit_ok = !table.contains_key("unit_id") || unit_id.is_some();
        let duration = |p: &mut Self, key: &str| -> Option<Duration> {
            if !table.contains_key(key) {
                return Some(Duration::from_millis(1000));
            }
            p.integer(
                table,
                key,
                &f(key),
                1,
                3_600_000,
                Some("milliseconds, at least 1"),
            )
            .map(|(ms, _)| Duration::from_millis(ms.unsigned_abs()))
        };
        let poll = duration(self, "poll_ms");
        let timeout = duration(self, "timeout_ms");
        let order = |p: &mut Self, key: &str| -> Option<Order> {
            if !table.contains_key(key) {
                return Some(Order::Big);
            }
            match p.choice(table, key, &f(key), key, ORDERS, |_| None)? {
                ("big", _) => Some(Order::Big),
                _ => Some(Order::Little),
            }
        };
        let byte_order = order(self, "byte_order");
        let word_order = order(self, "word_order");
        let max_gap = if table.contains_key("max_gap") {
            self.integer(
                table,
                "max_gap",
                &f("max_gap"),
                0,
                i64::from(MAX_BITS_PER_REQUEST),
                None,
            )
            .and_then(|(g, _)| u16::try_from(g).ok())
        } else {
            Some(0)
        };

        let equipment = match self.string(table, "equipment", &f("equipment")) {
            Some((path, offset)) => self.model_equipment(model, path, offset, &f("equipment")),
            None => {
                if !table.contains_key("equipment") {
                    self.error(
                        at,
                        &f("equipment"),
                        "missing required field",
                        Some("the equipment path whose tags the points feed".to_owned()),
                    );
                }
                None
            }
        };

        let point_tables = self.array_of_tables(table, "point", &f("point"));
        if point_tables.is_empty() && !table.contains_key("point") {
            self.error(
                at,
                &f("point"),
                "device has no points",
                Some("add [[modbus.point]] tables below the device".to_owned()),
            );
        }
        let mut points = Vec::with_capacity(point_tables.len());
        let mut occupied: HashMap<Table, Vec<Occupied>> = HashMap::new();
        for (index, spec, point_at) in point_tables {
            let point_field = format!("{field}.point[{index}]");
            if let Some(point) = self.point(spec, point_at, &point_field, model, equipment, topics)
            {
                let address_at = spec.get("address").map_or(point_at, |a| a.span().start);
                self.overlaps(&point, &point_field, address_at, &mut occupied);
                points.push(point);
            }
        }

        let host_offset = host.as_ref().map_or(at, |(_, o)| *o);
        let (host_line, host_column) = self.pos(self.inside(host_offset));
        let origin = Origin {
            file: self.file.to_owned(),
            field: field.to_owned(),
            host_line,
            host_column,
        };
        if let (Some((host, _)), Some(port)) = (&host, port) {
            self.hosts.push((host.clone(), port, origin.clone()));
        }
        Some(DeviceConfig {
            name: name?,
            host: host?.0,
            port: port?,
            unit_id: if unit_ok {
                unit_id.unwrap_or(1)
            } else {
                return None;
            },
            poll: poll?,
            timeout: timeout?,
            byte_order: byte_order?,
            word_order: word_order?,
            max_gap: max_gap?,
            equipment: equipment?.path.as_str().to_owned(),
            enterprise: model.enterprise().as_str().to_owned(),
            points,
            origin,
        })
    }

    fn overlaps(
        &mut self,
        point: &PointConfig,
        field: &str,
        offset: usize,
        occupied: &mut HashMap<Table, Vec<Occupied>>,
    ) {
        let range = point.range();
        let bit = match point.kind {
            PointType::Bit { bit } => Some(bit),
            _ => None,
        };
        let taken = occupied.entry(point.table).or_default();
        let clash = taken.iter().find(|other| {
            let intersects = other.range.start < range.end && range.start < other.range.end;
            // Different bits of one register are distinct points.
            let distinct_bits = matches!((other.bit, bit), (Some(a), Some(b)) if a != b);
            intersects && !distinct_bits
        });
        if let Some(other) = clash {
            let message = format!(
                "{} {}..{} overlaps {} (tag \"{}\", {} {}..{})",
                point.table,
                range.start,
                range.end - 1,
                other.field,
                other.tag,
                point.table,
                other.range.start,
                other.range.end - 1
            );
            self.error(
                offset,
                &format!("{field}.address"),
                format!("point \"{}\": {message}", point.tag),
                Some("each register or bit belongs to one point (except different bits of one register)".to_owned()),
            );
        }
        taken.push(Occupied {
            range,
            bit,
            field: field.to_owned(),
            tag: point.tag.clone(),
        });
    }

    fn point(
        &mut self,
        spec: &DeTable<'_>,
        at: usize,
        field: &str,
        model: &PlantModel,
        equipment: Option<&Equipment>,
        topics: &mut HashMap<String, (String, usize)>,
    ) -> Option<PointConfig> {
        self.unknown_fields(spec, field, POINT_FIELDS);
        let f = |key: &str| format!("{field}.{key}");
        let missing = |p: &mut Self, key: &str, hint: &str| {
            if !spec.contains_key(key) {
                p.error(at, &f(key), "missing required field", Some(hint.to_owned()));
            }
        };

        // The tag and its contract.
        let tag = self.string(spec, "tag", &f("tag"));
        if tag.is_none() {
            missing(
                self,
                "tag",
                "a tag path of the device's equipment, e.g. tag = \"speed\"",
            );
        }
        let tag_spec = match (tag, equipment) {
            (Some((path, offset)), Some(equipment)) => self
                .equipment_tag(model, equipment, path, offset, &f("tag"))
                .map(|t| (t, offset)),
            _ => None,
        };

        let table = self
            .choice(spec, "table", &f("table"), "table", TABLES, table_synonym)
            .and_then(|(t, _)| Table::parse(t));
        if !spec.contains_key("table") {
            missing(self, "table", "one of holding, input, coil, discrete");
        }
        let address = self
            .integer(
                spec,
                "address",
                &f("address"),
                0,
                65_535,
                Some("0-based protocol address, 0..=65535"),
            )
            .map(|(a, o)| (u16::try_from(a).unwrap_or(0), o));
        if !spec.contains_key("address") {
            missing(
                self,
                "address",
                "the 0-based protocol address, e.g. address = 0",
            );
        }
        let type_name = self.choice(spec, "type", &f("type"), "point type", TYPES, type_synonym);
        if !spec.contains_key("type") {
            missing(self, "type", &format!("one of {}", TYPES.join(", ")));
        }

        // Type-specific fields.
        let length = self
            .integer(
                spec,
                "length",
                &f("length"),
                1,
                i64::from(MAX_REGISTERS_PER_REQUEST),
                Some("registers of the string, two characters each"),
            )
            .map(|(l, o)| (u16::try_from(l).unwrap_or(1), o));
        let bit = self
            .integer(
                spec,
                "bit",
                &f("bit"),
                0,
                15,
                Some("bit 0 is the least significant"),
            )
            .map(|(b, o)| (u8::try_from(b).unwrap_or(0), o));
        let mut kind_ok = true;
        let kind = match type_name {
            Some(("string", type_at)) => match length {
                Some((registers, _)) => Some(PointType::String { registers }),
                None => {
                    if !spec.contains_key("length") {
                        self.error(
                            type_at,
                            &f("length"),
                            "a string point needs length (registers)",
                            Some("length = 8 reads 16 characters".to_owned()),
                        );
                    }
                    None
                }
            },
            Some(("bit", type_at)) => match bit {
                Some((bit, _)) => Some(PointType::Bit { bit }),
                None => {
                    if !spec.contains_key("bit") {
                        self.error(type_at, &f("bit"), "a bit point needs bit (0..=15)", None);
                    }
                    None
                }
            },
            Some((name, _)) => Some(match name {
                "bool" => PointType::Bool,
                "int16" => PointType::Int16,
                "uint16" => PointType::Uint16,
                "int32" => PointType::Int32,
                "uint32" => PointType::Uint32,
                "int64" => PointType::Int64,
                "float32" => PointType::Float32,
                _ => PointType::Float64,
            }),
            None => None,
        };
        if let (Some((_, at)), Some(k)) = (length, type_name)
            && k.0 != "string"
        {
            self.error(
                at,
                &f("length"),
                format!("only string points take length; this point is \"{}\"", k.0),
                None,
            );
            kind_ok = false;
        }
        if let (Some((_, at)), Some(k)) = (bit, type_name)
            && k.0 != "bit"
        {
            self.error(
                at,
                &f("bit"),
                format!("only bit points take bit; this point is \"{}\"", k.0),
                Some("type = \"bit\" reads one bit of a register".to_owned()),
            );
            kind_ok = false;
        }

        // Table and type must agree.
        if let (Some(table), Some(kind), Some((_, type_at))) = (table, kind, type_name) {
            if table.is_bits() && kind != PointType::Bool {
                self.error(
                    type_at,
                    &f("type"),
                    format!(
                        "a {table} holds single bits; its points are type \"bool\", not \"{}\"",
                        kind.name()
                    ),
                    Some("type = \"bool\"".to_owned()),
                );
                kind_ok = false;
            } else if !table.is_bits() && kind == PointType::Bool {
                self.error(
                    type_at,
                    &f("type"),
                    format!("\"bool\" reads a coil or discrete input, not a {table} register"),
                    Some("use type = \"bit\" with bit = N for one bit of a register".to_owned()),
                );
                kind_ok = false;
            }
        }
        if let (Some((address, address_at)), Some(kind)) = (address, kind) {
            let end = u32::from(address) + u32::from(kind.width());
            if end > 65_536 {
                self.error(
                    address_at,
                    &f("address"),
                    format!(
                        "{} at {address} needs {} {}, past the last address 65535",
                        kind.name(),
                        kind.width(),
                        if kind == PointType::Bool {
                            "bit"
                        } else {
                            "registers"
                        }
                    ),
                    None,
                );
                kind_ok = false;
            }
        }

        // Scaling.
        let scale = self.number(spec, "scale", &f("scale"));
        let offset = self.number(spec, "offset", &f("offset"));
        let deadband = self.number(spec, "deadband", &f("deadband"));
        if let Some((s, at)) = scale
            && s == 0.0
        {
            self.error(at, &f("scale"), "scale must not be 0", None);
            kind_ok = false;
        }
        if let Some((d, at)) = deadband
            && d < 0.0
        {
            self.error(at, &f("deadband"), "deadband must not be negative", None);
            kind_ok = false;
        }
        if let Some(kind) = kind
            && !(kind.is_integer() || kind.is_float())
        {
            for key in ["scale", "offset", "deadband"] {
                if let Some(item) = spec.get(key) {
                    self.error(
                        item.span().start,
                        &f(key),
                        format!(
                            "only numeric points take {key}; this point is \"{}\"",
                            kind.name()
                        ),
                        None,
                    );
                    kind_ok = false;
                }
            }
        }

        // The enum map.
        let enum_map = match spec.get("enum") {
            Some(item) => self.enum_map(item, &f("enum")),
            None => Some(Vec::new()),
        };

        // The point must be able to feed its tag's contract type.
        if let (Some((tag, _)), Some(kind)) = (tag_spec, kind) {
            let type_at = spec.get("type").map_or(at, |t| t.span().start);
            let integral = |x: Option<(f64, usize)>, default: f64| {
                x.map_or(default, |(v, _)| v).fract() == 0.0
            };
            let problem: Option<(usize, String, Option<String>)> = match &tag.tag_type {
                TagType::Float if kind.is_integer() || kind.is_float() => None,
                TagType::Int if kind.is_integer() => {
                    if integral(scale, 1.0) && integral(offset, 0.0) {
                        None
                    } else {
                        let at = scale
                            .filter(|(s, _)| s.fract() != 0.0)
                            .or(offset)
                            .map_or(type_at, |(_, o)| o);
                        Some((
                            at,
                            format!(
                                "a fractional scale or offset gives non-integer values, but tag \"{}\" is int",
                                tag.path.as_str()
                            ),
                            Some(
                                "make the tag a float, or use whole-number scale and offset"
                                    .to_owned(),
                            ),
                        ))
                    }
                }
                TagType::Bool if kind.is_boolean() => None,
                TagType::String if matches!(kind, PointType::String { .. }) => None,
                TagType::Enum { .. } if matches!(kind, PointType::String { .. }) => None,
                TagType::Enum { .. } if kind.is_integer() || kind.is_boolean() => {
                    if spec.contains_key("enum") {
                        None
                    } else {
                        Some((
                            type_at,
                            format!(
                                "tag \"{}\" is an enum: map the raw values to its values",
                                tag.path.as_str()
                            ),
                            Some(format!(
                                "enum = {{ 0 = \"{}\" }}",
                                tag.tag_type
                                    .enum_values()
                                    .first()
                                    .map_or("...", String::as_str)
                            )),
                        ))
                    }
                }
                other => Some((
                    type_at,
                    format!(
                        "a {} point cannot feed tag \"{}\" of type {}",
                        kind.name(),
                        tag.path.as_str(),
                        other.name()
                    ),
                    Some(compatible_hint(other).to_owned()),
                )),
            };
            if let Some((at, message, hint)) = problem {
                self.error(at, &f("type"), message, hint);
                kind_ok = false;
            }
            if let (Some(item), Some(map)) = (spec.get("enum"), &enum_map) {
                let values = tag.tag_type.enum_values();
                if !matches!(tag.tag_type, TagType::Enum { .. }) {
                    self.error(
                        item.span().start,
                        &f("enum"),
                        format!(
                            "only points of enum tags take enum; tag \"{}\" is {}",
                            tag.path.as_str(),
                            tag.tag_type.name()
                        ),
                        None,
                    );
                    kind_ok = false;
                } else if matches!(kind, PointType::String { .. }) {
                    self.error(
                        item.span().start,
                        &f("enum"),
                        "a string point publishes its text; enum maps raw integers",
                        None,
                    );
                    kind_ok = false;
                } else {
                    for (raw, value) in map {
                        if !values.contains(value) {
                            self.error(
                                item.span().start,
                                &f("enum"),
                                format!(
                                    "{raw} maps to \"{value}\", which is not a value of tag \"{}\"",
                                    tag.path.as_str()
                                ),
                                Some(format!("one of {}", values.join(", "))),
                            );
                            kind_ok = false;
                        }
                    }
                }
            }
        }

        // One point per tag.
        let topic = match (tag_spec, equipment) {
            (Some((tag, tag_at)), Some(equipment)) => {
                let topic = equipment.tag_topic(tag).to_topic();
                if let Some((first, line)) = topics.get(&topic) {
                    self.error(
                        tag_at,
                        &f("tag"),
                        format!("tag \"{topic}\" is already read by {first} on line {line}"),
                        Some("each tag has one source".to_owned()),
                    );
                    kind_ok = false;
                } else {
                    topics.insert(topic.clone(), (field.to_owned(), self.line_of(tag_at)));
                }
                Some(topic)
            }
            _ => None,
        };

        if !kind_ok {
            return None;
        }
        let (tag, _) = tag_spec?;
        Some(PointConfig {
            tag: tag.path.as_str().to_owned(),
            topic: topic?,
            table: table?,
            address: address?.0,
            kind: kind?,
            scale: scale.map_or(1.0, |(s, _)| s),
            offset: offset.map_or(0.0, |(o, _)| o),
            deadband: deadband.map_or(0.0, |(d, _)| d),
            enum_map: enum_map?,
            target: Target::of(tag),
        })
    }

    /// `enum = { 0 = "stopped", 1 = "running" }`.
    fn enum_map(&mut self, item: &Item<'_>, field: &str) -> Option<Vec<(i64, String)>> {
        let DeValue::Table(table) = item.get_ref() else {
            self.error(
                item.span().start,
                field,
                format!(
                    "must be a table of raw value = \"enum value\", got {}",
                    item.get_ref().type_str()
                ),
                Some("enum = { 0 = \"stopped\", 1 = \"running\" }".to_owned()),
            );
            return None;
        };
        let mut map = Vec::with_capacity(table.len());
        let mut ok = true;
        for (key, value) in table.iter() {
            let raw: &str = key.get_ref();
            let key_field = format!("{field}.{raw}");
            let Ok(n) = raw.trim().parse::<i64>() else {
                self.error(
                    key.span().start,
                    &key_field,
                    format!("\"{raw}\" is not an integer raw value"),
                    None,
                );
                ok = false;
                continue;
            };
            match value.get_ref() {
                DeValue::String(s) => map.push((n, s.to_string())),
                other => {
                    self.error(
                        value.span().start,
                        &key_field,
                        format!("must be a string, got {}", other.type_str()),
                        None,
                    );
                    ok = false;
                }
            }
        }
        if map.is_empty() && ok {
            self.error(item.span().start, field, "enum map is empty", None);
            ok = false;
        }
        map.sort_by_key(|(raw, _)| *raw);
        ok.then_some(map)
    }
}

fn compatible_hint(tag_type: &TagType) -> &'static str {
    match tag_type {
        TagType::Float => {
            "float tags take int16, uint16, int32, uint32, int64, float32 or float64 points"
        }
        TagType::Int => "int tags take int16, uint16, int32, uint32 or int64 points",
        TagType::Bool => "bool tags take bool (coil, discrete) or bit points",
        TagType::String => "string tags take string points",
        TagType::Enum { .. } => {
            "enum tags take integer, bool or bit points with an enum map, or string points"
        }
    }
}

fn table_synonym(s: &str) -> Option<&'static str> {
    let lower = s.to_ascii_lowercase().replace(['-', ' '], "_");
    match lower.as_str() {
        "holding_register" | "holding_registers" | "hr" | "4x" | "holdings" => Some("holding"),
        "input_register" | "input_registers" | "ir" | "3x" | "inputs" => Some("input"),
        "coils" | "co" | "0x" => Some("coil"),
        "discrete_input" | "discrete_inputs" | "di" | "1x" | "discretes" => Some("discrete"),
        other => TABLES.iter().copied().find(|t| *t == other),
    }
}

fn type_synonym(s: &str) -> Option<&'static str> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "float" | "real" | "f32" | "single" => Some("float32"),
        "double" | "lreal" | "f64" => Some("float64"),
        "int" | "i16" | "short" | "word_signed" => Some("int16"),
        "uint" | "u16" | "word" | "ushort" => Some("uint16"),
        "i32" | "dint" | "long" => Some("int32"),
        "u32" | "udint" | "dword" | "ulong" => Some("uint32"),
        "i64" | "lint" => Some("int64"),
        "boolean" | "coil" => Some("bool"),
        "str" | "text" | "ascii" => Some("string"),
        other => TYPES.iter().copied().find(|t| *t == other),
    }
}
