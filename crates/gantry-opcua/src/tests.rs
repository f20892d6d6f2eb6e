use gantry_connectors::modbus::Target;
use gantry_model::{PlantModel, Quality, Value};
use opcua::types::{DataValue, DateTime, StatusCode, UAString, Variant};

use crate::config::{Mode, PasswordSource, Policy, parse_servers};
use crate::convert::{ConvertError, convert, quality_of, timestamp_of};

const MODEL: &str = r#"enterprise = "acme"
[[site]]
name = "dallas"
[[equipment]]
path = "acme/dallas/mixing/line-1/mixer"
[equipment.tags.temperature]
type = "float"
[equipment.tags.count]
type = "int"
[equipment.tags.mode]
type = "enum"
values = ["idle", "mixing"]
"#;

fn parse(opcua: &str) -> Result<Vec<crate::ServerConfig>, Vec<String>> {
    let src = format!("{MODEL}{opcua}");
    let model = PlantModel::parse(&src, "site.toml").expect("model");
    parse_servers(&src, "site.toml", &model)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// Line numbers below are 1-based in MODEL + the snippet (MODEL has 12 lines).
const GOOD: &str = r#"[[opcua]]
name = "mixer-server"
endpoint = "opc.tcp://127.0.0.1:4840/freeopcua/server/"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
username = "operator"
password_env = "MIXER_PW"
equipment = "acme/dallas/mixing/line-1/mixer"
publishing_ms = 500
[[opcua.node]]
tag = "temperature"
node_id = "ns=2;s=Mixer.Temperature"
sampling_ms = 250
queue_size = 10
deadband = 0.5
[[opcua.browse]]
folder = "ns=2;s=Mixer.Counters"
rebrowse_s = 60
"#;

#[test]
fn parses_a_full_server() {
    let servers = parse(GOOD).expect("valid");
    assert_eq!(servers.len(), 1);
    let s = &servers[0];
    assert_eq!(s.name, "mixer-server");
    assert_eq!(s.policy, Policy::Basic256Sha256);
    assert_eq!(s.mode, Mode::SignAndEncrypt);
    assert_eq!(s.username.as_deref(), Some("operator"));
    assert_eq!(s.password, Some(PasswordSource::Env("MIXER_PW".into())));
    assert_eq!(s.health_topic(), "acme/_sys/connectors/opcua/mixer-server");
    let n = &s.nodes[0];
    assert_eq!(n.topic, "acme/dallas/mixing/line-1/mixer/temperature");
    assert_eq!(n.sampling, Some(std::time::Duration::from_millis(250)));
    assert_eq!(n.queue_size, 10);
    assert_eq!(n.deadband, Some(0.5));
    assert_eq!(s.browses[0].rebrowse, std::time::Duration::from_secs(60));
    assert_eq!(s.browses[0].sampling, None);
    assert_eq!(s.tags.len(), 3);
}

#[test]
fn no_opcua_table_is_no_servers() {
    assert_eq!(parse("").unwrap(), vec![]);
}

fn errors_for(from: &str, to: &str) -> Vec<String> {
    let bad = GOOD.replacen(from, to, 1);
    assert_ne!(bad, GOOD, "{from} not found");
    parse(&bad).expect_err("invalid")
}

#[test]
fn unknown_field_gets_a_hint() {
    assert_eq!(
        errors_for("publishing_ms", "publising_ms"),
        [
            "site.toml:21:1: opcua[0].publising_ms: unknown field (hint: did you mean \"publishing_ms\"?)"
        ]
    );
}

#[test]
fn bad_endpoint_url() {
    assert_eq!(
        errors_for("opc.tcp://127.0.0.1:4840", "http://127.0.0.1:4840"),
        [
            "site.toml:15:13: opcua[0].endpoint: unsupported scheme \"http\" in endpoint \"http://127.0.0.1:4840/freeopcua/server/\" (only opc.tcp is supported) (hint: opc.tcp://HOST:PORT/PATH, e.g. \"opc.tcp://192.168.1.20:4840\")"
        ]
    );
    let e = errors_for("127.0.0.1:4840", "127.0.0.1:99999");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("site.toml:15:13: opcua[0].endpoint: bad port \"99999\""),
        "{e:?}"
    );
}

#[test]
fn unknown_policy_and_mode_get_hints() {
    assert_eq!(
        errors_for("\"Basic256Sha256\"", "\"Basic256sha256\""),
        [
            "site.toml:16:20: opcua[0].security_policy: unknown security policy \"Basic256sha256\" (hint: did you mean \"Basic256Sha256\"?)"
        ]
    );
    assert_eq!(
        errors_for("\"SignAndEncrypt\"", "\"SignEncrypt\""),
        [
            "site.toml:17:18: opcua[0].security_mode: unknown security mode \"SignEncrypt\" (hint: did you mean \"SignAndEncrypt\"?)"
        ]
    );
}

#[test]
fn policy_and_mode_must_agree() {
    assert_eq!(
        errors_for("\"Basic256Sha256\"", "\"None\""),
        [
            "site.toml:17:18: opcua[0].security_mode: security mode \"SignAndEncrypt\" needs a security policy other than \"None\" (hint: security_policy = \"Basic256Sha256\")"
        ]
    );
    assert_eq!(
        errors_for("\"SignAndEncrypt\"", "\"None\""),
        [
            "site.toml:17:18: opcua[0].security_mode: security policy \"Basic256Sha256\" needs security mode \"Sign\" or \"SignAndEncrypt\" (hint: security_mode = \"SignAndEncrypt\")"
        ]
    );
}

#[test]
fn username_needs_a_password_source() {
    assert_eq!(
        errors_for("password_env = \"MIXER_PW\"\n", ""),
        [
            "site.toml:18:12: opcua[0].username: username \"operator\" has no password source (hint: add password_env = \"VARIABLE\" or password_file = \"/path\")"
        ]
    );
}

#[test]
fn node_ids_must_parse() {
    assert_eq!(
        errors_for("ns=2;s=Mixer.Temperature", "ns=x;s=Mixer.Temperature"),
        [
            "site.toml:24:12: opcua[0].node[0].node_id: \"ns=x;s=Mixer.Temperature\" is not a node id (hint: ns=<index>;<i|s|g|b>=<identifier>, e.g. \"ns=2;s=Mixer.Temperature\" or \"i=2258\")"
        ]
    );
}

#[test]
fn tags_must_be_in_the_model() {
    assert_eq!(
        errors_for("tag = \"temperature\"", "tag = \"temprature\""),
        [
            "site.toml:23:8: opcua[0].node[0].tag: no tag \"temprature\" under equipment \"acme/dallas/mixing/line-1/mixer\" in the model (hint: did you mean \"temperature\"?)"
        ]
    );
}

#[test]
fn duplicate_names_and_tags() {
    let other = GOOD
        .replace("ns=2;s=Mixer.Counters", "ns=2;s=Other")
        .replace("ns=2;s=Mixer.Temperature", "ns=2;s=Mixer.Count")
        .replace("tag = \"temperature\"", "tag = \"count\"");
    let e = parse(&format!("{GOOD}{other}")).expect_err("duplicate name");
    assert_eq!(
        e,
        [
            "site.toml:32:9: opcua[1].name: duplicate server name \"mixer-server\", already used by opcua[0] on line 14 (hint: give every [[opcua]] server its own name)"
        ]
    );
    let other = GOOD
        .replace("mixer-server", "second")
        .replace("ns=2;s=Mixer.Counters", "ns=2;s=Other");
    let e = parse(&format!("{GOOD}{other}")).expect_err("duplicate tag");
    assert_eq!(
        e,
        [
            "site.toml:41:8: opcua[1].node[0].tag: tag \"temperature\" is already fed by opcua[0].node[0] on line 23 (hint: each tag has one source)"
        ]
    );
}

#[test]
fn status_codes_become_qualities() {
    assert_eq!(quality_of(None), Quality::Good);
    assert_eq!(quality_of(Some(StatusCode::Good)), Quality::Good);
    assert_eq!(
        quality_of(Some(StatusCode::UncertainLastUsableValue)),
        Quality::Uncertain
    );
    assert_eq!(quality_of(Some(StatusCode::BadNodeIdUnknown)), Quality::Bad);
    assert_eq!(
        quality_of(Some(StatusCode::BadCommunicationError)),
        Quality::Bad
    );
}

#[test]
fn variants_become_the_tags_type() {
    let enum_t = Target::Enum {
        values: vec!["idle".into(), "mixing".into()],
    };
    assert_eq!(
        convert(&Variant::Double(21.5), &Target::Float),
        Ok(Value::Float(21.5))
    );
    assert_eq!(
        convert(&Variant::Int32(4), &Target::Float),
        Ok(Value::Float(4.0))
    );
    assert_eq!(
        convert(&Variant::Int32(-4), &Target::Int),
        Ok(Value::Int(-4))
    );
    assert_eq!(
        convert(&Variant::UInt64(7), &Target::Int),
        Ok(Value::Int(7))
    );
    assert_eq!(
        convert(&Variant::Double(3.0), &Target::Int),
        Ok(Value::Int(3))
    );
    assert_eq!(
        convert(&Variant::Double(3.5), &Target::Int),
        Err(ConvertError::NotIntegral("3.5".into()))
    );
    assert_eq!(
        convert(&Variant::Boolean(true), &Target::Bool),
        Ok(Value::Bool(true))
    );
    assert_eq!(
        convert(&Variant::Byte(0), &Target::Bool),
        Ok(Value::Bool(false))
    );
    assert!(convert(&Variant::Boolean(true), &Target::Float).is_err());
    assert_eq!(
        convert(&Variant::String(UAString::from("R-7")), &Target::String),
        Ok(Value::Text("R-7".into()))
    );
    assert_eq!(
        convert(&Variant::Int16(5), &Target::String),
        Ok(Value::Text("5".into()))
    );
    assert_eq!(
        convert(&Variant::Int32(1), &enum_t),
        Ok(Value::Text("mixing".into()))
    );
    assert_eq!(
        convert(&Variant::String(UAString::from("idle")), &enum_t),
        Ok(Value::Text("idle".into()))
    );
    assert!(matches!(
        convert(&Variant::Int32(2), &enum_t),
        Err(ConvertError::EnumIndex { index: 2, len: 2 })
    ));
    assert!(matches!(
        convert(&Variant::String(UAString::from("off")), &enum_t),
        Err(ConvertError::NotInEnum { .. })
    ));
    assert_eq!(
        convert(&Variant::Empty, &Target::Float),
        Err(ConvertError::Empty)
    );
    assert_eq!(
        convert(&Variant::Double(f64::NAN), &Target::Float),
        Err(ConvertError::NonFinite("NaN".into()))
    );
}

#[test]
fn timestamps_prefer_source_then_server_then_now() {
    let t1 = DateTime::from(chrono_free(1_700_000_000_000));
    let t2 = DateTime::from(chrono_free(1_700_000_001_000));
    let mut dv = DataValue::new_now(Variant::Double(1.0));
    dv.source_timestamp = Some(t1);
    dv.server_timestamp = Some(t2);
    assert_eq!(timestamp_of(&dv, 5), 1_700_000_000_000);
    dv.source_timestamp = None;
    assert_eq!(timestamp_of(&dv, 5), 1_700_000_001_000);
    dv.server_timestamp = None;
    assert_eq!(timestamp_of(&dv, 5), 5);
    dv.source_timestamp = Some(DateTime::null());
    assert_eq!(timestamp_of(&dv, 5), 5);
}

/// OPC UA ticks (100 ns since 1601) for a Unix ms value.
fn chrono_free(unix_ms: i64) -> i64 {
    unix_ms * 10_000 + 116_444_736_000_000_000
}

#[test]
fn browse_names_become_segments() {
    assert_eq!(crate::source::segment_of("Good"), "good");
    assert_eq!(crate::source::segment_of("Scrap Count.1"), "scrap-count-1");
}
