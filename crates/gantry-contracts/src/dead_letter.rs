//! Dead letters: where a refused message is republished
//! (`<enterprise>/_dlq/<original topic>`) and what it carries (the original
//! payload, as text or base64, the reason, the rule, the client and the time).

use bytes::Bytes;
use gantry_broker::Message;

use crate::validate::Rule;

/// The longest topic an MQTT packet can carry.
const MAX_TOPIC: usize = u16::MAX as usize;

/// Where dead letters go when the original topic is too long to be nested.
pub const OVERFLOW_TOPIC: &str = "_gantry/_dlq/_topic-too-long";

/// The dead-letter topic for `topic`: its first level (the enterprise), then
/// `_dlq`, then the whole original topic.
pub fn dead_letter_topic(topic: &str) -> String {
    let enterprise = topic.split('/').next().unwrap_or(topic);
    let len = enterprise.len() + "/_dlq/".len() + topic.len();
    if len > MAX_TOPIC {
        return OVERFLOW_TOPIC.to_owned();
    }
    let mut out = String::with_capacity(len);
    out.push_str(enterprise);
    out.push_str("/_dlq/");
    out.push_str(topic);
    out
}

/// The JSON body of a dead letter for `msg`.
pub fn dead_letter_payload(
    msg: &Message,
    client_id: &str,
    rule: Rule,
    reason: &str,
    model_generation: u64,
) -> Bytes {
    let mut body = serde_json::Map::new();
    body.insert("topic".into(), msg.topic.as_ref().into());
    body.insert("reason".into(), reason.into());
    body.insert("rule".into(), rule.as_str().into());
    body.insert("client_id".into(), client_id.into());
    body.insert("received_ms".into(), msg.received_at_ms.into());
    body.insert("qos".into(), (msg.qos as u8).into());
    body.insert("retain".into(), msg.retain.into());
    body.insert("model_generation".into(), model_generation.into());
    match std::str::from_utf8(&msg.payload) {
        Ok(text) => body.insert("payload".into(), text.into()),
        Err(_) => body.insert("payload_base64".into(), base64(&msg.payload).into()),
    };
    Bytes::from(serde_json::Value::Object(body).to_string())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(s & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_codec::QoS;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn dead_letter_topic_nests_under_the_enterprise() {
        assert_eq!(
            dead_letter_topic("acme/dallas/packaging/line-1/filler/speed"),
            "acme/_dlq/acme/dallas/packaging/line-1/filler/speed"
        );
        assert_eq!(dead_letter_topic("loose"), "loose/_dlq/loose");
        assert!(gantry_model::is_system_topic(&dead_letter_topic("a/b")));
        let long = "x".repeat(40_000);
        assert_eq!(dead_letter_topic(&long), OVERFLOW_TOPIC);
    }

    #[test]
    fn payload_is_text_or_base64() {
        let mut msg = Message::new("acme/x", b"hello", QoS::AtLeastOnce, true);
        msg.received_at_ms = 1234;
        let body: serde_json::Value =
            serde_json::from_slice(&dead_letter_payload(&msg, "c1", Rule::Range, "why", 3))
                .unwrap();
        assert_eq!(body["payload"], "hello");
        assert_eq!(body["client_id"], "c1");
        assert_eq!(body["rule"], "range");
        assert_eq!(body["reason"], "why");
        assert_eq!(body["qos"], 1);
        assert_eq!(body["retain"], true);
        assert_eq!(body["received_ms"], 1234);
        assert_eq!(body["model_generation"], 3);
        assert!(body.get("payload_base64").is_none());

        let msg = Message::new("acme/x", &[0xff, 0x00, 0x41], QoS::AtMostOnce, false);
        let body: serde_json::Value =
            serde_json::from_slice(&dead_letter_payload(&msg, "c2", Rule::Shape, "bin", 1))
                .unwrap();
        assert_eq!(body["payload_base64"], "/wBB");
        assert!(body.get("payload").is_none());
    }
}
