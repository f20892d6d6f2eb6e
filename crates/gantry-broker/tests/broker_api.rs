//! The broker as a library: in-process publishing, retained state across a
//! reopen of the data directory, and the inspection hook's reject path.

use std::sync::Arc;

use bytes::Bytes;
use gantry_broker::hooks::{ClientInfo, DeadLetter, Hooks, PublishInspector, Verdict};
use gantry_broker::{Broker, BrokerConfig, Message};
use gantry_codec::{QoS, ReasonCode};

fn config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig::new(dir)
}

#[tokio::test]
async fn retained_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path()), Hooks::default()).unwrap();
    for i in 0..100 {
        broker
            .publish(
                "test",
                &format!("acme/s/{i}"),
                Bytes::from(format!("v{i}")),
                QoS::AtLeastOnce,
                true,
            )
            .unwrap();
    }
    broker
        .publish("test", "acme/s/5", Bytes::new(), QoS::AtLeastOnce, true)
        .unwrap();
    let routed = broker
        .publish(
            "test",
            "acme/s/6",
            Bytes::from("new"),
            QoS::AtLeastOnce,
            true,
        )
        .unwrap();
    for mut gate in routed.gates {
        gate.wait().await;
    }
    broker.shutdown().await;
    drop(broker);

    let broker = Broker::open(config(dir.path()), Hooks::default()).unwrap();
    assert_eq!(broker.retained_matching("acme/#").len(), 99);
    assert!(broker.retained("acme/s/5").is_none());
    assert_eq!(
        broker.retained("acme/s/6").map(|m| m.payload.clone()),
        Some(Bytes::from("new"))
    );
    assert_eq!(broker.stats().retained, 99);
    broker.shutdown().await;
}

struct RejectNegative;

impl PublishInspector for RejectNegative {
    fn inspect(&self, _client: &ClientInfo, msg: &mut Message) -> Verdict {
        if msg.payload.starts_with(b"-") {
            Verdict::Reject {
                reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
                reason_string: "negative".into(),
                dead_letter: Some(DeadLetter {
                    topic: format!("acme/_dlq/{}", msg.topic),
                    payload: msg.payload.clone(),
                    retain: false,
                }),
            }
        } else {
            // Transform: canonicalise by trimming whitespace.
            let trimmed = String::from_utf8_lossy(&msg.payload).trim().to_owned();
            msg.payload = Bytes::from(trimmed);
            Verdict::Accept
        }
    }
}

#[tokio::test]
async fn inspectors_transform_or_reject_with_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Hooks {
        inspectors: vec![Arc::new(RejectNegative)],
        ..Hooks::default()
    };
    let broker = Broker::open(config(dir.path()), hooks).unwrap();
    broker
        .publish("t", "acme/x", Bytes::from("  42 "), QoS::AtMostOnce, true)
        .unwrap();
    assert_eq!(
        broker.retained("acme/x").map(|m| m.payload.clone()),
        Some(Bytes::from("42"))
    );
    let err = broker
        .publish("t", "acme/y", Bytes::from("-1"), QoS::AtMostOnce, true)
        .unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
    assert!(
        broker.retained("acme/y").is_none(),
        "a rejected message is not routed"
    );
    assert_eq!(broker.stats().publishes_rejected, 1);
    let err = broker
        .publish("t", "acme/+", Bytes::from("1"), QoS::AtMostOnce, false)
        .unwrap_err();
    assert!(err.to_string().contains("wildcard"), "{err}");
    broker.shutdown().await;
}

#[tokio::test]
async fn retained_namespace_can_be_browsed_and_searched() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path()), Hooks::default()).unwrap();
    for topic in [
        "acme/dallas/line-1/speed",
        "acme/dallas/line-1",
        "acme/dallas/line-2/speed",
        "acme/austin/kiln/temp",
    ] {
        broker
            .publish("t", topic, Bytes::from("1"), QoS::AtMostOnce, true)
            .unwrap();
    }
    let children: Vec<gantry_broker::RetainedChild> =
        broker.retained_children("acme/dallas", None, 10);
    let rows: Vec<(&str, bool, bool)> = children
        .iter()
        .map(|c| (c.name.as_str(), c.message.is_some(), c.has_children))
        .collect();
    assert_eq!(rows, [("line-1", true, true), ("line-2", false, true)]);
    let top = broker.retained_children("", None, 10);
    assert_eq!(top.len(), 1, "only `acme`; no $SYS at the top level");
    let after: Vec<String> = broker
        .retained_children("acme", Some("austin"), 10)
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(after, ["dallas"]);

    let (found, more) = broker.retained_search(1, |t| t.ends_with("/speed"));
    assert_eq!(found.len(), 1);
    assert_eq!(&*found[0].topic, "acme/dallas/line-1/speed");
    assert!(more);
    broker.shutdown().await;
}
