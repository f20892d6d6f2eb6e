use gantry_model::{PlantModel, Quality, Value};

use super::*;

const NOW: i64 = 1_750_000_000_000;

const MODEL: &str = r#"
enterprise = "acme"
[[site]]
name = "dallas"
[[equipment]]
path = "acme/dallas/packaging/line-1/filler"
class = "filler@1"
[equipment.tags.speed]
type = "float"
min = 0.0
max = 1200.0
[equipment.tags.count]
type = "int"
min = 0
[equipment.tags.running]
type = "bool"
[equipment.tags.note]
type = "string"
[equipment.tags.state]
type = "enum"
values = ["running", "idle", "faulted"]
"#;

fn check(tag: &str, payload: &str) -> Result<Sample, Violation> {
    let model = PlantModel::parse(MODEL, "test.toml").unwrap();
    let topic = format!("acme/dallas/packaging/line-1/filler/{tag}");
    let (_, spec) = model.tag_for_topic(&topic).unwrap();
    validate_sample(spec, payload.as_bytes(), NOW, &ContractSettings::default())
}

fn rule(tag: &str, payload: &str) -> Rule {
    match check(tag, payload) {
        Ok(s) => panic!("{tag} {payload:?} accepted as {s:?}"),
        Err(v) => v.rule,
    }
}

fn canonical(tag: &str, payload: &str) -> String {
    String::from_utf8(check(tag, payload).unwrap().to_json_bytes()).unwrap()
}

#[test]
fn bare_payloads_are_canonicalised_with_broker_time() {
    assert_eq!(
        canonical("speed", "42.5"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":42.5}}")
    );
    assert_eq!(
        canonical("speed", " 42 "),
        format!("{{\"timestamp_ms\":{NOW},\"value\":42.0}}")
    );
    assert_eq!(
        canonical("count", "7"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":7}}")
    );
    assert_eq!(
        canonical("count", "7.0"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":7}}")
    );
    assert_eq!(
        canonical("running", "true"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":true}}")
    );
    assert_eq!(
        canonical("state", "idle"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":\"idle\"}}")
    );
    assert_eq!(
        canonical("note", "\"quoted\""),
        format!("{{\"timestamp_ms\":{NOW},\"value\":\"quoted\"}}")
    );
    // A bare number on a string tag is its text.
    assert_eq!(
        canonical("note", "42"),
        format!("{{\"timestamp_ms\":{NOW},\"value\":\"42\"}}")
    );
}

#[test]
fn json_form_keeps_timestamp_and_quality() {
    let s = check(
        "speed",
        r#"{"value": 3, "timestamp_ms": 1749999999000, "quality": "uncertain"}"#,
    )
    .unwrap();
    assert_eq!(s.timestamp_ms, 1_749_999_999_000);
    assert_eq!(s.value, Value::Float(3.0));
    assert_eq!(s.quality, Quality::Uncertain);
    let s = check("speed", r#"{"value": 3}"#).unwrap();
    assert_eq!(s.timestamp_ms, NOW);
}

#[test]
fn shape_rule() {
    assert_eq!(rule("speed", ""), Rule::Shape);
    assert_eq!(rule("speed", "{\"value\":"), Rule::Shape);
    assert_eq!(rule("speed", r#"{"valu": 1}"#), Rule::Shape);
    assert_eq!(rule("speed", r#"{"timestamp_ms": 1}"#), Rule::Shape);
    assert_eq!(rule("speed", "[1,2]"), Rule::Shape);
    let model = PlantModel::parse(MODEL, "t").unwrap();
    let (_, spec) = model
        .tag_for_topic("acme/dallas/packaging/line-1/filler/speed")
        .unwrap();
    let v = validate_sample(spec, &[0xff, 0xfe], NOW, &ContractSettings::default()).unwrap_err();
    assert_eq!(v.rule, Rule::Shape);
    assert!(v.message.contains("UTF-8"), "{v}");
}

#[test]
fn type_rule() {
    assert_eq!(rule("speed", "true"), Rule::Type);
    assert_eq!(rule("speed", "fast"), Rule::Type);
    assert_eq!(rule("count", "1.5"), Rule::Type);
    assert_eq!(rule("count", "\"7\""), Rule::Type);
    assert_eq!(rule("running", "1"), Rule::Type);
    assert_eq!(rule("note", r#"{"value": 5}"#), Rule::Type);
    assert_eq!(rule("state", r#"{"value": true}"#), Rule::Type);
    let v = check("speed", "true").unwrap_err();
    assert_eq!(v.message, "expected float, got bool true");
}

#[test]
fn range_rule_names_the_bound() {
    let v = check("speed", "1500.0").unwrap_err();
    assert_eq!(v.rule, Rule::Range);
    assert_eq!(v.message, "value 1500.0 above max 1200.0");
    let v = check("speed", "-1").unwrap_err();
    assert_eq!(v.message, "value -1.0 below min 0.0");
    assert_eq!(rule("count", "-3"), Rule::Range);
    assert!(check("speed", "1200").is_ok());
    assert!(check("speed", "0").is_ok());
}

#[test]
fn enum_rule_lists_the_values() {
    let v = check("state", "sleeping").unwrap_err();
    assert_eq!(v.rule, Rule::Enum);
    assert_eq!(
        v.message,
        "value \"sleeping\" is not one of running, idle, faulted"
    );
    assert_eq!(rule("state", "Running"), Rule::Enum);
    assert_eq!(rule("state", "5"), Rule::Enum);
}

#[test]
fn timestamp_rule() {
    let future = NOW + 5 * 60 * 1000 + 1;
    let v = check(
        "speed",
        &format!(r#"{{"value":1,"timestamp_ms":{future}}}"#),
    )
    .unwrap_err();
    assert_eq!(v.rule, Rule::Timestamp);
    assert!(v.message.contains("ahead"), "{v}");
    let edge = NOW + 5 * 60 * 1000;
    assert!(check("speed", &format!(r#"{{"value":1,"timestamp_ms":{edge}}}"#)).is_ok());
    let v = check("speed", r#"{"value":1,"timestamp_ms":946684799999}"#).unwrap_err();
    assert_eq!(v.rule, Rule::Timestamp);
    assert!(check("speed", r#"{"value":1,"timestamp_ms":946684800000}"#).is_ok());
    assert_eq!(
        rule(
            "speed",
            &format!(r#"{{"value":1,"timestamp_ms":{}}}"#, i64::MAX)
        ),
        Rule::Timestamp
    );
    assert_eq!(
        rule(
            "speed",
            &format!(r#"{{"value":1,"timestamp_ms":{}}}"#, i64::MIN)
        ),
        Rule::Timestamp
    );
}

#[test]
fn timestamp_window_is_a_setting() {
    let model = PlantModel::parse(MODEL, "t").unwrap();
    let (_, spec) = model
        .tag_for_topic("acme/dallas/packaging/line-1/filler/speed")
        .unwrap();
    let settings = ContractSettings {
        max_future_ms: 0,
        min_timestamp_ms: NOW - 10,
        ..ContractSettings::default()
    };
    let at = |ts: i64| format!(r#"{{"value":1,"timestamp_ms":{ts}}}"#);
    assert!(validate_sample(spec, at(NOW).as_bytes(), NOW, &settings).is_ok());
    assert!(validate_sample(spec, at(NOW + 1).as_bytes(), NOW, &settings).is_err());
    assert!(validate_sample(spec, at(NOW - 11).as_bytes(), NOW, &settings).is_err());
}

#[test]
fn policy_names_round_trip() {
    for p in [
        UnmodeledPolicy::Allow,
        UnmodeledPolicy::DeadLetter,
        UnmodeledPolicy::Reject,
    ] {
        assert_eq!(p.as_str().parse::<UnmodeledPolicy>(), Ok(p));
    }
    assert!("drop".parse::<UnmodeledPolicy>().is_err());
    assert_eq!(UnmodeledPolicy::default(), UnmodeledPolicy::DeadLetter);
}
