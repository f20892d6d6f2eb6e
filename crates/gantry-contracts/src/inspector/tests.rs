use std::sync::Arc;

use gantry_broker::Message;
use gantry_broker::hooks::{ClientInfo, PublishInspector, Verdict};
use gantry_codec::{QoS, ReasonCode};
use gantry_model::PlantModel;

use super::*;

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
[[equipment]]
path = "acme/dallas/packaging/line-1/capper"
[equipment.tags.state]
type = "enum"
values = ["running", "idle"]
"#;

const SPEED: &str = "acme/dallas/packaging/line-1/filler/speed";

fn model() -> PlantModel {
    PlantModel::parse(MODEL, "test.toml").unwrap()
}

fn inspector(policy: UnmodeledPolicy) -> ContractInspector {
    ContractInspector::new(
        Some(model()),
        ContractSettings {
            unmodeled: policy,
            ..ContractSettings::default()
        },
    )
}

fn client() -> ClientInfo {
    ClientInfo {
        client_id: Arc::from("press-7"),
        username: None,
        identity: None,
        peer: None,
        transport: "tcp",
    }
}

fn msg(topic: &str, payload: &[u8]) -> Message {
    let mut m = Message::new(topic, payload, QoS::AtLeastOnce, true);
    m.received_at_ms = 1_750_000_000_000;
    m
}

struct Refused {
    reason: ReasonCode,
    why: String,
    dlq_topic: String,
    dlq: serde_json::Value,
    dlq_retain: bool,
}

fn refused(v: Verdict) -> Refused {
    match v {
        Verdict::Reject {
            reason,
            reason_string,
            dead_letter: Some(dl),
        } => Refused {
            reason,
            why: reason_string,
            dlq_topic: dl.topic,
            dlq: serde_json::from_slice(&dl.payload).unwrap(),
            dlq_retain: dl.retain,
        },
        other => panic!("expected a rejection with a dead letter, got {other:?}"),
    }
}

#[test]
fn valid_publish_is_rewritten_to_canonical_form() {
    let i = inspector(UnmodeledPolicy::Reject);
    let mut m = msg(SPEED, b"42");
    assert!(matches!(i.inspect(&client(), &mut m), Verdict::Accept));
    assert_eq!(
        &m.payload[..],
        b"{\"timestamp_ms\":1750000000000,\"value\":42.0}"
    );
    assert_eq!(i.stats().accepted, 1);
}

#[test]
fn out_of_range_is_refused_with_0x99_and_dead_lettered() {
    let i = inspector(UnmodeledPolicy::Allow);
    let mut m = msg(SPEED, b"1500.0");
    let r = refused(i.inspect(&client(), &mut m));
    assert_eq!(r.reason, ReasonCode::PAYLOAD_FORMAT_INVALID);
    assert_eq!(
        r.why,
        format!("{SPEED}: value 1500.0 above max 1200.0 (contract filler@1)")
    );
    assert_eq!(r.dlq_topic, format!("acme/_dlq/{SPEED}"));
    assert!(r.dlq_retain);
    assert_eq!(r.dlq["payload"], "1500.0");
    assert_eq!(r.dlq["rule"], "range");
    assert_eq!(r.dlq["client_id"], "press-7");
    assert_eq!(r.dlq["reason"], r.why.as_str());
    // The original message is untouched.
    assert_eq!(&m.payload[..], b"1500.0");
    let s = i.stats();
    assert_eq!((s.invalid, s.accepted), (1, 0));
    assert_eq!(s.by_path[SPEED], 1);
    assert_eq!(s.by_client["press-7"], 1);
}

#[test]
fn contract_without_class_is_named_by_equipment_path() {
    let i = inspector(UnmodeledPolicy::Allow);
    let mut m = msg("acme/dallas/packaging/line-1/capper/state", b"asleep");
    let r = refused(i.inspect(&client(), &mut m));
    assert_eq!(r.dlq["rule"], "enum");
    assert!(
        r.why
            .ends_with("(contract acme/dallas/packaging/line-1/capper)"),
        "{}",
        r.why
    );
}

#[test]
fn unmodeled_policies() {
    let topic = "acme/dallas/packaging/line-1/filler/unknown";

    let i = inspector(UnmodeledPolicy::Allow);
    let mut m = msg(topic, b"x");
    assert!(matches!(i.inspect(&client(), &mut m), Verdict::Accept));
    assert_eq!(&m.payload[..], b"x");
    assert!(m.properties.is_none(), "routed exactly as published");
    assert_eq!(i.stats().unmodeled_allowed, 1);

    let i = inspector(UnmodeledPolicy::DeadLetter);
    let r = refused(i.inspect(&client(), &mut msg(topic, b"x")));
    assert_eq!(r.reason, ReasonCode::SUCCESS);
    assert_eq!(r.dlq["rule"], "unmodeled");

    let i = inspector(UnmodeledPolicy::Reject);
    let r = refused(i.inspect(&client(), &mut msg(topic, b"x")));
    assert_eq!(r.reason, ReasonCode::TOPIC_NAME_INVALID);
    assert!(r.why.contains("not in the plant model"), "{}", r.why);
    assert_eq!(i.stats().unmodeled_refused, 1);
}

#[test]
fn without_a_model_everything_is_unmodeled() {
    let i = ContractInspector::new(None, ContractSettings::default());
    let r = refused(i.inspect(&client(), &mut msg(SPEED, b"1")));
    assert_eq!(r.dlq["rule"], "unmodeled");
    assert_eq!(i.tag_count(), 0);
}

#[test]
fn system_topics_are_not_validated() {
    let i = inspector(UnmodeledPolicy::Reject);
    for topic in ["$SYS/broker/x", "acme/_dlq/acme/x", "acme/dallas/_meta/y"] {
        let mut m = msg(topic, b"\xff anything");
        assert!(matches!(i.inspect(&client(), &mut m), Verdict::Accept));
        assert_eq!(&m.payload[..], b"\xff anything");
    }
    assert_eq!(i.stats().skipped_system, 3);
}

#[test]
fn empty_retained_publish_clears_a_modeled_tag() {
    let i = inspector(UnmodeledPolicy::Reject);
    let mut m = msg(SPEED, b"");
    assert!(matches!(i.inspect(&client(), &mut m), Verdict::Accept));
    let mut m = msg(SPEED, b"");
    m.retain = false;
    assert_eq!(refused(i.inspect(&client(), &mut m)).dlq["rule"], "shape");
}

#[test]
fn binary_payload_is_base64_in_the_dead_letter() {
    let i = inspector(UnmodeledPolicy::Reject);
    let r = refused(i.inspect(&client(), &mut msg(SPEED, &[0xff, 0x00, 0x41])));
    assert_eq!(r.dlq["payload_base64"], "/wBB");
    assert_eq!(r.dlq["rule"], "shape");
}

#[test]
fn reload_swaps_the_model_and_bumps_the_generation() {
    let i = inspector(UnmodeledPolicy::Reject);
    assert_eq!(i.generation(), 1);
    let wider = MODEL.replace("max = 1200.0", "max = 2000.0");
    let g = i.reload(Some(PlantModel::parse(&wider, "t").unwrap()));
    assert_eq!((g, i.generation()), (2, 2));
    assert!(matches!(
        i.inspect(&client(), &mut msg(SPEED, b"1500")),
        Verdict::Accept
    ));
    i.refuse_reload(vec!["t:1:1: broken".into()]);
    assert_eq!(i.generation(), 2);
    let stats: serde_json::Value = serde_json::from_slice(&i.stats_json()).unwrap();
    assert_eq!(stats["model_generation"], 2);
    assert_eq!(stats["last_reload"]["ok"], false);
    assert_eq!(stats["last_reload"]["errors"][0], "t:1:1: broken");
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["unmodeled_policy"], "reject");
    let r = refused(i.inspect(&client(), &mut msg(SPEED, b"2500")));
    assert_eq!(r.dlq["model_generation"], 2);
}

/// Rough cost of the hot path; run with
/// `cargo test --release -p gantry-contracts -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn hot_path_cost() {
    let model = PlantModel::demo();
    let i = ContractInspector::new(Some(model), ContractSettings::default());
    let topic = "acme/dallas/packaging/line-1/filler/speed";
    let n = 500_000u32;
    for (label, payload) in [
        ("bare float", &b"612.5"[..]),
        (
            "json form",
            &b"{\"timestamp_ms\":1750000000000,\"value\":612.5}"[..],
        ),
    ] {
        let start = std::time::Instant::now();
        for _ in 0..n {
            let mut m = msg(topic, payload);
            assert!(matches!(i.inspect(&client(), &mut m), Verdict::Accept));
        }
        let per = start.elapsed() / n;
        println!("{label}: {per:?} per publish (incl. building the test message)");
    }
    let start = std::time::Instant::now();
    for _ in 0..n {
        let mut m = msg(topic, b"1");
        std::hint::black_box(&mut m);
    }
    println!(
        "baseline (building the message only): {:?}",
        start.elapsed() / n
    );
}

#[test]
fn retained_dead_letters_are_bounded() {
    let i = inspector(UnmodeledPolicy::DeadLetter);
    let retained = |topic: &str| {
        let mut m = msg(topic, b"1");
        match i.inspect(&client(), &mut m) {
            Verdict::Reject {
                dead_letter: Some(d),
                ..
            } => d.retain,
            other => panic!("{topic}: expected a dead letter, got {other:?}"),
        }
    };
    for n in 0..MAX_RETAINED_DEAD_LETTERS {
        assert!(
            retained(&format!("acme/spray/{n}")),
            "topic {n} keeps its record"
        );
    }
    assert!(
        !retained("acme/spray/one-too-many"),
        "past the bound: published, not retained"
    );
    assert!(
        retained("acme/spray/7"),
        "a topic already retained stays retained"
    );
}
