//! Parser tests: a good device, and every bad-configuration case with its
//! exact position.

use std::time::Duration;

use gantry_model::{ModelError, PlantModel};

use super::config::*;

/// The model part of the test file. The `[[modbus]]` snippet under test
/// goes between `enterprise` (line 1) and this, so snippet line N is file
/// line N + 1.
const MODEL: &str = r#"
[[site]]
name = "dallas"

[[equipment]]
path = "acme/dallas/packaging/line-1/filler"

[equipment.tags.speed]
type = "float"
[equipment.tags.count]
type = "int"
[equipment.tags.running]
type = "bool"
[equipment.tags.state]
type = "enum"
values = ["stopped", "running", "faulted"]
[equipment.tags.batch]
type = "string"
[equipment.tags.temperature]
type = "float"
"#;

fn source(snippet: &str) -> String {
    format!("enterprise = \"acme\"\n{snippet}{MODEL}")
}

fn parse(snippet: &str) -> Result<Vec<DeviceConfig>, ConfigErrors> {
    let src = source(snippet);
    let model = match PlantModel::parse(&src, "site.toml") {
        Ok(model) => model,
        Err(e) => panic!("model must parse: {e}"),
    };
    parse_devices(&src, "site.toml", &model)
}

fn errors(snippet: &str) -> Vec<ModelError> {
    match parse(snippet) {
        Ok(devices) => panic!("expected errors, got {devices:?}"),
        Err(e) => e.0,
    }
}

/// Exactly one error, at `line:col` of the whole file, on `field`, whose
/// message contains `message`.
#[track_caller]
fn one_error(snippet: &str, line: usize, column: usize, field: &str, message: &str) -> ModelError {
    let errors = errors(snippet);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.into_iter().next().unwrap_or_else(|| unreachable!());
    assert_eq!((e.line, e.column), (line, column), "{e}");
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(message), "{e}");
    e
}

const DEVICE: &str = r#"[[modbus]]
name = "filler-plc"
host = "127.0.0.1"
equipment = "acme/dallas/packaging/line-1/filler"
"#;

fn with_point(point: &str) -> String {
    format!("{DEVICE}[[modbus.point]]\n{point}")
}

#[test]
fn a_complete_device_parses() {
    let snippet = r#"[[modbus]]
name = "filler-plc"
host = "127.0.0.1"
port = 5020
unit_id = 3
poll_ms = 250
timeout_ms = 400
byte_order = "little"
word_order = "little"
max_gap = 8
equipment = "acme/dallas/packaging/line-1/filler"

[[modbus.point]]
tag = "speed"
table = "holding"
address = 0
type = "float32"
scale = 0.5
offset = 1
deadband = 0.1

[[modbus.point]]
tag = "count"
table = "input"
address = 10
type = "uint32"
scale = 10

[[modbus.point]]
tag = "running"
table = "coil"
address = 3
type = "bool"

[[modbus.point]]
tag = "state"
table = "holding"
address = 2
type = "uint16"
enum = { 0 = "stopped", 1 = "running", 2 = "faulted" }

[[modbus.point]]
tag = "batch"
table = "holding"
address = 3
type = "string"
length = 4

[[modbus.point]]
tag = "temperature"
table = "input"
address = 0
type = "int16"
"#;
    let devices = match parse(snippet) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!(d.name, "filler-plc");
    assert_eq!((d.host.as_str(), d.port, d.unit_id), ("127.0.0.1", 5020, 3));
    assert_eq!(d.poll, Duration::from_millis(250));
    assert_eq!(d.timeout, Duration::from_millis(400));
    assert_eq!((d.byte_order, d.word_order), (Order::Little, Order::Little));
    assert_eq!(d.max_gap, 8);
    assert_eq!(d.health_topic(), "acme/_sys/connectors/modbus/filler-plc");
    assert_eq!(d.points.len(), 6);
    let speed = &d.points[0];
    assert_eq!(speed.topic, "acme/dallas/packaging/line-1/filler/speed");
    assert_eq!(
        (speed.table, speed.address, speed.kind),
        (Table::Holding, 0, PointType::Float32)
    );
    assert_eq!((speed.scale, speed.offset, speed.deadband), (0.5, 1.0, 0.1));
    assert_eq!(speed.target, Target::Float);
    assert_eq!(d.points[1].target, Target::Int);
    assert_eq!(
        d.points[3].enum_map,
        [
            (0, "stopped".to_owned()),
            (1, "running".to_owned()),
            (2, "faulted".to_owned())
        ]
    );
    assert_eq!(d.points[4].kind, PointType::String { registers: 4 });
    assert_eq!((d.origin.host_line, d.origin.host_column), (4, 9));
}

#[test]
fn defaults() {
    let devices = parse(&with_point(
        "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let d = &devices[0];
    assert_eq!((d.port, d.unit_id, d.max_gap), (502, 1, 0));
    assert_eq!(
        (d.poll, d.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!((d.byte_order, d.word_order), (Order::Big, Order::Big));
    assert_eq!((d.points[0].scale, d.points[0].offset), (1.0, 0.0));
}

#[test]
fn no_modbus_tables_is_an_empty_list() {
    assert_eq!(parse(""), Ok(Vec::new()));
}

#[test]
fn unknown_fields_get_a_did_you_mean() {
    let e = one_error(
        &format!(
            "{DEVICE}pol_ms = 100\n[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n"
        ),
        6,
        1,
        "modbus[0].pol_ms",
        "unknown field",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"poll_ms\"?"));
    let e = one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\nsclae = 2\n",
        ),
        11,
        1,
        "modbus[0].point[0].sclae",
        "unknown field",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"scale\"?"));
}

#[test]
fn unknown_table_and_type() {
    let e = one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding_register\"\naddress = 0\ntype = \"int16\"\n",
        ),
        8,
        9,
        "modbus[0].point[0].table",
        "unknown table \"holding_register\"",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"holding\"?"));
    let e = one_error(
        &with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"real\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "unknown point type \"real\"",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"float32\"?"));
    let e = one_error(
        &with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int33\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "unknown point type",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"int32\"?"));
}

#[test]
fn bool_only_on_bit_tables_and_bit_only_on_registers() {
    one_error(
        &with_point("tag = \"running\"\ntable = \"holding\"\naddress = 0\ntype = \"bool\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "\"bool\" reads a coil or discrete input, not a holding register",
    );
    one_error(
        &with_point("tag = \"running\"\ntable = \"coil\"\naddress = 0\ntype = \"bit\"\nbit = 2\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "a coil holds single bits",
    );
    one_error(
        &with_point("tag = \"speed\"\ntable = \"discrete\"\naddress = 0\ntype = \"float32\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "a discrete holds single bits",
    );
    one_error(
        &with_point("tag = \"running\"\ntable = \"input\"\naddress = 0\ntype = \"bit\"\n"),
        10,
        8,
        "modbus[0].point[0].bit",
        "a bit point needs bit",
    );
    one_error(
        &with_point(
            "tag = \"running\"\ntable = \"input\"\naddress = 0\ntype = \"bit\"\nbit = 16\n",
        ),
        11,
        7,
        "modbus[0].point[0].bit",
        "16 is out of range 0..=15",
    );
}

#[test]
fn string_needs_length() {
    one_error(
        &with_point("tag = \"batch\"\ntable = \"holding\"\naddress = 0\ntype = \"string\"\n"),
        10,
        8,
        "modbus[0].point[0].length",
        "a string point needs length",
    );
    one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\nlength = 2\n",
        ),
        11,
        10,
        "modbus[0].point[0].length",
        "only string points take length",
    );
}

#[test]
fn address_out_of_range() {
    one_error(
        &with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 65535\ntype = \"float32\"\n"),
        9,
        11,
        "modbus[0].point[0].address",
        "float32 at 65535 needs 2 registers, past the last address 65535",
    );
    one_error(
        &with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 70000\ntype = \"int16\"\n"),
        9,
        11,
        "modbus[0].point[0].address",
        "70000 is out of range 0..=65535",
    );
    // The last register itself is fine.
    assert!(
        parse(&with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 65535\ntype = \"int16\"\n"
        ))
        .is_ok()
    );
}

#[test]
fn overlapping_points_name_both() {
    let snippet = format!(
        "{DEVICE}[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"float32\"\n\
         [[modbus.point]]\ntag = \"count\"\ntable = \"holding\"\naddress = 1\ntype = \"int16\"\n"
    );
    let e = one_error(
        &snippet,
        14,
        11,
        "modbus[0].point[1].address",
        "point \"count\": holding 1..1 overlaps modbus[0].point[0] (tag \"speed\", holding 0..1)",
    );
    assert!(e.hint.is_some());
    // Same address in another table, and two bits of one register: fine.
    let fine = format!(
        "{DEVICE}[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"float32\"\n\
         [[modbus.point]]\ntag = \"count\"\ntable = \"input\"\naddress = 1\ntype = \"int16\"\n\
         [[modbus.point]]\ntag = \"running\"\ntable = \"holding\"\naddress = 5\ntype = \"bit\"\nbit = 1\n\
         [[modbus.point]]\ntag = \"state\"\ntable = \"holding\"\naddress = 5\ntype = \"bit\"\nbit = 2\nenum = {{ 0 = \"stopped\", 1 = \"running\" }}\n"
    );
    assert!(parse(&fine).is_ok(), "{:?}", parse(&fine));
}

#[test]
fn tag_must_be_in_the_model() {
    let e = one_error(
        &with_point("tag = \"sped\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n"),
        7,
        7,
        "modbus[0].point[0].tag",
        "no tag \"sped\" under equipment \"acme/dallas/packaging/line-1/filler\"",
    );
    assert_eq!(e.hint.as_deref(), Some("did you mean \"speed\"?"));
    let e = one_error(
        "[[modbus]]\nname = \"plc\"\nhost = \"127.0.0.1\"\nequipment = \"acme/dallas/packaging/line-1/filer\"\n[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n",
        5,
        13,
        "modbus[0].equipment",
        "no equipment \"acme/dallas/packaging/line-1/filer\" in the model",
    );
    assert_eq!(
        e.hint.as_deref(),
        Some("did you mean \"acme/dallas/packaging/line-1/filler\"?")
    );
}

#[test]
fn point_type_must_fit_the_tag_contract() {
    one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"string\"\nlength = 4\n",
        ),
        10,
        8,
        "modbus[0].point[0].type",
        "a string point cannot feed tag \"speed\" of type float",
    );
    one_error(
        &with_point(
            "tag = \"count\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\nscale = 0.1\n",
        ),
        11,
        9,
        "modbus[0].point[0].type",
        "a fractional scale or offset gives non-integer values, but tag \"count\" is int",
    );
    one_error(
        &with_point(
            "tag = \"count\"\ntable = \"holding\"\naddress = 0\ntype = \"float32\"\nscale = 0.5\n",
        ),
        10,
        8,
        "modbus[0].point[0].type",
        "a float32 point cannot feed tag \"count\" of type int",
    );
    one_error(
        &with_point("tag = \"running\"\ntable = \"holding\"\naddress = 0\ntype = \"uint16\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "a uint16 point cannot feed tag \"running\" of type bool",
    );
    one_error(
        &with_point("tag = \"state\"\ntable = \"holding\"\naddress = 0\ntype = \"uint16\"\n"),
        10,
        8,
        "modbus[0].point[0].type",
        "tag \"state\" is an enum: map the raw values",
    );
}

#[test]
fn enum_values_must_be_the_tags() {
    let e = one_error(
        &with_point(
            "tag = \"state\"\ntable = \"holding\"\naddress = 0\ntype = \"uint16\"\nenum = { 0 = \"stopped\", 1 = \"runing\" }\n",
        ),
        11,
        8,
        "modbus[0].point[0].enum",
        "1 maps to \"runing\", which is not a value of tag \"state\"",
    );
    assert_eq!(e.hint.as_deref(), Some("one of stopped, running, faulted"));
    one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"uint16\"\nenum = { 0 = \"stopped\" }\n",
        ),
        11,
        8,
        "modbus[0].point[0].enum",
        "only points of enum tags take enum",
    );
}

#[test]
fn duplicate_device_names() {
    let point =
        "[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n";
    let point2 =
        "[[modbus.point]]\ntag = \"count\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n";
    let snippet = format!("{DEVICE}{point}{DEVICE}{point2}");
    one_error(
        &snippet,
        12,
        8,
        "modbus[1].name",
        "duplicate device name \"filler-plc\", already used by modbus[0] on line 3",
    );
}

#[test]
fn one_source_per_tag() {
    let snippet = format!(
        "{DEVICE}[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n\
         [[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 1\ntype = \"int16\"\n"
    );
    one_error(
        &snippet,
        12,
        7,
        "modbus[0].point[1].tag",
        "tag \"acme/dallas/packaging/line-1/filler/speed\" is already read by modbus[0].point[0] on line 7",
    );
}

#[test]
fn unit_id_poll_and_timeout() {
    let point =
        "[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n";
    one_error(
        &format!("{DEVICE}unit_id = 248\n{point}"),
        6,
        11,
        "modbus[0].unit_id",
        "248 is out of range 0..=247",
    );
    one_error(
        &format!("{DEVICE}poll_ms = 0\n{point}"),
        6,
        11,
        "modbus[0].poll_ms",
        "0 is out of range 1..=3600000",
    );
    one_error(
        &format!("{DEVICE}timeout_ms = 0\n{point}"),
        6,
        14,
        "modbus[0].timeout_ms",
        "0 is out of range",
    );
    one_error(
        &format!("{DEVICE}byte_order = \"middle\"\n{point}"),
        6,
        14,
        "modbus[0].byte_order",
        "unknown byte_order \"middle\"",
    );
}

#[test]
fn missing_fields_and_bad_names() {
    let errors = errors("[[modbus]]\nhost = \"\"\n[[modbus.point]]\ntable = \"holding\"\n");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "site.toml:2:1: modbus[0].name: missing required field (hint: name = \"filler-plc\")",
            "site.toml:2:1: modbus[0].equipment: missing required field (hint: the equipment path whose tags the points feed)",
            "site.toml:3:8: modbus[0].host: must not be empty",
            "site.toml:4:1: modbus[0].point[0].tag: missing required field (hint: a tag path of the device's equipment, e.g. tag = \"speed\")",
            "site.toml:4:1: modbus[0].point[0].address: missing required field (hint: the 0-based protocol address, e.g. address = 0)",
            "site.toml:4:1: modbus[0].point[0].type: missing required field (hint: one of bool, int16, uint16, int32, uint32, int64, float32, float64, string, bit)",
        ]
    );
    one_error(
        "[[modbus]]\nname = \"PLC 1\"\nhost = \"h\"\nequipment = \"acme/dallas/packaging/line-1/filler\"\n[[modbus.point]]\ntag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n",
        3,
        9,
        "modbus[0].name",
        "",
    );
    one_error(DEVICE, 2, 1, "modbus[0].point", "device has no points");
}

#[test]
fn scale_rules() {
    one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\nscale = 0\n",
        ),
        11,
        9,
        "modbus[0].point[0].scale",
        "scale must not be 0",
    );
    one_error(
        &with_point(
            "tag = \"running\"\ntable = \"coil\"\naddress = 0\ntype = \"bool\"\nscale = 2\n",
        ),
        11,
        9,
        "modbus[0].point[0].scale",
        "only numeric points take scale",
    );
    one_error(
        &with_point(
            "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\ndeadband = -1\n",
        ),
        11,
        12,
        "modbus[0].point[0].deadband",
        "deadband must not be negative",
    );
}

#[test]
fn hosts_are_resolved_at_check_time() {
    let ok = parse(&with_point(
        "tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(check_hosts(&ok), []);
    let snippet =
        with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n")
            .replace("127.0.0.1", "no-such-host.invalid");
    let devices = parse(&snippet).unwrap_or_else(|e| panic!("{e}"));
    let errors = check_hosts(&devices);
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].line, errors[0].column), (4, 9));
    assert_eq!(errors[0].field, "modbus[0].host");
    assert!(
        errors[0]
            .message
            .contains("cannot resolve host \"no-such-host.invalid\""),
        "{}",
        errors[0]
    );
}

#[test]
fn probe_reports_unreachable_devices() {
    // A port nobody listens on: bind, note the port, close.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener.local_addr().map(|a| a.port()).unwrap_or(1)
    };
    let snippet =
        with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n")
            .replace(
                "host = \"127.0.0.1\"",
                &format!("host = \"127.0.0.1\"\nport = {port}\ntimeout_ms = 500"),
            );
    let devices = parse(&snippet).unwrap_or_else(|e| panic!("{e}"));
    let errors = probe(&devices);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.contains("is unreachable at 127.0.0.1:"),
        "{}",
        errors[0]
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let open = listener.local_addr().map(|a| a.port()).unwrap_or(1);
    let snippet =
        with_point("tag = \"speed\"\ntable = \"holding\"\naddress = 0\ntype = \"int16\"\n")
            .replace(
                "host = \"127.0.0.1\"",
                &format!("host = \"127.0.0.1\"\nport = {open}"),
            );
    let devices = parse(&snippet).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(probe(&devices), []);
}
