//! Round-trip and robustness tests for the codec: whatever we encode decodes to
//! the same packet, and arbitrary bytes never panic the decoder.

use bytes::{Bytes, BytesMut};
use gantry_codec::*;
use proptest::prelude::*;

fn roundtrip(p: &Packet, v: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf);
    let version = if matches!(p, Packet::Connect(_)) {
        None
    } else {
        Some(v)
    };
    let out = decode(&mut buf, version, MAX_REMAINING_LENGTH + 5)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty(), "decoder consumed the whole packet");
    out
}

fn connect(version: ProtocolVersion) -> Packet {
    let mut properties = Properties::default();
    let mut will_props = Properties::default();
    if version == ProtocolVersion::V5 {
        properties.session_expiry_interval = Some(3600);
        properties.receive_maximum = Some(20);
        properties.topic_alias_maximum = Some(10);
        properties
            .user_properties
            .push(("site".into(), "dallas".into()));
        will_props.will_delay_interval = Some(5);
        will_props.content_type = Some("application/json".into());
    }
    Packet::Connect(Box::new(Connect {
        version,
        client_id: "filler-1".into(),
        clean_start: false,
        keep_alive: 30,
        username: Some("ot".into()),
        password: Some(Bytes::from_static(b"secret")),
        will: Some(LastWill {
            topic: "acme/dallas/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: will_props,
        }),
        properties,
    }))
}

#[test]
fn connect_roundtrips_in_both_versions() {
    for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
        let p = connect(v);
        assert_eq!(roundtrip(&p, v), p);
    }
}

#[test]
fn v311_drops_five_only_fields() {
    let props = Properties {
        reason_string: Some("nope".into()),
        ..Properties::default()
    };
    let p = Packet::PubAck(PubResponse {
        packet_id: 7,
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: props,
    });
    let mut buf = BytesMut::new();
    encode(&p, ProtocolVersion::V311, &mut buf);
    assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x07]);
}

#[test]
fn known_wire_bytes_decode() {
    // PUBLISH QoS 1, topic "a/b", id 10, 3.1.1, payload "hi"
    let mut buf = BytesMut::from(
        &[
            0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i',
        ][..],
    );
    let p = decode(&mut buf, Some(ProtocolVersion::V311), 1024)
        .unwrap()
        .unwrap();
    let Packet::Publish(p) = p else {
        panic!("not a publish")
    };
    assert_eq!(p.topic, "a/b");
    assert_eq!(p.packet_id, 10);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert_eq!(&p.payload[..], b"hi");
}

#[test]
fn partial_packets_wait_for_more_bytes() {
    let mut full = BytesMut::new();
    encode(
        &connect(ProtocolVersion::V5),
        ProtocolVersion::V5,
        &mut full,
    );
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut part, None, 1 << 20), Ok(None), "cut at {cut}");
    }
}

#[test]
fn hostile_packets_get_the_right_reason() {
    let cases: Vec<(Vec<u8>, Option<ProtocolVersion>, ReasonCode)> = vec![
        // wildcard in a PUBLISH topic
        (
            vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
            Some(ProtocolVersion::V311),
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        // QoS 3
        (
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
            Some(ProtocolVersion::V311),
            ReasonCode::MALFORMED_PACKET,
        ),
        // invalid UTF-8 topic
        (
            vec![0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],
            Some(ProtocolVersion::V311),
            ReasonCode::MALFORMED_PACKET,
        ),
        // SUBSCRIBE with wrong flags
        (
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
            Some(ProtocolVersion::V311),
            ReasonCode::MALFORMED_PACKET,
        ),
        // protocol level 3 (MQTT 3.1)
        (
            vec![
                0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C,
                0x00, 0x00,
            ],
            None,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        // first packet not CONNECT
        (vec![0xC0, 0x00], None, ReasonCode::PROTOCOL_ERROR),
        // five-byte remaining length
        (
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            Some(ProtocolVersion::V5),
            ReasonCode::MALFORMED_PACKET,
        ),
        // duplicate property in v5 PUBLISH (two payload format indicators)
        (
            vec![0x30, 0x08, 0x00, 0x01, b'a', 0x04, 0x01, 0x00, 0x01, 0x00],
            Some(ProtocolVersion::V5),
            ReasonCode::PROTOCOL_ERROR,
        ),
    ];
    for (bytes, version, want) in cases {
        let mut buf = BytesMut::from(&bytes[..]);
        let err = decode(&mut buf, version, 1 << 20).expect_err("must fail");
        assert_eq!(err.reason_code(), want, "{bytes:02X?}: {err}");
    }
}

#[test]
fn oversized_packets_are_refused_before_buffering() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x03][..]);
    let err = decode(&mut buf, Some(ProtocolVersion::V5), 1024).unwrap_err();
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
}

fn arb_string() -> impl Strategy<Value = String> {
    "[a-z0-9/_-]{1,20}"
}

fn arb_props() -> impl Strategy<Value = Properties> {
    (
        proptest::option::of(0u8..=1),
        proptest::option::of(any::<u32>()),
        proptest::option::of(arb_string()),
        proptest::option::of(arb_string()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        proptest::collection::vec((arb_string(), arb_string()), 0..3),
        proptest::collection::vec(1u32..268_435_455, 0..3),
    )
        .prop_map(|(pfi, exp, ct, rt, cd, up, sids)| Properties {
            payload_format_indicator: pfi,
            message_expiry_interval: exp,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd.map(Bytes::from),
            user_properties: up,
            subscription_identifiers: sids,
            ..Properties::default()
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), v in 0u8..3) {
        let version = match v { 0 => None, 1 => Some(ProtocolVersion::V311), _ => Some(ProtocolVersion::V5) };
        let mut buf = BytesMut::from(&bytes[..]);
        // Drain every packet the bytes contain; any error is fine, a panic is not.
        for _ in 0..64 {
            match decode(&mut buf, version, 4096) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn mutated_valid_packets_never_panic(pos in 0usize..64, byte in any::<u8>()) {
        let mut full = BytesMut::new();
        encode(&connect(ProtocolVersion::V5), ProtocolVersion::V5, &mut full);
        let mut bytes = full.to_vec();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf, None, 4096);
    }

    #[test]
    fn publish_roundtrips(topic in arb_string(), qos in 0u8..3, retain in any::<bool>(), dup in any::<bool>(),
                          id in 1u16.., payload in proptest::collection::vec(any::<u8>(), 0..300), props in arb_props()) {
        let qos = QoS::from_u8(qos).unwrap();
        let p = Packet::Publish(Publish {
            dup: dup && qos != QoS::AtMostOnce,
            qos,
            retain,
            topic,
            packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
            properties: props,
            payload: Bytes::from(payload),
        });
        prop_assert_eq!(roundtrip(&p, ProtocolVersion::V5), p);
    }

    #[test]
    fn subscribe_roundtrips(filters in proptest::collection::vec((arb_string(), 0u8..3, any::<bool>(), any::<bool>(), 0u8..3), 1..5), id in 1u16..) {
        let filters = filters.into_iter().map(|(f, q, nl, rap, rh)| (f, SubscriptionOptions {
            qos: QoS::from_u8(q).unwrap(),
            no_local: nl,
            retain_as_published: rap,
            retain_handling: match rh { 0 => RetainHandling::SendAtSubscribe, 1 => RetainHandling::SendIfNew, _ => RetainHandling::DoNotSend },
        })).collect();
        let p = Packet::Subscribe(Subscribe { packet_id: id, filters, properties: Properties::default() });
        prop_assert_eq!(roundtrip(&p, ProtocolVersion::V5), p);
    }
}

#[test]
fn acks_roundtrip() {
    let v = ProtocolVersion::V5;
    let props = Properties {
        reason_string: Some("contract violation: value above max".into()),
        ..Properties::default()
    };
    let packets = vec![
        Packet::PubAck(PubResponse {
            packet_id: 1,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        Packet::PubRec(PubResponse {
            packet_id: 2,
            reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
            properties: props.clone(),
        }),
        Packet::PubRel(PubResponse {
            packet_id: 3,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }),
        Packet::PubComp(PubResponse {
            packet_id: 4,
            reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            properties: Properties::default(),
        }),
        Packet::SubAck(SubAck {
            packet_id: 5,
            reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
            properties: props.clone(),
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 6,
            reasons: vec![ReasonCode::SUCCESS],
            properties: Properties::default(),
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 7,
            filters: vec!["a/#".into()],
            properties: Properties::default(),
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason: ReasonCode::SERVER_SHUTTING_DOWN,
            properties: props.clone(),
        }),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: ReasonCode::SUCCESS,
            properties: Properties {
                assigned_client_identifier: Some("auto-1".into()),
                server_keep_alive: Some(60),
                ..Properties::default()
            },
        }),
    ];
    for p in packets {
        assert_eq!(roundtrip(&p, v), p);
    }
}
